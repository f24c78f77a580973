"""Fitted radial filters (RevGANCore.linear_filter) and their model files (linear_filter_file)."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from RevGANCore.cli import main
from RevGANCore.degradations import SHARP_KERNEL, SMOOTH_KERNEL, filter_inplane
from RevGANCore.errors import ModelFileError
from RevGANCore.inference import translate
from RevGANCore.linear_filter import RadialFilter, fit_radial_filter, fit_spectral_ratio_filter
from RevGANCore.linear_filter_file import KernelFilterModel
from RevGANCore.modelfile import load_model
from RevGANCore.modelmetadata import read_metadata
from RevGANCore.volume import Volume

SPACING = (0.7, 0.7, 1.25)


def _noise(seed: int, shape=(12, 96, 96), spacing=SPACING) -> Volume:
    """Body-like (0 HU) white noise of 100 HU, every voxel inside the body mask."""
    rng = np.random.default_rng(seed)
    return Volume(rng.normal(0.0, 100.0, shape).astype(np.float32), spacing)


def known_gain(f):
    return SMOOTH_KERNEL(f) / SHARP_KERNEL(f)


def test_the_least_squares_filter_recovers_a_known_radial_gain():
    pairs = []
    for seed in (1, 2):
        source = _noise(seed)
        pairs.append((source, filter_inplane(source, known_gain, pad_mm=0)))
    fitted = fit_radial_filter(pairs)
    f = np.linspace(0.0, 0.7, 50)
    np.testing.assert_allclose(fitted(f), known_gain(f), atol=0.01)
    # Noise added to the target only (not shared) leaves the estimate unbiased where a bin
    # holds many frequencies (the lowest bins hold a few per slice).
    noisy = [(s, t.with_array(t.array + np.random.default_rng(9).normal(0, 20, t.shape).astype(np.float32)))
             for s, t in pairs]
    np.testing.assert_allclose(fit_radial_filter(noisy)(f[5:]), known_gain(f[5:]), atol=0.03)


def test_the_spectral_ratio_from_unpaired_volumes_approximates_the_true_ratio():
    # Unpaired: the sharp and the smooth volumes come from different noise realisations.
    sharp = [filter_inplane(_noise(seed), SHARP_KERNEL, pad_mm=0) for seed in (3, 4)]
    smooth = [filter_inplane(_noise(seed), SMOOTH_KERNEL, pad_mm=0) for seed in (5, 6)]
    ratio = fit_spectral_ratio_filter(sharp, smooth)
    f = np.linspace(0.06, 0.6, 30)
    np.testing.assert_allclose(ratio(f), known_gain(f), rtol=0.08)
    assert ratio(0.0) == pytest.approx(1.0)
    assert np.abs(ratio(f) - 1).max() > 0.5  # it is no identity


def test_the_inverse_is_the_floored_reciprocal():
    table = RadialFilter(np.array([0.0, 0.5, 1.0]), np.array([1.0, 0.5, 0.01]))
    inverse = table.inverse(0.1)
    np.testing.assert_allclose(inverse.gain, [1.0, 2.0, 10.0])


@pytest.fixture(scope="module")
def phantom_filter(tmp_path_factory):
    folder = tmp_path_factory.mktemp("filter")
    assert main(["phantom", str(folder / "data"), "--cases", "3", "--shape", "12", "48", "48"]) == 0
    model = folder / "kernel_filter.safetensors"
    assert main(["fit-kernel-filter", str(model), "--manifest", str(folder / "data"),
                 "--cases", "case000", "case001"]) == 0
    return folder, model


def test_fit_kernel_filter_writes_a_model_that_translate_runs_both_ways(phantom_filter, capsys):
    from RevGANCore.metrics import compare_volumes
    from RevGANCore.volume_io import read_volume

    folder, model_path = phantom_filter
    card = model_path.with_suffix(".md").read_text()
    assert "When to prefer it" in card and "cycles/mm" in card
    metadata = read_metadata(model_path)
    assert metadata.model_type == "radial-kernel-filter" and metadata.task == "kernel"
    assert metadata.filter["frequency_unit"] == "cycles/mm"
    model = load_model(model_path)
    assert isinstance(model, KernelFilterModel)
    sharp = read_volume(folder / "data" / "case002" / "sharp.nii.gz")
    smooth = read_volume(folder / "data" / "case002" / "smooth.nii.gz")
    converted = translate(model, sharp, "forward")
    assert compare_volumes(converted, smooth)["mae_hu"] < 0.1 * compare_volumes(sharp, smooth)["mae_hu"]
    back = translate(model, smooth, "inverse")
    assert compare_volumes(back, sharp)["mae_hu"] < 0.2 * compare_volumes(smooth, sharp)["mae_hu"]
    # The same conversion at another pixel size: the filter acts in cycles/mm.
    assert model.filter(0.3) == pytest.approx(known_gain(0.3), abs=0.02)
    out = folder / "converted.nii.gz"
    assert main(["translate", str(folder / "data" / "case002" / "sharp.nii.gz"), str(out),
                 "--model", str(model_path), "--dtype", "float32", "--quiet"]) == 0
    np.testing.assert_allclose(read_volume(out).array, converted.array, atol=1e-3)


def _rewrite_metadata(source, target, change):
    raw = source.read_bytes()
    length = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + length])
    metadata = json.loads(header["__metadata__"]["revgan"])
    change(metadata, header)
    header["__metadata__"]["revgan"] = json.dumps(metadata)
    text = json.dumps(header).encode()
    target.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + length:])
    return target


@pytest.mark.parametrize("change,message", [
    (lambda m, h: m["filter"].update(frequency_unit="cycles/pixel"), "frequency_unit"),
    (lambda m, h: m["filter"].update(inverse_gain_floor=0), "inverse_gain_floor"),
    (lambda m, h: m.update(task="super_resolution", scale_factors_xyz=[2, 2, 4]), "task 'kernel' and no generator"),
    (lambda m, h: m.update(model_type="wavelet"), "model_type must be one of"),
    (lambda m, h: m["filter"].update(bins=7), "must be F64 of shape \\[7\\]"),
])
def test_bad_filter_files_are_refused_with_the_file_named(phantom_filter, tmp_path, change, message):
    _, model_path = phantom_filter
    bad = _rewrite_metadata(model_path, tmp_path / "bad.safetensors", change)
    with pytest.raises(ModelFileError, match=message) as error:
        load_model(bad)
    assert "bad.safetensors" in str(error.value)


def test_metal_above_the_ct_scale_stays_out_of_the_fitted_filter(phantom_filter, tmp_path):
    """Like the generators: a 32000 HU block is filtered as if it were 3071 HU, so its ringing
    stays a 3071 HU block's, and it keeps its own values."""
    from RevGANCore.volume_io import read_volume

    folder, model_path = phantom_filter
    model = load_model(model_path)
    sharp = read_volume(folder / "data" / "case002" / "sharp.nii.gz")
    block = (slice(4, 6), slice(22, 25), slice(22, 25))
    results = {}
    for hu in (3071.0, 32000.0):
        array = sharp.array.copy()
        array[block] = hu
        results[hu] = translate(model, sharp.with_array(array), "forward").array
    outside = np.ones(sharp.shape, bool)
    outside[block] = False
    np.testing.assert_array_equal(results[32000.0][outside], results[3071.0][outside])
    assert (results[32000.0][block] == 32000.0).all()
