"""The 3D RevGAN generator (one shared reversible core, two directions) and a 3D PatchGAN.

Generator, after van der Ouderaa et al. (3D RevGAN)::

    G: X -> Y   = dec_Y(core(enc_X(x)))          direction="forward"
    F: Y -> X   = dec_X(core.inverse(enc_Y(y)))   direction="inverse"

Per-domain encoders (5^3 conv to ngf, stride-2 3^3 conv to 2*ngf) and decoders (stride-2
transposed conv to ngf, 5^3 conv to the image) around a reversible core of ``depth``
additive couplings working at half resolution. Every coupling function is conv-act-conv
with its last conv zero-initialised, so each block starts as the identity.

Design choices (see docs/design.md, decisions 1-3):
- The core uses a smooth activation (SiLU by default): with ReLU, the ~1e-6 reconstruction
  error of float32 flips activation masks and gives ~4e-3 relative gradient error at depth 8.
- No per-sample statistics by default (``norm="none"``), so a voxel's value does not depend
  on the tile it is computed in and tiled inference equals whole-volume inference.
  ``norm="instance"`` reproduces the paper's instance normalisation for comparison; it is
  not tile-exact.
- ``residual=True`` adds the input to the decoder's output (zero-initialised last conv, no
  tanh): the untrained model is the identity, which suits translations close to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from .errors import ArchitectureError, ConfigError
from .generator_config import ACTIVATIONS, GENERATOR_LIMITS, NORMS, GeneratorConfig, generator_state_shapes
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


def receptive_field(config: GeneratorConfig) -> ReceptiveField:
    """Receptive-field radius (full-resolution voxels) and total stride of the generator.

    Chain from an output voxel back to the input: final 5^3 conv (2) + stride-2 transposed
    conv (1) + each core block's four 3^3 convs at half resolution (4 x 2 = 8 per block) +
    stride-2 conv (1) + first 5^3 conv (2). Instance normalisation makes every voxel depend
    on the whole volume: tiling cannot be exact, which is refused with an error."""
    if config.norm != "none":
        raise ArchitectureError(
            f"a generator with norm={config.norm!r} has a global receptive field "
            "(per-sample statistics), so tiled inference cannot equal whole-volume inference")
    return ReceptiveField(radius=6 + 8 * config.depth, stride=2)


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "instance":
        return nn.InstanceNorm3d(channels, affine=True, track_running_stats=False)
    return nn.Identity()


def _coupling_function(channels: int, hidden: int, norm: str, activation: str) -> nn.Sequential:
    last = nn.Conv3d(hidden, channels, 3, padding=1)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return nn.Sequential(
        nn.Conv3d(channels, hidden, 3, padding=1),
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
        out = self.to_image(up)
        return image + out if self.residual else torch.tanh(out)


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
        self.encoder_x = _Encoder(config)
        self.encoder_y = _Encoder(config)
        self.core = ReversibleSequence(
            [AdditiveCoupling(_coupling_function(config.ngf, hidden, config.norm, config.core_activation),
                              _coupling_function(config.ngf, hidden, config.norm, config.core_activation))
             for _ in range(config.depth)],
            memory_saving=config.memory_saving)
        self.decoder_x = _Decoder(config)
        self.decoder_y = _Decoder(config)

    @classmethod
    def from_config(cls, config: GeneratorConfig) -> "RevGANGenerator3d":
        return cls(config=config)

    def forward(self, x: torch.Tensor, direction: str = "forward") -> torch.Tensor:
        if x.dim() != 5 or x.shape[1] != self.config.in_channels:
            raise ArchitectureError(
                f"generator input must be (N, {self.config.in_channels}, D, H, W); got {tuple(x.shape)}")
        if direction == "forward":
            return self.decoder_y(self.core(self.encoder_x(x)), x)
        if direction == "inverse":
            return self.decoder_x(self.core.inverse(self.encoder_y(x)), x)
        raise ArchitectureError(f"direction must be 'forward' or 'inverse', got {direction!r}")

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
