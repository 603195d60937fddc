"""The shared training loop: schedule, batch plan, clipping, fairness across heads, reuse."""
from __future__ import annotations

import json
import os

import pytest
import torch

from lh2face_plugin.training import GradClipper, TrainConfig, batch_plan, lr_factor, train_model


def test_lr_schedule_by_hand():
    # 100 steps, 5 warm-up steps: (s + 1) / 5, then (1 - (s - 5) / 95) ** 2
    assert lr_factor(0, 100) == pytest.approx(0.2)
    assert lr_factor(4, 100) == pytest.approx(1.0)
    assert lr_factor(5, 100) == pytest.approx(1.0)
    assert lr_factor(24, 100) == pytest.approx(0.8 ** 2)
    assert lr_factor(99, 100) == pytest.approx((1 / 95) ** 2)
    assert lr_factor(0, 100, warmup=0.0) == pytest.approx(1.0)


def test_batch_plan_depends_on_the_seed_only():
    idx, flips = batch_plan(10, 7, 3, seed=4)
    assert idx.shape == (7, 3) and flips.shape == (7, 3) and flips.dtype == bool
    for e in range(2):  # 3 batches per epoch (the 10th image is dropped), each epoch a permutation
        epoch = idx[3 * e:3 * e + 3].ravel()
        assert len(set(epoch.tolist())) == 9
    again = batch_plan(10, 7, 3, seed=4)
    assert (again[0] == idx).all() and (again[1] == flips).all()
    assert not (batch_plan(10, 7, 3, seed=5)[0] == idx).all()
    with pytest.raises(ValueError, match="larger than the training set"):
        batch_plan(4, 1, 5, seed=0)


def _run(clipper, norms):
    p = torch.nn.Parameter(torch.zeros(1))
    after = []
    for v in norms:
        p.grad = torch.tensor([float(v)])
        clipper([p])
        after.append(float(p.grad.abs()))
    return after


def test_scaled_clipping_follows_the_step0_norm_and_ignores_the_scale():
    norms = [55.0, 40.0, 3.0, 10.0, 5.0]
    c = GradClipper("scaled", factor=0.1)
    after = _run(c, norms)
    # threshold 0.1 x 55 = 5.5 on every step, step 0 included
    assert c.clipped == [True, True, False, True, False]
    assert after == pytest.approx([5.5, 5.5, 3.0, 5.5, 5.0], rel=1e-5)
    scaled = GradClipper("scaled", factor=0.1)
    _run(scaled, [24 / 64 * v for v in norms])
    assert scaled.clipped == c.clipped  # a head with 64/24 smaller gradients is clipped exactly alike
    fixed = GradClipper(5.0)
    _run(fixed, [24 / 64 * v for v in norms])
    assert fixed.clipped == [True, True, False, False, False]  # a fixed threshold spares the small-scale head
    off = GradClipper("off")
    assert _run(off, norms) == pytest.approx(norms) and not any(off.clipped)
    act = c.activity()
    assert act["fraction"] == pytest.approx(3 / 5) and act["mode"] == "scaled"
    assert act["threshold"] == pytest.approx(5.5) and act["fraction_last_quarter"] == 0.0
    with pytest.raises(ValueError, match="clip must be"):
        GradClipper("sometimes")


def test_clipping_equals_torch_clip_grad_norm():
    torch.manual_seed(0)
    a = [torch.nn.Parameter(torch.zeros(3, 4)), torch.nn.Parameter(torch.zeros(5))]
    b = [torch.nn.Parameter(torch.zeros(3, 4)), torch.nn.Parameter(torch.zeros(5))]
    for pa, pb in zip(a, b):
        pa.grad = torch.randn_like(pa)
        pb.grad = pa.grad.clone()
    norm = GradClipper(1.5)(a)
    ref = torch.nn.utils.clip_grad_norm_(b, 1.5)
    assert norm == pytest.approx(float(ref), rel=1e-6)
    for pa, pb in zip(a, b):
        torch.testing.assert_close(pa.grad, pb.grad)


def test_config_validation():
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        TrainConfig(steps=0).validate()
    with pytest.raises(ValueError, match="network must be one of"):
        TrainConfig(network="r50").validate()
    with pytest.raises(ValueError, match="clip must be"):
        TrainConfig(clip=-1).validate()
    assert TrainConfig(clip="5").settings()["clip"] == 5.0


@pytest.mark.slow
def test_heads_start_alike_and_runs_are_reused(tiny_train_data, tmp_path):
    cfg = TrainConfig(steps=2, batch_size=8, embedding_size=32, seed=3, workers=0)
    a = train_model(cfg, tiny_train_data, "arcface", str(tmp_path / "a"), progress=False)
    b = train_model(cfg, tiny_train_data, "cosface", str(tmp_path / "b"), head_kwargs={"s": 24, "m": 0.35},
                    progress=False)
    lh = train_model(cfg, tiny_train_data, "lh2face", str(tmp_path / "lh"), progress=False)
    # same initialisation and first batch: identical first forward pass, whatever the head
    assert a.history["norm"][0] == b.history["norm"][0] == lh.history["norm"][0]
    assert a.history["accuracy"][0] == b.history["accuracy"][0]
    assert a.history["norm"][1] != b.history["norm"][1]  # then the heads' gradients differ
    other = train_model(TrainConfig(steps=2, batch_size=8, embedding_size=32, seed=4, workers=0), tiny_train_data,
                        "arcface", str(tmp_path / "a4"), progress=False)
    assert other.history["norm"][0] != a.history["norm"][0]
    info = json.load(open(os.path.join(tmp_path / "lh", "train.json")))
    assert info["head_state"]["running_mean"] > 0 and info["clip"]["mode"] == "scaled"
    assert len(info["history"]["grad_norm"]) == 2 and info["settings"]["seed"] == 3
    assert not a.reused

    again = train_model(cfg, tiny_train_data, "arcface", str(tmp_path / "a"), progress=False)
    assert again.reused and again.history == a.history
    for k, v in again.model.state_dict().items():
        assert torch.equal(v, a.model.state_dict()[k])
    copied = train_model(cfg, tiny_train_data, "arcface", str(tmp_path / "copy"), progress=False,
                         reuse_from=[str(tmp_path / "b"), str(tmp_path / "a")])
    assert copied.reused and os.path.exists(tmp_path / "copy" / "model.pt")
    lines = []
    changed = train_model(TrainConfig(steps=2, batch_size=8, embedding_size=32, seed=3, lr=0.05, workers=0),
                          tiny_train_data, "arcface", str(tmp_path / "a"), progress=False, echo=lines.append)
    assert not changed.reused and "settings changed" in lines[0]

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    torch.save({}, foreign / "model.pt")
    with pytest.raises(FileExistsError, match="did not train"):
        train_model(cfg, tiny_train_data, "arcface", str(foreign), progress=False)


@pytest.mark.slow
def test_a_diverging_run_raises(tiny_train_data, tmp_path):
    cfg = TrainConfig(steps=3, batch_size=8, embedding_size=32, lr=1e12, clip="off", workers=0)
    with pytest.raises(FloatingPointError, match="lower the learning rate"):
        train_model(cfg, tiny_train_data, "arcface", str(tmp_path / "x"), progress=False)


@pytest.mark.slow
def test_a_render_input_module_trains_behind_the_same_backbone(tiny_train_data, tmp_path):
    from lh2face_plugin import build_input_module

    ckpt = str(tmp_path / "render.pt")
    build_input_module("render", width=4).save_reconstruction(ckpt)
    cfg = TrainConfig(steps=2, batch_size=8, embedding_size=32, seed=3, workers=0)
    kw = {"checkpoint": ckpt, "width": 4, "mode": "frozen", "lambda_canon": 0.5, "lambda_view": 0.1,
          "canon_fraction": 0.25}
    plain = train_model(cfg, tiny_train_data, "lh2face", str(tmp_path / "plain"), progress=False)
    r = train_model(cfg, tiny_train_data, "lh2face", str(tmp_path / "r"), progress=False, input_module="render",
                    input_kwargs=kw)
    state = torch.load(r.model_path, weights_only=True)
    assert any(k.startswith("render.net.") for k in state) and any(k.startswith("backbone.") for k in state)
    blob = torch.load(ckpt, weights_only=True)["state_dict"]
    for k, v in blob.items():  # frozen: the reconstruction is the checkpoint's
        assert torch.equal(state["render.net." + k], v)
    # the widened stem starts at zero on the extra channels: the first forward equals the plain backbone's
    assert r.history["norm"][0] == pytest.approx(plain.history["norm"][0], rel=1e-5)
    # the canonical rows' head loss and the view term are added to the head's loss (LH2Face's is negative)
    assert abs(r.history["loss"][0] - plain.history["loss"][0]) > 1e-3
    assert r.info["input_module"]["kwargs"] == kw and r.info["input_module"]["name"] == "render"
    assert r.info["input_module"]["resolved"] == {**build_input_module("render").resolved_kwargs({}), **kw}
    assert r.info["head_state"]["num_batches_tracked"] == 2, "the canonical rows leave the head's state alone"
    again = train_model(cfg, tiny_train_data, "lh2face", str(tmp_path / "r"), progress=False,
                        input_module="render", input_kwargs=kw)
    assert again.reused and type(again.model).__name__ == "RenderAugmentedModel"
    with torch.no_grad():
        x = torch.zeros(2, 3, 112, 112)
        assert torch.equal(again.model(x), r.model(x))
    # another reconstruction (same path, new content) is another run
    build_input_module("render", width=4).save_reconstruction(ckpt)
    changed = train_model(cfg, tiny_train_data, "lh2face", str(tmp_path / "r"), progress=False,
                          input_module="render", input_kwargs=kw, echo=lambda line: None)
    assert not changed.reused


def test_run_key_follows_the_head_defaults(monkeypatch):
    """A run is keyed by the hyperparameters the head is built with, not only by those written in the spec:
    after a default changes, an old run is not reused as if it were the new default."""
    from lh2face_plugin.heads.lh2face import LH2Face
    from lh2face_plugin.training import run_key

    cfg = TrainConfig()
    before = run_key(cfg, "lh2face", {}, "data")
    assert run_key(cfg, "lh2face", {}, "data") == before
    assert run_key(cfg, "lh2face", {"pp_scope": "shard"}, "data") != before
    defaults = list(LH2Face.__init__.__defaults__)
    names = LH2Face.__init__.__code__.co_varnames[1:LH2Face.__init__.__code__.co_argcount]
    defaults[names.index("pp_scope") - (len(names) - len(defaults))] = "shard"
    monkeypatch.setattr(LH2Face.__init__, "__defaults__", tuple(defaults))
    assert run_key(cfg, "lh2face", {}, "data") != before, "the same spec with a changed default is another run"


def test_run_key_of_an_input_module_names_its_changed_defaults(monkeypatch):
    """A render run that relied on a default which has changed since (lambda_canon, lambda_view,
    canon_fraction: PREVIOUS_DEFAULTS) gets another key, and one that named those values keeps its key."""
    from lh2face_plugin.render.module import RenderInputModule
    from lh2face_plugin.training import run_key

    cfg = TrainConfig()
    given = {"mode": "frozen", "width": 4}
    named = {**given, "lambda_canon": 0.0, "lambda_view": 0.0, "canon_fraction": 0.125}
    bare, explicit = (run_key(cfg, "arcface", {}, "data", "render", kw) for kw in (given, named))
    assert bare == explicit, "the defaults are the named values"
    init = RenderInputModule.__init__
    defaults = list(init.__defaults__)
    names = init.__code__.co_varnames[1:init.__code__.co_argcount]
    defaults[names.index("lambda_canon") - (len(names) - len(defaults))] = 0.5
    monkeypatch.setattr(init, "__defaults__", tuple(defaults))
    assert run_key(cfg, "arcface", {}, "data", "render", given) != bare, "a changed default is another run"
    assert run_key(cfg, "arcface", {}, "data", "render", named) == explicit
