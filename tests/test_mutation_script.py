""".ci/mutation.py: the groups it knows and ``--mutants``, which passes its patterns to ``mutmut run`` and reports
only the mutants they match (mutmut itself is replaced by a fake: the real run takes minutes to hours)."""
from __future__ import annotations

import importlib.util
import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture()
def script():
    spec = importlib.util.spec_from_file_location("ci_mutation", os.path.join(ROOT, ".ci", "mutation.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def fake(script, monkeypatch, tmp_path, rows):
    calls = []
    monkeypatch.setattr(script, "prepare", lambda group: str(tmp_path))

    def mutmut(work, *args, **kw):
        calls.append(args)
        return subprocess.CompletedProcess(args, 0, stdout="--- a\n+++ b\n@@ -1 +1 @@\n-x = 1\n+x = 2\n")

    monkeypatch.setattr(script, "mutmut", mutmut)
    monkeypatch.setattr(script, "results", lambda work: rows)
    return calls


ROWS = [("lh2face_plugin.heads.lh2face.xǁLH2Faceǁplan__mutmut_1", "killed"),
        ("lh2face_plugin.heads.lh2face.xǁLH2Faceǁplan__mutmut_2", "survived"),
        ("lh2face_plugin.heads.uss.xǁUSSǁplan__mutmut_1", "survived")]


def test_every_group_mutates_existing_modules_and_runs_existing_tests(script):
    import glob
    for group, (modules, tests) in script.GROUPS.items():
        assert all(glob.glob(os.path.join(ROOT, m)) for m in modules), group
        assert all(os.path.isfile(os.path.join(ROOT, t)) for t in tests), group


def test_mutants_patterns_reach_mutmut_run_and_limit_the_report(script, monkeypatch, tmp_path, capsys):
    calls = fake(script, monkeypatch, tmp_path, ROWS)
    assert script.main(["heads", "--mutants", "lh2face_plugin.heads.lh2face.*", "--max-children", "1"]) == 0
    run = [c for c in calls if c[0] == "run"]
    assert run == [("run", "--max-children", "1", "lh2face_plugin.heads.lh2face.*")]
    out = capsys.readouterr().out
    assert "lh2face_plugin.heads.lh2face" in out and "lh2face_plugin.heads.uss" not in out
    assert "1 surviving mutant(s)" in out and "plan__mutmut_2" in out


def test_without_mutants_every_result_is_reported_and_survivors_can_fail_the_run(script, monkeypatch, tmp_path,
                                                                                capsys):
    fake(script, monkeypatch, tmp_path, ROWS)
    assert script.main(["heads", "--fail-on-survivors"]) == 1
    out = capsys.readouterr().out
    assert "2 surviving mutant(s)" in out and "lh2face_plugin.heads.uss" in out


def test_unknown_group_is_refused_naming_the_known_ones(script, capsys):
    with pytest.raises(SystemExit):
        script.main(["hedas"])
    assert "unknown group(s) hedas" in capsys.readouterr().err
