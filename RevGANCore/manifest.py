"""Dataset manifests: one JSON file listing cases, their volume files per domain, and the
translation tasks the domains support.

Format (``format_version`` 1)::

    {
      "format": "revgan-dataset",
      "format_version": 1,
      "created_by": "RevGANCore 0.1.0 (revgan phantom)",
      "domains": {"hr": {"description": "..."}, "lr": {...}, ...},
      "tasks": {
        "super_resolution": {"source": "lr", "target": "hr", "factors_xyz": [2, 2, 4]},
        "kernel": {"source": "sharp", "target": "smooth"}
      },
      "cases": [
        {"id": "case000", "files": {"hr": "case000/hr.nii.gz", "lr": "case000/lr.nii.gz"}, ...}
      ],
      "generator": {...}            (phantom datasets: every parameter and seed)
      "source": {...}               (DICOM datasets: where each file came from)
    }

File paths are relative to the manifest's folder (forward slashes) or absolute. Cases may
hold extra keys (seeds, series UIDs); readers ignore keys they do not know.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from .output import write_text_atomic
from .errors import ConfigError

MANIFEST_FORMAT = "revgan-dataset"
MANIFEST_VERSION = 1
MANIFEST_NAME = "manifest.json"


@dataclass(frozen=True)
class ManifestCase:
    id: str
    files: Dict[str, Path]
    extra: Dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Manifest:
    """A validated manifest: absolute file paths, domains, tasks and the raw JSON."""

    path: Path
    domains: Dict[str, dict]
    tasks: Dict[str, dict]
    cases: List[ManifestCase]
    raw: dict

    @property
    def case_ids(self) -> List[str]:
        return [case.id for case in self.cases]

    def case(self, case_id: str) -> ManifestCase:
        for case in self.cases:
            if case.id == case_id:
                return case
        raise ConfigError(f"{self.path}: no case {case_id!r}; cases are {', '.join(self.case_ids)}")

    def task(self, name: str) -> dict:
        if name not in self.tasks:
            raise ConfigError(f"{self.path}: no task {name!r}; tasks are {', '.join(self.tasks) or 'none'}")
        return self.tasks[name]

    def cases_with(self, domains: Sequence[str]) -> List[ManifestCase]:
        return [case for case in self.cases if all(domain in case.files for domain in domains)]


def load_manifest(path) -> Manifest:
    """Read and check a manifest (a manifest.json file, or a folder holding one). Every
    problem, including missing volume files (all of them are named), raises ConfigError."""
    location = Path(path)
    if location.is_dir():
        location = location / MANIFEST_NAME
    if not location.is_file():
        raise ConfigError(f"{location}: no such manifest file")
    try:
        raw = json.loads(location.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"{location}: not a readable JSON manifest ({error})") from None
    where = str(location)
    if not isinstance(raw, dict) or raw.get("format") != MANIFEST_FORMAT:
        raise ConfigError(f"{where}: not a RevGAN dataset manifest (\"format\" must be \"{MANIFEST_FORMAT}\")")
    version = raw.get("format_version")
    if not isinstance(version, int) or version < 1 or version > MANIFEST_VERSION:
        raise ConfigError(f"{where}: unsupported format_version {version!r} (this RevGANCore reads 1 to "
                          f"{MANIFEST_VERSION})")
    domains = raw.get("domains")
    if not isinstance(domains, dict) or not domains:
        raise ConfigError(f"{where}: \"domains\" must be a non-empty object")
    tasks = raw.get("tasks", {})
    if not isinstance(tasks, dict):
        raise ConfigError(f"{where}: \"tasks\" must be an object")
    for name, task in tasks.items():
        if not isinstance(task, dict) or task.get("source") not in domains or task.get("target") not in domains:
            raise ConfigError(f"{where}: task {name!r} must name a source and a target among the domains "
                              f"{sorted(domains)}")
    entries = raw.get("cases")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{where}: \"cases\" must be a non-empty list")
    cases: List[ManifestCase] = []
    missing: List[str] = []
    seen = set()
    for number, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str) or not entry["id"]:
            raise ConfigError(f"{where}: case #{number} needs a non-empty string \"id\"")
        case_id = entry["id"]
        if case_id in seen:
            raise ConfigError(f"{where}: case id {case_id!r} appears twice")
        seen.add(case_id)
        files = entry.get("files")
        if not isinstance(files, dict) or not files:
            raise ConfigError(f"{where}: case {case_id!r} needs a non-empty \"files\" object")
        resolved: Dict[str, Path] = {}
        for domain, relative in files.items():
            if domain not in domains:
                raise ConfigError(f"{where}: case {case_id!r} has a file for unknown domain {domain!r}")
            if not isinstance(relative, str) or not relative:
                raise ConfigError(f"{where}: case {case_id!r} domain {domain!r}: the file must be a path string")
            file_path = Path(relative)
            if not file_path.is_absolute():
                file_path = location.parent / file_path
            if not file_path.exists():
                missing.append(str(file_path))
            resolved[domain] = file_path
        cases.append(ManifestCase(case_id, resolved, {k: v for k, v in entry.items() if k not in ("id", "files")}))
    if missing:
        shown = "; ".join(missing[:10]) + (f"; and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise ConfigError(f"{where}: {len(missing)} volume file(s) listed but missing: {shown}")
    return Manifest(location, domains, tasks, cases, raw)


def new_manifest(domains: Dict[str, dict], tasks: Dict[str, dict], created_by: str) -> dict:
    """The skeleton of a manifest, to which writers add cases and provenance."""
    return {"format": MANIFEST_FORMAT, "format_version": MANIFEST_VERSION, "created_by": created_by,
            "domains": domains, "tasks": tasks, "cases": []}


def write_manifest(manifest: dict, folder) -> Path:
    """Write ``manifest`` as ``folder/manifest.json`` atomically (stable key order and
    formatting, so equal datasets give byte-identical manifests)."""
    text = json.dumps(manifest, indent=2, sort_keys=False) + "\n"
    return write_text_atomic(Path(folder) / MANIFEST_NAME, text)


def relative_path(file_path: Path, folder: Path) -> str:
    """``file_path`` relative to ``folder`` with forward slashes (portable manifests)."""
    return Path(os.path.relpath(str(file_path), str(folder))).as_posix()


def pick_cases(manifest: Manifest, case_ids: Optional[Sequence[str]]) -> List[ManifestCase]:
    if case_ids is None:
        return list(manifest.cases)
    return [manifest.case(case_id) for case_id in case_ids]
