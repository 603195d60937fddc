"""The head's loss components in arcface_torch's own log and tensorboard.

``train_v2`` logs the mean loss every ``config.frequent`` steps through its
``CallBackLogging`` (to ``training.log`` and the ``loss`` scalar of its
``SummaryWriter``). :func:`term_logging` wraps that class: each call also averages the
Partial FC's ``last_terms`` (name -> detached 0-d tensor of the last forward, e.g.
``loss``, ``ce``, ``pps``, ``pns``, ``pp``, ``mu``) and, on the steps the host logs,
writes one more line

    ``lh2face terms (mean of 2 steps): loss -77.4131  ce 9.2834  pps -86.7557  pns 0.0000  pp 0.0592  mu 22.6148``

(a CPU run of the stock command) and the scalars ``lh2face/<name>`` to the same writer.
The loss that arcface_torch prints is ``ce`` plus the weighted terms; LH2Face's ``pps``
(0.1 times a vMF negative log-density on the 511-sphere, whose ``log C_512(kappa)`` is
about 864-868 for kappa in [16, 64]) is why its total is negative.
"""
from __future__ import annotations

import functools
import logging
from collections import defaultdict
from typing import Any, Callable, Dict, Mapping

__all__ = ["term_logging", "TermLogging", "format_terms"]


def format_terms(means: Mapping[str, float], steps: int) -> str:
    """``lh2face terms (mean of N steps): loss ... ce ...`` (insertion order of ``means``)."""
    body = "  ".join(f"{k} {v:.4f}" for k, v in means.items())
    return f"lh2face terms (mean of {steps} step{'s' if steps != 1 else ''}): {body}"


class TermLogging:
    """arcface_torch's ``CallBackLogging`` plus the Partial FC's loss components.

    Args:
        inner: the host's ``CallBackLogging`` instance (its ``rank``, ``frequent``, ``init``
            and ``writer`` are read, never changed).
        source: returns the Partial FC whose ``last_terms`` to log (or ``None``).
    """

    def __init__(self, inner, source):
        self.inner, self.source = inner, source
        self._sums: Dict[str, float] = defaultdict(float)
        self._steps = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __call__(self, global_step: int, loss, epoch: int, fp16: bool, learning_rate: float, grad_scaler):
        inner = self.inner
        if inner.rank == 0:
            pfc = self.source()
            terms = getattr(pfc, "last_terms", None) or {}
            for name, value in terms.items():
                self._sums[name] += float(value)
            self._steps += 1 if terms else 0
        logs = inner.rank == 0 and global_step > 0 and global_step % inner.frequent == 0 and inner.init
        inner(global_step, loss, epoch, fp16, learning_rate, grad_scaler)
        if logs and self._steps:
            means = {k: v / self._steps for k, v in self._sums.items()}
            logging.info(format_terms(means, self._steps))
            if inner.writer is not None:
                for name, value in means.items():
                    inner.writer.add_scalar(f"lh2face/{name}", value, global_step)
            self._sums.clear()
            self._steps = 0


def term_logging(original, activation: Callable[[], Any]):
    """The factory rebound as the trainer's ``CallBackLogging``: the host's class, wrapped.

    ``activation()`` returns the trainer's :class:`~.activate.Activation` (or ``None``) when a logger is built.
    """

    @functools.wraps(original)
    def CallBackLogging(*args, **kwargs):
        inner = original(*args, **kwargs)
        act = activation()
        if act is None or act.spec.loss is None:
            return inner
        return TermLogging(inner, lambda: act.partial_fc)

    return CallBackLogging
