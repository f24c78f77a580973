"""What is not anatomy stays out of the network: reconstruction-circle padding, metal above
the CT scale, and output range."""

from __future__ import annotations

import numpy as np
import pytest

from model_helpers import metadata_for, two_way_generator
from physics_helpers import band_limited_slice
from RevGANCore.errors import ValueRangeError, VolumeError
from RevGANCore.field_of_view import (OUTPUT_MARGIN_HU, ceiling_mask, output_limits, padding_mask,
                                      restore_block_means, restore_padding)
from RevGANCore.inference import translate, translate_file
from RevGANCore.modelfile import TranslationModel, as_model
from RevGANCore.volume import Volume
from RevGANCore.volume_io import write_volume

SIZE = 96
CIRCLE_RADIUS = 44  # pixels
BAND = 6  # pixels inside the circle's edge


def _radius(size: int) -> np.ndarray:
    y, x = np.mgrid[:size, :size] - (size - 1) / 2
    return np.hypot(y, x)


def _scan(padding_hu: float, slices: int = 8, spacing=(0.8, 0.8, 1.25)) -> Volume:
    """A chest-like slab: textured soft tissue and a dense rod in a body of radius 36
    pixels, air up to the reconstruction circle, ``padding_hu`` outside it."""
    radius = _radius(SIZE)
    texture = band_limited_slice(SIZE * spacing[0], spacing[0], std_hu=30.0, base_hu=30.0)
    image = np.where(radius < 36, texture, -1000.0 + 0.3 * (texture - 30.0))
    image[np.hypot(*(np.mgrid[:SIZE, :SIZE] - 30)) < 6] = 1200.0
    image[radius >= CIRCLE_RADIUS] = padding_hu
    return Volume(np.repeat(image[None].astype(np.float32), slices, axis=0), spacing, (0.0, 0.0, 0.0))


@pytest.mark.parametrize("model_name", ["revgan-kernel-phantom-paired2r", "revgan-sr-phantom-paired2r",
                                        "revgan-sr-phantom-lung1"])
@pytest.mark.parametrize("padding_hu", [-2000.0, -3024.0])
def test_padding_is_kept_exactly_and_leaves_no_ring(model_name, padding_hu):
    model = as_model(model_name)
    factor = 1 if model.metadata.scale_factors_xyz is None else 2
    spacing = (0.8 * factor, 0.8 * factor, 1.25 * (4 if factor == 2 else 1))
    padded, unpadded = _scan(padding_hu, spacing=spacing), _scan(-1000.0, spacing=spacing)
    kept = padded.array.copy()
    result = translate(model, padded, device="cpu").array
    reference = translate(model, unpadded, device="cpu").array
    assert np.array_equal(padded.array, kept)  # the input is not modified
    # on the output grid (2x finer in-plane for super-resolution), in output pixels
    radius = _radius(result.shape[1]) / (result.shape[1] / SIZE)
    outside = np.broadcast_to(radius >= CIRCLE_RADIUS + 0.5, result.shape)
    assert np.array_equal(result[outside], np.full(int(outside.sum()), padding_hu, np.float32))
    band = np.broadcast_to((radius < CIRCLE_RADIUS - 0.5) & (radius >= CIRCLE_RADIUS - BAND), result.shape)
    assert np.abs(result[band] - reference[band]).max() < 3.0
    inside = np.broadcast_to(radius < CIRCLE_RADIUS - 0.5, result.shape)
    low, high = output_limits(unpadded)  # the CT scale, widened to the input's range, plus the margin
    assert low == min(-1024.0, float(unpadded.array.min())) - OUTPUT_MARGIN_HU and high == 3071.0 + OUTPUT_MARGIN_HU
    assert low <= result[inside].min() and result[inside].max() <= high


def test_padding_on_a_finer_grid_is_the_nearest_input_voxel():
    source = np.full((2, 3, 3), 5.0, np.float32)
    source[0, 0, 1] = -3024.0
    source[1, 2, 2] = -2000.0
    mask = padding_mask(Volume(source, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0)))
    out = np.zeros((8, 6, 6), np.float32)
    restore_padding(out, source, mask, (4, 2, 2))
    expected = np.zeros_like(out)
    expected[0:4, 0:2, 2:4] = -3024.0
    expected[4:8, 4:6, 4:6] = -2000.0
    assert np.array_equal(out, expected)
    assert padding_mask(Volume(np.full((2, 2, 2), -1400.0, np.float32), (1, 1, 1), (0, 0, 0))) is None


def test_outputs_beyond_the_ct_scale_are_clipped_and_reported():
    generator = two_way_generator(strength=8.0)  # moves voxels by thousands of HU
    model = TranslationModel(generator, metadata_for("kernel").__class__(
        **{**metadata_for("kernel").__dict__, "generator": generator.config.to_dict()}))
    volume = _scan(-1000.0, slices=6)
    messages = []
    result = translate(model, volume, device="cpu", log=messages.append).array
    low, high = output_limits(volume)
    assert result.min() >= low and result.max() <= high
    assert result.min() == low or result.max() == high  # something was clipped ...
    assert any("output voxels clipped to" in m for m in messages)  # ... and said so


METAL = (slice(3, 5), slice(60, 63), slice(40, 43))  # 2 x 3 x 3 input voxels, in the body


def _footprints(input_shape, output_shape):
    """Per axis (z, y, x): where each output voxel starts and stops, in input voxels."""
    factors = np.array(output_shape) / np.array(input_shape)
    grids = np.ogrid[tuple(slice(0, n) for n in output_shape)]
    return [(g / f, (g + 1) / f) for g, f in zip(grids, factors)]


@pytest.mark.parametrize("model_name, spacing, direction", [
    ("revgan-kernel-phantom-paired2r", (0.8, 0.8, 1.25), "forward"),
    ("revgan-sr-phantom-lung1", (1.6, 1.6, 5.0), "forward"),  # 2 x 2 x 4 finer output
    ("revgan-sr-phantom-lung1", (0.8, 0.8, 1.25), "inverse"),  # 2 x 2 x 4 coarser output
])
def test_metal_on_an_extended_hu_scale_stays_where_it_is(tmp_path, model_name, spacing, direction):
    """A 32000 HU block: the network sees it at the 3071 HU ceiling, so everything outside it
    comes out exactly as for a 3071 HU block, and nothing more than 5 pixels away moves (it
    used to move by up to 114 HU for the kernel model, 213 HU for super-resolution), while
    the block keeps its values."""
    from RevGANCore.inference import translate_file
    from RevGANCore.volume_io import read_volume, write_volume

    model = as_model(model_name)
    results = {}
    for hu in (None, 3071.0, 32000.0):
        scan = _scan(-1000.0, spacing=spacing)
        if hu is not None:
            scan.array[METAL] = hu
        path = write_volume(scan, tmp_path / f"in-{hu}.nrrd", dtype="float32")
        out = translate_file(model, path, tmp_path / f"out-{hu}.nrrd", direction, device="cpu", dtype="float32")
        results[hu] = read_volume(out, expect_ct=False).array
    source = read_volume(tmp_path / "in-32000.0.nrrd").array
    shape = results[None].shape
    footprints = list(zip(_footprints(source.shape, shape), METAL))
    z, y, x = [(lo < m.stop) & (hi > m.start) for (lo, hi), m in footprints]
    overlaps = np.broadcast_to(z & y & x, shape)
    z, y, x = [(lo >= m.start) & (hi <= m.stop) for (lo, hi), m in footprints]
    inside = np.broadcast_to(z & y & x, shape)
    _, y, x = [(lo > m.stop + 5) | (hi < m.start - 5) for (lo, hi), m in footprints]
    far = np.broadcast_to(y | x, shape)  # more than 5 input pixels away in-plane
    assert np.array_equal(results[32000.0][~overlaps], results[3071.0][~overlaps])
    assert np.abs(results[32000.0][far] - results[None][far]).max() < 20.0
    if direction == "forward":  # every output voxel inside a metal voxel is metal
        assert inside.sum() == source[METAL].size * np.prod(np.array(shape) // source.shape)
        assert (results[32000.0][inside] == 32000.0).all()
    else:  # a coarse voxel over metal holds its block's mean
        means = source.reshape(2, 4, 48, 2, 48, 2).mean(axis=(1, 3, 5))
        assert overlaps.sum() == 8 and np.allclose(results[32000.0][overlaps], means[overlaps], atol=0.01)


def test_metal_keeps_tiled_translation_exact():
    model = as_model("revgan-kernel-phantom-paired2r")
    scan = _scan(-2000.0)
    scan.array[METAL] = 32000.0
    whole = translate(model, scan, device="cpu").array
    tiled = translate(model, scan, device="cpu", tile_size=(8, 48, 48)).array
    assert np.abs(tiled - whole).max() <= 0.01 and (tiled[METAL] == 32000.0).all()  # float rounding, as without metal


def test_metal_on_a_coarser_grid_is_its_block_mean():
    source = np.zeros((5, 4, 3), np.float32)
    source[0, 0, 0] = 32000.0  # in a full 4 x 2 x 2 block
    source[4, 3, 2] = 10000.0  # alone in a partial block (1 x 2 x 1 voxels)
    mask = ceiling_mask(Volume(source, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0)))
    out = np.full((2, 2, 2), -5.0, np.float32)
    restore_block_means(out, source, mask, (4, 2, 2))
    expected = np.full_like(out, -5.0)
    expected[0, 0, 0] = 32000.0 / 16
    expected[1, 1, 1] = 10000.0 / 2
    assert np.array_equal(out, expected)
    assert ceiling_mask(Volume(np.full((2, 2, 2), 3071.0, np.float32), (1, 1, 1), (0, 0, 0))) is None


def test_metal_beyond_int16_is_an_error_not_a_wrapped_value():
    model = as_model("revgan-kernel-phantom-paired2r")
    scan = _scan(-1000.0)
    scan.array[METAL] = 40000.0
    with pytest.raises(VolumeError, match=r"beyond what int16 can hold .*float32 output keeps them: --dtype float32"):
        translate(model, scan, device="cpu", out_dtype="int16")


def test_metal_beyond_int16_names_the_input_file_and_writes_nothing(tmp_path):
    scan = _scan(-1000.0)
    scan.array[METAL] = 40000.0
    source, target = tmp_path / "metal scan.nrrd", tmp_path / "out.nrrd"
    write_volume(scan, source, dtype="float32")
    with pytest.raises(ValueRangeError, match=r"metal scan\.nrrd: the result has values .* beyond what int16"):
        translate_file("revgan-kernel-phantom-paired2r", source, target, device="cpu", dtype="int16")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metal scan.nrrd"]
