"""A stand-in for the few parts of mxnet that arcface_torch's data and verification code use.

mxnet 1.9.1 (its last release) imports only with numpy < 1.24. When it cannot
be imported, :func:`build_mxnet_shim` provides a module object to install as
``sys.modules["mxnet"]`` with:

- ``mx.recordio``: the plugin's reader/writer (:mod:`lh2face_plugin.data.recordio`).
- ``mx.image.imdecode(buf)``: JPEG/PNG bytes (or a uint8 array of them) to an
  [H, W, 3] uint8 RGB :class:`NDArray`; ``mx.image.resize_short(img, size)``.
- ``mx.nd`` / ``mx.ndarray``: ``array``, ``transpose(x, axes)``, ``flip(data, axis)``.

:class:`NDArray` wraps a numpy array and offers ``asnumpy()`` and ``shape``;
nothing else of mxnet is provided, and touching anything else raises an
``AttributeError`` that says so.
"""
from __future__ import annotations

import types
from typing import Optional, Sequence

import numpy as np
from PIL import Image

from ..data import recordio
from ..images import decode

__all__ = ["NDArray", "build_mxnet_shim", "SHIM_VERSION"]

SHIM_VERSION = "lh2face-shim"


class NDArray:
    """Minimal ``mx.nd.NDArray``: a numpy array with ``asnumpy()``.

    Args:
        data: array-like; kept as a numpy array (no copy when already one).
    """

    def __init__(self, data) -> None:
        self._data = np.asarray(data)

    @property
    def shape(self):
        return self._data.shape

    @property
    def dtype(self):
        return self._data.dtype

    def asnumpy(self) -> np.ndarray:
        return self._data

    def __array__(self, dtype=None, copy=None):
        return self._data if dtype is None else self._data.astype(dtype)

    def __repr__(self) -> str:
        return f"NDArray(shape={self.shape}, dtype={self.dtype}) [lh2face mxnet shim]"


def _as_numpy(x) -> np.ndarray:
    return x.asnumpy() if isinstance(x, NDArray) else np.asarray(x)


def imdecode(buf, flag: int = 1, to_rgb: int = 1, out=None) -> NDArray:
    """Decode an encoded image. Returns [H, W, 3] uint8 (RGB unless ``to_rgb=0``)
    or [H, W, 1] for ``flag=0`` (grayscale)."""
    if isinstance(buf, NDArray):
        buf = buf.asnumpy()
    if isinstance(buf, np.ndarray):
        buf = buf.tobytes()
    mode = "gray" if flag == 0 else "rgb" if to_rgb else "bgr"
    try:
        img = decode(buf, mode, where="mx.image.imdecode (lh2face shim)")
    except ValueError as exc:
        raise ValueError(f"cannot decode {len(buf)} bytes as an image: {exc}") from None
    return NDArray(img[:, :, None] if flag == 0 else img)


def resize_short(src, size: int, interp: int = 2) -> NDArray:
    """Resize so the shorter edge is ``size`` (bicubic for ``interp=2``, else bilinear)."""
    arr = _as_numpy(src)
    h, w = arr.shape[:2]
    if h < w:
        new_h, new_w = size, int(round(w * size / h))
    else:
        new_h, new_w = int(round(h * size / w)), size
    resample = Image.BICUBIC if interp == 2 else Image.BILINEAR
    img = Image.fromarray(arr.squeeze(-1) if arr.shape[-1] == 1 else arr)
    out = np.asarray(img.resize((new_w, new_h), resample))
    return NDArray(out.reshape(new_h, new_w, -1))


def array(source, dtype=None, ctx=None) -> NDArray:
    return NDArray(np.asarray(_as_numpy(source), dtype=dtype))


def transpose(data, axes: Optional[Sequence[int]] = None) -> NDArray:
    return NDArray(np.ascontiguousarray(np.transpose(_as_numpy(data), axes)))


def flip(data, axis: int) -> NDArray:
    return NDArray(np.ascontiguousarray(np.flip(_as_numpy(data), axis)))


class _ShimModule(types.ModuleType):
    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        raise AttributeError(
            f"{self.__name__}.{name} is not provided by lh2face_plugin's mxnet stand-in (mxnet is not "
            "importable here). Install mxnet with numpy<1.24 for this part of arcface_torch."
        )


def build_mxnet_shim() -> dict:
    """Module objects to install in ``sys.modules``: ``{"mxnet": ..., "mxnet.recordio": ..., ...}``."""
    mx = _ShimModule("mxnet", "lh2face_plugin stand-in for the parts of mxnet arcface_torch uses")
    mx.__version__ = SHIM_VERSION
    mx.__file__ = __file__
    mx.__path__ = []
    image = _ShimModule("mxnet.image")
    image.imdecode, image.resize_short = imdecode, resize_short
    nd = _ShimModule("mxnet.ndarray")
    nd.NDArray, nd.array, nd.transpose, nd.flip = NDArray, array, transpose, flip
    mx.recordio, mx.image, mx.nd, mx.ndarray = recordio, image, nd, nd
    return {"mxnet": mx, "mxnet.recordio": recordio, "mxnet.image": image, "mxnet.ndarray": nd, "mxnet.nd": nd}
