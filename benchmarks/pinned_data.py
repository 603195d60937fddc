"""Make a bench scale's synthetic training set and evaluation set with the same bytes on any x86-64 CPU.

The synthetic sets are made from seeds, but their bytes depend on the CPU's vector instructions: numpy's
AVX-512 kernels, OpenBLAS's per-CPU kernels and MKL's code paths round differently, and a pixel rounded the
other way changes a JPEG, so ``lh2face bench`` on another machine gets another data fingerprint and trains every
stored run again. Measured on 2026-12-07: an Intel Xeon (AVX-512, AVX512-FP16) made training set 474e22297065408e
from ``--scale cpu``'s seeds, where the AMD EPYC (AVX2) the first runs of benchmarks/render_study.sh were
trained on had made 7456bfbe847ac5f7; with numpy limited to AVX2 (``NPY_DISABLE_CPU_FEATURES``) it made
4bc37371422ae317, with OpenBLAS's Zen kernels too 72371e538d8af655, and with every library pinned as below
7456bfbe847ac5f7, the EPYC's set. This script re-runs itself with those pins (:data:`PINS`, read by the
libraries when they load, so they cannot be set from inside a running Python) and writes ``OUT/data`` and
``OUT/evalset`` as ``lh2face bench --out OUT --scale SCALE`` makes them; the bench then reuses both (the data by
its manifest, the evaluation set by its configuration) and trains with the machine's fastest kernels. Prints
the data fingerprint and the evaluation set's SHA-256.

    python benchmarks/pinned_data.py OUT --scale cpu
"""
from __future__ import annotations

import argparse
import os
import sys

PINS = {
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",  # numpy: AVX2 kernels at most
    "OPENBLAS_CORETYPE": "Haswell",  # OpenBLAS (numpy's BLAS): its AVX2 kernels
    "MKL_CBWR": "AVX2",  # MKL (torch's BLAS): its AVX2 code path
    "ATEN_CPU_CAPABILITY": "avx2",  # torch's own vectorised kernels
}
"""The environment every machine makes the same synthetic bytes under (x86-64 with AVX2)."""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="the bench folder (OUT of lh2face bench --out OUT)")
    ap.add_argument("--scale", default="cpu", help="lh2face bench --scale preset (default: cpu)")
    args = ap.parse_args(argv)
    if any(os.environ.get(k) != v for k, v in PINS.items()):
        env = dict(os.environ, **PINS)
        os.execve(sys.executable, [sys.executable, os.path.abspath(__file__), *sys.argv[1:]], env)
    from lh2face_plugin.bench.config import BenchConfig
    from lh2face_plugin.bench.runner import prepare_inputs

    data, ctx = prepare_inputs(BenchConfig.at_scale(args.scale, out=args.out), args.out, progress=False)
    print(f"data {data.key}\nevalset {ctx.sha256}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
