"""Test helper: write a CT volume as a DICOM series with pydicom (independent of the
SimpleITK/GDCM reader under test), one file per slice, with full geometry tags, optionally
gantry-tilted and with file names out of slice order."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from RevGANCore.volume import Volume


def decimal_string(value: float) -> str:
    """A DICOM decimal string (at most 16 characters)."""
    text = f"{value:.10g}"
    return text if len(text) <= 16 else f"{value:.8g}"


def new_instance(sop_class_uid: str) -> Dataset:
    """An empty explicit-VR little-endian DICOM instance of ``sop_class_uid`` with a new SOP
    instance UID (the caller fills in everything else)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    return ds


def write_ct_series(folder, volume: Volume, kernel: str = "B30f", study_uid: Optional[str] = None,
                    series_uid: Optional[str] = None, intercept: float = -1024.0, slope: float = 1.0,
                    signed: bool = False, modality: str = "CT", patient_id: str = "PHANTOM-1",
                    series_number: int = 1, slice_thickness: Optional[float] = None,
                    file_prefix: str = "slice", positions: Optional[List[np.ndarray]] = None,
                    tilt_deg: float = 0.0, scramble_file_names: bool = False,
                    frame_of_reference_uid: Optional[str] = None) -> List[Path]:
    """Write ``volume`` (HU) as one file per k-slice; slice k sits where
    :func:`written_point` puts it: at origin + k * dz * (third direction column), shifted
    down the columns by ``k * dz * tan(tilt_deg)`` for a gantry tilt. With
    ``scramble_file_names`` the file names do not follow the slice order. Returns the
    file paths, in slice order. Each series gets a new FrameOfReferenceUID unless one is given."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    frame_uid = frame_of_reference_uid or generate_uid()
    direction = volume.direction_matrix
    spacing = np.asarray(volume.spacing)
    stored = np.rint((volume.array.astype(np.float64) - intercept) / slope)
    dtype = np.int16 if signed else np.uint16
    info = np.iinfo(dtype)
    if stored.min() < info.min or stored.max() > info.max:
        raise ValueError("values do not fit the stored pixel type")
    stored = stored.astype(dtype)
    paths = []
    for k in range(volume.shape[0]):
        ds = new_instance(CTImageStorage)
        ds.Modality = modality
        ds.PatientID = patient_id
        ds.PatientName = "Phantom^Test"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.SeriesNumber = series_number
        ds.InstanceNumber = k + 1
        ds.SeriesDescription = f"test {kernel}"
        if not kernel.isascii():
            ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8, so that any kernel name can be stored
        ds.ConvolutionKernel = kernel
        ds.SliceThickness = decimal_string(slice_thickness if slice_thickness is not None else spacing[2])
        ds.SpacingBetweenSlices = decimal_string(spacing[2])
        ds.ImageOrientationPatient = [decimal_string(v) for v in (*direction[:, 0], *direction[:, 1])]
        position = written_point(volume, (0, 0, k), tilt_deg) if positions is None else positions[k]
        ds.ImagePositionPatient = [decimal_string(v) for v in position]
        ds.PixelSpacing = [decimal_string(spacing[1]), decimal_string(spacing[0])]  # row spacing (y), column spacing (x)
        ds.Rows, ds.Columns = volume.shape[1], volume.shape[2]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1 if signed else 0
        ds.RescaleIntercept = decimal_string(intercept)
        ds.RescaleSlope = decimal_string(slope)
        ds.RescaleType = "HU"
        ds.PixelData = np.ascontiguousarray(stored[k]).tobytes()
        number = (k * 7 + 3) % 10007 if scramble_file_names else k  # 7 and 10007: a permutation
        path = folder / f"{file_prefix}{number:05d}.dcm"
        ds.save_as(str(path), enforce_file_format=True)
        paths.append(path)
    return paths


def written_point(volume: Volume, index_ijk: Sequence[int], tilt_deg: float = 0.0) -> np.ndarray:
    """Where :func:`write_ct_series` puts voxel (i, j, k) of ``volume`` in the patient (LPS mm)."""
    i, j, k = index_ijk
    direction = volume.direction_matrix
    sx, sy, sz = volume.spacing
    slice_step = sz * (direction[:, 2] + np.tan(np.radians(tilt_deg)) * direction[:, 1])
    return np.asarray(volume.origin) + i * sx * direction[:, 0] + j * sy * direction[:, 1] + k * slice_step
