"""Patch datasets and manifests (RevGANCore.data, RevGANCore.manifest)."""

import json
import shutil

import numpy as np
import pytest
import torch

from RevGANCore.data import (PairedPatchDataset, UnpairedPatchDataset, batch_positions, conv3d_fast_path,
                             datasets_from_folders, datasets_from_manifest, load_manifest)
from RevGANCore.errors import ConfigError
from RevGANCore.phantom_dataset import PhantomRecipe, write_phantom_dataset
from RevGANCore.volume import Volume, hu_to_unit, resample_to_grid
from RevGANCore.volume_io import read_volume, write_volume

PATCH = (8, 16, 16)


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("phantoms")
    write_phantom_dataset(folder, cases=3, seed=1, recipe=PhantomRecipe(shape=(16, 48, 48), spacing=(1.2, 1.2, 2.0)))
    return folder


def test_paired_super_resolution_patches(dataset_dir):
    sets = datasets_from_manifest(dataset_dir / "manifest.json", task="super_resolution", patch_size=PATCH,
                                  samples_per_epoch=12, flip_axes=())
    assert set(sets) == {"train"}
    dataset = sets["train"]
    assert len(dataset) == 12
    item = dataset[0]
    for key in ("source", "target"):
        assert item[key].shape == (1, *PATCH) and item[key].dtype == torch.float32
        assert item[key].min() >= -1.0 and item[key].max() <= 1.0
    assert item["source_case"] == item["target_case"]
    # The source is the LR volume B-spline resampled onto the HR grid: same region.
    case = dataset.case_ids[item["source_case"]]
    manifest = load_manifest(dataset_dir)
    hr = read_volume(manifest.case(case).files["hr"])
    lr_on_hr = resample_to_grid(read_volume(manifest.case(case).files["lr"]), hr)
    unit_hr, unit_lr = hu_to_unit(hr.array), hu_to_unit(lr_on_hr.array)
    matches = [(z, y, x) for z in range(hr.shape[0] - PATCH[0] + 1) for y in range(hr.shape[1] - PATCH[1] + 1)
               for x in range(hr.shape[2] - PATCH[2] + 1)
               if np.array_equal(unit_hr[z:z + 8, y:y + 16, x:x + 16], item["target"][0].numpy())]
    assert len(matches) == 1
    z, y, x = matches[0]
    assert tuple(item["target_start"].tolist()) == (z, y, x) == tuple(item["source_start"].tolist())
    np.testing.assert_allclose(item["source"][0].numpy(), unit_lr[z:z + 8, y:y + 16, x:x + 16], atol=1e-6)


def test_patches_are_a_pure_function_of_seed_epoch_and_index(dataset_dir):
    make = lambda seed: datasets_from_manifest(dataset_dir, task="kernel", patch_size=PATCH,  # noqa: E731
                                               samples_per_epoch=8, seed=seed)["train"]
    first, again, other = make(0), make(0), make(1)
    for index in (0, 5, 7):
        assert torch.equal(first[index]["source"], again[index]["source"])
        assert torch.equal(first[index]["target"], again[index]["target"])
    assert not all(torch.equal(first[i]["target"], other[i]["target"]) for i in range(8))
    before = first[3]["target"].clone()
    first.set_epoch(1)
    assert not torch.equal(first[3]["target"], before)
    first.set_epoch(0)
    assert torch.equal(first[3]["target"], before)
    with pytest.raises(IndexError):
        first[8]


def test_training_shards_are_disjoint_and_make_up_the_single_process_batch():
    """What training's ranks draw (batch_positions): over several epochs' worth of steps, 2 ranks
    of 3 patches take disjoint patches that together are one process's 6-patch batch, in order."""
    per_epoch, size = 10, 3
    for step in range(7):
        shards = [batch_positions(step, size, rank, 2, per_epoch) for rank in (0, 1)]
        assert not set(shards[0]) & set(shards[1])
        assert shards[0] + shards[1] == batch_positions(step, 2 * size, 0, 1, per_epoch)
    seen = [position for step in range(10) for position in batch_positions(step, 2, 0, 1, per_epoch)]
    assert seen == [(epoch, index) for epoch in (0, 1) for index in range(per_epoch)]  # each patch once per epoch


def test_most_patches_lie_in_the_body():
    """A body (40 HU) holding a lung (-850 HU) in a wide field of air: patch centres fall
    inside the body (lung included) far more often than its share of the volume."""
    z, y, x = np.meshgrid(np.arange(24), np.arange(64), np.arange(64), indexing="ij")
    inside_body = ((y - 40) / 14.0) ** 2 + ((x - 40) / 16.0) ** 2 < 1
    inside_lung = ((y - 40) / 8.0) ** 2 + ((x - 40) / 9.0) ** 2 < 1
    hu = np.where(inside_lung, -850.0, np.where(inside_body, 40.0, -1000.0)).astype(np.float32)
    volume = Volume(hu, (1.0, 1.0, 1.0))

    def centre_share(fraction):
        dataset = PairedPatchDataset([volume], [volume], patch_size=PATCH, samples_per_epoch=200,
                                     foreground_fraction=fraction)
        centres = [tuple(int(s) + p // 2 for s, p in zip(dataset[i]["target_start"], PATCH))
                   for i in range(len(dataset))]
        return np.mean([inside_body[centre] for centre in centres])

    assert inside_body.mean() < 0.25
    biased = centre_share(0.9)
    assert biased >= 0.85
    assert centre_share(0.0) < 0.5


def test_flips_are_shared_by_paired_patches(dataset_dir):
    plain = datasets_from_manifest(dataset_dir, task="kernel", patch_size=PATCH, samples_per_epoch=16,
                                   flip_axes=())["train"]
    flipped = datasets_from_manifest(dataset_dir, task="kernel", patch_size=PATCH, samples_per_epoch=16,
                                     flip_axes=(2,))["train"]
    seen_flip = False
    for i in range(16):
        a, b = plain[i], flipped[i]
        if torch.equal(a["target"], b["target"]):
            assert torch.equal(a["source"], b["source"])
        else:
            assert torch.equal(a["target"].flip(-1), b["target"]) and torch.equal(a["source"].flip(-1), b["source"])
            seen_flip = True
    assert seen_flip


def test_unpaired_patches_come_from_different_cases(dataset_dir):
    dataset = datasets_from_manifest(dataset_dir, task="super_resolution", paired=False, patch_size=PATCH,
                                     samples_per_epoch=20)["train"]
    assert isinstance(dataset, UnpairedPatchDataset)
    items = [dataset[i] for i in range(20)]
    assert all(item["source_case"] != item["target_case"] for item in items)
    # LR sources are brought to the HR voxel size before cropping.
    assert all(item["source"].shape == (1, *PATCH) for item in items)
    assert dataset._loader.cache[("source", items[0]["source_case"])].unit.shape == (16, 48, 48)


def test_validation_split_by_case(dataset_dir):
    sets = datasets_from_manifest(dataset_dir, task="kernel", validation_fraction=0.34, patch_size=PATCH,
                                  samples_per_epoch=4)
    train, validation = sets["train"], sets["validation"]
    assert len(validation.case_ids) == 1 and len(train.case_ids) == 2
    assert not set(validation.case_ids) & set(train.case_ids)
    only = datasets_from_manifest(dataset_dir, task="kernel", case_ids=["case002"], patch_size=PATCH)["train"]
    assert only.case_ids == ["case002"]
    with pytest.raises(ConfigError, match="at least 2 cases"):
        datasets_from_manifest(dataset_dir, task="kernel", case_ids=["case002"], validation_fraction=0.5)


def test_volumes_smaller_than_the_patch_are_padded_with_air(dataset_dir):
    hr = read_volume(load_manifest(dataset_dir).cases[0].files["hr"])
    dataset = PairedPatchDataset([hr], [hr], patch_size=(20, 16, 16), samples_per_epoch=2, flip_axes=())
    patch = dataset[0]["target"]
    assert patch.shape == (1, 20, 16, 16)
    np.testing.assert_allclose(patch[0, 16:].numpy(), hu_to_unit(-1024.0), atol=1e-6)


def test_a_patch_larger_than_every_volume_is_refused(dataset_dir):
    """Low-resolution sources count on the grid they are cropped on (after resampling), read
    from the file headers; a patch that fits no volume of a side is refused by name."""
    unpaired = datasets_from_manifest(dataset_dir, task="super_resolution", paired=False, patch_size=PATCH)["train"]
    shapes = unpaired.grid_shapes()
    assert shapes["source"] == shapes["target"] == [(16, 48, 48)] * 3
    fitting = datasets_from_manifest(dataset_dir, task="super_resolution", paired=False,
                                     patch_size=(16, 48, 48))["train"]
    fitting.check_patch_fits()
    too_deep = datasets_from_manifest(dataset_dir, task="kernel", patch_size=(18, 16, 16))["train"]
    with pytest.raises(ConfigError, match=r"data.patch_size \(18, 16, 16\) .* larger than every target volume "
                                          r"\(3 volumes, at most \(16, 48, 48\)"):
        too_deep.check_patch_fits("data.patch_size")


def test_manifest_errors_name_the_problem(dataset_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(dataset_dir, copy)
    (copy / "case001" / "lr.nii.gz").unlink()
    (copy / "case002" / "sharp.nii.gz").unlink()
    with pytest.raises(ConfigError, match=r"2 volume file\(s\) listed but missing: .*case001/lr.nii.gz.*"
                                          r"case002/sharp.nii.gz"):
        load_manifest(copy / "manifest.json")
    with pytest.raises(ConfigError, match="no such manifest"):
        load_manifest(tmp_path / "nothing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="bad.json: not a readable JSON manifest"):
        load_manifest(tmp_path / "bad.json")
    raw = json.loads((dataset_dir / "manifest.json").read_text())
    raw["format_version"] = 99
    (tmp_path / "future.json").write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match="unsupported format_version 99"):
        load_manifest(tmp_path / "future.json")
    raw["format_version"] = 1
    raw["tasks"]["broken"] = {"source": "lr", "target": "nowhere"}
    (tmp_path / "task.json").write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match="task 'broken'"):
        load_manifest(tmp_path / "task.json")
    with pytest.raises(ConfigError, match="no task 'denoise'"):
        datasets_from_manifest(dataset_dir, task="denoise")


def test_datasets_from_folders(dataset_dir, tmp_path):
    manifest = load_manifest(dataset_dir)
    sharp_dir, smooth_dir = tmp_path / "sharp", tmp_path / "smooth"
    for case in manifest.cases:
        write_volume(read_volume(case.files["sharp"]), sharp_dir / f"{case.id}.nrrd")
        write_volume(read_volume(case.files["smooth"]), smooth_dir / f"{case.id}.nii.gz")
    paired = datasets_from_folders(sharp_dir, smooth_dir, paired=True, patch_size=PATCH, samples_per_epoch=3)
    assert isinstance(paired, PairedPatchDataset) and paired.case_ids == ["case000", "case001", "case002"]
    assert paired[0]["source"].shape == (1, *PATCH)
    unpaired = datasets_from_folders(sharp_dir, smooth_dir, patch_size=PATCH, samples_per_epoch=3)
    assert isinstance(unpaired, UnpairedPatchDataset)
    (smooth_dir / "case001.nii.gz").rename(smooth_dir / "other.nii.gz")
    with pytest.raises(ConfigError, match="without a partner.*case001.nrrd"):
        datasets_from_folders(sharp_dir, smooth_dir, paired=True)
    with pytest.raises(ConfigError, match="holds no volume files"):
        datasets_from_folders(tmp_path, smooth_dir)


def test_bad_patch_options(dataset_dir):
    for options in ({"patch_size": (8, 16)}, {"samples_per_epoch": 0}, {"foreground_fraction": 1.5},
                    {"flip_axes": (3,)}):
        with pytest.raises(ConfigError):
            datasets_from_manifest(dataset_dir, task="kernel", **options)


def test_fast_conv_rule():
    assert conv3d_fast_path(1, 16, 32, 64)      # 32768 > 20480
    assert not conv3d_fast_path(1, 8, 48, 48)   # 18432: the slow path
    assert conv3d_fast_path(2, 8, 48, 48)
