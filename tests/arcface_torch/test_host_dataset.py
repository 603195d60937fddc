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


def write_rec(folder, labels):
    """An insightface set (header record, scalar image labels) whose image records carry ``labels``."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(2)
    n = len(labels)
    with recordio.MXIndexedRecordIO(os.path.join(folder, "train.idx"), os.path.join(folder, "train.rec"), "w") as w:
        w.write_idx(0, recordio.pack(recordio.IRHeader(2, [n + 1, n + 1], 0, 0), b""))
        for key, label in enumerate(labels, 1):
            png = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)).save(png, format="PNG")
            w.write_idx(key, recordio.pack(recordio.IRHeader(0, float(label), key, 0), png.getvalue()))
    return str(folder)


def _epoch_within(loader, seconds=20.0):
    """Iterate one epoch of ``loader`` in a thread: ``("done", labels)``, ``("raised", exc)``, or a test failure
    when the epoch neither ends nor raises in ``seconds`` (arcface_torch's prefetch thread died)."""
    import threading

    out = {}

    def run():
        try:
            out["done"] = [int(v) for _, labels in loader for v in labels]
        except Exception as exc:
            out["raised"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"the host's loader hangs: no batch and no error in {seconds} s"
    return next(iter(out.items()))


@pytest.mark.parametrize("bad", [2.5, float("nan")])
def test_guarded_host_loader_refuses_a_label_that_is_not_a_whole_number(host_dataset, bad, tmp_path):
    """arcface_torch's get_dataloader/DataLoaderX (prefetch thread, num_workers=0) through the plugin's
    guard: the record is named and the error reaches the caller; the host alone trains 2.5 as class 2
    and hangs on NaN."""
    from lh2face_plugin.arcface_torch.compat import cpu_only
    from lh2face_plugin.arcface_torch.loader import RecordError, guard_loader

    root = write_rec(tmp_path / "data", [0, 1, 0, 1, bad, 1, 0, 1])
    with cpu_only(sys.modules["utils.utils_distributed_sampler"]):
        host = host_dataset.get_dataloader(root, 0, 4, False, False, 2048, 0)
        if bad == 2.5:
            kind, labels = _epoch_within(host)
            assert kind == "done" and sorted(labels) == [0, 0, 0, 1, 1, 1, 1, 2], "the host truncates 2.5 to 2"
        kind, exc = _epoch_within(guard_loader(host_dataset.get_dataloader(root, 0, 4, False, False, 2048, 0)))
    assert kind == "raised" and isinstance(exc, RecordError), exc
    offset = recordio.MXIndexedRecordIO(os.path.join(root, "train.idx"), os.path.join(root, "train.rec"), "r").idx[5]
    assert str(exc).startswith(f"{root}/train.rec: record 5 at byte {offset} (item 4 of 8): label is not a whole "
                               f"number at record 5: {bad!r}"), str(exc)
    assert "\n" not in str(exc)


def test_guarded_dataset_names_undecodable_records_and_pickles(host_dataset, tmp_path):
    """A record that does not decode is named too, and the guarded dataset survives pickling
    (DataLoader workers started by spawn / forkserver)."""
    import pickle

    from lh2face_plugin.arcface_torch.compat import cpu_only
    from lh2face_plugin.arcface_torch.loader import RecordError, guard_loader

    root = write_rec(tmp_path / "data", [0, 1, 0, 1])
    with recordio.MXIndexedRecordIO(os.path.join(root, "train.idx"), os.path.join(root, "train.rec"), "r") as r:
        offset = r.idx[3]
    with open(os.path.join(root, "train.rec"), "r+b") as f:      # record 3's PNG signature
        f.seek(offset + 8 + 24)
        f.write(b"JUNK")
    with cpu_only(sys.modules["utils.utils_distributed_sampler"]):
        dataset = guard_loader(host_dataset.get_dataloader(root, 0, 2, False, False, 2048, 0)).dataset
    for ds in (dataset, pickle.loads(pickle.dumps(dataset))):
        assert int(ds[0][1]) == 0 and isinstance(ds, host_dataset.MXFaceDataset)
        with pytest.raises(RecordError, match=rf"train\.rec: record 3 at byte {offset} \(item 2 of 4\): "):
            ds[2]


def test_guarded_image_folder_names_the_file(host_dataset, tmp_path):
    from lh2face_plugin.arcface_torch.compat import cpu_only
    from lh2face_plugin.arcface_torch.loader import RecordError, guard_loader

    for cls in ("a", "b"):
        os.makedirs(tmp_path / "faces" / cls)
        Image.fromarray(np.zeros((112, 112, 3), np.uint8)).save(tmp_path / "faces" / cls / "0.png")
    bad = tmp_path / "faces" / "b" / "1.png"
    bad.write_bytes(b"not a png")
    with cpu_only(sys.modules["utils.utils_distributed_sampler"]):
        loader = guard_loader(host_dataset.get_dataloader(str(tmp_path / "faces"), 0, 1, False, False, 2048, 0))
        kind, exc = _epoch_within(loader)
    assert kind == "raised" and isinstance(exc, RecordError)
    assert str(exc).startswith(f"{bad} (item 2 of 3): "), str(exc)


def test_a_capped_epoch_ends_its_prefetch_thread_and_workers(host_dataset, tmp_path):
    """config.steps_per_epoch leaves each epoch early; its prefetch thread and DataLoader workers must
    end with it (before: one blocked thread and num_workers processes more per epoch)."""
    import multiprocessing

    from lh2face_plugin.arcface_torch.activate import _StepCap
    from lh2face_plugin.arcface_torch.compat import cpu_only
    from lh2face_plugin.arcface_torch.loader import guard_loader

    root = write_rec(tmp_path / "data", [0, 1, 2, 3] * 4)
    with cpu_only(sys.modules["utils.utils_distributed_sampler"]):
        loader = _StepCap(guard_loader(host_dataset.get_dataloader(root, 0, 2, False, False, 2048, 2)), 1)
        for epoch in range(3):
            assert len([batch for batch in loader]) == 1
            assert multiprocessing.active_children() == [], f"epoch {epoch}: the loader's workers still run"
            loader.loader.iter.join(5.0)
            assert not loader.loader.iter.is_alive(), f"epoch {epoch}: the prefetch thread still runs"


def _forge_header(root, images, identities=0):
    """Rewrite the header record of ``root`` to declare ``images`` images (same byte length)."""
    with recordio.MXIndexedRecordIO(os.path.join(root, "train.idx"), os.path.join(root, "train.rec"), "r") as r:
        offset = r.idx[0]
    with open(os.path.join(root, "train.rec"), "r+b") as fh:
        fh.seek(offset + 8 + 24)
        fh.write(np.array([images + 1, images + 1 + identities], dtype=np.float32).tobytes())


def test_one_record_reader_bounds_the_header_and_checks_labels_for_ours_and_the_host(host_dataset, tmp_path):
    """FaceRecordDataset and the guarded host loader share the checks (issue 23 item 4): a forged
    header count is refused before anything is allocated by it (it took 15.5 GB at 2e9), and a label
    2.5, 1e10 or NaN is refused naming its record (2.5 trained as class 2, 1e10 silently)."""
    from lh2face_plugin.arcface_torch.compat import cpu_only
    from lh2face_plugin.arcface_torch.loader import RecordError, guard_loader
    from lh2face_plugin.data.dataset import FaceRecordDataset

    root = write_rec(tmp_path / "forged", [0, 1, 0, 1])
    _forge_header(root, 1_000_000)
    with pytest.raises(ValueError, match=r"key 0 \(the header record\): the header declares 1000000 images .* "
                                         r"the index holds 5 keys"):
        FaceRecordDataset(root)
    if getattr(sys.modules["mxnet"], "__version__", None) == "lh2face-shim":  # real mxnet reads it itself
        with pytest.raises(ValueError, match=r"declares 1000000 images"):
            host_dataset.MXFaceDataset(root, 0)

    for k, bad in enumerate((2.5, 1e10, float("nan"))):
        root = write_rec(tmp_path / f"bad{k}", [0, 1, bad, 1])
        ds = FaceRecordDataset(root, random_flip=False)
        ds[0]
        with pytest.raises(ValueError, match=rf"record 3") as err:
            ds[2]
        assert "\n" not in str(err.value)
        with cpu_only(sys.modules["utils.utils_distributed_sampler"]):
            kind, exc = _epoch_within(guard_loader(host_dataset.get_dataloader(root, 0, 4, False, False, 2048, 0)))
        assert kind == "raised" and isinstance(exc, RecordError) and "record 3" in str(exc), exc
