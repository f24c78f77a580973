"""``revgan bench real --degradation box`` and ``--single-slices`` on small synthetic scans and
DICOM slices the tests write (RevGANCore.bench.real_slices)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import SimpleITK as sitk

from model_helpers import save_tiny_model
from RevGANCore.bench import real_scoring
from RevGANCore.bench.real_slices import STACK_SLICES, read_real_slice, slice_volume
from RevGANCore.cli import main
from RevGANCore.metrics import body_mask
from RevGANCore.real_degradation import degrade_in_plane
from RevGANCore.volume import resample_to_grid
from test_bench_real import _write, real_like


def _dicom_slice(path, size=48, pixel=0.7, kernel="B30s", frames=1, seed=0):
    """A CT slice (int16 HU: air, a body with a bone disc) written as DICOM by SimpleITK."""
    rng = np.random.default_rng(seed)
    y, x = (np.mgrid[0:size, 0:size] + 0.5) - size / 2
    plane = np.full((size, size), -1000.0)
    plane[x ** 2 + (y / 0.8) ** 2 < (0.4 * size) ** 2] = 40.0
    plane[(x - 4) ** 2 + (y + 3) ** 2 < 16] = 800.0
    plane[x ** 2 + y ** 2 > (0.49 * size) ** 2] = -3024.0  # padding outside the reconstruction circle
    array = np.round(plane + rng.normal(0, 6, plane.shape) * (plane > -2000)).astype(np.int16)
    image = sitk.GetImageFromArray(np.repeat(array[None], frames, axis=0) if frames > 1 else array)
    image.SetSpacing((pixel, pixel, 5.0) if frames > 1 else (pixel, pixel))
    for tag, value in (("0008|0060", "CT"), ("0008|0070", "ACME"), ("0018|1210", kernel), ("0018|0050", "5")):
        image.SetMetaData(tag, value)
    sitk.WriteImage(image, str(path))
    return path, array


def test_bench_real_with_box_binning_scores_the_binned_input(tmp_path, capsys):
    real = real_like(slabs=6, size=40)
    scan = _write(real, tmp_path / "chest.nrrd")
    sr = save_tiny_model(tmp_path / "sr.safetensors", "super_resolution")
    kernel = save_tiny_model(tmp_path / "kernel.safetensors", "kernel")
    assert main(["bench", "real", "--scan", str(scan), "--model", str(sr), "--kernel-model", str(kernel),
                 "--degradation", "box", "--json"]) == 0
    block = json.loads(capsys.readouterr().out)["super_resolution"]
    assert block["degradation"]["name"] == "box" and "binning" in block["degradation"]["method"]
    assert block["degradation"]["fwhm_mm_xy"] is None
    # the in-plane B-spline baseline is that of the binned scan, not of the Gaussian one
    body = body_mask(real.array)
    for degradation in ("box", "gaussian"):
        inplane = resample_to_grid(degrade_in_plane(real, (2, 2), degradation), real.grid, "bspline")
        scores = real_scoring.slab_scores(inplane, real, body)
        same = scores["mae_hu"] == pytest.approx(block["methods"]["inplane_bspline"]["mae_hu"], rel=1e-6)
        assert same == (degradation == "box")
    with pytest.raises(SystemExit):  # argparse refuses an unknown degradation before any work
        main(["bench", "real", "--scan", str(scan), "--degradation", "sinc"])


def test_a_dicom_slice_is_read_with_its_description_and_stacked_z_constant(tmp_path):
    path, array = _dicom_slice(tmp_path / "slice.dcm", size=47)
    hu, spacing, info = read_real_slice(path)
    assert np.array_equal(hu, array.astype(np.float32)) and spacing == pytest.approx((0.7, 0.7))
    assert info["kernel"] == "B30s" and info["manufacturer"] == "ACME" and info["pixels_xy"] == [47, 47]
    volume = slice_volume(hu, spacing, (2, 2), 5.0)
    assert volume.shape == (STACK_SLICES, 46, 46) and volume.spacing[2] == 5.0
    assert all(np.array_equal(volume.array[k], hu[:46, :46]) for k in range(STACK_SLICES))  # centred crop: 0..45
    frames, _ = _dicom_slice(tmp_path / "frames.dcm", frames=3)
    assert read_real_slice(frames)[0].shape == (48, 48)  # a multi-frame file: its middle frame


def test_single_slices_are_scored_in_plane_against_the_real_slice(tmp_path, capsys):
    first, _ = _dicom_slice(tmp_path / "a.dcm")
    second, _ = _dicom_slice(tmp_path / "b.dcm", size=40, pixel=0.4, kernel="STANDARD", seed=1)
    sr = save_tiny_model(tmp_path / "sr.safetensors", "super_resolution")
    assert main(["bench", "real", "--single-slices", str(first), str(second), "--model", str(sr),
                 "--degradation", "box", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["degradation"]["name"] == "box" and [s["file"] for s in result["slices"]] == ["a.dcm", "b.dcm"]
    entry = result["slices"][0]
    assert entry["kernel"] == "B30s" and entry["used_xy"] == [48, 48]
    assert set(entry["methods"]) == {"model", "bspline", "linear", "inplane_bspline"}
    for scores in entry["methods"].values():
        assert {"psnr_db", "ssim", "mae_hu", "bone_bias_hu", "soft_tissue_bias_hu"} <= set(scores)
        assert math.isfinite(scores["psnr_db"]) and 0 < scores["ssim"] <= 1
    # the in-plane B-spline figure, computed here from the slice alone (body only, padding never scored)
    hu, spacing, _ = read_real_slice(first)
    volume = slice_volume(hu, spacing, (2, 2), 5.0)
    inplane = resample_to_grid(degrade_in_plane(volume, (2, 2), "box"), volume.grid, "bspline").array[2]
    body = body_mask(hu[None])[0]
    assert not body[hu <= -1500].any()
    expected = float(np.abs(inplane[body].astype(np.float64) - hu[body]).mean())
    assert entry["methods"]["inplane_bspline"]["mae_hu"] == pytest.approx(expected, rel=1e-5)
    # on a z-constant stack, B-spline onto the output grid is in-plane B-spline
    assert entry["methods"]["bspline"]["mae_hu"] == pytest.approx(expected, rel=1e-4)


def test_single_slice_problems_are_one_line_naming_the_file(tmp_path, monkeypatch, capsys):
    from RevGANCore.bench.real import REAL_CT_DIR_ENV

    monkeypatch.setenv(REAL_CT_DIR_ENV, str(tmp_path))
    sr = save_tiny_model(tmp_path / "sr.safetensors", "super_resolution")
    assert main(["bench", "real", "--single-slices", "--model", str(sr)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "slices" in err[0] and "fetch_real_ct.py --slices" in err[0]
    text = tmp_path / "notes.dcm"
    text.write_text("not a DICOM file")
    assert main(["bench", "real", "--single-slices", str(text), "--model", str(sr)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "notes.dcm" in err[0]
