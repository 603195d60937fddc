"""Metrics against straightforward loop implementations of the documented procedures."""
import numpy as np
import pytest

from lh2face_plugin.eval import metrics


def loop_accuracy(threshold, dist, same):
    pred = dist < threshold
    tp = np.sum(pred & same)
    fp = np.sum(pred & ~same)
    tn = np.sum(~pred & ~same)
    fn = np.sum(~pred & same)
    tpr = 0 if tp + fn == 0 else float(tp) / float(tp + fn)
    fpr = 0 if fp + tn == 0 else float(fp) / float(fp + tn)
    return tpr, fpr, float(tp + tn) / dist.size


def loop_folds(n, k):
    """Unshuffled K-fold: the first n % k folds get one extra item."""
    out, start = [], 0
    for i in range(k):
        size = n // k + (1 if i < n % k else 0)
        out.append(np.arange(start, start + size))
        start += size
    return out


def loop_kfold_accuracy(dist, same, folds=10):
    thresholds = np.arange(0, 4, 0.01)
    accs, tprs = [], []
    for test in loop_folds(len(dist), folds):
        train = np.setdiff1d(np.arange(len(dist)), test)
        train_acc = [loop_accuracy(t, dist[train], same[train])[2] for t in thresholds]
        best = int(np.argmax(train_acc))
        accs.append(loop_accuracy(thresholds[best], dist[test], same[test])[2])
        tprs.append([loop_accuracy(t, dist[test], same[test])[0] for t in thresholds])
    return np.array(accs), np.mean(tprs, 0)


def loop_interp(x, xs, ys):
    """Linear interpolation on non-decreasing xs; ties resolved to their last point."""
    j = max(i for i in range(len(xs)) if xs[i] <= x)
    if xs[j] == x or j == len(xs) - 1:
        return ys[j]
    return (ys[j + 1] - ys[j]) / (xs[j + 1] - xs[j]) * (x - xs[j]) + ys[j]


def loop_val(dist, same, far_target, folds=10):
    thresholds = np.arange(0, 4, 0.001)
    vals, fars = [], []
    for test in loop_folds(len(dist), folds):
        train = np.setdiff1d(np.arange(len(dist)), test)
        far_train = np.array([np.sum((dist[train] < t) & ~same[train]) / np.sum(~same[train]) for t in thresholds])
        thr = loop_interp(far_target, far_train, thresholds) if far_train.max() >= far_target else 0.0
        pred = dist[test] < thr
        vals.append(np.sum(pred & same[test]) / np.sum(same[test]))
        fars.append(np.sum(pred & ~same[test]) / np.sum(~same[test]))
    return np.mean(vals), np.std(vals), np.mean(fars)


@pytest.fixture
def dists():
    rng = np.random.default_rng(3)
    n = 607
    same = rng.random(n) < 0.5
    dist = np.where(same, rng.normal(0.9, 0.3, n), rng.normal(1.6, 0.3, n)).clip(0, 4)
    dist[::17] = np.round(dist[::17], 2)
    return dist, same


def test_kfold_splits_sizes():
    for n, k in [(6000, 10), (607, 10), (23, 4)]:
        ours = metrics.kfold_splits(n, k)
        assert [list(a) for a in ours] == [list(b) for b in loop_folds(n, k)]
    with pytest.raises(ValueError, match="folds"):
        metrics.kfold_splits(5, 10)


def test_kfold_accuracy_equals_loop(dists):
    dist, same = dists
    ours = metrics.kfold_accuracy(dist, same, 10)
    acc, tpr = loop_kfold_accuracy(dist, same, 10)
    assert np.array_equal(ours["accuracy"], acc)
    assert np.array_equal(ours["tpr"], tpr)
    assert 0.6 < acc.mean() < 1.0


@pytest.mark.parametrize("far", [1e-3, 1e-2, 1e-1])
def test_val_at_far_equals_loop(dists, far):
    dist, same = dists
    ours = metrics.kfold_val_at_far(dist, same, far, 10)
    val, val_std, far_m = loop_val(dist, same, far, 10)
    assert (ours["val"], ours["val_std"], ours["far"]) == (val, val_std, far_m)


def loop_roc(labels, scores):
    """ROC by thresholding at every distinct score (no point dropped)."""
    thr = np.unique(scores)[::-1]
    pos, neg = labels == 1, labels == 0
    tpr = [0.0] + [np.sum(scores[pos] >= t) / pos.sum() for t in thr]
    fpr = [0.0] + [np.sum(scores[neg] >= t) / neg.sum() for t in thr]
    return np.array(fpr), np.array(tpr)


def test_roc_curve_points():
    rng = np.random.default_rng(0)
    labels = (rng.random(500) < 0.3).astype(int)
    scores = np.round(rng.normal(labels * 1.2, 1.0), 1)
    fpr, tpr, thr = metrics.roc_curve(labels, scores, drop_intermediate=False)
    lf, lt = loop_roc(labels, scores)
    assert np.allclose(fpr, lf, rtol=0, atol=1e-15) and np.allclose(tpr, lt, rtol=0, atol=1e-15)
    assert thr[0] == np.inf
    f2, t2, _ = metrics.roc_curve(labels, scores)
    assert len(f2) < len(fpr)
    assert np.isclose(metrics.auc(f2, t2), metrics.auc(fpr, tpr), rtol=1e-12)
    with pytest.raises(ValueError, match="genuine"):
        metrics.roc_curve(np.ones(3), np.arange(3.0))


def test_roc_curve_equals_sklearn():
    skm = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    labels = (rng.random(3000) < 0.1).astype(int)
    scores = np.round(rng.normal(labels * 2.0, 1.0), 2)
    for drop in (True, False):
        ours = metrics.roc_curve(labels, scores, drop_intermediate=drop)
        ref = skm.roc_curve(labels, scores, drop_intermediate=drop)
        for a, b in zip(ours, ref):
            assert np.array_equal(a, b)


def test_tar_at_far_nearest_equals_min_over_pairs():
    rng = np.random.default_rng(2)
    labels = (rng.random(20000) < 0.05).astype(int)
    scores = rng.normal(labels * 2.5, 1.0)
    fpr, tpr, _ = metrics.roc_curve(labels, scores)
    ours = metrics.tar_at_far_nearest(fpr, tpr)
    f, t = np.flipud(fpr), np.flipud(tpr)
    for x in metrics.IJB_FARS:
        _, k = min(zip(abs(f - x), range(len(f))))
        assert ours[x] == t[k]


def test_l2_normalize():
    x = np.random.default_rng(0).normal(size=(50, 7))
    x[3] = 0
    y = metrics.l2_normalize(x)
    assert np.allclose(np.linalg.norm(np.delete(y, 3, 0), axis=1), 1)
    assert (y[3] == 0).all()
    sk = pytest.importorskip("sklearn.preprocessing")
    assert np.array_equal(y, sk.normalize(x))


def loop_identification(scores, psub, gsub, fpir):
    mated = [p in set(gsub) for p in psub]
    top = [int(np.argmax(row)) for row in scores]
    rank1 = np.mean([gsub[top[q]] == psub[q] for q in range(len(psub)) if mated[q]])
    nm = sorted((scores[q].max() for q in range(len(psub)) if not mated[q]), reverse=True)
    k = int(np.floor(fpir * len(nm)))
    tau = nm[k] if k < len(nm) else -np.inf
    hits = [q for q in range(len(psub)) if mated[q] and gsub[top[q]] == psub[q] and scores[q, top[q]] > tau]
    realised = np.mean([s > tau for s in nm])
    return rank1, len(hits) / sum(mated), realised


def test_identification_equals_loop():
    rng = np.random.default_rng(4)
    gsub = np.arange(40)
    psub = rng.integers(0, 60, 300)
    scores = rng.normal(0, 1, (300, 40)) + 2.0 * (psub[:, None] == gsub[None])
    for fpir in (0.01, 0.1, 0.3):
        res = metrics.identification(scores, psub, gsub, fpirs=(fpir,), ranks=(1, 5))
        r1, tpir, realised = loop_identification(scores, psub, gsub, fpir)
        assert res["rank"][1] == r1 and res["tpir"][fpir] == tpir
        assert realised <= fpir
        assert res["rank"][5] >= res["rank"][1]
    assert res["mated"] == int(np.isin(psub, gsub).sum())


def test_a_tar_is_reported_only_at_a_far_the_impostors_resolve():
    labels = np.r_[np.ones(50), np.zeros(2000)].astype(int)
    constant = metrics.tar_at_far(labels, np.full(2050, 0.7), (1e-3, 1e-2, 1e-1))
    assert all(np.isnan(v) for v in constant["tar_at_far"].values())
    assert all(np.isnan(v) for v in constant["far_measured"].values())
    assert "the 2000 highest of 2000 impostor scores are tied" in constant["tar_at_far_unresolved"][0.1]
    rng = np.random.default_rng(0)
    scores = rng.normal(labels * 2.0, 1.0)
    res = metrics.tar_at_far(labels, scores, (1e-4, 1e-3, 1e-2))
    assert np.isnan(res["tar_at_far"][1e-4])  # 2000 impostors cannot resolve 1e-4 (10000 needed)
    assert "2000 impostor pairs, fewer than the 10000 that FAR=0.0001 needs" in res["tar_at_far_unresolved"][1e-4]
    imp = np.sort(scores[labels == 0])[::-1]
    for far in (1e-3, 1e-2):
        allowed = int(np.floor(far * 2000))
        assert res["far_measured"][far] == allowed / 2000  # distinct scores: exactly floor(FAR * n) pass
        assert res["tar_at_far"][far] == np.mean(scores[labels == 1] > imp[allowed])
    tied_top = np.r_[np.full(30, 5.0), imp[30:]]   # the 30 highest impostors tie: FAR 0.01 (20 of 2000) is out
    tied = metrics.tar_at_far(labels, np.r_[scores[labels == 1], tied_top], (1e-2, 1e-1))
    assert np.isnan(tied["tar_at_far"][1e-2]) and "lowest FAR above 0 that they resolve is 0.015" in \
        tied["tar_at_far_unresolved"][1e-2]
    assert 0 < tied["far_measured"][1e-1] <= 1e-1 and np.isnan(tied["far_measured"][1e-2])
    points = metrics.far_thresholds(imp[:100], (0.01, 0.5), total=2000)
    assert points[0].threshold == imp[20] and points[1].threshold is None  # a partial list ending too soon
