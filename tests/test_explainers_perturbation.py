"""Mask-carrying perturbation explainers: known answers, exact Shapley, Captum cross-checks, levels."""

import pytest
import torch

from xcal_core.calibration import ReCalX
from xcal_core.explainers import LevelAwareModel, current_levels
from xcal_core.explainers._registry import METHODS, STOCHASTIC
from xcal_core.explainers.perturbation import (
    feature_ablation,
    kernel_shap,
    lime,
    lime_cosine_kernel,
    shapley_exact,
    shapley_sampling,
)
from xcal_core.perturbations import patch_feature_mask, perturbation_level

ALL = {
    "feature_ablation": feature_ablation,
    "shapley_sampling": shapley_sampling,
    "shapley_exact": shapley_exact,
    "kernel_shap": kernel_shap,
    "lime": lime,
}


def _mlp(d=8, k=3, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(d, 16), torch.nn.Tanh(), torch.nn.Linear(16, k)).eval()


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _brute_shapley(f, x, base, d):
    """Textbook Shapley values of v(S) = f(x_S, base_rest) by enumerating subsets (one sample)."""
    import itertools
    import math

    def v(s):
        z = base.clone()
        z[list(s)] = x[list(s)]
        return float(f(z[None]).detach()[0])

    phi = torch.zeros(d)
    for i in range(d):
        rest = [j for j in range(d) if j != i]
        for r in range(d):
            for s in itertools.combinations(rest, r):
                w = math.factorial(r) * math.factorial(d - r - 1) / math.factorial(d)
                phi[i] += w * (v(s + (i,)) - v(s))
    return phi


def test_registered():
    assert set(ALL) <= set(METHODS)
    assert {"shapley_sampling", "kernel_shap", "lime"} <= STOCHASTIC
    assert "feature_ablation" not in STOCHASTIC and "shapley_exact" not in STOCHASTIC


@pytest.mark.parametrize("name", list(ALL))
def test_linear_model_known_answer(name):
    # For a linear model every one of these estimators returns w_i * (x_i - b_i) exactly.
    torch.manual_seed(1)
    lin = torch.nn.Linear(6, 2).eval()
    x, base = torch.randn(3, 6), torch.randn(6)
    target = torch.tensor([0, 1, 1])
    kw = {"generator": _gen(), "n_samples": 64} if name in STOCHASTIC else {}
    attr = ALL[name](lin, x, target, baseline=base, **kw)
    expected = lin.weight.detach()[target] * (x - base)
    assert torch.allclose(attr, expected, atol=1e-4), (attr, expected)


def test_exact_shapley_matches_brute_force_and_efficiency():
    model = _mlp(d=5)
    x, base = torch.randn(2, 5), torch.zeros(5)
    attr = shapley_exact(model, x, 2, baseline=base)
    for i in range(2):
        ref = _brute_shapley(lambda z: model(z)[:, 2], x[i], base, 5)
        assert torch.allclose(attr[i], ref, atol=1e-5)
    gap = model(x)[:, 2] - model(base[None])[0, 2]
    assert torch.allclose(attr.sum(1), gap.detach(), atol=1e-5)


def test_shapley_sampling_converges_to_exact_and_antithetic_helps():
    model = _mlp(d=8)
    x = torch.randn(6, 8)
    exact = shapley_exact(model, x, 0)
    errs = {}
    for anti in (False, True):
        est = shapley_sampling(model, x, 0, n_samples=64, antithetic=anti, generator=_gen(3))
        # efficiency holds exactly for every sample of permutations
        assert torch.allclose(est.sum(1), exact.sum(1), atol=1e-5)
        errs[anti] = float(((est - exact) ** 2).mean())
    assert errs[True] < errs[False]
    assert errs[True] ** 0.5 < 0.1 * float(exact.abs().mean())


def test_shapley_sampling_agrees_with_captum():
    from captum.attr import ShapleyValueSampling

    model = _mlp(d=8, seed=2)
    x = torch.randn(4, 8)
    target = torch.tensor([0, 1, 2, 0])
    exact = shapley_exact(model, x, target)
    torch.manual_seed(0)
    theirs = ShapleyValueSampling(model).attribute(x, target=target, baselines=0.0, n_samples=64, perturbations_per_eval=64)
    ours = shapley_sampling(model, x, target, n_samples=64, antithetic=False, generator=_gen(5))
    # both are unbiased permutation estimators of the same values; errors of the same size
    scale = float(exact.abs().mean())
    err_theirs = float((theirs - exact).abs().mean())
    err_ours = float((ours - exact).abs().mean())
    assert err_theirs < 0.1 * scale and err_ours < 0.1 * scale
    assert float((ours - theirs).abs().mean()) < 0.15 * scale


@pytest.mark.slow
def test_kernel_shap_agrees_with_captum_and_exact():
    from captum.attr import KernelShap

    model = _mlp(d=8, seed=3)
    x = torch.randn(1, 8)
    exact = shapley_exact(model, x, 1)
    torch.manual_seed(0)
    theirs = KernelShap(model).attribute(x, target=1, baselines=0.0, n_samples=1000, perturbations_per_eval=500)
    ours = kernel_shap(model, x, 1, n_samples=1000, generator=_gen(6))
    scale = float(exact.abs().mean())
    assert float((ours - exact).abs().mean()) < 0.08 * scale
    assert float((theirs - exact).abs().mean()) < 0.08 * scale
    assert float((ours - theirs).abs().mean()) < 0.12 * scale


def test_lime_agrees_with_captum_same_kernel():
    from captum._utils.models.linear_model import SkLearnLinearRegression
    from captum.attr import Lime

    model = _mlp(d=6, seed=4)
    x = torch.randn(1, 6)

    def sim(_orig, _pert, interp, **kw):
        return lime_cosine_kernel(interp.bool(), 0.25).float()

    torch.manual_seed(0)
    explainer = Lime(model, interpretable_model=SkLearnLinearRegression(), similarity_func=sim)
    theirs = explainer.attribute(x, target=0, baselines=0.0, n_samples=2000, perturbations_per_eval=1000)
    ours = lime(model, x, 0, n_samples=2000, kernel_width=0.25, generator=_gen(7))
    ours_ref = lime(model, x, 0, n_samples=20000, kernel_width=0.25, generator=_gen(8))  # ~population regression
    scale = float(ours_ref.abs().mean())
    assert float((ours - ours_ref).abs().mean()) < 0.1 * scale
    assert float((theirs - ours_ref).abs().mean()) < 0.1 * scale
    # ridge shrinks the coefficients
    assert float(lime(model, x, 0, n_samples=500, alpha=50.0, generator=_gen(7)).abs().sum()) < float(ours.abs().sum())


def test_feature_ablation_equals_captum_on_image_patches():
    from captum.attr import FeatureAblation

    torch.manual_seed(5)
    cnn = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 8 * 8, 3)).eval()
    x = torch.rand(3, 2, 8, 8)
    fm = patch_feature_mask(8, 8, 2)
    ours = feature_ablation(cnn, x, torch.tensor([0, 1, 2]), feature_mask=fm, baseline="blur", blur_sigma=1.0, batch_size=5)
    from xcal_core.perturbations import make_baseline

    theirs = FeatureAblation(cnn).attribute(x, target=torch.tensor([0, 1, 2]), baselines=make_baseline(x, "blur", sigma=1.0),
                                              feature_mask=fm[None, None].expand(1, 2, 8, 8))
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_batch_size_invariance_and_per_sample_masks():
    model = _mlp(d=9)
    x = torch.randn(3, 9)
    a = kernel_shap(model, x, 0, n_samples=40, generator=_gen(9), batch_size=7)
    b = kernel_shap(model, x, 0, n_samples=40, generator=_gen(9), batch_size=1000)
    assert torch.allclose(a, b, atol=1e-5)
    # per-sample masks with different numbers of features == explaining each sample alone
    masks = torch.stack([torch.arange(9) // 3, torch.arange(9) % 4, torch.arange(9) // 3])
    both = shapley_exact(model, x, 0, feature_mask=masks)
    for i in range(3):
        alone = shapley_exact(model, x[i:i + 1], 0, feature_mask=masks[i])
        assert torch.allclose(both[i], alone[0], atol=1e-5)
    # features carry one value over all their elements
    assert torch.equal(both[0, 0:3], both[0, 0:1].expand(3))


class _Spy(torch.nn.Module):
    """Records the levels published with each forward pass."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.seen = inner, []

    def forward(self, x):
        self.seen.append(current_levels().clone())
        return self.inner(x)


def test_levels_come_from_the_coalition_masks():
    d = 4
    spy = _Spy(_mlp(d=d))
    x = torch.zeros(2, d)  # zero input with zero baseline: pixel comparison would say level 0 everywhere
    feature_ablation(spy, x, 0, baseline=0.0, batch_size=3)
    levels = torch.cat(spy.seen)
    assert sorted(levels.tolist()) == sorted([0.0] * 2 + [0.25] * 8)
    spy.seen.clear()
    shapley_exact(spy, x[:1], 0, baseline=0.0)
    assert sorted(torch.cat(spy.seen).tolist()) == sorted(float(l) for l in perturbation_level(
        (torch.arange(16)[:, None] & (1 << torch.arange(4))[None]) != 0))


def test_level_aware_model_recalibrates_each_query():
    d = 4
    base_model = _mlp(d=d, seed=6)
    temps = torch.tensor([1.0, 2.0, 3.0, 4.0])  # bins [0,.25), [.25,.5), [.5,.75), [.75,1]
    wrapped = LevelAwareModel(base_model, temps)
    x = torch.randn(2, d)
    attr = feature_ablation(wrapped, x, 1)
    full = base_model(x)[:, 1] / 1.0
    for i in range(d):
        xi = x.clone()
        xi[:, i] = 0.0
        expected = full - base_model(xi)[:, 1] / 2.0  # level 1/4 -> bin 1 -> T = 2
        assert torch.allclose(attr[:, i], expected.detach(), atol=1e-5)
    # the same coalitions with a constant temperature T scale logit attributions by exactly 1/T
    g1, g2 = _gen(11), _gen(11)
    unc = kernel_shap(base_model, x, 1, n_samples=30, generator=g1)
    cal = kernel_shap(LevelAwareModel(base_model, torch.full((10,), 2.0)), x, 1, n_samples=30, generator=g2)
    assert torch.allclose(cal, unc / 2.0, atol=1e-5)
    # ReCalX.wrap builds the same wrapper
    rc = ReCalX(n_bins=4)
    rc.temperatures_, rc.n_classes_ = temps, 3
    assert torch.allclose(feature_ablation(rc.wrap(base_model), x, 1), attr)


def test_through_the_explain_front_door():
    from xcal_core.explainers import explain

    model = _mlp(d=6, seed=7)
    x = torch.randn(3, 6)
    wrapped = LevelAwareModel(model, torch.tensor([1.0, 1.5, 2.0, 3.0]), default_level=0.0)
    a = explain(wrapped, x, 0, "kernel_shap", score="probability", n_samples=50, generator=_gen(1), baseline=0.0)
    b = kernel_shap(torch.nn.Sequential(wrapped, torch.nn.Softmax(dim=1)), x, 0, n_samples=50, generator=_gen(1))
    assert a.shape == x.shape and torch.allclose(a, b, atol=1e-6)


def test_bad_input():
    model = _mlp(d=4)
    x = torch.randn(2, 4)
    with pytest.raises(ValueError, match="unknown `baseline`"):
        feature_ablation(model, x, 0, baseline="gray")
    with pytest.raises(ValueError, match="ids must be 0..d-1"):
        feature_ablation(model, x, 0, feature_mask=torch.tensor([0, 0, 2, 2]))
    # per-sample masks: the first sample is fine, the second skips id 1 and is named
    per_sample = torch.tensor([[0, 1, 1, 2], [0, 0, 2, 2]])
    with pytest.raises(ValueError, match=r"every id used \(sample 1: 2 ids, max 2\)"):
        feature_ablation(model, x, 0, feature_mask=per_sample)
    with pytest.raises(ValueError, match="does not broadcast"):
        feature_ablation(model, x, 0, feature_mask=torch.arange(5))
    with pytest.raises(ValueError, match="`target`"):
        feature_ablation(model, x, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="`max_features`"):
        shapley_exact(_mlp(d=18), torch.randn(1, 18), 0, max_features=16)
    with pytest.raises(ValueError, match="`n_samples`"):
        kernel_shap(model, x, 0, n_samples=1)
    with pytest.raises(ValueError, match="`kernel_width`"):
        lime(model, x, 0, kernel_width=0.0)
    with pytest.raises(ValueError, match="NaN"):
        lime(model, torch.full((1, 4), float("nan")), 0)
    with pytest.raises(RuntimeError, match="without perturbation levels"):
        LevelAwareModel(model, torch.ones(3))(x)


def test_level_aware_model_published_levels_use_the_same_bins_as_explicit_levels():
    # the explainers' published levels skip validation (no device sync); the bins must be level_to_bin's,
    # bin edges included (7/10 in float32 is 0.69999999 and belongs to bin 7)
    from xcal_core.perturbations import level_to_bin

    model = _mlp(d=4, k=3)
    temps = torch.linspace(0.5, 5.0, 10)
    wrapped = LevelAwareModel(model, temps)
    lv = torch.tensor([0.0, 0.1, 0.3, 0.7, 0.69, 0.9, 0.95, 1.0], dtype=torch.float32)
    lv[3] = torch.tensor(7, dtype=torch.float32) / 10
    x = torch.randn(len(lv), 4, generator=_gen(3))
    from xcal_core.explainers import coalition_levels

    with torch.no_grad(), coalition_levels(lv):
        published = wrapped(x)
    with torch.no_grad():
        explicit = wrapped(x, levels=lv)
        expected = model(x) / temps[level_to_bin(lv, 10)][:, None]
    assert torch.equal(published, explicit) and torch.allclose(published, expected)
    assert level_to_bin(lv, 10)[3] == 7
    with pytest.raises(ValueError, match=r"`levels` must be in \[0, 1\]"):
        wrapped(x, levels=lv + 1.0)


def test_amp_is_a_no_op_on_the_cpu_and_is_validated():
    from xcal_core.explainers import explain, forward_autocast

    model = _mlp()
    x = torch.randn(3, 8, generator=_gen(1))
    for name in ("kernel_shap", "feature_ablation", "shapley_sampling"):
        a = explain(model, x, 0, name, score="probability", generator=_gen(2), n_samples=8) if name != "feature_ablation" else \
            explain(model, x, 0, name, score="probability")
        b = explain(model, x, 0, name, score="probability", generator=_gen(2), n_samples=8, amp=True) if name != "feature_ablation" else \
            explain(model, x, 0, name, score="probability", amp=True)
        assert torch.equal(a, b), name
    with forward_autocast("cpu", True):
        assert not torch.is_autocast_enabled("cpu")
    with pytest.raises(TypeError, match=r"`amp` must be a bool"):
        explain(model, x, 0, "kernel_shap", n_samples=8, amp="yes")
    with pytest.raises(ValueError, match=r"`dtype` must be torch.float16 or torch.bfloat16"):
        forward_autocast("cpu", True, torch.float32)
