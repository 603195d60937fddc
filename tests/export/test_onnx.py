import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn

from lh2face_plugin.export.onnx import (
    _keep_normalisation_guess,
    check_onnx,
    export_onnx,
    insightface_preprocessing_guess,
    sha256_file,
)


def _run(path, x):
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def _cosines(a, b):
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_graph_layout_is_what_insightface_routes_to_recognition(exported):
    _, report = exported
    proto = onnx.load(report.path)
    assert [i.name for i in proto.graph.input] == ["input.1"]
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, 112, 112]
    assert len(proto.graph.output) == 1 and report.embedding_size == 512
    assert report.opset == 18 == next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    assert insightface_preprocessing_guess(proto) == (127.5, 127.5)
    assert report.sha256 == sha256_file(report.path)
    assert not [f for f in os.listdir(os.path.dirname(report.path)) if f.endswith(".tmp")]


@pytest.mark.parametrize("batch", [1, 8])
def test_onnxruntime_matches_torch(exported, batch):
    model, report = exported
    assert report.cosine[batch] >= 0.9999
    x = torch.rand(batch, 3, 112, 112, generator=torch.Generator().manual_seed(100 + batch)) * 2 - 1
    with torch.no_grad():
        want = model(x).numpy()
    got = _run(report.path, x.numpy())
    assert got.shape == (batch, 512)
    assert _cosines(got, want).min() >= 0.9999


def test_batch_axis_is_dynamic_and_rows_are_independent(exported):
    _, report = exported
    assert report.dynamic_batch
    x = (np.random.default_rng(3).random((5, 3, 112, 112), dtype=np.float32) * 2 - 1)
    batched = _run(report.path, x)
    singles = np.concatenate([_run(report.path, x[i:i + 1]) for i in range(5)])
    assert batched.shape == (5, 512)
    np.testing.assert_allclose(batched, singles, rtol=1e-4, atol=1e-5)


def test_normalisation_node_names_are_kept_from_insightfaces_guess():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 112, 112])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 112, 112])
    nodes = [helper.make_node("Sub", ["x", "x"], ["a"], name="Sub_0"), helper.make_node("Mul", ["a", "a"], ["y"], name="Mul_1")]
    proto = helper.make_model(helper.make_graph(nodes, "g", [x], [y]))
    assert insightface_preprocessing_guess(proto) == (0.0, 1.0)
    assert _keep_normalisation_guess(proto) == 2
    assert insightface_preprocessing_guess(proto) == (127.5, 127.5)


class _Pool(nn.Module):
    """A generic embedding module (not a backbone of ours): pool, project, tanh."""

    def __init__(self, out=16):
        super().__init__()
        self.proj = nn.Linear(3 * 7 * 7, out)

    def forward(self, x):
        return torch.tanh(self.proj(nn.functional.adaptive_avg_pool2d(x, 7).flatten(1)))


def test_any_module_exports_at_opset_17_and_failed_checks_write_nothing(tmp_path):
    torch.manual_seed(0)
    module = _Pool().train()
    report = export_onnx(module, str(tmp_path / "pool.onnx"), opset=17, input_name="data")
    assert module.training
    assert report.opset == 17 and report.input_name == "data" and report.embedding_size == 16
    assert min(report.cosine.values()) >= 0.9999 and report.dynamic_batch
    with pytest.raises(RuntimeError, match="parity too low"):
        export_onnx(module, str(tmp_path / "strict.onnx"), min_cosine=1.5)
    assert sorted(os.listdir(tmp_path)) == ["pool.onnx"]


def test_bad_requests_are_refused(tmp_path):
    with pytest.raises(ValueError, match="opset must be >= 17"):
        export_onnx(_Pool(), str(tmp_path / "a.onnx"), opset=16)

    class Pair(nn.Module):
        def forward(self, x):
            return x.mean((2, 3)), x

    with pytest.raises(ValueError, match=r"one \[B, D\] tensor"):
        export_onnx(Pair(), str(tmp_path / "b.onnx"))
    assert not os.listdir(tmp_path)


def test_check_reports_a_static_batch(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 112, 112])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    node = helper.make_node("ReduceMean", ["x"], ["y"], axes=[2, 3], keepdims=0)
    proto = helper.make_model(helper.make_graph([node], "g", [x], [y]), opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    onnx.save(proto, tmp_path / "static.onnx")
    _, _, dynamic = check_onnx(str(tmp_path / "static.onnx"), batch_sizes=(1,))
    assert not dynamic
    with pytest.raises(RuntimeError, match="failed at batch 8"):
        check_onnx(str(tmp_path / "static.onnx"), batch_sizes=(1, 8))
