"""Which arcface_torch revision a checkout is, by the content of the files the plugin relies on.

The plugin rebinds names inside ``train_v2`` and subclasses ``PartialFC_V2``,
so it depends on those files as they are. A checkout whose files hash to a
known revision is used silently; any other gets a :class:`RevisionWarning`
naming the files that differ, and ``strict=True`` refuses it.

Hashes are sha256 of the file bytes with CRLF normalised to LF (a Windows
clone with ``core.autocrlf`` is the same revision).
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from ..fileio import sha256_file

__all__ = ["KNOWN_REVISIONS", "RELIED_ON", "RevisionReport", "RevisionWarning", "check_revision", "file_digest"]

# insightface commit -> {path relative to arcface_torch: sha256}
KNOWN_REVISIONS: Dict[str, Dict[str, str]] = {
    "7fadd420c2351d0ffa8cac403421c1a3ed733365": {
        "train_v2.py": "f273ca43e898437dc415f195597a029d5a8a8c2770f47b5576b81b02f8f8cf0e",
        "partial_fc_v2.py": "28c0188301a1d3012cf24d2273b8b22012f1ab6254ffb739616ef6015d7fcf7a",
        "losses.py": "177f2232f89400d6d2e3ca32a7906a45634f2a9910d4c6ee158b803277fe7570",
        "lr_scheduler.py": "d40df7dde77aadaa82227ef6a14ee48d0018f4ea79e0527147892fc08f38dce2",
        "dataset.py": "76b5ec9f9db86c95b718ba709865b379116d5f8949a807b84dbeadb1cefe39eb",
        "backbones/__init__.py": "f8b47b5f06f9f7febc85e02471e756b1576f92f222f432f818c1bfbcedeac176",
        "configs/base.py": "29e6e2471b721d235f50dd8ad517311d7a0e0faf4dcf5550869f3818f7ee7de6",
        "utils/utils_config.py": "2d4ff01c232488bc5115357c573e92a3b03f8862e664a0c8b7fe4fce62ad95b1",
        "utils/utils_callbacks.py": "920545b961c3a109f1597d3138c032024d51442d92984e7775f89f33e20b21a5",
        "utils/utils_logging.py": "1f89596b621d1e520bbe60fc7ab846d25d97c88d14133451033db9ca675a711f",
        "utils/utils_distributed_sampler.py": "a65eb1e2ecec04547caf1473ee9e8460f45022b078d0e0c372ae85bb305c2386",
        "eval/verification.py": "df7872cc5a582464c75abffa3d82ff776aa764259428c2e821dbaaf64d23123a",
    },
}

RELIED_ON = tuple(sorted({p for table in KNOWN_REVISIONS.values() for p in table}))


class RevisionWarning(UserWarning):
    """The checkout is not a revision this plugin was tested against."""


def file_digest(path: str) -> str:
    """sha256 hex digest of a text file, CRLF read as LF."""
    return sha256_file(path, text=True)


@dataclass
class RevisionReport:
    """Result of :func:`check_revision`.

    Attributes:
        revision: the matching insightface commit, or ``None``.
        closest: the known revision with the fewest differing files.
        differing: files whose content differs from ``closest``.
        missing: relied-on files absent from the checkout.
    """

    root: str
    revision: Optional[str]
    closest: str
    differing: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)

    @property
    def known(self) -> bool:
        return self.revision is not None

    def describe(self) -> str:
        if self.known:
            return f"known revision: insightface {self.revision[:12]}"
        parts = []
        if self.differing:
            parts.append("differs in " + ", ".join(self.differing))
        if self.missing:
            parts.append("lacks " + ", ".join(self.missing))
        return (f"unknown revision ({'; '.join(parts)}) relative to insightface {self.closest[:12]}, "
                "the revision this plugin was tested against")


def check_revision(root: str, strict: bool = False) -> RevisionReport:
    """Compare the checkout at ``root`` with :data:`KNOWN_REVISIONS`.

    Args:
        root: the arcface_torch folder.
        strict: refuse an unknown revision instead of warning.

    Returns:
        The report (also for an unknown revision unless ``strict``).

    Raises:
        RuntimeError: ``strict`` and the revision is unknown.

    Warns:
        RevisionWarning: the revision is unknown.
    """
    best = None
    for commit, table in KNOWN_REVISIONS.items():
        differing, missing = [], []
        for rel, digest in table.items():
            path = os.path.join(root, rel)
            if not os.path.isfile(path):
                missing.append(rel)
            elif file_digest(path) != digest:
                differing.append(rel)
        report = RevisionReport(root, None if differing or missing else commit, commit, differing, missing)
        if report.known:
            return report
        if best is None or len(differing) + len(missing) < len(best.differing) + len(best.missing):
            best = report
    message = f"arcface_torch at {root}: {best.describe()}."
    if strict:
        raise RuntimeError(message + " Refusing to run with --strict; drop --strict to run with a warning.")
    warnings.warn(message + " The plugin may misbehave; pass --strict to refuse such checkouts.",
                  RevisionWarning, stacklevel=2)
    return best
