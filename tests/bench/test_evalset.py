"""The benchmark's evaluation set: family structure, qualities, yaws, pair counts, reuse."""
from __future__ import annotations

import os
from math import comb

import numpy as np
import pytest

from lh2face_plugin.bench.evalset import EvalSetConfig, build_evalset, load_evalset, pair_counts
from lh2face_plugin.bench.scores import PairIndex
from lh2face_plugin.data.synthetic import HIGH_QUALITY, make_identities


def test_family_structure_and_image_layout(small_evalset):
    ev, cfg = small_evalset, small_evalset.config
    f, per = cfg.families, cfg.hq_per_id + cfg.lq_per_id
    assert len(ev) == f * 3 * per and ev.num_families == f
    for fam in range(f):
        assert sorted(set(ev.identity[ev.family == fam])) == [3 * fam, 3 * fam + 1, 3 * fam + 2]
    for ident in range(3 * f):
        sel = ev.identity == ident
        assert sel.sum() == per
        assert ev.hq[sel].sum() == cfg.hq_per_id and (~ev.hq[sel]).sum() == cfg.lq_per_id
        hq_yaw = np.abs(ev.yaw[sel][ev.hq[sel]])
        n_front = cfg.hq_per_id // 2
        assert (hq_yaw[:n_front] <= cfg.frontal_max_yaw).all()
        assert ((hq_yaw[n_front:] >= cfg.yawed_range[0]) & (hq_yaw[n_front:] <= cfg.yawed_range[1])).all()
    np.testing.assert_array_equal(ev.hq, ev.quality >= HIGH_QUALITY)
    assert (ev.quality[~ev.hq] < HIGH_QUALITY).all() and (ev.quality[ev.hq] == 1.0).any()
    img = ev.images(np.array([0, len(ev) - 1]))
    assert img.shape == (2, 112, 112, 3) and img.dtype == np.uint8 and img.std() > 5


def test_pair_counts_follow_the_design(small_evalset):
    ev, cfg = small_evalset, small_evalset.config
    f, hq, lq = cfg.families, cfg.hq_per_id, cfg.lq_per_id
    n_hq, n = 3 * f * hq, 3 * f * (hq + lq)
    front, yawed = hq // 2, hq - hq // 2
    expected = {
        "hard_hq": {"genuine": 3 * f * comb(hq, 2), "impostor": 3 * f * hq * hq},
        "yawed": {"genuine": 3 * f * (comb(hq, 2) - comb(front, 2)), "impostor": 3 * f * (hq * hq - front * front)},
        "all_hq": {"genuine": 3 * f * comb(hq, 2), "impostor": comb(n_hq, 2) - 3 * f * comb(hq, 2)},
        "overall": {"genuine": 3 * f * comb(hq + lq, 2), "impostor": comb(n, 2) - 3 * f * comb(hq + lq, 2)},
    }
    assert yawed > 0
    assert pair_counts(ev) == expected
    idx = PairIndex.build(ev)
    assert len(idx.hard_gen) == expected["hard_hq"]["genuine"] and len(idx.hard_imp) == expected["hard_hq"]["impostor"]
    assert idx.hard_gen_yawed.sum() == expected["yawed"]["genuine"]
    assert idx.hard_imp_yawed.sum() == expected["yawed"]["impostor"]
    assert len(idx.hq_imp) == expected["all_hq"]["impostor"] and len(idx.all_imp) == expected["overall"]["impostor"]
    # hard impostors are look-alikes: same family, different identity, both HQ
    i, j = idx.hard_imp.T
    assert (ev.family[i] == ev.family[j]).all() and (ev.identity[i] != ev.identity[j]).all()
    assert (ev.hq[i] & ev.hq[j]).all() and (i < j).all()
    assert idx.within_hq.sum() == expected["hard_hq"]["impostor"]


def test_identities_are_not_training_identities(small_evalset):
    ev = small_evalset
    ids = make_identities(3 * ev.num_families, ev.config.seed, family_size=3, hard_fraction=1.0)
    assert all(i.hard for i in ids) and [i.family for i in ids] == sorted(i.family for i in ids)
    train = make_identities(200, 0)  # the benchmark's default training identities (data seed 0)
    d = np.linalg.norm(np.stack([i.params for i in ids])[:, None] - np.stack([t.params for t in train])[None], axis=2)
    assert d.min() > 1.0


def test_reused_when_complete_and_refuses_foreign_folders(small_evalset, tmp_path):
    npz = os.path.join(small_evalset.path, "evalset.npz")
    before = os.stat(npz).st_mtime_ns
    again = build_evalset(small_evalset.path, small_evalset.config, progress=False)
    assert again.sha256 == small_evalset.sha256 and os.stat(npz).st_mtime_ns == before
    assert load_evalset(small_evalset.path).config == small_evalset.config
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a benchmark evaluation set"):
        build_evalset(str(foreign), EvalSetConfig(families=1, seed=3), progress=False)
    with pytest.raises(FileNotFoundError, match="no complete benchmark evaluation set"):
        load_evalset(str(foreign))


def test_bad_configuration_is_rejected():
    with pytest.raises(ValueError, match="families must be an integer >= 1"):
        EvalSetConfig(families=0).validate()
    with pytest.raises(ValueError, match="frontal_max_yaw"):
        EvalSetConfig(frontal_max_yaw=40).validate()
