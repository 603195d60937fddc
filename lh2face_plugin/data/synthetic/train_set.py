"""Writer of the training set: insightface's RecordIO layout (``train.rec``, ``train.idx``,
``property``) and ``train_images.csv``."""
from __future__ import annotations

import csv
from typing import Dict, Sequence

from ..recordio import IRHeader, MXIndexedRecordIO, pack
from .identities import Identity
from .quality import Degradation
from .runner import Runner, make_jobs
from .views import Views

__all__ = ["write_train_set"]


def write_train_set(paths: Dict[str, str], ids: Sequence[Identity], views: Views, images_per_id: int, size: int,
                    runner: Runner, bar) -> None:
    """Render ``views`` (grouped by identity, ``images_per_id`` each) into ``paths["rec"]``/``["idx"]``,
    ``["property"]`` and ``["train_images"]``; ``bar`` advances by one per image."""
    n_img, k_ids, m = views.n, len(ids), int(images_per_id)
    writer = MXIndexedRecordIO(paths["idx"], paths["rec"], "w")
    try:
        writer.write_idx(0, pack(IRHeader(0, [n_img + 1, n_img + 1 + k_ids], 0, 0), b""))
        key = 1
        for res in runner.map(make_jobs(ids, views, size, "jpeg", 128)):
            for data in res["jpeg"]:
                label = int(views.ident[key - 1])
                writer.write_idx(key, pack(IRHeader(0, float(label), key, 0), data))
                key += 1
            bar.update(len(res["jpeg"]))
        for i in range(k_ids):
            writer.write_idx(n_img + 1 + i, pack(IRHeader(0, [1 + i * m, 1 + (i + 1) * m], n_img + 1 + i, 0), b""))
    except BaseException:
        writer.abort()
        raise
    writer.close()
    with open(paths["property"], "w", encoding="utf-8") as f:
        f.write(f"{k_ids},{size},{size}\n")
    quality = views.quality()
    with open(paths["train_images"], "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["key", "label", "family", "hard", "quality", "yaw", "pitch", "roll",
                    "blur", "scale", "noise", "jpeg"])
        for i in range(n_img):
            ident = ids[int(views.ident[i])]
            d = views.degradation[i] or Degradation()
            w.writerow([i + 1, ident.index, ident.family, int(ident.hard), f"{quality[i]:.4f}",
                        f"{views.yaw[i]:.2f}", f"{views.pitch[i]:.2f}", f"{views.roll[i]:.2f}",
                        f"{d.blur:.3f}", f"{d.scale:.3f}", f"{d.noise:.3f}", "" if d.jpeg is None else d.jpeg])
