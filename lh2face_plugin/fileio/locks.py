"""Locks: ``flock`` on a descriptor (:func:`lock_fd`), one writer per output folder (:func:`writer_lock`), and
a folder held while a file in it is read, changed and written (:func:`locked_folder`).

The kernel drops the lock of a process that dies, so a lock file left by a killed run (a dead pid) is simply
taken over.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
from typing import Any, Callable, Dict, Iterator, Optional

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows
    fcntl = None

__all__ = ["FolderBusy", "LOCK_SUFFIX", "lock_fd", "locked_folder", "writer_lock"]

LOCK_SUFFIX = ".lh2face-lock"
"""The writer lock of ``PARENT/OUT`` is the file ``PARENT/.OUT.lh2face-lock`` (beside the folder, so a
folder that is swapped in whole keeps its lock, and nothing is added inside it)."""


class FolderBusy(FileExistsError):
    """Another live process holds the writer lock of an output folder (:func:`writer_lock`)."""


def lock_fd(fd: int, blocking: bool = True) -> bool:
    """Lock ``fd`` exclusively (``flock``); ``False`` when another holds it and ``blocking`` is off.

    Where the file system has no locks, ``True``: the callers' process checks alone decide.
    """
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        return True
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL, errno.EBADF):
            return True  # no locks here (NFS locks a read-only descriptor with EBADF): the process check alone
        raise


def _lock_file(out: str) -> str:
    parent, name = os.path.split(os.path.abspath(os.fspath(out)).rstrip(os.sep) or os.sep)
    return os.path.join(parent, f".{name}{LOCK_SUFFIX}")


def _holder(fd: int) -> Dict[str, Any]:
    try:
        doc = json.loads(os.pread(fd, 4096, 0).decode("utf-8", "replace") or "{}")
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


@contextlib.contextmanager
def writer_lock(out: str, command: str, *, wait: bool = False,
                on_wait: Optional[Callable[[str], None]] = None) -> Iterator[str]:
    """Hold the one-writer lock of the output folder ``out`` while the block runs (yields the lock file).

    ``command`` (e.g. ``"bench"``) is recorded with this process's pid. If another live process
    holds the lock, raise :class:`FolderBusy` naming its command and pid, or, with ``wait``, block
    until it ends (``on_wait`` gets a line first). A lock file whose holder is gone is taken over.
    """
    path = _lock_file(out)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
        if not lock_fd(fd, blocking=False):
            h = _holder(fd)
            who = f"another lh2face {h.get('command') or 'command'} (pid {h.get('pid', '?')})"
            if not wait:
                os.close(fd)
                raise FolderBusy(f"{who} is writing {out}; wait for it to finish, or pass --wait")
            if on_wait is not None:
                on_wait(f"waiting: {who} is writing {out}")
            lock_fd(fd, blocking=True)
        try:  # a holder that released has removed the file: lock the one at ``path`` now
            same = os.path.samestat(os.fstat(fd), os.stat(path, follow_symlinks=False))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "command": command}).encode(), 0)
        yield path
    finally:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        os.close(fd)


@contextlib.contextmanager
def locked_folder(folder: str) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` (made if missing) while the block runs."""
    os.makedirs(folder, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        lock_fd(fd)
        yield
    finally:
        os.close(fd)
