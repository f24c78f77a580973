"""tools/fetch_real_ct.py on a small tarball the test writes (never the network)."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_tool():
    spec = importlib.util.spec_from_file_location("fetch_real_ct", ROOT / "tools" / "fetch_real_ct.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fetch = _load_tool()

CONTENT = {"pyradiomics-3.1.0/data/lung1_image.nrrd": b"NRRD0004 lung one" * 100,
           "pyradiomics-3.1.0/data/lung2_image.nrrd": b"NRRD0004 lung two" * 150,
           "pyradiomics-3.1.0/setup.py": b"print('not extracted')"}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _tarball(path: Path, content=CONTENT) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in content.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def _pins(content=CONTENT):
    return {"lung1_image.nrrd": ("pyradiomics-3.1.0/data/lung1_image.nrrd",
                                 _sha(content["pyradiomics-3.1.0/data/lung1_image.nrrd"])),
            "lung2_image.nrrd": ("pyradiomics-3.1.0/data/lung2_image.nrrd",
                                 _sha(content["pyradiomics-3.1.0/data/lung2_image.nrrd"]))}


def _visible(folder: Path):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_extracts_the_pinned_members_verified_and_a_second_run_changes_nothing(tmp_path):
    tarball = _tarball(tmp_path / "sdist.tar.gz")
    out = tmp_path / "cache"
    messages = []
    written = fetch.extract_verified(tarball, _sha(tarball.read_bytes()), _pins(), out, log=messages.append)
    assert _visible(out) == ["lung1_image.nrrd", "lung2_image.nrrd"]  # no staging left, setup.py not taken
    assert (out / "lung2_image.nrrd").read_bytes() == CONTENT["pyradiomics-3.1.0/data/lung2_image.nrrd"]
    assert set(written) == {"lung1_image.nrrd", "lung2_image.nrrd"}
    stamps = {name: (out / name).stat().st_mtime_ns for name in written}
    messages.clear()
    fetch.extract_verified(tarball, _sha(tarball.read_bytes()), _pins(), out, log=messages.append)
    assert all("already there" in message for message in messages) and len(messages) == 2
    assert {name: (out / name).stat().st_mtime_ns for name in written} == stamps


def test_a_wrong_tarball_checksum_is_one_clear_error_and_nothing_is_kept(tmp_path):
    tarball = _tarball(tmp_path / "sdist.tar.gz")
    out = tmp_path / "cache"
    out.mkdir()
    with pytest.raises(fetch.ChecksumError, match="SHA-256 .* is not the pinned"):
        fetch.extract_verified(tarball, "0" * 64, _pins(), out)
    assert _visible(out) == []


def test_a_member_with_a_wrong_checksum_is_not_published(tmp_path):
    tampered = dict(CONTENT)
    tampered["pyradiomics-3.1.0/data/lung2_image.nrrd"] = b"something else"
    tarball = _tarball(tmp_path / "sdist.tar.gz", tampered)
    out = tmp_path / "cache"
    out.mkdir()
    with pytest.raises(fetch.ChecksumError, match="lung2_image.nrrd"):
        fetch.extract_verified(tarball, _sha(tarball.read_bytes()), _pins(), out)
    assert _visible(out) == ["lung1_image.nrrd"]  # the good one, verified; no staging folder, no lung2


def test_a_cached_file_with_a_wrong_checksum_is_replaced(tmp_path):
    tarball = _tarball(tmp_path / "sdist.tar.gz")
    out = tmp_path / "cache"
    out.mkdir()
    (out / "lung1_image.nrrd").write_bytes(b"truncated")
    fetch.extract_verified(tarball, _sha(tarball.read_bytes()), _pins(), out, log=lambda _: None)
    assert (out / "lung1_image.nrrd").read_bytes() == CONTENT["pyradiomics-3.1.0/data/lung1_image.nrrd"]


def test_command_line_refuses_a_tarball_that_is_not_the_pinned_sdist(tmp_path, capsys):
    tarball = _tarball(tmp_path / "pyradiomics-3.1.0.tar.gz")
    out = tmp_path / "cache"
    assert fetch.main(["--out", str(out), "--from-tarball", str(tarball)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fetch_real_ct: error:") and fetch.SDIST_SHA256 in err[0]
    assert _visible(out) == []


def test_default_cache_folder_follows_the_environment(tmp_path, monkeypatch):
    from RevGANCore.bench.real import REAL_CT_DIR_ENV, real_ct_dir

    monkeypatch.setenv(REAL_CT_DIR_ENV, str(tmp_path / "elsewhere"))
    assert real_ct_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv(REAL_CT_DIR_ENV)
    assert real_ct_dir() == Path.home() / ".cache" / "revgan" / "real_ct"
