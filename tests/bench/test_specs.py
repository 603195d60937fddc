"""Head specs of the benchmark: parsing, labels, defaults, helpful errors."""
from __future__ import annotations

import pytest

from lh2face_plugin.bench.config import BenchConfig
from lh2face_plugin.bench.specs import DEFAULT_HEADS, parse_head_spec, parse_head_specs


def test_parse_specs():
    s = parse_head_spec("cosface:s=24,m=0.35")
    assert (s.label, s.name, s.kwargs) == ("cosface:s=24,m=0.35", "cosface", {"s": 24, "m": 0.35})
    assert s.folder == "cosface_s_24_m_0.35"
    s = parse_head_spec("cos24=cosface:s=24,m=0.35")
    assert (s.label, s.name, s.kwargs, s.folder) == ("cos24", "cosface", {"s": 24, "m": 0.35}, "cos24")
    s = parse_head_spec("lh2face:margin=per_sample,lambda_pp=0,kappa_max=none,check_inputs=false")
    assert s.kwargs == {"margin": "per_sample", "lambda_pp": 0, "kappa_max": None, "check_inputs": False}
    assert parse_head_spec(" arcface ").kwargs == {}
    assert parse_head_spec("arcface").input_module is None


def test_parse_input_module_specs():
    s = parse_head_spec("lh2face-r=lh2face:alpha=0.3@render:checkpoint=a/r.pt,mode=frozen,canon_fraction=0.125")
    assert (s.label, s.name, s.kwargs) == ("lh2face-r", "lh2face", {"alpha": 0.3})
    assert s.input_module == "render"
    assert s.input_kwargs == {"checkpoint": "a/r.pt", "mode": "frozen", "canon_fraction": 0.125}
    s = parse_head_spec("arcface@render")
    assert (s.name, s.kwargs, s.input_module, s.input_kwargs) == ("arcface", {}, "render", {})
    with pytest.raises(ValueError, match="no input module after '@'"):
        parse_head_spec("arcface@:mode=frozen")
    with pytest.raises(ValueError, match="is not key=value"):
        parse_head_spec("arcface@render:mode")


def test_parse_network_specs():
    s = parse_head_spec("m=lh2face:alpha=0.3@render:mode=joint#compact-tiny-matched")
    assert (s.label, s.name, s.kwargs, s.input_module, s.input_kwargs, s.network) == (
        "m", "lh2face", {"alpha": 0.3}, "render", {"mode": "joint"}, "compact-tiny-matched")
    assert parse_head_spec("cosface#compact").network == "compact"
    assert parse_head_spec("cosface").network is None
    assert parse_head_specs(["x=cosface#compact-wide"])[0].network == "compact-wide"
    with pytest.raises(ValueError, match="backbone 'r50x' after '#' is not one of"):
        parse_head_specs(["cosface#r50x"])


@pytest.mark.parametrize("text, match", [
    ("cosface#", "no backbone name after '#'"),
    ("cosface:s", "is not key=value"),
    ("cosface:s=1,s=2", "given twice"),
    (":s=1", "no head name"),
])
def test_malformed_specs(text, match):
    with pytest.raises(ValueError, match=match):
        parse_head_spec(text)


def test_checked_specs():
    specs = parse_head_specs(["arcface", "cos24=cosface:s=24,m=0.35"])
    assert [s.label for s in specs] == ["arcface", "cos24"]
    with pytest.raises(KeyError, match="unknown head 'arcfce'"):
        parse_head_specs(["arcfce"])
    with pytest.raises(ValueError, match="head spec 'arcface:q=1'"):
        parse_head_specs(["arcface:q=1"])
    with pytest.raises(ValueError, match="head spec 'arcface:s=-1'"):
        parse_head_specs(["arcface:s=-1"])
    with pytest.raises(ValueError, match="same label"):
        parse_head_specs(["arcface", "arcface"])
    with pytest.raises(ValueError, match="reserved"):
        parse_head_specs(["data=arcface"])
    with pytest.raises(ValueError, match="unknown input module 'rendr'"):
        parse_head_specs(["arcface@rendr"])
    with pytest.raises(ValueError, match="input module 'render': mode must be one of"):
        parse_head_specs(["arcface@render:mode=warm"])
    with pytest.raises(ValueError, match="render checkpoint 'nowhere.pt' does not exist"):
        parse_head_specs(["arcface@render:checkpoint=nowhere.pt"])


def test_default_heads_skip_unregistered_ones_with_a_note():
    notes = []
    specs = parse_head_specs(list(DEFAULT_HEADS) + ["nosuchhead"], skip_unregistered=True, notes=notes)
    assert "nosuchhead" not in [s.name for s in specs] and any("nosuchhead" in n for n in notes)
    cfg = BenchConfig()
    specs, notes = cfg.head_specs()
    assert specs[0].label == "cosface-s24"
    assert {"arcface", "lh2face"} <= {s.name for s in specs}


def test_bench_config_validation():
    with pytest.raises(ValueError, match="seeds must differ"):
        BenchConfig(eval_seed=0).validate()
    with pytest.raises(ValueError, match="budget must be"):
        BenchConfig(budget=0).validate()
    with pytest.raises(ValueError, match="seeds must be distinct"):
        BenchConfig(seeds=(1, 1)).validate()
    with pytest.raises(ValueError, match="sweep_metric"):
        BenchConfig(sweep_metric="accuracy").validate()
    assert BenchConfig(steps=500, budget=0.2).total_steps == 100


def test_each_spec_is_built_once_with_its_defaults_resolved_and_the_control_is_added_once():
    from lh2face_plugin.bench.specs import CONTROL_HEAD
    from lh2face_plugin.registry import HEADS

    spec = parse_head_specs(["cos24=cosface:s=24"])[0]
    assert spec.hparams == HEADS.build("cosface", s=24).hparams() and spec.hparams["s"] == 24
    assert spec.hparams["m3"] == 0.4  # the default margin, resolved
    specs, _ = BenchConfig(heads=("arcface",), control=CONTROL_HEAD).validate()
    assert [s.label for s in specs] == ["arcface", "control"]
    assert (specs[1].name, specs[1].kwargs) == ("cosface", {"s": 24, "m": 0})
    specs, _ = BenchConfig(heads=("arcface", CONTROL_HEAD), control=CONTROL_HEAD).validate()
    assert [s.label for s in specs] == ["arcface", "control"]


def test_scales_set_network_steps_batch_and_identities_and_flags_override_them(capsys):
    from lh2face_plugin.bench.config import SCALES
    from lh2face_plugin.cli import bench as bench_cli
    from lh2face_plugin.cli import build_parser, main

    toy = BenchConfig.at_scale("toy")
    assert (toy.network, toy.steps, toy.batch_size, toy.identities) == (BenchConfig().network, BenchConfig().steps,
                                                                        BenchConfig().batch_size,
                                                                        BenchConfig().identities)
    cpu = BenchConfig.at_scale("cpu", steps=None, identities=None, budget=2.0)
    assert (cpu.network, cpu.steps, cpu.batch_size, cpu.identities) == ("compact-tiny", 1500, 64, 600)
    assert cpu.total_steps == 3000
    own = BenchConfig.at_scale("gpu", steps=700, network="compact-tiny", families=50)
    assert (own.network, own.steps, own.batch_size, own.identities, own.families) == ("compact-tiny", 700, 128,
                                                                                      2400, 50)
    for s in SCALES.values():  # each sees its training set about 8 times (20 images per identity)
        assert s["steps"] * s["batch_size"] / (s["identities"] * 20) == pytest.approx(8, rel=0.01)
    with pytest.raises(ValueError, match="scale must be one of toy, cpu, gpu, got 'big'"):
        BenchConfig.at_scale("big")
    assert tuple(SCALES) == bench_cli._SCALE_NAMES
    assert main(["bench", "--list-scales"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "cpu: --network compact-tiny --steps 1500 --batch-size 64 --identities 600"
    args = build_parser().parse_args(["bench", "--scale", "cpu", "--steps", "9"])
    assert (args.scale, args.steps, args.identities, args.network) == ("cpu", 9, None, None)
    assert main(["bench", "--scale", "big", "--out", "unused"]) == 2
    assert "scale must be one of toy, cpu, gpu, got 'big'" in capsys.readouterr().err


@pytest.mark.parametrize("label", ["runs.json", "results.json", "forest.png", "RESULTS.JSON", "training.png",
                                   "data", "lr_sweep.png", "x" * 101])
def test_a_label_colliding_with_an_output_is_refused_before_any_work(tmp_path, capsys, label):
    from lh2face_plugin.cli import main

    out = tmp_path / "bench"
    rc = main(["bench", "--out", str(out), "--heads", f"{label}=arcface", "cosface", "--seeds", "0", "--steps", "2",
               "--batch-size", "8", "--identities", "6", "--images-per-id", "4", "--families", "2", "--bootstrap",
               "20", "--workers", "0", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and not out.exists()  # refused at once: no data, no training
    assert len(err) == 1 and "head label" in err[0]


def test_check_label_accepts_spec_labels_and_refuses_dot_names():
    from lh2face_plugin.bench.specs import HeadSpec, check_label, parse_head_spec

    check_label(parse_head_spec("cosface:s=24,m=0.35"))
    check_label(parse_head_spec("cos24=cosface:s=24"))
    for bad in (".hidden", "..", "."):
        with pytest.raises(ValueError, match="safe folder name"):
            check_label(HeadSpec(bad, "arcface", text=bad))


def test_presets_are_named_specs():
    from lh2face_plugin.bench.specs import CONTROL_HEAD, PRESETS, preset

    s = parse_head_spec("cosface-s24")
    assert (s.label, s.name, s.kwargs, s.text) == ("cosface-s24", "cosface", {"s": 24, "m": 0.35},
                                                   "cosface-s24=cosface:s=24,m=0.35")
    assert DEFAULT_HEADS[0] == preset("cosface-s24") and CONTROL_HEAD == preset("control")
    assert parse_head_spec(preset("control")) == parse_head_spec("control")
    assert set(PRESETS) >= {"cosface-s24", "control"}


def test_a_resolved_spec_builds_its_head_once_per_run(tiny_train_data, tmp_path, monkeypatch):
    from lh2face_plugin.registry import HEADS
    from lh2face_plugin.training import TrainConfig, run_key, spec_key, train_model

    spec = parse_head_specs(["cosface-s24"])[0]
    cfg = TrainConfig(steps=2, batch_size=8, embedding_size=32, workers=0)
    assert spec_key(cfg, spec, "d") == run_key(cfg, "cosface", {"s": 24, "m": 0.35}, "d")
    builds = []
    build = HEADS.build
    monkeypatch.setattr(HEADS, "build", lambda *a, **k: builds.append(a) or build(*a, **k))
    train_model(cfg, tiny_train_data, spec, str(tmp_path / "r"), progress=False)
    assert len(builds) == 1
    assert train_model(cfg, tiny_train_data, spec, str(tmp_path / "r"), progress=False).reused and len(builds) == 1
