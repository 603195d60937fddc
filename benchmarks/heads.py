"""Forward+backward time and peak memory of every head, as ratios to ArcFace.

One training step per measurement: a leaf cosine matrix [N, C_local] (what
Partial FC hands a head) -> head -> softmax cross-entropy (+ extra term) ->
backward. ArcFace (arcface_torch's straight-through semantics) is measured in
the same run, interleaved with the others, and is the denominator of every
ratio. With ARCFACE_TORCH_ROOT set, arcface_torch's own CombinedMarginLoss is
measured as well.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated``; on CPU the running
sum of the allocations and frees the PyTorch profiler records (self memory of
each op, in time order), above what was allocated before the step.

    python benchmarks/heads.py                 # N=1024, C_local in {10k, 100k}
    python benchmarks/heads.py --classes 10000 --repeats 3 --device cuda
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

import lh2face_plugin

HEADS = [
    ("arcface", "arcface", {}),
    ("cosface", "cosface", {}),
    ("arcface (true grad)", "arcface", dict(straight_through=False)),
    ("mv-softmax", "mv-softmax", {}),
    ("mv-softmax arc fixed", "mv-softmax", dict(margin_type="arc", weight="fixed")),
    ("sv-softmax", "sv-softmax", {}),
    ("lh2face (UAMF)", "lh2face", dict(lambda_pps=0.0, lambda_pns=0.0, lambda_pp=0.0)),
    ("lh2face (UAMF + proxy)", "lh2face", {}),
    ("uss (cosface + USS)", "uss", dict(init_b=30.0)),
    ("adaface", "adaface", {}),
    ("magface (+ L_g)", "magface", {}),
    ("curricularface", "curricularface", {}),
]


def arcface_torch_reference():
    root = os.environ.get("ARCFACE_TORCH_ROOT")
    if not root:
        return None
    sys.path.insert(0, root)
    from losses import CombinedMarginLoss  # the user's checkout

    loss = CombinedMarginLoss(64, 1.0, 0.5, 0.0)

    def head(cos, labels, **_):
        return loss(cos.clone(), labels.view(-1, 1))  # it works in place on its input

    return head


def make_head(name, kwargs, num_classes, dim, device):
    head = lh2face_plugin.build_head(name, **dict(kwargs, check_inputs=False))
    head.setup_shard(num_classes, dim)
    head.to(device)
    if name == "uss":  # a filled memory, as after warm-up
        head.memory.copy_(F.normalize(torch.randn_like(head.memory), dim=1))
        head.filled.fill_(True)
    return head


def step(head, cos0, labels, norms, emb, weights):
    cos = cos0.detach().requires_grad_()
    out = head.evaluate(cos, labels, norms=norms, embeddings=emb, weights=weights)
    loss = F.cross_entropy(out.logits, labels)
    if out.extra is not None:
        loss = loss + out.extra
    loss.backward()
    return loss


def cpu_peak(fn):
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted(prof.events(), key=lambda e: e.time_range.start)
    total = peak = 0
    for e in events:
        total += e.self_cpu_memory_usage
        peak = max(peak, total)
    return peak


def measure(fn, device):
    if device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        return time.perf_counter() - t0, torch.cuda.max_memory_allocated() - base
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0, None


def run(n, classes, dim, repeats, device):
    torch.manual_seed(0)
    z = torch.randn(n, dim, device=device) * 8
    w = torch.randn(classes, dim, device=device)
    x, wn = F.normalize(z), F.normalize(w)
    cos0 = (x @ wn.t()).clamp(-1, 1)
    labels = torch.randint(0, classes, (n,), device=device)
    norms = z.norm(dim=1)
    heads = [(label, make_head(name, kw, classes, dim, device)) for label, name, kw in HEADS]
    ref = arcface_torch_reference()
    if ref is not None:
        heads.insert(1, ("arcface_torch CombinedMarginLoss", ref))
    times = {label: [] for label, _ in heads}
    peaks = {}
    for label, head in heads:  # warm-up, and the CPU memory profile
        step(head, cos0, labels, norms, x, wn)
        if device.type == "cpu":
            peaks[label] = cpu_peak(lambda: step(head, cos0, labels, norms, x, wn))
    for _ in range(repeats):
        for label, head in heads:
            t, peak = measure(lambda: step(head, cos0, labels, norms, x, wn), device)
            times[label].append(t)
            if peak is not None:
                peaks[label] = peak
    base_t, base_m = statistics.median(times["arcface"]), peaks["arcface"]
    rows = []
    for label, _ in heads:
        t = statistics.median(times[label])
        rows.append((label, t * 1e3, t / base_t, peaks[label] / 2**20, peaks[label] / base_m))
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1024)
    p.add_argument("--classes", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    print(f"device={device} torch={torch.__version__} threads={torch.get_num_threads()} N={args.rows} D={args.dim} "
          f"median of {args.repeats}")
    for c in args.classes:
        print(f"\nC_local = {c:,}  (one N x C float32 matrix = {args.rows * c * 4 / 2**20:.0f} MiB)")
        print(f"{'head':<34}{'ms':>10}{'time/arcface':>14}{'peak MiB':>11}{'mem/arcface':>13}")
        for label, ms, tr, mb, mr in run(args.rows, c, args.dim, args.repeats, device):
            print(f"{label:<34}{ms:>10.1f}{tr:>14.2f}{mb:>11.0f}{mr:>13.2f}")


if __name__ == "__main__":
    main()
