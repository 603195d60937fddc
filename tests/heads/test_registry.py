"""The head registry: names, entry points (shadowing, broken plugins), lookups."""
from __future__ import annotations

import warnings

import pytest
import torch

import lh2face_plugin
from lh2face_plugin.heads.base import Head
from lh2face_plugin.heads.margins import ArcFace
from lh2face_plugin.registry import HEADS

PLUGIN = '''
from lh2face_plugin.heads.base import Head


class Double(Head):
    """Twice the cosine."""

    def __init__(self, k: float = 2.0, check_inputs=True):
        super().__init__(check_inputs)
        self.k = k

    def compute(self, inp):
        return inp.cosine * self.k
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """Install a distribution with the given head entry points; the registry rescans, as a new process would."""

    HEADS.names()  # the built-ins, loaded before the plugin is on the path

    def install(entry_points, module="myheads_reg", source=PLUGIN):
        (tmp_path / f"{module}.py").write_text(source)
        dist = tmp_path / f"{module}-1.0.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n")
        lines = "".join(f"{name} = {value}\n" for name, value in entry_points.items())
        (dist / "entry_points.txt").write_text(f"[lh2face_plugin.heads]\n{lines}")
        monkeypatch.syspath_prepend(str(tmp_path))
        builtins = {k: v for k, v in HEADS._entries.items() if v.__module__.startswith("lh2face_plugin.")}
        monkeypatch.setattr(HEADS, "_entries", builtins)
        monkeypatch.setattr(HEADS, "_loaded", False)

    return install


def test_entry_point_shadowing_a_builtin_warns_and_the_builtin_wins(plugin):
    plugin({"arcface": "myheads_reg:Double", "double": "myheads_reg:Double"})
    with pytest.warns(UserWarning) as record:
        names = lh2face_plugin.available_heads()
    messages = [str(w.message) for w in record]
    assert len(messages) == 1, messages
    assert "entry point 'arcface' = 'myheads_reg:Double'" in messages[0]
    assert "built-in head 'arcface', which wins" in messages[0] and "another name" in messages[0]
    assert "arcface" in names and "double" in names
    assert type(lh2face_plugin.build_head("arcface")) is ArcFace
    assert type(lh2face_plugin.build_head("double")).__name__ == "Double"


def test_entry_point_shadowing_with_another_spelling_warns(plugin):
    plugin({"MV_Softmax": "myheads_reg:Double"})
    with pytest.warns(UserWarning, match="'MV_Softmax'.*built-in head 'mv-softmax', which wins"):
        HEADS.names()
    assert type(lh2face_plugin.build_head("mv_softmax")).__name__ == "MVSoftmax"


def test_entry_point_naming_the_builtin_itself_is_silent(plugin):
    plugin({"arcface": "lh2face_plugin.heads.margins:ArcFace"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert "arcface" in lh2face_plugin.available_heads()


def test_broken_entry_point_fails_when_built_not_when_listed(plugin):
    plugin({"broken": "no_such_module_xyz:Head", "double": "myheads_reg:Double"})
    names = lh2face_plugin.available_heads()  # the other heads stay usable
    assert "broken" in names and "double" in names and "lh2face" in names
    with pytest.raises(ImportError, match=r"head 'broken' from entry point 'no_such_module_xyz:Head' failed to load: "
                                          r"No module named 'no_such_module_xyz'"):
        lh2face_plugin.build_head("broken")
    assert isinstance(lh2face_plugin.build_head("double", k=3.0), Head)


@pytest.mark.parametrize("spelling, cls", [("mv_softmax", "MVSoftmax"), ("MV-Softmax", "MVSoftmax"),
                                           ("SV_SOFTMAX", "SVSoftmax"), ("AdaFace", "AdaFace"),
                                           ("CurricularFace", "CurricularFace"), ("MagFace", "MagFace")])
def test_lookup_normalises_case_and_underscores(spelling, cls):
    assert type(lh2face_plugin.build_head(spelling)).__name__ == cls


def test_third_party_name_is_found_whatever_its_case(plugin):
    plugin({"My_Head": "myheads_reg:Double"})
    assert HEADS.get("my_head") is HEADS.get("MY_HEAD")
    assert HEADS.get("my_head").__name__ == "Double"


def test_unknown_name_suggests_close_names():
    with pytest.raises(KeyError, match="Did you mean 'curricularface'"):
        lh2face_plugin.build_head("curricularfce")
    with pytest.raises(TypeError, match="head name must be a str"):
        HEADS.get(3)


def test_registering_a_taken_name_twice_is_refused():
    with pytest.raises(ValueError, match="head 'adaface' is already registered"):
        HEADS.register("adaface", lambda **kw: None)


def test_every_builtin_head_builds_with_defaults_and_has_a_docstring():
    from _helpers_heads import builtin_heads

    x = torch.nn.functional.normalize(torch.randn(2, 4))
    w = torch.nn.functional.normalize(torch.randn(3, 4))
    for name in builtin_heads():
        head = lh2face_plugin.build_head(name)
        head.setup_shard(3, 4)
        assert isinstance(head, Head) and type(head).__doc__ and head.hparams(), name
        out = head.evaluate(x @ w.t(), torch.tensor([0, 1]), norms=torch.tensor([20.0, 30.0]), embeddings=x, weights=w)
        assert out.logits.shape == (2, 3) and torch.isfinite(out.logits).all(), name


def test_every_builtin_head_is_a_name_of_the_heads_package():
    """Heads are found one way: each registered built-in head is importable from lh2face_plugin.heads."""
    import lh2face_plugin.heads as heads
    from _helpers_heads import builtin_heads

    for name in builtin_heads():
        factory = HEADS.get(name)
        assert getattr(heads, factory.__name__) is factory and factory.__name__ in heads.__all__, name
    from lh2face_plugin.heads import ElasticFace  # noqa: F401  (the head the hand-written list once left out)


def test_layers_are_named_by_type():
    from lh2face_plugin.layers.contract import Layer

    class NoPlan(Head):
        pass

    with pytest.raises(TypeError, match="cannot run on the blockwise layer: it implements no plan"):
        NoPlan().require_layer(Layer.BLOCKWISE)
