"""Test helper: write a CT volume as one Enhanced CT (multi-frame) file with pydicom, its
geometry and rescale in functional groups, frames in any order and optionally repeated
(a time series)."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from RevGANCore.dicom_enhanced import ENHANCED_CT_IMAGE_STORAGE
from RevGANCore.volume import Volume

from dicom_series_writer import decimal_string, new_instance


def _item(**attributes) -> Dataset:
    item = Dataset()
    for keyword, value in attributes.items():
        setattr(item, keyword, value)
    return item


def write_enhanced_ct(path, volume: Volume, frame_order: Optional[Sequence[int]] = None, kernel: str = "B30f",
                      intercept: float = -1024.0, slope: float = 1.0, time_points: int = 1,
                      modality: str = "CT", moved_mm: Optional[Dict[int, Sequence[float]]] = None) -> Path:
    """Write ``volume`` (HU) as frames: frame n of the file is slice ``frame_order[n]``
    (default: in order), and the whole stack ``time_points`` times over; ``moved_mm`` shifts
    the recorded position of some slices (k: LPS offset in mm)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    direction = volume.direction_matrix
    sx, sy, sz = volume.spacing
    slices = list(frame_order) if frame_order is not None else list(range(volume.shape[0]))
    slices = slices * time_points
    stored = np.rint((volume.array.astype(np.float64) - intercept) / slope).astype(np.uint16)
    ds = new_instance(ENHANCED_CT_IMAGE_STORAGE)
    ds.Modality = modality
    ds.PatientID = "ENHANCED-1"
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.FrameOfReferenceUID = generate_uid()
    ds.SeriesNumber = 7
    ds.InstanceNumber = 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    ds.NumberOfFrames = len(slices)
    ds.Rows, ds.Columns = volume.shape[1], volume.shape[2]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.SharedFunctionalGroupsSequence = [_item(
        PixelMeasuresSequence=[_item(PixelSpacing=[decimal_string(sy), decimal_string(sx)], SliceThickness=decimal_string(sz))],
        PlaneOrientationSequence=[_item(ImageOrientationPatient=[decimal_string(v) for v in (*direction[:, 0],
                                                                                   *direction[:, 1])])],
        PixelValueTransformationSequence=[_item(RescaleIntercept=decimal_string(intercept), RescaleSlope=decimal_string(slope),
                                                RescaleType="HU")],
        CTReconstructionSequence=[_item(ConvolutionKernel=kernel)])]
    per_frame = []
    for number, k in enumerate(slices):
        position = np.asarray(volume.origin) + k * sz * direction[:, 2] + np.asarray((moved_mm or {}).get(k, 0.0))
        per_frame.append(_item(PlanePositionSequence=[_item(ImagePositionPatient=[decimal_string(v) for v in position])],
                               FrameContentSequence=[_item(TemporalPositionIndex=number // len(set(slices)) + 1)]))
    ds.PerFrameFunctionalGroupsSequence = per_frame
    ds.PixelData = np.ascontiguousarray(stored[slices]).tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return path
