"""Spotting DICOM files that GDCM silently leaves out of a series.

GDCM's series scanner skips a file it cannot parse, so one truncated slice turns into a
gap ("uneven slice spacing") or, at either end, into a silently shorter volume. Any
file in a series folder that looks like DICOM but is in no series is therefore checked
here, and reported by name with what is wrong with it. GDCM also leaves out valid objects
that hold no image (dose reports, presentation states, RT structure sets and plans), which
PACS exports routinely put beside the slices: :func:`non_image_object` tells those apart
from broken slices by their header.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Collection, List, Optional, Tuple

#: A DICOM Part 10 file: a 128-byte preamble, then these four bytes.
DICOM_MAGIC = b"DICM"
PREAMBLE_BYTES = 128

#: The Pixel Data element (7FE0,0010) as it starts in little-endian DICOM.
PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"

#: Files in a DICOM folder that are DICOM but never images.
NON_IMAGE_NAMES = ("dicomdir",)

#: Modalities (0008,0060) of objects without an image, for a SOP class pydicom does not know:
#: reports, presentation states, key objects, documents, RT objects, registrations, waveforms.
NON_IMAGE_MODALITIES = frozenset({"SR", "PR", "KO", "DOC", "RTSTRUCT", "RTPLAN", "RTRECORD", "REG", "FID",
                                  "PLAN", "RWV", "AU", "ECG", "HD"})


def looks_like_dicom(path: Path) -> bool:
    """A Part 10 file by its magic bytes, or a '.dcm' file too short to hold them."""
    try:
        with open(str(path), "rb") as stream:
            head = stream.read(PREAMBLE_BYTES + len(DICOM_MAGIC))
    except OSError:
        return False
    if head[PREAMBLE_BYTES:] == DICOM_MAGIC:
        return True
    return path.suffix.lower() == ".dcm" and len(head) < PREAMBLE_BYTES + len(DICOM_MAGIC)


def pixel_data_shortfall(path: Path) -> Optional[Tuple[int, int]]:
    """(bytes present, bytes the Pixel Data element says the file needs) when its pixel
    data stops early; None when complete or not recognised (only explicit-VR little-endian
    native pixel data, the common case, is recognised)."""
    data = Path(path).read_bytes()
    at = data.find(PIXEL_DATA_TAG, PREAMBLE_BYTES)
    while at >= 0:
        # Explicit VR: tag, 'OW' or 'OB', 2 reserved bytes, a 4-byte length, the pixels.
        if data[at + 4:at + 6] in (b"OW", b"OB") and at + 12 <= len(data):
            length = struct.unpack("<I", data[at + 8:at + 12])[0]
            if length == 0xFFFFFFFF:  # encapsulated (compressed) pixels: no length to check
                return None
            needed = at + 12 + length
            return (len(data), needed) if needed > len(data) else None
        at = data.find(PIXEL_DATA_TAG, at + 1)
    return None


def problem_with(path: Path) -> str:
    """What is wrong with a DICOM file GDCM cannot read, for a message."""
    size = path.stat().st_size
    shortfall = pixel_data_shortfall(path)
    if shortfall is not None:
        return f"truncated: {shortfall[0]} of {shortfall[1]} bytes"
    return f"truncated or corrupt DICOM ({size} bytes), it cannot be parsed"


def non_image_object(path: Path) -> str:
    """What a DICOM file that can never be a slice of an image series is ("SR", "RTPLAN",
    "Grayscale Softcopy Presentation State Storage"), or "" for an image file, a file whose
    header cannot be parsed, or without pydicom. Decided from the header alone (pydicom,
    ``stop_before_pixels``): a SOP class pydicom knows decides (image storage classes have
    "Image" in their name), else the modality. pydicom reads a cut header without complaint,
    so only a positive identification counts: a slice cut before its SOP class stays a
    broken slice."""
    try:
        import pydicom
        from pydicom.uid import UID
    except ImportError:
        return ""
    try:
        dataset = pydicom.dcmread(str(path), stop_before_pixels=True)
    except Exception:  # pydicom raises many types for a file that is not DICOM
        return ""
    meta = getattr(dataset, "file_meta", None) or {}
    sop_class = UID(str(dataset.get("SOPClassUID") or meta.get("MediaStorageSOPClassUID") or "").strip().rstrip("\x00"))
    modality = str(dataset.get("Modality", "") or "").strip().upper()
    if sop_class and sop_class.type == "SOP Class":
        return "" if "Image" in sop_class.name else (modality or sop_class.name)
    return modality if modality in NON_IMAGE_MODALITIES else ""


def unparsed_dicom_files(folder: str, parsed: Collection[str]) -> List[Path]:
    """Files directly in ``folder`` that look like DICOM images but are not in ``parsed``
    (the files GDCM put into some series), in name order."""
    known = {os.path.normcase(os.path.abspath(p)) for p in parsed}
    left_out = []
    for entry in sorted(Path(folder).iterdir()):
        if not entry.is_file() or entry.name.lower() in NON_IMAGE_NAMES:
            continue
        if os.path.normcase(os.path.abspath(str(entry))) not in known and looks_like_dicom(entry):
            left_out.append(entry)
    return left_out
