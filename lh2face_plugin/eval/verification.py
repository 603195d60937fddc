"""Verification sets in arcface_torch's ``.bin`` format (LFW, CFP-FP, AgeDB-30, ...).

A ``.bin`` file is a pickle (usually written by Python 2) of ``(bins, issame)``: ``2P``
images, each an encoded JPEG/PNG byte string or a uint8 array, and ``P`` booleans; pair
``i`` is ``bins[2i], bins[2i+1]``. Because a pickle can run code while it loads, files are
read with :class:`SafeUnpickler`, which admits only bytes, str, lists, tuples, bools,
numbers, numpy arrays and (non-object) dtypes.

Protocol (arcface_torch's verification test): embed each image and its mirror, sum,
L2-normalise; accuracy from 10 folds on the squared distance, XNorm the mean L2 norm of
all un-normalised image and mirror features; TAR at FAR under the one resolvable-FAR rule
(:func:`lh2face_plugin.eval.metrics.far_thresholds`), and arcface_torch's ``calculate_val`` beside it.
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import warnings
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image

from . import metrics
from .. import images
from ..fileio import open_regular
from .embed import EmbedFn, extract_features

VERIFY_FARS: Tuple[float, ...] = (1e-3, 1e-2, 1e-1)


def _ndarray_reconstructor():
    return np.ndarray.__reduce__(np.zeros(1))[0]


def _safe_dtype(obj, align=False, copy=False):
    dt = np.dtype(obj, align, copy)
    if dt.hasobject:
        raise pickle.UnpicklingError("object dtype")
    return dt


def _latin1_bytes(text, encoding="latin1"):
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("_codecs.encode used for something other than bytes")
    return text.encode("latin1")


class SafeUnpickler(pickle.Unpickler):
    """Unpickler that resolves only numpy's array/dtype constructors (and protocol-2 bytes).

    Anything else a pickle asks for (a function, a class, a module) raises
    ``pickle.UnpicklingError`` naming it.
    """

    _ALLOWED = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): _safe_dtype,
        ("numpy.core.multiarray", "_reconstruct"): _ndarray_reconstructor(),
        ("numpy._core.multiarray", "_reconstruct"): _ndarray_reconstructor(),
        ("_codecs", "encode"): _latin1_bytes,
    }

    def find_class(self, module: str, name: str):
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}") from None


def safe_load_pickle(path: str):
    """Load a pickle with :class:`SafeUnpickler` (``encoding='bytes'`` for Python 2 files)."""
    with open_regular(path, "a verification set (.bin)") as f:
        data = f.read()
    try:
        return SafeUnpickler(io.BytesIO(data), encoding="bytes").load()
    except pickle.UnpicklingError as exc:  # pickle's own messages quote bytes of the file: only ours is kept
        ours = ("refusing to load", "object dtype", "_codecs.encode")
        why = str(exc) if str(exc).startswith(ours) else "not a pickle"
        raise ValueError(f"{path}: not a plain verification set ({why}); .bin files may only hold bytes, "
                         f"lists, tuples, bools and numpy arrays") from None
    except Exception as exc:
        raise ValueError(f"{path}: unreadable pickle ({type(exc).__name__})") from None


def load_bin(path: str) -> Tuple[list, np.ndarray]:
    """``(images, issame)`` of a ``.bin`` file, checked: ``2 * len(issame)`` images, bool labels.

    Images stay as stored (encoded bytes or uint8 arrays); see :func:`decode_image`.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"verification set not found: {path}")
    obj = safe_load_pickle(path)  # a regular file only (a FIFO, a device are refused)
    if not (isinstance(obj, (tuple, list)) and len(obj) == 2):
        raise ValueError(f"{path}: expected a pickled (images, issame) pair, found {type(obj).__name__}")
    bins, issame = obj
    bins = list(bins)
    issame = np.asarray(issame)
    if issame.ndim != 1 or not (issame.dtype == bool or np.isin(issame, (0, 1)).all()):
        raise ValueError(f"{path}: issame must be a flat list of booleans, got {issame.dtype} {issame.shape}")
    if len(bins) % 2:
        raise ValueError(f"{path}: {len(bins)} images, an odd number; pairs need 2 images each")
    if len(bins) != 2 * len(issame):
        raise ValueError(f"{path}: {len(bins)} images for {len(issame)} pairs; expected {2 * len(issame)}")
    return bins, issame.astype(bool)


def decode_image(item: Union[bytes, np.ndarray], size: int = 112, where: str = "") -> np.ndarray:
    """One ``.bin`` entry -> ``(size, size, 3)`` uint8 RGB.

    Encoded bytes (or a 1-D uint8 array of them) are decoded by :func:`lh2face_plugin.images.decode`
    (OpenCV when installed, the decoder mxnet uses, else Pillow); 3-D uint8 arrays are taken as HWC
    RGB (CHW is transposed). Images of another size are resized with bicubic interpolation.
    """
    if isinstance(item, np.ndarray) and item.ndim == 3:
        img = item.transpose(1, 2, 0) if item.shape[0] == 3 and item.shape[-1] != 3 else item
        if img.dtype != np.uint8 or img.shape[-1] != 3:
            raise ValueError(f"{where}: image array must be uint8 HxWx3, got {item.dtype} {item.shape}")
    elif isinstance(item, np.ndarray) and (item.ndim != 1 or item.dtype != np.uint8):
        raise ValueError(f"{where}: a {item.ndim}-D {item.dtype} array of shape {item.shape}; an image must be "
                         "encoded bytes (or a 1-D uint8 array of them) or a uint8 HxWx3 / 3xHxW array")
    elif isinstance(item, (bytes, bytearray, np.ndarray)):
        img = images.decode(item, "rgb", where=where)
    else:
        raise ValueError(f"{where}: expected encoded image bytes or a uint8 array, got {type(item).__name__}")
    if img.shape[:2] != (size, size):
        img = _resize(img, size)
    return np.ascontiguousarray(img)


def _entry_digest(item: Union[bytes, np.ndarray]) -> bytes:
    if isinstance(item, np.ndarray):
        return hashlib.sha256(f"{item.dtype.str}{item.shape}".encode() + item.tobytes()).digest()
    return hashlib.sha256(bytes(item)).digest()


def unique_pairs(bins: list, issame: np.ndarray, where: str) -> np.ndarray:
    """Indices of the pairs to evaluate: each unordered pair of images (by content) once, in order.

    A set that lists a pair twice would count it twice, and its contiguous 10-fold accuracy would
    rise (the threshold is then also chosen on copies of the test fold); repeats are dropped with a
    warning. A pair listed both as genuine and as impostor raises ``ValueError``.
    """
    digests = [_entry_digest(b) for b in bins]
    first: Dict[Tuple[bytes, bytes], int] = {}
    keep = []
    for i in range(len(issame)):
        key = tuple(sorted((digests[2 * i], digests[2 * i + 1])))
        j = first.setdefault(key, i)
        if j == i:
            keep.append(i)
        elif issame[j] != issame[i]:
            raise ValueError(f"{where}: pair {i} repeats pair {j} (the same two images) with the other label; "
                             "the set is inconsistent")
    if len(keep) < len(issame):
        warnings.warn(f"{where}: {len(issame) - len(keep)} of {len(issame)} pairs repeat an earlier pair (the same "
                      "two images); each pair is evaluated once", UserWarning, stacklevel=2)
    return np.asarray(keep, dtype=np.int64)


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    try:
        import cv2  # optional: heavy

        return cv2.resize(img, (size, size), interpolation=cv2.INTER_CUBIC)
    except ImportError:
        return np.asarray(Image.fromarray(img).resize((size, size), Image.BICUBIC))


def verification_metrics(features: np.ndarray, issame: np.ndarray, folds: int = 10,
                         fars: Sequence[float] = VERIFY_FARS) -> Dict[str, object]:
    """Metrics of arcface_torch's verification test from image and mirror features.

    Args:
        features: ``(2P, 2, D)``: per image its own and its mirror's feature.
        issame: ``(P,)`` bool.
    Returns:
        dict: ``accuracy`` and ``accuracy_std`` (10-fold, flip-summed features),
        ``xnorm``, ``tar_at_far`` {far: TAR} of the cosine over all pairs under
        :func:`metrics.far_thresholds` (NaN where the impostors cannot resolve the FAR, the reason in
        ``tar_at_far_unresolved``) with ``far_measured``; ``arcface_torch``: its ``calculate_val``
        numbers (``tar_at_far``, ``tar_at_far_std``, ``far_measured``) labelled with their
        ``convention``; ``roc`` (fpr, tpr of the cosine over all pairs), ``auc``, ``pairs``.
    """
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 3 or f.shape[1] != 2 or f.shape[0] != 2 * len(issame):
        raise ValueError(f"features must be (2P, 2, D) for P={len(issame)} pairs, got {f.shape}")
    bad = ~np.isfinite(f).all(axis=(1, 2))
    if bad.any():
        raise FloatingPointError(f"features of {int(bad.sum())} image(s) are NaN or infinite, e.g. image "
                                 f"{int(np.argmax(bad))}; no metric is computed from them")
    norms = np.sqrt(np.array([row @ row for row in np.concatenate([f[:, 0], f[:, 1]])]))
    xnorm = float(np.cumsum(norms)[-1] / len(norms))
    emb = metrics.l2_normalize(f[:, 0] + f[:, 1])
    e1, e2 = emb[0::2], emb[1::2]
    dist = np.sum(np.square(np.subtract(e1, e2)), 1)
    acc = metrics.kfold_accuracy(dist, issame, folds)
    cosine = np.sum(e1 * e2, 1)
    out: Dict[str, object] = {"pairs": int(len(issame)), "accuracy": float(np.mean(acc["accuracy"])),
                              "accuracy_std": float(np.std(acc["accuracy"])), "xnorm": xnorm,
                              **metrics.tar_at_far(issame.astype(int), cosine, fars)}
    compat: Dict[str, object] = {"convention": metrics.ARCFACE_TORCH_VERIFY, "tar_at_far": {}, "tar_at_far_std": {},
                                 "far_measured": {}}
    for far in fars:
        v = metrics.kfold_val_at_far(dist, issame, far, folds)
        compat["tar_at_far"][float(far)] = v["val"]
        compat["tar_at_far_std"][float(far)] = v["val_std"]
        compat["far_measured"][float(far)] = v["far"]
    out["arcface_torch"] = compat
    fpr, tpr, _ = metrics.roc_curve(issame.astype(int), cosine)
    out["roc"] = {"fpr": fpr, "tpr": tpr}
    out["auc"] = metrics.auc(fpr, tpr)
    return out


def evaluate_verification(embed_fn: EmbedFn, bin_path: str, batch_size: int = 128, folds: int = 10,
                          image_size: int = 112, cache_dir: Optional[str] = None, cache_key: str = "",
                          fars: Sequence[float] = VERIFY_FARS) -> Dict[str, object]:
    """Evaluate an embed function on a ``.bin`` verification set.

    Args:
        embed_fn: maps a ``(B, H, W, 3)`` uint8 RGB batch to ``(B, D)`` features
            (see :mod:`lh2face_plugin.eval.embed`).
        bin_path: arcface_torch verification file, e.g. ``lfw.bin``.
        cache_dir: optional folder for resumable feature chunks, reused only for the same
            ``cache_key`` (model and settings) and unchanged images.
    Returns:
        :func:`verification_metrics` of the set's distinct pairs (:func:`unique_pairs`: a repeated
        pair counts once), plus ``duplicate_pairs`` (how many were dropped), ``name`` and
        ``features`` ``(2P, 2, D)`` of every listed image.

    Example::

        >>> from lh2face_plugin.eval import evaluate_verification, torch_embedder
        >>> res = evaluate_verification(torch_embedder(net), "lfw.bin")
        >>> res["accuracy"], res["xnorm"]
    """
    bins, issame = load_bin(bin_path)
    keep = unique_pairs(bins, issame, bin_path)

    def load(idx: np.ndarray) -> np.ndarray:
        return np.stack([decode_image(bins[i], image_size, where=f"{bin_path} image {i}") for i in idx])

    def digest(lo: int, hi: int) -> str:
        h = hashlib.sha256(f"verify|size={image_size}".encode())
        for i in range(lo, hi):
            h.update(_entry_digest(bins[i]))
        return h.hexdigest()

    feats = extract_features(embed_fn, load, len(bins), batch_size, cache_dir, cache_key,
                             desc=os.path.basename(bin_path), chunk_digest=digest)
    rows = np.stack([2 * keep, 2 * keep + 1], 1).ravel()
    res = verification_metrics(feats[rows], issame[keep], folds, fars)
    res["duplicate_pairs"] = int(len(issame) - len(keep))
    res["name"] = os.path.splitext(os.path.basename(bin_path))[0]
    res["features"] = feats
    return res
