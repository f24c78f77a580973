"""The one door every file the project writes goes through.

Rules it enforces (docs/design.md, decision 9):

- **Names first.** An output is checked before any work: a known kind, not a folder, a
  location we can write to, and no file it would create or replace may be one of the
  command's inputs (compared after resolving links, and by inode for hard links; a
  header-plus-data input such as ``.mhd`` counts with its data file).
- **Room before work.** :func:`check_room` compares what will be written with the free
  space of the file system and with the process's file-size limit (``ulimit -f``);
  :func:`allocate_scratch` reserves a memory-mapped scratch file's blocks up front, so a
  full disk is an error message instead of a SIGBUS in the middle of the work.
- **Staged, verified, published.** Files are written into a hidden staging folder beside
  the target (:class:`Staging`), verified by the caller, and only then moved into place
  with ``os.replace``; on any failure nothing is published and every staged file, and any
  output folder this door created, is removed.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import os
import secrets
import shutil
import socket
import time
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, so nothing is swept
    fcntl = None

from .errors import OutputError

#: Free space kept in reserve beyond what a write needs (the file system's own metadata,
#: other programs writing at the same time).
SPACE_MARGIN_BYTES = 16 * 2 ** 20

STAGING_PREFIX = ".revgan-staging-"
SCRATCH_PREFIX = ".revgan-scratch-"
#: A staging folder or scratch file younger than this is never swept: its owner may not
#: have locked it yet.
LEFTOVER_MIN_AGE_S = 120.0

#: Where a caller collects the outputs published while it runs (None: nobody asks). The
#: command line reads it when Ctrl-C lands after an output was already complete.
published_outputs: contextvars.ContextVar[Optional[List[Path]]] = contextvars.ContextVar(
    "published_outputs", default=None)


@contextlib.contextmanager
def recording_published() -> Iterator[List[Path]]:
    """Collect, for the duration of the block, every output :class:`Staging` publishes."""
    collected: List[Path] = []
    token = published_outputs.set(collected)
    try:
        yield collected
    finally:
        published_outputs.reset(token)


# --------------------------------------------------------------------------- locations


def nearest_existing_folder(path) -> Path:
    """``path``'s folder, or its nearest ancestor that exists (where a staging folder can
    go before the output folder is created)."""
    folder = Path(os.path.abspath(os.fspath(path))).parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def check_writable_location(target: Path) -> Path:
    """Refuse a target that is a folder, sits below a file, or lies where we cannot create
    files; returns the nearest existing folder. Creates nothing that stays."""
    if target.is_dir():
        raise OutputError(f"{target}: is a folder, not an output file name")
    existing = _probe_writable(target)
    if target.exists() and not os.access(str(target), os.W_OK):
        raise OutputError(f"{target}: exists and is not writable (no permission)")
    return existing


def _probe_writable(target: Path) -> Path:
    """The nearest existing folder of ``target``, after checking that files can be created there."""
    existing = nearest_existing_folder(target)
    if not existing.is_dir():
        raise OutputError(f"{target}: cannot write there ({existing} is not a folder)")
    probe = _hidden_name(existing, ".revgan-probe-", "")
    try:  # the only reliable permission test (root, ACLs, read-only mounts): create a file
        os.close(os.open(str(probe), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as error:
        raise OutputError(f"{target}: cannot write into {existing} ({error.strerror or error})") from None
    finally:
        _remove_file(str(probe))
    return existing


def check_output_folder(target: Path, inputs: Iterable[Path] = ()) -> Path:
    """Refuse, before any work, an output *folder* (a series of files published together)
    that is or holds one of ``inputs``, exists as a file or holds anything (results never
    mix with other files), or lies where we cannot create it. Returns the nearest existing
    folder, where it will be staged. Creates nothing."""
    for item in inputs:
        if is_within(item, target):
            what = "is" if os.path.realpath(str(item)) == os.path.realpath(str(target)) else f"holds {item}, which is"
            raise OutputError(f"{target}: {what} an input of this command; choose a new output folder")
    if target.exists() and not target.is_dir():
        raise OutputError(f"{target}: exists and is not a folder; choose a new or empty output folder")
    if target.is_dir() and any(target.iterdir()):
        raise OutputError(f"{target}: the folder is not empty; choose a new or empty output folder "
                          "(results never mix with other files)")
    if target.is_dir():
        if not os.access(str(target), os.W_OK):
            raise OutputError(f"{target}: exists and is not writable (no permission)")
        target = target.parent / (target.name + ".new")  # staged and published beside it
    return _probe_writable(target)


def is_within(path, folder) -> bool:
    """True if ``path`` is ``folder`` or lies below it (after resolving links)."""
    real, base = os.path.realpath(str(path)), os.path.realpath(str(folder))
    return real == base or real.startswith(base.rstrip(os.sep) + os.sep)


def _identity(path: Path) -> Tuple[str, Optional[Tuple[int, int]]]:
    real = os.path.realpath(str(path))
    try:
        stat = os.stat(real)
        return real, (stat.st_dev, stat.st_ino)
    except OSError:
        return real, None


def refuse_overlap(outputs: Iterable[Path], inputs: Iterable[Path]) -> None:
    """Raise :class:`OutputError` if any output path names an input file (through links too)."""
    known: Dict[object, Path] = {}
    for item in inputs:
        real, inode = _identity(Path(item))
        known[real] = Path(item)
        if inode is not None:
            known[inode] = Path(item)
    for output in outputs:
        real, inode = _identity(Path(output))
        clash = known.get(real) or (known.get(inode) if inode is not None else None)
        if clash is not None:
            also = "" if Path(output).name == Path(clash).name else f" (it would replace {clash})"
            raise OutputError(f"{output}: is an input of this command{also}; refusing to overwrite it "
                              "(choose another output name)")


# --------------------------------------------------------------------------- room


def file_size_limit() -> Optional[int]:
    """The process's file-size limit in bytes (``ulimit -f``), or None when unlimited."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    return None if soft == resource.RLIM_INFINITY else int(soft)


def _mib(n: float) -> str:
    return f"{n / 2 ** 20:,.1f} MiB"


def check_room(folder, files_bytes: Sequence[int], what) -> None:
    """Refuse, before any work, writing files of ``files_bytes`` sizes into ``folder``
    when the file system lacks the space or one file exceeds the file-size limit."""
    folder = nearest_existing_folder(Path(folder) / "x")
    limit = file_size_limit()
    largest = max(files_bytes, default=0)
    if limit is not None and largest > limit:
        raise OutputError(f"{what}: needs a {_mib(largest)} file but this process may write files of at "
                          f"most {_mib(limit)} (ulimit -f); nothing was written")
    output_bytes = int(sum(files_bytes))
    try:
        free = shutil.disk_usage(str(folder)).free
    except OSError:
        return
    if free < output_bytes + SPACE_MARGIN_BYTES:
        raise OutputError(f"{what}: no space left on the device: the output takes about {_mib(output_bytes)} and "
                          f"{_mib(SPACE_MARGIN_BYTES)} more are kept free, but {folder} has {_mib(free)} free; "
                          "nothing was written")


def describe_os_error(error: OSError) -> str:
    """One line for a write failure, naming full disks and file-size limits plainly."""
    if error.errno == errno.ENOSPC:
        return "no space left on the device"
    if error.errno == errno.EFBIG:
        return "file too large (a file-size limit, ulimit -f, or the file system's)"
    if error.errno == errno.EDQUOT:
        return "disk quota exceeded"
    return error.strerror or str(error)


# --------------------------------------------------------------------------- scratch


@contextlib.contextmanager
def allocate_scratch(folder, shape: Sequence[int], dtype, what) -> Iterator[np.memmap]:
    """A memory-mapped array in a hidden file in ``folder`` whose disk blocks are reserved
    first (``posix_fallocate``): writing into a memory map on a full disk otherwise kills
    the process with SIGBUS. The file is removed when the block ends, however it ends."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod([int(n) for n in shape], dtype=np.int64)) * dtype.itemsize
    scratch = str(_hidden_name(Path(folder), SCRATCH_PREFIX, ".tmp"))
    array = None
    lock = None
    try:
        # The name is known before the file exists, so a signal arriving at any moment after
        # its creation still finds it to remove (mkstemp returns the name only afterwards).
        try:
            handle = os.open(scratch, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as error:
            raise OutputError(f"{what}: cannot create scratch space in {folder} ({describe_os_error(error)})") from None
        lock = _hold_own(scratch)
        try:
            if hasattr(os, "posix_fallocate"):
                os.posix_fallocate(handle, 0, max(nbytes, 1))
            else:
                os.ftruncate(handle, max(nbytes, 1))
        except OSError as error:
            raise OutputError(f"{what}: cannot reserve {_mib(nbytes)} of scratch space in {folder} "
                              f"({describe_os_error(error)}); nothing was written") from None
        finally:
            os.close(handle)
        array = np.memmap(scratch, dtype=dtype, mode="r+", shape=tuple(int(n) for n in shape))
        yield array
    finally:
        array = None
        _remove_file(scratch)
        release(lock)


def _hidden_name(folder: Path, prefix: str, suffix: str) -> Path:
    """A fresh name in ``folder``, chosen before anything is created there. It carries the
    host and process id (for people, and so that only this host's leftovers are swept:
    :func:`remove_dead_leftovers`)."""
    remove_dead_leftovers(folder)
    return Path(folder) / f"{prefix}{_owner_tag()}{os.getpid()}-{secrets.token_hex(8)}{suffix}"


def _owner_tag() -> str:
    """This host's name, reduced to characters safe in a file name, and a separator."""
    host = "".join(c if c.isalnum() else "_" for c in socket.gethostname())[:32] or "host"
    return f"{host}-"


def hold(path: str) -> Optional[int]:
    """A descriptor holding an exclusive lock on ``path`` (a file or a folder) for as long as
    it stays open: the kernel drops the lock when the process dies, however it dies, which
    tells :func:`remove_dead_leftovers` what nobody holds. None where locks are not available
    (Windows)."""
    if fcntl is None:
        return None
    handle = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(handle)
        raise
    return handle


def _hold_own(path: str) -> Optional[int]:
    """:func:`hold` on what this process just created; a file system without locks (some
    network file systems) only means it cannot be swept after a crash."""
    try:
        return hold(path)
    except OSError:
        return None


def release(handle: Optional[int]) -> None:
    if handle is not None:
        with contextlib.suppress(OSError):
            os.close(handle)


def remove_dead_leftovers(folder) -> List[str]:
    """Remove the staging folders and scratch files in ``folder`` that a process of this host
    left behind when it was killed (SIGKILL, the out-of-memory killer: no cleanup ran), and
    return their names. A leftover is one with this host's tag, older than
    ``LEFTOVER_MIN_AGE_S``, whose lock (:func:`hold`) nobody holds; a live process's, or
    another machine's in a shared folder, is never touched. Nothing is swept without locks."""
    removed: List[str] = []
    if fcntl is None:
        return removed
    tag = _owner_tag()
    try:
        entries = [e for e in os.scandir(str(folder))
                   if e.name.startswith((STAGING_PREFIX + tag, SCRATCH_PREFIX + tag))]
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        try:
            if now - entry.stat(follow_symlinks=False).st_mtime < LEFTOVER_MIN_AGE_S:
                continue
            handle = hold(entry.path)
        except OSError:  # held by a live process, or gone meanwhile
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                os.unlink(entry.path)
            removed.append(entry.name)
        except OSError:
            pass
        finally:
            release(handle)
    return removed


def _remove_file(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError:
        import gc

        gc.collect()  # a last reference to a memory map may sit in a reference cycle
        with contextlib.suppress(OSError):
            os.unlink(path)


# --------------------------------------------------------------------------- staging


class Staging:
    """A hidden staging folder for the files of one output; use as a context manager.

    Write each file to :meth:`path`, verify it, then :meth:`publish` moves them into place
    (data files before the header that names them, so a reader never finds a new header
    pointing at old data). Leaving the block, the staging folder is removed; if the block
    failed before publishing, output folders created by :meth:`publish` are removed too."""

    def __init__(self, target, what=None):
        self.target = Path(os.path.abspath(os.fspath(target)))
        self.what = what or target
        self.folder: Optional[Path] = None
        self._created: List[Path] = []
        self._published = False
        self._lock: Optional[int] = None

    def __enter__(self) -> "Staging":
        base = nearest_existing_folder(self.target)
        folder = _hidden_name(base, STAGING_PREFIX, "")
        try:
            os.mkdir(str(folder), 0o700)
            self.folder = folder
            self._lock = _hold_own(str(folder))
            return self
        except OSError as error:
            raise OutputError(f"{self.what}: cannot write into {base} ({describe_os_error(error)})") from None
        except BaseException:  # a signal right after mkdir: __exit__ would not run
            shutil.rmtree(str(folder), ignore_errors=True)
            release(self._lock)
            raise

    def path(self, name: str) -> Path:
        assert self.folder is not None, "use Staging as a context manager"
        return self.folder / name

    def produced(self) -> List[str]:
        assert self.folder is not None
        return sorted(p.name for p in self.folder.iterdir())

    def publish(self, moves: Sequence[Tuple[str, Path]]) -> None:
        """Move staged files (``(staged name, final path)``, in that order) into place."""
        for _, final in moves:
            self._make_folder(Path(final).parent)
        try:
            for name, final in moves:
                os.replace(str(self.path(name)), str(final))
        except OSError as error:
            raise OutputError(f"{self.what}: cannot be moved into place ({describe_os_error(error)})") from None
        self._mark_published()

    def publish_folder(self, name: str, final: Path) -> None:
        """Move the staged folder ``name`` into place as ``final`` in one rename; ``final``
        may exist only as an empty folder (see :func:`check_output_folder`)."""
        final = Path(final)
        self._make_folder(final.parent)
        try:
            if final.is_dir():
                final.rmdir()  # fails, as it should, if something appeared in it meanwhile
            os.replace(str(self.path(name)), str(final))
        except OSError as error:
            raise OutputError(f"{self.what}: cannot be moved into place ({describe_os_error(error)})") from None
        self._mark_published()

    def _mark_published(self) -> None:
        self._published = True
        collected = published_outputs.get()
        if collected is not None:
            collected.append(self.target)

    def _make_folder(self, folder: Path) -> None:
        missing = []
        while not folder.exists():
            missing.append(folder)
            folder = folder.parent
        for item in reversed(missing):
            try:
                item.mkdir()
            except OSError as error:
                raise OutputError(f"{self.what}: cannot create the folder {item} "
                                  f"({describe_os_error(error)})") from None
            self._created.append(item)

    def __exit__(self, *exc) -> None:
        if self.folder is not None:
            shutil.rmtree(str(self.folder), ignore_errors=True)
            release(self._lock)
        if not self._published:
            for item in reversed(self._created):
                with contextlib.suppress(OSError):
                    item.rmdir()


# --------------------------------------------------------------------------- single files


@contextlib.contextmanager
def replaced_atomically(target) -> Iterator[Path]:
    """Yield a staged path to write ``target``'s content to; when the block succeeds it
    replaces ``target`` (readable by all, like a normally created file); on any error
    nothing is published and ``target`` is left as it was."""
    target = Path(target)
    with Staging(target) as staging:
        staged = staging.path(target.name)
        try:
            yield staged
        except OSError as error:
            raise OutputError(f"{target}: cannot be written ({describe_os_error(error)})") from None
        os.chmod(str(staged), 0o644)
        staging.publish([(target.name, target)])


def write_bytes_atomic(target, data: bytes) -> Path:
    """Write ``data`` to ``target`` through the door (a short write is an error)."""
    with replaced_atomically(target) as staged:
        with open(staged, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        if os.path.getsize(staged) != len(data):
            raise OutputError(f"{target}: only {os.path.getsize(staged)} of {len(data)} bytes could be written")
    return Path(target)


def write_text_atomic(target, text: str) -> Path:
    return write_bytes_atomic(target, text.encode("utf-8"))


# --------------------------------------------------------------------------- append-only logs


class AppendOnlyLog:
    """A text file that only grows by whole lines, each on disk (flushed and fsynced)
    before :meth:`append` returns: a record written is a record kept, whatever kills the
    process next. A last line torn by an earlier kill (no newline at the end) is closed
    with a newline first, so the next record never glues onto it. Use as a context manager."""

    def __init__(self, target):
        self.target = Path(os.path.abspath(os.fspath(target)))
        self._stream = None

    def __enter__(self) -> "AppendOnlyLog":
        check_writable_location(self.target)
        try:
            stream = open(self.target, "ab")
            if stream.tell() > 0:
                with open(self.target, "rb") as reader:
                    reader.seek(-1, os.SEEK_END)
                    torn = reader.read(1) != b"\n"
                if torn:
                    stream.write(b"\n")
        except OSError as error:
            raise OutputError(f"{self.target}: cannot be appended to ({describe_os_error(error)})") from None
        self._stream = stream
        return self

    def append(self, line: str) -> None:
        """Write ``line`` (no newline inside) and a newline, durably."""
        if "\n" in line or "\r" in line:
            raise ValueError("a log line cannot hold a line break")
        assert self._stream is not None, "use AppendOnlyLog as a context manager"
        try:
            self._stream.write(line.encode("utf-8") + b"\n")
            self._stream.flush()
            os.fsync(self._stream.fileno())
        except OSError as error:
            raise OutputError(f"{self.target}: cannot be appended to ({describe_os_error(error)})") from None

    def __exit__(self, *exc) -> None:
        if self._stream is not None:
            with contextlib.suppress(OSError):
                self._stream.close()
            self._stream = None
