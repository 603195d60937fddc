"""arcface_torch's real train_v2 flow, a few CPU steps: save, resume, and the stock command's activation."""
import json
import math
import os
import shutil
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.arcface_torch(train=True), pytest.mark.slow]


@pytest.fixture(scope="module")
def flow(arcface_root, tmp_path_factory):
    work = tmp_path_factory.mktemp("flow")
    checkout = work / "arcface_torch"          # a copy: way 2 adds a recipe to its configs/
    shutil.copytree(arcface_root, checkout, ignore=shutil.ignore_patterns("docs", "*.md", "__pycache__"))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("RANK", None)
    script = os.path.join(os.path.dirname(__file__), "_helpers_flow.py")
    proc = subprocess.run([sys.executable, script, str(checkout), str(work)], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    with open(work / "result.json") as f:
        return json.load(f)


def test_lh2face_train_runs_saves_and_keeps_head_state(flow):
    first = flow["first"]
    assert (first["epoch"], first["global_step"]) == (1, 2)            # 8 images / batch 4
    assert "margin_softmax.running_mean" in first["keys"] and first["tracked"] == 2
    assert first["losses"] and all(math.isfinite(x) for x in first["losses"])


def test_resume_restores_steps_and_head_state(flow):
    resumed = flow["resumed"]
    assert (resumed["epoch"], resumed["global_step"]) == (2, 4)
    assert resumed["tracked"] == 4, "the head's running statistics must continue from the checkpoint"


@pytest.mark.parametrize("mode", ["frozen", "joint"])
def test_render_input_module_trains_from_a_reconstruction_checkpoint(flow, mode):
    run = flow[f"render_{mode}"]
    assert run["losses"] and all(math.isfinite(x) for x in run["losses"])
    assert run["keys"], "model.pt holds the reconstruction network, for evaluation and export"
    assert run["unchanged"] == (mode == "frozen")


def test_stock_command_recipe_activates_the_plugin(flow):
    stock = flow["stock"]
    assert flow["inactive_before_stock"] and stock["active"]
    assert "margin_softmax.running_mean" in stock["keys"] and stock["global_step"] == 2
    assert all(math.isfinite(x) for x in stock["losses"])
