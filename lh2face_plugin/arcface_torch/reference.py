"""Run arcface_torch's own evaluation code in this process, on numpy 2 and without menpo.

The reference side of ``lh2face eval --reference`` (see :mod:`lh2face_plugin.eval`). Inside
:func:`compat` (undone on exit): the checkout is on ``sys.path``; ``np.int``,
``np.float``, ``np.bool`` and ``np.object`` are the builtins they once aliased; a stub
``menpo.visualize.viewmatplotlib`` offers ``sample_colours_from_colourmap``; on a machine
without CUDA, ``Tensor.cuda`` and ``Module.cuda`` return ``self``. mxnet is never needed:
:func:`load_functions` skips its imports. :func:`verification_functions` also lets
``calculate_val`` run on scipy >= 1.9 (see :func:`tolerant_interp1d`). The host's scripts still need their own
requirements (scikit-learn, pandas, prettytable, scikit-image, OpenCV).
"""
from __future__ import annotations

import ast
import os
import sys
import types
import warnings
from contextlib import contextmanager
from typing import Dict, Iterator

import numpy as np
import torch

from .compat import tolerant_interp1d
from .locate import locate_checkout

_ALIASES = {"int": int, "float": float, "bool": bool, "object": object}


def _menpo_stub() -> Dict[str, types.ModuleType]:
    def sample_colours_from_colourmap(n_colours, colour_map):
        from matplotlib import colormaps  # optional: heavy (only when the host's script draws)

        cmap = colormaps[colour_map]
        return [cmap(i / max(n_colours - 1, 1))[:3] for i in range(n_colours)]

    mods = {n: types.ModuleType(n) for n in ("menpo", "menpo.visualize", "menpo.visualize.viewmatplotlib")}
    mods["menpo.visualize.viewmatplotlib"].sample_colours_from_colourmap = sample_colours_from_colourmap
    mods["menpo"].visualize = mods["menpo.visualize"]
    mods["menpo.visualize"].viewmatplotlib = mods["menpo.visualize.viewmatplotlib"]
    return mods


def _check_root(root: str) -> str:
    return locate_checkout(root).root        # the one place that finds and checks a checkout


@contextmanager
def compat(root: str) -> Iterator[str]:
    """Context in which arcface_torch's eval code imports and runs; yields the checkout path."""
    root = _check_root(root)
    saved_path, saved_argv = list(sys.path), list(sys.argv)
    added = [n for n in _ALIASES if n not in np.__dict__]
    stubs = {n: m for n, m in _menpo_stub().items() if n not in sys.modules}
    cuda = None if torch.cuda.is_available() else (torch.Tensor.cuda, torch.nn.Module.cuda)
    sys.path.insert(0, root)
    for n in added:
        setattr(np, n, _ALIASES[n])
    sys.modules.update(stubs)
    if cuda:
        torch.Tensor.cuda = lambda self, *a, **k: self
        torch.nn.Module.cuda = lambda self, *a, **k: self
    try:
        with warnings.catch_warnings():
            yield root
    finally:
        sys.path[:], sys.argv[:] = saved_path, saved_argv
        for n in added:
            delattr(np, n)
        for n in stubs:
            sys.modules.pop(n, None)
        if cuda:
            torch.Tensor.cuda, torch.nn.Module.cuda = cuda


def load_functions(root: str, relpath: str) -> Dict[str, object]:
    """Imports, functions and classes of a host script, without running its top level.

    Example: ``load_functions(root, "eval/verification.py")["evaluate"]``. Call the
    returned functions inside ``with compat(root):``.
    """
    path = os.path.join(_check_root(root), relpath)
    with open(path) as f:
        tree = ast.parse(f.read(), path)

    def keep(node) -> bool:
        if isinstance(node, ast.Import):
            return not any(a.name.split(".")[0] == "mxnet" for a in node.names)
        if isinstance(node, ast.ImportFrom):
            return (node.module or "").split(".")[0] != "mxnet"
        return isinstance(node, (ast.FunctionDef, ast.ClassDef))

    tree.body = [n for n in tree.body if keep(n)]
    ns: Dict[str, object] = {"__name__": "arcface_torch_reference", "__file__": path}
    with compat(root):
        exec(compile(tree, path, "exec"), ns)
    return ns


def verification_functions(root: str) -> Dict[str, object]:
    """Functions of ``eval/verification.py`` (``evaluate``, ``test``, ``calculate_roc`` ...),
    with its ``interpolate.interp1d`` replaced by :func:`tolerant_interp1d`."""
    ns = load_functions(root, os.path.join("eval", "verification.py"))
    ns["interpolate"] = types.SimpleNamespace(interp1d=tolerant_interp1d)
    return ns


def run_eval_ijbc(root: str, model: str, network: str, image_path: str, target: str, result_dir: str,
                  batch_size: int = 128, job: str = "reference") -> Dict[str, object]:
    """Run ``eval_ijbc.py`` itself, in this process, and collect its numbers.

    It writes ``result_dir/job/<target>.npy`` (scores) and ``.pdf`` as it always does and
    prints its table. Its features are hard-wired to 512 dimensions.

    Returns:
        dict ``scores``, ``labels``, ``fpr``, ``tpr`` (the script's ROC, increasing FPR),
        ``table`` (its printed table).
    """
    path = os.path.join(_check_root(root), "eval_ijbc.py")
    for p in (model, image_path):
        if not os.path.exists(p):
            raise FileNotFoundError(f"reference run: {p} does not exist")
    with open(path) as f:
        code = compile(f.read(), path, "exec")
    ns: Dict[str, object] = {"__name__": "__main__", "__file__": path}
    with compat(root):
        sys.argv[:] = [path, "--model-prefix", model, "--image-path", image_path, "--result-dir", result_dir,
                       "--batch-size", str(batch_size), "--network", network, "--job", job, "--target", target]
        try:
            exec(code, ns)
        except ModuleNotFoundError as exc:
            raise RuntimeError(f"arcface_torch's eval_ijbc.py needs {exc.name} (its own requirements: scikit-learn, "
                               f"pandas, prettytable, scikit-image, opencv-python)") from None
    return {"scores": np.asarray(ns["score"]), "labels": np.asarray(ns["label"]),
            "fpr": np.flipud(ns["fpr"]), "tpr": np.flipud(ns["tpr"]), "table": str(ns["tpr_fpr_table"])}
