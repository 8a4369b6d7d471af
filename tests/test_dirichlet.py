"""DirichletCalibration, CalibratedModel and the kernel-density ECE (ece_kde)."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from xcal_core.calibration import CalibratedModel, DirichletCalibration
from xcal_core.calibration.temperature import fit_temperature
from xcal_core.metrics import ece, ece_kde
from xcal_core.metrics.calibration_kde import silverman_bandwidth


def _planted(n=8000, k=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = 2.0 * torch.randn(n, k, generator=g, dtype=torch.float64)
    logp = torch.log_softmax(logits, 1)
    w = torch.eye(k, dtype=torch.float64) * 0.6 + 0.2 * torch.randn(k, k, generator=g, dtype=torch.float64)
    b = 0.3 * torch.randn(k, generator=g, dtype=torch.float64)
    y = torch.multinomial(torch.softmax(logp @ w.T + b, 1), 1, generator=g)[:, 0]
    return logits.float(), y, w, b


def _ref_row(w, b):
    wb = torch.cat([w, b[:, None]], 1)
    return wb - wb[-1:]


def test_recovers_planted_linear_map_on_log_probs():
    logits, y, w, b = _planted(n=20000)
    dc = DirichletCalibration(reg=0.0).fit(logits, y)
    assert dc.converged_
    err = (_ref_row(dc.W_, dc.b_) - _ref_row(w, b)).abs().max()
    assert err < 0.12, float(err)
    # the reference-row parameterization keeps the last row at zero
    assert torch.all(dc.W_[-1] == 0) and dc.b_[-1] == 0


def test_lambda0_matches_sklearn_multinomial_logistic_regression():
    logits, y, _, _ = _planted(n=1500, k=5, seed=1)
    dc = DirichletCalibration(reg=0.0, tol=1e-10).fit(logits, y)
    x = torch.log_softmax(logits.double(), 1).numpy()
    lr = LogisticRegression(C=np.inf, tol=1e-8, max_iter=2000).fit(x, y.numpy())
    ours = dc.predict_proba(logits).double().numpy()
    np.testing.assert_allclose(ours, lr.predict_proba(x), atol=2e-4)


def test_scalar_structure_equals_temperature_scaling():
    g = torch.Generator().manual_seed(2)
    logits = 4.0 * torch.randn(2000, 6, generator=g)
    y = torch.multinomial(torch.softmax(logits / 2.5, 1), 1, generator=g)[:, 0]
    dc = DirichletCalibration(reg=0.0, structure="scalar").fit(logits, y)
    t = fit_temperature(logits, y)
    s = float(dc.W_[0, 0])
    assert abs(1.0 / s - t) < 1e-3 * t
    assert torch.allclose(dc.W_, s * torch.eye(6, dtype=dc.W_.dtype)) and torch.all(dc.b_ == 0)
    np.testing.assert_allclose(dc.predict_proba(logits).numpy(), torch.softmax(logits / t, 1).numpy(), atol=1e-4)


def test_shift_invariance_logits_vs_log_probs_and_l2_shrinks():
    logits, y, _, _ = _planted(n=2000, k=4, seed=3)
    dc = DirichletCalibration(reg=0.01).fit(logits, y)
    p1 = dc.predict_proba(logits)
    p2 = dc.predict_proba(torch.log_softmax(logits, 1) + 5.0)
    assert torch.allclose(p1, p2, atol=1e-5)
    strong = DirichletCalibration(reg=10.0).fit(logits, y)
    assert strong.W_.norm() < dc.W_.norm()
    # calibration lowers the NLL on planted miscalibrated data compared with the raw model
    raw_nll = torch.nn.functional.cross_entropy(logits, y)
    assert torch.nn.functional.nll_loss(torch.log(p1), y) < raw_nll


def test_odir_penalizes_off_diagonal_only():
    logits, y, _, _ = _planted(n=2000, k=4, seed=4)
    big = DirichletCalibration(reg=1e4, odir=True, reg_mu=1e4).fit(logits, y)
    off = big.W_ - torch.diag(torch.diagonal(big.W_))
    assert off.abs().max() < 1e-2 and big.b_.abs().max() < 1e-2
    assert torch.diagonal(big.W_).abs().max() > 0.5  # the diagonal is free


@pytest.mark.parametrize("kw", [dict(reg=0.3), dict(reg=0.3, odir=True, reg_mu=0.1), dict(reg=0.3, structure="diagonal"), dict(reg=0.3, structure="scalar")])
def test_analytic_gradient_matches_finite_differences(kw):
    from scipy.optimize import check_grad

    logits, y, _, _ = _planted(n=300, k=3, seed=6)
    dc = DirichletCalibration(**kw)
    k = 3
    logp = torch.log_softmax(logits.double(), 1)

    def f(theta):
        w, b = dc._unpack(torch.from_numpy(theta), k)
        loss = torch.nn.functional.cross_entropy(logp @ w.T + b, y).item()
        return loss + dc._penalty_numpy(theta, k)[0]

    def g(theta):
        w, b = dc._unpack(torch.from_numpy(theta), k)
        p = torch.softmax(logp @ w.T + b, 1).numpy()
        xa = np.concatenate([logp.numpy(), np.ones((300, 1))], 1)
        g_wb = (p - np.eye(k)[y.numpy()]).T @ xa / 300
        return dc._grad_theta(g_wb, k) + dc._penalty_numpy(theta, k)[1]

    theta = np.random.default_rng(0).normal(size=dc._init(k).shape)
    assert check_grad(f, g, theta) < 1e-5


def test_bad_input():
    logits, y, _, _ = _planted(n=200, k=3, seed=5)
    with pytest.raises(ValueError, match="looks like probabilities"):
        DirichletCalibration().fit(torch.softmax(logits, 1), y)
    with pytest.raises(ValueError, match="`labels`"):
        DirichletCalibration().fit(logits, y[:-1])
    with pytest.raises(ValueError, match="`reg`"):
        DirichletCalibration(reg=-1.0)
    with pytest.raises(ValueError, match="unknown `structure`"):
        DirichletCalibration(structure="banded")
    with pytest.raises(ValueError, match="`odir`"):
        DirichletCalibration(odir=True, structure="diagonal")
    with pytest.raises(RuntimeError, match="not fitted"):
        DirichletCalibration().predict_proba(logits)
    dc = DirichletCalibration().fit(logits, y)
    with pytest.raises(ValueError, match="classes"):
        dc.transform(torch.randn(4, 5))


def test_calibrated_model_wrapper_is_differentiable_and_matches_calibrators():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 4))
    x = torch.rand(64, 1, 3, 4)
    z = net(x).detach()
    y = torch.randint(0, 4, (64,))
    dc = DirichletCalibration(reg=0.01).fit(z * 3, y)
    cm = CalibratedModel(net, dc)
    assert torch.allclose(cm(x), dc.transform(z), atol=1e-5)
    xg = x.clone().requires_grad_(True)
    cm(xg)[:, 0].sum().backward()
    assert xg.grad is not None and xg.grad.abs().sum() > 0
    ct = CalibratedModel(net, temperature=2.0)
    assert torch.allclose(ct(x), z / 2.0, atol=1e-6)
    with pytest.raises(ValueError, match="`temperature`"):
        CalibratedModel(net, temperature=0.0)
    with pytest.raises(ValueError, match="exactly one"):
        CalibratedModel(net)
    with pytest.raises(RuntimeError, match="not fitted"):
        CalibratedModel(net, DirichletCalibration())


# ----------------------------------------------------------------------------- ece_kde


def _confidence_sample(n, k, offset, seed):
    rng = np.random.default_rng(seed)
    conf = rng.uniform(0.35, 0.95, n)
    correct = rng.uniform(size=n) < np.clip(conf - offset, 0, 1)
    probs = np.empty((n, k))
    rest = (1 - conf) / (k - 1)
    probs[:] = rest[:, None]
    probs[:, 0] = conf
    labels = np.where(correct, 0, rng.integers(1, k, n))
    return torch.tensor(probs, dtype=torch.float32), torch.tensor(labels)


def test_ece_kde_near_zero_on_calibrated_samples_and_recovers_offset():
    p, y = _confidence_sample(20000, 5, 0.0, 0)
    assert ece_kde(p, y) < 0.015
    p, y = _confidence_sample(20000, 5, 0.2, 1)
    e = ece_kde(p, y)
    assert abs(e - 0.2) < 0.02, e
    # agrees with the binned estimator on a large sample
    assert abs(e - ece(p, y, n_bins=15)) < 0.02


def test_ece_kde_kernels_and_bandwidth():
    p, y = _confidence_sample(4000, 5, 0.1, 2)
    vals = [ece_kde(p, y, kernel=k) for k in ("triweight", "epanechnikov", "gaussian")]
    assert max(vals) - min(vals) < 0.02 and all(0.05 < v < 0.15 for v in vals)
    rng = np.random.default_rng(0)
    v = rng.normal(size=5000)
    # Silverman for a standard normal sample: ~1.06 n^-1/5
    assert abs(silverman_bandwidth(v) - 1.0592 * 5000 ** -0.2) < 0.01
    assert silverman_bandwidth(np.full(10, 0.5)) == 1e-3


def test_ece_kde_bad_input():
    p, y = _confidence_sample(100, 3, 0.0, 3)
    with pytest.raises(ValueError, match="`probs`"):
        ece_kde(torch.log(p), y)
    with pytest.raises(ValueError, match="`bandwidth`"):
        ece_kde(p, y, bandwidth=0.0)
    with pytest.raises(ValueError, match="unknown `kernel`"):
        ece_kde(p, y, kernel="box")
    assert ece_kde.higher_is_better is False


def test_ece_kde_binned_convolution_matches_direct_kernel_sum():
    from xcal_core.metrics.calibration_kde import _kernel

    p, y = _confidence_sample(1500, 4, 0.1, 7)
    s, pred = p.double().max(1)
    a = (pred == y).double().numpy()
    s = s.numpy()
    h, lo = 0.05, 0.25
    data = np.concatenate([s, 2 * lo - s, 2 - s])
    w = np.concatenate([a, a, a])
    grid = np.linspace(lo, 1.0, 512)
    kk = _kernel((grid[None] - data[:, None]) / h, "triweight")
    dens, dens_c = kk.sum(0), (kk * w[:, None]).sum(0)
    direct = np.sum(np.abs(dens_c / np.maximum(dens, 1e-12) - grid) * dens) / dens.sum()
    assert abs(ece_kde(p, y, bandwidth=h, n_grid=512) - direct) < 1e-4


def test_calibrate_logits_half_input_float32_map_and_device_copy_refreshed_on_refit():
    z, y, *_ = _planted(n=2000, k=4)
    dc = DirichletCalibration(reg=0.01).fit(z, y)
    z32 = z[:50].float()
    out32 = dc.calibrate_logits(z32)
    out16 = dc.calibrate_logits(z32.half())
    # half-precision logits (an autocast forward pass) are mapped in float32, not rounded again
    assert out16.dtype == torch.float32 and out32.dtype == torch.float32
    assert torch.allclose(out16, dc.calibrate_logits(z32.half().float()), atol=1e-6)
    assert torch.allclose(out32, dc.transform(z32), atol=1e-6)
    assert dc.calibrate_logits(z[:5].double()).dtype == torch.float64
    # the cached device copy of W, b follows a refit
    before = dc.calibrate_logits(z32)
    dc.fit(z[:500], torch.roll(y[:500], 1))
    after = dc.calibrate_logits(z32)
    ref = torch.log_softmax(z32, 1).clamp_min(float(np.log(dc.eps))) @ dc.W_.float().T + dc.b_.float()
    assert not torch.allclose(before, after) and torch.allclose(after, ref, atol=1e-5)


def test_inexact_probabilities_and_single_samples_are_refused():
    """Issue 21 item 11: rounded / float16 / percent probabilities are not logits; one sample is not a fit."""
    logits, y, _, _ = _planted(n=300)
    p = torch.softmax(logits, 1)
    for bad in (p.round(decimals=2), p.half(), 100 * p):
        with pytest.raises(ValueError, match=r"`logits` looks like (probabilities|percentages)"):
            DirichletCalibration().fit(bad, y)
    with pytest.raises(ValueError, match=r"`logits` has 1 sample\(s\); fitting Dirichlet calibration needs at least 2"):
        DirichletCalibration().fit(logits[:1], y[:1])
    DirichletCalibration().fit(torch.log(p), y)  # log-probabilities stay accepted
