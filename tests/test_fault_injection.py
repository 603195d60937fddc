"""Fault injection: ``data synth``, ``data build``, ``eval`` and ``export`` killed with SIGKILL at random times.

Each command runs in a process forked from a server that has already imported everything, so a
kill lands in the command's own work, not in Python's start-up. After every kill each target must
be in its old state or be the complete new one (byte for byte the output of an uninterrupted run),
and a rerun of the same command must complete and leave no staging file behind.
The seeds are printed; ``LH2FACE_FAULT_SEED=N`` replays a run.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")]

SERVER = r"""
import json, os, signal, sys, time
import numpy, torch, cv2, onnx, onnxruntime, matplotlib
matplotlib.use("Agg")
import lh2face_plugin.cli as cli
import lh2face_plugin.backbones, lh2face_plugin.data.synthetic, lh2face_plugin.data.tools
import lh2face_plugin.eval, lh2face_plugin.eval.ijb, lh2face_plugin.eval.plots
import lh2face_plugin.export.onnx, lh2face_plugin.export.modelzoo
cli.build_parser()
print("ready", flush=True)
for line in sys.stdin:
    job = json.loads(line)
    start = time.monotonic()
    log = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    pid = os.fork()
    if pid == 0:
        os.dup2(log, 1)
        os.dup2(log, 2)
        try:
            rc = cli.main(job["argv"])
        except BaseException as exc:
            print(repr(exc), file=sys.stderr)
            rc = 99
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(int(rc or 0))
    os.close(log)
    killed = False
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        due = job["kill_after"] is not None and time.monotonic() - start >= job["kill_after"]
        if job.get("kill_on_staging"):
            due = any(n.startswith(".") and n != ".lh2face-manifest.json"
                      for _, dirs, files in os.walk(job["kill_on_staging"]) for n in dirs + files)
        if due:
            os.kill(pid, signal.SIGKILL)  # not reaped yet: this pid is still the child
            _, status = os.waitpid(pid, 0)
            killed = os.WIFSIGNALED(status)
            break
        time.sleep(0.002)
    print(json.dumps({"killed": killed, "rc": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
                      "seconds": time.monotonic() - start}), flush=True)
"""


class ForkServer:
    def __init__(self, cwd: str) -> None:
        env = dict(os.environ, OMP_NUM_THREADS="1", LH2FACE_DEBUG="0")
        self.cwd = cwd
        self.proc = subprocess.Popen([sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, cwd=cwd, env=env)
        assert self.proc.stdout.readline().strip() == "ready"
        self.count = 0

    def run(self, argv, kill_after=None, kill_on_staging=None):
        """Run ``argv``; SIGKILL it after ``kill_after`` seconds, or when a hidden (staging) entry first
        appears under the folder ``kill_on_staging``."""
        self.count += 1
        log = os.path.join(self.cwd, f"run{self.count}.log")
        job = {"argv": [str(a) for a in argv], "kill_after": kill_after, "log": log,
               "kill_on_staging": str(kill_on_staging) if kill_on_staging else None}
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        res = json.loads(self.proc.stdout.readline())
        res["log"] = open(log, errors="replace").read()[-3000:]
        return res

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(30)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = ForkServer(str(tmp_path_factory.mktemp("logs")))
    yield s
    s.close()


def snapshot(folder):
    out = {}
    if not os.path.isdir(folder):
        return out
    for root, _, files in os.walk(folder):
        for name in files:
            p = os.path.join(root, name)
            out[os.path.relpath(p, folder)] = open(p, "rb").read()
    return out


def leftovers(work, target):
    """Entries under ``work`` other than the target folder's files and folders (staging of any name)."""
    extra = []
    for folder, dirs, files in os.walk(work):
        for name in dirs + files:
            p = os.path.join(folder, name)
            if os.path.commonpath([p, target]) != target and not target.startswith(p + os.sep):
                extra.append(p)
            elif name.startswith(".") and name != ".lh2face-manifest.json":
                extra.append(p)
    return extra


def seeds(count: int, base: int):
    fixed = os.environ.get("LH2FACE_FAULT_SEED")
    return [int(fixed)] if fixed else [base + i for i in range(count)]


def kill_cycle(server, argv, target, old_state, restore, new_state, count, base_seed, t_ref, check=None):
    """Kill ``argv`` at random times; the target is old or new; a rerun completes and cleans up."""
    killed = 0
    for seed in [None] + seeds(count, base_seed):
        restore()
        if seed is None:  # the moment the first staging file appears: the command starts writing
            res = server.run(argv, kill_on_staging=os.path.dirname(target))
            when = "at its first staging file"
        else:
            t = float(np.random.default_rng(seed).uniform(0.02, 1.0) * t_ref)
            res = server.run(argv, kill_after=t)
            when = f"seed={seed}, after {t:.3f} s"
        killed += res["killed"]
        name = " ".join(map(str, argv[:2])) if argv[0] == "data" else argv[0]
        print(f"fault-injection: {name} killed {when}: {'killed' if res['killed'] else 'finished first'}")
        state = snapshot(target)
        assert state in (old_state, new_state), f"seed {seed}: the target is neither old nor new ({res})"
        if check is not None:
            check(state)
        res = server.run(argv)
        assert res["rc"] == 0 and not res["killed"], res["log"]
        assert snapshot(target) == new_state, f"seed {seed}: the rerun did not complete the target"
        assert leftovers(os.path.dirname(target), target) == [], f"seed {seed}: staging left after the rerun"
    assert killed or os.environ.get("LH2FACE_FAULT_SEED"), "no run was killed"


def test_data_synth_killed(server, tmp_path):
    tiny = ["--identities", "4", "--images-per-id", "2", "--eval-identities", "4", "--verify-pairs", "4",
            "--render-eval", "2"]
    work = tmp_path / "work"
    work.mkdir()
    target = work / "synth"
    assert server.run(["data", "synth", target, *tiny, "--seed", "0"])["rc"] == 0
    (target / "ijb" / "notes.txt").write_text("the user's notes")
    pristine = tmp_path / "old"
    shutil.copytree(target, pristine)
    old = snapshot(pristine)
    ref = tmp_path / "ref" / "synth"
    shutil.copytree(pristine, ref)
    argv_ref = ["data", "synth", ref, *tiny, "--seed", "1"]
    res = server.run(argv_ref)
    assert res["rc"] == 0, res["log"]
    new = snapshot(ref)
    assert new != old and new["ijb/notes.txt"] == b"the user's notes"

    def restore():
        shutil.rmtree(work)
        work.mkdir()
        shutil.copytree(pristine, target)

    kill_cycle(server, ["data", "synth", target, *tiny, "--seed", "1"], str(target), old, restore, new, 3, 100,
               res["seconds"])


def test_data_build_killed(server, tmp_path):
    from PIL import Image

    def faces(root, seed):
        rng = np.random.default_rng(seed)
        for ident in range(3):
            os.makedirs(root / f"id{ident}", exist_ok=True)
            for k in range(4):
                Image.fromarray(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)).save(
                    root / f"id{ident}" / f"{k}.jpg", quality=90)
        return root

    a, b = faces(tmp_path / "a", 0), faces(tmp_path / "b", 1)
    work = tmp_path / "work"
    target = work / "ds"
    assert server.run(["data", "build", a, target, "--quiet"])["rc"] == 0
    old = snapshot(target)
    pristine = tmp_path / "old"
    shutil.copytree(target, pristine)
    res = server.run(["data", "build", b, tmp_path / "ref", "--quiet"])
    assert res["rc"] == 0, res["log"]
    new = snapshot(tmp_path / "ref")

    def restore():
        shutil.rmtree(work)
        work.mkdir()
        shutil.copytree(pristine, target)

    kill_cycle(server, ["data", "build", b, target, "--quiet"], str(target), old, restore, new, 3, 200,
               res["seconds"])


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    import torch

    from lh2face_plugin.backbones import build_backbone

    folder = tmp_path_factory.mktemp("models")
    for name, seed in (("a", 0), ("b", 1)):
        torch.manual_seed(seed)
        torch.save(build_backbone("compact-tiny", embedding_size=32).state_dict(), folder / f"{name}.pt")
    return folder


def test_eval_killed(server, tmp_path, tiny_models):
    data = tmp_path / "data"
    assert server.run(["data", "synth", data, "--identities", "4", "--images-per-id", "1", "--eval-identities", "4",
                       "--verify-pairs", "20", "--render-eval", "1"])["rc"] == 0
    model = ["--model", tiny_models / "a.pt", "--network", "compact-tiny", "--batch-size", "1"]
    work = tmp_path / "work"
    target = work / "out"
    res = server.run(["eval", "ijb", data / "ijb", "--target", "SYNTH", *model, "--workers", "1", "--out", target])
    assert res["rc"] == 0, res["log"]
    pristine = tmp_path / "old"
    shutil.copytree(target, pristine)
    old = snapshot(pristine)
    verify = ["eval", "verify", data / "verify.bin", *model, "--folds", "2"]
    ref = tmp_path / "ref" / "out"
    shutil.copytree(pristine, ref)
    res = server.run(verify + ["--out", ref])
    assert res["rc"] == 0, res["log"]
    new_results = json.loads(open(ref / "results.json").read())
    assert set(new_results) == {"SYNTH", "verify"}
    new = snapshot(ref)
    new_final = {k: v for k, v in new.items()}

    def consistent(state):
        """Killed mid-way: results old or new; the feature cache is whatever its state.json vouches for."""
        results = json.loads(state["results.json"])
        assert results in (json.loads(old["results.json"]), new_results)
        if "features/verify/state.json" in state:
            cache = json.loads(state["features/verify/state.json"])
            for c, rec in cache["chunks"].items():
                assert len(state[f"features/verify/chunk_{int(c):05d}.npy"]) == rec["size"]
        if "roc_verify.png" in state:
            assert state["roc_verify.png"] == new["roc_verify.png"]

    def restore():
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        shutil.copytree(pristine, target)

    argv = verify + ["--out", target]
    for seed in [None] + seeds(2, 300):
        restore()
        if seed is None:
            killed = server.run(argv, kill_on_staging=work)["killed"]
            when = "at its first staging file"
        else:
            t = float(np.random.default_rng(seed).uniform(0.02, 1.0) * res["seconds"])
            killed = server.run(argv, kill_after=t)["killed"]
            when = f"seed={seed}, after {t:.3f} s"
        print(f"fault-injection: eval verify killed {when}: {'killed' if killed else 'finished first'}")
        consistent(snapshot(target))
        again = server.run(argv)
        assert again["rc"] == 0, again["log"]
        assert snapshot(target) == new_final, f"seed {seed}: the rerun differs from an uninterrupted run"
        assert leftovers(str(work), str(target)) == [], f"seed {seed}: staging left after the rerun"


def tiny_recognition_onnx(path):
    """A valid recognition graph without torch's exporter: [batch, 3, 112, 112] -> [batch, 3]."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["batch", 3, 112, 112])
    y = helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 3])
    nodes = [helper.make_node("GlobalAveragePool", ["input.1"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["embedding"])]
    model = helper.make_model(helper.make_graph(nodes, "tiny", [x], [y]), opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_export_killed(server, tmp_path, tiny_models):
    pytest.importorskip("onnxruntime")
    from lh2face_plugin.export.modelzoo import pack_model_zoo

    work = tmp_path / "work"
    target = work / "pack"
    pack_model_zoo(tiny_recognition_onnx(str(tmp_path / "old.onnx")), str(target), model_id="pack")
    pristine = tmp_path / "old"
    shutil.copytree(target, pristine)
    old = snapshot(pristine)
    args = ["--network", "compact-tiny", "--model-id", "pack", "--no-verify"]
    res = server.run(["export", tiny_models / "b.pt", *args, "--out", tmp_path / "ref" / "pack"])
    assert res["rc"] == 0, res["log"]
    new = snapshot(tmp_path / "ref" / "pack")
    assert new["recognition.onnx"] != old["recognition.onnx"]

    def restore():
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        shutil.copytree(pristine, target)

    kill_cycle(server, ["export", tiny_models / "b.pt", *args, "--out", target], str(target), old, restore, new, 1,
               400, res["seconds"])
