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

from ..fileio import save_npy, write_json

EmbedFn = Callable[[np.ndarray], np.ndarray]
CACHE_VERSION = 1


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
    import torch

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
    import onnxruntime as ort

    sess = ort.InferenceSession(path, providers=providers or ["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name

    def embed(batch: np.ndarray) -> np.ndarray:
        return np.asarray(sess.run(None, {name: normalize_batch(batch)})[0], dtype=np.float32)

    return embed


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
    from ..backbones import load_backbone

    return torch_embedder(load_backbone(model, network, arcface_root=arcface_root, **backbone_kwargs), device=device)


def file_fingerprint(*paths: str, **extra) -> str:
    """Short digest of file paths, sizes, mtimes and extra settings, to key a feature cache."""
    h = hashlib.sha1()
    for p in paths:
        st = os.stat(p)
        h.update(f"{os.path.abspath(p)}|{st.st_size}|{st.st_mtime_ns}".encode())
    h.update(json.dumps(extra, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def extract_features(embed_fn: EmbedFn, load: Callable[[np.ndarray], np.ndarray], num: int,
                     batch_size: int = 128, cache_dir: Optional[str] = None, cache_key: str = "",
                     chunk_size: Optional[int] = None, desc: str = "embedding") -> np.ndarray:
    """Features of ``num`` images and of their mirror images, in ``batch_size`` batches.

    Args:
        embed_fn: see the module docstring.
        load: maps an index array to the images' batch (uint8 NHWC or float NCHW).
        num: number of images.
        cache_dir: when given, finished chunks are stored there as ``chunk_XXXXX.npy`` with
            a ``state.json``; a later call with the same ``cache_key`` resumes, a different
            key raises ``ValueError``.
        chunk_size: images per chunk (default ``32 * batch_size``).
    Returns:
        ``(num, 2, D)`` float32: ``[:, 0]`` the image, ``[:, 1]`` its mirror.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    chunk = chunk_size or 32 * batch_size
    n_chunks = (num + chunk - 1) // chunk
    state = {"version": CACHE_VERSION, "key": cache_key, "num": num, "chunk_size": chunk, "done": []}
    state_path = os.path.join(cache_dir, "state.json") if cache_dir else None
    if state_path and os.path.exists(state_path):
        with open(state_path) as f:
            old = json.load(f)
        if any(old.get(k) != state[k] for k in ("version", "key", "num", "chunk_size")):
            raise ValueError(f"feature cache {cache_dir} belongs to another model, data set or chunking "
                             f"({old.get('key')!r}, {old.get('num')} images); delete it or choose another --out")
        state["done"] = sorted(int(c) for c in old.get("done", [])
                               if os.path.exists(os.path.join(cache_dir, f"chunk_{int(c):05d}.npy")))
    parts = {}
    bar = tqdm(total=num, desc=desc, unit="img", leave=False)
    for c in range(n_chunks):
        lo, hi = c * chunk, min(num, (c + 1) * chunk)
        if c in state["done"]:
            parts[c] = np.load(os.path.join(cache_dir, f"chunk_{c:05d}.npy"))
            bar.update(hi - lo)
            continue
        feats = []
        for b in range(lo, hi, batch_size):
            imgs = load(np.arange(b, min(hi, b + batch_size)))
            out = np.asarray(embed_fn(np.concatenate([imgs, flip_batch(imgs)])), dtype=np.float32)
            if out.ndim != 2 or out.shape[0] != 2 * len(imgs):
                raise ValueError(f"embed function returned shape {out.shape} for a batch of {2 * len(imgs)} images; "
                                 f"expected ({2 * len(imgs)}, D)")
            feats.append(np.stack([out[: len(imgs)], out[len(imgs):]], axis=1))
            bar.update(len(imgs))
        parts[c] = np.concatenate(feats)
        if cache_dir:
            save_npy(os.path.join(cache_dir, f"chunk_{c:05d}.npy"), parts[c])
            state["done"] = sorted(set(state["done"]) | {c})
            write_json(state_path, state)
    bar.close()
    if not parts:
        raise ValueError("no images to embed")
    return np.concatenate([parts[c] for c in range(n_chunks)])
