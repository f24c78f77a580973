"""Reading and writing CT volume files: .nii, .nii.gz, .nrrd, .nhdr, .mha, .mhd and DICOM
series folders (see :mod:`RevGANCore.dicom`).

- :func:`read_volume`: float32 HU with LPS geometry; every bad input raises
  :class:`~RevGANCore.errors.VolumeError` naming the file.
- :func:`write_volume`: int16 HU (default) or float32, through the one output door
  (:mod:`RevGANCore.output`).
"""

from __future__ import annotations

import gzip
import os
import shutil
import tempfile
import struct
import zlib
from pathlib import Path
from typing import Optional

import numpy as np

from .errors import VolumeError
from .metaimage_check import check_metaimage_complete
from .volume import Volume, image_to_volume, volume_to_image

# =========================================================================== reading

#: File name endings read and written by :func:`read_volume` / :func:`write_volume`.
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")

#: Lowest voxel value a CT volume in HU must reach: every chest CT contains air
#: (about -1000 HU) or scanner padding below it.
CT_AIR_CEILING_HU = -500.0


def volume_suffix(path) -> str:
    """The recognised file ending of ``path`` ('.nii.gz', '.nrrd', ...) or '' if none."""
    name = str(path).lower()
    for suffix in VOLUME_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return ""


def check_ct_range(volume: Volume) -> None:
    """Raise :class:`VolumeError` unless the values look like CT in Hounsfield units."""
    low = float(volume.array.min())
    high = float(volume.array.max())
    if low > CT_AIR_CEILING_HU:
        raise VolumeError(
            f"{volume.source or 'volume'}: values range from {low:g} to {high:g}, which does not "
            f"look like CT in Hounsfield units (CT has air near -1000 HU; no voxel is below "
            f"{CT_AIR_CEILING_HU:g}). Is it an MR image, or CT without its rescale intercept? "
            "Use read_volume(..., expect_ct=False) to read it anyway")


def read_volume(path, series_uid: Optional[str] = None, expect_ct: bool = True) -> Volume:
    """Read a 3D volume as float32 (HU for CT) with its LPS geometry.

    ``path`` is a .nii/.nii.gz/.nrrd/.nhdr/.mha/.mhd file or a folder holding a DICOM
    series (the largest series, or the one whose SeriesInstanceUID is ``series_uid``;
    rescale slope and intercept are applied). A left-handed DICOM geometry comes back in
    SimpleITK's slice order (the same physical image, possibly flipped in k).
    With ``expect_ct`` (the default) a volume without any air-like value is refused.
    Every problem raises :class:`VolumeError` naming the file."""
    import SimpleITK as sitk

    location = Path(path)
    if not location.exists():
        raise VolumeError(f"{location}: no such file or folder")
    if location.is_dir():
        from .dicom import read_dicom_series

        volume = read_dicom_series(location, series_uid)
    else:
        if series_uid is not None:
            raise VolumeError(f"{location}: series_uid applies to DICOM folders, not to a single file")
        if location.stat().st_size == 0:
            raise VolumeError(f"{location}: the file is empty")
        if volume_suffix(location) in (".nii", ".nii.gz"):
            _check_nifti_complete(location)
        elif volume_suffix(location) in (".mha", ".mhd"):
            check_metaimage_complete(location)
        try:
            image = sitk.ReadImage(str(location))
        except RuntimeError as error:
            raise VolumeError(f"{location}: cannot be read as an image ({_first_line(error)}); "
                              "it may be corrupt, truncated or of an unsupported format") from None
        volume = image_to_volume(image, str(location))
    if expect_ct:
        check_ct_range(volume)
    return volume


def _check_nifti_complete(path: Path) -> None:
    """Raise VolumeError if a NIfTI file holds fewer voxel bytes than its header promises.
    (ITK reads a truncated NIfTI without complaint, leaving the missing voxels undefined.)"""
    opener = gzip.open if str(path).lower().endswith(".gz") else open
    try:
        with opener(str(path), "rb") as stream:
            header = stream.read(540)
            expected = _nifti_data_end(header)
            if expected is None:
                return  # not a NIfTI header we know: let SimpleITK judge it
            available = len(header)
            while available < expected:
                chunk = stream.read(1 << 22)
                if not chunk:
                    break
                available += len(chunk)
    except (OSError, EOFError, zlib.error) as error:
        raise VolumeError(f"{path}: is corrupt or truncated ({error})") from None
    if available < expected:
        raise VolumeError(f"{path}: is truncated ({available} of {expected} bytes of header and voxels)")


def _nifti_data_end(header: bytes) -> Optional[int]:
    """Byte offset where a NIfTI-1 or NIfTI-2 file's voxel data ends, from its header."""
    for order in ("<", ">"):
        if len(header) >= 348 and struct.unpack(order + "i", header[:4])[0] == 348:
            dims = struct.unpack(order + "8h", header[40:56])
            bitpix = struct.unpack(order + "h", header[72:74])[0]
            offset = int(struct.unpack(order + "f", header[108:112])[0])
            break
        if len(header) >= 540 and struct.unpack(order + "i", header[:4])[0] == 540:
            bitpix = struct.unpack(order + "h", header[14:16])[0]
            dims = struct.unpack(order + "8q", header[16:80])
            offset = struct.unpack(order + "q", header[168:176])[0]
            break
    else:
        return None
    count = 1
    for n in dims[1:1 + max(0, min(int(dims[0]), 7))]:
        count *= max(int(n), 1)
    return max(offset, 348) + count * max(int(bitpix), 8) // 8


def _first_line(error: Exception) -> str:
    """The informative part of a SimpleITK error (its last non-empty line)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


# =========================================================================== writing

WRITE_DTYPES = ("int16", "float32")


def write_volume(volume: Volume, path, dtype: str = "int16") -> Path:
    """Write ``volume`` atomically to a .nii/.nii.gz/.nrrd/.nhdr/.mha/.mhd file.

    ``dtype="int16"`` (the default, for CT) rounds to whole HU and clips to the int16
    range; ``"float32"`` keeps the values. The file appears complete or not at all: it is
    written in a temporary folder beside the target and moved into place. Writing over
    the file the volume was read from is refused. Returns the path written."""
    import SimpleITK as sitk

    target = Path(path)
    suffix = volume_suffix(target)
    if not suffix:
        raise VolumeError(f"{target}: unknown volume file type; use one of {', '.join(VOLUME_SUFFIXES)}")
    if dtype not in WRITE_DTYPES:
        raise VolumeError(f"{target}: cannot write dtype {dtype!r}; use one of {WRITE_DTYPES}")
    if target.is_dir():
        raise VolumeError(f"{target}: is a folder, not a file name")
    if volume.source and _same_path(volume.source, target):
        raise VolumeError(f"{target}: refusing to write over the file this volume was read from")
    array = volume.array
    # Integer arrays are finite by construction; skipping the check (and the conversion of an
    # int16 result below) keeps a large memory-mapped output from being copied twice.
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise VolumeError(f"{target}: the volume to write contains non-finite voxels")
    if dtype == "int16":
        if array.dtype != np.int16:
            info = np.iinfo(np.int16)
            array = np.clip(np.rint(array), info.min, info.max).astype(np.int16)
    else:
        array = array.astype(np.float32, copy=False)
    image = volume_to_image(volume.with_array(array))
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".revgan-write-", dir=str(target.parent)))
    try:
        staged = staging / target.name
        try:
            sitk.WriteImage(image, str(staged), useCompression=suffix not in (".nii",))
        except RuntimeError as error:
            raise VolumeError(f"{target}: cannot be written ({_first_line(error)})") from None
        # Data files (.raw/.zraw of .mhd, .raw.gz of .nhdr) first, the header last, so a
        # reader never finds a new header pointing at old data.
        for produced in sorted(staging.iterdir(), key=lambda p: p.name == target.name):
            os.replace(str(produced), str(target.parent / produced.name))
    finally:
        shutil.rmtree(str(staging), ignore_errors=True)
    return target


def _same_path(a, b) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


