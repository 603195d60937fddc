"""fileio: staged writes, cleanup of what killed writers left, folder publishing, manifests, locked JSON updates."""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys

import pytest

from lh2face_plugin import fileio
from lh2face_plugin.fileio import (MANIFEST, FolderNotOwned, Staged, atomic_path, cleanup_stale, read_manifest,
                                   sha256_file, update_json, verify_manifest, writing_folder)


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_atomic_path_commits_only_on_success(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(str(target)) as tmp:
            open(tmp, "w").write("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["a.txt"]
    with atomic_path(str(target), suffix=".npy") as tmp:
        assert os.path.basename(tmp).startswith(".a.txt.") and tmp.endswith(".part.npy")
        open(tmp, "w").write("new")
    assert target.read_text() == "new" and os.listdir(tmp_path) == ["a.txt"]


def _stale_entries(folder, pid):
    (folder / f".train.rec.{pid}.0123abcd.part").write_bytes(b"half a record")
    (folder / f".train.rec.{pid}.deadbeef.part.npy").write_bytes(b"x")
    stale_dir = folder / f".train.rec.{pid}.89abcdef.part"
    stale_dir.mkdir()
    (stale_dir / "inner").write_text("x")


def test_staging_of_dead_writers_is_removed_live_ones_kept(tmp_path):
    pid = dead_pid()
    _stale_entries(tmp_path, pid)
    other_target = tmp_path / f".other.{pid}.0123abcd.part"
    other_target.write_text("another target's staging")
    user = tmp_path / ".train.rec.notes"
    user.write_text("a user's file that only looks similar")
    live = Staged(str(tmp_path / "train.rec"))  # a new write of the target cleans first
    assert sorted(os.listdir(tmp_path)) == sorted([os.path.basename(live.path), other_target.name, user.name])
    _stale_entries(tmp_path, pid)
    assert len(cleanup_stale(str(tmp_path / "train.rec"))) == 3
    assert sorted(os.listdir(tmp_path)) == sorted([os.path.basename(live.path), other_target.name, user.name])
    live.discard()
    assert sorted(os.listdir(tmp_path)) == sorted([other_target.name, user.name])


def test_a_locked_staging_entry_survives_even_with_a_dead_pid(tmp_path):
    """A writer on another host: its pid means nothing here, its lock does."""
    path = tmp_path / f".x.{dead_pid()}.0123abcd.part"
    code = ("import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
            "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(30)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert cleanup_stale(str(tmp_path / "x")) == [] and path.exists()
    finally:
        holder.kill()
        holder.wait()
    assert cleanup_stale(str(tmp_path / "x")) == [str(path)]


def test_writing_folder_refuses_foreign_folders_and_keeps_other_files(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("the user's")
    with pytest.raises(FolderNotOwned, match=r"not empty \(mine\.txt\).*--overwrite"):
        with writing_folder(str(out), "data build"):
            pass
    assert sorted(os.listdir(tmp_path)) == ["out"]  # no staging left either
    with writing_folder(str(out), "data build", overwrite=True) as stage:
        os.makedirs(os.path.join(stage, "sub"))
        open(os.path.join(stage, "sub", "a.bin"), "wb").write(b"1")
        open(os.path.join(stage, "mine.txt"), "w").write("replaced: same name")
    assert (out / "mine.txt").read_text() == "replaced: same name"
    (out / "sub" / "user.txt").write_text("added by the user")
    (out / "empty_user_dir").mkdir()
    doc = read_manifest(str(out))
    assert doc["command"] == "data build" and set(doc["files"]) == {"sub/a.bin", "mine.txt"}
    with writing_folder(str(out), "data build") as stage:  # ours now: no --overwrite needed
        open(os.path.join(stage, "b.bin"), "wb").write(b"2")
    assert sorted(os.listdir(out)) == [MANIFEST, "b.bin", "empty_user_dir", "sub"]
    assert os.listdir(out / "sub") == ["user.txt"]  # ours removed, the user's kept
    with pytest.raises(FolderNotOwned, match="made by 'lh2face data build'"):
        with writing_folder(str(out), "export"):
            pass


def test_writing_folder_failure_leaves_the_old_version(tmp_path):
    out = tmp_path / "out"
    with writing_folder(str(out), "c") as stage:
        open(os.path.join(stage, "f"), "w").write("v1")
    with pytest.raises(ValueError):
        with writing_folder(str(out), "c") as stage:
            open(os.path.join(stage, "f"), "w").write("v2")
            raise ValueError("bad input")
    assert (out / "f").read_text() == "v1" and sorted(os.listdir(tmp_path)) == ["out"]
    assert verify_manifest(str(out)) == []
    (out / "f").write_text("v9")  # same size, other bytes
    assert verify_manifest(str(out)) == [f"{out / 'f'}: content differs from the manifest (SHA-256)"]


def test_publish_without_an_atomic_swap_keeps_user_files(tmp_path, monkeypatch):
    monkeypatch.setattr(fileio.folders, "_exchange", lambda a, b: False)
    out = tmp_path / "out"
    with writing_folder(str(out), "c") as stage:
        open(os.path.join(stage, "old_only"), "w").write("1")
        open(os.path.join(stage, "f"), "w").write("v1")
    (out / "user").write_text("u")
    with writing_folder(str(out), "c") as stage:
        open(os.path.join(stage, "f"), "w").write("v2")
    assert sorted(os.listdir(out)) == [MANIFEST, "f", "user"] and (out / "f").read_text() == "v2"
    assert verify_manifest(str(out)) == []


def test_sha256_file_and_text_mode(tmp_path):
    p = tmp_path / "t"
    p.write_bytes(b"a\r\nb\n")
    assert sha256_file(str(p)) == hashlib.sha256(b"a\r\nb\n").hexdigest()
    q = tmp_path / "u"
    q.write_bytes(b"a\nb\n")
    assert sha256_file(str(p), text=True) == sha256_file(str(q)) != sha256_file(str(p))


ADD = """
import sys
from lh2face_plugin.fileio import update_json
path, prefix = sys.argv[1], sys.argv[2]
for i in range(15):
    update_json(path, lambda doc, k=f"{prefix}{i}": {**(doc or {}), k: i})
"""


def test_update_json_merges_concurrent_writers(tmp_path):
    path = str(tmp_path / "results.json")
    procs = [subprocess.Popen([sys.executable, "-c", ADD, path, p]) for p in ("a", "b")]
    assert [p.wait(60) for p in procs] == [0, 0]
    assert len(json.load(open(path))) == 30
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"bad\.json: unreadable JSON"):
        update_json(str(tmp_path / "bad.json"), lambda doc: doc)


def test_an_interrupted_publish_by_file_is_still_recognised(tmp_path, monkeypatch):
    monkeypatch.setattr(fileio.folders, "_exchange", lambda a, b: False)
    out = tmp_path / "out"
    with writing_folder(str(out), "c") as stage:
        open(os.path.join(stage, "a"), "w").write("v1")
    real = os.replace

    def dying(src, dst):
        if os.path.basename(dst) == "b":
            raise KeyboardInterrupt  # killed half-way through the moves
        return real(src, dst)

    monkeypatch.setattr(fileio.folders.os, "replace", dying)
    with pytest.raises(KeyboardInterrupt):
        with writing_folder(str(out), "c") as stage:
            open(os.path.join(stage, "a"), "w").write("v2")
            open(os.path.join(stage, "b"), "w").write("v2")
    monkeypatch.setattr(fileio.folders.os, "replace", real)
    assert verify_manifest(str(out)) != []  # not whole: a rerun rebuilds it
    with writing_folder(str(out), "c") as stage:  # still this command's folder: no --overwrite needed
        open(os.path.join(stage, "b"), "w").write("v3")
    assert sorted(os.listdir(out)) == [MANIFEST, "b"] and verify_manifest(str(out)) == []


def _forge_manifest(folder, command, files):
    listing = {rel: {"size": os.path.getsize(p), "sha256": sha256_file(p)} if os.path.exists(p) else
               {"size": 1, "sha256": "0" * 64} for rel, p in files.items()}
    (folder / MANIFEST).write_text(json.dumps({"format": "lh2face-manifest/1", "command": command,
                                               "files": listing}))


def test_ownership_cannot_be_forged_by_writing_a_manifest(tmp_path):
    out, outside = tmp_path / "out", tmp_path / "outside.txt"
    out.mkdir()
    (out / "thesis.txt").write_text("years of work")
    outside.write_text("not in the folder")
    _forge_manifest(out, "export", {"thesis.txt": "nowhere", "../outside.txt": str(outside)})
    assert fileio.owned_files(str(out), read_manifest(str(out))["files"]) == set()
    with pytest.raises(FolderNotOwned, match=r"out/thesis\.txt: changed since 'lh2face export' wrote it .*--overwrite"):
        with writing_folder(str(out), "export") as stage:
            open(os.path.join(stage, "recognition.onnx"), "w").write("model")
    with writing_folder(str(out), "export", overwrite=True) as stage:
        open(os.path.join(stage, "recognition.onnx"), "w").write("model")
    assert (out / "thesis.txt").read_text() == "years of work" and outside.read_text() == "not in the folder"
    _forge_manifest(out, "export", {"recognition.onnx": str(out / "recognition.onnx")})  # unlisted: not ours
    with pytest.raises(FolderNotOwned, match=r"out/thesis\.txt: was not written by 'lh2face export'"):
        with writing_folder(str(out), "export") as stage:
            open(os.path.join(stage, "thesis.txt"), "w").write("replaced?")
    with writing_folder(str(out), "export") as stage:
        open(os.path.join(stage, "recognition.onnx"), "w").write("model 2")
    assert (out / "thesis.txt").read_text() == "years of work"


def test_a_changed_file_is_replaced_only_with_overwrite(tmp_path):
    out = tmp_path / "out"
    with writing_folder(str(out), "c") as stage:
        open(os.path.join(stage, "f"), "w").write("v1")
    (out / "f").write_text("edited by the user")
    with pytest.raises(FolderNotOwned, match=r"out/f: changed since 'lh2face c' wrote it \(its SHA-256 is not the "
                                             r"one .lh2face-manifest\.json lists\); pass --overwrite to replace it"):
        with writing_folder(str(out), "c") as stage:
            open(os.path.join(stage, "f"), "w").write("v2")
    assert (out / "f").read_text() == "edited by the user"
    with writing_folder(str(out), "c", overwrite=True) as stage:
        open(os.path.join(stage, "f"), "w").write("v2")
    assert (out / "f").read_text() == "v2" and verify_manifest(str(out)) == []


def test_resolve_inside_is_the_one_resolver(tmp_path):
    root = tmp_path / "data"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.jpg").write_bytes(b"x")
    (tmp_path / "secret").write_text("s")
    os.symlink(tmp_path / "secret", root / "link.jpg")
    os.symlink(root / "sub" / "a.jpg", root / "inner.jpg")
    real = os.path.realpath(root)
    assert fileio.resolve_inside(str(root), "sub/a.jpg", source="list") == os.path.join(real, "sub", "a.jpg")
    assert fileio.resolve_inside(str(root), "inner.jpg", source="list") == os.path.join(real, "sub", "a.jpg")
    for name in ("../secret", str(tmp_path / "secret"), "/etc/shadow", "link.jpg", "sub/../../secret", ".."):
        with pytest.raises(fileio.OutsideRoot, match=rf"^list\.txt line 7: names {re.escape(repr(name))}, which "
                                                     "resolves outside"):
            fileio.resolve_inside(str(root), name, source="list.txt", line=7)
