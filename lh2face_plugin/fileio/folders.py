"""A command's output folder, built in a staging folder and swapped in whole (:func:`writing_folder`).

The swap is ``renameat2(RENAME_EXCHANGE)`` on Linux. Files in the target that the command did not make are
carried over untouched; a non-empty folder the command did not make is refused unless ``overwrite``
(:func:`~.ownership.claim_folder`). What a command made is listed in the folder's manifest
(:func:`~.manifests.write_manifest`).
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import shutil
import stat
import sys
from typing import Any, Callable, Dict, Iterator, Mapping, Optional, Set

from .hashing import sha256_file
from .manifests import MANIFEST, walk_files, write_manifest
from .ownership import check_replacements, claim_folder
from .savers import write_json
from .staging import UMASK, Staged, cleanup_stale_in, is_staging_name, remove_entry

__all__ = ["publish_folder", "FolderWriter", "writing_folder"]

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: str, b: str) -> bool:
    """Atomically swap two paths (Linux ``renameat2``); ``False`` when unsupported here."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EXDEV, errno.EOPNOTSUPP, errno.EPERM, errno.EBUSY):
        return False
    raise OSError(err, os.strerror(err), a, None, b)


def _carry_over(out: str, stage: str, owned: Set[str]) -> None:
    """Hard-link (or copy) into ``stage`` every file of ``out`` that is not owned and not replaced."""
    for rel in walk_files(out):
        if rel in owned or rel == MANIFEST:
            continue
        dst = os.path.join(stage, rel)
        if os.path.lexists(dst):
            continue
        src = os.path.join(out, rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if os.path.islink(src):
            os.symlink(os.readlink(src), dst)
            continue
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)
    for root, dirs, files in os.walk(out):  # empty folders of the user
        dirs[:] = [d for d in dirs if not is_staging_name(d)]
        if root != out and not dirs and not files:
            os.makedirs(os.path.join(stage, os.path.relpath(root, out)), exist_ok=True)


def _publish_by_file(stage: str, out: str, owned: Set[str]) -> None:
    """Fallback without an atomic swap: files move one by one.

    First a manifest claiming the old and the new files (each with its new and its ``previous``
    digest: their checks fail until the end, so nothing is reused meanwhile, and after an
    interrupted move every file is still owned), then the files, then the new manifest.
    """
    new = set(walk_files(stage))
    with open(os.path.join(stage, MANIFEST), encoding="utf-8") as fh:
        doc = json.load(fh)
    files: Dict[str, Any] = {}
    for rel in sorted(owned - {MANIFEST}):
        p = os.path.join(out, rel)
        if os.path.isfile(p) and not os.path.islink(p):
            previous = {"size": os.path.getsize(p), "sha256": sha256_file(p)}
            files[rel] = {"size": -1, "sha256": "", "previous": previous}
    for rel, entry in doc["files"].items():
        files[rel] = dict(entry, **({"previous": files[rel]["previous"]} if rel in files else {}))
    interim = dict(doc, files=files)
    write_json(os.path.join(out, MANIFEST), interim)
    for rel in sorted(owned - new - {MANIFEST}):
        p = os.path.join(out, rel)
        if os.path.lexists(p) and not os.path.isdir(p):
            os.remove(p)
    for rel in sorted(new, key=lambda r: r == MANIFEST):
        dst = os.path.join(out, rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        os.replace(os.path.join(stage, rel), dst)
    remove_entry(stage)


def publish_folder(stage: str, out: str, owned: Set[str] = frozenset()) -> None:
    """Make the staged folder ``stage`` the folder ``out``, keeping the files of ``out`` not in ``owned``.

    A missing ``out`` is renamed into place; an existing one is swapped with the stage atomically
    (after its other files are linked into the stage), then the old version is removed. Where the
    filesystem cannot swap, files move one by one and the manifest is written last.
    """
    out = os.path.abspath(out)
    st = os.stat(out) if os.path.isdir(out) else None
    os.chmod(stage, stat.S_IMODE(st.st_mode) if st else 0o777 & ~UMASK)
    if st is None:
        os.rename(stage, out)
        return
    carried = sum(1 for rel in walk_files(out) if rel not in owned)
    if carried <= 10_000:
        _carry_over(out, stage, set(owned))
        if _exchange(stage, out):
            remove_entry(stage)  # now the old version
            return
    _publish_by_file(stage, out, set(owned))


class FolderWriter:
    """A command's output folder, built in a staging folder (``path``) and published whole.

    Creating one checks that ``command`` may write ``out`` (:func:`~.ownership.claim_folder`, raising
    ``FolderNotOwned``) and removes what killed runs left. :meth:`publish` refuses (without
    ``overwrite``) to replace a file of ``out`` that is not owned (:func:`~.ownership.check_replacements`), adds
    a manifest of every file in the staging folder (with ``extra`` keys) and replaces ``out`` by it
    (:func:`publish_folder`); :meth:`discard` drops it and leaves ``out`` as it was.
    """

    def __init__(self, out: str, command: str, *, overwrite: bool = False, extra: Optional[Mapping[str, Any]] = None,
                 legacy: Optional[Callable[[str], Optional[Set[str]]]] = None) -> None:
        self.out = os.path.realpath(os.fspath(out))
        self.command, self.extra, self.overwrite = command, extra, overwrite
        self.owned = claim_folder(self.out, command, overwrite, legacy)
        if os.path.isdir(self.out):
            cleanup_stale_in(self.out, recursive=True)
        self._staged = Staged(self.out, folder=True)
        self.path = self._staged.path

    def publish(self) -> None:
        if not self.overwrite:
            check_replacements(self.path, self.out, self.owned, self.command)
        write_manifest(self.path, self.command, self.extra)
        publish_folder(self.path, self.out, self.owned)
        self._staged.done = True
        self._staged.discard()

    def discard(self) -> None:
        self._staged.discard()


@contextlib.contextmanager
def writing_folder(out: str, command: str, *, overwrite: bool = False, extra: Optional[Mapping[str, Any]] = None,
                   legacy: Optional[Callable[[str], Optional[Set[str]]]] = None) -> Iterator[str]:
    """Build ``command``'s output folder in a staging folder, then publish it whole (:class:`FolderWriter`).

    Yields the staging folder; on success it replaces ``out``, on an exception ``out`` is left as
    it was. Raises ``FolderNotOwned`` for a non-empty folder the command did not make.
    """
    writer = FolderWriter(out, command, overwrite=overwrite, extra=extra, legacy=legacy)
    try:
        yield writer.path
        writer.publish()
    finally:
        writer.discard()
