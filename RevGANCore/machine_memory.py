"""How much memory this machine has free now, for sizing inference windows.

Linux reports it in /proc/meminfo (``MemAvailable``: free plus reclaimable cache); Windows
through ``GlobalMemoryStatusEx``; elsewhere (macOS) the answer is unknown and callers fall
back to a fixed budget."""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path
from typing import Optional

__all__ = ["available_memory_bytes"]


def available_memory_bytes(meminfo: Path = Path("/proc/meminfo")) -> Optional[int]:
    """Bytes of memory available to a new allocation without swapping, or None if unknown."""
    if sys.platform == "win32":
        return _windows_available()
    try:
        text = meminfo.read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "MemAvailable":
            fields = value.split()
            if fields and fields[0].isdigit():
                unit = fields[1].lower() if len(fields) > 1 else "b"
                return int(fields[0]) * (1024 if unit == "kb" else 1)
    return None


def _windows_available() -> Optional[int]:
    class _MemoryStatus(ctypes.Structure):
        _fields_ = [("length", ctypes.c_ulong), ("load", ctypes.c_ulong),
                    ("total_physical", ctypes.c_ulonglong), ("available_physical", ctypes.c_ulonglong),
                    ("total_page_file", ctypes.c_ulonglong), ("available_page_file", ctypes.c_ulonglong),
                    ("total_virtual", ctypes.c_ulonglong), ("available_virtual", ctypes.c_ulonglong),
                    ("available_extended_virtual", ctypes.c_ulonglong)]

    status = _MemoryStatus()
    status.length = ctypes.sizeof(_MemoryStatus)
    try:
        if ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(status)):  # type: ignore[attr-defined]
            return int(status.available_physical)
    except (AttributeError, OSError):
        pass
    return None
