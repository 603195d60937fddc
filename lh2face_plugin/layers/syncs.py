"""Count the operations that would make the host wait for a CUDA device.

On CUDA, an operation whose output shape or Python value depends on the data (``nonzero``,
boolean-mask indexing, ``.item()``, ``bool(t)``, ``unique``) copies a result to the host and
waits for every kernel queued before it. :class:`HostSyncCounter` records these operations as
they are dispatched, on any device, so a CPU test can prove that a step issues none of them
inside its block loop (the count must not grow with the number of blocks). On a GPU,
``torch.cuda.set_sync_debug_mode("error")`` checks the same thing from the driver's side.
"""
from __future__ import annotations

import collections
from typing import Counter, Sequence

import torch
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["HostSyncCounter", "SYNC_OPS"]

_aten = torch.ops.aten
SYNC_OPS = frozenset({
    _aten._local_scalar_dense, _aten.nonzero, _aten.nonzero_static, _aten.masked_select, _aten.is_nonzero,
    _aten._unique2, _aten.unique_consecutive, _aten.unique_dim, _aten.equal, _aten.allclose,
})
"""Operator packets that always wait for the device (``.item()``, ``float(t)`` and ``bool(t)``
reach ``_local_scalar_dense``)."""

_INDEXING = frozenset({_aten.index, _aten.index_put, _aten.index_put_, _aten._index_put_impl_})


def _bool_index(indices: Sequence) -> bool:
    return any(isinstance(t, torch.Tensor) and t.dtype in (torch.bool, torch.uint8) for t in indices or ())


class HostSyncCounter(TorchDispatchMode):
    """A dispatch mode that counts host-synchronising operators by name.

    Counted: :data:`SYNC_OPS`, indexing with a boolean mask (it runs ``nonzero``) and
    ``repeat_interleave`` without ``output_size``.

    Example::

        with HostSyncCounter() as syncs:
            loss = layer(x, labels)
            loss.backward()
        assert syncs.total == 0, syncs.ops
    """

    def __init__(self):
        super().__init__()
        self.ops: Counter[str] = collections.Counter()

    @property
    def total(self) -> int:
        return sum(self.ops.values())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        packet = func.overloadpacket
        if packet in SYNC_OPS:
            self.ops[packet.__name__] += 1
        elif packet in _INDEXING and len(args) > 1 and _bool_index(args[1]):
            self.ops[f"{packet.__name__}[bool mask]"] += 1
        elif packet is _aten.repeat_interleave and kwargs.get("output_size") is None and len(args) < 3:
            self.ops["repeat_interleave"] += 1
        return func(*args, **kwargs)
