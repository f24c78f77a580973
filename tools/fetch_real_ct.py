#!/usr/bin/env python3
"""Fetch the real chest CT scans used by ``revgan bench real`` into a local cache, checksummed.

    python tools/fetch_real_ct.py                         # from PyPI (pyradiomics 3.1.0 sdist)
    python tools/fetch_real_ct.py --from-tarball PATH     # offline, from a copy of that sdist
    python tools/fetch_real_ct.py --pydicom               # also pydicom's CT_small.dcm
    python tools/fetch_real_ct.py --slices                # also single real CT slices (pydicom-data)
    python tools/fetch_real_ct.py --slices --from-wheel PATH   # offline, from a copy of that wheel

The pyradiomics 3.1.0 source distribution (34.5 MB) carries two real chest CT scans in its
test data: ``data/lung1_image.nrrd`` (512 x 512 x 48, 0.57 x 0.57 x 5 mm; for development) and
``data/lung2_image.nrrd`` (512 x 512 x 61, 0.63 x 0.63 x 5 mm; held out, only reported on).
The tarball's address comes from PyPI's simple index (``pip download`` would try to build the
package's metadata and fails); the tarball, and each file taken out of it, must match the
SHA-256 pinned below, else nothing is kept. The tarball itself is not kept: only the two scans,
as ``lung1_image.nrrd`` and ``lung2_image.nrrd`` in the cache folder
(``$REVGAN_REAL_CT_DIR``, default ``~/.cache/revgan/real_ct``). Files already there with the
right checksum are left alone, so running it again does nothing.

``--slices``: single real CT slices from other scanners and body regions, for
``revgan bench real --single-slices``, into ``slices/`` of the cache: four files of the
pydicom-data 1.0.0 wheel from PyPI (a GE STANDARD head with -3024 HU padding, a Siemens B30s
slice at 0.287 mm, an abdomen at 0.86 mm, an Enhanced CT perfusion frame), each pinned like
the scans, and pydicom's own CT_small.dcm (a GE chest crop). The wheel is not kept.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tarfile
import urllib.request
import zipfile
from pathlib import Path
from typing import Dict, Iterable, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from RevGANCore.bench.real import REAL_SCAN_FILES, real_ct_dir  # noqa: E402
from RevGANCore.bench.real_slices import SLICE_DIR  # noqa: E402
from RevGANCore.checksums import file_sha256  # noqa: E402
from RevGANCore.errors import RevGANError  # noqa: E402
from RevGANCore.output import Staging, replaced_atomically  # noqa: E402

INDEX_URL = "https://pypi.org/simple/pyradiomics/"
SDIST_NAME = "pyradiomics-3.1.0.tar.gz"
SDIST_SHA256 = "24722c962a6bbd09bc39c1c67dbffe92435f9692a421fabaae8a6b4511eb48e4"
#: Cache file name -> (member of the sdist, its SHA-256).
SCAN_PINS: Dict[str, tuple] = {
    REAL_SCAN_FILES["lung1"]: ("pyradiomics-3.1.0/data/lung1_image.nrrd",
                               "379fa48bf34cfa961e6f5ec19c0c38757a30b9aa884212ef28dc29b5061c64ed"),
    REAL_SCAN_FILES["lung2"]: ("pyradiomics-3.1.0/data/lung2_image.nrrd",
                               "aa2b94eec79127ed786798ac8dc3c013010e1692d5787bebfae1a1e9685a4651"),
}
#: pydicom's own test file (GE, kernel STANDARD, 128 x 128 chest slice), as pydicom 3.0 ships it.
CT_SMALL = ("CT_small.dcm", "3dd31e5cc835b3f2cdd46c9da1982f59251e78518fefa8163d914631c66437d6")
SLICES_INDEX_URL = "https://pypi.org/simple/pydicom-data/"
SLICES_WHEEL_NAME = "pydicom_data-1.0.0-py3-none-any.whl"
SLICES_WHEEL_SHA256 = "622ac97265f1d91f76b5120b5bd6eb0f57737c392ef863b72c71779c91e33637"
#: Cache file name (in slices/) -> (member of the wheel, its SHA-256).
SLICE_PINS: Dict[str, tuple] = {
    "693_UNCR.dcm": ("data_store/data/693_UNCR.dcm",
                     "cc4cdd599231922ecf63de2ddacf03d51c4588805c9154c2eef1ff49c23b32be"),
    "bad_sequence.dcm": ("data_store/data/bad_sequence.dcm",
                         "0677915e5c3e8c98498eb3d1b726ccf38ba0d8ada657c8ca7fe1b8b9b5890f4f"),
    "explicit_VR-UN.dcm": ("data_store/data/explicit_VR-UN.dcm",
                           "28c4a61022d7dbebec97e2f1bbdad0ed097bee2c62727c26a3f3720248c9c6e7"),
    "eCT_Supplemental.dcm": ("data_store/data/eCT_Supplemental.dcm",
                             "0a4c3aa02d1b0b4826daa5ffe85ef13be83c1433842a9a98b901e075136dd86f"),
}
_CHUNK = 1 << 20  # download and copy chunks


class ChecksumError(RevGANError):
    """A downloaded or extracted file is not the one pinned here."""


def sha256_of(path: Path) -> str:
    return file_sha256(path)


def check_sha256(path: Path, expected: str, what: str) -> None:
    actual = sha256_of(path)
    if actual != expected:
        raise ChecksumError(f"{what}: SHA-256 {actual} is not the pinned {expected}; nothing was kept")


def is_cached(path: Path, expected: str) -> bool:
    return path.is_file() and sha256_of(path) == expected


def sdist_url(index_url: str = INDEX_URL, filename: str = SDIST_NAME, timeout: float = 60.0) -> str:
    """The download address of ``filename`` from a PyPI simple index (JSON form, PEP 691)."""
    request = urllib.request.Request(index_url, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            index = json.loads(response.read().decode("utf-8"))
    except (OSError, ValueError) as error:
        raise RevGANError(f"{index_url}: cannot read the package index ({error}); use --from-tarball PATH "
                          "with a copy of the sdist") from None
    for entry in index.get("files", []):
        if entry.get("filename") == filename:
            return str(entry["url"])
    raise RevGANError(f"{index_url}: {filename} is not listed")


def download(url: str, target: Path, timeout: float = 120.0) -> None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(target, "wb") as stream:
            shutil.copyfileobj(response, stream, _CHUNK)
    except OSError as error:
        raise RevGANError(f"{url}: download failed ({error})") from None


def extract_verified(tarball: Path, tarball_sha256: str, pins: Dict[str, tuple], out_dir: Path,
                     log=print) -> Dict[str, Path]:
    """Check ``tarball`` against its pin, then write each pinned member into ``out_dir`` under
    its cache name, each verified before it is published (a mismatch publishes nothing)."""
    check_sha256(tarball, tarball_sha256, str(tarball))
    try:
        archive = tarfile.open(tarball, "r:gz")
    except (OSError, tarfile.TarError) as error:
        raise RevGANError(f"{tarball}: not a readable .tar.gz ({error})") from None

    def open_member(member: str):
        try:
            info = archive.getmember(member)
        except KeyError:
            raise RevGANError(f"{tarball}: has no member {member}") from None
        source = archive.extractfile(info) if info.isfile() else None
        if source is None:
            raise RevGANError(f"{tarball}: {member} is not a regular file")
        return source

    with archive:
        return _publish_members(tarball, open_member, pins, out_dir, log)


def extract_wheel_verified(wheel: Path, wheel_sha256: str, pins: Dict[str, tuple], out_dir: Path,
                           log=print) -> Dict[str, Path]:
    """Check ``wheel`` (a zip) against its pin, then write each pinned member into ``out_dir``
    under its cache name, each verified before it is published."""
    check_sha256(wheel, wheel_sha256, str(wheel))
    try:
        archive = zipfile.ZipFile(wheel)
    except (OSError, zipfile.BadZipFile) as error:
        raise RevGANError(f"{wheel}: not a readable wheel (zip) ({error})") from None

    def open_member(member: str):
        try:
            return archive.open(member)
        except KeyError:
            raise RevGANError(f"{wheel}: has no member {member}") from None

    with archive:
        return _publish_members(wheel, open_member, pins, out_dir, log)


def _publish_members(archive: Path, open_member, pins: Dict[str, tuple], out_dir: Path, log) -> Dict[str, Path]:
    """Each pinned member under its cache name: left alone when already there with the right
    checksum, else copied to a staged file, verified, and only then published."""
    written = {}
    for name, (member, expected) in pins.items():
        target = out_dir / name
        if is_cached(target, expected):
            log(f"{target}: already there, checksum verified")
            written[name] = target
            continue
        source = open_member(member)
        with replaced_atomically(target) as staged:
            with source, open(staged, "wb") as stream:
                shutil.copyfileobj(source, stream, _CHUNK)
            check_sha256(staged, expected, f"{archive}: {member}")
        log(f"{target}: extracted, checksum verified")
        written[name] = target
    return written


def fetch_slices(out_dir: Path, from_wheel: Optional[Path] = None, log=print) -> Dict[str, Path]:
    """The pinned single slices in ``out_dir``/slices (see the module documentation), plus
    pydicom's CT_small.dcm there."""
    folder = out_dir / SLICE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    written = {CT_SMALL[0]: copy_pydicom_ct(out_dir, log, folder)}
    if all(is_cached(folder / name, sha) for name, (_, sha) in SLICE_PINS.items()):
        log(f"{folder}: the pydicom-data slices are already there, checksums verified")
        written.update({name: folder / name for name in SLICE_PINS})
        return written
    if from_wheel is not None:
        written.update(extract_wheel_verified(Path(from_wheel), SLICES_WHEEL_SHA256, SLICE_PINS, folder, log))
        return written
    url = sdist_url(SLICES_INDEX_URL, SLICES_WHEEL_NAME)
    with Staging(folder / SLICES_WHEEL_NAME) as scratch:  # removed afterwards, whatever happens
        wheel = scratch.path(SLICES_WHEEL_NAME)
        log(f"downloading {url}")
        download(url, wheel)
        written.update(extract_wheel_verified(wheel, SLICES_WHEEL_SHA256, SLICE_PINS, folder, log))
    return written


def fetch_scans(out_dir: Path, from_tarball: Optional[Path] = None, log=print) -> Dict[str, Path]:
    """The pinned scans in ``out_dir``: left alone when already there, else taken from
    ``from_tarball`` or from the sdist downloaded from PyPI (then deleted)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if all(is_cached(out_dir / name, sha) for name, (_, sha) in SCAN_PINS.items()):
        log(f"{out_dir}: the scans are already there, checksums verified")
        return {name: out_dir / name for name in SCAN_PINS}
    if from_tarball is not None:
        return extract_verified(Path(from_tarball), SDIST_SHA256, SCAN_PINS, out_dir, log)
    url = sdist_url()
    with Staging(out_dir / SDIST_NAME) as scratch:  # removed afterwards, whatever happens
        tarball = scratch.path(SDIST_NAME)
        log(f"downloading {url}")
        download(url, tarball)
        return extract_verified(tarball, SDIST_SHA256, SCAN_PINS, out_dir, log)


def copy_pydicom_ct(out_dir: Path, log=print, folder: Optional[Path] = None) -> Path:
    """pydicom's CT_small.dcm (from the installed pydicom's package data), checksummed, into
    ``folder`` (default: pydicom/ in ``out_dir``)."""
    name, expected = CT_SMALL
    target = (folder if folder is not None else out_dir / "pydicom") / name
    if is_cached(target, expected):
        log(f"{target}: already there, checksum verified")
        return target
    try:
        from pydicom.data import get_testdata_file
    except ImportError:
        raise RevGANError("--pydicom needs pydicom installed (pip install pydicom)") from None
    source = get_testdata_file(name)  # package data: no network
    if source is None:
        raise RevGANError(f"the installed pydicom has no {name}")
    with replaced_atomically(target) as staged:
        shutil.copyfile(source, staged)
        check_sha256(staged, expected, f"{source}")
    log(f"{target}: copied from pydicom, checksum verified")
    return target


def main(argv: Optional[Iterable[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None,
                        help=f"cache folder (default: ${'REVGAN_REAL_CT_DIR'} or ~/.cache/revgan/real_ct)")
    parser.add_argument("--from-tarball", default=None, metavar="PATH",
                        help=f"a local copy of {SDIST_NAME} instead of downloading it")
    parser.add_argument("--pydicom", action="store_true", help="also copy pydicom's CT_small.dcm")
    parser.add_argument("--slices", action="store_true",
                        help=f"also single real CT slices (pydicom-data 1.0.0 and pydicom) into {SLICE_DIR}/")
    parser.add_argument("--from-wheel", default=None, metavar="PATH",
                        help=f"with --slices: a local copy of {SLICES_WHEEL_NAME} instead of downloading it")
    args = parser.parse_args(None if argv is None else list(argv))
    out_dir = Path(os.path.expanduser(args.out)) if args.out else real_ct_dir()
    try:
        fetch_scans(out_dir, Path(args.from_tarball) if args.from_tarball else None)
        if args.pydicom:
            copy_pydicom_ct(out_dir)
        if args.slices:
            fetch_slices(out_dir, Path(args.from_wheel) if args.from_wheel else None)
    except RevGANError as error:
        print(f"fetch_real_ct: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
