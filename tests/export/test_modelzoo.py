import hashlib
import json
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from _helpers_export import DET_SIZE, FACE_OFFSET, canvas_with_face, write_stub_detector
from lh2face_plugin.export.modelzoo import inspect_recognition_onnx, pack_model_zoo, torch_embedding, verify_pack

insightface = pytest.importorskip("insightface")
from insightface.app import FaceAnalysis  # noqa: E402
from insightface.data import get_image  # noqa: E402
from insightface.model_zoo import get_model  # noqa: E402
from insightface.model_zoo.arcface_onnx import ArcFaceONNX  # noqa: E402
from insightface.model_zoo.package_manifest import load_model_package  # noqa: E402
from insightface.utils.face_align import arcface_dst  # noqa: E402

CPU = ["CPUExecutionProvider"]


def _cos(a, b):
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _face():
    """insightface's bundled aligned face, tinted so that a BGR/RGB mix-up changes the embedding."""
    img = get_image("Tom_Hanks_54745").astype(np.float32)
    img *= np.array([0.55, 0.85, 1.0], np.float32)
    return img.astype(np.uint8)


@pytest.fixture(scope="module")
def pack(exported, tmp_path_factory):
    model, report = exported
    folder = tmp_path_factory.mktemp("packs") / "lh2face-tiny"
    detector = str(folder.parent / "det_stub.onnx")
    write_stub_detector(detector, arcface_dst + FACE_OFFSET)
    license_file = folder.parent / "terms.txt"
    license_file.write_text("terms of the user's weights\n")
    info = pack_model_zoo(report.path, str(folder), detector=detector, license_file=str(license_file))
    return model, info


def test_manifest_is_insightface_v2_with_checksums(pack):
    _, info = pack
    with open(os.path.join(info.path, "manifest.json")) as f:
        manifest = json.load(f)
    assert manifest == info.manifest
    assert manifest["manifest_version"] == 2 and manifest["model_id"] == "lh2face-tiny"
    assert manifest["license"] == "MODEL.LICENSE"
    rec = manifest["tasks"]["recognition"]
    assert rec["preprocessing"] == {"mean": 127.5, "std": 127.5}
    assert rec["input_size"] == [112, 112] and rec["embedding_dimension"] == 512
    for task, entry in manifest["tasks"].items():
        with open(os.path.join(info.path, entry["file"]), "rb") as f:
            assert entry["sha256"] == hashlib.sha256(f.read()).hexdigest(), task
    parsed = load_model_package(info.path)
    assert set(parsed.tasks) == {"detection", "recognition"}
    assert parsed.tasks["recognition"].metadata["embedding_dimension"] == 512
    assert os.path.isfile(os.path.join(info.path, "MODEL.LICENSE"))


def test_model_zoo_routes_both_ways_to_arcface_with_our_embedding(pack):
    model, info = pack
    face = _face()
    ours = torch_embedding(model, face)
    by_shape = get_model(os.path.join(info.path, "recognition.onnx"), providers=CPU)
    by_manifest = get_model(info.path, model_task="recognition", providers=CPU)
    for m in (by_shape, by_manifest):
        assert isinstance(m, ArcFaceONNX)
        assert (m.input_mean, m.input_std) == (127.5, 127.5)
        assert _cos(m.get_feat(face), ours) >= 0.9999
    swapped = torch_embedding(model, np.ascontiguousarray(face[:, :, ::-1]))
    assert _cos(by_manifest.get_feat(face), swapped) < 0.9999


def test_face_analysis_loads_the_pack_by_folder_and_by_name(pack, tmp_path):
    model, info = pack
    face = _face()
    root = tmp_path / "root"
    os.makedirs(root / "models")
    os.symlink(info.path, root / "models" / "lh2face-tiny")
    for app in (FaceAnalysis(name=info.path, providers=CPU), FaceAnalysis(name="lh2face-tiny", root=str(root), providers=CPU)):
        assert type(app.models["recognition"]).__name__ == "ArcFaceONNX"
        app.prepare(ctx_id=-1, det_size=(DET_SIZE, DET_SIZE))
        faces = app.get(canvas_with_face(face))
        assert len(faces) == 1
        assert _cos(faces[0].embedding, torch_embedding(model, face)) >= 0.9999


def test_verify_pack_reports_the_round_trip(pack):
    model, info = pack
    result = verify_pack(info.path, reference=model, image=_face())
    assert result["routed"] == {"manifest": "ArcFaceONNX", "shape": "ArcFaceONNX"}
    assert min(result["cosine"].values()) >= 0.9999
    assert result["face_analysis"].startswith("loaded: ")


def test_tampered_model_is_refused_by_insightface(pack, tmp_path):
    _, info = pack
    copy = tmp_path / "copy"
    pack_model_zoo(os.path.join(info.path, "recognition.onnx"), str(copy))
    assert not os.path.exists(copy / "MODEL.LICENSE")
    with pytest.raises(AssertionError):
        FaceAnalysis(name=str(copy), providers=CPU)
    with open(copy / "recognition.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(RuntimeError, match="SHA-256 mismatch"):
        get_model(str(copy), model_task="recognition", providers=CPU)


def _save(tmp_path, name, inputs, outputs):
    node = helper.make_node("Identity", [inputs[0].name], [outputs[0].name])
    extra = [helper.make_node("Identity", [inputs[0].name], [o.name]) for o in outputs[1:]]
    proto = helper.make_model(helper.make_graph([node] + extra, "g", inputs, outputs),
                              opset_imports=[helper.make_opsetid("", 17)])
    path = str(tmp_path / name)
    onnx.save(proto, path)
    return path


def test_bad_inputs_are_named(tmp_path, pack):
    _, info = pack
    rec = os.path.join(info.path, "recognition.onnx")
    with pytest.raises(FileNotFoundError, match="recognition model not found"):
        pack_model_zoo(str(tmp_path / "missing.onnx"), str(tmp_path / "p"))
    dyn = _save(tmp_path, "dyn.onnx", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 3, "h", "w"])],
                [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 3, "h", "w"])])
    with pytest.raises(ValueError, match="static S"):
        inspect_recognition_onnx(dyn)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 112, 112])
    ys = [helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, [1, 3, 112, 112]) for i in range(2)]
    not_det = _save(tmp_path, "two.onnx", [x], ys)
    with pytest.raises(ValueError, match="has 2 outputs"):
        pack_model_zoo(rec, str(tmp_path / "p"), detector=not_det)
    with pytest.raises(ValueError, match="model_id 'no spaces' is invalid"):
        pack_model_zoo(rec, str(tmp_path / "p"), model_id="no spaces")
    (tmp_path / "garbage.onnx").write_bytes(b"\x08\x99garbage")
    with pytest.raises(ValueError, match="not a readable ONNX model"):
        inspect_recognition_onnx(str(tmp_path / "garbage.onnx"))
    assert not os.path.exists(tmp_path / "p")
