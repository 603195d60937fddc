import os
import shutil
import sys
import warnings

import pytest

from _helpers_arcface_torch import write_fake_checkout
from lh2face_plugin.arcface_torch.locate import ENV_VAR, REQUIRED_FILES, locate_checkout
from lh2face_plugin.arcface_torch.revision import (KNOWN_REVISIONS, RELIED_ON, RevisionWarning, check_revision,
                                                   file_digest)


def test_search_order_explicit_then_env_then_cwd(tmp_path):
    a = write_fake_checkout(str(tmp_path / "a"))
    b = write_fake_checkout(str(tmp_path / "b"))
    c = write_fake_checkout(str(tmp_path / "c"))
    assert locate_checkout(a, {ENV_VAR: b}, c).root == a
    found = locate_checkout(None, {ENV_VAR: b}, c)
    assert (found.root, found.source) == (b, ENV_VAR)
    found = locate_checkout(None, {}, c)
    assert (found.root, found.source) == (c, "current directory")


def test_insightface_clone_resolves_to_nested_folder(tmp_path):
    nested = write_fake_checkout(str(tmp_path / "insightface" / "recognition" / "arcface_torch"))
    assert locate_checkout(str(tmp_path / "insightface"), {}, str(tmp_path)).root == nested


def test_bad_explicit_path_names_missing_files_and_does_not_fall_through(tmp_path):
    partial = write_fake_checkout(str(tmp_path / "partial"), [f for f in REQUIRED_FILES if f != "losses.py"])
    good = write_fake_checkout(str(tmp_path / "good"))
    with pytest.raises(FileNotFoundError) as err:
        locate_checkout(partial, {}, good)
    assert "--arcface-root" in str(err.value) and "losses.py" in str(err.value)
    assert "current directory" not in str(err.value)


def test_nothing_found_lists_every_place(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError) as err:
        locate_checkout(None, {}, str(empty))
    assert "current directory" in str(err.value) and ENV_VAR in str(err.value)


def _matching_table(root):
    return {"f" * 40: {rel: file_digest(os.path.join(root, rel)) for rel in RELIED_ON if
                       os.path.exists(os.path.join(root, rel))}}


def test_known_unknown_and_strict(tmp_path, monkeypatch):
    root = write_fake_checkout(str(tmp_path / "co"), REQUIRED_FILES)
    monkeypatch.setattr("lh2face_plugin.arcface_torch.revision.KNOWN_REVISIONS", _matching_table(root))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_revision(root).known
    with open(os.path.join(root, "losses.py"), "a") as f:
        f.write("# local edit\n")
    with pytest.warns(RevisionWarning, match="losses.py"):
        report = check_revision(root)
    assert not report.known and report.differing == ["losses.py"]
    with pytest.raises(RuntimeError, match="losses.py"):
        check_revision(root, strict=True)


def test_crlf_checkout_is_the_same_revision(tmp_path):
    path = tmp_path / "x.py"
    path.write_bytes(b"a = 1\nb = 2\n")
    lf = file_digest(str(path))
    path.write_bytes(b"a = 1\r\nb = 2\r\n")
    assert file_digest(str(path)) == lf


def test_table_covers_the_files_activation_touches():
    table = KNOWN_REVISIONS["7fadd420c2351d0ffa8cac403421c1a3ed733365"]
    for rel in ("train_v2.py", "partial_fc_v2.py", "losses.py", "lr_scheduler.py", "dataset.py"):
        assert len(table[rel]) == 64


@pytest.mark.arcface_torch
def test_real_checkout_is_the_recorded_revision(arcface_root, tmp_path):
    report = check_revision(arcface_root, strict=True)
    assert report.revision == "7fadd420c2351d0ffa8cac403421c1a3ed733365"
    copy = tmp_path / "arcface_torch"
    shutil.copytree(arcface_root, copy, ignore=shutil.ignore_patterns("docs", "*.md", "__pycache__"))
    with open(copy / "partial_fc_v2.py", "a") as f:
        f.write("\n")
    with pytest.warns(RevisionWarning, match="partial_fc_v2.py"):
        assert check_revision(str(copy)).differing == ["partial_fc_v2.py"]


def test_train_eval_and_export_locate_the_checkout_alike(tmp_path, monkeypatch):
    """An insightface clone (recognition/arcface_torch inside) is found by lh2face train, the reference
    evaluation and the export's network loader through the same locate_checkout."""
    from _helpers_arcface_torch import forget_host_modules, write_fake_checkout
    from lh2face_plugin.arcface_torch.networks import checkout_get_model
    from lh2face_plugin.arcface_torch.reference import _check_root

    clone = tmp_path / "insightface"
    inner = write_fake_checkout(str(clone / "recognition" / "arcface_torch"))
    monkeypatch.delenv("ARCFACE_TORCH_ROOT", raising=False)
    monkeypatch.setattr(sys, "path", list(sys.path))           # checkout_get_model puts the checkout on it
    assert locate_checkout(str(clone)).root == inner == _check_root(str(clone))
    forget_host_modules()
    try:
        assert checkout_get_model(str(clone))("r50").__module__ == "torch.nn.modules.linear"
        monkeypatch.setenv("ARCFACE_TORCH_ROOT", str(tmp_path / "nowhere"))
        for find in (_check_root, lambda r: checkout_get_model(None)):
            with pytest.raises(FileNotFoundError, match="ARCFACE_TORCH_ROOT|--arcface-root"):
                find(str(tmp_path / "nowhere"))
    finally:
        forget_host_modules()
