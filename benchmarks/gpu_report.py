"""One markdown table from the JSON files ``benchmarks/gpu.sh`` leaves in its output folder.

    python benchmarks/gpu_report.py work_dirs/gpu_bench
"""
from __future__ import annotations

import glob
import json
import os
import sys
from typing import List


def _fmt(x, spec=".2f", none="-"):
    return none if x is None else format(x, spec)


def step_rows(data: dict) -> List[List[str]]:
    rows = []
    for r in data["records"]:
        kind, _, rest = r["section"].partition(" ")
        size = rest.replace("C=", "C_local=") + (f" N={data['rows']}" if kind == "layer" else "")
        if data.get("sample_rate", 1.0) < 1:
            size += f" sample_rate={data['sample_rate']:g}"
        setting = f"{data['dtype']} {size}: {r['variant']}"
        check = "classification layer step" if kind == "layer" else "whole training step"
        if r.get("failed"):
            rows.append([check, setting, r["failed"], "", ""])
            continue
        value = f"{r['ms']:.1f} ms" + (f", {r['peak_mib']:,.0f} MiB" if r.get("peak_mib") is not None else "")
        ratio = f"time {_fmt(r['time_ratio'])}x, mem {_fmt(r.get('mem_ratio'))}x PFC_V2"
        verdict = ""
        if r.get("time_vs_arcface") is not None:
            ratio += f"; {_fmt(r['time_vs_arcface'])}x ArcFace"
            if r.get("goal"):
                verdict = f"goal <= {r['goal']:g}: {'met' if r['time_vs_arcface'] <= r['goal'] else 'not met'}"
        rows.append([check, setting, value, ratio, verdict])
    return rows


def train_rows(data: dict) -> List[List[str]]:
    rows = []
    for r in data["rows"]:
        sps = r.get("samples_per_s")
        scale = ""
        if r.get("scale_first") is not None:
            scale = f"; grad scale {r['scale_first']:g} -> {r['scale_last']:g}, {r['scale_falls']} fall(s)"
        rows.append(["training throughput", f"{data['network']}, batch {data['batch_size']}, {r['steps']} steps, "
                                           f"fp16={data.get('fp16')}: {r['loss']}",
                     (f"{sps:,.0f} samples/s" if sps else r["status"]) + scale,
                     f"{_fmt(r.get('ratio_to_arcface'))}x ArcFace" if r.get("ratio_to_arcface") else "",
                     r["status"]])
    return rows


def precision_rows(data: dict) -> List[List[str]]:
    rows = []
    for prec in sorted({r["precision"] for r in data["rows"]}):
        for layer in ("dense", "blockwise", "evaluate"):
            sel = [r for r in data["rows"] if r["precision"] == prec and r["layer"] == layer]
            if not sel:
                continue
            worst = max(sel, key=lambda r: r["grad"])
            bad = [r["head"] for r in sel if not r["ok"]]
            rows.append(["precision", f"{prec}, {layer} layer, every head vs float32 ({data['device']})",
                         f"{len(sel) - len(bad)}/{len(sel)} ok",
                         f"worst gradient {worst['grad']:.1e} ({worst['head']}), vs float64 {worst['grad64']:.1e}; "
                         f"loss <= {max(r['loss'] for r in sel):.1e}",
                         "failed: " + ", ".join(bad) if bad else "ok"])
    return rows


def syncs_rows(data: dict) -> List[List[str]]:
    sel = data["rows"]
    bad = [f"{r['head']}/{r['layer']}" for r in sel if not r["ok"]]
    most = max(sel, key=lambda r: r["syncs_many_blocks"])
    warned = [r["cuda_warnings"] for r in sel if r.get("cuda_warnings") is not None]
    return [["host syncs per step", f"every head x layer x sampling, 1 block vs many ({data['device']})",
             f"{len(sel) - len(bad)}/{len(sel)} equal", f"at most {most['syncs_many_blocks']} per step "
             f"({most['head']}/{most['layer']})" + (f"; CUDA reports at most {max(warned)}" if warned else ""),
             "grow with blocks: " + ", ".join(bad) if bad else "ok"]]


def compile_rows(data: dict) -> List[List[str]]:
    rows = []
    for r in data["rows"]:
        setting = f"{r['head']}, {r['layer']} layer, backend {r['backend']} ({data['device']})"
        if "error" in r:
            rows.append(["torch.compile", setting, r["error"][:60], "", "failed"])
            continue
        rows.append(["torch.compile", setting, f"gradient error {r['grad_err']:.1e}",
                     f"step {r['ms']:.1f} ms, {r['ms'] / r['eager_ms']:.2f}x eager", "ok" if r["ok"] else "WRONG"])
    return rows


def export_rows(data: dict) -> List[List[str]]:
    return [["export parity", f"{data['network']} ({data['weights']}), torch on {data['device']} vs onnxruntime",
             f"min cosine {data['min_cosine']:.7f}", f"max relative difference {_fmt(data.get('max_rel_diff'), '.1e')}",
             data["status"][:60]]]


def bench_rows(data: dict) -> List[List[str]]:
    """``lh2face bench``'s results.json: each head's hard-HQ TAR@1e-2 and its paired difference."""
    cfg, ref, metric = data["config"], data["reference"], "hard_hq_tar@1e-2"
    setting = (f"{cfg['network']}, {data['steps']} steps x {cfg['batch_size']}, {cfg['identities']} identities, "
               f"{cfg['device']}")
    rows = []
    for label, head in data["heads"].items():
        m = head["metrics"][metric]
        value = f"hard-HQ TAR@1e-2 {100 * m['mean']:.1f} [{100 * m['ci'][0]:.1f}, {100 * m['ci'][1]:.1f}]"
        d = data["differences"].get(label, {}).get(metric)
        ratio = (f"{100 * d['diff']:+.1f} [{100 * d['ci'][0]:+.1f}, {100 * d['ci'][1]:+.1f}] vs {ref}"
                 if d else "reference")
        rows.append(["head comparison", f"{setting}: {label} ({len(head['seeds'])} seeds)", value, ratio,
                     d["verdict"] if d else ""])
    return rows


def main(argv=None) -> int:
    folder = (argv or sys.argv[1:] or ["work_dirs/gpu_bench"])[0]
    rows: List[List[str]] = []
    makers = {"step": step_rows, "train": train_rows, "export": export_rows,
              "lh2face-bench": bench_rows, "precision": precision_rows, "syncs": syncs_rows, "compile": compile_rows}
    for path in sorted(glob.glob(os.path.join(folder, "*.json"))):
        with open(path) as f:
            data = json.load(f)
        rows += makers.get(data.get("benchmark") or data.get("format"), lambda d: [])(data)
    for rc in sorted(glob.glob(os.path.join(folder, "*.rc"))):
        code = open(rc).read().strip()
        if code not in ("0", ""):
            name = os.path.basename(rc)[:-3]
            rows.append([name, "", f"exit status {code}", f"see {os.path.join(folder, name + '.log')}",
                         "timeout" if code == "124" else "failed"])
    if not rows:
        print(f"gpu_report: no results in {folder}")
        return 1
    head = ["check", "setting", "value", "ratio", "verdict"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print("| " + " | ".join(c.replace("|", "/") for c in r) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
