"""``revgan bench quality``: Table 2 on held-out chest phantoms, in two worlds.

For super-resolution (lr -> hr) and kernel conversion (sharp B50f-like -> smooth B30f-like),
in the "linear" phantom world (FBP-like reconstructions: sharp -> smooth is exactly a filter)
and the "nonlinear" one (iterative-reconstruction-like targets; see
:mod:`RevGANCore.phantom_dataset`), it evaluates the RevGAN models of the Table-2 index beside
classical baselines, as mean and standard deviation over test cases (pooled over the model
files of a row: several training seeds) of MAE (HU, body mask), PSNR (dB, window-normalised,
data range 2, the seed's convention; the HU-range PSNR too), 3D SSIM and the bias (mean signed
error in the body, HU).

Rows and their ``kind``:

- ``classical-unpaired`` (use no pairs): super-resolution: nearest-neighbour ("identity"),
  linear and B-spline interpolation, and the polyphase upsampler fitted on high-resolution
  training volumes degraded by the known low-resolution operator (the unpaired generators'
  prior); kernel: the identity and the spectral-ratio filter
  fitted on UNPAIRED training volumes (sharp of some cases, smooth of others), full-band and
  cut to the kernel generators' prior width (:mod:`RevGANCore.linear_prior`);
- ``classical-paired`` (fitted on training pairs): super-resolution: the polyphase linear
  filter on the B-spline grid and the polyphase upsampler of the coarse grid fitted as the
  paired generators' prior (:mod:`RevGANCore.upsampler_fit`); kernel: the best in-plane Gaussian, the least-squares radial
  filter and the least-squares FIR of the prior's width (the paired kernel generators' starting
  point). In the linear world the fitted filters are the ceiling of linear methods;
- ``oracle``: kernel only: the true MTF ratio (then, in the nonlinear world, the same
  iterative reconstruction as the phantoms);
- ``revgan-paired`` / ``revgan-unpaired``: the models, ``variant`` Paired, Paired+2R,
  Unpaired or Unpaired+2R.

Test cases are phantoms of their own seed (:data:`~RevGANCore.phantom_dataset.TEST_SEED`),
never seen in training; fitted baselines use training cases of the training seed only
(:data:`~RevGANCore.phantom_splits.FIT_CASES`; the unpaired filter also the next
cases, see :data:`UNPAIRED_FIT_CASES`), the validation case excluded. The models are read from
``table2/table2.json`` in the shipped-model folder (:func:`RevGANCore.registry.table2_dir`),
or a folder given with ``--models``; an entry's ``world`` (default "linear") says which world
it was trained in.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import ConfigError, ModelFileError
from ..phantom_dataset import WORLDS
from ..phantom_splits import FIT_CASES, TEST_CASES, TEST_SEED, TRAIN_SEED, UNPAIRED_FIT_CASES, VALIDATION_CASES
from .table2_claims import format_claims, table_claims

VARIANT_LABELS = {"unpaired": "Unpaired", "unpaired_2r": "Unpaired+2R", "paired": "Paired",
                  "paired_2r": "Paired+2R"}
TASK_SOURCES = {"super_resolution": ("lr", "hr"), "kernel": ("sharp", "smooth")}
KINDS = ("classical-paired", "classical-unpaired", "oracle", "revgan-paired", "revgan-unpaired")
METRIC_KEYS = (("mae_hu", "mae_hu"), ("psnr", "psnr_unit_db"), ("psnr_hu", "psnr_hu_db"), ("ssim", "ssim"),
               ("bias_hu", "bias_hu"))
FITTED_KERNEL = "Fitted linear filter (radial, least squares on training pairs)"
FITTED_SUPER_RESOLUTION = "Fitted linear filter (5x5x5 polyphase FIR on the B-spline grid, training pairs)"
FITTED_UPSAMPLER = "Fitted polyphase upsampler (5x5x5 coarse taps, Huber fit on training pairs)"
DEGRADED_UPSAMPLER = ("Fitted polyphase upsampler (5x5x5 coarse taps, Huber fit on unpaired hr volumes "
                      "degraded by the known operator)")


@dataclass(frozen=True)
class TableModel:
    task: str
    variant: str
    path: Path
    config: str
    world: str = "linear"

    @property
    def label(self) -> str:
        return VARIANT_LABELS[self.variant]

    @property
    def kind(self) -> str:
        return "revgan-paired" if self.variant.startswith("paired") else "revgan-unpaired"


def load_table_index(folder: Path) -> List[TableModel]:
    """The Table-2 models listed in ``folder/table2.json`` (several entries of one task,
    world and variant are one row: their results are pooled)."""
    index = Path(folder) / "table2.json"
    if not index.is_file():
        raise ModelFileError(f"{index}: no Table-2 model index; train the rows with the configs in "
                             "configs/table2 (see README) or pass --models")
    try:
        entries = json.loads(index.read_text(encoding="utf-8"))["models"]
        models = [TableModel(e["task"], e["variant"], Path(folder) / e["file"], e.get("config", ""),
                             e.get("world", "linear")) for e in entries]
    except (ValueError, KeyError, TypeError) as error:
        raise ModelFileError(f"{index}: malformed Table-2 index ({error})") from None
    for model in models:
        if model.task not in TASK_SOURCES or model.variant not in VARIANT_LABELS or model.world not in WORLDS:
            raise ModelFileError(f"{index}: unknown task/variant/world {model.task}/{model.variant}/{model.world}")
        if not model.path.is_file():
            raise ModelFileError(f"{index}: lists {model.path.name}, which is missing")
    return models


def ensure_phantoms(folder: Path, cases: int, seed: int, log: Callable[[str], None],
                    shape: Optional[Tuple[int, int, int]] = None, world: str = "linear") -> Path:
    """The manifest of a phantom dataset, generated (deterministically) when missing or when
    the folder holds another one."""
    from ..phantom_dataset import PhantomRecipe, describe_phantom_manifest, phantom_world, write_phantom_dataset

    recipe = PhantomRecipe(shape=tuple(shape), world=world) if shape else PhantomRecipe(world=world)
    manifest = Path(folder) / "manifest.json"
    held = describe_phantom_manifest(manifest)
    if (held and held["cases"] >= cases and held["seed"] == seed and held["shape"] == tuple(recipe.shape)
            and phantom_world(manifest) == world):
        return manifest
    log(f"generating {cases} {world}-world phantom cases (seed {seed}, shape {tuple(recipe.shape)}) into {folder}")
    return write_phantom_dataset(folder, cases=cases, seed=seed, recipe=recipe, overwrite=True)


def _evaluate(prediction, target, mask) -> dict:
    from ..metrics import compare_volumes

    values = compare_volumes(prediction, target, mask=mask)
    difference = prediction.array[mask].astype(np.float64) - target.array[mask].astype(np.float64)
    values["bias_hu"] = float(difference.mean())
    return values


def _row(method: str, kind: str, variant: Optional[str], per_case: List[dict], extra: dict) -> dict:
    from ..metrics import summarize

    row = {"method": method, "kind": kind, "variant": variant}
    for key, source in METRIC_KEYS:
        summary = summarize(case[source] for case in per_case)
        row[key] = round(summary.mean, 5)
        row[f"{key}_std"] = round(summary.std, 5)
    row["n"] = len(per_case)
    row.update(extra)
    return row


class _Methods:
    """The baselines of one world, fitted on its training cases, as (name, kind, function)."""

    def __init__(self, world: str, fit_manifest, factors, kernel_noise_std_hu: float, log):
        from ..baselines import (fit_gaussian_sigma, fit_kernel_filter, fit_spectral_ratio,
                                 fit_super_resolution_filter)
        from ..linear_prior import (PRIOR_TAPS, cut_to_taps, fit_degraded_upsampler, fit_fir_least_squares,
                                    fit_upsampler)
        from ..volume_io import read_volume

        def volumes(cases, domain):
            return [read_volume(fit_manifest.case(c).files[domain]) for c in cases]

        sharp, smooth = volumes(FIT_CASES, "sharp"), volumes(FIT_CASES, "smooth")
        pairs = list(zip(sharp, smooth))
        self.world = world
        self.factors = factors
        self.factors_zyx = tuple(factors)[::-1]
        self.noise = kernel_noise_std_hu
        self.sigma, _ = fit_gaussian_sigma(pairs)
        self.kernel_filter = fit_kernel_filter(pairs)
        self.ratio_filter = fit_spectral_ratio(sharp, volumes(UNPAIRED_FIT_CASES, "smooth"))
        # The kernel generators' linear priors (linear_prior.py), fitted here on the same cases
        # as the other baselines: what a model must beat is its own starting point.
        self.fir_paired = fit_fir_least_squares(pairs, PRIOR_TAPS)
        self.fir_unpaired = cut_to_taps(self.ratio_filter, sharp, PRIOR_TAPS)
        sr_pairs = list(zip(volumes(FIT_CASES, "lr"), volumes(FIT_CASES, "hr")))
        self.upsampling_filter = fit_super_resolution_filter(sr_pairs, factors)
        # The super-resolution generators' priors, fitted as training fits them: on pairs, and
        # on high-resolution volumes of other cases degraded by the known operator (no pairs).
        self.upsampler_paired = fit_upsampler(sr_pairs, self.factors_zyx)
        self.upsampler_unpaired = fit_degraded_upsampler(volumes(UNPAIRED_FIT_CASES, "hr"), self.factors_zyx)
        log(f"{world} world: fitted on training cases: Gaussian sigma {self.sigma:.2f} mm, radial filter "
            f"({self.kernel_filter.gain.size} bins), spectral-ratio filter, polyphase upsampling filter")

    def for_task(self, task: str):
        from ..baselines import interpolate_super_resolution
        from ..degradations import IterativeReconstruction, gaussian_inplane, kernel_oracle
        from ..linear_prior import apply_kernel, apply_upsampler

        if task == "super_resolution":
            def upsample(how):
                return lambda source: interpolate_super_resolution(source, self.factors, how)

            return [
                ("Identity (nearest-neighbour upsampling)", "classical-unpaired", upsample("nearest")),
                ("Linear interpolation", "classical-unpaired", upsample("linear")),
                ("B-spline interpolation", "classical-unpaired", upsample("bspline")),
                (DEGRADED_UPSAMPLER, "classical-unpaired",
                 lambda source: apply_upsampler(source, self.upsampler_unpaired, self.factors_zyx)),
                (FITTED_SUPER_RESOLUTION, "classical-paired",
                 lambda source: self.upsampling_filter.apply(interpolate_super_resolution(source, self.factors))),
                (FITTED_UPSAMPLER, "classical-paired",
                 lambda source: apply_upsampler(source, self.upsampler_paired, self.factors_zyx)),
            ]
        if self.world == "linear":
            oracle = ("Linear oracle (MTF ratio)", kernel_oracle)
        else:
            iterative = IterativeReconstruction(self.noise)
            oracle = ("Oracle (MTF ratio, then the phantoms' iterative reconstruction)",
                      lambda source: iterative(kernel_oracle(source)))
        taps = self.fir_paired.shape[0]
        return [
            ("Identity (sharp input)", "classical-unpaired", lambda source: source),
            ("Spectral-ratio filter (unpaired training volumes)", "classical-unpaired", self.ratio_filter.apply),
            (f"Spectral-ratio FIR filter ({taps} x {taps}, unpaired training volumes)", "classical-unpaired",
             lambda source: apply_kernel(source, self.fir_unpaired)),
            (f"Best Gaussian (sigma {self.sigma:.2f} mm, fitted on training pairs)", "classical-paired",
             lambda source: gaussian_inplane(source, self.sigma)),
            (FITTED_KERNEL, "classical-paired", self.kernel_filter.apply),
            (f"Fitted FIR filter ({taps} x {taps}, least squares on training pairs)", "classical-paired",
             lambda source: apply_kernel(source, self.fir_paired)),
            (oracle[0], "oracle", oracle[1]),
        ]


def run_quality_benchmark(models_dir: Union[None, Path, Sequence[Path]] = None, data_dir: Path = Path("data"),
                          test_cases: int = TEST_CASES, device: str = "auto",
                          tile_size: Optional[int] = None, log: Callable[[str], None] = print,
                          shape: Optional[Tuple[int, int, int]] = None,
                          worlds: Sequence[str] = WORLDS) -> dict:
    """The Table-2 result (see the module docstring). ``models_dir``: one Table-2 folder or
    several, whose indexes are pooled (e.g. the kernel and the super-resolution rows trained
    apart); ``shape`` changes the phantoms' voxel counts (quick checks only: the reported
    table uses the default phantom)."""
    from ..inference import translate
    from ..manifest import load_manifest
    from ..metrics import body_mask
    from ..modelfile import load_model
    from ..phantom_dataset import PhantomRecipe
    from ..registry import table2_dir
    from ..volume_io import read_volume

    if test_cases < 2:
        raise ConfigError("the quality benchmark needs at least 2 test cases (for a standard deviation)")
    unknown = [w for w in worlds if w not in WORLDS]
    if unknown or not worlds:
        raise ConfigError(f"worlds must be among {', '.join(WORLDS)}, got {list(worlds)}")
    folders = [models_dir] if isinstance(models_dir, (str, Path)) else list(models_dir or [table2_dir()])
    table = [model for folder in folders for model in load_table_index(folder)]
    fit_count = int(UNPAIRED_FIT_CASES[-1][-3:]) + 1
    result = {"cases": test_cases, "test_seed": TEST_SEED, "training_seed": TRAIN_SEED,
              "validation_cases": list(VALIDATION_CASES), "fit_cases": list(FIT_CASES),
              "unpaired_fit_cases": {"sharp": list(FIT_CASES), "smooth": list(UNPAIRED_FIT_CASES)},
              "worlds": list(worlds), "phantom_shape": list(shape) if shape else None,
              "gaussian_sigma_mm": {}, "tasks": {}}
    loaded = {m.path: load_model(m.path, device="cpu") for m in table if m.world in worlds}
    for world in worlds:
        suffix = "" if world == "linear" else f"_{world}"
        test_manifest = load_manifest(ensure_phantoms(Path(data_dir) / f"phantoms_test{suffix}", test_cases,
                                                      TEST_SEED, log, shape, world))
        fit_manifest = load_manifest(ensure_phantoms(Path(data_dir) / f"phantoms_fit{suffix}", fit_count,
                                                     TRAIN_SEED, log, shape, world))
        factors = test_manifest.task("super_resolution").get("factors_xyz", [2, 2, 4])
        methods = _Methods(world, fit_manifest, factors, PhantomRecipe().kernel_noise_std_hu, log)
        result["gaussian_sigma_mm"][world] = methods.sigma
        cases = test_manifest.cases[:test_cases]
        for task, (source_domain, target_domain) in TASK_SOURCES.items():
            baselines = methods.for_task(task)
            models = [m for m in table if m.task == task and m.world == world]
            per_method: Dict[str, List[dict]] = {}
            for case in cases:
                source = read_volume(case.files[source_domain])
                target = read_volume(case.files[target_domain])
                mask = body_mask(target.array)
                for name, _, function in baselines:
                    per_method.setdefault(name, []).append(_evaluate(function(source), target, mask))
                for model in models:
                    prediction = translate(loaded[model.path], source, "forward", tile_size=tile_size, device=device)
                    per_method.setdefault(model.label, []).append(_evaluate(prediction, target, mask))
                log(f"{task}/{world}: {case.id} evaluated")
            rows = [_row(name, kind, None, per_method[name], {}) for name, kind, _ in baselines]
            for variant, label in VARIANT_LABELS.items():
                row_models = [m for m in models if m.variant == variant]
                if row_models:
                    rows.append(_row(label, row_models[0].kind, label, per_method[label],
                                     {"models": [m.path.name for m in row_models],
                                      "configs": [m.config for m in row_models]}))
            result["tasks"][f"{task}/{world}"] = rows
    result["claims"] = table_claims(result)
    return result


def _ceiling_note(task_key: str) -> str:
    task, world = task_key.split("/")
    if world == "linear":
        return ("linear world (FBP-like): the fitted linear filter is the ceiling here"
                + (" (sharp -> smooth is exactly a filter)" if task == "kernel" else " of linear methods"))
    return "nonlinear world (iterative-reconstruction-like targets): a learned model must beat the fitted linear filter"


def mean_and_spread(row: dict, key: str, digits: int, sign: str = "", plus_minus: str = "+-") -> str:
    """``mean +- std`` of a table row's ``key``, or the mean alone where the spread is
    undefined (one case: NaN, null in JSON)."""
    mean, std = format(row[key], f"{sign}.{digits}f"), row.get(f"{key}_std")
    if std is None or not math.isfinite(std):
        return mean
    return f"{mean} {plus_minus} {std:.{digits}f}"


def format_quality_table(result: dict) -> str:
    lines = [f"Held-out phantom test cases: {result['cases']} (seed {result['test_seed']}); mean +- std over "
             "cases (and model files of a row); bias = mean signed error in the body", ""]
    if result.get("phantom_shape"):
        lines[-1:] = [f"Phantoms of {result['phantom_shape']} voxels (z, y, x), not the default: a quick check, "
                      "not the reported table", ""]
    for key, rows in result["tasks"].items():
        lines.append(f"{key}: {_ceiling_note(key)}")
        lines.append("method | kind | MAE (HU) | PSNR (dB) | SSIM | bias (HU)")
        lines.append("--- | --- | --- | --- | --- | ---")
        for row in rows:
            lines.append(f"{row['method']} | {row['kind']} | {mean_and_spread(row, 'mae_hu', 2)} | "
                         f"{mean_and_spread(row, 'psnr', 2)} | {mean_and_spread(row, 'ssim', 4)} | "
                         f"{mean_and_spread(row, 'bias_hu', 2, sign='+')}")
        lines.append("")
    claims = table_claims(result)
    if claims:
        lines += ["What the nonlinear worlds show (a learned model must beat the classical methods that use "
                  "the same data):", format_claims(claims), ""]
    return "\n".join(lines)
