"""Fuzz: random bytes and random or mutated image headers through the decoder gate and the RecordIO reader;
a progressive-scan family (Pillow's progressive JPEGs with their last scan spliced in again and again) and a
bit-depth family (PNG headers of every colour type and bit depth up to 8192 x 8192) for the decoding budget.

The inputs are seeded. Each run happens in a child process so that its peak memory is its own: it must
finish within a fixed time, grow its peak resident memory by less than a fixed bound, and raise nothing
but the package's ``ValueError`` subclasses (``ImageError``, ``RecordIOError``) or plain ``ValueError``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

TIME_LIMIT_S = 60
MEMORY_LIMIT_MB = 300

CHILD = textwrap.dedent(r'''
    import json, os, resource, struct, sys, zlib
    import numpy as np
    from lh2face_plugin import images
    from lh2face_plugin.data import recordio

    rng = np.random.default_rng(int(sys.argv[2]))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    bad = []

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    def png(w, h):
        ihdr = struct.pack(">IIBBBBB", w, h, 8, int(rng.choice([0, 2, 4, 6])), 0, 0, 0)
        return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(256))) + \
            chunk(b"IEND", b"")

    real = [images.encode(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8), 90, ext) for ext in (".jpg", ".png")]

    def jpeg(w, h):
        data = bytearray(real[0])
        sof = next(i for i in range(2, len(data) - 1) if data[i] == 0xFF and data[i + 1] in (0xC0, 0xC2))
        struct.pack_into(">HH", data, sof + 5, h, w)
        return bytes(data)

    def hdr(w, h):
        runs = b"".join(bytes([128 + min(127, w - k), 100]) for k in range(0, w, 127))
        return f"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y {h} +X {w}\n".encode() + \
            (bytes([2, 2, w >> 8, w & 255]) + runs * 4) * h

    def mutate(data):
        data = bytearray(data)
        for _ in range(int(rng.integers(1, 12))):
            op, i = int(rng.integers(3)), int(rng.integers(len(data)))
            if op == 0:
                data[i] = int(rng.integers(256))
            elif op == 1:
                del data[i:i + int(rng.integers(1, 64))]
            else:
                data[i:i] = rng.bytes(int(rng.integers(1, 64)))
            if not data:
                break
        return bytes(data)

    def sample():
        kind = int(rng.integers(6))
        if kind == 0:
            return rng.bytes(int(rng.integers(0, 4096)))
        big = lambda: int(rng.choice([0, 1, int(rng.integers(1, 70000)), 65535, 2 ** 31 - 1, 2 ** 32 - 1]))
        if kind == 1:
            return png(big(), big()) if rng.random() < 0.5 else png(big(), big())[: int(rng.integers(8, 60))]
        if kind == 2:
            return jpeg(min(big(), 65535), min(big(), 65535))
        if kind == 3:
            return hdr(int(rng.integers(8, 6000)), int(rng.integers(4000, 6000)))  # OpenCV decodes these
        prefixes = [b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"#?RADIANCE\n", b"BM", b"RIFF\0\0\0\0WEBP"]
        prefix = prefixes[int(rng.integers(len(prefixes)))]
        if kind == 4:
            return prefix + rng.bytes(int(rng.integers(0, 2048)))
        return mutate(real[int(rng.integers(2))])

    def call(fn, *args, **kw):
        try:
            fn(*args, **kw)
        except ValueError:
            pass
        except Exception as exc:
            bad.append(f"{fn.__name__}: {type(exc).__name__}: {exc}"[:300])

    def progressive(w, h, repeats):
        """A progressive JPEG (Pillow) whose last scan is spliced in ``repeats`` more times before EOI."""
        import io
        from PIL import Image

        out = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(out, "JPEG", progressive=True,
                                                                             quality=int(rng.integers(50, 95)))
        data = out.getvalue()
        last, end = data.rfind(b"\xff\xda"), data.rfind(b"\xff\xd9")
        return data[:end] + data[last:end] * repeats + data[end:]

    def png_depth(w, h):
        colour = int(rng.choice([0, 2, 3, 4, 6]))
        depth = int(rng.choice({0: [1, 2, 4, 8, 16], 2: [8, 16], 3: [1, 2, 4, 8], 4: [8, 16], 6: [8, 16]}[colour]))
        ihdr = struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, 0)
        return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(256))) + \
            chunk(b"IEND", b""), w * h * {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}[colour] * (2 if depth > 8 else 1)

    mode = sys.argv[1]
    if mode == "scans":  # the progressive-scan family: repeated scans multiply the work of a decode
        for n in range(int(sys.argv[3])):
            w, h, repeats = int(rng.integers(8, 160)), int(rng.integers(8, 160)), int(rng.integers(0, 120))
            data = progressive(w, h, repeats)
            scans = data.count(b"\xff\xda")
            try:
                images.admit(data)
                if scans > images.MAX_JPEG_SCANS:
                    bad.append(f"admitted {scans} scans at {w}x{h}")
                call(images.decode, data, "bgr", backend=["cv2", "pillow"][n % 2])
            except images.ImageError as exc:
                if scans <= images.MAX_JPEG_SCANS or "scans" not in str(exc):
                    bad.append(f"refused {scans} scans at {w}x{h}: {exc}"[:300])
            if n % 10 == 0:  # the same scans declared at 8192 x 8192: refused by scans x pixels
                big = bytearray(data)
                sof = next(i for i in range(2, len(big) - 1) if big[i] == 0xFF and big[i + 1] == 0xC2)
                struct.pack_into(">HH", big, sof + 5, 8192, 8192)
                try:
                    images.admit(bytes(big))
                    if scans * 8192 * 8192 > images.MAX_SCAN_WORK:
                        bad.append(f"admitted {scans} scans at 8192x8192")
                except images.ImageError:
                    pass
    elif mode == "depth":  # the bit-depth family: decoded bytes = pixels x channels x bytes per sample
        for n in range(int(sys.argv[3])):
            side = lambda: int(rng.choice([int(rng.integers(1, 9000)), 4096, 6000, 8192]))
            data, decoded = png_depth(side(), side())
            try:
                images.admit(data)
                if decoded > images.MAX_DECODED_BYTES:
                    bad.append(f"admitted {decoded} decoded bytes")
            except images.ImageError:
                continue
            call(images.decode, data, str(rng.choice(["bgr", "unchanged"])), backend=["cv2", "pillow"][n % 2])
    elif mode == "images":
        for n in range(int(sys.argv[3])):
            data = sample()
            call(images.decode, data, str(rng.choice(["bgr", "rgb", "gray", "unchanged"])), strict=bool(n % 2),
                 backend=["cv2", "pillow"][n % 3 == 0])
    else:
        folder = sys.argv[4]
        for n in range(int(sys.argv[3])):
            rec, idx = os.path.join(folder, f"{n}.rec"), os.path.join(folder, f"{n}.idx")
            with recordio.MXIndexedRecordIO(idx, rec, "w") as w:
                for k in range(int(rng.integers(1, 6))):
                    w.write_idx(k, recordio.pack(recordio.IRHeader(int(rng.integers(0, 3)), float(k), k, 0),
                                                 sample()))
            for path in (rec, idx):
                if rng.random() < 0.7:
                    with open(path, "rb") as f:
                        data = f.read()
                    with open(path, "wb") as f:
                        f.write(mutate(data) if data and rng.random() < 0.8 else rng.bytes(int(rng.integers(0, 512))))

            def scan_sequential():
                with recordio.MXRecordIO(rec, "r") as r:
                    while (buf := r.read()) is not None:
                        call(recordio.unpack_img, buf)

            def scan_indexed():
                with recordio.MXIndexedRecordIO(idx, rec, "r") as r:
                    for key in list(r.keys):
                        call(lambda: recordio.unpack_img(r.read_idx(key)))

            call(scan_sequential)
            call(scan_indexed)
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024
    print(json.dumps({"bad": bad, "grown_mb": grown}))
''')


def _run_child(*args: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENCV_IO_MAX_IMAGE_PIXELS=str(2 ** 30))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                                      env.get("PYTHONPATH")]))
    try:
        proc = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True, env=env,
                              timeout=TIME_LIMIT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"fuzzing {args[0]} did not finish within {TIME_LIMIT_S} s (a hang)")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("seed", [0, 1])
def test_decoder_gate_fuzz(seed):
    res = _run_child("images", str(seed), "600")
    assert res["bad"] == [], res["bad"][:5]
    assert res["grown_mb"] < MEMORY_LIMIT_MB, f"peak memory grew by {res['grown_mb']} MB"


@pytest.mark.parametrize("seed", [3])
def test_progressive_scan_family(seed):
    res = _run_child("scans", str(seed), "60")
    assert res["bad"] == [], res["bad"][:5]
    assert res["grown_mb"] < MEMORY_LIMIT_MB, f"peak memory grew by {res['grown_mb']} MB"


@pytest.mark.parametrize("seed", [4])
def test_bit_depth_family(seed):
    res = _run_child("depth", str(seed), "300")
    assert res["bad"] == [], res["bad"][:5]
    assert res["grown_mb"] < MEMORY_LIMIT_MB, f"peak memory grew by {res['grown_mb']} MB"


def test_recordio_reader_fuzz(tmp_path):
    res = _run_child("recordio", "7", "150", str(tmp_path))
    assert res["bad"] == [], res["bad"][:5]
    assert res["grown_mb"] < MEMORY_LIMIT_MB, f"peak memory grew by {res['grown_mb']} MB"
