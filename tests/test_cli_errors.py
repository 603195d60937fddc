"""Every user error of ``lh2face`` is one line that names the file, key or parameter and what to do."""
from __future__ import annotations

import errno
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from lh2face_plugin.cli import build_parser, main


def describe_error(exc):
    from lh2face_plugin.cli import describe_error as describe

    return describe(exc)


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip() and "\r" not in ln]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def dataset_dir(tmp_path):
    from _helpers_recordio import write_insightface_rec

    write_insightface_rec(str(tmp_path), [2, 2])
    return tmp_path


def test_an_unwritable_output_folder_is_one_line(tmp_path, capsys, dataset_dir):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert main(["data", "shuffle", str(dataset_dir), str(blocker / "out"), "--quiet"]) == 2
    line = one_line(capsys)
    assert line.startswith("lh2face data shuffle: error: ") and "a_file: file exists; a file of that name is in the way" in line
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        try:
            assert main(["data", "shuffle", str(dataset_dir), str(ro / "out"), "--quiet"]) == 2
            assert "permission denied" in one_line(capsys)
        finally:
            ro.chmod(0o755)


def test_os_errors_name_the_path_and_what_to_do():
    msg, rc = describe_error(OSError(errno.EROFS, "Read-only file system", "/data/out/train.rec"))
    assert rc == 2 and msg == ("/data/out/train.rec: read-only file system; the file system is read-only: choose a "
                               "writable location (e.g. another --out)")
    msg, _ = describe_error(OSError(errno.ENOSPC, "No space left on device", "/x"))
    assert "free some space" in msg


def test_a_missing_optional_package_gets_an_install_hint(tmp_path, capsys):
    code = ("import sys; sys.modules['onnxscript'] = None\n"
            "import torch\n"
            "from lh2face_plugin.backbones import build_backbone\n"
            "from lh2face_plugin.cli import main\n"
            "torch.save(build_backbone('compact-tiny', embedding_size=32).state_dict(), sys.argv[1])\n"
            "sys.exit(main(['export', sys.argv[1], '--network', 'compact-tiny', '--out', sys.argv[2], '--no-verify']))")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "m.pt"), str(tmp_path / "pack")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if "error:" in ln]
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert "'onnxscript'" in lines[0] and "pip install 'lh2face-plugin[zoo]'" in lines[0]
    assert not (tmp_path / "pack").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch without CUDA")
def test_device_cuda_on_a_cpu_torch(tmp_path, capsys):
    from _helpers_eval import make_pairs, write_bin
    from lh2face_plugin.backbones import build_backbone

    images, issame = make_pairs(20)
    path = write_bin(str(tmp_path / "v.bin"), images, issame)
    torch.save(build_backbone("compact-tiny", embedding_size=32).state_dict(), tmp_path / "m.pt")
    assert main(["eval", "verify", path, "--model", str(tmp_path / "m.pt"), "--network", "compact-tiny",
                 "--device", "cuda", "--out", str(tmp_path / "o")]) == 2
    line = one_line(capsys)
    assert "--device cuda" in line and "use --device cpu" in line
    msg, rc = describe_error(AssertionError("Torch not compiled with CUDA enabled"))
    assert rc == 2 and "use --device cpu" in msg


def test_ctrl_c_is_one_line_and_status_130(monkeypatch, capsys, dataset_dir, tmp_path):
    import lh2face_plugin.data.tools as tools

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tools, "shuffle_record", interrupted)
    assert main(["data", "shuffle", str(dataset_dir), str(tmp_path / "o"), "--quiet"]) == 130
    assert "interrupted" in one_line(capsys)


@pytest.mark.parametrize("value, debug", [("0", False), ("", False), ("off", False), ("1", True), ("yes", True)])
def test_lh2face_debug_zero_means_off(monkeypatch, capsys, tmp_path, value, debug):
    monkeypatch.setenv("LH2FACE_DEBUG", value)
    argv = ["data", "inspect", str(tmp_path / "none.rec"), "--no-sheet"]
    if debug:
        with pytest.raises(FileNotFoundError):
            main(argv)
    else:
        assert main(argv) == 2
        assert "none.rec: no RecordIO file" in one_line(capsys)


def test_opencv_and_onnxruntime_failures_are_one_line(tmp_path, capsys):
    import cv2

    with pytest.raises(cv2.error) as info:
        cv2.resize(np.zeros((0, 0, 3), np.uint8), (4, 4))
    msg, rc = describe_error(info.value)
    assert rc == 2 and msg.startswith("OpenCV failed: ") and "\n" not in msg
    pytest.importorskip("onnxruntime")
    from _helpers_eval import make_pairs, write_bin

    images, issame = make_pairs(20)
    path = write_bin(str(tmp_path / "v.bin"), images, issame)
    (tmp_path / "garbage.onnx").write_bytes(b"this is not a protobuf")
    assert main(["eval", "verify", path, "--model", str(tmp_path / "garbage.onnx"), "--onnx",
                 "--out", str(tmp_path / "o")]) == 2
    line = one_line(capsys)
    assert "garbage.onnx: onnxruntime cannot load it" in line


def test_a_message_with_an_undecodable_path_still_prints(tmp_path, capsys):
    bad = os.fsdecode(os.path.join(os.fsencode(tmp_path), b"caf\xe9.rec"))
    assert main(["data", "inspect", bad, "--no-sheet"]) == 2
    assert "caf\\udce9.rec: no RecordIO file" in one_line(capsys)


@pytest.mark.parametrize("action", ["pretrain", "show", "eval"])
def test_render_actions_show_examples(action, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["render", action, "--help"])
    out = capsys.readouterr().out
    assert "examples:" in out and f"lh2face render {action} " in out


@pytest.mark.parametrize("command", ["render", "data", "eval"])
def test_a_command_without_action_prints_its_help(command, capsys):
    assert main([command]) == 0
    assert "ACTION" in capsys.readouterr().out or command == "eval"
