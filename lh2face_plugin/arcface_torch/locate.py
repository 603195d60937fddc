"""Find the user's arcface_torch checkout.

Search order: an explicit path (``--arcface-root``), then the environment
variable ``ARCFACE_TORCH_ROOT``, then the current directory. Each candidate
may be the ``arcface_torch`` folder itself or an insightface clone that holds
it at ``recognition/arcface_torch``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Mapping, Optional, Tuple

__all__ = ["Checkout", "locate_checkout", "REQUIRED_FILES", "ENV_VAR"]

ENV_VAR = "ARCFACE_TORCH_ROOT"

# What makes a folder an arcface_torch checkout for this plugin.
REQUIRED_FILES: Tuple[str, ...] = (
    "train_v2.py",
    "partial_fc_v2.py",
    "losses.py",
    "lr_scheduler.py",
    "dataset.py",
    "backbones/__init__.py",
    "configs/base.py",
    "utils/utils_config.py",
)


@dataclass(frozen=True)
class Checkout:
    """A located checkout.

    Attributes:
        root: absolute path of the ``arcface_torch`` folder.
        source: where it came from (``"--arcface-root"``, ``"ARCFACE_TORCH_ROOT"``
            or ``"current directory"``).
    """

    root: str
    source: str

    def path(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    def describe(self) -> str:
        return f"arcface_torch checkout {self.root} (from {self.source})"


def _missing(folder: str) -> List[str]:
    return [f for f in REQUIRED_FILES if not os.path.isfile(os.path.join(folder, f))]


def _resolve(candidate: str) -> Tuple[Optional[str], List[str]]:
    """The checkout folder inside ``candidate`` and, if none, what is missing."""
    candidate = os.path.abspath(os.path.expanduser(candidate))
    nested = os.path.join(candidate, "recognition", "arcface_torch")
    for folder in (candidate, nested):
        if os.path.isdir(folder) and not _missing(folder):
            return folder, []
    if not os.path.isdir(candidate):
        return None, ["the folder itself"]
    return None, _missing(candidate)


def locate_checkout(explicit: Optional[str] = None, environ: Optional[Mapping[str, str]] = None,
                    cwd: Optional[str] = None) -> Checkout:
    """Locate the checkout: ``explicit``, then ``$ARCFACE_TORCH_ROOT``, then ``cwd``.

    An explicit path or environment variable that does not hold a checkout is
    an error (it is never skipped silently in favour of the next candidate).

    Raises:
        FileNotFoundError: no checkout; the message lists every place tried and
            the files each one lacks.
    """
    environ = os.environ if environ is None else environ
    cwd = os.getcwd() if cwd is None else cwd
    tried = []
    for value, source, authoritative in ((explicit, "--arcface-root", True),
                                         (environ.get(ENV_VAR) or None, ENV_VAR, True),
                                         (cwd, "current directory", False)):
        if not value:
            continue
        root, missing = _resolve(value)
        if root:
            return Checkout(root, source)
        tried.append(f"  {source}: {os.path.abspath(value)} lacks {', '.join(missing)}")
        if authoritative:
            break
    raise FileNotFoundError(
        "no arcface_torch checkout found.\n" + "\n".join(tried) + "\n"
        "Clone insightface (git clone https://github.com/deepinsight/insightface) and pass "
        f"--arcface-root PATH/insightface/recognition/arcface_torch or set {ENV_VAR}."
    )
