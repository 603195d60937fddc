"""Synthetic identities: latent parameter vectors, grouped into look-alike families."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List

import numpy as np

from ..face3d import NUM_PARAMS, PARAM_NAMES

__all__ = ["Identity", "make_identities", "make_eval_identities", "draw_identities", "STREAM_TRAIN_IDS",
           "STREAM_EVAL_IDS"]

STREAM_TRAIN_IDS, STREAM_EVAL_IDS = 0, 1
"""Random streams of the training identities and of the dataset's evaluation identities."""


@dataclass(frozen=True, eq=False)
class Identity:
    """One synthetic person.

    Attributes:
        index: position in the list returned by :func:`make_identities` (the class label).
        family: family id; members of a family share a base parameter vector.
        hard: True when the family has more than one member (close look-alikes exist).
        params: (NUM_PARAMS,) float32 latent vector, entries named by ``PARAM_NAMES``.
    """

    index: int
    family: int
    hard: bool
    params: np.ndarray

    def named_params(self) -> Dict[str, float]:
        """``{name: value}`` view of :attr:`params`."""
        return {name: float(v) for name, v in zip(PARAM_NAMES, self.params)}


def draw_identities(num: int, seed: int, stream: int, family_size: int, hard_fraction: float,
                    family_spread: float) -> List[Identity]:
    """``num`` identities from the random stream ``stream`` of ``seed`` (see :func:`make_identities`)."""
    if num < 0:
        raise ValueError(f"num must be >= 0, got {num}")
    if family_size < 2:
        raise ValueError(f"family_size must be >= 2, got {family_size}")
    if not 0.0 <= hard_fraction <= 1.0:
        raise ValueError(f"hard_fraction must be in [0, 1], got {hard_fraction}")
    rng = np.random.default_rng([seed, stream])
    n_hard = int(round(num * hard_fraction))
    sizes = [family_size] * (n_hard // family_size)
    if n_hard % family_size >= 2:
        sizes.append(n_hard % family_size)
    sizes += [1] * (num - sum(sizes))
    sizes = [sizes[i] for i in rng.permutation(len(sizes))]
    out: List[Identity] = []
    for fam, size in enumerate(sizes):
        base = rng.standard_normal(NUM_PARAMS)
        for _ in range(size):
            p = base if size == 1 else base + family_spread * rng.standard_normal(NUM_PARAMS)
            out.append(Identity(len(out), fam, size > 1, p.astype(np.float32)))
    return out


def make_identities(num: int, seed: int = 0, *, family_size: int = 3, hard_fraction: float = 0.5,
                    family_spread: float = 0.35) -> List[Identity]:
    """Deterministic list of ``num`` identities.

    A fraction ``hard_fraction`` of them is grouped into families of ``family_size``
    members, ``params = base + family_spread * eps`` with ``base, eps ~ N(0, I)``; the rest
    are singletons with ``params = base``. Members of a family are therefore about
    ``family_spread`` times as far apart in parameter space as unrelated identities.

    Args:
        num: number of identities.
        seed: random seed; the same seed gives the same identities.
        family_size: members per hard family (a last smaller family may occur).
        hard_fraction: fraction of identities that belong to a hard family.
        family_spread: standard deviation of a member's offset from its family base.

    Returns:
        list of :class:`Identity`, ``index`` = position.
    """
    return draw_identities(num, seed, STREAM_TRAIN_IDS, family_size, hard_fraction, family_spread)


def make_eval_identities(num: int, seed: int = 0) -> List[Identity]:
    """The identities of a dataset's evaluation sets: half in families of 3, disjoint from the
    training identities of the same seed (another random stream)."""
    return draw_identities(num, seed, STREAM_EVAL_IDS, 3, 0.5, 0.35)
