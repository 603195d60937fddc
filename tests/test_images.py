"""images: the one decoder (bombs, truncation, both codecs), and one helper per guarantee in the package source."""
from __future__ import annotations

import ast
import os
import struct
import zlib

import numpy as np
import pytest

import lh2face_plugin
from lh2face_plugin import images
from lh2face_plugin.images import ImageError, decode, sniff


def png_header_bomb(width: int = 20000, height: int = 20000) -> bytes:
    """A tiny PNG whose header declares ``width`` x ``height`` pixels (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def jpeg_bytes(seed: int = 0, size: int = 32) -> bytes:
    rng = np.random.default_rng(seed)
    return images.encode(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), 90, ".jpg")


@pytest.mark.parametrize("backend", ["cv2", "pillow"])
def test_decompression_bombs_are_refused_from_the_header(backend):
    with pytest.raises(ImageError, match=r"bomb: the PNG header declares 20000x20000 pixels, 400 megapixels"):
        decode(png_header_bomb(), where="bomb", backend=backend)
    assert sniff(png_header_bomb(30, 20)) == ("PNG", (30, 20))


@pytest.mark.parametrize("backend", ["cv2", "pillow"])
def test_strict_decoding_refuses_truncated_files(backend):
    data = jpeg_bytes()
    assert decode(data, "rgb", strict=True, backend=backend).shape == (32, 32, 3)
    cut = data[: len(data) * 2 // 3]
    with pytest.raises(ImageError, match=r"x\.jpg: a truncated JPEG \(no end-of-image marker\)"):
        decode(cut, strict=True, where="x.jpg", backend=backend)
    png = images.encode(np.zeros((8, 8, 3), np.uint8), 3, ".png")
    with pytest.raises(ImageError, match="truncated PNG"):
        decode(png[:-12], strict=True, backend=backend)


def test_codecs_agree_and_errors_name_the_image():
    png = images.encode(np.arange(48, dtype=np.uint8).reshape(4, 4, 3), 3, ".png")
    a, b = decode(png, "rgb", backend="cv2"), decode(png, "rgb", backend="pillow")
    assert np.array_equal(a, b) and np.array_equal(a[..., ::-1], decode(png, "bgr"))
    assert decode(np.frombuffer(png, np.uint8), "gray").shape == (4, 4)
    with pytest.raises(ImageError, match="k7: empty image data"):
        decode(b"", where="k7")
    with pytest.raises(ImageError, match="k8: not an image format the package knows; only JPEG and PNG"):
        decode(b"nope!", where="k8")


def rle_hdr(width: int, height: int) -> bytes:
    """A Radiance .hdr whose run-length lines declare ``width`` x ``height`` pixels (OpenCV decodes it)."""
    runs = b"".join(bytes([128 + min(127, width - k), 100]) for k in range(0, width, 127))
    return f"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y {height} +X {width}\n".encode() + \
        (bytes([2, 2, width >> 8, width & 255]) + runs * 4) * height


def jpeg_with_size(width: int, height: int) -> bytes:
    """A real JPEG whose SOF marker is rewritten to declare ``width`` x ``height``."""
    data = bytearray(jpeg_bytes())
    sof = next(i for i in range(2, len(data) - 1) if data[i] == 0xFF and data[i + 1] in (0xC0, 0xC2))
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


@pytest.mark.parametrize("backend", ["cv2", "pillow"])
def test_the_gate_decodes_only_jpeg_and_png_within_the_header_limits(backend):
    assert images.admit(jpeg_bytes(size=40)) == ("JPEG", (40, 40))
    small_hdr = rle_hdr(16, 16)
    assert images.cv2.imdecode(np.frombuffer(small_hdr, np.uint8), -1) is not None  # OpenCV would decode it
    with pytest.raises(ImageError, match=r"^x\.hdr: a Radiance HDR image; only JPEG and PNG images are decoded"):
        decode(small_hdr, where="x.hdr", backend=backend)
    bmp = images.encode(np.zeros((4, 4, 3), np.uint8), img_fmt=".bmp", backend="pillow")
    with pytest.raises(ImageError, match="a BMP image; only JPEG and PNG"):
        decode(bmp, backend=backend)
    with pytest.raises(ImageError, match=r"JPEG header declares 9000x9000 pixels, 81 megapixels, more than the 67"):
        decode(jpeg_with_size(9000, 9000), backend=backend)
    with pytest.raises(ImageError, match=r"JPEG header declares 0x7 pixels"):
        decode(jpeg_with_size(0, 7), backend=backend)
    with pytest.raises(ImageError, match="a JPEG without a frame header"):
        decode(b"\xff\xd8\xff\xda\x00\x02" + bytes(64), backend=backend)
    with pytest.raises(ImageError, match=r"67108865 bytes of image data, more than the 64 MiB limit"):
        decode(b"\xff\xd8\xff" + bytes(images.MAX_BYTES - 2), backend=backend)


def test_errors_never_show_the_bytes_of_a_file(tmp_path):
    secret = b"root:$6$s3cr3t-hash-value:19000:0:99999:7:::\n"
    for data, strict in [(secret, False), (b"\x89PNG\r\n\x1a\n" + secret, False), (b"\xff\xd8\xff" + secret, False),
                         (jpeg_bytes()[:-40] + secret, True)]:
        with pytest.raises(ImageError) as err:
            decode(data, where="f", strict=strict)
        text = str(err.value)
        assert "s3cr3t" not in text and secret[:8].hex() not in text and str(len(data)) not in text, text
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    with pytest.raises(ImageError, match="pipe.jpg: not a regular file"):
        images.read(fifo)


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
                yield f"{f.value.id}.{f.attr}"
            elif isinstance(f, ast.Attribute) and isinstance(f.value, ast.Attribute) and \
                    isinstance(f.value.value, ast.Name):
                yield f"{f.value.value.id}.{f.value.attr}.{f.attr}"


GUARANTEES = {
    # call -> the only place allowed to make it (a module, or a package ending in "/")
    "os.replace": "fileio/", "os.rename": "fileio/", "tempfile.mkstemp": "fileio/",
    "tempfile.mkdtemp": "fileio/", "tempfile.NamedTemporaryFile": "fileio/",
    "cv2.imdecode": "images.py", "cv2.imread": "images.py", "Image.open": "images.py",
    "hashlib.md5": None, "hashlib.sha1": None,
}
FILE_HASH = "fileio/hashing.py"


def _in(place, rel: str) -> bool:
    return place is not None and (rel == place or (place.endswith("/") and rel.startswith(place)))


def _hashes_what_it_reads(fn: ast.AST) -> bool:
    names = set(_calls(fn))
    reads = any(isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "read"
                for n in ast.walk(fn))
    return reads and any(c.startswith("hashlib.") for c in names)


def test_one_helper_per_guarantee():
    """Atomic writes only in fileio/, image decoding only in images.py, file hashes only in fileio/hashing.py."""
    root = os.path.dirname(lh2face_plugin.__file__)
    offenders = []
    for folder, _, files in os.walk(root):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, root).replace(os.sep, "/")
            tree = ast.parse(open(path, encoding="utf-8").read())
            for call in _calls(tree):
                if call in GUARANTEES and not _in(GUARANTEES[call], rel):
                    offenders.append(f"{rel}: {call}")
            for fn in ast.walk(tree):
                if rel != FILE_HASH and isinstance(fn, (ast.FunctionDef, ast.Lambda)) and \
                        _hashes_what_it_reads(fn):
                    offenders.append(f"{rel}: {getattr(fn, 'name', 'lambda')} hashes file bytes itself")
    assert offenders == []


def test_the_decoding_budget_bounds_decoded_bytes_and_jpeg_scans():
    """Issue 23 item 2: a 16-bit RGBA 8192x8192 PNG decodes to 512 MiB (refused; 8-bit RGB at that size,
    192 MiB, is not); a progressive JPEG whose scan repeats is refused from its markers, undecoded."""
    import io
    import struct
    import zlib

    from PIL import Image

    from lh2face_plugin.images import MAX_DECODED_BYTES, MAX_JPEG_SCANS, admit, decoding_cost

    def png(w, h, depth, colour):
        def chunk(kind, data):
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, 0)) + \
            chunk(b"IEND", b"")

    assert decoding_cost(png(8192, 8192, 16, 6)) == (512 << 20, 1)
    with pytest.raises(ImageError, match="decode to 512 MiB .* more than the 192 MiB limit"):
        admit(png(8192, 8192, 16, 6))
    assert admit(png(8192, 8192, 8, 2)) == ("PNG", (8192, 8192)) and MAX_DECODED_BYTES == 192 << 20

    out = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
        out, "JPEG", progressive=True)
    data = out.getvalue()
    assert admit(data) == ("JPEG", (64, 64)) and decoding_cost(data)[1] == 10  # libjpeg's script: 10 scans
    last, end = data.rfind(b"\xff\xda"), data.rfind(b"\xff\xd9")
    bomb = data[:end] + data[last:end] * MAX_JPEG_SCANS + data[end:]
    with pytest.raises(ImageError, match=rf"a JPEG of {10 + MAX_JPEG_SCANS} scans at 64x64 pixels"):
        admit(bomb)
    big = bytearray(data)  # the same 10 scans declared at 8192 x 8192: within 16 scans x 64 megapixels
    sof = big.index(b"\xff\xc2")
    struct.pack_into(">HH", big, sof + 5, 8192, 8192)
    assert admit(bytes(big))[1] == (8192, 8192)
    big = bytearray(data[:end] + data[last:end] * 7 + data[end:])
    struct.pack_into(">HH", big, sof + 5, 8192, 8192)
    with pytest.raises(ImageError, match="a JPEG of 17 scans at 8192x8192"):
        admit(bytes(big))
