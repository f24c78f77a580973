"""Models live in millimetres: the kernel transfer does not depend on the scan's pixel size."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from model_helpers import tiny_model
from physics_helpers import PERIOD_MM, band_limited_slice, radial_transfer, z_constant_volume
from RevGANCore.inference import translate
from RevGANCore.modelfile import TranslationModel, as_model
from RevGANCore.physical_scale import (InPlaneScale, fourier_resample, in_plane_scale, scale_warning,
                                       working_grid_bytes)
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


def test_a_spacing_warning_goes_to_warn_without_a_label_else_to_the_log_with_one():
    model = as_model("revgan-kernel-phantom-paired2r")
    volume = z_constant_volume(np.zeros((12, 12), np.float32), 4, (0.15, 0.15, 1.25))
    messages, warnings = [], []
    translate(model, volume, device="cpu", log=messages.append, warn=warnings.append)
    assert len(warnings) == 1 and warnings[0].startswith("the scan's voxel spacing 0.15 x 0.15 mm")
    assert not any("voxel spacing" in m for m in messages)
    messages = []
    translate(model, volume, device="cpu", log=messages.append)
    assert [m for m in messages if "voxel spacing" in m] == [f"warning: {warnings[0]}"]


@pytest.mark.parametrize("spacing, problem", [((500.0, 500.0, 5000.0), "which would make 40000 x 40000 pixels"),
                                              ((0.001, 0.001, 0.001), "narrower than one of them"),
                                              ((0.8, 0.01, 1.25), "narrower than one of them")])
def test_a_working_grid_no_ct_needs_is_refused_before_anything_is_allocated(tmp_path, spacing, problem):
    """Refused in the file's terms: its spacing, what the model works at, what is wrong (500 mm
    pixels used to fail allocating 47.7 GiB; 0.001 mm ran on 1 x 1 working pixels)."""
    from RevGANCore.errors import VolumeError
    from RevGANCore.inference import translate_file
    from RevGANCore.volume import Volume
    from RevGANCore.volume_io import write_volume

    model = as_model("revgan-kernel-phantom-paired2r")
    scan = write_volume(Volume(np.zeros((8, 64, 64), np.float32) - 1000.0, spacing, (0.0, 0.0, 0.0)),
                        tmp_path / "odd.nrrd")
    with pytest.raises(VolumeError) as error:
        translate_file(model, scan, tmp_path / "out.nrrd", device="cpu")
    text = str(error.value)
    assert text.startswith(f"{scan}: in-plane spacing {spacing[0]:g} x {spacing[1]:g} mm") and "\n" not in text
    assert "this model works at 0.8 x 0.8 mm pixels" in text and problem in text
    assert sorted(path.name for path in tmp_path.iterdir()) == ["odd.nrrd"]


def test_a_working_grid_beyond_the_memory_available_is_refused():
    from RevGANCore.errors import VolumeError
    from RevGANCore.inference import _check_working_memory, make_plan

    model = as_model("revgan-kernel-phantom-paired2r")
    # 3 mm pixels: 1920 x 1920 working pixels, within MAX_WORKING_PIXELS, but 200 slices of them
    grid = Grid((200, 512, 512), (3.0, 3.0, 1.25), (0.0, 0.0, 0.0))
    scale = in_plane_scale(model.metadata, grid, "big.nrrd")
    assert working_grid_bytes(scale, grid, 8) == 1920 * 1920 * (4 * 200 + 32 * 8)
    plan = make_plan(model.generator.config, (200,) + scale.working_shape_yx, torch.device("cpu"), memory_mib=1024)
    needed = working_grid_bytes(scale, grid, plan.window_shape[0])
    _check_working_memory(scale, grid, plan, "big.nrrd", (0.8, 0.8, 1.25), available=needed)  # fits
    with pytest.raises(VolumeError, match=r"^big.nrrd: in-plane spacing 3 x 3 mm brought to this model's 0.8 x 0.8 "
                                          r"mm pixels is 1920 x 1920 x 200 voxels, about \d+\.\d GiB; 2.0 GiB of "
                                          r"memory is available$"):
        _check_working_memory(scale, grid, plan, "big.nrrd", (0.8, 0.8, 1.25), available=2 * 2 ** 30)


def test_a_slice_a_few_model_pixels_wide_says_what_spacing_it_gets():
    model = as_model("revgan-kernel-phantom-paired2r")
    grid = Grid((4, 3, 3), (0.5, 0.5, 1.25), (0.0, 0.0, 0.0))  # 1.5 mm: 1.875 model pixels -> 2 of 0.75 mm
    assert in_plane_scale(model.metadata, grid).describe(grid) == (
        "in-plane 0.5 x 0.5 mm resampled to 0.75 x 0.75 mm (2 x 2 pixels, the nearest whole pixels to the "
        "model's 0.8 x 0.8 mm) and back")
    grid = Grid((4, 300, 300), (0.5, 0.5, 1.25), (0.0, 0.0, 0.0))
    assert in_plane_scale(model.metadata, grid).describe(grid) == (
        "in-plane 0.5 x 0.5 mm resampled to the model's 0.798 x 0.798 mm (188 x 188 pixels) and back")
