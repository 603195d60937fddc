"""Interpreter start-up with and without the plugin's start-up hook, as ratios.

Two fresh virtual environments without pip: ``base`` (nothing installed) and ``hook``
(only the hook's three files, copied from the environment running this script:
``lh2face_plugin_autoload.pth``, ``lh2face_plugin_autoload.start`` and the gate module
``_lh2face_autoload.py``, byte-compiled as pip does when it installs). Rows, each command run in both environments:

- ``python -c pass``: any interpreter (the goal: no measurable difference, under 1 ms);
- ``python train_v2.py`` in a folder that is no arcface_torch checkout: the ``.pth`` line
  imports the gate, which declines;
- ``python train_v2.py`` next to a ``partial_fc_v2.py``: the gate installs its finder
  (the scripts themselves are empty).

Runs are interleaved (base, hook, base, hook, ...) so that drift of the machine's load hits
both alike. Each cell is the median wall time of ``subprocess.run`` (fork and exec
included, the same for both); the difference is the median of the paired differences with
a bootstrap 95% confidence interval; ratio = hook median / base median.

    python benchmarks/startup.py                  # 200 runs per cell
    python benchmarks/startup.py --runs 1000
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import py_compile
import shutil
import subprocess
import sysconfig
import tempfile
import time
import venv

import numpy as np


def _hook_files():
    from lh2face_plugin.arcface_torch import autoload

    files = autoload.installed_files()
    gate = importlib.util.find_spec(autoload.GATE_MODULE)
    if len(files) != 2 or gate is None or not gate.origin:
        raise SystemExit("the start-up hook is not installed in this environment: pip install -e . (or the wheel)")
    return files + [gate.origin]


def _make_env(folder: str, files) -> str:
    venv.EnvBuilder(with_pip=False).create(folder)
    py = os.path.join(folder, "bin", "python")
    purelib = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    for f in files:
        dest = shutil.copy(f, purelib)
        if dest.endswith(".py"):        # as pip does at install time
            py_compile.compile(dest, cfile=importlib.util.cache_from_source(dest), doraise=True)
    return py


def _time(cmd, cwd) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def _ci(diffs: np.ndarray, rng: np.random.Generator, draws: int = 2000):
    idx = rng.integers(0, len(diffs), size=(draws, len(diffs)))
    meds = np.median(diffs[idx], axis=1)
    return np.percentile(meds, [2.5, 97.5])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=200, help="runs per cell (default 200)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    a = p.parse_args()
    files = _hook_files()
    rng = np.random.default_rng(a.seed)
    with tempfile.TemporaryDirectory(prefix="lh2face_startup_") as tmp:
        base = _make_env(os.path.join(tmp, "base"), [])
        hook = _make_env(os.path.join(tmp, "hook"), files)
        plain, checkout = os.path.join(tmp, "plain"), os.path.join(tmp, "checkout")
        for folder in (plain, checkout):
            os.makedirs(folder)
            open(os.path.join(folder, "train_v2.py"), "w").close()
        open(os.path.join(checkout, "partial_fc_v2.py"), "w").close()
        rows = [("python -c pass", ["-c", "pass"], tmp),
                ("python train_v2.py, no checkout (gate declines)", ["train_v2.py"], plain),
                ("python train_v2.py in a checkout (finder installed)", ["train_v2.py"], checkout)]
        print(f"interpreter start-up, {a.runs} interleaved runs per cell, {os.cpu_count()} CPUs, "
              f"python {sysconfig.get_python_version()}")
        print(f"{'command':<52} {'base ms':>8} {'hook ms':>8} {'ratio':>6}  {'hook - base, ms (95% CI)':>26}")
        for label, args, cwd in rows:
            for py in (base, hook):          # warm the page cache and the .pyc files
                _time([py] + args, cwd)
            t_base, t_hook = np.empty(a.runs), np.empty(a.runs)
            for i in range(a.runs):
                t_base[i] = _time([base] + args, cwd)
                t_hook[i] = _time([hook] + args, cwd)
            diffs = (t_hook - t_base) * 1e3
            lo, hi = _ci(diffs, rng)
            mb, mh = np.median(t_base) * 1e3, np.median(t_hook) * 1e3
            print(f"{label:<52} {mb:8.2f} {mh:8.2f} {mh / mb:6.3f}  {np.median(diffs):+8.2f} [{lo:+.2f}, {hi:+.2f}]")


if __name__ == "__main__":
    main()
