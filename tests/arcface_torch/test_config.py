import glob
import os
import re
import runpy

import pytest

from _helpers_arcface_torch import write_fake_checkout, write_recipe
from lh2face_plugin.arcface_torch.activate import PluginNotActive
from lh2face_plugin.arcface_torch.config import (REQUIRED_JOB_KEYS, check_job_keys, check_key_spelling, load_recipe,
                                                 plugin_spec, resolve_recipe)
from lh2face_plugin.render.module import RenderInputModule

RECIPES = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "..", "recipes", "*.py")))

JOB = """
    config = dict(rec="synthetic", num_classes=10, num_image=100, num_epoch=1, warmup_epoch=0, val_targets=[],
                  embedding_size=64{extra})
"""


def _recipe(tmp_path, extra="", name="job.py"):
    return write_recipe(str(tmp_path / name), JOB.format(extra=extra))


def test_recipe_anywhere_merged_over_checkout_base(tmp_path):
    root = write_fake_checkout(str(tmp_path / "co"))
    (tmp_path / "elsewhere").mkdir()
    path = _recipe(tmp_path / "elsewhere", ", network='r100'", name="my_job.py")
    cfg = load_recipe(path, root)
    assert cfg.network == "r100" and cfg.margin_list == (1.0, 0.5, 0.0)   # recipe over base
    assert cfg.output == os.path.join("work_dirs", "my_job")
    assert cfg.recipe_path == os.path.abspath(path)


def test_configs_name_resolves_inside_checkout(tmp_path):
    root = write_fake_checkout(str(tmp_path / "co"))
    write_recipe(os.path.join(root, "configs", "mine.py"), JOB.format(extra=""))
    assert resolve_recipe("configs/mine", root) == os.path.join(root, "configs", "mine.py")
    assert resolve_recipe("mine", root) == os.path.join(root, "configs", "mine.py")
    with pytest.raises(FileNotFoundError, match="nope"):
        resolve_recipe("nope", root)


def test_recipe_without_config_is_named(tmp_path):
    path = write_recipe(str(tmp_path / "bad.py"), "settings = {}\n")
    with pytest.raises(ValueError, match=r"bad\.py.*`config`"):
        load_recipe(path)


@pytest.mark.parametrize("extra, error, words", [
    (", loss='no-such-head'", KeyError, ["config.loss", "no-such-head"]),
    (", loss='arcface', loss_kwargs=dict(s=-1.0)", ValueError, ["config.loss_kwargs", "arcface", "s must be"]),
    (", loss='arcface', loss_kwargs=dict(bogus=1)", TypeError, ["config.loss_kwargs", "bogus"]),
    (", loss='arcface', loss_kwargs=[1, 2]", ValueError, ["config.loss_kwargs must be a dict"]),
    (", loss_kwargs=dict(s=1.0)", ValueError, ["config.loss is not"]),
    (", loss=3", ValueError, ["config.loss must be"]),
    (", sample_rate=1.5", ValueError, ["config.sample_rate"]),
    (", steps_per_epoch=0", ValueError, ["config.steps_per_epoch"]),
    (", input_module='no-such-module'", KeyError, ["config.input_module"]),
    (", loss='uss', loss_kwargs=dict(embedding_size=32)", ValueError, ["embedding_size"]),
])
def test_invalid_plugin_keys_name_the_key(tmp_path, extra, error, words):
    cfg = load_recipe(_recipe(tmp_path, extra))
    with pytest.raises(error) as err:
        plugin_spec(cfg)
    for w in words:
        assert w in str(err.value)
    assert "job.py" in str(err.value)


@pytest.mark.parametrize("extra, key, meant", [
    (", loss='lh2face', loss_kwarg=dict(alpha=0.3)", "loss_kwarg", "loss_kwargs"),
    (", Loss='lh2face'", "Loss", "loss"),
    (", losses='lh2face'", "losses", "loss"),          # no plugin key at all: arcface_torch would train ArcFace
    (", input_modul='render'", "input_modul", "input_module"),
    (", loss='cosface', step_per_epoch=3", "step_per_epoch", "steps_per_epoch"),
])
def test_key_spelled_close_to_a_plugin_key_is_an_error(tmp_path, extra, key, meant):
    with pytest.raises(ValueError) as err:
        plugin_spec(load_recipe(_recipe(tmp_path, extra)), build=False)
    assert f"config.{key} is read by neither" in str(err.value) and f"did you mean config.{meant}?" in str(err.value)
    assert "job.py" in str(err.value)


def test_arcface_torch_keys_are_never_taken_for_typos():
    """Every key of arcface_torch's configs/base.py, its job configs and what train_v2 adds passes."""
    host_keys = {"margin_list", "network", "resume", "save_all_states", "output", "embedding_size", "sample_rate",
                  "interclass_filtering_threshold", "fp16", "batch_size", "optimizer", "lr", "momentum",
                  "weight_decay", "verbose", "frequent", "dali", "dali_aug", "gradient_acc", "seed", "num_workers",
                  "wandb_key", "suffix_run_name", "using_wandb", "wandb_entity", "wandb_project", "wandb_log_all",
                  "save_artifacts", "wandb_resume", "notes", "total_batch_size", "warmup_step", "total_step"}
    check_key_spelling({k: 1 for k in host_keys | set(REQUIRED_JOB_KEYS)})


def test_keys_made_unused_by_config_loss_are_reported(tmp_path):
    spec = plugin_spec(load_recipe(_recipe(tmp_path, ", loss='cosface', margin_list=(1.0, 0.0, 0.4), "
                                                     "interclass_filtering_threshold=0.3")))
    assert [u.split(" is not used")[0] for u in spec.unused] == [
        "config.margin_list = (1.0, 0.0, 0.4)", "config.interclass_filtering_threshold = 0.3"]
    assert "config.loss = 'cosface' replaces arcface_torch's CombinedMarginLoss" in spec.unused[0]
    assert plugin_spec(load_recipe(_recipe(tmp_path, ", margin_list=(1.0, 0.0, 0.4)"))).unused == []
    merged = load_recipe(_recipe(tmp_path, ", loss='cosface'"), base={"margin_list": (1.0, 0.5, 0.0)})
    assert merged.margin_list == (1.0, 0.5, 0.0) and plugin_spec(merged).unused == [], "from the base: not the user's"


def test_bad_loss_kwargs_name_exactly_the_invalid_keys(tmp_path):
    cfg = load_recipe(_recipe(tmp_path, ", loss='lh2face', loss_kwargs=dict(alpah=0.35, kappa_min=16.0, "
                                        "lambda_ps=0.1, vmf_dim=64)"))
    with pytest.raises(TypeError) as err:
        plugin_spec(cfg)
    named = str(err.value).split("Its parameters")[0]
    assert "config.loss_kwargs for 'lh2face'" in named
    assert "'alpah' (did you mean 'alpha'?)" in named and "'lambda_ps' (did you mean 'lambda_pps'?)" in named
    assert "kappa_min" not in named and "vmf_dim" not in named


def test_loss_unset_means_stock_behaviour(tmp_path):
    spec = plugin_spec(load_recipe(_recipe(tmp_path)))
    assert spec.loss is None and not spec.active


def test_embedding_size_reaches_heads_that_take_it(tmp_path):
    spec = plugin_spec(load_recipe(_recipe(tmp_path, ", loss='uss'")))
    assert spec.head_kwargs()["embedding_size"] == 64
    assert "embedding_size" not in plugin_spec(load_recipe(_recipe(tmp_path, ", loss='cosface'"))).head_kwargs()


def test_frozen_render_module_needs_a_checkpoint(tmp_path):
    cfg = load_recipe(_recipe(tmp_path, ", input_module='render', input_module_kwargs=dict(mode='frozen', width=4)"))
    with pytest.raises(ValueError) as info:
        plugin_spec(cfg)
    message = str(info.value)
    assert "\n" not in message
    assert "config.input_module_kwargs for 'render': checkpoint is required with mode='frozen'" in message
    assert "lh2face render pretrain --out FILE" in message


def test_missing_job_keys_are_listed(tmp_path):
    cfg = load_recipe(write_recipe(str(tmp_path / "j.py"), "config = dict(rec='x', num_classes=3)\n"))
    with pytest.raises(ValueError, match="config.num_image.*config.num_epoch"):
        check_job_keys(cfg)


def _load_and_check(path):
    cfg = load_recipe(os.path.abspath(path), base={})
    check_job_keys(cfg)
    return cfg, plugin_spec(cfg)


@pytest.mark.parametrize("path", RECIPES, ids=os.path.basename)
def test_shipped_recipes_load_and_validate(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    try:
        cfg, spec = _load_and_check(path)
    except FileNotFoundError as exc:
        missing = re.search(r"render checkpoint '([^']+)' does not exist", str(exc))
        assert missing and "config.input_module_kwargs for 'render'" in str(exc), exc
        RenderInputModule().save_reconstruction(missing.group(1))
        cfg, spec = _load_and_check(path)
    assert spec.loss, "every shipped recipe names its head"
    doc = open(path).read().split('"""')[1]
    assert "Dataset:" in doc and "Expected run:" in doc and "lh2face" in doc


def test_recipe_list_covers_the_issue():
    names = {os.path.basename(p) for p in RECIPES}
    for want in ("ms1mv3_r50_lh2face.py", "ms1mv3_r100_lh2face.py", "glint360k_r100_lh2face.py",
                 "wf42m_pfc02_r100_lh2face.py", "casia_r50_lh2face.py", "ms1mv3_r50_mv_softmax.py",
                 "ms1mv3_r50_sv_softmax.py", "ms1mv3_r50_unitsface.py", "smoke_synthetic_cpu.py"):
        assert want in names
    assert load_recipe([p for p in RECIPES if "wf42m_pfc02" in p][0], base={}).sample_rate == 0.2


def test_shipped_recipe_run_outside_the_plugin_fails_loudly():
    path = [p for p in RECIPES if p.endswith("ms1mv3_r50_lh2face.py")][0]
    with pytest.raises(PluginNotActive, match="train ArcFace"):
        runpy.run_path(path)


def test_partial_fc_options_are_checked_by_name_and_type():
    from lh2face_plugin.arcface_torch.config import plugin_spec

    spec = plugin_spec({"loss": "arcface", "partial_fc_kwargs": {"blockwise": True, "block_elements": 1 << 20}})
    assert spec.partial_fc_kwargs == {"blockwise": True, "block_elements": 1 << 20}
    with pytest.raises(ValueError, match=r"no option 'blockwis' \(did you mean 'blockwise'\?\)"):
        plugin_spec({"loss": "arcface", "partial_fc_kwargs": {"blockwis": True}})
    with pytest.raises(ValueError, match=r"partial_fc_kwargs\['cache_cosine'\] must be True or False"):
        plugin_spec({"loss": "arcface", "partial_fc_kwargs": {"cache_cosine": "yes"}})
    with pytest.raises(ValueError, match="config.loss is not"):
        plugin_spec({"partial_fc_kwargs": {"blockwise": True}})
