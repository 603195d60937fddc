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

from ..data.synthetic import make_identities, render_faces
from ..images import read
from .evaluate import to_renderer_depth, to_renderer_view
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
    ids = make_identities(num=identities, seed=seed)
    rng = np.random.default_rng(seed)

    def draw_chunk(n: int) -> Dict[str, Tensor]:
        people = [ids[i] for i in rng.integers(len(ids), size=n)]
        yaw, pitch = rng.uniform(-max_yaw, max_yaw, size=n), rng.uniform(-max_pitch, max_pitch, size=n)
        faces = render_faces(people, yaw=yaw, pitch=pitch, light="random", expression="random",
                             background="random", seed=int(rng.integers(2**31)), frontal=truth)
        batch = {"images": to_tensor(list(faces["image"]))}
        if truth:
            batch["canonical_depth"] = to_renderer_depth(faces["frontal_depth"], faces["frontal_mask"])
            batch["canonical_mask"] = torch.from_numpy(faces["frontal_mask"]).unsqueeze(1)
            batch["view"] = to_renderer_view(*faces["pose"].T)
        return batch

    def draw(n: int) -> Dict[str, Tensor]:
        chunks = [draw_chunk(min(128, n - start)) for start in range(0, n, 128)]
        return {k: torch.cat([c[k] for c in chunks]) for k in chunks[0]}

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
    img = read(path, "rgb")
    if img.shape[:2] != (112, 112):
        raise ValueError(f"{path!r} is {img.shape[1]}x{img.shape[0]}, expected an aligned 112x112 face")
    return img


def supervised_loss(out: Dict[str, object], batch: Dict[str, Tensor]) -> Tensor:
    """L1 of canonical depth (over the face) and viewpoint against ground truth.

    The depth keeps its offset: the viewpoint rotates about the pivot plane ``z = 0``,
    so a face at the right shape but the wrong distance from the pivot is warped wrongly.
    """
    rec = out["aux"]["reconstruction"]
    m = batch["canonical_mask"].float()
    n = m.sum().clamp_min(1)
    depth = ((rec.depth - batch["canonical_depth"]).abs() * m).sum() / n
    return depth + (rec.view - batch["view"]).abs().mean()


def pretrain(
    module: RenderInputModule,
    batches: Iterator[Union[Tensor, Dict[str, Tensor]]],
    steps: int,
    lr: float = 1e-3,
    supervision: float = 0.0,
    progress: bool = True,
    reco_weight: float = 1.0,
) -> List[Dict[str, float]]:
    """Train ``module``'s reconstruction network alone (Adam).

    The loss is ``reco_weight`` times ``L_reco`` (self-supervised), plus ``supervision``
    times :func:`supervised_loss` when ground truth is available (synthetic faces,
    ``synthetic_batches(..., truth=True)``): a bootstrap of depth and pose, our
    addition to the Unsup3d recipe. In a few hundred steps ``L_reco`` alone does not
    learn the viewpoint (the per-pixel albedo explains the input at the identity view)
    and, added to the bootstrap, pulls the predicted yaw to zero; ``reco_weight=0``
    with ``supervision > 0`` is the purely supervised bootstrap.

    Returns:
        Per-step loss terms: ``"photo"``, ``"flip"``, ``"reco"`` when ``reco_weight > 0``
        (else ``L_reco`` is not computed), ``"supervised"`` when ``supervision > 0``.
    """
    if int(steps) < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not float(reco_weight) >= 0 or not float(supervision) >= 0:
        raise ValueError(f"reco_weight and supervision must be >= 0, got {reco_weight} and {supervision}")
    if float(reco_weight) == 0 and float(supervision) == 0:
        raise ValueError("reco_weight and supervision are both 0: nothing to train")
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
        terms = module.losses(out) if reco_weight > 0 else {}
        loss = reco_weight * terms["reco"] if terms else 0.0
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
        bar.set_postfix({k: f"{v:.4f}" for k, v in rec.items() if k in ("reco", "supervised")})
    module.eval()
    return history
