"""Training a compact backbone with one head on a RecordIO set: the loop ``lh2face quickstart``
and ``lh2face bench`` share.

Fair by construction, whatever the head:

- **Same data, order and initialisation.** The batch order and the horizontal flips come
  from a plan drawn from the *training* seed (:func:`batch_plan`; the data's own seed made
  the images), the backbone is initialised from the training seed, the class proxies from
  a generator of their own, so two heads trained with one seed see identical batches and
  start from identical weights.
- **Same schedule.** SGD (momentum 0.9, weight decay 5e-4), linear warm-up over
  ``warmup`` of the steps, then polynomial decay (power 2) to 0, as arcface_torch's
  ``PolyScheduler``; the peak learning rate is a setting (``lh2face bench --lr-sweep``
  chooses it per head with one sweep).
- **Clipping that does not favour a logit scale.** A fixed norm threshold (arcface_torch clips
  the backbone at 5) cuts s=64 heads far more often than heads whose logits are a third as
  large (measured: 20-100% of ArcFace's late steps, never LH2Face's). At step 0 every head
  sees the same weights and the same batch, and the softmax is near uniform, so the
  backbone's gradient norm there, ``g0``, is proportional to the head's logit scale. The
  default ``clip="scaled"`` clips the backbone's gradient at ``clip_factor * g0`` on every
  step: multiplying a head's loss by a constant scales ``g0`` and every later norm alike, so
  the clipping decisions do not change. ``clip_factor = 0.1`` gives ArcFace (s=64,
  ``g0`` = 52 on compact-tiny with training seed 0) about arcface_torch's threshold of 5.
  ``clip="off"`` or a number (a fixed threshold) are the alternatives. Every step's norm and
  whether it was clipped are kept in the history.

A finished run is reused when its folder holds a ``train.json`` with the same key (the
settings, the head and its parameters, and the training data's content) and a ``model.pt``
whose SHA-256 is the one recorded there.
"""
from __future__ import annotations

from ..input_args import recorded_input_kwargs
from .clipping import GradClipper, parse_clip
from .config import TrainConfig
from .keys import TRAINING_VERSION, data_fingerprint, run_key, spec_key
from .loop import PROXY_INIT_STD, train_model
from .model import build_model
from .plots import plot_training
from .runs import TrainResult, load_trained_model, trained_info
from .schedule import batch_plan, lr_factor

__all__ = ["TrainConfig", "TrainResult", "train_model", "build_model", "load_trained_model", "trained_info",
           "batch_plan", "lr_factor", "GradClipper", "data_fingerprint", "run_key", "spec_key", "plot_training",
           "TRAINING_VERSION", "PROXY_INIT_STD", "parse_clip", "recorded_input_kwargs"]
