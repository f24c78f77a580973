"""Writing a result as a derived DICOM CT series (one file per slice), through the output door.

The series is one a radiologist can file beside its source (docs/design.md, decision 13):
- patient and study (and the frame of reference) are copied from the source series when
  the input was DICOM, so a viewer or PACS shows the result in the source study; without
  a DICOM source a new study (and a made-up patient ID) is created;
- a new SeriesInstanceUID and new SOPInstanceUIDs (``pydicom.uid.generate_uid``), ImageType
  ``DERIVED\\SECONDARY``, SeriesDescription and ConvolutionKernel describing the result,
  DerivationDescription and, per slice, a SourceImageSequence naming the source slices it
  was computed from (those less than one source slice step away, else the nearest; for an
  Enhanced (multi-frame) CT source, the frames, by ReferencedFrameNumber);
- ImageComments (0020,4000) says that the images are not for diagnosis;
- the geometry is exact: ImageOrientationPatient, ImagePositionPatient per slice,
  PixelSpacing, SliceThickness and SpacingBetweenSlices, for oblique and
  super-resolution grids alike. A left-handed volume is written as the same physical image
  in right-handed slice order (DICOM readers order slices along row x column);
- pixels are signed int16 whole HU with RescaleSlope 1 and RescaleIntercept 0.

The output is a folder that must be new or empty (a series never mixes with other files)
and must not be, nor hold, an input. The whole folder is written in a staging folder, read
back with the project's own reader and compared voxel for voxel and in geometry, and only
then moved into place in one rename. pydicom is needed (3D Slicer ships it; elsewhere
``pip install revgan-slicer[dicom]``).
"""

from __future__ import annotations

import copy
import datetime
import os
import uuid
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from . import __version__
from .dicom import DicomSeriesInfo
from .dicom_enhanced import ENHANCED_CT_CLASSES, frame_geometries
from .errors import OutputError, VolumeError
from .output import Staging, check_output_folder, check_room
from .volume import Volume
from .volume_io import storable_array, volume_input_files

PURPOSE_SOURCE_IMAGE = ("121322", "DCM", "Source image for image processing operation")
NOT_FOR_DIAGNOSIS = ("NOT FOR DIAGNOSTIC USE: computed by a research model (RevGAN), not acquired; "
                     "compare with the source series")
MANUFACTURER = "RevGAN for 3D Slicer"
#: Added to the source's SeriesNumber, so the result sorts after it in a viewer's list.
SERIES_NUMBER_OFFSET = 1000
#: The range of a DICOM IS value (SeriesNumber); strict readers refuse a number outside it. A
#: sum above it becomes the largest IS value, which still sorts after the source.
IS_MIN, IS_MAX = -2 ** 31, 2 ** 31 - 1

#: Patient, study and frame-of-reference attributes copied from the source series.
COPIED_KEYWORDS = (
    "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex", "PatientAge",
    "PatientSize", "PatientWeight", "PatientIdentityRemoved", "DeidentificationMethod",
    "StudyInstanceUID", "StudyDate", "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName",
    "StudyDescription", "FrameOfReferenceUID", "PositionReferenceIndicator", "BodyPartExamined",
    "PatientPosition",
)

#: Bytes one file takes beyond its pixels (header, a few source references), for the space check.
HEADER_BYTES = 8192

MISSING_PYDICOM = ("DICOM output needs the pydicom package, which is not installed: "
                   "pip install 'revgan-slicer[dicom]' (3D Slicer ships it)")


def require_pydicom():
    """The pydicom module, or a one-line error saying how to install it."""
    try:
        import pydicom
        import pydicom.uid  # noqa: F401
    except ImportError:
        raise OutputError(MISSING_PYDICOM) from None
    return pydicom


def check_dicom_output(folder, inputs: Sequence = ()) -> Path:
    """Refuse, before any work, a DICOM output folder that exists as a file, holds anything,
    is or holds an input (input files, DICOM folders, model files), or cannot be created;
    and refuse at once when pydicom is missing. Creates nothing."""
    require_pydicom()
    target = Path(os.path.abspath(os.path.expanduser(os.fspath(folder))))
    input_paths = []
    for source in inputs:
        if source:
            input_paths.append(Path(source))
            if Path(source).exists():
                input_paths.extend(volume_input_files(source))
    check_output_folder(target, input_paths)
    return target


def _decimal(value: float) -> str:
    """A DICOM decimal string (DS: at most 16 characters), as precise as fits."""
    value = 0.0 if abs(value) < 1e-12 else float(value)
    for digits in range(12, 4, -1):
        text = f"{value:.{digits}g}"
        if len(text) <= 16:
            return text
    raise OutputError(f"the value {value!r} cannot be stored as a DICOM decimal string")


def _short_text(text: str, limit: int) -> str:
    """Text for a DICOM LO/SH/LT value: printable, without backslashes, at most ``limit``."""
    clean = "".join(c if c.isprintable() else " " for c in text).replace("\\", "/")
    return clean[:limit]


def right_handed(volume: Volume) -> Volume:
    """The same physical image with its k axis along row x column (DICOM's slice order)."""
    direction = volume.direction_matrix
    if np.linalg.det(direction) > 0:
        return volume
    last = np.asarray(volume.origin) + (volume.shape[0] - 1) * volume.spacing[2] * direction[:, 2]
    direction = direction.copy()
    direction[:, 2] = -direction[:, 2]
    return Volume(volume.array[::-1], volume.spacing, tuple(last), tuple(direction.ravel()), volume.source)


class _SourceSlices:
    """The source series' shared header and where its slices (or, in an Enhanced CT file,
    its frames) lie along their normal."""

    def __init__(self, info: DicomSeriesInfo):
        pydicom = require_pydicom()
        self.info = info
        self.header = None
        # (position along the normal, SOPClassUID, SOPInstanceUID, frame number or 0 for a whole file)
        references: List[Tuple[float, str, str, int]] = []
        normal = None
        for path in info.files:
            try:
                dataset = pydicom.dcmread(path, stop_before_pixels=True)
            except Exception as error:  # pydicom raises many types for broken files
                raise VolumeError(f"{path}: cannot be read as DICOM for the output's provenance ({error})") from None
            if self.header is None:
                self.header = dataset
            sop_class, sop = str(dataset.SOPClassUID), str(dataset.SOPInstanceUID)
            if sop_class in ENHANCED_CT_CLASSES and int(dataset.get("NumberOfFrames", 1) or 1) > 1:
                # One file, every slice a frame placed by the functional groups (already checked by the reader).
                for frame, geometry in enumerate(frame_geometries(dataset, path), start=1):
                    if normal is None:
                        normal = np.cross(geometry.row_direction, geometry.column_direction)
                    references.append((float(geometry.position @ normal), sop_class, sop, frame))
                continue
            if normal is None and "ImageOrientationPatient" in dataset:
                cosines = np.asarray([float(v) for v in dataset.ImageOrientationPatient])
                normal = np.cross(cosines[:3], cosines[3:])
            position = np.asarray([float(v) for v in dataset.get("ImagePositionPatient", [0, 0, 0])])
            along = float(position @ normal) if normal is not None else 0.0
            references.append((along, sop_class, sop, 0))
        references.sort()
        self.references = references
        self.normal = normal
        steps = np.diff([along for along, _, _, _ in references])
        self.step = float(np.median(steps)) if len(steps) else 0.0

    def near(self, point: np.ndarray) -> List[Tuple[str, str, Tuple[int, ...]]]:
        """(SOPClassUID, SOPInstanceUID, frame numbers) of the source slices or frames less
        than one step from ``point``, one entry per instance (no frame numbers for a
        single-frame instance)."""
        if self.normal is None or self.step <= 0:
            chosen = list(range(len(self.references)))
        else:
            along = float(point @ self.normal)
            distances = [abs(position - along) for position, _, _, _ in self.references]
            chosen = [i for i, d in enumerate(distances) if d < self.step * 0.999]
            if not chosen:
                chosen = [int(np.argmin(distances))]
        instances: dict = {}
        for i in chosen:
            _, sop_class, sop, frame = self.references[i]
            frames = instances.setdefault((sop_class, sop), [])
            if frame:
                frames.append(frame)
        return [(sop_class, sop, tuple(sorted(frames))) for (sop_class, sop), frames in instances.items()]


def _base_dataset(volume: Volume, source: Optional[_SourceSlices], description: str, kernel: Sequence[str],
                  derivation: str, model_name: str, series_number: int):
    """The attributes every slice of the new series shares."""
    pydicom = require_pydicom()
    from pydicom.dataset import Dataset
    from pydicom.uid import generate_uid

    now = datetime.datetime.now()
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: any copied name can be stored
    if source is not None:
        for keyword in COPIED_KEYWORDS:
            if keyword in source.header and source.header[keyword].value not in (None, ""):
                value = source.header[keyword].value
                setattr(ds, keyword, str(value) if keyword.endswith("Name") else value)
    # A new study happens now; a source study without a date keeps its empty (type 2) date.
    new_study = source is None
    for keyword, value in (("PatientName", ""), ("PatientID", f"revgan-{uuid.uuid4().hex[:12]}"),
                           ("PatientBirthDate", ""), ("PatientSex", ""), ("StudyInstanceUID", generate_uid()),
                           ("StudyDate", now.strftime("%Y%m%d") if new_study else ""),
                           ("StudyTime", now.strftime("%H%M%S") if new_study else ""),
                           ("StudyID", ""), ("AccessionNumber", ""), ("ReferringPhysicianName", ""),
                           ("FrameOfReferenceUID", generate_uid()), ("PositionReferenceIndicator", "")):
        if keyword not in ds:
            setattr(ds, keyword, value)
    ds.SOPClassUID = pydicom.uid.CTImageStorage
    ds.Modality = "CT"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = series_number
    ds.SeriesDate = ds.ContentDate = ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.SeriesTime = ds.ContentTime = ds.InstanceCreationTime = now.strftime("%H%M%S")
    ds.SeriesDescription = _short_text(description, 64)
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.ConvolutionKernel = [_short_text(part, 16) for part in kernel if part] or ""
    ds.DerivationDescription = _short_text(derivation, 1024)
    ds.ImageComments = NOT_FOR_DIAGNOSIS
    ds.BurnedInAnnotation = "NO"
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = _short_text(model_name, 64)
    ds.SoftwareVersions = f"RevGANCore {__version__}"
    ds.KVP = ""
    ds.AcquisitionNumber = ""
    direction = volume.direction_matrix
    ds.ImageOrientationPatient = [_decimal(v) for v in (*direction[:, 0], *direction[:, 1])]
    ds.PixelSpacing = [_decimal(volume.spacing[1]), _decimal(volume.spacing[0])]  # rows (y), columns (x)
    ds.SpacingBetweenSlices = _decimal(volume.spacing[2])
    thickness = volume.spacing[2]
    if source is not None and source.info.slice_thickness_mm and np.isclose(source.step, volume.spacing[2], rtol=1e-4):
        thickness = source.info.slice_thickness_mm  # same slice grid: the slices are as thick as the source's
    ds.SliceThickness = _decimal(thickness)
    ds.Rows, ds.Columns = volume.shape[1], volume.shape[2]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    return ds


def _source_reference(sop_class: str, sop_instance: str, frames: Sequence[int] = ()):
    from pydicom.dataset import Dataset

    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_instance
    if frames:
        item.ReferencedFrameNumber = list(frames) if len(frames) > 1 else frames[0]
    purpose = Dataset()
    purpose.CodeValue, purpose.CodingSchemeDesignator, purpose.CodeMeaning = PURPOSE_SOURCE_IMAGE
    item.PurposeOfReferenceCodeSequence = [purpose]
    return item


def _save(dataset, path: Path) -> None:
    pydicom = require_pydicom()
    if int(pydicom.__version__.split(".")[0]) >= 3:
        dataset.save_as(str(path), enforce_file_format=True)
    else:  # pydicom 2.x (3D Slicer 5.8)
        dataset.save_as(str(path), write_like_original=False)


def write_dicom_series(volume: Volume, folder, source: Optional[DicomSeriesInfo] = None,
                       description: str = "RevGAN result", kernel: Sequence[str] = ("RevGAN",),
                       derivation: str = "computed by RevGAN", model_name: str = "",
                       series_number: Optional[int] = None, inputs: Sequence = ()) -> Path:
    """Write ``volume`` (HU) into the new or empty ``folder`` as a derived CT series of
    ``source`` (a series from :func:`~RevGANCore.dicom.choose_series`; None for a new
    study). ``description`` becomes SeriesDescription (64 characters kept), ``kernel`` the
    ConvolutionKernel values (16 characters each), ``derivation`` DerivationDescription,
    ``model_name`` ManufacturerModelName. ``inputs`` (and ``source``'s folder) may neither be
    the folder nor lie in it. Written, read back, compared and published as a whole; returns
    the folder."""
    pydicom = require_pydicom()
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    target = check_dicom_output(folder, [*inputs, source.folder if source else None, volume.source])
    if volume.shape[0] < 2:
        raise OutputError(f"{target}: a DICOM series needs at least 2 slices, the result has {volume.shape[0]}")
    oriented = right_handed(volume)
    pixels = storable_array(oriented.array, "int16", target)
    oriented = oriented.with_array(pixels)
    slice_bytes = pixels.shape[1] * pixels.shape[2] * 2 + HEADER_BYTES
    check_room(target.parent, [slice_bytes] * pixels.shape[0], target)
    slices = _SourceSlices(source) if source is not None else None
    if series_number is None:
        base_number = source.series_number if source is not None and source.series_number else 0
        series_number = base_number + SERIES_NUMBER_OFFSET
        if series_number > IS_MAX:
            series_number = IS_MAX
        elif series_number < IS_MIN:  # a source number no valid file has
            series_number = SERIES_NUMBER_OFFSET
    elif not IS_MIN <= series_number <= IS_MAX:
        raise OutputError(f"{target}: SeriesNumber {series_number} is outside the DICOM range "
                          f"{IS_MIN} to {IS_MAX}")
    base = _base_dataset(oriented, slices, description, kernel, derivation, model_name, series_number)
    direction = oriented.direction_matrix
    with Staging(target) as staging:
        series_folder = staging.path("series")
        series_folder.mkdir()
        for k in range(pixels.shape[0]):
            position = np.asarray(oriented.origin) + k * oriented.spacing[2] * direction[:, 2]
            dataset = copy.deepcopy(base)
            dataset.file_meta = FileMetaDataset()
            dataset.file_meta.MediaStorageSOPClassUID = base.SOPClassUID
            dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            dataset.InstanceNumber = k + 1
            dataset.ImagePositionPatient = [_decimal(v) for v in position]
            dataset.SliceLocation = _decimal(float(position @ direction[:, 2]))
            if slices is not None:
                dataset.SourceImageSequence = [_source_reference(*reference) for reference in slices.near(position)]
            dataset.PixelData = np.ascontiguousarray(pixels[k]).astype("<i2").tobytes()
            try:
                _save(dataset, series_folder / f"IMG{k + 1:05d}.dcm")
            except OSError as error:
                from .output import describe_os_error

                raise OutputError(f"{target}: cannot be written ({describe_os_error(error)}); nothing was "
                                  "published") from None
        verify_dicom_folder(series_folder, oriented, what=target)
        staging.publish_folder("series", target)
    return target


def verify_dicom_folder(folder: Path, expected: Volume, what=None) -> None:
    """Read a written series back with the project's reader and compare it with
    ``expected`` (whole-HU voxels exactly, geometry to DICOM's decimal precision); raise
    :class:`OutputError` on any difference."""
    from .volume_io import read_volume

    target = what or folder
    files = [item for item in Path(folder).iterdir() if item.is_file()]
    try:
        written = read_volume(folder, expect_ct=False)
    except VolumeError as error:
        raise OutputError(f"{target}: the written DICOM series does not read back ({error}); nothing was "
                          "published") from None
    if len(files) != expected.shape[0] or written.shape != expected.shape or \
            not np.array_equal(written.array, expected.array.astype(np.float32)):
        raise OutputError(f"{target}: the written DICOM series is incomplete or differs from the result (no "
                          "space left on the device?); nothing was published")
    if not (np.allclose(written.spacing, expected.spacing, rtol=1e-5, atol=1e-6)
            and np.allclose(written.origin, expected.origin, rtol=1e-6, atol=1e-4)
            and np.allclose(written.direction, expected.direction, atol=1e-5)):
        raise OutputError(f"{target}: the written DICOM series' geometry differs from the result; nothing "
                          "was published")


def derived_series_text(model, direction: str, source_kernel: str = "") -> dict:
    """SeriesDescription, ConvolutionKernel values, DerivationDescription and model name of
    a DICOM series computed by ``model``: a kernel conversion has the look of its target
    domain; a super-resolution keeps the source's kernel (when known)."""
    source_name, target_name = model.metadata.domain_names(direction)
    if model.task == "super_resolution" and direction == "forward":
        what = "super-resolution"
        result_kernel = source_kernel if source_kernel and source_kernel != "unknown" else target_name
    else:
        what = f"{model.task} {source_name}->{target_name}"
        result_kernel = target_name
    name = model.name or "unnamed model"
    derivation = (f"{model.task} translation {source_name} -> {target_name} by the RevGAN model {name!r} "
                  f"(RevGANCore {__version__}); not for diagnostic use")
    return {"description": f"RevGAN {what} ({name})", "kernel": ["RevGAN", result_kernel],
            "derivation": derivation, "model_name": name}
