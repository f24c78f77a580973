"""DICOM output as a derived series (RevGANCore.dicom_writer), series choice (--series) and the
kernel check: real source series written with pydicom, tiny real models, read back with the
project's own reader and with pydicom."""

from __future__ import annotations

import hashlib
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_series_writer import write_ct_series
from model_helpers import oblique_direction, random_volume, save_tiny_model, tiny_model
from pydicom.uid import UID

from RevGANCore.cli import main
from RevGANCore.dicom import choose_series
from RevGANCore.dicom_writer import right_handed, verify_dicom_folder, write_dicom_series
from RevGANCore.errors import OutputError, VolumeError
from RevGANCore.inference import translate, translate_file
from RevGANCore.kernel_match import kernel_domain
from RevGANCore.volume import Volume
from RevGANCore.volume_io import read_volume, write_volume


#: No shipped models unless a test makes a registry.
pytestmark = pytest.mark.usefixtures("no_registry")


def source_volume(shape=(6, 10, 12), seed=0, direction=None) -> Volume:
    volume = random_volume(shape, seed, spacing=(0.7, 0.8, 2.5), origin=(-12.5, 30.25, 101.0),
                           direction=direction or oblique_direction(25.0))
    return volume.with_array(np.rint(volume.array))


def headers(folder: Path):
    return [pydicom.dcmread(str(path)) for path in sorted(Path(folder).iterdir())]


def digests(folder: Path):
    return {path: hashlib.sha256(path.read_bytes()).hexdigest() for path in Path(folder).rglob("*") if path.is_file()}


@pytest.mark.parametrize("task", ["kernel", "super_resolution"])
def test_dicom_in_dicom_out_is_a_derived_series_of_the_source_study(task, tmp_path):
    source = tmp_path / "source"
    write_ct_series(source, source_volume(), kernel="B50f", signed=True, intercept=0.0, series_number=4,
                    study_uid="1.2.826.0.1.3680043.77.1")
    before = digests(source)
    model = tiny_model(task, ngf=2)
    out = translate_file(model, source, tmp_path / "derived", device="cpu", output_format="dicom")

    expected = translate(model, read_volume(source), device="cpu", out_dtype="int16")
    back = read_volume(out)
    assert back.same_geometry(expected, tolerance=1e-5)
    np.testing.assert_array_equal(back.array, expected.array.astype(np.float32))
    if task == "super_resolution":
        assert back.shape == (24, 20, 24) and back.spacing == pytest.approx((0.35, 0.4, 0.625))

    originals, derived = headers(source), headers(out)
    assert digests(source) == before
    assert len(derived) == back.shape[0]
    source_uids = {str(h.SOPInstanceUID) for h in originals}
    new_uids = [str(h.SOPInstanceUID) for h in derived]
    assert len(set(new_uids)) == len(new_uids) and not source_uids & set(new_uids)
    assert all(UID(uid).is_valid for uid in new_uids + [str(derived[0].SeriesInstanceUID)])
    assert {str(h.SeriesInstanceUID) for h in derived} == {str(derived[0].SeriesInstanceUID)}
    assert derived[0].SeriesInstanceUID != originals[0].SeriesInstanceUID
    for header in derived:
        assert header.StudyInstanceUID == "1.2.826.0.1.3680043.77.1"
        assert header.PatientID == originals[0].PatientID and str(header.PatientName) == "Phantom^Test"
        assert header.FrameOfReferenceUID == originals[0].FrameOfReferenceUID
        assert list(header.ImageType) == ["DERIVED", "SECONDARY"] and header.Modality == "CT"
        assert header.PixelRepresentation == 1 and header.BitsAllocated == 16
        assert float(header.RescaleSlope) == 1 and float(header.RescaleIntercept) == 0
        assert "NOT FOR DIAGNOSTIC USE" in header.ImageComments
        assert f"tiny-{task}" in header.SeriesDescription and "tiny" in header.DerivationDescription
        assert header.SeriesDescription.startswith("RevGAN super-resolution" if task == "super_resolution"
                                                   else "RevGAN kernel sharp_b50f->smooth_b30f")
        assert header.SeriesNumber == 1004
        references = {str(item.ReferencedSOPInstanceUID) for item in header.SourceImageSequence}
        assert references and references <= source_uids
    assert float(derived[0].SpacingBetweenSlices) == pytest.approx(back.spacing[2])
    assert float(derived[0].SliceThickness) == pytest.approx(back.spacing[2])
    kernel = list(derived[0].ConvolutionKernel)
    # A kernel conversion has its target domain's look; super-resolution keeps the source kernel.
    assert kernel == (["RevGAN", "smooth_b30f"] if task == "kernel" else ["RevGAN", "B50f"])
    if task == "kernel":  # the same slice grid: each derived slice comes from exactly one source slice
        assert [len(h.SourceImageSequence) for h in derived] == [1] * len(derived)


def test_left_handed_volume_file_becomes_a_new_study_holding_the_same_physical_image(tmp_path):
    left_handed = np.asarray(oblique_direction(25.0)).reshape(3, 3)
    left_handed[:, 2] *= -1
    volume = source_volume(direction=tuple(left_handed.ravel()))
    out = write_dicom_series(volume, tmp_path / "series")
    back = read_volume(out)
    flipped = right_handed(volume)
    assert back.same_geometry(flipped, tolerance=1e-5)
    np.testing.assert_array_equal(back.array, volume.array[::-1])
    last_slice = volume.index_to_physical_matrix() @ np.array([0, 0, volume.shape[0] - 1, 1.0])
    np.testing.assert_allclose(back.origin, last_slice[:3], atol=1e-5)
    derived = headers(out)
    assert UID(str(derived[0].StudyInstanceUID)).is_valid and derived[0].PatientID.startswith("revgan-")
    assert "SourceImageSequence" not in derived[0]


def test_verification_refuses_a_series_that_does_not_read_back_equal(tmp_path):
    volume = source_volume()
    out = write_dicom_series(volume, tmp_path / "series")
    verify_dicom_folder(out, volume)  # the published series passes
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    sorted(broken.iterdir())[-1].unlink()  # a slice lost, as on a full disk
    with pytest.raises(OutputError, match="nothing was published"):
        verify_dicom_folder(broken, volume)
    with pytest.raises(OutputError, match="differs from the result"):
        verify_dicom_folder(out, volume.with_array(volume.array + 1))


def two_series_folder(folder: Path) -> dict:
    """One folder, two series of different kernels and sizes: big B50f (number 7), small B30f (number 8)."""
    write_ct_series(folder, source_volume((6, 10, 12), seed=1), kernel="B50f", series_uid="1.2.826.0.1.3680043.77.7",
                    series_number=7, file_prefix="big", signed=True, intercept=0.0)
    write_ct_series(folder, source_volume((4, 10, 12), seed=2), kernel="B30f", series_uid="1.2.826.0.1.3680043.77.8",
                    series_number=8, file_prefix="small", signed=True, intercept=0.0)
    return {"B50f": ("1.2.826.0.1.3680043.77.7", "7", 6), "B30f": ("1.2.826.0.1.3680043.77.8", "8", 4)}


@pytest.mark.parametrize("by", ["uid", "number"])
@pytest.mark.parametrize("kernel", ["B50f", "B30f"])
def test_series_is_chosen_by_uid_or_number_and_reported(by, kernel, tmp_path, capsys):
    folder = tmp_path / "dicom"
    uid, number, slices = two_series_folder(folder)[kernel]
    model = save_tiny_model(tmp_path / "kernel.safetensors", "kernel", ngf=2)
    out = tmp_path / "out.nrrd"
    chosen = uid if by == "uid" else number
    assert main(["translate", str(folder), str(out), "--model", str(model), "--device", "cpu",
                 "--series", chosen, "--direction", "forward" if kernel == "B50f" else "inverse"]) == 0
    err = capsys.readouterr().err
    assert read_volume(out).shape == (slices, 10, 12)
    (line,) = [line for line in err.splitlines() if line.startswith("revgan: input series")]
    assert uid in line and f"number {number}" in line and f"kernel {kernel}" in line
    assert f"'test {kernel}'" in line and f"12x10 pixels x {slices} files" in line
    assert "warning" not in err


@pytest.mark.parametrize("series, message", [
    ("9", "holds no DICOM series 9 (neither a SeriesInstanceUID nor a SeriesNumber)"),
    ("1.2.3", "holds no DICOM series 1.2.3"),
])
def test_an_unknown_series_is_one_line_naming_the_series_held(series, message, tmp_path, capsys):
    folder = tmp_path / "dicom"
    two_series_folder(folder)
    model = save_tiny_model(tmp_path / "kernel.safetensors", "kernel", ngf=2)
    assert main(["translate", str(folder), str(tmp_path / "o.nrrd"), "--model", str(model), "--series", series]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"revgan: error: {folder}: ") and message in line
    assert "1.2.826.0.1.3680043.77.7 (number 7)" in line


def test_a_series_number_shared_by_two_series_must_be_named_by_uid(tmp_path):
    folder = tmp_path / "dicom"
    for index in (1, 2):
        write_ct_series(folder, source_volume(seed=index), series_uid=f"1.2.826.0.1.3680043.77.{index}",
                        series_number=5, file_prefix=f"s{index}", signed=True, intercept=0.0)
    with pytest.raises(VolumeError, match="2 DICOM series have SeriesNumber 5"):
        read_volume(folder, series_uid=5)
    assert read_volume(folder, series_uid="1.2.826.0.1.3680043.77.2").array[0, 0, 0] == \
        source_volume(seed=2).array[0, 0, 0]


@pytest.mark.parametrize("quiet", [False, True])
def test_a_kernel_that_looks_like_the_target_domain_warns_and_strict_refuses(quiet, tmp_path, capsys):
    folder = tmp_path / "dicom"
    uid = two_series_folder(folder)["B30f"][0]
    model = save_tiny_model(tmp_path / "kernel.safetensors", "kernel", ngf=2)  # sharp_b50f -> smooth_b30f
    out = tmp_path / "out.nrrd"
    base = ["translate", str(folder), str(out), "--model", str(model), "--device", "cpu", "--series", "8"]
    assert main(base + (["--quiet"] if quiet else [])) == 0
    err = capsys.readouterr().err
    (warning,) = [line for line in err.splitlines() if line.startswith("revgan: warning:")]
    assert uid in warning and "B30f" in warning and "'smooth_b30f'" in warning and "'sharp_b50f'" in warning
    assert ("input series" in err) is not quiet
    out.unlink()
    assert main(base + ["--strict", "--quiet"]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("revgan: error:") and "B30f" in line and "strict" in line and not out.exists()


@pytest.mark.parametrize("kernel, source, target, expected", [
    ("B30f", "sharp_b50f", "smooth_b30f", "target"),
    ("B50f", "sharp_b50f", "smooth_b30f", "source"),
    ("B30f", "sharp", "smooth", "target"),      # the shipped kernel model's domain names
    ("Br64d", "sharp", "smooth", "source"),
    ("STANDARD", "sharp", "smooth", "target"),
    ("BONE", "sharp", "smooth", "source"),
    ("b30f", "B50f", "B30f", "target"),         # domains named after kernels (revgan dataset)
    ("B45f", "B70f", "B30f", "target"),         # nearer in number
    ("B30f", "lr", "hr", None),                 # super-resolution: no kernel in the domains
    ("unknown", "sharp", "smooth", None),
    ("FC13", "a", "b", None),
])
def test_kernel_domain(kernel, source, target, expected):
    assert kernel_domain(kernel, source, target) == expected


def bad_output_cases(tmp_path):
    source = tmp_path / "dicom"
    write_ct_series(source, source_volume(), kernel="B50f", signed=True, intercept=0.0)
    crowded = tmp_path / "crowded"
    crowded.mkdir()
    (crowded / "notes.txt").write_text("someone else's file")
    model = save_tiny_model(tmp_path / "models" / "kernel.safetensors", "kernel", ngf=2)
    plain_file = tmp_path / "plain"
    plain_file.write_text("x")
    translate = ["translate", "--device", "cpu", "--model", str(model), "--format", "dicom", str(source)]
    return [
        ("output is the input folder", translate + [str(source)], f"{source}: is an input of this command"),
        ("output holds the input", translate + [str(tmp_path)], "which is an input of this command"),
        ("output holds the model", translate[:-1] + [str(write_volume(source_volume(), tmp_path / "ct.nrrd")),
                                                     str(tmp_path / "models")], "which is an input"),
        ("output holds other files", translate + [str(crowded)], "the folder is not empty"),
        ("output is a file", translate + [str(plain_file)], "exists and is not a folder"),
        ("float32 DICOM", translate + [str(tmp_path / "new"), "--dtype", "float32"], "stores whole HU (int16)"),
    ]


def test_bad_dicom_output_folders_are_one_line_and_touch_nothing(tmp_path, capsys):
    cases = bad_output_cases(tmp_path)
    before = digests(tmp_path)
    for name, argv, message in cases:
        assert main(argv) == 1, name
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("revgan: error:") and message in lines[0], (name, lines)
        assert captured.out == ""
    assert digests(tmp_path) == before
    assert not (tmp_path / "new").exists()
    assert not [path for path in tmp_path.rglob(".revgan-*")]


def test_an_empty_existing_folder_is_filled(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    write_dicom_series(source_volume(), empty)
    assert len(list(empty.iterdir())) == 6 and not list(tmp_path.glob(".revgan-*"))


def test_missing_pydicom_is_one_line_before_any_work(tmp_path, capsys, monkeypatch):
    volume = write_volume(source_volume(), tmp_path / "ct.nrrd")
    model = save_tiny_model(tmp_path / "kernel.safetensors", "kernel", ngf=2)
    monkeypatch.setitem(sys.modules, "pydicom", None)  # as if it were not installed
    assert main(["translate", str(volume), str(tmp_path / "out"), "--model", str(model), "--format", "dicom"]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "needs the pydicom package" in line and "revgan-slicer[dicom]" in line
    assert not (tmp_path / "out").exists()


def test_choose_series_takes_an_integer_number_or_the_only_series(tmp_path):
    folder = tmp_path / "dicom"
    write_ct_series(folder, source_volume(), series_uid="1.2.826.0.1.3680043.77.3", series_number=3, file_prefix="a",
                    signed=True, intercept=0.0)
    assert choose_series(folder, 3).series_uid == "1.2.826.0.1.3680043.77.3"
    assert choose_series(folder).series_number == 3


# ----------------------------------------------- what else a PACS export puts beside the slices

def minimal_object(path: Path, sop_class: str, modality: str, study_uid: str) -> Path:
    """A header-only object of ``sop_class``, as a viewer or planning system saves beside a
    series (a presentation state, an RT structure set)."""
    from dicom_series_writer import new_instance

    ds = new_instance(sop_class)
    ds.Modality, ds.StudyInstanceUID = modality, study_uid
    ds.SeriesInstanceUID, ds.SeriesNumber, ds.InstanceNumber = pydicom.uid.generate_uid(), 999, 1
    ds.save_as(str(path), enforce_file_format=True)
    return path


@pytest.mark.parametrize("extra, kind", [
    ("test-SR.dcm", "SR"), ("rtplan.dcm", "RTPLAN"),  # pydicom's sample files
    ("1.2.840.10008.5.1.4.1.1.481.3", "RTSTRUCT"),  # RT Structure Set
    ("1.2.840.10008.5.1.4.1.1.11.1", "PR"),  # Grayscale Softcopy Presentation State
    ("1.2.840.10008.5.1.4.1.1.88.67", "SR"),  # X-Ray Radiation Dose SR
    ("1.2.3.4.5.6", "KO"),  # a SOP class pydicom does not know: the modality tells
])
def test_a_non_image_object_beside_the_slices_is_ignored_and_named(extra, kind, tmp_path, capsys):
    """A dose report, RT plan or presentation state holds no image, so GDCM puts it in no
    series; it is no broken slice and must not block the series (it did, as 'truncated or corrupt')."""
    folder = tmp_path / "export"
    uid = "1.2.826.0.1.3680043.77.5"
    write_ct_series(folder, source_volume(), kernel="B50f", series_uid=uid, series_number=5, signed=True,
                    intercept=0.0, study_uid="1.2.826.0.1.3680043.77.1")
    name = f"{kind}_OBJECT.dcm"
    if extra.endswith(".dcm"):
        shutil.copy(pydicom.data.get_testdata_file(extra), folder / name)
    else:
        minimal_object(folder / name, extra, kind, "1.2.826.0.1.3680043.77.1")
    for series in (None, uid, "5"):
        chosen = choose_series(folder, series)
        assert chosen.series_uid == uid and len(chosen.files) == 6
        assert chosen.choice == f"ignored 1 non-image DICOM object ({name}: {kind})"
    np.testing.assert_array_equal(read_volume(folder).array, source_volume().array)
    model = save_tiny_model(tmp_path / "kernel.safetensors", "kernel", ngf=2)
    assert main(["translate", str(folder), str(tmp_path / "out"), "--model", str(model), "--device", "cpu",
                 "--format", "dicom", "--series", uid]) == 0
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("revgan: input series")]
    assert line.endswith(f"6 files; ignored 1 non-image DICOM object ({name}: {kind})")
    assert len(list((tmp_path / "out").iterdir())) == 6


@pytest.mark.parametrize("keep_bytes, message", [(-200, "truncated: "), (300, "truncated or corrupt"),
                                                 (140, "truncated or corrupt")])
def test_a_broken_slice_beside_a_non_image_object_is_still_refused(keep_bytes, message, tmp_path):
    """Cut in its pixels, in its header, or before even its SOP class: still a broken slice."""
    folder = tmp_path / "export"
    files = write_ct_series(folder, source_volume(), signed=True, intercept=0.0)
    shutil.copy(pydicom.data.get_testdata_file("test-SR.dcm"), folder / "SR.dcm")
    data = files[2].read_bytes()
    files[2].write_bytes(data[:keep_bytes])
    with pytest.raises(VolumeError, match=rf"{files[2].name}: {message}.*series in {folder}"):
        read_volume(folder)


def derived_series_beside_its_source(folder: Path) -> tuple:
    """A 6-slice source series (number 4) and, in the same folder, a 12-slice result RevGAN
    wrote for it (as a PACS export of the study holds both): (source UID, result UID)."""
    source = folder / "source"
    write_ct_series(source, source_volume(), kernel="B50f", series_uid="1.2.826.0.1.3680043.77.4",
                    series_number=4, signed=True, intercept=0.0)
    finer = source_volume(shape=(12, 10, 12))
    finer = Volume(finer.array, (0.7, 0.8, 1.25), finer.origin, finer.direction)
    result = write_dicom_series(finer, folder / "result", source=choose_series(source),
                                description="RevGAN super-resolution (tiny)")
    mixed = folder / "study"
    shutil.copytree(source, mixed)
    for path in result.iterdir():
        shutil.copy(path, mixed / path.name)
    return mixed, "1.2.826.0.1.3680043.77.4", str(headers(result)[0].SeriesInstanceUID)


def test_the_default_choice_is_the_source_not_our_own_larger_result(tmp_path):
    folder, source_uid, result_uid = derived_series_beside_its_source(tmp_path)
    chosen = choose_series(folder)
    assert chosen.series_uid == source_uid
    assert chosen.choice == (f"preferred to RevGAN's own earlier result {result_uid} (number 1004, kernel "
                             "RevGAN, 'RevGAN super-resolution (tiny)', 12 files) (--series reads it)")
    assert chosen.choice in chosen.summary()
    assert read_volume(folder).shape == (6, 10, 12)
    # Named, our result is read (choosing it again is the user's call).
    assert choose_series(folder, result_uid).choice == "" and read_volume(folder, series_uid=1004).shape[0] == 12


def test_the_default_choice_is_the_ct_series_not_a_larger_other_modality(tmp_path):
    folder = tmp_path / "mixed"
    write_ct_series(folder, source_volume(), series_uid="1.2.826.0.1.3680043.77.2", series_number=2,
                    file_prefix="ct", signed=True, intercept=0.0)
    write_ct_series(folder, source_volume(shape=(12, 10, 12)), series_uid="1.2.826.0.1.3680043.77.3",
                    series_number=3, file_prefix="mr", modality="MR", signed=True, intercept=0.0)
    chosen = choose_series(folder)
    assert chosen.series_uid == "1.2.826.0.1.3680043.77.2"
    assert chosen.choice == ("preferred to the non-CT series 1.2.826.0.1.3680043.77.3 (number 3, MR, kernel B30f, "
                             "'test B30f', 12 files)")
    np.testing.assert_array_equal(read_volume(folder).array, source_volume().array)
    # No CT series among several: refused, naming each (only one series is refused when read, naming it).
    only_mr = tmp_path / "only_mr"
    for number, slices in ((3, 12), (6, 8)):
        write_ct_series(only_mr, source_volume(shape=(slices, 10, 12)), series_uid=f"1.2.826.0.1.3680043.77.{number}",
                        series_number=number, file_prefix=f"mr{number}", modality="MR", signed=True, intercept=0.0)
    with pytest.raises(VolumeError, match=re.escape(
            f"{only_mr}: holds 2 DICOM series and none is CT: 1.2.826.0.1.3680043.77.3 (number 3, MR, kernel B30f, "
            "'test B30f', 12 files), 1.2.826.0.1.3680043.77.6 (number 6, MR, kernel B30f, 'test B30f', 8 files)")):
        read_volume(only_mr)


def test_equally_large_series_are_listed_with_number_kernel_and_description(tmp_path, capsys):
    folder = tmp_path / "two_recons"
    for number, kernel in ((2, "B50f"), (3, "B30f")):
        files = write_ct_series(folder, source_volume(), kernel=kernel, series_uid=f"1.2.826.0.1.3680043.77.{number}",
                                series_number=number, file_prefix=kernel, signed=True, intercept=0.0)
    for path in files:  # a description with a terminal escape and a newline, as a hostile file may carry
        dataset = pydicom.dcmread(str(path))
        dataset.SeriesDescription = "Thorax\x1b[31m\nsoft"
        dataset.save_as(str(path))
    model = save_tiny_model(tmp_path / "kernel.safetensors", "kernel", ngf=2)
    assert main(["translate", str(folder), str(tmp_path / "o.nrrd"), "--model", str(model)]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == (f"revgan: error: {folder}: holds 2 DICOM series and the largest are equally big (6 files each): "
                    "1.2.826.0.1.3680043.77.2 (number 2, kernel B50f, 'test B50f'), "
                    "1.2.826.0.1.3680043.77.3 (number 3, kernel B30f, 'Thorax\\x1b[31m\\x0asoft'); "
                    "choose one with --series (its SeriesNumber or SeriesInstanceUID)")
    assert not (tmp_path / "o.nrrd").exists()


def test_series_number_stays_in_the_dicom_integer_range(tmp_path):
    """Source number + 1000 above 2**31 - 1 (the IS maximum, which strict readers enforce)
    becomes that maximum: still after the source in a viewer's list."""
    from pydicom import config

    source = tmp_path / "source"
    write_ct_series(source, source_volume(), series_number=2147483000, signed=True, intercept=0.0)
    out = write_dicom_series(source_volume(), tmp_path / "out", source=choose_series(source))
    mode = config.settings.reading_validation_mode
    config.settings.reading_validation_mode = config.RAISE
    try:
        assert {int(h.SeriesNumber) for h in headers(out)} == {2 ** 31 - 1}
    finally:
        config.settings.reading_validation_mode = mode
    with pytest.raises(OutputError, match="SeriesNumber 2147483648 is outside the DICOM range"):
        write_dicom_series(source_volume(), tmp_path / "out2", series_number=2 ** 31)
    assert not (tmp_path / "out2").exists()


@pytest.mark.parametrize("z_step", [1, 2])
def test_slices_derived_from_an_enhanced_ct_name_their_frames(z_step, tmp_path):
    """One multi-frame source instance: each derived slice names the frame(s) it comes from
    (frames written in reverse order, so frame number and position disagree)."""
    from enhanced_ct_writer import write_enhanced_ct

    source = source_volume(shape=(5, 10, 12))
    path = write_enhanced_ct(tmp_path / "enhanced" / "ct.dcm", source, frame_order=[4, 3, 2, 1, 0],
                             intercept=-2048.0)
    info = choose_series(path.parent)
    read = read_volume(path.parent)
    # z_step 2: a super-resolution-like grid, twice as many slices, half the spacing.
    finer = Volume(np.zeros((9 if z_step == 2 else 5, 10, 12), np.float32),
                   (read.spacing[0], read.spacing[1], read.spacing[2] / z_step), read.origin, read.direction)
    out = write_dicom_series(finer, tmp_path / "out", source=info)
    sop = str(pydicom.dcmread(str(path), stop_before_pixels=True).SOPInstanceUID)
    frame_of_slice = {k: 5 - k for k in range(5)}  # frame n holds source slice 5 - n
    for k, header in enumerate(headers(out)):
        (item,) = header.SourceImageSequence
        assert str(item.ReferencedSOPInstanceUID) == sop
        frames = item.ReferencedFrameNumber
        frames = [int(f) for f in frames] if isinstance(frames, pydicom.multival.MultiValue) else [int(frames)]
        if z_step == 1:
            assert frames == [frame_of_slice[k]]
        elif k % 2 == 0:  # on a source slice: that one
            assert frames == [frame_of_slice[k // 2]]
        else:  # between two source slices: both
            assert frames == sorted([frame_of_slice[k // 2], frame_of_slice[k // 2 + 1]])
