"""Reading and writing CT volume files: .nii, .nii.gz, .nrrd, .nhdr, .mha, .mhd and DICOM
series folders (see :mod:`RevGANCore.dicom`).

- :func:`read_volume`: float32 HU with LPS geometry; every bad input raises
  :class:`~RevGANCore.errors.VolumeError` naming the file.
- :func:`write_volume`: int16 HU (default) or float32, through the one output door
  (:mod:`RevGANCore.output`).
"""

from __future__ import annotations

import contextlib
import contextvars
import gzip
import os
import struct
import zlib
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import OutputError, VolumeError
from .metaimage_check import check_metaimage_complete
from .output import Staging, check_room, check_writable_location, refuse_overlap
from .volume import Volume, image_to_volume, volume_to_image

# =========================================================================== reading

#: File name endings read and written by :func:`read_volume` / :func:`write_volume`.
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")

#: Lowest voxel value a CT volume in HU must reach: every chest CT contains air
#: (about -1000 HU) or scanner padding below it.
CT_AIR_CEILING_HU = -500.0

#: Values a CT volume in HU (or a translation result) may take: int16 HU, and unsigned
#: extended-range scales. Anything beyond is a broken file or a broken model.
CT_VALUE_RANGE = (-32768.0, 65535.0)


def volume_suffix(path) -> str:
    """The recognised file ending of ``path`` ('.nii.gz', '.nrrd', ...) or '' if none."""
    name = str(path).lower()
    for suffix in VOLUME_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return ""


#: How a scan without air is let through, ending :func:`check_ct_range`'s refusal: in Python,
#: and on the command line (translate, super-resolve, batch, evaluate).
PYTHON_AIR_HINT = ("If it is CT in HU without air (a soft-tissue crop), read it with read_volume(..., "
                   "expect_ct=False), or inside `with RevGANCore.volume_io.air_check(False):`")
COMMAND_LINE_AIR_HINT = "If it is CT in HU without air (a soft-tissue crop), pass --no-air-check to use it"

# (required, hint): a context variable, because the readers deep inside translate_file take no
# expect_ct argument; each thread and asyncio task has its own.
_AIR_CHECK: "contextvars.ContextVar[Tuple[bool, str]]" = contextvars.ContextVar(
    "revgan_air_check", default=(True, PYTHON_AIR_HINT))


@contextlib.contextmanager
def air_check(required: bool = True, hint: str = PYTHON_AIR_HINT) -> Iterator[None]:
    """While the block runs, :func:`check_ct_range` refuses a volume without an air-like voxel
    only if ``required``, ending the refusal with ``hint``. Values beyond any CT scale are
    refused either way."""
    token = _AIR_CHECK.set((bool(required), str(hint)))
    try:
        yield
    finally:
        _AIR_CHECK.reset(token)


def check_ct_range(volume: Volume) -> None:
    """Raise :class:`VolumeError` unless the values look like CT in Hounsfield units (an
    air-like voxel is required unless :func:`air_check` says otherwise)."""
    low = float(volume.array.min())
    high = float(volume.array.max())
    if low < CT_VALUE_RANGE[0] or high > CT_VALUE_RANGE[1]:
        raise VolumeError(
            f"{volume.source or 'volume'}: values range from {low:g} to {high:g}, far outside any CT "
            f"scale in Hounsfield units ({CT_VALUE_RANGE[0]:g} to {CT_VALUE_RANGE[1]:g}); "
            "the file is broken or is not CT")
    required, hint = _AIR_CHECK.get()
    if required and low > CT_AIR_CEILING_HU:
        raise VolumeError(
            f"{volume.source or 'volume'}: values range from {low:g} to {high:g}, which does not "
            f"look like CT in Hounsfield units (CT has air near -1000 HU; no voxel is below "
            f"{CT_AIR_CEILING_HU:g}). Is it an MR image, or CT without its rescale intercept? {hint}")


def read_volume(path, series_uid: Union[None, str, int] = None, expect_ct: bool = True) -> Volume:
    """Read a 3D volume as float32 (HU for CT) with its LPS geometry.

    ``path`` is a .nii/.nii.gz/.nrrd/.nhdr/.mha/.mhd file or a folder holding a DICOM
    series (the largest series, or the one whose SeriesInstanceUID or SeriesNumber is
    ``series_uid``; rescale slope and intercept are applied). A left-handed DICOM geometry comes back in
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
            raise VolumeError(f"{location}: a series (UID or number) can be chosen in DICOM folders only, not "
                              "in a single file")
        if not location.is_file():  # a FIFO or a device would block or never end
            raise VolumeError(f"{location}: is not a regular file (a pipe, socket or device)")
        if location.stat().st_size == 0:
            raise VolumeError(f"{location}: the file is empty")
        if volume_suffix(location) in (".nii", ".nii.gz"):
            _check_nifti_data(location)
        elif volume_suffix(location) in (".mha", ".mhd"):
            check_metaimage_complete(location)
        try:
            image = _read_image(location)
        except RuntimeError as error:
            raise VolumeError(f"{location}: cannot be read as an image ({_first_line(error)}); "
                              "it may be corrupt, truncated or of an unsupported format") from None
        volume = image_to_volume(image, str(location))
    if expect_ct:
        check_ct_range(volume)
    return volume


def _check_nifti_data(path: Path) -> None:
    """Raise VolumeError if a NIfTI file holds fewer voxel bytes than its header promises,
    or float voxels that are NaN or infinite. (ITK reads a truncated NIfTI without complaint,
    leaving the missing voxels undefined, and turns NaN and infinity into 0.)"""
    opener = gzip.open if str(path).lower().endswith(".gz") else open
    try:
        with opener(str(path), "rb") as stream:
            header = stream.read(540)
            layout = _nifti_layout(header)
            if layout is None:
                return  # not a NIfTI header we know: let SimpleITK judge it
            offset, end, dtype = layout
            counter = _NonFiniteCounter(dtype)
            position = len(header)
            if offset < position:
                counter.feed(header[offset:end])
            elif offset > position:
                position += len(stream.read(offset - position))
            while position < end:
                chunk = stream.read(min(1 << 22, end - position))
                if not chunk:
                    break
                position += len(chunk)
                counter.feed(chunk)
    except (OSError, EOFError, zlib.error) as error:
        raise VolumeError(f"{path}: is corrupt or truncated ({error})") from None
    if position < end:
        raise VolumeError(f"{path}: is truncated ({position} of {end} bytes of header and voxels)")
    if counter.count:
        raise VolumeError(f"{path}: contains {counter.count} non-finite voxels (NaN or infinity)")


class _NonFiniteCounter:
    """Counts NaN and infinite values in a byte stream of ``dtype`` (None: counts nothing)."""

    def __init__(self, dtype: Optional[np.dtype]):
        self.dtype = dtype
        self.count = 0
        self._pending = b""

    def feed(self, data: bytes) -> None:
        if self.dtype is None:
            return
        data = self._pending + data
        usable = len(data) - len(data) % self.dtype.itemsize
        values = np.frombuffer(data[:usable], dtype=self.dtype)
        self.count += int(values.size - np.count_nonzero(np.isfinite(values)))
        self._pending = data[usable:]


#: NIfTI datatype codes of float voxels, whose values can be NaN or infinite.
_NIFTI_FLOAT_TYPES = {16: "f4", 64: "f8"}


def _nifti_layout(header: bytes):
    """(offset of the voxels, byte offset where they end, float dtype or None) of a NIfTI-1
    or NIfTI-2 header; None if ``header`` is not one."""
    for order in ("<", ">"):
        if len(header) >= 348 and struct.unpack(order + "i", header[:4])[0] == 348:
            dims = struct.unpack(order + "8h", header[40:56])
            datatype = struct.unpack(order + "h", header[70:72])[0]
            bitpix = struct.unpack(order + "h", header[72:74])[0]
            offset = int(struct.unpack(order + "f", header[108:112])[0])
            minimum = 348
            break
        if len(header) >= 540 and struct.unpack(order + "i", header[:4])[0] == 540:
            datatype = struct.unpack(order + "h", header[12:14])[0]
            bitpix = struct.unpack(order + "h", header[14:16])[0]
            dims = struct.unpack(order + "8q", header[16:80])
            offset = struct.unpack(order + "q", header[168:176])[0]
            minimum = 540
            break
    else:
        return None
    count = 1
    for n in dims[1:1 + max(0, min(int(dims[0]), 7))]:
        count *= max(int(n), 1)
    offset = max(int(offset), minimum)
    float_code = _NIFTI_FLOAT_TYPES.get(int(datatype))
    dtype = np.dtype(order + float_code) if float_code else None
    return offset, offset + count * max(int(bitpix), 8) // 8, dtype


#: The ITK reader of each file type, named explicitly: SimpleITK picks readers by lower-case
#: ending and finds none for 'A.MHA' or 'B.MHD'.
_IMAGE_IOS = {".nii.gz": "NiftiImageIO", ".nii": "NiftiImageIO", ".nrrd": "NrrdImageIO",
              ".nhdr": "NrrdImageIO", ".mha": "MetaImageIO", ".mhd": "MetaImageIO"}


def _read_image(path: Path):
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.SetImageIO(_IMAGE_IOS.get(volume_suffix(path), ""))
    return reader.Execute()


def read_spacing(path) -> Optional[Tuple[float, float, float]]:
    """The voxel spacing (x, y, z) in mm of a volume file, from its header alone; None for
    a folder or a file whose header cannot be read."""
    import SimpleITK as sitk

    location = Path(path)
    if not location.is_file() or not volume_suffix(location):
        return None
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(location))
    reader.SetImageIO(_IMAGE_IOS[volume_suffix(location)])
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return None
    spacing = tuple(float(s) for s in reader.GetSpacing()[:3])
    return spacing if len(spacing) == 3 else None  # type: ignore[return-value]


def _first_line(error: Exception) -> str:
    """The informative part of a SimpleITK error (its last non-empty line)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


# =========================================================================== writing

WRITE_DTYPES = ("int16", "float32")

#: The data file SimpleITK writes beside a compressed header-only format.
_DATA_FILE_SUFFIXES = {".mhd": ".zraw", ".nhdr": ".raw.gz"}


def _stem(target: Path) -> str:
    return target.name[:-len(volume_suffix(target))]


def volume_output_files(path) -> List[Path]:
    """Every file that writing a volume to ``path`` creates or replaces: the file itself,
    plus the data file of a ``.mhd`` / ``.nhdr`` header."""
    target = Path(path)
    suffix = volume_suffix(target)
    files = [target]
    if suffix in _DATA_FILE_SUFFIXES:
        files.append(target.with_name(_stem(target) + _DATA_FILE_SUFFIXES[suffix]))
    return files


def volume_input_files(path) -> List[Path]:
    """The files an input consists of: a file plus the data file its header names (``.mhd``
    ElementDataFile, ``.nhdr`` data file), or every file of a DICOM folder."""
    location = Path(path)
    if location.is_dir():
        return [item for item in location.iterdir() if item.is_file()]
    files = [location]
    suffix = volume_suffix(location)
    if suffix in _DATA_FILE_SUFFIXES and location.is_file():
        files.extend(_header_data_files(location, suffix))
    return files


def _header_data_files(header: Path, suffix: str) -> List[Path]:
    key = "elementdatafile" if suffix == ".mhd" else ("data file", "datafile")
    try:
        with open(header, "rb") as stream:
            text = stream.read(1 << 16).decode("latin-1")
    except OSError:
        return []
    found = []
    for line in text.splitlines():
        name, separator, value = line.partition("=" if suffix == ".mhd" else ":")
        if separator and name.strip().lower() in ((key,) if isinstance(key, str) else key):
            value = value.strip()
            if value and value.upper() not in ("LOCAL", "LIST") and not value.upper().startswith("LIST "):
                found.append(header.parent / value)
    return found


def check_volume_output(path, inputs: Sequence = ()) -> Path:
    """Refuse, before any work, a volume output that has an unknown file type, is a folder,
    lies where we cannot write, or would create or replace any file of ``inputs`` (files,
    DICOM folders or model files; ``.mhd``/``.nhdr`` data files count), or replace a data file
    that the header being replaced does not name. Creates nothing."""
    target = Path(os.path.expanduser(os.fspath(path)))
    if not volume_suffix(target):
        raise OutputError(f"{target}: unknown output file type; use one of {', '.join(VOLUME_SUFFIXES)} "
                          "(DICOM is written as a series folder: --format dicom)")
    check_writable_location(target)
    input_files = [item for source in inputs if source for item in volume_input_files(source)]
    refuse_overlap(volume_output_files(target), input_files)
    _refuse_foreign_data_file(target)
    return target


def _refuse_foreign_data_file(target: Path) -> None:
    """A ``.mhd``/``.nhdr`` output replaces its data file too (``x.nhdr`` -> ``x.raw.gz``).
    That file may only be replaced when it is the data of the header being replaced: a file
    of that name that no header at ``target`` names is someone else's."""
    data_files = volume_output_files(target)[1:]
    if not data_files or not data_files[0].exists():
        return
    data = data_files[0]
    named = _header_data_files(target, volume_suffix(target)) if target.is_file() else []
    if not any(_same_file(data, item) for item in named):
        raise OutputError(f"{target}: writing this header also writes its data file {data.name}, and a file "
                          f"{data} already exists that {target.name} does not name; it would be replaced. Move it "
                          "or choose another output name; nothing was written")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def estimated_file_bytes(shape: Sequence[int], dtype: str) -> int:
    """Bytes a volume file will take: exact for uncompressed NIfTI, and for compressed
    formats the raw size too (a CT volume rarely compresses below a third, but a full disk
    found by the check before work costs less than one found after it)."""
    voxels = int(np.prod([int(n) for n in shape], dtype=np.int64))
    return voxels * np.dtype(dtype).itemsize + 4096


def storable_array(array: np.ndarray, dtype: str, what) -> np.ndarray:
    """``array`` as the ``dtype`` written to a file: int16 rounds to whole HU. Non-finite
    values, and values that int16 cannot hold, are an error (never clipped silently)."""
    if dtype not in WRITE_DTYPES:
        raise OutputError(f"{what}: cannot write dtype {dtype!r}; use one of {WRITE_DTYPES}")
    if array.dtype == np.int16:  # finite and in range by construction: no copy of a large result
        return array if dtype == "int16" else array.astype(np.float32)
    low, high = float(array.min()), float(array.max())  # NaN propagates; no temporary array
    if not (np.isfinite(low) and np.isfinite(high)):
        raise OutputError(f"{what}: the volume to write contains non-finite voxels (NaN or infinity)")
    if dtype == "int16":
        info = np.iinfo(np.int16)
        if low < info.min - 0.5 or high > info.max + 0.5:
            raise OutputError(f"{what}: values range from {low:g} to {high:g}, beyond what int16 HU can "
                              f"hold ({info.min} to {info.max}); the input or the model is broken")
        return np.rint(array).astype(np.int16)
    return array.astype(np.float32, copy=False)


def write_volume(volume: Volume, path, dtype: str = "int16", inputs: Sequence = ()) -> Path:
    """Write ``volume`` to a .nii/.nii.gz/.nrrd/.nhdr/.mha/.mhd file through the one
    output door (:mod:`RevGANCore.output`).

    ``dtype="int16"`` (the default, for CT) rounds to whole HU; ``"float32"`` keeps the
    values; non-finite values or values int16 cannot hold are refused, never clipped.
    Before writing, the name is checked (no file of ``inputs`` nor the volume's own source
    may be replaced, ``.mhd``/``.nhdr`` data files included) and so is the free space. The
    file is written in a hidden staging folder, read back and compared voxel for voxel,
    and only then moved into place: it appears complete or not at all, and an output
    folder that did not exist is created only then. Returns the path written."""
    import SimpleITK as sitk

    target = check_volume_output(path, inputs=[volume.source, *inputs])
    suffix = volume_suffix(target)
    array = storable_array(volume.array, dtype, target)
    check_room(target.parent, [estimated_file_bytes(array.shape, dtype)], target)
    image = volume_to_image(volume.with_array(array))
    compressed = suffix != ".nii"
    outputs = volume_output_files(target)
    # SimpleITK derives file names from the name it is given (and drops or changes endings
    # it does not expect: 'a.nii.nii.gz' -> 'a.nii', 'A.MHA' -> 'A.mhd' + 'A.zraw'), so it
    # gets a plain staging name, and what it produced is checked before anything moves.
    if suffix in _DATA_FILE_SUFFIXES:
        staged_names = [_stem(target) + suffix, _stem(target) + _DATA_FILE_SUFFIXES[suffix]]
    else:
        staged_names = ["volume" + suffix]
    with Staging(target) as staging:
        staged = staging.path(staged_names[0])
        try:
            sitk.WriteImage(image, str(staged), useCompression=compressed)
        except RuntimeError as error:
            raise OutputError(f"{target}: cannot be written ({_first_line(error)}); nothing was "
                              "published") from None
        if staging.produced() != sorted(staged_names):
            raise OutputError(f"{target}: SimpleITK wrote {staging.produced()} instead of {staged_names} "
                              "for this name; choose a simpler file name; nothing was published")
        verify_volume_file(staged, volume.with_array(array), what=target)
        # Data file first, header last: a reader never finds a new header pointing at old data.
        staging.publish(list(zip(staged_names[::-1], outputs[::-1])))
    return target


def verify_volume_file(path, expected: Volume, what=None) -> None:
    """Read ``path`` back and compare its voxels (exactly) and geometry with ``expected``;
    raise :class:`OutputError` on any difference. SimpleITK does not report a short write
    (a full disk, a file-size limit): this is how one is caught before publishing."""
    import SimpleITK as sitk

    target = what or path
    staged = Path(path)
    array, volume = expected.array, expected
    failure = (f"{target}: the written file is incomplete or differs from the result (no space left "
               "on the device, or a file-size limit?); nothing was published")
    try:
        if volume_suffix(staged) in (".nii", ".nii.gz"):
            _check_nifti_data(staged)
        image = _read_image(staged)
    except (RuntimeError, VolumeError):
        raise OutputError(failure) from None
    written = sitk.GetArrayViewFromImage(image)
    if written.shape != array.shape or not np.array_equal(written, array):
        raise OutputError(failure)
    if not (np.allclose(image.GetSpacing(), volume.spacing, rtol=1e-5, atol=1e-6)
            and np.allclose(image.GetOrigin(), volume.origin, rtol=1e-5, atol=1e-4)
            and np.allclose(image.GetDirection(), volume.direction, atol=1e-5)):
        raise OutputError(f"{target}: the written file's geometry differs from the result; nothing "
                          "was published")
