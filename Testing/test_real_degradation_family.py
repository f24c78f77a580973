"""Other in-plane degradations (box binning, a FWHM scale) and the random family that
real-scan training pairs draw from per patch (RevGANCore.real_degradation.InPlaneFamily,
``data.real.degradations`` / ``data.real.fwhm_range``)."""

from __future__ import annotations

import numpy as np
import pytest

from RevGANCore.config import load_config
from RevGANCore.errors import ConfigError
from RevGANCore.modelfile import load_model
from RevGANCore.real_degradation import InPlaneFamily, degrade_in_plane
from RevGANCore.real_pairs import RealScanPairs, real_pair_target
from RevGANCore.training import Trainer
from RevGANCore.training_data import ensure_training_manifest, load_training_data
from RevGANCore.volume import Volume, hu_to_unit, low_resolution_grid
from RevGANCore.volume_io import write_volume
from training_helpers import tiny_settings, write_config, write_tiny_phantoms

FACTORS_ZYX = (4, 2, 2)


def _scan(shape=(6, 32, 32), seed=0) -> Volume:
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape, dtype=np.float32)
    body = (y - shape[1] / 2) ** 2 + (x - shape[2] / 2) ** 2 < (0.42 * shape[1]) ** 2
    hu = np.where(body, 40.0 + 300.0 * np.sin(x / 1.7) * np.cos(y / 2.3), -1000.0).astype(np.float32)
    hu += rng.normal(0.0, 8.0, shape).astype(np.float32)
    hu[:, :2, :2] = -3024.0  # padding outside a reconstruction circle
    return Volume(hu, spacing=(0.6, 0.6, 5.0), origin=(-10.0, 20.0, -50.0), source="scan")


def _high_frequency_energy(array: np.ndarray) -> float:
    return float(np.abs(np.diff(array, axis=2)).mean() + np.abs(np.diff(array, axis=1)).mean())


def test_box_binning_is_the_mean_of_each_block_on_the_same_coarse_grid_with_padding_as_air():
    scan = _scan()
    box = degrade_in_plane(scan, (2, 2), "box")
    gaussian = degrade_in_plane(scan, (2, 2))
    assert box.grid.same_as(gaussian.grid) and box.grid.same_as(low_resolution_grid(scan, (2, 2, 1)))
    clean = np.where(scan.array <= -1500, -1000.0, scan.array)
    expected = clean.reshape(6, 16, 2, 16, 2).mean(axis=(2, 4))
    assert np.allclose(box.array, expected, atol=1e-3)
    assert box.array.min() > -1100.0  # the -3024 padding never reaches the average
    # binning keeps more fine detail than the benchmark's Gaussian (FWHM = new pixel)
    assert _high_frequency_energy(box.array) > 1.05 * _high_frequency_energy(gaussian.array)


def test_the_gaussian_fwhm_scale_sets_the_blur_and_scale_one_is_the_default():
    scan = _scan()
    default = degrade_in_plane(scan, (2, 2))
    assert np.array_equal(degrade_in_plane(scan, (2, 2), "gaussian", 1.0).array, default.array)
    energies = [_high_frequency_energy(degrade_in_plane(scan, (2, 2), "gaussian", s).array) for s in (0.5, 1.0, 1.5)]
    assert energies[0] > energies[1] > energies[2]
    with pytest.raises(ConfigError, match="one of"):
        degrade_in_plane(scan, (2, 2), "sinc")
    with pytest.raises(ConfigError, match="FWHM scale"):
        degrade_in_plane(scan, (2, 2), "gaussian", 0.0)


def test_a_family_draws_every_kind_with_weights_that_sum_to_one_reproducibly():
    family = InPlaneFamily(("gaussian", "box", "mixture"), (0.5, 1.5))
    members = family.members()
    assert members[-1] == ("box", 1.0) and [m[1] for m in members[:-1]] == pytest.approx(np.linspace(0.5, 1.5, 9))
    draws = [family.draw(np.random.default_rng([3, i])) for i in range(300)]
    assert draws == [family.draw(np.random.default_rng([3, i])) for i in range(300)]
    box = len(members) - 1
    kinds = set()
    for draw in draws:
        assert sum(w for _, w in draw) == pytest.approx(1.0) and all(w >= 0 for _, w in draw)
        uses_box = any(m == box for m, _ in draw)
        uses_gaussian = any(m != box for m, _ in draw)
        kinds.add((uses_box, uses_gaussian))
        # a Gaussian between two levels blends only those neighbours
        levels = sorted(m for m, _ in draw if m != box)
        assert not levels or levels[-1] - levels[0] <= 1
    assert kinds == {(True, False), (False, True), (True, True)}
    assert InPlaneFamily().members() == [("gaussian", 1.0)]
    assert InPlaneFamily().draw(np.random.default_rng(0)) == [(0, 1.0)]


@pytest.mark.parametrize("settings, message", [
    ('degradations = ["gaussian", "sinc"]', "unknown 'sinc'"),
    ("degradations = []", "is empty"),
    ('degradations = ["box", "box"]', "lists a kind twice"),
    ("fwhm_range = [1.5, 0.5]", "low <= high"),
    ("fwhm_range = [0.0, 1.0]", "data.real.fwhm_range"),
])
def test_bad_degradation_settings_are_one_clear_configuration_error(tmp_path, settings, message):
    path = tmp_path / "run.toml"
    path.write_text(f"""output_dir = "{tmp_path / 'run'}"
[data]
manifest = "{tmp_path / 'manifest.json'}"
task = "super_resolution"
[data.real]
scans = ["lung1"]
{settings}
[objective]
lambda_slab = 10.0
""")
    with pytest.raises(ConfigError, match=message):
        load_config(str(path))


def test_real_pairs_draw_a_degradation_per_patch_at_the_positions_of_a_fixed_degradation():
    scan = _scan(shape=(8, 32, 32))
    options = dict(patch_size=(8, 16, 16), region="train", val_slices=0, seed=11, clip_to_window=False,
                   samples_per_epoch=40, flip_axes=())
    family = InPlaneFamily(("gaussian", "box", "mixture"), (0.5, 1.5))
    fixed = RealScanPairs([scan], FACTORS_ZYX, **options)
    drawn = RealScanPairs([scan], FACTORS_ZYX, family=family, **options)
    target = real_pair_target(scan, FACTORS_ZYX[1:])
    members = [hu_to_unit(v.array, clip=False) for v in family.degrade(target, (2, 2))]
    differing = 0
    for index in range(40):
        a, b = fixed[index], drawn[index]
        assert np.array_equal(a["target"].numpy(), b["target"].numpy())  # positions unchanged
        assert np.array_equal(a["source_start"].numpy(), b["source_start"].numpy())
        assert np.array_equal(b["source"].numpy(), drawn[index]["source"].numpy())  # seeded
        # the input is the drawn blend of the family's degraded scans, cut at the same place
        draw = family.draw(np.random.default_rng([11, 0, index, 4099]))
        z, y, x = (int(s) for s in b["source_start"])
        blend = sum(w * members[m][z:z + 2, y:y + 8, x:x + 8] for m, w in draw)
        assert np.allclose(b["source"].numpy()[0], blend, atol=1e-5)
        differing += not np.allclose(a["source"].numpy(), b["source"].numpy(), atol=1e-4)
    assert differing > 30  # most patches get another degradation than the benchmark's Gaussian


def test_a_flipped_real_pair_gets_the_same_flips_on_its_drawn_input():
    """Binning commutes with flips of whole blocks, so an input drawn as binning must be the
    block mean of its target, flipped or not; the Gaussian draws are not."""
    scan = _scan(shape=(8, 32, 32), seed=2)
    pairs = RealScanPairs([scan], FACTORS_ZYX, patch_size=(8, 16, 16), region="train", val_slices=0, seed=5,
                          clip_to_window=False, samples_per_epoch=60, family=InPlaneFamily(("gaussian", "box")))
    unflipped_target = hu_to_unit(real_pair_target(scan, (2, 2)).array, clip=False)
    binned = flipped_binned = 0
    for index in range(60):
        item = pairs[index]
        target = item["target"].numpy()[0]
        if not np.allclose(item["source"].numpy()[0], target.reshape(2, 8, 2, 8, 2).mean(axis=(2, 4)), atol=1e-5):
            continue
        binned += 1
        z, y, x = (int(s) for s in item["target_start"])
        flipped_binned += not np.array_equal(target, unflipped_target[z:z + 2, y:y + 16, x:x + 16])
    assert 15 < binned < 45  # about half the draws are binning
    assert flipped_binned > 10  # and most of those were flipped, input and target alike


def test_the_configured_family_reaches_the_training_pairs_and_the_model_file(tmp_path):
    manifest = write_tiny_phantoms(tmp_path / "phantoms")
    scan = write_volume(_scan(shape=(12, 32, 32)), tmp_path / "thick.nrrd")
    settings = tiny_settings(manifest, tmp_path / "run", data__task="super_resolution", data__patch_size=[16, 16, 16],
                             data__real={"scans": [str(scan)], "val_slices": 4, "degradations": ["box"]},
                             objective__lambda_slab=100.0, logging__preview_every=0)
    config = load_config(str(write_config(tmp_path / "c.json", settings)))
    data = load_training_data(config, ensure_training_manifest(config, log=lambda _: None))
    assert data.real_set.family == InPlaneFamily(("box",))
    sources, targets = data.real_batch(0, 0, 1)
    for source, target in zip(sources.numpy()[:, 0], targets.numpy()[:, 0]):  # binned: block means
        assert np.allclose(source, target.reshape(4, 8, 2, 8, 2).mean(axis=(2, 4)), atol=1e-5)
    Trainer(config).fit()
    trained = load_model(tmp_path / "run" / "best.safetensors").metadata.training["config"]["data"]["real"]
    assert trained["degradations"] == ["box"] and trained["fwhm_range"] == [1.0, 1.0]
