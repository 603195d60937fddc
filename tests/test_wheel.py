"""The built wheel installs into a fresh virtual environment and ``lh2face heads`` works there."""
from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_installs_and_cli_lists_heads(tmp_path):
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
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([str(env_dir / "bin" / "lh2face"), "heads"], check=True, capture_output=True, text=True,
                         cwd=tmp_path, env=env).stdout
    for name in ("arcface", "cosface", "combined", "lh2face", "mv-softmax", "sv-softmax", "uss"):
        assert f"\n{name} " in "\n" + out, (name, out)
    where = subprocess.run([str(py), "-c", "import lh2face_plugin, sys; print(lh2face_plugin.__file__)"],
                           check=True, capture_output=True, text=True, cwd=tmp_path, env=env).stdout
    assert str(env_dir) in where, where  # the installed wheel, not the source tree
