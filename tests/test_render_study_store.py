"""benchmarks/render_study.sh keeps a study across machines (issue 26): ``--save OUT`` keeps OUT's checkpoint,
finished runs and data fingerprints in the store, and a study into a fresh folder starts from them, byte for
byte, after making the data with benchmarks/pinned_data.py and checking it is the data the kept runs saw."""
from __future__ import annotations

import gzip
import json
import os
import stat
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "render_study.sh")


def _script(path, body):
    """An executable shell script at ``path`` running ``body``; returns its path."""
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def _fake_python(tmp_path, data="data 0123456789abcdef"):
    """Stands in for ``python benchmarks/pinned_data.py OUT``: prints the fingerprints it would print."""
    return _script(tmp_path / f"python-{data.split()[-1]}", f"printf '{data}\\nevalset feed\\n'\n")


def _study(args, store, python, **env):
    return subprocess.run(["bash", SCRIPT, *args], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "STUDY_STORE": str(store), "PYTHON": python, "LH2FACE": "true", **env})


def _write(path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _study_folder(out, data="data 0123456789abcdef"):
    _write(out / "render.pt", b"checkpoint")
    _write(out / "data.txt", f"{data}\nevalset feed\n".encode())
    _write(out / "data" / "train.rec", os.urandom(4096))
    _write(out / "lh2face" / "seed0" / "model.pt", os.urandom(256))
    _write(out / "lh2face" / "seed0" / "train.json", json.dumps({"key": "k0"}).encode())
    _write(out / "lh2face" / "seed0" / "features_0123.npy", b"cache")
    _write(out / "lh2face" / "seed1" / "model.pt", os.urandom(256))  # cut short: no train.json


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_save_keeps_the_checkpoint_the_data_fingerprints_and_the_finished_runs(tmp_path):
    out, store = tmp_path / "out", tmp_path / "store"
    _study_folder(out)
    _write(store / "cosface-s24" / "seed0" / "model.pt", b"kept earlier")
    proc = _study(["--save", str(out)], store, _fake_python(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "kept render.pt, data.txt and 1 finished runs" in proc.stdout
    assert _files(store) == ["cosface-s24/seed0/model.pt", "data.txt", "lh2face/seed0/model.pt",
                             "lh2face/seed0/train.json.gz", "render.pt"]
    assert gzip.decompress((store / "lh2face" / "seed0" / "train.json.gz").read_bytes()) == \
        (out / "lh2face" / "seed0" / "train.json").read_bytes()
    assert (store / "cosface-s24" / "seed0" / "model.pt").read_bytes() == b"kept earlier"


def test_a_study_starts_from_the_store_byte_for_byte(tmp_path):
    out, store, fresh = tmp_path / "out", tmp_path / "store", tmp_path / "fresh"
    _study_folder(out)
    python = _fake_python(tmp_path)
    assert _study(["--save", str(out)], store, python).returncode == 0
    proc = _study([str(fresh), "terms"], store, python)
    assert proc.returncode == 0, proc.stderr
    assert "started from the runs kept in" in proc.stdout
    for rel in ("render.pt", "data.txt", "lh2face/seed0/model.pt", "lh2face/seed0/train.json"):
        assert (fresh / rel).read_bytes() == (out / rel).read_bytes(), rel
    assert not (fresh / "lh2face" / "seed1").exists() and not (fresh / "data.txt.part").exists()


def test_a_run_the_folder_already_holds_is_not_overwritten(tmp_path):
    out, store, fresh = tmp_path / "out", tmp_path / "store", tmp_path / "fresh"
    _study_folder(out)
    python = _fake_python(tmp_path)
    assert _study(["--save", str(out)], store, python).returncode == 0
    _write(fresh / "lh2face" / "seed0" / "model.pt", b"trained here")
    assert _study([str(fresh), "terms"], store, python).returncode == 0
    assert (fresh / "lh2face" / "seed0" / "model.pt").read_bytes() == b"trained here"
    assert not (fresh / "lh2face" / "seed0" / "train.json").exists()


def test_a_study_stops_when_the_data_made_here_is_not_the_kept_runs_data(tmp_path):
    out, store, fresh = tmp_path / "out", tmp_path / "store", tmp_path / "fresh"
    _study_folder(out)
    assert _study(["--save", str(out)], store, _fake_python(tmp_path)).returncode == 0
    proc = _study([str(fresh), "terms"], store, _fake_python(tmp_path, "data 474e22297065408e"))
    assert proc.returncode == 3
    assert "the data made here (data 474e22297065408e evalset feed )" in proc.stderr
    assert "is not the data the kept runs were trained on (data 0123456789abcdef" in proc.stderr
    assert "== terms" not in proc.stdout


def test_save_refuses_a_folder_that_is_not_a_study_or_saw_other_data(tmp_path):
    out, store, other = tmp_path / "out", tmp_path / "store", tmp_path / "other"
    _study_folder(out)
    python = _fake_python(tmp_path)
    (out / "data.txt").unlink()
    proc = _study(["--save", str(out)], store, python)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"render_study.sh: {out}/data.txt: no such file (not a study folder)"
    assert not store.exists()
    _study_folder(out)
    assert _study(["--save", str(out)], store, python).returncode == 0
    _study_folder(other, "data 474e22297065408e")
    proc = _study(["--save", str(other)], store, python)
    assert proc.returncode == 2 and "made from other data than the runs kept" in proc.stderr
    assert not (store / "data.txt").read_text().startswith("data 474e")


def test_every_bench_of_the_study_names_its_reference_among_its_heads(tmp_path):
    """A study started from the store has no run in OUT/runs.json, and the bench refuses a reference that is neither
    one of its heads nor recorded there: each group's call must carry cosface-s24."""
    log = tmp_path / "calls.txt"
    fake = _script(tmp_path / "lh2face",
                   f"if [ \"$1\" = bench ]; then printf '%s\\n' \"$@\" >> {log}; echo ---- >> {log}; fi\n")
    proc = _study([str(tmp_path / "out"), "core", "channels", "terms"], tmp_path / "store", _fake_python(tmp_path),
                  LH2FACE=fake)
    assert proc.returncode == 0, proc.stderr
    calls = [c.strip("\n").split("\n") for c in log.read_text().split("----\n") if c.strip()]
    assert len(calls) == 6  # three groups x two seeds
    for args in calls:
        reference = args[args.index("--reference") + 1]
        heads = [h.split("=")[0] for h in args[args.index("--heads") + 1:]]
        assert reference in heads, args
        assert len(heads) == len(set(heads)), args
    # the positive control, once per seed, with the core group (the one --record requires)
    core = [any(a.startswith("lh2face-matched=") for a in args) for args in calls]
    assert [("--control" in args, c) for args, c in zip(calls, core)].count((True, True)) == 2
    assert sum("--control" in args for args in calls) == 2


def test_record_reports_a_copy_against_each_reference_and_records_the_three_pages(tmp_path):
    out, log = tmp_path / "out", tmp_path / "log.txt"
    _study_folder(out)
    for head in ("cosface-s24", "lh2face-matched", "lh2face-render", "lh2face-render-terms"):
        _write(out / head / "seed0" / "train.json", b"{}")
    _write(out / "results.json", b"OUT's own report")
    before = {p: (out / p).read_bytes() for p in _files(out)}
    # the fake bench writes the report it was asked for into the folder it was given, and says what that folder holds
    lh2face = _script(tmp_path / "lh2face", f"""
        dir=$3; ref=$5
        [ -e "$dir/data" ] && echo "data copied" >> {log}
        [ -f "$dir/lh2face/seed0/model.pt" ] || echo "runs missing" >> {log}
        printf '{{"reference": "%s"}}' "$ref" > "$dir/results.json"; printf runs > "$dir/runs.json"
        echo "report $ref" >> {log}
    """)
    python = _script(tmp_path / "python", f"""
        if [ "$2" = record ]; then echo "record $3 $(cat "$4") $*" >> {log}; else echo "generate $*" >> {log}; fi
    """)
    proc = _study(["--record", str(out)], tmp_path / "store", python, LH2FACE=lh2face)
    assert proc.returncode == 0, proc.stderr
    lines = log.read_text().splitlines()
    assert [ln.split()[0] for ln in lines] == ["report", "record"] * 3 + ["generate"]
    assert lines[0::2][:3] == ["report cosface-s24", "report lh2face-matched", "report lh2face-render"]
    records = lines[1:6:2]
    pages = [("render-study", "cosface-s24"), ("render-study-vs-matched", "lh2face-matched"),
             ("render-study-vs-input", "lh2face-render")]
    for line, (name, ref) in zip(records, pages):
        assert line.startswith(f'record {name} {{"reference": "{ref}"}} ')
        assert f"--reference {ref} --title" in line
        assert "groups: core terms)" in line and "training set 0123456789abcdef, evaluation set feed," in line
    assert lines[-1].endswith("gen_results.py")
    assert {p: (out / p).read_bytes() for p in _files(out)} == before  # OUT itself is not touched


def test_record_refuses_a_folder_without_the_core_group(tmp_path):
    out = tmp_path / "out"
    _study_folder(out)
    proc = _study(["--record", str(out)], tmp_path / "store", _fake_python(tmp_path), LH2FACE="false")
    assert proc.returncode == 2
    assert proc.stderr.strip() == \
        f"render_study.sh: {out}/cosface-s24: no such file (not a study folder with the core group)"
