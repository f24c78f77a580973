"""The generator's architecture settings, validated, and the weight shapes they imply.

Torch-free on purpose: a model file's metadata (and the Slicer panel's model card) is
checked against these without importing PyTorch. :mod:`RevGANCore.networks` builds the
modules from a :class:`GeneratorConfig` and re-exports everything here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, Optional, Tuple

from .errors import ConfigError

__all__ = ["GENERATOR_LIMITS", "NORMS", "ACTIVATIONS", "ARCHITECTURES", "GeneratorConfig", "generator_state_shapes",
           "core_stride_zyx"]

NORMS = ("none", "instance")
#: "resize": decoders upsample by interpolation, then convolve (no checkerboard), layers pad
#: by replicating the border voxel, and super-resolution upsamples inside the network (the
#: encoder works on the input grid). "transposed": the first layout (transposed-convolution
#: decoders, zero padding, super-resolution on a pre-resampled input); model files without
#: an ``architecture`` field are this one.
ARCHITECTURES = ("resize", "transposed")
#: Largest in-network upsampling factor per axis.
MAX_UPSCALE = 8
#: Widest polyphase upsampling prior (coarse voxels per axis; 9 = 36 thin slices in z at 4x).
MAX_UPSAMPLING_TAPS = 9
#: Names of the core activations; networks maps each to its torch module.
ACTIVATIONS = ("elu", "leaky_relu", "relu", "silu")


#: Inclusive bounds of the generator's integer settings. They hold every shipped model and
#: configuration (ngf 8-16, depth 0-2) many times over; beyond them a model file is refused
#: as damaged or hostile rather than built (depth 128 at ngf 256 is already ~14 GB of weights).
GENERATOR_LIMITS: Dict[str, Tuple[int, int]] = {
    "in_channels": (1, 8),
    "ngf": (1, 256),
    "depth": (0, 128),
    "coupling_channels": (1, 1024),
    "head_channels": (1, 256),
    "prior_taps": (0, 63),
    "encoder_convs": (0, 16),
}


def _is_integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class GeneratorConfig:
    """Architecture of :class:`RevGANGenerator3d`; stored verbatim in model files."""

    in_channels: int = 1
    ngf: int = 16
    depth: int = 2
    norm: str = "none"
    core_activation: str = "silu"
    coupling_channels: Optional[int] = None  # hidden channels of F and G; None: ngf
    residual: bool = False
    memory_saving: bool = True
    architecture: str = "resize"
    #: In-network upsampling of the forward direction (z, y, x): (1, 1, 1) for same-grid
    #: translation, the super-resolution factors otherwise ("resize" only).
    upscale_zyx: Tuple[int, int, int] = (1, 1, 1)
    #: Channels of the decoder's full-resolution layers ("resize" only): few, because
    #: they run on every output voxel.
    head_channels: int = 8
    #: Width of the fixed linear filter fitted on the training data before training
    #: (linear_prior.py; 0: none), so the network learns only what it cannot do. Same-grid
    #: tasks: an in-plane filter in front of each direction. Super-resolution: a polyphase
    #: upsampler (taps^3 on the coarse grid) as the forward residual path. "resize" only.
    prior_taps: int = 0
    #: Residual steps (input + 3^3 conv of its SiLU) that each encoder adds on the core grid
    #: ("resize" only): reach without reversible blocks, so a network with none still sees far enough to
    #: tell noise from texture (docs/training.md, "How far the network sees").
    encoder_convs: int = 0

    def __post_init__(self) -> None:
        # Model files carry this configuration: every field is checked for type and range
        # before anything is built from it (a float ngf or a string "no" for a flag must
        # not reach torch, and depth 10**7 must not allocate for minutes).
        for name, (low, high) in GENERATOR_LIMITS.items():
            value = getattr(self, name)
            if name == "coupling_channels" and value is None:
                continue
            if not _is_integer(value):
                raise ConfigError(f"generator {name} must be an integer, got {value!r}")
            if not low <= value <= high:
                raise ConfigError(f"generator {name} must be between {low} and {high}, got {value}")
        for name in ("residual", "memory_saving"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"generator {name} must be true or false, got {getattr(self, name)!r}")
        if not isinstance(self.norm, str) or self.norm not in NORMS:
            raise ConfigError(f"generator norm must be one of {NORMS}, got {self.norm!r}")
        if not isinstance(self.core_activation, str) or self.core_activation not in ACTIVATIONS:
            raise ConfigError(f"core_activation must be one of {list(ACTIVATIONS)}, got {self.core_activation!r}")
        if not isinstance(self.architecture, str) or self.architecture not in ARCHITECTURES:
            raise ConfigError(f"generator architecture must be one of {list(ARCHITECTURES)}, got {self.architecture!r}")
        upscale = self.upscale_zyx
        if (not isinstance(upscale, (tuple, list)) or len(upscale) != 3
                or not all(_is_integer(f) and 1 <= f <= MAX_UPSCALE for f in upscale)):
            raise ConfigError(f"generator upscale_zyx must be three integers from 1 to {MAX_UPSCALE}, got {upscale!r}")
        object.__setattr__(self, "upscale_zyx", tuple(upscale))
        if self.architecture == "transposed" and self.upscale_zyx != (1, 1, 1):
            raise ConfigError("the 'transposed' architecture cannot upsample inside the network "
                              f"(upscale_zyx {self.upscale_zyx}); use architecture 'resize'")
        if self.encoder_convs and self.architecture != "resize":
            raise ConfigError("generator encoder_convs needs the 'resize' architecture")
        if self.prior_taps:
            if self.prior_taps % 2 == 0 or self.prior_taps < 3:
                raise ConfigError(f"generator prior_taps must be 0 (no prior) or odd and at least 3, got {self.prior_taps}")
            if self.architecture != "resize":
                raise ConfigError("generator prior_taps needs the 'resize' architecture")
            if self.upscale_zyx != (1, 1, 1) and (self.in_channels != 1 or self.prior_taps > MAX_UPSAMPLING_TAPS):
                raise ConfigError(f"a super-resolution linear prior needs in_channels = 1 and at most "
                                  f"{MAX_UPSAMPLING_TAPS} taps (coarse voxels per axis), got {self.in_channels} "
                                  f"and {self.prior_taps}")

    def to_dict(self) -> dict:
        values = asdict(self)
        values["upscale_zyx"] = list(self.upscale_zyx)  # as JSON holds it
        return values

    @classmethod
    def from_dict(cls, values: dict) -> "GeneratorConfig":
        if not isinstance(values, dict):
            raise ConfigError(f"generator settings must be a JSON object, got {type(values).__name__}")
        unknown = sorted(set(values) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"unknown generator settings: {', '.join(unknown)}")
        values = dict(values)
        # Files written before the "resize" layout existed name no architecture.
        values.setdefault("architecture", "transposed")
        return cls(**values)


def core_stride_zyx(config: GeneratorConfig) -> Tuple[int, int, int]:
    """How many low-side voxels (the forward direction's input grid) one core voxel spans
    per axis: 2 for same-grid translation (the core works at half resolution), and for
    super-resolution 1 along upscaled axes (the core works on the input grid, which is
    already coarse) and 2 along the others."""
    return tuple(1 if f > 1 else 2 for f in config.upscale_zyx)  # type: ignore[return-value]


def generator_state_shapes(config: GeneratorConfig) -> Dict[str, Tuple[int, ...]]:
    """The ``state_dict`` names and shapes of ``RevGANGenerator3d(config=config)``, worked out
    without building it, so a model file's tensors can be checked before anything is
    allocated. (Testing/test_modelfile.py compares this with real modules.)"""
    shapes: Dict[str, Tuple[int, ...]] = {}
    ngf, image = config.ngf, config.in_channels
    instance = config.norm == "instance"

    def conv(prefix: str, out_channels: int, in_channels: int, kernel) -> None:
        kernel3 = tuple(kernel) if isinstance(kernel, tuple) else (kernel,) * 3
        shapes[f"{prefix}.weight"] = (out_channels, in_channels) + kernel3
        shapes[f"{prefix}.bias"] = (out_channels,)

    def norm(prefix: str, channels: int) -> None:
        if instance:  # affine InstanceNorm3d; nn.Identity has no state
            shapes[f"{prefix}.weight"] = shapes[f"{prefix}.bias"] = (channels,)

    if config.architecture == "resize":
        _add_resize_shapes(config, conv, norm)
        taps = config.prior_taps
        if taps and config.upscale_zyx != (1, 1, 1):  # a polyphase upsampler: one output per fine phase
            phases = config.upscale_zyx[0] * config.upscale_zyx[1] * config.upscale_zyx[2]
            shapes["prior_upsampling"] = (phases, 1, taps, taps, taps)
        elif taps:
            for direction in ("forward", "inverse"):
                shapes[f"prior_{direction}"] = (image, 1, 1, taps, taps)
        return shapes
    for side in ("x", "y"):
        conv(f"encoder_{side}.0", ngf, image, 5)
        norm(f"encoder_{side}.1", ngf)
        conv(f"encoder_{side}.3", 2 * ngf, ngf, 3)
        norm(f"encoder_{side}.4", 2 * ngf)
    _add_core_shapes(config, conv, norm)
    for side in ("x", "y"):
        shapes[f"decoder_{side}.upsample.0.weight"] = (2 * ngf, ngf, 3, 3, 3)  # transposed: (in, out, ...)
        shapes[f"decoder_{side}.upsample.0.bias"] = (ngf,)
        norm(f"decoder_{side}.upsample.1", ngf)
        conv(f"decoder_{side}.to_image", image, ngf, 5)
    return shapes


def _add_core_shapes(config: GeneratorConfig, add, norm) -> None:
    """The reversible core's state entries (the same in both layouts)."""
    ngf, hidden = config.ngf, config.coupling_channels or config.ngf
    for block in range(config.depth):
        for function in ("f", "g"):
            prefix = f"core.blocks.{block}.{function}"
            add(f"{prefix}.0", hidden, ngf, 3)
            norm(f"{prefix}.1", hidden)
            add(f"{prefix}.3", ngf, hidden, 3)


def _add_resize_shapes(config: GeneratorConfig, add, norm) -> None:
    """The "resize" layout's state entries, through ``add`` (a conv) and ``norm``."""
    ngf, image, head = config.ngf, config.in_channels, config.head_channels
    stride = core_stride_zyx(config)
    high_stride = tuple(s * f for s, f in zip(stride, config.upscale_zyx))
    for side, total in (("x", stride), ("y", high_stride)):
        first = ngf if side == "x" or config.upscale_zyx == (1, 1, 1) else head
        add(f"encoder_{side}.features", first, image, 3)
        norm(f"encoder_{side}.features_norm", first)
        add(f"encoder_{side}.to_core", 2 * ngf, first, total if max(total) > 1 else 3)
        norm(f"encoder_{side}.core_norm", 2 * ngf)
        for index in range(config.encoder_convs):
            add(f"encoder_{side}.core_convs.{index}", 2 * ngf, 2 * ngf, 3)
            norm(f"encoder_{side}.core_conv_norms.{index}", 2 * ngf)
    _add_core_shapes(config, add, norm)
    for side in ("x", "y"):
        add(f"decoder_{side}.reduce", head, 2 * ngf, 1)
        norm(f"decoder_{side}.reduce_norm", head)
        add(f"decoder_{side}.refine", head, head, 3)
        norm(f"decoder_{side}.refine_norm", head)
        add(f"decoder_{side}.to_image", image, head, 1)
