"""Output folders that a command fills file by file (``revgan phantom``, ``revgan demo``).

Each file goes through the output door (:mod:`RevGANCore.output`) on its own, so the folder
itself needs what that door gives a single output: refused before any work when it cannot
be written (a file in the way, a read-only or pseudo file system), and nothing left behind
when the command fails half-way (a full disk, Ctrl-C): a folder the command created is
removed, and in a folder that existed what the command added (new entries with the names
it writes; another program's files there are never touched).
"""

from __future__ import annotations

import fnmatch
import os
import shutil
from pathlib import Path
from typing import List, Optional, Sequence

from .errors import OutputError
from .output import check_writable_location, describe_os_error


class FolderToFill:
    """Checks ``folder`` on construction; use as a context manager around the writing.

    ``may_hold_files``: whether an existing folder may already hold files (a rerun of the
    demo; ``--overwrite``); otherwise ``not_empty_hint`` ends the refusal (how to allow it).
    ``produces``: name patterns (fnmatch) of what the command writes into the folder; the
    first names the file the refusal names when an existing folder cannot be written into."""

    def __init__(self, folder, produces: Sequence[str], may_hold_files: bool = False, not_empty_hint: str = ""):
        self.folder = Path(folder)
        self.produces = tuple(produces)
        self._created: Optional[Path] = None
        self._before: Optional[List[str]] = None
        if self.folder.exists() and not self.folder.is_dir():
            raise OutputError(f"{self.folder}: cannot write there (it is a file, not a folder); choose "
                              + ("a folder" if may_hold_files else "a new or empty folder"))
        if self.folder.is_dir():
            if not may_hold_files and any(self.folder.iterdir()):
                raise OutputError(f"{self.folder}: the folder is not empty; choose a new or empty folder"
                                  + (f" {not_empty_hint}" if not_empty_hint else ""))
            check_writable_location(self.folder / self.produces[0])
        else:
            check_writable_location(self.folder)  # probes the nearest existing ancestor

    def __enter__(self) -> Path:
        missing = []
        here = Path(os.path.abspath(os.fspath(self.folder)))
        while not here.exists() and here != here.parent:
            missing.append(here)
            here = here.parent
        if missing:
            try:
                os.makedirs(str(missing[0]))
            except OSError as error:
                shutil.rmtree(str(missing[-1]), ignore_errors=True)
                raise OutputError(f"{self.folder}: cannot create the folder ({describe_os_error(error)})") from None
            self._created = missing[-1]  # the topmost folder this command made
        else:
            self._before = sorted(os.listdir(str(self.folder)))
        return self.folder

    def __exit__(self, kind, error, trace) -> None:
        if kind is None:
            return
        # A half-written dataset must not look like a finished one, nor remain as clutter.
        if self._created is not None:
            shutil.rmtree(str(self._created), ignore_errors=True)
        elif self._before is not None:
            for name in set(os.listdir(str(self.folder))) - set(self._before):
                if not any(fnmatch.fnmatchcase(name, pattern) for pattern in self.produces):
                    continue
                path = self.folder / name
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(str(path), ignore_errors=True)
                else:
                    try:
                        path.unlink()
                    except OSError:
                        pass
