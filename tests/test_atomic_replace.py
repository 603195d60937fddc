"""Atomic replacement by behaviour (lh2face_plugin/fileio/), not by its final content.

A replacement must put a new file (a new inode) at the target's name in one step: a reader that opened the
old file keeps reading the old bytes whole, another name of the old file (a hard link) still holds them, a
reader opening the name sees the old content or the new one, never a mix, and a failure inside the commit
leaves the old file as it was. Writing the new bytes into the target in place (a copy over it) passes a
check of the final content but fails every one of these.
"""
from __future__ import annotations

import errno
import json
import os
import threading

import numpy as np
import pytest

from lh2face_plugin import fileio

OLD = b"old-" * (1 << 18)  # 1 MiB
NEW = b"NEW+" * (3 << 17)  # 1.5 MiB: longer, so a copy in place cannot leave the old length either


def write_bytes(path, data):
    with fileio.atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)


def via_copy_file(path, data):
    src = str(path) + ".source"
    with open(src, "wb") as fh:
        fh.write(data)
    fileio.copy_file(src, str(path))
    os.remove(src)


def via_write_text(path, data):
    fileio.write_text(str(path), data.decode("ascii"))


def via_save_npy(path, data):
    fileio.save_npy(str(path), np.frombuffer(data, dtype=np.uint8))


WRITERS = {"atomic_path": write_bytes, "copy_file": via_copy_file, "write_text": via_write_text,
           "save_npy": via_save_npy}


def read_back(path, writer):
    if writer == "save_npy":
        return np.load(path).tobytes()
    with open(path, "rb") as fh:
        return fh.read()


@pytest.fixture
def old_target(tmp_path):
    target = tmp_path / "target.bin"
    target.write_bytes(OLD)
    return target


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_replacement_is_a_new_inode_and_the_old_file_is_untouched(old_target, writer):
    target = old_target
    if writer == "save_npy":
        np.save(str(target) + ".tmp.npy", np.frombuffer(OLD, dtype=np.uint8))
        os.replace(str(target) + ".tmp.npy", target)
    old_bytes = target.read_bytes()
    before = os.stat(target)
    witness = target.parent / "witness"
    os.link(target, witness)  # a second name of the old file
    with open(target, "rb") as held:  # a reader that opened the old file
        WRITERS[writer](target, NEW)
        after = os.stat(target)
        assert (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino), "the target was written in place"
        assert held.read() == old_bytes, "a reader of the old file saw other bytes"
    assert witness.read_bytes() == old_bytes, "the old file's other name changed"
    assert os.stat(witness).st_nlink == 1  # the target's name no longer points to it
    assert read_back(target, writer) == NEW
    assert sorted(p.name for p in target.parent.iterdir()) == ["target.bin", "witness"]  # no staging left


def test_readers_see_the_old_or_the_new_content_never_a_mix(old_target):
    target = old_target
    versions = [OLD, NEW]
    seen, stop = [], threading.Event()

    def reader():
        while not stop.is_set():
            with open(target, "rb") as fh:
                seen.append(fh.read())

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for k in range(30):
            write_bytes(target, versions[(k + 1) % 2])
    finally:
        stop.set()
        thread.join()
    assert seen, "the reader never ran"
    mixed = [len(s) for s in seen if s not in (OLD, NEW)]
    assert not mixed, f"{len(mixed)} of {len(seen)} reads saw neither version whole (lengths {mixed[:5]})"


@pytest.mark.parametrize("fail_in", ["fsync", "replace"])
def test_a_failure_inside_the_commit_leaves_the_old_file(old_target, monkeypatch, fail_in):
    target = old_target
    before = os.stat(target)
    real = getattr(os, fail_in)
    calls = []

    def failing(*args, **kwargs):
        calls.append(args)
        raise OSError(errno.EIO, f"injected failure in {fail_in}")

    monkeypatch.setattr(fileio.staging.os, fail_in, failing)
    with pytest.raises(OSError, match=f"injected failure in {fail_in}"):
        write_bytes(target, NEW)
    monkeypatch.setattr(fileio.staging.os, fail_in, real)
    assert calls, f"the commit never called os.{fail_in}"
    assert target.read_bytes() == OLD
    assert os.stat(target).st_ino == before.st_ino
    assert [p.name for p in target.parent.iterdir()] == ["target.bin"]  # the staging file is gone


def test_update_json_replaces_by_rename(tmp_path):
    path = tmp_path / "doc.json"
    fileio.write_json(str(path), {"n": 0})
    with open(path, encoding="utf-8") as held:
        fileio.update_json(str(path), lambda doc: {"n": doc["n"] + 1, "pad": "x" * 4096})
        assert json.load(held) == {"n": 0}
    assert json.loads(path.read_text(encoding="utf-8"))["n"] == 1
