"""The plugin's PartialFC inside arcface_torch's real PartialFC_V2 machinery, 2 gloo processes on CPU,
against the single-process head (every registered head, sample_rate 1.0 and 0.5, dense and blockwise)."""
import pytest
import torch
import torch.multiprocessing as mp

import _helpers_pfc_dist as H
from _helpers_dist import file_rendezvous

WORLD = 2
pytestmark = pytest.mark.arcface_torch


@pytest.fixture(scope="module")
def ranks(arcface_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("pfc")
    mp.spawn(H.worker, args=(WORLD, arcface_root, file_rendezvous(out), str(out)), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


def _close(a, b, tol):
    torch.testing.assert_close(a, b, rtol=tol, atol=tol * 5e-2)


@pytest.mark.parametrize("case", [c[0] for c in H.cases()])
def test_same_loss_gradients_and_state_as_one_process(ranks, case):
    _, name, rate, fp16, edit, _ = next(c for c in H.cases() if c[0] == case)
    per_rank = [r[case] for r in ranks]
    sampled = None
    if rate < 1:
        sampled = [torch.cat([p["steps"][s]["index"] for p in per_rank]) for s in range(H.STEPS)]
        assert all(len(ix) < H.C for ix in sampled), "sampling must drop some classes"
    ref = H.reference(name, rate, edit, WORLD, sampled)
    tol = 5e-2 if fp16 else 1e-4      # fp16 autocast runs in bfloat16 on the CPU
    for step in range(H.STEPS):
        for rank, p in enumerate(per_rank):
            got, want = p["steps"][step], ref[step]
            assert got["loss"] == pytest.approx(want["loss"], rel=tol), f"step {step} rank {rank}"
            # AllGather's backward scales by the world size (DDP then averages over ranks)
            _close(got["grad_emb"] / WORLD, want["grad_emb"][rank * H.B:(rank + 1) * H.B], tol)
            lo, hi = p["class_start"], p["class_start"] + p["num_local"]
            _close(got["grad_w"], want["grad_w"][lo:hi], tol)
    ref_state = ref[-1]["state"]
    for rank, p in enumerate(per_rank):
        assert p["restored"], "load_state_dict must restore the head's state"
        for key, want in ref_state.items():
            got = p["state"]["margin_softmax." + key]
            if not torch.is_tensor(want):  # the head's hyperparameters
                assert got == want, key
                continue
            if want.dim() and want.shape[0] == H.C:
                want = want[p["class_start"]:p["class_start"] + p["num_local"]]
            _close(got.float(), want.float(), tol)


def test_runs_inside_partial_fc_v2(ranks):
    assert all(r["is_subclass"] for r in ranks)


COSINE_ONLY = {"arcface", "cosface", "combined", "mv-softmax", "sv-softmax", "curricularface", "elasticface"}


@pytest.mark.parametrize("name", H.registered_heads())
def test_a_plugin_head_is_margin_loss_of_the_real_partial_fc_v2(ranks, name):
    """arcface_torch's own PartialFC_V2(margin_loss=build_head(name), ...) on 2 ranks: a head whose
    logits need only the cosines gives the single-process loss and gradients; any other head stops
    with one line that names the plugin's Partial FC."""
    ref = H.host_reference(name, WORLD)
    per_rank = [r["host"][name] for r in ranks]
    if "error" in ref:
        assert name not in COSINE_ONLY
        for p in per_rank:
            assert p["error"] == ref["error"] and "\n" not in p["error"]
            assert "lh2face_plugin's Partial FC" in p["error"] and "PartialFC_V2" in p["error"]
        return
    for step in range(H.STEPS):
        want = ref["steps"][step]
        for rank, p in enumerate(per_rank):
            got = p["steps"][step]
            assert got["loss"] == pytest.approx(want["loss"], rel=1e-6, abs=1e-6), (step, rank)
            torch.testing.assert_close(got["grad_emb"] / WORLD, want["grad_emb"][rank * H.B:(rank + 1) * H.B],
                                       rtol=1e-6, atol=1e-6)
            lo, hi = got["class_start"], got["class_start"] + got["num_local"]
            torch.testing.assert_close(got["grad_w"], want["grad_w"][lo:hi], rtol=1e-6, atol=1e-6)


def test_cosine_only_heads_all_work_in_the_host():
    ok = {n for n in H.registered_heads() if "error" not in H.host_reference(n, WORLD)}
    assert ok == COSINE_ONLY & set(H.registered_heads())


def test_embeddings_of_the_wrong_dimension_are_named(ranks):
    for r in ranks:
        assert r["dim_error"] == f"embeddings must be [B, {H.D}] (embedding_size of this Partial FC), got shape " \
                                 f"({H.B}, {H.D + 1})"


def test_out_of_range_label_raises_on_every_rank_naming_the_row(ranks):
    for r in ranks:
        msg = r["range_error"]
        assert msg is not None and f"(rank 1, row 2 of its batch): {H.C + 3}" in msg and "num_classes" in msg
        assert f"[0, {H.C})" in msg and "num_classes" in msg
