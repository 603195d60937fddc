"""Activation: point a running ``train_v2`` at the plugin, without editing the checkout.

One :class:`Activation` holds the plugin's part of the recipe, checked once
(:class:`~.config.PluginSpec`), and the parts built from it once (the head, the
input module). :meth:`Activation.attach` stores it on the ``train_v2`` namespace
(the module ``train_v2`` or, for ``python train_v2.py``, ``__main__``) as
``lh2face_activation`` and rebinds the names ``train_v2.main`` builds its parts with:

==================  ==========================================================
``PartialFC_V2``    the plugin's subclass (:mod:`.partial_fc`) when ``config.loss``
                    or ``config.input_module`` is set, else the checkout's own class
``CombinedMarginLoss``  the head ``config.loss`` names, else the checkout's own class
``get_model``       wraps the backbone with ``config.input_module`` if set, and records how
                    (:mod:`.input_record`: ``lh2face eval`` rebuilds the saved model from it)
``get_dataloader``  gives the loader the one error path of :func:`.loader.guard_loader` (a bad
                    record ends the run, named) and caps an epoch at ``config.steps_per_epoch``
``get_config``      also accepts recipes outside ``configs/`` (``lh2face train``)
``CallBackLogging`` also logs the head's loss components (:mod:`.term_logging`)
==================  ==========================================================

The rebound factories read the activation attached to their trainer when they are
called; :meth:`Activation.detach` restores the names and removes it. It also applies
:func:`.compat.fix_lr_scheduler` and :func:`.compat.fix_verification`.

The input module's own loss terms (the ``"render"`` module's ``L_reco``, ``L_FR^canon``,
``L_view``) reach the loss through pairing: the wrapped model ``get_model`` returns and
the Partial FC ``PartialFC_V2`` returns are paired
(:meth:`.partial_fc.PartialFC.pair_input_model`) as soon as both exist, whichever is
built first, so the loss adds the terms of each training step.

Three ways in:

1. ``lh2face train RECIPE`` / ``python -m lh2face_plugin.train RECIPE`` (:mod:`.train`)
   imports ``train_v2``, attaches an activation, then calls ``main``.
2. The stock command ``torchrun train_v2.py configs/NAME`` with a recipe that only sets
   ``config.loss`` (and friends): the start-up hook (:mod:`.autoload`) attaches one when
   ``get_config`` returns the merged config.
3. The same command with a recipe that calls :func:`set_loss` / :func:`set_input_module`
   (the explicit route, also without the hook). They raise :class:`PluginNotActive` when
   no ``train_v2`` runs in the process, so a recipe meant for the plugin never trains
   ArcFace silently.

Importing this module changes nothing.
"""
from __future__ import annotations

import functools
import os
import sys
import weakref
from types import ModuleType
from typing import Any, Callable, Dict, Mapping, MutableMapping, Optional

from .compat import fix_lr_scheduler, fix_verification
from .config import AttrDict, PluginSpec, is_loading_recipe, load_recipe, plugin_spec
from .input_record import write_record
from .loader import guard_loader
from .term_logging import term_logging

__all__ = ["Activation", "activate", "activation_of", "deactivate", "find_trainer", "is_active", "set_loss",
           "set_input_module", "new_config", "PluginNotActive", "ATTRIBUTE"]

ATTRIBUTE = "lh2face_activation"
_FACTORIES = ("PartialFC_V2", "CombinedMarginLoss", "get_model", "get_dataloader", "get_config", "CallBackLogging")


class PluginNotActive(RuntimeError):
    """A recipe asks for a plugin feature in a process where the plugin is not active."""


def _is_train_v2(mod: Optional[ModuleType]) -> bool:
    return (mod is not None and os.path.basename(getattr(mod, "__file__", "") or "") == "train_v2.py"
            and all(hasattr(mod, n) for n in ("main", "PartialFC_V2", "CombinedMarginLoss", "get_config")))


def find_trainer() -> Optional[ModuleType]:
    """The running ``train_v2`` namespace (``__main__`` or ``train_v2``), if any."""
    for name in ("__main__", "train_v2"):
        if _is_train_v2(sys.modules.get(name)):
            return sys.modules[name]
    return None


def activation_of(trainer: Optional[ModuleType]) -> Optional["Activation"]:
    """The activation attached to ``trainer``, if any."""
    return None if trainer is None else trainer.__dict__.get(ATTRIBUTE)


def is_active(trainer: Optional[ModuleType] = None) -> bool:
    return activation_of(trainer if trainer is not None else find_trainer()) is not None


class Activation:
    """The plugin inside one ``train_v2``: the checked recipe keys and the parts built from them.

    Args:
        config: the recipe (merged config, or a recipe's own ``config``) the factories read.
        spec: ``config``'s plugin keys, already checked (default: checked here, once).
        source: how the plugin was activated, for messages (``"lh2face train"``,
            ``"start-up hook"``, ``"set_loss"``).

    Attributes:
        config, spec, source: as given. trainer: the namespace it is attached to, or ``None``.
    """

    def __init__(self, config: Mapping[str, Any], *, spec: Optional[PluginSpec] = None, source: str = "activate"):
        self.source = source
        self.trainer: Optional[ModuleType] = None
        self._originals: Dict[str, Any] = {}
        self._pfc: Optional[weakref.ref] = None
        self._model: Optional[weakref.ref] = None
        self.configure(config, spec)

    def configure(self, config: Mapping[str, Any], spec: Optional[PluginSpec] = None) -> "Activation":
        """Read ``config`` from now on (checked once here unless ``spec`` is given); parts built
        for an earlier config are dropped."""
        self.spec = spec if spec is not None else plugin_spec(config, build=False)
        self.config = config
        self._head = self._input_module = None
        return self

    @property
    def head(self):
        """The head ``config.loss`` names, built on first use (``None`` without ``config.loss``)."""
        if self._head is None and self.spec.loss is not None:
            self._head = self.spec.build_head()
        return self._head

    @property
    def input_module(self):
        """The input module ``config.input_module`` names, built on first use."""
        if self._input_module is None and self.spec.input_module is not None:
            self._input_module = self.spec.build_input_module()
        return self._input_module

    def build(self) -> "Activation":
        """Build the parts now, so invalid parameters are reported before training starts."""
        self.head, self.input_module  # noqa: B018
        return self

    def describe(self) -> str:
        """What the plugin does in this run, in one line."""
        parts = []
        if self.spec.loss:
            parts.append(f"loss {self.spec.describe_loss(self.head)}")
        if self.spec.input_module:
            parts.append(f"input module {self.spec.input_module} {self.spec.input_module_kwargs}")
        if self.spec.steps_per_epoch:
            parts.append(f"{self.spec.steps_per_epoch} steps per epoch")
        return ", ".join(parts) or "nothing (no plugin key set)"

    # -- the trainer ------------------------------------------------------------------------------

    def attach(self, trainer: ModuleType) -> "Activation":
        """Rebind ``trainer``'s factories to read this activation and store it on ``trainer``."""
        current = activation_of(trainer)
        if current is self:
            return self
        if current is not None:
            raise RuntimeError(f"{trainer.__name__} already has an lh2face_plugin activation "
                               f"({current.source}); detach it first")
        # the start-up hook imports this module in every stock run; partial_fc imports torch._dynamo (about 1 s)
        from .partial_fc import partial_fc_class  # lazy: start-up

        self._originals = {n: getattr(trainer, n) for n in _FACTORIES if hasattr(trainer, n)}
        rebind: Dict[str, Callable[[ModuleType, Any], Any]] = {
            "PartialFC_V2": lambda t, o: _partial_fc(t, o, partial_fc_class(sys.modules.get(o.__module__))),
            "CombinedMarginLoss": _margin_loss, "get_model": _get_model, "get_dataloader": _get_dataloader,
            "get_config": _get_config,
            "CallBackLogging": lambda t, o: term_logging(o, functools.partial(activation_of, t))}
        for name, original in self._originals.items():
            setattr(trainer, name, rebind[name](trainer, original))
        lr_module = sys.modules.get("lr_scheduler")
        if lr_module is not None and hasattr(lr_module, "PolynomialLRWarmup"):
            fix_lr_scheduler(lr_module)
        fix_verification(sys.modules.get("eval.verification"))
        setattr(trainer, ATTRIBUTE, self)
        self.trainer = trainer
        return self

    def detach(self) -> None:
        """Restore the trainer's own names and remove this activation from it."""
        if self.trainer is None:
            return
        for name, value in self._originals.items():
            setattr(self.trainer, name, value)
        self.trainer.__dict__.pop(ATTRIBUTE, None)
        self.trainer, self._originals = None, {}

    # -- pairing the wrapped model with the Partial FC -------------------------------------------

    def adopt_model(self, model) -> None:
        if callable(getattr(model, "pop_pending", None)):
            self._model = weakref.ref(model)
            self._pair()

    def adopt_partial_fc(self, pfc) -> None:
        self._pfc = weakref.ref(pfc)
        self._pair()

    @property
    def partial_fc(self):
        """The last Partial FC the trainer built, if still alive."""
        return self._pfc() if self._pfc is not None else None

    def _pair(self) -> None:
        model = self._model() if self._model is not None else None
        pfc = self.partial_fc
        if model is not None and pfc is not None:
            pfc.pair_input_model(model)


def activate(trainer: ModuleType, config: Optional[Mapping[str, Any]] = None, *, source: str = "activate",
             ) -> Activation:
    """Attach an activation reading ``config`` to ``trainer`` (idempotent).

    Args:
        trainer: the ``train_v2`` module namespace.
        config: the recipe (merged config) the factories read; ``None`` keeps the
            one the trainer's activation has (an empty one for a new activation).

    Returns:
        The trainer's activation.
    """
    current = activation_of(trainer)
    if current is None:
        return Activation(config if config is not None else {}, source=source).attach(trainer)
    if config is not None and config is not current.config:
        current.configure(config)
    return current


def deactivate(trainer: ModuleType) -> None:
    """Undo :func:`activate` (used by tests)."""
    current = activation_of(trainer)
    if current is not None:
        current.detach()


def _partial_fc(trainer: ModuleType, original, plugin_class: type):
    @functools.wraps(original)
    def PartialFC_V2(margin_loss, embedding_size, num_classes, sample_rate=1.0, fp16=False):
        act = activation_of(trainer)
        if act is None or (act.spec.loss is None and act.spec.input_module is None):
            return original(margin_loss, embedding_size, num_classes, sample_rate, fp16)
        options = dict(act.spec.partial_fc_kwargs)
        fp16 = options.pop("fp16", fp16)
        if act.config.get("fp16"):   # train_v2 then scales the loss with a GradScaler: a NaN step is skipped
            options.setdefault("nonfinite", "nan")
        pfc = plugin_class(margin_loss, embedding_size, num_classes, sample_rate, fp16, **options)
        act.adopt_partial_fc(pfc)
        return pfc

    PartialFC_V2.plugin_class = plugin_class
    return PartialFC_V2


def _margin_loss(trainer: ModuleType, original):
    @functools.wraps(original)
    def CombinedMarginLoss(s, m1, m2, m3, interclass_filtering_threshold=0):
        act = activation_of(trainer)
        if act is None or act.spec.loss is None:
            return original(s, m1, m2, m3, interclass_filtering_threshold)
        return act.head

    return CombinedMarginLoss


def _get_model(trainer: ModuleType, original):
    @functools.wraps(original)
    def get_model(name, **kwargs):
        backbone = original(name, **kwargs)
        act = activation_of(trainer)
        if act is None or act.spec.input_module is None:
            return backbone
        module = act.input_module
        if not hasattr(module, "wrap"):
            raise TypeError(f"input module {act.spec.input_module!r} has no wrap(backbone) method")
        model = module.wrap(backbone)
        act.adopt_model(model)

        write_record(act.config.get("output"), act.spec.input_module, act.spec.input_module_kwargs, name, kwargs)
        return model

    return get_model


class _StepCap:
    """Iterates at most ``steps`` batches of ``loader`` per epoch; an epoch cut short ends the loader's
    prefetch thread and workers (:func:`.loader.guard_loader`'s ``end_epoch``)."""

    def __init__(self, loader, steps: int):
        self.loader, self.steps, self.epoch = loader, steps, 0

    def __iter__(self):
        sampler = getattr(self.loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(self.epoch)
        self.epoch += 1
        for i, batch in enumerate(self.loader):
            if i >= self.steps:
                getattr(self.loader, "end_epoch", lambda: None)()
                break
            yield batch

    def __len__(self):
        return self.steps

    def __getattr__(self, name):
        return getattr(self.loader, name)


def _get_dataloader(trainer: ModuleType, original):
    @functools.wraps(original)
    def get_dataloader(*args, **kwargs):
        loader = guard_loader(original(*args, **kwargs))
        act = activation_of(trainer)
        steps = act.spec.steps_per_epoch if act is not None else None
        return loader if steps is None else _StepCap(loader, steps)

    return get_dataloader


def _get_config(trainer: ModuleType, original):
    @functools.wraps(original)
    def get_config(config_file: str):
        act = activation_of(trainer)
        cfg = act.config if act is not None else None
        if cfg and os.path.abspath(cfg.get("recipe_path", "")) == os.path.abspath(config_file):
            return cfg
        if config_file.startswith("configs/") and not os.path.isabs(config_file):
            return original(config_file)
        cfg = load_recipe(config_file, os.getcwd())
        if act is not None:
            act.configure(cfg)
        return cfg

    return get_config


def new_config() -> AttrDict:
    """An empty recipe ``config`` (attribute access, merged over ``configs/base`` on load)."""
    return AttrDict()


def _require_active(config: MutableMapping[str, Any], key: str) -> None:
    if is_loading_recipe():
        return  # the loader reading this recipe (lh2face train / doctor / the start-up hook) checks and activates
    trainer = find_trainer()
    if trainer is None:
        raise PluginNotActive(
            f"config.{key} = {config.get(key)!r} needs lh2face_plugin, but no arcface_torch train_v2 is running in "
            "this process, so the setting would be ignored and the run would train ArcFace. Start it with "
            "`lh2face train RECIPE` (or `torchrun ... -m lh2face_plugin.train RECIPE`), or with "
            "`torchrun ... train_v2.py configs/NAME` from the arcface_torch folder."
        )
    current = activation_of(trainer)
    if current is None:
        Activation(config, source="set_loss").build().attach(trainer)
    else:
        current.configure(config).build()


def set_loss(config: MutableMapping[str, Any], name: str, **kwargs: Any) -> None:
    """In a recipe: train with the registered head ``name`` and parameters ``kwargs``.

    Sets ``config.loss`` and ``config.loss_kwargs`` and makes sure the plugin is
    active in this process (see the module docstring).

    Raises:
        PluginNotActive: no ``train_v2`` runs here and no loader of the plugin reads the recipe.
        KeyError / TypeError / ValueError: unknown head or invalid parameters.
    """
    config["loss"], config["loss_kwargs"] = name, dict(kwargs)
    _require_active(config, "loss")


def set_input_module(config: MutableMapping[str, Any], name: str, **kwargs: Any) -> None:
    """In a recipe: wrap the backbone with the registered input module ``name``."""
    config["input_module"], config["input_module_kwargs"] = name, dict(kwargs)
    _require_active(config, "input_module")
