"""What ``lh2face data synth`` and ``lh2face data build`` write loads in arcface_torch's own ``MXFaceDataset``,
through the plugin's mxnet stand-in and through the real mxnet 1.9.1 (``tox -e mxnet``)."""
import importlib
import io
import os
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from _helpers_arcface_torch import forget_host_modules
from _helpers_mxnet import real_mxnet
from lh2face_plugin.arcface_torch.doctor import check_training_data
from lh2face_plugin.arcface_torch.mxnet_shim import build_mxnet_shim
from lh2face_plugin.cli import main
from lh2face_plugin.data import recordio
from lh2face_plugin.data.dataset import FaceRecordDataset

pytestmark = pytest.mark.arcface_torch


@pytest.fixture(scope="module")
def synth(synth_data):
    return synth_data


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    folder, out = tmp_path_factory.mktemp("faces"), tmp_path_factory.mktemp("built") / "data"
    rng = np.random.default_rng(0)
    labels, key = {}, 1
    for cls, name in enumerate(("ann", "bo", "cy")):
        os.makedirs(folder / name)
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)).save(folder / name / f"{i}.png")
            labels[key], key = cls, key + 1
    assert main(["data", "build", str(folder), str(out), "--quiet"]) == 0
    return str(out), labels


@pytest.fixture(scope="module")
def old_layout(tmp_path_factory):
    """An insightface set as data synth/build wrote it before: image labels [class, 0] (flag 2)."""
    out = tmp_path_factory.mktemp("old")
    rng = np.random.default_rng(1)
    with recordio.MXIndexedRecordIO(str(out / "train.idx"), str(out / "train.rec"), "w") as w:
        w.write_idx(0, recordio.pack(recordio.IRHeader(0, [3, 5], 0, 0), b""))
        for key in (1, 2):
            png = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)).save(png, format="PNG")
            w.write_idx(key, recordio.pack(recordio.IRHeader(0, [key - 1, 0], key, 0), png.getvalue()))
        for cls in (0, 1):
            w.write_idx(3 + cls, recordio.pack(recordio.IRHeader(0, [1 + cls, 2 + cls], 0, 0), b""))
    return str(out)


@pytest.fixture(params=["stand-in", pytest.param("mxnet", marks=pytest.mark.mxnet)])
def host_dataset(request, arcface_root, monkeypatch):
    """arcface_torch's dataset.py, imported with mxnet = the stand-in or the real mxnet, and torchvision
    (or its stand-in where it does not import)."""
    from lh2face_plugin.arcface_torch.compat import ensure_torchvision

    def ours():
        return {n for n in sys.modules if n.split(".")[0] in ("mxnet", "torchvision")}

    before = {n: sys.modules[n] for n in ours()}
    for name in before:
        if name.split(".")[0] == "mxnet":
            del sys.modules[name]
    if request.param == "mxnet":
        real_mxnet()
    else:
        sys.modules.update(build_mxnet_shim())
    ensure_torchvision()
    forget_host_modules()
    monkeypatch.syspath_prepend(arcface_root)
    try:
        yield importlib.import_module("dataset")
    finally:
        forget_host_modules()
        for name in ours() - set(before):
            del sys.modules[name]
        sys.modules.update(before)


def _check_all(dataset_module, root, labels):
    ds = dataset_module.MXFaceDataset(root_dir=root, local_rank=0)
    assert len(ds) == len(labels)
    for i in range(len(ds)):
        img, label = ds[i]
        assert img.shape == (3, 112, 112) and img.dtype == torch.float32
        assert -1.0 <= float(img.min()) and float(img.max()) <= 1.0
        assert label.dtype == torch.int64 and int(label) == labels[i + 1], i
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=len(ds))))
    assert batch[1].tolist() == [labels[k] for k in sorted(labels)]


def test_data_synth_output_loads_in_mxfacedataset(host_dataset, synth):
    _check_all(host_dataset, *synth)


def test_data_build_output_loads_in_mxfacedataset(host_dataset, built):
    _check_all(host_dataset, *built)


def test_label_arrays_fail_in_mxfacedataset(host_dataset, old_layout):
    """Why image labels are scalars now: the host cannot read the old layout."""
    ds = host_dataset.MXFaceDataset(root_dir=old_layout, local_rank=0)
    with pytest.raises(TypeError, match="cannot be interpreted as an integer"):
        ds[0]


def test_doctor_decodes_config_rec_like_the_host(synth, built, old_layout, tmp_path):
    for root in (synth[0], built[0]):
        found = check_training_data(root)
        assert found.status == "ok" and "decode as arcface_torch's MXFaceDataset" in found.detail
    found = check_training_data(old_layout)
    assert found.status == "fail" and "record 1" in found.detail and "TypeError" in found.detail
    assert "scalar image labels" in found.fix
    assert check_training_data(str(tmp_path / "nope")).status == "fail"
    assert check_training_data("synthetic").status == "ok"


def test_our_reader_reads_old_and_new_layouts(synth, old_layout):
    root, labels = synth
    ours = FaceRecordDataset(root, random_flip=False)
    assert [int(ours[i][1]) for i in range(len(ours))] == [labels[k] for k in sorted(labels)]
    assert [int(FaceRecordDataset(old_layout, random_flip=False)[i][1]) for i in (0, 1)] == [0, 1]
