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
Metadata is validated for types and bounds in one place (:mod:`RevGANCore.modelmetadata`,
with the generator's bounds on :class:`GeneratorConfig`), and the tensor names, shapes and
dtypes in the header are compared with the architecture it describes
(:func:`generator_state_shapes`) before any weight is read or any module built: a small
file that describes a huge network is refused at once. :func:`read_metadata` does all of
that without reading the weights (the Slicer model card uses it).

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
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import List, Optional, Union
from typing import TYPE_CHECKING

from .errors import ConfigError, ModelFileError
from .modelmetadata import (DEFAULT_HU_WINDOW, FLOAT_DTYPES, METADATA_KEY, MODEL_FORMAT, MODEL_FORMAT_VERSION,
                            TASKS, ModelMetadata, check_text, read_model_header)
from .printable import printable
from .tensorfile import read_safetensors_tensors, save_safetensors

if TYPE_CHECKING:  # torch and the networks are imported where weights are used: metadata and the registry
    import torch     # are read without them (the Slicer panel must not import torch)

    from .networks import ReceptiveField, RevGANGenerator3d

__all__ = [
    "MODEL_FORMAT", "MODEL_FORMAT_VERSION", "METADATA_KEY", "TASKS", "DEFAULT_HU_WINDOW",
    "ModelMetadata", "TranslationModel", "save_model", "load_model", "read_metadata", "as_model", "check_task",
    "ModelEntry", "models_dir", "models_dir_candidates", "list_models", "get_model_path",
    "default_model", "MODELS_DIR_ENV",
]

REGISTRY_FORMAT = "revgan-model-registry"
REGISTRY_FILE = "models.json"
MODELS_DIR_ENV = "REVGAN_MODELS_DIR"


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
        from .networks import receptive_field

        return receptive_field(self.generator.config)

    @property
    def device(self) -> torch.device:
        return next(self.generator.parameters()).device

    def describe(self) -> str:
        """One printable line (names from the file are passed through :func:`printable`)."""
        meta = self.metadata
        config = self.generator.config
        factors = f", factors (x, y, z) {list(meta.scale_factors_xyz)}" if meta.scale_factors_xyz else ""
        return printable(f"{self.name}: {meta.task} ({meta.domains['x']} <-> {meta.domains['y']}), "
                         f"ngf {config.ngf}, depth {config.depth}{factors}")


def _same_architecture(a: dict, b: dict) -> bool:
    ignore = {"memory_saving"}  # a training-time choice; the weights are the same
    return {k: v for k, v in a.items() if k not in ignore} == {k: v for k, v in b.items() if k not in ignore}


def save_model(path, generator: RevGANGenerator3d, metadata: ModelMetadata) -> Path:
    """Write ``generator``'s weights and ``metadata`` to ``path`` (atomically). An empty
    ``metadata.generator`` is filled from the generator; a different one is an error."""
    from .networks import RevGANGenerator3d

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


def read_metadata(path) -> ModelMetadata:
    """The validated metadata of a model file (or a registry name), checked against the
    tensor names, shapes and dtypes in its header, without reading any weights."""
    return read_model_header(get_model_path(path))[3]


def load_model(path, device: Union[str, torch.device] = "cpu") -> TranslationModel:
    """Load a model file (or a registry name) into a :class:`TranslationModel` on ``device``."""
    import torch

    from .networks import RevGANGenerator3d

    path = get_model_path(path)
    header, start, size, metadata, config = read_model_header(path)
    tensors = read_safetensors_tensors(path, header, start, size)
    for name, tensor in sorted(tensors.items()):
        if not torch.isfinite(tensor).all():
            raise ModelFileError(f"{path}: weight {name!r} contains NaN or infinite values")
    generator = RevGANGenerator3d(config=config)
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
        raise ModelFileError(printable(f"{where}: is a {model.task!r} model ({domains['x']} -> {domains['y']}), "
                                       f"but this needs a {expected_task!r} model"))


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
        try:  # names and descriptions are printed by `revgan models`: no terminal escapes
            check_text(name, "the model name")
            description = check_text(entry.get("description", ""), "its description")
        except ConfigError as error:
            raise ModelFileError(f"{index}: {error}") from None
        entries.append(ModelEntry(name=name, path=folder / entry["file"], card=folder / card if card else None,
                                  task=entry["task"], description=description,
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
