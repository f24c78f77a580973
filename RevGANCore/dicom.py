"""DICOM series: finding them, describing them (kernel, thickness, study) and reading one.

SimpleITK (GDCM) does the decoding, including rescale slope/intercept. This module adds the
checks GDCM leaves out, so that a folder that is not one clean CT series fails loudly
instead of giving a volume with silently wrong geometry:
- every slice of a series has the same size, pixel spacing and orientation;
- the geometry tags are sane and the slices form one evenly spaced straight stack, whose
  geometry is computed from the headers, tilted or not (:mod:`.dicom_geometry`,
  :mod:`.dicom_tilt`), never taken from GDCM's guesses;
- no DICOM file in the folder was silently skipped (:mod:`.dicom_files`), objects without
  an image (reports, presentation states, RT structure sets) aside: they belong to no series;
- the modality is CT.
An Enhanced (multi-frame) CT file is read by :mod:`.dicom_enhanced`, from its functional groups.
ITK's warning lines are kept off the terminal: problems are reported as one line each.

GDCM orders slices along the normal ``row x column`` of ImageOrientationPatient, so the k
axis of the result always points that way: a volume written with a left-handed direction
(k against the normal) reads back flipped in k with its origin at the other end. It is the
same physical image; resample one onto the other's grid to compare them voxel by voxel.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from .dicom_enhanced import is_enhanced_ct, kernel_of_enhanced_ct, read_enhanced_ct
from .dicom_files import looks_like_dicom, non_image_object, problem_with, unparsed_dicom_files
from .dicom_geometry import SliceStack, slice_geometry, stack_slices
from .dicom_tilt import place_on_slice_grid
from .errors import VolumeError
from .itk_quiet import itk_warnings_silenced
from .printable import printable
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
TAG_NUMBER_OF_FRAMES = "0028|0008"
TAG_SERIES_NUMBER = "0020|0011"
TAG_IMAGE_TYPE = "0008|0008"
TAG_MANUFACTURER = "0008|0070"
TAG_SOFTWARE_VERSIONS = "0018|1020"


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
    series_number: Optional[int] = None
    rows: int = 0
    columns: int = 0
    image_type: Tuple[str, ...] = ()
    manufacturer: str = ""
    software_versions: str = ""
    #: Why :func:`choose_series` took this series over others, and what it ignored ("" if nothing).
    choice: str = ""

    @property
    def number_of_files(self) -> int:
        return len(self.files)

    def summary(self) -> str:
        """One line for a log: UID, number, description, kernel and size, then how it was chosen."""
        number = "" if self.series_number is None else f" (number {self.series_number})"
        description = f" {self.description!r}" if self.description else ""
        choice = f"; {self.choice}" if self.choice else ""
        return (f"series {self.series_uid}{number}{description}, kernel {self.kernel}, "
                f"{self.columns}x{self.rows} pixels x {self.number_of_files} files{choice}")

    def label(self, size: bool = False) -> str:
        """The UID with what tells series apart (number, a modality other than CT, kernel,
        description and, with ``size``, the number of files), printable."""
        details = [] if self.series_number is None else [f"number {self.series_number}"]
        if self.modality and self.modality != "CT":
            details.append(self.modality)
        if self.kernel != "unknown":
            details.append(f"kernel {self.kernel}")
        if self.description:
            details.append(f"'{self.description}'")
        if size:
            details.append(f"{self.number_of_files} files")
        return printable(f"{self.series_uid} ({', '.join(details)})" if details else self.series_uid)


def _header(path: str) -> Dict[str, str]:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    try:
        with itk_warnings_silenced():
            reader.ReadImageInformation()
    except RuntimeError:
        raise VolumeError(f"{path}: is not a readable DICOM file (corrupt or truncated?)") from None
    return {key: reader.GetMetaData(key).strip() for key in reader.GetMetaDataKeys()}


def normalise_kernel(text: str) -> str:
    """A kernel name as a domain label: multi-valued entries ('Br40d\\3') are joined with
    '-', spaces removed; an absent kernel is 'unknown'."""
    parts = [part.strip() for part in text.split("\\") if part.strip()]
    label = "-".join(parts).replace(" ", "")
    return label or "unknown"


def _series_uids(folder: str) -> List[str]:
    import SimpleITK as sitk

    try:
        with itk_warnings_silenced():
            return list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(folder))
    except RuntimeError:
        return []


def _series_files(folder: str, series_uid: str) -> List[str]:
    import SimpleITK as sitk

    with itk_warnings_silenced():
        return list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder, series_uid))


def _optional_int(text: str) -> Optional[int]:
    try:
        return int(float(text)) if text.strip() else None
    except ValueError:
        return None


def describe_series(folder, series_uid: str) -> DicomSeriesInfo:
    """Read the headers of one series in ``folder`` (not its pixels)."""
    folder = str(folder)
    files = _series_files(folder, series_uid)
    if not files:
        raise VolumeError(f"{folder}: holds no DICOM series {series_uid}")
    tags = _header(files[0])
    if is_enhanced_ct(tags) and not tags.get(TAG_KERNEL, "").strip():
        # Enhanced CT keeps its kernel in the functional groups, out of GDCM's sight.
        tags[TAG_KERNEL] = kernel_of_enhanced_ct(files[0])
    thickness = tags.get(TAG_SLICE_THICKNESS, "")
    try:
        thickness_mm: Optional[float] = float(thickness) if thickness else None
    except ValueError:
        thickness_mm = None
    return DicomSeriesInfo(
        series_number=_optional_int(tags.get(TAG_SERIES_NUMBER, "")),
        rows=_optional_int(tags.get(TAG_ROWS, "")) or 0, columns=_optional_int(tags.get(TAG_COLUMNS, "")) or 0,
        series_uid=series_uid, study_uid=tags.get(TAG_STUDY_UID, ""), folder=folder,
        files=tuple(files), modality=tags.get(TAG_MODALITY, "").upper(),
        kernel=normalise_kernel(tags.get(TAG_KERNEL, "")), slice_thickness_mm=thickness_mm,
        description=tags.get(TAG_SERIES_DESCRIPTION, ""), patient_id=tags.get(TAG_PATIENT_ID, ""),
        frame_of_reference_uid=tags.get(TAG_FRAME_OF_REFERENCE_UID, ""),
        image_type=tuple(part.strip().upper() for part in tags.get(TAG_IMAGE_TYPE, "").split("\\") if part.strip()),
        manufacturer=tags.get(TAG_MANUFACTURER, ""), software_versions=tags.get(TAG_SOFTWARE_VERSIONS, ""))


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


def _refuse_skipped_files(folder: str, series: Sequence[DicomSeriesInfo]) -> List[Tuple[Path, str]]:
    """Refuse a folder holding a DICOM file that GDCM left out of every series, unless it is
    an object without an image (a dose report, a presentation state, an RT structure set),
    which belongs to no image series; those come back as (path, what it is)."""
    skipped = unparsed_dicom_files(folder, [path for info in series for path in info.files])
    objects = [(path, non_image_object(path)) for path in skipped]
    broken = [path for path, kind in objects if not kind]
    if broken:
        more = f" (and {len(broken) - 1} more such files)" if len(broken) > 1 else ""
        raise VolumeError(f"{broken[0]}: {problem_with(broken[0])}{more}; without it the DICOM series "
                          f"in {folder} would be incomplete")
    return [(path, kind) for path, kind in objects if kind]


#: Equally large series listed at most in the refusal that asks the user to choose.
TIED_SERIES_SHOWN = 6


def choose_series(folder, series: Union[None, str, int] = None) -> DicomSeriesInfo:
    """The series of ``folder`` to read: the one whose SeriesInstanceUID is ``series``, or
    else whose SeriesNumber it is. Without ``series``: among the CT series (or, if none says
    CT, those without a modality), original ones before RevGAN's own results
    (:func:`.dicom_pairing.is_our_derived_series`), the largest; equally large ones are
    refused, each named with its number, kernel and description. Several series none of
    which is CT are refused, naming them. ``choice`` of the result says what was passed over.
    Also refuses a folder in which GDCM silently skipped a DICOM file, except objects without
    an image (they are ignored and named in ``choice``)."""
    folder = str(folder)
    uids = _series_uids(folder)
    found = [describe_series(folder, uid) for uid in uids]
    ignored = _refuse_skipped_files(folder, found)
    if not uids:
        raise VolumeError(_no_series_here(folder, series))
    if series is not None:
        chosen, notes = _named_series(folder, found, str(series).strip()), []
    else:
        chosen, notes = _default_series(folder, found)
    if ignored:
        names = ", ".join(f"{path.name}: {kind}" for path, kind in ignored[:3]) + (", ..." if len(ignored) > 3 else "")
        notes.append(f"ignored {len(ignored)} non-image DICOM object{'s' if len(ignored) > 1 else ''} ({names})")
    return dataclasses.replace(chosen, choice=printable("; ".join(notes))) if notes else chosen


def _default_series(folder: str, found: List[DicomSeriesInfo]) -> Tuple[DicomSeriesInfo, List[str]]:
    """:func:`choose_series` without a series named: the series, and notes naming the series
    passed over that the largest-series rule alone would have taken (as large or larger)."""
    # Imported here: dicom_pairing builds on this module.
    from .dicom_pairing import is_our_derived_series

    candidates = [info for info in found if info.modality == "CT"] or [info for info in found if not info.modality]
    if not candidates:
        if len(found) == 1:
            return found[0], []  # refused when read, naming its modality
        raise VolumeError(f"{folder}: holds {len(found)} DICOM series and none is CT: "
                          f"{', '.join(info.label(size=True) for info in _by_size(found))}")
    not_ct = [info for info in found if info not in candidates]
    originals = [info for info in candidates if not is_our_derived_series(info)]
    ours = [info for info in candidates if info not in originals] if originals else []
    candidates = _by_size(originals or candidates)
    largest = candidates[0].number_of_files
    tied = [info for info in candidates if info.number_of_files == largest]
    if len(tied) > 1:
        shown = ", ".join(info.label() for info in tied[:TIED_SERIES_SHOWN])
        more = f" and {len(tied) - TIED_SERIES_SHOWN} more" if len(tied) > TIED_SERIES_SHOWN else ""
        raise VolumeError(f"{folder}: holds {len(found)} DICOM series and the largest are equally big "
                          f"({largest} files each): {shown}{more}; choose one with --series (its SeriesNumber "
                          "or SeriesInstanceUID)")
    notes = []
    for passed, why, hint in ((ours, "RevGAN's own earlier result", " (--series reads it)"),
                              (not_ct, "the non-CT series", "")):
        passed = [info for info in _by_size(passed) if info.number_of_files >= largest]
        if passed:
            notes.append(f"preferred to {why} {', '.join(info.label(size=True) for info in passed)}{hint}")
    return candidates[0], notes


def _by_size(series: Sequence[DicomSeriesInfo]) -> List[DicomSeriesInfo]:
    """Largest first; equally large ones by SeriesNumber, then UID (a stable order for messages)."""
    return sorted(series, key=lambda info: (-info.number_of_files, info.series_number is None,
                                            info.series_number or 0, info.series_uid))


#: How far below a folder without a series :func:`choose_series` looks for the series a user
#: may have meant: folder levels, folders at most, and files per folder probed for DICOM.
NESTED_SEARCH_LEVELS = 2
NESTED_SEARCH_FOLDERS = 200
NESTED_SEARCH_PROBES = 16


def _no_series_here(folder: str, series: Union[None, str, int] = None) -> str:
    """The refusal of a folder without a DICOM series, naming the folders below it that hold
    some, or the one holding ``series`` (one series folder is read; picking one of several
    would be a guess)."""
    below = _series_below(folder)
    if not below:
        return f"{folder}: holds no DICOM series (an empty folder, or no DICOM files in it)"
    if series is not None:
        wanted = str(series).strip()
        holding = [path for path, uids in below
                   if any(_is_series(path, uid, wanted) for uid in uids)]
        if holding:
            return (f"{folder}: holds no DICOM series itself; series {wanted} is in "
                    f"{', '.join(str(path) for path in holding)}: give that folder with --series {wanted}")
    if len(below) == 1 and len(below[0][1]) == 1:
        return (f"{folder}: holds no DICOM series itself; the one DICOM series below it is in {below[0][0]}: "
                "give that folder")
    shown = ", ".join(f"{path} ({len(uids)} series)" for path, uids in below[:8])
    more = f" and {len(below) - 8} more" if len(below) > 8 else ""
    return (f"{folder}: holds no DICOM series itself, but folders below it do: {shown}{more}; give one of them "
            "(revgan batch and revgan dataset search the folders below a folder)")


def _is_series(folder: Path, uid: str, wanted: str) -> bool:
    if uid == wanted:
        return True
    try:
        return wanted.isdigit() and describe_series(folder, uid).series_number == int(wanted)
    except VolumeError:  # an unreadable header there is that folder's problem, not this refusal's
        return False


def _series_below(folder: str) -> List[Tuple[Path, List[str]]]:
    """(folder, its SeriesInstanceUIDs) for the folders at most :data:`NESTED_SEARCH_LEVELS`
    below ``folder`` that hold DICOM series, in name order. Cheap: a few files' first bytes
    per folder, then GDCM's header scan only where they look like DICOM."""
    found: List[Tuple[Path, List[str]]] = []
    level, visited = [Path(folder)], 0
    for _ in range(NESTED_SEARCH_LEVELS):
        below = []
        for here in level:
            try:
                below += sorted(entry for entry in here.iterdir() if entry.is_dir() and not entry.name.startswith("."))
            except OSError:
                continue
        level = below[:max(0, NESTED_SEARCH_FOLDERS - visited)]
        visited += len(level)
        for here in level:
            try:
                files = sorted(entry for entry in here.iterdir() if entry.is_file())
            except OSError:
                continue
            if any(looks_like_dicom(path) for path in files[:NESTED_SEARCH_PROBES]):
                uids = sorted(_series_uids(str(here)))
                if uids:
                    found.append((here, uids))
    return sorted(found)


def _named_series(folder: str, found: Sequence[DicomSeriesInfo], wanted: str) -> DicomSeriesInfo:
    by_uid = [info for info in found if info.series_uid == wanted]
    if by_uid:
        return by_uid[0]
    by_number = [info for info in found if wanted.isdigit() and info.series_number == int(wanted)]
    if len(by_number) == 1:
        return by_number[0]
    if len(by_number) > 1:
        raise VolumeError(f"{folder}: {len(by_number)} DICOM series have SeriesNumber {wanted} "
                          f"({', '.join(info.series_uid for info in by_number)}); choose one by its UID")
    held = ", ".join(f"{info.series_uid} (number {info.series_number})" for info in
                     sorted(found, key=lambda info: info.series_uid))
    raise VolumeError(f"{folder}: holds no DICOM series {wanted} (neither a SeriesInstanceUID nor a "
                      f"SeriesNumber); it holds {held}")


def _checked_stack(info: DicomSeriesInfo) -> Optional[SliceStack]:
    """The series' slices as one checked stack along the slice normal (None for a single
    file), after checking that they are equal CT slices with sane geometry tags."""
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
    slices = [slice_geometry(header, path) for header, path in zip(headers, info.files)]
    if len(slices) == 1:
        return None
    return stack_slices(slices, f"{where}: series {info.series_uid}")


def _read_quietly(files: Sequence[str]):
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(list(files))
    # Float output: slices may carry different rescale slopes/intercepts.
    reader.SetOutputPixelType(sitk.sitkFloat32)
    with itk_warnings_silenced():
        return reader.Execute()


def _unreadable_series(info: DicomSeriesInfo, error: RuntimeError) -> VolumeError:
    """The error for a series whose pixels cannot be read, naming the first bad file."""
    for path in info.files:
        try:
            _read_quietly([path])
        except RuntimeError:
            return VolumeError(f"{path}: {problem_with(Path(path))}; series {info.series_uid} in "
                               f"{info.folder} cannot be read")
    message = [line for line in str(error).splitlines() if line.strip()]
    return VolumeError(f"{info.folder}: series {info.series_uid} cannot be read "
                       f"({message[-1].strip() if message else 'unknown error'}); a file may be corrupt or truncated")


def read_dicom_series(folder, series_uid: Union[None, str, int] = None) -> Volume:
    """The series in ``folder`` (the largest CT series, or ``series_uid``: a SeriesInstanceUID
    or a SeriesNumber, see :func:`choose_series`) as a float32 HU Volume; source is the folder.
    A gantry-tilted series is resampled onto the grid of its slice
    planes (see :mod:`.dicom_tilt`). Raises :class:`VolumeError` for an empty folder, a
    truncated file, equally large competing series, bad geometry tags, mixed or unevenly
    spaced slices, non-CT modality or a single slice."""
    return read_chosen_series(choose_series(folder, series_uid))


def read_series(info: DicomSeriesInfo) -> Volume:
    """Read a series described by :func:`find_series` (its folder is checked again for
    DICOM files GDCM skipped)."""
    return read_dicom_series(info.folder, info.series_uid)


def read_chosen_series(info: DicomSeriesInfo) -> Volume:
    """Read a series returned by :func:`choose_series`, which has checked its folder."""
    folder = info.folder
    if is_enhanced_ct(_header(info.files[0])):
        if info.number_of_files == 1:
            return read_enhanced_ct(info.files[0])
        raise VolumeError(f"{folder}: series {info.series_uid} is split over {info.number_of_files} Enhanced "
                          "(multi-frame) CT files; only a series held in one such file can be read")
    stack = _checked_stack(info)
    files = info.files if stack is None else stack.files
    try:
        image = _read_quietly(files)
    except RuntimeError as error:
        raise _unreadable_series(info, error) from None
    if stack is None:
        # One file: a single slice (refused as 2D) or a multi-frame volume.
        return image_to_volume(image, files[0])
    return image_to_volume(place_on_slice_grid(image, stack), folder)


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
