"""Super-resolution of a volume constant along z: nothing changes along z, uniform regions keep
their HU, and the first and last slices are as good as the middle ones."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from model_helpers import metadata_for
from physics_helpers import band_limited_slice, z_constant_volume
from RevGANCore.inference import translate
from RevGANCore.modelfile import TranslationModel, as_model
from RevGANCore.networks import GeneratorConfig, RevGANGenerator3d

SIZE = 48
SOFT_HU, BONE_HU = 40.0, 700.0


def _scan():
    """Low-resolution slices (1.6 x 1.6 x 5 mm): textured body, a uniform soft-tissue disk
    and a uniform dense disk, repeated along z."""
    y, x = np.mgrid[:SIZE, :SIZE] - (SIZE - 1) / 2
    image = band_limited_slice(SIZE * 1.6, 1.6, std_hu=30.0, base_hu=30.0)
    image = np.where(np.hypot(y, x) < 20, image, -1000.0)
    image[np.hypot(y - 8, x) < 6] = SOFT_HU
    image[np.hypot(y + 8, x) < 5] = BONE_HU
    return z_constant_volume(image.astype(np.float32), 8, (1.6, 1.6, 5.0))


def _regions(shape_yx):
    """Output-grid masks well inside the soft and dense disks."""
    y, x = (np.mgrid[:shape_yx[0], :shape_yx[1]] + 0.5) * SIZE / shape_yx[0] - SIZE / 2
    return np.hypot(y - 8, x) < 4, np.hypot(y + 8, x) < 3


def _identity_model() -> TranslationModel:
    """A residual generator as initialised: its last convolutions are zero, so it is the
    identity and the result is the pipeline alone (resampling, tiling, borders)."""
    generator = RevGANGenerator3d(config=GeneratorConfig(ngf=4, depth=1, residual=True)).eval()
    return TranslationModel(generator, replace(metadata_for("super_resolution"), generator=generator.config.to_dict()))


def test_the_pipeline_changes_nothing_along_z_and_keeps_uniform_hu():
    result = translate(_identity_model(), _scan(), device="cpu").array
    assert result.shape == (32, 96, 96)
    assert np.abs(result - result[0]).max() < 0.01
    soft, bone = _regions(result.shape[1:])
    for region, hu in ((soft, SOFT_HU), (bone, BONE_HU)):  # per-slice means of the uniform disks
        assert np.abs(result[:, region].mean(axis=1) - hu).max() < 5.0


@pytest.mark.parametrize("model_name,tile_size", [("revgan-sr-phantom-paired2r", None),
                                                  ("revgan-sr-phantom-paired2r", (32, 64, 64)),
                                                  ("revgan-sr-phantom-lung1", None),
                                                  ("revgan-sr-phantom-lung1", (8, 40, 40))])
def test_the_first_and_last_slices_are_as_good_as_the_middle(model_name, tile_size):
    """The shipped models on a z-constant scan: whatever they do in the middle, they do the
    same at the volume's first and last slices, and uniform soft tissue keeps its HU. The
    first layout leaves a period-2 pattern (its transposed convolutions); the "resize" layout
    none: every slice is the same."""
    model = as_model(model_name)
    result = translate(model, _scan(), device="cpu", tile_size=tile_size).array
    assert np.abs(result[2:] - result[:-2]).max() < 0.1  # every slice equals the one two further on
    if model.generator.config.architecture == "resize":
        assert np.abs(result[1:] - result[:-1]).max() < 0.1  # and the next one
    soft, _ = _regions(result.shape[1:])
    assert np.abs(result[:, soft].mean(axis=1) - SOFT_HU).max() < 5.0
