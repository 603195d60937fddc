"""IJB 1:1 throughput on synthetic features of IJB-C's size.

Template pooling: ours against a straightforward loop implementation of the reference
procedure (per template / per media loops) on a subset, bitwise equal.

Pair scoring, all pairs, in the same run: ``pair_scores(method="blas")`` (float64 products
of template blocks, scores put in the reference's order) against
``pair_scores(method="reference")`` (the reference's per-pair sums, bitwise), and the
reference path against arcface_torch's loop (``np.sum(f1 * f2, -1)`` in batches of 100k
through a template-id column) on a subset. The BLAS scores are checked to be within 1e-6
of the reference's (the printed max |diff| is about 1e-16) with the same ROC, TAR@FAR
table and AUC.

Pair structure (``--structure``): ``ijbc`` (default) is IJB-C's 1:1 protocol, gallery
templates (G1 + G2: 3,531) x probe templates (19,593), 15,658,489 of the 69M possible
pairs drawn at random; ``uniform`` draws both templates of every pair from all templates
(no protocol looks like this; a worst case for the block products).

BLAS uses the threads ``OMP_NUM_THREADS`` allows (the figures in docs/performance.md: 2), the passes
over the pairs the CPU count (at most 8). On a shared machine the wall times swing; the
CPU seconds (all threads) of both paths are printed too.

    OMP_NUM_THREADS=2 python benchmarks/ijb.py                        # IJB-C size
    OMP_NUM_THREADS=2 python benchmarks/ijb.py --gallery 600 --probes 4000 --pairs 1000000   # quick
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


def synthetic(images, gallery, probes, pairs, dim, structure="ijbc", seed=0):
    """Image features of ``gallery + probes`` templates and ``pairs`` labelled template pairs.

    Gallery template k is subject k; each probe template is one random gallery subject.
    An image's feature is its subject's direction times a per-template signal strength
    plus noise, so genuine and impostor scores overlap as on a real model. ``ijbc``: every
    probe is paired with its subject's gallery template, the rest are random gallery x
    probe impostors; ``uniform``: random pairs of any two templates.

    Returns ``feats (N, 2, D)``, detector scores, template and media ids per image, the
    pairs' template ids ``p1, p2`` and labels.
    """
    rng = np.random.default_rng(seed)
    n_t = gallery + probes
    subject = np.concatenate([np.arange(gallery), rng.integers(0, gallery, probes)])
    t_idx = np.sort(np.concatenate([np.arange(n_t), rng.integers(0, n_t, max(0, images - n_t))]))
    tmpl = t_idx * 3 + 1
    media = tmpl * 16 + rng.integers(0, 6, len(tmpl))
    strength = rng.uniform(0.02, 0.25, n_t).astype(np.float32)
    direction = rng.standard_normal((gallery, dim), dtype=np.float32)
    feats = rng.standard_normal((len(tmpl), 2, dim), dtype=np.float32)
    feats += (direction[subject[t_idx]] * strength[t_idx, None])[:, None]
    det = rng.uniform(0.3, 1.0, len(tmpl)).astype(np.float32)
    ids = np.arange(n_t) * 3 + 1
    if structure == "uniform":
        p = rng.integers(0, n_t, (pairs, 2))
    else:
        mated = np.stack([subject[gallery:], np.arange(gallery, n_t)], 1)
        density = min(1.0, 1.01 * (pairs - probes) / (gallery * probes))
        parts = [mated]
        for lo in range(0, probes, 2000):
            r, c = np.nonzero(rng.random((min(2000, probes - lo), gallery)) < density)
            part = np.stack([c, gallery + lo + r], 1)
            parts.append(part[subject[part[:, 1]] != part[:, 0]])
        p = np.concatenate(parts)
        p = p[rng.permutation(len(p))[:pairs]]
    labels = (subject[p[:, 0]] == subject[p[:, 1]]).astype(np.int64)
    return feats, det, tmpl, media, ids[p[:, 0]], ids[p[:, 1]], labels


CPU = {}


def timed(fn, *a, repeat=1):
    """Best wall time of ``repeat`` calls and the last result; the CPU seconds of that call go to ``CPU[fn]``."""
    best, out = np.inf, None
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        out = fn(*a)
        wall = time.perf_counter() - t
        if wall < best:
            best, CPU[fn] = wall, time.process_time() - c
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=133_000)
    ap.add_argument("--gallery", type=int, default=3_531, help="gallery (enrolment) templates")
    ap.add_argument("--probes", type=int, default=19_593, help="probe (verification) templates")
    ap.add_argument("--pairs", type=int, default=15_658_489)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--structure", choices=("ijbc", "uniform"), default="ijbc")
    ap.add_argument("--subset-templates", type=int, default=1000)
    ap.add_argument("--subset-pairs", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=1, help="best of this many runs of the BLAS path")
    args = ap.parse_args()

    feats, det, tmpl, media, p1, p2, labels = synthetic(args.images, args.gallery, args.probes, args.pairs,
                                                        args.dim, args.structure)
    n_pairs = len(p1)
    x = (feats[:, 0] + feats[:, 1]) * det[:, None]
    uniq = np.unique(tmpl)

    keep = np.isin(tmpl, uniq[: args.subset_templates])
    t_loop, (ref_f, ref_u) = timed(loop_pooling, x[keep], tmpl[keep], media[keep])
    t_ours, (our_f, our_u) = timed(template_features, x[keep], tmpl[keep], media[keep], repeat=3)
    assert np.array_equal(ref_f, our_f), "pooling differs from the loop reference"
    n_sub = int(keep.sum())
    t_full, (feat_all, uniq_all) = timed(template_features, x, tmpl, media)

    sp1, sp2 = p1[: args.subset_pairs], p2[: args.subset_pairs]
    t_sloop, s_loop = timed(loop_scores, feat_all, uniq_all, sp1, sp2)
    t_idx, (j1, j2) = timed(lambda: (np.searchsorted(uniq_all, p1), np.searchsorted(uniq_all, p2)))
    ref_fn = lambda: pair_scores(feat_all, j1, j2, progress=False, method="reference")  # noqa: E731
    blas_fn = lambda: pair_scores(feat_all, j1, j2, progress=False)  # noqa: E731
    t_ref, s_ref = timed(ref_fn)
    assert np.array_equal(s_loop, s_ref[: len(sp1)]), "reference path differs from the loop"
    t_blas, s_blas = timed(blas_fn, repeat=args.repeats)
    cpu_ref, cpu_blas = CPU[ref_fn], CPU[blas_fn]
    diff = float(np.abs(s_blas - s_ref).max())
    assert diff <= 1e-6, f"BLAS scores differ from the reference by {diff:g}"
    t_roc, (fpr, tpr, _) = timed(metrics.roc_curve, labels, s_ref)
    fpr_b, tpr_b, _ = metrics.roc_curve(labels, s_blas)
    same_roc = np.array_equal(fpr, fpr_b) and np.array_equal(tpr, tpr_b)
    tar_ref, tar_blas = metrics.tar_at_far_nearest(fpr, tpr), metrics.tar_at_far_nearest(fpr_b, tpr_b)
    assert same_roc and tar_ref == tar_blas, "ROC / TAR@FAR differ between the BLAS and reference scores"

    size_full = f"{n_pairs:,} pairs"
    rows = [
        ("pooling, loop reference", f"{n_sub:,} img / {args.subset_templates:,} tmpl", t_loop, n_sub / t_loop, 1.0),
        ("pooling, ours", f"{n_sub:,} img / {args.subset_templates:,} tmpl", t_ours, n_sub / t_ours, t_loop / t_ours),
        ("pooling, ours (full)", f"{len(tmpl):,} img / {len(uniq_all):,} tmpl", t_full, len(tmpl) / t_full, None),
        ("pair scores, arcface_torch loop", f"{len(sp1):,} pairs", t_sloop, len(sp1) / t_sloop, None),
        ("pair scores, reference path", size_full, t_ref + t_idx, n_pairs / (t_ref + t_idx), 1.0),
        ("pair scores, BLAS path", size_full, t_blas + t_idx, n_pairs / (t_blas + t_idx),
         (t_ref + t_idx) / (t_blas + t_idx)),
        ("ROC + TAR@FAR", size_full, t_roc, n_pairs / t_roc, None),
    ]
    print(f"IJB 1:1 on synthetic features: {len(tmpl):,} images, {len(uniq_all):,} templates "
          f"({args.structure}: {args.gallery:,} gallery x {args.probes:,} probe templates), {n_pairs:,} pairs, "
          f"D={args.dim}")
    print(f"{'step':<34}{'size':<34}{'seconds':>9}{'items/s':>14}{'speed-up':>10}")
    for name, size, sec, rate, ratio in rows:
        print(f"{name:<34}{size:<34}{sec:>9.3f}{rate:>14,.0f}{(f'{ratio:.1f}x' if ratio else ''):>10}")
    print(f"pair scores, CPU seconds (all threads): reference {cpu_ref:.2f}, BLAS {cpu_blas:.2f}, "
          f"ratio {cpu_ref / cpu_blas:.1f}x (wall ratio above: {(t_ref + t_idx) / (t_blas + t_idx):.1f}x)")
    print(f"BLAS vs reference path: max |score diff| {diff:.1e}; ROC (fpr, tpr) identical: {same_roc}; "
          f"TAR@FAR identical: {tar_ref == tar_blas}")
    print("TAR@FAR " + "  ".join(f"{far:g}: {tar:.4f}" for far, tar in tar_blas.items()))


if __name__ == "__main__":
    main()
