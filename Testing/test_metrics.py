"""Metrics agree with scikit-image on the same 3D data and data range; the body mask keeps
the body (lungs filled) and drops air and the table."""

from __future__ import annotations

import math

import numpy as np
import pytest

import RevGANCore.metrics as metrics
from RevGANCore.errors import ConfigError, VolumeError
from RevGANCore.metrics import body_mask, compare_volumes, mae, psnr, ssim3d, summarize
from RevGANCore.volume import Volume, hu_to_unit

skimage_metrics = pytest.importorskip("skimage.metrics")


def _pair(shape, seed, noise=0.3):
    rng = np.random.default_rng(seed)
    a = np.cumsum(rng.normal(size=shape), axis=0)
    a = a / np.abs(a).max()
    b = a + rng.normal(scale=noise, size=shape)
    return a.astype(np.float32), b.astype(np.float32)


@pytest.mark.parametrize("shape,data_range", [((23, 31, 28), 2.0), ((11, 40, 13), 5.0), ((30, 12, 19), 1.0)])
def test_ssim_and_psnr_match_scikit_image(shape, data_range):
    a, b = _pair(shape, seed=sum(shape))
    reference = skimage_metrics.structural_similarity(
        a.astype(np.float64), b.astype(np.float64), gaussian_weights=True, sigma=1.5,
        use_sample_covariance=False, data_range=data_range)
    assert ssim3d(a, b, data_range) == pytest.approx(reference, abs=1e-9)
    assert psnr(a, b, data_range) == pytest.approx(
        skimage_metrics.peak_signal_noise_ratio(a.astype(np.float64), b.astype(np.float64),
                                                data_range=data_range), abs=1e-9)


def test_ssim_in_slabs_equals_one_pass(monkeypatch):
    a, b = _pair((37, 21, 18), seed=4)
    whole = ssim3d(a, b, 2.0)
    monkeypatch.setattr(metrics, "_SLAB_ELEMENTS", 21 * 18 * 3)  # force many slabs
    assert ssim3d(a, b, 2.0) == pytest.approx(whole, abs=1e-12)
    assert psnr(a, b, 2.0) == pytest.approx(psnr(a.astype(np.float64), b.astype(np.float64), 2.0), abs=1e-9)


def test_hu_window_psnr_and_ssim_on_ct_values():
    rng = np.random.default_rng(1)
    hu = rng.uniform(-1300, 600, size=(14, 20, 22)).astype(np.float32)
    noisy = (hu + rng.normal(scale=40, size=hu.shape)).astype(np.float32)
    result = compare_volumes(noisy, hu)
    unit_a, unit_b = hu_to_unit(noisy), hu_to_unit(hu)
    assert result["psnr_unit_db"] == pytest.approx(
        skimage_metrics.peak_signal_noise_ratio(unit_b.astype(np.float64), unit_a.astype(np.float64),
                                                data_range=2), abs=1e-6)
    assert result["psnr_hu_db"] == pytest.approx(
        skimage_metrics.peak_signal_noise_ratio(hu.astype(np.float64), noisy.astype(np.float64),
                                                data_range=1500), abs=1e-9)
    assert result["ssim"] == pytest.approx(skimage_metrics.structural_similarity(
        unit_a.astype(np.float64), unit_b.astype(np.float64), gaussian_weights=True, sigma=1.5,
        use_sample_covariance=False, data_range=2), abs=1e-9)
    mask = body_mask(hu)
    assert result["mae_hu"] == pytest.approx(float(np.abs(noisy - hu)[mask].astype(np.float64).mean()), rel=1e-9)
    same = compare_volumes(hu, hu)
    assert same["mae_hu"] == 0 and same["ssim"] == pytest.approx(1.0) and math.isinf(same["psnr_hu_db"])


def test_explicit_and_valid_inputs_only():
    a, b = _pair((12, 12, 12), seed=0)
    for bad in (0, -1, float("nan"), None, "2"):
        with pytest.raises(ConfigError):
            psnr(a, b, bad)
    with pytest.raises(VolumeError, match="different shapes"):
        ssim3d(a, b[:-1], 2.0)
    with pytest.raises(VolumeError, match="at least 11"):
        ssim3d(a[:10], b[:10], 2.0)
    with pytest.raises(VolumeError, match="3D"):
        mae(a[0], b[0])
    with pytest.raises(VolumeError, match="mask is empty"):
        mae(a, b, np.zeros(a.shape, bool))
    grid_a = Volume(a, spacing=(1, 1, 1))
    grid_b = Volume(b, spacing=(1, 1, 2))
    with pytest.raises(VolumeError, match="different grids"):
        compare_volumes(grid_a, grid_b)


def _phantom():
    z, y, x = np.mgrid[0:20, 0:48, 0:48].astype(np.float32)
    hu = np.full((20, 48, 48), -1000.0, dtype=np.float32)
    body = ((y - 22) / 18) ** 2 + ((x - 24) / 20) ** 2 <= 1
    hu[body] = 40.0
    lung = ((y - 22) / 8) ** 2 + ((x - 17) / 5) ** 2 <= 1
    hu[lung] = -850.0
    airway = ((y - 22) ** 2 + (x - 17) ** 2 <= 4) & (z < 3)  # lung open to the top face in 3D
    hu[airway | (body & (z < 1) & lung)] = -1000.0
    hu[:, 44:47, 5:43] = 200.0  # the table: separate, smaller component
    return hu, body[0], lung[0]


def test_body_mask_keeps_body_fills_lungs_drops_air_and_table():
    hu, body, lung = _phantom()
    mask = body_mask(hu)
    assert mask.dtype == bool and mask.shape == hu.shape
    assert mask[5][body].all()                 # the body, lung filled, in an inner slice
    assert mask[10][lung].all()
    assert not mask[:, 44:47, 5:43].any()      # table excluded
    assert not mask[:, 0, 0].any()             # outside air excluded
    assert mask.sum() == pytest.approx(body.sum() * 20, rel=0.02)
    assert not body_mask(np.full((4, 5, 6), -1000.0, np.float32)).any()


def test_summarize_mean_and_sample_std():
    stats = summarize([1.0, 2.0, 4.0])
    assert stats.mean == pytest.approx(7 / 3) and stats.n == 3
    assert stats.std == pytest.approx(np.std([1.0, 2.0, 4.0], ddof=1))
    one = summarize([5.0])  # the spread of one value is undefined, not 0
    assert one.mean == 5.0 and math.isnan(one.std) and one.n == 1
    assert math.isinf(summarize([math.inf, 30.0]).mean)
    with pytest.raises(ConfigError):
        summarize([])
