"""Find the RevGANCore package, wherever this module runs from.

- Installed extension: ``RevGANCore/`` is copied next to ``RevGANSlicerLib/`` in Slicer's
  scripted-modules folder, which Slicer puts on ``sys.path``: nothing to do.
- Source checkout added as an additional module path (``<repo>/RevGANSlicer``): the
  package is ``<repo>/RevGANCore``, one folder up; that folder is added to ``sys.path``.
- A ``pip install`` of the project into Slicer's Python also works (it is found first).

Importing RevGANCore is cheap (it does not import torch), so this may run at import time.
"""

from __future__ import annotations

import os
import sys
from typing import List

_MODULE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def candidateFolders() -> List[str]:
    """Folders that may hold the ``RevGANCore`` package, most specific first."""
    return [_MODULE_DIR, os.path.dirname(_MODULE_DIR)]


def ensureRevGANCoreImportable() -> str:
    """Make ``import RevGANCore`` work and return the folder that contains the package
    (the folder a separate process needs on its ``sys.path``)."""
    try:
        import RevGANCore
    except ImportError:
        for folder in candidateFolders():
            if os.path.isfile(os.path.join(folder, "RevGANCore", "__init__.py")):
                if folder not in sys.path:
                    sys.path.insert(0, folder)
                break
        else:
            raise ImportError(
                "RevGANSlicer could not find the RevGANCore package; looked in "
                + ", ".join(candidateFolders())) from None
        import RevGANCore
    return coreParentFolder()


def coreParentFolder() -> str:
    """The folder holding the imported ``RevGANCore`` package."""
    import RevGANCore

    return os.path.dirname(os.path.dirname(os.path.abspath(RevGANCore.__file__)))
