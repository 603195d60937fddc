"""One writer per output folder (issue 23 item 8): a second ``lh2face bench`` / ``lh2face export`` into
the same OUT stops at once naming the holder, ``--wait`` waits, a lock left by a dead process is taken over."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest

from lh2face_plugin.cli import main
from lh2face_plugin.fileio import FolderBusy, writer_lock

HOLD = ("import sys; from lh2face_plugin.fileio import writer_lock\n"
        "with writer_lock(sys.argv[1], sys.argv[2]):\n"
        "    print('held', flush=True); sys.stdin.read()\n")


@pytest.fixture
def holder(tmp_path):
    """Start a process that holds the writer lock of a folder until its stdin closes."""
    procs = []

    def start(out, command):
        p = subprocess.Popen([sys.executable, "-c", HOLD, out, command], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "held"
        procs.append(p)
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            p.stdin.close()
            p.wait()


TINY = ["--heads", "arcface", "--seeds", "0", "--steps", "2", "--batch-size", "8", "--identities", "6",
        "--images-per-id", "4", "--families", "2", "--bootstrap", "20", "--workers", "0", "--quiet"]


def test_a_second_bench_or_export_stops_at_once_naming_the_holder(tmp_path, capsys, holder):
    out = str(tmp_path / "bench")
    p = holder(out, "bench")
    assert main(["bench", "--out", out] + TINY) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"lh2face bench: error: another lh2face bench (pid {p.pid}) is writing {out}; wait for it to " \
                  "finish, or pass --wait"
    assert not os.path.exists(out)  # nothing was done
    assert main(["bench", "--report", out]) == 2
    assert f"another lh2face bench (pid {p.pid}) is writing {out}" in capsys.readouterr().err

    pack = str(tmp_path / "pack")
    q = holder(pack, "export")
    assert main(["export", str(tmp_path / "model.onnx"), "--out", pack]) == 2
    assert f"another lh2face export (pid {q.pid}) is writing {pack}" in capsys.readouterr().err


def test_wait_blocks_until_the_holder_ends_and_the_lock_is_released(tmp_path, holder):
    out = str(tmp_path / "out")
    p = holder(out, "bench")
    got, lines = [], []

    def second():
        with writer_lock(out, "bench", wait=True, on_wait=lines.append) as path:
            with open(path) as fh:
                got.append(json.load(fh))

    t = threading.Thread(target=second)
    t.start()
    with pytest.raises(FolderBusy):
        with writer_lock(out, "bench"):
            pass
    p.stdin.close()
    p.wait()
    t.join()
    assert got == [{"pid": os.getpid(), "command": "bench"}]
    assert not os.path.exists(os.path.join(str(tmp_path), ".out.lh2face-lock"))  # removed on release
    assert not lines or lines[0] == f"waiting: another lh2face bench (pid {p.pid}) is writing {out}"


def test_a_lock_file_of_a_dead_process_is_taken_over(tmp_path):
    out = str(tmp_path / "out")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    with open(os.path.join(str(tmp_path), ".out.lh2face-lock"), "w") as fh:
        json.dump({"pid": int(dead.stdout), "command": "bench"}, fh)
    with writer_lock(out, "export") as path:
        with open(path) as fh:
            assert json.load(fh) == {"pid": os.getpid(), "command": "export"}
