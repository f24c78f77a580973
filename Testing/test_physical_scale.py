"""Models live in millimetres: the kernel transfer does not depend on the scan's pixel size."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from model_helpers import tiny_model
from physics_helpers import PERIOD_MM, band_limited_slice, radial_transfer, z_constant_volume
from RevGANCore.inference import translate
from RevGANCore.modelfile import TranslationModel, as_model
from RevGANCore.physical_scale import InPlaneScale, fourier_resample, in_plane_scale, scale_warning
from RevGANCore.volume import Grid


def test_fourier_resampling_keeps_a_band_limited_pattern_exactly():
    fine = band_limited_slice(PERIOD_MM, 0.3)
    coarse = band_limited_slice(PERIOD_MM, 0.9)
    assert np.allclose(fourier_resample(fourier_resample(fine, 80, 0), 80, 1), coarse, atol=1e-3)
    assert np.allclose(fourier_resample(fourier_resample(coarse, 240, 0), 240, 1), fine, atol=1e-3)


def test_the_working_grid_keeps_origin_direction_slices_and_period():
    direction = (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0)
    grid = Grid((5, 240, 120), (0.6, 0.3, 2.0), (10.0, -4.0, 7.5), direction)
    model = tiny_model("kernel")
    model = TranslationModel(model.generator, replace(model.metadata, training_spacing_xyz=(0.8, 0.8, 1.25)))
    scale = in_plane_scale(model.metadata, grid)
    assert scale == InPlaneScale((240, 120), (90, 90))
    working = scale.working_grid(grid)
    assert working.shape == (5, 90, 90) and working.origin == grid.origin and working.direction == direction
    assert working.spacing == pytest.approx((0.8, 0.8, 2.0))


def _with_spacing(model: TranslationModel, spacing) -> TranslationModel:
    return TranslationModel(model.generator, replace(model.metadata, training_spacing_xyz=spacing))


def test_a_scan_at_the_training_spacing_is_translated_as_before():
    model = as_model("revgan-kernel-phantom-paired2r")
    assert model.metadata.training_spacing_xyz == (0.8, 0.8, 1.25)
    # within 3% of 0.8 mm: not resampled, bit-identical to a model that records no spacing
    volume = z_constant_volume(band_limited_slice(PERIOD_MM * 1.01, 0.808), 6, (0.808, 0.808, 1.25))
    assert np.array_equal(translate(model, volume, device="cpu").array,
                          translate(_with_spacing(model, None), volume, device="cpu").array)


@pytest.mark.parametrize("direction", ["forward", "inverse"])
def test_the_kernel_transfer_does_not_depend_on_the_pixel_size(direction):
    """The shipped kernel model on one pattern sampled at 0.3, 0.6 and 0.9 mm: its transfer at
    0.3 and 0.5 cycles/mm agrees within 10% (acting in voxels, 0.85 / 0.62 / 0.46 at 0.3 c/mm)."""
    model = as_model("revgan-kernel-phantom-paired2r")
    transfers = []
    for pixel in (0.3, 0.6, 0.9):
        scan = band_limited_slice(PERIOD_MM, pixel)
        result = translate(model, z_constant_volume(scan, 8, (pixel, pixel, 1.25)), direction, device="cpu")
        assert result.spacing == (pixel, pixel, 1.25) and result.shape == (8,) + scan.shape
        transfers.append([radial_transfer(scan, result.array[4], pixel, f) for f in (0.3, 0.5)])
    transfers = np.array(transfers)
    changed = transfers[0] < 0.8 if direction == "forward" else transfers[0] > 1.2
    assert changed.all(), transfers  # the model does change these frequencies
    assert (transfers.max(axis=0) / transfers.min(axis=0) < 1.10).all(), transfers


@pytest.mark.parametrize("spacing,expected", [((0.8, 0.8, 1.25), None), ((3.0, 3.0, 1.25), None),
                                              ((0.15, 0.15, 1.25), "more than 4 times away"),
                                              ((4.0, 3.5, 1.25), "more than 4 times away")])
def test_spacing_outside_the_supported_range_is_reported(spacing, expected):
    model = as_model("revgan-kernel-phantom-paired2r")
    warning = scale_warning(model.metadata, spacing)
    assert (warning is None) if expected is None else (expected in warning and "\n" not in warning)
    if expected is not None:
        messages = []
        volume = z_constant_volume(np.zeros((12, 12), np.float32), 4, spacing)
        translate(model, volume, device="cpu", log=messages.append)
        assert any(expected in m for m in messages)


def test_a_super_resolution_model_is_checked_against_its_low_resolution_training_spacing():
    model = as_model("revgan-sr-phantom-paired2r")
    assert model.metadata.training_slice_thickness_mm == 5.0
    assert scale_warning(model.metadata, (0.6, 0.6, 5.0)) is None  # a real chest CT
    assert "the 1.6 x 1.6 x 5 mm this model was trained at" in scale_warning(model.metadata, (0.6, 0.6, 25.0))
