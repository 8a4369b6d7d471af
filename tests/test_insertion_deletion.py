"""Tests of the batched hard insertion / deletion engine (xcal_core.metrics.insertion_deletion)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from xcal_core.metrics import (
    METRICS,
    curve_auc,
    curve_fractions,
    deletion_auc,
    insertion_auc,
    perturbation_curve,
)



@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: one intra-op thread is faster (and steadier on a busy 2-core box); restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

def _linear_tab(weights, n_classes=2):
    """Linear model whose class-0 logit is sum_j w_j x_j (no bias); other classes 0."""
    m = nn.Linear(len(weights), n_classes, bias=False)
    with torch.no_grad():
        m.weight.zero_()
        m.weight[0] = torch.tensor(weights, dtype=torch.float32)
    return m.eval()


def _cnn(c=1, n_classes=4, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(c, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, n_classes)
    ).eval()


def _naive_curve(model, x, attributions, target, mode, baseline, step, max_fraction, score):
    """Reference: one perturbed input at a time, features = pixels (channel sum ranks them)."""
    n = x.shape[0]
    a = attributions.sum(1) if attributions.shape == x.shape and x.ndim == 4 else attributions
    a = a.reshape(n, -1)
    n_feat = a.shape[1]
    n_max = max(1, int(np.floor(max_fraction * n_feat + 1e-9)))
    ks = list(range(0, n_max, step)) + [n_max]
    rows = []
    for i in range(n):
        order = np.argsort(-a[i].numpy(), kind="stable")
        row = []
        for k in ks:
            changed = np.zeros(n_feat, dtype=bool)
            changed[order[:k]] = True
            ch = torch.from_numpy(changed).view(1, 1, *x.shape[2:]) if x.ndim == 4 else torch.from_numpy(changed)[None]
            xi, bi = x[i : i + 1], baseline[i : i + 1]
            xp = torch.where(ch, bi, xi) if mode == "deletion" else torch.where(ch, xi, bi)
            with torch.no_grad():
                out = model(xp)
            if score == "probability":
                out = out.softmax(1)
            row.append(float(out[0, target[i]]))
        rows.append(row)
    return torch.tensor(rows)


# ------------------------------------------------------------------------------------------ known answers


def test_hand_computed_linear_curves():
    m = _linear_tab([1.0, 2.0, 3.0, 4.0])
    x = torch.ones(1, 4)
    a = torch.tensor([[4.0, 3.0, 2.0, 1.0]])  # rank: feature 0 first
    dele = perturbation_curve(m, x, a, 0, mode="deletion", score="logit")
    ins = perturbation_curve(m, x, a, 0, mode="insertion", score="logit")
    assert torch.allclose(dele, torch.tensor([[10.0, 9.0, 7.0, 4.0, 0.0]]))
    assert torch.allclose(ins, torch.tensor([[0.0, 1.0, 3.0, 6.0, 10.0]]))
    # step 2 and max_fraction 0.5
    assert torch.allclose(perturbation_curve(m, x, a, 0, mode="deletion", score="logit", step=2), torch.tensor([[10.0, 7.0, 0.0]]))
    assert torch.allclose(
        perturbation_curve(m, x, a, 0, mode="deletion", score="logit", max_fraction=0.5), torch.tensor([[10.0, 9.0, 7.0]])
    )
    # trapezoid: 0.25 * (9.5 + 8 + 5.5 + 2) = 6.25
    assert torch.allclose(curve_auc(dele), torch.tensor([6.25]))
    assert torch.allclose(deletion_auc(m, x, a, 0, score="logit"), torch.tensor([6.25]))
    assert torch.allclose(insertion_auc(m, x, a, 0, score="logit"), torch.tensor([3.75]))
    # constant baseline 0.5: deletion replaces x_j = 1 by 0.5
    d05 = perturbation_curve(m, x, a, 0, mode="deletion", score="logit", baseline=0.5)
    assert torch.allclose(d05, torch.tensor([[10.0, 9.5, 8.5, 7.0, 5.0]]))


def test_fractions_with_clipped_last_step_and_auc_uses_them():
    f = curve_fractions(5, step=2)
    assert torch.allclose(f, torch.tensor([0.0, 0.4, 0.8, 1.0]))
    assert torch.allclose(curve_fractions(10, step=3, max_fraction=0.5), torch.tensor([0.0, 0.3, 0.5]))
    assert curve_fractions(3, 1, 0.1).tolist() == [0.0, pytest.approx(1 / 3)]  # at least one feature
    # area of y = x on [0, 1] sampled at unequal points is 0.5 with fractions, not with equal spacing
    s = f[None].clone()
    assert torch.allclose(curve_auc(s, f), torch.tensor([0.5]))
    m = _linear_tab([1.0, 1.0, 1.0, 1.0, 1.0])
    ins = perturbation_curve(m, torch.ones(1, 5), torch.arange(5.0)[None], 0, mode="insertion", score="logit", step=2)
    assert torch.allclose(ins, torch.tensor([[0.0, 2.0, 4.0, 5.0]]))
    auc = insertion_auc(m, torch.ones(1, 5), torch.arange(5.0)[None], 0, score="logit", step=2)
    assert torch.allclose(auc, curve_auc(ins, f))
    assert not torch.allclose(auc, curve_auc(ins))


def test_metric_metadata():
    assert insertion_auc.higher_is_better is True and deletion_auc.higher_is_better is False
    assert insertion_auc.category == deletion_auc.category == "faithfulness"
    assert METRICS["insertion_auc"] is insertion_auc and METRICS["deletion_auc"] is deletion_auc


# ----------------------------------------------------------------------------------------- properties


def test_linear_identity_and_optimal_ranking():
    torch.manual_seed(1)
    d = 12
    w = torch.randn(d)
    m = _linear_tab(w.tolist())
    x = torch.randn(6, d)
    contrib = w * x  # exact contributions w.r.t. the zero baseline
    dele = perturbation_curve(m, x, contrib, 0, mode="deletion", score="logit", step=3)
    ins = perturbation_curve(m, x, contrib, 0, mode="insertion", score="logit", step=3)
    # additivity: ins_k + del_k = f(x) + f(0) = f(x) at every step
    f_x = (x * w).sum(1, keepdim=True)
    assert torch.allclose(ins + dele, f_x.expand_as(ins), atol=1e-5)
    # deleting by true contribution is the steepest possible descent: beats any other ranking pointwise
    rand = torch.randn(6, d)
    d_rand = perturbation_curve(m, x, rand, 0, mode="deletion", score="logit", step=3)
    assert bool((dele <= d_rand + 1e-5).all())
    assert bool((deletion_auc(m, x, contrib, 0, score="logit") < deletion_auc(m, x, -contrib, 0, score="logit")).all())
    assert bool((insertion_auc(m, x, contrib, 0, score="logit") > insertion_auc(m, x, -contrib, 0, score="logit")).all())
    # positive contributions only -> the deletion curve is monotone non-increasing
    xp = x.abs()
    mp = _linear_tab(w.abs().tolist())
    dp = perturbation_curve(mp, xp, w.abs() * xp, 0, mode="deletion", score="logit")
    assert bool((dp[:, 1:] <= dp[:, :-1] + 1e-6).all())


def test_endpoints_and_scores():
    model = _cnn(c=3)
    torch.manual_seed(2)
    x = torch.rand(5, 3, 8, 8)
    a = torch.randn(5, 8, 8)
    y = torch.tensor([0, 1, 2, 3, 0])
    with torch.no_grad():
        p_x = model(x).softmax(1)[torch.arange(5), y]
        p_0 = model(torch.zeros_like(x)).softmax(1)[torch.arange(5), y]
    dele = perturbation_curve(model, x, a, y, mode="deletion")
    ins = perturbation_curve(model, x, a, y, mode="insertion")
    assert torch.allclose(dele[:, 0], p_x, atol=1e-6) and torch.allclose(dele[:, -1], p_0, atol=1e-6)
    assert torch.allclose(ins[:, 0], p_0, atol=1e-6) and torch.allclose(ins[:, -1], p_x, atol=1e-6)
    logp = perturbation_curve(model, x, a, y, mode="deletion", score="log_probability")
    assert torch.allclose(logp.exp(), dele, atol=1e-6)
    # score="output" takes the model output as is
    prob_model = nn.Sequential(model, nn.Softmax(dim=1))
    assert torch.allclose(perturbation_curve(prob_model, x, a, y, mode="deletion", score="output"), dele, atol=1e-6)
    assert dele.dtype == torch.float32 and dele.shape == (5, 65)


def test_matches_naive_loop_and_is_chunking_invariant():
    model = _cnn(c=3)
    torch.manual_seed(3)
    x = torch.rand(4, 3, 8, 8)
    a = torch.randn(4, 3, 8, 8)  # shaped like x: channel sum ranks the pixels
    y = torch.tensor([3, 2, 1, 0])
    for mode in ("deletion", "insertion"):
        ref = _naive_curve(model, x, a, y, mode, torch.zeros_like(x), 5, 0.6, "probability")
        for bs in (1, 7, 1000):
            got = perturbation_curve(model, x, a, y, mode=mode, step=5, max_fraction=0.6, batch_size=bs)
            assert torch.allclose(got, ref, atol=1e-6), (mode, bs)
    # channels move together: (N, C, H, W) attributions == their channel sum (N, H, W) or (N, 1, H, W)
    c1 = perturbation_curve(model, x, a, y, step=4)
    assert torch.allclose(c1, perturbation_curve(model, x, a.sum(1), y, step=4))
    assert torch.allclose(c1, perturbation_curve(model, x, a.sum(1, keepdim=True), y, step=4))


def test_cross_check_quantus_pixel_flipping():
    quantus = pytest.importorskip("quantus")
    model = _cnn(c=1, n_classes=3, seed=4)
    rng = np.random.default_rng(4)
    x = rng.random((6, 1, 8, 8)).astype(np.float32)
    a = rng.standard_normal((6, 1, 8, 8)).astype(np.float32)  # continuous: no ties
    y = np.array([0, 1, 2, 0, 1, 2])
    metric = quantus.PixelFlipping(
        features_in_step=4, perturb_baseline=0.0, normalise=False, abs=False, disable_warnings=True
    )
    ref = np.asarray(
        metric(model=model, x_batch=x, y_batch=y, a_batch=a, channel_first=True, softmax=True, device="cpu"), dtype=np.float32
    )
    ours = perturbation_curve(model, torch.from_numpy(x), torch.from_numpy(a), torch.from_numpy(y), mode="deletion", step=4)
    assert ref.shape == (6, 16)
    np.testing.assert_allclose(ours[:, 1:].numpy(), ref, atol=1e-5)


def test_feature_mask_groups():
    model = _cnn(c=1, seed=5)
    torch.manual_seed(5)
    x = torch.rand(3, 1, 8, 8)
    y = torch.tensor([0, 1, 2])
    blocks = (torch.arange(8)[:, None] // 2) * 4 + torch.arange(8)[None, :] // 2  # 16 blocks of 2x2
    # attributions constant within blocks, distinct across blocks
    block_vals = torch.randn(3, 16)
    a = block_vals.gather(1, blocks.reshape(1, -1).expand(3, -1)).reshape(3, 8, 8)
    grouped = perturbation_curve(model, x, a, y, feature_mask=blocks)
    pixelwise = perturbation_curve(model, x, a, y, step=4)
    assert grouped.shape == (3, 17)
    assert torch.allclose(grouped, pixelwise, atol=1e-6)
    # per-sample (N, H, W) mask with arbitrary ids gives the same as the shared one
    ids = blocks * 7 + 100
    assert torch.allclose(perturbation_curve(model, x, a, y, feature_mask=ids.expand(3, 8, 8)), grouped, atol=1e-6)
    # a per-pixel mask is the same as no mask
    assert torch.allclose(perturbation_curve(model, x, a, y, feature_mask=torch.arange(64).view(8, 8)),
                          perturbation_curve(model, x, a, y), atol=1e-6)
    # groups rank by MEAN attribution: tabular, group A = {0, 1} (10, -9: mean 0.5), group B = {2, 3} (1, 1)
    m = _linear_tab([1.0, 0.0, 0.0, 0.0])  # only feature 0 matters
    c = perturbation_curve(m, torch.ones(1, 4), torch.tensor([[10.0, -9.0, 1.0, 1.0]]), 0, mode="deletion",
                           score="logit", feature_mask=torch.tensor([0, 0, 1, 1]))
    assert torch.allclose(c, torch.tensor([[1.0, 1.0, 0.0]]))  # group B (mean 1) goes first


def test_baselines():
    model = _cnn(c=3, seed=6)
    torch.manual_seed(6)
    x = torch.rand(2, 3, 8, 8)
    a = torch.randn(2, 8, 8)
    y = torch.tensor([1, 2])
    with torch.no_grad():
        def p(inp):
            return model(inp).softmax(1)[torch.arange(2), y]
        mean_img = x.mean((2, 3), keepdim=True).expand_as(x)
        assert torch.allclose(perturbation_curve(model, x, a, y, mode="insertion", baseline="mean")[:, 0], p(mean_img), atol=1e-6)
        assert torch.allclose(perturbation_curve(model, x, a, y, mode="insertion", baseline="zero")[:, 0], p(torch.zeros_like(x)), atol=1e-6)
        chan = torch.tensor([0.2, 0.5, 0.8])
        assert torch.allclose(
            perturbation_curve(model, x, a, y, mode="deletion", baseline=chan)[:, -1],
            p(chan.view(1, 3, 1, 1).expand_as(x)), atol=1e-6,
        )
        # blur: a constant image blurs to itself; a noisy image loses variance
        const = torch.full((2, 3, 8, 8), 0.3)
        assert torch.allclose(perturbation_curve(model, const, a, y, mode="insertion", baseline="blur")[:, 0], p(const), atol=1e-5)
    from xcal_core.perturbations import gaussian_blur as _gaussian_blur

    blurred = _gaussian_blur(x, 1.5)
    assert blurred.shape == x.shape and float(blurred.var()) < float(x.var())
    assert torch.allclose(blurred.mean((2, 3)), x.mean((2, 3)), atol=0.05)
    # tabular "mean" is the per-feature batch mean
    m = _linear_tab([1.0, 1.0])
    xt = torch.tensor([[1.0, 3.0], [3.0, 5.0]])
    ins = perturbation_curve(m, xt, torch.ones(2, 2), 0, mode="insertion", baseline="mean", score="logit")
    assert torch.allclose(ins[:, 0], torch.tensor([6.0, 6.0]))


# ------------------------------------------------------------------------------------------- bad input


def test_bad_input_errors():
    m = _cnn(c=1)
    x = torch.rand(2, 1, 8, 8)
    a = torch.randn(2, 8, 8)
    with pytest.raises(ValueError, match="`mode`"):
        perturbation_curve(m, x, a, 0, mode="erase")
    with pytest.raises(ValueError, match="`score`"):
        perturbation_curve(m, x, a, 0, score="softmax")
    with pytest.raises(ValueError, match="`step`"):
        perturbation_curve(m, x, a, 0, step=0)
    with pytest.raises(ValueError, match="`max_fraction`"):
        perturbation_curve(m, x, a, 0, max_fraction=0.0)
    with pytest.raises(ValueError, match="`max_fraction`"):
        perturbation_curve(m, x, a, 0, max_fraction=1.5)
    with pytest.raises(ValueError, match="`batch_size`"):
        perturbation_curve(m, x, a, 0, batch_size=0)
    with pytest.raises(ValueError, match="`attributions`"):
        perturbation_curve(m, x, torch.randn(2, 7, 7), 0)
    with pytest.raises(ValueError, match="`attributions` and `x`"):
        perturbation_curve(m, x, torch.randn(3, 8, 8), 0)
    with pytest.raises(ValueError, match="`attributions`.*NaN"):
        perturbation_curve(m, x, torch.full((2, 8, 8), float("nan")), 0)
    with pytest.raises(ValueError, match="`feature_mask`"):
        perturbation_curve(m, x, a, 0, feature_mask=torch.zeros(4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="`target`"):
        perturbation_curve(m, x, a, 9)
    with pytest.raises(ValueError, match="`target`"):
        perturbation_curve(m, x, a, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="`baseline`"):
        perturbation_curve(m, x, a, 0, baseline="gray")
    with pytest.raises(ValueError, match="`baseline`"):
        perturbation_curve(m, x, a, 0, baseline=torch.zeros(5))
    with pytest.raises(ValueError, match="`baseline`='blur'"):
        perturbation_curve(_linear_tab([1.0, 1.0]), torch.ones(1, 2), torch.ones(1, 2), 0, baseline="blur")
    with pytest.raises(ValueError, match="`blur_sigma`"):
        perturbation_curve(m, x, a, 0, baseline="blur", blur_sigma=-1.0)
    with pytest.raises(TypeError, match="`model`"):
        perturbation_curve(lambda t: t, x, a, 0)
    with pytest.raises(ValueError, match="`scores`"):
        curve_auc(torch.ones(3, 1))
    with pytest.raises(ValueError, match="`fractions`"):
        curve_auc(torch.ones(2, 3), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="`fractions`"):
        curve_auc(torch.ones(2, 3), torch.tensor([0.0, 1.0, 0.5]))
    with pytest.raises(ValueError, match="`n_features`"):
        curve_fractions(0)
    with pytest.raises(TypeError, match="mode"):
        insertion_auc(m, x, a, 0, mode="deletion")
    with pytest.raises(TypeError, match="unknown keyword"):
        deletion_auc(m, x, a, 0, steps=3)
