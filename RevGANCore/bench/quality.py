"""``revgan bench quality``: the seed's Table 2 on held-out chest phantoms.

For super-resolution (lr -> hr) and kernel conversion (sharp B50f-like -> smooth B30f-like)
it evaluates the four RevGAN variants (Unpaired, Unpaired+2R, Paired, Paired+2R; "+2R" = two
reversible blocks in the core, none without) beside the classical baselines, as mean and
standard deviation over test cases of MAE (HU, body mask), PSNR (dB, window-normalised,
data range 2, the seed's convention; the HU-range PSNR is reported too) and 3D SSIM.

Test cases are phantoms generated with their own seed, never seen in training; the Gaussian
baseline's sigma is fitted on training cases only. The models are read from
``table2/table2.json`` in the shipped-model folder (:func:`RevGANCore.registry.table2_dir`),
or a folder given with ``--models``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from ..errors import ConfigError, ModelFileError
from ..phantom_splits import FIT_CASES, TEST_CASES, TEST_SEED, TRAIN_SEED  # the data side's splits

VARIANT_LABELS = {"unpaired": "Unpaired", "unpaired_2r": "Unpaired+2R", "paired": "Paired",
                  "paired_2r": "Paired+2R"}
TASK_SOURCES = {"super_resolution": ("lr", "hr"), "kernel": ("sharp", "smooth")}
METRIC_KEYS = (("mae_hu", "mae_hu"), ("psnr", "psnr_unit_db"), ("psnr_hu", "psnr_hu_db"), ("ssim", "ssim"))


@dataclass(frozen=True)
class TableModel:
    task: str
    variant: str
    path: Path
    config: str

    @property
    def label(self) -> str:
        return VARIANT_LABELS[self.variant]


def load_table_index(folder: Path) -> List[TableModel]:
    """The Table-2 models listed in ``folder/table2.json``."""
    index = Path(folder) / "table2.json"
    if not index.is_file():
        raise ModelFileError(f"{index}: no Table-2 model index; train the rows with the configs in "
                             "configs/table2 (see README) or pass --models")
    try:
        entries = json.loads(index.read_text(encoding="utf-8"))["models"]
        models = [TableModel(e["task"], e["variant"], Path(folder) / e["file"], e.get("config", ""))
                  for e in entries]
    except (ValueError, KeyError, TypeError) as error:
        raise ModelFileError(f"{index}: malformed Table-2 index ({error})") from None
    for model in models:
        if model.task not in TASK_SOURCES or model.variant not in VARIANT_LABELS:
            raise ModelFileError(f"{index}: unknown task/variant {model.task}/{model.variant}")
        if not model.path.is_file():
            raise ModelFileError(f"{index}: lists {model.path.name}, which is missing")
    return models


def ensure_phantoms(folder: Path, cases: int, seed: int, log: Callable[[str], None],
                    shape: Optional[Tuple[int, int, int]] = None) -> Path:
    """The manifest of a phantom dataset, generated (deterministically) when missing or when
    the folder holds another one."""
    from ..phantom_dataset import PhantomRecipe, describe_phantom_manifest, write_phantom_dataset

    recipe = PhantomRecipe(shape=tuple(shape)) if shape else PhantomRecipe()
    manifest = Path(folder) / "manifest.json"
    held = describe_phantom_manifest(manifest)
    if held and held["cases"] >= cases and held["seed"] == seed and held["shape"] == tuple(recipe.shape):
        return manifest
    log(f"generating {cases} phantom cases (seed {seed}, shape {tuple(recipe.shape)}) into {folder}")
    return write_phantom_dataset(folder, cases=cases, seed=seed, recipe=recipe, overwrite=True)


def _rows_for(results: Dict[str, List[dict]], extra: Dict[str, dict]) -> List[dict]:
    from ..metrics import summarize

    rows = []
    for method, per_case in results.items():
        row = {"method": method}
        for key, source in METRIC_KEYS:
            summary = summarize(case[source] for case in per_case)
            row[key] = round(summary.mean, 5)
            row[f"{key}_std"] = round(summary.std, 5)
        row.update(extra.get(method, {}))
        rows.append(row)
    return rows


def run_quality_benchmark(models_dir: Optional[Path] = None, data_dir: Path = Path("data"),
                          test_cases: int = TEST_CASES, device: str = "auto",
                          tile_size: Optional[int] = None, log: Callable[[str], None] = print,
                          shape: Optional[Tuple[int, int, int]] = None) -> dict:
    """The Table-2 result (see the module docstring); ``shape`` changes the phantoms' voxel
    counts (quick checks only: the reported table uses the default phantom)."""
    from ..baselines import fit_gaussian_sigma, interpolate_super_resolution
    from ..degradations import gaussian_inplane, kernel_oracle
    from ..inference import translate
    from ..manifest import load_manifest
    from ..metrics import compare_volumes
    from ..modelfile import load_model
    from ..registry import table2_dir
    from ..volume_io import read_volume

    if test_cases < 2:
        raise ConfigError("the quality benchmark needs at least 2 test cases (for a standard deviation)")
    table = load_table_index(models_dir or table2_dir())
    test_manifest = load_manifest(ensure_phantoms(Path(data_dir) / "phantoms_test", test_cases, TEST_SEED, log,
                                                  shape))
    fit_manifest = load_manifest(ensure_phantoms(Path(data_dir) / "phantoms_fit", len(FIT_CASES) + 1,
                                                 TRAIN_SEED, log, shape))
    cases = test_manifest.cases[:test_cases]

    pairs = [(read_volume(fit_manifest.case(c).files["sharp"]), read_volume(fit_manifest.case(c).files["smooth"]))
             for c in FIT_CASES]
    sigma, fit_mae = fit_gaussian_sigma(pairs)
    log(f"Gaussian baseline: sigma {sigma:.2f} mm (training-case MAE {fit_mae:.1f} HU)")
    factors = test_manifest.task("super_resolution").get("factors_xyz", [2, 2, 4])

    result = {"cases": len(cases), "test_seed": TEST_SEED, "gaussian_sigma_mm": sigma,
              "fit_cases": list(FIT_CASES), "tasks": {}}
    loaded = {m: load_model(m.path, device="cpu") for m in table}
    for task, (source_domain, target_domain) in TASK_SOURCES.items():
        per_method: Dict[str, List[dict]] = {}

        def record(method: str, prediction, target) -> None:
            per_method.setdefault(method, []).append(compare_volumes(prediction, target))

        for case in cases:
            source = read_volume(case.files[source_domain])
            target = read_volume(case.files[target_domain])
            if task == "super_resolution":
                record("B-spline interpolation", interpolate_super_resolution(source, factors, "bspline"), target)
                record("Linear interpolation", interpolate_super_resolution(source, factors, "linear"), target)
            else:
                record("Identity (sharp input)", source, target)
                record(f"Best Gaussian (sigma {sigma:.2f} mm, fitted on training cases)",
                       gaussian_inplane(source, sigma), target)
                record("Linear oracle (MTF ratio; ceiling)", kernel_oracle(source), target)
            for model in table:
                if model.task == task:
                    prediction = translate(loaded[model], source, "forward", tile_size=tile_size, device=device)
                    record(model.label, prediction, target)
            log(f"{task}: {case.id} evaluated")
        extra = {m.label: {"model": m.path.name, "config": m.config} for m in table if m.task == task}
        rows = _rows_for(per_method, extra)
        if task == "kernel":
            _add_gap_closed(rows)
        result["tasks"][task] = {"rows": rows}
    return result


def _add_gap_closed(rows: List[dict]) -> None:
    """For each model row: the fraction of the best-Gaussian -> oracle gap it closes (PSNR and
    MAE); 0 = no better than the Gaussian, 1 = as good as the oracle."""
    gaussian = next(r for r in rows if r["method"].startswith("Best Gaussian"))
    oracle = next(r for r in rows if r["method"].startswith("Linear oracle"))
    for row in rows:
        if row["method"] in VARIANT_LABELS.values():
            for key in ("psnr", "mae_hu"):
                gap = oracle[key] - gaussian[key]
                row[f"gap_closed_{key}"] = round((row[key] - gaussian[key]) / gap, 4) if gap else None


def format_quality_table(result: dict) -> str:
    lines = [f"Held-out phantom test cases: {result['cases']} (seed {result['test_seed']}); mean +- std",
             ""]
    for task, block in result["tasks"].items():
        lines.append(f"{task}:")
        lines.append("method | MAE (HU) | PSNR (dB) | SSIM | gap closed (PSNR)")
        lines.append("--- | --- | --- | --- | ---")
        for row in block["rows"]:
            gap = row.get("gap_closed_psnr")
            lines.append(f"{row['method']} | {row['mae_hu']:.2f} +- {row['mae_hu_std']:.2f} | "
                         f"{row['psnr']:.2f} +- {row['psnr_std']:.2f} | {row['ssim']:.4f} +- {row['ssim_std']:.4f} | "
                         f"{'' if gap is None else f'{100 * gap:.0f}%'}")
        lines.append("")
    return "\n".join(lines)
