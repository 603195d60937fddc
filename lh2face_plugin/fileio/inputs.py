"""Files and paths named from outside: :func:`resolve_inside` keeps a named path inside its dataset's folder,
:func:`open_regular` reads only a regular file."""
from __future__ import annotations

import errno
import os
import stat
from typing import Any, Optional

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows
    fcntl = None

__all__ = ["OutsideRoot", "NotRegularFile", "resolve_inside", "open_regular"]


class NotRegularFile(ValueError):
    """A path named as input is a device, pipe or socket (or a folder), not a regular file."""


class OutsideRoot(ValueError):
    """A path named by a dataset's own file resolves outside the dataset's folder."""


def resolve_inside(root: str, name: str, *, source: str, line: Optional[int] = None) -> str:
    """The real path of ``root/name``, which must lie inside ``root`` (symbolic links resolved).

    ``name`` is what a dataset's file names (relative, or absolute); ``source`` (and ``line``) say
    where it was named, for the error.

    Raises:
        OutsideRoot: one line naming ``source`` and ``line`` (never the content of any file).
    """
    real_root = os.path.realpath(root)
    if name and os.sep not in name and "/" not in name and name not in (".", ".."):
        direct = os.path.join(real_root, name)
        if not os.path.islink(direct):
            return direct
    path = os.path.realpath(os.path.join(real_root, name))
    if path == real_root or os.path.commonpath([real_root, path]) != real_root:
        at = f"{source} line {line}" if line is not None else source
        raise OutsideRoot(f"{at}: names {name!r}, which resolves outside {root}; the files a data set (or a model) "
                          "names must lie inside its folder")
    return path


def open_regular(path: Any, what: str = "the input", *, text: bool = False, encoding: str = "utf-8",
                 errors: str = "strict", newline: Optional[str] = None):
    """Open ``path`` for reading only if it is a regular file, checked on the opened descriptor.

    The file is opened with ``O_NONBLOCK`` (a FIFO does not hang the open), ``fstat`` must say
    ``S_ISREG`` (a FIFO, socket, character device such as ``/dev/zero``, or folder is refused),
    then blocking reads are restored. ``what`` names the file's role in the error, e.g. ``"an
    index"``. Returns a binary file object, or a text one with ``text``.

    Raises:
        FileNotFoundError: no such file (naming it). NotRegularFile: one line naming it.
    """
    path = os.fspath(path)
    name = os.fsdecode(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, f"{what} not found", name) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a folder" if stat.S_ISDIR(mode) else "a pipe" if stat.S_ISFIFO(mode) else \
                "a socket" if stat.S_ISSOCK(mode) else "a device"
            raise NotRegularFile(f"{name}: not a regular file ({kind}); {what} must be a file")
        if fcntl is not None and flags & getattr(os, "O_NONBLOCK", 0):
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    if text:
        return open(fd, "r", encoding=encoding, errors=errors, newline=newline)
    return open(fd, "rb")
