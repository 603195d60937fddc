"""Worker and reference for the Partial FC equivalence test (2 gloo processes vs one process)."""
from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F

import lh2face_plugin
from lh2face_plugin.distributed import DistContext

B, C, D, STEPS = 4, 40, 16, 2

def head_kwargs(name: str) -> dict:
    """The head's ``host`` row of the one table of head test cases (tests/heads/_helpers_heads.py):
    small scales keep float32 comparisons tight, every extra term is on."""
    from _helpers_heads import case_of

    return dict(case_of(name).host)


BLOCKWISE = dict(blockwise=True, block_elements=2 * B * 2)  # a few columns per block: many blocks per call
DENSE = dict(blockwise=False)


def cases():
    """(case id, head, sample_rate, fp16, label edit, Partial FC options) for every registered head,
    through the dense and the blockwise layer (and the default, blockwise on the CPU, once)."""
    out = []
    for name in lh2face_plugin.available_heads():
        for rate in (1.0, 0.5):
            out.append((f"{name}@{rate}", name, rate, False, None, DENSE))
            out.append((f"{name}@{rate}/blockwise", name, rate, False, None, BLOCKWISE))
    out.append(("arcface@ignore", "arcface", 1.0, False, "ignore", DENSE))
    out.append(("arcface@ignore/blockwise", "arcface", 1.0, False, "ignore", BLOCKWISE))
    out.append(("cosface@fp16", "cosface", 1.0, True, None, DENSE))
    out.append(("cosface@fp16/blockwise", "cosface", 1.0, True, None, BLOCKWISE))
    out.append(("lh2face@0.5/default", "lh2face", 0.5, False, None, {}))
    return out


def data(step: int, world: int, edit=None):
    g = torch.Generator().manual_seed(1000 + step)
    emb = torch.randn(B * world, D, generator=g) * 2.0
    labels = torch.randint(0, C, (B * world,), generator=g)
    if edit == "ignore":
        labels[1] = -1
        labels[B * world - 2] = -1
    return emb, labels


def initial_weight() -> torch.Tensor:
    return torch.randn(C, D, generator=torch.Generator().manual_seed(7)) * 0.5


def host_worker(rank: int, world: int, root: str, init_method: str):
    """A spawned rank's set-up: one thread, the gloo group, the checkout's ``partial_fc_v2`` on the CPU;
    returns that module and the plugin's Partial FC class on it."""
    from _helpers_dist import init_group

    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    init_group(init_method, rank, world)
    torch.Tensor.cuda = lambda self, *a, **k: self          # arcface_torch's hard-coded .cuda()
    sys.path.insert(0, root)
    import partial_fc_v2

    from lh2face_plugin.arcface_torch.partial_fc import partial_fc_class

    return partial_fc_v2, partial_fc_class(partial_fc_v2)


def worker(rank: int, world: int, root: str, init_method: str, out_dir: str) -> None:
    partial_fc_v2, PFC = host_worker(rank, world, root, init_method)
    results = {"is_subclass": issubclass(PFC, partial_fc_v2.PartialFC_V2)}
    for case_id, name, rate, fp16, edit, options in cases():
        pfc = PFC(lh2face_plugin.build_head(name, **head_kwargs(name)), D, C, rate, fp16, **options)
        with torch.no_grad():
            pfc.weight.copy_(initial_weight()[pfc.class_start:pfc.class_start + pfc.num_local])
        torch.manual_seed(100 + rank)
        steps = []
        for step in range(STEPS):
            emb, labels = data(step, world, edit)
            local = emb[rank * B:(rank + 1) * B].clone().requires_grad_()
            loss = pfc(local, labels[rank * B:(rank + 1) * B].clone())
            loss.backward()
            steps.append(dict(loss=loss.item(), grad_emb=local.grad.clone(), grad_w=pfc.weight.grad.clone(),
                              index=(pfc.weight_index + pfc.class_start).clone() if rate < 1 else None))
            pfc.weight.grad = None
        state = _copy_state(pfc.state_dict())
        fresh = PFC(lh2face_plugin.build_head(name, **head_kwargs(name)), D, C, rate, fp16, **options)
        fresh.load_state_dict(state)
        restored = all(_same(v, fresh.state_dict()[k]) for k, v in state.items())
        results[case_id] = dict(steps=steps, state=state, class_start=pfc.class_start, num_local=pfc.num_local,
                                restored=restored)
    results["host"] = {name: host_margin_loss(partial_fc_v2, name, rank, world) for name in registered_heads()}
    pfc = PFC(lh2face_plugin.build_head("arcface"), D, C, 1.0, False)
    try:
        pfc(torch.randn(B, D + 1), torch.zeros(B, dtype=torch.long))
        results["dim_error"] = None
    except ValueError as exc:
        results["dim_error"] = str(exc)
    labels = torch.zeros(B, dtype=torch.long)
    if rank == 1:
        labels[2] = C + 3
    try:
        pfc(torch.randn(B, D), labels)
        results["range_error"] = None
    except ValueError as exc:
        results["range_error"] = str(exc)
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    from _helpers_dist import leave_worker

    leave_worker()


def registered_heads():
    return sorted(lh2face_plugin.available_heads())


def host_margin_loss(host, name: str, rank: int, world: int):
    """A plugin head as ``margin_loss`` of arcface_torch's own ``PartialFC_V2`` (its
    ``margin_softmax(logits, labels)`` call and its ``DistCrossEntropy``): per step the loss and
    the gradients, or the error the head raised."""
    head = lh2face_plugin.build_head(name, **head_kwargs(name))
    pfc = host.PartialFC_V2(head, D, C, 1.0, False)
    with torch.no_grad():
        pfc.weight.copy_(initial_weight()[pfc.class_start:pfc.class_start + pfc.num_local])
    steps = []
    for step in range(STEPS):
        emb, labels = data(step, world)
        local = emb[rank * B:(rank + 1) * B].clone().requires_grad_()
        try:
            loss = pfc(local, labels[rank * B:(rank + 1) * B].clone())
        except Exception as exc:  # noqa: BLE001 - the message is the result
            return {"error": f"{type(exc).__name__}: {exc}"}
        loss.backward()
        steps.append(dict(loss=loss.item(), grad_emb=local.grad.clone(), grad_w=pfc.weight.grad.clone(),
                          class_start=pfc.class_start, num_local=pfc.num_local))
        pfc.weight.grad = None
    return {"steps": steps}


def host_reference(name: str, world: int):
    """One process: ``F.cross_entropy(head(cosine, labels), labels)`` on the global batch, or the
    error of a head whose logits need more than the cosines."""
    head = lh2face_plugin.build_head(name, **head_kwargs(name))
    head.setup_shard(C, D)
    out = []
    for step in range(STEPS):
        emb, labels = data(step, world)
        emb = emb.clone().requires_grad_()
        weight = initial_weight().requires_grad_()
        cosine = (F.normalize(emb) @ F.normalize(weight).t()).clamp(-1, 1)
        try:
            logits = head(cosine, labels)
        except TypeError as exc:
            return {"error": f"{type(exc).__name__}: {exc}"}
        loss = F.cross_entropy(logits, labels)
        loss.backward()
        out.append(dict(loss=loss.item(), grad_emb=emb.grad, grad_w=weight.grad))
    return {"steps": out}


def reference(name: str, rate: float, edit, world: int, sampled) -> list:
    """The single-process head on the global batch and all classes (or the classes the ranks sampled)."""
    head = lh2face_plugin.build_head(name, **head_kwargs(name))
    head.setup_shard(C, D)
    out = []
    for step in range(STEPS):
        emb, labels = data(step, world, edit)
        emb = emb.clone().requires_grad_()
        weight_all = initial_weight().requires_grad_()
        keep = labels != -1
        e, y = emb[keep], labels[keep]
        if rate < 1:
            index = sampled[step]
            weight, class_index, y = weight_all[index], index, torch.searchsorted(index, y)
        else:
            weight, class_index = weight_all, None
        x, w = F.normalize(e), F.normalize(weight)
        cosine = (x @ w.t()).clamp(-1, 1)
        res = head.evaluate(cosine, y, norms=e.norm(dim=1), embeddings=x, weights=w, class_index=class_index,
                   ctx=DistContext.single())
        loss = F.cross_entropy(res.logits, y)
        loss = loss if res.extra is None else loss + res.extra
        loss.backward()
        out.append(dict(loss=loss.item(), grad_emb=emb.grad, grad_w=weight_all.grad))
    out.append({"state": _copy_state(head.state_dict())})
    return out


def _copy_state(state):
    """Tensors cloned; the heads' extra state (their hyperparameters) as is."""
    return {k: v.clone() if torch.is_tensor(v) else v for k, v in state.items()}


def _same(a, b):
    return torch.equal(a, b) if torch.is_tensor(a) else a == b
