"""Typed training configuration: frozen dataclasses, loaded from TOML, YAML or JSON and
overridable with ``key.sub=value`` strings (the CLI's ``--set``).

Unknown keys, wrong types and settings that cannot run are refused here, before any data
is read or any network is built.
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Optional, Tuple

from . import toml_subset
from .config_bounds import check_bounds
from .errors import ConfigError
from .networks import DiscriminatorConfig, GeneratorConfig, receptive_field

TASKS = ("super_resolution", "kernel")
MODES = ("paired", "unpaired")
GAN_LOSSES = ("lsgan", "vanilla")
AMP_MODES = ("auto", "off", "bf16", "fp16")
BEST_METRICS = ("auto", "val_l1", "val_psnr", "val_unpaired", "val_real_l1")


@dataclass(frozen=True)
class PhantomDataConfig:
    """Generate a synthetic phantom dataset when ``data.manifest`` does not exist yet, so a
    bundled configuration trains offline with one command."""

    cases: int = 0  # 0: never generate
    seed: int = 0
    shape: Tuple[int, int, int] = (64, 128, 128)
    world: str = "linear"  # phantom_dataset.WORLDS: "linear" (FBP-like) or "nonlinear"


@dataclass(frozen=True)
class RealScansConfig:
    """Self-supervised super-resolution pairs from real thick-slice scans
    (:mod:`RevGANCore.real_pairs`), trained beside the manifest's pairs with the slab term
    (``objective.lambda_slab``). ``scans``: "lung1" (fetched by tools/fetch_real_ct.py) or
    volume files; the last ``val_slices`` slices of each are validation only;
    ``batch_size`` 0: data.batch_size. ``degradations`` ("gaussian", "box", "mixture") and
    ``fwhm_range`` (Gaussian FWHM in new pixels): the in-plane degradation each patch draws
    (:class:`~RevGANCore.real_degradation.InPlaneFamily`); the default is the one Gaussian of
    ``revgan bench real``."""

    scans: Tuple[str, ...] = ()
    val_slices: int = 12
    batch_size: int = 0
    degradations: Tuple[str, ...] = ("gaussian",)
    fwhm_range: Tuple[float, float] = (1.0, 1.0)

    def family(self):
        """The :class:`~RevGANCore.real_degradation.InPlaneFamily` these settings describe."""
        from .real_degradation import InPlaneFamily

        return InPlaneFamily(tuple(self.degradations), tuple(self.fwhm_range))


@dataclass(frozen=True)
class DataConfig:
    manifest: str = ""
    task: str = "kernel"
    train_cases: Tuple[str, ...] = ()  # empty: every case not used for validation
    val_cases: Tuple[str, ...] = ()
    patch_size: Tuple[int, int, int] = (32, 32, 32)
    batch_size: int = 4
    foreground_fraction: float = 0.9
    val_patches: int = 8
    num_workers: int = 0
    generate: PhantomDataConfig = field(default_factory=PhantomDataConfig)
    real: RealScansConfig = field(default_factory=RealScansConfig)


@dataclass(frozen=True)
class ObjectiveConfig:
    """Defaults and where they come from (docs/training.md, "Objectives", has the reasons):
    - ``lambda_l1`` 100: pix2pix (Isola et al. 2017), the paired objective of the seed;
    - ``lambda_cycle`` 10: CycleGAN (Zhu et al. 2017), the unpaired objective of the seed;
    - ``lambda_identity`` 0 (a fraction of lambda_cycle when set): the seed's 3D RevGAN code and
      ganslate use none; CycleGAN's 0.5 was for photo painting, and on CT it makes "do nothing"
      nearly optimal;
    - ``lambda_physics`` 10 and ``physics_pool`` 16 voxels: physics consistency without pairs
      (kernel: local means kept; super-resolution: the degraded output is the input);
    - ``lambda_spectrum`` 1: noise-power-spectrum matching of generated to real patches;
    - ``lambda_slab`` 0 (off): real-scan pairs, the output's slab averages against the real
      slices (super-resolution with ``data.real.scans``);
    - ``lambda_degraded_pairs`` 0 (off): unpaired super-resolution learns from target patches
      degraded by the known operator (SMORE, Zhao et al. 2021), |G(LR(y)) - y|;
    - ``lambda_degraded_means`` 0 (off): those pairs' local-mean error (``physics_pool``^3
      averages), which an L1 fit alone leaves biased where values are skewed;
    - ``lambda_recorrupted_pairs`` 0 (off): unpaired kernel runs with a linear prior learn noise
      reduction from source patches recorrupted with the source domain's measured noise
      (recorrupted-to-recorrupted, Pang et al. 2021; squared error, RevGANCore/recorrupted_pairs.py);
    - ``texture_discriminator`` (off): discriminators also see the image's high-pass;
    - ``pool_size`` 50: CycleGAN's history of generated images for the discriminators;
    - LSGAN: CycleGAN's default adversarial loss (Mao et al. 2017).
    The physics and spectrum terms belong to the unpaired objective."""

    mode: str = "paired"
    gan_loss: str = "lsgan"
    lambda_l1: float = 100.0
    lambda_cycle: float = 10.0
    lambda_identity: float = 0.0
    lambda_physics: float = 10.0
    physics_pool: int = 16
    lambda_spectrum: float = 1.0
    lambda_slab: float = 0.0
    lambda_degraded_pairs: float = 0.0
    lambda_degraded_means: float = 0.0
    lambda_recorrupted_pairs: float = 0.0
    texture_discriminator: bool = False
    pool_size: int = 50


@dataclass(frozen=True)
class OptimConfig:
    """Adam with pix2pix/CycleGAN's settings; learning rate constant for the first
    ``decay_start`` fraction of the iterations, then linear decay to zero."""

    iterations: int = 1000
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    decay_start: float = 0.5
    amp: str = "auto"  # auto: bf16 (or fp16 with a grad scaler) on CUDA, off on the CPU
    channels_last: bool = False
    grad_clip: float = 0.0  # 0: off


@dataclass(frozen=True)
class CheckpointConfig:
    every: int = 100
    keep_last: int = 3
    validate_every: int = 100
    # auto: val_l1 for paired runs, the pair-free val_unpaired for unpaired runs. All but
    # val_psnr are better when lower.
    best_metric: str = "auto"


@dataclass(frozen=True)
class LoggingConfig:
    progress: bool = True
    log_every: int = 10  # metrics.csv row every N steps (and at every validation)
    preview_every: int = 100  # 0: never
    tensorboard: bool = True  # used when the tensorboard package is installed


@dataclass(frozen=True)
class ModelConfig:
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    discriminator: DiscriminatorConfig = field(default_factory=lambda: DiscriminatorConfig(n_layers=2))


@dataclass(frozen=True)
class TrainConfig:
    output_dir: str = "runs/revgan"
    seed: int = 0
    device: str = "auto"
    name: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def to_dict(self) -> Dict[str, Any]:
        return _to_plain(self)

    def validate(self) -> "TrainConfig":
        """Refuse settings that cannot run; returns self for chaining."""
        _validate(self)
        return self


# ----------------------------------------------------------------------------- building


def _to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [_to_plain(v) for v in value]
    return value


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a table of settings, got {value!r}")
        return _build(annotation, value, where)
    if origin is typing.Union:  # Optional[X]
        if value is None:
            return None
        return _coerce(value, next(a for a in args if a is not type(None)), where)
    if origin is tuple:
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            value = [value] * len(args) if args and args[-1] is not Ellipsis else [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        if args and args[-1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where} needs {len(args)} values, got {len(value)}")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)) or (isinstance(value, float)):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"{where} must be an integer, got {value!r}") from None
    if annotation is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where} must be a number, got {value!r}") from None
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    return value


def _build(cls: type, values: Dict[str, Any], where: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"unknown setting{'s' if len(unknown) > 1 else ''}: "
                          + ", ".join(prefix + key for key in unknown)
                          + f" (known in {where or 'the top level'}: {', '.join(sorted(names))})")
    kwargs = {}
    for name, value in values.items():
        kwargs[name] = _coerce(value, hints[name], f"{where}.{name}" if where else name)
    try:
        return cls(**kwargs)
    except ConfigError as error:
        raise ConfigError(f"{where or 'config'}: {error}") from None


def config_from_dict(values: Dict[str, Any]) -> TrainConfig:
    return _build(TrainConfig, values)


def _parse_toml(text: str, path: str) -> Dict[str, Any]:
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ImportError:
            # Slicer 5.8 (Python 3.9) has neither: the built-in reader covers the shipped configurations.
            return toml_subset.loads(text, path)
    return tomllib.loads(text)


def _read_file(path: str) -> Dict[str, Any]:
    if not os.path.isfile(path):
        raise ConfigError(f"configuration file not found: {path}")
    extension = os.path.splitext(path)[1].lower()
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
        if extension == ".toml":
            values = _parse_toml(raw.decode("utf-8"), path)
        elif extension in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise ConfigError(f"{path}: reading YAML needs the 'PyYAML' package; "
                                  "install it or use TOML/JSON") from None
            values = yaml.safe_load(raw.decode("utf-8")) or {}
        elif extension == ".json":
            values = json.loads(raw.decode("utf-8"))
        else:
            raise ConfigError(f"{path}: configuration files must be .toml, .yaml/.yml or .json")
    except ConfigError:
        raise
    except Exception as error:  # parser errors of three libraries
        raise ConfigError(f"{path}: cannot parse configuration: {error}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: the configuration must be a table of settings")
    return values


def _deep_merge(base: Dict[str, Any], override: Dict[str, Any]) -> Dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_config_file(path: str, _seen: Tuple[str, ...] = ()) -> Dict[str, Any]:
    """A configuration file as a nested dict. ``extends = "base.toml"`` (relative to the file)
    starts from another file's settings, so variants of one experiment share a base."""
    real = os.path.realpath(path)
    if real in _seen:
        raise ConfigError(f"{path}: 'extends' loops back to itself")
    values = _read_file(path)
    base = values.pop("extends", None)
    if base is None:
        return values
    if not isinstance(base, str):
        raise ConfigError(f"{path}: 'extends' must be a file name")
    base_path = os.path.join(os.path.dirname(os.path.abspath(path)), base)
    return _deep_merge(read_config_file(base_path, _seen + (real,)), values)


def _parse_override_value(text: str) -> Any:
    """``--set`` values are JSON where they parse as JSON (numbers, lists, true/false),
    otherwise plain strings."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def apply_overrides(values: Dict[str, Any], overrides: Iterable[str]) -> Dict[str, Any]:
    """Apply ``section.key=value`` overrides to a nested dict (a new dict is returned)."""
    result = json.loads(json.dumps(values))
    for override in overrides:
        if "=" not in override:
            raise ConfigError(f"override {override!r} must look like section.key=value")
        key, text = override.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ConfigError(f"override {override!r} has no key")
        target = result
        for part in parts[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ConfigError(f"override {override!r}: {part} is not a section")
        target[parts[-1]] = _parse_override_value(text.strip())
    return result


def load_config(path: Optional[str] = None, overrides: Iterable[str] = ()) -> TrainConfig:
    """Read a configuration file (or start from the defaults), apply ``key=value`` overrides
    and validate. Relative paths in it are relative to the current directory."""
    values: Dict[str, Any] = read_config_file(path) if path else {}
    values = apply_overrides(values, overrides)
    return config_from_dict(values).validate()


# ----------------------------------------------------------------------------- the generator a task needs


def generator_for_task(generator: GeneratorConfig, task: str, factors_xyz=None) -> GeneratorConfig:
    """The generator configuration a run builds: a "resize" super-resolution generator
    upsamples inside the network by the dataset's factors (``upscale_zyx`` is filled in from
    them; a different explicit value is refused), every other one keeps the grid."""
    if task != "super_resolution" or not factors_xyz or generator.architecture != "resize":
        if generator.upscale_zyx != (1, 1, 1):
            raise ConfigError(f"model.generator.upscale_zyx {list(generator.upscale_zyx)} is only for "
                              "super-resolution with the 'resize' architecture")
        return generator
    factors_zyx = tuple(int(f) for f in factors_xyz)[::-1]
    if generator.upscale_zyx not in ((1, 1, 1), factors_zyx):
        raise ConfigError(f"model.generator.upscale_zyx {list(generator.upscale_zyx)} differs from the dataset's "
                          f"super-resolution factors {list(factors_zyx)} (z, y, x); leave it out")
    return dataclasses.replace(generator, upscale_zyx=factors_zyx)


# ----------------------------------------------------------------------------- validation


#: Largest input batch (batch_size x patch voxels): 2**30 float32 voxels are 4 GiB per tensor.
MAX_BATCH_VOXELS = 2 ** 30


def _validate(config: TrainConfig) -> None:
    check_bounds(config)
    data, objective, optim, model = config.data, config.objective, config.optim, config.model
    if data.task not in TASKS:
        raise ConfigError(f"data.task must be one of {TASKS}, got {data.task!r}")
    if objective.mode not in MODES:
        raise ConfigError(f"objective.mode must be one of {MODES}, got {objective.mode!r}")
    if objective.gan_loss not in GAN_LOSSES:
        raise ConfigError(f"objective.gan_loss must be one of {GAN_LOSSES}, got {objective.gan_loss!r}")
    if optim.amp not in AMP_MODES:
        raise ConfigError(f"optim.amp must be one of {AMP_MODES}, got {optim.amp!r}")
    if config.checkpoint.best_metric not in BEST_METRICS:
        raise ConfigError(f"checkpoint.best_metric must be one of {BEST_METRICS}, got {config.checkpoint.best_metric!r}")
    if not data.manifest:
        raise ConfigError("data.manifest is required (a manifest.json written by `revgan phantom` "
                          "or `revgan dataset`)")
    if not config.output_dir.strip():
        raise ConfigError("output_dir is required (the folder the run is written to)")
    stride = 2
    if model.generator.norm == "none":
        stride = receptive_field(model.generator).stride
    for axis, edge in zip("zyx", data.patch_size):
        if edge % stride:
            raise ConfigError(f"data.patch_size {data.patch_size}: the {axis} edge {edge} is not a multiple "
                              f"of the generator's total stride {stride}")
    needed = model.discriminator.min_patch()
    if min(data.patch_size) < needed:
        raise ConfigError(f"data.patch_size {data.patch_size} is too small for a {model.discriminator.n_layers}-layer "
                          f"PatchGAN, which needs at least {needed} voxels per axis")
    batch_voxels = data.batch_size * data.patch_size[0] * data.patch_size[1] * data.patch_size[2]
    if batch_voxels > MAX_BATCH_VOXELS:
        raise ConfigError(f"data.batch_size {data.batch_size} x data.patch_size {data.patch_size} is {batch_voxels} "
                          f"voxels per batch, more than {MAX_BATCH_VOXELS}; use smaller patches or batches")
    _validate_real_scans(config)
    if model.generator.in_channels != 1:
        raise ConfigError("CT translation uses one channel: model.generator.in_channels must be 1")


def _validate_real_scans(config: TrainConfig) -> None:
    """Real-scan pairs and their slab term go together, and only with super-resolution."""
    real, objective = config.data.real, config.objective
    if objective.lambda_slab > 0 and not real.scans:
        raise ConfigError("objective.lambda_slab needs real scans to compare with: set data.real.scans")
    if real.scans and objective.lambda_slab <= 0:
        raise ConfigError("data.real.scans are only used by the slab term: set objective.lambda_slab > 0")
    if real.scans and config.data.task != "super_resolution":
        raise ConfigError(f"data.real.scans are super-resolution pairs; data.task is {config.data.task!r}")
    if config.checkpoint.best_metric == "val_real_l1" and (not real.scans or real.val_slices == 0):
        raise ConfigError("checkpoint.best_metric val_real_l1 needs data.real.scans with data.real.val_slices > 0")
    real.family()  # refuses unknown degradations and bad FWHM ranges
