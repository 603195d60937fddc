"""Only regular files are read (issue 23 item 3): every reader of a path from outside goes through
``fileio.open_regular`` (``O_NONBLOCK`` + ``fstat`` on the opened descriptor), so a FIFO never hangs and
``/dev/zero`` never fills memory; an ``.idx`` is parsed into compact numpy arrays."""
from __future__ import annotations

import os
import threading
import tracemalloc

import numpy as np
import pytest

from lh2face_plugin.fileio import NotRegularFile, open_regular


class _Fifo:
    """A FIFO with a writer waiting in the background: a reader that opens it blocking gets EOF at
    once (old code then fails in another way instead of hanging); the writer is released at the end."""

    def __init__(self, path):
        self.path = str(path)
        os.mkfifo(self.path)
        self.thread = threading.Thread(target=self._write, daemon=True)
        self.thread.start()

    def _write(self):
        with open(self.path, "wb"):
            pass

    def close(self):
        fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)  # lets the writer's open return
        self.thread.join()
        os.close(fd)


def _readers(tmp_path):
    from lh2face_plugin.data.recordio import MXIndexedRecordIO, MXRecordIO
    from lh2face_plugin.data.tools import load_landmarks
    from lh2face_plugin.eval.ijb import _read_columns, _read_int_table
    from lh2face_plugin.eval.verification import load_bin
    from lh2face_plugin.images import read

    empty = tmp_path / "empty.rec"
    empty.write_bytes(b"")
    return {
        "x.idx": lambda p: MXIndexedRecordIO(p, str(empty), "r"),
        "x.rec": lambda p: MXRecordIO(p, "r"),
        "x.bin": load_bin,
        "landmarks.csv": load_landmarks,
        "face_tid_mid.txt": lambda p: _read_columns(p, 3),
        "template_pair_label.txt": lambda p: _read_int_table(p, 3),
        "x.jpg": read,
    }


@pytest.mark.parametrize("name", ["x.idx", "x.rec", "x.bin", "landmarks.csv", "face_tid_mid.txt",
                                  "template_pair_label.txt", "x.jpg"])
def test_a_fifo_is_refused_by_every_reader(tmp_path, name):
    fifo = _Fifo(tmp_path / name)
    try:
        with pytest.raises(ValueError, match=rf"{name}: not a regular file \(a pipe\)") as err:
            _readers(tmp_path)[name](fifo.path)
        assert "\n" not in str(err.value)
    finally:
        fifo.close()


def test_a_device_and_a_folder_are_refused_on_the_descriptor(tmp_path):
    link = tmp_path / "zero.idx"
    os.symlink("/dev/zero", link)  # a name that looks fine, a device behind it
    with pytest.raises(NotRegularFile, match=r"zero\.idx: not a regular file \(a device\)"):
        _readers(tmp_path)["x.idx"](str(link))
    with pytest.raises(NotRegularFile, match=r"not a regular file \(a folder\)"):
        open_regular(tmp_path)
    with open_regular(__file__, text=True) as fh:  # a regular file reads as usual, blocking
        assert fh.readline().startswith('"""')


def test_data_build_refuses_a_fifo_image_in_its_folder(tmp_path):
    from lh2face_plugin.data.tools import build_dataset

    from _helpers_recordio import face_like  # noqa: E402
    import cv2

    for ident in ("a", "b"):
        (tmp_path / "img" / ident).mkdir(parents=True)
        cv2.imwrite(str(tmp_path / "img" / ident / "0.png"), face_like(np.random.default_rng(0)))
    fifo = _Fifo(tmp_path / "img" / "b" / "1.jpg")
    try:
        with pytest.raises(ValueError, match=r"1\.jpg: not a regular file \(a pipe\)"):
            build_dataset(str(tmp_path / "img"), str(tmp_path / "out"))
    finally:
        fifo.close()


def test_the_index_is_parsed_into_compact_arrays(tmp_path):
    from lh2face_plugin.data.recordio import MXIndexedRecordIO

    n = 300_000
    idx, rec = tmp_path / "big.idx", tmp_path / "big.rec"
    idx.write_text("".join(f"{k}\t{16 * k}\n" for k in range(n)))
    rec.write_bytes(b"")
    size = idx.stat().st_size
    tracemalloc.start()
    try:
        r = MXIndexedRecordIO(str(idx), str(rec), "r")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= 3 * size, (peak, size)  # a dict and a list took ~10x
    print(f"idx {size} bytes, peak {peak} bytes while parsing")
    assert len(r.keys) == n and r.keys[0] == 0 and r.keys[-1] == n - 1 and r.idx[123_456] == 16 * 123_456
    assert 5 in r.idx and n not in r.idx and np.asarray(r.keys)[7] == 7
    r.close()
    shuffled = tmp_path / "s.idx"
    shuffled.write_text("3\t48\n1\t16\n2\t32\n")
    r = MXIndexedRecordIO(str(shuffled), str(rec), "r")
    assert list(r.keys) == [3, 1, 2] and [r.idx[k] for k in (1, 2, 3)] == [16, 32, 48] and 4 not in r.idx
