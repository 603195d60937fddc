"""Staging entries: a file or folder is built under a staging name beside its target,
``.NAME.<pid>.<token>.part[suffix]``, locked (``flock``) while its writer lives (:class:`Staged`). A later write
of the same target removes staging entries whose process is gone, a run killed with SIGKILL
(:func:`cleanup_stale`). Also the private folders of transient files (:func:`scratch_folder`).
"""
from __future__ import annotations

import os
import re
import secrets
import shutil
import tempfile
from typing import Callable, Iterator, List

from .locks import lock_fd

__all__ = ["Staged", "cleanup_stale", "cleanup_stale_in", "is_staging_name", "remove_entry", "scratch_folder",
           "UMASK"]

_STAGING = re.compile(r"^\.(?P<target>.+)\.(?P<pid>\d+)\.(?P<token>[0-9a-f]{8})\.part(?P<suffix>\..*)?$")

UMASK = os.umask(0)
"""The process's umask, read once at import (staged entries get the permissions a plain ``open`` would)."""
os.umask(UMASK)


def is_staging_name(name: str) -> bool:
    """``name`` (a file or folder name, no path) is a staging entry's."""
    return bool(_STAGING.match(name))


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def remove_entry(path: str) -> None:
    """Remove a file, link or folder tree at ``path``; nothing there is fine."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def _is_stale(path: str, pid: int) -> bool:
    """The process that made ``path`` is gone (on this host) and nobody holds its lock."""
    if _pid_alive(pid):
        return False
    try:  # non-blocking: a FIFO of that name must not hang the writer that cleans up
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return True
    try:
        return lock_fd(fd, blocking=False)
    finally:
        os.close(fd)


def cleanup_stale(path: str) -> List[str]:
    """Remove the staging entries of ``path`` left by writers that no longer run; returns them."""
    folder, name = os.path.split(os.path.abspath(os.fspath(path)))
    return [p for p in _stale_entries(folder, lambda target: target == name)]


def cleanup_stale_in(folder: str, recursive: bool = False) -> List[str]:
    """Remove every stale staging entry directly in ``folder`` (and below, with ``recursive``)."""
    removed = list(_stale_entries(folder, lambda target: True))
    if recursive and os.path.isdir(folder):
        for entry in os.scandir(folder):
            if entry.is_dir(follow_symlinks=False) and not _STAGING.match(entry.name):
                removed += cleanup_stale_in(entry.path, recursive=True)
    return removed


def _stale_entries(folder: str, wanted: Callable[[str], bool]) -> Iterator[str]:
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        m = _STAGING.match(name)
        if m and wanted(m.group("target")):
            path = os.path.join(folder, name)
            if _is_stale(path, int(m.group("pid"))):
                remove_entry(path)
                yield path


class Staged:
    """A staging file or folder beside ``target``, locked while this process writes it.

    ``path`` is where to write; :meth:`commit` renames it over ``target`` (files; folders go through
    :func:`~lh2face_plugin.fileio.publish_folder`), :meth:`discard` removes it. Creating one removes stale
    staging entries of the same target first.
    """

    def __init__(self, target: str, *, folder: bool = False, suffix: str = "") -> None:
        self.target = os.path.abspath(os.fspath(target))
        parent, name = os.path.split(self.target)
        os.makedirs(parent, exist_ok=True)
        cleanup_stale(self.target)
        self.folder = folder
        while True:
            self.path = os.path.join(parent, f".{name}.{os.getpid()}.{secrets.token_hex(4)}.part{suffix}")
            try:
                if folder:
                    os.mkdir(self.path, 0o777)
                    self._fd = os.open(self.path, os.O_RDONLY)
                else:
                    self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
                break
            except FileExistsError:
                continue
        lock_fd(self._fd)
        self.done = False

    def _release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def commit(self) -> None:
        """Rename the staged file over the target (flushed to disk first)."""
        if self.folder:
            raise TypeError("a staged folder is published with publish_folder()")
        fd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(self.path, self.target)
        self.done = True
        self._release()

    def discard(self) -> None:
        """Remove the staged entry (nothing happens to the target)."""
        if not self.done:
            remove_entry(self.path)
            self.done = True
        self._release()

    def __del__(self) -> None:  # pragma: no cover - safety net
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)


def scratch_folder(prefix: str) -> str:
    """A new private folder for transient files (a rendezvous file, say); the caller removes it."""
    return tempfile.mkdtemp(prefix=prefix)
