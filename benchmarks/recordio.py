"""RecordIO read/write speed of lh2face_plugin.data.recordio, as ratios to a baseline.

The baseline is mxnet 1.9.1's ``mx.recordio`` when it imports (``tox -e mxnet``'s
environment), else a plain Python reader/writer over a buffered file object
(struct-unpacked part headers, ``seek`` + ``read``). Both are measured in the
same run on the same generated file: ``records`` payloads of ``size`` random
bytes (like JPEG faces), one in ten holding the magic number at an aligned
offset so that split records are read too.

Rows: sequential read of every record, random-order ``read_idx`` of every key,
indexed write of every record. Each time is the best of ``repeats`` runs (the
page cache is warm: the file has just been written). ratio = baseline time /
our time (> 1: we are faster).

    python benchmarks/recordio.py                       # 20000 records of 6 KiB
    python benchmarks/recordio.py --records 100000 --size 8192 --repeats 5
    PYTHONPATH=. .tox/mxnet/bin/python benchmarks/recordio.py   # against real mxnet
"""
from __future__ import annotations

import argparse
import os
import struct
import tempfile
import time

import numpy as np

from lh2face_plugin.data import recordio as ours

_HEAD = struct.Struct("<II")


class NaiveReader:
    """Plain buffered-file reader: the simplest correct implementation."""

    def __init__(self, idx_path: str, rec_path: str) -> None:
        self.f = open(rec_path, "rb")
        self.idx = {}
        with open(idx_path) as fi:
            for line in fi:
                k, v = line.split("\t")
                self.idx[int(k)] = int(v)

    def read(self):
        parts = []
        while True:
            head = self.f.read(8)
            if not head:
                return None
            _, lrec = _HEAD.unpack(head)
            cflag, n = lrec >> 29, lrec & ((1 << 29) - 1)
            parts.append(self.f.read(n))
            self.f.read(-n & 3)
            if cflag in (0, 3):
                return struct.pack("<I", ours.MAGIC).join(parts)

    def read_idx(self, key):
        self.f.seek(self.idx[key])
        return self.read()

    def reset(self):
        self.f.seek(0)


class NaiveWriter:
    def __init__(self, idx_path: str, rec_path: str) -> None:
        self.f, self.fi = open(rec_path, "wb"), open(idx_path, "w")

    def write_idx(self, key, buf):
        pos = self.f.tell()
        magic = struct.pack("<I", ours.MAGIC)
        cuts = [i for i in range(0, len(buf) & ~3, 4) if buf[i:i + 4] == magic]
        starts, ends = [0] + [c + 4 for c in cuts], cuts + [len(buf)]
        for j, (a, b) in enumerate(zip(starts, ends)):
            flag = 0 if not cuts else (1 if j == 0 else (3 if j == len(cuts) else 2))
            self.f.write(_HEAD.pack(ours.MAGIC, flag << 29 | (b - a)) + buf[a:b] + b"\0" * (-(b - a) & 3))
        self.fi.write(f"{key}\t{pos}\n")

    def close(self):
        self.f.close()
        self.fi.close()


def make_payloads(records: int, size: int, seed: int):
    rng = np.random.default_rng(seed)
    magic = struct.pack("<I", ours.MAGIC)
    out = []
    for i in range(records):
        buf = bytearray(rng.integers(0, 256, size=size + int(rng.integers(-size // 4, size // 4 + 1)),
                                     dtype=np.uint8).tobytes())
        if i % 10 == 0:
            at = 4 * int(rng.integers(0, len(buf) // 4 - 1))
            buf[at:at + 4] = magic
        out.append(bytes(buf))
    return out


def best(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=20000)
    ap.add_argument("--size", type=int, default=6144, help="mean payload bytes")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    try:
        import mxnet as mx

        base_name = f"mxnet {mx.__version__}"
        base_w = lambda i, r: mx.recordio.MXIndexedRecordIO(i, r, "w")  # noqa: E731
        base_r = lambda i, r: mx.recordio.MXIndexedRecordIO(i, r, "r")  # noqa: E731
    except ImportError:
        base_name = "naive Python reader"
        base_w, base_r = NaiveWriter, NaiveReader
    payloads = make_payloads(args.records, args.size, args.seed)
    order = np.random.default_rng(args.seed + 1).permutation(args.records).tolist()
    with tempfile.TemporaryDirectory() as tmp:
        idx, rec = os.path.join(tmp, "b.idx"), os.path.join(tmp, "b.rec")

        def write_with(factory):
            def run():
                w = factory(idx, rec)
                for k, p in enumerate(payloads):
                    w.write_idx(k, p)
                w.close()
            return run

        rows = [("indexed write", best(write_with(base_w), args.repeats),
                 best(write_with(lambda i, r: ours.MXIndexedRecordIO(i, r, "w")), args.repeats))]
        readers = (base_r(idx, rec), ours.MXIndexedRecordIO(idx, rec, "r"))
        for r in readers:
            assert [r.read_idx(k) for k in order[:200]] == [payloads[k] for k in order[:200]]

        def sequential(r):
            def run():
                r.reset()
                while r.read() is not None:
                    pass
            return run

        def random_access(r):
            def run():
                for k in order:
                    r.read_idx(k)
            return run

        for name, make in (("sequential read", sequential), ("random read_idx", random_access)):
            rows.append((name, best(make(readers[0]), args.repeats), best(make(readers[1]), args.repeats)))
        file_mb = os.path.getsize(rec) / 2**20
    print(f"{args.records} records, mean {args.size} B ({file_mb:.1f} MiB), best of {args.repeats}; "
          f"baseline: {base_name}")
    print(f"{'operation':<18}{'baseline s':>12}{'ours s':>10}{'ours MB/s':>11}{'ratio':>8}")
    for name, tb, to in rows:
        print(f"{name:<18}{tb:>12.4f}{to:>10.4f}{file_mb / to:>11.0f}{tb / to:>8.2f}")


if __name__ == "__main__":
    main()
