"""The benchmark's heads: its default comparison, the positive control, and the checks of a list of
:class:`~lh2face_plugin.headspec.HeadSpec` (labels that make safe, distinct folders of ``OUT``)."""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

from ..headspec import LABEL_RE, PRESETS, HeadSpec, parse_head_spec, preset, resolve
from ..registry import HEADS

__all__ = ["HeadSpec", "parse_head_spec", "parse_head_specs", "DEFAULT_HEADS", "CONTROL_HEAD", "RESERVED_LABELS",
           "OUTPUT_NAMES", "check_label", "PRESETS", "preset"]

DEFAULT_HEADS: Tuple[str, ...] = (
    preset("cosface-s24"),
    "arcface",
    "adaface",
    "lh2face",
)
"""The default comparison, reference first: the scale-matched CosFace (s = LH2Face's mean
kappa, METHODS.md section 6), ArcFace at arcface_torch's defaults, AdaFace and LH2Face.
Default entries whose head is not registered in this installation are skipped with a note."""

CONTROL_HEAD = preset("control")
"""The positive control of ``lh2face bench --control``: plain normalised softmax at the reference's
scale (CosFace s=24 without its margin), a head with a known handicap: a bench that cannot tell it
from the reference could not have told a smaller difference either."""

RESERVED_LABELS = ("data", "evalset", "valset", "lr_sweep")
"""Folder names of ``OUT`` that are not runs."""

OUTPUT_NAMES = RESERVED_LABELS + ("runs.json", "results.json", "forest.png", "roc_hard_hq.png", "roc_ijb_synth.png",
                                  "training.png", "lr_sweep.png", ".lh2face-manifest.json")
"""Every name ``lh2face bench`` and ``lh2face quickstart`` write directly in ``OUT``: a head's folder
(its label made safe, :attr:`HeadSpec.folder`) may be none of them (compared without case)."""

MAX_LABEL = 100
"""Longest head label (characters): its folder name, with ``seed<k>`` below, stays a short path."""


def check_label(spec: HeadSpec) -> None:
    """Refuse, in one line, a label whose folder is not a safe file-name component of ``OUT`` or
    collides with an output name (:data:`OUTPUT_NAMES`); called before anything is built or trained."""
    folder = spec.folder
    if len(spec.label) > MAX_LABEL:
        raise ValueError(f"head label {spec.label[:40]!r}... is {len(spec.label)} characters long (at most "
                         f"{MAX_LABEL}); write LABEL=SPEC with a shorter label")
    if folder in (".", "..") or folder.startswith(".") or not LABEL_RE.match(folder):
        raise ValueError(f"head label {spec.label!r} does not make a safe folder name (letters, digits, '._+-', "
                         "not starting with '.'); write LABEL=SPEC")
    if folder.lower() in {n.lower() for n in OUTPUT_NAMES}:
        raise ValueError(f"head label {spec.label!r} collides with the output name {folder!r} (reserved: "
                         f"{', '.join(OUTPUT_NAMES)}); write LABEL=SPEC with another label")


def parse_head_specs(texts: Sequence[str], *, skip_unregistered: bool = False,
                     notes: List[str] = None) -> List[HeadSpec]:
    """Parse and check specs: the head is registered, its parameters build, labels are unique.

    Args:
        skip_unregistered: drop specs whose head is not registered (appending a line to
            ``notes``) instead of raising; used for :data:`DEFAULT_HEADS`.
    """
    specs: List[HeadSpec] = []
    parsed = [parse_head_spec(t) for t in texts]
    for spec in parsed:
        check_label(spec)  # before any head is built (and long before anything trains)
    for spec in parsed:
        try:
            HEADS.get(spec.name)
        except KeyError:
            if skip_unregistered:
                if notes is not None:
                    notes.append(f"head {spec.name!r} is not registered in this installation: "
                                 f"{spec.label!r} left out of the default comparison")
                continue
            raise
        specs.append(resolve(spec))
    if not specs:
        raise ValueError("no head to compare")
    seen: Dict[str, str] = {}
    for s in specs:
        if s.folder in seen:
            raise ValueError(f"head specs {seen[s.folder]!r} and {s.text!r} have the same label/folder "
                             f"{s.folder!r}; give one a label: LABEL={s.text}")
        seen[s.folder] = s.text
    return specs
