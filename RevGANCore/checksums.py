"""SHA-256 of files, read in 1 MiB chunks (model store, batch ledgers, the real-CT fetcher)."""

from __future__ import annotations

import hashlib

__all__ = ["file_sha256", "CHUNK_BYTES"]

CHUNK_BYTES = 1 << 20


def file_sha256(path) -> str:
    """Hex SHA-256 of the file at ``path`` (OSError when it cannot be read)."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()
