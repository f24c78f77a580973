"""The user's model folder: model files a user adds beside the shipped ones, with checksums.

The folder is ``$REVGAN_USER_MODELS_DIR`` when set, else the user's data folder:

- Linux and other POSIX: ``$XDG_DATA_HOME/revgan/models`` (``~/.local/share/revgan/models``);
- macOS: ``~/Library/Application Support/RevGAN/models``;
- Windows: ``%APPDATA%\\RevGAN\\models``.

It holds the added files (``NAME.safetensors``, and ``NAME.md`` when the added file had a
model card beside it) and an index, ``user-models.json``::

    {"format": "revgan-user-models", "format_version": 1,
     "models": {"NAME": {"file": "NAME.safetensors", "card": "NAME.md" or null,
                         "sha256": "...", "task": "kernel", "description": "one line",
                         "source": "/where/it/was/added/from.safetensors",
                         "added": "2026-12-01T10:00:00+00:00"}}}

:func:`add_model` validates a file with :func:`RevGANCore.modelmetadata.read_metadata`
before anything is copied (an invalid file is refused with the reason and the file
name), copies it in through the output door (staged, checked against its checksum and
re-validated, then published atomically) and records its SHA-256. Every use of a stored
model by name (:func:`verified_path`, which :func:`RevGANCore.registry.get_model_path`
calls) recomputes the checksum, so a file changed or damaged after it was added is
refused rather than run. :func:`remove_model` removes a user model, never a shipped one.

Torch-free: the Slicer panel lists and adds models without importing PyTorch.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from . import checksums
from .errors import ModelFileError, RevGANError
from .modelmetadata import ModelMetadata, check_text, read_metadata
from .output import refuse_overlap, replaced_atomically, write_text_atomic

__all__ = ["STORE_DIR_ENV", "INDEX_FILE", "INDEX_FORMAT", "MODEL_SUFFIX", "StoredModel", "default_store_dir",
           "store_dir", "file_sha256", "list_user_models", "find_user_model", "verified_path", "add_model",
           "remove_model"]

STORE_DIR_ENV = "REVGAN_USER_MODELS_DIR"
INDEX_FILE = "user-models.json"
INDEX_FORMAT = "revgan-user-models"
MODEL_SUFFIX = ".safetensors"
#: Names become file names: letters, digits, dot, dash and underscore, starting with a letter or digit.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


@dataclass(frozen=True)
class StoredModel:
    """One model in the user's folder."""

    name: str
    path: Path
    card: Optional[Path]
    task: str
    description: str
    sha256: str
    source: str = ""
    added: str = ""


# --------------------------------------------------------------------------- the folder


def default_store_dir() -> Path:
    """The user's model folder when ``$REVGAN_USER_MODELS_DIR`` is not set."""
    home = Path.home()
    if os.name == "nt":
        base = Path(os.environ.get("APPDATA") or home / "AppData" / "Roaming")
        return base / "RevGAN" / "models"
    if sys.platform == "darwin":
        return home / "Library" / "Application Support" / "RevGAN" / "models"
    base = Path(os.environ.get("XDG_DATA_HOME") or home / ".local" / "share")
    return base / "revgan" / "models"


def store_dir() -> Path:
    """The user's model folder in use (it may not exist yet: nothing was added)."""
    override = os.environ.get(STORE_DIR_ENV)
    return Path(override).expanduser() if override else default_store_dir()


def file_sha256(path) -> str:
    try:
        return checksums.file_sha256(path)
    except OSError as error:
        raise ModelFileError(f"{path}: cannot be read ({error.strerror or error})") from None


# --------------------------------------------------------------------------- the index


def _index_path(folder: Path) -> Path:
    return folder / INDEX_FILE


def _read_index(folder: Path) -> Dict[str, dict]:
    index = _index_path(folder)
    if not index.is_file():
        return {}
    try:
        raw = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ModelFileError(f"{index}: cannot be read as the user model index ({error})") from None
    if not isinstance(raw, dict) or raw.get("format") != INDEX_FORMAT or raw.get("format_version") != 1:
        raise ModelFileError(f"{index}: not a RevGAN user model index (format {INDEX_FORMAT!r}, version 1)")
    models = raw.get("models")
    if not isinstance(models, dict):
        raise ModelFileError(f"{index}: \"models\" must be an object mapping names to entries")
    return models


def _write_index(folder: Path, models: Dict[str, dict]) -> None:
    text = json.dumps({"format": INDEX_FORMAT, "format_version": 1, "models": models}, indent=2)
    write_text_atomic(_index_path(folder), text + "\n")


def _entry(folder: Path, name: str, raw) -> StoredModel:
    where = f"{_index_path(folder)}: model {name!r}"
    if not isinstance(raw, dict) or not NAME_PATTERN.fullmatch(str(name)):
        raise ModelFileError(f"{where}: is not a valid entry")
    file, card, digest = raw.get("file"), raw.get("card"), raw.get("sha256")
    # Entries name files inside the folder only: an edited index cannot point elsewhere.
    if not isinstance(file, str) or Path(file).name != file or not file.endswith(MODEL_SUFFIX):
        raise ModelFileError(f"{where}: \"file\" must be a {MODEL_SUFFIX} file name in {folder}")
    if card is not None and (not isinstance(card, str) or Path(card).name != card):
        raise ModelFileError(f"{where}: \"card\" must be a file name in {folder}")
    if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise ModelFileError(f"{where}: \"sha256\" must be 64 hexadecimal digits")
    try:
        description = check_text(raw.get("description", ""), "its description")
        task = check_text(raw.get("task", ""), "its task")
    except RevGANError as error:
        raise ModelFileError(f"{where}: {error}") from None
    return StoredModel(name=name, path=folder / file, card=folder / card if card else None, task=task,
                       description=description, sha256=digest, source=str(raw.get("source", "")),
                       added=str(raw.get("added", "")))


def list_user_models(folder=None) -> List[StoredModel]:
    """The user's models, in the order they were added (empty when none)."""
    folder = Path(folder) if folder is not None else store_dir()
    return [_entry(folder, name, raw) for name, raw in _read_index(folder).items()]


def find_user_model(name: str, folder=None) -> Optional[StoredModel]:
    for entry in list_user_models(folder):
        if entry.name == name:
            return entry
    return None


def verified_path(entry: StoredModel) -> Path:
    """The model file of ``entry`` after checking that it is still the file that was added."""
    if not entry.path.is_file():
        raise ModelFileError(f"user model {entry.name!r}: its file {entry.path} is missing; remove it "
                             "and add it again")
    actual = file_sha256(entry.path)
    if actual != entry.sha256:
        raise ModelFileError(f"{entry.path}: checksum mismatch (SHA-256 {actual[:12]}..., recorded "
                             f"{entry.sha256[:12]}...): the file changed after it was added; remove user model "
                             f"{entry.name!r} and add it again")
    return entry.path


# --------------------------------------------------------------------------- add and remove


def _shipped_names() -> List[str]:
    from .registry import list_models

    return [entry.name for entry in list_models()]


def _checked_name(name: str, source: Path) -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise ModelFileError(f"{source}: {name!r} cannot name a model (use letters, digits, '.', '-' and '_', "
                             "starting with a letter or digit, at most 100 characters); choose another name")
    if name in _shipped_names():
        raise ModelFileError(f"{source}: {name!r} is the name of a shipped model; choose another name")
    return name


def _copy_checked(source: Path, target: Path, digest: str) -> None:
    """Copy ``source`` to ``target`` through the output door; the staged copy must have the
    source's checksum and still be a valid model file before it is published."""
    with replaced_atomically(target) as staged:
        with open(source, "rb") as reader, open(staged, "wb") as writer:
            shutil.copyfileobj(reader, writer, checksums.CHUNK_BYTES)
            writer.flush()
            os.fsync(writer.fileno())
        if file_sha256(staged) != digest:
            raise ModelFileError(f"{source}: the copy in {target.parent} differs from the file (did it change "
                                 "while it was being added?); nothing was added")
        if target.suffix == MODEL_SUFFIX:
            read_metadata(staged)


def add_model(path, name: Optional[str] = None, folder=None, replace: bool = False) -> StoredModel:
    """Validate the model file ``path`` and copy it into the user's folder as ``name``
    (default: the file's name without ``.safetensors``). A model card ``<file stem>.md``
    beside the file is copied too. Raises :class:`ModelFileError` for an invalid file, a
    name in use (unless ``replace``) or a shipped model's name."""
    source = Path(path).expanduser()
    if source.suffix != MODEL_SUFFIX:
        raise ModelFileError(f"{source}: not a {MODEL_SUFFIX} model file")
    if not source.is_file():
        raise ModelFileError(f"{source}: no such model file")
    metadata: ModelMetadata = read_metadata(source)  # refuses invalid files, naming them
    name = _checked_name(name if name is not None else source.stem, source)
    folder = Path(folder) if folder is not None else store_dir()
    models = _read_index(folder)
    if name in models and not replace:
        raise ModelFileError(f"{source}: a user model named {name!r} exists; remove it first or choose another "
                             "name")
    target = folder / f"{name}{MODEL_SUFFIX}"
    card_source = source.with_suffix(".md")
    card_target = folder / f"{name}.md" if card_source.is_file() else None
    refuse_overlap([target] + ([card_target] if card_target else []),
                   [source] + ([card_source] if card_target else []))
    digest = file_sha256(source)
    folder.mkdir(parents=True, exist_ok=True)
    _copy_checked(source, target, digest)
    try:
        if card_target is not None:
            _copy_checked(card_source, card_target, file_sha256(card_source))
        description = metadata.description.splitlines()[0] if metadata.description else ""
        models[name] = {"file": target.name, "card": card_target.name if card_target else None, "sha256": digest,
                        "task": metadata.task, "description": description, "source": str(source.resolve()),
                        "added": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        _write_index(folder, models)
    except BaseException:
        if not replace:  # a new model that is not in the index must not stay behind
            for leftover in (target, card_target):
                if leftover is not None and leftover.exists():
                    leftover.unlink()
        raise
    return _entry(folder, name, models[name])


def remove_model(name: str, folder=None) -> StoredModel:
    """Remove the user model ``name`` (its index entry, then its files). Shipped models
    cannot be removed."""
    folder = Path(folder) if folder is not None else store_dir()
    models = _read_index(folder)
    if name not in models:
        if name in _shipped_names():
            raise ModelFileError(f"{name!r} is a shipped model; only models you added can be removed")
        known = ", ".join(models) or "none"
        raise ModelFileError(f"no user model named {name!r} in {folder} (user models: {known})")
    entry = _entry(folder, name, models.pop(name))
    _write_index(folder, models)
    for item in (entry.path, entry.card):
        if item is not None:
            try:
                item.unlink()
            except FileNotFoundError:
                pass
    return entry
