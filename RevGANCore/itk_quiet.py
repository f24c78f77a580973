"""Keep ITK's and GDCM's warning lines off the terminal while reading files.

SimpleITK prints warnings (e.g. "GDCMSeriesFileNames ... No Series were found") straight
to stderr; the project reports every problem itself, as one line naming the file."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator


@contextmanager
def itk_warnings_silenced() -> Iterator[None]:
    """Switch SimpleITK's global warning display off for the block, then restore it."""
    import SimpleITK as sitk

    previous = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(previous)
