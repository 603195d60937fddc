"""Atomic single files: :func:`atomic_path` yields a staging path that replaces the target only when the block
succeeds (flushed to disk first); :func:`naming_errors` names the file in an error that names none."""
from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator

from .staging import UMASK, Staged

__all__ = ["atomic_path", "naming_errors"]


@contextlib.contextmanager
def naming_errors(path: Any) -> Iterator[None]:
    """Re-raise an ``OSError`` of the block that names no file (a full disk: "[Errno 28] No space
    left on device", "[Errno 27] File too large", numpy's "73728 requested and 7648 written") as the
    same error naming ``path``, the file being written; errors that name a file pass unchanged."""
    try:
        yield
    except OSError as exc:
        if exc.filename is not None:
            raise
        named = OSError(exc.errno, exc.strerror or " ".join(str(exc).split()) or type(exc).__name__,
                        os.fsdecode(os.fspath(path)))
        raise named from exc


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = "") -> Iterator[str]:
    """Yield a staging path beside ``path``; it replaces ``path`` only if the block succeeds.

    ``suffix`` ends the staging name (some writers pick the format from it, e.g. ``.npy``, ``.png``).
    The file gets the permissions a plain ``open`` would give.
    """
    staged = Staged(path, suffix=suffix)
    os.chmod(staged.path, 0o666 & ~UMASK)
    try:
        with naming_errors(path):
            yield staged.path
            staged.commit()
    finally:
        staged.discard()
