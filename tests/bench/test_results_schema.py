"""One versioned results.json (issue 24 item 2): the bench and the quickstart write it, the next run and
``bench --report`` read it; a version this package does not know is refused in one line naming the file and key."""
from __future__ import annotations

import json

import pytest

from lh2face_plugin.bench.results import RESULTS_FORMAT, RESULTS_VERSION, RESULTS_VERSIONS, check_out, read_results
from lh2face_plugin.cli import main

TINY = ["--heads", "arcface", "--seeds", "0", "--steps", "2", "--batch-size", "8", "--identities", "6",
        "--images-per-id", "4", "--families", "2", "--bootstrap", "20", "--workers", "0", "--quiet"]


def _write(folder, doc):
    folder.mkdir(exist_ok=True)
    (folder / "results.json").write_text(json.dumps(doc))
    return str(folder)


def test_known_versions_are_read_and_an_unknown_one_is_refused(tmp_path):
    assert RESULTS_VERSION == RESULTS_VERSIONS[-1] == 3
    for version in RESULTS_VERSIONS:
        out = _write(tmp_path / f"v{version}", {"format": RESULTS_FORMAT, "version": version, "reference": "a"})
        assert read_results(out)["reference"] == "a"
        check_out(out)
    for version in (4, "3", None, True):
        out = _write(tmp_path / "unknown", {"format": RESULTS_FORMAT, "version": version})
        with pytest.raises(ValueError, match=r"results\.json: key 'version' must be one of 1, 2, 3") as err:
            read_results(out)
        assert len(str(err.value).splitlines()) == 1 and out in str(err.value)


def test_an_earlier_quickstart_folder_is_ours_and_another_tools_is_refused(tmp_path):
    out = _write(tmp_path / "qs", {"config": {}, "hard_hq_set": {}, "heads": {}, "export": {}, "plots": {}})
    assert read_results(out) is None  # the quickstart's results.json of before version 3: nothing reused
    check_out(out)
    assert read_results(str(tmp_path / "none")) is None
    check_out(str(tmp_path / "none"))
    for doc in ({}, {"format": "other", "version": 3}, [1, 2]):
        out = _write(tmp_path / "foreign", doc)
        assert read_results(out) is None
        with pytest.raises(FileExistsError, match="was not written by lh2face bench or lh2face quickstart"):
            check_out(out)


@pytest.mark.parametrize("command", [["bench", "--report", "{out}"], ["bench", "--out", "{out}"] + TINY,
                                     ["quickstart", "--out", "{out}", "--identities", "6", "--quiet"]])
def test_the_commands_refuse_an_unknown_version_before_any_work(tmp_path, capsys, command):
    out = _write(tmp_path / "newer", {"format": RESULTS_FORMAT, "version": 99})
    assert main([a.format(out=out) for a in command]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{out}/results.json: key 'version'" in err[0], err
    assert sorted(p.name for p in (tmp_path / "newer").iterdir()) == ["results.json"]
