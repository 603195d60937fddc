"""The benchmark scripts run end to end at tiny sizes (they print tables nobody reads in CI:
a script broken by an API change must fail here, not on the GPU machine)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.slow


def _run(args, **env):
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "2", **env})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout


def test_step_benchmark_prints_every_layer_and_head(arcface_root, tmp_path):
    out = tmp_path / "step.json"
    text = _run(["benchmarks/step.py", "--classes", "300", "--rows", "8", "--dim", "16", "--repeats", "1",
                 "--backbone", "none", "--layers", "plugin", "blockwise", "--heads", "arcface", "lh2face", "uss",
                 "--json", str(out)], ARCFACE_TORCH_ROOT=arcface_root)
    assert "arcface_torch PartialFC_V2" in text
    for row in ("plugin lh2face", "blockwise lh2face", "blockwise uss"):
        assert row in text
    variants = {r["variant"] for r in json.load(open(out))["records"]}
    assert {"plugin arcface", "plugin lh2face", "blockwise uss"} <= variants


def test_gpu_script_bench_piece_tabulates_the_default_comparison(arcface_root, tmp_path):
    results, work = tmp_path / "results", tmp_path / "work"
    proc = subprocess.run(["bash", "benchmarks/gpu.sh", str(results)], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "OMP_NUM_THREADS": "2", "SMOKE": "1", "PIECES": "bench",
                                            "PYTHON": sys.executable, "GPU_BENCH_WORK": str(work),
                                            "ARCFACE_TORCH_ROOT": arcface_root})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert sorted(p.name for p in results.iterdir()) == ["bench.json", "bench.log", "bench.rc"]
    assert (results / "bench.rc").read_text().strip() == "0"
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| head comparison")]
    labels = [r.split(" | ")[1].split(": ")[-1].split(" (")[0] for r in rows]
    assert labels == ["cosface-s24", "arcface", "adaface", "lh2face", "control"]
    assert "compact-tiny, 3 steps x 8, 6 identities, cpu" in rows[0] and "| reference |" in rows[0]
    assert all(" vs cosface-s24 | " in r for r in rows[1:])
    assert (work / "bench" / "control" / "seed1" / "model.pt").is_file()


def test_gpu_script_smoke_runs_every_piece_and_summarises(arcface_root, tmp_path):
    """SMOKE=1 bash benchmarks/gpu.sh: every default piece on the CPU at tiny sizes, each piece's JSON and
    exit status 0, and one summary with a row per check (issue 22, item 6)."""
    results, work = tmp_path / "results", tmp_path / "work"
    proc = subprocess.run(["bash", "benchmarks/gpu.sh", str(results)], cwd=ROOT, capture_output=True, text=True,
                          timeout=900, env={**os.environ, "OMP_NUM_THREADS": "2", "SMOKE": "1",
                                            "PYTHON": sys.executable, "GPU_BENCH_WORK": str(work),
                                            "ARCFACE_TORCH_ROOT": arcface_root})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    pieces = ["compile", "correct_precision", "correct_syncs", "export", "step_n32", "step_n64", "train"]
    assert sorted(p.stem for p in results.glob("*.json")) == pieces
    assert all((results / f"{p}.rc").read_text().strip() == "0" for p in pieces)
    table = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    checks = {line.split(" | ")[0][2:] for line in table[2:]}
    assert checks == {"torch.compile", "precision", "host syncs per step", "export parity",
                      "classification layer step", "training throughput"}
    assert not [line for line in table if line.rstrip(" |").endswith(("failed", "WRONG"))]
    steps = json.load(open(results / "step_n64.json"))
    assert steps["sample_rate"] == 0.2 and steps["dtype"] == "fp16"
    assert {r["variant"] for r in steps["records"]} >= {"plugin lh2face", "blockwise uss"}


def test_render_price_prints_size_step_and_onnx_rows(tmp_path):
    """benchmarks/render_price.py at tiny sizes: every table, the JSON rows, ratios against the plain backbone."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    out = tmp_path / "price.json"
    text = _run(["benchmarks/render_price.py", "--networks", "compact-tiny", "--step-networks", "compact-tiny",
                 "--onnx-networks", "compact-tiny", "--width", "4", "--batch", "8", "--repeats", "1",
                 "--onnx-repeats", "2", "--classes", "10", "--json", str(out)])
    doc = json.load(open(out))
    assert doc["benchmark"] == "render_price" and doc["batch"] == 8
    rows = {(r["table"], r.get("model") or f"{r['network']} {r['variant']}"): r for r in doc["rows"]}
    module, plain, wrapped = (rows[("size", m)] for m in ("render input module", "compact-tiny",
                                                         "compact-tiny + render input"))
    assert wrapped["params"] - plain["params"] >= module["params"] > 0, "the reconstruction sits in the wrapped model"
    assert wrapped["params_ratio"] == pytest.approx(wrapped["params"] / plain["params"])
    try:
        import ptflops  # noqa: F401
    except ImportError:
        assert module["gmacs"] is None and "n/a" in text
    else:
        assert wrapped["gmacs"] > plain["gmacs"] > 0 and module["gmacs"] > 0
    steps = [r for r in doc["rows"] if r["table"] == "step"]
    assert [r["variant"].split(" (")[0].split(",")[0] for r in steps] == ["plain", "+ render input", "+ render input"]
    assert steps[0]["ratio"] == 1.0 and all(r["seconds"] > 0 for r in steps)
    assert steps[2]["input_kwargs"]["canon_fraction"] == 0.25, "2 of 8 rows: BatchNorm needs 2"
    onnx = [r for r in doc["rows"] if r["table"] == "onnx"]
    assert [r["variant"] for r in onnx] == ["plain", "+ render input"] and all(r["ms_per_image"] > 0 for r in onnx)
    assert "== inference: exported ONNX" in text and text.rstrip().endswith(f"wrote {out}")
