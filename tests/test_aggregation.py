"""Optimized aggregation: normalization, simplex QP (exact vs cvxpy vs brute force), Gram matrices vs the
metrics they encode, Theorem 4.2, strategies, held-out evaluation, errors."""

import warnings

import pytest
import torch
from torch import nn

from xcal_core.aggregation import (
    agg_mean,
    agg_var,
    aggregate,
    ambiguity_decomposition,
    combine_grams,
    evaluate_aggregations,
    explanation_stack,
    faith_samples,
    infidelity_gram,
    normalize_attributions,
    project_simplex,
    sensitivity_gram,
    simplex_objective,
    solve_simplex_qp,
    solve_simplex_qp_exact,
)
from xcal_core.metrics import avg_sensitivity, infidelity, random_masks, uniform_noise


def saliency(model, x, target):
    x = x.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model(x).gather(1, target[:, None]).sum(), x)
    return g


def input_x_gradient(model, x, target):
    return saliency(model, x, target) * x


def relu_gradient(model, x, target):
    return saliency(model, x, target).clamp_min(0)


METHODS = {"saliency": saliency, "ixg": input_x_gradient, "relu_grad": relu_gradient}


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 3)).eval()
    x = torch.rand(5, 2, 6, 6, generator=torch.Generator().manual_seed(1))
    y = model(x).argmax(1)
    return model, x, y


def _random_psd(B, k, rank, seed):
    A = torch.randn(B, rank, k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return A.transpose(1, 2) @ A / rank


# ------------------------------------------------------------------------------------- normalization


def test_normalize_constant_and_zero_maps_without_nan():
    a = torch.zeros(3, 2, 4, 4)
    a[1] = 0.7
    a[2, 0, 1, 1] = -2.0
    for scale in ("max", "minmax"):
        out = normalize_attributions(a, scale=scale)
        assert out.shape == (3, 4, 4) and torch.isfinite(out).all()
        assert torch.all(out[0] == 0)
    assert torch.all(normalize_attributions(a, scale="minmax")[1] == 0)  # constant map -> zeros
    assert torch.allclose(normalize_attributions(a)[1], torch.ones(4, 4))  # max scaling: constant -> ones
    out = normalize_attributions(a)
    assert float(out[2].max()) == 1.0 and float(out[2].min()) == 0.0
    # channel sum happens before |.|: opposite channels cancel; abs_sum does not
    b = torch.stack([torch.ones(4, 4), -torch.ones(4, 4)])[None]
    assert torch.all(normalize_attributions(b, reduce="sum", scale="none") == 0)
    assert torch.all(normalize_attributions(b, reduce="abs_sum", scale="none") == 2)
    with pytest.raises(ValueError, match="scale"):
        normalize_attributions(a, scale="l2")
    with pytest.raises(ValueError, match="NaN"):
        normalize_attributions(torch.full((1, 1, 2, 2), float("nan")))


# ----------------------------------------------------------------------------------------------- QP


def test_exact_solver_matches_cvxpy_on_random_problems():
    M = _random_psd(12, 5, 8, 0)
    we = solve_simplex_qp_exact(M)
    wc = solve_simplex_qp(M, solver="CLARABEL")
    for w in (we, wc):
        assert torch.all(w >= 0) and torch.allclose(w.sum(1), torch.ones(12, dtype=torch.float64))
    oe, oc = simplex_objective(M, we), simplex_objective(M, wc)
    assert torch.all(oe <= oc + 1e-7 * oc.abs().clamp_min(1.0))
    assert torch.allclose(we, wc, atol=1e-4)


def test_exact_solver_matches_brute_force_grid_k3():
    M = _random_psd(4, 3, 2, 1)  # rank 2: nearly-degenerate objective
    grid = torch.tensor([(i, j, 200 - i - j) for i in range(201) for j in range(201 - i)], dtype=torch.float64) / 200
    brute = torch.einsum("gi,bij,gj->bg", grid, M, grid).min(1).values
    ours = simplex_objective(M, solve_simplex_qp_exact(M))
    assert torch.all(ours <= brute + 1e-12)
    assert torch.all(brute - ours < 1e-3 * brute.abs().max())


def test_rank_deficient_identical_methods_and_not_quite_psd():
    A = torch.randn(3, 10, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    A[..., 3] = A[..., 2]  # two identical methods
    M = A.transpose(1, 2) @ A
    w = solve_simplex_qp_exact(M)
    assert torch.allclose(w[:, 2], w[:, 3], atol=1e-6)  # the ridge splits ties evenly
    torch.testing.assert_close(simplex_objective(M, w), simplex_objective(M, solve_simplex_qp(M)), rtol=1e-6, atol=1e-9)
    # min eigenvalue -1e-6 * trace: cvxpy's quad_form would refuse (DCP); our factorized form solves it
    bad = M[0] - 1e-6 * torch.trace(M[0]) * torch.eye(4, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        wb = solve_simplex_qp(bad)
    assert torch.all(wb >= 0) and abs(float(wb.sum()) - 1) < 1e-9


def test_single_method_and_large_k_iterative_path():
    assert torch.equal(solve_simplex_qp_exact(torch.eye(1)), torch.ones(1, dtype=torch.float64))
    M = _random_psd(2, 14, 20, 3)  # k > 12: accelerated projected gradient
    w = solve_simplex_qp_exact(M)
    ref = solve_simplex_qp(M, solver="CLARABEL")
    torch.testing.assert_close(simplex_objective(M, w), simplex_objective(M, ref), rtol=1e-5, atol=1e-9)
    p = project_simplex(torch.tensor([[0.5, 2.0, -1.0]], dtype=torch.float64))
    torch.testing.assert_close(p, torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float64))


def test_cvxpy_failure_falls_back_to_exact_with_warning(monkeypatch):
    import cvxpy as cp

    def broken(self, *a, **k):
        raise cp.error.SolverError("solver exploded")

    monkeypatch.setattr(cp.Problem, "solve", broken)
    M = _random_psd(3, 4, 6, 4)
    with pytest.warns(RuntimeWarning, match="exact batched solver"):
        w = solve_simplex_qp(M)
    torch.testing.assert_close(w, solve_simplex_qp_exact(M))
    with pytest.raises(RuntimeError, match="did not solve"):
        solve_simplex_qp(M, fallback=False)


def test_qp_bad_inputs():
    with pytest.raises(ValueError, match="square"):
        solve_simplex_qp_exact(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="NaN"):
        solve_simplex_qp_exact(torch.full((2, 2), float("nan")))
    with pytest.raises(ValueError, match="solver"):
        solve_simplex_qp(torch.eye(2), solver="NOPE")


# ------------------------------------------------------------------------------- Gram matrices, Thm 4.2


def test_theorem_4_2_identity_on_random_grams():
    M = _random_psd(20, 6, 3, 5)
    w = project_simplex(torch.randn(20, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    t = ambiguity_decomposition(M, w)
    assert torch.all(t["residual"].abs() <= 1e-12 * t["weighted"].abs().max())
    assert torch.all(t["diversity"] >= -1e-12) and torch.all(t["aggregate"] <= t["weighted"] + 1e-12)


def test_sensitivity_gram_equals_squared_avg_sensitivity_of_the_aggregate(setup):
    model, x, y = setup
    noise = uniform_noise(7, tuple(x.shape), 0.1, generator=torch.Generator().manual_seed(6))
    G = sensitivity_gram(model, x, y, METHODS, noise=noise, batch_size=9)
    w = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)

    def aggregated(mm, xx, tt):
        return torch.einsum("k,nkhw->nhw", w.float(), explanation_stack(mm, xx, tt, METHODS))

    direct = avg_sensitivity(model, x, y, aggregated, noise=noise, norm="squared").double()
    torch.testing.assert_close(simplex_objective(G, w.expand(5, 3)), direct, rtol=1e-5, atol=1e-10)
    # Theorem 4.2 with the per-method terms measured directly
    singles = torch.stack([avg_sensitivity(model, x, y, lambda mm, xx, tt, i=i: explanation_stack(mm, xx, tt, METHODS)[:, i], noise=noise, norm="squared") for i in range(3)], 1).double()
    t = ambiguity_decomposition(G, w.expand(5, 3))
    torch.testing.assert_close(direct, (singles * w).sum(1) - t["diversity"], rtol=1e-5, atol=1e-10)


def test_infidelity_gram_equals_infidelity_of_the_aggregate(setup):
    model, x, y = setup
    maps = explanation_stack(model, x, y, METHODS)
    masks = random_masks(30, 5, (6, 6), 0.2, generator=torch.Generator().manual_seed(7))
    s, d = faith_samples(model, x, y, maps, masks=masks, baseline="zero")
    w = torch.tensor([0.6, 0.1, 0.3], dtype=torch.float64)
    agg = torch.einsum("k,nkhw->nhw", w.float(), maps)
    G0 = infidelity_gram(s, d, rescale=False)
    direct = infidelity(model, x, y, agg, masks=masks, baseline="zero", normalize=False).double()
    torch.testing.assert_close(simplex_objective(G0, w.expand(5, 3)), direct, rtol=1e-5, atol=1e-9)
    G, beta = infidelity_gram(s, d, return_beta=True)
    # with one Yeh factor per method, each single method's diagonal equals its normalized infidelity
    singles = torch.stack([infidelity(model, x, y, maps[:, i], masks=masks, baseline="zero") for i in range(3)], 1).double()
    torch.testing.assert_close(torch.diagonal(G, dim1=1, dim2=2), singles, rtol=1e-5, atol=1e-9)
    assert beta.shape == (5, 3)


def test_combine_grams_normalizes_each_term():
    A, B = _random_psd(2, 3, 5, 8), 1000 * _random_psd(2, 3, 5, 9)
    C = combine_grams([A, B])
    expected = 0.5 * A / torch.linalg.matrix_norm(A)[:, None, None] + 0.5 * B / torch.linalg.matrix_norm(B)[:, None, None]
    torch.testing.assert_close(C, expected)
    with pytest.raises(ValueError, match="lambdas"):
        combine_grams([A, B], [1.0])


# ------------------------------------------------------------------------------------------ strategies


def test_strategies_weights_on_simplex_and_robust_beats_every_single_in_sample(setup):
    model, x, y = setup
    res = {}
    for strategy in ("mean", "var", "robust", "faith", "opt"):
        res[strategy] = aggregate(model, x, y, METHODS, strategy, m=8, generator=torch.Generator().manual_seed(0), batch_size=16)
        assert res[strategy].maps.shape == (5, 6, 6)
    for s in ("mean", "robust", "faith", "opt"):
        w = res[s].weights
        assert torch.all(w >= 0) and torch.allclose(w.sum(1), torch.ones(5, dtype=torch.float64))
    assert torch.allclose(res["mean"].weights, torch.full((5, 3), 1 / 3, dtype=torch.float64))
    assert torch.isnan(res["var"].weights).all()
    torch.testing.assert_close(res["mean"].maps, agg_mean(res["mean"].individual))
    G = res["robust"].gram
    assert torch.all(res["robust"].objective <= torch.diagonal(G, dim1=1, dim2=2).min(1).values + 1e-12)
    Gf = res["faith"].gram
    assert torch.all(res["faith"].objective <= torch.diagonal(Gf, dim1=1, dim2=2).min(1).values + 1e-12)
    assert set(res["opt"].parts) == {"robust", "faith"}
    # the cvxpy path agrees with the exact path
    cv = aggregate(model, x, y, METHODS, "robust", m=8, generator=torch.Generator().manual_seed(0), batch_size=16, solver="cvxpy")
    torch.testing.assert_close(cv.objective, res["robust"].objective, rtol=1e-4, atol=1e-9)


def test_aggregating_copies_of_one_method_returns_it(setup):
    model, x, y = setup
    res = aggregate(model, x, y, {"a": saliency, "b": saliency}, "robust", m=3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(res.maps, explanation_stack(model, x, y, {"a": saliency})[:, 0])


def test_agg_var_damps_disagreement():
    maps = torch.tensor([[[1.0, 1.0]], [[1.0, 0.0]]]).view(1, 2, 2)  # feature 0 agreed, feature 1 not
    out = agg_var(maps, eps=0.1)
    assert float(out[0, 0]) == pytest.approx(10.0) and float(out[0, 1]) == pytest.approx(0.5 / 0.6)


def test_evaluate_matches_standalone_metrics(setup):
    model, x, y = setup
    res = aggregate(model, x, y, METHODS, "opt", m=6, generator=torch.Generator().manual_seed(1))
    ev = evaluate_aggregations(model, x, y, METHODS, {"agg_opt": res.weights, "agg_mean": torch.full((5, 3), 1 / 3)}, extra={"agg_var": agg_var}, m=9, baselines=("blur", "zero"), generator=torch.Generator().manual_seed(2))
    assert ev.names == ["saliency", "ixg", "relu_grad", "agg_opt", "agg_mean", "agg_var"]
    # single methods: same noise draws as avg_sensitivity with the same seed
    single = lambda mm, xx, tt: explanation_stack(mm, xx, tt, {"s": saliency})[:, 0]  # noqa: E731
    ref = avg_sensitivity(model, x, y, single, n_samples=9, radius=0.1, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(ev.sens_avg[:, 0], ref, rtol=1e-5, atol=1e-7)
    # infidelity: masks are drawn after the noise from the same generator
    g = torch.Generator().manual_seed(2)
    uniform_noise(9, tuple(x.shape), 0.1, generator=g)
    ref_inf = infidelity(model, x, y, res.maps, n_samples=9, generator=g)
    torch.testing.assert_close(ev.infidelity["blur"][:, 3], ref_inf, rtol=1e-5, atol=1e-9)
    # Theorem 4.2 on the fresh draws: direct aggregate sensitivity vs. weighted singles minus diversity
    t = ambiguity_decomposition(ev.gram_robust, res.weights)
    direct = ev.sens_avg_sq[:, 3].double()
    torch.testing.assert_close(direct, (ev.sens_avg_sq[:, :3].double() * res.weights).sum(1) - t["diversity"], rtol=1e-5, atol=1e-10)
    df = ev.to_frame(dataset="toy")
    assert set(df.metric) == {"sens_avg", "sens_max", "sens_avg_sq", "infidelity", "fcor", "infidelity_zero", "fcor_zero"} and (df.dataset == "toy").all()
    summ = ev.summary(["agg_opt", "saliency"])
    assert summ.loc["agg_opt", "infidelity"] == pytest.approx(float(ev.infidelity["blur"][:, 3].mean()), rel=1e-6)
    assert set(ev.per_image("fcor_zero", ["agg_var"])) == {"agg_var"}
    with pytest.raises(ValueError, match="metric"):
        ev.per_image("accuracy")


def test_aggregate_bad_inputs(setup):
    model, x, y = setup
    with pytest.raises(ValueError, match="at least 2"):
        aggregate(model, x, y, {"a": saliency}, "mean")
    with pytest.raises(ValueError, match="strategy"):
        aggregate(model, x, y, METHODS, "median")
    with pytest.raises(ValueError, match="`m`"):
        aggregate(model, x, y, METHODS, "robust", m=0)
    with pytest.raises(ValueError, match="NaN"):
        aggregate(model, x, y, {"a": saliency, "nan": lambda m, xx, t: torch.full_like(xx, float("nan"))}, "mean")
    with pytest.raises(ValueError, match="shaped like the input"):
        aggregate(model, x, y, {"a": saliency, "b": lambda m, xx, t: saliency(m, xx, t)[:, 0]}, "mean")
    with pytest.raises(ValueError, match="unknown explanation method"):
        aggregate(model, x, y, ["saliency", "no_such_method"], "mean")
    with pytest.raises(TypeError, match="methods"):
        aggregate(model, x, y, "saliency", "mean")


def test_make_methods_and_patch_mask(setup):
    from xcal_core.aggregation import METHOD_PRESETS, make_methods, patch_mask

    model, x, y = setup
    pm = patch_mask(6, 6, 2)
    assert pm.shape == (6, 6) and pm.unique().numel() == 9 and torch.all(pm[:2, :2] == 0) and pm[5, 5] == 8
    fns = make_methods(["saliency", "integrated_gradients", "occlusion", "feature_ablation"], patch=2, ig_steps=4)
    for name, fn in fns.items():
        a = fn(model, x, y)
        assert a.shape == x.shape and torch.isfinite(a).all(), name
    # feature ablation on 2x2 patches is constant inside every patch
    fa = fns["feature_ablation"](model, x, y)[:, 0]
    assert torch.allclose(fa[:, 0, 0], fa[:, 1, 1]) and torch.allclose(fa[:, 2, 3], fa[:, 3, 2])
    assert set(METHOD_PRESETS) >= {"vargrad", "gradcam", "kernel_shap"}
    with pytest.raises(ValueError, match="unknown method"):
        make_methods(["saliency", "magic"])
    with pytest.raises(ValueError, match="unique"):
        make_methods(["saliency", "saliency"])


def test_shared_gradient_pass_is_bit_identical(setup):
    """Preset Saliency + Input x Gradient share one gradient pass; maps, Grams and the pass count match the
    separate calls exactly (the fused path must not change any number)."""
    from xcal_core.aggregation import make_methods

    model, x, y = setup
    fused = make_methods(["saliency", "smoothgrad", "input_x_gradient"], noise_samples=3, generator=torch.Generator().manual_seed(3))
    plain_src = make_methods(["saliency", "smoothgrad", "input_x_gradient"], noise_samples=3, generator=torch.Generator().manual_seed(3))
    plain = {n: (lambda f: (lambda mdl, xx, tt: f(mdl, xx, tt)))(f) for n, f in plain_src.items()}  # no sharing attribute
    assert fused["saliency"].shared_gradient == ("gradient", None) and not hasattr(plain["saliency"], "shared_gradient")

    calls = {"n": 0}

    def count(mod, inp, out):
        calls["n"] += 1

    h = model[0].register_forward_hook(count)
    try:
        m_f = explanation_stack(model, x, y, fused)
        n_fused = calls["n"]
        calls["n"] = 0
        m_p = explanation_stack(model, x, y, plain)
        n_plain = calls["n"]
        calls["n"] = 0
        plain["input_x_gradient"](model, x, y)
        n_one = calls["n"]
    finally:
        h.remove()
    assert torch.equal(m_f, m_p)
    assert n_one >= 1 and n_plain - n_fused == n_one  # exactly the passes of one explanation call saved
    noise = uniform_noise(4, tuple(x.shape), 0.1, generator=torch.Generator().manual_seed(4))
    fused_gen, plain_gen = (torch.Generator().manual_seed(5) for _ in range(2))
    fused = make_methods(["saliency", "smoothgrad", "input_x_gradient"], noise_samples=3, generator=fused_gen)
    plain_src = make_methods(["saliency", "smoothgrad", "input_x_gradient"], noise_samples=3, generator=plain_gen)
    plain = {n: (lambda f: (lambda mdl, xx, tt: f(mdl, xx, tt)))(f) for n, f in plain_src.items()}
    G_f = sensitivity_gram(model, x, y, fused, noise=noise, batch_size=7)
    G_p = sensitivity_gram(model, x, y, plain, noise=noise, batch_size=7)
    assert torch.equal(G_f, G_p)


def test_all_zero_maps_get_no_weight(setup):
    from xcal_core.aggregation import nondegenerate

    model, x, y = setup
    zero = lambda m, xx, t: torch.zeros_like(xx)  # noqa: E731  (sensitivity 0: would win AGG_robust trivially)
    fns = {"saliency": saliency, "zero": zero, "ixg": input_x_gradient}
    res = aggregate(model, x, y, fns, "robust", m=4, generator=torch.Generator().manual_seed(0))
    assert torch.all(res.weights[:, 1] == 0) and torch.allclose(res.weights.sum(1), torch.ones(5, dtype=torch.float64))
    naive = aggregate(model, x, y, fns, "robust", m=4, generator=torch.Generator().manual_seed(0), exclude_degenerate=False)
    assert torch.allclose(naive.weights[:, 1], torch.ones(5, dtype=torch.float64))  # what the exclusion prevents
    assert nondegenerate(res.individual).tolist() == [[True, False, True]] * 5
    # the same mask through cvxpy and through the exact solver, and the all-disallowed fallback
    M = _random_psd(3, 4, 6, 10)
    allowed = torch.tensor([[True, False, True, True], [False, True, True, False], [True, True, True, True]])
    we, wc = solve_simplex_qp_exact(M, allowed=allowed), solve_simplex_qp(M, allowed=allowed)
    assert torch.all(we[~allowed] == 0) and torch.all(wc[~allowed] == 0)
    torch.testing.assert_close(simplex_objective(M, we), simplex_objective(M, wc), rtol=1e-5, atol=1e-9)
    with pytest.warns(RuntimeWarning, match="allow no method"):
        w = solve_simplex_qp_exact(M[:1], allowed=torch.zeros(1, 4, dtype=torch.bool))
    torch.testing.assert_close(w, solve_simplex_qp_exact(M[:1]))
    with pytest.raises(ValueError, match="allowed"):
        solve_simplex_qp_exact(M, allowed=torch.ones(2, 2, dtype=torch.bool))


def test_evaluate_strategies_equals_the_step_by_step_protocol(setup):
    from xcal_core.aggregation import evaluate_strategies, nondegenerate, subset_weights

    model, x, y = setup
    kw = dict(radius=0.1, share=0.25, blur_sigma=1.0, batch_size=7)
    ev, w = evaluate_strategies(model, x, y, METHODS, m_agg=4, m_eval=6, baselines=["blur", "zero"], agg_var_eps=0.2,
                                generator=torch.Generator().manual_seed(3), **kw)
    # the same steps by hand, drawing from one generator in the same order
    g = torch.Generator().manual_seed(3)
    maps = explanation_stack(model, x, y, METHODS, batch_size=7)
    grams = {"robust": sensitivity_gram(model, x, y, METHODS, m=4, radius=0.1, maps=maps, generator=g, batch_size=7),
             "faith": infidelity_gram(*faith_samples(model, x, y, maps, m=4, share=0.25, baseline="blur", blur_sigma=1.0, generator=g, batch_size=7))}
    ref_w = subset_weights(grams, allowed=nondegenerate(maps))
    ref_w["agg_mean"] = torch.full((len(x), 3), 1 / 3, dtype=torch.float64)
    ref = evaluate_aggregations(model, x, y, METHODS, ref_w, maps=maps, extra={"agg_var": lambda s: agg_var(s, 0.2)}, m=6,
                                baselines=["blur", "zero"], generator=g, **kw)
    assert ev.names == ref.names == [*METHODS, "agg_robust", "agg_faith", "agg_opt", "agg_mean", "agg_var"]
    for name in ref_w:
        torch.testing.assert_close(w[name], ref_w[name])
    torch.testing.assert_close(torch.as_tensor(ev.summary().values), torch.as_tensor(ref.summary().values))
    assert ev.summary().loc["agg_robust", "sens_avg_sq"] > 0
    with pytest.raises(ValueError, match="m_eval"):
        evaluate_strategies(model, x, y, METHODS, m_eval=1)
    with pytest.raises(ValueError, match="at least 2"):
        evaluate_strategies(model, x, y, {"a": saliency})


def _count_readbacks(monkeypatch):
    """Count tensor -> Python conversions (each one is a device synchronisation on a GPU)."""
    calls = {"n": 0}
    for attr in ("__bool__", "__int__", "__float__", "item", "tolist"):
        orig = getattr(torch.Tensor, attr)

        def counted(self, *a, _orig=orig, **k):
            calls["n"] += 1
            return _orig(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, attr, counted)
    return calls


def test_perturbation_loops_read_nothing_back_per_chunk(setup, monkeypatch):
    # the number of tensor -> Python read-backs must not grow with the number of chunks (GPU inner loops)
    model, x, y = setup
    counts = {}
    for bs in (64, 3):  # 1 chunk vs many chunks of the m * N perturbed inputs
        calls = _count_readbacks(monkeypatch)
        g = torch.Generator().manual_seed(0)
        maps = explanation_stack(model, x, y, METHODS, batch_size=bs)
        sensitivity_gram(model, x, y, METHODS, m=8, radius=0.1, maps=maps, generator=g, batch_size=bs)
        faith_samples(model, x, y, maps, m=8, share=0.25, baseline="zero", generator=g, batch_size=bs)
        avg_sensitivity(model, x, y, saliency, n_samples=8, radius=0.1, generator=g, batch_size=bs)
        infidelity(model, x, y, saliency(model, x, y), n_samples=8, generator=g, batch_size=bs)
        evaluate_aggregations(model, x, y, METHODS, {"agg_mean": torch.full((len(x), 3), 1 / 3, dtype=torch.float64)}, maps=maps,
                              extra={"agg_var": agg_var}, m=8, baselines=["blur", "zero"], blur_sigma=1.0, generator=g, batch_size=bs)
        counts[bs] = calls["n"]
        monkeypatch.undo()
    assert counts[3] == counts[64], counts


def test_deferred_nan_check_still_names_the_method(setup):
    model, x, y = setup
    calls = {"n": 0}

    def nan_when_perturbed(m, xx, t):  # finite on the clean inputs, NaN on the noisy ones
        calls["n"] += 1
        return saliency(m, xx, t) * (float("nan") if calls["n"] > 1 else 1.0)

    with pytest.raises(ValueError, match="method 'late_nan' returned NaN or inf"):
        sensitivity_gram(model, x, y, {"a": saliency, "late_nan": nan_when_perturbed}, m=3, batch_size=4)
    with pytest.raises(ValueError, match="`explain_fn` returned NaN or inf"):
        avg_sensitivity(model, x, y, lambda m, xx, t: saliency(m, xx, t) * float("nan"), attributions=saliency(model, x, y),
                        n_samples=2, batch_size=4)


# ------------------------------------------------------------- Theorem 4.2 on fresh draws, reported forms


def _evaluated(setup, m=12):
    model, x, y = setup
    g = torch.Generator().manual_seed(3)
    w = {"agg_robust": aggregate(model, x, y, METHODS, "robust", m=6, generator=g).weights,
         "agg_mean": torch.full((5, 3), 1 / 3, dtype=torch.float64)}
    ev = evaluate_aggregations(model, x, y, METHODS, w, m=m, baselines=("blur", "zero"), generator=g)
    return ev, w


def test_ambiguity_check_identity_in_both_forms_and_it_catches_wrong_maps(setup):
    from xcal_core.aggregation import ambiguity_check

    ev, w = _evaluated(setup)
    assert ev.faith_sums.shape == (5, 12, len(ev.names)) and ev.faith_deltas.shape == (5, 12)
    for form in ("squared_sensitivity", "infidelity"):
        t = ambiguity_check(ev, w, list(METHODS), form=form)
        assert len(t) == 10 and set(t.form) == {form}
        assert t.residual_rel.max() < 1e-5 and t.holds.all() and (t.diversity >= -1e-12).all()
    # planted bug: the aggregate's mask sums are not the weighted sums -> the identity must break
    bad = ev.faith_sums.clone()
    bad[..., ev.names.index("agg_mean")] *= 1.5
    import dataclasses
    t = ambiguity_check(dataclasses.replace(ev, faith_sums=bad), w, list(METHODS), form="infidelity")
    assert not t[t.strategy == "agg_mean"].holds.any() and t[t.strategy == "agg_robust"].holds.all()
    with pytest.raises(ValueError, match="form"):
        ambiguity_check(ev, w, list(METHODS), form="fcor")
    with pytest.raises(ValueError, match="faith_sums"):
        ambiguity_check(dataclasses.replace(ev, faith_sums=None), w, list(METHODS), form="infidelity")


def test_weighted_average_check_known_values_and_violations():
    import dataclasses

    from xcal_core.aggregation import EvaluationResult, weighted_average_check

    n = 2
    z = torch.zeros(n, 4)
    # columns: a, b, agg_ok (below its weighted average), agg_bad (above)
    sens = torch.tensor([[1.0, 3.0, 1.5, 2.5], [2.0, 2.0, 2.0, 2.5]])
    ev = EvaluationResult(["a", "b", "agg_ok", "agg_bad"], sens, z, z, {"blur": sens.clone()}, {"blur": z},
                          torch.zeros(n, 2, 2), torch.zeros(n, 2, 2), 5)
    w = {"agg_ok": torch.tensor([[0.5, 0.5], [0.5, 0.5]]), "agg_bad": torch.tensor([[0.5, 0.5], [1.0, 0.0]])}
    t = weighted_average_check(ev, w, ["a", "b"], metrics=("sens_avg",))
    ok, bad = t[t.strategy == "agg_ok"], t[t.strategy == "agg_bad"]
    assert list(ok.weighted) == [2.0, 2.0] and ok.improves.all()
    assert list(bad.excess) == pytest.approx([0.5, 0.5]) and not bad.improves.any()
    # a NaN single method with weight 0 does not spoil the weighted average; a NaN aggregate drops the row
    sens2 = sens.clone()
    sens2[1, 1] = float("nan")
    sens2[0, 3] = float("nan")
    t2 = weighted_average_check(dataclasses.replace(ev, sens_avg=sens2), w, ["a", "b"], metrics=("sens_avg",))
    assert list(t2[t2.strategy == "agg_bad"].weighted) == [2.0]
    with pytest.raises(ValueError, match="higher-is-better"):
        weighted_average_check(ev, w, ["a", "b"], metrics=("fcor",))
    with pytest.raises(ValueError, match="not evaluated"):
        weighted_average_check(ev, {"agg_x": w["agg_ok"]}, ["a", "b"])


def test_squared_form_is_never_violated_on_fresh_draws(setup):
    from xcal_core.aggregation import ambiguity_check, weighted_average_check

    ev, w = _evaluated(setup)
    sq = ambiguity_check(ev, w, list(METHODS))
    rep = weighted_average_check(ev, w, list(METHODS), metrics=("sens_avg_sq", "sens_avg", "infidelity"))
    # the squared absolute form is the theorem's: never violated
    assert rep[rep.metric == "sens_avg_sq"].improves.all() and sq.improves.all()
    assert set(rep.metric) == {"sens_avg_sq", "sens_avg", "infidelity"}


def test_standing_ranks_and_tests_against_the_runner_up():
    from xcal_core.aggregation import standing

    g = torch.Generator().manual_seed(0)
    base = torch.rand(40, generator=g)
    vals = {"agg": base, "close": base + 0.001 * torch.randn(40, generator=g), "far": base + 0.5}
    s = standing(vals, "agg")
    assert s.rank == 1 and s.n_candidates == 3 and s.best_other == "close"
    assert not s.lowest() and s.near_best()  # ahead of "close" only by noise
    s_far = standing(vals, "agg", among=["far"])
    assert s_far.lowest() and s_far.beats_best.share_less == 1.0 and "rank 1/2" in s_far.describe()
    s3 = standing(vals, "far")
    assert s3.rank == 3 and s3.best_ahead.significant() and not s3.near_best()
    hi = standing(vals, "far", higher_is_better=True)
    assert hi.rank == 1 and hi.lowest()
    nan = {"a": torch.tensor([float("nan")] * 12), "b": torch.zeros(12)}
    assert standing(nan, "a").rank == 2 and standing(nan, "b").beats_best.too_few
    with pytest.raises(ValueError, match="candidate"):
        standing(vals, "nope")
    with pytest.raises(ValueError, match="same length"):
        standing({"a": torch.zeros(3), "b": torch.zeros(4)}, "a")
    with pytest.raises(ValueError, match="at least one other"):
        standing({"a": torch.zeros(3)}, "a")


def test_zero_reference_methods_give_exactly_zero_on_black_pixels(setup):
    """The methods listed in ZERO_REFERENCE attribute nothing to a pixel that is 0 in every channel (their
    reference is the black image); the gradient-only ones do attribute to such pixels."""
    from xcal_core.aggregation import ZERO_REFERENCE, make_methods

    model, x, y = setup
    xz = x.clone()
    xz[:, :, :2, :] = 0.0  # two black rows = one row of 2x2 patches
    names = list(ZERO_REFERENCE) + ["saliency", "smoothgrad", "lime", "kernel_shap"]
    fns = make_methods(names, patch=2, ig_steps=4, noise_samples=3, shap_samples=24, shapley_perms=2,
                       generator=torch.Generator().manual_seed(0))
    for name in names:
        a = fns[name](model, xz, y)
        assert a.shape == x.shape and torch.isfinite(a).all(), name
        black = a[:, :, :2, :].abs().amax()
        if name in ZERO_REFERENCE:
            assert black == 0, f"{name} attributes {float(black):.3g} to black pixels"
    assert fns["saliency"](model, xz, y)[:, :, :2, :].abs().amax() > 0
    with pytest.raises(ValueError, match="shapley_perms"):
        make_methods(["shapley_sampling"], shapley_perms=0)


def test_evaluate_strategies_subsets_fit_on_the_same_draws(setup):
    from xcal_core.aggregation import evaluate_strategies, nondegenerate, subset_weights

    model, x, y = setup
    kw = dict(m_agg=4, m_eval=5, baselines=["blur"], batch_size=7)
    ev, w = evaluate_strategies(model, x, y, METHODS, subsets={"grad": ["saliency", "ixg"]},
                                generator=torch.Generator().manual_seed(4), **kw)
    assert ev.names == [*METHODS, "agg_robust", "agg_faith", "agg_opt", "agg_robust_grad", "agg_faith_grad",
                        "agg_opt_grad", "agg_mean", "agg_var"]
    assert torch.all(w["agg_robust_grad"][:, 2] == 0)
    torch.testing.assert_close(w["agg_robust_grad"].sum(1), torch.ones(len(x), dtype=torch.float64))
    # the full-set weights are unchanged by asking for subsets (same draws, same order)
    ev0, w0 = evaluate_strategies(model, x, y, METHODS, generator=torch.Generator().manual_seed(4), **kw)
    torch.testing.assert_close(w["agg_robust"], w0["agg_robust"])
    # in-sample, a superset is never worse: the full-set robust objective <= the subset's
    g = torch.Generator().manual_seed(4)
    maps = explanation_stack(model, x, y, METHODS, batch_size=7)
    G = sensitivity_gram(model, x, y, METHODS, m=4, maps=maps, generator=g, batch_size=7)
    assert torch.all(simplex_objective(G, w["agg_robust"]) <= simplex_objective(G, w["agg_robust_grad"]) + 1e-12)
    # return_grams hands back exactly these fitted matrices
    _, _, grams = evaluate_strategies(model, x, y, METHODS, generator=torch.Generator().manual_seed(4),
                                      return_grams=True, **kw)
    torch.testing.assert_close(grams["robust"], G)
    with pytest.raises(ValueError, match="subsets"):
        evaluate_strategies(model, x, y, METHODS, subsets={"bad": ["saliency", "nope"]}, **kw)
    with pytest.raises(ValueError, match="subsets"):
        evaluate_strategies(model, x, y, METHODS, subsets={"one": ["saliency"]}, **kw)


def test_standing_judge_three_verdicts():
    from xcal_core.aggregation import standing

    g = torch.Generator().manual_seed(1)
    base = torch.rand(40, generator=g)
    clear = {"agg": base, "other": base + 0.3}
    assert standing(clear, "agg").judge() == {"verdict": "holds", "reason": None}
    j = standing(clear, "other").judge(why="a planted gap")
    assert j["verdict"] == "fails" and "agg beats other" in j["reason"] and j["reason"].endswith(": a planted gap")
    assert standing(clear, "other").judge("near_best")["verdict"] == "fails"
    noisy = {"agg": base, "other": base + 0.01 * torch.randn(40, generator=g)}
    first = "agg" if base.mean() <= noisy["other"].mean() else "other"
    second = "other" if first == "agg" else "agg"
    assert standing(noisy, first).judge()["verdict"] == "inconclusive"
    assert standing(noisy, second).judge()["verdict"] == "inconclusive"
    assert standing(noisy, second).judge("near_best")["verdict"] == "holds"
    few = {"a": torch.arange(5.0), "b": torch.arange(5.0) + 1}
    assert "too few" in standing(few, "a").judge()["reason"]
    with pytest.raises(ValueError, match="criterion"):
        standing(clear, "agg").judge("lowest")


def test_candidate_maps_singles_baselines_and_weighted():
    from xcal_core.aggregation import candidate_maps

    maps = torch.rand(3, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    w = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]], dtype=torch.float64)
    out = candidate_maps(maps, ["a", "b"], {"agg_robust": w}, var_eps=0.2)
    assert list(out) == ["a", "b", "agg_mean", "agg_var", "agg_robust"]
    torch.testing.assert_close(out["agg_robust"][0], maps[0, 0])
    torch.testing.assert_close(out["agg_robust"][1], maps[1].mean(0))
    torch.testing.assert_close(out["agg_var"], agg_var(maps, 0.2))
    with pytest.raises(ValueError, match="names"):
        candidate_maps(maps, ["a"])
    with pytest.raises(ValueError, match="clashes"):
        candidate_maps(maps, ["a", "b"], {"a": w})


def test_fitted_form_matches_the_reported_metric_for_single_methods(setup):
    from xcal_core.aggregation import fitted_form

    ev, w = _evaluated(setup)
    rob = fitted_form(ev, {"agg_robust": w["agg_robust"]}, list(METHODS))
    # squared sensitivity: the aggregate's direct held-out value equals w^T G w (identity), singles their own
    torch.testing.assert_close(rob["agg_robust"], ev.sens_avg_sq[:, ev.names.index("agg_robust")].double(),
                               rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(rob["ixg"], ev.sens_avg_sq[:, 1].double(), rtol=1e-5, atol=1e-9)
    fa = fitted_form(ev, {"agg_faith": w["agg_mean"]}, list(METHODS), objective="faith")
    # one Yeh factor per method: a single method's fitted form is its reported (Yeh-rescaled) INFD
    torch.testing.assert_close(fa["saliency"], ev.infidelity["blur"][:, 0].double(), rtol=1e-4, atol=1e-9)
    assert list(fa) == [*METHODS, "agg_faith"] and torch.all(fa["agg_faith"] >= 0)
    with pytest.raises(ValueError, match="objective"):
        fitted_form(ev, {}, list(METHODS), objective="fcor")
    with pytest.raises(ValueError, match="shape"):
        fitted_form(ev, {"bad": torch.ones(5, 2)}, list(METHODS))
