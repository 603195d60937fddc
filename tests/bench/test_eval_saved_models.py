"""``lh2face eval`` re-evaluates the models the bench saves, a ``@render`` run's wrapped model included."""
from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from lh2face_plugin.cli import main
from lh2face_plugin.training import TrainConfig, load_trained_model, train_model


@pytest.fixture(scope="module")
def saved_runs(tiny_train_data, tmp_path_factory):
    """A plain and a ``@render`` run in the bench's layout (``OUT/<label>/seed0``); the render checkpoint removed."""
    from lh2face_plugin import build_input_module

    root = tmp_path_factory.mktemp("bench")
    ckpt = str(root / "render.pt")
    build_input_module("render", width=4).save_reconstruction(ckpt)
    cfg = TrainConfig(steps=2, batch_size=4, workers=0, embedding_size=32)
    plain = train_model(cfg, tiny_train_data, "arcface", str(root / "arcface" / "seed0"), progress=False)
    kw = {"checkpoint": ckpt, "width": 4, "mode": "frozen", "canon_fraction": 0.5}
    render = train_model(cfg, tiny_train_data, "lh2face", str(root / "lh2face-r" / "seed0"), progress=False,
                         input_module="render", input_kwargs=kw)
    os.remove(ckpt)  # model.pt holds render.*: the reload must not need the checkpoint file
    return plain, render


def test_a_render_run_reloads_as_the_wrapped_model_without_its_checkpoint(saved_runs, tmp_path):
    _, render = saved_runs
    model = load_trained_model(render.model_path)
    assert type(model).__name__ == "RenderAugmentedModel" and not model.training
    x = torch.rand(3, 3, 112, 112) * 2 - 1
    with torch.no_grad():
        assert torch.equal(model(x), render.model.eval()(x))
    copy = tmp_path / "copy"
    shutil.copytree(os.path.dirname(render.model_path), copy)
    with open(copy / "model.pt", "ab") as fh:
        fh.write(b"0")
    with pytest.raises(ValueError, match="not the model its train.json records"):
        load_trained_model(str(copy / "model.pt"))
    os.remove(copy / "train.json")
    with pytest.raises(FileNotFoundError, match="no train.json"):
        load_trained_model(str(copy / "model.pt"))


def test_a_render_run_recorded_before_the_measured_defaults_reloads_with_its_own_values(saved_runs, tmp_path):
    """train.json records every parameter the module was built with ("resolved"); a record written before
    that holds only the given ones, and reloads with the defaults of its time (PREVIOUS_DEFAULTS)."""
    _, render = saved_runs
    record = render.info["input_module"]
    assert record["kwargs"] == {"checkpoint": record["kwargs"]["checkpoint"], "width": 4, "mode": "frozen",
                                "canon_fraction": 0.5}
    resolved = record["resolved"]
    assert (resolved["lambda_canon"], resolved["lambda_view"], resolved["canon_fraction"]) == (0.0, 0.0, 0.5)
    model = load_trained_model(render.model_path)
    assert (model.render.lambda_canon, model.render.lambda_view, model.render.canon_fraction) == (0.0, 0.0, 0.5)
    old = tmp_path / "old"
    shutil.copytree(os.path.dirname(render.model_path), old)
    with open(old / "train.json") as fh:
        info = json.load(fh)
    del info["input_module"]["resolved"]             # as written before issue 26
    with open(old / "train.json", "w") as fh:
        json.dump(info, fh)
    legacy = load_trained_model(str(old / "model.pt"))
    assert (legacy.render.lambda_canon, legacy.render.lambda_view) == (0.5, 0.1), "the defaults of its time"
    assert legacy.render.canon_fraction == 0.5, "a value it named stays"
    x = torch.rand(2, 3, 112, 112) * 2 - 1
    with torch.no_grad():
        assert torch.equal(legacy(x), model(x))


@pytest.mark.parametrize("label,network", [("arcface", ["--network", "compact-tiny"]), ("lh2face-r", [])])
def test_lh2face_eval_verify_reevaluates_every_saved_model(saved_runs, tiny_train_data, tmp_path, capsys, label,
                                                           network):
    from lh2face_plugin.eval import evaluate_verification, torch_embedder

    run = saved_runs[0] if label == "arcface" else saved_runs[1]
    out = str(tmp_path / "eval")
    bin_path = os.path.join(tiny_train_data, "verify.bin")
    assert main(["eval", "verify", bin_path, "--model", run.model_path, "--out", out, "--folds", "2"] + network) == 0
    assert "verify" in capsys.readouterr().out
    with open(os.path.join(out, "results.json")) as fh:
        got = json.load(fh)["verify"]
    want = evaluate_verification(torch_embedder(run.model.eval()), bin_path, folds=2)
    assert got["accuracy"] == pytest.approx(want["accuracy"]) and got["xnorm"] == pytest.approx(want["xnorm"])


def test_a_render_run_with_another_network_is_refused(saved_runs, tiny_train_data, tmp_path, capsys):
    args = ["eval", "verify", os.path.join(tiny_train_data, "verify.bin"), "--model", saved_runs[1].model_path,
            "--out", str(tmp_path), "--network", "compact"]
    assert main(args) != 0
    assert "was trained with --network compact-tiny" in capsys.readouterr().err


def test_lh2face_export_packs_a_render_run_with_its_input_module_and_no_network(saved_runs, tmp_path, capsys):
    _, render = saved_runs
    out = tmp_path / "pack"
    assert main(["export", render.model_path, "--out", str(out)]) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "cosine insightface_vs_torch" in printed and "routed to ArcFaceONNX" in printed
    from lh2face_plugin.export.modelzoo import inspect_recognition_onnx

    assert list(inspect_recognition_onnx(str(out / "recognition.onnx"))["input_shape"][1:]) == [3, 112, 112]
    assert main(["export", render.model_path, "--network", "compact", "--out", str(tmp_path / "p2")]) == 2
    assert "was trained with --network compact-tiny behind the 'render' input module" in capsys.readouterr().err
