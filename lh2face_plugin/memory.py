"""Peak memory of a piece of work, on the CPU too.

torch keeps allocator statistics for CUDA only. On the CPU the work runs once under
``torch.profiler`` with ``profile_memory=True``, and the peak is the running sum of its
allocation and free events; on CUDA it is ``max_memory_allocated``. Either way the figure
is the most bytes held during the work above what was held before it.
"""
from __future__ import annotations

import contextlib
import os
import sys
import warnings
from typing import Callable, Iterator

import torch

__all__ = ["peak_bytes"]


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence the profiler's start/stop lines (written by C++ to file descriptor 2)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def peak_bytes(fn: Callable[[], None], device: torch.device = torch.device("cpu")) -> int:
    """Run ``fn`` once; the peak bytes it held on ``device`` above the start."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    from torch.profiler import ProfilerActivity, profile  # optional: heavy

    with warnings.catch_warnings(), _quiet_stderr():
        warnings.simplefilter("ignore")
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
    events = [e for e in prof.profiler.kineto_results.events()
              if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU]
    level = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        level += event.nbytes()
        peak = max(peak, level)
    return peak
