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
at the ROC point whose FPR is nearest each of 1e-6 ... 1e-1 (reported as ``arcface_torch``; the
headline ``tar_at_far`` follows :func:`metrics.far_thresholds`). The pooling below is
vectorised but performs the reference's floating-point operations in the reference's
order, so template features are bitwise equal to it. Pair scores come from BLAS products
(within about 1e-13 of the reference's) in the reference's order and ties (see
:func:`pair_scores`), so the ROC, TAR@FAR and AUC are those of the reference.
"""
from __future__ import annotations

import hashlib
import os
import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np
from tqdm.auto import tqdm

from . import metrics
from .. import images
from ..fileio import NotRegularFile, open_regular, resolve_inside, sha256_update_file
from .align import align_face
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
        self._paths: Optional[list] = None
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
            col = next(k for k, v in enumerate(lmk[row, 1:12]) if not _all_floats([v]))
            raise ValueError(f"{paths['name_5pts_score']} line {lmk_lines[row]}: landmarks and score must be numbers; "
                             f"field {col + 2} is not") from None
        bad = ~np.isfinite(values).all(axis=1) | (values[:, 10] < 0)
        if bad.any():
            row = int(np.argmax(bad))
            raise ValueError(f"{paths['name_5pts_score']} line {lmk_lines[row]}: landmarks must be finite numbers and "
                             "the detector score a finite number >= 0")
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
        """The loose crops, each resolved inside ``ROOT/loose_crop`` (:func:`lh2face_plugin.fileio.resolve_inside`).

        A name that leads outside it (``../x.jpg``, an absolute path, a link) raises
        :class:`lh2face_plugin.fileio.OutsideRoot` naming the meta file and line.
        """
        if self._paths is None:
            crops, source = os.path.join(self.root, "loose_crop"), self.paths["face_tid_mid"]
            self._paths = [resolve_inside(crops, str(n), source=source, line=int(line))
                           for n, line in zip(self.names, self.lines)]
        return self._paths

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
    with open_regular(path, "an IJB list", text=True, errors="surrogateescape") as f:
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
        raise ValueError(f"{path} line {lines[row]}: {what} must be an integer") from None


def _data_line(path: str, row: int) -> int:
    """Line number of the ``row``-th data row (0-based) of a file read by ``np.loadtxt``."""
    with open_regular(path, "an IJB list", text=True, errors="replace") as f:
        k = -1
        for n, line in enumerate(f, 1):
            if line.split("#", 1)[0].strip():
                k += 1
                if k == row:
                    return n
    return row + 1


def _read_int_table(path: str, ncols: int) -> np.ndarray:
    try:
        with open_regular(path, "an IJB list", text=True, errors="replace") as f:
            arr = np.loadtxt(f, dtype=np.int64, ndmin=2)
    except ValueError as exc:
        if isinstance(exc, NotRegularFile):
            raise
        m = re.search(r"at row (\d+)", str(exc))  # numpy's message quotes the file's text: name the line only
        at = f" line {_data_line(path, int(m.group(1)))}" if m else ""
        raise ValueError(f"{path}{at}: expected rows of {ncols} integers") from None
    if arr.shape[1] != ncols or len(arr) == 0:
        raise ValueError(f"{path}: expected rows of {ncols} integers, got shape {arr.shape}")
    return arr


def _read_onen_csv(path: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unique ``(template_ids, subject_ids, line of each template's first row)`` of a 1:N CSV.

    The first non-blank line is the header; the first two columns are TEMPLATE_ID, SUBJECT_ID.
    """
    rows, lines = [], []
    with open_regular(path, "an IJB list", text=True, errors="surrogateescape") as f:
        numbered = [(n, line.strip()) for n, line in enumerate(f, 1) if line.strip()][1:]
    for n, line in numbered:
        try:
            rows.append([int(v) for v in line.split(",")[:2]])
            if len(rows[-1]) != 2:
                raise ValueError
        except ValueError:
            raise ValueError(f"{path} line {n}: rows must start with integer TEMPLATE_ID,SUBJECT_ID") from None
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
                workers: Optional[int] = None, progress: bool = True, method: str = "blas") -> np.ndarray:
    """Cosine ``sum(f[i] * f[j])`` of every pair.

    ``method="blas"`` (default) computes the scores from float64 matrix products on
    blocks of templates; ``method="reference"`` is the reference's per-pair sum,
    bitwise as ``np.sum(f1 * f2, -1)`` of arcface_torch's ``eval_ijbc.py``.

    The BLAS scores differ from the reference's by at most
    ``delta = 2 * gamma_(D+2) * max|f|^2`` (about 1e-13 for unit features, D=512;
    ``gamma_n = n*u / (1 - n*u)``, ``u = 2^-53``: the rounding-error bound of any
    summation order, Higham 2002, section 3.1). Their *order* is made identical to the
    reference's: scores closer than ``2 * delta`` to each other are the only ones whose
    order or ties could differ, and those are recomputed with the reference's
    arithmetic (unless they are repeats of one unordered pair, which tie in both).
    Hence ``metrics.roc_curve`` returns the same ``fpr`` and ``tpr`` arrays, and the
    same TAR@FAR table and AUC, as on the reference scores. Features with NaN/Inf, or
    not float64, are scored by the reference path.

    Args:
        features: ``(T, D)`` float64 unit template features.
        idx1, idx2: ``(P,)`` row indices.
        chunk: pairs per task of the reference path.
        workers: threads for the passes over the pairs (default: the CPU count, at
            most 8); the matrix products use BLAS's own threads.
        method: ``"blas"`` or ``"reference"``.
    Returns:
        ``(P,)`` float64.
    """
    if method not in ("blas", "reference"):
        raise ValueError(f"method must be 'blas' or 'reference', got {method!r}")
    f = np.ascontiguousarray(features)
    idx1, idx2 = np.asarray(idx1), np.asarray(idx2)
    if idx1.shape != idx2.shape or idx1.ndim != 1:
        raise ValueError(f"idx1 {idx1.shape} and idx2 {idx2.shape} must be 1-D of equal length")
    if method == "reference" or f.dtype != np.float64 or len(idx1) == 0 or not np.isfinite(f).all():
        return _pair_scores_reference(f, idx1, idx2, chunk, workers, progress)
    workers = workers or min(8, os.cpu_count() or 1)
    scores = _pair_scores_blocks(f, idx1, idx2, progress, workers)
    _certify_order(scores, f, idx1, idx2, _score_error_bound(f), workers)
    return scores


def _pair_scores_reference(f: np.ndarray, idx1: np.ndarray, idx2: np.ndarray, chunk: int = 256,
                           workers: Optional[int] = None, progress: bool = True) -> np.ndarray:
    """The reference's ``np.sum(f1 * f2, -1)`` of every pair, bitwise.

    Pairs are visited in tiles of the (i, j) template grid so that the rows they touch
    stay in cache, in chunks spread over ``workers`` threads (numpy releases the GIL).
    """
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


_BLOCK_ROWS = 128
_BLOCK_COLS = 32768
_DENSE_BYTES = 1 << 30
_CHUNK = 1 << 18


def _in_chunks(fn, n: int, workers: int) -> list:
    """``[fn(slice) for slice in chunks of range(n)]``, spread over ``workers`` threads (numpy releases the GIL)."""
    parts = [slice(lo, min(n, lo + _CHUNK)) for lo in range(0, n, _CHUNK)]
    if workers > 1 and len(parts) > 1:
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(fn, parts))
    return [fn(part) for part in parts]


def _score_error_bound(f: np.ndarray) -> float:
    """``delta`` with ``|blas score - reference score| <= delta`` for every pair (see :func:`pair_scores`)."""
    n = f.shape[1] + 2
    u = 2.0 ** -53
    gamma = n * u / (1 - n * u)
    norm2 = float(np.max(np.einsum("ij,ij->i", f, f))) * (1 + 4 * u * n)
    return 2 * gamma * norm2 * 1.01 + 4 * n * 2.0 ** -1074


def _pair_scores_blocks(f: np.ndarray, idx1: np.ndarray, idx2: np.ndarray, progress: bool,
                        workers: int = 1) -> np.ndarray:
    """Scores from float64 products of template blocks, any summation order.

    Templates are ranked by how many pairs they are in (most first) and each pair is
    oriented from its lower to its higher rank, so every pair lies above the diagonal
    of the ranked grid and a gallery x probe protocol fills one rectangle. When that
    rectangle's product takes at most 1 GiB (IJB-C: 3,531 x 19,593, 553 MB) and the
    pairs are not too sparse in it, one matrix product and one gather give every score.
    Otherwise pairs are grouped by row block (a one-pass radix sort); each block
    multiplies its rows with the range of columns its pairs use (columns gathered when
    that range is mostly unused) and picks its pairs' entries; a very sparse block sums
    its pairs directly. Passes over the pairs run in cache-sized chunks on ``workers``
    threads.
    """
    t, n = len(f), len(idx1)
    deg = np.bincount(idx1, minlength=t) + np.bincount(idx2, minlength=t)
    by_rank = np.lexsort((np.arange(t), -deg))
    rank = np.empty(t, dtype=np.int32 if t < 2 ** 31 else np.int64)
    rank[by_rank] = np.arange(t)
    fr = f[by_rank]
    a, b = np.empty(n, dtype=rank.dtype), np.empty(n, dtype=rank.dtype)

    def orient(part: slice):
        r1, r2 = rank[idx1[part]], rank[idx2[part]]
        np.minimum(r1, r2, out=a[part])
        np.maximum(r1, r2, out=b[part])
        return int(a[part].max()), int(b[part].min()), int(b[part].max())

    ext = np.array(_in_chunks(orient, n, workers))
    rows, c0, c1 = int(ext[:, 0].max()) + 1, int(ext[:, 1].min()), int(ext[:, 2].max()) + 1
    bar = tqdm(total=n, desc="pairs", unit="pair", unit_scale=True, leave=False,
               **({} if progress else {"disable": True}))
    out = np.empty(n, dtype=np.float64)
    with bar:
        if rows * (c1 - c0) * 8 <= _DENSE_BYTES and rows * (c1 - c0) <= 64 * n:
            g = (fr[:rows] @ fr[c0:c1].T).ravel()
            width = c1 - c0

            def pick(part: slice) -> int:
                lin = a[part].astype(np.int64)
                lin *= width
                lin += b[part]
                lin -= c0
                np.take(g, lin, out=out[part])
                return part.stop - part.start

            for k in _in_chunks(pick, n, workers):
                bar.update(k)
            return out
        n_blocks = -(-t // _BLOCK_ROWS)
        key = (a // _BLOCK_ROWS).astype(np.uint8 if n_blocks <= 256 else np.uint16 if n_blocks <= 65536
                                         else np.int64)
        order = np.argsort(key, kind="stable")
        edges = np.concatenate([[0], np.cumsum(np.bincount(key, minlength=n_blocks))])
        del key
        a, b = a[order], b[order]
        scores = np.empty(n, dtype=np.float64)
        for blk in range(n_blocks):
            part = slice(edges[blk], edges[blk + 1])
            if edges[blk + 1] > edges[blk]:
                r0 = blk * _BLOCK_ROWS
                scores[part] = _score_block(fr[r0:r0 + _BLOCK_ROWS], fr, a[part] - r0, b[part])
                bar.update(edges[blk + 1] - edges[blk])
        out[order] = scores
    return out


def _score_block(rows: np.ndarray, fr: np.ndarray, ra: np.ndarray, cb: np.ndarray) -> np.ndarray:
    """Scores of the pairs ``(rows[ra], fr[cb])`` of one row block."""
    c0, c1 = int(cb.min()), int(cb.max()) + 1
    used = np.zeros(c1 - c0, dtype=bool)
    used[cb - c0] = True
    n_used = int(np.count_nonzero(used))
    out = np.empty(len(ra), dtype=np.float64)
    if len(ra) * 64 < len(rows) * n_used:
        for lo in range(0, len(ra), 4096):
            part = slice(lo, lo + 4096)
            out[part] = np.einsum("ij,ij->i", rows[ra[part]], fr[cb[part]])
        return out
    if n_used * 2 < c1 - c0:
        cols_f, cl = fr[np.flatnonzero(used) + c0], (np.cumsum(used) - 1)[cb - c0]
    else:
        cols_f, cl = fr[c0:c1], cb - c0
    width = len(cols_f)
    if width <= _BLOCK_COLS:
        return (rows @ cols_f.T).ravel().take(ra * width + cl)
    ckey = (cl // _BLOCK_COLS).astype(np.uint16)
    corder = np.argsort(ckey, kind="stable")
    cedges = np.concatenate([[0], np.cumsum(np.bincount(ckey))])
    for k in range(len(cedges) - 1):
        part = corder[cedges[k]:cedges[k + 1]]
        if len(part):
            g = rows @ cols_f[k * _BLOCK_COLS:(k + 1) * _BLOCK_COLS].T
            out[part] = g.ravel().take(ra[part] * g.shape[1] + cl[part] - k * _BLOCK_COLS)
    return out


def _sorted_halves(x: np.ndarray, workers: int) -> list:
    """``x`` split at a sampled median and each part sorted (in parallel): their concatenation is ``sort(x)``."""
    if workers < 2 or len(x) < 2 * _CHUNK:
        return [np.sort(x)]
    pivot = float(np.median(x[:: max(1, len(x) // 4096)]))
    low = x < pivot
    parts = [x[low], x[~low]]
    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(np.sort, parts))


def _certify_order(scores: np.ndarray, f: np.ndarray, idx1: np.ndarray, idx2: np.ndarray, delta: float,
                   workers: int = 1) -> int:
    """Give ``scores`` (each within ``delta`` of the reference's) the reference's order and ties, in place.

    Scores are sorted; runs whose consecutive gaps are at most ``2 * delta`` are the
    only places where the order or ties could differ from the reference's. Their
    members are recomputed with the reference's arithmetic, except runs made of one
    unordered pair repeated with one value (a tie in both). Every other score is more
    than ``2 * delta`` from its neighbours, so its order is already the reference's.

    Returns:
        The number of scores recomputed.
    """
    halves = [h for h in _sorted_halves(scores, workers) if len(h)]
    close = []
    for k, v in enumerate(halves):
        pos = np.flatnonzero(np.diff(v) <= 2 * delta)
        close.append(np.stack([v[pos], v[pos + 1]], 1))
        if k + 1 < len(halves) and halves[k + 1][0] - v[-1] <= 2 * delta:
            close.append(np.array([[v[-1], halves[k + 1][0]]]))
    close = np.concatenate(close) if close else np.zeros((0, 2))
    if not len(close):
        return 0
    close = close[np.argsort(close[:, 0], kind="stable")]
    new = np.r_[True, close[1:, 0] > close[:-1, 1]]       # a gap pair not chained to the previous one
    lo = close[new, 0]
    hi = np.maximum.reduceat(close[:, 1], np.flatnonzero(new))
    members = _in_intervals(scores, lo, hi, 4 * delta, workers)
    run = np.searchsorted(lo, scores[members], side="right") - 1
    p, q = np.minimum(idx1[members], idx2[members]), np.maximum(idx1[members], idx2[members])
    by_run = np.argsort(run, kind="stable")
    run_s, p_s, q_s, s_s = run[by_run], p[by_run], q[by_run], scores[members][by_run]
    starts = np.r_[True, run_s[1:] != run_s[:-1]]
    head = np.flatnonzero(starts)[np.cumsum(starts) - 1]
    differs = (p_s != p_s[head]) | (q_s != q_s[head]) | (s_s != s_s[head])
    bad_runs = np.unique(run_s[differs])
    redo = members[np.isin(run, bad_runs)]
    if len(redo):
        scores[redo] = _pair_scores_reference(f, idx1[redo], idx2[redo], workers=1, progress=False)
    return int(len(redo))


def _in_intervals(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, width: float, workers: int = 1) -> np.ndarray:
    """Indices ``i`` with ``lo[k] <= x[i] <= hi[k]`` for some k (sorted, disjoint intervals)."""
    cell_w = 2.0 ** np.ceil(np.log2(max(width, np.finfo(np.float64).tiny)))
    c_lo, c_hi = np.floor(lo / cell_w).astype(np.int64), np.floor(hi / cell_w).astype(np.int64)
    span = c_hi - c_lo + 1
    mask = (1 << 22) - 1
    if int(span.sum()) > (1 << 20):
        cand = np.arange(len(x))
    else:
        table = np.zeros(mask + 1, dtype=bool)
        table[(np.repeat(c_lo, span) + np.arange(int(span.sum())) - np.repeat(np.cumsum(span) - span, span)) & mask] = True

        def hits(part: slice) -> np.ndarray:
            cell = np.floor(x[part] / cell_w).astype(np.int64)
            cell &= mask
            return np.flatnonzero(table[cell]) + part.start

        cand = np.concatenate(_in_chunks(hits, len(x), workers))
    k = np.searchsorted(lo, x[cand], side="right") - 1
    ok = k >= 0
    ok[ok] = x[cand[ok]] <= hi[k[ok]]
    return cand[ok]


def unique_template_pairs(pairs: np.ndarray, where: str,
                          line_of: Optional[Callable[[int], int]] = None) -> np.ndarray:
    """Rows of ``pairs`` ``(t1, t2, label)`` to evaluate: each unordered template pair once, first
    listing kept, as a ``.bin``'s repeated pairs are (:func:`~lh2face_plugin.eval.verification.unique_pairs`).

    A pair listed twice would count twice in every TAR and FAR; repeats are dropped with a warning
    giving their count. A pair listed both as genuine and as impostor raises ``ValueError`` naming
    both lines.
    """
    p = np.asarray(pairs, dtype=np.int64).reshape(-1, 3)
    if not len(p):
        return np.zeros(0, dtype=np.int64)
    key = np.sort(p[:, :2], axis=1)
    _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    clash = p[:, 2] != p[first[inverse], 2]
    if clash.any():
        row, earlier = int(np.argmax(clash)), int(first[inverse[int(np.argmax(clash))]])
        at = (lambda r: f"line {line_of(r)}") if line_of else (lambda r: f"row {r}")
        raise ValueError(f"{where}: {at(row)} repeats the template pair of {at(earlier)} with the other label; "
                         "the pair list is inconsistent")
    keep = np.sort(first)
    if len(keep) < len(p):
        warnings.warn(f"{where}: {len(p) - len(keep)} of {len(p)} template pairs repeat an earlier pair (the same two "
                      "templates, in either order); each pair is evaluated once", UserWarning, stacklevel=2)
    return keep.astype(np.int64)


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
        dict ``tar_at_far`` {far: TAR} under :func:`metrics.far_thresholds` (NaN where not resolvable,
        the reason in ``tar_at_far_unresolved``) with ``far_measured``; ``arcface_torch``: the
        table of ``eval_ijbc.py`` (nearest ROC point), labelled; ``auc``, ``roc`` (fpr, tpr), ``scores`` ``(P,)``,
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
    keep = unique_template_pairs(pairs, where, line_of)
    duplicates = int(len(pairs) - len(keep))
    pairs = pairs[keep]
    i1 = template_index(uniq, pairs[:, 0], f"{where}, first column,", line_of)
    i2 = template_index(uniq, pairs[:, 1], f"{where}, second column,", line_of)
    scores = pair_scores(feats, i1, i2)
    labels = pairs[:, 2]
    fpr, tpr, _ = metrics.roc_curve(labels, scores)
    return {"images": int(len(f)), "templates": int(len(uniq)), "pairs": int(len(pairs)),
            "duplicate_pairs": duplicates, **metrics.tar_at_far(labels, scores, fars),
            "arcface_torch": {"convention": metrics.ARCFACE_TORCH_IJB,
                              "tar_at_far": metrics.tar_at_far_nearest(fpr, tpr, fars)},
            "auc": metrics.auc(fpr, tpr), "roc": {"fpr": fpr, "tpr": tpr}, "scores": scores, "labels": labels,
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
    import cv2  # optional: heavy

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
