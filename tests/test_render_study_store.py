"""benchmarks/render_study.sh keeps a study across machines (issue 26): ``--save OUT`` replaces the store with
OUT's training data, evaluation set, checkpoint and finished runs, and a study into a fresh folder starts from
them, byte for byte, so the bench reuses the data by its manifest and the runs by key."""
from __future__ import annotations

import gzip
import json
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "render_study.sh")


def _study(args, store, **env):
    return subprocess.run(["bash", SCRIPT, *args], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "STUDY_STORE": str(store), **env})


def _write(path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _study_folder(out):
    _write(out / "render.pt", b"checkpoint")
    _write(out / "data" / ".lh2face-manifest.json", b'{"files": {}}')
    _write(out / "data" / "train.rec", os.urandom(4096))
    _write(out / "data" / "ijb" / "meta" / "pairs.txt", b"1 2 0\n")
    _write(out / "evalset" / "meta.json", b"{}")
    _write(out / "evalset" / "evalset.npz", os.urandom(512))
    _write(out / "lh2face" / "seed0" / "model.pt", os.urandom(256))
    _write(out / "lh2face" / "seed0" / "train.json", json.dumps({"key": "k0"}).encode())
    _write(out / "lh2face" / "seed0" / "features_0123.npy", b"cache")
    _write(out / "lh2face" / "seed1" / "model.pt", os.urandom(256))  # cut short: no train.json


def test_save_replaces_the_store_with_the_folders_data_and_finished_runs(tmp_path):
    out, store = tmp_path / "out", tmp_path / "store"
    _study_folder(out)
    _write(store / "cosface-s24" / "seed0" / "model.pt", b"trained on other data")
    proc = _study(["--save", str(out)], store)
    assert proc.returncode == 0, proc.stderr
    assert "kept render.pt, data/, evalset/ and 1 finished runs" in proc.stdout
    files = sorted(str(p.relative_to(store)) for p in store.rglob("*") if p.is_file())
    assert files == ["data/.lh2face-manifest.json", "data/ijb/meta/pairs.txt", "data/train.rec",
                     "evalset/evalset.npz", "evalset/meta.json", "lh2face/seed0/model.pt",
                     "lh2face/seed0/train.json.gz", "render.pt"]
    assert (store / "data" / "train.rec").read_bytes() == (out / "data" / "train.rec").read_bytes()
    assert gzip.decompress((store / "lh2face" / "seed0" / "train.json.gz").read_bytes()) == \
        (out / "lh2face" / "seed0" / "train.json").read_bytes()
    assert not (tmp_path / "store.part").exists() and not (tmp_path / "store.old").exists()


def test_a_study_starts_from_the_store_byte_for_byte(tmp_path):
    out, store, fresh = tmp_path / "out", tmp_path / "store", tmp_path / "fresh"
    _study_folder(out)
    assert _study(["--save", str(out)], store).returncode == 0
    proc = _study([str(fresh), "terms"], store, LH2FACE="true")
    assert proc.returncode == 0, proc.stderr
    assert "started from the data and runs kept in" in proc.stdout
    for rel in ("render.pt", "data/train.rec", "data/.lh2face-manifest.json", "data/ijb/meta/pairs.txt",
                "evalset/evalset.npz", "evalset/meta.json", "lh2face/seed0/model.pt", "lh2face/seed0/train.json"):
        assert (fresh / rel).read_bytes() == (out / rel).read_bytes(), rel
    assert not (fresh / "lh2face" / "seed1").exists()


def test_a_folder_the_study_already_holds_is_not_overwritten(tmp_path):
    out, store, fresh = tmp_path / "out", tmp_path / "store", tmp_path / "fresh"
    _study_folder(out)
    assert _study(["--save", str(out)], store).returncode == 0
    _write(fresh / "data" / "train.rec", b"made here")
    _write(fresh / "lh2face" / "seed0" / "model.pt", b"trained here")
    assert _study([str(fresh), "terms"], store, LH2FACE="true").returncode == 0
    assert (fresh / "data" / "train.rec").read_bytes() == b"made here"
    assert (fresh / "lh2face" / "seed0" / "model.pt").read_bytes() == b"trained here"
    assert not (fresh / "lh2face" / "seed0" / "train.json").exists()


def test_save_refuses_a_folder_that_is_not_a_study(tmp_path):
    out, store = tmp_path / "out", tmp_path / "store"
    _study_folder(out)
    (out / "evalset" / "evalset.npz").unlink()
    _write(store / "render.pt", b"kept")
    proc = _study(["--save", str(out)], store)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"render_study.sh: {out}/evalset/evalset.npz: no such file (not a study folder)"
    assert (store / "render.pt").read_bytes() == b"kept"
