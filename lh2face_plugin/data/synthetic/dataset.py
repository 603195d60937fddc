"""The whole synthetic dataset of one seed: training set and evaluation sets, written all or nothing."""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional, Set, Union

import numpy as np
from tqdm import tqdm

from ...fileio import FolderWriter, cleanup_stale, cleanup_stale_in, read_manifest, verify_manifest, write_json
from .. import face3d
from .identities import make_eval_identities, make_identities
from .ijb import IJB_TARGET, write_ijb
from .plans import ijb_plan, render_eval_views, train_views, verify_plan
from .quality import HIGH_QUALITY
from .render_eval import write_render_eval
from .runner import Runner
from .train_set import write_train_set
from .verification import write_verification

__all__ = ["generate_dataset", "FORMAT_VERSION"]

FORMAT_VERSION = 2  # 2: scalar image labels (flag 0), readable by arcface_torch


_FILES = {
    "rec": "train.rec",
    "idx": "train.idx",
    "property": "property",
    "train_images": "train_images.csv",
    "verify_bin": "verify.bin",
    "verify_pairs": "verify_pairs.json",
    "ijb": "ijb",
    "ijb_pair_splits": os.path.join("ijb", "pair_splits.json"),
    "render_eval": "render_eval.npz",
    "meta": "meta.json",
}


def _paths(out: str) -> Dict[str, str]:
    return {k: os.path.join(out, v) for k, v in _FILES.items()}


_COMMAND = "data synth"


def _is_complete(out: str, config: Dict[str, Any]) -> bool:
    """``out`` holds a whole dataset of ``config``: its manifest lists every file with its size and SHA-256."""
    doc = read_manifest(out)
    if doc is None or doc.get("command") != _COMMAND or doc.get("config") != config:
        return False
    listed = set(doc["files"])
    if not {_FILES["meta"], _FILES["rec"], _FILES["idx"]} <= listed:
        return False
    return not verify_manifest(out, doc)


def _legacy_owned(out: str) -> Optional[Set[str]]:
    """Files of a dataset written before manifests existed (recognised by its meta.json)."""
    try:
        with open(os.path.join(out, _FILES["meta"]), encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("format") != "lh2face-synthetic":
        return None
    owned = {v.replace(os.sep, "/") for k, v in _FILES.items() if k != "ijb"}
    t = IJB_TARGET.lower()
    owned |= {"ijb/images.csv"} | {f"ijb/meta/{t}_{n}.txt" for n in ("face_tid_mid", "name_5pts_score",
                                                                        "template_pair_label")}
    count = int(meta.get("counts", {}).get("ijb_images", 0))
    owned |= {f"ijb/loose_crop/{k + 1}.jpg" for k in range(count)}
    return owned


def generate_dataset(out: Union[str, "os.PathLike[str]"], identities: int = 200, images_per_id: int = 20,
                     seed: int = 0, *, eval_identities: Optional[int] = None, verify_pairs: Optional[int] = None,
                     render_eval: int = 128, size: int = 112, workers: Optional[int] = None,
                     progress: bool = True, overwrite: bool = False) -> Dict[str, str]:
    """Write a complete synthetic dataset (training set and evaluation sets) to ``out``.

    Written all or nothing: built in a staging folder beside ``out`` and swapped in whole
    (:func:`lh2face_plugin.fileio.writing_folder`), with a manifest of every file's size and
    SHA-256. An ``out`` already holding this dataset, whole by its manifest, is reused as it
    is unless ``overwrite``. ``out`` must be new, empty or a dataset this function made, unless
    ``overwrite``; files in ``out`` that it did not make (say ``ijb/notes.txt``) are kept. Files:

    - ``train.rec``, ``train.idx``, ``property``: insightface layout. Record 0 has labels
      ``[N + 1, N + 1 + K]``; records 1..N are JPEG images with the scalar label ``class``
      (flag 0, as arcface_torch's ``MXFaceDataset`` reads them), grouped by class; records
      N+1..N+K are identity records ``[first, end)``.
    - ``train_images.csv``: per training image its key, label, family, hard flag, quality,
      pose and degradation.
    - ``verify.bin``: arcface_torch's verification format, a pickle of ``(list of JPEG
      bytes, list of bool)`` with 2 images per pair; ``verify_pairs.json``: per pair
      same/hard/quality split, identities, image qualities.
    - ``ijb/``: IJB-style 1:1 set, target ``SYNTH``: ``meta/synth_face_tid_mid.txt``,
      ``meta/synth_template_pair_label.txt``, ``meta/synth_name_5pts_score.txt`` and
      ``loose_crop/<n>.jpg`` (loose crops with landmarks in crop coordinates), plus
      ``images.csv`` and ``pair_splits.json``.
    - ``render_eval.npz``: yawed clean inputs with ground-truth depth, mask, landmarks,
      pose and the frontal image/depth/mask.
    - ``meta.json``: configuration, counts, file names, conventions.

    Evaluation identities are disjoint from the training identities (another random
    stream). The same arguments give byte-identical files, whatever ``workers``.

    Args:
        out: output folder.
        identities: K training identities.
        images_per_id: M images per training identity.
        seed: random seed.
        eval_identities: identities of the evaluation sets (default ``clip(K // 4, 20, 500)``).
        verify_pairs: pairs in ``verify.bin`` (default ``clip(K, 200, 3000)`` rounded to 20).
        render_eval: number of renderer-evaluation samples.
        size: image size (112 for ArcFace).
        workers: rendering processes (default: 1 for small sets, else ``min(2, cpu_count)``).
        progress: show a tqdm bar.
        overwrite: regenerate even when ``out`` already holds this dataset, and write into a
            non-empty folder this function did not make (replacing only files of the same names).

    Returns:
        ``{name: path}`` for ``rec, idx, property, train_images, verify_bin, verify_pairs,
        ijb, ijb_pair_splits, render_eval, meta``.
    """
    for name, value, low in (("identities", identities, 2), ("images_per_id", images_per_id, 1),
                             ("render_eval", render_eval, 0), ("size", size, 16)):
        if int(value) != value or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    n_eval = int(eval_identities) if eval_identities is not None else int(np.clip(identities // 4, 20, 500))
    if n_eval < 4:
        raise ValueError(f"eval_identities must be >= 4, got {n_eval}")
    n_pairs = int(verify_pairs) if verify_pairs is not None else int(np.clip(round(identities / 20) * 20, 200, 3000))
    if n_pairs < 2:
        raise ValueError(f"verify_pairs must be >= 2, got {n_pairs}")
    if workers is None:
        small = identities * images_per_id + 2 * n_pairs < 2000
        workers = 1 if small else min(2, os.cpu_count() or 1)
    workers = max(1, int(workers))
    out = os.path.abspath(os.fspath(out))
    if os.path.exists(out) and not os.path.isdir(out):
        raise FileExistsError(f"output {out!r} exists and is not a folder")
    config = {"version": FORMAT_VERSION, "identities": int(identities), "images_per_id": int(images_per_id),
              "seed": int(seed), "eval_identities": n_eval, "verify_pairs": n_pairs,
              "render_eval": int(render_eval), "size": int(size)}
    if not overwrite and _is_complete(out, config):
        cleanup_stale(out)
        cleanup_stale_in(out, recursive=True)
        return _paths(out)

    train_ids = make_identities(int(identities), seed)
    eval_ids = make_eval_identities(n_eval, seed)
    t_views = train_views(train_ids, int(images_per_id), seed)
    verify_views, verify_records = verify_plan(eval_ids, n_pairs, seed)
    ijb_views, ijb_rows, ijb_pairs, template_ident, template_quality = ijb_plan(eval_ids, seed)
    render_views = render_eval_views(int(render_eval), n_eval, seed)

    folder = FolderWriter(out, _COMMAND, overwrite=overwrite, extra={"config": config}, legacy=_legacy_owned)
    total = t_views.n + verify_views.n + ijb_views.n + render_views.n
    bar = tqdm(total=total, desc="synth", unit="img", disable=not progress, dynamic_ncols=True)
    runner = Runner(workers)
    try:
        paths = _paths(folder.path)
        write_train_set(paths, train_ids, t_views, int(images_per_id), size, runner, bar)
        write_verification(paths, eval_ids, verify_views, verify_records, size, runner, bar)
        write_ijb(paths["ijb"], paths["ijb_pair_splits"], eval_ids, ijb_views, ijb_rows, ijb_pairs, template_ident,
                  template_quality, size, runner, bar)
        write_render_eval(paths["render_eval"], eval_ids, render_views, size, runner, bar)
        bar.close()
        write_json(paths["meta"], {
            "format": "lh2face-synthetic", "config": config,
            "counts": {"train_images": t_views.n, "train_identities": len(train_ids), "eval_identities": n_eval,
                       "verify_pairs": n_pairs, "ijb_images": ijb_views.n, "ijb_templates": len(template_ident),
                       "ijb_pairs": len(ijb_pairs), "render_eval": render_views.n},
            "files": _FILES, "ijb_target": IJB_TARGET, "quality_threshold": HIGH_QUALITY,
            "train_records": "record 0: [N+1, N+1+K]; 1..N: [class, 0]; N+1..N+K: [first, end)",
            "image": "RGB, aligned to ArcFace's 112x112 5-point template at yaw 0",
            "depth": f"image widths from the image plane of an orthographic camera {face3d.CAMERA_DISTANCE} "
                     "widths in front of the head centre; 0 on background",
            "pose": "degrees; yaw > 0 moves the nose right, pitch > 0 up, roll > 0 turns the image clockwise",
            "train_families": [i.family for i in train_ids], "train_hard": [int(i.hard) for i in train_ids],
        }, compact=True)
        runner.close()
        folder.publish()
    finally:
        runner.close()
        bar.close()
        folder.discard()
    return _paths(out)
