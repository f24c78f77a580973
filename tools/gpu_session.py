#!/usr/bin/env python3
"""One prepared GPU session: CUDA checks of the core, then the Table-2 training runs.

Run from the repository root on a CUDA machine (SimpleITK must be importable):

    PYTHONUNBUFFERED=1 python3 tools/gpu_session.py --budget 540 --out "$OUT"

1. checks (each isolated; failures are recorded, not fatal):
   - reversible core on CUDA: memory-saving == plain gradients (float32, depth 8, both
     directions) and under bf16/fp16 autocast;
   - ``revgan bench memory`` on CUDA (saved tensors and torch.cuda.max_memory_allocated);
   - ``revgan bench speed`` on CUDA;
   - tools/gpu_check_inference.py (tiled inference on CUDA, autocast, OOM halving/fallback);
2. the 8 Table-2 rows (configs/table2) x ``--worlds`` x ``--seeds`` training seeds, trained CONCURRENTLY (the
   models are small: one process leaves the GPU mostly idle), under the protocol of
   RevGANCore/bench/protocol.py: every run the same iteration count (calibrated by a short
   concurrent timing run so that everything ends inside ``--budget`` seconds), each run keeping
   the checkpoint its validation criterion prefers, the validation cases choosing each row's seed;
3. packs the validation-chosen models (and table2.json, their index), logs and figures into at
   most three files under ``--out``.

``--dry-run`` does the same with tiny settings on the CPU, to test this script itself.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from RevGANCore.bench.protocol import (DEFAULT_SEEDS, ROWS, ensure_world_phantoms, model_file_name,  # noqa: E402
                                       protocol_runs, run_folder, table_index, train_runs)
from RevGANCore.phantom_dataset import WORLDS  # noqa: E402

START = time.time()


def elapsed() -> float:
    return time.time() - START


def say(message: str) -> None:
    print(f"[{elapsed():6.1f} s] {message}", flush=True)


# ------------------------------------------------------------------------------ checks


def check_reversible_cuda(device: str) -> dict:
    import torch

    from RevGANCore.networks import RevGANGenerator3d

    result = {}
    torch.manual_seed(0)
    saving = RevGANGenerator3d(ngf=8, depth=8, memory_saving=True).to(device)
    with torch.no_grad():
        for p in saving.parameters():
            p.add_(0.05 * torch.randn_like(p))
    plain = copy.deepcopy(saving)
    plain.core.memory_saving = False
    x = torch.randn(2, 1, 32, 32, 32, device=device)
    upstream = torch.randn_like(x)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    for amp in (None, torch.bfloat16, torch.float16):
        for direction in ("forward", "inverse"):
            grads = []
            for model in (saving, plain):
                inputs = [x.clone().requires_grad_(True), *model.parameters()]
                with torch.autocast("cuda", dtype=amp or torch.float32, enabled=amp is not None):
                    out = model(inputs[0], direction)
                loss = (out.float() * upstream).sum()
                g = torch.autograd.grad(loss, inputs, allow_unused=True)
                grads.append(torch.cat([(torch.zeros_like(t) if gi is None else gi).flatten().float()
                                        for t, gi in zip(inputs, g)]))
            error = float((grads[0] - grads[1]).norm() / grads[1].norm())
            result[f"{direction}_{'float32' if amp is None else str(amp).split('.')[-1]}_rel_grad_error"] = error
    torch.backends.cudnn.allow_tf32 = True
    result["ok"] = result["forward_float32_rel_grad_error"] <= 1e-5 and result["inverse_float32_rel_grad_error"] <= 1e-5
    return result


def run_checks(args, device: str) -> dict:
    checks = {}

    def attempt(name, function):
        say(f"check {name} ...")
        started = time.time()
        try:
            checks[name] = function()
        except Exception as error:  # a failed check is recorded, the session goes on
            checks[name] = {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()}
        checks[name + "_seconds"] = round(time.time() - started, 1)
        say(f"check {name}: {json.dumps(checks[name])[:600]}")

    from RevGANCore.bench.memory import run_memory_benchmark
    from RevGANCore.bench.speed import run_speed_benchmark

    attempt("reversible_cuda", lambda: check_reversible_cuda(device))
    patch = 16 if args.dry_run else 128
    attempt("bench_memory", lambda: run_memory_benchmark(depths=[0, 1, 2, 4, 8], patch=patch, ngf=16,
                                                         device=device))
    attempt("bench_speed", lambda: run_speed_benchmark(depths=[0, 8], patch=16 if args.dry_run else 64,
                                                       ngf=16, repeats=2 if args.dry_run else 10, device=device,
                                                       batch=4))
    if not args.dry_run:
        def inference_check():
            env = dict(os.environ, PYTHONUNBUFFERED="1", OUT=str(args.work))
            run = subprocess.run([sys.executable, str(REPO / "tools" / "gpu_check_inference.py")], cwd=REPO,
                                 env=env, capture_output=True, text=True, timeout=150)
            report = args.work / "gpu_check_inference.json"
            return {"returncode": run.returncode, "tail": (run.stdout + run.stderr)[-3000:],
                    "report": json.loads(report.read_text()) if report.exists() else None}
        attempt("inference_cuda", inference_check)
    return checks


# ------------------------------------------------------------------------------ training


def train_rows(args, device: str, budget_end: float) -> dict:
    rows = args.rows or list(ROWS)
    runs = protocol_runs(rows, args.worlds, range(args.seeds))
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS=str(max(1, (os.cpu_count() or 2) // len(runs))))
    sizing = [f"device={device}", "logging.progress=true"]
    if args.dry_run:
        sizing += ["data.patch_size=[24,32,32]", "data.batch_size=2", "model.generator.ngf=4",
                   "model.discriminator.ndf=4", "data.generate.cases=3",
                   f"data.manifest={args.work / 'phantoms_dry' / 'manifest.json'}", "checkpoint.every=20",
                   "checkpoint.validate_every=20", "data.val_patches=2"]
    say(f"training phantoms of worlds {', '.join(args.worlds)}")
    ensure_world_phantoms(args.worlds, sizing, log=say)

    if args.iterations:
        return _train(args, runs, args.iterations, sizing, env, budget_end, calibration={})
    calibration_iterations = 6 if args.dry_run else 40
    say(f"calibrating: {len(runs)} concurrent runs of {calibration_iterations} iterations")
    calib_dir = args.work / "calibration"
    started = time.time()
    train_runs(runs, calibration_iterations, calib_dir, args.work / "logs" / "calibration",
               sizing=sizing + ["checkpoint.validate_every=100000", "logging.preview_every=0"], env=env, log=say)
    calibration_seconds = time.time() - started
    per_run = {}
    for run in runs:
        summary_path = run_folder(calib_dir, run.row, run.seed, run.world) / "summary.json"
        per_run[run.name] = json.loads(summary_path.read_text())["seconds"] if summary_path.exists() else None
    failed = [name for name, value in per_run.items() if value is None]
    if failed:
        raise RuntimeError(f"calibration failed for {failed}; see {args.work}/logs/calibration")
    slowest = max(per_run.values()) / calibration_iterations
    start_overhead = calibration_seconds - max(per_run.values())
    available = budget_end - time.time() - start_overhead - 25
    iterations = int(available / slowest / 50) * 50 if not args.dry_run else 30
    iterations = max(50, min(iterations, args.max_iterations))
    say(f"calibration: seconds per run {per_run}; slowest {slowest * 1000:.0f} ms/it; "
        f"start overhead {start_overhead:.0f} s; training {iterations} iterations per run")
    return _train(args, runs, iterations, sizing, env, budget_end, calibration=per_run)


def _train(args, runs, iterations: int, sizing, env, budget_end: float, calibration: dict) -> dict:
    runs_dir = args.work / "table2"
    results = train_runs(runs, iterations, runs_dir, args.work / "logs", sizing=sizing, deadline=budget_end - 15,
                         env=env, log=say)
    report = {}
    for run in runs:
        summary = run_folder(runs_dir, run.row, run.seed, run.world) / "summary.json"
        result = json.loads(summary.read_text()) if summary.exists() else {"error": "no summary"}
        result["returncode"] = results[run].code
        report[run.name] = result
    rows = [row for row in ROWS if row in {run.row for run in runs}]
    index = table_index(runs_dir, rows, range(args.seeds), iterations, args.worlds, sizing)
    if not index["models"]:
        say("no run finished inside the budget: the index lists no model")
    runs_dir.mkdir(parents=True, exist_ok=True)  # absent when the budget left no run to start
    (runs_dir / "table2.json").write_text(json.dumps(index, indent=2))
    stopped = [f"{e['task']}_{e['variant']}/{e['world']}/seed{e['seed']}" for e in index["models"]
               if e["iterations"] != iterations]
    return {"iterations": iterations, "seeds": args.seeds, "worlds": args.worlds, "calibration": calibration,
            "stopped_by_budget": stopped, "runs": report, "table2_index": index}


def pack(args, report: dict) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_session.json").write_text(json.dumps(report, indent=2))
    runs_dir = args.work / "table2"
    with tarfile.open(out / "table2_runs.tar.gz", "w:gz") as archive:
        if (runs_dir / "table2.json").exists():
            archive.add(runs_dir / "table2.json", arcname="table2.json")
        for run in protocol_runs(ROWS, args.worlds, range(args.seeds)):
            folder = run_folder(runs_dir, run.row, run.seed, run.world)
            if not folder.is_dir():
                continue
            for name in ("config.json", "metrics.csv", "summary.json"):
                if (folder / name).exists():
                    archive.add(folder / name, arcname=f"{run.name}/{name}")
            # The validation-chosen model only (table2.json names it): a training state
            # (discriminators, Adam moments) is ~17 MB per run, over what a session brings back.
            if (folder / "best.safetensors").exists():
                archive.add(folder / "best.safetensors", arcname=model_file_name(run.row, run.world, run.seed))
            previews = sorted((folder / "previews").glob("*.png")) if (folder / "previews").is_dir() else []
            if previews:
                archive.add(previews[-1], arcname=f"{run.name}/{previews[-1].name}")
        for log in sorted((args.work / "logs").rglob("*.log")):
            archive.add(log, arcname=f"logs/{log.relative_to(args.work / 'logs')}")
    say(f"packed {out}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--budget", type=float, default=540.0, help="seconds for the whole session")
    parser.add_argument("--out", default=os.environ.get("OUT", "gpu_out"))
    parser.add_argument("--work", default="/tmp/revgan_gpu")
    parser.add_argument("--max-iterations", type=int, default=6000)
    parser.add_argument("--dry-run", action="store_true", help="tiny settings on the CPU")
    parser.add_argument("--skip-checks", action="store_true")
    parser.add_argument("--rows", nargs="*", choices=ROWS, help="train only these Table-2 rows")
    parser.add_argument("--iterations", type=int, default=0, help="fixed iterations per run (no calibration)")
    parser.add_argument("--worlds", nargs="*", choices=WORLDS, default=list(WORLDS),
                        help="phantom worlds (default both)")
    parser.add_argument("--seeds", type=int, default=DEFAULT_SEEDS, help="training seeds per row (0 .. N-1)")
    args = parser.parse_args()
    args.work = Path(args.work)
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    budget_end = START + args.budget

    import torch

    device = "cpu" if args.dry_run else "cuda"
    report = {"torch": torch.__version__, "cuda": torch.version.cuda,
              "device_name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"}
    say(f"torch {torch.__version__}, device {report['device_name']}")
    try:
        if not args.skip_checks:
            report["checks"] = run_checks(args, device)
        report["training"] = train_rows(args, device, budget_end)
    except Exception as error:
        report["error"] = f"{type(error).__name__}: {error}"
        report["traceback"] = traceback.format_exc()
        say(report["error"])
    report["seconds"] = round(elapsed(), 1)
    pack(args, report)
    return 0 if "error" not in report else 1


if __name__ == "__main__":
    raise SystemExit(main())
