"""Head specifications of the benchmark: ``[LABEL=]NAME[:key=value,...][@MODULE[:key=value,...]]``.

``arcface`` / ``cosface:s=24,m=0.35`` / ``cos24=cosface:s=24,m=0.35`` /
``lh2face:margin=per_sample`` / ``lh2face-r=lh2face@render:checkpoint=render.pt,mode=frozen``.
Values are read as int, float, true/false/none, else kept as strings. ``@MODULE`` trains the
backbone behind a registered input module (``render``) with its parameters. The label names
the run (its folder ``OUT/<label>/seed<k>``, the table row); it defaults to the spec as written.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Optional, Sequence, Tuple

__all__ = ["HeadSpec", "parse_head_spec", "parse_head_specs", "DEFAULT_HEADS", "CONTROL_HEAD", "RESERVED_LABELS",
           "OUTPUT_NAMES", "check_label", "PRESETS", "preset"]

PRESETS: Dict[str, str] = {
    "cosface-s24": "cosface:s=24,m=0.35",
    "control": "cosface:s=24,m=0",
}
"""Named variants: label -> ``NAME[:key=value,...]``. ``cosface-s24`` is CosFace at LH2Face's mean
kappa (METHODS.md section 6); ``control`` the same scale without a margin (``lh2face bench --control``)."""


def preset(label: str) -> str:
    """The full spec ``LABEL=NAME:...`` of the preset ``label`` (:data:`PRESETS`)."""
    return f"{label}={PRESETS[label]}"


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

_LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


@dataclass(frozen=True)
class HeadSpec:
    """One head of the comparison.

    Attributes:
        label: the row name and run folder name.
        name: registered head name (``lh2face heads``).
        kwargs: the head's parameters.
        text: the spec as written.
        input_module: registered input module the backbone trains behind, or ``None``.
        input_kwargs: the input module's parameters.
        hparams: every hyperparameter the head is built with, defaults resolved (filled by
            :func:`parse_head_specs`, which builds each head once to check it).
    """

    label: str
    name: str
    kwargs: Dict[str, Any] = field(default_factory=dict)
    text: str = ""
    input_module: Optional[str] = None
    input_kwargs: Dict[str, Any] = field(default_factory=dict)
    hparams: Dict[str, Any] = field(default_factory=dict)

    @property
    def folder(self) -> str:
        """The label made safe as a folder name."""
        return re.sub(r"[^A-Za-z0-9._+-]+", "_", self.label).strip("_") or "run"


def _value(text: str) -> Any:
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text.strip()


def parse_head_spec(text: str) -> HeadSpec:
    """Parse one spec (a :data:`PRESETS` name stands for its full spec); the error names the spec and
    what was expected.

    Raises:
        ValueError: malformed spec.
    """
    raw = str(text).strip()
    if raw in PRESETS:
        raw = preset(raw)
    label, sep, rest = raw.partition("=")
    if sep and (":" not in label) and label and _LABEL_RE.match(label):
        body = rest.strip()
    else:
        label, body = "", raw
    body, at, module_text = body.partition("@")
    name, kwargs = _name_params(text, body, "head name", "[LABEL=]NAME[:key=value,...]")
    module, module_kwargs = None, {}
    if at:
        module, module_kwargs = _name_params(text, module_text, "input module after '@'", "@MODULE[:key=value,...]")
    return HeadSpec(label or raw, name, kwargs, raw, module, module_kwargs)


def _name_params(text: str, body: str, what: str, form: str) -> Tuple[str, Dict[str, Any]]:
    name, _, params = body.partition(":")
    name = name.strip()
    if not name:
        raise ValueError(f"head spec {text!r}: no {what} (expected {form})")
    kwargs: Dict[str, Any] = {}
    if params.strip():
        for item in params.split(","):
            key, eq, value = item.partition("=")
            key = key.strip()
            if not eq or not key.isidentifier():
                raise ValueError(f"head spec {text!r}: parameter {item!r} is not key=value")
            if key in kwargs:
                raise ValueError(f"head spec {text!r}: parameter {key!r} given twice")
            kwargs[key] = _value(value)
    return name, kwargs


def check_label(spec: HeadSpec) -> None:
    """Refuse, in one line, a label whose folder is not a safe file-name component of ``OUT`` or
    collides with an output name (:data:`OUTPUT_NAMES`); called before anything is built or trained."""
    folder = spec.folder
    if len(spec.label) > MAX_LABEL:
        raise ValueError(f"head label {spec.label[:40]!r}... is {len(spec.label)} characters long (at most "
                         f"{MAX_LABEL}); write LABEL=SPEC with a shorter label")
    if folder in (".", "..") or folder.startswith(".") or not _LABEL_RE.match(folder):
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
    from ..registry import HEADS

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
        try:
            spec = replace(spec, hparams=HEADS.build(spec.name, **spec.kwargs).hparams())
        except (TypeError, ValueError) as exc:
            raise ValueError(f"head spec {spec.text!r}: {exc}") from None
        if spec.input_module is not None:
            from ..registry import INPUT_MODULES

            try:
                INPUT_MODULES.build(spec.input_module, **spec.input_kwargs)
            except KeyError as exc:
                raise ValueError(f"head spec {spec.text!r}: {exc.args[0] if exc.args else exc}") from None
            except (TypeError, ValueError, FileNotFoundError) as exc:
                raise ValueError(f"head spec {spec.text!r}: input module {spec.input_module!r}: {exc}") from None
        specs.append(spec)
    if not specs:
        raise ValueError("no head to compare")
    seen: Dict[str, str] = {}
    for s in specs:
        if s.folder in seen:
            raise ValueError(f"head specs {seen[s.folder]!r} and {s.text!r} have the same label/folder "
                             f"{s.folder!r}; give one a label: LABEL={s.text}")
        seen[s.folder] = s.text
    return specs
