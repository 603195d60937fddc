"""The one file hash: SHA-256 of a regular file's bytes."""
from __future__ import annotations

import hashlib
import os

from .inputs import open_regular

__all__ = ["sha256_file", "sha256_update_file"]


def sha256_update_file(digest: "hashlib._Hash", path: str, *, text: bool = False) -> None:
    """Feed the bytes of ``path`` to ``digest`` (``text``: CRLF read as LF)."""
    with open_regular(path, "a file to hash") as f:
        if text:
            digest.update(f.read().replace(b"\r\n", b"\n"))
            return
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)


def sha256_file(path: str, *, text: bool = False) -> str:
    """SHA-256 (hex) of a file's bytes; ``text=True`` reads CRLF as LF (a checkout on Windows)."""
    digest = hashlib.sha256()
    sha256_update_file(digest, os.fspath(path), text=text)
    return digest.hexdigest()
