"""The built wheel installs into a fresh virtual environment: ``lh2face heads`` works there, and so does the
start-up hook (a bare ``config.loss`` in a stock ``train_v2.py`` activates the plugin); an editable install
of the source tree carries the hook too."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROBE = ("import sys, json; print(json.dumps(sorted(m for m in sys.modules "
         "if m.startswith(('_lh2face', 'lh2face', 'torch')))))")


def _site_packages(py: Path) -> Path:
    out = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], check=True,
                         capture_output=True, text=True).stdout.strip()
    return Path(out)


def _stock_run(py: Path, tmp_path: Path, env) -> tuple:
    """A fake arcface_torch checkout whose recipe only sets config.loss, run as ``python train_v2.py``."""
    from _helpers_arcface_torch import write_recipe, write_stock_checkout

    checkout = tmp_path / "checkout"
    if not checkout.exists():
        write_stock_checkout(str(checkout))
        write_recipe(str(checkout / "configs" / "bare.py"),
                     "config = dict(loss='lh2face', loss_kwargs=dict(alpha=0.3, vmf_dim=512))\n")
    proc = subprocess.run([str(py), "train_v2.py", "configs/bare"], cwd=checkout, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    notices = [ln for ln in proc.stderr.splitlines() if ln.startswith("lh2face_plugin:")]
    return json.loads(proc.stdout.strip().splitlines()[-1]), notices


def _assert_hook(py: Path, tmp_path: Path, env) -> None:
    site = _site_packages(py)
    pth, start = site / "lh2face_plugin_autoload.pth", site / "lh2face_plugin_autoload.start"
    assert pth.is_file() and start.is_file(), sorted(p.name for p in site.iterdir())
    assert "_lh2face_autoload:install" in start.read_text().splitlines()
    loaded = json.loads(subprocess.run([str(py), "-c", PROBE], check=True, capture_output=True, text=True,
                                       cwd=tmp_path, env=env).stdout)
    assert loaded == [], "an ordinary interpreter imports neither the gate, the plugin nor torch"
    report, notices = _stock_run(py, tmp_path, env)
    assert report["head"] == "LH2Face" and report["active"] and report["source"] == "start-up hook"
    assert len(notices) == 1 and notices[0].startswith("lh2face_plugin: loss lh2face LH2Face(alpha=0.3,")
    assert "LH2FACE_AUTOLOAD=0 turns it off" in notices[0]


@pytest.mark.slow
def test_wheel_installs_cli_and_start_up_hook(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist),
                    str(ROOT)], check=True, cwd=tmp_path)
    wheels = list(dist.glob("lh2face_plugin-*.whl"))
    assert len(wheels) == 1, wheels
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    # torch pinned to the local CPU build; the rest of the dependencies resolve normally
    subprocess.run([str(py), "-m", "pip", "install", "-q", "torch==2.13.0", str(wheels[0])], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LH2FACE_AUTOLOAD", "RANK")}
    env["OMP_NUM_THREADS"] = "1"
    out = subprocess.run([str(env_dir / "bin" / "lh2face"), "heads"], check=True, capture_output=True, text=True,
                         cwd=tmp_path, env=env).stdout
    for name in ("arcface", "cosface", "combined", "lh2face", "mv-softmax", "sv-softmax", "uss"):
        assert f"\n{name} " in "\n" + out, (name, out)
    where = subprocess.run([str(py), "-c", "import lh2face_plugin, sys; print(lh2face_plugin.__file__)"],
                           check=True, capture_output=True, text=True, cwd=tmp_path, env=env).stdout
    assert str(env_dir) in where, where  # the installed wheel, not the source tree
    _assert_hook(py, tmp_path, env)

    # the same environment, the source tree installed editable instead (PEP 660, isolated build)
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "-e", str(ROOT)], check=True, cwd=tmp_path)
    where = subprocess.run([str(py), "-c", "import lh2face_plugin, sys; print(lh2face_plugin.__file__)"],
                           check=True, capture_output=True, text=True, cwd=tmp_path, env=env).stdout
    assert where.startswith(str(ROOT)), where
    _assert_hook(py, tmp_path, env)
    subprocess.run([str(py), "-m", "pip", "uninstall", "-q", "-y", "lh2face-plugin"], check=True)
    site = _site_packages(py)
    assert not list(site.glob("lh2face_plugin_autoload.*")), "uninstall removes the start-up files"


def test_readme_test_command_is_what_ci_runs():
    """The README's second command (the tests) is exactly the command of .ci/run."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    readme = open(os.path.join(root, "README.md"), encoding="utf-8").read()
    block = readme.split("```bash", 1)[1].split("```", 1)[0]
    lines = [ln.strip() for ln in block.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    ci = [ln.strip() for ln in open(os.path.join(root, ".ci", "run"), encoding="utf-8").read().splitlines()
          if ln.strip() and not ln.strip().startswith("#")]
    assert lines[-1] == ci[-1]
    assert "python3 -m pip install" not in lines[-1], "never into the system interpreter (PEP 668)"
