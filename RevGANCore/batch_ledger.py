"""The batch ledger: one JSON line per finished scan, in ``<OUT>/ledger-K-of-N.jsonl``
(one file per shard, so shards never write the same file)::

    {"job": "patient1_ct", "input": "/data/cohort/patient1/ct.nrrd", "series": null,
     "output": "patient1_ct.nii.gz", "sha256": "9f2c...", "voxels": 3145728, "seconds": 41.2,
     "status": "ok", "error": null, "warnings": [], "shard": "1/4", "finished": "2026-12-02T01:53:16Z"}

``output`` is relative to the ledger's folder; ``sha256`` is the output file's digest (for a
DICOM series folder: the digest of its files' names and digests, in name order). A failed
scan has ``status`` "failed", ``error`` its one-line message and no output; ``warnings``
lists what the translation warned about (a DICOM kernel that looks like the model's target,
a voxel spacing outside the range the model supports).

Each line is on disk before the next scan starts (:class:`~RevGANCore.output.AppendOnlyLog`),
so a killed run loses at most the scans in flight. Reading tolerates lines torn by a kill
(they are counted and skipped: at worst a scan is done again). A scan counts as done when
any ledger in the folder has an "ok" line for its input and series whose output is the
planned one and still has the recorded digest.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from .batch_plan import BatchJob
from .checksums import file_sha256
from .errors import ConfigError

__all__ = ["LedgerRecords", "ledger_name", "output_digest", "read_ledgers", "is_done", "record_for"]

LEDGER_GLOB = "ledger-*-of-*.jsonl"


def ledger_name(shard: Tuple[int, int]) -> str:
    return f"ledger-{shard[0]}-of-{shard[1]}.jsonl"


def output_digest(path) -> Optional[str]:
    """sha256 of an output file, or of a DICOM series folder (its files' names and digests
    in name order); None when it does not exist."""
    location = Path(path)
    if location.is_file():
        return file_sha256(location)
    if not location.is_dir():
        return None
    digest = hashlib.sha256()
    for item in sorted(p for p in location.rglob("*") if p.is_file()):
        digest.update(item.relative_to(location).as_posix().encode("utf-8") + b"\0")
        digest.update(file_sha256(item).encode("ascii") + b"\n")
    return digest.hexdigest()


class LedgerRecords:
    """The "ok" records of every ledger in a folder, by (input, series), and how many
    lines could not be read (torn by a kill)."""

    def __init__(self) -> None:
        self.ok: Dict[Tuple[str, str], List[dict]] = {}
        self.unreadable_lines = 0

    def add(self, record: dict) -> None:
        if record.get("status") == "ok" and isinstance(record.get("input"), str):
            key = (record["input"], record.get("series") or "")
            self.ok.setdefault(key, []).append(record)


def read_ledgers(out_dir) -> LedgerRecords:
    records = LedgerRecords()
    folder = Path(out_dir)
    if not folder.is_dir():
        return records
    for ledger in sorted(folder.glob(LEDGER_GLOB)):
        try:
            data = ledger.read_bytes()
        except OSError as error:
            raise ConfigError(f"{ledger}: cannot read the ledger ({error.strerror or error})") from None
        for line in data.split(b"\n"):
            if not line.strip():
                continue
            try:
                record = json.loads(line.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                records.unreadable_lines += 1
                continue
            if isinstance(record, dict):
                records.add(record)
            else:
                records.unreadable_lines += 1
    return records


def is_done(job: BatchJob, records: LedgerRecords, out_dir) -> bool:
    """True when a ledger says ``job`` finished and its output is still what was written."""
    for record in records.ok.get(job.key, []):
        if record.get("output") != job.output.name or not isinstance(record.get("sha256"), str):
            continue
        if output_digest(Path(out_dir) / record["output"]) == record["sha256"]:
            return True
    return False


def record_for(job: BatchJob, shard: Tuple[int, int], seconds: float, voxels: int = 0,
               error: Optional[str] = None, warnings: Sequence[str] = ()) -> dict:
    """The ledger line of a finished (``error`` None) or failed job, with the warnings
    its translation gave (a DICOM kernel that looks like the model's target domain)."""
    ok = error is None
    return {"job": job.job_id, "input": str(job.input), "series": job.series_uid,
            "output": job.output.name if ok else None, "sha256": output_digest(job.output) if ok else None,
            "voxels": int(voxels) if ok else None, "seconds": round(float(seconds), 3),
            "status": "ok" if ok else "failed", "error": error, "warnings": list(warnings),
            "shard": f"{shard[0]}/{shard[1]}",
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
