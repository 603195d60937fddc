import pytest
import torch

from _helpers_render import WITH_TERMS, TinyBackbone, posed_render_module, random_faces
from lh2face_plugin import available_input_modules, build_input_module
from lh2face_plugin.render.module import RenderAugmentedModel, RenderInputModule


def test_render_is_registered_and_builds_with_recipe_parameters():
    assert "render" in available_input_modules()
    m = build_input_module("render", lambda_reco=2.0, lambda_canon=0.25, lambda_view=0.5, width=4)
    assert isinstance(m, RenderInputModule)
    assert (m.lambda_reco, m.lambda_canon, m.lambda_view) == (2.0, 0.25, 0.5)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"mode": "train"}, "mode"), ({"lambda_view": -1}, "lambda_view"), ({"canon_fraction": 0}, "canon_fraction"),
     ({"albedo": "canonical"}, "albedo must be one of"), ({"channels": "rgb"}, "channels must be one of")],
)
def test_bad_parameters_raise_named_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_input_module("render", **kwargs)


def test_output_shapes_and_untrained_module_is_the_identity_warp():
    m = build_input_module("render", width=4)
    x = random_faces(2)
    out = m(x)
    assert out["input"].shape == (2, 7, 112, 112)
    assert out["canonical"].shape == (2, 3, 112, 112) and out["depth"].shape == (2, 1, 112, 112)
    assert torch.allclose(out["canonical"], x, atol=1e-4)
    assert torch.allclose(out["input"][:, :3], x)


@pytest.mark.parametrize("channels, zeroed, kept", [("depth", slice(3, 6), slice(6, 7)),
                                                    ("canonical", slice(6, 7), slice(3, 6))])
def test_a_channel_ablation_zeroes_only_the_other_channels(channels, zeroed, kept):
    x = random_faces(2)
    full = posed_render_module(seed=3)(x)
    out = posed_render_module(seed=3, channels=channels)(x)
    assert full["input"][:, zeroed].abs().amax() > 0.1
    assert torch.equal(out["input"][:, zeroed], torch.zeros_like(out["input"][:, zeroed]))
    assert torch.equal(out["input"][:, kept], full["input"][:, kept])
    assert torch.equal(out["input"][:, :3], x)
    assert torch.equal(out["canonical"], full["canonical"]) and torch.equal(out["depth"], full["depth"])


def test_gradients_reach_every_reconstruction_output():
    m = posed_render_module(canon_fraction=1.0, **WITH_TERMS)
    model = m.wrap(TinyBackbone())
    x = random_faces(3)
    emb, out = model.forward_train(x)
    rec = out["aux"]["reconstruction"]
    for name in ("depth", "albedo", "confidence", "light", "view"):
        getattr(rec, name).retain_grad()
    labels_seen = []

    def canon_loss(e):
        labels_seen.append(e.shape[0])
        return e.pow(2).mean()

    terms = m.losses(out, embed_fn=model.backbone, input_embedding=emb, canon_loss_fn=canon_loss)
    for key in ("photo", "flip", "identity", "reco", "canon", "view", "total"):
        assert terms[key].dim() == 0 and torch.isfinite(terms[key]), key
    assert terms["identity"] > 0 and terms["view"] > 0
    assert labels_seen == [3] and terms["canon_embedding"].shape == (3, 32)
    terms["total"].backward()
    for name in ("depth", "albedo", "confidence", "light", "view"):
        g = getattr(rec, name).grad
        assert g is not None and g.abs().sum() > 0, name
    assert model.backbone.conv.weight.grad[:, 3:].abs().sum() > 0  # the zero-started channels learn


def test_frontalised_albedo_rerenders_the_input_where_the_warp_inverts():
    x = torch.nn.functional.interpolate(random_faces(2)[:, :, :8, :8], size=(112, 112), mode="bilinear")
    errors = {}
    for albedo in ("predicted", "frontalised"):
        m = posed_render_module(albedo=albedo)
        out = m(x)
        r = m.rerender(out)
        valid = r["valid"].bool().expand_as(x)
        assert valid.float().mean() > 0.05
        errors[albedo] = float((r["view"].detach() - (x + 1) / 2).abs()[valid].mean())
        terms = m.losses(out)
        terms["reco"].backward()
        assert m.net.global_head[-1].weight.grad.abs().sum() > 0, "the viewpoint gets a gradient"
        if albedo == "frontalised":
            assert torch.equal(r["shaded"], (out["canonical"] + 1) / 2)
            assert m.net.out[-1].weight.grad[1:4].abs().sum() == 0, "the albedo maps are unused"
    assert errors["frontalised"] < 0.02 < errors["predicted"], errors


def test_total_is_the_weighted_sum():
    m = posed_render_module(lambda_reco=0.7, lambda_canon=0.3, lambda_view=2.0, photo_weight=0.4)
    model = m.wrap(TinyBackbone())
    emb, out = model.forward_train(random_faces(2))
    t = m.losses(out, embed_fn=model.backbone, input_embedding=emb, canon_loss_fn=lambda e: e.abs().mean())
    assert torch.allclose(t["reco"], 0.4 * t["photo"] + m.flip_weight * t["flip"] + m.identity_weight * t["identity"])
    assert torch.allclose(t["total"], 0.7 * t["reco"] + 0.3 * t["canon"] + 2.0 * t["view"])


def test_canon_fraction_embeds_the_first_rows_only():
    m = posed_render_module(canon_fraction=0.5)
    model = m.wrap(TinyBackbone())
    emb, out = model.forward_train(random_faces(4))
    seen = []

    def embed(x):
        seen.append(x.shape[0])
        return model.backbone(x)

    t = m.losses(out, embed_fn=embed, input_embedding=emb)
    assert int(t["canon_rows"]) == 2 and t["canon_embedding"].shape[0] == 2
    assert seen == [4], "canonical and re-rendered faces of the first 2 rows, in one backbone call"
    assert t["identity"] > 0


def test_frozen_mode_has_no_reconstruction_gradient_or_loss(tmp_path):
    src = posed_render_module()
    path = tmp_path / "rec.pt"
    src.save_reconstruction(str(path))
    m = build_input_module("render", width=4, mode="frozen", checkpoint=str(path), **WITH_TERMS)
    assert all(not p.requires_grad for p in m.net.parameters())
    model = m.wrap(TinyBackbone()).train()
    assert not m.net.training
    x = random_faces(2)
    with torch.no_grad():
        assert torch.allclose(m(x)["canonical"], src.eval()(x)["canonical"], atol=1e-6)
    emb, out = model.forward_train(x)
    t = m.losses(out, embed_fn=model.backbone, input_embedding=emb)
    assert t["reco"] == 0
    t["total"].backward()
    assert model.backbone.conv.weight.grad is not None


def test_defaults_are_the_measured_configuration():
    """lambda_canon = lambda_view = 0 and canon_fraction 0.125 (docs/render.md, "Defaults")."""
    m = build_input_module("render", width=4)
    assert (m.lambda_canon, m.lambda_view, m.canon_fraction) == (0.0, 0.0, 0.125)
    assert set(RenderInputModule.PREVIOUS_DEFAULTS) == {"lambda_canon", "lambda_view", "canon_fraction"}


@pytest.mark.parametrize("mode", ["frozen", "joint"])
def test_without_canonical_terms_no_canonical_pass_is_made(tmp_path, mode):
    """At the defaults the canonical face feeds the input only: no extra backbone pass, no L_FR^canon call;
    a frozen module leaves no pending item, so a loss popping it adds nothing."""
    path = tmp_path / "rec.pt"
    posed_render_module().save_reconstruction(str(path))
    kwargs = {"checkpoint": str(path), "mode": mode} if mode == "frozen" else {"identity_weight": 0.0}
    m = build_input_module("render", width=4, **kwargs)
    model = m.wrap(TinyBackbone()).train()
    calls = []

    def embed(x):
        calls.append(("embed", x.shape[0]))
        return model.backbone(x)

    def canon_loss(e):
        calls.append(("canon", e.shape[0]))
        return e.sum()

    x = random_faces(8)
    emb, out = model.forward_train(x)
    t = m.losses(out, embed_fn=embed, input_embedding=emb, canon_loss_fn=canon_loss)
    assert calls == [] and "canon_rows" not in t and "canon_embedding" not in t
    assert float(t["canon"]) == float(t["view"]) == 0.0
    model(x)
    assert (model.pop_pending() is None) == (mode == "frozen")
    for weights, want in (({"lambda_canon": 0.5}, [("embed", 1), ("canon", 1)]),
                          ({"lambda_view": 0.1}, [("embed", 1)])):
        calls.clear()
        for name, value in weights.items():
            setattr(m, name, value)
        t = m.losses(out, embed_fn=embed, input_embedding=emb, canon_loss_fn=canon_loss)
        assert calls == want and t["canon_rows"] == 1, weights   # 0.125 of 8 rows
        m.lambda_canon = m.lambda_view = 0.0


def test_frozen_mode_without_checkpoint_is_refused():
    """A frozen reconstruction without weights would train recognition behind a random, fixed one."""
    with pytest.raises(ValueError, match=r"^checkpoint is required with mode='frozen': the path of the "
                                         r"reconstruction to keep fixed \(written by `lh2face render pretrain"):
        build_input_module("render", width=4, mode="frozen")


def test_checkpoint_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        build_input_module("render", checkpoint=str(tmp_path / "missing.pt"))
    bad = tmp_path / "bad.pt"
    torch.save({"weights": 1}, bad)
    with pytest.raises(ValueError, match="bad.pt"):
        build_input_module("render", checkpoint=str(bad))
    good = tmp_path / "w4.pt"
    build_input_module("render", width=4).save_reconstruction(str(good))
    with pytest.raises(ValueError, match="width"):
        build_input_module("render", width=8, checkpoint=str(good))


def test_wrapped_model_takes_plain_rgb():
    m = posed_render_module()
    model = m.wrap(TinyBackbone(embedding_size=16)).eval()
    assert isinstance(model, RenderAugmentedModel)
    assert model(random_faces(2)).shape == (2, 16)


@pytest.mark.parametrize("fusion", ["widen", "adapter"])
def test_wrapped_model_equals_the_plain_backbone_at_init_whatever_the_reconstruction(fusion):
    import copy

    backbone = TinyBackbone().eval()
    plain = copy.deepcopy(backbone)
    model = posed_render_module(fusion=fusion).wrap(backbone).eval()
    x = random_faces(2)
    with torch.no_grad():
        assert torch.allclose(model(x), plain(x), atol=1e-5)


def test_supervised_pretraining_loss_is_zero_at_the_truth_and_counts_the_depth_offset():
    from lh2face_plugin.render.network import Reconstruction
    from lh2face_plugin.render.pretrain import supervised_loss

    depth = torch.randn(2, 1, 16, 16)
    view = torch.randn(2, 6)
    mask = torch.rand(2, 1, 16, 16) > 0.3
    off_face = torch.where(mask, depth, torch.randn_like(depth))
    rec = Reconstruction(depth=off_face, albedo=None, confidence=None, light=None, view=view)
    truth = {"canonical_depth": depth, "canonical_mask": mask, "view": view}
    assert supervised_loss({"aux": {"reconstruction": rec}}, truth).abs() < 1e-6
    rec.depth = off_face + 0.7
    assert torch.allclose(supervised_loss({"aux": {"reconstruction": rec}}, truth), torch.tensor(0.7), atol=1e-5)
    rec.depth, rec.view = off_face, view + 0.1
    assert torch.allclose(supervised_loss({"aux": {"reconstruction": rec}}, truth), torch.tensor(0.1), atol=1e-5)


def test_pretrain_rejects_an_empty_objective():
    from lh2face_plugin.render.pretrain import pretrain

    with pytest.raises(ValueError, match="nothing to train"):
        pretrain(RenderInputModule(width=4), iter([]), 1, supervision=0.0, reco_weight=0.0, progress=False)


def test_synthetic_batches_with_truth_and_supervised_pretraining_fits_them():
    from lh2face_plugin.render.pretrain import pretrain, synthetic_batches

    batches = synthetic_batches(4, identities=3, pool=4, truth=True, seed=3)
    batch = next(batches)
    assert batch["images"].shape == (4, 3, 112, 112) and batch["images"].abs().max() <= 1
    assert batch["canonical_depth"].shape == batch["canonical_mask"].shape == (4, 1, 112, 112)
    assert batch["canonical_mask"].any() and batch["view"].shape == (4, 6)
    assert batch["view"][:, 0].abs().max() <= torch.deg2rad(torch.tensor(45.0)) + 1e-4
    torch.manual_seed(0)
    module = RenderInputModule(width=4)
    history = pretrain(module, iter([batch] * 12), 12, lr=1e-2, supervision=1.0, reco_weight=0.0, progress=False)
    assert "reco" not in history[0] and history[-1]["supervised"] < 0.8 * history[0]["supervised"]
