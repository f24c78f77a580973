"""RevGAN model files (data, not code) and the registry of shipped models.

A model file is a safetensors file (see :mod:`RevGANCore.tensorfile`): the tensors are
the generator's ``state_dict`` and the header's ``__metadata__`` holds one key,
``"revgan"``, whose value is the JSON of :class:`ModelMetadata`::

    {
      "format": "revgan-model",            always this string
      "format_version": 1,                 readers refuse versions they do not know
      "name": "sr-phantom-v1",             short name ("" allowed)
      "task": "super_resolution",          "super_resolution" | "kernel" | "custom"
      "domains": {"x": "low_resolution", "y": "high_resolution"},
                                           direction "forward" maps x -> y, "inverse" y -> x
      "generator": {"in_channels": 1, "ngf": 16, "depth": 2, "norm": "none",
                    "core_activation": "silu", "coupling_channels": null,
                    "residual": false, "memory_saving": true},    GeneratorConfig
      "hu_window": [-1150.0, 350.0],       HU mapped linearly onto [-1, 1]
      "scale_factors_xyz": [2, 2, 4],      super-resolution only (null otherwise)
      "description": "...", "caveats": "...",
      "training": {...},                   free provenance: config, iterations, dataset,
                                           metrics, git commit, date
      "created_by": "RevGANCore 0.1.0",
      "extra": {}                          unknown keys of a version-1 file, kept verbatim
    }

Loading never unpickles anything and refuses, with a :class:`ModelFileError` naming the
file: a missing file, a file that is not safetensors (or is truncated or inconsistent), a
pickled PyTorch checkpoint, a safetensors file without RevGAN metadata, an unknown
format version, invalid metadata, and weights that do not match the architecture.

Registry. Shipped models live in a folder with a ``models.json`` index::

    {"format": "revgan-model-registry", "format_version": 1,
     "models": {"NAME": {"file": "NAME.safetensors", "card": "NAME.md",
                         "task": "super_resolution", "description": "one line",
                         "default": true}}}

(``file`` and ``card`` relative to the folder). The folder is the first of:
``$REVGAN_MODELS_DIR`` (if set, it must exist); ``<package>/../Resources/Models`` (the
repository layout, and the Slicer module layout where ``RevGANCore/`` and ``Resources/``
are installed side by side); ``<package>/Resources/Models`` (models copied inside the
package) -- the first one holding a ``models.json``. No folder means no shipped models.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import torch

from . import __version__
from .errors import ConfigError, ModelFileError, RevGANError
from .networks import GeneratorConfig, ReceptiveField, RevGANGenerator3d, receptive_field
from .tensorfile import load_safetensors, save_safetensors

__all__ = [
    "MODEL_FORMAT", "MODEL_FORMAT_VERSION", "METADATA_KEY", "TASKS", "DEFAULT_HU_WINDOW",
    "ModelMetadata", "TranslationModel", "save_model", "load_model", "as_model", "check_task",
    "ModelEntry", "models_dir", "models_dir_candidates", "list_models", "get_model_path",
    "default_model", "MODELS_DIR_ENV",
]

MODEL_FORMAT = "revgan-model"
MODEL_FORMAT_VERSION = 1
METADATA_KEY = "revgan"
TASKS = ("super_resolution", "kernel", "custom")
DEFAULT_HU_WINDOW = (-1150.0, 350.0)
REGISTRY_FORMAT = "revgan-model-registry"
REGISTRY_FILE = "models.json"
MODELS_DIR_ENV = "REVGAN_MODELS_DIR"

_FIELDS = ("format", "format_version", "name", "task", "domains", "generator", "hu_window",
           "scale_factors_xyz", "description", "caveats", "training", "created_by")


@dataclass(frozen=True)
class ModelMetadata:
    """Everything a model file says about its generator besides the weights."""

    task: str
    domains: Dict[str, str]
    generator: Dict[str, Any] = field(default_factory=dict)
    hu_window: Tuple[float, float] = DEFAULT_HU_WINDOW
    scale_factors_xyz: Optional[Tuple[int, int, int]] = None
    name: str = ""
    description: str = ""
    caveats: str = ""
    training: Dict[str, Any] = field(default_factory=dict)
    created_by: str = f"RevGANCore {__version__}"
    format: str = MODEL_FORMAT
    format_version: int = MODEL_FORMAT_VERSION
    extra: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.generator, GeneratorConfig):
            object.__setattr__(self, "generator", self.generator.to_dict())
        if self.format != MODEL_FORMAT:
            raise ConfigError(f"not a RevGAN model: format is {self.format!r}, expected {MODEL_FORMAT!r}")
        if (not isinstance(self.format_version, int) or isinstance(self.format_version, bool)
                or self.format_version < 1):
            raise ConfigError(f"invalid format_version {self.format_version!r}")
        if self.format_version > MODEL_FORMAT_VERSION:
            raise ConfigError(
                f"format_version {self.format_version} was written by a newer RevGAN; this RevGANCore "
                f"({__version__}) reads format_version {MODEL_FORMAT_VERSION}. Update RevGAN")
        if self.task not in TASKS:
            raise ConfigError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if (not isinstance(self.domains, dict) or set(self.domains) != {"x", "y"}
                or not all(isinstance(v, str) and v for v in self.domains.values())
                or self.domains["x"] == self.domains["y"]):
            raise ConfigError(f"domains must be {{\"x\": name, \"y\": name}} with two different non-empty "
                              f"names, got {self.domains!r}")
        if not isinstance(self.generator, dict):
            raise ConfigError(f"generator must be a GeneratorConfig dictionary, got {type(self.generator).__name__}")
        if self.generator:
            self.generator_config  # validates the architecture
        try:
            window = tuple(float(v) for v in self.hu_window)
        except (TypeError, ValueError):
            raise ConfigError(f"hu_window must be two numbers, got {self.hu_window!r}") from None
        if len(window) != 2 or not all(math.isfinite(v) for v in window) or window[1] <= window[0]:
            raise ConfigError(f"hu_window must be two finite numbers, low < high; got {self.hu_window!r}")
        object.__setattr__(self, "hu_window", window)
        factors = self.scale_factors_xyz
        if factors is not None:
            if (not isinstance(factors, (list, tuple)) or len(factors) != 3
                    or not all(isinstance(f, int) and not isinstance(f, bool) and f >= 1 for f in factors)):
                raise ConfigError(f"scale_factors_xyz must be three positive integers, got {factors!r}")
            object.__setattr__(self, "scale_factors_xyz", tuple(factors))
        if self.task == "super_resolution" and (factors is None or all(f == 1 for f in factors)):
            raise ConfigError("a super_resolution model needs scale_factors_xyz (e.g. [2, 2, 4])")
        if self.task == "kernel" and factors is not None:
            raise ConfigError("a kernel model keeps the voxel grid: scale_factors_xyz must be null")
        for name in ("name", "description", "caveats", "created_by"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"{name} must be a string")
        for name in ("training", "extra"):
            if not isinstance(getattr(self, name), dict):
                raise ConfigError(f"{name} must be a JSON object")

    @property
    def generator_config(self) -> GeneratorConfig:
        try:
            return GeneratorConfig.from_dict(self.generator)
        except TypeError as error:
            raise ConfigError(f"generator settings are invalid: {error}") from None

    def domain_names(self, direction: str = "forward") -> Tuple[str, str]:
        """(source, target) domain names for a direction."""
        if direction == "forward":
            return self.domains["x"], self.domains["y"]
        if direction == "inverse":
            return self.domains["y"], self.domains["x"]
        raise ConfigError(f"direction must be 'forward' or 'inverse', got {direction!r}")

    def to_dict(self) -> dict:
        values = {
            "format": self.format, "format_version": self.format_version, "name": self.name,
            "task": self.task, "domains": dict(self.domains), "generator": dict(self.generator),
            "hu_window": list(self.hu_window),
            "scale_factors_xyz": list(self.scale_factors_xyz) if self.scale_factors_xyz else None,
            "description": self.description, "caveats": self.caveats, "training": self.training,
            "created_by": self.created_by,
        }
        if self.extra:
            values["extra"] = self.extra
        return values

    def to_json(self) -> str:
        try:
            return json.dumps(self.to_dict(), sort_keys=False, allow_nan=False)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"model metadata is not JSON-serialisable: {error}") from None

    @classmethod
    def from_dict(cls, values: dict) -> "ModelMetadata":
        if not isinstance(values, dict):
            raise ConfigError("model metadata must be a JSON object")
        if values.get("format") != MODEL_FORMAT:
            raise ConfigError(f"not a RevGAN model: format is {values.get('format')!r}, expected {MODEL_FORMAT!r}")
        version = values.get("format_version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ConfigError(f"invalid format_version {version!r}")
        if version > MODEL_FORMAT_VERSION:
            raise ConfigError(
                f"format_version {version} was written by a newer RevGAN; this RevGANCore ({__version__}) "
                f"reads format_version {MODEL_FORMAT_VERSION}. Update RevGAN")
        missing = [key for key in ("task", "domains", "generator") if not values.get(key)]
        if missing:
            raise ConfigError(f"model metadata lacks {', '.join(missing)}")
        known = {key: values[key] for key in _FIELDS if key in values}
        extra = dict(values.get("extra") or {})
        extra.update({key: value for key, value in values.items() if key not in _FIELDS and key != "extra"})
        if known.get("scale_factors_xyz") is not None and isinstance(known["scale_factors_xyz"], list):
            known["scale_factors_xyz"] = tuple(known["scale_factors_xyz"])
        if "hu_window" in known and isinstance(known["hu_window"], list):
            known["hu_window"] = tuple(known["hu_window"])
        return cls(extra=extra, **known)


@dataclass
class TranslationModel:
    """A loaded model: the generator (eval mode) and its metadata."""

    generator: RevGANGenerator3d
    metadata: ModelMetadata
    path: Optional[Path] = None

    @property
    def name(self) -> str:
        return self.metadata.name or (self.path.name if self.path else "model")

    @property
    def task(self) -> str:
        return self.metadata.task

    @property
    def receptive_field(self) -> ReceptiveField:
        return receptive_field(self.generator.config)

    @property
    def device(self) -> torch.device:
        return next(self.generator.parameters()).device

    def describe(self) -> str:
        meta = self.metadata
        config = self.generator.config
        factors = f", factors (x, y, z) {list(meta.scale_factors_xyz)}" if meta.scale_factors_xyz else ""
        return (f"{self.name}: {meta.task} ({meta.domains['x']} <-> {meta.domains['y']}), "
                f"ngf {config.ngf}, depth {config.depth}{factors}")


def _same_architecture(a: dict, b: dict) -> bool:
    ignore = {"memory_saving"}  # a training-time choice; the weights are the same
    return {k: v for k, v in a.items() if k not in ignore} == {k: v for k, v in b.items() if k not in ignore}


def save_model(path, generator: RevGANGenerator3d, metadata: ModelMetadata) -> Path:
    """Write ``generator``'s weights and ``metadata`` to ``path`` (atomically). An empty
    ``metadata.generator`` is filled from the generator; a different one is an error."""
    path = Path(path)
    if not isinstance(generator, RevGANGenerator3d):
        raise ConfigError(f"save_model needs a RevGANGenerator3d, got {type(generator).__name__}")
    config = generator.config.to_dict()
    if not metadata.generator:
        metadata = replace(metadata, generator=config)
    elif not _same_architecture(metadata.generator, config):
        raise ConfigError(f"{path}: metadata.generator {metadata.generator} does not match the generator's "
                          f"configuration {config}")
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in generator.state_dict().items()}
    return save_safetensors(path, tensors, {METADATA_KEY: metadata.to_json()})


def load_model(path, device: Union[str, torch.device] = "cpu") -> TranslationModel:
    """Load a model file (or a registry name) into a :class:`TranslationModel` on ``device``."""
    path = get_model_path(path)
    tensors, strings = load_safetensors(path)
    if METADATA_KEY not in strings:
        raise ModelFileError(f"{path}: is a safetensors file but not a RevGAN model (no {METADATA_KEY!r} "
                             "metadata)")
    try:
        values = json.loads(strings[METADATA_KEY])
    except ValueError as error:
        raise ModelFileError(f"{path}: the RevGAN metadata is not valid JSON ({error})") from None
    try:
        metadata = ModelMetadata.from_dict(values)
        config = metadata.generator_config
        generator = RevGANGenerator3d(config=config)
    except RevGANError as error:
        raise ModelFileError(f"{path}: {error}") from None
    expected = generator.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(name for name in set(expected) & set(tensors)
                   if tuple(expected[name].shape) != tuple(tensors[name].shape))
    if missing or unexpected or wrong:
        parts = []
        for label, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if names:
                shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
                parts.append(f"{label}: {shown}")
        raise ModelFileError(f"{path}: the weights do not match the generator described in its metadata "
                             f"(ngf {config.ngf}, depth {config.depth}); {'; '.join(parts)}")
    for name, tensor in tensors.items():
        if not tensor.is_floating_point():
            raise ModelFileError(f"{path}: weight {name!r} has dtype {tensor.dtype}, expected floating point")
        if not torch.isfinite(tensor).all():
            raise ModelFileError(f"{path}: weight {name!r} contains NaN or infinite values")
    generator.load_state_dict(tensors, strict=True)
    generator.eval()
    try:
        generator.to(torch.device(device))
    except (RuntimeError, TypeError) as error:
        raise ModelFileError(f"{path}: cannot move the model to device {device!r} ({error})") from None
    return TranslationModel(generator, metadata, path)


def as_model(model, device: Union[str, torch.device] = "cpu") -> TranslationModel:
    """``model`` itself if it is a :class:`TranslationModel`, else :func:`load_model` of it
    (a model file path or a registry name)."""
    if isinstance(model, TranslationModel):
        return model
    if isinstance(model, (str, os.PathLike)):
        return load_model(model, device)
    raise ModelFileError(f"expected a TranslationModel, a model file or a model name, got {type(model).__name__}")


def check_task(model: TranslationModel, expected_task: str) -> None:
    """Raise :class:`ModelFileError` unless ``model`` is for ``expected_task``."""
    if expected_task not in TASKS:
        raise ConfigError(f"unknown task {expected_task!r}; tasks are {', '.join(TASKS)}")
    if model.task != expected_task:
        where = model.path or model.name
        domains = model.metadata.domains
        raise ModelFileError(f"{where}: is a {model.task!r} model ({domains['x']} -> {domains['y']}), "
                             f"but this needs a {expected_task!r} model")


# =========================================================================== registry


@dataclass(frozen=True)
class ModelEntry:
    """One shipped model in the registry."""

    name: str
    path: Path
    card: Optional[Path]
    task: str
    description: str
    default: bool = False

    @property
    def available(self) -> bool:
        return self.path.is_file()


def models_dir_candidates() -> List[Path]:
    """Folders searched for ``models.json``, in order (see the module documentation)."""
    override = os.environ.get(MODELS_DIR_ENV)
    if override:
        return [Path(override).expanduser()]
    package = Path(__file__).resolve().parent
    return [package.parent / "Resources" / "Models", package / "Resources" / "Models"]


def models_dir() -> Optional[Path]:
    """The registry folder in use, or None when no models are shipped."""
    override = os.environ.get(MODELS_DIR_ENV)
    if override and not Path(override).expanduser().is_dir():
        raise ModelFileError(f"{MODELS_DIR_ENV}={override}: no such folder")
    for candidate in models_dir_candidates():
        if (candidate / REGISTRY_FILE).is_file():
            return candidate
    return None


def list_models() -> List[ModelEntry]:
    """Every model in the registry, in the order of ``models.json`` (empty if none)."""
    folder = models_dir()
    if folder is None:
        return []
    index = folder / REGISTRY_FILE
    try:
        raw = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ModelFileError(f"{index}: cannot be read as a model registry ({error})") from None
    if not isinstance(raw, dict) or raw.get("format") != REGISTRY_FORMAT:
        raise ModelFileError(f"{index}: not a RevGAN model registry (\"format\" must be \"{REGISTRY_FORMAT}\")")
    if raw.get("format_version") != 1:
        raise ModelFileError(f"{index}: unsupported registry format_version {raw.get('format_version')!r}")
    models = raw.get("models")
    if not isinstance(models, dict):
        raise ModelFileError(f"{index}: \"models\" must be an object mapping names to entries")
    entries = []
    for name, entry in models.items():
        where = f"{index}: model {name!r}"
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str) or not entry["file"]:
            raise ModelFileError(f"{where} needs a \"file\"")
        if entry.get("task") not in TASKS:
            raise ModelFileError(f"{where}: task must be one of {', '.join(TASKS)}")
        card = entry.get("card")
        if card is not None and not isinstance(card, str):
            raise ModelFileError(f"{where}: \"card\" must be a file name")
        entries.append(ModelEntry(name=name, path=folder / entry["file"], card=folder / card if card else None,
                                  task=entry["task"], description=str(entry.get("description", "")),
                                  default=bool(entry.get("default", False))))
    return entries


def get_model_path(name_or_path) -> Path:
    """A model file path from a path or a registry name. A path that does not exist, or a
    name that is not registered, raises :class:`ModelFileError`."""
    text = os.fspath(name_or_path)
    candidate = Path(text).expanduser()
    looks_like_path = (candidate.suffix != "" or os.sep in text or (os.altsep or os.sep) in text
                       or candidate.exists())
    if looks_like_path:
        if not candidate.exists():
            raise ModelFileError(f"{candidate}: no such model file")
        if candidate.is_dir():
            raise ModelFileError(f"{candidate}: is a folder, not a model file")
        return candidate
    entries = list_models()
    for entry in entries:
        if entry.name == text:
            if not entry.available:
                raise ModelFileError(f"model {text!r} is registered but its file {entry.path} is missing "
                                     "(a Git LFS file not fetched?)")
            return entry.path
    if not entries:
        raise ModelFileError(f"no model file or shipped model named {text!r} (no models are shipped in "
                             f"{_searched()})")
    names = ", ".join(entry.name for entry in entries)
    raise ModelFileError(f"no model file or shipped model named {text!r}; shipped models: {names}")


def default_model(task: str) -> ModelEntry:
    """The registry's default model for ``task`` (the one marked default, else the first)."""
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; tasks are {', '.join(TASKS)}")
    matching = [entry for entry in list_models() if entry.task == task]
    if not matching:
        raise ModelFileError(f"no {task} model is shipped yet (searched {_searched()}); pass a model "
                             "file with --model")
    defaults = [entry for entry in matching if entry.default]
    return (defaults or matching)[0]


def _searched() -> str:
    return ", ".join(str(path) for path in models_dir_candidates())
