"""Recipes: arcface_torch config files that may live anywhere, plus the plugin's keys.

A recipe is a Python file defining ``config``, a mapping with attribute access,
exactly like the files in arcface_torch's ``configs/``. :func:`load_recipe`
merges it over the checkout's ``configs/base.py`` (as ``get_config`` does) and
:func:`plugin_spec` validates the keys the plugin adds:

=======================  ====================================================
``loss``                 name of a registered head (``lh2face``, ``uss``, ...);
                         unset: arcface_torch's ``CombinedMarginLoss`` as is.
``loss_kwargs``          dict of that head's parameters.
``input_module``         name of a registered input module (``render``), wraps
                         the backbone; unset: the backbone alone.
``input_module_kwargs``  dict of its parameters.
``steps_per_epoch``      cap on steps per epoch (smoke runs); unset: the loader.
``partial_fc_kwargs``    dict of the plugin's Partial FC options: ``blockwise``
                         (bool, the memory-lean layer), ``block_elements``
                         (int, entries per block), ``cache_cosine`` (bool),
                         ``fp16`` (bool, products in half: float16 on CUDA,
                         bfloat16 on CPU), ``matmul_dtype`` ("float16" or
                         "bfloat16"), ``nonfinite`` ("raise" or "nan"; "nan"
                         by default when ``config.fp16``, so GradScaler skips).
=======================  ====================================================

A key spelled close to one of these (``loss_kwarg``, ``losses``) is an error with
"did you mean", since arcface_torch would ignore it silently; keys that ``config.loss``
makes unused (``margin_list``, ``interclass_filtering_threshold``) are listed in
:attr:`PluginSpec.unused` for a one-time report.
"""
from __future__ import annotations

import contextlib
import difflib
import importlib.util
import inspect
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional

from .. import build_head, build_input_module
from ..headspec import HeadSpec
from ..registry import HEADS

__all__ = ["AttrDict", "PluginSpec", "load_recipe", "resolve_recipe", "plugin_spec", "loading_recipe",
           "check_job_keys", "sets_plugin_key", "PLUGIN_KEYS", "REQUIRED_JOB_KEYS"]

PLUGIN_KEYS = ("loss", "loss_kwargs", "input_module", "input_module_kwargs", "steps_per_epoch", "partial_fc_kwargs")
REQUIRED_JOB_KEYS = ("rec", "num_classes", "num_image", "num_epoch", "warmup_epoch", "val_targets")
# arcface_torch's CombinedMarginLoss arguments: unused once config.loss names a head
MARGIN_KEYS = ("margin_list", "interclass_filtering_threshold")

_LOADING = threading.local()


class AttrDict(dict):
    """A dict whose keys are also attributes (``cfg.lr``), like easydict's ``EasyDict``."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"config has no key {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __delattr__(self, name: str) -> None:
        try:
            del self[name]
        except KeyError:
            raise AttributeError(name) from None


@contextlib.contextmanager
def loading_recipe(path: str) -> Iterator[None]:
    """Marks that the plugin's own loader is executing the recipe at ``path``."""
    previous = getattr(_LOADING, "path", None)
    _LOADING.path = path
    try:
        yield
    finally:
        _LOADING.path = previous


def is_loading_recipe() -> bool:
    return getattr(_LOADING, "path", None) is not None


def resolve_recipe(recipe: str, checkout_root: Optional[str] = None) -> str:
    """The recipe file for ``recipe``: a path (``.py`` optional), or a name in the
    checkout's ``configs/`` (``configs/ms1mv3_r50`` or ``ms1mv3_r50``).

    Raises:
        FileNotFoundError: naming every place looked at.
    """
    candidates = [recipe, recipe + ".py"]
    if checkout_root:
        stem = recipe[len("configs/"):] if recipe.startswith("configs/") else recipe
        candidates += [os.path.join(checkout_root, "configs", stem), os.path.join(checkout_root, "configs", stem + ".py")]
    for c in candidates:
        if os.path.isfile(c) and c.endswith(".py"):
            return os.path.abspath(c)
    raise FileNotFoundError(f"recipe {recipe!r} not found; looked at: {', '.join(dict.fromkeys(candidates))}")


def _exec_config_file(path: str, module_name: str) -> Mapping[str, Any]:
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    try:
        with loading_recipe(path):
            spec.loader.exec_module(module)
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(f"{path}: {exc}. arcface_torch's configs need its requirements "
                                  "(pip install easydict).") from exc
    config = getattr(module, "config", None)
    if not isinstance(config, Mapping):
        raise ValueError(f"{path}: a recipe must define `config`, a dict-like of settings "
                         f"(got {type(config).__name__})")
    return config


def load_recipe(recipe: str, checkout_root: Optional[str] = None, base: Optional[Mapping[str, Any]] = None,
                ) -> AttrDict:
    """Load a recipe and merge it over the base settings.

    Args:
        recipe: path or ``configs/`` name (see :func:`resolve_recipe`).
        checkout_root: arcface_torch folder; its ``configs/base.py`` is the base
            unless ``base`` is given.
        base: base settings to merge over (default: the checkout's, or none).

    Returns:
        The merged config; ``output`` defaults to ``work_dirs/<recipe name>``
        and ``recipe_path`` records the file. Its attribute (not key)
        ``recipe_keys`` holds the keys the recipe itself set.

    Raises:
        FileNotFoundError, ValueError: naming the file and what is wrong.
    """
    path = resolve_recipe(recipe, checkout_root)
    stem = os.path.splitext(os.path.basename(path))[0]
    if base is None and checkout_root:
        base = _exec_config_file(os.path.join(checkout_root, "configs", "base.py"), "lh2face_recipe_base")
    cfg = AttrDict(base or {})
    own = _exec_config_file(path, f"lh2face_recipe_{stem}")
    cfg.update(own)
    if cfg.get("output") is None:
        cfg.output = os.path.join("work_dirs", stem)
    cfg.recipe_path = path
    object.__setattr__(cfg, "recipe_keys", frozenset(own))
    return cfg


def sets_plugin_key(cfg: Mapping[str, Any]) -> bool:
    """Whether ``cfg`` sets any of :data:`PLUGIN_KEYS` (to something other than ``None``)."""
    return any(cfg.get(k) is not None for k in PLUGIN_KEYS)


def check_key_spelling(cfg: Mapping[str, Any], where: str = "recipe") -> None:
    """Raise ``ValueError`` for a key spelled close to a plugin key (``loss_kwarg``, ``Loss``).

    arcface_torch ignores keys it does not read, so such a typo would silently train with
    defaults (or train ArcFace). No key of arcface_torch's own configs comes close.
    """
    for key in cfg:
        if not isinstance(key, str) or key in PLUGIN_KEYS:
            continue
        close = difflib.get_close_matches(key.lower(), PLUGIN_KEYS, n=1, cutoff=0.8)
        if close:
            raise ValueError(f"{where}: config.{key} is read by neither arcface_torch nor lh2face_plugin; "
                             f"did you mean config.{close[0]}?")


@dataclass
class PluginSpec:
    """The plugin's part of a recipe, validated.

    Attributes:
        loss: head name or ``None`` (arcface_torch's own margin loss).
        loss_kwargs: head parameters.
        input_module: input-module name or ``None``.
        input_module_kwargs: its parameters.
        steps_per_epoch: step cap per epoch or ``None``.
        embedding_size: ``config.embedding_size`` if set.
        partial_fc_kwargs: options of the plugin's Partial FC (see the module docstring).
        where: the recipe file, for messages.
        unused: one message per recipe key that ``config.loss`` makes unused.
    """

    loss: Optional[str] = None
    loss_kwargs: Dict[str, Any] = field(default_factory=dict)
    input_module: Optional[str] = None
    input_module_kwargs: Dict[str, Any] = field(default_factory=dict)
    steps_per_epoch: Optional[int] = None
    embedding_size: Optional[int] = None
    partial_fc_kwargs: Dict[str, Any] = field(default_factory=dict)
    where: str = "recipe"
    unused: List[str] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return bool(self.loss or self.input_module or self.steps_per_epoch)

    def head_kwargs(self) -> Dict[str, Any]:
        """``loss_kwargs``, plus ``embedding_size`` from the config for heads that take it."""
        kwargs = dict(self.loss_kwargs)
        if self.embedding_size is not None and "embedding_size" not in kwargs:
            if "embedding_size" in inspect.signature(HEADS.get(self.loss)).parameters:
                kwargs["embedding_size"] = self.embedding_size
        return kwargs

    def head_spec(self) -> HeadSpec:
        """The recipe's head as a :class:`~lh2face_plugin.headspec.HeadSpec` (labelled by ``config.loss``)."""
        return HeadSpec.of(self.loss, self.head_kwargs(), input_module=self.input_module,
                           input_kwargs=self.input_module_kwargs)

    def build_head(self):
        """The head ``config.loss`` names; errors name the config key that holds the fault."""
        with self._naming("loss"):
            spec = self.head_spec()
            return build_head(spec.name, **spec.kwargs)

    def build_input_module(self):
        with self._naming("input_module"):
            return build_input_module(self.input_module, **self.input_module_kwargs)

    def describe_loss(self, head=None) -> str:
        """``lh2face LH2Face(alpha=0.35, ...)`` (``head``: the built head, else built now)."""
        head = head if head is not None else self.build_head()
        extra = getattr(head, "extra_repr", lambda: "")()
        return f"{self.loss} {type(head).__name__}({extra})"

    @contextlib.contextmanager
    def _naming(self, key: str) -> Iterator[None]:
        name = getattr(self, key)
        try:
            yield
        except KeyError as exc:
            raise KeyError(f"{self.where}: config.{key}: {exc.args[0] if exc.args else exc}") from None
        except (TypeError, ValueError, FileNotFoundError) as exc:
            raise type(exc)(f"{self.where}: config.{key}_kwargs for {name!r}: {exc}") from None


def _kwargs(cfg: Mapping[str, Any], key: str, owner: str, where: str) -> Dict[str, Any]:
    value = cfg.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: config.{key} must be a dict of {owner} parameters, got {type(value).__name__}")
    bad = [k for k in value if not isinstance(k, str)]
    if bad:
        raise ValueError(f"{where}: config.{key} keys must be parameter names, got {bad!r}")
    return dict(value)


_PFC_OPTIONS = {"blockwise": bool, "block_elements": int, "cache_cosine": bool, "fp16": bool,
                "matmul_dtype": ("float16", "bfloat16"), "nonfinite": ("raise", "nan")}


def _partial_fc_kwargs(cfg: Mapping[str, Any], where: str) -> Dict[str, Any]:
    """``config.partial_fc_kwargs``, checked: known names, a bool, a positive int or one of the named
    choices each."""
    options = _kwargs(cfg, "partial_fc_kwargs", "Partial FC", where)
    for name, value in options.items():
        kind = _PFC_OPTIONS.get(name)
        if kind is None:
            close = difflib.get_close_matches(name, _PFC_OPTIONS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"{where}: config.partial_fc_kwargs has no option {name!r}{hint}; "
                             f"options: {', '.join(_PFC_OPTIONS)}")
        if kind is bool and not isinstance(value, bool):
            raise ValueError(f"{where}: config.partial_fc_kwargs[{name!r}] must be True or False, got {value!r}")
        if kind is int and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{where}: config.partial_fc_kwargs[{name!r}] must be a positive int, got {value!r}")
        if isinstance(kind, tuple) and value not in kind:
            raise ValueError(f"{where}: config.partial_fc_kwargs[{name!r}] must be one of "
                             f"{', '.join(map(repr, kind))}, got {value!r}")
    return options


def plugin_spec(cfg: Mapping[str, Any], build: bool = True, recipe_keys: Optional[Iterable[str]] = None,
                where: Optional[str] = None) -> PluginSpec:
    """Validate the plugin keys of ``cfg``.

    Args:
        cfg: a merged config (or a recipe's own ``config``).
        build: also build the head and input module once, so invalid
            parameters are reported now with the key that holds them.
        recipe_keys: the keys the recipe itself set (default: ``cfg.recipe_keys`` when
            :func:`load_recipe` made ``cfg``, else every key), for :attr:`PluginSpec.unused`.
        where: the recipe file named in messages (default: ``cfg.recipe_path``).

    Raises:
        ValueError / KeyError / TypeError: the message names the config key.
    """
    where = where or cfg.get("recipe_path", "recipe")
    check_key_spelling(cfg, where)
    spec = PluginSpec(where=where)
    for key in ("loss", "input_module"):
        value = cfg.get(key)
        if value is not None and (not isinstance(value, str) or not value):
            raise ValueError(f"{where}: config.{key} must be a registered name (a str), got {value!r}")
    spec.loss, spec.input_module = cfg.get("loss"), cfg.get("input_module")
    spec.loss_kwargs = _kwargs(cfg, "loss_kwargs", "head", where)
    spec.input_module_kwargs = _kwargs(cfg, "input_module_kwargs", "input module", where)
    if spec.loss_kwargs and not spec.loss:
        raise ValueError(f"{where}: config.loss_kwargs is set but config.loss is not; name the head in config.loss")
    if spec.input_module_kwargs and not spec.input_module:
        raise ValueError(f"{where}: config.input_module_kwargs is set but config.input_module is not")
    steps = cfg.get("steps_per_epoch")
    if steps is not None:
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"{where}: config.steps_per_epoch must be a positive int, got {steps!r}")
        spec.steps_per_epoch = steps
    dim = cfg.get("embedding_size")
    if dim is not None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"{where}: config.embedding_size must be a positive int, got {dim!r}")
        given = spec.loss_kwargs.get("embedding_size", dim)
        if given != dim:
            raise ValueError(f"{where}: config.loss_kwargs['embedding_size'] = {given!r} differs from "
                             f"config.embedding_size = {dim}")
        spec.embedding_size = dim
    spec.partial_fc_kwargs = _partial_fc_kwargs(cfg, where)
    if spec.partial_fc_kwargs and not spec.loss:
        raise ValueError(f"{where}: config.partial_fc_kwargs is set but config.loss is not; the plugin's Partial FC "
                         "runs plugin heads (config.loss = 'arcface' is arcface_torch's ArcFace)")
    rate = cfg.get("sample_rate", 1.0)
    if not isinstance(rate, (int, float)) or isinstance(rate, bool) or not 0.0 < rate <= 1.0:
        raise ValueError(f"{where}: config.sample_rate must be in (0, 1], got {rate!r}")
    if spec.loss:
        own = set(recipe_keys if recipe_keys is not None else getattr(cfg, "recipe_keys", cfg))
        spec.unused = [f"config.{k} = {cfg[k]!r} is not used: config.loss = {spec.loss!r} replaces arcface_torch's "
                       "CombinedMarginLoss (the head's parameters go in config.loss_kwargs)"
                       for k in MARGIN_KEYS if k in own and k in cfg]
    if build:
        if spec.loss is not None:
            spec.build_head()
        if spec.input_module is not None:
            spec.build_input_module()
    return spec


def check_job_keys(cfg: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` naming the keys a training job needs but lacks."""
    missing = [k for k in REQUIRED_JOB_KEYS if k not in cfg]
    if missing:
        raise ValueError(f"{cfg.get('recipe_path', 'recipe')}: missing {', '.join('config.' + k for k in missing)} "
                         "(every arcface_torch job config sets them)")
    for key in ("num_classes", "num_image", "num_epoch"):
        v = cfg[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{cfg.get('recipe_path', 'recipe')}: config.{key} must be a positive int, got {v!r}")
