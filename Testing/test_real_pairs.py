"""Super-resolution pairs from real thick-slice scans (RevGANCore.real_pairs), their slab term
(Objective.slab_terms) and a training run that uses them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from RevGANCore.config import ObjectiveConfig, load_config
from RevGANCore.errors import ConfigError
from RevGANCore.objectives import Objective
from RevGANCore.real_degradation import degrade_in_plane
from RevGANCore.real_pairs import RealScanPairs, real_pair_volumes, resolve_training_scan, slab_patch_size
from RevGANCore.training import Trainer
from RevGANCore.volume import Volume, hu_to_unit, super_resolution_grid
from RevGANCore.volume_io import read_volume, write_volume
from training_helpers import tiny_settings, write_config, write_tiny_phantoms

FACTORS_ZYX = (4, 2, 2)
OBLIQUE = (0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)  # x and y swapped: positions must follow it


def _thick_scan(shape=(12, 40, 36), seed=0) -> Volume:
    """A thick-slice 'scan': a body of soft tissue with bright blobs, air around, -2000 HU
    padding in one corner (outside a reconstruction circle), 5 mm slices."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape, dtype=np.float32)
    body = ((y - shape[1] / 2) / (0.4 * shape[1])) ** 2 + ((x - shape[2] / 2) / (0.4 * shape[2])) ** 2 < 1
    hu = np.where(body, 40.0, -1000.0).astype(np.float32)
    hu += body * (400.0 * np.sin(x / 3.0) * np.cos(y / 4.0 + z / 2.0))
    hu += body * rng.normal(0, 10, shape).astype(np.float32)
    hu[:, :3, :3] = -2000.0
    return Volume(hu, spacing=(0.7, 0.6, 5.0), origin=(-12.0, 30.0, -100.0), direction=OBLIQUE, source="thick")


def _physical(grid, start_zyx, offset_zyx=(0.0, 0.0, 0.0)) -> np.ndarray:
    """LPS position of voxel ``start + offset`` (z, y, x; offsets may be fractional)."""
    index = [float(s) + float(o) for s, o in zip(start_zyx, offset_zyx)][::-1]
    return (grid.index_to_physical_matrix() @ np.array(index + [1.0]))[:3]


# ------------------------------------------------------------------ the slab term


def test_slab_term_is_zero_when_the_slab_averages_equal_the_target_and_positive_otherwise():
    objective = Objective(ObjectiveConfig(lambda_slab=1.0), "super_resolution", FACTORS_ZYX)
    torch.manual_seed(0)
    real = torch.randn(2, 1, 4, 16, 16)
    # 4 different sub-slices per slab whose mean is the real slice: detail inside a slab is free
    inside = torch.randn(2, 1, 4, 4, 16, 16)
    inside = inside - inside.mean(dim=3, keepdim=True)
    fake = (real.unsqueeze(3) + inside).reshape(2, 1, 16, 16, 16)
    terms = objective.slab_terms(fake, real)
    assert float(terms["l1"]) < 1e-6 and float(terms["mse"]) < 1e-12
    shifted = fake.clone()
    shifted[:, :, 4:8, 6:10, 6:10] += 0.1  # one slab's interior is brighter on average
    assert float(objective.slab_terms(shifted, real)["l1"]) > 1e-4
    # the plain (unaveraged) comparison of sub-slices would not be zero: the term averages
    assert float((fake[:, :, ::4] - real).abs().mean()) > 0.1


def test_slab_term_counts_in_the_generator_loss_with_its_weight():
    torch.manual_seed(1)
    x, y = torch.randn(1, 1, 4, 8, 8), torch.randn(1, 1, 16, 16, 16)
    real_y = torch.randn(1, 1, 4, 16, 16)
    out = {"fake_y": y.clone(), "fake_x": x.clone(), "fake_real": torch.zeros(1, 1, 16, 16, 16)}
    discriminator = torch.nn.Conv3d(2, 1, 1)
    totals = {}
    for weight in (0.0, 10.0):
        objective = Objective(ObjectiveConfig(lambda_slab=weight), "super_resolution", FACTORS_ZYX)
        totals[weight], terms = objective.generator_loss(x, y, out, discriminator, discriminator, real_y=real_y)
    expected = float(real_y[:, :, 1:3, 4:12, 4:12].abs().mean())  # interior only (SLAB_MARGIN_ZYX)
    assert float(terms["g_slab"]) == pytest.approx(expected, rel=1e-6)
    assert float((totals[10.0] - totals[0.0]).detach()) == pytest.approx(10.0 * expected, rel=1e-5)


def test_slab_term_refuses_outputs_that_are_not_whole_slabs():
    objective = Objective(ObjectiveConfig(lambda_slab=1.0), "super_resolution", FACTORS_ZYX)
    with pytest.raises(ConfigError, match="4 slices per real slice"):
        objective.slab_terms(torch.zeros(1, 1, 12, 16, 16), torch.zeros(1, 1, 4, 16, 16))


# ------------------------------------------------------------------ the pairs


def test_real_pairs_are_the_in_plane_degraded_scan_and_the_scan_without_padding():
    scan = _thick_scan(shape=(12, 41, 36))  # 41 rows: one is cropped for the factor 2
    source, target = real_pair_volumes(scan, FACTORS_ZYX[1:])
    assert target.shape == (12, 40, 36) and source.shape == (12, 20, 18)
    assert target.array.min() >= -1024.0  # the -2000 padding became air
    assert np.allclose(target.array[:, 5:, 5:], scan.array[:, 5:40, 5:])
    expected = degrade_in_plane(target, (2, 2))
    assert source.same_geometry(expected) and np.allclose(source.array, expected.array)
    assert source.spacing[2] == scan.spacing[2]  # the real slices are kept


def test_real_pair_patches_lie_on_their_grids_at_the_same_physical_place(tmp_path):
    path = write_volume(_thick_scan(), tmp_path / "thick.nrrd")
    patch = (16, 16, 16)  # the generator's output patch: 4 real slices, 16 x 16 pixels
    pairs = RealScanPairs([path], FACTORS_ZYX, patch, region="train", val_slices=4, samples_per_epoch=8, seed=2,
                          clip_to_window=False, flip_axes=())
    source_volume, target_volume = real_pair_volumes(read_volume(path), FACTORS_ZYX[1:])
    assert slab_patch_size(patch, FACTORS_ZYX) == (4, 16, 16)
    for index in range(len(pairs)):
        item = pairs[index]
        assert tuple(item["source"].shape) == (1, 4, 8, 8) and tuple(item["target"].shape) == (1, 4, 16, 16)
        start, source_start = item["target_start"].tolist(), item["source_start"].tolist()
        assert start[0] + 4 <= 8  # training patches never reach the 4 validation slices
        # the source patch covers exactly the target patch's box (cell-centred coarse pixels)
        corner = _physical(target_volume.grid, start, (-0.5, -0.5, -0.5))
        assert np.allclose(_physical(source_volume.grid, source_start, (-0.5, -0.5, -0.5)), corner, atol=1e-6)
        far = _physical(target_volume.grid, start, (3.5, 15.5, 15.5))
        assert np.allclose(_physical(source_volume.grid, source_start, (3.5, 7.5, 7.5)), far, atol=1e-6)
        # and the generator's output grid puts 4 slices inside each real slice of the target patch
        fine = super_resolution_grid(source_volume, FACTORS_ZYX[::-1])
        fine_start = [source_start[0] * 4, source_start[1] * 2, source_start[2] * 2]
        assert np.allclose(_physical(fine, fine_start, (-0.5, -0.5, -0.5)), corner, atol=1e-6)
        box = tuple(slice(s, s + n) for s, n in zip(start, (4, 16, 16)))
        assert np.allclose(item["target"][0].numpy(), hu_to_unit(target_volume.array[box], clip=False), atol=1e-6)
        source_box = tuple(slice(s, s + n) for s, n in zip(source_start, (4, 8, 8)))
        assert np.allclose(item["source"][0].numpy(), hu_to_unit(source_volume.array[source_box], clip=False),
                           atol=1e-6)


def test_validation_region_is_the_last_slices():
    pairs = RealScanPairs([_thick_scan()], FACTORS_ZYX, (16, 16, 16), region="validation", val_slices=4,
                          samples_per_epoch=4, flip_axes=())
    target = pairs.case(0)[1]
    assert target.unit.shape == (4, 40, 36)
    scan = _thick_scan()
    assert np.allclose(target.unit[:, 10:30, 10:30], hu_to_unit(scan.array[8:, 10:30, 10:30]), atol=1e-6)


def test_the_held_out_benchmark_scan_is_never_a_training_scan(tmp_path):
    for scan in ("lung2", str(tmp_path / "lung2_image.nrrd")):
        with pytest.raises(ConfigError, match="held-out"):
            resolve_training_scan(scan)


# ------------------------------------------------------------------ configuration and training


def test_the_slab_term_and_real_scans_go_together(tmp_path):
    base = tiny_settings(tmp_path / "m.json", tmp_path / "run", data__task="super_resolution")
    path = write_config(tmp_path / "c.json", base)
    with pytest.raises(ConfigError, match="data.real.scans"):
        load_config(str(path), ["objective.lambda_slab=10"])
    with pytest.raises(ConfigError, match="lambda_slab"):
        load_config(str(path), ['data.real.scans=["lung1"]'])
    with pytest.raises(ConfigError, match="lambda_slab must be"):
        load_config(str(path), ["objective.lambda_slab=-1"])


def test_a_training_run_with_real_scan_pairs_learns_the_slabs(tmp_path):
    manifest = write_tiny_phantoms(tmp_path / "phantoms")
    scan = write_volume(_thick_scan(), tmp_path / "thick.nrrd")
    settings = tiny_settings(manifest, tmp_path / "run", data__task="super_resolution",
                             data__patch_size=[16, 16, 16], data__real={"scans": [str(scan)], "val_slices": 4},
                             objective__lambda_slab=100.0, checkpoint__best_metric="val_real_l1",
                             logging__preview_every=0)
    summary = Trainer(load_config(str(write_config(tmp_path / "c.json", settings)))).fit()
    assert summary["status"] == "finished" and summary["step"] == 4
    first, last = summary["first_validation"], summary["last_validation"]
    assert {"val_real_l1", "val_real_psnr"} <= set(last)
    assert last["val_real_l1"] != first["val_real_l1"]
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert "g_slab" in header and rows[-1].split(",")[header.index("g_slab")] != ""
    metadata = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert metadata["best_metric"] == "val_real_l1" and metadata["best_model"]
