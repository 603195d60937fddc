"""Writer of the renderer-evaluation archive ``render_eval.npz`` (clean yawed inputs with their
ground-truth depth, mask, landmarks, pose and frontal image)."""
from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np

from .identities import Identity
from .runner import Runner, make_jobs
from .views import Views

__all__ = ["write_render_eval"]


def write_render_eval(path: str, ids: Sequence[Identity], views: Views, size: int, runner: Runner, bar) -> None:
    """Render ``views`` and their frontal views into the compressed archive ``path``."""
    arrays: Dict[str, List[np.ndarray]] = {}
    for res in runner.map(make_jobs(ids, views, size, "arrays", 64)):
        for key_, src in (("", res["render"]), ("frontal_", res["frontal"])):
            for name in ("image", "depth", "mask", "landmarks"):
                arrays.setdefault(key_ + name, []).append(src[name])
        bar.update(len(res["render"]["image"]))
    data = {("frontal" if k_ == "frontal_image" else k_): np.concatenate(v) for k_, v in arrays.items()}
    rv = views
    np.savez_compressed(
        path, **data,
        pose=np.stack([rv.yaw, rv.pitch, rv.roll], 1).astype(np.float32),
        identity=rv.ident.astype(np.int64), family=np.array([ids[i].family for i in rv.ident], np.int64),
        hard=np.array([ids[i].hard for i in rv.ident], bool), expression=rv.expression,
        light_ambient=rv.ambient, light_diffuse=rv.diffuse, light_direction=rv.direction)
