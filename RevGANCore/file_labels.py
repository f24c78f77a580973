"""Labels made from outside text (DICOM kernel names, series descriptions) that are safe
as file-name stems on every file system and as JSON keys.

A kernel may be called anything ('B50f.nii', 'FC/13', 'Br 40', '..', 'Qr40\u2009d'): used
raw, such a name makes a path that escapes its folder, or one that a writer renames
('B50f.nii' + '.nii.gz'), or one that collides with another on a case-insensitive disk."""

from __future__ import annotations

import re
from typing import Dict, Iterable, Set

#: Longest label: far inside file-name limits, leaving room for a suffix.
MAX_LABEL_CHARACTERS = 64

#: Names Windows reserves for devices, with any extension.
WINDOWS_DEVICE_NAMES = {"CON", "PRN", "AUX", "NUL", *(f"COM{n}" for n in range(1, 10)),
                        *(f"LPT{n}" for n in range(1, 10))}


def safe_file_label(text: str) -> str:
    """``text`` reduced to ASCII letters, digits, '_' and '-' (every other run of
    characters becomes one '_'; no dots, so no file type can hide in it), at most
    MAX_LABEL_CHARACTERS long; 'unknown' when nothing is left."""
    label = re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_-")[:MAX_LABEL_CHARACTERS].strip("_-")
    if label.upper() in WINDOWS_DEVICE_NAMES:
        label += "_"
    return label or "unknown"


def unique_file_labels(names: Iterable[str]) -> Dict[str, str]:
    """A safe label for each distinct name, distinct even on a case-insensitive file system
    (a clash gets '-2', '-3', ... in the names' sorted order)."""
    taken: Set[str] = set()
    return {name: claim_label(safe_file_label(name), taken) for name in sorted(set(names))}


def claim_label(base: str, taken: Set[str]) -> str:
    """``base``, or ``base-2``, ``base-3``, ... : the first not in ``taken`` (compared
    case-insensitively), which is then added to ``taken``."""
    label, number = base, 1
    while label.casefold() in taken:
        number += 1
        label = f"{base}-{number}"
    taken.add(label.casefold())
    return label
