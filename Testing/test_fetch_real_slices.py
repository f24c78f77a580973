"""tools/fetch_real_ct.py --slices on a small wheel the test writes (never the network)."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from test_fetch_real_ct import fetch

MEMBERS = {"data_store/data/head.dcm": b"DICM head slice" * 64,
           "data_store/data/abdomen.dcm": b"DICM abdomen slice" * 80,
           "pydicom_data/__init__.py": b"# not extracted"}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _wheel(path: Path, members=MEMBERS) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _pins(members=MEMBERS):
    return {"head.dcm": ("data_store/data/head.dcm", _sha(MEMBERS["data_store/data/head.dcm"])),
            "abdomen.dcm": ("data_store/data/abdomen.dcm", _sha(MEMBERS["data_store/data/abdomen.dcm"]))}


def _visible(folder: Path):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_the_pinned_slices_come_out_of_the_wheel_verified_beside_pydicoms_ct_small(tmp_path, monkeypatch):
    wheel = _wheel(tmp_path / "pydicom_data.whl")
    monkeypatch.setattr(fetch, "SLICE_PINS", _pins())
    monkeypatch.setattr(fetch, "SLICES_WHEEL_SHA256", _sha(wheel.read_bytes()))
    messages = []
    written = fetch.fetch_slices(tmp_path / "cache", wheel, log=messages.append)
    folder = tmp_path / "cache" / "slices"
    assert _visible(folder) == ["CT_small.dcm", "abdomen.dcm", "head.dcm"]  # no staging, __init__ not taken
    assert (folder / "head.dcm").read_bytes() == MEMBERS["data_store/data/head.dcm"]
    assert fetch.sha256_of(folder / "CT_small.dcm") == fetch.CT_SMALL[1]
    assert set(written) == {"CT_small.dcm", "abdomen.dcm", "head.dcm"}
    messages.clear()
    fetch.fetch_slices(tmp_path / "cache", None, log=messages.append)  # all there: no wheel, no network
    assert all("already there" in message for message in messages)


def test_a_wheel_that_is_not_the_pinned_one_keeps_nothing(tmp_path):
    wheel = _wheel(tmp_path / "pydicom_data.whl")
    out = tmp_path / "slices"
    out.mkdir()
    with pytest.raises(fetch.ChecksumError, match="is not the pinned"):
        fetch.extract_wheel_verified(wheel, "0" * 64, _pins(), out)
    assert _visible(out) == []


def test_a_slice_with_a_wrong_checksum_is_not_published(tmp_path):
    tampered = dict(MEMBERS)
    tampered["data_store/data/abdomen.dcm"] = b"something else"
    wheel = _wheel(tmp_path / "pydicom_data.whl", tampered)
    out = tmp_path / "slices"
    out.mkdir()
    with pytest.raises(fetch.ChecksumError, match="abdomen.dcm"):
        fetch.extract_wheel_verified(wheel, _sha(wheel.read_bytes()), _pins(), out, log=lambda _: None)
    assert _visible(out) == ["head.dcm"]


def test_the_real_pins_name_ct_slices_of_pydicom_data_1_0_0():
    assert fetch.SLICES_WHEEL_NAME == "pydicom_data-1.0.0-py3-none-any.whl"
    assert set(fetch.SLICE_PINS) == {"693_UNCR.dcm", "bad_sequence.dcm", "explicit_VR-UN.dcm", "eCT_Supplemental.dcm"}
    for name, (member, sha) in fetch.SLICE_PINS.items():
        assert member == f"data_store/data/{name}" and len(sha) == 64
