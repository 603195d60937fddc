"""What every image of a dataset shows: identity and view of the training, verification, IJB and
renderer-evaluation images, each from its own random stream of the dataset's seed."""
from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from .identities import Identity
from .quality import HIGH_QUALITY, degradation_with_quality, quality_score
from .views import Views

__all__ = ["train_views", "verify_plan", "ijb_plan", "render_eval_views", "MAX_IJB_PAIRS"]

STREAM_TRAIN, STREAM_VERIFY, STREAM_IJB, STREAM_RENDER = range(2, 6)
MAX_IJB_PAIRS = 50_000
"""At most this many IJB pairs (genuine and look-alike pairs first, then a sample of the others)."""


def train_views(ids: Sequence[Identity], per_id: int, seed: int) -> Views:
    """``per_id`` random views of every identity, grouped by identity."""
    views = Views(len(ids) * per_id)
    for i in range(len(ids)):
        rng = np.random.default_rng([seed, STREAM_TRAIN, i])
        for j in range(per_id):
            k = i * per_id + j
            views.ident[k] = i
            views.randomise(k, rng)
    return views


def verify_plan(ids: Sequence[Identity], pairs: int, seed: int) -> Tuple[Views, List[Dict[str, Any]]]:
    """Views of ``pairs`` verification pairs (half genuine; look-alike and unrelated impostors) and their records."""
    rng = np.random.default_rng([seed, STREAM_VERIFY])
    families: Dict[int, List[int]] = {}
    for ident in ids:
        families.setdefault(ident.family, []).append(ident.index)
    hard_fams = [f for f, m in families.items() if len(m) > 1]
    negatives = pairs - pairs // 2
    kinds = ["same"] * (pairs // 2) + ["hard"] * (negatives // 2) + ["easy"] * (negatives - negatives // 2)
    if not hard_fams:
        kinds = ["easy" if k == "hard" else k for k in kinds]
    kinds = [kinds[i] for i in rng.permutation(len(kinds))]
    views = Views(2 * pairs)
    records = []
    for p, kind in enumerate(kinds):
        if kind == "same":
            a = b = int(rng.integers(len(ids)))
        elif kind == "hard":
            a, b = (int(v) for v in rng.choice(families[hard_fams[rng.integers(len(hard_fams))]], 2, replace=False))
        else:
            while True:
                a, b = (int(v) for v in rng.choice(len(ids), 2, replace=False))
                if ids[a].family != ids[b].family:
                    break
        high = bool(rng.random() < 0.5)
        degs = [degradation_with_quality(rng, True if high else None), degradation_with_quality(rng, high)]
        if rng.random() < 0.5:
            degs.reverse()
        for k, (ident, deg) in enumerate(zip((a, b), degs)):
            v = 2 * p + k
            views.ident[v] = ident
            views.randomise(v, rng, degrade=False)
            views.degradation[v] = deg
        q = [quality_score(d) for d in degs]
        records.append({
            "index": p, "same": kind == "same",
            "hard": ids[a].hard if kind == "same" else kind == "hard",
            "quality": "high" if min(q) >= HIGH_QUALITY else "low",
            "identities": [a, b], "families": [ids[a].family, ids[b].family],
            "image_quality": [round(x, 4) for x in q],
            "yaw": [round(float(views.yaw[2 * p]), 2), round(float(views.yaw[2 * p + 1]), 2)],
        })
    return views, records


def ijb_plan(ids: Sequence[Identity], seed: int, templates_per_id: int = 2):
    """Views of the IJB-style set (templates of media of frames), its rows ``(identity, tid, mid)``, its
    pairs ``[tid1, tid2, label, hard, high_quality]``, template identities and template qualities."""
    rng = np.random.default_rng([seed, STREAM_IJB])
    rows = []  # (identity, tid, mid)
    tid = mid = 0
    template_ident = {}
    for ident in ids:
        for _ in range(templates_per_id):
            tid += 1
            template_ident[tid] = ident.index
            for _ in range(int(rng.integers(1, 4))):
                mid += 1
                rows += [(ident.index, tid, mid)] * int(rng.integers(1, 3))
    views = Views(len(rows))
    for k, (ident, _, m) in enumerate(rows):
        views.ident[k] = ident
        views.randomise(k, rng, roll_std=0.0, degrade=False)
        views.degradation[k] = degradation_with_quality(rng, None)
        if k and rows[k - 1][2] == m:  # frames of one media share light, background and expression
            for name in ("expression", "ambient", "diffuse", "direction", "colour", "bg_colour", "bg_gradient"):
                getattr(views, name)[k] = getattr(views, name)[k - 1]
            views.yaw[k] = np.clip(views.yaw[k - 1] + rng.normal(0, 5), -60, 60)
            views.pitch[k] = views.pitch[k - 1] + rng.normal(0, 3)
    quality = views.quality()
    tq = {t: float(np.mean([q for (_, tt, _), q in zip(rows, quality) if tt == t])) for t in template_ident}
    tids = sorted(template_ident)
    genuine, hard, easy = [], [], []
    for i, t1 in enumerate(tids):
        for t2 in tids[i + 1:]:
            a, b = ids[template_ident[t1]], ids[template_ident[t2]]
            if a.index == b.index:
                genuine.append((t1, t2))
            elif a.family == b.family:
                hard.append((t1, t2))
            else:
                easy.append((t1, t2))
    room = max(0, MAX_IJB_PAIRS - len(genuine) - len(hard))
    if len(easy) > room:
        easy = [easy[i] for i in np.sort(rng.choice(len(easy), room, replace=False))]
    pairs = []
    for (t1, t2), label, is_hard in ([(p, 1, ids[template_ident[p[0]]].hard) for p in genuine]
                                     + [(p, 0, True) for p in hard] + [(p, 0, False) for p in easy]):
        pairs.append([t1, t2, label, int(is_hard), int(min(tq[t1], tq[t2]) >= HIGH_QUALITY)])
    return views, rows, pairs, template_ident, tq


def render_eval_views(num: int, num_identities: int, seed: int) -> Views:
    """``num`` clean yawed views of random identities (renderer evaluation)."""
    rng = np.random.default_rng([seed, STREAM_RENDER])
    views = Views(int(num))
    for k in range(views.n):
        views.ident[k] = rng.integers(num_identities)
        views.randomise(k, rng, degrade=False)
        views.yaw[k] = rng.uniform(-50, 50)
    return views
