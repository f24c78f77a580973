"""``revgan bench real`` on a small synthetic "real-like" chest volume the test writes, and the
z-consistent scoring it rests on (real_degradation, bench.real_scoring)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import SimpleITK as sitk

from model_helpers import save_tiny_model
from RevGANCore.bench import real_scoring
from RevGANCore.cli import main
from RevGANCore.errors import VolumeError
from RevGANCore.metrics import body_mask
from RevGANCore.real_degradation import degrade_in_plane, slab_average, slab_weights
from RevGANCore.volume import Grid, Volume, resample_to_grid, super_resolution_grid

SPACING = (1.0, 1.0, 5.0)


def real_like(slabs: int = 12, size: int = 64, seed: int = 0) -> Volume:
    """A thick-slice chest (1 x 1 x 5 mm voxels): air, a soft-tissue body with two lungs, a vertebra (bone), an
    enhanced aorta (200 HU in fat) that does not touch the bone, slab-to-slab change and noise."""
    rng = np.random.default_rng(seed)
    y, x = (np.mgrid[0:size, 0:size] + 0.5) * SPACING[0] - size * SPACING[0] / 2
    array = np.full((slabs, size, size), -1000.0, dtype=np.float32)
    for k in range(slabs):
        plane = array[k]
        plane[(x / 30.0) ** 2 + (y / 26.0) ** 2 < 1] = 40.0 + k  # body
        plane[((x - 18.0) / 8.0) ** 2 + ((y + 2.0) / 16.0) ** 2 < 1] = -850.0  # lungs
        plane[((x + 18.0) / 8.0) ** 2 + ((y + 2.0) / 16.0) ** 2 < 1] = -850.0
        plane[x ** 2 + (y - 18.0) ** 2 < 6.0 ** 2] = 700.0  # vertebra
        plane[x ** 2 + (y + 8.0) ** 2 < 9.5 ** 2] = -100.0  # fat around the aorta
        plane[x ** 2 + (y + 8.0) ** 2 < 8.0 ** 2] = 200.0  # aorta
    array += rng.normal(0.0, 5.0, array.shape).astype(np.float32)
    return Volume(np.round(array), SPACING, (-31.5, -31.5, 100.0))  # whole HU, as int16 scans


def _write(volume: Volume, path):
    image = sitk.GetImageFromArray(volume.array)
    image.SetSpacing(volume.spacing)
    image.SetOrigin(volume.origin)
    sitk.WriteImage(image, str(path))
    return path


# --------------------------------------------------------------------------- z-consistent scoring


def test_a_prediction_whose_slab_averages_equal_the_real_slabs_scores_perfectly():
    """Sub-slices that differ from their slab (+a, -a, +b, -b) but average to it exactly:
    PSNR inf, MAE 0, SSIM 1. Scoring sub-slices against the nearest slab, or a resampled
    prediction, would see errors of tens of HU."""
    real = real_like()
    grid = super_resolution_grid(real, (1, 1, 4))
    offsets = np.array([30.0, -30.0, 55.0, -55.0])
    fine = np.repeat(real.array.astype(np.float64), 4, axis=0) + np.tile(offsets, real.shape[0])[:, None, None]
    prediction = Volume(fine.astype(np.float32), grid.spacing, grid.origin, grid.direction)
    body = body_mask(real.array)
    slabs = slab_average(prediction, real)
    assert np.array_equal(slabs.array, real.array)
    scores = real_scoring.slab_scores(slabs, real, body)
    assert scores["psnr_db"] == math.inf and scores["mae_hu"] == 0.0 and scores["ssim"] == pytest.approx(1.0)
    # the usual shortcut, resampling the prediction onto the real grid (slab centres), is not z-consistent
    centres = resample_to_grid(prediction, real, "linear")
    assert real_scoring.slab_scores(centres, real, body)["mae_hu"] == pytest.approx(12.5, abs=0.01)


def test_slab_weights_follow_the_grid_geometry():
    real = real_like(slabs=4, size=16)
    thirds = slab_weights(super_resolution_grid(real, (1, 1, 3)), real.grid)
    assert thirds.shape == (4, 12)
    assert np.allclose(thirds[1], np.r_[0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0] / 3)
    # half-slab slices straddling the slab borders: 1/4, 1/2, 1/4
    fine = super_resolution_grid(real, (1, 1, 2))
    straddling = Grid((7, 16, 16), fine.spacing, tuple(np.add(fine.origin, (0, 0, 1.25))), fine.direction)
    with pytest.raises(VolumeError, match="covers only"):  # the first and last slabs are only 3/4 covered
        slab_weights(straddling, real.grid)
    longer = Grid((9, 16, 16), fine.spacing, tuple(np.add(fine.origin, (0, 0, -1.25))), fine.direction)
    weights = slab_weights(longer, real.grid)
    assert np.allclose(weights[1, 2:5], [0.25, 0.5, 0.25]) and np.allclose(weights.sum(axis=1), 1.0)
    with pytest.raises(VolumeError, match="in-plane"):
        slab_weights(super_resolution_grid(real, (2, 2, 4)), real.grid)


# --------------------------------------------------------------------------- degradation and regions


def test_in_plane_degradation_keeps_the_box_and_the_slices_and_keeps_padding_out():
    real = real_like(slabs=3, size=16)
    low = degrade_in_plane(real, (2, 2))
    assert low.shape == (3, 8, 8) and low.spacing == (2.0, 2.0, 5.0)
    assert np.allclose(low.grid.corner(), real.grid.corner()) and low.physical_extent == real.physical_extent
    constant = degrade_in_plane(real.with_array(np.full(real.shape, 40.0, np.float32)))
    assert np.allclose(constant.array, 40.0, atol=1e-3)  # a uniform region keeps its HU
    padded = np.full(real.shape, 40.0, np.float32)
    padded[:, :, :2] = -3024.0
    assert degrade_in_plane(real.with_array(padded)).array.min() >= -1000.0 - 1e-3  # blurred as air
    with pytest.raises(VolumeError, match="not divisible"):
        degrade_in_plane(Volume(np.zeros((3, 15, 16), np.float32), SPACING))


def test_regions_find_bone_soft_tissue_and_an_enhanced_aorta_but_no_aorta_without_contrast():
    real = real_like()
    regions = real_scoring.hu_regions(real)
    assert regions["bone"]["voxels"] > 0 and regions["soft_tissue"]["voxels"] > 0
    aorta = regions["aorta"]["mask"]
    assert aorta is not None and np.all(real.array[aorta] > 150)
    plain = real.array.copy()
    plain[(plain > 100) & (plain < 300)] = 45.0  # no contrast: blood like soft tissue
    assert real_scoring.hu_regions(real.with_array(plain))["aorta"]["mask"] is None


def test_z_alternation_sees_a_period_two_pattern_and_not_a_trend():
    real = real_like()
    grid = super_resolution_grid(real, (1, 1, 4))
    base = np.repeat(real.array, 4, axis=0)
    flat = real_scoring.flat_slabs(real, real_scoring.hu_regions(real)["soft_tissue"]["mask"])
    sign = np.where(np.arange(grid.shape[0]) % 2 == 0, 1.5, -1.5).astype(np.float32)[:, None, None]
    alternating = Volume(base + sign, grid.spacing, grid.origin, grid.direction)
    assert real_scoring.z_alternation(alternating, real, flat)["alternation_hu"] == pytest.approx(3.0, abs=1e-3)
    trend = (np.arange(grid.shape[0], dtype=np.float32) * 0.5)[:, None, None]
    smooth = Volume(base + trend, grid.spacing, grid.origin, grid.direction)
    assert real_scoring.z_alternation(smooth, real, flat)["alternation_hu"] < 1e-3
    steps = Volume(base, grid.spacing, grid.origin, grid.direction)  # each slab's value repeated: steps only
    assert real_scoring.z_alternation(steps, real, flat)["alternation_hu"] < 1e-3


# --------------------------------------------------------------------------- end to end

RESULT_KEYS = {"scan", "model", "kernel_model", "super_resolution", "kernel_scale", "fov", "figure", "seconds"}
METHODS = {"model", "bspline", "linear", "inplane_bspline", "inplane_fitted"}


def test_bench_real_runs_end_to_end_with_tiny_models_and_prints_the_documented_keys(tmp_path, monkeypatch, capsys):
    from RevGANCore.bench.real import REAL_CT_DIR_ENV

    # The fitted in-plane upsampler learns from "lung1" (here another synthetic chest), never the scored scan.
    cache = tmp_path / "real_ct"
    cache.mkdir()
    _write(real_like(seed=5), cache / "lung1_image.nrrd")
    monkeypatch.setenv(REAL_CT_DIR_ENV, str(cache))
    scan = _write(real_like(), tmp_path / "chest.nrrd")
    sr = save_tiny_model(tmp_path / "sr.safetensors", "super_resolution")
    kernel = save_tiny_model(tmp_path / "kernel.safetensors", "kernel")
    figure = tmp_path / "figure.png"
    assert main(["bench", "real", "--scan", str(scan), "--model", str(sr), "--kernel-model", str(kernel),
                 "--crop", "99", "46", "47", "--figure", str(figure), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == RESULT_KEYS
    assert result["scan"]["used_zyx"] == [12, 46, 46]  # in-plane cropped to a multiple of the factor 2
    block = result["super_resolution"]
    assert set(block["methods"]) == METHODS
    for scores in block["methods"].values():
        assert set(scores) == {"psnr_db", "ssim", "mae_hu"} and scores["mae_hu"] > 0
    assert block["output_zyx"] == [48, 46, 46]
    assert set(block["hu_bias"]["regions"]) == {"bone", "soft_tissue", "aorta"}
    assert block["hu_bias"]["regions"]["aorta"]["voxels"] > 0
    assert set(block["hu_bias"]["methods"]["model"]) == {"bone", "soft_tissue", "aorta"}
    assert set(block["z_alternation"]) == {"model", "bspline", "linear"}
    assert set(block["borders"]["model"]) == {f"{part}_{kind}" for part in ("first_10mm", "last_10mm", "middle")
                                              for kind in ("mae_hu", "bias_hu")}
    assert set(block["model_minus_best_baseline"]) == {"psnr_db", "ssim", "mae_hu"}
    fitted = block["fitted_baseline"]
    assert fitted["fitted"] is True and fitted["fit_scan"].startswith("lung1")
    # a fitted linear upsampler beats interpolation on a scan it never saw, and is scored as a baseline
    assert block["methods"]["inplane_fitted"]["mae_hu"] < block["methods"]["inplane_bspline"]["mae_hu"]
    assert block["model_minus_best_baseline"]["mae_hu"] >= (block["methods"]["model"]["mae_hu"]
                                                            - block["methods"]["inplane_fitted"]["mae_hu"])
    kernel_scale = result["kernel_scale"]
    assert len(kernel_scale["pixels_mm"]) == 3 and kernel_scale["cycles_per_mm"] == [0.3, 0.5]
    assert set(kernel_scale["directions"]) == {"forward", "inverse"}
    for task in ("super_resolution", "kernel"):
        for pad in ("-2000", "-3024"):
            check = result["fov"][task][pad]
            assert check["padding_kept"] is True and check["ring_max_abs_hu"] == pytest.approx(0.0, abs=1e-3)
    assert result["figure"] == str(figure) and figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_real_without_a_fit_scan_says_so_and_keeps_the_other_rows(tmp_path, monkeypatch, capsys):
    from RevGANCore.bench.real import REAL_CT_DIR_ENV

    monkeypatch.setenv(REAL_CT_DIR_ENV, str(tmp_path / "empty"))
    scan = _write(real_like(slabs=6, size=32), tmp_path / "chest.nrrd")
    sr = save_tiny_model(tmp_path / "sr.safetensors", "super_resolution")
    kernel = save_tiny_model(tmp_path / "kernel.safetensors", "kernel")
    assert main(["bench", "real", "--scan", str(scan), "--model", str(sr), "--kernel-model", str(kernel),
                 "--json"]) == 0
    block = json.loads(capsys.readouterr().out)["super_resolution"]
    assert set(block["methods"]) == METHODS - {"inplane_fitted"}
    assert block["fitted_baseline"]["fitted"] is False and "lung1_image.nrrd is missing" in block["fitted_baseline"]["fit_scan"]


def test_bench_real_names_a_missing_scan_in_one_line(tmp_path, monkeypatch, capsys):
    from RevGANCore.bench.real import REAL_CT_DIR_ENV

    monkeypatch.setenv(REAL_CT_DIR_ENV, str(tmp_path))
    assert main(["bench", "real", "--json"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lung2_image.nrrd" in err[0] and "fetch_real_ct.py" in err[0]
