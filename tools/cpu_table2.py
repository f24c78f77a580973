#!/usr/bin/env python3
"""Table 2 on a few CPU cores: the whole protocol of RevGANCore/bench/protocol.py (8 rows x 2
phantom worlds x 3 training seeds = 48 runs), CPU-sized.

Run from the repository root (nice it: the runs take the machine's cores):

    nice -n 10 python3 tools/cpu_table2.py --budget 3600 --parallel 2 --out Resources/Models/table2_cpu

1. generates each world's training phantoms once, before runs start side by side;
2. calibrates the budget: every row (linear world, seed 0) trains ``CALIBRATION_ITERATIONS``
   iterations with the CPU sizing, ``--parallel`` at a time, giving each row's seconds per
   iteration and its seconds outside iterations (start-up, data, validation);
3. picks ONE iteration count for every run: the largest whose replayed schedule of all runs
   fits ``--budget`` seconds (times ``SAFETY`` for the VM's drift). It is decided by timing
   alone, before any result exists;
4. trains all runs (``--parallel`` processes, one thread each), then writes the index of every
   run (``<work>/table2/table2.json``: all seeds, validation values, the chosen seed per row and
   world), gathers every run's model with that index in ``<work>/all_seeds`` and copies the
   chosen seeds' models into ``--out`` with their own index; both are Table-2 model folders
   (table2.json, read by ``revgan bench quality --models``) with ``cpu_table2_<tasks>.json``
   (sizing, iterations, calibration, wall time). Rows may be trained apart (``--rows``, e.g.
   with other ``--iterations``) into one ``--out``: each run replaces only its own rows there.

``--dry-run`` does the same with tiny phantoms, networks and budgets, to test this script.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from RevGANCore.bench.protocol import (DEFAULT_SEEDS, ROWS, best_model_path, ensure_world_phantoms,  # noqa: E402
                                       iterations_for_budget, predicted_seconds, protocol_runs, run_folder,
                                       table_index, train_runs)
from RevGANCore.phantom_dataset import WORLDS  # noqa: E402

#: The same for every run: small patches and batches, the rows' own networks (ngf/ndf 16, resize
#: layout). Checkpoints and validation are placed by ``validation_settings``.
CPU_SIZING = ("device=cpu", "data.patch_size=[24,48,48]", "data.batch_size=2", "data.val_patches=8",
              "logging.preview_every=0", "logging.progress=false", "logging.tensorboard=false")
DRY_SIZING = ("device=cpu", "data.patch_size=[24,24,24]", "data.batch_size=1", "data.val_patches=1",
              "model.generator.ngf=4", "model.discriminator.ndf=4", "data.generate.cases=3",
              "data.generate.shape=[32,48,48]", "logging.preview_every=0", "logging.progress=false",
              "logging.tensorboard=false")
CALIBRATION_ITERATIONS = 12
DRY_CALIBRATION_ITERATIONS = 2
SAFETY = 0.9
VALIDATIONS_PER_RUN = 5


def validation_settings(iterations: int):
    """Validate (and keep checkpoints) ``VALIDATIONS_PER_RUN`` times per run."""
    every = max(1, iterations // VALIDATIONS_PER_RUN)
    return (f"checkpoint.validate_every={every}", f"checkpoint.every={every}", "checkpoint.keep_last=1")


def run_environment() -> dict:
    """The training processes' environment: one thread each, unbuffered logs, this checkout first."""
    return dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
                PYTHONPATH=os.pathsep.join([str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))


def write_index(args, runs_dir: Path, iterations: int, run_sizing) -> dict:
    """``<runs_dir>/table2.json``: the index of the finished runs (every seed), returned."""
    index = table_index(runs_dir, args.rows, range(args.seeds), iterations, args.worlds, run_sizing)
    (runs_dir / "table2.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    return index


def say(message: str) -> None:
    print(time.strftime("[%H:%M:%S] ") + message, flush=True)


def calibrate(args, sizing, env) -> dict:
    """Seconds per iteration and outside iterations, per row, from short runs of every row."""
    iterations = DRY_CALIBRATION_ITERATIONS if args.dry_run else CALIBRATION_ITERATIONS
    runs = protocol_runs(args.rows, [args.worlds[0]], [0])
    calibration_dir = args.work / "calibration"
    say(f"calibrating: {len(runs)} rows x {iterations} iterations, {args.parallel} at a time")
    results = train_runs(runs, iterations, calibration_dir, args.work / "logs" / "calibration",
                         sizing=list(sizing) + list(validation_settings(iterations)), parallel=args.parallel,
                         env=env, nice=args.nice, log=say)
    per_iteration, overhead = {}, {}
    for run, result in results.items():
        summary = run_folder(calibration_dir, run.row, run.seed, run.world) / "summary.json"
        if result.code != 0 or not summary.is_file():
            raise SystemExit(f"calibration run {run.name} failed; see {args.work}/logs/calibration")
        seconds = json.loads(summary.read_text(encoding="utf-8"))["seconds"]
        per_iteration[run.row] = seconds / iterations
        overhead[run.row] = max(0.0, result.seconds - seconds)
    return {"iterations": iterations, "seconds_per_iteration": per_iteration, "overhead_seconds": overhead}


def model_folder(folder: Path, index: dict, runs_dir: Path, chosen_only: bool, record: dict) -> int:
    """A Table-2 model folder (what ``revgan bench quality --models`` reads): the models of
    ``index`` (the chosen seeds only, or every seed) under their index names, the index and the
    runner's record (``cpu_table2_<tasks>.json``). A folder that already holds other rows (e.g.
    the kernel rows, when these are the super-resolution rows trained apart) keeps them; rows
    trained here replace their old entries and files."""
    from RevGANCore.output import write_bytes_atomic, write_text_atomic

    folder.mkdir(parents=True, exist_ok=True)
    models = [dict(entry) for entry in index["models"] if entry["chosen"] or not chosen_only]
    tasks = sorted({entry["task"] for entry in index["models"]})
    rows = {f"{entry['task']}_{entry['variant']}" for entry in index["models"]}
    kept, protocol = [], {}
    existing = folder / "table2.json"
    if existing.is_file():
        old = json.loads(existing.read_text(encoding="utf-8"))
        for entry in old.get("models", []):
            if f"{entry['task']}_{entry['variant']}" in rows:
                (folder / entry["file"]).unlink(missing_ok=True)
            else:
                kept.append(entry)
        kept_tasks = {entry["task"] for entry in kept}
        protocol = {task: value for task, value in old.get("protocol", {}).items() if task in kept_tasks}
    protocol.update({task: index["protocol"] for task in tasks})
    for entry in models:
        write_bytes_atomic(folder / entry["file"], best_model_path(runs_dir, entry).read_bytes())
    write_text_atomic(folder / "table2.json", json.dumps({"format": "revgan-table2", "protocol": protocol,
                                                          "models": kept + models}, indent=2) + "\n")
    record_path = folder / f"cpu_table2_{'_'.join(tasks)}.json"
    if record_path.is_file():
        record = merged_record(json.loads(record_path.read_text(encoding="utf-8")), record, rows)
    write_text_atomic(record_path, json.dumps(record, indent=2) + "\n")
    return len(models)


def merged_record(old: dict, record: dict, rows) -> dict:
    """The runner's record of a folder where only ``rows`` were trained again: the other rows'
    runs stay listed, and every earlier training whose rows are still shipped stays in
    ``earlier_trainings`` (its settings, wall times and ``rows``: those of its rows not trained
    since)."""
    kept = {name: run for name, run in old.get("runs", {}).items() if name.split("/")[0] not in rows}
    if not kept:
        return record
    still_shipped = {name.split("/")[0] for name in kept}
    earlier = []
    for training in trainings_of(old):
        left = sorted(set(training["rows"]) & still_shipped)
        if left:
            earlier.append(dict(training, rows=left))
    return dict(record, runs={**kept, **record["runs"]}, earlier_trainings=earlier)


def trainings_of(record: dict) -> list:
    """Every training a record describes, oldest first, each without its runs and with the rows
    it trained. Reads the older layout too (one ``other_rows`` entry whose ``rows`` listed every
    row kept, the top level then having trained the rest)."""
    earlier = list(record.get("earlier_trainings", []))
    if "other_rows" in record:
        earlier.append(record["other_rows"])
    latest = {key: value for key, value in record.items() if key not in ("runs", "other_rows", "earlier_trainings")}
    if "rows" not in latest:
        before = {row for training in earlier for row in training["rows"]}
        latest["rows"] = sorted({name.split("/")[0] for name in record.get("runs", {})} - before)
    return earlier + [latest]


def ship(args, runs_dir: Path) -> None:
    """``<work>/all_seeds`` (every run's model: the table's mean +- std over seeds) and, with
    ``--out``, the chosen seed of every row and world."""
    index = json.loads((runs_dir / "table2.json").read_text(encoding="utf-8"))
    record = json.loads((args.work / "cpu_table2.json").read_text(encoding="utf-8"))
    count = model_folder(args.work / "all_seeds", index, runs_dir, False, record)
    say(f"{count} models of all seeds and their index in {args.work / 'all_seeds'}")
    if args.out:
        count = model_folder(Path(args.out), index, runs_dir, True, record)
        say(f"shipped {count} chosen models and their index into {args.out}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=0.0,
                        help="seconds for all training runs (default 3600; 300 with --dry-run); runs still going "
                             "at 1.25 x budget are stopped")
    parser.add_argument("--parallel", type=int, default=2, help="runs at a time, one thread each (default 2)")
    parser.add_argument("--nice", type=int, default=10, help="niceness of the training processes (default 10)")
    parser.add_argument("--work", default="runs/table2_cpu", help="run folders and logs (default runs/table2_cpu)")
    parser.add_argument("--out", default="", help="where to ship the chosen models (default: ship nothing)")
    parser.add_argument("--rows", nargs="*", choices=ROWS, default=list(ROWS))
    parser.add_argument("--worlds", nargs="*", choices=WORLDS, default=list(WORLDS))
    parser.add_argument("--seeds", type=int, default=DEFAULT_SEEDS, help="training seeds per row (0 .. N-1)")
    parser.add_argument("--iterations", type=int, default=0, help="fixed iterations per run (no calibration)")
    parser.add_argument("--lr", type=float, default=0.0,
                        help="learning rate of every run (default: the rows' own, 2e-4); short CPU budgets "
                             "take larger steps")
    parser.add_argument("--dry-run", action="store_true", help="tiny phantoms, networks and budgets")
    parser.add_argument("--ship-only", action="store_true", help="train nothing: ship the finished runs in --work")
    parser.add_argument("--continue", dest="resume", action="store_true",
                        help="keep --work: train only the runs without a finished summary (a run that failed or "
                             "was stopped starts again), with the iterations and sizing of the record there")
    args = parser.parse_args(argv)
    args.work = Path(args.work).resolve()
    if args.ship_only:
        ship(args, args.work / "table2")
        return 0
    if args.resume:
        return continue_table(args)
    if args.work.exists():
        shutil.rmtree(args.work)
    args.work.mkdir(parents=True)
    args.budget = args.budget or (300.0 if args.dry_run else 3600.0)
    sizing = list(DRY_SIZING if args.dry_run else CPU_SIZING)
    if args.dry_run:
        sizing.append(f"data.manifest={args.work / 'phantoms_dry' / 'manifest.json'}")
    if args.lr:
        sizing.append(f"optim.lr={args.lr:g}")
    env = run_environment()
    started = time.time()
    say(f"phantoms for worlds {', '.join(args.worlds)}")
    ensure_world_phantoms(args.worlds, sizing, log=say)
    runs = protocol_runs(args.rows, args.worlds, range(args.seeds))
    calibration = {}
    iterations = args.iterations
    if not iterations:
        calibration = calibrate(args, sizing, env)
        iterations = iterations_for_budget(runs, args.budget * SAFETY, calibration["seconds_per_iteration"],
                                           calibration["overhead_seconds"], args.parallel,
                                           step=2 if args.dry_run else 10)
        calibration["predicted_seconds"] = round(predicted_seconds(
            runs, iterations, calibration["seconds_per_iteration"], calibration["overhead_seconds"], args.parallel), 1)
        say(f"calibration: {json.dumps(calibration)}; {iterations} iterations per run")
    run_sizing = sizing + list(validation_settings(iterations))
    runs_dir = args.work / "table2"
    training_started = time.time()
    results = train_runs(runs, iterations, runs_dir, args.work / "logs", sizing=run_sizing, parallel=args.parallel,
                         deadline=training_started + 1.25 * args.budget, env=env, nice=args.nice, log=say)
    training_seconds = time.time() - training_started
    index = write_index(args, runs_dir, iterations, run_sizing)
    failed = [run.name for run, result in results.items() if result.code != 0]
    stopped = [entry for entry in index["models"] if entry["iterations"] != iterations]
    record = {"rows": sorted(args.rows), "iterations_per_run": iterations, "sizing": run_sizing, "parallel": args.parallel,
              "threads_per_run": 1, "budget_seconds": args.budget, "training_wall_seconds": round(training_seconds, 1),
              "total_wall_seconds": round(time.time() - started, 1), "calibration": calibration,
              "runs": {run.name: {"exit": result.code, "wall_seconds": round(result.seconds, 1)}
                       for run, result in results.items()},
              "failed": failed,
              "short_of_budget": [f"{e['task']}_{e['variant']}/{e['world']}/seed{e['seed']}" for e in stopped],
              "cpu_count": os.cpu_count(), "dry_run": args.dry_run}
    (args.work / "cpu_table2.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    say(f"trained {len(runs) - len(failed)}/{len(runs)} runs of {iterations} iterations in {training_seconds:.0f} s")
    ship(args, runs_dir)
    return 1 if failed else 0


def finished(runs_dir: Path, run) -> bool:
    summary = run_folder(runs_dir, run.row, run.seed, run.world) / "summary.json"
    return summary.is_file() and json.loads(summary.read_text(encoding="utf-8")).get("status") == "finished"


def continue_table(args) -> int:
    """``--continue``: the runs of the record in ``--work`` that did not finish, trained again
    from scratch with the record's iterations and sizing; then the index and the shipping."""
    record_path = args.work / "cpu_table2.json"
    if not record_path.is_file():
        raise SystemExit(f"--continue: {record_path} does not exist (no table was run in {args.work})")
    record = json.loads(record_path.read_text(encoding="utf-8"))
    iterations, run_sizing = record["iterations_per_run"], record["sizing"]
    runs_dir = args.work / "table2"
    runs = protocol_runs(args.rows, args.worlds, range(args.seeds))
    again = [run for run in runs if not finished(runs_dir, run)]
    say(f"{len(runs) - len(again)} of {len(runs)} runs finished; training {len(again)} again")
    for run in again:
        shutil.rmtree(run_folder(runs_dir, run.row, run.seed, run.world), ignore_errors=True)
    env = run_environment()
    ensure_world_phantoms(args.worlds, [item for item in run_sizing if not item.startswith("checkpoint.")], log=say)
    started = time.time()
    results = train_runs(again, iterations, runs_dir, args.work / "logs", sizing=run_sizing, parallel=args.parallel,
                         env=env, nice=args.nice, log=say)
    record["runs"].update({run.name: {"exit": result.code, "wall_seconds": round(result.seconds, 1), "rerun": True}
                           for run, result in results.items()})
    record["failed"] = [run.name for run in runs if not finished(runs_dir, run)]
    extra = time.time() - started
    record["training_wall_seconds"] = round(record["training_wall_seconds"] + extra, 1)
    record["total_wall_seconds"] = round(record["total_wall_seconds"] + extra, 1)
    write_index(args, runs_dir, iterations, run_sizing)
    record_path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    ship(args, runs_dir)
    return 1 if record["failed"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
