"""Calibration metrics: hand-computed answers, numpy / scipy / sklearn cross-checks, CE_KL behaviour."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import dirichlet

from xcal_core.metrics import (
    BANDWIDTH_GRID,
    METRICS,
    brier,
    ce_kl,
    classwise_ece,
    ece,
    nll,
    reliability_data,
    select_bandwidth,
)


def _ref_ece(p, y, n_bins):
    """Straightforward numpy top-label ECE with bins [lo, hi), the last one closed."""
    p, y = np.asarray(p, dtype=np.float64), np.asarray(y)
    conf, pred = p.max(1), p.argmax(1)
    total = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        m = (conf >= lo) & (conf < hi) if b < n_bins - 1 else (conf >= lo)
        if m.any():
            total += m.sum() / len(y) * abs((pred[m] == y[m]).mean() - conf[m].mean())
    return total


def _sample(n=3000, k=4, scale=2.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, k, generator=g) * scale
    p = torch.softmax(z, 1)
    y = torch.multinomial(p, 1, generator=g).squeeze(1)
    return z, p, y


def test_ece_tiny_known_answer():
    # Two bins [0, .5) and [.5, 1]: a confidence on the edge .5 goes to the upper bin (torchmetrics, netcal).
    p = torch.tensor([[0.4, 0.3, 0.3], [0.5, 0.5, 0.0], [0.9, 0.05, 0.05], [0.1, 0.8, 0.1]])
    y = torch.tensor([0, 1, 0, 0])
    # bin 1: conf .4, correct -> |1 - .4| * 1/4 = 0.15
    # bin 2: conf .5 (argmax 0, wrong), .9 (correct), .8 (wrong): acc 1/3, conf 2.2/3 -> |1/3 - 2.2/3| * 3/4 = 0.3
    assert ece(p, y, n_bins=2) == pytest.approx(0.45)
    rd = reliability_data(p, y, n_bins=2)
    np.testing.assert_allclose(rd.confidence, [0.4, 2.2 / 3])
    np.testing.assert_allclose(rd.accuracy, [1.0, 1 / 3])
    np.testing.assert_array_equal(rd.count, [1, 3])
    assert rd.ece == pytest.approx(0.45)
    assert len(rd.to_frame()) == 2


def _torchmetrics_ece(p, y, n_bins):
    from torchmetrics.functional.classification import multiclass_calibration_error

    return float(multiclass_calibration_error(p, y, num_classes=p.shape[1], n_bins=n_bins, norm="l1"))


@pytest.mark.parametrize("n_bins", [2, 4, 10, 15])
def test_ece_agrees_with_torchmetrics_at_bin_edges(n_bins):
    """Quantized confidences that sit exactly on bin edges k/B (0.5 ties of binary problems, votes of
    hard-label ensembles), a confidence of exactly 1, and random ones: the same value as torchmetrics."""
    g = torch.Generator().manual_seed(n_bins)
    edges = torch.arange(1, n_bins + 1) / n_bins  # 1/B, ..., 1
    k = 4
    conf = edges[edges >= 1 / k][torch.randint(0, int((edges >= 1 / k).sum()), (400,), generator=g)]
    rest = (1 - conf)[:, None] / (k - 1) * torch.ones(1, k - 1)
    p_edge = torch.cat([conf[:, None], rest], 1)
    p_edge = p_edge[:, torch.randperm(k, generator=g)]
    votes = torch.randint(0, 11, (400, 1), generator=g).float() / 10  # 10-member hard-vote ensemble, 2 classes
    p_votes = torch.cat([votes, 1 - votes], 1)
    _, p_rand, _ = _sample(n=400, k=k, seed=n_bins)
    for p in (p_edge, p_votes, p_rand):
        y = torch.randint(0, p.shape[1], (p.shape[0],), generator=g)
        assert ece(p, y, n_bins=n_bins) == pytest.approx(_torchmetrics_ece(p, y, n_bins), abs=1e-6)
        assert reliability_data(p, y, n_bins=n_bins).ece == pytest.approx(ece(p, y, n_bins=n_bins), abs=1e-12)


def test_ece_three_samples_on_edges_known_answer():
    """A confidence on an edge changes which samples share a bin: [lo, hi) bins give 0.1167 (as
    torchmetrics); the old (lo, hi] bins put 0.5 alone and gave 0.3833."""
    p = torch.tensor([[0.5, 0.5], [0.6, 0.4], [0.75, 0.25]])
    y = torch.tensor([1, 0, 0])
    # bin [.5, .75): .5 (wrong), .6 (right): acc .5, conf .55 -> 2/3 * .05; bin [.75, 1]: .75 right -> 1/3 * .25
    assert ece(p, y, n_bins=4) == pytest.approx(2 / 3 * 0.05 + 0.25 / 3)
    assert ece(p, y, n_bins=4) == pytest.approx(_torchmetrics_ece(p, y, 4), abs=1e-6)


@pytest.mark.parametrize("n_bins", [1, 10, 15])
def test_ece_matches_numpy_reference(n_bins):
    _, p, y = _sample(seed=2)
    p_sharp = torch.softmax(torch.log(p) * 2, 1)
    for q in (p, p_sharp):
        assert ece(q, y, n_bins=n_bins) == pytest.approx(_ref_ece(q, y, n_bins), abs=1e-10)


def test_ece_adaptive_bins_have_equal_mass_and_known_answer():
    _, p, y = _sample(n=1000, seed=4)
    rd = reliability_data(p, y, n_bins=10, binning="adaptive")
    assert set(rd.count.tolist()) == {100}
    assert np.all(rd.bin_lower[1:] >= rd.bin_upper[:-1] - 1e-12)
    conf, pred = p.max(1)
    order = torch.argsort(conf)
    ref = sum(
        len(idx) / 1000 * abs(float((pred[idx] == y[idx]).double().mean()) - float(conf[idx].double().mean()))
        for idx in np.array_split(order.numpy(), 10)
    )
    assert ece(p, y, n_bins=10, binning="adaptive") == pytest.approx(ref, abs=1e-10)


def test_classwise_ece_reference_and_nll_brier_against_sklearn():
    from sklearn.metrics import log_loss

    _, p, y = _sample(n=800, k=3, seed=5)
    ref = np.mean([_ref_binary_gap(p[:, k].double().numpy(), (y == k).numpy(), 15) for k in range(3)])
    assert classwise_ece(p, y) == pytest.approx(ref, abs=1e-10)
    assert nll(p, y) == pytest.approx(log_loss(y.numpy(), p.double().numpy(), labels=[0, 1, 2]), rel=1e-6)
    onehot = np.eye(3)[y.numpy()]
    assert brier(p, y) == pytest.approx(((p.double().numpy() - onehot) ** 2).sum(1).mean(), rel=1e-9)
    assert brier(torch.tensor([[1.0, 0.0]]), torch.tensor([1])) == pytest.approx(2.0)


def _ref_binary_gap(s, hit, n_bins):
    total = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        m = (s > lo) & (s <= hi) if b > 0 else (s <= hi)
        if m.any():
            total += m.sum() / len(s) * abs(hit[m].mean() - s[m].mean())
    return total


def test_metric_metadata():
    for name in ("ece", "classwise_ece", "nll", "brier", "ce_kl"):
        assert METRICS[name].higher_is_better is False
        assert METRICS[name].category == "calibration"


def _ref_ce_kl(p, y, h):
    """Direct O(n^2) loop with scipy's Dirichlet pdf."""
    p = np.asarray(p, dtype=np.float64)
    p = p / p.sum(1, keepdims=True)
    n, k = p.shape
    logk = np.array([[dirichlet.logpdf(p[i], p[j] / h + 1) for j in range(n)] for i in range(n)])
    np.fill_diagonal(logk, -np.inf)
    w = np.exp(logk - logk.max(1, keepdims=True))
    w /= w.sum(1, keepdims=True)
    c = np.clip(w @ np.eye(k)[y], 1e-45, None)
    return float(np.mean((c * (np.log(c) - np.log(p))).sum(1)))


def test_ce_kl_matches_direct_scipy_loop_and_is_chunk_invariant():
    _, p, y = _sample(n=60, k=3, scale=1.0, seed=6)
    ref = _ref_ce_kl(p.numpy(), y.numpy(), 0.05)
    assert ce_kl(p, y, 0.05) == pytest.approx(ref, rel=1e-6)
    assert ce_kl(p, y, 0.05, chunk_size=7) == pytest.approx(ref, rel=1e-6)


def test_select_bandwidth_maximizes_loo_likelihood():
    _, p, _ = _sample(n=80, k=3, scale=1.0, seed=7)
    grid = [0.01, 0.03, 0.1, 0.3, 1.0]
    pn = p.double().numpy()
    pn = pn / pn.sum(1, keepdims=True)

    def loo(h):
        ll = 0.0
        for i in range(len(pn)):
            vals = [dirichlet.logpdf(pn[i], pn[j] / h + 1) for j in range(len(pn)) if j != i]
            ll += np.logaddexp.reduce(vals) - math.log(len(pn) - 1)
        return ll

    best = grid[int(np.argmax([loo(h) for h in grid]))]
    assert select_bandwidth(p, grid) == best
    assert select_bandwidth(p, grid, chunk_size=11) == best


def test_groups_make_copies_harmless():
    # three exact copies of every row, grouped: the leave-one-group-out estimate equals the plain one
    _, p, y = _sample(n=120, k=3, scale=1.5, seed=10)
    rep_p, rep_y, grp = p.repeat(3, 1), y.repeat(3), torch.arange(120).repeat(3)
    assert ce_kl(rep_p, rep_y, 0.05, groups=grp) == pytest.approx(ce_kl(p, y, 0.05), rel=1e-9)
    assert select_bandwidth(rep_p, groups=grp) == select_bandwidth(p)
    # without groups the copies leak their own labels: a much smaller (too optimistic) bandwidth
    assert select_bandwidth(rep_p) == min(BANDWIDTH_GRID)
    with pytest.raises(ValueError, match="`groups`"):
        ce_kl(p, y, 0.05, groups=torch.zeros(120))


@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_coarse_to_fine_bandwidth_search_matches_exhaustive(scale):
    _, p, _ = _sample(n=300, k=3, scale=scale, seed=9)
    assert select_bandwidth(p) == select_bandwidth(p, search="exhaustive")


def test_ce_kl_near_zero_when_calibrated_and_grows_with_miscalibration():
    z, p, y = _sample(n=1000, k=2, scale=2.0, seed=8)
    h = select_bandwidth(p)
    values = [ce_kl(torch.softmax(z * s, 1), y, h) for s in (1.0, 1.5, 2.5)]
    assert values[0] < 0.02
    assert values[0] < values[1] < values[2]
    assert values[2] > 5 * values[0]
    # with the bandwidth chosen internally the calibrated model still has the smallest error
    assert ce_kl(p[:300], y[:300]) < ce_kl(torch.softmax(z[:300] * 2.5, 1), y[:300])


def test_bad_input():
    z, p, y = _sample(n=30)
    with pytest.raises(ValueError, match="`probs` must hold probabilities"):
        ece(z, y)
    with pytest.raises(ValueError, match="`labels` has 29 labels"):
        nll(p, y[:29])
    with pytest.raises(ValueError, match="unknown `binning`"):
        ece(p, y, binning="quantile")
    with pytest.raises(ValueError, match="`n_bins`"):
        ece(p, y, n_bins=0)
    with pytest.raises(ValueError, match="`bandwidth`"):
        ce_kl(p, y, bandwidth=-1.0)
    with pytest.raises(ValueError, match="at least 2 samples"):
        ce_kl(p[:1], y[:1], 0.1)
    with pytest.raises(ValueError, match="outside"):
        brier(p, y + 4)
    with pytest.raises(ValueError, match="unknown `search`"):
        select_bandwidth(p, search="golden")


def test_calibration_floor_tells_planted_miscalibration_from_none():
    """Labels drawn from the predictions: the estimate sits inside its floor. A planted temperature
    (the same predictions sharpened or softened by T = 0.5 / 2 while the labels follow the originals)
    is clearly above it."""
    from xcal_core.metrics import calibration_floor, compare_to_floor

    z, p, _ = _sample(n=2000, k=10, scale=3.0, seed=11)
    g = torch.Generator().manual_seed(0)
    y = torch.multinomial(p, 1, generator=g).squeeze(1)  # perfectly calibrated
    for n_bins in (10, 15):
        floor = calibration_floor(p, "ece", n_draws=30, generator=g, n_bins=n_bins)
        assert floor.shape == (30,) and 0 < float(floor.mean()) < 0.05
        calibrated = compare_to_floor(ece(p, y, n_bins=n_bins), floor)
        assert abs(calibrated.excess) < 3 * calibrated.floor_sd + 1e-3
        for t in (0.5, 2.0):
            q = torch.softmax(z / t, 1)
            planted = compare_to_floor(ece(q, y, n_bins=n_bins), calibration_floor(q, "ece", n_draws=30, generator=g,
                                                                                 n_bins=n_bins))
            assert planted.above_floor and planted.excess > 5 * planted.floor_sd
    # any estimator: a callable
    f = calibration_floor(p, lambda q, lab: float((q.argmax(1) == lab).double().mean()), n_draws=5, generator=g)
    assert f.shape == (5,)
    with pytest.raises(ValueError, match="`metric_fn`"):
        calibration_floor(p, "accuracy")
    with pytest.raises(ValueError, match="`floor` must hold >= 2"):
        compare_to_floor(0.1, [0.1])


# ----------------------------------------------------------------------------------------------
# CE_KL's floor and the per-level bandwidth rule, on planted cases with a known truth
# ----------------------------------------------------------------------------------------------


def _planted(n, k, scale, seed):
    """Logits z, perfectly calibrated predictions p = softmax(z), labels y ~ p, and the same
    predictions with a planted temperature (T = 0.5: over-confident, T = 2: under-confident)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, k, generator=g, dtype=torch.float64) * scale
    p = torch.softmax(z, 1)
    y = torch.multinomial(p, 1, generator=g).squeeze(1)
    return z, {1.0: p, 0.5: torch.softmax(z / 0.5, 1), 2.0: torch.softmax(z / 2.0, 1)}, y


def test_ce_kl_floor_is_calibration_floor_in_one_pass():
    from xcal_core.metrics import calibration_floor, ce_kl_floor, compare_to_floor

    _, sets, y = _planted(300, 4, 2.0, seed=1)
    q = sets[0.5]
    f = ce_kl_floor(q, y, 0.05, n_draws=6, generator=torch.Generator().manual_seed(3))
    # the same draws as calibration_floor with the same generator state, and the same estimate
    draws = calibration_floor(q, "ce_kl", n_draws=6, generator=torch.Generator().manual_seed(3), bandwidth=0.05)
    ref = compare_to_floor(ce_kl(q, y, 0.05), draws)
    for key in ("value", "floor_mean", "floor_sd", "floor_q95", "excess"):
        assert getattr(f, key) == pytest.approx(getattr(ref, key), rel=1e-9, abs=1e-12)
    # calibration_floor's shared kernel pass for ce_kl equals evaluating each draw separately
    loop = calibration_floor(q, lambda pr, lab: ce_kl(pr, lab, 0.05), n_draws=6, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(draws, loop, rtol=1e-9, atol=1e-12)
    # groups are passed through (copies grouped: the same floor as without copies)
    grp = torch.arange(300).repeat(2)
    fg = ce_kl_floor(q.repeat(2, 1), y.repeat(2), 0.05, groups=grp, n_draws=3, generator=torch.Generator().manual_seed(0))
    assert fg.value == pytest.approx(ce_kl(q, y, 0.05), rel=1e-9)
    with pytest.raises(ValueError, match="`n_draws`"):
        ce_kl_floor(q, y, 0.05, n_draws=1)
    with pytest.raises(ValueError, match="`bandwidth`"):
        ce_kl_floor(q, y, 0.0)


@pytest.mark.parametrize("scale", [1.0, 6.0], ids=["diffuse", "confident"])
def test_ce_kl_against_its_floor_on_planted_cases(scale):
    """Calibrated predictions (labels drawn from them): the estimate lies within its floor's noise.
    Planted over-confidence (T = 0.5): clearly above the floor. Planted under-confidence (T = 2): clearly
    outside the floor's band, but *below* it: the estimator's bias grows with the entropy of the labels,
    the floor draws its labels from the (flatter) predictions while the real labels are sharper. So the
    test against the floor is two-sided, and ``excess`` is not a magnitude for under-confident models."""
    from xcal_core.metrics import ce_kl_floor, select_bandwidth_pooled

    n = 800
    _, sets, y = _planted(n, 10, scale, seed=5)
    h = select_bandwidth_pooled(list(sets.values()), [torch.arange(n)] * 3, generator=torch.Generator().manual_seed(0))
    f = {t: ce_kl_floor(q, y, h, n_draws=20, generator=torch.Generator().manual_seed(7)) for t, q in sets.items()}
    zs = {t: s.excess / s.floor_sd for t, s in f.items()}
    assert abs(zs[1.0]) < 3 and f[1.0].value < f[1.0].floor_q95 + 2 * f[1.0].floor_sd
    assert zs[0.5] > 5 and f[0.5].above_floor and f[0.5].excess > 0.05
    assert zs[2.0] < -3


def test_per_level_bandwidth_keeps_the_floor_low_where_one_clean_bandwidth_does_not():
    """The old rule: one bandwidth chosen on clean (confident) predictions, reused for perturbed
    (diffuse) ones. On the diffuse predictions its floor is several times the floor at the bandwidth
    chosen on them, and the planted over-confidence is still detected at the new bandwidth."""
    from xcal_core.metrics import ce_kl_floor, select_bandwidth, select_bandwidth_pooled

    n = 800
    _, clean, _ = _planted(n, 10, 6.0, seed=2)
    h_clean = select_bandwidth(clean[1.0])
    _, diffuse, y = _planted(n, 10, 1.0, seed=3)
    h_level = select_bandwidth_pooled(list(diffuse.values()), [torch.arange(n)] * 3)
    assert h_level > 2 * h_clean
    g = torch.Generator().manual_seed(1)
    old = ce_kl_floor(diffuse[1.0], y, h_clean, n_draws=10, generator=g)
    new = ce_kl_floor(diffuse[1.0], y, h_level, n_draws=10, generator=g)
    assert new.floor_mean < 0.5 * old.floor_mean
    assert abs(new.excess) < 3 * new.floor_sd
    over = ce_kl_floor(diffuse[0.5], y, h_level, n_draws=10, generator=g)
    assert over.excess > 10 * over.floor_sd


def test_select_bandwidth_pooled():
    from xcal_core.metrics import select_bandwidth_pooled

    _, sets, _ = _planted(200, 3, 1.5, seed=4)
    p = sets[1.0]
    grid = [0.01, 0.03, 0.1, 0.3]
    # one set, no subsampling: the plain LOO choice
    assert select_bandwidth_pooled([p], grid=grid, max_rows=None) == select_bandwidth(p, grid)
    # two sets of the same inputs, grouped by input: the copies do not leak into each other
    ids = torch.arange(200)
    assert select_bandwidth_pooled([p, p], [ids, ids], grid=grid, max_rows=None) == select_bandwidth(p, grid)
    # ungrouped exact copies drive the choice to the smallest bandwidth
    assert select_bandwidth_pooled([p, p], grid=grid, max_rows=None) == min(grid)
    # subsampling is seeded
    a = select_bandwidth_pooled(list(sets.values()), [ids] * 3, max_rows=150, generator=torch.Generator().manual_seed(0))
    b = select_bandwidth_pooled(list(sets.values()), [ids] * 3, max_rows=150, generator=torch.Generator().manual_seed(0))
    assert a == b
    with pytest.raises(TypeError, match="`prob_sets`"):
        select_bandwidth_pooled(p)
    with pytest.raises(ValueError, match="number of classes"):
        select_bandwidth_pooled([p, torch.full((5, 2), 0.5)])
    with pytest.raises(ValueError, match=r"`groups\[1\]`"):
        select_bandwidth_pooled([p, p], [ids, ids[:10]])
    with pytest.raises(ValueError, match="`max_rows`"):
        select_bandwidth_pooled([p], max_rows=1)
