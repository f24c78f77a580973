"""Planning a batch: which scans a cohort holds, what each output is called, and which
scans one shard takes.

Inputs are volume files, DICOM folders, folder trees (every volume file, and every DICOM
series of every folder: one scan each) and dataset manifests (``manifest.json`` or a folder
holding one: each case's volume of the model's source domain). Discovery is deterministic:
the same cohort gives the same jobs in the same order on every machine, so shards
(``--shard K/N``) split it without talking to each other.

A job's id is its input's path relative to the root it was found under (without the file
type; a DICOM series adds ``series<SeriesNumber>``; a manifest case is ``<case id>``),
made safe for a file name (:func:`~RevGANCore.file_labels.safe_file_label`) and unique
(``-2``, ``-3`` on a clash, case-insensitively). The output is ``<OUT>/<id><suffix>``,
or the folder ``<OUT>/<id>`` for DICOM. Jobs are sorted by id; shard K of N takes the
jobs whose index in that order is K-1 modulo N.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set, Tuple

from .errors import ConfigError
from .file_labels import claim_label, safe_file_label
from .output import is_within
from .volume_io import VOLUME_SUFFIXES, volume_suffix

__all__ = ["BatchJob", "OUTPUT_FORMAT_SUFFIXES", "parse_shard", "plan_batch", "shard_jobs"]

#: ``--format`` values and the file ending they write ("" for a DICOM series folder).
OUTPUT_FORMAT_SUFFIXES = {"nifti": ".nii.gz", "nrrd": ".nrrd", "dicom": ""}

#: Files a header-plus-data volume keeps its voxels in: never scans of their own.
_DATA_FILE_ENDINGS = (".raw", ".raw.gz", ".zraw", ".img")


@dataclass(frozen=True)
class BatchJob:
    """One scan to translate: ``input`` (a file or DICOM folder), the series in it (for
    DICOM), and the output path."""

    job_id: str
    input: Path
    series_uid: Optional[str]
    output: Path

    @property
    def key(self) -> Tuple[str, str]:
        """What identifies the scan in a ledger: the input path and series."""
        return str(self.input), self.series_uid or ""


@dataclass(frozen=True)
class _Found:
    label: str
    input: Path
    series_uid: Optional[str]


def parse_shard(text: str) -> Tuple[int, int]:
    """``"K/N"`` -> (K, N) with 1 <= K <= N."""
    numerator, slash, denominator = str(text).partition("/")
    try:
        index, count = int(numerator), int(denominator)
    except ValueError:
        index = count = 0
    if not slash or count < 1 or not 1 <= index <= count:
        raise ConfigError(f"--shard must be K/N with 1 <= K <= N (e.g. 2/8), got {text!r}")
    return index, count


def shard_jobs(jobs: Sequence[BatchJob], shard: Tuple[int, int]) -> List[BatchJob]:
    """The jobs shard ``(K, N)`` takes: every N-th job of the sorted list, from the K-th."""
    index, count = shard
    return [job for position, job in enumerate(jobs) if position % count == index - 1]


def plan_batch(inputs: Sequence, out_dir, output_format: str, task: str, direction: str = "forward") -> List[BatchJob]:
    """Every scan of ``inputs``, sorted by job id, with its output in ``out_dir``.

    ``task`` and ``direction`` choose the domain read from a manifest (the task's source
    forward, its target inverse). Nothing under ``out_dir`` is taken as an input. A missing
    input, or a file that is neither a volume nor a manifest, is a :class:`ConfigError`
    (the command line is wrong: nothing runs); a scan that cannot be read fails later, alone."""
    if output_format not in OUTPUT_FORMAT_SUFFIXES:
        raise ConfigError(f"output format must be one of {', '.join(OUTPUT_FORMAT_SUFFIXES)}, got {output_format!r}")
    if not inputs:
        raise ConfigError("no inputs: give volume files, DICOM folders, folder trees or manifests")
    out_dir = Path(os.path.abspath(os.fspath(out_dir)))
    found: List[_Found] = []
    for item in inputs:
        found.extend(_discover(Path(os.path.abspath(os.fspath(item))), out_dir, task, direction))
    if not found:
        shown = ", ".join(str(item) for item in inputs)
        raise ConfigError(f"{shown}: holds no volume file, DICOM series or manifest case to translate")
    suffix = OUTPUT_FORMAT_SUFFIXES[output_format]
    ids = _unique_ids(found)
    jobs = [BatchJob(ids[position], scan.input, scan.series_uid, out_dir / (ids[position] + suffix))
            for position, scan in enumerate(found)]
    return sorted(jobs, key=lambda job: job.job_id)


def _unique_ids(found: Sequence[_Found]) -> Dict[int, str]:
    """A file-safe id per scan, distinct case-insensitively; clashes are numbered in the
    order of (label, input, series), so the numbering does not depend on argument order."""
    order = sorted(range(len(found)), key=lambda i: (safe_file_label(found[i].label), str(found[i].input),
                                                     found[i].series_uid or ""))
    taken: Set[str] = set()
    return {position: claim_label(safe_file_label(found[position].label), taken) for position in order}


def _discover(location: Path, out_dir: Path, task: str, direction: str) -> List[_Found]:
    if not location.exists():
        raise ConfigError(f"{location}: no such file or folder")
    if is_within(location, out_dir):
        raise ConfigError(f"{location}: lies in the output folder {out_dir}; choose an --out folder outside "
                          "the inputs' files")
    if location.is_file():
        if location.suffix.lower() == ".json":
            return _manifest_scans(location, task, direction)
        suffix = volume_suffix(location)
        if not suffix:
            raise ConfigError(f"{location}: not a volume file ({', '.join(VOLUME_SUFFIXES)}), DICOM folder or "
                              "dataset manifest (.json)")
        return [_Found(location.name[:-len(suffix)], location, None)]
    if (location / "manifest.json").is_file():
        return _manifest_scans(location / "manifest.json", task, direction)
    return _tree_scans(location, out_dir)


def _manifest_scans(path: Path, task: str, direction: str) -> List[_Found]:
    from .manifest import load_manifest

    manifest = load_manifest(path)
    roles = manifest.task(task)
    domain = roles["source"] if direction == "forward" else roles["target"]
    return [_Found(case.id, case.files[domain], None) for case in manifest.cases_with([domain])]


def _tree_scans(root: Path, out_dir: Path) -> List[_Found]:
    """Every volume file and every DICOM series under ``root``; hidden entries (staging
    folders of an interrupted run, among others) and ``out_dir`` are left out."""
    from .dicom import find_series

    found: List[_Found] = []
    for here, folders, names in os.walk(str(root)):
        folders[:] = sorted(name for name in folders
                            if not name.startswith(".") and not is_within(Path(here) / name, out_dir))
        visible = sorted(name for name in names if not name.startswith("."))
        others = []
        for name in visible:
            suffix = volume_suffix(name)
            if suffix:
                found.append(_Found(_relative_label(root, Path(here) / name[:-len(suffix)]), Path(here) / name, None))
            elif not name.lower().endswith(_DATA_FILE_ENDINGS):
                others.append(name)
        if others:  # only folders with other files can hold DICOM (and GDCM then reads every file)
            for info in find_series(here):
                number = info.series_number if info.series_number is not None else info.series_uid
                label = f"{_relative_label(root, Path(here))}/series{number}"
                found.append(_Found(label, Path(here), info.series_uid))
    return found


def _relative_label(root: Path, path: Path) -> str:
    relative = os.path.relpath(str(path), str(root))
    return root.name if relative == "." else Path(relative).as_posix()
