"""Enhanced (multi-frame) CT: one file holding every slice, its geometry in functional groups.

An Enhanced CT Image Storage file has no top-level PixelSpacing, ImageOrientationPatient or
ImagePositionPatient: each frame's geometry and rescale sit in functional groups, shared by
all frames (SharedFunctionalGroupsSequence) or given per frame
(PerFrameFunctionalGroupsSequence, which wins):
- PixelMeasuresSequence: PixelSpacing, SliceThickness;
- PlaneOrientationSequence: ImageOrientationPatient;
- PlanePositionSequence: ImagePositionPatient;
- PixelValueTransformationSequence: RescaleSlope, RescaleIntercept.
The frames are checked and ordered along the slice normal exactly like the slices of a
classic series (:func:`.dicom_geometry.stack_slices`), whatever their order in the file.
A file whose frames repeat positions (a perfusion or other time series) is refused: it is
not one volume. pydicom reads the headers and pixels (GDCM ignores the per-frame geometry).
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Tuple

import numpy as np

from .dicom_geometry import TAG_ORIENTATION, TAG_PIXEL_SPACING, TAG_POSITION, SliceGeometry, slice_geometry, \
    stack_slices
from .dicom_tilt import place_on_slice_grid
from .errors import VolumeError
from .volume import Volume, image_to_volume

ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
LEGACY_CONVERTED_ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.2"
ENHANCED_CT_CLASSES = (ENHANCED_CT_IMAGE_STORAGE, LEGACY_CONVERTED_ENHANCED_CT_IMAGE_STORAGE)

#: Positions closer than this (mm) are the same position (decimal strings are rounded).
SAME_POSITION_MM = 1e-3

MISSING_PYDICOM = ("reading Enhanced (multi-frame) CT needs the pydicom package, which is not installed: "
                   "pip install 'revgan-slicer[dicom]' (3D Slicer ships it)")


def is_enhanced_ct(header: Dict[str, str]) -> bool:
    """Whether a file's header (SimpleITK metadata) is a multi-frame CT with functional groups."""
    sop_class = header.get("0008|0016", "").strip().rstrip("\x00")
    return sop_class in ENHANCED_CT_CLASSES


def _pydicom():
    try:
        import pydicom
    except ImportError:
        raise VolumeError(MISSING_PYDICOM) from None
    return pydicom


def _group_value(dataset, frame: int, sequence: str, keyword: str):
    """``keyword`` of ``sequence`` for frame ``frame``: per-frame groups first, then shared."""
    per_frame = dataset.get("PerFrameFunctionalGroupsSequence")
    shared = dataset.get("SharedFunctionalGroupsSequence")
    items = ([per_frame[frame]] if per_frame is not None and frame < len(per_frame) else []) + \
        ([shared[0]] if shared else [])
    for item in items:
        inner = item.get(sequence)
        if inner and keyword in inner[0]:
            return inner[0][keyword].value
    return None


def _as_text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value)


def _frame_geometry(dataset, frame: int, path: str) -> SliceGeometry:
    header = {TAG_PIXEL_SPACING: _as_text(_group_value(dataset, frame, "PixelMeasuresSequence", "PixelSpacing")),
              TAG_ORIENTATION: _as_text(_group_value(dataset, frame, "PlaneOrientationSequence",
                                                     "ImageOrientationPatient")),
              TAG_POSITION: _as_text(_group_value(dataset, frame, "PlanePositionSequence", "ImagePositionPatient"))}
    geometry = slice_geometry(header, f"{path} frame {frame + 1}")
    # Stack messages name the file once (as the series), then the frames.
    return dataclasses.replace(geometry, path=f"frame {frame + 1}")


def frame_geometries(dataset, path) -> List[SliceGeometry]:
    """The geometry of each frame of an Enhanced CT dataset (pydicom, pixels not needed),
    in file order: entry k is frame number k + 1."""
    count = int(dataset.get("NumberOfFrames", 1) or 1)
    return [_frame_geometry(dataset, frame, str(path)) for frame in range(count)]


def _rescale(dataset, frame: int) -> Tuple[float, float]:
    slope = _group_value(dataset, frame, "PixelValueTransformationSequence", "RescaleSlope")
    intercept = _group_value(dataset, frame, "PixelValueTransformationSequence", "RescaleIntercept")
    slope = dataset.get("RescaleSlope", 1.0) if slope is None else slope
    intercept = dataset.get("RescaleIntercept", 0.0) if intercept is None else intercept
    return float(slope), float(intercept)


def _refuse_time_series(frames: List[SliceGeometry], path: str) -> None:
    normal = np.cross(frames[0].row_direction, frames[0].column_direction)
    along = np.sort(np.array([frame.position @ normal for frame in frames]))
    positions = 1 + int(np.count_nonzero(np.diff(along) > SAME_POSITION_MM))
    if positions < len(frames):
        raise VolumeError(f"{path}: holds {len(frames)} frames at {positions} position(s): a time series "
                          "(e.g. a perfusion series), not one volume")


def read_enhanced_ct(path) -> Volume:
    """An Enhanced CT file as a float32 HU Volume with the geometry of its functional groups."""
    path = str(path)
    pydicom = _pydicom()
    try:
        dataset = pydicom.dcmread(path)
    except Exception as error:  # pydicom raises many types for a broken file
        raise VolumeError(f"{path}: is not a readable DICOM file ({error})") from None
    modality = str(dataset.get("Modality", "")).upper()
    if modality and modality != "CT":
        raise VolumeError(f"{path}: is {modality}, not CT")
    count = int(dataset.get("NumberOfFrames", 1) or 1)
    if count < 2:
        raise VolumeError(f"{path}: an Enhanced CT file with {count} frame: a 2D image, not a volume")
    per_frame = dataset.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and len(per_frame) != count:
        raise VolumeError(f"{path}: NumberOfFrames is {count} but PerFrameFunctionalGroupsSequence has "
                          f"{len(per_frame)} items")
    frames = [_frame_geometry(dataset, frame, path) for frame in range(count)]
    _refuse_time_series(frames, path)
    stack = stack_slices(frames, path)
    try:
        stored = dataset.pixel_array
    except Exception as error:  # missing decoder, truncated pixel data, ...
        raise VolumeError(f"{path}: its pixel data cannot be decoded ({error})") from None
    if stored.shape[0] != count:
        raise VolumeError(f"{path}: pixel data holds {stored.shape[0]} frames, NumberOfFrames says {count}")
    index_of = {frame.path: number for number, frame in enumerate(frames)}
    order = [index_of[name] for name in stack.files]
    array = np.empty(stored.shape, dtype=np.float32)
    for k, frame in enumerate(order):
        slope, intercept = _rescale(dataset, frame)
        array[k] = stored[frame].astype(np.float64) * slope + intercept
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(array)
    return image_to_volume(place_on_slice_grid(image, stack), path)


def kernel_of_enhanced_ct(path) -> str:
    """The ConvolutionKernel of an Enhanced CT file (top level, or in the functional groups'
    CTReconstructionSequence), or "" when it has none."""
    dataset = _pydicom().dcmread(str(path), stop_before_pixels=True)
    top = dataset.get("ConvolutionKernel")
    return _as_text(top if top else _group_value(dataset, 0, "CTReconstructionSequence", "ConvolutionKernel"))
