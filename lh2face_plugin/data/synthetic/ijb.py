"""Writer of the IJB-style 1:1 template set (``meta/<target>_*.txt``, ``loose_crop/<n>.jpg``,
``images.csv``, ``pair_splits.json``)."""
from __future__ import annotations

import csv
import os
from typing import Dict, List, Sequence, Tuple

import numpy as np

from ...fileio import write_json
from .identities import Identity
from .quality import HIGH_QUALITY
from .runner import Runner, make_jobs
from .views import Views

__all__ = ["IJB_TARGET", "write_ijb"]

IJB_TARGET = "SYNTH"
"""Target name of the IJB-style set: files ``ijb/meta/synth_*.txt``."""


def write_ijb(folder: str, pair_splits: str, ids: Sequence[Identity], views: Views,
              rows: Sequence[Tuple[int, int, int]], pairs: Sequence[List[int]], template_ident: Dict[int, int],
              template_quality: Dict[int, float], size: int, runner: Runner, bar) -> None:
    """Render the loose crops of ``views`` into ``folder`` with the meta files of :func:`~.plans.ijb_plan`'s
    plan, and write the pairs' splits (hard, high quality) to ``pair_splits``."""
    os.makedirs(os.path.join(folder, "meta"))
    os.makedirs(os.path.join(folder, "loose_crop"))
    names = [f"{k + 1}.jpg" for k in range(views.n)]
    lms = []
    k = 0
    for res in runner.map(make_jobs(ids, views, size, "loose", 64)):
        for data in res["jpeg"]:
            with open(os.path.join(folder, "loose_crop", names[k]), "wb") as f:
                f.write(data)
            k += 1
        lms.append(res["landmarks"])
        bar.update(len(res["jpeg"]))
    lms = np.concatenate(lms)
    iq = views.quality()
    prefix = os.path.join(folder, "meta", IJB_TARGET.lower())
    with open(prefix + "_face_tid_mid.txt", "w", encoding="utf-8") as f:
        f.writelines(f"{n} {t} {mm}\n" for n, (_, t, mm) in zip(names, rows))
    with open(prefix + "_name_5pts_score.txt", "w", encoding="utf-8") as f:
        for n, lm, q in zip(names, lms, iq):
            f.write(n + " " + " ".join(f"{v:.3f}" for v in lm.ravel()) + f" {0.6 + 0.4 * q:.4f}\n")
    with open(prefix + "_template_pair_label.txt", "w", encoding="utf-8") as f:
        f.writelines(f"{p[0]} {p[1]} {p[2]}\n" for p in pairs)
    with open(os.path.join(folder, "images.csv"), "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "tid", "mid", "identity", "family", "hard", "quality", "yaw", "pitch"])
        for i, (n, (ident, t, mm)) in enumerate(zip(names, rows)):
            e = ids[ident]
            w.writerow([n, t, mm, ident, e.family, int(e.hard), f"{iq[i]:.4f}",
                        f"{views.yaw[i]:.2f}", f"{views.pitch[i]:.2f}"])
    write_json(pair_splits, {
        "target": IJB_TARGET, "quality_threshold": HIGH_QUALITY,
        "hard": "impostor: both templates from one family; genuine: the identity has family look-alikes",
        "high_quality": "both templates' mean image quality >= quality_threshold",
        "columns": ["tid1", "tid2", "label", "hard", "high_quality"], "pairs": list(pairs),
        "templates": {str(t): {"identity": i, "family": ids[i].family,
                               "quality": round(template_quality[t], 4)} for t, i in template_ident.items()},
    }, compact=True)
