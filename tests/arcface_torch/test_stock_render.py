"""The stock command with a bare ``config.input_module = "render"``: ``torchrun --nproc_per_node=2 train_v2.py
configs/<recipe>`` on the CPU, the recipe importing nothing (as ``config.loss`` in test_stock_command.py).

The reconstruction comes from ``lh2face render pretrain`` at a tiny size; two gloo ranks train 2 steps behind it
frozen; the saved model keeps the checkpoint's reconstruction bit for bit and a 7-channel stem, and ``lh2face eval
verify`` evaluates ``model.pt`` from the record the plugin wrote beside it, as the wrapped model would embed.
"""
import json
import os
import pickle
import shutil
import textwrap

import pytest
import torch

from test_stock_command import _torchrun

pytestmark = [pytest.mark.arcface_torch(train=True), pytest.mark.slow]

RECIPE = """
    from easydict import EasyDict as edict

    config = edict()
    config.input_module = "render"
    config.input_module_kwargs = dict(checkpoint={checkpoint!r}, mode="frozen", width=4)
    config.margin_list = (1.0, 0.5, 0.0)
    config.network = "mbf"
    config.resume = False
    config.save_all_states = True
    config.output = {output!r}
    config.embedding_size = 32
    config.sample_rate = 1.0
    config.fp16 = False
    config.batch_size = 4
    config.lr = 0.01
    config.verbose = 10 ** 9
    config.frequent = 1
    config.num_workers = 0
    config.rec = {rec!r}
    config.num_classes = 4
    config.num_image = 16
    config.num_epoch = 1
    config.warmup_epoch = 0
    config.val_targets = []
"""


@pytest.fixture(scope="module")
def run(arcface_root, synth_data, tmp_path_factory):
    from lh2face_plugin.arcface_torch import autoload
    from lh2face_plugin.cli import main

    assert autoload.installed_files(), "the start-up hook is not installed here: pip install -e . (or the wheel)"
    work = tmp_path_factory.mktemp("stock_render")
    checkpoint = str(work / "render.pt")
    assert main(["render", "pretrain", "--data", "synthetic", "--steps", "2", "--batch-size", "2", "--pool", "4",
                 "--width", "4", "--out", checkpoint]) == 0
    checkout = work / "arcface_torch"
    shutil.copytree(arcface_root, checkout, ignore=shutil.ignore_patterns("docs", "*.md", "__pycache__"))
    data, _ = synth_data
    (checkout / "configs" / "bare_render.py").write_text(textwrap.dedent(RECIPE.format(
        checkpoint=checkpoint, output=str(work / "run"), rec=str(data))))
    proc = _torchrun(checkout, "configs/bare_render")
    return {"proc": proc, "work": work, "checkpoint": checkpoint, "checkout": str(checkout), "data": data}


def test_bare_input_module_recipe_trains_behind_the_frozen_reconstruction(run):
    proc = run["proc"]
    assert proc.returncode == 0, proc.stderr[-4000:]
    notices = [ln for ln in proc.stderr.splitlines() if ln.startswith("lh2face_plugin:")]
    assert len(notices) == 1 and notices[0].startswith("lh2face_plugin: input module render {'checkpoint': ")
    assert "(start-up hook)" in notices[0]
    folder = run["work"] / "run"
    for rank in range(2):
        ckpt = torch.load(folder / f"checkpoint_gpu_{rank}.pt", weights_only=True)
        assert (ckpt["epoch"], ckpt["global_step"]) == (1, 2), rank       # 16 images / (2 ranks x 4)
    saved = torch.load(folder / "model.pt", weights_only=True)
    start = torch.load(run["checkpoint"], weights_only=True)["state_dict"]
    net = {k[len("render.net."):]: v for k, v in saved.items() if k.startswith("render.net.")}
    assert sorted(net) == sorted(start)
    assert all(torch.equal(net[k], v) for k, v in start.items()), "the frozen reconstruction must not train"
    stems = [k for k, v in saved.items() if k.startswith("backbone.") and v.dim() == 4 and v.shape[1] == 7]
    assert len(stems) == 1, "the backbone's first convolution takes RGB, canonical RGB and depth"
    assert saved[stems[0]][:, 3:].abs().sum() > 0, "the zero-started channels trained"
    record = json.loads((folder / "lh2face_input_module.json").read_text())
    assert record["name"] == "render" and record["network"] == "mbf"
    assert record["resolved"]["lambda_canon"] == record["resolved"]["lambda_view"] == 0.0


def _small_bin(src: str, dst: str, pairs: int) -> str:
    """The first ``pairs`` pairs of a verification ``.bin`` (ours: a pickle of image bytes and flags), to keep the
    CPU evaluation short."""
    with open(src, "rb") as fh:
        images, issame = pickle.load(fh, encoding="bytes")
    assert 0 < sum(issame[:pairs]) < pairs, "both kinds of pair for the folds"
    with open(dst, "wb") as fh:
        pickle.dump((images[:2 * pairs], issame[:pairs]), fh, protocol=2)
    return dst


def test_lh2face_eval_verify_evaluates_the_saved_model(run, tmp_path, capsys):
    from lh2face_plugin.arcface_torch.input_record import load_model, read_record
    from lh2face_plugin.cli import main
    from lh2face_plugin.eval import evaluate_verification, torch_embedder

    assert run["proc"].returncode == 0, run["proc"].stderr[-4000:]
    model_path = str(run["work"] / "run" / "model.pt")
    os.remove(run["checkpoint"])          # model.pt holds the reconstruction: evaluation does not need the file
    bin_path = _small_bin(os.path.join(run["data"], "verify.bin"), str(tmp_path / "verify.bin"), pairs=24)
    out = str(tmp_path / "eval")
    args = ["eval", "verify", bin_path, "--model", model_path, "--arcface-root", run["checkout"], "--out", out,
            "--folds", "2"]
    assert main(args) == 0, capsys.readouterr().err
    got = json.load(open(os.path.join(out, "results.json")))["verify"]
    model = load_model(model_path, read_record(model_path), arcface_root=run["checkout"])
    assert type(model).__name__ == "RenderAugmentedModel" and not model.training
    want = evaluate_verification(torch_embedder(model), bin_path, folds=2)
    assert got["accuracy"] == pytest.approx(want["accuracy"]) and got["xnorm"] == pytest.approx(want["xnorm"])
    assert main(args[:-4] + ["--network", "r50", "--out", str(tmp_path / "other")]) != 0
    assert "was trained with config.network = 'mbf'" in capsys.readouterr().err


def test_lh2face_export_packs_the_saved_model_with_its_input_module(run, tmp_path, capsys):
    """``lh2face export`` finds lh2face_input_module.json beside model.pt: no --network, the reconstruction and
    frontalisation in the graph, insightface's embedding of the pack equal to the wrapped model's."""
    from lh2face_plugin.cli import main

    assert run["proc"].returncode == 0, run["proc"].stderr[-4000:]
    model_path = str(run["work"] / "run" / "model.pt")
    out = tmp_path / "pack"
    assert main(["export", model_path, "--arcface-root", run["checkout"], "--out", str(out)]) == 0, \
        capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "cosine insightface_vs_torch" in printed and "routed to ArcFaceONNX" in printed
    from lh2face_plugin.export.modelzoo import inspect_recognition_onnx

    assert list(inspect_recognition_onnx(str(out / "recognition.onnx"))["input_shape"][1:]) == [3, 112, 112]
    assert main(["export", model_path, "--arcface-root", run["checkout"], "--network", "r50",
                 "--out", str(tmp_path / "other")]) == 2
    assert "was trained with config.network = 'mbf'" in capsys.readouterr().err
