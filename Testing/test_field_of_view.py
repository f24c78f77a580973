"""What is not anatomy stays out of the network: reconstruction-circle padding and output range."""

from __future__ import annotations

import numpy as np
import pytest

from model_helpers import metadata_for, two_way_generator
from physics_helpers import band_limited_slice
from RevGANCore.field_of_view import OUTPUT_MARGIN_HU, output_limits, padding_mask, restore_padding
from RevGANCore.inference import translate
from RevGANCore.modelfile import TranslationModel, as_model
from RevGANCore.volume import Volume

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
