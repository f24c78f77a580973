"""Atomic file writes: a temporary file beside the target, renamed over it only when
complete, so a crash or a kill never leaves a half-written file under the real name."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def replaced_atomically(target, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path in ``target``'s folder to write; when the block succeeds it
    replaces ``target`` (readable by all, like a normally created file); on any error it is
    removed and ``target`` is left as it was."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=str(target.parent))
    os.close(handle)
    try:
        yield Path(temporary)
        os.chmod(temporary, 0o644)  # mkstemp makes owner-only files
        os.replace(temporary, str(target))
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def write_bytes_atomic(target, data: bytes) -> Path:
    with replaced_atomically(target) as temporary:
        with open(temporary, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
    return Path(target)


def write_text_atomic(target, text: str) -> Path:
    return write_bytes_atomic(target, text.encode("utf-8"))
