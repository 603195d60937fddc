import os
import subprocess
import sys

import pytest
import torch

from _helpers_arcface_torch import write_fake_checkout
from lh2face_plugin.arcface_torch.doctor import diagnose, format_report
from lh2face_plugin.cli import build_parser, main

RECIPES = os.path.join(os.path.dirname(__file__), "..", "..", "recipes")


def _find(findings, item):
    return next(f for f in findings if f.item == item)


def test_missing_checkout_is_a_failure_with_a_fix(tmp_path, monkeypatch):
    monkeypatch.delenv("ARCFACE_TORCH_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    found = _find(diagnose(), "arcface_torch checkout")
    assert found.status == "fail" and "ARCFACE_TORCH_ROOT" in found.fix


def test_unknown_revision_warns_and_strict_fails(tmp_path):
    root = write_fake_checkout(str(tmp_path / "co"))
    assert _find(diagnose(arcface_root=root), "revision").status == "warn"
    findings = diagnose(arcface_root=root, strict=True)
    assert _find(findings, "revision").status == "fail" and "train_v2.py" in _find(findings, "revision").detail
    report = format_report(findings)
    assert "to fix:" in report and "revision" in report.split("to fix:")[1]


def test_recipe_resolution_shows_head_parameters_and_sample_rate(tmp_path):
    root = write_fake_checkout(str(tmp_path / "co"))
    findings = diagnose(os.path.join(RECIPES, "wf42m_pfc02_r100_lh2face.py"), root)
    assert "LH2Face" in _find(findings, "loss").detail and "alpha=0.35" in _find(findings, "loss").detail
    assert "sample_rate 0.2" in _find(findings, "Partial FC").detail
    assert "2059906 classes" in _find(findings, "Partial FC").detail


def test_bad_recipe_is_reported_not_raised(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("config = dict(rec='x', num_classes=2, num_image=2, num_epoch=1, warmup_epoch=0, "
                   "val_targets=[], loss='nope')\n")
    found = _find(diagnose(str(bad), str(tmp_path)), "recipe")
    assert found.status == "fail" and "config.loss" in found.detail


def test_cli_commands_have_examples(capsys):
    parser = build_parser()
    for cmd in ("train", "doctor"):
        with pytest.raises(SystemExit):
            parser.parse_args([cmd, "--help"])
        out = capsys.readouterr().out
        assert "examples:" in out and f"lh2face {cmd}" in out


def test_cli_train_reports_a_missing_checkout(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("ARCFACE_TORCH_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["train", os.path.join(RECIPES, "ms1mv3_r50_lh2face.py")]) == 2
    assert "no arcface_torch checkout found" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore::lh2face_plugin.arcface_torch.revision.RevisionWarning")
def test_cli_train_without_cuda_asks_for_cpu(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    root = write_fake_checkout(str(tmp_path / "co"))
    assert main(["train", os.path.join(RECIPES, "casia_r50_lh2face.py"), "--arcface-root", root]) == 2
    assert "--cpu" in capsys.readouterr().err


def test_module_entry_point_reports_bad_recipe_key(tmp_path):
    root = write_fake_checkout(str(tmp_path / "co"))
    bad = tmp_path / "bad.py"
    bad.write_text("config = dict(rec='x', num_classes=2, num_image=2, num_epoch=1, warmup_epoch=0, "
                   "val_targets=[], loss='arcface', loss_kwargs=dict(m=9.0))\n")
    proc = subprocess.run([sys.executable, "-m", "lh2face_plugin.train", str(bad), "--arcface-root", root],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "config.loss_kwargs" in proc.stderr and "must be <=" in proc.stderr


def test_missing_and_broken_packages_are_told_apart(tmp_path, monkeypatch):
    from lh2face_plugin.arcface_torch import doctor

    for name, body in (("lh2face_broken_pkg", "raise RuntimeError('operator torchvision::nms does not exist')\n"),
                       ("torchvision", "raise RuntimeError('operator torchvision::nms does not exist')\n")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [n for n in sys.modules if n.split(".")[0] == "torchvision"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(doctor, "HOST_REQUIREMENTS", (("lh2face_missing_pkg", "lh2face-missing-pkg"),
                                                      ("lh2face_broken_pkg", "lh2face-broken-pkg")))
    findings = diagnose()
    missing, broken = _find(findings, "lh2face-missing-pkg"), _find(findings, "lh2face-broken-pkg")
    assert missing.status == "fail" and missing.detail.startswith("missing") and "[arcface]" in missing.fix
    assert broken.status == "fail" and "fails to import: RuntimeError: operator torchvision::nms" in broken.detail
    assert "missing" not in broken.detail and "--force-reinstall" in broken.fix
    tv = _find(findings, "torchvision")
    assert tv.status == "warn" and "fails to import: RuntimeError" in tv.detail and "stand-in" in tv.detail
    assert tv.fix.startswith("nothing needed to train") and torch.__version__ in tv.fix
    assert "torchvision" not in sys.modules, "a failed import leaves nothing behind"


def test_start_up_hook_is_reported(monkeypatch):
    from lh2face_plugin.arcface_torch import autoload

    assert _find(diagnose(environ={}), "start-up hook").status == "ok"
    off = _find(diagnose(environ={"LH2FACE_AUTOLOAD": "0"}), "start-up hook")
    assert off.status == "warn" and "LH2FACE_AUTOLOAD=0" in off.detail
    monkeypatch.setattr(autoload, "installed_files", lambda: [])
    gone = _find(diagnose(environ={}), "start-up hook")
    assert gone.status == "fail" and "ignores config.loss" in gone.detail and "pip install" in gone.fix


def test_recipe_says_what_the_stock_command_would_do(tmp_path):
    root = write_fake_checkout(str(tmp_path / "co"))
    job = ("config = dict(rec='synthetic', num_classes=2, num_image=2, num_epoch=1, warmup_epoch=0, val_targets=[], "
           "embedding_size=8{})\n")
    bare, plain = tmp_path / "bare.py", tmp_path / "plain.py"
    bare.write_text(job.format(", loss='cosface', margin_list=(1.0, 0.0, 0.4)"))
    plain.write_text(job.format(""))
    found = diagnose(str(bare), root, environ={})
    assert "activates the plugin" in _find(found, "stock command").detail
    assert _find(found, "unused key").status == "warn" and "config.margin_list" in _find(found, "unused key").detail
    assert _find(found, "data").status == "ok"
    off = _find(diagnose(str(bare), root, environ={"LH2FACE_AUTOLOAD": "0"}), "stock command")
    assert off.status == "warn" and "stops" in off.detail
    assert "own loss" in _find(diagnose(str(plain), root, environ={}), "stock command").detail


def test_recipe_check_says_when_the_hook_is_missing(tmp_path, monkeypatch):
    from lh2face_plugin.arcface_torch import autoload

    root = write_fake_checkout(str(tmp_path / "co"))
    bare = tmp_path / "bare.py"
    bare.write_text("config = dict(rec='synthetic', num_classes=2, num_image=2, num_epoch=1, warmup_epoch=0, "
                    "val_targets=[], embedding_size=8, loss='cosface')\n")
    monkeypatch.setattr(autoload, "installed_files", lambda: [])
    found = _find(diagnose(str(bare), root, environ={}), "stock command")
    assert found.status == "warn" and "not installed" in found.detail and "activates" not in found.detail
