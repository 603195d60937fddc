"""The render input's defaults follow the measurements (issue 26, item 2): docs/results/render-decision/decision.json
names each default and the alternatives the study measured; a default must be what the module and the shipped
recipe use, and no alternative measured better (a bench win) may stay an alternative."""
from __future__ import annotations

import ast
import glob
import importlib.util
import inspect
import json
import os
from typing import Any, Dict, List, Mapping

import pytest

from lh2face_plugin.render.module import RenderInputModule

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RESULTS = os.path.join(ROOT, "docs", "results")
DECISION = os.path.join(RESULTS, "render-decision", "decision.json")


def _gen_results():
    spec = importlib.util.spec_from_file_location("gen_results", os.path.join(ROOT, "docs", "gen_results.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


GEN = _gen_results()


def _decision() -> Dict[str, Any]:
    with open(DECISION, encoding="utf-8") as fh:
        return json.load(fh)


def module_defaults() -> Dict[str, Any]:
    return {name: p.default for name, p in inspect.signature(RenderInputModule.__init__).parameters.items()
            if p.default is not inspect.Parameter.empty}


def recipe_render_kwargs() -> Dict[str, Dict[str, Any]]:
    """The literal keyword arguments of every ``set_input_module(config, "render", ...)`` in recipes/."""
    found = {}
    for path in sorted(glob.glob(os.path.join(ROOT, "recipes", "*.py"))):
        with open(path, encoding="utf-8") as fh:
            tree = ast.parse(fh.read(), path)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None))
                    == "set_input_module" and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)
                    and node.args[1].value == "render"):
                found[os.path.relpath(path, ROOT)] = {k.arg: ast.literal_eval(k.value) for k in node.keywords
                                                      if k.arg is not None}
    return found


def contradictions(spec: Mapping[str, Any], sources: Mapping[str, Any], defaults: Mapping[str, Any],
                   recipes: Mapping[str, Mapping[str, Any]]) -> List[str]:
    """Every way the product contradicts the decision: a default the module does not have, a recipe that sets
    another value, an alternative that is already the default, a row measured against another head than the
    default's, and an alternative the bench measured better (a win)."""
    bad = []
    for st in spec["settings"]:
        name = st["setting"]
        for key, value in st["default"].items():
            if key not in defaults:
                bad.append(f"{name}: {spec['module']} has no parameter {key!r}")
            elif defaults[key] != value:
                bad.append(f"{name}: the decision's default {key}={value!r}, the module's {defaults[key]!r}")
            for recipe, kwargs in recipes.items():
                if key in kwargs and kwargs[key] != value:
                    bad.append(f"{name}: {recipe} sets {key}={kwargs[key]!r}, the default is {value!r}")
        if all(defaults.get(k) == v for k, v in st["alternative"].items()):
            bad.append(f"{name}: the alternative {st['alternative']} is the module's default")
        d = GEN.measured(sources, st, spec["metric"])
        if d is None:
            continue
        if d["reference"] != st["against"]:
            bad.append(f"{name}: measured against {d['reference']!r}, the default's head is {st['against']!r}")
        if d["verdict"] == "win":
            bad.append(f"{name}: {st['alternative']} measured better than the default ({GEN.setting_decision('win')})")
    return bad


def test_the_defaults_and_the_shipped_recipe_follow_the_measurements():
    spec = _decision()
    sources = GEN.decision_sources(spec, RESULTS)
    recipes = recipe_render_kwargs()
    assert "recipes/ms1mv3_r50_lh2face_render.py" in recipes
    assert contradictions(spec, sources, module_defaults(), recipes) == []


def test_every_decision_row_names_a_head_of_its_folder_once_recorded():
    spec = _decision()
    sources = GEN.decision_sources(spec, RESULTS)
    for row in spec["questions"] + spec["settings"]:
        res = sources[row["source"]]
        if res is not None and row["head"] in res.get("heads", {}):
            assert GEN.measured(sources, row, spec["metric"]) is not None, row


def _fake_sources(verdict: str, reference: str = "lh2face-render") -> Dict[str, Any]:
    diff = {"diff": 0.03 if verdict == "win" else -0.03, "ci": [0.01, 0.05] if verdict == "win" else [-0.05, -0.01],
            "verdict": verdict}
    return {"render-study-vs-input": {"reference": reference, "heads": {"lh2face-render-terms": {"seeds": [0, 1]}},
                                      "differences": {"lh2face-render-terms": {"hard_hq_tar@1e-2": diff}}}}


@pytest.mark.parametrize("verdict, flagged", [("win", True), ("loss", False), ("no measurable difference", False)])
def test_a_measured_better_alternative_is_flagged(verdict, flagged):
    spec = {"module": "RenderInputModule", "metric": "hard_hq_tar@1e-2", "settings": [_decision()["settings"][0]]}
    found = contradictions(spec, _fake_sources(verdict), module_defaults(), {})
    assert bool(found) == flagged, found
    if flagged:
        assert "measured better than the default" in found[0] and "must become the default" in found[0]


def test_a_recipe_or_module_that_departs_from_the_decision_is_flagged():
    spec = _decision()
    defaults = dict(module_defaults(), lambda_canon=0.5)
    found = contradictions(spec, {}, defaults, {"recipes/x.py": {"channels": "depth"}})
    assert any("the module's 0.5" in f for f in found)
    assert any("recipes/x.py sets channels='depth'" in f for f in found)
    assert any("measured against 'cosface-s24'" in f
               for f in contradictions({**spec, "settings": spec["settings"][:1]}, _fake_sources("loss", "cosface-s24"),
                                       module_defaults(), {}))
