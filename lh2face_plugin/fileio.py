"""Writing without loss: atomic files and folders, staging a rerun cleans up, ownership manifests, hashes.

Every writer of the package goes through this module:

* :func:`atomic_path` / :class:`Staged`: a file (or folder) is built under a staging name beside
  its target, ``.NAME.<pid>.<token>.part[suffix]``, and renamed over the target only when complete.
  The staging entry is locked (``flock``) while its writer lives; a later write of the same target
  removes staging entries whose process is gone (a run killed with SIGKILL), see
  :func:`cleanup_stale`.
* :func:`writing_folder`: a command's output folder is built in a staging folder and swapped in
  whole (``renameat2(RENAME_EXCHANGE)`` on Linux). Files in the target that the command did not
  make are carried over untouched; a non-empty folder the command did not make is refused unless
  ``overwrite``. What a command made is listed, with sizes and SHA-256, in the folder's
  :data:`MANIFEST` (see :func:`read_manifest`, :func:`verify_manifest`), which is also how a rerun
  checks that what it reuses is whole.
* :func:`owned_files`: the one ownership rule. A file of a folder is the command's own (it may
  replace or remove it) only while its content matches the SHA-256 the folder's manifest lists; a
  file the manifest does not list, or one changed since, is the user's: it is kept, and replacing
  it needs ``overwrite`` (:class:`FolderWriter` refuses, naming the file). Writing a manifest
  therefore makes nothing anyone else's file ours.
* :func:`resolve_inside`: the one resolver of a path a dataset names (an IJB meta line, a manifest
  entry, an image found in a dataset folder): it must resolve, symbolic links included, inside the
  dataset's folder.
* :func:`open_regular`: the one opener of a file whose path came from outside (an ``.idx``, a
  ``.rec``, a ``.bin``, a list, an image, a ``data build`` folder's file): it opens without
  blocking and reads only a regular file, checked on the opened descriptor (a FIFO does not hang,
  ``/dev/zero`` does not fill memory).
* :func:`sha256_file`: the one file hash.
* :func:`writer_lock`: one writer per output folder. A command that writes ``OUT`` holds an
  exclusive ``flock`` on ``.OUT.lh2face-lock`` beside it, which records the holder's pid and
  command; a second writer stops at once (:class:`FolderBusy`: "another lh2face bench (pid N) is
  writing OUT") or waits. The kernel drops the lock of a process that dies, so a lock file left by
  a killed run (a dead pid) is simply taken over.

Guarantees hold against exceptions and killed processes; single files are also ``fsync``-ed.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import stat
import sys
import tempfile
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Set

import numpy as np

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows
    fcntl = None

__all__ = ["atomic_path", "scratch_folder", "Staged", "cleanup_stale", "cleanup_stale_in", "write_json", "write_text",
           "save_npy", "save_figure", "copy_file", "sha256_file", "sha256_update_file", "writing_folder",
           "publish_folder", "read_manifest", "verify_manifest", "write_manifest", "update_json", "MANIFEST",
           "FolderNotOwned", "FolderWriter", "owned_files", "check_replacements", "resolve_inside", "OutsideRoot",
           "derived", "writer_lock", "FolderBusy", "LOCK_SUFFIX", "open_regular", "NotRegularFile",
           "naming_errors"]

MANIFEST = ".lh2face-manifest.json"
"""File, inside a folder a command wrote, listing what it made: ``{"format", "command", "files": {rel:
{"size", "sha256"}}, ...}``."""
_MANIFEST_FORMAT = "lh2face-manifest/1"
_STAGING = re.compile(r"^\.(?P<target>.+)\.(?P<pid>\d+)\.(?P<token>[0-9a-f]{8})\.part(?P<suffix>\..*)?$")

_UMASK = os.umask(0)
os.umask(_UMASK)


class FolderNotOwned(FileExistsError):
    """A command was asked to write into a non-empty folder it did not make (pass ``overwrite``)."""


class FolderBusy(FileExistsError):
    """Another live process holds the writer lock of an output folder (:func:`writer_lock`)."""


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


# --------------------------------------------------------------------------- hashing
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


# --------------------------------------------------------------------------- staging
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


def _lock(fd: int, blocking: bool = True) -> bool:
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


def _remove(path: str) -> None:
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
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return True
    try:
        return _lock(fd, blocking=False)
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
                _remove(path)
                yield path


class Staged:
    """A staging file or folder beside ``target``, locked while this process writes it.

    ``path`` is where to write; :meth:`commit` renames it over ``target`` (files; folders go through
    :func:`publish_folder`), :meth:`discard` removes it. Creating one removes stale staging entries
    of the same target first.
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
        _lock(self._fd)
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
            _remove(self.path)
            self.done = True
        self._release()

    def __del__(self) -> None:  # pragma: no cover - safety net
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)


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
    os.chmod(staged.path, 0o666 & ~_UMASK)
    try:
        with naming_errors(path):
            yield staged.path
            staged.commit()
    finally:
        staged.discard()


def scratch_folder(prefix: str) -> str:
    """A new private folder for transient files (a rendezvous file, say); the caller removes it."""
    return tempfile.mkdtemp(prefix=prefix)


def write_text(path: str, text: str) -> None:
    """Write UTF-8 text (``\\n`` line ends) atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)


def write_json(path: str, obj: Any, *, compact: bool = False) -> None:
    """Write ``obj`` as JSON (indented, or compact), atomically."""
    text = json.dumps(obj, separators=(",", ":")) if compact else json.dumps(obj, indent=2, sort_keys=False)
    write_text(path, text + "\n")


def save_npy(path: str, array: np.ndarray) -> None:
    """``np.save`` atomically."""
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, array)


def copy_file(src: str, dst: str) -> None:
    """Copy ``src`` to ``dst`` atomically (nothing to do when they are the same file)."""
    if os.path.exists(dst) and os.path.samefile(src, dst):
        return
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def save_figure(fig: Any, path: str, dpi: int = 110) -> str:
    """Save a matplotlib figure as PNG atomically and close it (pyplot figures too). Returns ``path``."""
    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png", dpi=dpi)
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
    return path


def derived(what: str, make: Callable[[], Any], *, results: str,
            warn: Optional[Callable[[str], None]] = None) -> Any:
    """Make an output derived from measured results that are already written (a plot, a table).

    Measured results are written first, atomically; what is drawn or printed from them comes after,
    through this function: a failure there warns in one line (naming ``what`` and the ``results``
    file, which stays as written) and returns ``None`` instead of losing the run.
    """
    try:
        return make()
    except Exception as exc:  # noqa: BLE001 - any failure of a derived output leaves the results
        first = (str(exc).splitlines() or [""])[0][:160]
        line = f"warning: {what} not made ({type(exc).__name__}: {first}); the results are in {results}"
        (warn or (lambda text: print(text, file=sys.stderr)))(line)
        return None


LOCK_SUFFIX = ".lh2face-lock"
"""The writer lock of ``PARENT/OUT`` is the file ``PARENT/.OUT.lh2face-lock`` (beside the folder, so a
folder that is swapped in whole keeps its lock, and nothing is added inside it)."""


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
        if not _lock(fd, blocking=False):
            h = _holder(fd)
            who = f"another lh2face {h.get('command') or 'command'} (pid {h.get('pid', '?')})"
            if not wait:
                os.close(fd)
                raise FolderBusy(f"{who} is writing {out}; wait for it to finish, or pass --wait")
            if on_wait is not None:
                on_wait(f"waiting: {who} is writing {out}")
            _lock(fd, blocking=True)
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
def _locked_folder(folder: str) -> Iterator[None]:
    os.makedirs(folder, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        _lock(fd)
        yield
    finally:
        os.close(fd)


def update_json(path: str, update: Callable[[Optional[Any]], Any]) -> Any:
    """Read-modify-write a JSON file under an exclusive lock on its folder, atomically.

    ``update`` gets the current document (``None`` when the file does not exist) and returns the
    new one; it may raise to refuse. An unreadable file raises ``ValueError`` naming it.
    """
    path = os.path.abspath(os.fspath(path))
    with _locked_folder(os.path.dirname(path)):
        old = None
        if os.path.exists(path):
            try:
                with open(path, encoding="utf-8") as fh:
                    old = json.load(fh)
            except (OSError, ValueError) as exc:
                raise ValueError(f"{path}: unreadable JSON ({type(exc).__name__}: {exc}); move it away or "
                                 "choose another output folder") from None
        new = update(old)
        write_json(path, new)
    return new


# --------------------------------------------------------------------------- manifests
def _walk_files(folder: str) -> Iterator[str]:
    """Relative paths (``/``-separated) of the files and symlinks under ``folder``, staging entries excluded."""
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not _STAGING.match(d) and not os.path.islink(os.path.join(root, d)))
        rel_root = os.path.relpath(root, folder)
        links = [d for d in os.listdir(root) if os.path.islink(os.path.join(root, d))
                 and os.path.isdir(os.path.join(root, d))]
        for name in sorted(files + links):
            if _STAGING.match(name):
                continue
            rel = name if rel_root == "." else os.path.join(rel_root, name)
            yield rel.replace(os.sep, "/")


def write_manifest(folder: str, command: str, extra: Optional[Mapping[str, Any]] = None,
                   files: Optional[Iterable[str]] = None) -> Dict[str, Any]:
    """List ``files`` (default: every file under ``folder``) with sizes and SHA-256 in ``folder/MANIFEST``."""
    names = sorted(files) if files is not None else [f for f in _walk_files(folder) if f != MANIFEST]
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
    return sorted(n for n in os.listdir(folder) if not _STAGING.match(n))


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
    for rel in _walk_files(stage):
        if rel != MANIFEST and rel not in owned and os.path.lexists(os.path.join(out, rel)):
            raise FolderNotOwned(f"{os.path.join(out, rel)}: was not written by 'lh2face {command}' (or changed "
                                 "since); pass --overwrite to replace it, or move it away")


# --------------------------------------------------------------------------- publishing folders
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
    for rel in _walk_files(out):
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
        dirs[:] = [d for d in dirs if not _STAGING.match(d)]
        if root != out and not dirs and not files:
            os.makedirs(os.path.join(stage, os.path.relpath(root, out)), exist_ok=True)


def _publish_by_file(stage: str, out: str, owned: Set[str]) -> None:
    """Fallback without an atomic swap: files move one by one.

    First a manifest claiming the old and the new files (each with its new and its ``previous``
    digest: their checks fail until the end, so nothing is reused meanwhile, and after an
    interrupted move every file is still owned), then the files, then the new manifest.
    """
    new = set(_walk_files(stage))
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
    _remove(stage)


def publish_folder(stage: str, out: str, owned: Set[str] = frozenset()) -> None:
    """Make the staged folder ``stage`` the folder ``out``, keeping the files of ``out`` not in ``owned``.

    A missing ``out`` is renamed into place; an existing one is swapped with the stage atomically
    (after its other files are linked into the stage), then the old version is removed. Where the
    filesystem cannot swap, files move one by one and the manifest is written last.
    """
    out = os.path.abspath(out)
    st = os.stat(out) if os.path.isdir(out) else None
    os.chmod(stage, stat.S_IMODE(st.st_mode) if st else 0o777 & ~_UMASK)
    if st is None:
        os.rename(stage, out)
        return
    carried = sum(1 for rel in _walk_files(out) if rel not in owned)
    if carried <= 10_000:
        _carry_over(out, stage, set(owned))
        if _exchange(stage, out):
            _remove(stage)  # now the old version
            return
    _publish_by_file(stage, out, set(owned))


class FolderWriter:
    """A command's output folder, built in a staging folder (``path``) and published whole.

    Creating one checks that ``command`` may write ``out`` (:func:`claim_folder`, raising
    ``FolderNotOwned``) and removes what killed runs left. :meth:`publish` refuses (without
    ``overwrite``) to replace a file of ``out`` that is not owned (:func:`check_replacements`), adds
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
