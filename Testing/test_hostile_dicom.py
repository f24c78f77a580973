"""Hostile DICOM input through the real ``revgan`` command: broken geometry tags, truncated
slices, folders without DICOM, a truncated .mha, and kernel names that are not file names.

Each refusal is one line naming the file (and the tag), exit 1, with no line from the
libraries (ITK/GDCM warnings are printed to the process's stderr, so a separate process
catches them), inputs byte-identical and nothing left behind."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_series_writer import write_ct_series
from hostile_helpers import assert_refused, digest_tree, hidden_leftovers, run_revgan
from model_helpers import save_tiny_model
from pydicom.dataelem import DataElement

from RevGANCore.dicom import normalise_kernel
from RevGANCore.volume import Volume
from RevGANCore.volume_io import read_volume, write_volume

SHAPE = (4, 16, 16)
PIXEL_SPACING, ORIENTATION, POSITION = 0x00280030, 0x00200037, 0x00200032


def ct_volume(seed: int = 0) -> Volume:
    rng = np.random.default_rng(seed)
    return Volume(rng.integers(-1024, 1500, SHAPE).astype(np.float32), (0.7, 0.8, 2.5), (-5.0, 7.5, 30.0))


def set_tag(path: Path, tag: int, text) -> None:
    """Store ``text`` as the raw decimal-string value of ``tag`` (None deletes it); invalid
    values are the point here, so pydicom's warnings about them are silenced."""
    dataset = pydicom.dcmread(str(path))
    if text is None:
        del dataset[tag]
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset[tag] = DataElement(tag, "DS", text)
    dataset.save_as(str(path))


def truncate(path: Path, keep_bytes: int) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:keep_bytes] if keep_bytes >= 0 else data[:len(data) + keep_bytes])


def replace_by_text(path: Path) -> None:
    path.unlink()
    path.with_suffix(".txt").write_text("notes, not DICOM\n")


def on_slice(index, tag, text):
    return lambda files: set_tag(files[index], tag, text)


def on_every_slice(tag, text):
    return lambda files: [set_tag(path, tag, text) for path in files]


# name: (spoil the written series, fragments the one error line must contain)
SPOILED_SERIES = {
    "pixel-spacing-zero": (on_slice(2, PIXEL_SPACING, "0\\0"), ["slice00002.dcm", "(0028,0030)", "positive"]),
    "pixel-spacing-negative": (on_slice(1, PIXEL_SPACING, "-0.8\\0.7"), ["slice00001.dcm", "(0028,0030)", "positive"]),
    "pixel-spacing-nan": (on_slice(0, PIXEL_SPACING, "nan\\0.7"), ["slice00000.dcm", "(0028,0030)", "finite"]),
    "pixel-spacing-missing": (on_slice(3, PIXEL_SPACING, None), ["slice00003.dcm", "(0028,0030)", "missing"]),
    "position-nan": (on_slice(2, POSITION, "-5\\nan\\35"), ["slice00002.dcm", "(0020,0032)", "finite"]),
    "positions-all-zero": (on_every_slice(POSITION, "0\\0\\0"), ["(0020,0032)", "same position"]),
    "orientation-skewed": (on_every_slice(ORIENTATION, "1\\0\\0\\0.5\\1\\0"), ["(0020,0037)", "orthogonal"]),
    "orientation-zero": (on_every_slice(ORIENTATION, "0\\0\\0\\0\\0\\0"), ["(0020,0037)", "unit vectors"]),
    "truncated-middle-slice": (lambda files: truncate(files[2], -200), ["slice00002.dcm", "truncated: "]),
    "truncated-last-slice": (lambda files: truncate(files[3], -200), ["slice00003.dcm", "truncated: "]),
    "truncated-to-header": (lambda files: truncate(files[1], 300), ["slice00001.dcm", "truncated or corrupt"]),
    "missing-slice": (lambda files: files[1].unlink(), ["uneven slice spacing", "slice00000.dcm", "slice00002.dcm"]),
    "no-dicom-in-folder": (lambda files: [replace_by_text(path) for path in files], ["no DICOM series found"]),
}

# `translate` loads torch and a model, a few seconds per run: one case goes through it (the
# truncated .mha below is another); the rest through `dataset`, which reads series the same way.
THROUGH_TRANSLATE = ("pixel-spacing-zero",)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("model") / "tiny.safetensors")


def library_noise(run) -> list:
    """stderr lines that are not the project's own ('revgan: ...', '<command>: ...')."""
    return [line for line in run.error_lines if not re.match(r"^(revgan|dataset|translate):", line)]


def assert_clean_refusal(run, before: dict, after: dict, work: Path, fragments) -> None:
    line = assert_refused(run, *fragments)
    assert not library_noise(run), run.stderr
    assert after == before, "an input changed, or a file was added beside the inputs"
    assert not hidden_leftovers(work)
    return line


@pytest.mark.parametrize("case", sorted(SPOILED_SERIES))
def test_spoiled_series_is_refused_naming_the_file(tmp_path, model_path, case):
    spoil, fragments = SPOILED_SERIES[case]
    series = tmp_path / "dicom" / "series"
    spoil(write_ct_series(series, ct_volume()))
    before = digest_tree(tmp_path / "dicom")
    if case in THROUGH_TRANSLATE:
        output = tmp_path / "out" / "translated.nii.gz"
        run = run_revgan(["translate", series, output, "--model", model_path])
    else:
        output = tmp_path / "dataset"
        run = run_revgan(["dataset", tmp_path / "dicom", output])
    assert_clean_refusal(run, before, digest_tree(tmp_path / "dicom"), tmp_path, fragments)
    assert not output.exists()


def test_truncated_mha_names_the_missing_bytes(tmp_path, model_path):
    scan = write_volume(ct_volume(), tmp_path / "scan.mha", dtype="float32")
    size = scan.stat().st_size
    truncate(scan, -100)
    before = digest_tree(tmp_path)
    run = run_revgan(["translate", scan, tmp_path / "out.nii.gz", "--model", model_path])
    after = digest_tree(tmp_path)
    line = assert_clean_refusal(run, before, after, tmp_path, ["scan.mha", "truncated: "])
    present, expected = (int(n) for n in re.search(r"truncated: (\d+) of (\d+) bytes", line).groups())
    assert present == size - 100 and expected > present


# Kernel names a scanner (or a hostile file) may carry, and that are no file names.
HOSTILE_KERNELS = ["B50f.nii", "b50F.NII", "FC/13", "../../etc", "..", "Br 40 d", "Qr40\u00e9\u2009d", "CON", "B30f"]


def test_dataset_with_hostile_kernel_names_lists_only_files_that_exist(tmp_path):
    dicom = tmp_path / "dicom"
    study = "1.2.826.0.1.77.1"
    for number, kernel in enumerate(HOSTILE_KERNELS):
        write_ct_series(dicom / f"series{number}", ct_volume(number), kernel=kernel, study_uid=study,
                        series_uid=f"{study}.{number}", series_number=number + 1)
    before = digest_tree(dicom)
    out = tmp_path / "dataset"
    run = run_revgan(["dataset", dicom, out, "--json"])
    assert run.returncode == 0, run.stderr
    assert not library_noise(run), run.stderr
    assert digest_tree(dicom) == before and not hidden_leftovers(tmp_path)
    manifest = json.loads((out / "manifest.json").read_text())
    (case,) = manifest["cases"]
    assert case["id"] == "case000"
    assert len(case["files"]) == len(HOSTILE_KERNELS), "two kernels were merged into one domain"
    listed = set()
    for domain, relative in case["files"].items():
        path = (out / relative).resolve()
        assert path.parent == (out / "case000").resolve() and path.name == f"{domain}.nii.gz"
        number = int(case["series"][domain]["series_uid"].rsplit(".", 1)[1])
        assert manifest["domains"][domain]["kernel"] == normalise_kernel(HOSTILE_KERNELS[number])
        np.testing.assert_array_equal(read_volume(path).array, ct_volume(number).array)
        listed.add(path)
    assert {p.resolve() for p in out.rglob("*") if p.is_file()} == listed | {(out / "manifest.json").resolve()}
    assert len({name.casefold() for name in case["files"]}) == len(HOSTILE_KERNELS)
