"""Embedding functions and cached, resumable feature extraction.

An *embed function* maps a batch of face crops to features::

    embed_fn(batch: np.ndarray) -> np.ndarray  # (B, D) float32

``batch`` is either ``(B, H, W, 3)`` uint8 RGB or ``(B, 3, H, W)`` float32 already
normalised. Builders below wrap a ``torch.nn.Module``, an arcface_torch ``model.pt`` with
its network name, or an exported ONNX file; all normalise uint8 input like
arcface_torch does: RGB, ``(x / 255 - 0.5) / 0.5``, NCHW float32.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Callable, Optional

import numpy as np
from tqdm.auto import tqdm

from ..fileio import cleanup_stale_in, save_npy, sha256_file, write_json
from ..finite import require_finite_parameters

EmbedFn = Callable[[np.ndarray], np.ndarray]
CACHE_VERSION = 2


def _check_batch(batch: np.ndarray) -> None:
    if batch.ndim != 4 or not (batch.shape[-1] == 3 or batch.shape[1] == 3):
        raise ValueError(f"expected a (B, H, W, 3) uint8 or (B, 3, H, W) float batch, got shape {batch.shape}")


def normalize_batch(batch: np.ndarray) -> np.ndarray:
    """uint8 ``(B, H, W, 3)`` RGB -> float32 ``(B, 3, H, W)`` in [-1, 1]; float NCHW passes through."""
    _check_batch(batch)
    if batch.dtype == np.uint8:
        x = np.ascontiguousarray(batch.transpose(0, 3, 1, 2)).astype(np.float32)
        return (x / 255 - 0.5) / 0.5
    return np.ascontiguousarray(batch, dtype=np.float32)


def flip_batch(batch: np.ndarray) -> np.ndarray:
    """Horizontal mirror of a uint8 NHWC or float NCHW batch."""
    _check_batch(batch)
    return batch[:, :, ::-1] if batch.dtype == np.uint8 else batch[..., ::-1]


def torch_embedder(module, device: str = "cpu") -> EmbedFn:
    """Embed function around a ``torch.nn.Module`` (put in eval mode, run under ``inference_mode``).

    uint8 input is normalised with torch operations in the order arcface_torch uses.
    """
    import torch  # lazy: torch (the bench package imports eval without it)

    dev = torch.device(device)
    model = module.to(dev).eval()

    def embed(batch: np.ndarray) -> np.ndarray:
        _check_batch(batch)
        with torch.inference_mode():
            if batch.dtype == np.uint8:
                x = torch.from_numpy(np.ascontiguousarray(batch)).to(dev).permute(0, 3, 1, 2).float()
                x = ((x / 255) - 0.5) / 0.5
            else:
                x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(dev)
            out = model(x.contiguous())
        if isinstance(out, (tuple, list)):
            out = out[0]
        return out.float().cpu().numpy()

    return embed


def onnx_embedder(path: str, providers: Optional[list] = None) -> EmbedFn:
    """Embed function around an exported ONNX recognition model (onnxruntime, normalisation outside the graph)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"ONNX model not found: {path}")
    import onnxruntime as ort  # optional: heavy

    try:
        sess = ort.InferenceSession(path, providers=providers or ["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's own exception types
        raise ValueError(f"{path}: onnxruntime cannot load it ({_one_line(exc)}); is it an exported ONNX "
                         "model?") from None
    inp = sess.get_inputs()[0]

    def embed(batch: np.ndarray) -> np.ndarray:
        x = normalize_batch(batch)
        try:
            out = sess.run(None, {inp.name: x})[0]
        except Exception as exc:
            raise ValueError(f"{path}: onnxruntime failed on a batch of shape {list(x.shape)} (the graph input "
                             f"{inp.name!r} is {inp.shape}): {_one_line(exc)}") from None
        return np.asarray(out, dtype=np.float32)

    return embed


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


def load_embedder(model: str, network: Optional[str] = None, onnx: bool = False, device: str = "cpu",
                  arcface_root: Optional[str] = None, **backbone_kwargs) -> EmbedFn:
    """Embed function for a model file, as the CLI resolves it.

    * ``onnx=True`` or a ``.onnx`` path: onnxruntime.
    * otherwise ``network`` is required: with an arcface_torch checkout (``arcface_root``
      or ``$ARCFACE_TORCH_ROOT``) the network comes from its ``backbones.get_model``;
      without one from ``lh2face_plugin.backbones.build_backbone``.
    """
    if onnx or model.lower().endswith(".onnx"):
        return onnx_embedder(model, providers=["CUDAExecutionProvider", "CPUExecutionProvider"]
                             if device.startswith("cuda") else None)
    if not network:
        raise ValueError(f"{model}: a PyTorch model needs --network (e.g. r50), or pass --onnx for an ONNX file")
    import torch  # lazy: torch (the bench package imports eval without it)

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available to this torch ({torch.__version__}, "
                         f"{'a CPU build' if torch.version.cuda is None else 'no GPU visible'}); use --device cpu")
    from ..backbones import load_backbone  # lazy: torch

    module = load_backbone(model, network, arcface_root=arcface_root, **backbone_kwargs)
    require_finite_parameters(module, model)
    return torch_embedder(module, device=device)


def content_fingerprint(*paths: str, **settings) -> str:
    """Short digest of the files' contents (SHA-256) and of ``settings``, to key a feature cache.

    Renaming, copying or touching a file keeps its fingerprint; changing one byte changes it.
    """
    h = hashlib.sha256()
    for p in paths:
        h.update(sha256_file(p).encode())
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def _check_finite(feats: np.ndarray, lo: int, desc: str) -> None:
    bad = ~np.isfinite(feats).all(axis=tuple(range(1, feats.ndim)))
    if bad.any():
        rows = np.flatnonzero(bad) + lo
        raise FloatingPointError(
            f"{desc}: the model returned NaN or infinite features for {len(rows)} image(s), e.g. image {rows[0]}; "
            "no metric is computed from them: check the model (NaN weights, fp16 overflow) and its input")


def _read_state(state_path: str, cache_dir: str) -> Optional[dict]:
    try:
        with open(state_path, encoding="utf-8") as f:
            old = json.load(f)
    except (OSError, ValueError) as exc:
        raise ValueError(f"feature cache {state_path} is unreadable ({type(exc).__name__}: {exc}); it is only a "
                         f"cache: delete {cache_dir} and run again") from None
    if not isinstance(old, dict) or "version" not in old:
        raise ValueError(f"{state_path} is not a feature cache of lh2face; choose another --out or delete "
                         f"{cache_dir}")
    return old


def extract_features(embed_fn: EmbedFn, load: Callable[[np.ndarray], np.ndarray], num: int,
                     batch_size: int = 128, cache_dir: Optional[str] = None, cache_key: str = "",
                     chunk_size: Optional[int] = None, desc: str = "embedding",
                     chunk_digest: Optional[Callable[[int, int], str]] = None) -> np.ndarray:
    """Features of ``num`` images and of their mirror images, in ``batch_size`` batches.

    Args:
        embed_fn: see the module docstring.
        load: maps an index array to the images' batch (uint8 NHWC or float NCHW).
        num: number of images.
        cache_dir: when given, finished chunks are stored there as ``chunk_XXXXX.npy`` with a
            ``state.json`` recording, per chunk, the digest of its inputs and the chunk file's
            size and SHA-256. A later call reuses a chunk only when ``cache_key`` (the model and
            settings) is the same, the inputs' digest is unchanged and the file is whole; other
            chunks are recomputed. A cache of another ``cache_key`` raises ``ValueError``.
        chunk_digest: ``(lo, hi) -> str``, a digest of the inputs of images ``lo..hi-1`` (their
            bytes and whatever else changes their features); without it chunks are keyed by
            ``cache_key`` and position only.
        chunk_size: images per chunk (default ``32 * batch_size``).
    Returns:
        ``(num, 2, D)`` float32: ``[:, 0]`` the image, ``[:, 1]`` its mirror.
    Raises:
        FloatingPointError: the model returned NaN or infinite features.
    """
    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    chunk = chunk_size or 32 * batch_size
    n_chunks = (num + chunk - 1) // chunk
    state = {"version": CACHE_VERSION, "key": cache_key, "num": num, "chunk_size": chunk, "chunks": {}}
    state_path = os.path.join(cache_dir, "state.json") if cache_dir else None
    if cache_dir:
        os.makedirs(cache_dir, exist_ok=True)
        cleanup_stale_in(cache_dir)
    if state_path and os.path.exists(state_path):
        old = _read_state(state_path, cache_dir)
        if old.get("version") == CACHE_VERSION and old.get("key") != cache_key:
            raise ValueError(f"feature cache {cache_dir} belongs to another model or settings "
                             f"({old.get('key')!r}, not {cache_key!r}); delete it or choose another --out")
        if all(old.get(k) == state[k] for k in ("version", "key", "num", "chunk_size")):
            state["chunks"] = {k: v for k, v in old.get("chunks", {}).items() if isinstance(v, dict)}
    parts = {}
    bar = tqdm(total=num, desc=desc, unit="img", leave=False)
    for c in range(n_chunks):
        lo, hi = c * chunk, min(num, (c + 1) * chunk)
        digest = chunk_digest(lo, hi) if chunk_digest else ""
        cached = _load_chunk(cache_dir, c, state["chunks"].get(str(c)), digest, hi - lo) if cache_dir else None
        if cached is not None:
            parts[c] = cached
            bar.update(hi - lo)
            continue
        feats = []
        for b in range(lo, hi, batch_size):
            imgs = load(np.arange(b, min(hi, b + batch_size)))
            out = np.asarray(embed_fn(np.concatenate([imgs, flip_batch(imgs)])), dtype=np.float32)
            if out.ndim != 2 or out.shape[0] != 2 * len(imgs):
                raise ValueError(f"embed function returned shape {out.shape} for a batch of {2 * len(imgs)} images; "
                                 f"expected ({2 * len(imgs)}, D)")
            pair = np.stack([out[: len(imgs)], out[len(imgs):]], axis=1)
            _check_finite(pair, b, desc)
            feats.append(pair)
            bar.update(len(imgs))
        parts[c] = np.concatenate(feats)
        if cache_dir:
            path = os.path.join(cache_dir, f"chunk_{c:05d}.npy")
            save_npy(path, parts[c])
            state["chunks"][str(c)] = {"inputs": digest, "size": os.path.getsize(path), "sha256": sha256_file(path)}
            write_json(state_path, state)
    bar.close()
    if not parts:
        raise ValueError("no images to embed")
    return np.concatenate([parts[c] for c in range(n_chunks)])


def _load_chunk(cache_dir: str, c: int, rec: Optional[dict], digest: str, rows: int) -> Optional[np.ndarray]:
    """A cached chunk when its inputs are unchanged and its file is whole (else ``None``: recompute)."""
    if rec is None or rec.get("inputs") != digest:
        return None
    path = os.path.join(cache_dir, f"chunk_{c:05d}.npy")
    try:
        if os.path.getsize(path) != rec.get("size") or sha256_file(path) != rec.get("sha256"):
            return None
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: unreadable feature cache chunk ({type(exc).__name__}: {exc}); it is only a "
                         f"cache: delete {cache_dir} and run again") from None
    if arr.ndim != 3 or arr.shape[:2] != (rows, 2) or not np.isfinite(arr).all():
        return None
    return arr
