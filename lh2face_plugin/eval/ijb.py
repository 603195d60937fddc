"""IJB-B / IJB-C style template evaluation: 1:1 verification and 1:N identification.

Layout of ``ROOT`` for a target ``T`` (``IJBB``, ``IJBC``, or any name such as ``SYNTH``;
file names use ``t = T.lower()``)::

    ROOT/meta/t_face_tid_mid.txt        image_name template_id media_id
    ROOT/meta/t_template_pair_label.txt template_id_1 template_id_2 label(0/1)
    ROOT/meta/t_name_5pts_score.txt     image_name x1 y1 ... x5 y5 detector_score
    ROOT/loose_crop/<image_name>
    ROOT/meta/t_1N_gallery_G1.csv, t_1N_gallery_G2.csv, t_1N_probe_mixed.csv   (optional, 1:N)

The two image lists must name the same images in the same order (as the released meta
files do). 1:N CSVs have a header row; their first two columns are TEMPLATE_ID and
SUBJECT_ID (further columns, one row per image, are ignored); their template ids must be
templates of ``t_face_tid_mid.txt``, whose pooled features they use.

1:1 procedure (arcface_torch ``eval_ijbc.py``; Whitelam et al. 2017, Maze et al. 2018):
align each loose crop onto the ArcFace template with its 5 landmarks; feature = f(image)
+ f(mirror), multiplied by the detector score (the norm is kept); average the images of
each media, sum the media of each template, L2-normalise; pair score = cosine; ROC; TAR
at the ROC point whose FPR is nearest each of 1e-6 ... 1e-1. The pooling and scoring
below are vectorised but perform the reference's floating-point operations in the
reference's order, so template features and scores are bitwise equal to it.
"""
from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np
from tqdm.auto import tqdm

from . import metrics
from .. import images
from ..fileio import sha256_update_file
from .embed import EmbedFn, extract_features


class IJBMeta:
    """Parsed meta files of one target.

    Attributes:
        names: ``(N,)`` image file names; ``templates``, ``medias``: ``(N,)`` int64;
        landmarks: ``(N, 5, 2)`` float32; scores: ``(N,)`` float32 detector scores;
        pairs: ``(P, 3)`` int64 ``(t1, t2, label)``; onen: ``{name: (templates, subjects)}``
        for each 1:N file present; onen_lines: ``{name: line of each template's first row}``;
        lines: ``(N,)`` line numbers of the images in ``face_tid_mid``; paths: the meta files.
    """

    def __init__(self, root: str, target: str):
        self.root, self.target = root, target
        t = target.lower()
        meta = os.path.join(root, "meta")
        paths = {k: os.path.join(meta, f"{t}_{k}.txt")
                 for k in ("face_tid_mid", "template_pair_label", "name_5pts_score")}
        missing = [p for p in paths.values() if not os.path.isfile(p)]
        if missing:
            raise FileNotFoundError(f"IJB target {target!r} under {root}: missing meta file(s) {', '.join(missing)}")
        self.paths = paths
        tid, self.lines = _read_columns(paths["face_tid_mid"], 3)
        self.names = tid[:, 0]
        self.templates = _ints(tid[:, 1], self.lines, paths["face_tid_mid"], "template id")
        self.medias = _ints(tid[:, 2], self.lines, paths["face_tid_mid"], "media id")
        lmk, lmk_lines = _read_columns(paths["name_5pts_score"], 12)
        n = min(len(lmk), len(tid))
        diff = np.flatnonzero(lmk[:n, 0] != self.names[:n])
        if diff.size or len(lmk) != len(tid):
            if diff.size:
                i = int(diff[0])
                where = (f"first difference at row {i + 1}: line {lmk_lines[i]} of {paths['name_5pts_score']} "
                         f"names {lmk[i, 0]!r}, line {self.lines[i]} of {paths['face_tid_mid']} names "
                         f"{self.names[i]!r}")
            else:
                longer, lines = ((paths["name_5pts_score"], lmk_lines) if len(lmk) > len(tid)
                                 else (paths["face_tid_mid"], self.lines))
                where = f"first difference at row {n + 1}: {longer} goes on from line {lines[n]}"
            raise ValueError(f"{paths['name_5pts_score']} ({len(lmk)} rows) and {paths['face_tid_mid']} "
                             f"({len(tid)} rows) must list the same images in the same order; {where}")
        try:
            values = lmk[:, 1:12].astype(np.float64)
        except ValueError:
            row = next(i for i, r in enumerate(lmk[:, 1:12]) if not _all_floats(r))
            raise ValueError(f"{paths['name_5pts_score']} line {lmk_lines[row]}: landmarks and score must be numbers, "
                             f"found {' '.join(lmk[row, 1:12])!r}") from None
        bad = ~np.isfinite(values).all(axis=1) | (values[:, 10] < 0)
        if bad.any():
            row = int(np.argmax(bad))
            raise ValueError(f"{paths['name_5pts_score']} line {lmk_lines[row]}: landmarks must be finite numbers and "
                             f"the detector score a finite number >= 0, found {' '.join(lmk[row, 1:12])!r}")
        self.landmarks = values[:, :10].astype(np.float32).reshape(-1, 5, 2)
        self.scores = values[:, 10].astype(np.float32)
        self.pairs = _read_int_table(paths["template_pair_label"], 3)
        bad = ~np.isin(self.pairs[:, 2], (0, 1))
        if bad.any():
            line = _data_line(paths["template_pair_label"], int(np.argmax(bad)))
            raise ValueError(f"{paths['template_pair_label']} line {line}: label must be 0 or 1")
        self.onen: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}
        self.onen_lines: Dict[str, np.ndarray] = {}
        for name in ("1N_gallery_G1", "1N_gallery_G2", "1N_probe_mixed"):
            p = os.path.join(meta, f"{t}_{name}.csv")
            if os.path.isfile(p):
                tids, subjects, lines = _read_onen_csv(p)
                self.onen[name] = (tids, subjects)
                self.onen_lines[name] = lines

    def image_paths(self) -> list:
        return [os.path.join(self.root, "loose_crop", n) for n in self.names]

    def check_images(self) -> None:
        """Raise ``FileNotFoundError`` listing missing loose crops (before any embedding starts)."""
        missing = [(i, p) for i, p in enumerate(self.image_paths()) if not os.path.isfile(p)]
        if missing:
            head = "; ".join(f"line {self.lines[i]}: {p}" for i, p in missing[:3])
            raise FileNotFoundError(f"{len(missing)} image(s) listed in meta/{self.target.lower()}_face_tid_mid.txt "
                                    f"are missing: {head}{' ...' if len(missing) > 3 else ''}")


def _read_columns(path: str, ncols: int) -> Tuple[np.ndarray, np.ndarray]:
    """Rows of space-separated fields and their line numbers in the file (blank lines skipped)."""
    rows, lines = [], []
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        for n, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != ncols:
                raise ValueError(f"{path} line {n}: expected {ncols} space-separated fields, found {len(fields)}")
            rows.append(fields)
            lines.append(n)
    if not rows:
        raise ValueError(f"{path}: empty file")
    return np.array(rows, dtype=str), np.array(lines, dtype=np.int64)


def _all_floats(values) -> bool:
    try:
        [float(v) for v in values]
        return True
    except ValueError:
        return False


def _ints(col: np.ndarray, lines: np.ndarray, path: str, what: str) -> np.ndarray:
    try:
        return col.astype(np.int64)
    except ValueError:
        row = next(i for i, v in enumerate(col) if not v.lstrip("-").isdigit())
        raise ValueError(f"{path} line {lines[row]}: {what} must be an integer, found {col[row]!r}") from None


def _data_line(path: str, row: int) -> int:
    """Line number of the ``row``-th data row (0-based) of a file read by ``np.loadtxt``."""
    with open(path, encoding="utf-8", errors="replace") as f:
        k = -1
        for n, line in enumerate(f, 1):
            if line.split("#", 1)[0].strip():
                k += 1
                if k == row:
                    return n
    return row + 1


def _read_int_table(path: str, ncols: int) -> np.ndarray:
    try:
        arr = np.loadtxt(path, dtype=np.int64, ndmin=2)
    except ValueError as exc:
        raise ValueError(f"{path}: expected rows of {ncols} integers ({exc})") from None
    if arr.shape[1] != ncols or len(arr) == 0:
        raise ValueError(f"{path}: expected rows of {ncols} integers, got shape {arr.shape}")
    return arr


def _read_onen_csv(path: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unique ``(template_ids, subject_ids, line of each template's first row)`` of a 1:N CSV.

    The first non-blank line is the header; the first two columns are TEMPLATE_ID, SUBJECT_ID.
    """
    rows, lines = [], []
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        numbered = [(n, line.strip()) for n, line in enumerate(f, 1) if line.strip()][1:]
    for n, line in numbered:
        try:
            rows.append([int(v) for v in line.split(",")[:2]])
            if len(rows[-1]) != 2:
                raise ValueError
        except ValueError:
            raise ValueError(f"{path} line {n}: rows must start with integer TEMPLATE_ID,SUBJECT_ID, found "
                             f"{line[:60]!r}") from None
        lines.append(n)
    tp = np.array(rows, dtype=np.int64).reshape(-1, 2)
    lines_arr = np.array(lines, dtype=np.int64)
    tids, first = np.unique(tp[:, 0], return_index=True)
    subj = tp[first, 1]
    conflict = tp[:, 1] != subj[np.searchsorted(tids, tp[:, 0])]
    if conflict.any():
        row = int(np.argmax(conflict))
        raise ValueError(f"{path} line {lines_arr[row]}: template {tp[row, 0]} has two subject ids "
                         f"({subj[np.searchsorted(tids, tp[row, 0])]} on line {lines_arr[first[np.searchsorted(tids, tp[row, 0])]]} "
                         f"and {tp[row, 1]})")
    return tids, subj, lines_arr[first]


def _ordered_group_sum(x: np.ndarray, group: np.ndarray, n_groups: int) -> np.ndarray:
    """Per-group sums of the rows of ``x`` accumulated one row at a time in row order.

    Equals ``x[group == g].sum(axis=0)`` bitwise (numpy sums axis 0 sequentially), with
    one vectorised step per position within a group instead of one per group.
    """
    order = np.argsort(group, kind="stable")
    g = group[order]
    starts = np.searchsorted(g, np.arange(n_groups))
    rank = np.arange(len(g)) - starts[g]
    by_rank = np.lexsort((g, rank))
    rank_sorted = rank[by_rank]
    edges = np.searchsorted(rank_sorted, np.arange(rank_sorted[-1] + 2 if len(g) else 1))
    out = np.zeros((n_groups, x.shape[1]), dtype=x.dtype)
    for r in range(len(edges) - 1):
        sel = by_rank[edges[r]:edges[r + 1]]
        out[g[sel]] += x[order[sel]]
    return out


def template_features(image_features: np.ndarray, templates: np.ndarray,
                      medias: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Pool image features into unit template features.

    Features of the images of one media are averaged; media features of a template are
    summed; the sums are L2-normalised (float64).

    Args:
        image_features: ``(N, D)``, already flip-summed and score-weighted.
        templates, medias: ``(N,)`` ids.
    Returns:
        ``(T, D)`` float64 unit features and the ``(T,)`` sorted unique template ids.
    """
    x = np.asarray(image_features)
    uniq_t, t_idx = np.unique(templates, return_inverse=True)
    key = np.stack([t_idx, np.asarray(medias)], 1)
    uniq_m, m_idx, m_count = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    m_idx = m_idx.ravel()
    media = _ordered_group_sum(x, m_idx, len(uniq_m)) / m_count.astype(x.dtype)[:, None]
    tmpl = _ordered_group_sum(media, uniq_m[:, 0], len(uniq_t))
    return metrics.l2_normalize(tmpl.astype(np.float64)), uniq_t


def template_index(unique_templates: np.ndarray, ids: np.ndarray, where: str,
                   line_of: Optional[Callable[[int], int]] = None) -> np.ndarray:
    """Rows of ``ids`` in ``unique_templates``; unknown ids raise ``ValueError`` naming ``where``.

    ``line_of(i)`` gives the file line of ``ids[i]`` for the message (default: "row i + 1").
    """
    pos = np.clip(np.searchsorted(unique_templates, ids), 0, len(unique_templates) - 1)
    bad = unique_templates[pos] != ids
    if bad.any():
        i = int(np.argmax(bad))
        at = f"line {line_of(i)}" if line_of is not None else f"row {i + 1}"
        raise ValueError(f"{where} {at}: template {ids[i]} has no images in face_tid_mid")
    return pos


def pair_scores(features: np.ndarray, idx1: np.ndarray, idx2: np.ndarray, chunk: int = 256,
                workers: Optional[int] = None, progress: bool = True) -> np.ndarray:
    """Cosine ``sum(f[i] * f[j])`` of every pair, bitwise as the reference's per-row sums.

    Pairs are visited in tiles of the (i, j) template grid so that the rows they touch
    stay in cache, in chunks spread over ``workers`` threads (numpy releases the GIL);
    each pair's product is summed over the feature axis exactly as ``np.sum(f1 * f2, -1)``.

    Args:
        features: ``(T, D)`` float64 unit template features.
        idx1, idx2: ``(P,)`` row indices.
        workers: threads (default: the CPU count, at most 8).
    Returns:
        ``(P,)`` float64.
    """
    f = np.ascontiguousarray(features)
    idx1, idx2 = np.asarray(idx1), np.asarray(idx2)
    tile = max(1, -(-len(f) // 255))
    order = np.argsort(((idx1 // tile) * 256 + idx2 // tile).astype(np.uint16), kind="stable")
    out = np.empty(len(idx1), dtype=np.float64)

    def run(lo: int) -> int:
        sel = order[lo:lo + chunk]
        prod = f[idx1[sel]]
        np.multiply(prod, f[idx2[sel]], out=prod)
        out[sel] = np.add.reduce(prod, axis=1)
        return len(sel)

    starts = range(0, len(idx1), chunk)
    workers = workers or min(8, os.cpu_count() or 1)
    with tqdm(total=len(idx1), desc="pairs", unit="pair", unit_scale=True, leave=False,
              **({} if progress else {"disable": True})) as bar:
        if workers > 1:
            with ThreadPoolExecutor(workers) as pool:
                for n in pool.map(run, starts):
                    bar.update(n)
        else:
            for lo in starts:
                bar.update(run(lo))
    return out


def verification_1to1(features: np.ndarray, detector_scores: np.ndarray, templates: np.ndarray,
                      medias: np.ndarray, pairs: np.ndarray,
                      fars: Sequence[float] = metrics.IJB_FARS, pairs_path: Optional[str] = None) -> Dict[str, object]:
    """IJB 1:1 metrics from per-image features.

    Args:
        features: ``(N, 2, D)`` float32 features of each aligned crop and its mirror.
        detector_scores: ``(N,)`` float32.
        templates, medias: ``(N,)``.
        pairs: ``(P, 3)`` ``(t1, t2, label)``.
        pairs_path: the pair file, to name its lines in errors.
    Returns:
        dict ``tar_at_far`` {far: tar}, ``auc``, ``roc`` (fpr, tpr), ``scores`` ``(P,)``,
        ``labels``, ``template_features``, ``unique_templates``, counts.
    """
    f = np.asarray(features, dtype=np.float32)
    scores_in = np.asarray(detector_scores, dtype=np.float32)
    bad = ~np.isfinite(f).all(axis=tuple(range(1, f.ndim))) | ~np.isfinite(scores_in)
    if bad.any():
        raise FloatingPointError(f"features or detector scores of {int(bad.sum())} image(s) are NaN or infinite, "
                                 f"e.g. image {int(np.argmax(bad))}; no metric is computed from them")
    x = (f[:, 0] + f[:, 1]) * scores_in[:, None]
    feats, uniq = template_features(x, templates, medias)
    line_of = (lambda i: _data_line(pairs_path, i)) if pairs_path else None
    where = pairs_path or "template pair file"
    i1 = template_index(uniq, pairs[:, 0], f"{where}, first column,", line_of)
    i2 = template_index(uniq, pairs[:, 1], f"{where}, second column,", line_of)
    scores = pair_scores(feats, i1, i2)
    labels = pairs[:, 2]
    fpr, tpr, _ = metrics.roc_curve(labels, scores)
    return {"images": int(len(f)), "templates": int(len(uniq)), "pairs": int(len(pairs)),
            "tar_at_far": metrics.tar_at_far_nearest(fpr, tpr, fars), "auc": metrics.auc(fpr, tpr),
            "roc": {"fpr": fpr, "tpr": tpr}, "scores": scores, "labels": labels,
            "template_features": feats, "unique_templates": uniq}


def identification_1toN(template_feats: np.ndarray, unique_templates: np.ndarray,
                        onen: Dict[str, Tuple[np.ndarray, np.ndarray]],
                        fpirs: Sequence[float] = (0.01, 0.1), ranks: Sequence[int] = (1, 5, 10),
                        onen_lines: Optional[Dict[str, np.ndarray]] = None) -> Dict[str, object]:
    """Open-set identification of the mixed probes against each gallery (G1, G2) and their mean.

    Scores are cosines of pooled template features; see :func:`metrics.identification`.
    """
    if "1N_probe_mixed" not in onen:
        raise ValueError("1:N needs the <target>_1N_probe_mixed.csv file")
    lines = onen_lines or {}

    def line_of(name: str):
        return (lambda i: int(lines[name][i])) if name in lines else None

    p_t, p_s = onen["1N_probe_mixed"]
    probes = template_feats[template_index(unique_templates, p_t, "1N_probe_mixed.csv", line_of("1N_probe_mixed"))]
    out: Dict[str, object] = {}
    for g in sorted(k for k in onen if k.startswith("1N_gallery")):
        g_t, g_s = onen[g]
        gal = template_feats[template_index(unique_templates, g_t, f"{g}.csv", line_of(g))]
        out[g.replace("1N_gallery_", "")] = metrics.identification(probes @ gal.T, p_s, g_s, fpirs, ranks)
    if not out:
        raise ValueError("1:N needs at least one <target>_1N_gallery_G*.csv file")
    if len(out) > 1:
        runs = list(out.values())
        out["mean"] = {k: {kk: float(np.mean([r[k][kk] for r in runs])) for kk in runs[0][k]}
                       for k in ("rank", "tpir")}
    return out


def load_aligned(meta: IJBMeta, idx: np.ndarray, size: int = 112, workers: int = 4) -> np.ndarray:
    """Aligned RGB crops ``(len(idx), size, size, 3)`` uint8 of the given meta rows."""
    import cv2

    from .align import align_face

    paths = meta.image_paths()

    def one(i: int) -> np.ndarray:
        where = f"{paths[i]} (line {meta.lines[i]} of {meta.paths['face_tid_mid']})"
        bgr = images.read(paths[i], "bgr", where=where)
        return cv2.cvtColor(align_face(bgr, meta.landmarks[i], size), cv2.COLOR_BGR2RGB)

    if workers > 1 and len(idx) > 1:
        with ThreadPoolExecutor(workers) as pool:
            return np.stack(list(pool.map(one, idx)))
    return np.stack([one(int(i)) for i in idx])


def _chunk_digest(meta: IJBMeta, size: int) -> Callable[[int, int], str]:
    """Digest of what makes the features of rows ``lo..hi-1``: image bytes, landmarks, crop size."""
    paths = meta.image_paths()

    def digest(lo: int, hi: int) -> str:
        h = hashlib.sha256(f"ijb|size={size}".encode())
        for i in range(lo, hi):
            h.update(meta.landmarks[i].tobytes())
            sha256_update_file(h, paths[i])
        return h.hexdigest()

    return digest


def evaluate_ijb(embed_fn: EmbedFn, root: str, target: str = "IJBC", batch_size: int = 128,
                 cache_dir: Optional[str] = None, cache_key: str = "", workers: int = 4,
                 fars: Sequence[float] = metrics.IJB_FARS, identification: bool = True) -> Dict[str, object]:
    """Evaluate an embed function on an IJB-style set (1:1, and 1:N when its CSVs exist).

    Args:
        embed_fn: maps ``(B, 112, 112, 3)`` uint8 RGB to ``(B, D)`` features.
        root: folder with ``meta/`` and ``loose_crop/``.
        target: ``IJBB``, ``IJBC`` or another name whose lower case prefixes the meta files.
        cache_dir: optional folder for resumable feature chunks, reused only for the same
            ``cache_key`` (model and settings) and unchanged images and landmarks.
        workers: threads reading and aligning images.
    Returns:
        :func:`verification_1to1` plus ``target``, ``features`` ``(N, 2, D)`` and, when
        available, ``identification`` from :func:`identification_1toN`.

    Example::

        >>> res = evaluate_ijb(torch_embedder(net), "/data/IJB_release/IJBC", "IJBC")
        >>> res["tar_at_far"][1e-4]
    """
    meta = IJBMeta(root, target)
    meta.check_images()
    feats = extract_features(embed_fn, lambda idx: load_aligned(meta, idx, workers=workers), len(meta.names),
                             batch_size, cache_dir, cache_key, desc=target,
                             chunk_digest=_chunk_digest(meta, 112) if cache_dir else None)
    res = verification_1to1(feats, meta.scores, meta.templates, meta.medias, meta.pairs, fars,
                            pairs_path=meta.paths["template_pair_label"])
    res["target"] = target
    res["features"] = feats
    if identification and meta.onen:
        res["identification"] = identification_1toN(res["template_features"], res["unique_templates"], meta.onen,
                                                    onen_lines=meta.onen_lines)
    return res
