"""A wait cursor around work that blocks Slicer's UI thread (writing a volume to a file,
loading a result of several GB into a node), set and always restored.

Inside Slicer this is ``slicer.app.setOverrideCursor(qt.Qt.WaitCursor)`` and
``slicer.app.restoreOverrideCursor()``; where there is no application (plain Python with
the MRML library) it does nothing. ``qt`` is imported only when an application exists, so
this module imports with ``slicer-core`` alone.
"""

from __future__ import annotations

import contextlib
from typing import Iterator


def _application():
    try:
        import slicer
    except ImportError:
        return None
    return getattr(slicer, "app", None)


@contextlib.contextmanager
def waitCursor() -> Iterator[None]:
    """Show the wait cursor while the block runs; restored however the block ends."""
    application = _application()
    if application is None:
        yield
        return
    import qt

    application.setOverrideCursor(qt.Qt.WaitCursor)
    try:
        yield
    finally:
        application.restoreOverrideCursor()
