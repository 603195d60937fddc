import numpy as np
import pytest
import torch

from _helpers_render import TinyBackbone, posed_render_module

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


def test_render_model_exports_with_plain_input_dynamic_batch_and_loads_in_model_zoo(tmp_path):
    onnx = pytest.importorskip("onnx")
    model = posed_render_module(seed=1).wrap(TinyBackbone()).eval()
    path = str(tmp_path / "render.onnx")
    batch = torch.export.Dim("batch", min=1, max=256)
    torch.onnx.export(
        model, (torch.rand(2, 3, 112, 112) * 2 - 1,), path, input_names=["input"], output_names=["embedding"],
        opset_version=17, dynamic_shapes={"images": {0: batch}}, dynamo=True, verbose=False,
    )
    proto = onnx.load(path)
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [17]
    assert any(n.op_type == "GridSample" for n in proto.graph.node)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    (inp,) = sess.get_inputs()
    assert inp.shape[1:] == [3, 112, 112] and not isinstance(inp.shape[0], int)
    for b in (1, 8):
        x = torch.rand(b, 3, 112, 112) * 2 - 1
        with torch.no_grad():
            ref = model(x).numpy()
        got = sess.run(None, {inp.name: x.numpy()})[0]
        cos = (ref * got).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(got, axis=1)
        assert cos.min() >= 0.9999, (b, cos.min())
    zoo = pytest.importorskip("insightface.model_zoo")
    rec = zoo.get_model(path)
    assert type(rec).__name__ == "ArcFaceONNX"
    assert (rec.input_mean, rec.input_std) == (127.5, 127.5)
