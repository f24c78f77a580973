"""Evaluate a model on a dataset manifest: translate every source-domain volume, compare it
with the case's target-domain volume, and summarise the metrics over cases.

The manifest task is the model's task ("super_resolution": lr -> hr, "kernel": sharp ->
smooth, as ``revgan phantom`` writes them); ``direction="inverse"`` swaps source and
target. When the translation's grid differs from the target's (e.g. the inverse of a
super-resolution model, which stays on the fine grid), the translation is resampled onto
the target's grid (cubic B-spline) before comparison; the case records it.

Each case also gets a *baseline*: the untranslated source volume on the target's grid
(for super-resolution, the cubic B-spline interpolation). A model is only useful where it
beats its baseline.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Dict, List, Optional, Sequence

from .errors import ConfigError, ModelFileError
from .inference import translate
from .modelfile import as_model
from .manifest import load_manifest, pick_cases
from .metrics import METRIC_DEFINITIONS, METRIC_NAMES, compare_volumes, summarize
from .printable import printable
from .volume import resample_to_grid
from .volume_io import read_volume

__all__ = ["evaluate_model", "format_evaluation"]


def _on_grid(volume, reference):
    if volume.same_geometry(reference):
        return volume, False
    return resample_to_grid(volume, reference, interpolation="bspline"), True


def evaluate_model(model, data, direction: str = "forward", tile_size=None, device="auto",
                   cases: Optional[Sequence[str]] = None,
                   progress: Optional[Callable[[int, int, str], None]] = None,
                   log: Optional[Callable[[str], None]] = None, precision: str = "auto") -> dict:
    """Metrics of ``model`` on the manifest ``data`` (a manifest.json or its folder).
    ``progress(index, total, case_id)`` is called before each case."""
    model = as_model(model)
    manifest = load_manifest(data)
    task_name = model.task
    if task_name not in manifest.tasks:
        raise ConfigError(f"{manifest.path}: the dataset has no {task_name!r} task (it has "
                          f"{', '.join(manifest.tasks) or 'none'}), so it cannot evaluate a {task_name} model")
    spec = manifest.tasks[task_name]
    factors = model.metadata.scale_factors_xyz
    if factors is not None and spec.get("factors_xyz") is not None and tuple(spec["factors_xyz"]) != tuple(factors):
        raise ModelFileError(f"{model.path or model.name}: scales by (x, y, z) {list(factors)}, but the dataset "
                             f"{manifest.path} pairs volumes scaled by {list(spec['factors_xyz'])}")
    if direction == "forward":
        source, target = spec["source"], spec["target"]
    elif direction == "inverse":
        source, target = spec["target"], spec["source"]
    else:
        raise ConfigError(f"direction must be 'forward' or 'inverse', got {direction!r}")
    chosen = [case for case in pick_cases(manifest, cases) if source in case.files and target in case.files]
    if not chosen:
        raise ConfigError(f"{manifest.path}: no case has both {source!r} and {target!r} volumes")
    rows: List[dict] = []
    for index, case in enumerate(chosen):
        if progress is not None:
            progress(index, len(chosen), case.id)
        started = time.perf_counter()
        source_volume = read_volume(case.files[source])
        target_volume = read_volume(case.files[target])
        translated = translate(model, source_volume, direction, tile_size=tile_size, device=device,
                               log=log, precision=precision)
        prediction, resampled = _on_grid(translated, target_volume)
        baseline, _ = _on_grid(source_volume, target_volume)
        window = model.metadata.hu_window
        rows.append({
            "id": case.id,
            "metrics": compare_volumes(prediction, target_volume, window),
            "baseline": compare_volumes(baseline, target_volume, window),
            "resampled_to_target": resampled,
            "seconds": round(time.perf_counter() - started, 2),
        })
    if progress is not None:
        progress(len(chosen), len(chosen), "")

    def summary(key: str) -> Dict[str, dict]:
        result = {}
        for name in METRIC_NAMES:
            stats = summarize(row[key][name] for row in rows)
            result[name] = {"mean": stats.mean, "std": stats.std, "n": stats.n}
        return result

    return {
        "model": model.name,
        "model_file": str(model.path) if model.path else None,
        "task": task_name,
        "direction": direction,
        "source_domain": source,
        "target_domain": target,
        "manifest": str(manifest.path),
        "hu_window": list(model.metadata.hu_window),
        "cases": rows,
        "summary": summary("metrics"),
        "baseline_summary": summary("baseline"),
        "definitions": dict(METRIC_DEFINITIONS, std="sample standard deviation over cases (ddof 1; null, "
                                                    "undefined, for one case)",
                            baseline="the source volume itself on the target grid (B-spline)"),
    }


def _mean_and_spread(stats: dict, digits: int) -> str:
    """``mean +- std``, or the mean alone where the spread is undefined (one case)."""
    std = stats["std"]
    if std is None or not math.isfinite(std):
        return f"{stats['mean']:>12.{digits}f}{'':11}"
    return f"{stats['mean']:>12.{digits}f} +- {std:<7.{digits}f}"


def format_evaluation(result: dict) -> str:
    """A short table: metric, model mean +- std, baseline mean +- std (the mean alone for one case)."""
    lines = [printable(f"{result['model']}: {result['task']} {result['direction']} ({result['source_domain']} -> "
                       f"{result['target_domain']}) on {len(result['cases'])} case(s) of {result['manifest']}")
             + ("; one case: no spread" if len(result["cases"]) == 1 else ""),
             f"{'metric':<14} {'model':>22} {'baseline (no model)':>22}"]
    for name in METRIC_NAMES:
        model = result["summary"][name]
        base = result["baseline_summary"][name]
        digits = 4 if name == "ssim" else 2
        lines.append(f"{name:<14} {_mean_and_spread(model, digits)} {_mean_and_spread(base, digits)}".rstrip())
    return "\n".join(lines)
