"""Finite-number checks: every number the package reports comes from finite inputs."""
from __future__ import annotations

from typing import Any, Optional, Tuple

__all__ = ["require_finite_parameters", "finite_problem", "raise_nonfinite"]


def require_finite_parameters(module: Any, where: str) -> None:
    """Raise ``FloatingPointError`` naming the first parameter or buffer of ``module`` with NaN/Inf values.

    Args:
        module: a ``torch.nn.Module``.
        where: the model's name in the message (its checkpoint file, say).
    """
    import torch  # lazy: start-up (cli/render.py imports this module)

    for name, tensor in module.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise FloatingPointError(f"{where}: parameter {name!r} holds NaN or infinite values; nothing computed "
                                     "from this model would mean anything (a diverged run? use an earlier "
                                     "checkpoint)")


_NONFINITE_KINDS = ("norms at row {i}", "embeddings at row {i}", "cosines in column {i} on every row",
                    "features (cosines) at row {i}", "target cosines at row {i}", "class proxy at column {i}")
_PER_SHARD = (2, 3, 4, 5)
_NO_PROBLEM = 1 << 62


def finite_problem(cosine, target_cosine, norms, embeddings, weights) -> Optional[Tuple[int, int]]:
    """The first NaN/Inf among a head call's inputs as ``(kind, index)`` (see :data:`_NONFINITE_KINDS`), or None."""
    import torch  # lazy: start-up (cli/render.py imports this module)

    for kind, t in ((0, norms), (1, embeddings), (3, cosine), (4, target_cosine)):
        if t is None or bool(torch.isfinite(t).all()):
            continue
        bad = ~torch.isfinite(t.reshape(t.shape[0], -1))
        if t is cosine and (embeddings is None or bool(torch.isfinite(embeddings).all())):
            whole = torch.nonzero(bad.all(0)).reshape(-1)
            if whole.numel():  # a column bad on every row: its class proxy, not a sample
                return 2, int(whole[0])
        return kind, int(torch.nonzero(bad.any(1))[0])
    if weights is not None and not bool(torch.isfinite(weights).all()):
        return 5, int(torch.nonzero((~torch.isfinite(weights)).any(1))[0])
    return None


def raise_nonfinite(problem: Optional[Tuple[int, int]], ctx: Any, otherwise: Optional[str] = None) -> None:
    """Raise one ``FloatingPointError`` for ``problem`` (``(kind, index)`` or None), the same on every
    rank: with class shards (``ctx``, a :class:`~lh2face_plugin.distributed.DistContext`), one
    all-reduce picks the first problem of the lowest rank that has one, so a NaN seen by one shard
    alone stops every rank instead of leaving the others waiting. Where no rank has a problem,
    ``otherwise`` (if given) is raised on every rank."""
    import torch  # lazy: start-up (cli/render.py imports this module)

    rank = 0
    if ctx.sharded:
        code = _NO_PROBLEM if problem is None else (problem[0] << 48) | (ctx.rank << 32) | problem[1]
        found = torch.tensor([code], dtype=torch.int64,
                             device="cuda" if torch.distributed.get_backend(ctx.group) == "nccl" else "cpu")
        torch.distributed.all_reduce(found, op=torch.distributed.ReduceOp.MIN, group=ctx.group)
        code = int(found[0])
        if code == _NO_PROBLEM:
            if otherwise:
                raise FloatingPointError(otherwise)
            return
        problem, rank = (code >> 48, code & 0xFFFFFFFF), (code >> 32) & 0xFFFF
    elif problem is None:
        if otherwise:
            raise FloatingPointError(otherwise)
        return
    kind, index = problem
    where = f" of rank {rank}'s shard" if ctx.sharded and kind in _PER_SHARD else ""
    cause = ("(NaN/Inf in that class proxy of the FC weight)" if kind in (2, 5) else
             "(NaN/Inf in the backbone output or the class proxies; typical causes: fp16 overflow without a "
             "GradScaler, a learning rate too high)")
    raise FloatingPointError(f"non-finite {_NONFINITE_KINDS[kind].format(i=index)}{where} {cause}. Disable this "
                             "check with check_inputs=False, or let the loss be NaN so that a GradScaler skips "
                             "the step (Partial FC nonfinite='nan', the default under fp16).")
