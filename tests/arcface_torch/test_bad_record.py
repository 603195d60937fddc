"""A bad record ends the stock command's run, named, instead of hanging it.

``torchrun --nproc_per_node=2 train_v2.py configs/<recipe>`` (the start-up hook's route, on a temporary
copy of the real checkout) over a ``.rec`` written with the package's RecordIO writer, one image
record of which has a NaN label, read by 2 DataLoader workers per rank. arcface_torch's prefetch
thread dies on it and the training loop waits forever; with the plugin the rank that reads it
raises the error naming the record and torchrun ends the other rank.
"""
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from test_host_dataset import write_rec

pytestmark = [pytest.mark.arcface_torch(train=True), pytest.mark.slow]

RECIPE = """
    from easydict import EasyDict as edict

    config = edict()
    config.loss = "lh2face"
    config.loss_kwargs = dict(vmf_dim=32)
    config.network = "mbf"
    config.resume = False
    config.output = {output!r}
    config.embedding_size = 32
    config.sample_rate = 1.0
    config.fp16 = False
    config.batch_size = 4
    config.lr = 0.01
    config.verbose = 10 ** 9
    config.frequent = 1
    config.num_workers = 2
    config.rec = {rec!r}
    config.num_classes = 4
    config.num_image = 16
    config.num_epoch = 1
    config.warmup_epoch = 0
    config.val_targets = []
"""
LIMIT_S = 60


def _group_ends(group: int, seconds: float) -> bool:
    """Whether process group ``group`` is empty within ``seconds`` (else it is ended here)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    os.killpg(group, signal.SIGKILL)
    return False


def test_nan_label_ends_the_torchrun_run_naming_the_record(arcface_root, tmp_path):
    checkout = tmp_path / "arcface_torch"
    shutil.copytree(arcface_root, checkout, ignore=shutil.ignore_patterns("docs", "*.md", "__pycache__"))
    rec = write_rec(tmp_path / "data", [0, 1, 2, 3] * 2 + [float("nan")] + [1, 2, 3] + [0, 1, 2, 3])
    (checkout / "configs" / "bad_record.py").write_text(
        textwrap.dedent(RECIPE.format(output=str(tmp_path / "run"), rec=rec)))
    exe = os.path.join(os.path.dirname(sys.executable), "torchrun")
    cmd = [exe] if os.path.exists(exe) else [sys.executable, "-m", "torch.distributed.run"]
    env = {k: v for k, v in os.environ.items()
           if k not in ("LH2FACE_AUTOLOAD", "RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    run = subprocess.Popen(cmd + ["--standalone", "--nproc_per_node=2", "train_v2.py", "configs/bad_record"],
                           cwd=checkout, env=dict(env, OMP_NUM_THREADS="1"), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, stderr = run.communicate(timeout=LIMIT_S)
    except subprocess.TimeoutExpired:
        os.killpg(run.pid, signal.SIGTERM)       # torchrun and its ranks
        run.communicate()
        pytest.fail(f"the run neither trained nor stopped in {LIMIT_S} s: a bad record hangs training")
    assert run.returncode != 0
    assert _group_ends(run.pid, 10.0), "a rank or one of its loader workers still runs after torchrun ended"
    errors = [ln for ln in stderr.splitlines() if "RecordError: " in ln]
    assert errors, stderr[-4000:]
    assert errors[0].split("RecordError: ", 1)[1].startswith(
        f"{rec}/train.rec: record 9 at byte "), errors[0]
    assert "label is not a whole number at record 9: nan" in errors[0]
    assert not (tmp_path / "run" / "model.pt").exists()
