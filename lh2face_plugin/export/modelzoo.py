"""insightface model-zoo packs: a folder with the recognition ONNX and a Manifest V2.

Layout written by :func:`pack_model_zoo`::

    DIR/
      manifest.json        manifest_version 2 (schema of insightface 2.1)
      recognition.onnx     the exported embedding network
      <detector>.onnx      optional, supplied by the user (e.g. an SCRFD model)
      MODEL.LICENSE        optional, copied from the user's file

The manifest declares the recognition preprocessing (mean/std 127.5, outside
the graph), the input size and the embedding dimension, and the SHA-256 of
every model file, which insightface verifies before it opens a session. With a
manifest the declared preprocessing replaces ``ArcFaceONNX``'s node-name guess.

insightface requires the ``license`` field and fixes its value to
``MODEL.LICENSE``; in insightface 2.1 that file is an InsightFace-signed license
document, and an absent file means "default non-commercial terms" in its
license inspection. We therefore only copy a license file the user supplies.

Loading (``FaceAnalysis`` asserts that the folder has a detection model)::

    FaceAnalysis(name="DIR")                        # a folder path
    FaceAnalysis(name="MODEL_ID", root="ROOT")       # ROOT/models/MODEL_ID
    model_zoo.get_model("DIR", model_task="recognition")
    model_zoo.get_model("DIR/recognition.onnx")     # shape routing, no manifest
"""
from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional

import numpy as np
import torch

from .. import __version__
from ..fileio import copy_file, owned_files, resolve_inside, sha256_file, writing_folder
from .onnx import eval_mode, module_device

__all__ = ["PackInfo", "pack_model_zoo", "writing_pack", "fill_pack", "copy_recognition", "external_data",
           "build_manifest", "verify_pack",
           "inspect_recognition_onnx", "torch_embedding"]

MANIFEST = "manifest.json"
LICENSE = "MODEL.LICENSE"
RECOGNITION_FILE = "recognition.onnx"
_MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass
class PackInfo:
    """A written pack: its folder, manifest and model files (task -> file name)."""

    path: str
    manifest: Dict[str, Any]
    files: Dict[str, str] = field(default_factory=dict)


def _load_onnx(path: str, what: str):
    import onnx  # optional: heavy

    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} model not found: {path}")
    try:
        return onnx.load(path, load_external_data=False)
    except Exception as exc:  # protobuf decode errors have several types
        raise ValueError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {exc})") from exc


def _dims(value_info) -> List[Any]:
    return [d.dim_param or (d.dim_value if d.HasField("dim_value") else "?") for d in value_info.type.tensor_type.shape.dim]


def inspect_recognition_onnx(path: str) -> Dict[str, Any]:
    """Check that an ONNX file is routed to insightface's recognition model.

    The rules are those of ``insightface.model_zoo.get_model``: one output
    ``[batch, D]``; input ``[batch, 3, S, S]`` with a static ``S >= 112``,
    ``S % 16 == 0`` and ``S`` not 192 / 96 / 128 (landmark, attribute,
    swapper sizes). External data files must exist beside it (:func:`external_data`).

    Returns:
        ``{"input_name", "input_shape", "input_size": S, "embedding_dimension": D}``.

    Raises:
        FileNotFoundError / ValueError naming the file and what was expected.
    """
    proto = _load_onnx(path, "recognition")
    external_data(path, proto)
    inits = {i.name for i in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in inits]
    outputs = list(proto.graph.output)
    if len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(f"{path}: a recognition model has one input and one output, found {len(inputs)} and {len(outputs)}")
    shape, out = _dims(inputs[0]), _dims(outputs[0])
    if len(shape) != 4 or shape[1] != 3 or not isinstance(shape[2], int) or shape[2] != shape[3]:
        raise ValueError(f"{path}: input {inputs[0].name!r} has shape {shape}; expected [batch, 3, S, S] with a static S")
    size = shape[2]
    if size < 112 or size % 16 or size in (96, 128, 192):
        raise ValueError(f"{path}: input size {size} is not routed to recognition by insightface (need S >= 112, S % 16 == 0)")
    if len(out) != 2 or not isinstance(out[1], int) or out[1] < 1:
        raise ValueError(f"{path}: output {outputs[0].name!r} has shape {out}; expected [batch, D]")
    return {"input_name": inputs[0].name, "input_shape": shape, "input_size": size, "embedding_dimension": out[1]}


def _check_detector(path: str) -> None:
    proto = _load_onnx(path, "detector")
    if len(proto.graph.output) < 5:
        raise ValueError(
            f"{path}: has {len(proto.graph.output)} outputs; insightface's detector (SCRFD) needs 6, 9, 10 or 15 "
            "(score / bbox [/ keypoint] maps per stride)"
        )


def _check_model_id(model_id: Any) -> None:
    if not isinstance(model_id, str) or not _MODEL_ID.fullmatch(model_id):
        raise ValueError(
            f"model_id {model_id!r} is invalid: use 1-128 characters from A-Z a-z 0-9 . _ -, "
            "starting with a letter or digit"
        )


def build_manifest(
    model_id: str,
    recognition_file: str,
    recognition_sha256: str,
    embedding_dimension: int,
    input_size: int = 112,
    detection_file: Optional[str] = None,
    detection_sha256: Optional[str] = None,
    display_name: Optional[str] = None,
) -> Dict[str, Any]:
    """The Manifest V2 document (a dict) for a recognition model and an optional detector."""
    _check_model_id(model_id)
    tasks: Dict[str, Any] = {}
    if detection_file is not None:
        tasks["detection"] = {"file": detection_file}
        if detection_sha256 is not None:
            tasks["detection"]["sha256"] = detection_sha256
    tasks["recognition"] = {
        "file": recognition_file,
        "sha256": recognition_sha256,
        "preprocessing": {"mean": 127.5, "std": 127.5},
        "preprocessing_version": "insightface-arcface-1",
        "input_size": [int(input_size), int(input_size)],
        "embedding_dimension": int(embedding_dimension),
    }
    return {
        "manifest_version": 2,
        "model_id": model_id,
        "display_name": display_name or model_id,
        "license": LICENSE,
        "tasks": tasks,
        "generator": f"lh2face-plugin {__version__}",
    }


COMMAND = "export"


def _legacy_pack(out_dir: str) -> Optional[set]:
    """Files of a pack written before ownership manifests existed (its manifest names our generator).

    Its model files are ours only while they have the SHA-256 its manifest lists (:func:`owned_files`).
    """
    try:
        with open(os.path.join(out_dir, MANIFEST), encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or not str(doc.get("generator", "")).startswith("lh2face-plugin"):
        return None
    listing = {task["file"]: task["sha256"] for task in (doc.get("tasks") or {}).values()
               if isinstance(task, dict) and isinstance(task.get("file"), str) and isinstance(task.get("sha256"), str)}
    return owned_files(out_dir, listing) | {MANIFEST}


@contextlib.contextmanager
def writing_pack(out_dir: str, *, overwrite: bool = False) -> Iterator[str]:
    """Build a pack in a staging folder and publish it whole (see :func:`lh2face_plugin.fileio.writing_folder`).

    ``out_dir`` must be new, empty, or a pack written by ``lh2face export``, unless ``overwrite``
    (then files of other names are kept). A failed or killed export leaves ``out_dir`` as it was.
    An error raised inside names ``out_dir`` where it named the staging folder.
    """
    out_dir = os.path.abspath(out_dir)
    with writing_folder(out_dir, COMMAND, overwrite=overwrite, legacy=_legacy_pack) as stage:
        try:
            yield stage
        except Exception as exc:
            text = str(exc)
            if stage not in text:
                raise
            message = text.replace(stage, out_dir)
            try:
                renamed = type(exc)(message)
            except Exception:
                renamed = RuntimeError(message)
            raise renamed from None


def _graph_tensors(graph) -> Iterator[Any]:
    """Every tensor of an ONNX graph: initializers, node attributes, subgraphs."""
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _graph_tensors(sub)


_PROTOBUF_LIMIT = 2 ** 31 - 1


def external_data(src: str, proto=None) -> List[str]:
    """The external data files an ONNX model names (``[]`` for a self-contained one), checked.

    Each must exist inside the model's folder (:func:`lh2face_plugin.fileio.resolve_inside`); errors
    name the model and the file.
    """
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data  # optional: heavy

    proto = _load_onnx(src, "recognition") if proto is None else proto
    folder = os.path.dirname(os.path.abspath(src))
    files = []
    for location in sorted({ExternalDataInfo(t).location for t in _graph_tensors(proto.graph)
                            if uses_external_data(t)}):
        path = resolve_inside(folder, location, source=src)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{src}: its weights are stored in {location!r}, which is missing from {folder}")
        files.append(path)
    return files


def copy_recognition(src: str, dst: str) -> None:
    """Copy a recognition ONNX into a pack as one self-contained file.

    A model whose weights live in external data files (``weights.bin`` beside the ``.onnx``,
    :func:`external_data`) has them embedded, so the pack carries its weights. A model too large
    for one file (2 GiB) is refused.
    """
    import onnx  # optional: heavy

    proto = _load_onnx(src, "recognition")
    files = external_data(src, proto)
    if not files:
        copy_file(src, dst)
        return
    names = ", ".join(os.path.basename(f) for f in files)
    size = proto.ByteSize() + sum(os.path.getsize(f) for f in files)
    if size >= _PROTOBUF_LIMIT:
        raise ValueError(f"{src}: {size / 2 ** 30:.1f} GiB with its external data ({names}); an insightface pack "
                         "holds one .onnx file, at most 2 GiB")
    try:
        full = onnx.load(src, load_external_data=True)
    except Exception as exc:
        raise ValueError(f"{src}: its external data ({names}) cannot be read ({type(exc).__name__}: {exc})") from None
    onnx.save_model(full, dst)


def _check_pack_inputs(recognition: str, model_id: Optional[str], detector: Optional[str],
                       license_file: Optional[str]) -> Dict[str, Any]:
    info = inspect_recognition_onnx(recognition)
    if detector is not None:
        _check_detector(detector)
    if license_file is not None and not os.path.isfile(license_file):
        raise FileNotFoundError(f"license file not found: {license_file}")
    if model_id is not None:
        _check_model_id(model_id)
    return info


def fill_pack(recognition: str, folder: str, *, model_id: str, detector: Optional[str] = None,
              license_file: Optional[str] = None, display_name: Optional[str] = None) -> PackInfo:
    """Write the pack files into ``folder`` (a staging folder from :func:`writing_pack`)."""
    info = _check_pack_inputs(recognition, model_id, detector, license_file)
    rec_path = os.path.join(folder, RECOGNITION_FILE)
    copy_recognition(recognition, rec_path)
    files = {"recognition": RECOGNITION_FILE}
    det_name = det_sha = None
    if detector is not None:
        det_name = os.path.basename(detector)
        if det_name in (RECOGNITION_FILE, MANIFEST):
            det_name = "detection.onnx"
        copy_file(detector, os.path.join(folder, det_name))
        det_sha = sha256_file(os.path.join(folder, det_name))
        files["detection"] = det_name
    if license_file is not None:
        copy_file(license_file, os.path.join(folder, LICENSE))
    manifest = build_manifest(model_id, RECOGNITION_FILE, sha256_file(rec_path), info["embedding_dimension"],
                              info["input_size"], det_name, det_sha, display_name)
    with open(os.path.join(folder, MANIFEST), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    return PackInfo(path=folder, manifest=manifest, files=files)


def pack_model_zoo(
    recognition: str,
    out_dir: str,
    *,
    model_id: Optional[str] = None,
    detector: Optional[str] = None,
    license_file: Optional[str] = None,
    display_name: Optional[str] = None,
    overwrite: bool = False,
) -> PackInfo:
    """Write an insightface Manifest V2 pack around an exported recognition ONNX.

    Args:
        recognition: the recognition ONNX (e.g. from :func:`export_onnx`); copied
            to ``out_dir/recognition.onnx`` (with its external data embedded, :func:`copy_recognition`).
        out_dir: the pack folder, written all or nothing (:func:`writing_pack`): new, empty,
            or a pack this package wrote, unless ``overwrite``.
        model_id: the manifest's ``model_id`` (default: the folder's name).
        detector: optional detector ONNX the user supplies (kept under its own
            file name); ``FaceAnalysis`` needs one.
        license_file: optional file copied to ``MODEL.LICENSE``.

    Returns:
        :class:`PackInfo`.

    Raises:
        FileNotFoundError: a missing input file.
        ValueError: an ONNX file insightface would not route to the task, or an
            invalid ``model_id``.
        FileExistsError: ``out_dir`` holds files this package did not write (without ``overwrite``).
    """
    out_dir = os.path.abspath(out_dir)
    model_id = model_id or os.path.basename(out_dir.rstrip(os.sep))
    _check_pack_inputs(recognition, model_id, detector, license_file)
    with writing_pack(out_dir, overwrite=overwrite) as stage:
        pack = fill_pack(recognition, stage, model_id=model_id, detector=detector, license_file=license_file,
                         display_name=display_name)
    return PackInfo(path=out_dir, manifest=pack.manifest, files=pack.files)


def torch_embedding(module, bgr: np.ndarray) -> np.ndarray:
    """Embedding of one aligned BGR uint8 face by a torch model, preprocessed as arcface_torch does.

    RGB, ``(x / 255 - 0.5) / 0.5``, ``[1, 3, H, W]``; returns ``[D]`` float32.
    This equals what ``ArcFaceONNX`` feeds its graph: ``(rgb - 127.5) / 127.5``.
    """
    rgb = bgr[:, :, ::-1].astype(np.float32)
    x = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))[None]
    x = (x / 255.0 - 0.5) / 0.5
    with torch.no_grad(), eval_mode(module):
        return module(x.to(module_device(module))).float().cpu().numpy().ravel()


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))


def verify_pack(pack_dir: str, reference=None, image: Optional[np.ndarray] = None) -> Dict[str, Any]:
    """Load a pack through insightface and compare embeddings of an aligned face.

    Checks: insightface's Manifest V2 parser accepts the folder and the
    SHA-256 of each model file; ``model_zoo.get_model(DIR,
    model_task="recognition")`` and ``model_zoo.get_model(DIR/recognition.onnx)``
    (shape routing) both return ``ArcFaceONNX`` with mean/std 127.5; with a
    detector, ``FaceAnalysis(name=DIR)`` loads both tasks.

    Args:
        pack_dir: the pack folder.
        reference: optional torch module; its embedding of ``image`` (RGB,
            ``(x / 255 - 0.5) / 0.5``) is compared with insightface's.
        image: aligned 112x112 BGR uint8 face; default insightface's bundled
            ``Tom_Hanks_54745`` (an aligned crop).

    Returns:
        dict with ``model_id``, ``tasks``, ``routed`` (class names),
        ``mean_std``, ``cosine`` (name -> value), ``face_analysis`` (a
        sentence: loaded, or why not).
    """
    from insightface.app import FaceAnalysis  # optional: heavy
    from insightface.app.common import Face  # optional: heavy
    from insightface.data import get_image  # optional: heavy
    from insightface.model_zoo import get_model  # optional: heavy
    from insightface.model_zoo.arcface_onnx import ArcFaceONNX  # optional: heavy
    from insightface.model_zoo.package_manifest import load_model_package  # optional: heavy
    from insightface.utils.face_align import arcface_dst  # optional: heavy

    pack = load_model_package(pack_dir)
    for task in pack.tasks:
        pack.verify_task(task)
    if "recognition" not in pack.tasks:
        raise ValueError(f"{pack_dir}/{MANIFEST}: declares no recognition task")
    rec_path = str(pack.tasks["recognition"].path)
    via_manifest = get_model(pack_dir, model_task="recognition", providers=["CPUExecutionProvider"])
    via_shape = get_model(rec_path, providers=["CPUExecutionProvider"])
    result: Dict[str, Any] = {
        "model_id": pack.model_id,
        "tasks": sorted(pack.tasks),
        "routed": {"manifest": type(via_manifest).__name__, "shape": type(via_shape).__name__},
        "mean_std": {
            "manifest": (via_manifest.input_mean, via_manifest.input_std),
            "shape": (getattr(via_shape, "input_mean", None), getattr(via_shape, "input_std", None)),
        },
        "cosine": {},
    }
    for how, model in (("manifest", via_manifest), ("shape", via_shape)):
        if not isinstance(model, ArcFaceONNX):
            raise RuntimeError(f"{rec_path}: insightface ({how} routing) returned {type(model).__name__}, not ArcFaceONNX")
    if image is None:
        image = get_image("Tom_Hanks_54745")
    if image.shape != (112, 112, 3) or image.dtype != np.uint8:
        raise ValueError(f"image must be an aligned 112x112x3 uint8 BGR face, got {image.shape} {image.dtype}")
    feat_manifest = via_manifest.get_feat(image).ravel()
    feat_shape = via_shape.get_feat(image).ravel()
    feat_crop = via_manifest.get(image, Face(bbox=np.array([0, 0, 112, 112], np.float32), kps=arcface_dst.copy()))
    result["cosine"]["shape_vs_manifest"] = _cos(feat_shape, feat_manifest)
    result["cosine"]["norm_crop_vs_aligned"] = _cos(feat_crop, feat_manifest)
    if reference is not None:
        result["cosine"]["insightface_vs_torch"] = _cos(feat_manifest, torch_embedding(reference, image))
    if "detection" in pack.tasks:
        app = FaceAnalysis(name=pack_dir, providers=["CPUExecutionProvider"])
        result["face_analysis"] = f"loaded: {', '.join(f'{k}={type(v).__name__}' for k, v in app.models.items())}"
    else:
        result["face_analysis"] = "not loaded: FaceAnalysis needs a detection model (pack one with --detector)"
    return result
