"""The registry of shipped models: every lookup of a model by name, or of the folder the
shipped models live in, goes through this module.

Shipped models live in a folder with a ``models.json`` index::

    {"format": "revgan-model-registry", "format_version": 1,
     "models": {"NAME": {"file": "NAME.safetensors", "card": "NAME.md",
                         "task": "super_resolution", "description": "one line",
                         "default": true, "sha256": "64 hexadecimal digits"}}}

(``file`` and ``card`` relative to the folder). ``sha256``, the model file's checksum, is
checked every time the file is loaded (:func:`verified_name`): a damaged or edited shipped
file would otherwise give different results without any error. The same folder holds ``table2/`` (the
Table-2 variants read by ``revgan bench quality``). The folder is the first of:

1. ``$REVGAN_MODELS_DIR`` (if set, it must exist);
2. the package data ``RevGANCore/shipped_models`` (found with :mod:`importlib.resources`):
   a wheel or ``pip install .`` copies the repository's ``Resources/Models`` there;
3. ``<package>/../Resources/Models``: the repository layout, and the Slicer module layout
   where ``RevGANCore/`` and ``Resources/`` are installed side by side;

the first one holding a ``models.json``. No folder means no shipped models.

Models a user added live in the user's model folder (:mod:`RevGANCore.model_store`):
:func:`all_models` lists them after the shipped ones, and :func:`get_model_path` finds
them by name (a shipped name wins; a user model's checksum is verified on every use).
"""

from __future__ import annotations

import difflib
import json
import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import List, Optional

from .errors import ConfigError, ModelFileError
from .modelmetadata import TASKS, check_text

__all__ = ["ModelEntry", "MODELS_DIR_ENV", "PACKAGE_DATA_FOLDER", "REGISTRY_FILE", "REGISTRY_FORMAT",
           "models_dir", "models_dir_candidates", "list_models", "all_models", "get_model_path", "default_model",
           "registered_entry", "registered_name", "verified_name", "check_checksum", "table2_dir"]

REGISTRY_FORMAT = "revgan-model-registry"
REGISTRY_FILE = "models.json"
MODELS_DIR_ENV = "REVGAN_MODELS_DIR"
#: Where a wheel carries the shipped models inside the package (pyproject.toml maps the
#: repository's Resources/Models onto it).
PACKAGE_DATA_FOLDER = "shipped_models"
TABLE2_FOLDER = "table2"


@dataclass(frozen=True)
class ModelEntry:
    """One model: shipped (in the registry) or added by the user (``origin`` "user",
    with the SHA-256 recorded when it was added)."""

    name: str
    path: Path
    card: Optional[Path]
    task: str
    description: str
    default: bool = False
    origin: str = "shipped"
    sha256: Optional[str] = None

    @property
    def available(self) -> bool:
        return self.path.is_file()


def _package_data_folder() -> Optional[Path]:
    """The package-data folder as a real path, or None when the package is not unpacked on
    disk (a zip import): model files are memory-mapped and need real files."""
    folder = resources.files(__package__) / PACKAGE_DATA_FOLDER
    return folder if isinstance(folder, Path) else None


def models_dir_candidates() -> List[Path]:
    """Folders searched for ``models.json``, in order (see the module documentation)."""
    override = os.environ.get(MODELS_DIR_ENV)
    if override:
        return [Path(override).expanduser()]
    package = Path(__file__).resolve().parent
    beside_package = package.parent / "Resources" / "Models"
    package_data = _package_data_folder()
    return ([package_data] if package_data is not None else []) + [beside_package]


def models_dir() -> Optional[Path]:
    """The registry folder in use, or None when no models are shipped."""
    override = os.environ.get(MODELS_DIR_ENV)
    if override and not Path(override).expanduser().is_dir():
        raise ModelFileError(f"{MODELS_DIR_ENV}={override}: no such folder")
    for candidate in models_dir_candidates():
        if (candidate / REGISTRY_FILE).is_file():
            return candidate
    return None


def table2_dir() -> Path:
    """The folder of the shipped Table-2 variants (``table2.json`` and the models)."""
    folder = models_dir()
    if folder is None:
        raise ModelFileError(f"no models are shipped (searched {_searched()}); pass a folder with --models")
    return folder / TABLE2_FOLDER


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
    return [_entry(index, folder, name, entry) for name, entry in models.items()]


def all_models() -> List[ModelEntry]:
    """The shipped models, then the user's (see :mod:`RevGANCore.model_store`)."""
    from .model_store import list_user_models

    users = [ModelEntry(name=e.name, path=e.path, card=e.card, task=e.task, description=e.description,
                        origin="user", sha256=e.sha256) for e in list_user_models()]
    return list_models() + users


def _entry(index: Path, folder: Path, name: str, entry) -> ModelEntry:
    where = f"{index}: model {name!r}"
    if not isinstance(entry, dict) or not isinstance(entry.get("file"), str) or not entry["file"]:
        raise ModelFileError(f"{where} needs a \"file\"")
    if entry.get("task") not in TASKS:
        raise ModelFileError(f"{where}: task must be one of {', '.join(TASKS)}")
    card = entry.get("card")
    if card is not None and not isinstance(card, str):
        raise ModelFileError(f"{where}: \"card\" must be a file name")
    digest = entry.get("sha256")
    if digest is not None and not (isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest)):
        raise ModelFileError(f"{where}: \"sha256\" must be 64 lower-case hexadecimal digits")
    try:  # names and descriptions are printed by `revgan models`: no terminal escapes
        check_text(name, "the model name")
        description = check_text(entry.get("description", ""), "its description")
    except ConfigError as error:
        raise ModelFileError(f"{index}: {error}") from None
    return ModelEntry(name=name, path=folder / entry["file"], card=folder / card if card else None,
                      task=entry["task"], description=description, default=bool(entry.get("default", False)),
                      sha256=digest)


def registered_entry(path) -> Optional[ModelEntry]:
    """The entry ``path`` is listed under (shipped, then user models), or None. A registry
    that cannot be read lists nothing: the file itself may still be used."""
    try:
        target = Path(path).resolve()
        for entry in all_models():
            if entry.path.resolve() == target:
                return entry
    except (OSError, ConfigError, ModelFileError):
        return None
    return None


def registered_name(path) -> Optional[str]:
    """The name ``path`` is listed under, or None: the name a result should carry (logs,
    DICOM headers, Slicer nodes) is the one the user chose, not the one the file was
    trained under."""
    entry = registered_entry(path)
    return entry.name if entry is not None else None


def verified_name(path) -> Optional[str]:
    """:func:`registered_name` of a model file about to be loaded, after :func:`check_checksum`."""
    entry = registered_entry(path)
    if entry is None:
        return None
    check_checksum(entry)
    return entry.name


def check_checksum(entry: ModelEntry) -> None:
    """Raise :class:`ModelFileError` when ``entry``'s file is not the one its registry recorded
    (an entry without a checksum is not checked)."""
    if entry.sha256 is None:
        return
    if entry.origin == "user":  # the user's model folder has its own check (model_store.verified_path)
        from .model_store import find_user_model, verified_path

        stored = find_user_model(entry.name)
        if stored is not None:
            verified_path(stored)
        return
    from .checksums import file_sha256

    try:
        actual = file_sha256(entry.path)
    except OSError as error:
        raise ModelFileError(f"{entry.path}: cannot be read ({error.strerror or error})") from None
    if actual == entry.sha256:
        return
    raise ModelFileError(f"{entry.path}: checksum mismatch (SHA-256 {actual[:12]}..., recorded "
                         f"{entry.sha256[:12]}...) for model {entry.name!r}: the shipped model is damaged or "
                         "was edited; reinstall the package or restore the file")


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
    from .model_store import find_user_model, list_user_models, verified_path

    stored = find_user_model(text)
    if stored is not None:
        return verified_path(stored)
    users = ", ".join(entry.name for entry in list_user_models()) or "none"
    if not entries:
        raise ModelFileError(f"no model file, shipped or user model named {text!r} (no models are shipped in "
                             f"{_searched()}; user models: {users})")
    names = ", ".join(entry.name for entry in entries)
    close = difflib.get_close_matches(text, [entry.name for entry in all_models()], n=1, cutoff=0.75)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ModelFileError(f"no model file, shipped or user model named {text!r}{hint}; shipped models: {names}; "
                         f"user models: {users}")


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
