"""Writer of the verification set: arcface_torch's ``.bin`` and ``verify_pairs.json``."""
from __future__ import annotations

import pickle
from typing import Any, Dict, List, Sequence

from ...fileio import write_json
from .identities import Identity
from .quality import HIGH_QUALITY
from .runner import Runner, make_jobs
from .views import Views

__all__ = ["write_verification"]


def write_verification(paths: Dict[str, str], ids: Sequence[Identity], views: Views,
                       records: Sequence[Dict[str, Any]], size: int, runner: Runner, bar) -> None:
    """Render the pairs' ``views`` into ``paths["verify_bin"]`` (a pickle of ``(JPEG bytes, same flags)``,
    2 images per pair) and write their ``records`` to ``paths["verify_pairs"]``."""
    bins: List[bytes] = []
    for res in runner.map(make_jobs(ids, views, size, "jpeg", 128)):
        bins += res["jpeg"]
        bar.update(len(res["jpeg"]))
    with open(paths["verify_bin"], "wb") as f:
        pickle.dump((bins, [r["same"] for r in records]), f, protocol=4)
    write_json(paths["verify_pairs"], {
        "quality_threshold": HIGH_QUALITY,
        "hard": "negative: both identities from one family; positive: the identity has family look-alikes",
        "quality": "high when both images have quality >= quality_threshold",
        "pairs": list(records),
    }, compact=True)
