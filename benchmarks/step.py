"""One training step of the classification layer, and of the whole model, as ratios measured in one run.

The classification layer is everything after the backbone: all-gather, class sampling,
cosine matmul, head, distributed cross-entropy, and backward to the embeddings and the
class weights. Variants, built on one single-process torch.distributed group (gloo on
CPU, nccl on CUDA):

* baseline: arcface_torch's own ``PartialFC_V2`` + ``CombinedMarginLoss(64, 1, 0.5, 0)``
  (ArcFace), imported from the checkout (``--arcface-root`` / ``ARCFACE_TORCH_ROOT``);
  on CPU its hard-coded ``.cuda()`` calls are made identities inside this process
  (``lh2face_plugin.arcface_torch.compat.cpu_only``);
* each Partial FC of :data:`LAYERS` other than the baseline (``--layers``, default the
  plugin's ``partial_fc_class``) with every head of :data:`HEADS` at its defaults.

Every variant shares one weight tensor and one set of inputs (embeddings ``[N, D]``, a
leaf standing in for the backbone output, and labels in ``[0, C_local)``); a USS memory
starts filled, as after its warm-up. Ratios: each row against the baseline, and each
head against the plugin's ArcFace with the goal of issue 12 where it states one.

Definitions:

* time: wall clock of forward + backward (CUDA synchronised), median of ``--repeats``
  after one warm-up step, variants interleaved within each repeat.
* peak memory of the classification layer: the most bytes the allocator holds during
  forward + backward minus what it held just before the step. Held before the step, and
  so not counted: the weight ``[C_local, D]`` and the head's buffers (USS memory), the
  embeddings and labels. The weight's ``.grad`` is ``None`` before the step
  (``optimizer.zero_grad(set_to_none=True)``, torch's default and arcface_torch's), so
  the peak includes the weight gradient, ``C_local * D * 4`` bytes, which every variant
  allocates; the column ``excl. grad`` gives the ratio with it subtracted from both
  sides. The embeddings' gradient is counted too (``N * D * 4`` bytes).
  CPU: torch has no CPU allocator statistics; the step runs once under
  ``torch.profiler`` with ``profile_memory=True`` and the peak is the running sum of
  its allocation and free events (checked at start on a known allocation pattern;
  ``--check-meter`` prints the check). CUDA: ``torch.cuda.max_memory_allocated``.
* whole step (``--backbone``, default ``compact`` on CPU, ``r50`` from the checkout on
  CUDA): images ``[N_b, 3, 112, 112]`` -> backbone -> layer -> backward, no optimiser
  step; its peak includes the backbone's activations. ``N_b`` = ``--backbone-rows``
  (default 64 on CPU, where a compact step at N = 512 takes a minute, N on CUDA).

Precision (``--dtype``): ``fp32`` runs both layers with ``fp16=False``. ``fp16`` and
``bf16`` build the backbone with ``fp16=True`` (its own autocast, float32 embeddings out)
and both layers with ``fp16=True`` (``--layer-dtype fp32`` keeps the layers in float32,
as ``train_v2`` builds ``PartialFC_V2(..., fp16=False)`` whatever ``config.fp16`` says),
and, inside this process only, make every enabled autocast use that dtype on
``--device`` (arcface_torch calls ``torch.cuda.amp.autocast(fp16)``, which is float16 and
does nothing on the CPU; the plugin's ``fp16`` means float16 on CUDA, bfloat16 on CPU).

Threads: ``torch.set_num_threads(--threads)``, default ``OMP_NUM_THREADS`` or 2 (the
project's CPU machine has 2 cores). Peak memory needs no quiet machine; time does. Cost
on that machine (shared): one step at C_local = 20k takes 2-6 s, at 200k about ten times
that, so the default CPU run (2 sizes x 8 variants x (warm-up + memory profile + 3
repeats), then the compact whole step) takes 20-30 minutes; ``--repeats 1 --backbone none``
or ``--heads`` for a quicker look.

    ARCFACE_TORCH_ROOT=... OMP_NUM_THREADS=2 python benchmarks/step.py                  # CPU: 20k, 200k
    ARCFACE_TORCH_ROOT=... python benchmarks/step.py --device cuda --classes 1000000 4000000 --dtype fp16
    python benchmarks/step.py --classes 2000 --rows 64 --dim 64 --repeats 1 --backbone none   # seconds

Layers (``--layers``): ``plugin`` (dense), ``blockwise`` (column blocks, recomputed in the
backward), ``blockwise-cached`` (keeps the cosines for the backward); a new variant is one
entry in :data:`LAYERS`.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import torch
import torch.distributed as dist

import lh2face_plugin
from lh2face_plugin.arcface_torch.compat import cpu_only
from lh2face_plugin.arcface_torch.partial_fc import partial_fc_class
from lh2face_plugin.fileio import write_json
from lh2face_plugin.memory import peak_bytes

MiB = 2 ** 20

# name -> f(host partial_fc_v2 module, margin head, embedding_size, num_classes, sample_rate, fp16, product dtype)
# -> layer; the plugin's layers take the product dtype (--dtype's half dtype), the host's PartialFC_V2 only fp16
LAYERS: Dict[str, Callable] = {
    "arcface_torch": lambda host, head, d, c, rate, fp16, mm: host.PartialFC_V2(head, d, c, rate, fp16),
    "plugin": lambda host, head, d, c, rate, fp16, mm: partial_fc_class(host)(head, d, c, rate, fp16, blockwise=False,
                                                                              matmul_dtype=mm),
    "blockwise": lambda host, head, d, c, rate, fp16, mm: partial_fc_class(host)(head, d, c, rate, fp16,
                                                                                 blockwise=True, matmul_dtype=mm),
    "blockwise-cached": lambda host, head, d, c, rate, fp16, mm: partial_fc_class(host)(
        head, d, c, rate, fp16, blockwise=True, cache_cosine=True, matmul_dtype=mm),
}

# (label, registered head, kwargs): every head at its defaults, plus LH2Face without its proxy losses
HEADS: List[Tuple[str, str, dict]] = [
    ("arcface", "arcface", {}),
    ("cosface", "cosface", {}),
    ("lh2face", "lh2face", {}),
    ("lh2face UAMF only", "lh2face", dict(lambda_pps=0.0, lambda_pns=0.0, lambda_pp=0.0)),
    ("lh2face pp_scope=shard", "lh2face", dict(pp_scope="shard")),
    ("mv-softmax", "mv-softmax", {}),
    ("sv-softmax", "sv-softmax", {}),
    ("uss", "uss", {}),
    ("uss negatives=batch", "uss", dict(negatives="batch")),
] + [(n, n, {}) for n in ("adaface", "magface", "curricularface", "elasticface")
     if n in lh2face_plugin.available_heads()]

# issue 16's goals for the step time relative to the same layer's ArcFace step
GOALS = {
    "plugin": {"mv-softmax": 1.05, "sv-softmax": 1.05, "lh2face UAMF only": 1.05, "lh2face": 1.15, "uss": 1.15},
    "blockwise": {label: 1.10 for label, _, _ in HEADS if label != "arcface"},
}

BASELINE = "arcface_torch PartialFC_V2 + CombinedMarginLoss (ArcFace)"


# ---------------------------------------------------------------------------------------- memory meter

def measure_step(fn: Callable[[], None], device: torch.device, memory: bool) -> Tuple[float, Optional[int]]:
    """(seconds, peak bytes above the start or None) of one call of ``fn``; CPU memory needs ``memory``."""
    if device.type == "cuda" or memory:
        t0 = time.perf_counter()
        peak = peak_bytes(fn, device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t0, peak
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0, None


def check_meter(device: torch.device) -> Tuple[int, int]:
    """(expected, measured) peak of a known pattern: 16 MiB, +8, -16, +24, then a 24 MiB temporary."""
    def pattern():
        a = torch.zeros(4 * MiB, device=device)
        b = torch.zeros(2 * MiB, device=device)
        del a
        c = torch.ones(6 * MiB, device=device)
        (c * 2).sum()
        del b, c

    pattern()
    measured = measure_step(pattern, device, memory=True)[1]
    return 56 * MiB, measured


# ---------------------------------------------------------------------------------------- precision

@contextlib.contextmanager
def forced_autocast(device_type: str, dtype: Optional[torch.dtype]) -> Iterator[None]:
    """Within the block every ``torch.autocast``/``torch.cuda.amp.autocast`` that is enabled casts to
    ``dtype`` on ``device_type`` (``dtype=None``: nothing is changed)."""
    if dtype is None:
        yield
        return
    original, original_cuda = torch.autocast, torch.cuda.amp.autocast

    class Forced(original):
        def __init__(self, device_type_=None, dtype_=None, enabled=True, cache_enabled=None, **kwargs):
            super().__init__(device_type, dtype=dtype, enabled=enabled, cache_enabled=cache_enabled)

    def forced_cuda(enabled=True, dtype_=None, cache_enabled=True, **kwargs):
        return Forced(enabled=enabled)

    torch.autocast, torch.cuda.amp.autocast = Forced, forced_cuda
    try:
        yield
    finally:
        torch.autocast, torch.cuda.amp.autocast = original, original_cuda


# ---------------------------------------------------------------------------------------- variants

@dataclass
class Variant:
    label: str
    layer_name: str
    head_name: str
    layer: torch.nn.Module
    times: List[float] = field(default_factory=list)
    peak: Optional[int] = None
    failed: str = ""


def host_modules(root: str):
    if not root or not os.path.isfile(os.path.join(root, "partial_fc_v2.py")):
        raise SystemExit("step.py needs arcface_torch's checkout: --arcface-root or ARCFACE_TORCH_ROOT "
                         f"(a folder with partial_fc_v2.py), got {root!r}")
    if root not in sys.path:
        sys.path.insert(0, root)
    return importlib.import_module("partial_fc_v2"), importlib.import_module("losses")


def make_head(name: str, kwargs: dict, dim: int):
    kw = dict(kwargs)
    if name == "lh2face":
        kw.setdefault("vmf_dim", dim)
    return lh2face_plugin.build_head(name, **kw)


@contextlib.contextmanager
def _no_weight_draw() -> Iterator[None]:
    """``PartialFC_V2.__init__`` draws ``torch.normal(0, 0.01, (C_local, D))`` on the CPU (seconds at
    millions of classes); every variant's weight is replaced by the shared one, so draw nothing."""
    original = torch.normal

    def empty_normal(*args, **kwargs):
        if len(args) == 3 and isinstance(args[2], (tuple, list, torch.Size)) and not kwargs:
            return torch.empty(args[2])
        return original(*args, **kwargs)

    torch.normal = empty_normal
    try:
        yield
    finally:
        torch.normal = original


def build_variants(host, losses, layers: List[str], dim: int, classes: int, rate: float, fp16: bool,
                   device: torch.device, weight: torch.nn.Parameter, mm: Optional[torch.dtype] = None
                   ) -> List[Variant]:
    with _no_weight_draw():
        out = [Variant(BASELINE, "arcface_torch", "arcface_torch",
                       LAYERS["arcface_torch"](host, losses.CombinedMarginLoss(64, 1.0, 0.5, 0.0), dim, classes,
                                               rate, fp16, mm))]
        for layer_name in layers:
            for label, name, kw in HEADS:
                head = make_head(name, kw, dim)
                out.append(Variant(f"{layer_name} {label}", layer_name, label,
                                   LAYERS[layer_name](host, head, dim, classes, rate, fp16, mm)))
    for v in out:
        v.layer.weight = weight          # one weight for all: memory for one, same values for all
        v.layer.to(device)
        head = getattr(v.layer, "margin_softmax", None)
        if hasattr(head, "memory") and hasattr(head, "filled") and head.memory.numel():
            with torch.no_grad():        # a filled USS memory, as after its warm-up
                gen = torch.Generator(device).manual_seed(1)
                head.memory.copy_(torch.randn(head.memory.shape, generator=gen, device=device))
                head.memory.div_(head.memory.norm(dim=1, keepdim=True))
                head.filled.fill_(True)
    return out


def _out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "can't allocate memory" in str(exc) \
        or "out of memory" in str(exc)


def run_variants(variants: List[Variant], step_fn: Callable[[Variant], Callable[[], None]], device: torch.device,
                 repeats: int) -> None:
    """Warm-up (and the CPU memory profile) of each variant, then ``repeats`` interleaved timed steps.

    A variant that runs out of memory is marked ``OOM`` and skipped from then on.
    """
    def attempt(v: Variant, fn: Callable[[], None]) -> bool:
        if v.failed:
            return False
        try:
            fn()
            return True
        except (RuntimeError, MemoryError) as exc:
            if not _out_of_memory(exc):
                raise
            v.failed = "OOM"
            v.layer.weight.grad = None
            if device.type == "cuda":
                torch.cuda.empty_cache()
            return False

    for v in variants:                                  # warm-up (lazy state, first-call allocations)
        if attempt(v, step_fn(v)) and device.type == "cpu":
            attempt(v, lambda: setattr(v, "peak", measure_step(step_fn(v), device, memory=True)[1]))
    for _ in range(repeats):
        for v in variants:
            result = []
            if attempt(v, lambda: result.append(measure_step(step_fn(v), device, memory=False))):
                t, peak = result[0]
                v.times.append(t)
                if peak is not None:
                    v.peak = max(v.peak or 0, peak)


def layer_step(v: Variant, emb: torch.Tensor, labels: torch.Tensor, amp: Optional[torch.dtype],
               device: torch.device) -> Callable[[], None]:
    v.layer.weight.grad = None
    emb.grad = None
    lab = labels.clone()

    def fn():
        with forced_autocast(device.type, amp):
            v.layer(emb, lab).backward()

    return fn


def whole_step(v: Variant, backbone: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
               amp: Optional[torch.dtype], device: torch.device) -> Callable[[], None]:
    v.layer.weight.grad = None
    backbone.zero_grad(set_to_none=True)
    lab = labels.clone()

    def fn():
        with forced_autocast(device.type, amp):
            v.layer(backbone(images), lab).backward()

    return fn


# ---------------------------------------------------------------------------------------- tables

def print_table(variants: List[Variant], grad_bytes: int, section: str, records: list) -> None:
    base = variants[0]
    if base.failed or not base.times:
        print(f"{base.label}: {base.failed or 'no result'}; no ratios")
        return
    base_t, base_m = statistics.median(base.times), base.peak
    arc = {v.layer_name: statistics.median(v.times) for v in variants
           if v.head_name == "arcface" and v.times and not v.failed}
    print(f"{'variant':<62}{'ms':>10}{'time/PFC_V2':>13}{'peak MiB':>10}{'mem/PFC_V2':>12}{'excl. grad':>12}"
          f"{'time/ArcFace':>14}{'goal':>8}")
    for v in variants:
        if v.failed or not v.times:
            print(f"{v.label:<62}{v.failed or 'no result':>10}")
            records.append(dict(section=section, variant=v.label, failed=v.failed or "no result"))
            continue
        t = statistics.median(v.times)
        rec = dict(section=section, variant=v.label, ms=t * 1e3, time_ratio=t / base_t)
        row = f"{v.label:<62}{t * 1e3:>10.1f}{t / base_t:>13.2f}"
        if v.peak is not None and base_m:
            excl = (v.peak - grad_bytes) / (base_m - grad_bytes) if base_m > grad_bytes else float("nan")
            row += f"{v.peak / MiB:>10.0f}{v.peak / base_m:>12.2f}{excl:>12.2f}"
            rec.update(peak_mib=v.peak / MiB, mem_ratio=v.peak / base_m, mem_ratio_excl_grad=excl)
        else:
            row += f"{'-':>10}{'-':>12}{'-':>12}"
        if v.layer_name in arc:
            goal = GOALS.get(v.layer_name, {}).get(v.head_name)
            ratio = t / arc[v.layer_name]
            row += f"{ratio:>14.2f}" + (f"{'<=' + format(goal, 'g'):>8}" if goal else "")
            rec.update(time_vs_arcface=ratio, goal=goal)
        print(row)
        records.append(rec)


def backbone_for(name: str, dim: int, fp16: bool, root: str, device: torch.device) -> torch.nn.Module:
    if name.startswith("compact"):
        from lh2face_plugin.backbones import build_backbone

        net = build_backbone(name, embedding_size=dim, fp16=fp16)
    else:
        if root not in sys.path:
            sys.path.insert(0, root)
        net = importlib.import_module("backbones").get_model(name, dropout=0.0, fp16=fp16, num_features=dim)
    return net.to(device).train()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--classes", type=int, nargs="+", default=None,
                   help="C_local values (default: 20000 200000 on CPU, 1000000 4000000 on CUDA)")
    p.add_argument("--rows", type=int, default=512, help="N, the (global) batch of the classification layer")
    p.add_argument("--dim", type=int, default=512, help="D, the embedding size")
    p.add_argument("--sample-rate", type=float, default=1.0)
    p.add_argument("--dtype", default="fp32", choices=("fp32", "fp16", "bf16"))
    p.add_argument("--layer-dtype", default="same", choices=("same", "fp32"),
                   help="fp32: the layers' fp16=False whatever --dtype (as train_v2 builds PartialFC_V2)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--layers", nargs="+", default=["plugin"], choices=[k for k in LAYERS if k != "arcface_torch"])
    p.add_argument("--heads", nargs="+", default=None, help="subset of head labels (default: all)")
    p.add_argument("--backbone", default=None, help="compact, compact-tiny, r50, r100, ... or none "
                                                    "(default: compact on CPU, r50 on CUDA)")
    p.add_argument("--backbone-rows", type=int, default=None)
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    p.add_argument("--arcface-root", default=os.environ.get("ARCFACE_TORCH_ROOT", ""))
    p.add_argument("--check-meter", action="store_true", help="print the memory meter check and exit")
    p.add_argument("--json", help="also write the rows to this JSON file (rewritten after each table, so a "
                                  "time-out keeps the tables that finished)")
    args = p.parse_args(argv)

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible to torch")
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    expected, measured = check_meter(device)
    print(f"memory meter check: expected {expected / MiB:.2f} MiB, measured {measured / MiB:.2f} MiB")
    if abs(measured - expected) > 64 * 1024:
        raise SystemExit("the memory meter is off by more than 64 KiB on a known allocation pattern")
    if args.check_meter:
        return
    if args.heads:
        unknown = set(args.heads) - {h[0] for h in HEADS}
        if unknown:
            raise SystemExit(f"unknown head label(s) {sorted(unknown)}; known: {[h[0] for h in HEADS]}")
        HEADS[:] = [h for h in HEADS if h[0] in args.heads]
    classes = args.classes or ([20_000, 200_000] if device.type == "cpu" else [1_000_000, 4_000_000])
    backbone = args.backbone or ("compact" if device.type == "cpu" else "r50")
    b_rows = args.backbone_rows or (64 if device.type == "cpu" else args.rows)
    amp = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    fp16 = amp is not None and args.layer_dtype == "same"

    warnings.filterwarnings("ignore", category=FutureWarning)      # torch.cuda.amp.autocast in the host
    backend = "nccl" if device.type == "cuda" else "gloo"
    with tempfile.TemporaryDirectory() as tmp, (cpu_only() if device.type == "cpu" else contextlib.nullcontext()):
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend, init_method=f"file://{os.path.join(tmp, 'pg')}", rank=0, world_size=1)
        records: list = []

        def save() -> None:
            if args.json:
                write_json(args.json, dict(benchmark="step", device=str(device), dtype=args.dtype, rows=args.rows,
                                           dim=args.dim, sample_rate=args.sample_rate, records=records))

        try:
            host, losses = host_modules(args.arcface_root)
            print(f"device={device} torch={torch.__version__} threads={torch.get_num_threads()} N={args.rows} "
                  f"D={args.dim} sample_rate={args.sample_rate} dtype={args.dtype} median of {args.repeats} "
                  f"(1 warm-up); checkout {args.arcface_root}")
            for c in classes:
                run_size(args, host, losses, c, device, amp, fp16, backbone, b_rows, records, save)
        finally:
            dist.destroy_process_group()
    save()


def run_size(args, host, losses, classes: int, device: torch.device, amp, fp16: bool, backbone: str,
             b_rows: int, records: list, save: Callable[[], None]) -> None:
    gen = torch.Generator(device).manual_seed(0)
    weight = torch.nn.Parameter(torch.randn((classes, args.dim), generator=gen, device=device).mul_(0.01))
    variants = build_variants(host, losses, args.layers, args.dim, classes, args.sample_rate, fp16, device, weight,
                              amp if fp16 else None)
    emb = torch.randn((args.rows, args.dim), generator=gen, device=device).mul_(8).requires_grad_()
    labels = torch.randint(0, classes, (args.rows,), generator=gen, device=device)
    grad_bytes = classes * args.dim * 4
    c_step = int(args.sample_rate * classes)
    print(f"\nclassification layer, C_local = {classes:,}"
          + (f" ({c_step:,} sampled per step)" if args.sample_rate < 1 else "")
          + f": one N x C float32 matrix = {args.rows * c_step * 4 / MiB:,.0f} MiB, weight gradient = "
          f"{grad_bytes / MiB:,.0f} MiB")
    run_variants(variants, lambda v: layer_step(v, emb, labels, amp, device), device, args.repeats)
    print_table(variants, grad_bytes, f"layer C={classes}", records)
    save()
    if backbone != "none":
        net = backbone_for(backbone, args.dim, amp is not None, args.arcface_root, device)
        for v in variants:
            v.times, v.peak, v.failed = [], None, ""
            v.layer.last_batch_size = 0          # Partial FC's constant-batch check: a new batch size
        images = torch.rand((b_rows, 3, 112, 112), generator=gen, device=device).mul_(2).sub_(1)
        blabels = torch.randint(0, classes, (b_rows,), generator=gen, device=device)
        print(f"\nwhole step, {backbone} backbone, batch {b_rows}, C_local = {classes:,}")
        run_variants(variants, lambda v: whole_step(v, net, images, blabels, amp, device), device, args.repeats)
        print_table(variants, grad_bytes, f"whole {backbone} batch={b_rows} C={classes}", records)
        save()
    for v in variants:
        v.layer.weight = None
    del variants, weight
    if device.type == "cuda":
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
