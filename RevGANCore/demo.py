"""``revgan demo``: the shipped models on a held-out chest phantom, offline, on CPU or GPU.

1. generates a phantom case with the test seed (never seen in training): its high-resolution
   reference, low-resolution version, and sharp (B50f-like) / smooth (B30f-like) pair;
2. super-resolves the low-resolution volume with the shipped super-resolution model and
   converts the sharp volume with the shipped kernel model (exact tiled inference);
3. writes the volumes (NIfTI), one PNG per task (original | result | ground truth; axial
   and coronal), and prints the metrics beside the classical baselines, the strongest among
   them fitted on two training pairs: the 5^3 polyphase upsampler and the 11 x 11 FIR filter
   the Table-2 generators start from (:mod:`RevGANCore.linear_prior`). This phantom is
   FBP-like (the "linear" world), where fitted linear filters are the baselines to beat and the
   shipped models do not beat them; README, "Reproducing Table 2", has the nonlinear world.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Dict

import numpy as np

from .phantom_splits import FIT_CASES, TEST_SEED, TRAIN_SEED

Log = Callable[[str], None]
#: Training pairs the demo's fitted baselines see (the Gaussian's sigma, the FIR, the upsampler).
DEMO_FIT_PAIRS = 2


def _panel(volumes, window) -> np.ndarray:
    """Axial (top) and coronal (bottom) central slices of each volume, side by side."""
    from .preview import slices_side_by_side, stacked

    shape = volumes[0].shape
    return stacked([slices_side_by_side(volumes, shape[0] // 2, *window, axis=0, zoom=2),
                    slices_side_by_side(volumes, shape[1] // 2, *window, axis=1, zoom=2)], gap=6)


def run_demo(out_dir: Path, device: str = "auto", case_index: int = 0, log: Log = print) -> Dict[str, dict]:
    """Write the demo's volumes and figures into ``out_dir`` (earlier demo outputs there are
    replaced); returns the metrics per task. A failure removes what this run wrote, and the
    folder if it created it."""
    from .output_folder import FolderToFill

    target = FolderToFill(out_dir, ("super_resolved.nii.gz", "kernel_converted.nii.gz", "phantom_*.nii.gz",
                                    "super_resolution.png", "kernel_conversion.png"), may_hold_files=True)
    with target as out:
        return _run_demo(out, device, case_index, log)


def _run_demo(out: Path, device: str, case_index: int, log: Log) -> Dict[str, dict]:
    from .baselines import fit_gaussian_sigma, interpolate_super_resolution
    from .degradations import gaussian_inplane, kernel_oracle
    from .inference import translate
    from .linear_prior import (PRIOR_TAPS, UPSAMPLER_TAPS, apply_kernel, apply_upsampler, fit_fir_least_squares,
                               fit_upsampler)
    from .metrics import compare_volumes
    from .modelfile import load_model
    from .phantom_dataset import PhantomRecipe, case_seeds, make_phantom_case
    from .preview import LUNG_WINDOW, write_png
    from .progress import progress_bar
    from .registry import default_model
    from .volume_io import write_volume

    started = time.perf_counter()
    sr_entry, kernel_entry = default_model("super_resolution"), default_model("kernel")
    sr_model, kernel_model = load_model(sr_entry.path), load_model(kernel_entry.path)

    log(f"generating held-out phantom (test seed {TEST_SEED}, case {case_index})")
    case = make_phantom_case(case_seeds(TEST_SEED, case_index), PhantomRecipe())
    for domain, volume in case.items():
        write_volume(volume, out / f"phantom_{domain}.nii.gz")

    training_pairs = [make_phantom_case(case_seeds(TRAIN_SEED, int(c[-3:])), PhantomRecipe())
                      for c in FIT_CASES[:DEMO_FIT_PAIRS]]
    results: Dict[str, dict] = {}
    with progress_bar("super-resolve", unit="tile") as bar:
        super_resolved = translate(sr_model, case["lr"], "forward", device=device, progress=bar)
    write_volume(super_resolved, out / "super_resolved.nii.gz")
    factors_xyz = sr_model.metadata.scale_factors_xyz
    factors_zyx = tuple(factors_xyz)[::-1]
    bspline = interpolate_super_resolution(case["lr"], factors_xyz, "bspline")
    upsampler = fit_upsampler([(pair["lr"], pair["hr"]) for pair in training_pairs], factors_zyx)
    results["super_resolution"] = {
        "B-spline interpolation": compare_volumes(bspline, case["hr"]),
        f"Fitted upsampler ({UPSAMPLER_TAPS}^3, {len(training_pairs)} training pairs)":
            compare_volumes(apply_upsampler(case["lr"], upsampler, factors_zyx), case["hr"]),
        f"RevGAN ({sr_entry.name})": compare_volumes(super_resolved, case["hr"]),
    }
    write_png(out / "super_resolution.png", _panel([bspline, super_resolved, case["hr"]], LUNG_WINDOW))

    with progress_bar("sharp -> smooth", unit="tile") as bar:
        smoothed = translate(kernel_model, case["sharp"], "forward", device=device, progress=bar)
    write_volume(smoothed, out / "kernel_converted.nii.gz")
    kernel_pairs = [(pair["sharp"], pair["smooth"]) for pair in training_pairs]
    sigma, _ = fit_gaussian_sigma(kernel_pairs)
    fir = fit_fir_least_squares(kernel_pairs, PRIOR_TAPS)
    results["kernel"] = {
        "Identity (sharp input)": compare_volumes(case["sharp"], case["smooth"]),
        f"Best Gaussian (sigma {sigma:.2f} mm)": compare_volumes(gaussian_inplane(case["sharp"], sigma),
                                                                case["smooth"]),
        f"Fitted FIR filter ({PRIOR_TAPS} x {PRIOR_TAPS}, {len(training_pairs)} training pairs)":
            compare_volumes(apply_kernel(case["sharp"], fir), case["smooth"]),
        f"RevGAN ({kernel_entry.name})": compare_volumes(smoothed, case["smooth"]),
        "Linear oracle (the true MTF ratio)": compare_volumes(kernel_oracle(case["sharp"]), case["smooth"]),
    }
    write_png(out / "kernel_conversion.png", _panel([case["sharp"], smoothed, case["smooth"]], LUNG_WINDOW))

    log(format_demo(results))
    log("\nThis phantom is FBP-like: filters fitted on a few training pairs are the baselines to beat, and\n"
        "the shipped models do not beat them here (revgan fit-kernel-filter makes one from your own pairs).\n"
        "Where learning matters (iterative-reconstruction-like targets): README, \"Reproducing Table 2\".")
    log(f"wrote {out}/ (volumes *.nii.gz, super_resolution.png, kernel_conversion.png) in "
        f"{time.perf_counter() - started:.0f} s")
    return results


def format_demo(results: Dict[str, Dict[str, dict]]) -> str:
    lines = []
    titles = {"super_resolution": "Super-resolution (low resolution -> high resolution), against the HR reference",
              "kernel": "Kernel conversion (B50f-like sharp -> B30f-like smooth), against the smooth reconstruction"}
    for task, rows in results.items():
        lines += ["", titles[task], f"{'method':<48} {'MAE (HU)':>9} {'PSNR (dB)':>10} {'SSIM':>7}"]
        for method, metrics in rows.items():
            lines.append(f"{method:<48} {metrics['mae_hu']:>9.2f} {metrics['psnr_unit_db']:>10.2f} "
                         f"{metrics['ssim']:>7.4f}")
    return "\n".join(lines)
