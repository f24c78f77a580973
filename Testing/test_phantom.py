"""The chest phantom (RevGANCore.phantom) and `revgan phantom`."""

import json

import numpy as np
import pytest

from RevGANCore.cli import main
from RevGANCore.errors import ConfigError
from RevGANCore.manifest import load_manifest
from RevGANCore.phantom import TISSUE_LABELS, generate_chest_phantom
from RevGANCore.phantom_dataset import PhantomRecipe, make_phantom_case, case_seeds
from RevGANCore.volume import super_resolution_grid
from RevGANCore.volume_io import read_volume

SMALL = (32, 96, 96)
SPACING = (1.0, 1.0, 1.5)


@pytest.fixture(scope="module")
def phantom():
    return generate_chest_phantom(SMALL, SPACING, seed=5, with_labels=True)


def test_same_seed_same_voxels_other_seed_other_anatomy(phantom):
    volume, labels = phantom
    again, labels_again = generate_chest_phantom(SMALL, SPACING, seed=5, with_labels=True)
    assert np.array_equal(volume.array, again.array) and np.array_equal(labels.array, labels_again.array)
    other, other_labels = generate_chest_phantom(SMALL, SPACING, seed=6, with_labels=True)
    assert not np.array_equal(volume.array, other.array)
    # The anatomy itself moves, not just the texture: the tissue maps differ.
    changed = np.mean(labels.array != other_labels.array)
    assert changed > 0.02


def test_geometry(phantom):
    volume, labels = phantom
    assert volume.shape == SMALL and volume.array.dtype == np.float32
    assert volume.spacing == SPACING
    assert volume.direction == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    centre = volume.index_to_physical_matrix() @ np.append((np.array(volume.size_xyz) - 1) / 2, 1.0)
    np.testing.assert_allclose(centre[:3], 0.0, atol=1e-9)
    assert labels.same_geometry(volume) and labels.array.dtype == np.uint8


def test_tissues_at_plausible_hounsfield_units(phantom):
    volume, labels = phantom
    hu, label = volume.array, labels.array
    medians = {name: float(np.median(hu[label == value])) for name, value in TISSUE_LABELS.items()
               if np.any(label == value)}
    assert set(medians) == set(TISSUE_LABELS), f"missing tissues: {set(TISSUE_LABELS) - set(medians)}"
    assert medians["background"] == pytest.approx(-1000, abs=5)
    assert medians["airway"] < -900  # small airways are partial-volume averaged with their walls
    assert medians["lung"] == pytest.approx(-850, abs=30)
    assert medians["fat"] == pytest.approx(-100, abs=20)
    assert medians["soft_tissue"] == pytest.approx(40, abs=25)
    assert medians["vessel"] == pytest.approx(40, abs=25)
    assert medians["bone"] > 300
    assert hu.max() >= 700 and hu.max() <= 1200
    # Lungs are textured, not flat, and take a sizeable part of the chest.
    lung = hu[label == TISSUE_LABELS["lung"]]
    q25, q75 = np.percentile(lung, [25, 75])
    assert 10 < (q75 - q25) / 1.349 < 60  # robust spread: rims of vessels excluded
    body = label != TISSUE_LABELS["background"]
    assert 0.1 < np.mean(label[body] == TISSUE_LABELS["lung"]) < 0.5
    # The outer slab of the field of view is air (the body fits inside it).
    assert np.all(label[:, :, :2] == TISSUE_LABELS["background"])


def test_left_and_right_lungs_and_a_spine(phantom):
    volume, labels = phantom
    lung = labels.array == TISSUE_LABELS["lung"]
    x_half = lung.shape[2] // 2
    right, left = lung[:, :, :x_half].sum(), lung[:, :, x_half:].sum()
    assert right > 0 and left > 0 and 0.5 < right / left < 2.0
    bone = labels.array == TISSUE_LABELS["bone"]
    assert bone[:, :, x_half - 2:x_half + 2].any(axis=(1, 2)).all()  # a vertebra in every slice


def test_bad_arguments():
    with pytest.raises(ConfigError):
        generate_chest_phantom((4, 64, 64))
    with pytest.raises(ConfigError):
        generate_chest_phantom((16, 64, 64), spacing=(1.0, 0.0, 1.0))
    with pytest.raises(ConfigError, match="divisible"):
        make_phantom_case(case_seeds(0, 0), PhantomRecipe(shape=(30, 64, 64)))


# ------------------------------------------------------------------- revgan phantom


def test_revgan_phantom_writes_four_domains_per_case_deterministically(tmp_path, capsys):
    shape = ["16", "48", "48"]
    assert main(["phantom", str(tmp_path / "a"), "--cases", "2", "--seed", "3", "--shape", *shape]) == 0
    assert "wrote 2 phantom case(s)" in capsys.readouterr().out
    assert main(["phantom", str(tmp_path / "b"), "--cases", "2", "--seed", "3", "--shape", *shape, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["cases"] == 2
    manifest = load_manifest(tmp_path / "a" / "manifest.json")
    assert manifest.case_ids == ["case000", "case001"]
    assert set(manifest.domains) == {"hr", "lr", "sharp", "smooth"}
    assert manifest.task("super_resolution") == {"source": "lr", "target": "hr", "factors_xyz": [2, 2, 4]}
    assert manifest.task("kernel") == {"source": "sharp", "target": "smooth"}
    assert manifest.raw["generator"]["seed"] == 3
    for case in manifest.cases:
        assert set(case.files) == {"hr", "lr", "sharp", "smooth"}
        assert set(case.extra["seeds"]) == {"anatomy", "hr_noise", "kernel_noise"}
        for domain, path in case.files.items():
            twin = tmp_path / "b" / path.relative_to(tmp_path / "a")
            assert path.read_bytes() == twin.read_bytes(), f"{domain} of {case.id} differs between runs"
        hr, lr = read_volume(case.files["hr"]), read_volume(case.files["lr"])
        assert hr.shape == (16, 48, 48) and lr.shape == (4, 24, 24)
        assert super_resolution_grid(lr, (2, 2, 4)).same_as(hr.grid, tolerance=1e-6)
        assert read_volume(case.files["sharp"]).same_geometry(hr)
    assert (tmp_path / "a" / "manifest.json").read_bytes() == (tmp_path / "b" / "manifest.json").read_bytes()
    # Different cases are different patients.
    first, second = (read_volume(c.files["hr"]).array for c in manifest.cases)
    assert not np.array_equal(first, second)


def test_revgan_phantom_refuses_bad_requests(tmp_path, capsys):
    assert main(["phantom", str(tmp_path / "x"), "--cases", "1", "--shape", "18", "48", "48"]) == 1
    assert "divisible" in capsys.readouterr().err
    used = tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("mine")
    assert main(["phantom", str(used), "--cases", "1", "--shape", "16", "48", "48"]) == 1
    assert "not empty" in capsys.readouterr().err
    assert (used / "keep.txt").read_text() == "mine"
    assert main(["phantom", str(tmp_path / "y"), "--cases", "0"]) == 1


def test_revgan_phantom_output_it_cannot_create_is_one_line_before_any_work(tmp_path, capsys):
    """A path below a file and an existing file (a read-only mount behaves alike, but does not
    stop root): once a NotADirectoryError / FileExistsError traceback."""
    scan = tmp_path / "small.nrrd"
    scan.write_bytes(b"a scan")
    for target, reason in ((scan / "p", f"cannot write there ({scan} is not a folder)"),
                           (scan, "cannot write there (it is a file, not a folder)")):
        assert main(["phantom", str(target), "--cases", "1", "--shape", "16", "48", "48"]) == 1
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"revgan: error: {target}: {reason}"), captured.err
        assert "phantom: case" not in captured.err  # refused before the first case
    assert scan.read_bytes() == b"a scan" and list(tmp_path.iterdir()) == [scan]


def test_revgan_phantom_names_the_option_that_writes_into_a_used_folder(tmp_path, capsys):
    used = tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("mine")
    assert main(["phantom", str(used), "--cases", "1", "--shape", "16", "48", "48"]) == 1
    line = capsys.readouterr().err.strip()
    assert "the folder is not empty" in line and "--overwrite" in line and "overwrite=True" in line
    assert main(["phantom", str(used), "--cases", "1", "--shape", "16", "48", "48", "--overwrite"]) == 0
    assert (used / "keep.txt").read_text() == "mine" and (used / "manifest.json").is_file()


def test_revgan_phantom_that_fails_half_way_leaves_nothing_behind(tmp_path):
    """ulimit -f stands in for a full disk: the message says nothing was written, and no
    folder the command created (nor anything it added to an existing one) stays."""
    from hostile_helpers import assert_refused, run_revgan

    created = tmp_path / "new" / "p"
    run = run_revgan(["phantom", created, "--cases", "1", "--shape", "16", "48", "48"], file_size_bytes=4096)
    assert_refused(run, "ulimit -f", "nothing was written")
    assert list(tmp_path.iterdir()) == []
    empty = tmp_path / "empty"
    empty.mkdir()
    run = run_revgan(["phantom", empty, "--cases", "1", "--shape", "16", "48", "48"], file_size_bytes=4096)
    assert_refused(run, "ulimit -f", "nothing was written")
    assert list(empty.iterdir()) == []


def test_a_phantom_dataset_stopped_after_its_first_case_is_removed(tmp_path):
    """Ctrl-C during the second case: the first case's files go too (no dataset without a manifest)."""
    from RevGANCore.phantom_dataset import write_phantom_dataset

    def progress(index: int, total: int, case_id: str) -> None:
        if index == 1:
            assert (tmp_path / "p" / "case000" / "hr.nii.gz").is_file()
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_phantom_dataset(tmp_path / "p", cases=2, recipe=PhantomRecipe(shape=(16, 48, 48)), progress=progress)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_fill_of_an_existing_folder_removes_only_what_the_command_writes(tmp_path):
    from RevGANCore.output_folder import FolderToFill

    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(KeyboardInterrupt):
        with FolderToFill(tmp_path, ("manifest.json", "case[0-9][0-9][0-9]*"), may_hold_files=True) as folder:
            (folder / "case000").mkdir()
            (folder / "case000" / "hr.nii.gz").write_bytes(b"half")
            (folder / "other.txt").write_text("another program's, written meanwhile")
            raise KeyboardInterrupt
    assert sorted(path.name for path in tmp_path.iterdir()) == ["notes.txt", "other.txt"]
