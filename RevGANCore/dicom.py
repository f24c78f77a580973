"""DICOM series: finding them, describing them (kernel, thickness, study) and reading one.

SimpleITK (GDCM) does the decoding, including rescale slope/intercept. This module adds the
checks GDCM leaves out, so that a folder that is not one clean CT series fails loudly
instead of giving a volume with silently wrong geometry:
- every slice of a series has the same size, pixel spacing and orientation;
- slice positions are distinct and evenly spaced along the slice normal;
- the modality is CT.

GDCM orders slices along the normal ``row x column`` of ImageOrientationPatient, so the k
axis of the result always points that way: a volume written with a left-handed direction
(k against the normal) reads back flipped in k with its origin at the other end. It is the
same physical image; resample one onto the other's grid to compare them voxel by voxel.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .errors import VolumeError
from .volume import Volume, image_to_volume

# DICOM tags as SimpleITK names them ("group|element", lower-case hex).
TAG_STUDY_UID = "0020|000d"
TAG_SERIES_UID = "0020|000e"
TAG_FRAME_OF_REFERENCE_UID = "0020|0052"
TAG_MODALITY = "0008|0060"
TAG_KERNEL = "0018|1210"
TAG_SLICE_THICKNESS = "0018|0050"
TAG_SERIES_DESCRIPTION = "0008|103e"
TAG_PATIENT_ID = "0010|0020"
TAG_ROWS = "0028|0010"
TAG_COLUMNS = "0028|0011"
TAG_PIXEL_SPACING = "0028|0030"
TAG_ORIENTATION = "0020|0037"
TAG_POSITION = "0020|0032"
TAG_NUMBER_OF_FRAMES = "0028|0008"

#: Relative tolerance on slice spacing: more variation is reported as uneven slices.
SLICE_SPACING_TOLERANCE = 0.01


@dataclass(frozen=True)
class DicomSeriesInfo:
    """What the dataset builder needs to know about one series, read from its headers."""

    series_uid: str
    study_uid: str
    folder: str
    files: Tuple[str, ...]
    modality: str
    kernel: str
    slice_thickness_mm: Optional[float]
    description: str
    patient_id: str
    frame_of_reference_uid: str

    @property
    def number_of_files(self) -> int:
        return len(self.files)


def _header(path: str) -> Dict[str, str]:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise VolumeError(f"{path}: is not a readable DICOM file (corrupt or truncated?)") from None
    return {key: reader.GetMetaData(key).strip() for key in reader.GetMetaDataKeys()}


def _floats(text: str, count: int, where: str, tag: str) -> np.ndarray:
    try:
        values = [float(v) for v in text.replace("\\", " ").split()]
    except ValueError:
        values = []
    if len(values) != count:
        raise VolumeError(f"{where}: DICOM tag ({tag.replace('|', ',')}) should hold {count} numbers, got {text!r}")
    return np.asarray(values)


def normalise_kernel(text: str) -> str:
    """A kernel name as a domain label: multi-valued entries ('Br40d\\3') are joined with
    '-', spaces removed; an absent kernel is 'unknown'."""
    parts = [part.strip() for part in text.split("\\") if part.strip()]
    label = "-".join(parts).replace(" ", "")
    return label or "unknown"


def _series_uids(folder: str) -> List[str]:
    import SimpleITK as sitk

    try:
        return list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(folder))
    except RuntimeError:
        return []


def _series_files(folder: str, series_uid: str) -> List[str]:
    import SimpleITK as sitk

    return list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder, series_uid))


def describe_series(folder, series_uid: str) -> DicomSeriesInfo:
    """Read the headers of one series in ``folder`` (not its pixels)."""
    folder = str(folder)
    files = _series_files(folder, series_uid)
    if not files:
        raise VolumeError(f"{folder}: holds no DICOM series {series_uid}")
    tags = _header(files[0])
    thickness = tags.get(TAG_SLICE_THICKNESS, "")
    try:
        thickness_mm: Optional[float] = float(thickness) if thickness else None
    except ValueError:
        thickness_mm = None
    return DicomSeriesInfo(
        series_uid=series_uid, study_uid=tags.get(TAG_STUDY_UID, ""), folder=folder,
        files=tuple(files), modality=tags.get(TAG_MODALITY, "").upper(),
        kernel=normalise_kernel(tags.get(TAG_KERNEL, "")), slice_thickness_mm=thickness_mm,
        description=tags.get(TAG_SERIES_DESCRIPTION, ""), patient_id=tags.get(TAG_PATIENT_ID, ""),
        frame_of_reference_uid=tags.get(TAG_FRAME_OF_REFERENCE_UID, ""))


def find_series(folder, recursive: bool = False) -> List[DicomSeriesInfo]:
    """Every DICOM series in ``folder`` (and, with ``recursive``, its sub-folders), one
    entry per (folder, SeriesInstanceUID), in a stable order."""
    root = Path(folder)
    if not root.is_dir():
        raise VolumeError(f"{root}: no such folder")
    folders = [str(root)]
    if recursive:
        folders = sorted(str(Path(here)) for here, _, names in os.walk(str(root)) if names)
    found: List[DicomSeriesInfo] = []
    for here in folders:
        for uid in sorted(_series_uids(here)):
            found.append(describe_series(here, uid))
    return found


def _choose_series(folder: str, series_uid: Optional[str]) -> DicomSeriesInfo:
    uids = _series_uids(folder)
    if not uids:
        raise VolumeError(f"{folder}: holds no DICOM series (an empty folder, or no DICOM files in it)")
    if series_uid is not None:
        if series_uid not in uids:
            raise VolumeError(f"{folder}: holds no DICOM series {series_uid}; it holds {', '.join(sorted(uids))}")
        return describe_series(folder, series_uid)
    series = [describe_series(folder, uid) for uid in uids]
    series.sort(key=lambda info: -info.number_of_files)
    if len(series) > 1 and series[0].number_of_files == series[1].number_of_files:
        tied = [info.series_uid for info in series if info.number_of_files == series[0].number_of_files]
        raise VolumeError(f"{folder}: holds {len(series)} DICOM series and the largest are equally big "
                          f"({series[0].number_of_files} files each: {', '.join(tied)}); name one with series_uid")
    return series[0]


def _checked_slice_order(info: DicomSeriesInfo) -> List[str]:
    """The series' files ordered along the slice normal, after checking that they form one
    evenly spaced stack of equal slices."""
    where = info.folder
    headers = [_header(path) for path in info.files]
    modalities = sorted({h.get(TAG_MODALITY, "").upper() for h in headers})
    if len(modalities) > 1:
        raise VolumeError(f"{where}: mixed series {info.series_uid}: slices of modalities {modalities}")
    if modalities[0] and modalities[0] != "CT":
        raise VolumeError(f"{where}: series {info.series_uid} is {modalities[0]}, not CT")
    sizes = sorted({(h.get(TAG_ROWS, ""), h.get(TAG_COLUMNS, "")) for h in headers})
    if len(sizes) > 1:
        raise VolumeError(f"{where}: mixed series {info.series_uid}: slices of different sizes "
                          f"(rows, columns) {sizes}")
    spacings = np.array([_floats(h.get(TAG_PIXEL_SPACING, ""), 2, path, TAG_PIXEL_SPACING)
                         for h, path in zip(headers, info.files)])
    if np.ptp(spacings, axis=0).max() > 1e-4:
        raise VolumeError(f"{where}: mixed series {info.series_uid}: slices with different pixel spacings")
    orientations = np.array([_floats(h.get(TAG_ORIENTATION, ""), 6, path, TAG_ORIENTATION)
                             for h, path in zip(headers, info.files)])
    if np.ptp(orientations, axis=0).max() > 1e-4:
        raise VolumeError(f"{where}: mixed series {info.series_uid}: slices with different orientations")
    positions = np.array([_floats(h.get(TAG_POSITION, ""), 3, path, TAG_POSITION)
                          for h, path in zip(headers, info.files)])
    normal = np.cross(orientations[0][:3], orientations[0][3:])
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    steps = np.diff(along[order])
    if steps.size and steps.min() < 1e-3:
        raise VolumeError(f"{where}: mixed series {info.series_uid}: two slices at the same position "
                          f"({along[order][np.argmin(steps)]:.3f} mm along the normal)")
    if steps.size and (steps.max() - steps.min()) > SLICE_SPACING_TOLERANCE * steps.mean():
        raise VolumeError(f"{where}: series {info.series_uid} has uneven slice spacing "
                          f"({steps.min():.3f} to {steps.max():.3f} mm): missing slices or mixed series")
    return [info.files[i] for i in order]


def read_dicom_series(folder, series_uid: Optional[str] = None) -> Volume:
    """The series in ``folder`` (the largest, or ``series_uid``) as a float32 HU Volume;
    source is the folder. Raises :class:`VolumeError` for an empty folder, equally large
    competing series, mixed or unevenly spaced slices, non-CT modality or a single slice."""
    import SimpleITK as sitk

    folder = str(folder)
    info = _choose_series(folder, series_uid)
    files = _checked_slice_order(info)
    if len(files) == 1:
        # One file: a single slice (refused below as 2D) or a multi-frame volume.
        try:
            image = sitk.ReadImage(files[0], sitk.sitkFloat32)
        except RuntimeError:
            raise VolumeError(f"{files[0]}: cannot be read (corrupt or truncated DICOM?)") from None
        return image_to_volume(image, files[0])
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    # Float output: slices may carry different rescale slopes/intercepts.
    reader.SetOutputPixelType(sitk.sitkFloat32)
    try:
        image = reader.Execute()
    except RuntimeError as error:
        message = [line for line in str(error).splitlines() if line.strip()]
        raise VolumeError(f"{folder}: series {info.series_uid} cannot be read "
                          f"({message[-1].strip() if message else 'unknown error'}); "
                          "a file may be corrupt or truncated") from None
    return image_to_volume(image, folder)


def read_series(info: DicomSeriesInfo) -> Volume:
    """Read a series described by :func:`find_series`."""
    return read_dicom_series(info.folder, info.series_uid)


def kernel_sharpness(kernel: str) -> float:
    """A sortable sharpness for a kernel label: the first number in it (Siemens B30f=30,
    B50f=50, Br40d=40; GE/Canon names without numbers sort as 0). Larger is sharper."""
    digits = ""
    for character in kernel:
        if character.isdigit():
            digits += character
        elif digits:
            break
    return float(digits) if digits else 0.0


def sort_kernels_sharp_first(kernels: Sequence[str]) -> List[str]:
    return sorted(kernels, key=lambda k: (-kernel_sharpness(k), k))
