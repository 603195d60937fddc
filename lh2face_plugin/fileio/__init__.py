"""Writing without loss: atomic files and folders, staging a rerun cleans up, ownership manifests, hashes.

Every writer of the package goes through this package, one module per guarantee:

* :mod:`.staging`: a file (or folder) is built under a staging name beside its target,
  ``.NAME.<pid>.<token>.part[suffix]`` (:class:`Staged`), locked while its writer lives; a later write of the
  same target removes staging entries whose process is gone (:func:`cleanup_stale`).
* :mod:`.atomic`: :func:`atomic_path`, a staging path renamed over the target only when complete;
  :mod:`.savers`: text, JSON, ``.npy``, copies and figures written through it, and :func:`derived`.
* :mod:`.folders`: :func:`writing_folder`, a command's output folder built in a staging folder and swapped in
  whole, files it did not make carried over untouched.
* :mod:`.manifests`: what a command made, with sizes and SHA-256, in the folder's :data:`MANIFEST`
  (:func:`read_manifest`, :func:`verify_manifest`), which is also how a rerun checks that what it reuses is whole.
* :mod:`.ownership`: :func:`owned_files`, the one ownership rule: a file is the command's own only while its
  content matches the SHA-256 the manifest lists; any other is the user's and replacing it needs ``overwrite``.
* :mod:`.inputs`: :func:`resolve_inside`, the one resolver of a path a dataset names (it must resolve, symbolic
  links included, inside the dataset's folder), and :func:`open_regular`, the one opener of a file whose path came
  from outside (a FIFO does not hang, ``/dev/zero`` does not fill memory).
* :mod:`.hashing`: :func:`sha256_file`, the one file hash.
* :mod:`.locks`: :func:`writer_lock`, one writer per output folder: an exclusive ``flock`` on
  ``.OUT.lh2face-lock`` beside it records the holder's pid and command; a second writer stops at once
  (:class:`FolderBusy`) or waits, and the lock of a killed run is taken over.

Guarantees hold against exceptions and killed processes; single files are also ``fsync``-ed.
"""
from __future__ import annotations

from .atomic import atomic_path, naming_errors
from .folders import FolderWriter, publish_folder, writing_folder
from .hashing import sha256_file, sha256_update_file
from .inputs import NotRegularFile, OutsideRoot, open_regular, resolve_inside
from .locks import LOCK_SUFFIX, FolderBusy, writer_lock
from .manifests import MANIFEST, read_manifest, verify_manifest, write_manifest
from .ownership import FolderNotOwned, check_replacements, claim_folder, owned_files
from .savers import copy_file, derived, save_figure, save_npy, update_json, write_json, write_text
from .staging import Staged, cleanup_stale, cleanup_stale_in, scratch_folder

__all__ = ["atomic_path", "scratch_folder", "Staged", "cleanup_stale", "cleanup_stale_in", "write_json", "write_text",
           "save_npy", "save_figure", "copy_file", "sha256_file", "sha256_update_file", "writing_folder",
           "publish_folder", "read_manifest", "verify_manifest", "write_manifest", "update_json", "MANIFEST",
           "FolderNotOwned", "FolderWriter", "owned_files", "claim_folder", "check_replacements", "resolve_inside",
           "OutsideRoot", "derived", "writer_lock", "FolderBusy", "LOCK_SUFFIX", "open_regular", "NotRegularFile",
           "naming_errors"]
