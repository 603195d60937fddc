"""Pretraining the reconstruction alone: self-supervised (photometric + symmetry terms),
optionally bootstrapped with ground truth on synthetic faces.

``lh2face render pretrain`` runs :func:`pretrain` on batches from
:func:`synthetic_batches` or :func:`folder_batches`, then saves the weights that
``RenderInputModule(checkpoint=...)`` loads.
"""
from __future__ import annotations

import os
from typing import Dict, Iterator, List, Union

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from .module import RenderInputModule
from .show import to_tensor

__all__ = ["synthetic_batches", "folder_batches", "supervised_loss", "pretrain"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def synthetic_batches(
    batch_size: int,
    *,
    identities: int = 200,
    max_yaw: float = 45.0,
    max_pitch: float = 15.0,
    pool: int = 0,
    truth: bool = False,
    seed: int = 0,
) -> Iterator[Union[Tensor, Dict[str, Tensor]]]:
    """Endless batches of synthetic faces (:mod:`lh2face_plugin.data.synthetic`) at random
    poses, lights, expressions and backgrounds.

    Args:
        pool: if > 0, render this many faces once and draw batches from them
            (cheaper per step); else render every batch afresh.
        truth: also yield the ground truth for supervised pretraining.

    Yields:
        ``(batch_size, 3, 112, 112)`` float in ``[-1, 1]``; with ``truth``, a dict of
        ``"images"``, ``"canonical_depth"`` and ``"canonical_mask"`` ``(B, 1, H, W)``
        (renderer convention) and ``"view"`` ``(B, 6)``.
    """
    from ..data.synthetic import make_identities, render_face
    from .evaluate import to_renderer_depth, to_renderer_view

    ids = make_identities(num=identities, seed=seed)
    rng = np.random.default_rng(seed)

    def draw(n: int) -> Dict[str, Tensor]:
        samples = []
        for _ in range(n):
            ident = ids[int(rng.integers(len(ids)))]
            yaw, pitch = rng.uniform(-max_yaw, max_yaw), rng.uniform(-max_pitch, max_pitch)
            samples.append(render_face(ident, yaw=yaw, pitch=pitch, light="random", expression="random",
                                       background="random", seed=int(rng.integers(2**31))))
        batch = {"images": to_tensor([s.image for s in samples])}
        if truth:
            masks = np.stack([s.frontal_mask for s in samples])
            batch["canonical_depth"] = to_renderer_depth(np.stack([s.frontal_depth for s in samples]), masks)
            batch["canonical_mask"] = torch.from_numpy(masks).unsqueeze(1)
            batch["view"] = to_renderer_view(*zip(*[s.pose for s in samples]))
        return batch

    def emit(batch: Dict[str, Tensor]):
        return batch if truth else batch["images"]

    if pool > 0:
        data = draw(int(pool))
        while True:
            idx = torch.from_numpy(rng.integers(int(pool), size=batch_size))
            yield emit({k: v[idx] for k, v in data.items()})
    while True:
        yield emit(draw(batch_size))


def folder_batches(root: str, batch_size: int, *, seed: int = 0) -> Iterator[Tensor]:
    """Endless shuffled batches of aligned 112x112 face images found under ``root``."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"image folder {root!r} does not exist")
    files = sorted(
        os.path.join(d, f) for d, _, names in os.walk(root) for f in names if f.lower().endswith(IMAGE_SUFFIXES)
    )
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {root!r}")
    rng = np.random.default_rng(seed)
    while True:
        if len(files) < batch_size:
            order = rng.integers(len(files), size=batch_size)
        else:
            order = rng.permutation(len(files))
        for start in range(0, len(order) - batch_size + 1, batch_size):
            faces = [_read_aligned(files[i]) for i in order[start : start + batch_size]]
            yield to_tensor(faces)


def _read_aligned(path: str) -> np.ndarray:
    from PIL import Image

    img = np.asarray(Image.open(path).convert("RGB"))
    if img.shape[:2] != (112, 112):
        raise ValueError(f"{path!r} is {img.shape[1]}x{img.shape[0]}, expected an aligned 112x112 face")
    return img


def supervised_loss(out: Dict[str, object], batch: Dict[str, Tensor]) -> Tensor:
    """L1 of canonical depth (offset removed, over the face) and viewpoint against ground truth."""
    rec = out["aux"]["reconstruction"]
    m = batch["canonical_mask"].float()
    n = m.sum(dim=(1, 2, 3), keepdim=True).clamp_min(1)

    def centred(d: Tensor) -> Tensor:
        return d - (d * m).sum(dim=(1, 2, 3), keepdim=True) / n

    depth = ((centred(rec.depth) - centred(batch["canonical_depth"])).abs() * m).sum() / n.sum()
    return depth + (rec.view - batch["view"]).abs().mean()


def pretrain(
    module: RenderInputModule,
    batches: Iterator[Union[Tensor, Dict[str, Tensor]]],
    steps: int,
    lr: float = 1e-3,
    supervision: float = 0.0,
    progress: bool = True,
) -> List[Dict[str, float]]:
    """Train ``module``'s reconstruction network alone (Adam).

    The loss is ``L_reco`` (self-supervised), plus ``supervision`` times
    :func:`supervised_loss` when ground truth is available (synthetic faces,
    ``synthetic_batches(..., truth=True)``): a bootstrap of depth and pose, our
    addition to the Unsup3d recipe.

    Returns:
        Per-step loss terms (``"photo"``, ``"flip"``, ``"reco"``, and ``"supervised"``).
    """
    if int(steps) < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if module.mode != "joint":
        raise ValueError(f"cannot pretrain a module in mode {module.mode!r}; build it with mode='joint'")
    history: List[Dict[str, float]] = []
    opt = torch.optim.Adam(module.net.parameters(), lr=lr, betas=(0.9, 0.999))
    module.train()
    bar = tqdm(range(int(steps)), desc="render pretrain", disable=not progress)
    for _ in bar:
        batch = next(batches)
        images = batch["images"] if isinstance(batch, dict) else batch
        out = module(images)
        terms = module.losses(out)
        loss = terms["reco"]
        if supervision > 0:
            if not isinstance(batch, dict) or "canonical_depth" not in batch:
                raise ValueError("supervision > 0 needs batches with ground truth (synthetic_batches(truth=True))")
            terms["supervised"] = supervised_loss(out, batch)
            loss = loss + supervision * terms["supervised"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        rec = {k: float(v.detach()) for k, v in terms.items() if k in ("photo", "flip", "reco", "supervised")}
        history.append(rec)
        bar.set_postfix(reco=f"{rec['reco']:.4f}")
    module.eval()
    return history
