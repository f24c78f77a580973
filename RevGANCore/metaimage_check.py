"""Checking that a MetaImage file (.mha, or .mhd with one data file) holds all the voxel
bytes its header promises, before ITK reads it: ITK's own message for a short file is
"(Reason: No such file or directory)", which sends a user looking in the wrong place."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Tuple

from .errors import VolumeError

#: Bytes per value of the MetaImage element types whose size does not depend on the platform.
ELEMENT_BYTES = {"MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
                 "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4, "MET_DOUBLE": 8}

#: A MetaImage header is a few hundred bytes; more than this is not one.
HEADER_LIMIT_BYTES = 1 << 16


def _header(path: Path) -> Optional[Tuple[Dict[str, str], int]]:
    """The 'Key = Value' fields up to ElementDataFile, and the byte offset after that line."""
    with open(str(path), "rb") as stream:
        head = stream.read(HEADER_LIMIT_BYTES)
    fields: Dict[str, str] = {}
    offset = 0
    for raw in head.splitlines(keepends=True):
        offset += len(raw)
        key, equals, value = raw.decode("latin-1").partition("=")
        if not equals:
            return None
        fields[key.strip()] = value.strip()
        if key.strip() == "ElementDataFile":
            return fields, offset
    return None


def _expected_data_bytes(fields: Dict[str, str]) -> Optional[int]:
    if fields.get("CompressedData", "False").lower() == "true":
        size = fields.get("CompressedDataSize", "")
        return int(size) if size.isdigit() else None
    try:
        count = 1
        for n in fields["DimSize"].split():
            count *= int(n)
        count *= int(fields.get("ElementNumberOfChannels", "1"))
        return count * ELEMENT_BYTES[fields["ElementType"]]
    except (KeyError, ValueError):
        return None


def check_metaimage_complete(path) -> None:
    """Raise :class:`VolumeError` ("truncated: N of M bytes") if the voxel data of a
    MetaImage file stops early. Headers it does not understand are left to ITK."""
    path = Path(path)
    try:
        parsed = _header(path)
    except OSError as error:
        raise VolumeError(f"{path}: cannot be read ({error.strerror})") from None
    if parsed is None:
        return
    fields, header_bytes = parsed
    expected = _expected_data_bytes(fields)
    name = fields["ElementDataFile"]
    if expected is None or "%" in name or name.upper() == "LIST" or "HeaderSize" in fields:
        return  # a layout this check does not model: ITK judges it
    if name.upper() == "LOCAL":
        data_path, needed = path, header_bytes + expected
    else:
        data_path, needed = path.parent / name, expected
    if not data_path.is_file():
        raise VolumeError(f"{path}: its data file {data_path} does not exist")
    present = data_path.stat().st_size
    if present < needed:
        raise VolumeError(f"{data_path}: is truncated: {present} of {needed} bytes")
