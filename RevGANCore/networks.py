"""The 3D RevGAN generator (one shared reversible core, two directions) and a 3D PatchGAN.

Generator, after van der Ouderaa et al. (3D RevGAN)::

    G: X -> Y   = dec_Y(core(enc_X(x)))          direction="forward"
    F: Y -> X   = dec_X(core.inverse(enc_Y(y)))   direction="inverse"

Per-domain encoders and decoders around a reversible core of ``depth`` additive
couplings. Every coupling function is conv-act-conv with its last conv zero-initialised,
so each block starts as the identity. Two layouts (``GeneratorConfig.architecture``):

- ``"resize"`` (default): encoder 3^3 conv, SiLU, then a patch convolution (kernel =
  stride) onto the core grid; decoder 1^3 conv to ``head_channels`` and SiLU on the core
  grid, trilinear upsampling onto the output grid, 3^3 conv, SiLU, 1^3 conv to the image.
  Interpolation followed by convolution cannot make a checkerboard (a constant stays
  constant, unlike a transposed convolution's period-2 pattern). Every layer pads by
  replicating the border voxel, so a volume's faces are not a fake -400 HU edge. For
  super-resolution (``upscale_zyx`` > 1) the forward encoder works on the coarse input grid
  and the decoder upsamples inside the network: nothing is computed on a pre-resampled
  16x larger input, and only the two small head convolutions run per output voxel. The
  residual path is the trilinear upsampling of the input (forward) or its average over
  each block of fine voxels (inverse).
- ``"transposed"`` (the first layout, kept so older model files keep working): 5^3 conv to
  ngf, stride-2 3^3 conv to 2*ngf; stride-2 transposed conv to ngf, 5^3 conv to the image;
  zero padding; super-resolution runs on the input resampled onto the fine grid.

Design choices (see docs/design.md, decisions 1-3):
- The core uses a smooth activation (SiLU by default): with ReLU, the ~1e-6 reconstruction
  error of float32 flips activation masks and gives ~4e-3 relative gradient error at depth 8.
- No per-sample statistics by default (``norm="none"``), so a voxel's value does not depend
  on the tile it is computed in and tiled inference equals whole-volume inference.
  ``norm="instance"`` reproduces the paper's instance normalisation for comparison; it is
  not tile-exact.
- ``residual=True`` adds the input to the decoder's output (zero-initialised last conv, no
  tanh): the untrained model is the identity, which suits translations close to it.
- ``prior_taps`` > 0: a fixed linear filter fitted on the training data before training
  (:mod:`RevGANCore.linear_prior`). Same-grid tasks: an in-plane FIR per direction runs
  first. Super-resolution: a polyphase upsampler (taps^3 on the coarse grid, one output per
  fine phase) replaces the trilinear forward residual path. With ``residual`` the untrained
  model is that classical filter and the network learns the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as functional
from torch import nn

from .depth_taps import convolve_by_depth_taps, worth_splitting
from .errors import ArchitectureError, ConfigError
from .generator_config import (ACTIVATIONS, GENERATOR_LIMITS, NORMS, GeneratorConfig, core_stride_zyx,
                               generator_state_shapes)
from .polyphase import interleave_phases, phase_weights
from .reversible import AdditiveCoupling, ReversibleSequence

__all__ = [
    "GeneratorConfig",
    "GENERATOR_LIMITS",
    "generator_state_shapes",
    "DiscriminatorConfig",
    "RevGANGenerator3d",
    "PatchDiscriminator3d",
    "ReceptiveField",
    "receptive_field",
    "output_shape",
    "upsample_image",
    "downsample_image",
    "filter_slices",
    "upsample_polyphase",
    "DIRECTIONS",
]

DIRECTIONS = ("forward", "inverse")
_NORMS = NORMS
_ACTIVATIONS = {"silu": nn.SiLU, "relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "elu": nn.ELU}
assert set(_ACTIVATIONS) == set(ACTIVATIONS)


@dataclass(frozen=True)
class ReceptiveField:
    """What exact tiling needs: every output voxel depends only on input voxels within
    ``radius`` voxels along each axis, and tile origins must be multiples of ``stride``."""

    radius: int
    stride: int


def output_shape(config: GeneratorConfig, shape, direction: str = "forward"):
    """The generator's output shape (z, y, x) for an input of ``shape`` in ``direction``:
    the forward direction multiplies by ``upscale_zyx``, the inverse divides (rounding up:
    an incomplete block of fine voxels still gives a coarse one)."""
    factors = config.upscale_zyx
    if direction == "forward":
        return tuple(int(n) * f for n, f in zip(shape, factors))
    return tuple(-(-int(n) // f) for n, f in zip(shape, factors))


def receptive_field(config: GeneratorConfig) -> ReceptiveField:
    """Receptive-field radius and total stride of the generator, in voxels of the low side
    (the forward direction's input grid; for same-grid translation, the volume's grid).

    "resize": an output voxel depends on low-side voxels within 4 + (4*depth + encoder_convs)*s
    (plus prior_taps // 2 in front with a linear prior), where s is
    the core stride (1 or 2): the four 3^3 convs of each core block reach 4s low-side voxels,
    each of the encoder's convs on the core grid s, and the encoder (3^3 conv and patch conv), the trilinear upsampling and the head's 3^3
    conv together reach 4 (Testing/test_upscaling_generator.py measures the bound along every
    axis: tight to one voxel in the forward direction; the inverse direction's chain is shorter).

    "transposed":
    Chain from an output voxel back to the input: final 5^3 conv (2) + stride-2 transposed
    conv (1) + each core block's four 3^3 convs at half resolution (4 x 2 = 8 per block) +
    stride-2 conv (1) + first 5^3 conv (2). Instance normalisation makes every voxel depend
    on the whole volume: tiling cannot be exact, which is refused with an error."""
    if config.norm != "none":
        raise ArchitectureError(
            f"a generator with norm={config.norm!r} has a global receptive field "
            "(per-sample statistics), so tiled inference cannot equal whole-volume inference")
    if config.architecture == "resize":
        stride = max(core_stride_zyx(config))
        network = 4 + (4 * config.depth + config.encoder_convs) * stride
        if config.upscale_zyx != (1, 1, 1):  # the upsampling prior runs beside the network
            return ReceptiveField(radius=max(network, config.prior_taps // 2), stride=stride)
        # The same-grid prior (in-plane, prior_taps wide) runs first and widens the reach.
        return ReceptiveField(radius=network + config.prior_taps // 2, stride=stride)
    return ReceptiveField(radius=6 + 8 * config.depth, stride=2)


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "instance":
        return nn.InstanceNorm3d(channels, affine=True, track_running_stats=False)
    return nn.Identity()


def _coupling_function(channels: int, hidden: int, norm: str, activation: str,
                       padding_mode: str = "zeros") -> nn.Sequential:
    last = nn.Conv3d(hidden, channels, 3, padding=1, padding_mode=padding_mode)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return nn.Sequential(
        nn.Conv3d(channels, hidden, 3, padding=1, padding_mode=padding_mode),
        _norm(norm, hidden),
        _ACTIVATIONS[activation](),
        last,
    )


class _Encoder(nn.Sequential):
    """5^3 conv + ReLU, then a stride-2 3^3 conv into the core.

    No activation follows the strided conv: nothing then keeps the core's input alive for
    backward (a conv saves its input, not its output), so with a memory-saving core the
    activation memory at depth >= 1 equals that at depth 0. The core's coupling functions
    start with a conv, and the additive stream stays linear, as in pre-activation ResNets."""

    def __init__(self, config: GeneratorConfig):
        ngf = config.ngf
        super().__init__(
            nn.Conv3d(config.in_channels, ngf, 5, padding=2),
            _norm(config.norm, ngf),
            nn.ReLU(),
            nn.Conv3d(ngf, 2 * ngf, 3, stride=2, padding=1),
            _norm(config.norm, 2 * ngf),
        )


class _Decoder(nn.Module):
    def __init__(self, config: GeneratorConfig):
        super().__init__()
        ngf = config.ngf
        self.upsample = nn.Sequential(
            nn.ConvTranspose3d(2 * ngf, ngf, 3, stride=2, padding=1, output_padding=1),
            _norm(config.norm, ngf),
            nn.ReLU(),
        )
        self.to_image = nn.Conv3d(ngf, config.in_channels, 5, padding=2)
        self.residual = config.residual
        if self.residual:  # start as the identity map
            nn.init.zeros_(self.to_image.weight)
            nn.init.zeros_(self.to_image.bias)

    def forward(self, features: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        up = self.upsample(features)
        # Odd input sizes: the stride-2 encoder rounds up, so crop back to the input grid
        # before the last conv (its zero padding then sits on the true volume border).
        up = up[..., : image.shape[2], : image.shape[3], : image.shape[4]]
        out = convolve_by_depth_taps(up, self.to_image) if worth_splitting(self.to_image) else self.to_image(up)
        return image + out if self.residual else torch.tanh(out)


def _same_conv(in_channels: int, out_channels: int) -> nn.Conv3d:
    return nn.Conv3d(in_channels, out_channels, 3, padding=1, padding_mode="replicate")


def _pad_to_multiple(x: torch.Tensor, stride) -> torch.Tensor:
    """Extend the end of each spatial axis by copies of its last voxel up to a multiple of
    ``stride``, so a patch convolution covers every voxel (whole volume and tiles alike)."""
    pads = [(-n) % s for n, s in zip(x.shape[2:], stride)]
    if not any(pads):
        return x
    return functional.pad(x, (0, pads[2], 0, pads[1], 0, pads[0]), mode="replicate")


class _ResizeEncoder(nn.Module):
    """3^3 conv, SiLU, then onto the core grid: a patch convolution (kernel = stride, each
    core voxel sees exactly the block of voxels it stands for) or, with stride 1, a 3^3 conv;
    then ``encoder_convs`` residual steps on the core grid, each adding a 3^3 conv of the SiLU
    of its input (border replicated): residual, because a plain stack of them starts as a
    vanishing signal that 400 iterations do not wake (docs/training.md)."""

    def __init__(self, config: GeneratorConfig, channels: int, stride):
        super().__init__()
        self.stride = tuple(stride)
        self.features = _same_conv(config.in_channels, channels)
        self.features_norm = _norm(config.norm, channels)
        if max(self.stride) > 1:
            self.to_core = nn.Conv3d(channels, 2 * config.ngf, self.stride, stride=self.stride)
        else:
            self.to_core = _same_conv(channels, 2 * config.ngf)
        self.core_norm = _norm(config.norm, 2 * config.ngf)
        self.core_convs = nn.ModuleList(_same_conv(2 * config.ngf, 2 * config.ngf)
                                        for _ in range(config.encoder_convs))
        self.core_conv_norms = nn.ModuleList(_norm(config.norm, 2 * config.ngf) for _ in range(config.encoder_convs))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        features = functional.silu(self.features_norm(self.features(_pad_to_multiple(image, self.stride))))
        core = self.core_norm(self.to_core(features))
        for conv, norm in zip(self.core_convs, self.core_conv_norms):
            core = core + norm(conv(functional.silu(core)))
        return core


class _ResizeDecoder(nn.Module):
    """Core grid -> output grid: 1^3 conv to ``head_channels`` and SiLU on the core grid,
    trilinear upsampling by ``factor``, a 3^3 conv, SiLU and a 1^3 conv to the image (added
    to ``base`` when residual).

    Speed: everything after the upsampling would run on every output voxel, where memory
    traffic, not arithmetic, sets the time on a CPU. So the activation before the upsampling
    works on the small grid; the border for the 3^3 conv comes from a core grid extended by
    one replicated voxel (no padded copy of the large tensor); the last conv is 1^3; and
    without normalisation the upsampling and the 3^3 conv run as one convolution on the core
    grid with one output group per fine position (:mod:`polyphase`), so no upsampled features
    exist at all. With a normalisation between them (instance norm over the fine grid) the
    head runs as written above."""

    def __init__(self, config: GeneratorConfig, factor):
        super().__init__()
        self.factor = tuple(factor)
        head = config.head_channels
        self.reduce = nn.Conv3d(2 * config.ngf, head, 1)
        self.reduce_norm = _norm(config.norm, head)
        self.refine = nn.Conv3d(head, head, 3)
        self.refine_norm = _norm(config.norm, head)
        self.to_image = nn.Conv3d(head, config.in_channels, 1)
        self.residual = config.residual
        if self.residual:  # start as the identity map (plus the residual path)
            nn.init.zeros_(self.to_image.weight)
            nn.init.zeros_(self.to_image.bias)

    def forward(self, features: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        reduced = functional.silu(self.reduce_norm(self.reduce(features)))
        extended = functional.pad(reduced, (1, 1) * 3, mode="replicate")
        if isinstance(self.refine_norm, nn.Identity):
            out = self._head_on_core_grid(extended, base.shape[2:])
        else:
            out = self._head_on_output_grid(extended, base.shape[2:])
        return base + out if self.residual else torch.tanh(out)

    def _head_on_output_grid(self, extended: torch.Tensor, shape) -> torch.Tensor:
        upsampled = upsample_image(extended, self.factor)
        # Keep the output grid (the core grid covers the input rounded up to whole blocks)
        # plus one voxel on each side for the 3^3 conv; the one-voxel extension of the core
        # grid is `factor` voxels here.
        up = upsampled[(Ellipsis,) + tuple(slice(f - 1, f + 1 + n) for f, n in zip(self.factor, shape))]
        return self.to_image(functional.silu(self.refine_norm(self.refine(up))))

    def _head_on_core_grid(self, extended: torch.Tensor, shape) -> torch.Tensor:
        weight, bias = phase_weights(self.refine.weight, self.refine.bias, self.factor)
        phases = weight.shape[0] // self.refine.out_channels
        # In place when nothing keeps the conv's output for a backward pass (inference).
        hidden = functional.silu(functional.conv3d(extended, weight, bias), inplace=not torch.is_grad_enabled())
        image = functional.conv3d(hidden, self.to_image.weight.repeat(phases, 1, 1, 1, 1),
                                  self.to_image.bias.repeat(phases), groups=phases)
        fine = interleave_phases(image, self.factor)
        return fine[..., : shape[0], : shape[1], : shape[2]]


def upsample_image(x: torch.Tensor, factors) -> torch.Tensor:
    """Trilinear upsampling by integer ``factors`` (z, y, x) on cell-centred grids (the
    geometry of volume.super_resolution_grid): the forward residual path."""
    if tuple(factors) == (1, 1, 1):
        return x
    size = tuple(n * f for n, f in zip(x.shape[2:], factors))
    return functional.interpolate(x, size=size, mode="trilinear", align_corners=False)


def filter_slices(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Every axial slice of ``x`` (N, C, D, H, W) correlated with its channel's in-plane kernel
    (``kernel``: (C, 1, 1, K, K), K odd), border pixels replicated: a linear prior's filter."""
    half = kernel.shape[-1] // 2
    padded = functional.pad(x, (half, half, half, half, 0, 0), mode="replicate")
    return functional.conv3d(padded, kernel.to(x.dtype), groups=x.shape[1])


def upsample_polyphase(x: torch.Tensor, weights: torch.Tensor, factors) -> torch.Tensor:
    """``x`` (N, 1, D, H, W) upsampled by integer ``factors`` (z, y, x) with the polyphase
    ``weights`` (phases, 1, K, K, K; K odd), border voxels replicated: a super-resolution
    linear prior's upsampler."""
    half = weights.shape[-1] // 2
    padded = functional.pad(x, (half,) * 6, mode="replicate")
    return interleave_phases(functional.conv3d(padded, weights.to(x.dtype)), factors)


def downsample_image(x: torch.Tensor, factors) -> torch.Tensor:
    """The mean of each block of ``factors`` (z, y, x) fine voxels (an incomplete last block
    is completed by repeating its last voxel): the inverse residual path."""
    factors = tuple(factors)
    if factors == (1, 1, 1):
        return x
    return functional.avg_pool3d(_pad_to_multiple(x, factors), factors, stride=factors)


class RevGANGenerator3d(nn.Module):
    """Both translation directions of a 3D RevGAN in one module with a shared reversible core.

    ``forward(x, direction="forward")`` maps domain X to Y; ``direction="inverse"`` maps Y to
    X. Inputs are (N, C, D, H, W) tensors of any spatial size (normalised intensities)."""

    def __init__(self, in_channels: int = 1, ngf: int = 16, depth: int = 2, norm: str = "none",
                 memory_saving: bool = True, core_activation: str = "silu",
                 coupling_channels: Optional[int] = None, residual: bool = False,
                 config: Optional[GeneratorConfig] = None):
        super().__init__()
        if config is None:
            config = GeneratorConfig(in_channels=in_channels, ngf=ngf, depth=depth, norm=norm,
                                     core_activation=core_activation,
                                     coupling_channels=coupling_channels, residual=residual,
                                     memory_saving=memory_saving)
        self.config = config
        hidden = config.coupling_channels or config.ngf
        padding = "replicate" if config.architecture == "resize" else "zeros"
        if config.architecture == "resize":
            stride = core_stride_zyx(config)
            high_stride = tuple(s * f for s, f in zip(stride, config.upscale_zyx))
            high_channels = config.ngf if config.upscale_zyx == (1, 1, 1) else config.head_channels
            self.encoder_x = _ResizeEncoder(config, config.ngf, stride)
            self.encoder_y = _ResizeEncoder(config, high_channels, high_stride)
        else:
            self.encoder_x = _Encoder(config)
            self.encoder_y = _Encoder(config)
        self.core = ReversibleSequence(
            [AdditiveCoupling(_coupling_function(config.ngf, hidden, config.norm, config.core_activation, padding),
                              _coupling_function(config.ngf, hidden, config.norm, config.core_activation, padding))
             for _ in range(config.depth)],
            memory_saving=config.memory_saving)
        if config.architecture == "resize":
            self.decoder_x = _ResizeDecoder(config, stride)
            self.decoder_y = _ResizeDecoder(config, high_stride)
        else:
            self.decoder_x = _Decoder(config)
            self.decoder_y = _Decoder(config)
        taps = config.prior_taps
        # Filled from the training data before training (linear_prior.py) and saved with the
        # weights; until then a pass-through (unit impulse) or, for super-resolution, nearest-
        # neighbour upsampling.
        if taps and config.upscale_zyx != (1, 1, 1):
            phases = config.upscale_zyx[0] * config.upscale_zyx[1] * config.upscale_zyx[2]
            nearest = torch.zeros(phases, 1, taps, taps, taps)
            nearest[:, :, taps // 2, taps // 2, taps // 2] = 1.0
            self.register_buffer("prior_upsampling", nearest)
        elif taps:
            impulse = torch.zeros(config.in_channels, 1, 1, taps, taps)
            impulse[..., taps // 2, taps // 2] = 1.0
            self.register_buffer("prior_forward", impulse.clone())
            self.register_buffer("prior_inverse", impulse.clone())

    def set_prior(self, *kernels: torch.Tensor) -> None:
        """Install the fitted linear prior: the (taps, taps) in-plane kernels of the forward and
        inverse directions, or for super-resolution the (phases, taps, taps, taps) upsampler
        (phase order of :func:`polyphase.interleave_phases`)."""
        if not self.config.prior_taps:
            raise ArchitectureError("this generator has no linear prior (prior_taps = 0)")
        upsampling = self.config.upscale_zyx != (1, 1, 1)
        buffers = (self.prior_upsampling,) if upsampling else (self.prior_forward, self.prior_inverse)
        if len(kernels) != len(buffers):
            raise ArchitectureError(f"this generator's prior takes {len(buffers)} kernel(s), got {len(kernels)}")
        for buffer, kernel in zip(buffers, kernels):
            kernel = torch.as_tensor(kernel)
            shape = tuple(buffer.shape[:1] + buffer.shape[2:]) if upsampling else tuple(buffer.shape[-2:])
            if tuple(kernel.shape) != shape:
                raise ArchitectureError(f"prior kernel must be {shape}, got {tuple(kernel.shape)}")
            buffer.copy_(kernel.to(buffer.dtype).reshape(buffer.shape) if upsampling
                         else kernel.to(buffer.dtype).expand_as(buffer))

    def _prior(self, x: torch.Tensor, direction: str) -> torch.Tensor:
        """The fixed linear filter of ``direction`` on every axial slice (border voxels
        replicated, like every layer of the "resize" layout)."""
        if not self.config.prior_taps or self.config.upscale_zyx != (1, 1, 1):
            return x
        return filter_slices(x, self.prior_forward if direction == "forward" else self.prior_inverse)

    @classmethod
    def from_config(cls, config: GeneratorConfig) -> "RevGANGenerator3d":
        return cls(config=config)

    def forward(self, x: torch.Tensor, direction: str = "forward") -> torch.Tensor:
        if x.dim() != 5 or x.shape[1] != self.config.in_channels:
            raise ArchitectureError(
                f"generator input must be (N, {self.config.in_channels}, D, H, W); got {tuple(x.shape)}")
        if direction not in DIRECTIONS:
            raise ArchitectureError(f"direction must be 'forward' or 'inverse', got {direction!r}")
        factors = self.config.upscale_zyx
        x = self._prior(x, direction)
        if direction == "forward":
            return self.decoder_y(self.core(self.encoder_x(x)), self._upsampled(x))
        return self.decoder_x(self.core.inverse(self.encoder_y(x)), downsample_image(x, factors))

    def _upsampled(self, x: torch.Tensor) -> torch.Tensor:
        """The forward residual path: trilinear upsampling, or the fitted polyphase upsampler of
        a super-resolution linear prior (border voxels replicated)."""
        factors = self.config.upscale_zyx
        if not (self.config.prior_taps and factors != (1, 1, 1)):
            return upsample_image(x, factors)
        return upsample_polyphase(x, self.prior_upsampling, factors)

    @property
    def receptive_field(self) -> ReceptiveField:
        return receptive_field(self.config)


@dataclass(frozen=True)
class DiscriminatorConfig:
    """3D PatchGAN settings. ``in_channels`` is 2 for paired (conditional) training, where the
    discriminator sees input and output concatenated, and 1 for unpaired training."""

    in_channels: int = 1
    ndf: int = 16
    n_layers: int = 3
    norm: str = "instance"

    def __post_init__(self) -> None:
        if self.in_channels < 1 or self.ndf < 1 or self.n_layers < 1:
            raise ConfigError(f"discriminator needs in_channels, ndf, n_layers >= 1; got {self}")
        if self.norm not in _NORMS:
            raise ConfigError(f"discriminator norm must be one of {_NORMS}, got {self.norm!r}")

    def min_patch(self) -> int:
        """Smallest patch edge for which the last layer still has an output voxel: each of the
        ``n_layers`` stride-2 convs halves the size and the two final 4^3 convs remove 1 each."""
        return 3 * 2 ** self.n_layers


class PatchDiscriminator3d(nn.Module):
    """3D PatchGAN: strided 4^3 convs with LeakyReLU, one real/fake score per patch region.

    Normalisation inside the discriminator is harmless to tiling (it is only used in training)."""

    def __init__(self, in_channels: int = 1, ndf: int = 16, n_layers: int = 3, norm: str = "instance",
                 config: Optional[DiscriminatorConfig] = None):
        super().__init__()
        if config is None:
            config = DiscriminatorConfig(in_channels=in_channels, ndf=ndf, n_layers=n_layers, norm=norm)
        self.config = config
        layers = [nn.Conv3d(config.in_channels, config.ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        channels = config.ndf
        for index in range(1, config.n_layers):
            out_channels = config.ndf * min(2 ** index, 8)
            layers += [nn.Conv3d(channels, out_channels, 4, stride=2, padding=1),
                       _norm(config.norm, out_channels), nn.LeakyReLU(0.2)]
            channels = out_channels
        out_channels = config.ndf * min(2 ** config.n_layers, 8)
        layers += [nn.Conv3d(channels, out_channels, 4, stride=1, padding=1),
                   _norm(config.norm, out_channels), nn.LeakyReLU(0.2),
                   nn.Conv3d(out_channels, 1, 4, stride=1, padding=1)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5 or x.shape[1] != self.config.in_channels:
            raise ArchitectureError(
                f"discriminator input must be (N, {self.config.in_channels}, D, H, W); got {tuple(x.shape)}")
        needed = self.config.min_patch()
        if min(x.shape[2:]) < needed:
            raise ArchitectureError(
                f"a {self.config.n_layers}-layer PatchGAN needs patches of at least {needed} voxels per "
                f"axis; got {tuple(x.shape[2:])}")
        return self.model(x)
