import os

import pytest
import torch
from torch import nn

from _helpers_export import tiny_backbone
from lh2face_plugin.backbones import available_backbones, build_backbone, load_backbone, read_state_dict


def test_every_preset_maps_faces_to_embeddings_ending_in_batchnorm1d():
    x = torch.rand(2, 3, 112, 112) * 2 - 1
    for name in available_backbones():
        model = build_backbone(name, embedding_size=128).eval()
        assert isinstance(model.features, nn.BatchNorm1d)
        assert model(x).shape == (2, 128)
        assert sum(p.numel() for p in model.parameters()) < 8_000_000, name


def test_unknown_name_lists_known_ones():
    with pytest.raises(KeyError) as err:
        build_backbone("compactt")
    for name in available_backbones():
        assert name in str(err.value)


def test_arcface_torch_keywords_and_overrides():
    model = build_backbone("compact-tiny", num_features=64, width=8, dropout=0.0, fp16=False)
    assert model.fc.out_features == 64 and model.stem[0].out_channels == 8
    with pytest.raises(ValueError, match="depths"):
        build_backbone("compact", depths=(1, 2))


def test_fp16_runs_trunk_in_low_precision_and_returns_float32():
    model = build_backbone("compact-tiny", embedding_size=32, fp16=True).eval()
    assert model(torch.zeros(2, 3, 112, 112)).dtype == torch.float32


def test_wrong_input_size_is_reported():
    with pytest.raises(ValueError, match=r"\[B, 3, 112, 112\]"):
        build_backbone("compact-tiny").eval()(torch.zeros(1, 3, 96, 96))


def test_load_roundtrip_infers_embedding_size_and_accepts_checkpoint_layouts(tmp_path):
    model = tiny_backbone(seed=1, embedding_size=96)
    x = torch.rand(3, 3, 112, 112) * 2 - 1
    want = model(x)
    plain, ddp = tmp_path / "model.pt", tmp_path / "checkpoint_gpu_0.pt"
    torch.save(model.state_dict(), plain)
    torch.save({"epoch": 1, "state_dict_backbone": {f"module.{k}": v for k, v in model.state_dict().items()}}, ddp)
    for path in (plain, ddp):
        loaded = load_backbone(path, "compact-tiny")
        assert not loaded.training and loaded.fc.out_features == 96
        torch.testing.assert_close(loaded(x), want)


def test_bad_inputs_give_clear_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("ARCFACE_TORCH_ROOT", raising=False)
    with pytest.raises(FileNotFoundError, match="model file not found"):
        load_backbone(tmp_path / "nope.pt", "compact")
    path = tmp_path / "model.pt"
    torch.save(tiny_backbone().state_dict(), path)
    with pytest.raises(ValueError, match=r"does not match network 'compact'.*shape mismatches"):
        load_backbone(path, "compact")
    with pytest.raises(ValueError, match="ARCFACE_TORCH_ROOT"):
        load_backbone(path, "r50")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="weights-only"):
        read_state_dict(tmp_path / "junk.pt")
    torch.save({"fc.weight": "text"}, tmp_path / "strings.pt")
    with pytest.raises(ValueError, match="'fc.weight' holds str"):
        read_state_dict(tmp_path / "strings.pt")


@pytest.mark.arcface_torch
def test_loads_into_arcface_torch_networks(arcface_root, tmp_path):
    import importlib
    import sys

    if arcface_root not in sys.path:
        sys.path.insert(0, arcface_root)
    get_model = importlib.import_module("backbones").get_model
    torch.manual_seed(0)
    mbf = get_model("mbf", num_features=128).eval()
    path = os.path.join(tmp_path, "model.pt")
    torch.save(mbf.state_dict(), path)
    loaded = load_backbone(path, "mbf", arcface_root=arcface_root)
    x = torch.rand(2, 3, 112, 112) * 2 - 1
    torch.testing.assert_close(loaded(x), mbf(x))
    with pytest.raises(ValueError, match="unknown network 'r51'"):
        load_backbone(path, "r51", arcface_root=arcface_root)
    with pytest.raises(ValueError, match="does not match network 'r18'.*missing keys"):
        load_backbone(path, "r18", arcface_root=arcface_root)


def _gmacs(net):
    ptflops = pytest.importorskip("ptflops")
    net.eval()
    with torch.no_grad():
        macs, _ = ptflops.get_model_complexity_info(net, (3, 112, 112), as_strings=False,
                                                    print_per_layer_stat=False, verbose=False)
    return macs / 1e9


def test_compact_tiny_matched_has_the_size_and_compute_of_compact_tiny_behind_the_render_input():
    from lh2face_plugin.training import build_model

    wrapped, _ = build_model("compact-tiny", 512, "render", {})
    matched = build_backbone("compact-tiny-matched")
    n_wrapped = sum(p.numel() for p in wrapped.parameters())
    n_matched = sum(p.numel() for p in matched.parameters())
    n_plain = sum(p.numel() for p in build_backbone("compact-tiny").parameters())
    assert n_matched == pytest.approx(n_wrapped, rel=0.01) and n_matched > 1.25 * n_plain
    g_matched, g_wrapped = _gmacs(matched), _gmacs(wrapped)
    assert g_matched == pytest.approx(g_wrapped, rel=0.02) and g_matched > 3 * _gmacs(build_backbone("compact-tiny"))


def test_stem_blocks_add_blocks_at_the_stem_and_none_by_default():
    plain = build_backbone("compact-tiny")
    assert [k for k in plain.state_dict() if k.startswith("stem.")][-1] == "stem.2.weight"
    deeper = build_backbone("compact-tiny", stem_blocks=2)
    assert sum(1 for m in deeper.stem if m.__class__.__name__ == "_IRBlock") == 2
    assert deeper(torch.zeros(2, 3, 112, 112)).shape == (2, 512)
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="stem_blocks must be an integer >= 0"):
            build_backbone("compact-tiny", stem_blocks=bad)
