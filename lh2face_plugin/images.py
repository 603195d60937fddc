"""Image decoding and encoding for every reader and writer of the package.

One decoder (:func:`decode`, :func:`read`) serves RecordIO records, ``.bin`` verification sets,
IJB loose crops and folders of faces, behind one gate (:func:`admit`): only JPEG and PNG (what
arcface_torch's data holds) are decoded, recognised by their magic bytes; their size is read from
the header (JPEG SOF marker, PNG IHDR chunk) and checked against :data:`MAX_PIXELS`, the encoded
size against :data:`MAX_BYTES`, and the decoding budget (:func:`decoding_cost`) before any decoder
runs: the decoded bytes (pixels x channels x bytes per sample) against :data:`MAX_DECODED_BYTES`
and, for a JPEG, the number of scans counted from its markers against :data:`MAX_JPEG_SCANS` and
scans x pixels against :data:`MAX_SCAN_WORK` (a progressive JPEG whose scans repeat is a CPU bomb).
With ``strict`` truncated JPEG and PNG files are refused too (OpenCV would decode them with a grey
bottom and a warning). Errors are
:class:`ImageError` (a ``ValueError``) naming the image and the cause, never its bytes.

The codec is OpenCV when installed (mxnet's), else Pillow; both return OpenCV's conventions
(BGR, uint8; ``"unchanged"`` keeps grey, BGRA and 16-bit PNGs as stored).
"""
from __future__ import annotations

import io
import os
import struct
from typing import Optional, Tuple, Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from .fileio import NotRegularFile, open_regular

try:
    import cv2
except ImportError:  # pragma: no cover - exercised by forcing the backend
    cv2 = None

__all__ = ["decode", "read", "encode", "sniff", "admit", "ImageError", "MAX_PIXELS", "MAX_BYTES", "FORMATS",
           "BACKEND", "MAX_DECODED_BYTES", "MAX_JPEG_SCANS", "MAX_SCAN_WORK", "decoding_cost"]

BACKEND = "cv2" if cv2 is not None else "pillow"
FORMATS = ("JPEG", "PNG")
"""The formats the package decodes."""
MAX_PIXELS = 8192 * 8192
"""Largest image decoded: 67,108,864 pixels (8192 x 8192; 192 MiB as 8-bit BGR), read from the header."""
MAX_BYTES = 64 << 20
"""Largest encoded image decoded: 64 MiB."""
MAX_DECODED_BYTES = 192 << 20
"""Largest decoded image: 192 MiB = width x height x channels x bytes per sample, as the header
declares them (PNG IHDR bit depth and colour type, a palette counted as 3 channels; JPEG SOF precision
and component count). 8192 x 8192 8-bit RGB fits; a 16-bit RGBA PNG of that size (512 MiB) does not."""
MAX_JPEG_SCANS = 64
"""Most scans (SOS markers) in one JPEG. A baseline JPEG has one per component group (<= 4), a
progressive one about 6 to 12 (libjpeg's default script: 10 for colour); each scan is a pass over the
whole image, so repeated scans multiply the decoding work without growing the file much."""
MAX_SCAN_WORK = 16 * MAX_PIXELS
"""Most decoding work of one JPEG, as scans x pixels: an 8192 x 8192 image may have 16 scans, a
112 x 112 face the :data:`MAX_JPEG_SCANS`. Scans are counted from the markers before decoding."""

Buffer = Union[bytes, bytearray, memoryview, np.ndarray]
_MODES = ("bgr", "rgb", "gray", "unchanged")
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class ImageError(ValueError):
    """Image bytes that cannot be used: not an image, truncated, or too large."""


def _jpeg_scan(buf: bytes) -> Tuple[Optional[Tuple[int, int]], Optional[int]]:
    """``((width, height), start of the first scan)`` of a JPEG, from its markers (``None`` when not found)."""
    pos, n, size = 2, len(buf), None
    while pos + 4 <= n:
        if buf[pos] != 0xFF:
            return size, None
        marker = buf[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        (length,) = struct.unpack_from(">H", buf, pos + 2)
        if marker in _SOF and pos + 9 <= n and size is None:
            height, width = struct.unpack_from(">HH", buf, pos + 5)
            size = (width, height)
        if marker == 0xDA:
            return size, pos
        pos += 2 + length
    return size, None


def sniff(buf: Buffer) -> Tuple[Optional[str], Optional[Tuple[int, int]]]:
    """``(format, (width, height))`` of a JPEG or PNG from its header alone; ``(None, None)`` otherwise.

    The size is ``None`` for a JPEG without a frame header (SOF marker) before its first scan.
    """
    data = buf if isinstance(buf, bytes) else bytes(memoryview(buf)[: MAX_BYTES + 1])
    if data[:8] == _PNG_SIGNATURE:
        if len(data) >= 24 and data[12:16] == b"IHDR":
            return "PNG", struct.unpack_from(">II", data, 16)
        return "PNG", None
    if data[:3] == b"\xff\xd8\xff":
        size, _ = _jpeg_scan(data)
        return "JPEG", size
    return None, None


_OTHER_FORMATS = (
    (b"#?RADIANCE", "a Radiance HDR image"), (b"#?RGBE", "a Radiance HDR image"), (b"BM", "a BMP image"),
    (b"GIF8", "a GIF image"), (b"II*\x00", "a TIFF image"), (b"MM\x00*", "a TIFF image"),
    (b"\x76\x2f\x31\x01", "an OpenEXR image"), (b"\x00\x00\x00\x0cjP  ", "a JPEG 2000 image"),
    (b"\xff\x4f\xff\x51", "a JPEG 2000 codestream"), (b"P1", "a PBM image"), (b"P2", "a PGM image"),
    (b"P3", "a PPM image"), (b"P4", "a PBM image"), (b"P5", "a PGM image"), (b"P6", "a PPM image"),
    (b"PF", "a PFM image"), (b"Pf", "a PFM image"), (b"\x59\xa6\x6a\x95", "a Sun raster image"),
)


def _kind(data: bytes) -> str:
    """What the bytes are, for an error message (never the bytes themselves)."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "a WebP image"
    for magic, kind in _OTHER_FORMATS:
        if data.startswith(magic):
            return kind
    return "not an image format the package knows"


def admit(buf: Buffer, where: str = "image") -> Tuple[str, Tuple[int, int]]:
    """The decoder gate: ``(format, (width, height))`` of an image the package may decode.

    Admits JPEG and PNG only (magic bytes), of at most :data:`MAX_BYTES` bytes, whose header declares
    a size of 1 to :data:`MAX_PIXELS` pixels. Nothing is decoded.

    Raises:
        ImageError: naming ``where`` and the cause (never the bytes).
    """
    n = buf.nbytes if isinstance(buf, (memoryview, np.ndarray)) else len(buf)
    if n == 0:
        raise ImageError(f"{where}: empty image data (0 bytes)")
    if n > MAX_BYTES:
        raise ImageError(f"{where}: {n} bytes of image data, more than the {MAX_BYTES >> 20} MiB limit of one "
                         "image; use a smaller image")
    fmt, size = sniff(buf)
    if fmt is None:
        head = bytes(memoryview(buf)[:16]) if not isinstance(buf, bytes) else buf[:16]
        raise ImageError(f"{where}: {_kind(head)}; only {' and '.join(FORMATS)} images are decoded (convert it, "
                         "or leave it out)")
    if size is None:
        where_size = "frame header (SOF marker) before its image data" if fmt == "JPEG" else "IHDR chunk"
        raise ImageError(f"{where}: a {fmt} without a {where_size}; the file is damaged or not a {fmt}")
    width, height = size
    if width < 1 or height < 1:
        raise ImageError(f"{where}: the {fmt} header declares {width}x{height} pixels; the file is damaged")
    if width * height > MAX_PIXELS:
        raise ImageError(f"{where}: the {fmt} header declares {width}x{height} pixels, {width * height / 1e6:.0f} "
                         f"megapixels, more than the {MAX_PIXELS / 1e6:.0f}-megapixel limit against decompression "
                         "bombs; use a smaller image")
    data = buf if isinstance(buf, bytes) else bytes(memoryview(buf).cast("B"))
    decoded, scans = decoding_cost(data)
    if decoded > MAX_DECODED_BYTES:
        raise ImageError(f"{where}: the {fmt} header declares {width}x{height} pixels that decode to "
                         f"{decoded / 2 ** 20:.0f} MiB (channels x bit depth), more than the "
                         f"{MAX_DECODED_BYTES >> 20} MiB limit of one decoded image; use a smaller or 8-bit image")
    if scans > MAX_JPEG_SCANS or scans * width * height > MAX_SCAN_WORK:
        raise ImageError(f"{where}: a JPEG of {scans} scans at {width}x{height} pixels, more decoding work than "
                         f"the limit ({MAX_JPEG_SCANS} scans, and scans x pixels <= {MAX_SCAN_WORK // MAX_PIXELS} x "
                         f"{MAX_PIXELS}); re-encode it (baseline or a standard progressive script)")
    return fmt, (int(width), int(height))


def decoding_cost(data: bytes) -> Tuple[int, int]:
    """``(decoded bytes, scans)`` of a JPEG or PNG from its header and markers, without decoding.

    Decoded bytes: width x height x channels x bytes per sample (PNG: IHDR colour type and bit
    depth, a palette as 3 channels; JPEG: SOF component count and precision). Scans: the JPEG's
    start-of-scan markers (``FF DA``; inside entropy-coded data an ``FF`` is always followed by
    ``00`` or a restart marker, so every ``FF DA`` is a scan), 1 for a PNG. ``(0, 0)`` when unknown.
    """
    if data[:8] == _PNG_SIGNATURE and len(data) >= 26 and data[12:16] == b"IHDR":
        width, height = struct.unpack_from(">II", data, 16)
        depth, colour = data[24], data[25]
        channels = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}.get(colour, 4)
        return width * height * channels * (2 if depth > 8 else 1), 1
    if data[:3] == b"\xff\xd8\xff":
        frame = _jpeg_frame(data)
        if frame is None:
            return 0, data.count(b"\xff\xda")
        width, height, components, precision = frame
        return width * height * max(components, 1) * (2 if precision > 8 else 1), data.count(b"\xff\xda")
    return 0, 0


def _jpeg_frame(buf: bytes) -> Optional[Tuple[int, int, int, int]]:
    """``(width, height, components, precision)`` of a JPEG's frame header (SOF), or ``None``."""
    pos, n = 2, len(buf)
    while pos + 4 <= n:
        if buf[pos] != 0xFF:
            return None
        marker = buf[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        if marker in _SOF and pos + 10 <= n:
            precision = buf[pos + 4]
            height, width = struct.unpack_from(">HH", buf, pos + 5)
            return width, height, buf[pos + 9], precision
        if marker == 0xDA:
            return None
        (length,) = struct.unpack_from(">H", buf, pos + 2)
        pos += 2 + length
    return None


def _truncation(buf: bytes, fmt: Optional[str]) -> Optional[str]:
    if fmt == "JPEG":
        _, scan = _jpeg_scan(buf)
        if scan is None:
            return "a JPEG without image data (no start-of-scan marker)"
        if buf.find(b"\xff\xd9", scan) < 0:
            return "a truncated JPEG (no end-of-image marker)"
    elif fmt == "PNG" and buf.rfind(b"IEND") < 8:
        return "a truncated PNG (no IEND chunk)"
    return None


def decode(buf: Buffer, mode: str = "bgr", *, where: str = "image", strict: bool = False,
           backend: Optional[str] = None) -> np.ndarray:
    """Decode encoded image bytes.

    Args:
        buf: the encoded bytes (a 1-D uint8 array is taken as bytes).
        mode: ``"bgr"`` (H, W, 3), ``"rgb"`` (H, W, 3), ``"gray"`` (H, W), or ``"unchanged"``
            (as stored: grey, BGR, BGRA; 16-bit PNGs stay uint16), like ``cv2.imdecode``'s flags.
        where: the image's name in error messages (a file, ``"rec, key 7"``...).
        strict: also refuse truncated JPEG/PNG files (build time checks).
        backend: ``"cv2"`` or ``"pillow"`` (default :data:`BACKEND`).

    Raises:
        ImageError: refused by :func:`admit` (not JPEG/PNG, too large), undecodable, or truncated (``strict``).
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    data = buf.tobytes() if isinstance(buf, np.ndarray) else bytes(buf)
    fmt, _ = admit(data, where)
    if strict:
        cut = _truncation(data, fmt)
        if cut is not None:
            raise ImageError(f"{where}: {cut}; the file is incomplete (copy it again, or leave it out)")
    backend = backend or BACKEND
    if backend == "cv2":
        flag = {"bgr": cv2.IMREAD_COLOR, "rgb": cv2.IMREAD_COLOR, "gray": cv2.IMREAD_GRAYSCALE,
                "unchanged": cv2.IMREAD_UNCHANGED}[mode]
        try:
            img = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
        except cv2.error as exc:
            raise ImageError(f"{where}: OpenCV cannot decode it ({_first_line(exc)})") from None
        if img is not None and mode == "rgb":
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    else:
        img = _pil_decode(data, mode, fmt)
    if img is None:
        raise ImageError(f"{where}: could not decode the {fmt} image with {backend}: a damaged file")
    return img


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text.split(" error: ", 1)[-1] if " error: " in text else text


def _pil_decode(buf: bytes, mode: str, fmt: str) -> Optional[np.ndarray]:
    try:
        im = Image.open(io.BytesIO(buf), formats=[fmt])
        im.load()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return None
    if mode in ("bgr", "rgb"):
        rgb = np.asarray(im.convert("RGB"))
        return (rgb if mode == "rgb" else rgb[:, :, ::-1]).copy()
    if mode == "gray":
        return np.asarray(im.convert("L")).copy()
    if im.mode in ("I;16", "I;16B", "I;16L"):
        return np.asarray(im).astype(np.uint16)
    if im.mode == "L":
        return np.asarray(im).copy()
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        return np.asarray(im.convert("RGBA"))[:, :, [2, 1, 0, 3]].copy()
    return np.asarray(im.convert("RGB"))[:, :, ::-1].copy()


def read(path: Union[str, "os.PathLike[str]"], mode: str = "rgb", *, strict: bool = False,
         where: Optional[str] = None) -> np.ndarray:
    """Decode the image file ``path`` (see :func:`decode`); errors name the file (or ``where``)."""
    path = os.fspath(path)
    name = where or path
    try:
        with open_regular(path, "an image") as fh:
            data = fh.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise FileNotFoundError(f"{name}: image file not found") from None
    except NotRegularFile as exc:
        raise ImageError(f"{name}: {str(exc).split(': ', 1)[-1]}") from None
    return decode(data, mode, where=name, strict=strict)


_PIL_FORMATS = {".BMP": "BMP", ".WEBP": "WEBP", ".TIF": "TIFF", ".TIFF": "TIFF"}


def encode(img: np.ndarray, quality: int = 95, img_fmt: str = ".jpg", backend: Optional[str] = None) -> bytes:
    """Encode an OpenCV-convention image ((H, W) grey, (H, W, 3) BGR, (H, W, 4) BGRA).

    ``quality`` is the JPEG quality (0-100) for ``.jpg``/``.jpeg`` and the PNG compression level
    for ``.png`` (clamped to 0-9, as OpenCV does).
    """
    fmt = img_fmt.upper()
    img = np.asarray(img)
    if (backend or BACKEND) == "cv2":
        params = None
        if fmt in (".JPG", ".JPEG"):
            params = [cv2.IMWRITE_JPEG_QUALITY, quality]
        elif fmt == ".PNG":
            params = [cv2.IMWRITE_PNG_COMPRESSION, quality]
        ok, buf = cv2.imencode(img_fmt, img, params)
        if not ok:
            raise ValueError(f"failed to encode a {img.shape} {img.dtype} image as {img_fmt}")
        return buf.tobytes()

    if img.dtype != np.uint8:
        raise ValueError(f"the Pillow codec encodes uint8 images only, got {img.dtype}")
    if img.ndim == 3 and img.shape[2] == 3:
        img = img[:, :, ::-1]
    elif img.ndim == 3 and img.shape[2] == 4:
        img = img[:, :, [2, 1, 0, 3]]
    elif img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    elif img.ndim != 2:
        raise ValueError(f"cannot encode an image of shape {img.shape}: expected (H,W), (H,W,3) or (H,W,4)")
    im = Image.fromarray(np.ascontiguousarray(img))
    out = io.BytesIO()
    if fmt in (".JPG", ".JPEG"):
        im.save(out, format="JPEG", quality=int(quality))
    elif fmt == ".PNG":
        im.save(out, format="PNG", compress_level=min(max(int(quality), 0), 9))
    elif fmt in _PIL_FORMATS:
        im.save(out, format=_PIL_FORMATS[fmt])
    else:
        raise ValueError(f"unsupported image format {img_fmt!r} for the Pillow codec")
    return out.getvalue()
