"""Make an unmodified arcface_torch checkout run on today's stack, inside this process only.

Nothing here edits the checkout. Each fix is applied to objects already
imported into the running interpreter:

- :func:`fix_lr_scheduler`: ``PolynomialLRWarmup`` passes ``verbose`` to the
  torch scheduler base, a TypeError since torch 2.7. Its base class is swapped
  for one that accepts and drops ``verbose``.
- :func:`ensure_mxnet`: when mxnet cannot be imported (numpy >= 1.24, Python
  3.12), the stand-in of :mod:`.mxnet_shim` is installed as ``sys.modules["mxnet"]``
  so ``dataset.py`` and ``eval/verification.py`` read ``.rec`` and ``.bin`` files.
- :func:`tolerate_second_init`: ``train_v2`` initialises torch.distributed when
  imported; when the plugin has already done so, that second call is skipped.
- :func:`fix_verification`: ``eval/verification.py``'s ``calculate_val`` calls
  ``interpolate.interp1d(far, thresholds, kind="slinear")`` on FAR values that
  repeat, which scipy >= 1.9 refuses; the verification callback of training
  then fails. Its ``interpolate`` is replaced by :func:`tolerant_interp1d`.
- :func:`ensure_torchvision`: the same for torchvision, missing or failing to import
  next to a CPU-only torch (:mod:`.torchvision_shim`).
- :func:`map_nccl_to_gloo`: ``train_v2`` asks for NCCL when imported; without CUDA,
  ``init_process_group`` then uses gloo.
- :func:`use_cpu` / :func:`cpu_only`: neutralise the hard-coded CUDA calls of the
  training flow (``.cuda()``, streams, ``set_device``, DDP ``device_ids``) for CPU
  smoke runs, for the rest of the process or within a block.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
import sys
import types
from types import ModuleType
from typing import Callable, Iterator, Optional

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.optim.lr_scheduler import _LRScheduler

from . import mxnet_shim, torchvision_shim

__all__ = ["fix_lr_scheduler", "fix_verification", "tolerant_interp1d", "ensure_mxnet", "ensure_torchvision",
           "tolerate_second_init", "map_nccl_to_gloo", "use_cpu", "cpu_only", "mxnet_status", "torchvision_status",
           "import_problem"]


class _DropVerbose(_LRScheduler):
    """Scheduler base accepting the ``verbose`` argument removed in torch 2.7."""

    def __init__(self, optimizer, last_epoch: int = -1, verbose=None):
        super().__init__(optimizer, last_epoch)


def _base_accepts_verbose() -> bool:
    return "verbose" in inspect.signature(_LRScheduler.__init__).parameters


def fix_lr_scheduler(lr_module: ModuleType) -> bool:
    """Rebase ``lr_module.PolynomialLRWarmup`` onto :class:`_DropVerbose` if needed.

    Returns:
        True if the class was (or already had been) rebased, False if this torch
        still accepts ``verbose`` and nothing was changed.
    """
    cls = getattr(lr_module, "PolynomialLRWarmup", None)
    if cls is None:
        raise AttributeError(f"{getattr(lr_module, '__file__', lr_module)} defines no PolynomialLRWarmup")
    if _DropVerbose in cls.__mro__:
        return True
    if _base_accepts_verbose():
        return False
    cls.__bases__ = tuple(_DropVerbose if b is _LRScheduler else b for b in cls.__bases__)
    return _DropVerbose in cls.__mro__


def tolerant_interp1d(x, y, kind="linear", **kwargs):
    """``scipy.interpolate.interp1d``, except that repeated ``x`` (refused by scipy >= 1.9
    for spline kinds) gives the piecewise-linear ``np.interp`` reading of the points."""
    x, y = np.asarray(x), np.asarray(y)
    if np.any(np.diff(np.sort(x)) == 0):
        order = np.argsort(x, kind="stable")
        return lambda v: np.interp(v, x[order], y[order])
    from scipy.interpolate import interp1d  # optional: heavy

    return interp1d(x, y, kind=kind, **kwargs)


def fix_verification(module: Optional[ModuleType]) -> bool:
    """Give arcface_torch's ``eval.verification`` a duplicate-tolerant ``interp1d``.

    Returns:
        True when the module was patched.
    """
    if module is None or not hasattr(module, "interpolate"):
        return False
    module.interpolate = types.SimpleNamespace(interp1d=tolerant_interp1d)
    return True


def import_problem(name: str) -> Optional[str]:
    """Import ``name``; on failure undo the partial import and return ``"Type: message"``.

    A missing package gives ``"ModuleNotFoundError: ..."``; an installed one that fails to
    import (mxnet on numpy >= 1.24: AttributeError; a torchvision built for another torch:
    RuntimeError) gives its own error.
    """
    try:
        importlib.import_module(name)
        return None
    except Exception as exc:
        for mod in [n for n in sys.modules if n == name or n.startswith(name + ".")]:
            del sys.modules[mod]
        return f"{type(exc).__name__}: {exc}"


def _status(name: str, shim_version: str) -> Optional[str]:
    mod = sys.modules.get(name)
    if mod is None:
        return None
    version = getattr(mod, "__version__", "?")
    return "lh2face stand-in" if version == shim_version else f"{name} {version}"


def mxnet_status() -> str:
    """``"mxnet 1.9.1"``, ``"lh2face stand-in"`` or ``"not importable (reason)"``; installs nothing."""
    status = _status("mxnet", mxnet_shim.SHIM_VERSION)
    if status is not None:
        return status
    reason = import_problem("mxnet")
    return f"mxnet {sys.modules['mxnet'].__version__}" if reason is None else f"not importable ({reason})"


def torchvision_status() -> Optional[str]:
    """What ``torchvision`` is in this process, or ``None`` if nothing imported it yet."""
    return _status("torchvision", torchvision_shim.SHIM_VERSION)


def _ensure(name: str, shim_version: str, build_shim: Callable[[], dict]) -> str:
    current = _status(name, shim_version)
    if current is not None:
        return current
    reason = import_problem(name)
    if reason is None:
        return f"{name} {sys.modules[name].__version__}"
    sys.modules.update(build_shim())
    return f"lh2face stand-in ({name} not importable: {reason})"


def ensure_mxnet() -> str:
    """Make ``import mxnet`` work: the real one if importable, else the stand-in.

    Returns:
        What ``mxnet`` now is, e.g. ``"mxnet 1.9.1"`` or
        ``"lh2face stand-in (mxnet not importable: ModuleNotFoundError: ...)"``.
    """
    return _ensure("mxnet", mxnet_shim.SHIM_VERSION, mxnet_shim.build_mxnet_shim)


def ensure_torchvision() -> str:
    """Make ``from torchvision import transforms`` work: the real one if importable, else the stand-in.

    Returns:
        ``"torchvision 0.x"`` or ``"lh2face stand-in (torchvision not importable: ...)"``.
    """
    return _ensure("torchvision", torchvision_shim.SHIM_VERSION, torchvision_shim.build_torchvision_shim)


def map_nccl_to_gloo() -> bool:
    """Without CUDA, make ``init_process_group("nccl", ...)`` use gloo (idempotent).

    Returns:
        True when the mapping is in place (no CUDA), False when CUDA is there and
        nothing was changed.
    """
    if torch.cuda.is_available():
        return False
    original = dist.init_process_group
    if getattr(original, "lh2face_gloo", False):
        return True

    @functools.wraps(original)
    def init_process_group(backend=None, *args, **kwargs):
        if isinstance(backend, str) and backend.lower() == "nccl":
            backend = "gloo"
        return original(backend, *args, **kwargs)

    init_process_group.lh2face_gloo = True
    dist.init_process_group = init_process_group
    return True


@contextlib.contextmanager
def tolerate_second_init() -> Iterator[None]:
    """Within the block, ``init_process_group`` returns at once if a group exists."""
    original = dist.init_process_group
    if not dist.is_initialized():
        yield
        return

    def init_process_group(*args, **kwargs):
        return None

    dist.init_process_group = init_process_group
    try:
        yield
    finally:
        dist.init_process_group = original


class _NullStream:
    """Stands in for ``torch.cuda.Stream`` on CPU: every method is a no-op."""

    def __init__(self, *args, **kwargs):
        pass

    def wait_stream(self, stream) -> None:
        pass

    def synchronize(self) -> None:
        pass


def _is_cuda_device(device) -> bool:
    if isinstance(device, int):
        return True
    if isinstance(device, str):
        return device.startswith("cuda")
    return isinstance(device, torch.device) and device.type == "cuda"


def use_cpu(sampler_module: Optional[ModuleType] = None) -> Callable[[], None]:
    """Run CUDA-only host code on the CPU from now on (for smoke runs and tests).

    Patches ``Tensor.cuda`` / ``Module.cuda`` (identity), ``Tensor.to`` (CUDA
    devices become the CPU), ``torch.cuda.set_device``,
    ``Stream``/``stream``/``current_stream`` (no-ops), and
    ``torch.nn.parallel.DistributedDataParallel`` (``device_ids`` dropped). With
    ``sampler_module`` (the host's ``utils.utils_distributed_sampler``) its seed
    broadcast uses the CPU.

    Returns:
        A function that undoes every patch.
    """
    tensor_to = torch.Tensor.to

    def to(self, *args, **kwargs):
        if args and _is_cuda_device(args[0]) and not isinstance(args[0], bool):
            args = ("cpu",) + args[1:]
        if _is_cuda_device(kwargs.get("device")):
            kwargs["device"] = "cpu"
        return tensor_to(self, *args, **kwargs)

    class CpuDDP(torch.nn.parallel.DistributedDataParallel):  # the class in place at this call
        def __init__(self, module, *args, device_ids=None, output_device=None, **kwargs):
            super().__init__(module, *args, **kwargs)

    patches = [
        (torch.Tensor, "cuda", lambda self, *a, **k: self),
        (torch.Tensor, "to", to),
        (nn.Module, "cuda", lambda self, *a, **k: self),
        (torch.cuda, "set_device", lambda *a, **k: None),
        (torch.cuda, "Stream", _NullStream),
        (torch.cuda, "stream", lambda *a, **k: contextlib.nullcontext()),
        (torch.cuda, "current_stream", lambda *a, **k: _NullStream()),
        (torch.nn.parallel, "DistributedDataParallel", CpuDDP),
    ]
    sync = getattr(sampler_module, "sync_random_seed", None)
    saved_defaults = sync.__defaults__ if sync is not None else None
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in patches]
    for obj, name, value in patches:
        setattr(obj, name, value)
    if sync is not None:
        sync.__defaults__ = (None, "cpu")

    def restore() -> None:
        for obj, name, value in saved:
            setattr(obj, name, value)
        if sync is not None:
            sync.__defaults__ = saved_defaults

    return restore


@contextlib.contextmanager
def cpu_only(sampler_module: Optional[ModuleType] = None) -> Iterator[None]:
    """:func:`use_cpu` within the block."""
    restore = use_cpu(sampler_module)
    try:
        yield
    finally:
        restore()
