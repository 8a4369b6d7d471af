"""Tests of xcal_core.uq: explanation distributions, summaries (mean / std / CV) and ranked insertion / deletion."""

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
from scipy import stats

from xcal_core.models.stochastic import sample_realisations, to_dropconnect, to_flipout
from xcal_core.uq import (
    ExplanationSummary,
    MeanPrediction,
    class_summary,
    explanation_cv,
    explanation_distribution,
    kruskal_by_class,
    map_rank_correlation,
    planted_distribution,
    postprocess_maps,
    predictive_uncertainty,
    ranked_perturbation_curves,
    realisation_targets,
    sample_perturbation_auc,
    summarize,
)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def cnn(p=None, seed=0):
    torch.manual_seed(seed)
    layers = [nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.Flatten()]
    if p is not None:
        layers.append(nn.Dropout(p))
    return nn.Sequential(*layers, nn.Linear(4 * 6 * 6, 3)).eval()


X = torch.rand(4, 1, 6, 6, generator=gen(1))
MASK = (torch.arange(36).reshape(6, 6) // 6) // 2 * 3 + (torch.arange(36).reshape(6, 6) % 6) // 2  # 3x3 cells of 2x2


# ------------------------------------------------------------------------------- summaries
def test_summarize_known_answer():
    # T = 4 samples of a 1 x 3 map: feature 0 constant, feature 1 symmetric, feature 2 all zero
    d = torch.tensor([[[2.0, 1.0, 0.0]], [[2.0, 3.0, 0.0]], [[2.0, 1.0, 0.0]], [[2.0, 3.0, 0.0]]])
    s = summarize(d, rel_eps=0.0)
    assert torch.allclose(s.mean, torch.tensor([[2.0, 2.0, 0.0]]))
    assert torch.allclose(s.std, torch.tensor([[0.0, 1.0, 0.0]]))  # population std (1/T)
    assert torch.allclose(s.cv[:, :2], torch.tensor([[0.0, 0.5]]))
    assert torch.isnan(s.cv[0, 2]) and s.defined.tolist() == [[True, True, False]]  # 0/0 is undefined
    per = s.per_input()
    assert torch.allclose(per["cv_mean"], torch.tensor([0.25]))  # mean over the 2 defined features
    assert torch.allclose(per["undefined_share"], torch.tensor([1 / 3]))
    assert torch.allclose(per["std_mean"], torch.tensor([1 / 3]))
    assert torch.allclose(per["cv_global"], torch.tensor([1.0 / 4.0]))
    assert s.n_realisations == 4
    assert list(s.to_frame().columns) == ["index", "cv_mean", "cv_median", "cv_global", "undefined_share",
                                          "std_mean", "mean_abs"]


def test_planted_explainer_half_zero_reflects_only_the_varying_half():
    # the audit's case: a map that is 0 on half its features in every realisation and has CV 0.4 on the rest
    dist, varying = planted_distribution(5, 40, 10, cv=0.4, zero_share=0.5, generator=gen(0))
    assert varying.float().mean() == 0.5 and torch.equal(dist[:, ~varying], torch.zeros_like(dist[:, ~varying]))
    s = summarize(dist, absolute=True)
    per = s.per_input()
    assert torch.allclose(per["cv_mean"], torch.full((5,), 0.4), atol=1e-6)
    assert torch.allclose(per["cv_median"], torch.full((5,), 0.4), atol=1e-6)
    assert torch.allclose(per["cv_global"], torch.full((5,), 0.4), atol=1e-6)
    assert torch.allclose(per["undefined_share"], torch.full((5,), 0.5))
    assert torch.equal(s.defined, varying)
    # the old rule (0/0 counted as CV = 0) halves it: the summary must not do that
    assert torch.allclose(s.cv.nan_to_num(0.0).mean(1), torch.full((5,), 0.2), atol=1e-6)
    assert torch.allclose(explanation_cv(dist), per["cv_mean"])
    # no zero features: the same CV; all signs balanced so the std is exact
    d0, v0 = planted_distribution(2, 6, 4, cv=0.25, zero_share=0.0, generator=gen(1))
    assert v0.all() and torch.allclose(summarize(d0).per_input()["cv_mean"], torch.full((2,), 0.25), atol=1e-6)
    with pytest.raises(ValueError, match="must be even"):
        planted_distribution(1, 4, 3)
    with pytest.raises(ValueError, match="`zero_share`"):
        planted_distribution(1, 4, 2, zero_share=1.0)


def test_planted_explainer_through_the_pipeline():
    # an ensemble of linear members whose weights are exactly 0 on the first half of the inputs: the
    # gradient is 0 there in every realisation, and the grid's per-image CV is that of the other half
    torch.manual_seed(0)
    members = []
    for _ in range(4):
        lin = nn.Linear(8, 3)
        with torch.no_grad():
            lin.weight[:, :4] = 0.0
        members.append(lin.eval())
    from xcal_core.uq import explanation_grid

    x = torch.randn(6, 8, generator=gen(2))
    g = explanation_grid({"ensemble": sample_realisations(members)}, x, {"gradient": {}}, target=0)
    per = g.frame()
    w = torch.stack([m.weight[0].detach() for m in members]).abs()  # |E_t| = |W_t[class 0]| for every input
    cv_half = (w[:, 4:].std(0, correction=0) / w[:, 4:].mean(0)).mean()
    assert np.allclose(per["cv_mean"], float(cv_half), atol=1e-5)
    assert np.allclose(per["undefined_share"], 0.5)
    assert np.allclose(per["cv_global"], float(w[:, 4:].std(0, correction=0).sum() / w[:, 4:].mean(0).sum()), atol=1e-5)


def test_cv_epsilon_rule_never_inf_and_nan_only_where_undefined():
    # signed samples with mean exactly zero but std > 0: a large but finite CV
    d = torch.tensor([[[1.0, 4.0]], [[-1.0, 4.0]]])
    s = summarize(d)
    assert torch.isfinite(s.cv).all()
    eps = 1e-8 * 4.0 + 1e-12
    assert torch.allclose(s.eps, torch.tensor([eps]))
    assert math.isclose(float(s.cv[0, 0]), 1.0 / eps, rel_tol=1e-5)
    # all-zero distribution: the CV is undefined everywhere, and so is every per-input CV summary
    z = summarize(torch.zeros(5, 2, 3, 3))
    assert torch.isnan(z.cv).all() and not z.defined.any()
    per = z.per_input()
    assert torch.isnan(per["cv_mean"]).all() and torch.isnan(per["cv_global"]).all()
    assert torch.equal(per["undefined_share"], torch.ones(2)) and torch.equal(per["std_mean"], torch.zeros(2))
    # "near" zero: relative to the map's scale; zero_tol = 0 keeps everything that is not exactly 0
    near = torch.tensor([[[1.0, 1e-9]], [[3.0, 1e-9]]])
    assert summarize(near).defined.tolist() == [[True, False]]
    assert summarize(near, zero_tol=0.0).defined.tolist() == [[True, True]]
    with pytest.raises(ValueError, match="`zero_tol`"):
        summarize(near, zero_tol=1.0)


def test_absolute_maps_bound_cv():
    d = torch.randn(10, 3, 2, 4, 4, generator=gen(2))
    s = summarize(d, absolute=True, channel_reduce="sum")
    assert s.mean.shape == (3, 4, 4) and (s.mean >= 0).all()
    assert float(s.cv.max()) <= math.sqrt(10 - 1) + 1e-5
    # one non-zero sample among T reaches the bound
    one = torch.zeros(10, 1, 3)
    one[0] = 1.0
    assert torch.allclose(summarize(one, absolute=True).cv, torch.full((1, 3), 3.0), atol=1e-5)
    assert torch.allclose(postprocess_maps(d, absolute=True, channel_reduce="max"), d.abs().amax(2))
    assert torch.allclose(explanation_cv(d, channel_reduce="sum"), s.per_input()["cv_mean"])


def test_map_rank_correlation_matches_scipy():
    a = torch.randn(5, 2, 3, generator=gen(3))
    b = a + 0.7 * torch.randn(5, 2, 3, generator=gen(4))
    b[0, 0, 0] = b[0, 0, 1]  # a tie
    ours = map_rank_correlation(a, b)
    ref = [stats.spearmanr(a[i].flatten(), b[i].flatten()).statistic for i in range(5)]
    assert np.allclose(ours.numpy(), ref, atol=1e-6)
    assert torch.allclose(map_rank_correlation(a, -a), -torch.ones(5))
    assert torch.equal(map_rank_correlation(torch.ones(2, 4), torch.ones(2, 4)), torch.ones(2))


def test_class_summary_and_kruskal():
    v = torch.tensor([1.0, 2.0, 3.0, 10.0, 11.0, 12.0, 5.0])
    y = torch.tensor([0, 0, 0, 1, 1, 1, 2])
    df = class_summary(v, y, class_names=["a", "b", "c"])
    assert df["mean"].tolist() == [2.0, 11.0, 5.0] and df["name"].tolist() == ["a", "b", "c"]
    h, p = kruskal_by_class(v, y)  # class 2 has a single input and is dropped
    ref = stats.kruskal([1, 2, 3], [10, 11, 12])
    assert math.isclose(h, ref.statistic) and math.isclose(p, ref.pvalue)
    # undefined values (NaN) are left out, inf is an error
    vn = torch.cat([v, torch.tensor([float("nan"), float("nan")])])
    yn = torch.cat([y, torch.tensor([0, 1])])
    assert kruskal_by_class(vn, yn) == (h, p)
    assert class_summary(vn, yn)["n"].tolist() == [3, 3, 1]
    with pytest.raises(ValueError, match="inf"):
        kruskal_by_class(torch.tensor([1.0, float("inf"), 2.0, 3.0]), torch.tensor([0, 0, 1, 1]))
    with pytest.raises(ValueError, match="at least two classes"):
        kruskal_by_class(v[:3], y[:3])


def test_predictive_uncertainty():
    logits = torch.randn(1, 6, 4, generator=gen(5)).repeat(5, 1, 1)
    pu = predictive_uncertainty(logits)
    assert torch.allclose(pu["mutual_information"], torch.zeros(6), atol=1e-6)
    p = torch.softmax(logits[0], -1)
    assert torch.allclose(pu["entropy"], -(p * p.log()).sum(-1), atol=1e-5)
    # two confident, disagreeing realisations: entropy log 2, MI ~ log 2
    two = torch.tensor([[[20.0, 0.0]], [[0.0, 20.0]]])
    pu2 = predictive_uncertainty(two)
    assert math.isclose(float(pu2["entropy"][0]), math.log(2), rel_tol=1e-4)
    assert float(pu2["mutual_information"][0]) > 0.69
    reg = predictive_uncertainty(torch.tensor([[[1.0]], [[3.0]]]))
    assert torch.allclose(reg["std"], torch.tensor([1.0]))


# ------------------------------------------------------------------------------- distributions
def test_mc_dropout_p0_gives_identical_maps():
    r = sample_realisations(cnn(p=0.0), 4, generator=gen(0))
    for method, kw in [("guided_backprop", {}), ("integrated_gradients", {"steps": 8}),
                       ("lime", {"n_samples": 40, "feature_mask": MASK, "generator": gen(1), "coalitions": "shared"})]:
        d = explanation_distribution(r, X, "predicted", method, **kw)
        s = summarize(d, absolute=True)
        assert torch.equal(s.std, torch.zeros_like(s.std)), method
        # CV 0 wherever it is defined, undefined exactly where the map is 0 in every realisation
        assert torch.equal(s.cv[s.defined], torch.zeros_like(s.cv[s.defined]))
        assert torch.equal(s.defined, s.mean != 0)


def test_lime_coalitions_fresh_vs_shared():
    from xcal_core.uq import realisation_generators

    # T copies of one network: no model uncertainty at all. Shared coalitions give T identical maps;
    # fresh coalitions (one LIME run per realisation, as in the paper) leave LIME's own sampling noise
    net = cnn()
    r = sample_realisations([net] * 4)
    kw = dict(n_samples=30, feature_mask=MASK)
    shared = explanation_distribution(r, X, "predicted", "lime", coalitions="shared", generator=gen(4), **kw)
    fresh = explanation_distribution(r, X, "predicted", "lime", coalitions="fresh", generator=gen(4), **kw)
    assert torch.equal(shared.std(0), torch.zeros_like(shared[0]))
    assert float(fresh.std(0).max()) > 1e-4
    # fresh draws depend on the realisation's index and the base generator only: same on every call
    assert torch.equal(fresh, explanation_distribution(r, X, "predicted", "lime", generator=gen(4), **kw))
    # realisation t under fresh coalitions equals one LIME run with generator t
    from xcal_core.explainers import explain

    g3 = realisation_generators(gen(4), 4, "fresh")[3]
    with torch.no_grad():
        tgt = net(X).argmax(1)
    assert torch.allclose(fresh[3], explain(net, X, tgt, "lime", generator=g3, **kw), atol=1e-6)
    gs = realisation_generators(gen(4), 3, "shared")
    assert all(torch.equal(g.get_state(), gs[0].get_state()) for g in gs)
    with pytest.raises(ValueError, match="coalitions='shared'"):
        explanation_distribution(r, X, "predicted", "lime", vectorize=True, coalitions="fresh", **kw)
    with pytest.raises(ValueError, match="`coalitions`"):
        explanation_distribution(r, X, "predicted", "lime", coalitions="both", **kw)


def test_ensemble_of_identical_members_zero_std():
    net = cnn()
    d = explanation_distribution(sample_realisations([net, net, net]), X, "predicted", "integrated_gradients", steps=8)
    assert torch.equal(d.std(0), torch.zeros_like(d[0]))


def _realisations(kind, t):
    """T frozen realisations of one UE kind; "ensemble" stacks and vmaps 3 members, "ensemble_loop" (the CPU
    default) loops over them inside the batched pass."""
    if kind.startswith("ensemble"):
        r = sample_realisations([cnn(seed=s) for s in range(3)])
        r.stack_members = kind == "ensemble"
        return r
    base = cnn(p=0.4) if kind == "mc_dropout" else cnn()
    m = {"mc_dropout": base, "dropconnect": to_dropconnect(base, 0.4), "flipout": to_flipout(base, rho_init=-2.0)}[kind]
    return sample_realisations(m, t, generator=gen(0))


@pytest.mark.parametrize("kind", ["mc_dropout", "dropconnect", "flipout", "ensemble", "ensemble_loop"])
def test_vectorized_equals_looped_and_realisations_differ(kind):
    r = _realisations(kind, 3)
    for method, kw in [("guided_backprop", {}), ("integrated_gradients", {"steps": 6})]:
        vec = explanation_distribution(r, X, "predicted", method, vectorize=True, batch_size=48, **kw)
        loop = explanation_distribution(r, X, "predicted", method, vectorize=False, **kw)
        assert torch.allclose(vec, loop, atol=1e-6), (kind, method)
        assert (vec[0] - vec[1]).abs().max() > 1e-4
    # a frozen explanation is bit-identical on repeated calls
    again = explanation_distribution(r, X, "predicted", "guided_backprop", vectorize=True, batch_size=48)
    assert torch.equal(again, explanation_distribution(r, X, "predicted", "guided_backprop", vectorize=True, batch_size=48))


@pytest.mark.parametrize("kind", ["mc_dropout", "dropconnect", "flipout", "ensemble", "ensemble_loop"])
def test_vectorized_lime_equals_the_loop(kind):
    # common coalitions for every realisation: the vectorized path draws them once, the loop once per
    # realisation from the same generator state, so the two give the same numbers
    r = _realisations(kind, 4)
    for score in ("logit", "probability"):
        kw = dict(n_samples=40, feature_mask=MASK, score=score, coalitions="shared")
        vec = explanation_distribution(r, X, "predicted", "lime", vectorize=True, batch_size=37, generator=gen(3), **kw)
        loop = explanation_distribution(r, X, "predicted", "lime", vectorize=False, generator=gen(3), **kw)
        assert torch.allclose(vec, loop, rtol=1e-5, atol=1e-7), (kind, score)
        assert (vec[0] - vec[1]).abs().max() > 1e-5
    # the same generator state gives the same coalitions: bit-identical on repeated calls
    assert torch.equal(vec, explanation_distribution(r, X, "predicted", "lime", vectorize=True, batch_size=37,
                                                     generator=gen(3), **kw))


def test_vectorized_lime_per_sample_masks_regression_and_solver():
    from xcal_core.uq.distributions import _weighted_regression_shared

    # per-sample feature masks with different feature counts (LIME groups samples by d)
    masks = torch.stack([MASK, MASK, (torch.arange(36).reshape(6, 6) // 18), MASK])
    r = sample_realisations(cnn(p=0.4), 3, generator=gen(0))
    kw = dict(n_samples=30, feature_mask=masks, baseline="mean", train_mean=torch.full((1, 6, 6), 0.5),
              coalitions="shared")
    vec = explanation_distribution(r, X, "predicted_mean", "lime", generator=gen(5), **kw)
    loop = explanation_distribution(r, X, "predicted_mean", "lime", vectorize=False, generator=gen(5), **kw)
    assert torch.allclose(vec, loop, rtol=1e-5, atol=1e-7)
    assert len(torch.unique(vec[0, 2])) <= 2  # two features on image 2
    # regressor
    torch.manual_seed(0)
    reg = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Dropout(0.3), nn.Linear(8, 1)).eval()
    rr = sample_realisations(reg, 4, generator=gen(1))
    xt = torch.randn(3, 5, generator=gen(6))
    a = explanation_distribution(rr, xt, "output", "lime", n_samples=64, generator=gen(2), coalitions="shared")
    b = explanation_distribution(rr, xt, "output", "lime", n_samples=64, generator=gen(2), vectorize=False,
                                 coalitions="shared")
    assert a.shape == (4, 3, 5) and torch.allclose(a, b, rtol=1e-5, atol=1e-7)
    # the shared-design solver equals an independent weighted least-squares fit per right-hand side
    z = torch.rand(2, 50, 4, generator=gen(7)) < 0.5
    y = torch.randn(3, 2, 50, generator=gen(8))
    w = torch.rand(2, 50, generator=gen(9)).double() + 0.1
    beta = _weighted_regression_shared(z, y, w, 0.0)
    for t in range(3):
        for i in range(2):
            a_ = torch.cat([torch.ones(50, 1, dtype=torch.float64), z[i].double()], 1) * w[i].sqrt()[:, None]
            ref = torch.linalg.lstsq(a_, (y[t, i].double() * w[i].sqrt())[:, None]).solution[1:, 0]
            assert torch.allclose(beta[t, i], ref, atol=1e-8)


def test_auto_vectorize_choice():
    from xcal_core.uq.distributions import _auto_vectorize

    base = cnn(p=0.4)
    rs = {"mc_dropout": sample_realisations(base, 3, generator=gen(0)),
          "dropconnect": sample_realisations(to_dropconnect(cnn(), 0.4), 3, generator=gen(0)),
          "flipout": sample_realisations(to_flipout(cnn()), 3, generator=gen(0)),
          "ensemble": sample_realisations([cnn(seed=s) for s in range(2)])}
    for kind, r in rs.items():
        assert not _auto_vectorize(r, "smoothgrad")  # no vectorized path
        assert _auto_vectorize(r, "guided_backprop")
        # CPU: IG loops over T (measured faster); LIME is vectorized where work is shared across realisations
        assert not _auto_vectorize(r, "integrated_gradients")
        assert _auto_vectorize(r, "lime") == (kind in ("mc_dropout", "ensemble"))


def test_guided_backprop_matches_captum_per_realisation():
    from captum.attr import GuidedBackprop

    r = sample_realisations(to_dropconnect(cnn(), 0.3), 3, generator=gen(2))
    d, tg = explanation_distribution(r, X, "predicted", "guided_backprop", return_targets=True)
    for t in range(3):
        with r.frozen(t) as m:
            ref = GuidedBackprop(m).attribute(X.clone().requires_grad_(True), target=tg[t])
        assert torch.allclose(d[t], ref, atol=1e-6)


def test_integrated_gradients_completeness_per_realisation():
    # frozen masks make IG complete again: sum(attr) = f_t(x) - f_t(0) for every realisation
    r = sample_realisations(cnn(p=0.5), 4, generator=gen(3))
    d, tg = explanation_distribution(r, X, "predicted", "integrated_gradients", steps=64, return_targets=True)
    out, base = r.predict(X), r.predict(torch.zeros_like(X))
    diff = out.gather(2, tg[..., None])[..., 0] - base.gather(2, tg[..., None])[..., 0]
    assert torch.allclose(d.sum((2, 3, 4)), diff, atol=2e-3)


def test_targets_true_and_predicted_mean():
    r = sample_realisations(cnn(p=0.5), 6, generator=gen(4))
    out = r.predict(X)
    pm = realisation_targets(r, X, "predicted_mean")
    assert torch.equal(pm, torch.softmax(out, -1).mean(0).argmax(-1).expand(6, 4))
    assert torch.equal(realisation_targets(r, X, "predicted"), out.argmax(-1))
    labels = torch.tensor([0, 1, 2, 0])
    assert torch.equal(realisation_targets(r, X, "true", labels=labels), labels.expand(6, 4))
    # where every realisation predicts the true class, the true-logit variant is the same map
    d_pred = explanation_distribution(r, X, "predicted", "guided_backprop")
    d_true = explanation_distribution(r, X, "true", "guided_backprop", labels=out.argmax(-1)[0])
    same = out.argmax(-1) == out.argmax(-1)[0]
    assert torch.equal(d_pred[same], d_true[same])


def test_regression_distribution_and_target_errors():
    torch.manual_seed(0)
    # input dropout on a linear regressor: IG of realisation t is exactly w * m_t / (1 - p) * x
    lin = nn.Linear(5, 1)
    model = nn.Sequential(nn.Dropout(0.4), lin).eval()
    r = sample_realisations(model, 4, generator=gen(5))
    xt = torch.randn(3, 5, generator=gen(6))
    d = explanation_distribution(r, xt, "output", "integrated_gradients", steps=4)
    assert d.shape == (4, 3, 5)
    with r.batched():
        masks = r.model[0]._masks((5,), xt.device, xt.dtype)  # (4, 5) scaled masks
    expected = lin.weight.detach()[0] * masks[:, None, :] * xt
    assert torch.allclose(d, expected, atol=1e-5)
    assert torch.allclose(explanation_distribution(r, xt, "output", "integrated_gradients", steps=4, vectorize=False), d, atol=1e-6)
    with pytest.raises(ValueError, match="needs a classifier, but the model is a regressor"):
        explanation_distribution(r, xt, "predicted", "guided_backprop")
    with pytest.raises(ValueError, match="class-index `target` given for a regressor"):
        explanation_distribution(r, xt, torch.zeros(3, dtype=torch.long), "guided_backprop")
    rc = sample_realisations(cnn(p=0.3), 3, generator=gen(0))
    with pytest.raises(ValueError, match="'output' is for regressors"):
        explanation_distribution(rc, X, "output", "guided_backprop")


def test_distribution_bad_input():
    r = sample_realisations(cnn(p=0.3), 3, generator=gen(0))
    with pytest.raises(TypeError, match="`realisations` must be a Realisations"):
        explanation_distribution(cnn(), X)
    with pytest.raises(ValueError, match="`labels` are required"):
        explanation_distribution(r, X, "true")
    with pytest.raises(ValueError, match="unknown `target`"):
        explanation_distribution(r, X, "argmax")
    with pytest.raises(ValueError, match="has no vectorized path"):
        explanation_distribution(r, X, "predicted", "smoothgrad", vectorize=True)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['steps'\] for method 'lime'"):
        explanation_distribution(r, X, "predicted", "lime", vectorize=True, coalitions="shared", steps=4)
    with pytest.raises(ValueError, match="unknown `score` 'prob'"):
        explanation_distribution(r, X, "predicted", "lime", score="prob")
    with pytest.raises(ValueError, match="`n_samples` must be"):
        explanation_distribution(r, X, "predicted", "lime", vectorize=True, coalitions="shared", n_samples=0)
    with pytest.raises(ValueError, match="`labels` has labels outside"):
        explanation_distribution(r, X, "true", labels=torch.tensor([0, 1, 2, 7]))
    with pytest.raises(ValueError, match="T >= 2"):
        summarize(torch.zeros(1, 2, 3))
    with pytest.raises(ValueError, match="unknown `channel_reduce`"):
        summarize(torch.zeros(2, 2, 1, 3, 3), channel_reduce="mean")
    with pytest.raises(ValueError, match="needs image distributions"):
        summarize(torch.zeros(2, 2, 3), channel_reduce="sum")
    with pytest.raises(ValueError, match="NaN or inf"):
        summarize(torch.full((2, 2, 3), float("nan")))


# ------------------------------------------------------------------------------- insertion / deletion
def linear_members(n=2):
    """Identical members: logits [w.x, 0] on 6 features with distinct positive weights."""
    members = []
    for _ in range(n):
        lin = nn.Linear(6, 2)
        with torch.no_grad():
            lin.weight.copy_(torch.tensor([[3.0, 2.0, 1.0, 0.5, 0.25, 0.1], [0.0] * 6]))
            lin.bias.copy_(torch.tensor([-3.0, 0.0]))
        members.append(lin.eval())
    return sample_realisations(members)


def test_perfect_ranking_beats_random_beats_inverted():
    r = linear_members()
    x = torch.ones(8, 6)
    w = torch.tensor([3.0, 2.0, 1.0, 0.5, 0.25, 0.1]).expand(8, 6)
    tgt = torch.zeros(8, dtype=torch.long)
    perfect = ExplanationSummary(mean=w.clone(), std=-w.clone(), cv=w.clone(), eps=torch.zeros(8), n_realisations=2)
    rc = ranked_perturbation_curves(r, x, perfect, tgt, generator=gen(0))
    a = {k: v.mean().item() for k, v in rc.auc.items()}
    assert a[("mean", "insertion")] > a[("random", "insertion")] > a[("std", "insertion")]
    assert a[("mean", "deletion")] < a[("random", "deletion")] < a[("std", "deletion")]
    assert rc.curves[("mean", "deletion")].shape == (8, 7)
    assert torch.allclose(rc.fractions, torch.arange(7) / 6)
    df = rc.to_frame()
    assert set(df["ranking"]) == {"mean", "std", "random"} and len(df) == 8 * 6
    # deletion with the perfect ranking: known first step, sigmoid(w.x - 3 - 3) = sigmoid(0.95)
    c = rc.curves[("mean", "deletion")][0]
    assert math.isclose(float(c[0]), 1 / (1 + math.exp(-(6.85 - 3))), rel_tol=1e-5)
    assert math.isclose(float(c[1]), 1 / (1 + math.exp(-(3.85 - 3))), rel_tol=1e-5)


def test_mean_prediction_and_sample_auc():
    r = sample_realisations(cnn(p=0.5), 5, generator=gen(7))
    mp = MeanPrediction(r)
    assert torch.allclose(mp(X), torch.softmax(r.predict(X), -1).mean(0), atol=1e-6)
    assert torch.allclose(MeanPrediction(r, realisation_batch=2)(X), mp(X), atol=1e-6)
    d = explanation_distribution(r, X, "predicted_mean", "guided_backprop")
    tgt = realisation_targets(r, X, "predicted_mean")[0]
    s = summarize(d, absolute=True, channel_reduce="sum")
    aucs = sample_perturbation_auc(r, X, d.abs().sum(2), tgt, mode="deletion", step=3)
    assert aucs.shape == (5, 4) and ((aucs >= 0) & (aucs <= 1)).all()
    # identical samples give the AUC of their mean map
    same = d[:1].abs().sum(2).repeat(3, 1, 1, 1)
    s1 = summarize(same)
    one = ranked_perturbation_curves(r, X, s1, tgt, rankings=("mean",), modes=("deletion",), step=3)
    assert torch.allclose(sample_perturbation_auc(r, X, same, tgt, mode="deletion", step=3)[0], one.auc[("mean", "deletion")], atol=1e-6)
    # feature masks: 9 cells of 2 x 2
    rc = ranked_perturbation_curves(r, X, s, tgt, feature_mask=MASK)
    assert rc.curves[("std", "insertion")].shape == (4, 10)
    with pytest.raises(ValueError, match="`rankings` must be"):
        ranked_perturbation_curves(r, X, s, tgt, rankings=("median",))
    with pytest.raises(TypeError, match="`summary` must be an ExplanationSummary"):
        ranked_perturbation_curves(r, X, s.mean, tgt)
    with pytest.raises(ValueError, match="`summary` describes 4 inputs"):
        ranked_perturbation_curves(r, X[:2], s, tgt[:2])


# ------------------------------------------------------------------------------- experiment grid
def test_explanation_grid_and_analyses():
    from xcal_core.uq import (
        class_kruskal_table,
        explainer_order_stability,
        explanation_grid,
        metric_rows,
        ranked_auc_grid,
        ranking_tests,
        uncertainty_correlation,
    )
    import pandas as pd

    x = torch.rand(8, 1, 6, 6, generator=gen(9))
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    reals = {"mc_dropout": sample_realisations(cnn(p=0.5), 3, generator=gen(0)),
             "ensemble": sample_realisations([cnn(seed=1), cnn(seed=2)])}
    ex = {"guided_backprop": {}, "lime": {"n_samples": 20, "feature_mask": MASK}}
    g = explanation_grid(reals, x, ex, labels=y, n_inputs={"lime": 4}, channel_reduce="sum", generator=gen(1))
    assert g.dists[("mc_dropout", "guided_backprop")].shape == (3, 8, 1, 6, 6)
    assert g.dists[("ensemble", "lime")].shape == (2, 4, 1, 6, 6)
    assert g.settings["coalitions"] == "fresh"
    f = g.frame()
    assert len(f) == 2 * (8 + 4) and {"cv_mean", "cv_global", "undefined_share", "entropy", "correct", "label"} <= set(f.columns)
    direct = summarize(g.dists[("ensemble", "guided_backprop")], absolute=True, channel_reduce="sum").per_input()
    assert torch.allclose(torch.tensor(g.cv_table().loc["ensemble", "guided_backprop"]), direct["cv_mean"].mean(), atol=1e-6)
    assert torch.allclose(torch.tensor(g.cv_table("cv_global").loc["ensemble", "guided_backprop"]),
                          direct["cv_global"].mean(), atol=1e-6)
    assert g.cv_table(inputs=4).shape == (2, 2)
    with pytest.raises(ValueError, match="unknown `stat`"):
        g.cv_table("cv_max")
    aucs, curves = ranked_auc_grid(g, explainers=["guided_backprop"], step=6)
    assert set(aucs["ranking"]) == {"mean", "std", "random"} and len(aucs) == 2 * 3 * 2 * 8
    few, _ = ranked_auc_grid(g, explainers=["guided_backprop"], n_inputs=5, step=6)
    assert few["index"].max() == 4
    t = ranking_tests(aucs)
    assert list(t["mode"]) == ["deletion", "insertion", "deletion", "insertion"] and t["p_value"].between(0, 1).all()
    assert t["too_few"].all()  # 8 images: fewer than 10 informative pairs, no power
    assert g.explainers["lime"]["n_samples"] == 20
    kt = class_kruskal_table(f[f["explainer"] == "guided_backprop"])
    assert len(kt) == 2 and kt["p_value"].between(0, 1).all()
    corr = uncertainty_correlation(f)
    assert len(corr) == 4
    rows = metric_rows("toy", f, aucs=aucs, kruskal={"cv_mean": kt})
    assert {"cv_mean", "cv_global", "undefined_share", "std_mean", "ins_auc", "del_auc", "kruskal_p_cv_mean"} <= set(rows["metric"])
    assert not rows.loc[rows["metric"] == "del_auc", "higher_is_better"].any()
    assert rows["value"].notna().all() and not rows.duplicated(["experiment", "model", "method", "metric"]).any()
    # Kendall tau of explainer orderings: identical orderings -> 1, reversed -> -1
    tab = pd.DataFrame([[1.0, 2.0, 3.0], [0.5, 0.9, 4.0], [3.0, 2.0, 1.0]], index=["a", "b", "c"], columns=["g", "i", "l"])
    tmin, pairs = explainer_order_stability(tab)
    assert tmin == pytest.approx(-1.0) and pairs.loc[0, "tau"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="`explainers` is empty"):
        explanation_grid(reals, x, {})
    with pytest.raises(ValueError, match="`coalitions`"):
        explanation_grid(reals, x, ex, coalitions="some")
    with pytest.raises(ValueError, match="at least 2 UE rows"):
        explainer_order_stability(tab.iloc[:1])
    with pytest.raises(ValueError, match="`aucs` must be a DataFrame"):
        ranking_tests(pd.DataFrame({"a": [1]}))


# ------------------------------------------------------------------------------- true-logit variant (U4)
def _wrong_realisations():
    """MC-Dropout realisations of a 3-class CNN, 12 images and labels chosen so that some images have
    realisations that predict another class and others have none."""
    r = sample_realisations(cnn(p=0.5), 4, generator=gen(0))
    x = torch.rand(12, 1, 6, 6, generator=gen(11))
    out = r.predict(x)
    y = torch.softmax(out, -1).mean(0).argmax(-1)
    # images 0-5: label = the class most realisations predict; 6-11: a class no realisation predicts
    pred = out.argmax(-1)
    for i in range(6, 12):
        y[i] = next(c for c in range(3) if not (pred[:, i] == c).any()) if len(set(pred[:, i].tolist())) < 3 else y[i]
    return r, x, y, out


def test_true_logit_distribution_equals_the_full_recomputation():
    from xcal_core.uq import true_logit_distribution

    r, x, y, _ = _wrong_realisations()
    for method, kw in [("guided_backprop", {}), ("integrated_gradients", {"steps": 6})]:
        d, tg = explanation_distribution(r, x, "predicted", method, return_targets=True, **kw)
        ref = explanation_distribution(r, x, "true", method, labels=y, **kw)
        fast = true_logit_distribution(r, x, y, method, d, tg, **kw)
        assert torch.allclose(fast, ref, atol=1e-6), method
        same = (tg == y[None])
        assert torch.equal(fast[same], d[same])  # untouched where the realisation predicts the label
    with pytest.raises(ValueError, match="`pred_targets`"):
        true_logit_distribution(r, x, y, "guided_backprop", d, tg[:, :3])


def test_true_logit_agreement_only_on_images_where_it_can_differ():
    from xcal_core.uq import true_logit_agreement, wrong_realisation_images

    r, x, y, out = _wrong_realisations()
    qualify = wrong_realisation_images(out, y)
    assert torch.equal(qualify, (out.argmax(-1) != y).any(0))
    assert 0 < int(qualify.sum()) < 12
    a = true_logit_agreement({"mc_dropout": r}, x, y, {"guided_backprop": {}}, outputs={"mc_dropout": out}, n_images=50)
    # only qualifying images, each with a share of wrong realisations > 0
    assert set(a["index"]) == set(torch.nonzero(qualify).flatten().tolist())
    assert (a["wrong_share"] > 0).all() and a["rho"].between(-1, 1).all()
    assert (a["n_available"] == int(qualify.sum())).all()
    capped = true_logit_agreement({"mc_dropout": r}, x, y, {"guided_backprop": {}}, n_images=2)
    assert capped["index"].tolist() == torch.nonzero(qualify).flatten()[:2].tolist()
    # nobody mispredicts: no rows at all (an agreement of 1 there would prove nothing)
    none = true_logit_agreement({"mc_dropout": r}, x[:1], out.argmax(-1)[0, :1], {"guided_backprop": {}})
    if not (out.argmax(-1)[:, 0] != out.argmax(-1)[0, 0]).any():
        assert len(none) == 0


def test_predictive_scores_and_class_error_rates():
    from xcal_core.metrics import ece, nll
    from xcal_core.uq import class_error_rates, predictive_scores

    logits = torch.randn(3, 50, 4, generator=gen(12))
    y = torch.randint(0, 4, (50,), generator=gen(13))
    sc = predictive_scores({"a": logits}, y)
    pm = torch.softmax(logits.double(), -1).mean(0).float()
    assert sc.loc["a", "accuracy"] == pytest.approx(float((pm.argmax(1) == y).float().mean()))
    assert sc.loc["a", "nll"] == pytest.approx(nll(pm, y)) and sc.loc["a", "ece"] == pytest.approx(ece(pm, y))
    perfect = torch.nn.functional.one_hot(y, 4).float()[None].repeat(2, 1, 1) * 30
    assert predictive_scores({"p": perfect}, y).loc["p", "accuracy"] == 1.0
    err = class_error_rates(perfect, y)
    assert (err == 0).all()
    reg = predictive_scores({"r": torch.tensor([[[1.0], [2.0]], [[3.0], [2.0]]])}, torch.tensor([2.0, 4.0]))
    assert reg.loc["r", "rmse"] == pytest.approx(math.sqrt(2.0)) and reg.loc["r", "mean_std"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="`outputs` is empty"):
        predictive_scores({}, y)


# ------------------------------------------------------------------------------- diagnostics
def test_pool_features_and_pooled_cv_tables():
    from xcal_core.uq import explanation_grid, pool_features, pooled_cv_tables

    d = torch.arange(2 * 1 * 1 * 6 * 6, dtype=torch.float32).reshape(2, 1, 1, 6, 6) - 30
    pooled = pool_features(d, MASK)
    assert pooled.shape == (2, 1, 9)
    for c in range(9):
        assert torch.allclose(pooled[:, 0, c], d.abs()[:, 0, 0][:, MASK == c].sum(1))
    # maps constant within equal-sized cells (LIME's): pooling leaves the per-image CV unchanged
    reals = {"ensemble": sample_realisations([cnn(seed=1), cnn(seed=2), cnn(seed=3)])}
    x = torch.rand(5, 1, 6, 6, generator=gen(9))
    g = explanation_grid(reals, x, {"guided_backprop": {}, "lime": {"n_samples": 20, "feature_mask": MASK}},
                         channel_reduce="sum", generator=gen(1))
    tabs = pooled_cv_tables(g, MASK)
    for s in ("cv_mean", "cv_global"):
        assert tabs[s].shape == (1, 2)
        assert tabs[s].loc["ensemble", "lime"] == pytest.approx(g.cv_table(s).loc["ensemble", "lime"], rel=1e-5)
    # pixel maps: pooling to 9 cells averages within cells, the ratio of totals cannot grow
    assert tabs["cv_global"].loc["ensemble", "guided_backprop"] <= g.cv_table("cv_global").loc["ensemble", "guided_backprop"] + 1e-6
    with pytest.raises(ValueError, match="`feature_mask`"):
        pool_features(d, MASK[:5])


def test_top_ranked_share_known_answer():
    from xcal_core.uq import top_ranked_share

    maps = torch.tensor([[4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 3.0, 4.0]])
    region = torch.tensor([[True, True, False, False], [True, True, False, False]])
    assert top_ranked_share(maps, region, 0.5).tolist() == [1.0, 0.0]
    assert top_ranked_share(maps, region, 1.0).tolist() == [0.5, 0.5]
    assert top_ranked_share(maps, region, 0.1).tolist() == [1.0, 0.0]  # at least one feature
    with pytest.raises(ValueError, match="`region`"):
        top_ranked_share(maps, region.float(), 0.5)
    with pytest.raises(ValueError, match="`fraction`"):
        top_ranked_share(maps, region, 0.0)
