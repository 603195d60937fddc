"""The stock command itself: ``torchrun --nproc_per_node=2 train_v2.py configs/<bare recipe>`` on the CPU.

A temporary copy of the real checkout gets a recipe that only sets ``config.loss`` /
``config.loss_kwargs`` (no plugin import); the data is made by ``lh2face data synth``
(the session's ``synth_data``). Two gloo
ranks train 2 steps, then resume for 2 more; the same command with ``LH2FACE_AUTOLOAD=0`` must
stop instead of training ArcFace. (``--standalone``: torchrun's own rendezvous on a port it
holds, so parallel test runs cannot collide.)
"""
import math
import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

pytestmark = [pytest.mark.arcface_torch(train=True), pytest.mark.slow]

RECIPE = """
    from easydict import EasyDict as edict

    config = edict()
    config.loss = "lh2face"
    config.loss_kwargs = dict(kappa_min=2.0, kappa_max=12.0, vmf_dim=32)
    config.margin_list = (1.0, 0.5, 0.0)
    config.network = "mbf"
    config.resume = {resume}
    config.save_all_states = True
    config.output = {output!r}
    config.embedding_size = 32
    config.sample_rate = 1.0
    config.fp16 = False
    config.batch_size = 4
    config.lr = 0.01
    config.verbose = 10 ** 9
    config.frequent = 1
    config.num_workers = 0
    config.rec = {rec!r}
    config.num_classes = 4
    config.num_image = 16
    config.num_epoch = {epochs}
    config.warmup_epoch = 0
    config.val_targets = []
"""
TERMS = ("loss", "ce", "pps", "pns", "pp", "mu")


def _torchrun(checkout, recipe, **env_extra):
    exe = os.path.join(os.path.dirname(sys.executable), "torchrun")
    cmd = [exe] if os.path.exists(exe) else [sys.executable, "-m", "torch.distributed.run"]
    env = {k: v for k, v in os.environ.items()
           if k not in ("LH2FACE_AUTOLOAD", "RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", **env_extra)
    return subprocess.run(cmd + ["--standalone", "--nproc_per_node=2", "train_v2.py", recipe], cwd=checkout,
                          env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def runs(arcface_root, synth_data, tmp_path_factory):
    from lh2face_plugin.arcface_torch import autoload

    assert autoload.installed_files(), "the start-up hook is not installed here: pip install -e . (or the wheel)"
    work = tmp_path_factory.mktemp("stock")
    checkout = work / "arcface_torch"
    shutil.copytree(arcface_root, checkout, ignore=shutil.ignore_patterns("docs", "*.md", "__pycache__"))
    data, _ = synth_data                    # lh2face data synth, 4 identities x 4 images
    out = {}
    for name, resume, epochs, output in (("bare", False, 1, "run"), ("bare_resume", True, 2, "run"),
                                         ("bare_off", False, 1, "off")):
        path = checkout / "configs" / f"{name}.py"
        path.write_text(textwrap.dedent(RECIPE.format(resume=resume, output=str(work / output), rec=str(data),
                                                      epochs=epochs)))
    out["first"] = _torchrun(checkout, "configs/bare")
    out["first_ckpt"] = [_checkpoint(work / "run", r) for r in range(2)]
    out["first_log"] = (work / "run" / "training.log").read_text()
    out["resumed"] = _torchrun(checkout, "configs/bare_resume")
    out["off"] = _torchrun(checkout, "configs/bare_off", LH2FACE_AUTOLOAD="0")
    out["work"] = work
    return out


def _checkpoint(folder, rank):
    path = folder / f"checkpoint_gpu_{rank}.pt"
    return torch.load(path, weights_only=True) if path.exists() else None


def _term_lines(log: str):
    """Each ``lh2face terms`` line of training.log as {name: value}."""
    out = []
    for line in log.splitlines():
        if "lh2face terms" in line:
            out.append({k: float(v) for k, v in re.findall(r"\b([a-z]+) (-?\d+\.\d+)", line.split("):", 1)[1])})
    return out


def test_bare_recipe_trains_the_lh2face_head(runs):
    first = runs["first"]
    assert first.returncode == 0, first.stderr[-4000:]
    notices = [ln for ln in first.stderr.splitlines() if ln.startswith("lh2face_plugin:")]
    assert len(notices) == 2, "one line from rank 0 (plus the unused-key note), none from rank 1"
    assert notices[0].startswith("lh2face_plugin: loss lh2face LH2Face(alpha=0.35, kappa_min=2.0, kappa_max=12.0")
    assert "LH2FACE_AUTOLOAD=0 turns it off" in notices[0] and "gloo" in notices[0]
    assert "config.margin_list = (1.0, 0.5, 0.0) is not used" in notices[1]
    for rank, ckpt in enumerate(runs["first_ckpt"]):
        fc = ckpt["state_dict_softmax_fc"]
        assert (ckpt["epoch"], ckpt["global_step"]) == (1, 2), rank      # 16 images / (2 ranks x 4)
        assert int(fc["margin_softmax.num_batches_tracked"]) == 2, "the lh2face head trained on both steps"
        assert 2.0 <= float(fc["margin_softmax.running_mean"]) <= 12.0, "mu is a mean of kappa in [2, 12]"
        assert fc["weight"].shape == (2, 32), "Partial FC shards the 4 classes over 2 ranks"


def test_loss_components_reach_the_log_and_tensorboard(runs):
    (terms,) = _term_lines(runs["first_log"])
    assert tuple(terms)[:2] == TERMS[:2] and set(terms) == set(TERMS)
    assert all(math.isfinite(v) for v in terms.values())
    logged = [float(m) for m in re.findall(r"Loss (-?\d+\.\d+)", runs["first_log"])]
    assert logged and terms["loss"] == pytest.approx(logged[-1], abs=1e-3), "the host's loss is our 'loss' term"
    assert terms["loss"] == pytest.approx(terms["ce"] + terms["pps"] + terms["pns"] + terms["pp"], abs=1e-3)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(runs["work"] / "run" / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {f"lh2face/{t}" for t in TERMS} <= set(tags) and "loss" in tags


def test_resume_continues_steps_and_head_state(runs):
    resumed = runs["resumed"]
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    for rank in range(2):
        ckpt = _checkpoint(runs["work"] / "run", rank)
        assert (ckpt["epoch"], ckpt["global_step"]) == (2, 4)
        assert int(ckpt["state_dict_softmax_fc"]["margin_softmax.num_batches_tracked"]) == 4
    log = (runs["work"] / "run" / "training.log").read_text()
    assert len(_term_lines(log)) == 2, "components logged in both runs"


def test_autoload_off_fails_loudly_instead_of_training_arcface(runs):
    off = runs["off"]
    assert off.returncode != 0
    assert "PluginNotActive" in off.stderr and "LH2FACE_AUTOLOAD=0 keeps it from activating" in off.stderr
    folder = runs["work"] / "off"
    assert not (folder / "model.pt").exists() and not list(folder.glob("checkpoint_gpu_*.pt"))
