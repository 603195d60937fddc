"""Shared fixtures for the export tests: a small trained-looking backbone and a stub detector."""
from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from lh2face_plugin.backbones import build_backbone

DET_SIZE = 128
FACE_OFFSET = 8


def tiny_backbone(seed: int = 0, embedding_size: int = 512) -> torch.nn.Module:
    """``compact-tiny`` with non-trivial BatchNorm statistics, in eval mode."""
    torch.manual_seed(seed)
    model = build_backbone("compact-tiny", embedding_size=embedding_size)
    model.train()
    with torch.no_grad():
        model(torch.rand(8, 3, 112, 112) * 2 - 1)
    return model.eval()


def canvas_with_face(aligned_bgr: np.ndarray) -> np.ndarray:
    """A ``DET_SIZE`` square BGR image with the aligned face at ``(FACE_OFFSET, FACE_OFFSET)``."""
    canvas = np.full((DET_SIZE, DET_SIZE, 3), 90, np.uint8)
    canvas[FACE_OFFSET:FACE_OFFSET + 112, FACE_OFFSET:FACE_OFFSET + 112] = aligned_bgr
    return canvas


def write_stub_detector(path: str, kps: np.ndarray) -> None:
    """Write a stub SCRFD-layout detector that reports one face with landmarks ``kps`` (5x2, pixels).

    It is not a detector: a static ``1x3xDET_SIZExDET_SIZE`` input and the
    nine outputs of insightface's SCRFD with kps (scores, boxes, landmarks for
    strides 8, 16, 32, two anchors per cell), constant but for ``0 * mean(input)``,
    with one anchor above the threshold. It lets ``FaceAnalysis`` load a pack
    and run its recognition model on a known face.
    """
    strides, anchors = (8, 16, 32), 2
    cx = cy = DET_SIZE // 2
    stride = strides[0]
    cell = (cy // stride) * (DET_SIZE // stride) + cx // stride
    box = np.array([kps[:, 0].min() - 20, kps[:, 1].min() - 30, kps[:, 0].max() + 20, kps[:, 1].max() + 30])
    outputs, nodes, inits = [], [], []
    x = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, DET_SIZE, DET_SIZE])
    nodes.append(helper.make_node("ReduceMean", ["input.1"], ["mean"], keepdims=0))
    inits.append(numpy_helper.from_array(np.zeros((), np.float32), "zero"))
    nodes.append(helper.make_node("Mul", ["mean", "zero"], ["nil"]))
    for kind, width in (("score", 1), ("bbox", 4), ("kps", 10)):
        for s in strides:
            n = (DET_SIZE // s) ** 2 * anchors
            value = np.zeros((n, width), np.float32)
            if s == stride:
                row = cell * anchors
                if kind == "score":
                    value[row] = 0.99
                elif kind == "bbox":
                    value[row] = np.array([cx - box[0], cy - box[1], box[2] - cx, box[3] - cy]) / s
                else:
                    value[row] = ((kps - np.array([cx, cy])) / s).ravel()
            name = f"{kind}_{s}"
            inits.append(numpy_helper.from_array(value, f"{name}_const"))
            nodes.append(helper.make_node("Add", [f"{name}_const", "nil"], [name]))
            outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [n, width]))
    graph = helper.make_graph(nodes, "stub_detector", [x], outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
