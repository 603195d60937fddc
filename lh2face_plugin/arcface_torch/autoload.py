"""The start-up hook's work inside arcface_torch's stock ``train_v2.py``.

``pip install lh2face-plugin`` puts ``lh2face_plugin_autoload.pth`` (and, for Python
versions that run PEP 829 start-up entry points instead of ``.pth`` import lines,
``lh2face_plugin_autoload.start``) into site-packages. Both call the top-level module
``_lh2face_autoload`` at interpreter start-up, which imports nothing and returns at once
unless the script being run is ``train_v2.py`` next to ``partial_fc_v2.py`` (an
arcface_torch checkout; torchrun's workers included). There it installs an import
hook that calls this module when the trainer imports:

- ``mxnet`` / ``torchvision``: :func:`serve` gives the real package when it imports, else
  the plugin's stand-in (:mod:`.mxnet_shim`, :mod:`.torchvision_shim`), so ``dataset.py``
  gets past its imports on numpy >= 1.24 or next to a CPU-only torch;
- ``utils.utils_config`` (the host's config loader): :func:`wrap_config_loader` maps
  ``init_process_group("nccl")`` to gloo when CUDA is absent and wraps ``get_config``.

When ``train_v2.main`` calls ``get_config``, the wrapper (:func:`read_stock_recipe`)
applies the in-process fixes of :mod:`.compat` (the scheduler's ``verbose``, the
verification ``interp1d``; the CUDA calls when there is no CUDA), checks the recipe's
keys (a key spelled close to a plugin key is an error with "did you mean"), and, when the
recipe sets a plugin key (``config.loss``, ``config.loss_kwargs``, ``config.input_module``,
...), attaches an :class:`~.activate.Activation` to the trainer and says so in one line on
rank 0. A recipe without plugin keys trains exactly as arcface_torch does.

``LH2FACE_AUTOLOAD=0`` keeps the plugin from activating; a recipe that sets a plugin key
then stops with :class:`~.activate.PluginNotActive` instead of training ArcFace (a recipe
that calls ``set_loss`` still activates it explicitly). The stand-ins and the CPU mapping
stay, since without them the command cannot start at all.
"""
from __future__ import annotations

import contextlib
import functools
import glob
import importlib.util
import os
import site
import sys
from types import ModuleType
from typing import Any, Dict, List, Mapping, Optional

from .config import check_key_spelling, loading_recipe, plugin_spec, sets_plugin_key

__all__ = ["ENV_VAR", "PTH_NAME", "START_NAME", "GATE_MODULE", "enabled", "serve", "wrap_config_loader",
           "read_stock_recipe", "installed_files"]

ENV_VAR = "LH2FACE_AUTOLOAD"
PTH_NAME = "lh2face_plugin_autoload.pth"
START_NAME = "lh2face_plugin_autoload.start"
GATE_MODULE = "_lh2face_autoload"
_PREFIX = "lh2face_plugin:"


def enabled(environ: Optional[Mapping[str, str]] = None) -> bool:
    """False when ``LH2FACE_AUTOLOAD`` is ``0`` (or ``false``, ``no``, ``off``)."""
    value = (os.environ if environ is None else environ).get(ENV_VAR, "1")
    return value.strip().lower() not in ("0", "false", "no", "off")


def installed_files() -> List[str]:
    """The hook's start-up files in this interpreter's site-packages folders."""
    folders = list(site.getsitepackages()) + [site.getusersitepackages()]
    return sorted({p for d in folders for p in glob.glob(os.path.join(d, "lh2face_plugin_autoload.*"))})


def serve(name: str) -> ModuleType:
    """``mxnet`` or ``torchvision`` for the trainer: the real package if it imports, else the stand-in."""
    from . import compat  # lazy: start-up (compat imports torch)

    {"mxnet": compat.ensure_mxnet, "torchvision": compat.ensure_torchvision}[name]()
    return sys.modules[name]


def wrap_config_loader(module: ModuleType) -> None:
    """Called once the host's ``utils.utils_config`` is imported, before ``train_v2`` binds
    ``get_config`` and initialises its process group."""
    from .compat import map_nccl_to_gloo  # lazy: start-up (compat imports torch)

    map_nccl_to_gloo()
    original = getattr(module, "get_config", None)
    if original is None or getattr(original, "lh2face_stock_reader", False):
        return

    @functools.wraps(original)
    def get_config(config_file):
        return read_stock_recipe(original, config_file)

    get_config.lh2face_stock_reader = True
    module.get_config = get_config


def _rank() -> int:
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def _say(line: str) -> None:
    if _rank() == 0:
        print(f"{_PREFIX} {line}", file=sys.stderr, flush=True)


def _recipe_module(config_file: str) -> Optional[ModuleType]:
    stem = os.path.splitext(os.path.basename(str(config_file)))[0]
    return sys.modules.get(f"configs.{stem}")


def _apply_compat() -> List[str]:
    """The in-process fixes every stock run on today's stack needs; returns what they did."""
    import torch  # lazy: start-up

    from .compat import fix_lr_scheduler, fix_verification, mxnet_status, torchvision_status, use_cpu  # lazy: start-up

    notes = []
    lr_module = sys.modules.get("lr_scheduler")
    if lr_module is not None and hasattr(lr_module, "PolynomialLRWarmup"):
        fix_lr_scheduler(lr_module)
    fix_verification(sys.modules.get("eval.verification"))
    for name, status in (("mxnet", mxnet_status() if "mxnet" in sys.modules else None),
                         ("torchvision", torchvision_status())):
        if status == "lh2face stand-in":
            notes.append(f"{name}: stand-in")
    if not torch.cuda.is_available():
        use_cpu(sys.modules.get("utils.utils_distributed_sampler"))
        notes.append("no CUDA: gloo on the CPU")
    return notes


def read_stock_recipe(original, config_file: str):
    """``get_config`` of the stock command with the plugin: see the module docstring.

    Raises:
        PluginNotActive: the recipe sets a plugin key and the plugin cannot activate here
            (``LH2FACE_AUTOLOAD=0``, or no ``train_v2`` namespace to attach to).
        ValueError / KeyError / TypeError: invalid plugin keys (the message names the key).
    """
    from .activate import Activation, PluginNotActive, activation_of, find_trainer  # lazy: start-up

    on = enabled()
    with loading_recipe(str(config_file)) if on else contextlib.nullcontext():
        cfg = original(config_file)
    notes = _apply_compat()
    recipe = _recipe_module(config_file)
    where = getattr(recipe, "__file__", None) or str(config_file)
    own = list(getattr(recipe, "config", None) or {}) if recipe is not None else None
    trainer = find_trainer()
    current = activation_of(trainer)
    if not on:
        check_key_spelling(cfg, where)
        if current is None and sets_plugin_key(cfg):
            keys = ", ".join(f"config.{k} = {cfg[k]!r}" for k in ("loss", "input_module") if cfg.get(k))
            raise PluginNotActive(
                f"{where}: {keys or 'a plugin key'} needs lh2face_plugin, and {ENV_VAR}=0 keeps it from activating, "
                f"so this run would train ArcFace. Unset {ENV_VAR} to train with the plugin, call set_loss(config, ...) "
                "in the recipe, or remove the plugin keys to train arcface_torch's own loss.")
        return cfg
    spec = plugin_spec(cfg, build=False, recipe_keys=own, where=where)
    if not spec.active:
        return cfg
    if trainer is None:
        raise PluginNotActive(f"{where}: config.loss / config.input_module need lh2face_plugin, but no arcface_torch "
                              "train_v2 namespace was found in this process to activate it in.")
    act = current.configure(cfg, spec) if current is not None else Activation(cfg, spec=spec, source="start-up hook")
    act.build().attach(trainer)
    extra = f" [{'; '.join(notes)}]" if notes else ""
    _say(f"{act.describe()} (start-up hook){extra}. {ENV_VAR}=0 turns it off.")
    for line in spec.unused:
        _say(line)
    return cfg


def diagnose(environ: Optional[Mapping[str, str]] = None) -> Dict[str, Any]:
    """For ``lh2face doctor``: the installed start-up files, whether the gate imports, and the variable."""
    files = installed_files()
    return {"files": files, "gate": importlib.util.find_spec(GATE_MODULE) is not None,
            "enabled": enabled(environ), "pth": any(f.endswith(".pth") for f in files),
            "start": any(f.endswith(".start") for f in files)}
