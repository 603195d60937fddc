"""The metrics' edge cases that mutation testing (``tox -e mutation -- metrics``) found unchecked.

Each test pins what one decision of lh2face_plugin/eval/metrics.py does at its edge: a fold without
genuine or impostor pairs, a boundary count (one accepted impostor, one genuine pair, folds = pairs),
ties at a threshold, an empty gallery, labels given as 0/1 integers, and the exact error messages.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from lh2face_plugin.eval import metrics


@pytest.fixture
def no_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an empty mean or a 0/0 warns: the metric must not compute one
        yield


# ----------------------------------------------------------------------------------- k-fold verification


def test_kfold_splits_accept_two_folds_and_one_pair_per_fold():
    assert [list(f) for f in metrics.kfold_splits(5, 2)] == [[0, 1, 2], [3, 4]]
    assert [list(f) for f in metrics.kfold_splits(4, 4)] == [[0], [1], [2], [3]]
    for folds in (1, 5):
        with pytest.raises(ValueError, match=r"need 2 <= folds <= number of pairs, got folds=\d, pairs=4"):
            metrics.kfold_splits(4, folds)


def loop_kfold(dist, same, folds, thresholds):
    """Per fold: the first threshold maximising training accuracy of dist < t, and the fold's TPR/FPR rows."""
    best, tprs, fprs = [], [], []
    for test in metrics.kfold_splits(len(dist), folds):
        train = np.setdiff1d(np.arange(len(dist)), test)
        accs = [np.mean((dist[train] < t) == same[train]) for t in thresholds]
        best.append(thresholds[int(np.argmax(accs))])
        pos, neg = same[test], ~same[test]
        tprs.append([np.sum((dist[test] < t) & pos) / pos.sum() if pos.any() else 0.0 for t in thresholds])
        fprs.append([np.sum((dist[test] < t) & neg) / neg.sum() if neg.any() else 0.0 for t in thresholds])
    return np.array(best), np.mean(tprs, 0), np.mean(fprs, 0)


def test_kfold_accuracy_thresholds_and_fpr_equal_the_loop(no_warnings):
    rng = np.random.default_rng(3)
    same = rng.random(120) < 0.5
    same[:12] = False  # the first fold has no genuine pair
    same[12:24] = True  # the second no impostor pair
    dist = np.where(same, rng.normal(0.9, 0.4, 120), rng.normal(1.5, 0.4, 120)).clip(0, 4)
    thresholds = np.arange(0, 4, 0.05)
    ours = metrics.kfold_accuracy(dist, same, 10, thresholds)
    best, tpr, fpr = loop_kfold(dist, same, 10, thresholds)
    assert set(ours) == {"accuracy", "threshold", "tpr", "fpr"}
    assert np.array_equal(ours["threshold"], best)
    assert np.allclose(ours["tpr"], tpr, rtol=0, atol=1e-15) and np.allclose(ours["fpr"], fpr, rtol=0, atol=1e-15)
    assert ours["fpr"].shape == thresholds.shape and ours["tpr"].shape == thresholds.shape


def test_kfold_metrics_read_0_1_integer_labels_as_booleans():
    rng = np.random.default_rng(4)
    same = rng.random(200) < 0.5
    dist = np.where(same, rng.normal(0.9, 0.4, 200), rng.normal(1.5, 0.4, 200)).clip(0, 4)
    as_bool = metrics.kfold_accuracy(dist, same, 5)
    as_int = metrics.kfold_accuracy(dist, same.astype(np.int64), 5)
    for key in as_bool:
        assert np.array_equal(as_bool[key], as_int[key]), key
    assert metrics.kfold_val_at_far(dist, same, 0.1, 5) == metrics.kfold_val_at_far(dist, same.astype(int), 0.1, 5)


def test_val_at_far_errors_and_their_boundaries():
    dist = np.array([0.1, 0.2, 3.0, 3.1, 0.3, 0.4, 0.5, 0.6])
    same = np.array([True, True, False, False, True, True, True, True])  # both impostors in fold 0 of 2
    with pytest.raises(ValueError, match=r"^a training split has no different-identity pair; FAR is undefined$"):
        metrics.kfold_val_at_far(dist, same, 0.1, 2)
    # one impostor in each fold: one training impostor (FAR 0 or 1) is enough
    same = np.array([True, True, False, True, True, True, False, True])
    res = metrics.kfold_val_at_far(np.array([0.1, 0.2, 3.0, 0.3, 0.4, 0.5, 3.1, 0.6]), same, 0.5, 2)
    assert res["val"] == 1.0
    # a test fold with exactly one genuine pair, then one with none
    same = np.array([True, False, False, False, True, True, False, False])
    dist = np.array([0.1, 3.0, 3.1, 3.2, 0.2, 0.3, 3.3, 3.4])
    assert metrics.kfold_val_at_far(dist, same, 0.5, 2)["val"] == 1.0
    same = np.array([False, False, False, False, True, True, False, False])
    with pytest.raises(ValueError, match=r"^a test fold lacks genuine or impostor pairs; use fewer folds$"):
        metrics.kfold_val_at_far(dist, same, 0.5, 2)


def test_val_at_far_never_reached_is_threshold_0_and_reached_exactly_interpolates():
    same = np.array([True, False, True, False, True, False, True, False])
    dist = np.array([0.5, 2.0, 0.6, 2.6, 0.7, 2.0, 0.8, 2.6])
    thresholds = np.array([0.0, 1.0, 2.1])  # training FAR: 0, 0, 1/2
    never = metrics.kfold_val_at_far(dist, same, 0.9, 2, thresholds)
    assert never == {"val": 0.0, "val_std": 0.0, "far": 0.0}  # threshold 0: nothing accepted
    exactly = metrics.kfold_val_at_far(dist, same, 0.5, 2, thresholds)
    assert exactly["val"] == 1.0 and exactly["far"] == 0.5  # FAR 1/2 reached at t = 2.1: interpolated there


# ----------------------------------------------------------------------------------- ROC


def test_roc_curve_messages_and_the_last_point_when_the_lowest_score_is_genuine():
    with pytest.raises(ValueError, match=r"^labels \(3,\) and scores \(2,\) differ in length$"):
        metrics.roc_curve(np.array([1, 0, 1]), np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match=r"^ROC needs both genuine \(label 1\) and impostor \(label 0\) pairs$"):
        metrics.roc_curve(np.zeros(3), np.arange(3.0))
    fpr, tpr, thr = metrics.roc_curve(np.array([0, 1, 1]), np.array([0.9, 0.5, 0.1]))
    assert fpr.tolist() == [0.0, 1.0, 1.0] and tpr.tolist() == [0.0, 0.0, 1.0]
    assert thr.tolist() == [math.inf, 0.9, 0.1]  # the middle point (0.5) is collinear and dropped
    fpr, tpr, thr = metrics.roc_curve(np.array([0, 1, 1]), np.array([0.9, 0.5, 0.1]), drop_intermediate=False)
    assert thr.tolist() == [math.inf, 0.9, 0.5, 0.1] and tpr.tolist() == [0.0, 0.0, 0.5, 1.0]


# ----------------------------------------------------------------------------------- FAR thresholds


def test_far_thresholds_without_impostors():
    for desc, kw in (([], {}), ([], {"total": 10}), ([0.5, 0.4], {"weights": [0, 0]})):
        for point in metrics.far_thresholds(np.array(desc), (0.1, 0.5), **kw):
            assert math.isnan(point.threshold) and math.isnan(point.far_measured)
            assert point.reason == "no impostor pairs"


def test_far_thresholds_at_one_accepted_impostor_and_one_impostor():
    desc = np.linspace(1.0, 0.0, 1000)
    (point,) = metrics.far_thresholds(desc, (1e-3,))  # floor(1e-3 * 1000) = 1 impostor above the threshold
    assert point.reason is None and point.threshold == desc[1] and point.far_measured == 1e-3
    (single,) = metrics.far_thresholds(np.array([0.7]), (1.0,))
    assert single.reason.startswith("not resolvable: the 1 highest of 1 impostor scores are tied")
    assert math.isnan(single.threshold) and math.isnan(single.far_measured)


def test_far_thresholds_with_a_tie_group_below_the_top():
    desc = np.array([3.0, 2.0, 2.0, 2.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    (point,) = metrics.far_thresholds(desc, (0.25,))  # at most 2.5 of 10 above t: t = 2 (1 above), not 1 (4 above)
    assert point.threshold == 2.0 and point.far_measured == 0.1
    (point,) = metrics.far_thresholds(desc, (0.45,))  # 4.5: t = 1 (4 above)
    assert point.threshold == 1.0 and point.far_measured == 0.4


def test_far_thresholds_tied_top_when_there_are_just_enough_impostors():
    desc = np.r_[[0.9, 0.9], np.linspace(0.5, 0.0, 98)]  # 100 impostors, the 2 highest tied
    (point,) = metrics.far_thresholds(desc, (0.01,))  # needs 100 impostors: there are; the tie is the cause
    assert point.reason == ("not resolvable: the 2 highest of 100 impostor scores are tied: the lowest FAR above 0 "
                            "that they resolve is 0.02")
    points = metrics.far_thresholds(desc[:10], (0.01, 0.5), total=1000)
    assert points[1].threshold is None and math.isnan(points[1].far_measured) and points[1].reason is None


def test_tar_at_far_with_one_genuine_pair_ties_and_no_genuine_pair(no_warnings):
    imp = np.linspace(1.0, 0.0, 100)
    labels = np.r_[1, np.zeros(100)].astype(int)
    one = metrics.tar_at_far(labels, np.r_[0.95, imp], (0.01,))
    assert one["tar_at_far"][0.01] == 0.0 and one["tar_at_far_unresolved"] == {}  # threshold imp[1] = 0.9899 > 0.95
    tie = metrics.tar_at_far(labels, np.r_[imp[1], imp], (0.01,))  # the genuine score equals the threshold
    assert tie["tar_at_far"][0.01] == 0.0  # accepted only above it
    above = metrics.tar_at_far(labels, np.r_[0.995, imp], (0.01,))
    assert above["tar_at_far"][0.01] == 1.0
    none = metrics.tar_at_far(np.zeros(100, int), imp, (0.01,))
    assert math.isnan(none["tar_at_far"][0.01]) and none["tar_at_far_unresolved"] == {0.01: "no genuine pairs"}
    assert none["far_measured"][0.01] == 0.01


# ----------------------------------------------------------------------------------- identification


def test_identification_counts_ties_and_empty_cases(no_warnings):
    gallery = np.array([10, 11, 12])
    probes = np.array([10, 11, 20, 21, 22, 23])  # 2 mated, 4 non-mated
    scores = np.array([[0.9, 0.1, 0.0],
                       [0.2, 0.7, 0.0],   # its top score 0.7 ties tau below
                       [0.7, 0.1, 0.0],
                       [0.6, 0.1, 0.0],
                       [0.5, 0.1, 0.0],
                       [0.4, 0.1, 0.0]])
    res = metrics.identification(scores, probes, gallery, fpirs=(0.2, 1.0), ranks=(1,))
    assert res["mated"] == 2 and res["non_mated"] == 4
    assert res["threshold"][0.2] == 0.7 and res["tpir"][0.2] == 0.5  # floor(0.8) = 0; 0.7 is not above tau = 0.7
    assert res["threshold"][1.0] == -math.inf and res["tpir"][1.0] == 1.0  # FPIR 1: every candidate returned
    with pytest.raises(ValueError, match=r"^scores have shape \(6, 2\), expected \(6, 3\)$"):
        metrics.identification(scores[:, :2], probes, gallery)
    nobody = metrics.identification(scores, probes + 100, gallery, fpirs=(0.25,), ranks=(1,))
    assert nobody["mated"] == 0 and math.isnan(nobody["rank"][1]) and math.isnan(nobody["tpir"][0.25])
    empty = metrics.identification(np.zeros((3, 0)), np.array([1, 2, 3]), np.array([], int), fpirs=(0.5,))
    assert empty["non_mated"] == 3 and empty["threshold"][0.5] == -math.inf and math.isnan(empty["tpir"][0.5])


def test_kfold_defaults_are_ten_folds_and_the_training_counts_exclude_the_test_fold():
    rng = np.random.default_rng(0)
    same = rng.random(120) < 0.5
    dist = np.where(same, rng.normal(0.9, 0.4, 120), rng.normal(1.5, 0.4, 120)).clip(0, 4)
    thresholds = np.arange(0, 4, 0.05)
    ours = metrics.kfold_accuracy(dist, same, thresholds=thresholds)
    assert ours["accuracy"].shape == (10,)
    assert np.array_equal(ours["threshold"], loop_kfold(dist, same, 10, thresholds)[0])
    assert metrics.kfold_val_at_far(dist, same, 0.1) == metrics.kfold_val_at_far(dist, same, 0.1, 10)
    assert metrics.kfold_val_at_far(dist, same, 0.1) != metrics.kfold_val_at_far(dist, same, 0.1, 11)
