import importlib
import inspect
import os
import runpy
import subprocess
import sys

import pytest
import torch

from _helpers_arcface_torch import write_recipe
from lh2face_plugin.arcface_torch import activate as act
from lh2face_plugin.arcface_torch.activate import PluginNotActive, activate, find_trainer, is_active
from lh2face_plugin.heads.base import Head
from lh2face_plugin.registry import INPUT_MODULES

RECIPE = """
    from lh2face_plugin.arcface_torch.activate import new_config, set_loss

    config = new_config()
    config.rec, config.num_classes, config.num_image = "synthetic", 10, 100
    config.num_epoch, config.warmup_epoch, config.val_targets = 1, 0, []
    config.embedding_size = 32
    set_loss(config, "uss", gamma=16.0, base="cosface", base_kwargs=dict(s=16.0, m=0.2))
"""


def test_set_loss_outside_any_trainer_raises(tmp_path):
    path = write_recipe(str(tmp_path / "r.py"), RECIPE)
    with pytest.raises(PluginNotActive) as err:
        runpy.run_path(path)
    assert "uss" in str(err.value) and "lh2face train" in str(err.value)


def test_stock_flow_recipe_import_activates_the_trainer(fake_trainer):
    """Way 2: train_v2's get_config imports configs.<name>, whose set_loss activates the trainer."""
    root = os.path.dirname(fake_trainer.__file__)
    stock_pfc = fake_trainer.PartialFC_V2
    write_recipe(os.path.join(root, "configs", "my_uss.py"), RECIPE)
    assert find_trainer() is fake_trainer and not is_active(fake_trainer)
    importlib.import_module("configs.my_uss")
    assert is_active(fake_trainer)
    head = fake_trainer.CombinedMarginLoss(64, 1.0, 0.5, 0.0, 0)
    assert isinstance(head, Head) and type(head).__name__ == "USS" and head.gamma == 16.0
    pfc = fake_trainer.PartialFC_V2(head, 32, 10, 1.0, False)
    assert isinstance(pfc, stock_pfc) and type(pfc) is not stock_pfc
    assert pfc.head is head and head.memory.shape == (10, 32)        # setup_shard called with the shard
    assert "margin_softmax.memory" in pfc.state_dict() and "margin_softmax.b" in pfc.state_dict()


def test_loss_unset_leaves_arcface_torch_untouched(fake_trainer):
    stock, stock_pfc = fake_trainer.CombinedMarginLoss, fake_trainer.PartialFC_V2
    activate(fake_trainer, {"embedding_size": 32})
    margin = fake_trainer.CombinedMarginLoss(64, 1.0, 0.5, 0.0, 0.3)
    assert type(margin) is stock and margin.args == (64, 1.0, 0.5, 0.0, 0.3)
    assert type(fake_trainer.PartialFC_V2(margin, 32, 10, 1.0, False)) is stock_pfc


def test_activation_is_idempotent_and_reversible(fake_trainer):
    names = ("PartialFC_V2", "CombinedMarginLoss", "get_model", "get_dataloader", "get_config")
    before = {n: getattr(fake_trainer, n) for n in names}
    activate(fake_trainer, {})
    once = {n: getattr(fake_trainer, n) for n in names}
    activate(fake_trainer, {})
    assert once == {n: getattr(fake_trainer, n) for n in names}
    act.deactivate(fake_trainer)
    assert before == {n: getattr(fake_trainer, n) for n in names}


def test_lr_scheduler_verbose_is_fixed_on_activation(fake_trainer):
    lr = sys.modules["lr_scheduler"]
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    if "verbose" not in inspect.signature(torch.optim.lr_scheduler.LRScheduler.__init__).parameters:
        with pytest.raises(TypeError, match="verbose"):
            lr.PolynomialLRWarmup(opt, 1, 10)
    activate(fake_trainer, {})
    sched = lr.PolynomialLRWarmup(opt, 1, 10)
    opt.step()
    sched.step()
    assert sched.get_last_lr() == [0.1]


class _Wrap(torch.nn.Module):
    def __init__(self, gain: float = 1.0):
        super().__init__()
        self.gain = gain

    def wrap(self, backbone):
        return torch.nn.Sequential(self, backbone)

    def forward(self, x):
        return x * self.gain


def test_input_module_wraps_the_backbone(fake_trainer, monkeypatch):
    monkeypatch.setitem(INPUT_MODULES._entries, "test-wrap", _Wrap)
    activate(fake_trainer, {"input_module": "test-wrap", "input_module_kwargs": {"gain": 2.0}})
    model = fake_trainer.get_model("r50", num_features=8)
    assert isinstance(model, torch.nn.Sequential) and model[0].gain == 2.0
    activate(fake_trainer, {})
    assert isinstance(fake_trainer.get_model("r50", num_features=8), torch.nn.Linear)


def test_steps_per_epoch_caps_the_loader(fake_trainer):
    activate(fake_trainer, {"steps_per_epoch": 3})
    loader = fake_trainer.get_dataloader("synthetic", 0, 4)
    assert [b[0] for b in loader] == [0, 1, 2] and [b[0] for b in loader] == [0, 1, 2]


def test_get_config_takes_recipes_outside_configs(fake_trainer, tmp_path, monkeypatch):
    activate(fake_trainer, None)
    monkeypatch.chdir(os.path.dirname(fake_trainer.__file__))
    path = write_recipe(str(tmp_path / "outside.py"), "config = dict(network='r18', num_classes=3)\n")
    cfg = fake_trainer.get_config(path)
    assert cfg.network == "r18" and cfg.embedding_size == 512      # merged over configs/base
    assert fake_trainer.get_config("configs/anything") == {"stock": "configs/anything"}


def test_one_activation_object_on_the_trainer_holds_spec_and_parts(fake_trainer, monkeypatch):
    checks = []
    real_spec = act.plugin_spec
    monkeypatch.setattr(act, "plugin_spec", lambda *a, **k: checks.append(1) or real_spec(*a, **k))
    activation = activate(fake_trainer, {"loss": "lh2face", "loss_kwargs": {"alpha": 0.3}, "embedding_size": 8})
    assert act.activation_of(fake_trainer) is activation is getattr(fake_trainer, act.ATTRIBUTE)
    assert activation.spec.loss == "lh2face" and activation.trainer is fake_trainer
    head = fake_trainer.CombinedMarginLoss(64, 1.0, 0.5, 0.0, 0)
    assert head is activation.head and head.alpha == 0.3, "the head is built once and handed to Partial FC"
    pfc = fake_trainer.PartialFC_V2(head, 8, 10, 1.0, False)
    assert pfc.head is head and activation.partial_fc is pfc
    assert len(checks) == 1, "the config is checked once"
    act.deactivate(fake_trainer)
    assert act.activation_of(fake_trainer) is None and not hasattr(fake_trainer, act.ATTRIBUTE)
    assert activation.trainer is None


class _Pending(torch.nn.Module):
    """An input module whose wrapped model keeps loss terms (like the render module)."""

    def wrap(self, backbone):
        model = torch.nn.Sequential(backbone)
        model.pop_pending = lambda: None
        model.pending_losses = lambda *a, **k: {"total": torch.zeros(())}
        return model


@pytest.mark.parametrize("model_first", [True, False])
def test_pairing_does_not_depend_on_the_build_order(fake_trainer, monkeypatch, model_first):
    monkeypatch.setitem(INPUT_MODULES._entries, "test-pending", _Pending)
    activate(fake_trainer, {"input_module": "test-pending"})
    import lh2face_plugin

    if model_first:
        model = fake_trainer.get_model("r50", num_features=8)
        pfc = fake_trainer.PartialFC_V2(lh2face_plugin.build_head("arcface"), 8, 10, 1.0, False)
    else:
        pfc = fake_trainer.PartialFC_V2(lh2face_plugin.build_head("arcface"), 8, 10, 1.0, False)
        model = fake_trainer.get_model("r50", num_features=8)
    assert pfc._input_model() is model


def test_importing_activate_changes_nothing(tmp_path):
    """A train_v2 running as __main__ that imports the module stays untouched until a recipe asks."""
    from _helpers_arcface_torch import write_fake_checkout

    root = write_fake_checkout(str(tmp_path / "co"))
    with open(os.path.join(root, "train_v2.py"), "a") as f:
        f.write("\nif __name__ == '__main__':\n"
                "    import sys\n"
                "    import lh2face_plugin.arcface_torch.activate as a\n"
                "    print('active' if a.is_active(sys.modules['__main__']) else 'untouched',\n"
                "          PartialFC_V2.__module__)\n")
    env = {k: v for k, v in os.environ.items() if k != "LH2FACE_AUTOLOAD"}
    out = subprocess.run([sys.executable, "train_v2.py"], cwd=root, capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["untouched", "partial_fc_v2"]
