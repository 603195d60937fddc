import io
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from lh2face_plugin.arcface_torch import compat
from lh2face_plugin.arcface_torch.mxnet_shim import SHIM_VERSION, build_mxnet_shim


@pytest.fixture
def shim(monkeypatch):
    """mxnet as the stand-in, whatever is installed; sys.modules restored afterwards."""
    for name in [n for n in sys.modules if n == "mxnet" or n.startswith("mxnet.")]:
        monkeypatch.delitem(sys.modules, name)
    for name, mod in build_mxnet_shim().items():
        monkeypatch.setitem(sys.modules, name, mod)
    import mxnet

    return mxnet


def _png(arr):
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_ensure_mxnet_installs_the_stand_in_when_mxnet_fails(monkeypatch):
    for name in [n for n in sys.modules if n == "mxnet" or n.startswith("mxnet.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(compat, "import_problem", lambda name: "AttributeError: module 'numpy' has no attribute 'bool'")
    status = compat.ensure_mxnet()
    try:
        assert status.startswith("lh2face stand-in") and "numpy" in status
        import mxnet as mx
        from mxnet import ndarray as nd

        assert mx.__version__ == SHIM_VERSION and nd is mx.nd
        assert compat.ensure_mxnet() == "lh2face stand-in"
    finally:
        for name in [n for n in sys.modules if n == "mxnet" or n.startswith("mxnet.")]:
            del sys.modules[name]


def test_dataset_code_path_reads_a_rec_through_the_stand_in(shim, tmp_path):
    """What arcface_torch's MXFaceDataset does: header record 0, then unpack + imdecode."""
    rec, idx = str(tmp_path / "train.rec"), str(tmp_path / "train.idx")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (112, 112, 3), dtype=np.uint8) for _ in range(3)]
    w = shim.recordio.MXIndexedRecordIO(idx, rec, "w")
    w.write_idx(0, shim.recordio.pack(shim.recordio.IRHeader(2, [4.0, 7.0], 0, 0), b""))
    for i, img in enumerate(images, start=1):
        w.write_idx(i, shim.recordio.pack(shim.recordio.IRHeader(0, float(i % 2), i, 0), _png(img)))
    w.close()
    r = shim.recordio.MXIndexedRecordIO(idx, rec, "r")
    header, _ = shim.recordio.unpack(r.read_idx(0))
    assert header.flag > 0 and int(header.label[0]) == 4
    for i, img in enumerate(images, start=1):
        header, payload = shim.recordio.unpack(r.read_idx(i))
        decoded = shim.image.imdecode(payload).asnumpy()
        assert decoded.dtype == np.uint8 and np.array_equal(decoded, img) and header.label == i % 2


def test_verification_code_path_ops(shim):
    img = np.random.default_rng(1).integers(0, 256, (120, 100, 3), dtype=np.uint8)
    decoded = shim.image.imdecode(np.frombuffer(_png(img), dtype=np.uint8))   # .bin files may hold arrays
    assert np.array_equal(decoded.asnumpy(), img)
    small = shim.image.resize_short(decoded, 50)
    assert small.shape == (60, 50, 3)
    chw = shim.nd.transpose(decoded, axes=(2, 0, 1))
    assert chw.shape == (3, 120, 100)
    flipped = shim.ndarray.flip(data=chw, axis=2).asnumpy()
    assert np.array_equal(flipped, img.transpose(2, 0, 1)[:, :, ::-1])
    assert torch.from_numpy(flipped).shape == (3, 120, 100)


def test_stand_in_names_what_it_lacks(shim):
    with pytest.raises(AttributeError, match="mxnet.gluon.*not provided"):
        shim.gluon
    with pytest.raises(ValueError, match="cannot decode"):
        shim.image.imdecode(b"not an image")


def test_cpu_only_patches_and_restores(monkeypatch):
    originals = (torch.Tensor.cuda, torch.Tensor.to, torch.nn.Module.cuda, torch.cuda.set_device,
                 torch.nn.parallel.DistributedDataParallel)
    with compat.cpu_only():
        x = torch.ones(2)
        assert x.cuda() is x and x.to(device=0).device.type == "cpu" and x.to("cuda:0").device.type == "cpu"
        assert x.to(torch.float64).dtype == torch.float64
        torch.cuda.set_device(0)
        with torch.cuda.stream(torch.cuda.Stream(0)):
            torch.cuda.current_stream().wait_stream(None)
    assert originals == (torch.Tensor.cuda, torch.Tensor.to, torch.nn.Module.cuda, torch.cuda.set_device,
                         torch.nn.parallel.DistributedDataParallel)


def test_second_init_is_skipped_only_when_a_group_exists(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "init_process_group", lambda *a, **k: calls.append(a))
    with compat.tolerate_second_init():
        torch.distributed.init_process_group("nccl")
    assert calls == []
    torch.distributed.init_process_group("gloo")
    assert calls == [("gloo",)]


def test_fix_verification_tolerates_repeated_far(monkeypatch):
    import types

    import numpy as np

    from lh2face_plugin.arcface_torch.compat import fix_verification, tolerant_interp1d

    far = np.array([0.0, 0.0, 0.1, 0.1, 0.5, 1.0])
    thresholds = np.linspace(0.0, 1.0, 6)
    f = tolerant_interp1d(far, thresholds, kind="slinear")
    assert 0.4 <= float(f(0.3)) <= 0.8  # inside the run where FAR rises from 0.1 to 0.5
    module = types.SimpleNamespace(interpolate=None)
    assert fix_verification(module) and module.interpolate.interp1d is tolerant_interp1d
    assert not fix_verification(None)
