"""mxnet-free RecordIO: ``.rec`` / ``.idx`` files byte-compatible with mxnet 1.9.1.

Stands in for ``mxnet.recordio``: the names, signatures and semantics of
:class:`MXRecordIO`, :class:`MXIndexedRecordIO`, :data:`IRHeader`, :func:`pack`,
:func:`unpack`, :func:`pack_img` and :func:`unpack_img` follow mxnet 1.9.1, so
``from lh2face_plugin.data import recordio as mx_recordio`` replaces
``mx.recordio`` in existing code.

File layout (dmlc-core RecordIO, little-endian)::

    record  := part+ ; a part is
               uint32 magic 0xCED7230A
               uint32 lrecord = cflag << 29 | length      (length < 2**29)
               length payload bytes, then zero padding to a multiple of 4
    cflag   := 0 whole record | 1 first part | 2 middle part | 3 last part

The writer splits a payload at every occurrence of the magic number at a
4-byte-aligned position and drops that occurrence; the reader joins the parts,
putting the magic back between them. ``.idx`` is text, one ``key\\toffset`` line
per record, ``offset`` being the byte position of the record's first part.

Payload (:func:`pack`): a 24-byte header ``struct "<IfQQ"`` = (flag, label, id,
id2). ``flag == 0``: ``label`` is the (scalar) label. ``flag > 0``: the header's
label field is 0 and ``flag`` float32 labels follow the header. The rest of the
payload is opaque (an encoded image for :func:`pack_img`).

Differences from mxnet, all on error paths or in what a process may do:

* Reading is memory-mapped and checked: a truncated or corrupted ``.rec``, an
  ``.idx`` offset past the end of the ``.rec`` or off a record boundary, and a
  missing ``.idx`` raise :class:`RecordIOError` / :class:`FileNotFoundError`
  naming the file, the record and the byte offset (mxnet raises a bare
  "Invalid RecordIO File", and returns ``None`` for an offset past the end).
* Writing is atomic: records go to a staging file beside the target
  (:class:`lh2face_plugin.fileio.Staged`), renamed over it by :meth:`MXRecordIO.close`
  (an indexed writer flushes both files, then renames them one right after the
  other). A writer left in a ``with`` block by an exception, or garbage-collected
  without ``close()``, discards its output (with a ``RuntimeWarning`` in the latter
  case); the staging file of a killed writer is removed by the next write of the
  same file. Writing a key twice raises ``ValueError``.
* An index with a duplicate key (mxnet silently keeps the last) or bytes that are
  not UTF-8 text raises :class:`RecordIOError` naming the file and the line.
* A reader used in a forked process (DataLoader workers) reopens its own file
  mapping and keeps its position; pickling a reader (spawned workers) carries
  only paths and the index, and the copy reopens lazily.
* :func:`unpack_img` raises ``ValueError`` for bytes that do not decode (mxnet
  returns ``None``).
"""
from __future__ import annotations

import io
import math
import mmap
import numbers
import os
import struct
import warnings
from collections import namedtuple
from collections.abc import Mapping, Sequence as _Sequence
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from .. import images
from ..fileio import Staged, naming_errors, open_regular

__all__ = [
    "MXRecordIO",
    "MXIndexedRecordIO",
    "IRHeader",
    "RecordIOError",
    "pack",
    "unpack",
    "pack_img",
    "unpack_img",
    "imdecode",
    "imencode",
    "MAGIC",
    "IMAGE_BACKEND",
]

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_PART_HEAD = struct.Struct("<II")
_LEN_MASK = (1 << 29) - 1
_IR = struct.Struct("<IfQQ")
_IR_SIZE = _IR.size

IRHeader = namedtuple("HEADER", ["flag", "label", "id", "id2"])
IRHeader.__doc__ = """Record header ``(flag, label, id, id2)`` (mxnet's ``IRHeader``).

    flag (int): 0 for a scalar ``label``; ``n > 0`` when ``label`` holds ``n`` floats.
    label (float or ndarray): class label(s); stored as float32.
    id, id2 (int): unsigned 64-bit ids (im2rec stores the image index in ``id``).
"""

IMAGE_BACKEND = images.BACKEND
"""Codec used by :func:`pack_img` / :func:`unpack_img`: ``"cv2"`` when OpenCV is
importable, else ``"pillow"``. Both take and return OpenCV's channel order (BGR)."""

PathLike = Union[str, "os.PathLike[str]"]
Buffer = Union[bytes, bytearray, memoryview]


class RecordIOError(ValueError):
    """A ``.rec`` / ``.idx`` file that does not hold what its format requires.

    Attributes:
        path: the offending file.
        offset: byte offset in the ``.rec`` of the bad record or part (or ``None``).
        record: a description of the record (``"key 7"``, ``"record #3"``) or ``None``.
    """

    def __init__(self, path: str, message: str, *, offset: Optional[int] = None,
                 record: Optional[str] = None) -> None:
        where = [path]
        if record is not None:
            where.append(record)
        if offset is not None:
            where.append(f"byte offset {offset}")
        super().__init__(f"{', '.join(where)}: {message}")
        self.path = path
        self.offset = offset
        self.record = record


def _open_staged(path: str) -> Tuple[Staged, io.BufferedWriter]:
    staged = Staged(path)
    try:
        return staged, open(staged.path, "wb", buffering=1 << 20)
    except BaseException:
        staged.discard()
        raise


def _flush(fh: io.BufferedWriter) -> None:
    fh.flush()
    os.fsync(fh.fileno())
    fh.close()


def _discard(fh: Optional[io.IOBase], staged: Optional[Staged]) -> None:
    """Close ``fh`` (a failing flush of its buffer is moot: its contents are dropped) and remove ``staged``."""
    try:
        if fh is not None and not fh.closed:
            fh.close()
    except OSError:
        pass
    finally:
        if staged is not None:
            staged.discard()


class MXRecordIO:
    """Sequential reader / writer of a RecordIO ``.rec`` file (mxnet's ``MXRecordIO``).

    Args:
        uri: path of the ``.rec`` file.
        flag: ``"r"`` to read, ``"w"`` to write (the file appears on :meth:`close`).

    Reading: :meth:`read` returns the next record's payload as ``bytes`` (parts
    of a split record joined) or ``None`` at the end of the file; :meth:`reset`
    goes back to the start. Writing: :meth:`write` appends one record;
    :meth:`tell` is the byte offset the next record will start at.
    Usable as a context manager.
    """

    def __init__(self, uri: PathLike, flag: str) -> None:
        if flag not in ("r", "w"):
            raise ValueError(f"Invalid flag {flag!r} for {os.fspath(uri)}: expected 'r' or 'w'")
        self.uri = os.fspath(uri)
        self.flag = flag
        self.writable = flag == "w"
        self.is_open = False
        self.pid: Optional[int] = None
        self._fh: Optional[io.BufferedIOBase] = None
        self._map: Any = None
        self._staged: Optional[Staged] = None
        self._size = 0
        self._pos = 0
        self._ordinal: Optional[int] = 0
        self._key: Any = None
        self.open()

    # -- lifecycle ---------------------------------------------------------
    def open(self) -> None:
        """Open the file (mxnet calls this from ``__init__`` and :meth:`reset`)."""
        if self.writable:
            self._staged, self._fh = _open_staged(self.uri)
        else:
            self._map_file()
        self._pos = 0
        self._ordinal = 0
        self.pid = os.getpid()
        self.is_open = True

    def _map_file(self) -> None:
        try:
            fh = open_regular(self.uri, "a RecordIO file")
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.uri}: RecordIO file not found") from None
        size = os.fstat(fh.fileno()).st_size
        self._map = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        self._fh = fh
        self._size = size
        self.pid = os.getpid()

    def _unmap(self) -> None:
        if self._map is not None and not isinstance(self._map, bytes):
            self._map.close()
        self._map = None
        if self._fh is not None:
            self._fh.close()
        self._fh = None

    def close(self) -> None:
        """Close the file; a writer renames its temporary file over ``uri`` here."""
        if not self.is_open:
            return
        if self.writable:
            self._check_pid(allow_reset=False)
            fh, staged, self._fh, self._staged = self._fh, self._staged, None, None
            self.is_open = False
            try:
                with naming_errors(self.uri):
                    _flush(fh)
                self._commit_pair(staged)
            except BaseException:  # a full disk, a failed rename: nothing written is left behind
                _discard(fh, staged)
                self._discard_companions()
                raise
        else:
            self.is_open = False
            self._unmap()
        self.pid = None

    def _commit_pair(self, staged: Staged) -> None:
        staged.commit()

    def _discard_companions(self) -> None:
        """Writer: drop the staged files written beside the ``.rec`` (none here; the index in a subclass)."""

    def abort(self) -> None:
        """Writer only: drop everything written since :meth:`open`; ``uri`` is left untouched."""
        if self.is_open and self.writable:
            _discard(self._fh, self._staged)
            self._fh = self._staged = None
            self._discard_companions()
        elif self.is_open:
            self._unmap()
        self.is_open = False
        self.pid = None

    def reset(self) -> None:
        """Close and reopen: a reader goes back to the first record (a writer commits and starts over)."""
        self.close()
        self.open()

    def __enter__(self) -> "MXRecordIO":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and self.writable:
            self.abort()
        else:
            self.close()

    def __del__(self) -> None:
        if not getattr(self, "is_open", False):
            return
        if self.writable:
            if self.pid == os.getpid():
                warnings.warn(
                    f"{type(self).__name__}({self.uri!r}, 'w') was garbage-collected without close(); "
                    "its records were discarded (close() commits the file)",
                    RuntimeWarning, stacklevel=2)
                self.abort()
        else:
            self._unmap()

    def __getstate__(self) -> Dict[str, Any]:
        if self.writable and self.is_open:
            raise TypeError(f"cannot pickle {type(self).__name__}({self.uri!r}, 'w') while it is open")
        d = dict(self.__dict__)
        d["_fh"] = None
        d["_staged"] = None
        d["_map"] = None
        d["pid"] = None
        return d

    def __setstate__(self, d: Dict[str, Any]) -> None:
        self.__dict__.update(d)

    def __repr__(self) -> str:
        state = "open" if self.is_open else "closed"
        return f"{type(self).__name__}({self.uri!r}, {self.flag!r}) [{state}]"

    def _check_pid(self, allow_reset: bool) -> None:
        if self.pid == os.getpid() and (self._map is not None or self.writable):
            return
        if not self.is_open:
            raise ValueError(f"{self.uri}: operation on a closed {type(self).__name__}")
        if not allow_reset:
            raise RuntimeError(f"{self.uri}: Forbidden operation in multiple processes "
                               "(a writer belongs to the process that opened it)")
        self._fh = self._map = None  # copies inherited across fork(): this process maps the file itself
        self._map_file()

    # -- reading -----------------------------------------------------------
    def read(self) -> Optional[bytes]:
        """Payload of the next record, or ``None`` at the end of the file."""
        if self.writable:
            raise ValueError(f"{self.uri}: opened for writing ('w'); read() needs 'r'")
        self._check_pid(allow_reset=True)
        if self._ordinal is not None:
            where = f"record #{self._ordinal}"
        else:
            where = None if self._key is None else f"key {self._key!r}"
        buf, self._pos = self._read_at(self._pos, where)
        self._key = None
        if buf is not None and self._ordinal is not None:
            self._ordinal += 1
        return buf

    def _read_at(self, pos: int, where: Optional[str]) -> Tuple[Optional[bytes], int]:
        data, size = self._map, self._size
        if pos >= size:
            if pos == size:
                return None, pos
            raise RecordIOError(self.uri, f"position is past the end of the file ({size} bytes)",
                                offset=pos, record=where)
        start = pos
        parts: Optional[List[bytes]] = None
        while True:
            if pos + 8 > size:
                raise RecordIOError(
                    self.uri, f"truncated file: a record part header needs 8 bytes, {size - pos} remain "
                    f"(file is {size} bytes)", offset=pos, record=where)
            magic, lrec = _PART_HEAD.unpack_from(data, pos)
            if magic != MAGIC:
                raise RecordIOError(
                    self.uri, f"expected RecordIO magic 0x{MAGIC:08X}, found other bytes "
                    "(corrupted file, or an index offset that is not at a record boundary)",
                    offset=pos, record=where)
            cflag, length = lrec >> 29, lrec & _LEN_MASK
            begin = pos + 8
            end = begin + length
            padded = begin + ((length + 3) & ~3)
            if padded > size:
                raise RecordIOError(
                    self.uri, f"truncated file: record part of {length} bytes (+{padded - end} padding) "
                    f"starting at byte {begin} runs past the end of the file ({size} bytes)",
                    offset=pos, record=where)
            first = parts is None
            if cflag == 0 and first:
                return data[begin:end], padded
            if cflag > 3 or (first and cflag != 1) or (not first and cflag not in (2, 3)):
                expect = "0 or 1 (record start)" if first else "2 or 3 (continuation of the split record " \
                                                                f"starting at byte {start})"
                raise RecordIOError(self.uri, f"bad continuation flag {cflag}, expected {expect}",
                                    offset=pos, record=where)
            if first:
                parts = []
            parts.append(data[begin:end])
            pos = padded
            if cflag == 3:
                return _MAGIC_BYTES.join(parts), pos

    def tell(self) -> int:
        """Byte offset of the next record to be written (writer) or read (reader)."""
        return self._pos

    # -- writing -----------------------------------------------------------
    def write(self, buf: Buffer) -> None:
        """Append one record holding ``buf`` (fewer than 2**29 bytes)."""
        if not self.writable:
            raise ValueError(f"{self.uri}: opened for reading ('r'); write() needs 'w'")
        self._check_pid(allow_reset=False)
        data = buf if isinstance(buf, bytes) else bytes(buf)
        n = len(data)
        if n > _LEN_MASK:
            raise ValueError(f"{self.uri}: record of {n} bytes is too large (RecordIO limit is {_LEN_MASK} bytes)")
        with naming_errors(self.uri):  # a full disk names the .rec
            self._write_parts(data, n)

    def _write_parts(self, data: bytes, n: int) -> None:
        out, view = self._fh, memoryview(data)
        lower = n & ~3
        dptr = 0
        i = data.find(_MAGIC_BYTES, 0, lower)
        while i >= 0:
            if i & 3:
                i = data.find(_MAGIC_BYTES, i + 1, lower)
                continue
            out.write(_PART_HEAD.pack(MAGIC, (2 if dptr else 1) << 29 | (i - dptr)))
            out.write(view[dptr:i])
            self._pos += 8 + i - dptr
            dptr = i + 4
            i = data.find(_MAGIC_BYTES, dptr, lower)
        pad = -n & 3
        out.write(_PART_HEAD.pack(MAGIC, (3 if dptr else 0) << 29 | (n - dptr)))
        out.write(view[dptr:])
        if pad:
            out.write(b"\0" * pad)
        self._pos += 8 + n - dptr + pad

    def __iter__(self) -> Iterator[bytes]:
        """Iterate over the remaining records' payloads (reader)."""
        while True:
            buf = self.read()
            if buf is None:
                return
            yield buf


class MXIndexedRecordIO(MXRecordIO):
    """RecordIO file with a ``.idx`` index for random access (mxnet's ``MXIndexedRecordIO``).

    Args:
        idx_path: path of the ``.idx`` text file (``key\\toffset`` lines).
        uri: path of the ``.rec`` file.
        flag: ``"r"`` or ``"w"``; a writer commits both files on :meth:`close`.
        key_type: converts index keys when reading and writing (default ``int``).

    Attributes:
        keys (list): keys in file order. idx (dict): key -> byte offset.
    """

    def __init__(self, idx_path: PathLike, uri: PathLike, flag: str, key_type: type = int) -> None:
        self.idx_path = os.fspath(idx_path)
        self.idx: Dict[Any, int] = {}
        self.keys: List[Any] = []
        self.key_type = key_type
        self.fidx: Optional[io.TextIOBase] = None
        self._idx_staged: Optional[Staged] = None
        super().__init__(uri, flag)

    def open(self) -> None:
        self.idx, self.keys = {}, []
        super().open()
        try:
            if self.writable:
                self._idx_staged, raw = _open_staged(self.idx_path)
                self.fidx = io.TextIOWrapper(raw, encoding="utf-8", newline="\n")
            elif not os.path.exists(self.idx_path):
                raise FileNotFoundError(f"{self.idx_path}: index file for {self.uri} not found "
                                        "(random access needs the .idx written with the .rec)")
            else:
                self._load_index()
        except BaseException:
            self.fidx = self._idx_staged = None
            MXRecordIO.abort(self)
            raise

    def _load_index(self) -> None:
        if self.key_type is int:
            compact = _read_int_index(self.idx_path)
            if compact is not None:
                self.idx, self.keys = compact, compact.key_list()
                if len(compact.sorted_keys) > 1 and (compact.sorted_keys[1:] == compact.sorted_keys[:-1]).any():
                    self._duplicate_error([int(k) for k in compact.keys])
                return
        with open_regular(self.idx_path, "an index (.idx)") as f:
            raw = f.read()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw.count(b"\n", 0, exc.start) + 1
            raise RecordIOError(self.idx_path, f"line {line}: the byte at byte offset {exc.start} "
                                "is not UTF-8 text; an index holds 'key<TAB>offset' lines (is this the .rec, or a "
                                "damaged index? rebuild it)") from None
        lines = text.split("\n")
        if lines[-1] == "":
            lines.pop()
        if not lines:
            return
        tokens = "\t".join(lines).split("\t")
        if len(tokens) != 2 * len(lines):  # whitespace around a line (a trailing tab, CRLF), as mxnet strips it
            lines = [line.strip() for line in lines]
            tokens = "\t".join(lines).split("\t")
        try:
            if len(tokens) != 2 * len(lines):
                raise ValueError
            keys = list(map(self.key_type, tokens[0::2]))
            offsets = list(map(int, tokens[1::2]))
        except ValueError:
            self._raise_bad_index_line(lines)
        if offsets and min(offsets) < 0:
            self._raise_bad_index_line(lines)
        if self.key_type is str:
            keys = [k.strip() for k in keys]
        self.keys = keys
        self.idx = dict(zip(keys, offsets))
        if len(self.idx) != len(keys):
            self._duplicate_error(keys)

    def _duplicate_error(self, keys: Sequence[Any]) -> None:
        first: Dict[Any, int] = {}
        for n, key in enumerate(keys, 1):
            if key in first:
                raise RecordIOError(self.idx_path, f"line {n}: key {key!r} is also on line {first[key]}; "
                                    "keys must be unique (a duplicate would silently replace the record); "
                                    "rebuild the index")
            first[key] = n

    def _raise_bad_index_line(self, lines: Sequence[str]) -> None:
        for n, line in enumerate(lines, 1):
            fields = line.strip().split("\t")
            try:
                if len(fields) != 2:
                    raise ValueError
                self.key_type(fields[0])
                if int(fields[1]) < 0:
                    raise ValueError
            except ValueError:
                raise RecordIOError(self.idx_path, f"line {n}: expected 'key<TAB>offset' with a "
                                    f"{getattr(self.key_type, '__name__', self.key_type)} key and a byte "
                                    "offset >= 0, " + (f"found {len(fields)} tab-separated field(s)" if len(fields) != 2
                                                       else "found another key or offset")) from None
        raise RecordIOError(self.idx_path, "unreadable index")  # pragma: no cover

    def close(self) -> None:
        if not self.is_open:
            return
        if self.writable:
            try:
                with naming_errors(self.idx_path):
                    _flush(self.fidx)
            except BaseException:
                self.abort()
                raise
        super().close()

    def _discard_companions(self) -> None:
        _discard(self.fidx, self._idx_staged)
        self.fidx = self._idx_staged = None

    def _commit_pair(self, staged: Staged) -> None:
        # both files are on disk before either is renamed: the two renames follow each other
        idx_staged, self.fidx, self._idx_staged = self._idx_staged, None, None
        try:
            staged.commit()
        finally:
            idx_staged.commit() if staged.done else idx_staged.discard()

    def __getstate__(self) -> Dict[str, Any]:
        d = super().__getstate__()
        d["fidx"] = None
        d["_idx_staged"] = None
        return d

    def seek(self, idx: Any) -> None:
        """Position the reader at the record with key ``idx``."""
        if self.writable:
            raise ValueError(f"{self.uri}: opened for writing ('w'); seek() needs 'r'")
        self._check_pid(allow_reset=True)
        try:
            pos = self.idx[idx]
        except KeyError:
            raise KeyError(f"key {idx!r} is not in {self.idx_path} ({len(self.keys)} keys)") from None
        if pos >= self._size:
            raise RecordIOError(self.idx_path, f"key {idx!r} points to byte offset {pos}, past the end of "
                                f"{self.uri} ({self._size} bytes): index and record file do not match",
                                offset=pos, record=f"key {idx!r}")
        self._pos = pos
        self._ordinal = None
        self._key = idx

    def read_idx(self, idx: Any) -> bytes:
        """Payload of the record with key ``idx``; an insightface header record (key 0) is checked
        by :func:`check_header` first, for every reader (arcface_torch's through the mxnet shim too)."""
        self.seek(idx)
        payload = self.read()
        if idx == 0 and not isinstance(idx, bool) and payload is not None:
            check_header(payload, len(self.keys), self._size, f"{self.uri}, key 0 (the header record)")
        return payload

    def write_idx(self, idx: Any, buf: Buffer) -> None:
        """Append a record and index it under ``key_type(idx)``."""
        key = self.key_type(idx)
        if key in self.idx:
            raise ValueError(f"{self.idx_path}: key {key!r} was already written (record at byte {self.idx[key]}); "
                             "keys of an index must be unique")
        pos = self.tell()
        self.write(buf)
        with naming_errors(self.idx_path):
            self.fidx.write(f"{key}\t{pos}\n")
        self.idx[key] = pos
        self.keys.append(key)


class _KeyList(_Sequence):
    """The keys of a compact index in file order, as a read-only list of ints (8 bytes a key)."""

    def __init__(self, keys: np.ndarray) -> None:
        self._keys = keys

    def __len__(self) -> int:
        return len(self._keys)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [int(k) for k in self._keys[i]]
        return int(self._keys[i])

    def __iter__(self):
        return (int(k) for k in self._keys)

    def __array__(self, dtype=None, copy=None):
        return self._keys if dtype is None else self._keys.astype(dtype)

    def __eq__(self, other) -> bool:
        return list(self) == list(other)


class _CompactIndex(Mapping):
    """``key -> byte offset`` of an ``.idx`` of integer keys in numpy arrays (16 bytes a line when the
    keys ascend, 32 otherwise, against ~150 for a dict and a list): keys in file order, offsets, and a
    sorted view for lookups."""

    def __init__(self, keys: np.ndarray, offsets: np.ndarray) -> None:
        self.keys, self.offsets = keys, offsets
        if len(keys) < 2 or bool((keys[1:] >= keys[:-1]).all()):  # the usual index: no second copy
            self.sorted_keys, self._order = keys, None
        else:
            order = np.argsort(keys, kind="stable")
            self.sorted_keys, self._order = keys[order], order

    def key_list(self) -> _KeyList:
        return _KeyList(self.keys)

    def _find(self, key: Any) -> int:
        if isinstance(key, (bool, np.bool_)) or not isinstance(key, (int, np.integer)):
            raise KeyError(key)
        i = int(np.searchsorted(self.sorted_keys, key))
        if i >= len(self.sorted_keys) or self.sorted_keys[i] != key:
            raise KeyError(key)
        return i if self._order is None else int(self._order[i])

    def __getitem__(self, key: Any) -> int:
        return int(self.offsets[self._find(key)])

    def __contains__(self, key: Any) -> bool:
        try:
            self._find(key)
            return True
        except KeyError:
            return False

    def __len__(self) -> int:
        return len(self.keys)

    def __iter__(self):
        return (int(k) for k in self.keys)


def _read_int_index(path: str, chunk: int = 1 << 18) -> Optional[_CompactIndex]:
    """An ``.idx`` of ``int<TAB>int`` lines parsed into two preallocated int64 arrays (16 bytes a line,
    plus one chunk's tokens), or ``None`` when a line is not of that form (the caller then reads it
    line by line for the error). Only a regular file is read (:func:`~lh2face_plugin.fileio.open_regular`)."""
    with open_regular(path, "an index (.idx)") as f:
        size, last = 0, b""
        for block in iter(lambda: f.read(chunk), b""):
            size, last = size + block.count(b"\n"), block[-1:]
        lines = size + (1 if last not in (b"", b"\n") else 0)
        keys, offsets = np.empty(lines, np.int64), np.empty(lines, np.int64)
        f.seek(0)
        done, rest = 0, b""
        while True:
            block = f.read(chunk)
            data = rest + block
            if block:
                cut = data.rfind(b"\n") + 1
                data, rest = data[:cut], data[cut:]
            if data:
                n = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
                if data.count(b"\t") != n or done + n > lines:
                    return None
                tokens = np.array(data.replace(b"\t", b"\n").split(b"\n")[:2 * n])
                if len(tokens) != 2 * n or (tokens == b"").any():
                    return None
                try:
                    pairs = tokens.astype(np.int64).reshape(-1, 2)
                except (ValueError, OverflowError):
                    return None
                if (pairs[:, 1] < 0).any():
                    return None
                keys[done:done + n], offsets[done:done + n] = pairs[:, 0], pairs[:, 1]
                done += n
            if not block:
                break
    if done != lines:
        return None
    return _CompactIndex(keys, offsets)


# -- payload --------------------------------------------------------------
def pack(header: Sequence[Any], s: Buffer) -> bytes:
    """Payload bytes for ``header`` (an :data:`IRHeader` or 4-tuple) followed by ``s``.

    A scalar ``label`` is stored in the header with ``flag = 0``; otherwise the
    labels are flattened to float32, ``flag`` becomes their count, the header
    label 0, and the labels are written between header and ``s``.
    """
    header = IRHeader(*header)
    if isinstance(header.label, numbers.Number):
        header = header._replace(flag=0)
        body = bytes(s)
    else:
        label = np.asarray(header.label, dtype=np.float32)
        header = header._replace(flag=label.size, label=0)
        body = label.tobytes() + bytes(s)
    return _IR.pack(*header) + body


def check_header(payload: Buffer, keys: int, rec_size: int, where: str) -> Optional[Tuple[int, int]]:
    """``(N + 1, N + 1 + K)`` of an insightface header record (``flag == 2``), bounded before anyone
    allocates by it: both whole numbers, ``1 <= N + 1 <= keys`` (the index must hold a key per
    image, so a count is bounded by the ``.idx`` and, each record taking at least a header, by the
    ``.rec``'s size) and ``K >= 0``. ``None`` for a record that is not such a header.

    Raises:
        ValueError: one line naming ``where``; also for an image with vector labels (an im2rec
            ``--pack-label`` file whose first key is 0), which insightface readers take for the header.
    """
    if len(payload) < _IR_SIZE:
        return None
    flag = _IR.unpack_from(payload, 0)[0]
    if flag > 0 and len(payload) > _IR_SIZE + 4 * flag:
        raise ValueError(f"{where}: an image with {flag} labels (im2rec --pack-label with the first key 0), which "
                         "insightface readers (arcface_torch's MXFaceDataset) take for the header record and so "
                         "train on the wrong images; rebuild it with `lh2face data build`, or with keys from 1")
    if flag != 2:
        return None
    header, _ = unpack(payload)
    a, b = (float(v) for v in header.label[:2])
    if not all(math.isfinite(v) and v == int(v) for v in (a, b)):
        raise ValueError(f"{where}: the header's labels ({a!r}, {b!r}) are not whole numbers; expected "
                         "[N + 1, N + 1 + K] (N images, K identities)")
    most = min(keys, rec_size // (8 + _IR_SIZE))
    if not 1 <= a <= max(most, 1) or b < a:
        raise ValueError(f"{where}: the header declares {int(a) - 1} images and {int(b) - int(a)} identities, but "
                         f"the index holds {keys} keys (the .rec {rec_size} bytes): a forged or damaged header")
    return int(a), int(b)


def unpack(s: Buffer) -> Tuple[IRHeader, bytes]:
    """Split a payload into ``(IRHeader, rest)``.

    With ``flag > 0`` the header's ``label`` is a read-only float32 array of
    ``flag`` labels (shape ``(flag,)``); with ``flag == 0`` it is a float.
    """
    n = len(s)
    if n < _IR_SIZE:
        raise ValueError(f"record payload of {n} bytes is shorter than the {_IR_SIZE}-byte IRHeader")
    header = IRHeader(*_IR.unpack_from(s, 0))
    if header.flag > 0:
        end = _IR_SIZE + 4 * header.flag
        if end > n:
            raise ValueError(f"record header says {header.flag} float32 labels ({4 * header.flag} bytes) "
                             f"but only {n - _IR_SIZE} bytes follow the header")
        header = header._replace(label=np.frombuffer(s, np.float32, header.flag, _IR_SIZE))
        return header, bytes(s[end:])
    return header, bytes(s[_IR_SIZE:])


def imdecode(buf: Buffer, iscolor: int = -1) -> np.ndarray:
    """Decode image bytes the way ``cv2.imdecode(buf, iscolor)`` does (:func:`lh2face_plugin.images.decode`).

    Returns:
        uint8 ndarray: ``iscolor > 0``: (H, W, 3) **BGR**; ``iscolor == 0``: (H, W)
        grey; ``iscolor < 0`` (as stored): (H, W) grey, (H, W, 3) BGR or
        (H, W, 4) BGRA (16-bit PNGs stay uint16).
    """
    mode = "bgr" if iscolor > 0 else "gray" if iscolor == 0 else "unchanged"
    return images.decode(buf, mode, where="record image", backend=IMAGE_BACKEND)


def imencode(img: np.ndarray, quality: int = 95, img_fmt: str = ".jpg") -> bytes:
    """Encode an OpenCV-convention image ((H, W) grey, (H, W, 3) BGR, (H, W, 4) BGRA).

    ``quality`` is the JPEG quality (0-100) for ``.jpg``/``.jpeg`` and the PNG
    compression level for ``.png`` (clamped to 0-9, as OpenCV does).
    """
    return images.encode(img, quality, img_fmt, backend=IMAGE_BACKEND)


def unpack_img(s: Buffer, iscolor: int = -1) -> Tuple[IRHeader, np.ndarray]:
    """Unpack a payload and decode its image: ``(IRHeader, ndarray)``.

    The image follows OpenCV's conventions exactly like mxnet's ``unpack_img``:
    colour images are **BGR**, ``iscolor`` as in :func:`imdecode` (default -1:
    as stored). Convert with ``img[..., ::-1]`` for RGB.
    """
    header, payload = unpack(s)
    return header, imdecode(payload, iscolor)


def pack_img(header: Sequence[Any], img: np.ndarray, quality: int = 95, img_fmt: str = ".jpg") -> bytes:
    """Encode ``img`` (OpenCV convention: **BGR** or grey, uint8) and :func:`pack` it with ``header``."""
    return pack(header, imencode(img, quality, img_fmt))
