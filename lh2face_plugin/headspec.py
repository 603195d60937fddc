"""One head of an experiment, from the CLI or a recipe to training, records and tables: :class:`HeadSpec`.

Written ``[LABEL=]NAME[:key=value,...][@MODULE[:key=value,...]][#NETWORK]``: ``arcface`` /
``cosface:s=24,m=0.35`` / ``cos24=cosface:s=24,m=0.35`` / ``lh2face:margin=per_sample`` /
``lh2face-r=lh2face@render:checkpoint=render.pt,mode=frozen`` / ``lh2face-m=lh2face#compact-tiny-matched``,
or a preset name (:data:`PRESETS`). Values are read as int, float, true/false/none, else kept as strings.
``@MODULE`` trains the backbone behind a registered input module (``render``) with its parameters;
``#NETWORK`` trains this head on another backbone than the experiment's (a compute-matched baseline),
every other setting shared. The label names
the run (its folder ``OUT/<label>/seed<k>``, the table row); it defaults to the spec as written.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any, Dict, Mapping, Optional, Tuple

from .registry import HEADS, INPUT_MODULES

__all__ = ["HeadSpec", "PRESETS", "LABEL_RE", "preset", "parse_head_spec", "resolve"]

PRESETS: Dict[str, str] = {
    "cosface-s24": "cosface:s=24,m=0.35",
    "control": "cosface:s=24,m=0",
}
"""Named variants: label -> ``NAME[:key=value,...]``. ``cosface-s24`` is CosFace at LH2Face's mean
kappa (METHODS.md section 6); ``control`` the same scale without a margin (``lh2face bench --control``)."""


def preset(label: str) -> str:
    """The full spec ``LABEL=NAME:...`` of the preset ``label`` (:data:`PRESETS`)."""
    return f"{label}={PRESETS[label]}"


LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
"""A head label: a letter or digit, then letters, digits and ``._+-`` (it names a run folder)."""


@dataclass(frozen=True)
class HeadSpec:
    """One head of an experiment: what is built and trained, and the name it is shown under.

    Attributes:
        label: the row name and run folder name.
        name: registered head name (``lh2face heads``).
        kwargs: the head's parameters.
        text: the spec as written.
        input_module: registered input module the backbone trains behind, or ``None``.
        input_kwargs: the input module's parameters.
        network: the backbone this head trains on instead of the experiment's, or ``None``.
        hparams: every hyperparameter the head is built with, defaults resolved (filled by
            :func:`resolve`; empty until then).
    """

    label: str
    name: str
    kwargs: Dict[str, Any] = field(default_factory=dict)
    text: str = ""
    input_module: Optional[str] = None
    input_kwargs: Dict[str, Any] = field(default_factory=dict)
    hparams: Dict[str, Any] = field(default_factory=dict)
    network: Optional[str] = None

    @classmethod
    def of(cls, name: str, kwargs: Optional[Mapping[str, Any]] = None, *, label: Optional[str] = None,
           input_module: Optional[str] = None, input_kwargs: Optional[Mapping[str, Any]] = None,
           network: Optional[str] = None) -> "HeadSpec":
        """A spec from its parts (a recipe's plugin keys, a call with a head name)."""
        return cls(label or name, name, dict(kwargs or {}), label or name, input_module, dict(input_kwargs or {}),
                   network=network)

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
    if sep and (":" not in label) and label and LABEL_RE.match(label):
        body = rest.strip()
    else:
        label, body = "", raw
    body, hash_, network = body.partition("#")
    if hash_ and not network.strip():
        raise ValueError(f"head spec {text!r}: no backbone name after '#' (expected #NETWORK)")
    body, at, module_text = body.partition("@")
    name, kwargs = _name_params(text, body, "head name", "[LABEL=]NAME[:key=value,...]")
    module, module_kwargs = None, {}
    if at:
        module, module_kwargs = _name_params(text, module_text, "input module after '@'", "@MODULE[:key=value,...]")
    return HeadSpec(label or raw, name, kwargs, raw, module, module_kwargs, network=network.strip() or None)


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


def resolve(spec: HeadSpec) -> HeadSpec:
    """``spec`` with :attr:`~HeadSpec.hparams` filled: its head is built once to check its parameters and
    read every hyperparameter, defaults included; an input module is built once to check its own.

    Raises:
        KeyError: the head is not registered.
        ValueError: a parameter the head or input module refuses, an unknown input module or backbone.
    """
    from .compact import available_backbones  # lazy: torch; the lh2face command imports this module at start-up

    HEADS.get(spec.name)
    if spec.network is not None and spec.network not in available_backbones():
        raise ValueError(f"head spec {spec.text!r}: backbone {spec.network!r} after '#' is not one of "
                         f"{', '.join(available_backbones())}")
    try:
        spec = replace(spec, hparams=HEADS.build(spec.name, **spec.kwargs).hparams())
    except (TypeError, ValueError) as exc:
        raise ValueError(f"head spec {spec.text!r}: {exc}") from None
    if spec.input_module is not None:
        try:
            INPUT_MODULES.build(spec.input_module, **spec.input_kwargs)
        except KeyError as exc:
            raise ValueError(f"head spec {spec.text!r}: {exc.args[0] if exc.args else exc}") from None
        except (TypeError, ValueError, FileNotFoundError) as exc:
            raise ValueError(f"head spec {spec.text!r}: input module {spec.input_module!r}: {exc}") from None
    return spec
