#!/usr/bin/env python3
"""Mutation testing of the modules whose bugs the tests must catch (mutmut; ``tox -e mutation``).

Each group mutates some modules and runs only the tests that check them (mutmut runs, per mutant, the
tests of that selection that reach the mutated function). A group is built in its own scratch copy,
``.mutation/<group>/`` (sources, tests, the project's config plus a generated ``[tool.mutmut]``), so the
groups have their own test selections and the checkout is never touched; the copy is kept for
``mutmut show NAME`` / ``mutmut browse`` there. At the end, per module: mutants made, killed, survived
(and any other outcome: timeout, no test reaches it, suspicious), then the diff of every survivor.

Usage: python .ci/mutation.py [GROUP ...] [--mutants PATTERN ...] [--max-children N] [--fail-on-survivors]
(no GROUP: all of them; ``--list`` prints the groups; ``--mutants`` checks only the mutants whose names match
a pattern, e.g. ``'lh2face_plugin.heads.lh2face.*'``, and reports only those). Slow: not part of .ci/run.
"""
from __future__ import annotations

import argparse
import collections
import fnmatch
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

HEAD_TESTS = ["tests/heads/test_reference_table.py", "tests/heads/test_reference_formulas.py",
              "tests/heads/test_heads.py", "tests/heads/test_vmf.py", "tests/heads/test_blocks.py",
              "tests/heads/test_head_edges.py"]
# group -> (modules to mutate, tests that check them)
GROUPS = {
    "layers": (["lh2face_plugin/layers/*.py"], HEAD_TESTS + ["tests/heads/test_blockwise_layer.py",
                                                            "tests/heads/test_precision.py",
                                                            "tests/heads/test_host_syncs.py",
                                                            "tests/heads/test_formula.py"]),
    "heads": (["lh2face_plugin/heads/*.py"], HEAD_TESTS + ["tests/heads/test_hardening.py"]),
    "metrics": (["lh2face_plugin/eval/metrics.py"],
                ["tests/eval/test_metrics.py", "tests/eval/test_far_rounding.py", "tests/eval/test_metrics_edges.py"]),
    "bootstrap": (["lh2face_plugin/bench/bootstrap.py"],
                  ["tests/bench/test_bootstrap.py", "tests/bench/test_bootstrap_edges.py"]),
    "power": (["lh2face_plugin/bench/power.py"], ["tests/bench/test_power.py"]),
    "recordio": (["lh2face_plugin/data/recordio.py"],
                 ["tests/data/test_recordio.py", "tests/data/test_recordio_edges.py", "tests/data/test_dataset_layouts.py",
                  "tests/data/test_no_loss.py"]),
    "images": (["lh2face_plugin/images.py"],
               ["tests/test_images.py", "tests/test_decoder_gate_bounds.py", "tests/test_fuzz_decoders.py"]),
    "fileio": (["lh2face_plugin/fileio/*.py"],
               ["tests/test_fileio.py", "tests/test_atomic_replace.py", "tests/test_fault_injection.py",
                "tests/test_fileio_edges.py"]),
}
# what the tests read beside the package: a bench script (tests/heads/test_precision.py: benchmarks/precision.py),
# the heads' pages (tests/heads/test_head_edges.py: their documented defaults)
READ_BY_TESTS = ["benchmarks", "docs/heads"]
COPIED = ["lh2face_plugin", "tests", "pytest.ini", "setup.cfg", "pyproject.toml", "_lh2face_autoload.py"] + READ_BY_TESTS


def toml_list(values):
    return "[" + ", ".join(f'"{v}"' for v in values) + "]"


def prepare(group: str) -> str:
    """A fresh scratch copy of the project for ``group`` with its mutmut configuration."""
    modules, tests = GROUPS[group]
    work = os.path.join(ROOT, ".mutation", group)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "studies")
    for name in COPIED:
        src = os.path.join(ROOT, name)
        if os.path.isdir(src):
            shutil.copytree(src, os.path.join(work, name), ignore=ignore)
        elif os.path.exists(src):
            shutil.copy2(src, os.path.join(work, name))
    with open(os.path.join(work, "pyproject.toml"), "a", encoding="utf-8") as fh:
        fh.write("\n[tool.mutmut]\n"
                 'source_paths = ["lh2face_plugin/"]\n'
                 f"also_copy = {toml_list(READ_BY_TESTS)}\n"
                 f"only_mutate = {toml_list(modules)}\n"
                 f"pytest_add_cli_args_test_selection = {toml_list(tests)}\n"
                 'pytest_add_cli_args = ["-p", "no:cacheprovider", "-q", "-x"]\n'
                 # torch is not fork-safe: fork the workers from a server that has not run the tests
                 'process_isolation = "forkserver"\n')
    return work


def mutmut(work: str, *args: str, **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    env.pop("PYTHONPATH", None)  # mutmut puts its mutated copy first on sys.path itself
    return subprocess.run([sys.executable, "-m", "mutmut", *args], cwd=work, env=env, text=True, **kw)


def results(work: str):
    """(mutant name, status) of every mutant of the last run in ``work``."""
    out = mutmut(work, "results", "--all", "true", capture_output=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep and "__mutmut_" in name:
            rows.append((name, status.strip()))
    return rows


def module_of(name: str) -> str:
    return name.rsplit(".", 1)[0]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("groups", nargs="*", help=f"groups to run (default: all): {', '.join(GROUPS)}")
    ap.add_argument("--max-children", type=int, default=max(1, (os.cpu_count() or 2) // 2))
    ap.add_argument("--fail-on-survivors", action="store_true", help="exit 1 when a mutant survives")
    ap.add_argument("--list", action="store_true", help="print the groups, their modules and tests")
    ap.add_argument("--mutants", nargs="+", metavar="PATTERN", default=[],
                    help="only the mutants whose names match (fnmatch), e.g. 'lh2face_plugin.heads.lh2face.*'")
    args = ap.parse_args(argv)
    if args.list:
        for group, (modules, tests) in GROUPS.items():
            print(f"{group}: mutates {' '.join(modules)}; runs {' '.join(tests)}")
        return 0
    unknown = [g for g in args.groups if g not in GROUPS]
    if unknown:
        ap.error(f"unknown group(s) {', '.join(unknown)}; choose from {', '.join(GROUPS)}")
    table, survivors = [], []
    for group in args.groups or list(GROUPS):
        work = prepare(group)
        start = time.monotonic()
        log = os.path.join(work, "mutmut-run.log")
        with open(log, "w", encoding="utf-8") as fh:
            run = mutmut(work, "run", "--max-children", str(args.max_children), *args.mutants, stdout=fh,
                         stderr=subprocess.STDOUT)
        if run.returncode != 0:
            print(f"{group}: mutmut run failed (exit {run.returncode}); its output: {log}", file=sys.stderr)
            return run.returncode
        counts = collections.defaultdict(collections.Counter)
        for name, status in results(work):
            if args.mutants and not any(fnmatch.fnmatch(name, p) for p in args.mutants):
                continue
            counts[module_of(name)][status] += 1
            if status == "survived":
                survivors.append((work, name))
        for module in sorted(counts):
            c = counts[module]
            other = {k: v for k, v in c.items() if k not in ("killed", "survived")}
            table.append((group, module, sum(c.values()), c["killed"], c["survived"], other,
                          time.monotonic() - start))
    print(f"\n{'group':10} {'module':40} {'made':>5} {'killed':>6} {'survived':>8}  other")
    for group, module, made, killed, survived, other, _ in table:
        extra = ", ".join(f"{k} {v}" for k, v in sorted(other.items())) or "-"
        print(f"{group:10} {module:40} {made:5d} {killed:6d} {survived:8d}  {extra}")
    if survivors:
        print(f"\n{len(survivors)} surviving mutant(s):")
        for work, name in survivors:
            print(f"\n# {name}  (cd {os.path.relpath(work, ROOT)} && python -m mutmut show {name})")
            shown = mutmut(work, "show", name, capture_output=True).stdout
            print("\n".join(line for line in shown.splitlines() if line.startswith(("+", "-", "@@"))))
    else:
        print("\nno surviving mutant")
    return 1 if survivors and args.fail_on_survivors else 0


if __name__ == "__main__":
    sys.exit(main())
