"""``lh2face doctor``: what the plugin finds in this environment and what to fix.

:func:`diagnose` returns one :class:`Finding` per item (checkout and revision,
torch / CUDA / NCCL, arcface_torch's own requirements, mxnet or the stand-in,
insightface, onnxruntime, and optionally what a recipe resolves to);
:func:`format_report` renders them.
"""
from __future__ import annotations

import importlib
import platform
import warnings
from dataclasses import dataclass
from typing import List, Optional

__all__ = ["Finding", "diagnose", "format_report"]

HOST_REQUIREMENTS = (("easydict", "easydict"), ("torchvision", "torchvision"),
                     ("tensorboard", "tensorboard"), ("sklearn", "scikit-learn"))


@dataclass
class Finding:
    """One line of the report.

    Attributes:
        item: what was checked. status: ``"ok"``, ``"warn"`` or ``"fail"``.
        detail: what was found. fix: what to do, if anything.
    """

    item: str
    status: str
    detail: str
    fix: Optional[str] = None


def _version(module: str) -> Optional[str]:
    try:
        mod = importlib.import_module(module)
    except Exception:
        return None
    return getattr(mod, "__version__", "installed")


def _torch_findings() -> List[Finding]:
    import torch

    out = [Finding("python", "ok", platform.python_version()), Finding("torch", "ok", torch.__version__)]
    if torch.cuda.is_available():
        names = sorted({torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())})
        out.append(Finding("CUDA", "ok", f"{torch.version.cuda}, {torch.cuda.device_count()} device(s): "
                                         f"{', '.join(names)}"))
        try:
            nccl = ".".join(map(str, torch.cuda.nccl.version()))
            out.append(Finding("NCCL", "ok", nccl))
        except Exception as exc:
            out.append(Finding("NCCL", "fail", f"unavailable ({exc})", "install a CUDA build of torch with NCCL"))
    else:
        out.append(Finding("CUDA", "warn", "not available: only CPU smoke runs (lh2face train RECIPE --cpu)",
                           "install a CUDA build of torch to train for real"))
    return out


def _checkout_findings(arcface_root: Optional[str], strict: bool) -> List[Finding]:
    from .locate import locate_checkout
    from .revision import check_revision

    try:
        checkout = locate_checkout(arcface_root)
    except FileNotFoundError as exc:
        lines = str(exc).splitlines()
        return [Finding("arcface_torch checkout", "fail", " ".join(lines[:-1]), lines[-1])]
    out = [Finding("arcface_torch checkout", "ok", f"{checkout.root} (from {checkout.source})")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = check_revision(checkout.root)
    if report.known:
        out.append(Finding("revision", "ok", report.describe()))
    else:
        out.append(Finding("revision", "fail" if strict else "warn", report.describe(),
                           f"check out insightface {report.closest[:12]} or review the differing files"))
    return out


def _package_findings() -> List[Finding]:
    from .compat import mxnet_status

    out = []
    for module, dist_name in HOST_REQUIREMENTS:
        v = _version(module)
        out.append(Finding(dist_name, "ok" if v else "fail", v or "missing (arcface_torch imports it)",
                           None if v else f"pip install {dist_name}"))
    mx = mxnet_status()
    if mx.startswith("mxnet"):
        out.append(Finding("mxnet", "ok", mx))
    else:
        recordio = _version("lh2face_plugin.data.recordio")
        out.append(Finding("mxnet", "ok" if recordio else "fail",
                           f"{mx}; the plugin's RecordIO stand-in serves mx.recordio / mx.image"
                           if recordio else f"{mx} and lh2face_plugin.data.recordio is unavailable",
                           None if recordio else "reinstall lh2face-plugin"))
    for module, dist_name, why in (("insightface", "insightface", "model-zoo packs"),
                                   ("onnxruntime", "onnxruntime", "ONNX export checks")):
        v = _version(module)
        out.append(Finding(dist_name, "ok" if v else "warn", v or f"missing (needed for {why})",
                           None if v else "pip install 'lh2face-plugin[zoo]'"))
    return out


def _recipe_findings(recipe: str, arcface_root: Optional[str]) -> List[Finding]:
    from .config import check_job_keys, load_recipe, plugin_spec
    from .locate import locate_checkout

    try:
        root = locate_checkout(arcface_root).root
    except FileNotFoundError:
        root = None
    try:
        cfg = load_recipe(recipe, root, base=None if root else {})
        check_job_keys(cfg)
        spec = plugin_spec(cfg)
    except Exception as exc:
        return [Finding("recipe", "fail", f"{type(exc).__name__}: {exc.args[0] if exc.args else exc}",
                        "fix the recipe key named above")]
    out = [Finding("recipe", "ok", cfg["recipe_path"] + ("" if root else " (not merged: no checkout)"))]
    if spec.loss:
        head = spec.build_head()
        out.append(Finding("loss", "ok", f"{spec.loss}: {type(head).__name__}({head.extra_repr()})"))
    else:
        out.append(Finding("loss", "ok", "arcface_torch CombinedMarginLoss, margin_list="
                                         f"{tuple(cfg.get('margin_list', ()))} (config.loss unset)"))
    rate = cfg.get("sample_rate", 1.0)
    out.append(Finding("Partial FC", "ok", f"sample_rate {rate}, {cfg['num_classes']} classes, "
                                           f"embedding {cfg.get('embedding_size', '?')}"))
    if spec.input_module:
        out.append(Finding("input module", "ok", f"{spec.input_module} {spec.input_module_kwargs}"))
    out.append(Finding("data", "ok", f"rec={cfg['rec']}, {cfg['num_image']} images, {cfg['num_epoch']} epochs, "
                                     f"batch {cfg.get('batch_size', '?')} per GPU, output {cfg['output']}"))
    return out


def diagnose(recipe: Optional[str] = None, arcface_root: Optional[str] = None, strict: bool = False,
             ) -> List[Finding]:
    """All findings, in report order."""
    findings = _checkout_findings(arcface_root, strict) + _torch_findings() + _package_findings()
    if recipe:
        findings += _recipe_findings(recipe, arcface_root)
    return findings


def format_report(findings: List[Finding]) -> str:
    """A table of findings followed by the list of fixes."""
    width = max(len(f.item) for f in findings)
    lines = [f"[{f.status:>4}] {f.item:<{width}}  {f.detail}" for f in findings]
    fixes = [f"- {f.item}: {f.fix}" for f in findings if f.fix and f.status != "ok"]
    lines += ["", "to fix:"] + fixes if fixes else ["", "nothing to fix."]
    return "\n".join(lines)
