"""The Table-2 training protocol (README, "Reproducing Table 2"):

- every row (task x variant, configs/table2/<row>.toml) gets the same iteration budget;
- every row is trained with several training seeds (3 by default), so the table can report
  mean and standard deviation over seeds and cases;
- the validation cases decide everything chosen during training: each run keeps the
  checkpoint its validation criterion prefers (``best.safetensors``; pairs for paired rows,
  the pair-free criterion for unpaired rows), and the seed a row ships is the one with the best
  validation value;
- the test cases (:mod:`RevGANCore.phantom_splits`) decide nothing: they are only measured.

``tools/gpu_session.py`` runs it; this module holds the rules so they are tested.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from ..validation import is_better

TASKS = ("super_resolution", "kernel")
VARIANTS = ("paired_2r", "paired", "unpaired_2r", "unpaired")
ROWS = tuple(f"{task}_{variant}" for task in TASKS for variant in VARIANTS)
DEFAULT_SEEDS = 3


def split_row(row: str):
    """("kernel", "paired_2r") of "kernel_paired_2r"."""
    for task in TASKS:
        if row.startswith(task + "_") and row[len(task) + 1:] in VARIANTS:
            return task, row[len(task) + 1:]
    raise ValueError(f"unknown Table-2 row {row!r}; rows are {', '.join(ROWS)}")


def run_folder(runs_dir: Path, row: str, seed: int) -> Path:
    return Path(runs_dir) / row / f"seed{seed}"


def run_overrides(seed: int, iterations: int, output_dir: Path) -> List[str]:
    """The ``--set`` values that make a row's configuration one run of the protocol: only the
    training seed and the output folder differ between runs of a row, and only the row's own
    settings between rows; the iteration budget is the same for all."""
    return [f"seed={seed}", f"optim.iterations={iterations}", f"output_dir={output_dir}"]


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


def table_index(runs_dir: Path, rows: Sequence[str], seeds: Sequence[int], iterations: int) -> dict:
    """The Table-2 model index (table2.json) of finished runs: one entry per row and seed with
    its validation-chosen model; ``chosen`` marks the seed each row ships."""
    models = []
    for row in rows:
        task, variant = split_row(row)
        summaries = {}
        for seed in seeds:
            path = run_folder(runs_dir, row, seed) / "summary.json"
            if path.is_file():
                summaries[seed] = json.loads(path.read_text(encoding="utf-8"))
        chosen = chosen_seed(summaries)
        for seed, summary in sorted(summaries.items()):
            if not summary.get("best_model"):
                continue
            models.append({"task": task, "variant": variant, "seed": seed,
                           "file": f"{row}_seed{seed}.safetensors", "config": f"configs/table2/{row}.toml",
                           "iterations": summary["step"], "best_metric": summary["best_metric"],
                           "validation": summary["best_value"], "chosen": seed == chosen})
    return {"protocol": {"iterations_per_run": iterations, "seeds": list(seeds),
                         "selection": "validation cases only (best_metric per run; best validation seed per row)"},
            "models": models}
