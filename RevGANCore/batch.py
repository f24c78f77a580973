"""Translating a cohort: many scans with one model, resumable, shardable, never stopped
by one bad scan.

:func:`run_batch` plans the jobs (:mod:`RevGANCore.batch_plan`), skips with ``resume`` the
ones a ledger says are done (:mod:`RevGANCore.batch_ledger`), translates the rest one by
one (or ``jobs`` at a time in worker processes that each load the model once) with
:func:`~RevGANCore.inference.translate_file`, which writes every output through the output
door, and appends one ledger line per finished scan. A scan that fails is recorded with its
one-line error and the batch goes on; the summary says how many failed.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from .batch_ledger import is_done, ledger_name, read_ledgers, record_for
from .batch_plan import BatchJob, plan_batch, shard_jobs
from .errors import ConfigError, RevGANError
from .output import AppendOnlyLog, check_writable_location
from .printable import printable

__all__ = ["BatchOptions", "BatchSummary", "run_batch"]


@dataclass(frozen=True)
class BatchOptions:
    """How each scan is translated (see :func:`~RevGANCore.inference.translate_file`)."""

    direction: str = "forward"
    output_format: str = "nifti"
    dtype: str = "int16"
    device: str = "auto"
    tile_size: Union[None, int, Tuple[int, int, int]] = None
    precision: str = "auto"
    strict: bool = False
    #: Window budget (MiB); None: the inference default, divided among ``jobs`` workers.
    tile_memory_mib: Optional[float] = None
    #: False: accept scans without any air-like voxel (``--no-air-check``; see
    #: :func:`~RevGANCore.volume_io.air_check`).
    air_check: bool = True


@dataclass
class BatchSummary:
    total: int
    done: int = 0
    skipped: int = 0
    failed: int = 0
    seconds: float = 0.0
    ledger: Optional[Path] = None
    unreadable_ledger_lines: int = 0
    failures: List[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"total": self.total, "done": self.done, "skipped_as_done": self.skipped, "failed": self.failed,
                "seconds": round(self.seconds, 2), "ledger": str(self.ledger) if self.ledger else None,
                "unreadable_ledger_lines": self.unreadable_ledger_lines,
                "failures": [{"job": item["job"], "error": item["error"]} for item in self.failures]}


Progress = Optional[Callable[..., None]]


class _Pace:
    """Scans done out of the shard's total, output voxels per second and the time left,
    given to ``progress(done, total, postfix)``."""

    def __init__(self, progress: Progress, total: int, already_done: int):
        self.progress = progress
        self.total = total
        self.done = already_done
        self.started = time.perf_counter()
        self.voxels = 0
        self.finished_here = 0

    def update(self, voxels: int = 0, finished: bool = True) -> None:
        if finished:
            self.done += 1
            self.finished_here += 1
            self.voxels += voxels
        if self.progress is None:
            return
        elapsed = time.perf_counter() - self.started
        parts = []
        if self.finished_here and elapsed > 0:
            parts.append(f"{self.voxels / elapsed / 1e6:.2f} Mvoxel/s")
            left = (self.total - self.done) * elapsed / self.finished_here
            parts.append(f"ETA {_duration(left)}")
        self.progress(self.done, self.total, ", ".join(parts))


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def run_batch(model, inputs: Sequence, out_dir, options: BatchOptions = BatchOptions(),
              task: Optional[str] = None, shard: Tuple[int, int] = (1, 1), jobs: int = 1, resume: bool = False,
              progress: Progress = None, on_record: Optional[Callable[[dict], None]] = None,
              log: Optional[Callable[[str], None]] = None, threads: int = 0) -> BatchSummary:
    """Translate every scan of ``inputs`` that shard ``(K, N)`` takes into ``out_dir``.

    ``model``: a model file or registry name (workers load it themselves). ``task``, if
    given, is checked against the model. Without ``resume`` the shard's ledger must not
    exist yet; with it, scans that a ledger in ``out_dir`` records as done (output present
    with the recorded digest) are skipped. ``progress(done, total, postfix)`` after each
    scan; ``on_record(record)`` with each ledger line. ``threads``: the CPU threads the
    workers share (0: one per core). Errors of the command itself (bad
    arguments, a bad model, an unwritable ``out_dir``) raise; a bad scan does not."""
    from .modelfile import check_task, load_model
    from .registry import get_model_path

    started = time.perf_counter()
    if not isinstance(jobs, int) or jobs < 1:
        raise ConfigError(f"--jobs must be a positive integer, got {jobs!r}")
    out_dir = Path(os.path.abspath(os.fspath(out_dir)))
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{out_dir}: exists and is not a folder; --out needs a folder")
    model_path = get_model_path(model)
    loaded = load_model(model_path)
    if task is not None:
        check_task(loaded, task)
    plan = plan_batch(inputs, out_dir, options.output_format, loaded.task, options.direction)
    mine = shard_jobs(plan, shard)
    ledger = out_dir / ledger_name(shard)
    if ledger.exists() and not resume:
        raise ConfigError(f"{ledger}: an earlier run of this shard left its ledger here; pass --resume to "
                          "continue it, or choose a new --out folder")
    check_writable_location(ledger)
    summary = BatchSummary(total=len(mine), ledger=ledger)
    todo = mine
    if resume:
        records = read_ledgers(out_dir)
        summary.unreadable_ledger_lines = records.unreadable_lines
        todo = [job for job in mine if not is_done(job, records, out_dir)]
        summary.skipped = len(mine) - len(todo)
    _say(log, f"{len(plan)} scan(s) found; shard {shard[0]}/{shard[1]} takes {len(mine)}"
              + (f", {summary.skipped} already done" if resume else "") + f"; ledger {ledger}")
    pace = _Pace(progress, len(mine), summary.skipped)
    pace.update(finished=False)
    out_dir.mkdir(parents=True, exist_ok=True)
    with AppendOnlyLog(ledger) as log_file:
        results = (_run_in_this_process(loaded, todo, options, shard) if jobs == 1 or len(todo) <= 1
                   else _run_in_workers(model_path, todo, options, shard, jobs, threads))
        for record in results:
            log_file.append(_json_line(record))
            if record["status"] == "ok":
                summary.done += 1
            else:
                summary.failed += 1
                summary.failures.append(record)
            if on_record is not None:
                on_record(record)
            pace.update(voxels=record.get("voxels") or 0)
    summary.seconds = time.perf_counter() - started
    return summary


def _say(log, message: str) -> None:
    if log is not None:
        log(message)


def _json_line(record: dict) -> str:
    import json

    return json.dumps(record, ensure_ascii=True, sort_keys=False)


# --------------------------------------------------------------------------- one scan


def translate_job(model, job: BatchJob, options: BatchOptions, shard: Tuple[int, int]) -> dict:
    """Translate one job; its ledger record, "failed" with a one-line error if it could not
    be done (any error but an interruption: one scan never stops the batch)."""
    from .inference import translate_file

    output_format = "dicom" if options.output_format == "dicom" else "volume"
    warnings: List[str] = []
    started = time.perf_counter()
    try:
        translate_file(model, job.input, job.output, direction=options.direction, tile_size=options.tile_size,
                       device=options.device, dtype=options.dtype, precision=options.precision,
                       tile_memory_mib=options.tile_memory_mib, output_format=output_format,
                       series=job.series_uid, strict=options.strict,
                       warn=lambda text: warnings.append(printable(text)))
        voxels = _output_voxels(job.output)
    except RevGANError as error:
        return record_for(job, shard, time.perf_counter() - started, error=_one_line(error), warnings=warnings)
    except Exception as error:  # noqa: BLE001 -- a crash on one scan is that scan's failure
        return record_for(job, shard, time.perf_counter() - started, warnings=warnings,
                          error=_one_line(f"{job.input}: unexpected {type(error).__name__}: {error}"))
    return record_for(job, shard, time.perf_counter() - started, voxels=voxels, warnings=warnings)


def _one_line(error) -> str:
    lines = str(error).strip().splitlines() or [type(error).__name__]
    return printable(lines[0])


def _output_voxels(path: Path) -> int:
    """Voxels of a written output, from its header (a DICOM folder: slices x rows x columns)."""
    import SimpleITK as sitk

    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(files[0]))
    reader.ReadImageInformation()
    size = reader.GetSize()
    voxels = 1
    for n in size:
        voxels *= int(n)
    return voxels * (len(files) if path.is_dir() else 1)


def _run_in_this_process(model, todo: Sequence[BatchJob], options: BatchOptions,
                         shard: Tuple[int, int]) -> Iterator[dict]:
    for job in todo:
        yield _checked_job(model, job, options, shard)


def _checked_job(model, job: BatchJob, options: BatchOptions, shard: Tuple[int, int]) -> dict:
    """:func:`translate_job` under the options' air check; a refused scan's record names the option."""
    from .volume_io import COMMAND_LINE_AIR_HINT, air_check

    with air_check(options.air_check, hint=COMMAND_LINE_AIR_HINT):
        return translate_job(model, job, options, shard)


# --------------------------------------------------------------------------- worker processes

_WORKER_MODEL = None


def _start_worker(model_path: str, threads: int) -> None:
    global _WORKER_MODEL
    import torch

    from .modelfile import load_model

    torch.set_num_threads(threads)
    _WORKER_MODEL = load_model(model_path)


def _worker_job(job: BatchJob, options: BatchOptions, shard: Tuple[int, int]) -> dict:
    return _checked_job(_WORKER_MODEL, job, options, shard)


def _run_in_workers(model_path: Path, todo: Sequence[BatchJob], options: BatchOptions,
                    shard: Tuple[int, int], jobs: int, threads: int = 0) -> Iterator[dict]:
    """Records in the order scans finish; at most ``jobs`` scans are in flight, so a killed
    run loses at most those. Each worker gets (``threads`` or cores) // jobs torch threads."""
    import multiprocessing

    threads = max(1, (threads or os.cpu_count() or 1) // jobs)
    if options.tile_memory_mib is None:  # the workers share the machine's memory
        from .inference import default_cpu_window_mib

        options = replace(options, tile_memory_mib=default_cpu_window_mib(workers=jobs))
    # "spawn": a forked copy of a process that already ran torch can deadlock in its thread pools.
    context = multiprocessing.get_context("spawn")
    pending = list(todo)[::-1]
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_start_worker,
                             initargs=(str(model_path), threads)) as pool:
        running: Dict[object, BatchJob] = {}
        try:
            while pending or running:
                while pending and len(running) < jobs:
                    job = pending.pop()
                    running[pool.submit(_worker_job, job, options, shard)] = job
                finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for future in finished:
                    job = running.pop(future)
                    error = future.exception()
                    if error is None:
                        yield future.result()
                    else:  # the worker died (killed, out of memory): that scan failed
                        yield record_for(job, shard, 0.0,
                                         error=_one_line(f"{job.input}: worker failed: {type(error).__name__}: "
                                                         f"{error}"))
        except BaseException:
            for future in running:
                future.cancel()
            raise
