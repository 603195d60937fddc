"""fileio edge cases the mutation run (``.ci/mutation.py fileio``) found unchecked: the folder swap and its
fallbacks, what a rerun carries over, an interrupted publish, manifests and ownership of odd listings, the
exact problems and errors reported, stale staging entries, the writer lock's holder, the savers."""
from __future__ import annotations

import errno
import fcntl
import gc
import hashlib
import json
import os
import re
import stat
import subprocess
import sys
import threading

import pytest

import lh2face_plugin
from lh2face_plugin import fileio
from lh2face_plugin.fileio import (MANIFEST, FolderBusy, cleanup_stale, cleanup_stale_in, derived, read_manifest,
                                   resolve_inside, save_figure, scratch_folder, update_json, verify_manifest,
                                   write_manifest, writer_lock, writing_folder)
from lh2face_plugin.fileio.folders import _exchange
from lh2face_plugin.fileio.manifests import walk_files
from lh2face_plugin.fileio.ownership import owned_files


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def child_env(**extra) -> dict:
    """The environment of a child Python that imports this same lh2face_plugin."""
    root = os.path.dirname(os.path.dirname(lh2face_plugin.__file__))
    path = os.pathsep.join([root] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    return dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS="1", **extra)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def put(path, text="x"):
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


# --- the folder swap (renameat2) and its fallbacks -------------------------------------------------------

def test_exchange_swaps_two_folders(tmp_path):
    put(tmp_path / "a" / "f", "a")
    put(tmp_path / "b" / "f", "b")
    assert _exchange(str(tmp_path / "a"), str(tmp_path / "b")) is True
    assert (tmp_path / "a" / "f").read_text() == "b" and (tmp_path / "b" / "f").read_text() == "a"


def test_exchange_refused_by_the_file_system_is_reported_as_unsupported(tmp_path):
    """EINVAL (here: a folder swapped with its own subfolder) means "cannot swap here": ``False``, nothing moved."""
    (tmp_path / "d" / "sub").mkdir(parents=True)
    assert _exchange(str(tmp_path / "d"), str(tmp_path / "d" / "sub")) is False
    assert os.listdir(tmp_path / "d") == ["sub"]


def test_exchange_error_names_both_paths(tmp_path):
    missing, there = str(tmp_path / "missing"), str(tmp_path / "there")
    os.mkdir(there)
    with pytest.raises(FileNotFoundError) as info:
        _exchange(missing, there)
    exc = info.value
    assert (exc.errno, exc.strerror, exc.filename, exc.filename2) == (
        errno.ENOENT, os.strerror(errno.ENOENT), missing, there)


def _publish_twice(out):
    with writing_folder(str(out), "c") as stage:
        put(os.path.join(stage, "f"), "v1")
    before = os.stat(out).st_ino
    with writing_folder(str(out), "c") as stage:
        put(os.path.join(stage, "f"), "v2")
    assert (out / "f").read_text() == "v2" and verify_manifest(str(out)) == []
    assert sorted(os.listdir(out.parent)) == ["out"]  # no staging left
    return before, os.stat(out).st_ino


def test_on_linux_an_existing_folder_is_swapped_in_whole(tmp_path):
    before, after = _publish_twice(tmp_path / "out")
    assert after != before  # a new folder at the name, not files moved into the old one


@pytest.mark.parametrize("where", ["another system", "a libc without renameat2"])
def test_without_renameat2_the_files_move_one_by_one(tmp_path, monkeypatch, where):
    if where == "another system":
        monkeypatch.setattr(fileio.folders.sys, "platform", "darwin")
    else:
        def no_libc(*args, **kwargs):
            raise OSError("no such library")
        monkeypatch.setattr(fileio.folders.ctypes, "CDLL", no_libc)
    before, after = _publish_twice(tmp_path / "out")
    assert after == before  # the same folder, its files replaced


def test_a_new_folder_gets_the_mode_open_would_give_and_a_replaced_one_keeps_its_mode(tmp_path):
    mask = os.umask(0)
    os.umask(mask)
    out = tmp_path / "out"
    with writing_folder(str(out), "c") as stage:
        put(os.path.join(stage, "f"), "v1")
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o777 & ~mask
    os.chmod(out, 0o750)
    with writing_folder(str(out), "c") as stage:
        put(os.path.join(stage, "f"), "v2")
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o750 and (out / "f").read_text() == "v2"


def test_a_folder_writer_refuses_a_foreign_folder_by_default_and_removes_what_killed_runs_left(tmp_path):
    out = tmp_path / "out"
    put(out / "theirs.txt")
    with pytest.raises(fileio.FolderNotOwned):
        fileio.FolderWriter(str(out), "c")
    stale = out / "sub" / f".f.{dead_pid()}.0123abcd.part"
    put(stale)
    writer = fileio.FolderWriter(str(out), "c", overwrite=True)
    try:
        assert not stale.exists() and os.listdir(out / "sub") == []
    finally:
        writer.discard()


def test_a_legacy_callback_claims_the_files_an_older_version_made(tmp_path):
    """No manifest: ``legacy`` proves which files are the command's (here by digest); those are replaced or
    removed without ``overwrite``, the others kept; a callback that claims nothing leaves the folder refused."""
    out = tmp_path / "out"
    put(out / "old.bin", "old")
    put(out / "notes.txt", "the user's")
    with pytest.raises(fileio.FolderNotOwned):
        with writing_folder(str(out), "c", legacy=lambda folder: None):
            pass
    with writing_folder(str(out), "c", legacy=lambda folder: owned_files(folder, {"old.bin": sha(b"old")})) as stage:
        put(os.path.join(stage, "new.bin"), "new")
    assert sorted(os.listdir(out)) == [MANIFEST, "new.bin", "notes.txt"]


# --- what a rerun carries over ----------------------------------------------------------------------------

@pytest.mark.parametrize("hard_links", [True, False])
def test_a_rerun_keeps_the_users_links_files_and_folders(tmp_path, monkeypatch, hard_links):
    """Links are carried as links, files as hard links (or copies where linking fails); a folder that held
    only the command's files goes with them; the user's empty folder takes the command's new files."""
    if not hard_links:
        def refuse(src, dst):
            raise OSError(errno.EXDEV, "Invalid cross-device link", src, None, dst)
        monkeypatch.setattr(fileio.folders.os, "link", refuse)
    out = tmp_path / "out"
    with writing_folder(str(out), "c") as stage:
        put(os.path.join(stage, "plots", "deep", "old.png"))
        put(os.path.join(stage, "z.txt"), "1")
    os.symlink("../elsewhere", out / "a-link")  # the user's, dangling
    put(out / "b.txt", "the user's")
    (out / "logs").mkdir()  # the user's, empty
    with writing_folder(str(out), "c") as stage:
        put(os.path.join(stage, "z.txt"), "2")
        put(os.path.join(stage, "logs", "run.txt"), "made")
    assert sorted(os.listdir(out)) == [MANIFEST, "a-link", "b.txt", "logs", "z.txt"]
    assert os.readlink(out / "a-link") == "../elsewhere"
    assert (out / "b.txt").read_text() == "the user's" and os.listdir(out / "logs") == ["run.txt"]


def test_overwrite_replaces_the_same_names_and_keeps_the_files_after_them(tmp_path):
    out = tmp_path / "out"
    put(out / "a.txt", "the user's a")
    put(out / "b.txt", "the user's b")
    with writing_folder(str(out), "c", overwrite=True) as stage:
        put(os.path.join(stage, "a.txt"), "ours")
    assert sorted(os.listdir(out)) == [MANIFEST, "a.txt", "b.txt"]
    assert (out / "a.txt").read_text() == "ours" and (out / "b.txt").read_text() == "the user's b"


def test_a_file_the_user_removes_meanwhile_does_not_break_the_publish_by_file(tmp_path, monkeypatch):
    monkeypatch.setattr(fileio.folders, "_exchange", lambda a, b: False)
    out = tmp_path / "out"
    with writing_folder(str(out), "c") as stage:
        put(os.path.join(stage, "a"), "1")
        put(os.path.join(stage, "b"), "1")
    with writing_folder(str(out), "c") as stage:
        put(os.path.join(stage, "b"), "2")
        os.remove(out / "a")  # one of the command's old files, removed by the user while it runs
    assert sorted(os.listdir(out)) == [MANIFEST, "b"] and verify_manifest(str(out)) == []


@pytest.mark.parametrize("dies_at", ["remove", "first move"])
def test_an_interrupted_publish_by_file_fails_verification_and_reruns_without_overwrite(tmp_path, monkeypatch,
                                                                                        dies_at):
    """Killed while removing the old files or at the first move (files move in no set order, the manifest
    last): the interim manifest makes every file fail its check (the ones being removed listed with size -1),
    and still owns them all for the rerun."""
    monkeypatch.setattr(fileio.folders, "_exchange", lambda a, b: False)
    out = tmp_path / "out"
    with writing_folder(str(out), "c") as stage:
        put(os.path.join(stage, "a"), "v1")
        put(os.path.join(stage, "old"), "x")
    name, real = ("remove", os.remove) if dies_at == "remove" else ("replace", os.replace)

    def dying(*args):  # the first removal, or the first move of a file (the interim manifest is written)
        if os.path.basename(args[-1]) != MANIFEST:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(fileio.folders.os, name, dying)
    with pytest.raises(KeyboardInterrupt):
        with writing_folder(str(out), "c") as stage:
            put(os.path.join(stage, "a"), "v2")
            put(os.path.join(stage, "b"), "new")
    monkeypatch.setattr(fileio.folders.os, name, real)
    old = f"{out}/old: 1 bytes, the manifest says -1" if dies_at == "remove" else f"{out}/old: missing"
    assert verify_manifest(str(out)) == [f"{out}/a: content differs from the manifest (SHA-256)", old,
                                         f"{out}/b: missing"]
    with writing_folder(str(out), "c") as stage:
        put(os.path.join(stage, "b"), "v3")
    assert sorted(os.listdir(out)) == [MANIFEST, "b"] and verify_manifest(str(out)) == []


# --- listing files, manifests, ownership --------------------------------------------------------------------

def test_walk_files_lists_files_and_links_once_and_skips_staging(tmp_path):
    folder = tmp_path / "f"
    put(folder / "a", "1")
    put(folder / "sub" / "b", "2")
    os.symlink("sub", folder / "ldir")
    os.symlink("a", folder / "lfile")
    os.symlink("nowhere", folder / "ldead")
    put(folder / ".a.123.0123abcd.part" / "inner")  # a staging folder and a staging file
    put(folder / "sub" / ".b.123.89abcdef.part.npy")
    expected = ["a", "ldead", "ldir", "lfile", "sub/b"]
    assert list(walk_files(str(folder))) == expected
    os.symlink(folder, tmp_path / "via-link")
    assert list(walk_files(str(tmp_path / "via-link"))) == expected  # a folder named through a link


def test_write_manifest_lists_the_files_named_with_the_extra_keys(tmp_path):
    put(tmp_path / "a", "1")
    put(tmp_path / "b", "22")
    doc = write_manifest(str(tmp_path), "c", extra={"seed": 3}, files=["b"])
    assert doc == read_manifest(str(tmp_path)) == {"format": "lh2face-manifest/1", "command": "c", "seed": 3,
                                                   "files": {"b": {"size": 2, "sha256": sha(b"22")}}}


def test_writing_folder_records_its_extra_keys_in_the_manifest(tmp_path):
    with writing_folder(str(tmp_path / "out"), "c", extra={"seed": 3}) as stage:
        put(os.path.join(stage, "f"), "1")
    assert read_manifest(str(tmp_path / "out")) == {"format": "lh2face-manifest/1", "command": "c", "seed": 3,
                                                    "files": {"f": {"size": 1, "sha256": sha(b"1")}}}


@pytest.mark.parametrize("content", ["[1]", '{"format": "other/1", "command": "c", "files": {}}',
                                     '{"format": "lh2face-manifest/1", "command": "c", "files": []}', "{not json"])
def test_read_manifest_ignores_what_is_not_one_of_ours(tmp_path, content):
    (tmp_path / MANIFEST).write_text(content)
    assert read_manifest(str(tmp_path)) is None


def test_verify_manifest_names_every_problem(tmp_path):
    """The manifest passed is checked (not the one on disk); each problem names its file, and all are listed."""
    folder = tmp_path / "out"
    put(folder / "short", "abc")
    (folder / "sub").mkdir()
    put(folder / "ok", "fine")
    entry = {"size": 4, "sha256": sha(b"fine")}
    doc = {"format": "lh2face-manifest/1", "command": "c",
           "files": {"../x": entry, "gone": entry, "gone2": entry, "sub": entry, "short": {"size": 5, "sha256": ""},
                     "ok": entry}}
    assert verify_manifest(str(folder), doc) == [
        f"{folder}/{MANIFEST}: names '../x', which resolves outside {folder}; the files a data set (or a model) "
        "names must lie inside its folder",
        f"{folder}/gone: missing", f"{folder}/gone2: missing", f"{folder}/sub: not a regular file",
        f"{folder}/short: 3 bytes, the manifest says 5"]
    assert verify_manifest(str(folder)) == [f"{folder}/{MANIFEST}: missing or unreadable"]


def test_owned_files_takes_digest_strings_and_skips_what_it_cannot_own(tmp_path):
    """Entries without a usable digest, outside the folder, missing, not regular files, or of another size own
    nothing, and do not stop the entries after them from being owned."""
    put(tmp_path / "a", "1")
    put(tmp_path / "b", "22")
    put(tmp_path / "bad", "3")
    put(tmp_path / "b2", "22")
    (tmp_path / "sub").mkdir()
    listing = {"none": {"size": 1}, "bad": {"size": 1, "sha256": ["not", "a", "digest"]}, 5: sha(b"1"),
               "../a": sha(b"1"), "gone": sha(b"1"), "sub": sha(b"1"), "b2": {"size": 9, "sha256": sha(b"9" * 9)},
               "a": sha(b"1"), "b": {"size": 2, "sha256": sha(b"22")}}
    assert owned_files(str(tmp_path), listing) == {"a", "b"}


def test_claim_folder_says_why_a_folder_is_refused(tmp_path):
    out = tmp_path / "out"
    assert fileio.claim_folder(str(out), "c") == set()
    put(out / f".x.{os.getpid()}.0123abcd.part")  # staging entries do not count
    assert fileio.claim_folder(str(out), "c") == set()
    for name in "abcd":
        put(out / name)
    refused = (f"{out}: the folder is not empty ({{}}) and was not made by 'lh2face c'{{}}; choose an empty "
               "or new folder, or pass --overwrite (replaces only the files of the same names, keeps the others)")
    with pytest.raises(fileio.FolderNotOwned) as info:
        fileio.claim_folder(str(out), "c")
    assert str(info.value) == refused.format("a, b, c, d", "")
    write_manifest(str(out), "export", files=["a"])
    with pytest.raises(fileio.FolderNotOwned) as info:
        fileio.claim_folder(str(out), "c")
    assert str(info.value) == refused.format(f"{MANIFEST}, a, b, c ...", " (made by 'lh2face export')")
    assert fileio.claim_folder(str(out), "c", overwrite=True) == set()
    put(out / "f.txt")
    with pytest.raises(FileExistsError) as info:
        fileio.claim_folder(str(out / "f.txt"), "c")
    assert str(info.value) == f"{out}/f.txt: exists and is not a folder; choose another output folder"


def test_claim_folder_names_the_first_changed_file_and_counts_the_others(tmp_path):
    out = tmp_path / "out"
    for name in "abc":
        put(out / name, "1")
    write_manifest(str(out), "c")
    assert fileio.claim_folder(str(out), "c") == {"a", "b", "c", MANIFEST}
    put(out / "a", "2")
    put(out / "b", "2")
    os.remove(out / "c")  # gone: not changed, just no longer owned
    with pytest.raises(fileio.FolderNotOwned) as info:
        fileio.claim_folder(str(out), "c")
    changed = (f": changed since 'lh2face c' wrote it (its SHA-256 is not the one {MANIFEST} lists); pass --overwrite "
               "to replace it, or move it away")
    assert str(info.value) == f"{out}/a (and 1 more){changed}"
    put(out / "b", "1")  # as listed again: only a is changed
    with pytest.raises(fileio.FolderNotOwned) as info:
        fileio.claim_folder(str(out), "c")
    assert str(info.value) == f"{out}/a{changed}"
    assert fileio.claim_folder(str(out), "c", overwrite=True) == {"b", MANIFEST}


def test_check_replacements_names_the_first_file_not_owned(tmp_path):
    stage, out = tmp_path / "stage", tmp_path / "out"
    for name in ("a", "b", "c", MANIFEST):
        put(stage / name)
    fileio.check_replacements(str(stage), str(tmp_path / "missing"), set(), "c")  # nothing to replace
    put(out / "a")
    put(out / "b")
    put(out / MANIFEST)
    fileio.check_replacements(str(stage), str(out), {"a", "b"}, "c")
    with pytest.raises(fileio.FolderNotOwned) as info:
        fileio.check_replacements(str(stage), str(out), {"a"}, "c")
    assert str(info.value) == (f"{out}/b: was not written by 'lh2face c' (or changed since); pass --overwrite to "
                               "replace it, or move it away")


# --- open_regular --------------------------------------------------------------------------------------------

def test_open_regular_refuses_what_is_not_a_regular_file_naming_it_and_its_role(tmp_path):
    for path, kind in ((tmp_path, "a folder"), ("/dev/null", "a device")):
        with pytest.raises(fileio.NotRegularFile) as info:
            fileio.open_regular(path, "an index")
        assert str(info.value) == f"{path}: not a regular file ({kind}); an index must be a file"
    with pytest.raises(fileio.NotRegularFile) as info:
        fileio.open_regular(str(tmp_path))
    assert str(info.value) == f"{tmp_path}: not a regular file (a folder); the input must be a file"
    missing = str(tmp_path / "missing")
    with pytest.raises(FileNotFoundError) as info:
        fileio.open_regular(missing, "an index")
    exc = info.value
    assert (exc.errno, exc.strerror, exc.filename) == (errno.ENOENT, "an index not found", missing)


def test_open_regular_refuses_a_fifo_without_waiting_for_a_writer(tmp_path):
    fifo = str(tmp_path / "x.idx")
    os.mkfifo(fifo)
    fired = []
    guard = threading.Timer(20, lambda: (fired.append(True), os.close(os.open(fifo, os.O_RDWR))))  # frees a reader
    guard.start()
    try:
        with pytest.raises(fileio.NotRegularFile) as info:
            fileio.open_regular(fifo, "an index")
    finally:
        guard.cancel()
    assert fired == [] and str(info.value) == f"{fifo}: not a regular file (a pipe); an index must be a file"


def test_open_regular_gives_a_file_opened_as_open_would_in_the_mode_asked(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes(b"a\r\nb\xff")
    with open(path, "rb") as plain, fileio.open_regular(path) as fh:
        assert fcntl.fcntl(fh.fileno(), fcntl.F_GETFL) == fcntl.fcntl(plain.fileno(), fcntl.F_GETFL)  # blocking
        assert fh.mode == "rb" and fh.read() == b"a\r\nb\xff"
    with fileio.open_regular(path, text=True, errors="replace") as fh:
        assert fh.read() == "a\nb\ufffd"
    with fileio.open_regular(path, text=True, encoding="latin-1", newline="") as fh:
        assert fh.read() == "a\r\nb\xff"
    with fileio.open_regular(path, text=True) as fh:
        with pytest.raises(UnicodeDecodeError):  # strict UTF-8 by default
            fh.read()


# --- resolve_inside's errors --------------------------------------------------------------------------------

def test_resolve_inside_refuses_the_folder_itself_and_names_the_source(tmp_path):
    for name in (".", "./", "../" + tmp_path.name):
        with pytest.raises(fileio.OutsideRoot):
            resolve_inside(str(tmp_path), name, source="list.txt")
    with pytest.raises(fileio.OutsideRoot) as info:
        resolve_inside(str(tmp_path), "../x", source="list.txt")
    assert str(info.value) == (f"list.txt: names '../x', which resolves outside {tmp_path}; the files a data set "
                               "(or a model) names must lie inside its folder")


# --- stale staging entries ----------------------------------------------------------------------------------

def test_an_unlocked_staging_entry_of_this_process_is_kept(tmp_path):
    """This process may be writing it (a writer need not lock): its pid alone keeps it."""
    entry = tmp_path / f".x.{os.getpid()}.0123abcd.part"
    entry.write_text("mine")
    assert cleanup_stale(str(tmp_path / "x")) == [] and entry.exists()


def test_an_unlocked_staging_entry_of_a_live_process_is_kept_and_the_process_left_alone(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        entry = tmp_path / f".x.{child.pid}.0123abcd.part"
        entry.write_text("its")
        assert cleanup_stale(str(tmp_path / "x")) == [] and entry.exists()
        assert child.poll() is None  # only probed (signal 0), not signalled
    finally:
        child.stdin.close()
        child.wait()
    assert child.returncode == 0
    assert cleanup_stale(str(tmp_path / "x")) == [str(entry)]


def test_a_pid_that_cannot_be_probed_counts_as_alive(tmp_path):
    entry = tmp_path / f".x.{2 ** 64}.0123abcd.part"  # os.kill: OverflowError
    entry.write_text("?")
    assert cleanup_stale(str(tmp_path / "x")) == [] and entry.exists()


def test_a_dead_writers_entry_that_cannot_be_opened_is_removed(tmp_path):
    entry = tmp_path / f".x.{dead_pid()}.0123abcd.part"
    os.symlink("nowhere", entry)
    assert cleanup_stale(str(tmp_path / "x")) == [str(entry)] and not os.path.lexists(entry)


FIFO = r"""
import os, sys
from lh2face_plugin.fileio import write_text
write_text(sys.argv[1], "written")
print(sorted(os.listdir(os.path.dirname(sys.argv[1]))))
"""


def test_a_fifo_left_under_a_staging_name_does_not_hang_the_next_write(tmp_path):
    """Cleaning up opens each dead writer's entry to test its lock: a FIFO must not block that open."""
    os.mkfifo(tmp_path / f".x.{dead_pid()}.0123abcd.part")
    run = subprocess.run([sys.executable, "-c", FIFO, str(tmp_path / "x")], env=child_env(), capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0 and run.stdout == "['x']\n", run.stderr


def test_cleanup_stale_in_goes_down_only_when_asked_and_only_into_plain_folders(tmp_path):
    pid = dead_pid()
    folder, outside = tmp_path / "f", tmp_path / "outside"
    names = {"top": folder / f".a.{pid}.0123abcd.part", "sub": folder / "s" / f".b.{pid}.0123abcd.part",
             "deep": folder / "s" / "t" / f".c.{pid}.0123abcd.part", "outside": outside / f".d.{pid}.0123abcd.part"}
    for p in names.values():
        put(p)
    os.symlink(outside, folder / "link")
    live = fileio.Staged(str(folder / "live"), folder=True)  # a live writer's folder: not entered
    put(os.path.join(live.path, f".e.{pid}.0123abcd.part"))
    try:
        assert cleanup_stale_in(str(folder)) == [str(names["top"])]
        assert sorted(cleanup_stale_in(str(folder), recursive=True)) == sorted([str(names["sub"]), str(names["deep"])])
        assert names["outside"].exists() and os.listdir(live.path) == [f".e.{pid}.0123abcd.part"]
    finally:
        live.discard()
    assert cleanup_stale_in(str(tmp_path / "missing"), recursive=True) == []


def test_staged_entries_are_named_and_made_as_documented(tmp_path):
    """``.NAME.<pid>.<8 hex>.part[suffix]``, a file or a folder with the mode a plain ``open`` / ``mkdir`` gives."""
    mask = os.umask(0)
    os.umask(mask)
    staged = [fileio.Staged(str(tmp_path / "x")), fileio.Staged(str(tmp_path / "x"), suffix=".npy"),
              fileio.Staged(str(tmp_path / "d"), folder=True)]
    try:
        names = [os.path.basename(entry.path) for entry in staged]
        pid = os.getpid()
        patterns = [rf"\.x\.{pid}\.[0-9a-f]{{8}}\.part", rf"\.x\.{pid}\.[0-9a-f]{{8}}\.part\.npy",
                    rf"\.d\.{pid}\.[0-9a-f]{{8}}\.part"]
        for name, pattern in zip(names, patterns):
            assert re.fullmatch(pattern, name), name
        modes = [os.lstat(entry.path).st_mode for entry in staged]
        assert [stat.S_ISREG(m) for m in modes] == [True, True, False] and stat.S_ISDIR(modes[2])
        assert [stat.S_IMODE(m) for m in modes] == [0o666 & ~mask, 0o666 & ~mask, 0o777 & ~mask]
        with pytest.raises(TypeError, match=r"^a staged folder is published with publish_folder\(\)$"):
            staged[2].commit()
    finally:
        for entry in staged:
            entry.discard()
    assert os.listdir(tmp_path) == []


def test_a_staging_name_already_taken_is_not_reused(tmp_path, monkeypatch):
    taken = tmp_path / f".x.{os.getpid()}.00000000.part"
    taken.write_text("another writer's")
    tokens = iter(["00000000", "11111111"])
    monkeypatch.setattr(fileio.staging.secrets, "token_hex", lambda n: next(tokens))
    staged = fileio.Staged(str(tmp_path / "x"))
    try:
        assert staged.path == str(tmp_path / f".x.{os.getpid()}.11111111.part")
        assert taken.read_text() == "another writer's"
    finally:
        staged.discard()


def test_a_committed_file_is_left_unlocked(tmp_path):
    fileio.write_text(str(tmp_path / "x"), "done")
    fd = os.open(tmp_path / "x", os.O_RDONLY)
    try:
        assert fileio.locks.lock_fd(fd, blocking=False)
    finally:
        os.close(fd)


def test_a_staged_entry_dropped_without_discard_releases_its_lock(tmp_path):
    staged = fileio.Staged(str(tmp_path / "x"))
    path = staged.path
    del staged
    gc.collect()
    fd = os.open(path, os.O_RDONLY)
    try:
        assert fileio.locks.lock_fd(fd, blocking=False)
    finally:
        os.close(fd)


def test_a_staged_entry_that_failed_to_start_leaves_no_error_behind(tmp_path, monkeypatch):
    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    put(tmp_path / "file")
    with pytest.raises(FileExistsError):
        fileio.Staged(str(tmp_path / "file" / "x"))  # its folder cannot be made
    gc.collect()
    assert unraisable == []


def test_scratch_folder_is_new_and_named_by_its_prefix():
    folder = scratch_folder("lh2face_test_")
    try:
        assert os.path.basename(folder).startswith("lh2face_test_") and os.listdir(folder) == []
    finally:
        os.rmdir(folder)


def test_a_staging_folder_that_cannot_be_removed_does_not_hide_the_commands_error(tmp_path, monkeypatch):
    real = os.rmdir

    def refuse(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", path)

    monkeypatch.setattr(os, "rmdir", refuse)
    with pytest.raises(ValueError, match="the command's own error"):
        with writing_folder(str(tmp_path / "out"), "c") as stage:
            put(os.path.join(stage, "sub", "f"))
            raise ValueError("the command's own error")
    monkeypatch.setattr(os, "rmdir", real)


# --- the writer lock ----------------------------------------------------------------------------------------

def test_the_writer_lock_lies_beside_the_folder_and_names_its_holder(tmp_path):
    out = tmp_path / "the out "  # a name may end in a space: only a trailing separator is dropped
    with writer_lock(str(out) + os.sep, "bench") as lock:
        assert lock == str(tmp_path / ".the out .lh2face-lock")
        with pytest.raises(FolderBusy) as info:
            with writer_lock(str(out), "export"):
                pass
    assert str(info.value) == (f"another lh2face bench (pid {os.getpid()}) is writing {out}; wait for it to "
                               "finish, or pass --wait")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("content, who", [
    (b'{"pid": 7, "command": "bench"}', "another lh2face bench (pid 7)"),
    (b'{"pid": 7, "command": "b\xffnch"}', "another lh2face b\ufffdnch (pid 7)"),
    (b"", "another lh2face command (pid ?)"),
    (b"[1]", "another lh2face command (pid ?)"),
    (b"{not json", "another lh2face command (pid ?)"),
])
def test_the_holder_named_is_what_its_lock_file_says(tmp_path, content, who):
    out = tmp_path / "out"
    fd = os.open(tmp_path / ".out.lh2face-lock", os.O_RDWR | os.O_CREAT)
    try:
        os.write(fd, content)
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(FolderBusy) as info:
            with writer_lock(str(out), "export"):
                pass
    finally:
        os.close(fd)
    assert str(info.value) == f"{who} is writing {out}; wait for it to finish, or pass --wait"


# --- savers -------------------------------------------------------------------------------------------------

def test_update_json_gets_none_for_a_missing_file_and_names_an_unreadable_one(tmp_path):
    seen = []
    path = tmp_path / "r.json"
    assert update_json(str(path), lambda doc: seen.append(doc) or {"n": 1}) == {"n": 1}
    assert seen == [None] and json.loads(path.read_text()) == {"n": 1}
    path.write_text("{not json")
    with pytest.raises(ValueError) as info:
        update_json(str(path), lambda doc: doc)
    assert str(info.value) == (f"{path}: unreadable JSON (JSONDecodeError: Expecting property name enclosed in double "
                               "quotes: line 1 column 2 (char 1)); move it away or choose another output folder")


LOCALE = r"""
import json, locale, os, sys
from lh2face_plugin.fileio import read_manifest, update_json
assert locale.getpreferredencoding(False).lower() not in ("utf-8", "utf8"), locale.getpreferredencoding(False)
folder = sys.argv[1]
print(json.dumps(sorted(read_manifest(folder)["files"])))
print(json.dumps(update_json(os.path.join(folder, "r.json"), lambda doc: dict(doc, n=2))))
"""


def test_json_is_read_as_utf8_whatever_the_locale(tmp_path):
    """Files written by other tools may hold raw UTF-8; an ASCII locale (LC_ALL=C) reads them all the same."""
    (tmp_path / MANIFEST).write_bytes('{"format": "lh2face-manifest/1", "command": "c", "files": {"café.txt": {}}}'
                                      .encode("utf-8"))
    (tmp_path / "r.json").write_bytes('{"naïve": 1}'.encode("utf-8"))
    env = child_env(LC_ALL="C", PYTHONUTF8="0", PYTHONCOERCECLOCALE="0")
    run = subprocess.run([sys.executable, "-c", LOCALE, str(tmp_path)], env=env, capture_output=True, timeout=60)
    assert run.returncode == 0, run.stderr.decode(errors="replace")
    assert [json.loads(line) for line in run.stdout.decode().splitlines()] == [["café.txt"], {"naïve": 1, "n": 2}]


def test_derived_warns_in_one_line_and_returns_none(tmp_path, capsys):
    lines = []
    assert derived("the table", lambda: "made", results="r.json", warn=lines.append) == "made"

    def fail(message):
        def make():
            raise RuntimeError(message)
        return make

    assert derived("the ROC plot", fail("x" * 200 + "\nsecond line"), results="r.json", warn=lines.append) is None
    assert derived("the table", fail(""), results="r.json", warn=lines.append) is None
    assert lines == ["warning: the ROC plot not made (RuntimeError: " + "x" * 160 + "); the results are in r.json",
                     "warning: the table not made (RuntimeError: ); the results are in r.json"]
    assert derived("the plot", fail("no display"), results="r.json") is None
    assert capsys.readouterr() == ("", "warning: the plot not made (RuntimeError: no display); the results are in "
                                       "r.json\n")


def test_save_figure_writes_a_png_at_110_dpi_and_closes_that_figure(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(2, 1))
    other = plt.figure(figsize=(1, 1))  # the current figure: left open
    staged = []
    real = fig.savefig
    fig.savefig = lambda tmp, **kw: (staged.append(os.path.basename(tmp)), real(tmp, **kw))
    path = str(tmp_path / "plot.png")
    try:
        assert save_figure(fig, path) == path
        assert not plt.fignum_exists(fig.number) and plt.fignum_exists(other.number)
    finally:
        plt.close(other)
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert (int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")) == (220, 110)
    assert len(staged) == 1 and re.fullmatch(r"\.plot\.png\.\d+\.[0-9a-f]{8}\.part\.png", staged[0])
    assert os.listdir(tmp_path) == ["plot.png"]
