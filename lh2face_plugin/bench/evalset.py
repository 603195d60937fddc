"""The benchmark's held-out evaluation set: look-alike families, all pairs.

``families`` families of 3 look-alike identities (:func:`~lh2face_plugin.data.synthetic.make_identities`
with ``family_size=3, hard_fraction=1``: members share a base vector and differ by
``family_spread`` offsets), drawn from their own seed, so none is a training identity.
Per identity ``hq_per_id`` high-quality and ``lq_per_id`` low-quality images rendered by the
synthetic renderer with random light, expression, background and pitch.

- **Quality.** The generator's degradations and :func:`~lh2face_plugin.data.synthetic.quality_score`;
  *high quality (HQ)* means ``quality >= HIGH_QUALITY`` (0.5, the data's own threshold):
  pristine images (quality 1, 40% of the HQ draws) or mildly degraded ones. Low-quality
  images have ``quality < 0.5``.
- **Yaw.** Of each identity's HQ images, the first half are near-frontal
  (``|yaw| <= frontal_max_yaw``), the rest yawed (``|yaw|`` uniform in ``yawed_range``, random
  side); LQ images draw ``N(0, 22)`` clipped to 60 degrees like the training images. Every
  image's yaw is stored; a pair is *yawed* when one of its images has ``|yaw| >= yaw_threshold``.
- Images are stored as the training set stores them (JPEG, quality 95 after the degradation,
  or the degradation's own JPEG quality) in ``evalset.npz``; ``meta.json`` (written last)
  holds the configuration, counts, definitions and the archive's SHA-256.

Splits (all pairs ``i < j`` of the set):

- ``hard_hq``: genuine = two HQ images of one identity; impostor = HQ images of two
  identities of one family (look-alikes). Thresholds come from these impostors.
- ``yawed``: ``hard_hq`` pairs (genuine and impostor) with a yawed image.
- ``all_hq``: genuine as ``hard_hq``; impostors = every HQ pair of different identities.
- ``overall``: every image: genuine = same identity, impostor = different identities.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional, Tuple

import numpy as np
from tqdm.auto import tqdm

from ..fileio import atomic_path, sha256_file, write_json
from ..images import decode

__all__ = ["EvalSetConfig", "EvalSet", "build_evalset", "load_evalset", "pair_counts"]

FORMAT = "lh2face-bench-evalset"
FORMAT_VERSION = 1
_STREAM = 0x6576616C


@dataclass(frozen=True)
class EvalSetConfig:
    """What the evaluation set holds (all of it enters its key).

    Attributes:
        families: look-alike families (3 identities each).
        seed: the set's seed (must differ from the training data's seed).
        hq_per_id, lq_per_id: high- and low-quality images per identity.
        family_spread: member offset scale within a family (the generator's default 0.35).
        frontal_max_yaw: |yaw| bound of the near-frontal HQ images (degrees).
        yawed_range: |yaw| range of the yawed HQ images (degrees).
        yaw_threshold: a pair is yawed when one image has |yaw| >= this.
        size: image size (112).
    """

    families: int = 120
    seed: int = 1
    hq_per_id: int = 6
    lq_per_id: int = 2
    family_spread: float = 0.35
    frontal_max_yaw: float = 15.0
    yawed_range: Tuple[float, float] = (30.0, 60.0)
    yaw_threshold: float = 30.0
    size: int = 112

    def validate(self) -> "EvalSetConfig":
        for key, low in (("families", 1), ("hq_per_id", 2), ("lq_per_id", 0), ("size", 16)):
            v = getattr(self, key)
            if isinstance(v, bool) or int(v) != v or v < low:
                raise ValueError(f"{key} must be an integer >= {low}, got {v!r}")
        lo, hi = self.yawed_range
        if not 0 <= self.frontal_max_yaw < lo <= hi <= 90:
            raise ValueError(f"need 0 <= frontal_max_yaw < yawed_range[0] <= yawed_range[1] <= 90, got "
                             f"{self.frontal_max_yaw}, {self.yawed_range}")
        return self

    def as_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["yawed_range"] = [float(v) for v in self.yawed_range]
        return d


@dataclass
class EvalSet:
    """A loaded evaluation set (N images).

    Attributes:
        path: folder.
        config: its :class:`EvalSetConfig`.
        identity, family: (N,) int64 (identity ids are 0..3F-1, family ids 0..F-1).
        quality: (N,) float32 quality score; ``hq`` (N,) bool = quality >= 0.5.
        yaw, pitch: (N,) float32 degrees.
        sha256: digest of ``evalset.npz``.
    """

    path: str
    config: EvalSetConfig
    identity: np.ndarray
    family: np.ndarray
    quality: np.ndarray
    hq: np.ndarray
    yaw: np.ndarray
    pitch: np.ndarray
    sha256: str
    _jpeg: np.ndarray
    _offsets: np.ndarray

    def __len__(self) -> int:
        return int(self.identity.size)

    @property
    def num_families(self) -> int:
        return int(self.family.max()) + 1

    @property
    def yawed(self) -> np.ndarray:
        """(N,) bool, ``|yaw| >= yaw_threshold``."""
        return np.abs(self.yaw) >= self.config.yaw_threshold

    def images(self, index: np.ndarray) -> np.ndarray:
        """Decoded images ``(len(index), S, S, 3)`` uint8 RGB."""
        out = []
        for i in np.asarray(index, dtype=np.int64).reshape(-1):
            data = self._jpeg[self._offsets[i]:self._offsets[i + 1]].tobytes()
            out.append(decode(data, "rgb", where=f"evaluation image {i}"))
        return np.stack(out)


def pair_counts(ev: EvalSet) -> Dict[str, Dict[str, int]]:
    """Genuine and impostor pair counts of every split (counted from the labels, not a formula)."""
    same_id = ev.identity[:, None] == ev.identity[None, :]
    same_fam = ev.family[:, None] == ev.family[None, :]
    both_hq = ev.hq[:, None] & ev.hq[None, :]
    yawed = ev.yawed[:, None] | ev.yawed[None, :]
    upper = np.triu(np.ones((len(ev), len(ev)), dtype=bool), 1)
    out = {}
    for name, mask in (("hard_hq", upper & both_hq), ("yawed", upper & both_hq & yawed),
                       ("all_hq", upper & both_hq), ("overall", upper)):
        imp = ~same_id & (same_fam if name in ("hard_hq", "yawed") else True)
        out[name] = {"genuine": int((mask & same_id).sum()), "impostor": int((mask & imp).sum())}
    return out


def _digest(path: str) -> str:
    return sha256_file(path)


def _plan(cfg: EvalSetConfig):
    """Identities and per-image yaw, pitch, quality flag, degradation and render seed."""
    from ..data.synthetic import degradation_with_quality, make_identities  # lazy: torch (bench imports without it)

    ids = make_identities(3 * cfg.families, cfg.seed, family_size=3, hard_fraction=1.0,
                          family_spread=cfg.family_spread)
    rng = np.random.default_rng([cfg.seed, _STREAM])
    per = cfg.hq_per_id + cfg.lq_per_id
    n = len(ids) * per
    ident = np.repeat(np.arange(len(ids)), per)
    hq = np.tile(np.r_[np.ones(cfg.hq_per_id, bool), np.zeros(cfg.lq_per_id, bool)], len(ids))
    yaw, pitch, degs = np.zeros(n), np.zeros(n), []
    n_front = cfg.hq_per_id // 2
    lo, hi = cfg.yawed_range
    for k in range(n):
        j = k % per
        if j < n_front:
            yaw[k] = rng.uniform(-cfg.frontal_max_yaw, cfg.frontal_max_yaw)
        elif j < cfg.hq_per_id:
            yaw[k] = rng.choice((-1.0, 1.0)) * rng.uniform(lo, hi)
        else:
            yaw[k] = np.clip(rng.normal(0, 22), -60, 60)
        pitch[k] = np.clip(rng.normal(0, 8), -20, 20)
        degs.append(degradation_with_quality(rng, bool(hq[k])))
    seeds = rng.integers(2 ** 62, size=len(ids))
    noise = rng.integers(2 ** 62, size=n)
    return ids, ident, hq, yaw, pitch, degs, seeds, noise


def build_evalset(path: str, cfg: EvalSetConfig, progress: bool = True) -> EvalSet:
    """Render the set into ``path`` (reused when ``path`` already holds it with this configuration).

    Written atomically: ``evalset.npz`` first, ``meta.json`` (the completeness marker) last.
    """
    from ..data.synthetic import HIGH_QUALITY, degrade, quality_score, render_faces  # lazy: torch

    cfg.validate()
    done = _try_load(path, cfg)
    if done is not None:
        return done
    _check_ours(path)
    ids, ident, hq, yaw, pitch, degs, seeds, noise = _plan(cfg)
    per = cfg.hq_per_id + cfg.lq_per_id
    blobs, quality = [], np.zeros(len(ident), np.float32)
    bar = tqdm(total=len(ident), desc="evaluation set", unit="img", disable=not progress, leave=False)
    try:
        for i, identity in enumerate(ids):
            sl = slice(i * per, (i + 1) * per)
            out = render_faces([identity] * per, yaw=yaw[sl], pitch=pitch[sl], light="random",
                               expression="random", background="random", size=cfg.size, seed=int(seeds[i]),
                               frontal=False)
            for k, img in zip(range(sl.start, sl.stop), out["image"]):
                _, data = degrade(img, degs[k], int(noise[k]), encode=True)
                blobs.append(np.frombuffer(data, np.uint8))
                quality[k] = quality_score(degs[k])
            bar.update(per)
    finally:
        bar.close()
    if not np.array_equal(quality >= HIGH_QUALITY, hq):
        raise RuntimeError("evaluation set: a drawn degradation does not match its quality class")
    offsets = np.r_[0, np.cumsum([b.size for b in blobs])].astype(np.int64)
    family = np.array([ids[i].family for i in ident], np.int64)
    os.makedirs(path, exist_ok=True)
    meta_path = os.path.join(path, "meta.json")
    if os.path.exists(meta_path):
        os.remove(meta_path)
    npz = os.path.join(path, "evalset.npz")
    with atomic_path(npz, ".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, jpeg=np.concatenate(blobs), offsets=offsets, identity=ident.astype(np.int64),
                     family=family, quality=quality, hq=hq, yaw=yaw.astype(np.float32),
                     pitch=pitch.astype(np.float32))
    ev = _open(path, cfg, _digest(npz))
    write_json(meta_path, {
        "format": FORMAT, "version": FORMAT_VERSION, "config": cfg.as_dict(), "sha256": ev.sha256,
        "counts": {"families": cfg.families, "identities": 3 * cfg.families, "images": len(ev),
                   "hq_images": int(ev.hq.sum()), "lq_images": int((~ev.hq).sum()),
                   "yawed_images": int(ev.yawed.sum()), "pairs": pair_counts(ev)},
        "quality_threshold": HIGH_QUALITY,
        "definitions": {
            "hq": "quality_score >= quality_threshold (pristine = 1.0)",
            "hard_hq": "genuine: HQ pairs of one identity; impostor: HQ pairs of two identities of one family",
            "yawed": "hard_hq pairs where an image has |yaw| >= yaw_threshold",
            "all_hq": "genuine as hard_hq; impostor: every HQ pair of two identities",
            "overall": "every pair: genuine same identity, impostor different identities"},
    })
    return ev


def _check_ours(path: str) -> None:
    """Refuse to write into a folder holding anything but an evaluation set (finished or interrupted)."""
    if not os.path.isdir(path):
        return
    names = set(os.listdir(path)) - {"evalset.npz", "meta.json"}
    meta = os.path.join(path, "meta.json")
    foreign = any(not n.startswith(".evalset.npz.") for n in names)
    if not foreign and os.path.exists(meta):
        try:
            with open(meta) as fh:
                foreign = json.load(fh).get("format") != FORMAT
        except (OSError, ValueError, AttributeError):
            foreign = True
    if foreign:
        raise FileExistsError(f"{path} holds files that are not a benchmark evaluation set; choose another --out")


def _open(path: str, cfg: EvalSetConfig, sha256: str) -> EvalSet:
    with np.load(os.path.join(path, "evalset.npz")) as z:
        a = {k: z[k] for k in z.files}
    return EvalSet(path, cfg, a["identity"], a["family"], a["quality"], a["hq"].astype(bool), a["yaw"], a["pitch"],
                   sha256, a["jpeg"], a["offsets"])


def _try_load(path: str, cfg: Optional[EvalSetConfig]) -> Optional[EvalSet]:
    try:
        with open(os.path.join(path, "meta.json")) as fh:
            meta = json.load(fh)
    except (OSError, ValueError):
        return None
    if meta.get("format") != FORMAT or meta.get("version") != FORMAT_VERSION:
        return None
    stored = meta.get("config", {})
    if cfg is None:
        stored = dict(stored, yawed_range=tuple(stored.get("yawed_range", (30.0, 60.0))))
        cfg = EvalSetConfig(**stored)
    elif stored != cfg.as_dict():
        return None
    npz = os.path.join(path, "evalset.npz")
    if not os.path.exists(npz) or _digest(npz) != meta.get("sha256"):
        return None
    return _open(path, cfg, meta["sha256"])


def load_evalset(path: str) -> EvalSet:
    """Load a finished evaluation set from ``path``.

    Raises:
        FileNotFoundError: ``path`` holds no complete evaluation set (or its archive changed).
    """
    ev = _try_load(path, None)
    if ev is None:
        raise FileNotFoundError(f"{path}: no complete benchmark evaluation set (meta.json + evalset.npz)")
    return ev
