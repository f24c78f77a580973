"""DICOM series reading (RevGANCore.dicom) and `revgan dataset` on a DICOM tree written here."""

import json
import shutil

import numpy as np
import pydicom
import pytest
from dicom_series_writer import write_ct_series, written_point
from pydicom.data import get_testdata_file
from test_volume import oblique_direction

from RevGANCore.cli import main
from RevGANCore.dicom import find_series, kernel_sharpness, normalise_kernel, read_dicom_series
from RevGANCore.dicom_dataset import write_dicom_dataset
from RevGANCore.errors import VolumeError
from RevGANCore.file_labels import safe_file_label, unique_file_labels
from RevGANCore.manifest import load_manifest
from RevGANCore.volume import Volume, resample_to_grid
from RevGANCore.volume_io import read_volume


def integer_ct(shape=(6, 10, 12), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(-1024, 2000, shape).astype(np.float32)


def volume_with(handed=1, shape=(6, 10, 12), seed=0) -> Volume:
    return Volume(integer_ct(shape, seed), (0.7, 0.8, 2.5), (10.5, -20.25, 30.0), oblique_direction(handed))


def test_series_round_trip_oblique(tmp_path):
    volume = volume_with()
    write_ct_series(tmp_path, volume)
    back = read_volume(tmp_path)
    assert back.shape == volume.shape
    np.testing.assert_allclose(back.spacing, volume.spacing, atol=1e-6)
    np.testing.assert_allclose(back.origin, volume.origin, atol=1e-5)
    np.testing.assert_allclose(back.direction, volume.direction, atol=1e-6)
    np.testing.assert_array_equal(back.array, volume.array)  # HU via the -1024 intercept
    assert back.array.dtype == np.float32 and back.source == str(tmp_path)


def test_left_handed_series_comes_back_flipped_but_physically_equal(tmp_path):
    """The SimpleITK trap: slices are sorted along row x column, so k is reversed."""
    volume = volume_with(handed=-1)
    write_ct_series(tmp_path, volume)
    back = read_volume(tmp_path)
    np.testing.assert_allclose(back.direction_matrix[:, :2], volume.direction_matrix[:, :2], atol=1e-6)
    np.testing.assert_allclose(back.direction_matrix[:, 2], -volume.direction_matrix[:, 2], atol=1e-6)
    last = volume.index_to_physical_matrix() @ np.array([0, 0, volume.shape[0] - 1, 1.0])
    np.testing.assert_allclose(back.origin, last[:3], atol=1e-5)
    np.testing.assert_array_equal(back.array, volume.array[::-1])
    # Same physical image: resampled onto the original grid, every voxel matches.
    np.testing.assert_array_equal(resample_to_grid(back, volume, interpolation="nearest").array, volume.array)


def test_rescale_slope_and_signed_pixels(tmp_path):
    volume = volume_with()
    values = np.round(volume.array / 2) * 2  # representable with slope 2
    write_ct_series(tmp_path, volume.with_array(values), intercept=-1000.0, slope=2.0, signed=True)
    np.testing.assert_array_equal(read_volume(tmp_path).array, values)


def test_largest_series_by_default_or_the_named_one(tmp_path):
    big = write_ct_series(tmp_path, volume_with(shape=(6, 10, 12)), series_uid="1.2.3.1", file_prefix="big")
    write_ct_series(tmp_path, volume_with(shape=(4, 10, 12), seed=1), series_uid="1.2.3.2", file_prefix="small")
    assert read_volume(tmp_path).shape == (6, 10, 12)
    assert read_volume(tmp_path, series_uid="1.2.3.2").shape == (4, 10, 12)
    with pytest.raises(VolumeError, match="holds no DICOM series 9.9"):
        read_volume(tmp_path, series_uid="9.9")
    # Two equally large series: ambiguous, the user must choose.
    for path in big[4:]:
        path.unlink()
    with pytest.raises(VolumeError, match="equally big"):
        read_volume(tmp_path)


def test_empty_and_non_dicom_folders(tmp_path):
    with pytest.raises(VolumeError, match="holds no DICOM series"):
        read_volume(tmp_path)
    (tmp_path / "notes.txt").write_text("not DICOM")
    with pytest.raises(VolumeError, match=f"{tmp_path}: holds no DICOM series"):
        read_volume(tmp_path)


def test_a_folder_whose_series_are_in_sub_folders_names_them(tmp_path, capsys):
    """`multi/a` and `multi/b` each hold a series, `multi/readme.txt` is the only file at the top:
    once "holds no DICOM series (an empty folder, or no DICOM files in it)", with --series too."""
    multi = tmp_path / "multi"
    write_ct_series(multi / "a", volume_with(), series_number=3)
    write_ct_series(multi / "b", volume_with(seed=1), kernel="B50f", series_number=4)
    (multi / "readme.txt").write_text("two series")
    with pytest.raises(VolumeError) as refused:
        read_volume(multi)
    assert str(refused.value) == (f"{multi}: holds no DICOM series itself, but folders below it do: {multi / 'a'} "
                                  f"(1 series), {multi / 'b'} (1 series); give one of them (revgan batch and "
                                  "revgan dataset search the folders below a folder)")
    with pytest.raises(VolumeError, match=f"series 3 is in {multi / 'a'}: give that folder with --series 3"):
        read_volume(multi, series_uid=3)
    # one series two levels down: named, not silently read
    write_ct_series(tmp_path / "one" / "patient" / "ct", volume_with(), series_number=2)
    with pytest.raises(VolumeError, match="the one DICOM series below it is in .*ct: give that folder"):
        read_volume(tmp_path / "one")
    from model_helpers import save_tiny_model

    model = save_tiny_model(tmp_path / "kernel.safetensors", "kernel", ngf=2, depth=1)
    assert main(["translate", str(multi), str(tmp_path / "o.nrrd"), "--model", str(model), "--series", "3"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"revgan: error: {multi}: holds no DICOM series itself; series 3 is in {multi / 'a'}: give "
                     "that folder with --series 3"]


def test_mixed_series_are_refused(tmp_path):
    uid = "1.2.3.4"
    first = tmp_path / "sizes"
    write_ct_series(first, volume_with(shape=(3, 10, 12)), series_uid=uid, file_prefix="a")
    shifted = volume_with(shape=(3, 8, 12))
    write_ct_series(first, Volume(shifted.array, shifted.spacing, (10.5, -20.25, 60.0), shifted.direction),
                    series_uid=uid, file_prefix="b")
    with pytest.raises(VolumeError, match="mixed series 1.2.3.4: slices of different sizes"):
        read_volume(first)
    second = tmp_path / "orientations"
    write_ct_series(second, volume_with(shape=(3, 10, 12)), series_uid=uid, file_prefix="a")
    turned = Volume(integer_ct((3, 10, 12)), (0.7, 0.8, 2.5), (10.5, -20.25, 60.0))
    write_ct_series(second, turned, series_uid=uid, file_prefix="b")
    with pytest.raises(VolumeError, match="different orientations"):
        read_volume(second)
    third = tmp_path / "duplicates"
    write_ct_series(third, volume_with(shape=(3, 10, 12)), series_uid=uid, file_prefix="a")
    write_ct_series(third, volume_with(shape=(3, 10, 12), seed=2), series_uid=uid, file_prefix="b")
    with pytest.raises(VolumeError, match=r"a00000\.dcm and .*b00000\.dcm lie at the same position"):
        read_volume(third)


def test_missing_slice_is_refused(tmp_path):
    files = write_ct_series(tmp_path, volume_with(shape=(6, 10, 12)))
    files[3].unlink()
    with pytest.raises(VolumeError, match=r"uneven slice spacing: .*slice00002\.dcm to .*slice00004\.dcm is 5\.000 mm"):
        read_volume(tmp_path)


def test_non_ct_single_slice_and_truncated(tmp_path):
    mr = tmp_path / "mr"
    write_ct_series(mr, volume_with(), modality="MR")
    with pytest.raises(VolumeError, match="is MR, not CT"):
        read_volume(mr)
    single = tmp_path / "single"
    write_ct_series(single, volume_with(shape=(1, 10, 12)))
    with pytest.raises(VolumeError, match="single slice"):
        read_volume(single)
    truncated = tmp_path / "truncated"
    files = write_ct_series(truncated, volume_with(shape=(4, 16, 16)))
    files[2].write_bytes(files[2].read_bytes()[:-200])
    with pytest.raises(VolumeError, match="truncated"):
        read_volume(truncated)


# ------------------------------------------------------- slice geometry: where voxels land

# Direction matrices (row-major; columns = row, column and slice-normal directions in LPS).
SAGITTAL = (0.0, 0.0, -1.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0)  # rows run A->P, columns down, slices R->L
CORONAL = (1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, -1.0, 0.0)  # rows run R->L, columns down, slices A->P
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
MARKER = (7, 2, 4)  # (i, j, k): off every axis of symmetry, near the far end of the stack
BACKGROUND_HU, MARKER_HU = -1000.0, 2000.0


def marked_volume(direction, shape=(6, 10, 12)) -> Volume:
    array = np.full(shape, BACKGROUND_HU, np.float32)
    i, j, k = MARKER
    array[k, j, i] = MARKER_HU
    return Volume(array, (0.7, 0.8, 2.5), (10.5, -20.25, 30.0), direction)


def marker_centre(volume: Volume) -> np.ndarray:
    """Physical centre of the marker's brightness above the background (interpolation may
    spread it over neighbouring voxels; the weighted centre stays put)."""
    weights = volume.array.astype(np.float64) - BACKGROUND_HU
    k, j, i = np.nonzero(weights > 1.0)
    points = volume.index_to_physical_matrix() @ np.stack([i, j, k, np.ones_like(i)])
    assert weights.sum() == pytest.approx(MARKER_HU - BACKGROUND_HU, rel=1e-5)
    return (points[:3] * weights[k, j, i]).sum(axis=1) / weights[k, j, i].sum()


@pytest.mark.parametrize("direction, tilt_deg", [
    (AXIAL, 0.0), (SAGITTAL, 0.0), (CORONAL, 0.0), (oblique_direction(), 0.0), (oblique_direction(-1), 0.0),
    (AXIAL, 20.0), (AXIAL, -20.0), (SAGITTAL, 15.0), (oblique_direction(), 20.0),
], ids=["axial", "sagittal", "coronal", "oblique", "oblique-left-handed", "axial-tilt20", "axial-tilt-20",
        "sagittal-tilt15", "oblique-tilt20"])
def test_every_voxel_lands_where_the_scanner_put_it(tmp_path, direction, tilt_deg):
    """Slices are ordered along the slice normal (not z), spaced by their step along it, and
    a gantry tilt is resampled onto the slice planes; file names are out of slice order."""
    volume = marked_volume(direction)
    write_ct_series(tmp_path, volume, tilt_deg=tilt_deg, scramble_file_names=True)
    back = read_volume(tmp_path)
    normal = np.cross(volume.direction_matrix[:, 0], volume.direction_matrix[:, 1])
    np.testing.assert_allclose(back.direction_matrix[:, 2], normal, atol=1e-6)
    np.testing.assert_allclose(back.spacing, volume.spacing, atol=1e-6)
    np.testing.assert_allclose(marker_centre(back), written_point(volume, MARKER, tilt_deg), atol=1e-3)
    assert back.shape[0] == volume.shape[0]


def test_tilt_of_whole_pixels_is_an_exact_shear(tmp_path):
    """A tilt that shifts each slice by exactly one row: every voxel is moved, none blended,
    and the grid grows by one row per slice, filled with the lowest value."""
    volume = Volume(integer_ct((4, 6, 5)), (0.7, 0.8, 2.5), (1.0, 2.0, 3.0))
    tilt = float(np.degrees(np.arctan(0.8 / 2.5)))
    write_ct_series(tmp_path, volume, tilt_deg=tilt)
    back = read_volume(tmp_path)
    assert back.shape == (4, 9, 5)
    np.testing.assert_allclose(back.origin, volume.origin, atol=1e-6)
    for k in range(4):
        np.testing.assert_array_equal(back.array[k, k:k + 6], volume.array[k])
        assert np.all(back.array[k, :k] == volume.array.min()) and np.all(back.array[k, k + 6:] == volume.array.min())


def test_slices_off_a_straight_line_are_refused(tmp_path):
    volume = marked_volume(AXIAL)
    positions = [written_point(volume, (0, 0, k)) for k in range(volume.shape[0])]
    positions[2] = positions[2] + np.array([0.0, 3.0, 0.0])  # one slice pushed 3 mm sideways
    write_ct_series(tmp_path, volume, positions=positions)
    with pytest.raises(VolumeError, match=r"not stacked on a straight line: .*slice00002\.dcm is shifted 3\.000 mm"):
        read_volume(tmp_path)


def test_a_single_real_ct_slice_is_2d(tmp_path):
    path = get_testdata_file("CT_small.dcm")
    assert pydicom.dcmread(path).Modality == "CT"
    with pytest.raises(VolumeError, match="single slice"):
        read_volume(path)
    copy = tmp_path / "one"
    copy.mkdir()
    shutil.copy(path, copy / "CT_small.dcm")
    with pytest.raises(VolumeError, match="single slice"):
        read_dicom_series(copy)


def test_kernel_labels():
    assert normalise_kernel("B30f") == "B30f"
    assert normalise_kernel("Br40d\\3") == "Br40d-3"
    assert normalise_kernel("") == "unknown"
    assert kernel_sharpness("B50f") > kernel_sharpness("B30f") > kernel_sharpness("STANDARD")


@pytest.mark.parametrize("kernel, label", [
    ("B50f.nii", "B50f_nii"), ("FC/13", "FC_13"), ("../..", "unknown"), ("Br 40\u00e9 d", "Br_40_d"),
    ("CON", "CON_"), ("", "unknown"), ("x" * 300, "x" * 64)])
def test_file_labels_are_plain_file_name_stems(kernel, label):
    assert safe_file_label(kernel) == label


def test_file_labels_stay_distinct_on_case_insensitive_disks():
    assert unique_file_labels(["B50f.nii", "b50f_NII", "B30f"]) == {
        "B30f": "B30f", "B50f.nii": "B50f_nii", "b50f_NII": "b50f_NII-2"}


# ------------------------------------------------------------------- revgan dataset


def two_kernel_tree(root):
    """Two studies, each reconstructed with B50f and B30f (same grid), plus an MR series."""
    for study in range(2):
        study_uid = f"1.2.826.0.1.99.{study}"
        base = volume_with(shape=(5, 10, 12), seed=study)
        for number, kernel in enumerate(("B50f", "B30f")):
            values = base.array if kernel == "B50f" else np.round(base.array * 0.5)
            write_ct_series(root / f"patient{study}" / kernel, base.with_array(values), kernel=kernel,
                            study_uid=study_uid, patient_id=f"P{study}", series_number=number + 1,
                            slice_thickness=1.0)
    write_ct_series(root / "patient0" / "mr", volume_with(shape=(3, 10, 12)), modality="MR",
                    study_uid="1.2.826.0.1.99.0", kernel="")
    return root


def test_find_series_reads_kernel_thickness_and_study(tmp_path):
    found = find_series(two_kernel_tree(tmp_path / "dicom"), recursive=True)
    assert len(found) == 5
    kernels = sorted(info.kernel for info in found if info.modality == "CT")
    assert kernels == ["B30f", "B30f", "B50f", "B50f"]
    assert {info.slice_thickness_mm for info in found if info.modality == "CT"} == {1.0}
    assert len({info.study_uid for info in found}) == 2


def test_revgan_dataset_pairs_kernels_of_a_study(tmp_path, capsys):
    root = two_kernel_tree(tmp_path / "dicom")
    out = tmp_path / "dataset"
    assert main(["dataset", str(root), str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["task"] == {"source": "B50f", "target": "B30f"}
    assert summary["paired_cases"] == 2 and summary["series_written"] == 4
    assert any("modality MR" in note for note in summary["skipped"])
    manifest = load_manifest(out / "manifest.json")
    assert sorted(manifest.domains) == ["B30f", "B50f"]
    assert manifest.task("kernel") == {"source": "B50f", "target": "B30f"}
    assert len(manifest.cases) == 2
    for case in manifest.cases:
        sharp = read_volume(case.files["B50f"])
        smooth = read_volume(case.files["B30f"])
        assert sharp.same_geometry(smooth, tolerance=1e-5)
        np.testing.assert_array_equal(smooth.array, np.round(sharp.array * 0.5))
        assert set(case.extra["series"]) == {"B50f", "B30f"}
    # Writing the dataset inside the DICOM folder, or into a used folder, is refused.
    assert main(["dataset", str(root), str(root / "out")]) == 1
    assert main(["dataset", str(root), str(out)]) == 1
    assert "the folder is not empty" in capsys.readouterr().err


def test_revgan_dataset_bad_input(tmp_path, capsys):
    assert main(["dataset", str(tmp_path / "absent"), str(tmp_path / "out")]) == 1
    assert "no such folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["dataset", str(tmp_path / "empty"), str(tmp_path / "out")]) == 1
    error = capsys.readouterr().err
    assert "no DICOM series found" in error and "Traceback" not in error
    root = two_kernel_tree(tmp_path / "dicom")
    assert main(["dataset", str(root), str(tmp_path / "out2"), "--source-kernel", "B70f"]) == 1
    assert "B70f" in capsys.readouterr().err


def test_revgan_dataset_numbers_cases_without_gaps(tmp_path, capsys):
    """The first study's only series cannot be read (PixelSpacing 0): it is skipped, and the
    study that is written is case000, not case001."""
    root = tmp_path / "dicom"
    for study in range(2):
        files = write_ct_series(root / f"patient{study}", volume_with(shape=(3, 10, 12), seed=study),
                                study_uid=f"1.2.826.0.1.98.{study}", patient_id=f"P{study}")
        if study == 0:
            for path in files:
                dataset = pydicom.dcmread(str(path))
                dataset.PixelSpacing = ["0", "0"]
                dataset.save_as(str(path))
    assert main(["dataset", str(root), str(tmp_path / "out"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert any("(0028,0030)" in note and "patient0" in note for note in summary["skipped"])
    manifest = load_manifest(tmp_path / "out" / "manifest.json")
    assert manifest.case_ids == ["case000"] and manifest.cases[0].extra["patient_id"] == "P1"


@pytest.mark.parametrize("existing", [False, True])
def test_revgan_dataset_stopped_half_way_leaves_no_half_dataset(tmp_path, existing):
    """Ctrl-C while the second study is read, after the first case was written: a folder the
    command created is gone; in a folder that existed, only what the command added is."""
    root = tmp_path / "dicom"
    for study in range(2):
        write_ct_series(root / f"patient{study}", volume_with(shape=(3, 10, 12), seed=study),
                        study_uid=f"1.2.826.0.1.94.{study}", patient_id=f"P{study}")
    out = tmp_path / "out"
    if existing:
        out.mkdir()
        (out / "notes.txt").write_text("mine")

    def interrupt_at_the_second_study(message):
        if message.startswith("study 1.2.826.0.1.94.1: reading"):
            assert (out / "case000").is_dir()  # the first case is on disk by now
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_dicom_dataset(root, out, overwrite=existing, progress=interrupt_at_the_second_study)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"] if existing else not out.exists()


def mixed_pairing_tree(root):
    """Study A: B50f + B30f sharing a frame of reference on different grids (B30f at twice
    the slice spacing); study B: B50f + B30f on one grid with different frames of reference;
    study C: one B30f series; a CT series without a kernel; RevGAN's own derived series of
    study A's B50f."""
    sharp_a = volume_with(shape=(6, 10, 12), seed=1)
    smooth_a = Volume(np.round(sharp_a.array[::2] * 0.5), (0.7, 0.8, 5.0), sharp_a.origin, sharp_a.direction)
    for kernel, volume in (("B50f", sharp_a), ("B30f", smooth_a)):
        write_ct_series(root / "A" / kernel, volume, kernel=kernel, study_uid="1.2.826.0.1.97.1", patient_id="PA",
                        frame_of_reference_uid="1.2.826.0.1.97.1.5")
    sharp_b = volume_with(shape=(4, 10, 12), seed=2)
    for kernel, values in (("B50f", sharp_b.array), ("B30f", np.round(sharp_b.array * 0.5))):
        write_ct_series(root / "B" / kernel, sharp_b.with_array(values), kernel=kernel,
                        study_uid="1.2.826.0.1.97.2", patient_id="PB")
    write_ct_series(root / "C" / "B30f", volume_with(shape=(3, 10, 12), seed=3), study_uid="1.2.826.0.1.97.3",
                    patient_id="PC")
    write_ct_series(root / "C" / "nokernel", volume_with(shape=(3, 10, 12), seed=4), kernel="",
                    study_uid="1.2.826.0.1.97.3", patient_id="PC")
    from RevGANCore.dicom import choose_series
    from RevGANCore.dicom_writer import write_dicom_series

    write_dicom_series(sharp_a, root / "A" / "revgan", source=choose_series(root / "A" / "B50f"),
                       description="RevGAN sharp->smooth", kernel=("B30f-like",))
    return root


def test_revgan_dataset_pairs_only_one_acquisition_and_keeps_the_rest_unpaired(tmp_path, capsys):
    root = mixed_pairing_tree(tmp_path / "dicom")
    out = tmp_path / "dataset"
    assert main(["dataset", str(root), str(out)]) == 0
    printed = capsys.readouterr().out
    assert "study 1.2.826.0.1.97.1: B30f + B50f of one acquisition (same frame of reference): paired case000" in printed
    assert "study 1.2.826.0.1.97.2: B30f + B50f of one acquisition (same geometry): paired case001" in printed
    assert "study 1.2.826.0.1.97.3: one series (B30f): unpaired B30f data (case002)" in printed
    assert "2 paired case(s), 1 unpaired case(s)" in printed
    assert "derived series written by RevGAN" in printed and "no ConvolutionKernel" in printed
    manifest = load_manifest(out)
    assert sorted(manifest.domains) == ["B30f", "B50f"] and manifest.case_ids == ["case000", "case001", "case002"]
    assert manifest.raw["unpaired"] == {"B30f": ["case002"]}
    assert [sorted(case.files) for case in manifest.cases] == [["B30f", "B50f"], ["B30f", "B50f"], ["B30f"]]
    assert read_volume(manifest.cases[0].files["B30f"], expect_ct=False).shape == (3, 10, 12)


def test_revgan_dataset_series_of_one_study_but_not_one_acquisition_are_unpaired(tmp_path):
    root = tmp_path / "dicom"
    for kernel, shape in (("B50f", (4, 10, 12)), ("B30f", (5, 10, 12))):
        write_ct_series(root / kernel, volume_with(shape=shape), kernel=kernel, study_uid="1.2.826.0.1.96.1")
    summary = write_dicom_dataset(root, tmp_path / "out")
    assert summary["paired_cases"] == 0 and summary["unpaired"] == {"B30f": ["case000"], "B50f": ["case001"]}
    assert any("B30f series is not of the same acquisition" in line for line in summary["found"])
    assert summary["found"][-1].startswith("no paired cases: no study holds two of the kernels B30f, B50f")


def test_revgan_dataset_of_one_kernel_is_unpaired_data_and_says_why(tmp_path, capsys):
    root = tmp_path / "dicom"
    for study in range(2):
        write_ct_series(root / f"s{study}", volume_with(shape=(3, 10, 12), seed=study), kernel="B30s",
                        study_uid=f"1.2.826.0.1.95.{study}")
    assert main(["dataset", str(root), str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "no paired cases: every series has kernel B30s; a pair needs two kernels of one acquisition" in printed
    assert "unknown" not in printed and "task kernel" not in printed
    manifest = load_manifest(tmp_path / "out")
    assert manifest.tasks == {} and manifest.raw["unpaired"] == {"B30s": ["case000", "case001"]}
