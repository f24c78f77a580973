"""The Table-2 training protocol (README, "Reproducing Table 2"):

- every row (task x variant, configs/table2/<row>.toml) is trained in each phantom world
  ("linear": FBP-like pairs, "nonlinear": iterative-reconstruction-like targets), each world on
  its own training phantoms;
- every run of every row and world gets the same iteration budget and the same sizing;
- every row is trained with several training seeds (3 by default), so the table can report
  mean and standard deviation over seeds and cases;
- the validation cases decide everything chosen during training: each run keeps the
  checkpoint its validation criterion prefers (``best.safetensors``; pairs for paired rows,
  the pair-free criterion for unpaired rows), and the seed a row ships (per world) is the one
  with the best validation value;
- the test cases (:mod:`RevGANCore.phantom_splits`) decide nothing: they are only measured.

``tools/gpu_session.py`` (all runs at once on a GPU) and ``tools/cpu_table2.py`` (a few at a
time on CPU cores) run it through :func:`train_runs`; this module holds the rules so they are
tested.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence

from ..phantom_dataset import WORLDS
from ..validation import is_better

TASKS = ("super_resolution", "kernel")
VARIANTS = ("paired_2r", "paired", "unpaired_2r", "unpaired")
ROWS = tuple(f"{task}_{variant}" for task in TASKS for variant in VARIANTS)
DEFAULT_SEEDS = 3
REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs" / "table2"


class RunResult(NamedTuple):
    """How a run's process ended: its exit code (None: never started) and wall seconds."""

    code: Optional[int]
    seconds: float


class ProtocolRun(NamedTuple):
    """One training run of the protocol: a row, trained in a world, with a training seed."""

    row: str
    world: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.row}/{self.world}/seed{self.seed}"


def split_row(row: str):
    """("kernel", "paired_2r") of "kernel_paired_2r"."""
    for task in TASKS:
        if row.startswith(task + "_") and row[len(task) + 1:] in VARIANTS:
            return task, row[len(task) + 1:]
    raise ValueError(f"unknown Table-2 row {row!r}; rows are {', '.join(ROWS)}")


def protocol_runs(rows: Sequence[str] = ROWS, worlds: Sequence[str] = WORLDS,
                  seeds: Sequence[int] = range(DEFAULT_SEEDS)) -> List[ProtocolRun]:
    """Every (row, world, seed), seed-major: the first seed of every row finishes first, so a
    run stopped by its time budget still has one model per row."""
    for world in worlds:
        if world not in WORLDS:
            raise ValueError(f"unknown phantom world {world!r}; worlds are {', '.join(WORLDS)}")
    for row in rows:
        split_row(row)
    return [ProtocolRun(row, world, seed) for seed in seeds for world in worlds for row in rows]


def run_folder(runs_dir: Path, row: str, seed: int, world: str = "linear") -> Path:
    return Path(runs_dir) / world / row / f"seed{seed}"


def world_manifest(manifest: str, world: str) -> str:
    """The training manifest of a world: the configured one for "linear", a sibling folder
    with the world's suffix (``phantoms_train_nonlinear``) otherwise, as in the quality bench."""
    if world == "linear":
        return manifest
    path = Path(manifest)
    return str(path.parent.with_name(f"{path.parent.name}_{world}") / path.name)


def run_overrides(seed: int, iterations: int, output_dir: Path, world: str = "linear",
                  manifest: Optional[str] = None) -> List[str]:
    """The ``--set`` values that make a row's configuration one run of the protocol: only the
    training seed, the world (its phantoms) and the output folder differ between runs of a
    row, and only the row's own settings between rows; the iteration budget is the same for
    all. ``manifest`` is the row's configured (linear-world) manifest, needed for other worlds."""
    values = [f"seed={seed}", f"optim.iterations={iterations}", f"output_dir={output_dir}"]
    if world != "linear":
        if manifest is None:
            raise ValueError(f"the {world} world needs the row's manifest to place its phantoms")
        values += [f"data.generate.world={world}", f"data.manifest={world_manifest(manifest, world)}"]
    return values


def ensure_world_phantoms(worlds: Sequence[str], sizing: Sequence[str] = (), log=print) -> None:
    """Each world's training phantoms, generated once before runs start side by side (they
    must not race to write them). Every row shares base.toml's data, so one row stands for all."""
    from ..config import load_config
    from ..training_data import ensure_training_manifest

    config_path = str(CONFIGS / f"{ROWS[0]}.toml")
    manifest = load_config(config_path, list(sizing)).data.manifest
    for world in worlds:
        overrides = [f"data.generate.world={world}", f"data.manifest={world_manifest(manifest, world)}"]
        ensure_training_manifest(load_config(config_path, [*sizing, *overrides]), log=log)


def train_command(run: ProtocolRun, iterations: int, runs_dir: Path, sizing: Sequence[str] = ()) -> List[str]:
    """The ``revgan train`` command line of one run; ``sizing`` (``key=value`` settings: patch,
    batch, device ...) is the same for every run and comes before the protocol's own values."""
    from ..config import load_config

    config_path = CONFIGS / f"{run.row}.toml"
    manifest = load_config(str(config_path), list(sizing)).data.manifest
    values = [*sizing, *run_overrides(run.seed, iterations, run_folder(runs_dir, run.row, run.seed, run.world),
                                      run.world, manifest)]
    return [sys.executable, "-m", "RevGANCore", "train", str(config_path),
            *[item for value in values for item in ("--set", value)]]


def train_runs(runs: Sequence[ProtocolRun], iterations: int, runs_dir: Path, logs_dir: Path,
               sizing: Sequence[str] = (), parallel: int = 0, deadline: Optional[float] = None,
               env: Optional[Dict[str, str]] = None, nice: int = 0,
               log=print) -> Dict[ProtocolRun, RunResult]:
    """Trains ``runs`` with at most ``parallel`` processes at a time (0: all at once), each
    logging to ``logs_dir/<row>_<world>_seed<seed>.log``. At ``deadline`` (``time.time()``
    seconds) running processes get SIGTERM (they save a checkpoint and stop) and runs not
    started yet are skipped (return code None)."""
    logs_dir = Path(logs_dir)
    logs_dir.mkdir(parents=True, exist_ok=True)
    waiting = list(runs)
    running: Dict[ProtocolRun, subprocess.Popen] = {}
    results: Dict[ProtocolRun, RunResult] = {run: RunResult(None, 0.0) for run in runs}
    started: Dict[ProtocolRun, float] = {}
    limit = parallel or len(waiting)

    def start(run: ProtocolRun) -> subprocess.Popen:
        command = train_command(run, iterations, runs_dir, sizing)
        log_path = logs_dir / f"{run.row}_{run.world}_seed{run.seed}.log"
        preexec = (lambda: os.nice(nice)) if nice else None
        log(f"start {run.name}")
        started[run] = time.time()
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=open(log_path, "w"), stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=preexec)

    while waiting or running:
        for run, process in list(running.items()):
            if process.poll() is not None:
                results[run] = RunResult(process.returncode, time.time() - started[run])
                log(f"done {run.name} (exit {process.returncode})")
                del running[run]
        if deadline is not None and time.time() > deadline:
            for run in waiting:
                log(f"skipped {run.name} (time budget)")
            waiting = []
            for process in running.values():
                os.killpg(process.pid, signal.SIGTERM)
            for run, process in running.items():
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
                results[run] = RunResult(process.returncode, time.time() - started[run])
                log(f"stopped {run.name} by the time budget")
            break
        while waiting and len(running) < limit:
            run = waiting.pop(0)
            running[run] = start(run)
        time.sleep(0.5)
    return results


def predicted_seconds(runs: Sequence[ProtocolRun], iterations: int, seconds_per_iteration: Dict[str, float],
                      overhead: Dict[str, float], parallel: int = 0) -> float:
    """Wall seconds of :func:`train_runs` predicted from a timing run (per row: seconds per
    iteration, and a run's seconds outside its iterations), by replaying its schedule: runs
    start in order whenever one of ``parallel`` slots frees."""
    slots = [0.0] * (parallel or len(runs) or 1)
    for run in runs:
        first_free = min(range(len(slots)), key=slots.__getitem__)
        slots[first_free] += overhead[run.row] + iterations * seconds_per_iteration[run.row]
    return max(slots)


def iterations_for_budget(runs: Sequence[ProtocolRun], budget_seconds: float, seconds_per_iteration: Dict[str, float],
                          overhead: Dict[str, float], parallel: int = 0, step: int = 10,
                          maximum: int = 100000) -> int:
    """The largest iteration count (a multiple of ``step``, at least ``step``) whose predicted
    schedule fits ``budget_seconds``: the one budget every run of the protocol gets."""
    iterations = step
    while (iterations + step <= maximum and predicted_seconds(runs, iterations + step, seconds_per_iteration, overhead,
                                                               parallel) <= budget_seconds):
        iterations += step
    return iterations


def chosen_seed(summaries: Dict[int, dict]) -> Optional[int]:
    """The seed whose run reached the best validation value (the runs' own best_metric)."""
    best_seed, best_value = None, None
    for seed, summary in sorted(summaries.items()):
        value = summary.get("best_value")
        if value is None or not summary.get("best_model"):
            continue
        if is_better(summary["best_metric"], value, best_value):
            best_seed, best_value = seed, value
    return best_seed


def model_file_name(row: str, world: str, seed: int) -> str:
    return f"{row}_{world}_seed{seed}.safetensors"


def table_index(runs_dir: Path, rows: Sequence[str], seeds: Sequence[int], iterations: int,
                worlds: Sequence[str] = ("linear",), sizing: Sequence[str] = ()) -> dict:
    """The Table-2 model index (table2.json) of finished runs: one entry per row, world and
    seed with its validation-chosen model; ``chosen`` marks the seed each row ships in each
    world."""
    models = []
    for world in worlds:
        for row in rows:
            task, variant = split_row(row)
            summaries = {}
            for seed in seeds:
                path = run_folder(runs_dir, row, seed, world) / "summary.json"
                if path.is_file():
                    summaries[seed] = json.loads(path.read_text(encoding="utf-8"))
            chosen = chosen_seed(summaries)
            for seed, summary in sorted(summaries.items()):
                if not summary.get("best_model"):
                    continue
                models.append({"task": task, "variant": variant, "world": world, "seed": seed,
                               "file": model_file_name(row, world, seed), "config": f"configs/table2/{row}.toml",
                               "iterations": summary["step"], "best_metric": summary["best_metric"],
                               "validation": summary["best_value"], "chosen": seed == chosen})
    return {"protocol": {"iterations_per_run": iterations, "seeds": list(seeds), "worlds": list(worlds),
                         "sizing": list(sizing),
                         "selection": "validation cases only (best_metric per run; best validation seed per row "
                                      "and world)"},
            "models": models}


def best_model_path(runs_dir: Path, entry: dict) -> Path:
    """The run's validation-chosen model file of a table-index entry."""
    row = f"{entry['task']}_{entry['variant']}"
    return run_folder(runs_dir, row, entry["seed"], entry.get("world", "linear")) / "best.safetensors"
