"""The start-up hook: a bare ``config.loss`` in a stock ``train_v2.py`` run as a script (a fake checkout,
in subprocesses, with the hook as this environment installed it). The real host under torchrun is
test_stock_command.py."""
import json
import os
import subprocess
import sys

import pytest

import _lh2face_autoload as gate
from _helpers_arcface_torch import write_recipe, write_stock_checkout
from lh2face_plugin.arcface_torch import autoload
from lh2face_plugin.arcface_torch.mxnet_shim import SHIM_VERSION as MXNET_SHIM
from lh2face_plugin.arcface_torch.torchvision_shim import SHIM_VERSION as TORCHVISION_SHIM

pytestmark = pytest.mark.slow

BARE = """
    config = dict(loss="lh2face", loss_kwargs=dict(alpha=0.3, vmf_dim=512), margin_list=(1.0, 0.4, 0.0))
"""
PLAIN = """
    config = dict(network="r18")
"""


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    assert autoload.installed_files(), (
        "the start-up hook is not installed in this environment: pip install -e . (or the wheel) first")
    return write_stock_checkout(str(tmp_path_factory.mktemp("stock") / "arcface_torch"))


def _packages(folder, torchvision: str, mxnet: str) -> str:
    """Fake ``torchvision`` / ``mxnet`` packages: ``"broken"`` raise on import, else a working one
    with that ``__version__``."""
    for name, kind in (("torchvision", torchvision), ("mxnet", mxnet)):
        os.makedirs(os.path.join(folder, name), exist_ok=True)
        body = (f"raise RuntimeError('{name} broken on purpose: operator torchvision::nms does not exist')\n"
                if kind == "broken" else f"__version__ = {kind!r}\n")
        with open(os.path.join(folder, name, "__init__.py"), "w") as f:
            f.write(body)
        for sub in ("transforms", "datasets") if name == "torchvision" else ():
            with open(os.path.join(folder, name, f"{sub}.py"), "w") as f:
                f.write("ImageFolder = object\n")
    return str(folder)


def _run(checkout, recipe_body, name="my_recipe", pythonpath=None, script="train_v2.py", **env_extra):
    write_recipe(os.path.join(checkout, "configs", f"{name}.py"), recipe_body)
    env = {k: v for k, v in os.environ.items() if k not in ("LH2FACE_AUTOLOAD", "RANK", "PYTHONPATH")}
    env.update(OMP_NUM_THREADS="1", **env_extra)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    proc = subprocess.run([sys.executable, script, f"configs/{name}"], cwd=checkout, env=env, capture_output=True,
                          text=True, timeout=300)
    report = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else None
    notices = [line for line in proc.stderr.splitlines() if line.startswith("lh2face_plugin:")]
    return proc, report, notices


def test_bare_config_loss_activates_with_one_line_on_rank_0(checkout, tmp_path):
    broken = _packages(tmp_path / "broken", torchvision="broken", mxnet="broken")
    proc, report, notices = _run(checkout, BARE, pythonpath=broken)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert report["head"] == "LH2Face" and report["active"] and report["source"] == "start-up hook"
    assert report["backend"] == "gloo", "nccl maps to gloo without CUDA"
    assert report["mxnet"] == MXNET_SHIM and report["torchvision"] == TORCHVISION_SHIM, "broken packages: stand-ins"
    line = notices[0]
    assert line.startswith("lh2face_plugin: loss lh2face LH2Face(alpha=0.3,") and "LH2FACE_AUTOLOAD=0" in line
    assert "mxnet: stand-in" in line and "torchvision: stand-in" in line and "gloo" in line
    assert len(notices) == 2 and "config.margin_list = (1.0, 0.4, 0.0) is not used" in notices[1]
    proc, report, notices = _run(checkout, BARE, pythonpath=broken, RANK="1")
    assert proc.returncode == 0 and report["head"] == "LH2Face" and notices == [], "other ranks stay quiet"


def test_a_checkout_reached_through_a_symbolic_link_activates(checkout, tmp_path):
    """Python resolves links in sys.path[0]: the config loader's origin is the real path, the script's is not."""
    link = tmp_path / "linked_checkout"
    link.symlink_to(checkout, target_is_directory=True)
    proc, report, notices = _run(checkout, BARE, pythonpath=_packages(tmp_path / "ok", "9.9.9", "1.9.1-fake"),
                                 script=str(link / "train_v2.py"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert report["head"] == "LH2Face" and report["active"] and notices[0].startswith("lh2face_plugin: loss lh2face")


def test_working_packages_are_served_as_they_are(checkout, tmp_path):
    working = _packages(tmp_path / "ok", torchvision="9.9.9", mxnet="1.9.1-fake")
    proc, report, _ = _run(checkout, BARE, pythonpath=working)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (report["torchvision"], report["mxnet"]) == ("9.9.9", "1.9.1-fake")
    assert report["torchvision_origin"] == os.path.join(working, "torchvision", "__init__.py"), "its own spec kept"


def test_recipe_without_plugin_keys_trains_as_arcface_torch(checkout):
    proc, report, notices = _run(checkout, PLAIN)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert report["head"] == "CombinedMarginLoss" and not report["active"] and notices == []


def test_autoload_0_refuses_a_bare_config_loss_but_keeps_set_loss(checkout):
    proc, _, notices = _run(checkout, BARE, LH2FACE_AUTOLOAD="0")
    assert proc.returncode != 0 and notices == []
    assert "PluginNotActive" in proc.stderr and "LH2FACE_AUTOLOAD=0" in proc.stderr
    assert "config.loss = 'lh2face'" in proc.stderr and "would train ArcFace" in proc.stderr
    explicit = """
        from lh2face_plugin.arcface_torch.activate import set_loss
        config = dict(margin_list=(1.0, 0.5, 0.0))
        set_loss(config, "cosface", s=30.0)
    """
    proc, report, _ = _run(checkout, explicit, name="explicit", LH2FACE_AUTOLOAD="0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert report["head"] == "CosFace" and report["source"] == "set_loss"


@pytest.mark.parametrize("body, words", [
    ("config = dict(loss='lh2face', loss_kwarg=dict(alpha=0.3))", ["config.loss_kwarg", "did you mean config.loss_kwargs"]),
    ("config = dict(losses='lh2face')", ["config.losses", "did you mean config.loss"]),
    ("config = dict(loss='lh2face', loss_kwargs=dict(alpah=0.3, kappa_min=8.0))",
     ["config.loss_kwargs", "has no parameter 'alpah' (did you mean 'alpha'?)"]),
])
def test_bad_stock_recipe_stops_before_training(checkout, body, words):
    proc, report, _ = _run(checkout, body, name="bad")
    assert proc.returncode != 0 and report is None
    message = proc.stderr.strip().splitlines()[-1]
    assert "configs/bad.py" in message
    for w in words:
        assert w in message
    assert "'kappa_min'" not in message.split("Its parameters")[0], "only the invalid key is named"


def test_other_interpreters_are_left_alone(checkout, tmp_path):
    probe = ("import sys, json; print(json.dumps({'meta': [type(f).__name__ for f in sys.meta_path], "
             "'modules': sorted(m for m in sys.modules if m.startswith(('_lh2face', 'lh2face', 'torch')))}))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert json.loads(out.stdout) == {"meta": json.loads(out.stdout)["meta"], "modules": []}, \
        "python -c imports neither the gate, the plugin nor torch"
    for where, name in ((tmp_path, "anything.py"), (tmp_path, "train_v2.py"), (checkout, "other.py")):
        script = os.path.join(where, name)      # a train_v2.py outside a checkout does not count
        with open(script, "w") as f:
            f.write(probe + "\n")
        got = json.loads(subprocess.run([sys.executable, script], capture_output=True, text=True, timeout=60,
                                        cwd=where).stdout)
        assert "_Finder" not in got["meta"], (name, got)
        assert [m for m in got["modules"] if m != "_lh2face_autoload"] == [], (name, got)


def test_gate_installs_one_finder_for_three_names(checkout, monkeypatch):
    monkeypatch.setattr(sys, "argv", [os.path.join(checkout, "train_v2.py"), "configs/x"])
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    gate.install()
    gate.install()                                    # site may process a venv's .pth twice
    finders = [f for f in sys.meta_path if type(f).__name__ == "_Finder"]
    assert len(finders) == 1 and sys.meta_path[0] is finders[0] and finders[0].root == checkout
    assert finders[0].find_spec("json") is None and finders[0].find_spec("utils.other") is None
    assert finders[0].find_spec("mxnet") is not None
    assert finders[0].find_spec("utils.utils_config", [os.path.join(str(checkout), "nowhere")]) is None


def test_pth_and_start_files_call_the_gate():
    files = {os.path.basename(f): open(f).read() for f in autoload.installed_files()}
    assert set(files) == {autoload.PTH_NAME, autoload.START_NAME}
    assert files[autoload.PTH_NAME].startswith("import ") and files[autoload.PTH_NAME].count("\n") == 1
    entries = [ln for ln in files[autoload.START_NAME].splitlines() if ln and not ln.startswith("#")]
    assert entries == ["_lh2face_autoload:install"]
    import pkgutil

    assert pkgutil.resolve_name(entries[0]) is gate.install


def test_autoload_variable():
    assert autoload.enabled({}) and autoload.enabled({"LH2FACE_AUTOLOAD": "1"})
    for off in ("0", "false", "No", " off "):
        assert not autoload.enabled({"LH2FACE_AUTOLOAD": off})
