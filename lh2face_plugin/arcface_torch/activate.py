"""Activation: point a running ``train_v2`` at the plugin, without editing the checkout.

``train_v2.main`` builds its parts through names bound at module level. Activation
rebinds them in the ``train_v2`` namespace (the module ``train_v2`` or, for
``python train_v2.py``, ``__main__``):

==================  ==========================================================
``PartialFC_V2``    the plugin's subclass (:mod:`.partial_fc`) when ``config.loss``
                    or ``config.input_module`` is set, else the checkout's own class
``CombinedMarginLoss``  builds ``config.loss`` with ``config.loss_kwargs``, else
                    the checkout's own class
``get_model``       wraps the backbone with ``config.input_module`` if set
``get_dataloader``  caps an epoch at ``config.steps_per_epoch`` if set
``get_config``      also accepts recipes outside ``configs/`` (``lh2face train``)
==================  ==========================================================

and applies :func:`.compat.fix_lr_scheduler` and :func:`.compat.fix_verification`. Main reads these names when it
runs, so rebinding them any time before (even during ``get_config``) takes effect.

The input module's own loss terms (the ``"render"`` module's ``L_reco``, ``L_FR^canon``,
``L_view``) reach the loss through pairing: ``get_model`` records the wrapped model, and
the ``PartialFC_V2`` built after it (as ``train_v2`` does) is paired with it
(:meth:`.partial_fc.PartialFC.pair_input_model`), so its loss adds the terms of each
training step, the backbone staying wrapped in DDP.

Two ways in:

1. ``lh2face train RECIPE`` / ``python -m lh2face_plugin.train RECIPE``
   (:mod:`.train`) imports ``train_v2``, activates, then calls ``main``.
2. The stock command ``torchrun train_v2.py configs/NAME`` with a recipe that
   imports this module: importing it activates the running trainer, and the
   recipe names its loss with :func:`set_loss`. :func:`set_loss` raises when no
   trainer was activated (another training script, a fork that renamed things),
   so a recipe meant for the plugin never trains ArcFace silently.
"""
from __future__ import annotations

import functools
import os
import sys
import weakref
from types import ModuleType
from typing import Any, Mapping, MutableMapping, Optional

from .compat import fix_lr_scheduler, fix_verification
from .config import AttrDict, is_loading_recipe, load_recipe, plugin_spec
from .partial_fc import partial_fc_class

__all__ = ["activate", "find_trainer", "is_active", "set_loss", "set_input_module", "new_config", "PluginNotActive"]

_ORIGINALS = "_lh2face_originals"


class PluginNotActive(RuntimeError):
    """A recipe asks for a plugin feature in a process where the plugin is not active."""


class _State:
    config: Optional[Mapping[str, Any]] = None   # where the factories read the plugin keys
    recipe_module: Optional[str] = None          # configs.<name> that imported this module (way 2)
    input_model: Optional[weakref.ref] = None    # the last model get_model wrapped that keeps loss terms


def _recipe_config() -> Mapping[str, Any]:
    if _State.config is not None:
        return _State.config
    module = sys.modules.get(_State.recipe_module or "")
    return getattr(module, "config", None) or {}


def _is_train_v2(mod: Optional[ModuleType]) -> bool:
    return (mod is not None and os.path.basename(getattr(mod, "__file__", "") or "") == "train_v2.py"
            and all(hasattr(mod, n) for n in ("main", "PartialFC_V2", "CombinedMarginLoss", "get_config")))


def find_trainer() -> Optional[ModuleType]:
    """The running ``train_v2`` namespace (``__main__`` or ``train_v2``), if any."""
    for name in ("__main__", "train_v2"):
        if _is_train_v2(sys.modules.get(name)):
            return sys.modules[name]
    return None


def is_active(trainer: Optional[ModuleType] = None) -> bool:
    trainer = trainer if trainer is not None else find_trainer()
    return trainer is not None and hasattr(trainer, _ORIGINALS)


def activate(trainer: ModuleType, config: Optional[Mapping[str, Any]] = None) -> None:
    """Rebind ``trainer``'s names to the plugin's versions (idempotent).

    Args:
        trainer: the ``train_v2`` module namespace.
        config: the recipe (merged config) the factories read; ``None`` keeps
            the one recorded before.
    """
    if config is not None:
        _State.config = config
    if is_active(trainer):
        return
    originals = {n: getattr(trainer, n) for n in ("PartialFC_V2", "CombinedMarginLoss", "get_model",
                                                   "get_dataloader", "get_config")}
    trainer.PartialFC_V2 = _partial_fc(originals["PartialFC_V2"])
    trainer.CombinedMarginLoss = _margin_loss(originals["CombinedMarginLoss"])
    trainer.get_model = _get_model(originals["get_model"])
    trainer.get_dataloader = _get_dataloader(originals["get_dataloader"])
    trainer.get_config = _get_config(originals["get_config"])
    lr_module = sys.modules.get("lr_scheduler")
    if lr_module is not None and hasattr(lr_module, "PolynomialLRWarmup"):
        fix_lr_scheduler(lr_module)
    fix_verification(sys.modules.get("eval.verification"))
    setattr(trainer, _ORIGINALS, originals)


def deactivate(trainer: ModuleType) -> None:
    """Undo :func:`activate` (used by tests)."""
    originals = trainer.__dict__.pop(_ORIGINALS, None)
    for name, value in (originals or {}).items():
        setattr(trainer, name, value)
    _State.config = None
    _State.recipe_module = None
    _State.input_model = None


def _partial_fc(original):
    plugin_class = partial_fc_class(sys.modules.get(original.__module__))

    @functools.wraps(original)
    def PartialFC_V2(margin_loss, embedding_size, num_classes, sample_rate=1.0, fp16=False):
        spec = plugin_spec(_recipe_config(), build=False)
        if spec.loss is None and spec.input_module is None:
            return original(margin_loss, embedding_size, num_classes, sample_rate, fp16)
        pfc = plugin_class(margin_loss, embedding_size, num_classes, sample_rate, fp16)
        model = _State.input_model() if _State.input_model is not None else None
        if model is not None:
            pfc.pair_input_model(model)
        return pfc

    PartialFC_V2.plugin_class = plugin_class
    return PartialFC_V2


def _margin_loss(original):
    @functools.wraps(original)
    def CombinedMarginLoss(s, m1, m2, m3, interclass_filtering_threshold=0):
        spec = plugin_spec(_recipe_config(), build=False)
        if spec.loss is None:
            return original(s, m1, m2, m3, interclass_filtering_threshold)
        return spec.build_head()

    return CombinedMarginLoss


def _get_model(original):
    @functools.wraps(original)
    def get_model(name, **kwargs):
        backbone = original(name, **kwargs)
        spec = plugin_spec(_recipe_config(), build=False)
        _State.input_model = None
        if spec.input_module is None:
            return backbone
        module = spec.build_input_module()
        if not hasattr(module, "wrap"):
            raise TypeError(f"input module {spec.input_module!r} has no wrap(backbone) method")
        model = module.wrap(backbone)
        if callable(getattr(model, "pop_pending", None)):
            _State.input_model = weakref.ref(model)
        return model

    return get_model


class _StepCap:
    """Iterates at most ``steps`` batches of ``loader`` per epoch."""

    def __init__(self, loader, steps: int):
        self.loader, self.steps, self.epoch = loader, steps, 0

    def __iter__(self):
        sampler = getattr(self.loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(self.epoch)
        self.epoch += 1
        for i, batch in enumerate(self.loader):
            if i >= self.steps:
                break
            yield batch

    def __len__(self):
        return self.steps

    def __getattr__(self, name):
        return getattr(self.loader, name)


def _get_dataloader(original):
    @functools.wraps(original)
    def get_dataloader(*args, **kwargs):
        loader = original(*args, **kwargs)
        steps = plugin_spec(_recipe_config(), build=False).steps_per_epoch
        return loader if steps is None else _StepCap(loader, steps)

    return get_dataloader


def _get_config(original):
    @functools.wraps(original)
    def get_config(config_file: str):
        cfg = _State.config
        if cfg is not None and os.path.abspath(cfg.get("recipe_path", "")) == os.path.abspath(config_file):
            return cfg
        if config_file.startswith("configs/") and not os.path.isabs(config_file):
            return original(config_file)
        cfg = load_recipe(config_file, os.getcwd())
        _State.config = cfg
        return cfg

    return get_config


def new_config() -> AttrDict:
    """An empty recipe ``config`` (attribute access, merged over ``configs/base`` on load)."""
    return AttrDict()


def _require_active(config: MutableMapping[str, Any], key: str) -> None:
    if is_loading_recipe():
        return  # read by the plugin's own loader (lh2face train / doctor), which activates itself
    trainer = find_trainer()
    if trainer is None:
        raise PluginNotActive(
            f"config.{key} = {config.get(key)!r} needs lh2face_plugin, but no arcface_torch train_v2 is running in "
            "this process, so the setting would be ignored and the run would train ArcFace. Start it with "
            "`lh2face train RECIPE` (or `torchrun ... -m lh2face_plugin.train RECIPE`), or with "
            "`torchrun ... train_v2.py configs/NAME` from the arcface_torch folder."
        )
    activate(trainer, config)


def set_loss(config: MutableMapping[str, Any], name: str, **kwargs: Any) -> None:
    """In a recipe: train with the registered head ``name`` and parameters ``kwargs``.

    Sets ``config.loss`` and ``config.loss_kwargs`` and makes sure the plugin is
    active in this process (see the module docstring).

    Raises:
        PluginNotActive: no ``train_v2`` runs here and the plugin's loader is not reading the recipe.
        KeyError / TypeError / ValueError: unknown head or invalid parameters.
    """
    config["loss"], config["loss_kwargs"] = name, dict(kwargs)
    plugin_spec(config)
    _require_active(config, "loss")


def set_input_module(config: MutableMapping[str, Any], name: str, **kwargs: Any) -> None:
    """In a recipe: wrap the backbone with the registered input module ``name``."""
    config["input_module"], config["input_module_kwargs"] = name, dict(kwargs)
    plugin_spec(config)
    _require_active(config, "input_module")


def _activate_running_trainer() -> None:
    """Import-time hook for way 2: activate the trainer and note the importing recipe."""
    trainer = find_trainer()
    if trainer is None or is_loading_recipe():
        return
    recipes = [n for n in sys.modules if n.startswith("configs.") and n != "configs.base"]
    if recipes:
        _State.recipe_module = recipes[-1]
    activate(trainer)


_activate_running_trainer()
