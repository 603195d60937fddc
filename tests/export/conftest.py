import pytest

from _helpers_export import tiny_backbone


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """``(model, report)``: a small backbone exported once for the whole export test session."""
    from lh2face_plugin.export.onnx import export_onnx

    model = tiny_backbone(seed=0)
    folder = tmp_path_factory.mktemp("exported")
    return model, export_onnx(model, str(folder / "recognition.onnx"))
