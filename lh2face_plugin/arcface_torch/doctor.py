"""``lh2face doctor``: what the plugin finds in this environment and what to fix.

:func:`diagnose` returns one :class:`Finding` per item (checkout and revision,
torch / CUDA / NCCL, arcface_torch's own requirements, mxnet and torchvision or their
stand-ins, the start-up hook, insightface, onnxruntime, and optionally what a recipe
resolves to, including whether the stock command would activate the plugin for it and
whether its ``config.rec`` decodes the way arcface_torch will decode it);
:func:`format_report` renders them.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import numbers
import os
import platform
import sys
import warnings
from dataclasses import dataclass
from typing import List, Mapping, Optional, Tuple

import torch

from ..data import recordio
from . import autoload
from .compat import import_problem
from .config import check_job_keys, load_recipe, plugin_spec
from .locate import locate_checkout
from .mxnet_shim import imdecode
from .revision import check_revision

__all__ = ["Finding", "diagnose", "format_report", "import_state", "check_training_data"]

# arcface_torch's own requirements (module, distribution); torchvision and mxnet have stand-ins
HOST_REQUIREMENTS = (("easydict", "easydict"), ("tensorboard", "tensorboard"), ("sklearn", "scikit-learn"))


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


def import_state(module: str, dist_name: Optional[str] = None) -> Tuple[str, str]:
    """``("ok", version)``, ``("missing", "")`` or ``("broken", "installed X but import fails: Error: ...")``.

    "missing" means nothing of that name is installed; "broken" that it is installed and
    raises when imported (the error is shown, e.g. a torchvision built for another torch).
    """
    loaded = sys.modules.get(module)
    if loaded is not None:        # already imported here (the real one or a stand-in)
        return "ok", str(getattr(loaded, "__version__", "installed"))
    if importlib.util.find_spec(module) is None:
        return "missing", ""
    problem = import_problem(module)
    if problem is None:
        return "ok", str(getattr(importlib.import_module(module), "__version__", "installed"))
    try:
        version = " " + importlib.metadata.version(dist_name or module)
    except importlib.metadata.PackageNotFoundError:
        version = ""
    return "broken", f"installed{version} but fails to import: {problem}"


def _torch_findings() -> List[Finding]:
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
    out = []
    for module, dist_name in HOST_REQUIREMENTS:
        state, detail = import_state(module, dist_name)
        if state == "ok":
            out.append(Finding(dist_name, "ok", detail))
        elif state == "missing":
            out.append(Finding(dist_name, "fail", "missing (arcface_torch imports it)",
                               "pip install 'lh2face-plugin[arcface]'"))
        else:
            out.append(Finding(dist_name, "fail", detail, f"pip install --force-reinstall {dist_name}"))
    state, detail = import_state("torchvision")
    if state == "ok":
        out.append(Finding("torchvision", "ok", detail))
    elif state == "missing":
        out.append(Finding("torchvision", "ok", "missing; arcface_torch gets the plugin's stand-in for the transforms "
                                                "and ImageFolder it uses (start-up hook, lh2face train)"))
    else:
        out.append(Finding("torchvision", "warn", f"{detail}; arcface_torch gets the plugin's stand-in",
                           "nothing needed to train; to use torchvision itself, install the build made for torch "
                           f"{torch.__version__} (CPU builds: pip install torchvision --index-url "
                           "https://download.pytorch.org/whl/cpu) or pip uninstall torchvision"))
    state, detail = import_state("mxnet")
    recordio = importlib.util.find_spec("lh2face_plugin.data.recordio") is not None
    if state == "ok":
        out.append(Finding("mxnet", "ok", f"mxnet {detail}"))
    elif recordio:
        why = "missing" if state == "missing" else detail
        out.append(Finding("mxnet", "ok", f"{why}; the plugin's RecordIO stand-in serves mx.recordio / mx.image"))
    else:
        out.append(Finding("mxnet", "fail", "not importable and lh2face_plugin.data.recordio is unavailable",
                           "reinstall lh2face-plugin"))
    for module, dist_name, why in (("insightface", "insightface", "model-zoo packs"),
                                   ("onnxruntime", "onnxruntime", "ONNX export checks")):
        state, detail = import_state(module, dist_name)
        if state == "ok":
            out.append(Finding(dist_name, "ok", detail))
        else:
            out.append(Finding(dist_name, "warn", detail if state == "broken" else f"missing (needed for {why})",
                               "pip install 'lh2face-plugin[zoo]'"))
    return out


def _autoload_findings(environ: Optional[Mapping[str, str]] = None) -> List[Finding]:
    state = autoload.diagnose(environ)
    if not (state["pth"] and state["gate"]):
        return [Finding("start-up hook", "fail", f"not installed in this environment (no {autoload.PTH_NAME} in "
                                                 "site-packages): the stock command ignores config.loss",
                        "pip install lh2face-plugin (or pip install -e .) into the Python that runs train_v2.py")]
    where = os.path.dirname(state["files"][0])
    kinds = " + ".join(k for k in (".pth", ".start") if state[k[1:]])
    if not state["enabled"]:
        return [Finding("start-up hook", "warn", f"installed ({kinds} in {where}) but {autoload.ENV_VAR}=0: the stock "
                                                 "command stops on a recipe that sets config.loss (set_loss still "
                                                 "activates)", f"unset {autoload.ENV_VAR}")]
    return [Finding("start-up hook", "ok", f"installed ({kinds} in {where}); activates in arcface_torch's train_v2.py "
                                           f"for a recipe that sets config.loss; {autoload.ENV_VAR}=0 turns it off")]


def check_training_data(rec: str, records: int = 4) -> Finding:
    """``config.rec`` as arcface_torch's ``get_dataloader`` will read it.

    ``"synthetic"`` is fine; a folder with ``train.rec`` + ``train.idx`` is read as its
    ``MXFaceDataset`` does (header record, then for the first ``records`` images: the label,
    its first element if it is an array, through ``torch.tensor(label, dtype=torch.long)``,
    and the image through ``mx.image.imdecode``); any other folder must be an ImageFolder.
    """
    if rec == "synthetic":
        return Finding("data", "ok", "rec='synthetic' (arcface_torch's one random image)")
    if not os.path.isdir(rec):
        return Finding("data", "fail", f"config.rec = {rec!r} does not exist", "point config.rec at the dataset folder")
    rec_path, idx_path = os.path.join(rec, "train.rec"), os.path.join(rec, "train.idx")
    if not (os.path.isfile(rec_path) and os.path.isfile(idx_path)):
        classes = [e for e in os.scandir(rec) if e.is_dir()]
        if not classes:
            return Finding("data", "fail", f"{rec} holds neither train.rec + train.idx nor class folders",
                           "write a RecordIO set (lh2face data build) or an ImageFolder layout")
        return Finding("data", "ok", f"{rec}: image folder with {len(classes)} class folders (ImageFolder)")
    try:
        reader = recordio.MXIndexedRecordIO(idx_path, rec_path, "r")
        header, _ = recordio.unpack(reader.read_idx(0))
        keys = list(range(1, int(header.label[0]))) if header.flag > 0 else list(reader.keys)
        for key in keys[:records]:
            header, img = recordio.unpack(reader.read_idx(key))
            label = header.label
            if not isinstance(label, numbers.Number):
                label = label[0]
            try:
                torch.tensor(label, dtype=torch.long)
            except TypeError as exc:
                return Finding("data", "fail", f"{rec_path}, record {key}: label {label!r} ({type(label).__name__}) "
                                               f"fails in arcface_torch's MXFaceDataset: TypeError: {exc}",
                               "rewrite the set with scalar image labels (lh2face data build / lh2face data synth)")
            shape = imdecode(img).shape
            if len(shape) != 3 or shape[2] != 3:
                return Finding("data", "fail", f"{rec_path}, record {key}: decodes to shape {shape}, not HxWx3")
    except Exception as exc:
        return Finding("data", "fail", f"{rec_path}: {type(exc).__name__}: {exc}")
    return Finding("data", "ok", f"{rec_path}: {len(keys)} image records; the first {min(records, len(keys))} decode "
                                 "as arcface_torch's MXFaceDataset decodes them")


def _recipe_findings(recipe: str, arcface_root: Optional[str], environ: Optional[Mapping[str, str]] = None,
                     ) -> List[Finding]:
    try:
        root = locate_checkout(arcface_root).root
    except FileNotFoundError:
        root = None
    try:
        cfg = load_recipe(recipe, root, base=None if root else {})
        check_job_keys(cfg)
        spec = plugin_spec(cfg, build=False)
        head = spec.build_head() if spec.loss else None
        if spec.input_module:
            spec.build_input_module()
    except Exception as exc:
        return [Finding("recipe", "fail", f"{type(exc).__name__}: {exc.args[0] if exc.args else exc}",
                        "fix the recipe key named above")]
    out = [Finding("recipe", "ok", cfg["recipe_path"] + ("" if root else " (not merged: no checkout)"))]
    if spec.loss:
        out.append(Finding("loss", "ok", spec.describe_loss(head)))
    else:
        out.append(Finding("loss", "ok", "arcface_torch CombinedMarginLoss, margin_list="
                                         f"{tuple(cfg.get('margin_list', ()))} (config.loss unset)"))
    out += [Finding("unused key", "warn", line, "remove it from the recipe") for line in spec.unused]
    hook = bool(autoload.installed_files())
    if not spec.active:
        stock = "no plugin key: the stock command trains arcface_torch's own loss"
    elif not hook:
        stock = ("the start-up hook is not installed in this environment: the stock command cannot read "
                 "config.loss (the plugin stops it unless the recipe calls set_loss); pip install lh2face-plugin "
                 "into the environment that runs torchrun")
    elif autoload.enabled(environ):
        stock = "torchrun train_v2.py configs/NAME activates the plugin for this recipe (start-up hook)"
    else:
        stock = (f"{autoload.ENV_VAR}=0: the stock command stops on this recipe unless it calls set_loss")
    fine = not spec.active or (hook and autoload.enabled(environ))
    out.append(Finding("stock command", "ok" if fine else "warn", stock))
    rate = cfg.get("sample_rate", 1.0)
    out.append(Finding("Partial FC", "ok", f"sample_rate {rate}, {cfg['num_classes']} classes, "
                                           f"embedding {cfg.get('embedding_size', '?')}"))
    if spec.input_module:
        out.append(Finding("input module", "ok", f"{spec.input_module} {spec.input_module_kwargs}"))
    out.append(Finding("schedule", "ok", f"{cfg['num_image']} images, {cfg['num_epoch']} epochs, "
                                         f"batch {cfg.get('batch_size', '?')} per GPU, output {cfg['output']}"))
    out.append(check_training_data(str(cfg["rec"])))
    return out


def diagnose(recipe: Optional[str] = None, arcface_root: Optional[str] = None, strict: bool = False,
             environ: Optional[Mapping[str, str]] = None) -> List[Finding]:
    """All findings, in report order (``environ``: where ``LH2FACE_AUTOLOAD`` is read, default ``os.environ``)."""
    findings = (_checkout_findings(arcface_root, strict) + _torch_findings() + _package_findings()
                + _autoload_findings(environ))
    if recipe:
        findings += _recipe_findings(recipe, arcface_root, environ)
    return findings


def format_report(findings: List[Finding]) -> str:
    """A table of findings followed by the list of fixes."""
    width = max(len(f.item) for f in findings)
    lines = [f"[{f.status:>4}] {f.item:<{width}}  {f.detail}" for f in findings]
    fixes = [f"- {f.item}: {f.fix}" for f in findings if f.fix and f.status != "ok"]
    lines += ["", "to fix:"] + fixes if fixes else ["", "nothing to fix."]
    return "\n".join(lines)
