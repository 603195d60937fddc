"""Manifests: what a command made in a folder, listed with sizes and SHA-256 in the folder's :data:`MANIFEST`;
also how a rerun checks that what it reuses is whole (:func:`verify_manifest`)."""
from __future__ import annotations

import json
import os
import stat
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional

from .hashing import sha256_file
from .inputs import OutsideRoot, resolve_inside
from .savers import write_json
from .staging import is_staging_name

__all__ = ["MANIFEST", "walk_files", "write_manifest", "read_manifest", "verify_manifest"]

MANIFEST = ".lh2face-manifest.json"
"""File, inside a folder a command wrote, listing what it made: ``{"format", "command", "files": {rel:
{"size", "sha256"}}, ...}``."""
_MANIFEST_FORMAT = "lh2face-manifest/1"


def walk_files(folder: str) -> Iterator[str]:
    """Relative paths (``/``-separated) of the files and symlinks under ``folder``, staging entries excluded."""
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not is_staging_name(d) and not os.path.islink(os.path.join(root, d)))
        rel_root = os.path.relpath(root, folder)
        links = [d for d in os.listdir(root) if os.path.islink(os.path.join(root, d))
                 and os.path.isdir(os.path.join(root, d))]
        for name in sorted(files + links):
            if is_staging_name(name):
                continue
            rel = name if rel_root == "." else os.path.join(rel_root, name)
            yield rel.replace(os.sep, "/")


def write_manifest(folder: str, command: str, extra: Optional[Mapping[str, Any]] = None,
                   files: Optional[Iterable[str]] = None) -> Dict[str, Any]:
    """List ``files`` (default: every file under ``folder``) with sizes and SHA-256 in ``folder/MANIFEST``."""
    names = sorted(files) if files is not None else [f for f in walk_files(folder) if f != MANIFEST]
    listing = {}
    for rel in names:
        p = os.path.join(folder, rel)
        listing[rel] = {"size": os.path.getsize(p), "sha256": sha256_file(p)}
    doc = {"format": _MANIFEST_FORMAT, "command": command, **(dict(extra) if extra else {}), "files": listing}
    write_json(os.path.join(folder, MANIFEST), doc)
    return doc


def read_manifest(folder: str) -> Optional[Dict[str, Any]]:
    """The manifest of ``folder``, or ``None`` when there is none or it is not one of ours."""
    path = os.path.join(folder, MANIFEST)
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("format") != _MANIFEST_FORMAT or not isinstance(doc.get("files"), dict):
        return None
    return doc


def verify_manifest(folder: str, manifest: Optional[Mapping[str, Any]] = None, hashes: bool = True) -> List[str]:
    """Problems of ``folder`` against its manifest: missing files, other sizes, other SHA-256 (empty: whole)."""
    doc = read_manifest(folder) if manifest is None else manifest
    if doc is None:
        return [f"{os.path.join(folder, MANIFEST)}: missing or unreadable"]
    problems = []
    for rel, want in doc["files"].items():
        p = os.path.join(folder, rel)
        try:
            p = resolve_inside(folder, rel, source=os.path.join(folder, MANIFEST))
            st = os.lstat(p)
        except OutsideRoot as exc:
            problems.append(str(exc))
            continue
        except OSError:
            problems.append(f"{p}: missing")
            continue
        if not stat.S_ISREG(st.st_mode):
            problems.append(f"{p}: not a regular file")
        elif st.st_size != want.get("size"):
            problems.append(f"{p}: {st.st_size} bytes, the manifest says {want.get('size')}")
        elif hashes and sha256_file(p) != want.get("sha256"):
            problems.append(f"{p}: content differs from the manifest (SHA-256)")
    return problems
