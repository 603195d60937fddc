"""Image decoding and encoding for every reader and writer of the package.

One decoder (:func:`decode`, :func:`read`) serves RecordIO records, ``.bin`` verification sets,
IJB loose crops and folders of faces. Before decoding it reads the image size from the header and
refuses decompression bombs (more than :data:`MAX_PIXELS`); with ``strict`` it refuses truncated
JPEG and PNG files, which OpenCV would otherwise decode with a grey bottom and a warning. Errors are
:class:`ImageError` (a ``ValueError``) naming the image and the cause.

The codec is OpenCV when installed (mxnet's), else Pillow; both return OpenCV's conventions
(BGR, uint8; ``"unchanged"`` keeps grey, BGRA and 16-bit PNGs as stored).
"""
from __future__ import annotations

import io
import os
import re
import struct
from typing import Optional, Tuple, Union

import numpy as np

try:
    import cv2
except ImportError:  # pragma: no cover - exercised by forcing the backend
    cv2 = None

__all__ = ["decode", "read", "encode", "sniff", "ImageError", "MAX_PIXELS", "BACKEND"]

BACKEND = "cv2" if cv2 is not None else "pillow"
MAX_PIXELS = 178_956_970
"""Largest image accepted (Pillow's decompression-bomb error threshold, about 179 megapixels)."""

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
    """``(format, (width, height))`` from the header alone; ``(None, None)`` when unknown."""
    data = bytes(buf[:1 << 16]) if not isinstance(buf, bytes) else buf
    if data[:8] == _PNG_SIGNATURE and len(data) >= 24 and data[12:16] == b"IHDR":
        return "PNG", struct.unpack_from(">II", data, 16)
    if data[:2] == b"\xff\xd8":
        size, _ = _jpeg_scan(data)
        return "JPEG", size
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(bytes(buf))) as im:
            return im.format, im.size
    except Image.DecompressionBombError as exc:
        pixels = re.search(r"\((\d+) pixels\)", str(exc))
        return None, (int(pixels.group(1)) if pixels else MAX_PIXELS + 1, 1)
    except (UnidentifiedImageError, OSError, ValueError):
        return None, None


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
        ImageError: empty, undecodable, truncated (``strict``) or larger than :data:`MAX_PIXELS`.
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    data = buf.tobytes() if isinstance(buf, np.ndarray) else bytes(buf)
    if not data:
        raise ImageError(f"{where}: empty image data (0 bytes)")
    fmt, size = sniff(data)
    if size is not None and size[0] * size[1] > MAX_PIXELS:
        dims = f"{size[0]}x{size[1]} pixels, " if size[1] > 1 else ""
        raise ImageError(f"{where}: the {fmt or 'image'} header declares {dims}{size[0] * size[1] / 1e6:.0f} "
                         f"megapixels, more than the {MAX_PIXELS / 1e6:.0f}-megapixel limit against decompression "
                         "bombs; use a smaller image")
    if strict:
        cut = _truncation(data, fmt)
        if cut is not None:
            raise ImageError(f"{where}: {cut}, {len(data)} bytes; the file is incomplete (copy it again, or leave "
                             "it out)")
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
        img = _pil_decode(data, mode)
    if img is None:
        raise ImageError(f"{where}: could not decode {len(data)} image bytes (starting {data[:8].hex()!r}) with "
                         f"{backend}: not an image, or a damaged file")
    return img


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text.split(" error: ", 1)[-1] if " error: " in text else text


def _pil_decode(buf: bytes, mode: str) -> Optional[np.ndarray]:
    from PIL import Image, UnidentifiedImageError

    try:
        im = Image.open(io.BytesIO(buf))
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
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"{where or path}: image file not found") from None
    except IsADirectoryError:
        raise ImageError(f"{where or path}: is a folder, not an image file") from None
    return decode(data, mode, where=where or path, strict=strict)


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
    from PIL import Image

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
