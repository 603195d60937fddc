"""The one ownership rule (:func:`owned_files`): a file of a folder is the command's own (it may replace or
remove it) only while its content matches the SHA-256 the folder's manifest lists; a file the manifest does not
list, or one changed since, is the user's: it is kept, and replacing it needs ``overwrite``
(:func:`claim_folder`, :func:`check_replacements` refuse, naming the file). Writing a manifest therefore makes
nothing anyone else's file ours."""
from __future__ import annotations

import os
import stat
from typing import Any, Callable, List, Mapping, Optional, Set

from .hashing import sha256_file
from .inputs import OutsideRoot, resolve_inside
from .manifests import MANIFEST, read_manifest, walk_files
from .staging import is_staging_name

__all__ = ["FolderNotOwned", "owned_files", "claim_folder", "check_replacements"]


class FolderNotOwned(FileExistsError):
    """A command was asked to write into a non-empty folder it did not make (pass ``overwrite``)."""


def owned_files(folder: str, listing: Mapping[str, Any]) -> Set[str]:
    """The one ownership rule: the files of ``listing`` whose current content is what it lists.

    ``listing`` maps relative paths to ``{"sha256", "size"}`` (a manifest's ``files``; an entry's
    ``previous`` digest, left by an interrupted publish, counts too) or to a SHA-256 string. A file
    is owned only if it lies inside ``folder``, is a regular file (not a link) and has that SHA-256
    now: a listing someone else wrote owns nothing of yours.
    """
    owned = set()
    for rel, want in listing.items():
        wants = [want] + ([want["previous"]] if isinstance(want, Mapping) and "previous" in want else [])
        wants = [(w.get("size"), w.get("sha256")) if isinstance(w, Mapping) else (None, w) for w in wants]
        wants = [(size, digest) for size, digest in wants if isinstance(digest, str) and digest]
        if not isinstance(rel, str) or not wants:
            continue
        try:
            p = resolve_inside(folder, rel, source=folder)
            st = os.lstat(p)
        except (OutsideRoot, OSError):
            continue
        if not stat.S_ISREG(st.st_mode) or all(size is not None and size != st.st_size for size, _ in wants):
            continue
        if sha256_file(p) in {digest for size, digest in wants if size is None or size == st.st_size}:
            owned.add(os.path.relpath(p, os.path.realpath(folder)).replace(os.sep, "/"))
    return owned


def _present_inside(folder: str, rel: Any) -> bool:
    try:
        return isinstance(rel, str) and os.path.lexists(resolve_inside(folder, rel, source=folder))
    except OutsideRoot:
        return False


def _visible_entries(folder: str) -> List[str]:
    return sorted(n for n in os.listdir(folder) if not is_staging_name(n))


def claim_folder(out: str, command: str, overwrite: bool = False,
                 legacy: Optional[Callable[[str], Optional[Set[str]]]] = None) -> Set[str]:
    """Check that ``command`` may write ``out``; returns the files of ``out`` that it owns.

    ``out`` may be missing, empty, or hold a manifest written by ``command``: then the files it
    lists that still have their listed content are owned (:func:`owned_files`), and so is the
    manifest; a listed file whose content changed raises ``FolderNotOwned`` naming it, unless
    ``overwrite`` (it is never replaced or removed without). ``legacy(out)`` may recognise a folder
    an older version made and return the files it may replace or remove (a callback must prove
    what it claims, e.g. by digests through :func:`owned_files`). Otherwise ``FolderNotOwned`` is
    raised unless ``overwrite``; then nothing is owned, so files of other names survive.
    """
    if not os.path.exists(out):
        return set()
    if not os.path.isdir(out):
        raise FileExistsError(f"{out}: exists and is not a folder; choose another output folder")
    doc = read_manifest(out)
    if doc is not None and doc.get("command") == command:
        owned = owned_files(out, doc["files"])
        changed = [rel for rel in doc["files"] if rel not in owned and _present_inside(out, rel)]
        if changed and not overwrite:
            more = f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""
            raise FolderNotOwned(f"{os.path.join(out, changed[0])}{more}: changed since 'lh2face {command}' wrote it "
                                 f"(its SHA-256 is not the one {MANIFEST} lists); pass --overwrite to replace it, or "
                                 "move it away")
        return owned | {MANIFEST}
    owned = legacy(out) if legacy is not None else None
    if owned is not None:
        return set(owned)
    entries = _visible_entries(out)
    if not entries or overwrite:
        return set()
    shown = ", ".join(entries[:4]) + (" ..." if len(entries) > 4 else "")
    maker = f" (made by 'lh2face {doc['command']}')" if doc is not None else ""
    raise FolderNotOwned(f"{out}: the folder is not empty ({shown}) and was not made by 'lh2face {command}'"
                         f"{maker}; choose an empty or new folder, or pass --overwrite (replaces only the files "
                         "of the same names, keeps the others)")


def check_replacements(stage: str, out: str, owned: Set[str], command: str) -> None:
    """Raise ``FolderNotOwned`` naming the first file of ``out`` that ``stage`` would replace but is not owned."""
    if not os.path.isdir(out):
        return
    for rel in walk_files(stage):
        if rel != MANIFEST and rel not in owned and os.path.lexists(os.path.join(out, rel)):
            raise FolderNotOwned(f"{os.path.join(out, rel)}: was not written by 'lh2face {command}' (or changed "
                                 "since); pass --overwrite to replace it, or move it away")
