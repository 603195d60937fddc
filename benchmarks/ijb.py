"""IJB 1:1 throughput on synthetic features of IJB-C's size.

Compares our vectorised template pooling and pair scoring with a straightforward loop
implementation of the reference procedure (per template / per media loops, pair scoring
in batches of 100k through a template-id column), timed in the same run on a subset;
then runs ours on the full size. Results are checked for bitwise equality on the subset.

    python benchmarks/ijb.py                       # IJB-C size
    python benchmarks/ijb.py --images 20000 --templates 4000 --pairs 1000000   # quick
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from lh2face_plugin.eval import metrics
from lh2face_plugin.eval.ijb import pair_scores, template_features


def loop_pooling(x, templates, medias):
    uniq = np.unique(templates)
    out = np.zeros((len(uniq), x.shape[1]))
    for k, t in enumerate(uniq):
        (rows,) = np.where(templates == t)
        f, m = x[rows], medias[rows]
        per_media = []
        for u, c in zip(*np.unique(m, return_counts=True)):
            (sel,) = np.where(m == u)
            per_media.append(f[sel] if c == 1 else np.mean(f[sel], axis=0, keepdims=True))
        out[k] = np.sum(np.array(per_media), axis=0)
    return metrics.l2_normalize(out), uniq


def loop_scores(feats, uniq, p1, p2, batch=100000):
    t2i = np.zeros((uniq.max() + 1, 1), dtype=int)
    t2i[uniq, 0] = np.arange(len(uniq))
    out = np.zeros(len(p1))
    for lo in range(0, len(p1), batch):
        s = np.arange(lo, min(len(p1), lo + batch))
        out[s] = np.sum(feats[t2i[p1[s]]] * feats[t2i[p2[s]]], -1).ravel()
    return out


def synthetic(images, templates, pairs, dim, seed=0):
    rng = np.random.default_rng(seed)
    tmpl = np.sort(rng.integers(0, templates, images)) * 3 + 1
    media = tmpl * 16 + rng.integers(0, 6, images)
    feats = rng.standard_normal((images, 2, dim), dtype=np.float32)
    scores = rng.uniform(0.3, 1.0, images).astype(np.float32)
    uniq = np.unique(tmpl)
    p = rng.integers(0, len(uniq), (pairs, 2))
    labels = (rng.random(pairs) < 0.00125).astype(np.int64)
    return feats, scores, tmpl, media, uniq, uniq[p[:, 0]], uniq[p[:, 1]], labels


def timed(fn, *a, repeat=1):
    best, out = np.inf, None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn(*a)
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=133_000)
    ap.add_argument("--templates", type=int, default=23_124)
    ap.add_argument("--pairs", type=int, default=15_658_489)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--subset-templates", type=int, default=1000)
    ap.add_argument("--subset-pairs", type=int, default=1_000_000)
    args = ap.parse_args()

    feats, det, tmpl, media, uniq, p1, p2, labels = synthetic(args.images, args.templates, args.pairs, args.dim)
    x = (feats[:, 0] + feats[:, 1]) * det[:, None]

    keep = np.isin(tmpl, uniq[: args.subset_templates])
    t_loop, (ref_f, ref_u) = timed(loop_pooling, x[keep], tmpl[keep], media[keep])
    t_ours, (our_f, our_u) = timed(template_features, x[keep], tmpl[keep], media[keep], repeat=3)
    assert np.array_equal(ref_f, our_f), "pooling differs from the loop reference"
    n_sub = int(keep.sum())

    t_full, (feat_all, uniq_all) = timed(template_features, x, tmpl, media)

    sp1, sp2 = p1[: args.subset_pairs], p2[: args.subset_pairs]
    t_sloop, s_ref = timed(loop_scores, feat_all, uniq_all, sp1, sp2)
    i1, i2 = np.searchsorted(uniq_all, sp1), np.searchsorted(uniq_all, sp2)
    t_sours, s_ours = timed(lambda: pair_scores(feat_all, i1, i2, progress=False))
    assert np.array_equal(s_ref, s_ours), "pair scores differ from the loop reference"

    t_idx, (j1, j2) = timed(lambda: (np.searchsorted(uniq_all, p1), np.searchsorted(uniq_all, p2)))
    t_pairs, scores = timed(lambda: pair_scores(feat_all, j1, j2, progress=False))
    t_roc, (fpr, tpr, _) = timed(metrics.roc_curve, labels, scores)

    rows = [
        ("pooling, loop reference", f"{n_sub:,} img / {args.subset_templates:,} tmpl", t_loop, n_sub / t_loop, 1.0),
        ("pooling, ours", f"{n_sub:,} img / {args.subset_templates:,} tmpl", t_ours, n_sub / t_ours, t_loop / t_ours),
        ("pooling, ours (full)", f"{args.images:,} img / {len(uniq_all):,} tmpl", t_full, args.images / t_full, None),
        ("pair scores, loop reference", f"{len(sp1):,} pairs", t_sloop, len(sp1) / t_sloop, 1.0),
        ("pair scores, ours", f"{len(sp1):,} pairs", t_sours, len(sp1) / t_sours, t_sloop / t_sours),
        ("pair scores, ours (full)", f"{args.pairs:,} pairs", t_pairs + t_idx, args.pairs / (t_pairs + t_idx), None),
        ("ROC + TAR@FAR (full)", f"{args.pairs:,} pairs", t_roc, args.pairs / t_roc, None),
    ]
    print(f"IJB 1:1 on synthetic features: {args.images:,} images, {len(uniq_all):,} templates, "
          f"{args.pairs:,} pairs, D={args.dim} (bitwise equal to the loop reference on the subsets)")
    print(f"{'step':<30}{'size':<34}{'seconds':>9}{'items/s':>14}{'speed-up':>10}")
    for name, size, sec, rate, ratio in rows:
        print(f"{name:<30}{size:<34}{sec:>9.3f}{rate:>14,.0f}{(f'{ratio:.1f}x' if ratio else ''):>10}")


if __name__ == "__main__":
    main()
