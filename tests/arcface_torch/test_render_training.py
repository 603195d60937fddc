"""The render input module's loss terms in arcface_torch training: the wrapper's pending item, the pairing
done by activation, and (with a checkout) the plugin's PartialFC adding them to the head loss."""
import copy
import pickle

import pytest
import torch
import torch.nn.functional as F

import lh2face_plugin
from _helpers_render import WITH_TERMS, TinyBackbone, posed_render_module, random_faces
from lh2face_plugin.arcface_torch import activate as act
from lh2face_plugin.distributed import DistContext

B, C, D = 4, 10, 16


def _model(**kwargs):
    return posed_render_module(**{**WITH_TERMS, **kwargs}).wrap(TinyBackbone(embedding_size=D)).train()


def _grads(module):
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in module.parameters()]


def test_training_forward_keeps_one_pending_item_and_eval_keeps_none():
    model = _model()
    x, y = random_faces(B, seed=1), random_faces(B, seed=2)
    emb = model(x)
    want, _ = model.forward_train(x)
    torch.testing.assert_close(emb, want)
    model(y)
    pending = model.pop_pending()
    assert pending is not None and torch.equal(pending["aux"]["images"], y), "each forward replaces the item"
    assert model.pop_pending() is None, "popping clears the item"
    model(x)
    model.eval()
    assert model.pop_pending() is None, "eval() clears the item"
    model(x)
    assert model.pop_pending() is None, "evaluation-mode forwards keep nothing"


def test_copies_and_pickles_carry_no_pending_item():
    model = _model()
    model(random_faces(B))
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert clone.pop_pending() is None
    assert model.pop_pending() is not None


def _fake_head_loss(weight):
    def loss(emb, labels):
        return F.cross_entropy(F.normalize(emb) @ F.normalize(weight).t() * 8.0, labels)
    return loss


@pytest.mark.parametrize("canon_fraction", [1.0, 0.5])
def test_a_loss_popping_the_item_adds_the_render_terms(canon_fraction):
    model = _model(canon_fraction=canon_fraction)
    weight = torch.randn(C, D, generator=torch.Generator().manual_seed(3))
    head_loss = _fake_head_loss(weight)
    x, labels = random_faces(B), torch.arange(B) % C
    canon_rows = []

    def paired_loss(emb, labels):
        def canon(e):
            canon_rows.append(e.shape[0])
            return head_loss(e, labels[:e.shape[0]])
        terms = model.pending_losses(model.pop_pending(), emb, canon_loss_fn=canon)
        return head_loss(emb, labels) + terms["total"]

    got = paired_loss(model(x), labels)
    emb, out = model.forward_train(x)
    terms = model.render.losses(out, embed_fn=model.backbone, input_embedding=emb,
                                canon_loss_fn=lambda e: head_loss(e, labels[:e.shape[0]]))
    torch.testing.assert_close(got, head_loss(emb, labels) + terms["total"])
    assert terms["total"].abs() > 1e-3 and canon_rows == [terms["canon_rows"]] == [max(1, round(canon_fraction * B))]


def test_pending_losses_rejects_embeddings_of_another_batch():
    model = _model()
    emb = model(random_faces(B))
    with pytest.raises(ValueError, match=f"saw {B} images"):
        model.pending_losses(model.pop_pending(), emb[:2])


@pytest.fixture
def fake_trainer(fake_trainer, monkeypatch):
    monkeypatch.setattr(fake_trainer, "get_model", lambda name, **kw: TinyBackbone(embedding_size=D))
    return fake_trainer


def test_activation_pairs_the_render_model_with_the_partial_fc(fake_trainer):
    stock_pfc = fake_trainer.PartialFC_V2
    act.activate(fake_trainer, {"input_module": "render", "input_module_kwargs": {"width": 4}})
    model = fake_trainer.get_model("r50")
    pfc = fake_trainer.PartialFC_V2(lh2face_plugin.build_head("arcface"), D, C, 1.0, False)
    assert isinstance(pfc, stock_pfc) and type(pfc) is not stock_pfc, "the plugin class even without config.loss"
    assert pfc._input_model() is model
    assert not any(k.startswith(("render", "backbone")) for k in pfc.state_dict()), "the model is no submodule"
    with pytest.raises(TypeError, match="pop_pending"):
        pfc.pair_input_model(torch.nn.Linear(2, 2))


def test_wrapping_records_the_input_module_beside_the_future_model(fake_trainer, tmp_path):
    from lh2face_plugin.arcface_torch.input_record import RECORD_NAME, read_record

    out = tmp_path / "run"
    act.activate(fake_trainer, {"input_module": "render", "input_module_kwargs": {"width": 4}, "output": str(out)})
    fake_trainer.get_model("r50", dropout=0.0, fp16=True, num_features=D)
    record = read_record(str(out / "model.pt"))
    assert (record["name"], record["network"], record["kwargs"]) == ("render", "r50", {"width": 4})
    assert record["get_model_kwargs"] == {"dropout": 0.0, "fp16": True, "num_features": D}
    assert record["resolved"]["width"] == 4 and record["resolved"]["lambda_canon"] == 0.0
    (out / RECORD_NAME).write_text("[]")
    with pytest.raises(ValueError, match="not a record of lh2face_plugin's input module"):
        read_record(str(out / "model.pt"))
    assert read_record(str(tmp_path / "model.pt")) is None


def test_no_input_module_pairs_nothing(fake_trainer):
    act.activate(fake_trainer, {"loss": "arcface"})
    fake_trainer.get_model("r50")
    pfc = fake_trainer.PartialFC_V2(fake_trainer.CombinedMarginLoss(64, 1.0, 0.5, 0.0), D, C, 1.0, False)
    assert pfc._input_model is None


# -- the real PartialFC_V2 (one gloo process on the CPU) --------------------------------------------------

def _hand_head_loss(head, weight):
    """arcface_torch's loss on one process, written out: cross-entropy of the head's logits."""
    def loss(emb, labels):
        x, w = F.normalize(emb.float()), F.normalize(weight)
        out = head.evaluate((x @ w.t()).clamp(-1, 1), labels, norms=emb.float().norm(dim=1), embeddings=x, weights=w,
                   class_index=None, ctx=DistContext.single())
        value = F.cross_entropy(out.logits, labels)
        return value if out.extra is None else value + out.extra
    return loss


@pytest.mark.arcface_torch
@pytest.mark.parametrize("canon_fraction", [1.0, 0.5])
def test_partial_fc_adds_the_render_terms_and_trains_the_render_network(real_pfc_class, canon_fraction):
    model = _model(canon_fraction=canon_fraction)
    head = lh2face_plugin.build_head("arcface", s=8.0, m=0.5)
    pfc = real_pfc_class(head, D, C, 1.0, False)
    with torch.no_grad():
        pfc.weight.normal_(0, 1, generator=torch.Generator().manual_seed(5))
    pfc.pair_input_model(model)
    hand = _hand_head_loss(head, pfc.weight)
    net = model.render.net
    for step in range(2):                                   # a second step: the batch-size check holds
        x = random_faces(B, seed=10 + step)
        labels = torch.randint(0, C, (B,), generator=torch.Generator().manual_seed(20 + step))
        model.zero_grad()
        loss = pfc(model(x), labels.clone())
        assert model.pop_pending() is None, "the loss consumes the pending item"
        loss.backward()
        got = _grads(net)

        model.zero_grad()
        emb, out = model.forward_train(x)
        plain = hand(emb, labels)
        terms = model.render.losses(out, embed_fn=model.backbone, input_embedding=emb,
                                    canon_loss_fn=lambda e: hand(e, labels[:e.shape[0]]))
        torch.testing.assert_close(loss, plain + terms["total"], rtol=1e-5, atol=1e-6)
        assert terms["total"].abs() > 1e-3 and terms["canon"] > 0
        (plain + terms["total"]).backward(retain_graph=True)
        want = _grads(net)
        # float32 sums in another order; a few small view-head gradients cancel to ~1e-4 of their size
        flat_got, flat_want = torch.cat([g.flatten() for g in got]), torch.cat([w.flatten() for w in want])
        assert (flat_got - flat_want).norm() <= 1e-5 * flat_want.norm(), f"step {step}: gradients differ"
        model.zero_grad()
        plain.backward()
        plain_only = _grads(net)
        assert sum(g.abs().sum() for g in got) > 0, "gradients must reach the render network"
        assert any(not torch.allclose(g, p) for g, p in zip(got, plain_only)), "the render terms must add gradient"


@pytest.mark.arcface_torch
def test_partial_fc_without_a_pending_item_is_the_plain_head_loss(real_pfc_class):
    model = _model()
    head = lh2face_plugin.build_head("arcface", s=8.0, m=0.5)
    pfc = real_pfc_class(head, D, C, 1.0, False)
    pfc.pair_input_model(model)
    x, labels = random_faces(B), torch.arange(B)
    model.eval()
    emb = model(x)
    torch.testing.assert_close(pfc(emb, labels), _hand_head_loss(head, pfc.weight)(emb, labels))



@pytest.mark.arcface_torch
def test_partial_fc_with_the_default_frozen_module_is_the_plain_head_loss(real_pfc_class, tmp_path):
    """The recipe's configuration (frozen, lambda_canon = lambda_view = 0): the loss is the head's alone, and
    the Partial FC makes no canonical call (no second collective, no backbone pass on canonical faces)."""
    ckpt = str(tmp_path / "render.pt")
    posed_render_module().save_reconstruction(ckpt)
    model = lh2face_plugin.build_input_module("render", width=4, mode="frozen", checkpoint=ckpt)
    model = model.wrap(TinyBackbone(embedding_size=D)).train()
    head = lh2face_plugin.build_head("arcface", s=8.0, m=0.5)
    pfc = real_pfc_class(head, D, C, 1.0, False)
    pfc.pair_input_model(model)
    pfc._canonical_loss = lambda labels: pytest.fail("no canonical loss at the defaults")
    x, labels = random_faces(B), torch.arange(B) % C
    emb = model(x)
    loss = pfc(emb, labels.clone())
    torch.testing.assert_close(loss, _hand_head_loss(head, pfc.weight)(emb, labels))
    assert not any(k.startswith("render_") for k in pfc.last_terms)


def test_canonical_call_leaves_head_state_alone(real_pfc_class):
    """The canonical-face loss runs the head in eval mode: stateful heads update once per step."""
    import lh2face_plugin

    head = lh2face_plugin.build_head("lh2face", lambda_pp=0.0)
    pfc = real_pfc_class(head, 8, 6, 1.0, False)
    torch.manual_seed(0)
    labels = torch.arange(4) % 6
    pfc._canonical_loss(labels)(torch.randn(4, 8) * 20)
    assert int(head.num_batches_tracked) == 0 and head.training
    pfc(torch.randn(4, 8) * 20, labels)
    assert int(head.num_batches_tracked) == 1
