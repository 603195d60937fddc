"""Build, inspect and shuffle insightface-style RecordIO datasets (no mxnet needed).

insightface training-set layout, as written by :func:`build_dataset`::

    OUT/train.rec, OUT/train.idx
        key 0          header record: flag 2, labels [N + 1, N + 1 + K], empty image
        keys 1..N      images: flag 0, scalar label class, JPEG/PNG bytes (BGR on decode)
        keys N+1..N+K  identity records: labels [first_key, end_key), empty image
    OUT/property       "K,H,W"
    OUT/classes.txt    line c = the sub-folder name of class c (not read by arcface_torch)

Image records carry a scalar label because arcface_torch's ``MXFaceDataset`` turns it
into a tensor with ``torch.tensor(label, dtype=torch.long)``, which refuses the
``numpy.float32`` first element of a label array. :func:`inspect` and the plugin's
reader take both.
"""
from __future__ import annotations

import csv
import math
import os
import shutil
import warnings
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from ..images import MAX_BYTES, decode as decode_image, sniff
from ..fileio import open_regular, resolve_inside, save_figure, writing_folder
from ..labels import check_labels
from . import recordio
from .dataset import resolve_rec
from .recordio import IRHeader, MXIndexedRecordIO, MXRecordIO, RecordIOError, imencode, pack, unpack

__all__ = ["build_dataset", "load_landmarks", "inspect_record", "RecordSummary", "shuffle_record",
           "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
PathLike = Union[str, "os.PathLike[str]"]


# -- build ------------------------------------------------------------------------------------
def load_landmarks(path: PathLike) -> Dict[str, np.ndarray]:
    """Read a landmarks CSV: ``relative_path,x1,y1,x2,y2,...,x5,y5`` per line.

    ``relative_path`` is relative to the image folder with ``/`` separators
    (``identity/image.jpg``); points are pixels in the original image, in the
    order left eye, right eye, nose tip, left mouth corner, right mouth corner
    (insightface's 5-point order). A first line whose coordinates are not numbers
    (11 fields) is taken as a header. Returns ``{relative_path: float32 (5, 2)}``.
    """
    path = os.fspath(path)
    out: Dict[str, np.ndarray] = {}
    with open_regular(path, "a landmarks list", text=True, newline="") as f:
        for n, row in enumerate(csv.reader(f), 1):
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            try:
                if len(row) != 11:
                    raise ValueError
                pts = np.array([float(v) for v in row[1:]], dtype=np.float32).reshape(5, 2)
            except ValueError:
                if n == 1 and len(row) == 11:
                    continue
                found = f"{len(row)} field(s)" if len(row) != 11 else "fields that are not all numbers"
                raise ValueError(f"{path}, line {n}: expected 'relative_path,x1,y1,...,x5,y5' (11 fields, "
                                 f"10 numbers), got {found}") from None
            if not np.isfinite(pts).all():
                raise ValueError(f"{path}, line {n}: landmarks must be finite numbers")
            out[_norm_rel(row[0])] = pts
    return out


def _norm_rel(rel: str) -> str:
    rel = rel.strip().replace("\\", "/")
    while rel.startswith("./"):
        rel = rel[2:]
    return rel


def _list_identities(folder: str) -> Tuple[List[str], List[List[str]]]:
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder}: image folder not found")
    names, files = [], []
    for name in sorted(os.listdir(folder)):
        sub = os.path.join(folder, name)
        if name.startswith(".") or not os.path.isdir(sub):
            continue
        images = sorted(f for f in os.listdir(sub)
                        if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS))
        if images:
            try:
                name.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(f"{os.path.join(folder, name)!r}: identity folder name is not valid UTF-8 "
                                 f"({os.fsencode(name)!r}); classes.txt is UTF-8: rename the folder") from None
            if "\n" in name or "\r" in name:
                raise ValueError(f"{os.path.join(folder, name)!r}: identity folder name holds a line break; "
                                 "classes.txt has one name per line: rename the folder")
            names.append(name)
            files.append(images)
    if not names:
        raise ValueError(f"{folder}: no identity sub-folders with images ({', '.join(IMAGE_EXTENSIONS)}); "
                         "expected IMAGE_FOLDER/<identity>/<image>")
    return names, files


def _encode_face(path: str, raw: bytes, size: int, landmarks: Optional[np.ndarray], resize: bool,
                 quality: int) -> bytes:
    """Image bytes for the record: the file itself when already ``size`` x ``size`` JPEG/PNG.

    Every image is decoded in full first (strictly: a truncated JPEG/PNG is refused), so the
    dataset never holds bytes that fail to decode at training time.
    """
    bgr = decode_image(raw, "bgr", where=path, strict=True)
    h, w = bgr.shape[:2]
    if landmarks is None:
        if (w, h) == (size, size) and sniff(raw)[0] in ("JPEG", "PNG"):
            return raw
        if (w, h) != (size, size) and not resize:
            raise ValueError(f"{path}: image is {w}x{h}, expected aligned {size}x{size} faces; pass a landmarks "
                             "file to align them, or --resize to resize as they are")
    if landmarks is not None:
        from insightface.utils.face_align import norm_crop  # optional: heavy

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # scikit-image deprecation inside insightface
            bgr = norm_crop(bgr, landmarks, image_size=size)
    elif bgr.shape[:2] != (size, size):
        rgb = Image.fromarray(np.ascontiguousarray(bgr[:, :, ::-1])).resize((size, size), Image.BICUBIC)
        bgr = np.asarray(rgb)[:, :, ::-1]
    return imencode(bgr, quality, ".jpg")


def build_dataset(image_folder: PathLike, out: PathLike, landmarks: Optional[PathLike] = None,
                  image_size: int = 112, resize: bool = False, quality: int = 95,
                  progress: bool = True, overwrite: bool = False) -> Dict[str, Union[str, int]]:
    """Pack ``image_folder/<identity>/<image>`` into an insightface RecordIO dataset in ``out``.

    Identities are the sorted sub-folder names (class ``c`` = the c-th name,
    empty folders skipped); images are taken in sorted order. Images that are
    already ``image_size`` squared JPEG/PNG files are stored byte for byte;
    with ``landmarks`` (see :func:`load_landmarks`) every image is aligned with
    insightface's ``norm_crop`` onto the ArcFace 5-point template and re-encoded
    as JPEG at ``quality``; with ``resize`` other sizes are resized (bicubic).
    Every image is decoded first: a damaged or truncated file stops the build, naming it, and so does
    an image (a link) that resolves outside ``image_folder``.

    All or nothing: the dataset is built in a staging folder and swapped in whole
    (:func:`lh2face_plugin.fileio.writing_folder`); a failed or killed build leaves ``out``
    as it was. ``out`` must be new, empty, or a folder this command made, unless
    ``overwrite`` (then files of other names in it are kept).

    Returns:
        dict with ``rec``, ``idx``, ``property``, ``classes`` (paths) and
        ``num_images``, ``num_classes``.
    """
    folder, out = os.fspath(image_folder), os.fspath(out)
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise ValueError(f"quality must be a JPEG quality, an integer in [1, 100], got {quality!r}")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 16:
        raise ValueError(f"image_size must be an integer >= 16, got {image_size!r}")
    names, files = _list_identities(folder)
    points = None
    if landmarks is not None:
        points = load_landmarks(landmarks)
        missing = [f"{n}/{f}" for n, fs in zip(names, files) for f in fs if f"{n}/{f}" not in points]
        if missing:
            raise ValueError(f"{os.fspath(landmarks)}: no landmarks for {len(missing)} image(s), e.g. "
                             f"{', '.join(missing[:3])}")
        try:
            import insightface.utils.face_align  # noqa: F401  # optional: heavy
        except ImportError:
            raise ValueError("aligning with landmarks needs insightface: pip install 'lh2face-plugin[zoo]'") from None
    sources = [[resolve_inside(folder, f"{n}/{f}", source=f"image folder {folder}") for f in fs]
               for n, fs in zip(names, files)]
    num_images, num_classes = sum(map(len, files)), len(names)
    paths = {"rec": os.path.join(out, "train.rec"), "idx": os.path.join(out, "train.idx"),
             "property": os.path.join(out, "property"), "classes": os.path.join(out, "classes.txt")}
    bar = tqdm(total=num_images, desc="build", unit="img", disable=not progress)
    with writing_folder(out, "data build", overwrite=overwrite) as stage, \
            MXIndexedRecordIO(os.path.join(stage, "train.idx"), os.path.join(stage, "train.rec"), "w") as rec:
        with open(os.path.join(stage, "property"), "w", encoding="utf-8", newline="\n") as f:
            f.write(f"{num_classes},{image_size},{image_size}\n")
        with open(os.path.join(stage, "classes.txt"), "w", encoding="utf-8", newline="\n") as f:
            f.write("".join(n + "\n" for n in names))
        rec.write_idx(0, pack(IRHeader(0, [num_images + 1, num_images + 1 + num_classes], 0, 0), b""))
        key = 1
        for cls, (name, images) in enumerate(zip(names, files)):
            for fname, source in zip(images, sources[cls]):
                rel = f"{name}/{fname}"
                path = os.path.join(folder, name, fname)
                with open_regular(source, "an image") as f:
                    raw = f.read(MAX_BYTES + 1)
                lmk = None if points is None else points[rel]
                body = _encode_face(path, raw, image_size, lmk, resize, quality)
                rec.write_idx(key, pack(IRHeader(0, float(cls), key, 0), body))
                key += 1
                bar.update()
        first = 1
        for cls, images in enumerate(files):
            rec.write_idx(num_images + 1 + cls, pack(IRHeader(0, [first, first + len(images)], 0, 0), b""))
            first += len(images)
    bar.close()
    return {**paths, "num_images": num_images, "num_classes": num_classes}


# -- inspect ----------------------------------------------------------------------------------
@dataclass
class RecordSummary:
    """What :func:`inspect_record` found in a ``.rec``.

    ``problems`` lists everything found; ``integrity`` the part of it that means the files are not a
    whole data set (a damaged or truncated record, a missing or mismatched ``.idx``, a header record
    that disagrees with the records).
    """

    rec: str
    layout: str
    records: int = 0
    images: int = 0
    empty_records: int = 0
    classes: int = 0
    label_widths: Dict[int, int] = field(default_factory=dict)
    label_range: Tuple[float, float] = (math.nan, math.nan)
    images_per_class: Tuple[int, float, int] = (0, 0.0, 0)
    image_shapes: Dict[Tuple[int, ...], int] = field(default_factory=dict)
    header: Optional[Tuple[int, int]] = None
    property: Optional[str] = None
    indexed: bool = False
    problems: List[str] = field(default_factory=list)
    integrity: List[str] = field(default_factory=list)
    sheet: Optional[str] = None

    def broken(self, problem: str) -> None:
        """Record an integrity failure: the files do not hold a whole, consistent data set."""
        self.integrity.append(problem)
        self.problems.append(problem)

    def format(self) -> str:
        """Human-readable multi-line report."""
        widths = ", ".join(f"{v} record(s) with {k}" for k, v in sorted(self.label_widths.items()))
        shapes = ", ".join(f"{'x'.join(map(str, s))}: {n}" for s, n in sorted(self.image_shapes.items()))
        lo, med, hi = self.images_per_class
        lines = [
            f"file            {self.rec}{'' if self.indexed else '  (no .idx: sequential scan only)'}",
            f"layout          {self.layout}",
            f"records         {self.records} ({self.images} images, {self.empty_records} without image)",
            f"classes         {self.classes} (images per class min {lo} / median {med:g} / max {hi})",
            f"labels          {widths}; image labels (first) in [{self.label_range[0]:g}, {self.label_range[1]:g}]",
            f"sampled images  {shapes or '-'}",
        ]
        if self.header is not None:
            lines.append(f"header record   images at keys 1..{self.header[0] - 1}, identity records at keys "
                         f"{self.header[0]}..{self.header[1] - 1}")
        if self.property is not None:
            lines.append(f"property        {self.property}")
        if self.sheet:
            lines.append(f"contact sheet   {self.sheet}")
        lines.append("problems        " + ("none" if not self.problems else "\n                ".join(self.problems)))
        return "\n".join(lines)


def inspect_record(rec: PathLike, sheet: Optional[PathLike] = None, samples: int = 36, seed: int = 0,
                   progress: bool = True, strict: bool = False) -> RecordSummary:
    """Scan a RecordIO file: counts, classes, label layout, consistency; optionally a contact sheet.

    Args:
        rec: a ``.rec`` file or a folder holding ``train.rec``.
        sheet: PNG path for a grid of ``samples`` images drawn uniformly at
            random (reservoir sampling with ``seed``), titled with their labels.
        strict: decode every image (truncated JPEG/PNG count as problems), not only the sampled ones.

    Every record is read once, sequentially. Problems are listed in ``problems``, not raised: a
    damaged record (the scan stops there); a missing, empty, unreadable or mismatched ``.idx``
    (duplicate keys, offsets that are not record starts, another record count); an insightface
    header that disagrees with the records; labels that are not finite integers or lie outside the
    identity ranges; a ``property`` file that disagrees; images that do not decode. The first three
    are also in ``integrity``.
    """
    rec_path, idx_path = resolve_rec(rec)
    indexed = os.path.exists(idx_path)
    total = _count_lines(idx_path) if indexed else None
    rng = np.random.default_rng(seed)
    widths: Counter = Counter()
    image_widths: set = set()
    first_labels = array("d")
    identity_ranges: List[Tuple[int, int]] = []
    reservoir: List[Tuple[int, float, bytes]] = []
    offsets: List[int] = []
    image_offsets = array("q")
    problems: List[str] = []
    undecodable: List[str] = []
    shapes: Counter = Counter()
    header0 = None
    records = empty = 0
    bar = tqdm(total=total, desc="inspect", unit="rec", disable=not progress)
    with MXRecordIO(rec_path, "r") as seq:
        ordinal = 0
        while True:
            pos = seq.tell()
            try:
                buf = seq.read()
                if buf is None:
                    break
                head, body = unpack(buf)
            except ValueError as exc:
                where = "" if isinstance(exc, RecordIOError) else f"{rec_path}, record #{ordinal}: "
                problems.append(f"{where}{exc}; the records after it were not read")
                break
            offsets.append(pos)
            records += 1
            bar.update()
            labels = [head.label] if head.flag == 0 else head.label.tolist()
            widths[len(labels)] += 1
            if not body:
                empty += 1
                if ordinal == 0 and head.flag >= 2:
                    header0 = (int(labels[0]), int(labels[1]))
                elif header0 is not None and head.flag >= 2:
                    identity_ranges.append((int(labels[0]), int(labels[1])))
                ordinal += 1
                continue
            image_widths.add(len(labels))
            first_labels.append(labels[0])
            image_offsets.append(pos)
            if strict:
                try:
                    shapes[decode_image(body, "bgr", where=f"record #{ordinal}", strict=True,
                                        backend=recordio.IMAGE_BACKEND).shape] += 1
                except ValueError as exc:
                    undecodable.append(str(exc))
            n = len(first_labels)
            if n <= samples:
                reservoir.append((ordinal, labels[0], body))
            else:
                j = int(rng.integers(0, n))
                if j < samples:
                    reservoir[j] = (ordinal, labels[0], body)
            ordinal += 1
    bar.close()
    labels_arr = np.frombuffer(first_labels, dtype=np.float64) if first_labels else np.zeros(0)
    summary = RecordSummary(rec=rec_path, layout="", records=records, images=len(first_labels),
                            empty_records=empty, label_widths=dict(widths), header=header0, indexed=indexed)
    for problem in problems:
        summary.broken(problem)
    index = _check_index(summary, idx_path, offsets)
    finite = np.isfinite(labels_arr)
    if not finite.all():
        summary.problems.append(f"{int((~finite).sum())} image record(s) have a NaN or infinite label, e.g. record "
                                f"#{int(np.argmin(finite))} (counting image records)")
    labels_ok = labels_arr[finite]
    if len(labels_ok):
        classes, counts = np.unique(labels_ok, return_counts=True)
        summary.classes = len(classes)
        summary.label_range = (float(labels_ok.min()), float(labels_ok.max()))
        summary.images_per_class = (int(counts.min()), float(np.median(counts)), int(counts.max()))
        if not np.array_equal(classes, np.round(classes)):
            summary.problems.append("some labels are not integers")
    if header0 is not None:
        summary.layout = (f"insightface (header record, {'scalar' if image_widths == {1} else 'multi-value'} image "
                          "labels, identity records)")
        _check_insightface(summary, header0, identity_ranges, labels_arr)
        if index is not None:
            _check_index_labels(summary, identity_ranges, index, np.frombuffer(image_offsets, np.int64), labels_arr)
    elif not image_widths:
        summary.layout = "no image records"
    elif image_widths == {1}:
        summary.layout = "im2rec (scalar labels, no header record)"
    else:
        summary.layout = f"im2rec (multi-label: {sorted(image_widths)} labels per record, no header record)"
    decoded = []
    for ordinal, label, body in sorted(reservoir):
        try:
            img = decode_image(body, "bgr", where=f"record #{ordinal}", backend=recordio.IMAGE_BACKEND)
        except ValueError as exc:
            if not strict:
                undecodable.append(str(exc))
            continue
        if not strict:
            shapes[img.shape] += 1
        decoded.append((ordinal, label, img))
    summary.image_shapes = dict(shapes)
    if undecodable:
        more = f" (and {len(undecodable) - 3} more)" if len(undecodable) > 3 else ""
        summary.problems.append(f"{len(undecodable)} image(s) do not decode{'' if strict else ' among the sampled'}: "
                                + "; ".join(undecodable[:3]) + more)
    integral = labels_arr[finite]
    _check_property(summary, os.path.join(os.path.dirname(rec_path), "property"),
                    integral[integral == np.round(integral)])
    if sheet is not None and decoded:
        summary.sheet = _contact_sheet(decoded, os.fspath(sheet), os.path.basename(rec_path))
    return summary


def _check_index(summary: RecordSummary, idx_path: str, offsets: List[int]) -> Optional[Tuple[Any, Any]]:
    """Compare the ``.idx`` with the records found by the sequential scan; returns ``(keys, key ->
    offset)`` of a readable index (``None`` otherwise)."""
    if not os.path.exists(idx_path):
        summary.broken(f"{idx_path}: missing; random access (arcface_torch's MXFaceDataset, DALI) needs "
                                "the index written with the .rec")
        return None
    try:
        index = MXIndexedRecordIO(idx_path, summary.rec, "r")
    except ValueError as exc:  # RecordIOError: garbage, not UTF-8, duplicate keys
        summary.broken(str(exc))
        return None
    keys, where = index.keys, index.idx
    index.close()
    if not keys:
        summary.broken(f"{idx_path}: empty index, but the .rec holds {summary.records} record(s)"
                                if summary.records else f"{idx_path}: empty index")
        return None
    starts = set(offsets)
    bad = [k for k in keys if where[k] not in starts]
    if bad:
        summary.broken(f"{idx_path}: {len(bad)} key(s) do not point at the start of a record, e.g. key "
                                f"{bad[0]!r} at byte {where[bad[0]]}: index and .rec do not match")
    if len(keys) != len(offsets):
        summary.broken(f"{idx_path}: {len(keys)} keys for {len(offsets)} records read from the .rec")
    return keys, where


def _check_index_labels(summary: RecordSummary, ranges: List[Tuple[int, int]], index: Tuple[Any, Any],
                        image_offsets: np.ndarray, labels: np.ndarray) -> None:
    """Read as arcface_torch reads (key ``k`` through the ``.idx``): the record each key of identity
    record ``c``'s range ``[lo, hi)`` points at must carry label ``c`` (an index whose keys point at
    another identity's records trains every such image under the wrong class)."""
    keys, where = index
    wrong, first = 0, None
    for cls, (lo, hi) in enumerate(ranges):
        for key in range(lo, min(hi, lo + len(labels) + 1)):
            if key not in where:
                continue
            at = int(np.searchsorted(image_offsets, where[key]))
            if at >= len(image_offsets) or image_offsets[at] != where[key]:
                continue  # not an image record: reported by the index check
            if labels[at] != cls:
                wrong += 1
                first = first or (key, cls, float(labels[at]))
    if wrong:
        key, cls, found = first
        summary.problems.append(f"{summary.rec}: {wrong} key(s) of the index point at a record of another "
                                f"identity, e.g. key {key} (identity record {cls}'s range) reads a record labelled "
                                f"{found:g}: the .idx and the identity records disagree; rebuild the index")


def _check_property(summary: RecordSummary, prop: str, labels: Optional[np.ndarray] = None) -> None:
    """``property`` against the records: class count, image size, and every integer label in ``[0, K)``."""
    if not os.path.exists(prop):
        return
    with open_regular(prop, "a property file", text=True, errors="replace") as f:
        summary.property = f.read(4096).strip()
    try:
        declared, h, w = (int(v) for v in summary.property.split(","))
    except ValueError:
        summary.problems.append(f"{prop}: expected one line 'num_classes,H,W' of three integers")
        return
    if declared != summary.classes:
        summary.problems.append(f"{prop} says {declared} classes, the records hold {summary.classes}")
    if labels is not None and len(labels):
        try:  # what arcface_torch's num_classes (from this file) will meet in training
            check_labels(torch.from_numpy(labels.astype(np.int64)), declared,
                         describe_row=lambda r: f"image record #{r}", hint=f"{prop} declares {declared} classes")
        except ValueError as exc:
            summary.problems.append(str(exc))
    other = sorted({s[:2] for s in summary.image_shapes} - {(h, w)})
    if other:
        summary.problems.append(f"{prop} says {h}x{w} images, found {', '.join(f'{a}x{b}' for a, b in other)}")


def _count_lines(path: str) -> int:
    with open_regular(path, "an index (.idx)") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def _check_insightface(summary: RecordSummary, header0: Tuple[int, int], ranges: List[Tuple[int, int]],
                       labels: np.ndarray) -> None:
    n_declared, k_declared = header0[0] - 1, header0[1] - header0[0]
    if summary.images != n_declared:
        summary.broken(f"header record declares {n_declared} images, found {summary.images}")
    if len(ranges) != k_declared:
        summary.broken(f"header record declares {k_declared} identity records, found {len(ranges)}")
    expected = 1
    for cls, (lo, hi) in enumerate(ranges):
        if lo != expected or hi < lo:
            summary.broken(f"identity record {cls}: range [{lo}, {hi}) does not continue at {expected}")
            break
        if hi <= len(labels) + 1 and lo < hi and not np.all(labels[lo - 1:hi - 1] == cls):
            summary.problems.append(f"identity record {cls}: images {lo}..{hi - 1} do not all carry label {cls}")
        expected = hi


def _contact_sheet(items: Sequence[Tuple[int, float, np.ndarray]], path: str, title: str) -> str:
    import matplotlib  # optional: heavy

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # optional: heavy

    cols = int(math.ceil(math.sqrt(len(items))))
    rows = int(math.ceil(len(items) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.4 * cols, 1.55 * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (ordinal, label, bgr) in zip(axes.flat, items):
        ax.imshow(bgr[:, :, ::-1])
        ax.set_title(f"#{ordinal} id {label:g}", fontsize=7)
    fig.suptitle(f"{title}: {len(items)} random images", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)


# -- shuffle ----------------------------------------------------------------------------------
def shuffle_record(rec: PathLike, out: PathLike, seed: int = 0, progress: bool = True,
                   overwrite: bool = False) -> Dict[str, Union[str, int]]:
    """Copy the image records of ``rec`` in a random order to ``out/train.rec`` / ``train.idx``.

    For NVIDIA DALI's ``fn.readers.mxnet``: header and identity records (empty
    image) are dropped, keys become ``0..N-1`` in the new order, and each record
    keeps its image bytes and ids but only its first label, as a scalar
    (``flag 0``) - DALI's label output is then one number per image. A
    ``property`` file beside ``rec`` is copied. Written all or nothing, like
    :func:`build_dataset` (same rules for an existing ``out``).

    Returns:
        dict with ``rec``, ``idx`` (and ``property`` when copied) paths and ``num_images``.
    """
    rec_path, idx_path = resolve_rec(rec)
    out = os.fspath(out)
    paths: Dict[str, Union[str, int]] = {"rec": os.path.join(out, "train.rec"),
                                         "idx": os.path.join(out, "train.idx")}
    if os.path.realpath(out) == os.path.realpath(os.path.dirname(rec_path)):
        raise ValueError(f"{out}: the shuffled copy must go to another folder than {rec_path}")
    src = MXIndexedRecordIO(idx_path, rec_path, "r")
    head, _ = unpack(src.read_idx(src.keys[0])) if src.keys else (None, b"")
    if head is not None and head.flag >= 2 and src.keys[0] == 0:
        keys = list(range(1, int(head.label[0])))
    else:
        keys = list(src.keys)
    order = np.random.default_rng(seed).permutation(len(keys))
    count = 0
    prop = os.path.join(os.path.dirname(rec_path), "property")
    with writing_folder(out, "data shuffle", overwrite=overwrite) as stage, \
            MXIndexedRecordIO(os.path.join(stage, "train.idx"), os.path.join(stage, "train.rec"), "w") as dst:
        if os.path.exists(prop):
            shutil.copyfile(prop, os.path.join(stage, "property"))
            paths["property"] = os.path.join(out, "property")
        for i in tqdm(order, desc="shuffle", unit="img", disable=not progress):
            key = keys[i]
            header, body = unpack(src.read_idx(key))
            if not body:
                continue
            label = header.label if header.flag == 0 else float(header.label[0])
            dst.write_idx(count, pack(IRHeader(0, label, header.id, header.id2), body))
            count += 1
    src.close()
    paths["num_images"] = count
    return paths
