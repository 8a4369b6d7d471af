"""AGG_mean / AGG_var / AGG_robust / AGG_faith / AGG_opt and their held-out evaluation.

``aggregate`` computes prediction-specific convex weights of k normalized attribution maps by solving a
simplex QP per input (Decker et al., ICML 2024): AGG_robust minimizes squared Average-Sensitivity,
AGG_faith minimizes Infidelity (blur masks over 20 % of the positions, logits, one Yeh factor per
method), AGG_opt minimizes both, each term divided by its Frobenius norm. ``evaluate_aggregations``
scores single methods and aggregates on *fresh* perturbations (m_eval draws) with frozen weights,
re-using one set of perturbed explanations and masked forward passes for every candidate.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from .._validation import check_choice, check_int, check_positive, check_tensor, model_device
from ..metrics.faithfulness import correlation_from_samples, infidelity_from_samples
from ..metrics.robustness import _check_model, _check_x, _targets
from .gram import (
    _normalize_kwargs,
    _perturbed_pass,
    combine_grams,
    explanation_stack,
    faith_samples,
    infidelity_gram,
    resolve_methods,
    sensitivity_gram,
)
from .qp import simplex_objective, solve_simplex_qp, solve_simplex_qp_exact

__all__ = [
    "nondegenerate",
    "agg_mean", "agg_var", "aggregate", "AggregationResult", "evaluate_aggregations", "EvaluationResult", "STRATEGIES",
    "weighted_maps", "candidate_maps", "subset_weights", "generalization_gap", "ambiguity_check", "weighted_average_check", "fitted_form",
    "evaluate_strategies",
]

STRATEGIES = ("mean", "var", "robust", "faith", "opt")


def _check_stack(maps: Any) -> torch.Tensor:
    t = check_tensor(maps, "maps", ndim=(3, 4, 5))
    if t.shape[1] < 1:
        raise ValueError(f"`maps` must hold k >= 1 maps per sample (N, k, ...), got shape {tuple(t.shape)}")
    return t


def agg_mean(maps: Any) -> torch.Tensor:
    """AGG_mean: the uniform average of k maps.

    Args:
        maps: (N, k, *grid) normalized maps.

    Returns:
        float32 (N, *grid).
    """
    return _check_stack(maps).mean(1)


def agg_var(maps: Any, eps: float = 0.1, indices: Sequence[int] | None = None) -> torch.Tensor:
    """AGG_var (Rieger & Hansen 2019, as written in the paper): ``mean_i phi^i / (sigma + eps)``.

    ``sigma`` is the feature-wise standard deviation across the k methods (population, ddof = 0), so
    features where the methods disagree are damped. (The released code uses the variance with ddof = 1
    and eps = 0.226; we follow the paper's formula.)

    Args:
        maps: (N, k, *grid) normalized maps (k >= 2).
        eps: stabilizer > 0.
        indices: optional subset of the k methods to aggregate (positions along dim 1).

    Returns:
        float32 (N, *grid), non-negative for non-negative maps (not rescaled to [0, 1]).
    """
    t = _check_stack(maps)
    check_positive(eps, "eps")
    return _agg_var(t, eps, indices)


def _agg_var(t: torch.Tensor, eps: float = 0.1, indices: Sequence[int] | None = None) -> torch.Tensor:
    """:func:`agg_var` without input checks (they read values back from the device): for chunk loops."""
    if indices is not None:
        t = t[:, torch.as_tensor(list(indices), device=t.device)]
    return t.mean(1) / (t.std(1, unbiased=False) + eps)


def _unchecked(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """``agg_var`` / ``agg_mean`` (also as ``functools.partial``) without their per-call input checks, for
    the chunk loop of :func:`evaluate_aggregations`: the stacks it passes are normalized maps whose
    finiteness the pass checks once. Other functions are returned as they are."""
    base, kw = (fn.func, dict(fn.keywords)) if isinstance(fn, functools.partial) and not fn.args else (fn, {})
    if base is agg_var:
        check_positive(kw.get("eps", 0.1), "eps")
        return functools.partial(_agg_var, **kw)
    if base is agg_mean and not kw:
        return lambda t: t.mean(1)
    return fn


@dataclass
class AggregationResult:
    """Output of :func:`aggregate`.

    Attributes:
        maps: (N, *grid) aggregated maps.
        weights: (N, k) float64 convex weights (uniform for "mean"; NaN for "var", which is not a convex
            combination).
        methods: the k method names, in weight order.
        individual: (N, k, *grid) the normalized maps of the single methods.
        gram: (N, k, k) the QP matrix (None for "mean" / "var").
        objective: (N,) in-sample objective ``w^T gram w`` (None for "mean" / "var").
        seconds: wall time of the call.
        parts: named Gram matrices used (e.g. {"robust": ..., "faith": ...} for "opt").
    """

    maps: torch.Tensor
    weights: torch.Tensor
    methods: list[str]
    individual: torch.Tensor
    gram: torch.Tensor | None = None
    objective: torch.Tensor | None = None
    seconds: float = 0.0
    parts: dict[str, torch.Tensor] = field(default_factory=dict)


def _solve(G: torch.Tensor, solver: str, allowed: Any = None) -> torch.Tensor:
    return solve_simplex_qp_exact(G, allowed=allowed) if solver == "exact" else solve_simplex_qp(G, allowed=allowed)


def nondegenerate(maps: Any) -> torch.Tensor:
    """Bool (N, k): True where a method's normalized map is not all zero.

    An all-zero map (e.g. Grad-CAM after its ReLU when no evidence is positive) has zero sensitivity and
    would win AGG_robust trivially while explaining nothing (spec B11.6), so strategies give it weight 0.

    Args:
        maps: (N, k, *grid) normalized maps.
    """
    t = _check_stack(maps)
    return t.reshape(*t.shape[:2], -1).abs().amax(-1) > 0


def aggregate(
    model: torch.nn.Module,
    x: Any,
    target: Any,
    methods: Any,
    strategy: str = "opt",
    *,
    m: int = 50,
    m_faith: int | None = None,
    radius: float = 0.1,
    share: float = 0.2,
    baseline: Any = "blur",
    blur_sigma: float | None = None,
    score: str = "logit",
    feature_mask: Any = None,
    normalize: Mapping[str, Any] | None = None,
    rescale: bool = True,
    var_eps: float = 0.1,
    solver: str = "exact",
    maps: Any = None,
    exclude_degenerate: bool = True,
    generator: torch.Generator | None = None,
    batch_size: int = 256,
) -> AggregationResult:
    """Aggregate k attribution methods per input with one of the paper's strategies.

    Args:
        model: classifier returning logits (N, K); inputs move to its device.
        x: inputs (N, C, H, W) images in [0, 1] (or (N, D) tabular rows; "faith"/"opt" then need a
            non-blur ``baseline``).
        target: class per sample (int or int64 (N,)), usually the predicted class.
        methods: >= 2 methods, see :func:`~xcal_core.aggregation.resolve_methods`.
        strategy: ``"mean"``, ``"var"``, ``"robust"``, ``"faith"`` or ``"opt"``.
        m: metric samples used to estimate the objective (noise draws for the robust term), >= 1
            (paper: m_agg = 50).
        m_faith: masks for the faith term (default ``m``).
        radius: noise half-width for the robust term (paper: 0.1).
        share: mask area for the faith term (paper: 0.2).
        baseline, blur_sigma, score, feature_mask: mask options of the faith term (paper: blur, logits).
        normalize: map normalization options (default: channel sum, ``|.|``, max scaling).
        rescale: Yeh rescaling per method in the faith term.
        var_eps: eps of :func:`agg_var`.
        solver: ``"exact"`` (batched enumeration, default) or ``"cvxpy"``.
        maps: optional precomputed ``explanation_stack`` (N, k, *grid) of x (saves one pass).
        exclude_degenerate: give all-zero maps weight 0 in the QP strategies (see :func:`nondegenerate`).
        generator: torch generator for noise and masks (noise first, then masks).
        batch_size: perturbed inputs per explanation call / forward pass.

    Returns:
        :class:`AggregationResult`.

    References:
        Decker, Bhattarai, Gu, Tresp, Buettner. Provably better explanations with optimized aggregation
        of feature attributions. ICML 2024.
    """
    t0 = time.perf_counter()
    check_choice(strategy, "strategy", STRATEGIES)
    check_choice(solver, "solver", ("exact", "cvxpy"))
    m = check_int(m, "m", low=1)
    m_faith = m if m_faith is None else check_int(m_faith, "m_faith", low=1)
    model = _check_model(model)
    fns = resolve_methods(methods)
    k = len(fns)
    if k < 2:
        raise ValueError(f"`methods` must hold at least 2 explanation methods to aggregate, got {k}")
    xd = _check_x(x).to(model_device(model))
    n = xd.shape[0]
    tgt = _targets(target, n, xd.device)
    if maps is None:
        maps = explanation_stack(model, xd, tgt, fns, normalize=normalize, batch_size=batch_size)
    else:
        maps = check_tensor(maps, "maps").to(xd.device)
        if maps.shape[:2] != (n, k):
            raise ValueError(f"`maps` must have shape (N, k, ...) = ({n}, {k}, ...), got {tuple(maps.shape)}")
    names = list(fns)
    parts: dict[str, torch.Tensor] = {}
    if strategy == "var":
        out = agg_var(maps, var_eps)
        w = torch.full((n, k), math.nan, dtype=torch.float64)
        return AggregationResult(out, w, names, maps, seconds=time.perf_counter() - t0)
    if strategy == "mean":
        w = torch.full((n, k), 1.0 / k, dtype=torch.float64, device=xd.device)
    else:
        if strategy in ("robust", "opt"):
            parts["robust"] = sensitivity_gram(model, xd, tgt, fns, m=m, radius=radius, maps=maps, generator=generator, normalize=normalize, batch_size=batch_size)
        if strategy in ("faith", "opt"):
            s, d = faith_samples(model, xd, tgt, maps, m=m_faith, share=share, baseline=baseline, blur_sigma=blur_sigma, score=score, feature_mask=feature_mask, generator=generator, batch_size=batch_size)
            parts["faith"] = infidelity_gram(s, d, rescale=rescale)
        G = combine_grams([parts["robust"], parts["faith"]]) if strategy == "opt" else parts[strategy]
        w = _solve(G, solver, nondegenerate(maps) if exclude_degenerate else None).to(xd.device)
    agg = torch.einsum("nk,nkp->np", w.to(maps.dtype), maps.reshape(n, k, -1)).view(n, *maps.shape[2:])
    gram = None if strategy == "mean" else G
    obj = None if gram is None else simplex_objective(gram, w)
    return AggregationResult(agg, w, names, maps, gram, obj, time.perf_counter() - t0, parts)


@dataclass
class EvaluationResult:
    """Held-out metrics of S candidate maps per sample (see :func:`evaluate_aggregations`).

    Attributes:
        names: the S candidate names (single methods first, then the aggregates).
        sens_avg, sens_max: (N, S) relative Average-/Max-Sensitivity (Quantus' default norm).
        sens_avg_sq: (N, S) squared Average-Sensitivity (the optimized objective).
        infidelity, fcor: baseline name -> (N, S) Infidelity (Yeh-rescaled) and Faithfulness Correlation.
        gram_robust: (N, k, k) fresh squared-sensitivity Gram of the k methods.
        gram_faith: (N, k, k) fresh Infidelity Gram (first baseline).
        m: number of fresh draws.
        faith_sums, faith_deltas: the fresh Infidelity samples of the first baseline: (N, m, S) attribution
            mass of every candidate in every mask and (N, m) score drops (None when not kept).
    """

    names: list[str]
    sens_avg: torch.Tensor
    sens_max: torch.Tensor
    sens_avg_sq: torch.Tensor
    infidelity: dict[str, torch.Tensor]
    fcor: dict[str, torch.Tensor]
    gram_robust: torch.Tensor
    gram_faith: torch.Tensor
    m: int
    faith_sums: torch.Tensor | None = None
    faith_deltas: torch.Tensor | None = None

    def _columns(self) -> dict[str, torch.Tensor]:
        cols = {"sens_avg": self.sens_avg, "sens_max": self.sens_max, "sens_avg_sq": self.sens_avg_sq}
        for i, (b, v) in enumerate(self.infidelity.items()):
            cols["infidelity" if i == 0 else f"infidelity_{b}"] = v
        for i, (b, v) in enumerate(self.fcor.items()):
            cols["fcor" if i == 0 else f"fcor_{b}"] = v
        return cols

    def per_image(self, metric: str, names: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """Candidate name -> (N,) values of one metric (``"sens_avg"``, ``"infidelity"``, ``"fcor_zero"``, ...)."""
        cols = self._columns()
        check_choice(metric, "metric", list(cols))
        names = self.names if names is None else list(names)
        missing = [n for n in names if n not in self.names]
        if missing:
            raise ValueError(f"unknown candidate(s) {missing}; evaluated: {self.names}")
        return {n: cols[metric][:, self.names.index(n)] for n in names}

    def summary(self, names: Sequence[str] | None = None):
        """Mean over images: pandas DataFrame, rows = candidates, columns = metrics (first baseline unsuffixed)."""
        import pandas as pd

        names = self.names if names is None else list(names)
        idx = [self.names.index(n) for n in names]
        return pd.DataFrame({k: torch.nanmean(v[:, idx].double(), dim=0).cpu().numpy() for k, v in self._columns().items()}, index=names)

    def to_frame(self, **columns: Any):
        """Long-format pandas DataFrame: one row per (sample, candidate, metric); extra constant columns.

        Metric names: ``sens_avg``, ``sens_max``, ``sens_avg_sq``, ``infidelity`` / ``fcor`` (first baseline)
        and ``infidelity_<baseline>`` / ``fcor_<baseline>`` for the others.
        """
        import pandas as pd

        frames = []
        for metric, values in self._columns().items():
            v = values.detach().cpu().double().numpy()
            n, S = v.shape
            frames.append(pd.DataFrame({"sample": np.repeat(np.arange(n), S), "method": np.tile(self.names, n), "metric": metric, "value": v.reshape(-1)}))
        df = pd.concat(frames, ignore_index=True)
        for key, val in columns.items():
            df[key] = val
        return df


def evaluate_aggregations(
    model: torch.nn.Module,
    x: Any,
    target: Any,
    methods: Any,
    weights: Mapping[str, Any],
    *,
    maps: Any = None,
    extra: Mapping[str, Callable[[torch.Tensor], torch.Tensor]] | None = None,
    include_single: bool = True,
    m: int = 200,
    radius: float = 0.1,
    share: float = 0.2,
    baselines: Sequence[Any] = ("blur",),
    blur_sigma: float | None = None,
    score: str = "logit",
    feature_mask: Any = None,
    normalize: Mapping[str, Any] | None = None,
    generator: torch.Generator | None = None,
    batch_size: int = 256,
) -> EvaluationResult:
    """Held-out robustness and faithfulness of single methods and aggregates, all from one pass.

    The k methods are explained once on m fresh noisy copies of every input; each candidate's perturbed
    map is derived from them (weights are frozen: a weighted candidate at ``x + eps`` is
    ``sum_i w_i phi^i(x + eps)``; an ``extra`` candidate applies its function to the perturbed stack).
    Faithfulness uses m fresh masks per baseline, shared by all candidates.

    Args:
        model, x, target, methods, normalize, batch_size: as in :func:`aggregate`.
        weights: candidate name -> (N, k) convex weights (e.g. ``{"agg_robust": res.weights}``).
        maps: optional precomputed stack (N, k, *grid).
        extra: candidate name -> function ``stack (B, k, *grid) -> map (B, *grid)`` for non-linear
            aggregates (e.g. ``{"agg_var": agg_var}``).
        include_single: add the k single methods as candidates (named like the methods).
        m: fresh draws (paper: m_eval = 200).
        radius: noise half-width (paper: 0.1).
        share, blur_sigma, score, feature_mask: mask options.
        baselines: replacement baselines for Infidelity / FCOR, e.g. ``("blur", "zero", "mean")``.
        generator: torch generator (noise first, then masks per baseline).

    Returns:
        :class:`EvaluationResult`.
    """
    model = _check_model(model)
    fns_d = resolve_methods(methods)
    fns, names_k = list(fns_d.values()), list(fns_d)
    k = len(fns)
    norm_kw = _normalize_kwargs(normalize)
    m = check_int(m, "m", low=1)
    batch_size = check_int(batch_size, "batch_size", low=1)
    xd = _check_x(x).to(model_device(model))
    n = xd.shape[0]
    tgt = _targets(target, n, xd.device)
    if maps is None:
        maps = explanation_stack(model, xd, tgt, fns_d, normalize=normalize, batch_size=batch_size)
    maps = check_tensor(maps, "maps").to(xd.device)
    grid = tuple(maps.shape[2:])
    phi0 = maps.reshape(n, k, -1)

    W_list, names = [], []
    if include_single:
        W_list.append(torch.eye(k, dtype=torch.float32, device=xd.device).expand(n, k, k))
        names += names_k
    for name, w in weights.items():
        wt = check_tensor(w, f"weights[{name!r}]").to(xd.device)
        if tuple(wt.shape) != (n, k):
            raise ValueError(f"`weights[{name!r}]` must have shape ({n}, {k}), got {tuple(wt.shape)}")
        W_list.append(wt[:, None, :])
        names.append(name)
    W = torch.cat(W_list, dim=1) if W_list else torch.zeros(n, 0, k, device=xd.device)
    extra = {name: _unchecked(fn) for name, fn in (extra or {}).items()}
    names += list(extra)
    S = len(names)
    if S == 0:
        raise ValueError("nothing to evaluate: pass `weights`, `extra` or include_single=True")

    def candidates(stack: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:  # stack (B, k, P) -> (B, S, P)
        parts = [torch.einsum("bsk,bkp->bsp", W[rows], stack)]
        for fn in extra.values():
            parts.append(fn(stack.view(stack.shape[0], k, *grid)).reshape(stack.shape[0], 1, -1).to(stack.dtype))
        return torch.cat(parts, dim=1)

    all_rows = torch.arange(n, device=xd.device)
    c0 = candidates(phi0, all_rows)  # (N, S, P)
    c0_norm = c0.norm(dim=2)
    rel = torch.zeros(m, n, S, device=xd.device)
    sq = torch.zeros(m, n, S, dtype=torch.float64, device=xd.device)
    grams = torch.zeros(m, n, k, k, dtype=torch.float64, device=xd.device)

    def consume(i, j, mp):
        d = c0[i] - candidates(mp, i)
        nd = d.norm(dim=2)
        rel[j, i] = nd / c0_norm[i]
        sq[j, i] = nd.double() ** 2
        g = (phi0[i] - mp).double()
        grams[j, i] = g @ g.transpose(1, 2)

    _perturbed_pass(model, xd, tgt, fns, names_k, norm_kw, m, radius, None, generator, batch_size, consume)
    rel = rel.permute(1, 0, 2)
    sens_avg = torch.nanmean(rel, dim=1)
    sens_max = torch.where(torch.isnan(rel), torch.full_like(rel, -math.inf), rel).amax(1)
    sens_max = torch.where(torch.isinf(sens_max), torch.full_like(sens_max, math.nan), sens_max)

    infd, fcor = {}, {}
    gram_faith = None
    first: tuple[torch.Tensor, torch.Tensor] | None = None
    for b in baselines:
        key = b if isinstance(b, str) else f"{float(b):g}" if isinstance(b, (int, float)) else "tensor"
        s, dlt = faith_samples(model, xd, tgt, c0.view(n, S, *grid), m=m, share=share, baseline=b, blur_sigma=blur_sigma, score=score, feature_mask=feature_mask, generator=generator, batch_size=batch_size)
        infd[key] = infidelity_from_samples(s, dlt, normalize=True)
        fcor[key] = correlation_from_samples(s, dlt)
        if first is None:
            first = (s, dlt)
        if gram_faith is None and include_single:
            gram_faith = infidelity_gram(s[..., :k], dlt)
    if gram_faith is None:
        gram_faith = torch.full((n, k, k), math.nan, dtype=torch.float64)
    return EvaluationResult(names, sens_avg, sens_max, sq.permute(1, 0, 2).mean(1), infd, fcor, grams.mean(0), gram_faith, m,
                            *(first if first is not None else (None, None)))


def weighted_maps(maps: Any, weights: Any) -> torch.Tensor:
    """``sum_i w_i phi^i`` per sample.

    Args:
        maps: (N, k, *grid) normalized maps; weights: (N, k) convex weights.

    Returns:
        float32 (N, *grid).
    """
    t = _check_stack(maps)
    w = check_tensor(weights, "weights", ndim=2, dtype=None).to(t.device)
    if tuple(w.shape) != tuple(t.shape[:2]):
        raise ValueError(f"`weights` must have shape {tuple(t.shape[:2])}, got {tuple(w.shape)}")
    return torch.einsum("nk,nkp->np", w.to(t.dtype), t.reshape(*t.shape[:2], -1)).view(t.shape[0], *t.shape[2:])


def candidate_maps(maps: Any, names: Sequence[str], weights: Mapping[str, Any] | None = None, *,
                   var_eps: float = 0.1) -> dict[str, torch.Tensor]:
    """The maps of every candidate of the paper's tables: the single methods, AGG_mean, AGG_var and the
    weighted aggregates.

    Args:
        maps: (N, k, *grid) normalized maps of the k methods.
        names: the k method names, in stack order.
        weights: optional candidate name -> (N, k) convex weights (e.g. ``agg_robust``), each turned into
            :func:`weighted_maps`.
        var_eps: epsilon of :func:`agg_var`.

    Returns:
        dict name -> (N, *grid) float32 maps: the k methods, ``agg_mean``, ``agg_var``, then ``weights``'s
        names in their order.
    """
    t = _check_stack(maps)
    names = list(names)
    if len(names) != t.shape[1] or len(set(names)) != len(names):
        raise ValueError(f"`names` must be {t.shape[1]} distinct method names (one per map), got {names}")
    out = {name: t[:, i] for i, name in enumerate(names)}
    out["agg_mean"] = agg_mean(t)
    out["agg_var"] = agg_var(t, var_eps)
    for name, w in (weights or {}).items():
        if name in out:
            raise ValueError(f"`weights` name {name!r} clashes with a method or agg_mean / agg_var")
        out[name] = weighted_maps(t, w)
    return out


def subset_weights(grams: Mapping[str, Any], indices: Sequence[int] | None = None, *, allowed: Any = None, solver: str = "exact") -> dict[str, torch.Tensor]:
    """AGG_robust / AGG_faith / AGG_opt weights from precomputed Gram matrices, optionally on a subset of methods.

    Args:
        grams: ``{"robust": (N, K, K), "faith": (N, K, K)}`` (either may be missing; "opt" needs both).
        indices: methods to aggregate (positions in 0..K-1, >= 2 of them); None = all K. The weights of
            the other methods are 0, so the result can be evaluated against the full method stack.
        allowed: optional bool (N, K) of methods that may get weight (e.g. :func:`nondegenerate`).
        solver: ``"exact"`` or ``"cvxpy"``.

    Returns:
        dict ``"agg_robust" / "agg_faith" / "agg_opt"`` -> float64 (N, K) weights (the available ones).
    """
    check_choice(solver, "solver", ("exact", "cvxpy"))
    unknown = set(grams) - {"robust", "faith"}
    if unknown or not grams:
        raise ValueError(f"`grams` must have keys 'robust' and/or 'faith', got {sorted(grams)}")
    gs = {key: check_tensor(g, f"grams[{key!r}]", ndim=3, dtype=None).double() for key, g in grams.items()}
    K = next(iter(gs.values())).shape[-1]
    idx = list(range(K)) if indices is None else [int(i) for i in indices]
    if len(idx) < 2 or len(set(idx)) != len(idx) or min(idx) < 0 or max(idx) >= K:
        raise ValueError(f"`indices` must name at least 2 distinct methods in [0, {K - 1}], got {indices}")
    it = torch.as_tensor(idx)
    sub = {key: g[:, it[:, None], it[None, :]] for key, g in gs.items()}
    todo = dict(sub)
    if len(sub) == 2:
        todo["opt"] = combine_grams([sub["robust"], sub["faith"]])
    allow = None if allowed is None else torch.as_tensor(allowed).bool()[:, it]
    out = {}
    for key, G in todo.items():
        w = _solve(G, solver, allow)
        full = torch.zeros(G.shape[0], K, dtype=torch.float64, device=w.device)
        full[:, it.to(w.device)] = w
        out[f"agg_{key}"] = full
    return out


def generalization_gap(
    ms: Sequence[int],
    eval_gram: Any,
    *,
    per_draw_grams: Any = None,
    sums: Any = None,
    deltas: Any = None,
    rescale: bool = True,
    allowed: Any = None,
    solver: str = "exact",
) -> torch.Tensor:
    """Held-out excess objective of weights fitted on the first m metric samples (Theorem 4.3's quantity).

    For each m, ``w_m = argmin_simplex w^T G_m w`` with ``G_m`` estimated from the first m draws; the gap
    is ``w_m^T G_eval w_m - min_simplex w^T G_eval w`` on an independent, larger sample (G_eval).

    Args:
        ms: increasing sample counts, each <= the number of fitted draws.
        eval_gram: (N, k, k) Gram from fresh draws (e.g. ``EvaluationResult.gram_robust``).
        per_draw_grams: (N, m_max, k, k) per-draw robust Grams (``sensitivity_gram(..., per_draw=True)``), or
        sums, deltas: (N, m_max, k) and (N, m_max) Infidelity samples (``faith_samples``).
        rescale: Yeh rescaling for the Infidelity Gram.
        allowed: optional bool (N, k) of methods that may get weight (both fits and the optimum).
        solver: QP solver.

    Returns:
        float64 (len(ms), N) gaps (>= 0 up to solver tolerance).
    """
    G_eval = check_tensor(eval_gram, "eval_gram", ndim=3, dtype=None).double()
    if (per_draw_grams is None) == (sums is None):
        raise ValueError("pass either `per_draw_grams` or (`sums`, `deltas`)")
    if per_draw_grams is not None:
        draws = check_tensor(per_draw_grams, "per_draw_grams", ndim=4, dtype=None).double()
        m_max = draws.shape[1]
    else:
        if deltas is None:
            raise ValueError("`deltas` is required with `sums`")
        m_max = check_tensor(sums, "sums", ndim=3, dtype=None).shape[1]
    ms = [check_int(m, "ms", low=1, high=m_max) for m in ms]
    best = simplex_objective(G_eval, _solve(G_eval, solver, allowed))
    rows = []
    for m in ms:
        G = draws[:, :m].mean(1) if per_draw_grams is not None else infidelity_gram(sums[:, :m], deltas[:, :m], rescale=rescale)
        w = _solve(G.to(G_eval.device), solver, allowed)
        rows.append(simplex_objective(G_eval, w) - best)
    return torch.stack(rows)


def ambiguity_check(ev: EvaluationResult, weights: Mapping[str, Any], methods: Sequence[str], *, rtol: float = 1e-6,
                    form: str = "squared_sensitivity"):
    """Theorem 4.2's identity per image on the fresh draws of an evaluation (a check of the arithmetic).

    ``Q(phi^w)`` (measured directly from the aggregate's own perturbed maps or mask sums) must equal
    ``sum_i w_i Q(phi^i)`` (measured directly from each method's) minus the diversity (ambiguity) term
    ``sum_i w_i (e_i - w)^T G (e_i - w)`` computed from the fresh Gram ``G`` of the single methods.
    The identity holds for *any* weights on the simplex and any set of draws, so it cannot fail on
    data: a violation means the aggregate's maps were not the weighted maps, i.e. a bug. What it
    measures is the size of the ambiguity term, the gain of aggregating over averaging the metrics.

    Args:
        ev: :class:`EvaluationResult` with the single methods included (``include_single=True``).
        weights: candidate name -> (N, K) weights, each name evaluated in ``ev``.
        methods: the K method names in weight order.
        rtol: relative tolerance of the identity.
        form: the generalized L2 metric ``Q``: ``"squared_sensitivity"`` (``gamma_1 = I_d``,
            ``gamma_2 = phi(x + eps)``: ``ev.sens_avg_sq`` and ``ev.gram_robust``) or ``"infidelity"``
            (``gamma_1 = I^T`` a random mask, ``gamma_2 = f(x) - f(x_masked)``, without Yeh's rescaling,
            which is not linear in the map: from ``ev.faith_sums`` / ``ev.faith_deltas`` of the first
            baseline).

    Returns:
        pandas DataFrame, one row per (strategy, sample): ``form``, ``aggregate``, ``weighted``,
        ``diversity``, ``residual_rel`` = ``|aggregate - (weighted - diversity)| / weighted``,
        ``improves`` (aggregate <= weighted), ``holds`` (identity within rtol and improvement).

    References:
        Decker et al., ICML 2024, Theorem 4.2 (after Krogh & Vedelsby's ambiguity decomposition, 1994).
    """
    import pandas as pd
    from .gram import ambiguity_decomposition

    check_choice(form, "form", ("squared_sensitivity", "infidelity"))
    missing = [m for m in list(methods) + list(weights) if m not in ev.names]
    if missing:
        raise ValueError(f"not evaluated in `ev`: {missing}")
    cols = [ev.names.index(m) for m in methods]
    if form == "squared_sensitivity":
        per_candidate = ev.sens_avg_sq.double()
        gram = ev.gram_robust.double()
    else:
        if ev.faith_sums is None or ev.faith_deltas is None:
            raise ValueError("`ev` holds no Infidelity samples (faith_sums); evaluate with at least one baseline")
        sums, deltas = ev.faith_sums.double(), ev.faith_deltas.double().to(ev.faith_sums.device)
        per_candidate = ((sums - deltas[..., None]) ** 2).mean(1)  # (N, S): Q without rescaling
        gram = infidelity_gram(sums[..., cols], deltas, rescale=False)
    singles = per_candidate[:, cols]
    frames = []
    for name, w in weights.items():
        wt = check_tensor(w, f"weights[{name!r}]", ndim=2, dtype=None).double().to(singles.device)
        terms = ambiguity_decomposition(gram.to(singles.device), wt)
        direct = per_candidate[:, ev.names.index(name)]
        weighted = (singles * wt).sum(1)
        scale = weighted.abs().clamp_min(1e-300)
        resid = (direct - (weighted - terms["diversity"])).abs() / scale
        improves = direct <= weighted * (1 + rtol) + 1e-15
        frames.append(pd.DataFrame({
            "strategy": name, "form": form, "sample": np.arange(len(direct)), "aggregate": direct.cpu().numpy(),
            "weighted": weighted.cpu().numpy(), "diversity": terms["diversity"].cpu().numpy(),
            "residual_rel": resid.cpu().numpy(), "improves": improves.cpu().numpy(),
            "holds": ((resid <= rtol) & improves).cpu().numpy(),
        }))
    return pd.concat(frames, ignore_index=True)


def fitted_form(ev: EvaluationResult, weights: Mapping[str, Any], methods: Sequence[str], objective: str = "robust") -> dict[str, torch.Tensor]:
    """Held-out values of the single methods and of weighted aggregates in the form the weights were fitted in.

    The tables report Quantus' relative S_AVG and a per-map Yeh-rescaled INFD; AGG_robust minimizes the
    squared absolute sensitivity and AGG_faith the Infidelity with one Yeh factor per *method*. Scoring the
    fresh draws in the fitted form separates "the fit does not carry over to fresh draws" from "the reported
    form ranks differently".

    Args:
        ev: :class:`EvaluationResult` with the single methods included.
        weights: aggregate name -> (N, K) weights (e.g. ``{"agg_faith": w}``).
        methods: the K method names in weight order.
        objective: ``"robust"`` (squared Average-Sensitivity: ``ev.sens_avg_sq``, equal to
            ``w^T G_fresh w``) or ``"faith"`` (``w^T G_fresh w`` with the fresh Infidelity matrix
            ``ev.gram_faith``; for a single method this is its Yeh-rescaled INFD).

    Returns:
        dict name -> float64 (N,): the K methods, then the names of ``weights``.
    """
    check_choice(objective, "objective", ("robust", "faith"))
    missing = [m for m in methods if m not in ev.names]
    if missing:
        raise ValueError(f"not evaluated in `ev`: {missing}")
    G = (ev.gram_robust if objective == "robust" else ev.gram_faith).double()
    if tuple(G.shape[1:]) != (len(methods), len(methods)):
        raise ValueError(f"`methods` must name the {G.shape[-1]} methods of the evaluation's matrices, got {len(methods)}")
    out = {m: torch.diagonal(G, dim1=1, dim2=2)[:, i] for i, m in enumerate(methods)}
    for name, w in weights.items():
        wt = check_tensor(w, f"weights[{name!r}]", ndim=2, dtype=None).double().to(G.device)
        if tuple(wt.shape) != tuple(G.shape[:2]):
            raise ValueError(f"`weights[{name!r}]` must have shape {tuple(G.shape[:2])}, got {tuple(wt.shape)}")
        out[name] = simplex_objective(G, wt)
    return out


def weighted_average_check(ev: EvaluationResult, weights: Mapping[str, Any], methods: Sequence[str],
                           metrics: Sequence[str] = ("sens_avg", "infidelity")):
    """Is each aggregate no worse than the weighted average of its parts on the metrics as *reported*?

    Theorem 4.2 guarantees ``Q(phi^w) <= sum_i w_i Q(phi^i)`` for generalized L2 metrics (squared,
    absolute sensitivity; Infidelity without rescaling). The paper's tables report other forms: Quantus'
    relative, unsquared Average-/Max-Sensitivity ``||phi(x) - phi(x + eps)|| / ||phi(x)||`` and Infidelity
    with Yeh's optimal rescaling of each map. Neither is a quadratic form in ``w`` (the denominator and
    the rescaling factor change with ``w``), so the guarantee can fail there: this measures whether it
    carries over, image by image, on fresh draws.

    Args:
        ev: :class:`EvaluationResult` with the single methods included.
        weights: candidate name -> (N, K) weights, each name evaluated in ``ev``.
        methods: the K method names in weight order.
        metrics: metric names of :meth:`EvaluationResult.per_image` where lower is better
            (``"sens_avg"``, ``"sens_max"``, ``"sens_avg_sq"``, ``"infidelity"``, ``"infidelity_zero"``, ...).

    Returns:
        pandas DataFrame, one row per (strategy, metric, sample): ``aggregate``, ``weighted``
        (``sum_i w_i metric(phi^i)``, NaN methods with zero weight ignored), ``excess`` =
        ``aggregate - weighted`` and ``improves`` (``excess <= 0``); NaN rows (undefined metric) dropped.

    References:
        Decker et al., ICML 2024, Theorem 4.2 and Tables 1-2.
    """
    import pandas as pd

    missing = [m for m in list(methods) + list(weights) if m not in ev.names]
    if missing:
        raise ValueError(f"not evaluated in `ev`: {missing}")
    frames = []
    for metric in metrics:
        if metric.startswith("fcor"):
            raise ValueError(f"`metrics`: {metric!r} is higher-is-better and no L2 metric; pass lower-is-better metrics")
        vals = ev.per_image(metric)
        singles = torch.stack([vals[m].double() for m in methods], dim=1)
        for name, w in weights.items():
            wt = check_tensor(w, f"weights[{name!r}]", ndim=2, dtype=None).double().to(singles.device)
            if tuple(wt.shape) != tuple(singles.shape):
                raise ValueError(f"`weights[{name!r}]` must have shape {tuple(singles.shape)}, got {tuple(wt.shape)}")
            weighted = torch.where(wt > 0, wt * singles, torch.zeros_like(singles)).sum(1)
            agg = vals[name].double()
            ok = torch.isfinite(agg) & torch.isfinite(weighted)
            frames.append(pd.DataFrame({
                "strategy": name, "metric": metric, "sample": np.arange(len(agg))[ok.cpu().numpy()],
                "aggregate": agg[ok].cpu().numpy(), "weighted": weighted[ok].cpu().numpy(),
                "excess": (agg - weighted)[ok].cpu().numpy(), "improves": (agg <= weighted)[ok].cpu().numpy(),
            }))
    return pd.concat(frames, ignore_index=True)


def evaluate_strategies(
    model: torch.nn.Module,
    x: Any,
    target: Any,
    methods: Any,
    *,
    m_agg: int = 50,
    m_eval: int = 200,
    radius: float = 0.1,
    share: float = 0.2,
    baselines: Sequence[Any] = ("blur",),
    blur_sigma: float | None = None,
    agg_var_eps: float = 0.1,
    solver: str = "exact",
    subsets: Mapping[str, Sequence[str]] | None = None,
    generator: torch.Generator | None = None,
    batch_size: int = 256,
    return_grams: bool = False,
) -> tuple[EvaluationResult, dict[str, torch.Tensor]] | tuple[EvaluationResult, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The Table 1 / 2 protocol for one model in one call: fit weights on ``m_agg`` draws, score on ``m_eval`` fresh ones.

    Explains ``x`` once with every method, estimates the robustness Gram on ``m_agg`` noise draws and the
    Infidelity Gram on ``m_agg`` masks with the first baseline, solves AGG_robust / AGG_faith / AGG_opt per
    sample (an all-zero map gets weight 0 at that sample, see :func:`nondegenerate`), adds AGG_mean
    (uniform weights) and AGG_var, and evaluates the single methods and the five aggregates with
    :func:`evaluate_aggregations` on fresh draws. The notebook's main sections do the same steps one by one
    (they also need the intermediate Grams); this function is for repeating the protocol over many models.

    Args:
        model, x, target, methods, batch_size: as in :func:`aggregate` (x: float (N, C, H, W) inputs on any
            device; the model's device is used).
        m_agg: draws (noise and masks) used to fit the weights (paper: 50), >= 1.
        m_eval: fresh draws of the evaluation (paper: 200), >= 2.
        radius, share, baselines, blur_sigma: as in :func:`evaluate_aggregations`; the first baseline is fitted.
        agg_var_eps: epsilon of :func:`agg_var`.
        solver: ``"exact"`` or ``"cvxpy"``.
        subsets: optional name -> method names (>= 2 of ``methods`` each): AGG_robust / AGG_faith / AGG_opt
            restricted to each subset are fitted on the same draws and evaluated too, as candidates
            ``agg_robust_<name>``, ``agg_faith_<name>``, ``agg_opt_<name>`` (weight 0 outside the subset; the
            paper's Tables 8-11 compare such subsets).
        generator: seeded torch generator (CPU); the draws of fitting and evaluation are taken from it in turn.
        return_grams: also return the fitted (in-sample) matrices ``{"robust": (N, k, k), "faith": (N, k, k)}``,
            e.g. to compare in-sample and held-out objectives.

    Returns:
        ``(ev, weights)``: the :class:`EvaluationResult` (candidates: the k methods, then ``agg_robust``,
        ``agg_faith``, ``agg_opt``, the subset aggregates, ``agg_mean``, ``agg_var``) and the float64 (N, k)
        weights per strategy; ``(ev, weights, grams)`` with ``return_grams=True``.

    Raises:
        ValueError: fewer than 2 methods, ``m_agg < 1``, ``m_eval < 2``, an unknown solver / baseline, or a
            subset with unknown or fewer than 2 methods.
    """
    m_agg = check_int(m_agg, "m_agg", low=1)
    m_eval = check_int(m_eval, "m_eval", low=2)
    check_choice(solver, "solver", ("exact", "cvxpy"))
    baselines = list(baselines)
    if not baselines:
        raise ValueError("`baselines` must name at least one baseline")
    fns = resolve_methods(methods)
    if len(fns) < 2:
        raise ValueError(f"`methods` must hold at least 2 methods, got {len(fns)}")
    maps = explanation_stack(model, x, target, fns, batch_size=batch_size)
    grams = {
        "robust": sensitivity_gram(model, x, target, fns, m=m_agg, radius=radius, maps=maps, generator=generator, batch_size=batch_size),
        "faith": infidelity_gram(*faith_samples(model, x, target, maps, m=m_agg, share=share, baseline=baselines[0],
                                                blur_sigma=blur_sigma, generator=generator, batch_size=batch_size)),
    }
    valid = nondegenerate(maps)
    weights = subset_weights(grams, allowed=valid, solver=solver)
    names = list(fns)
    for sub, members in (subsets or {}).items():
        members = [members] if isinstance(members, str) else list(members)
        unknown = [m for m in members if m not in names]
        if unknown or len(set(members)) < 2:
            raise ValueError(f"`subsets[{sub!r}]` must name at least 2 distinct methods of {names}, got {members}")
        idx = [names.index(m) for m in members]
        weights.update({f"{key}_{sub}": w for key, w in subset_weights(grams, idx, allowed=valid, solver=solver).items()})
    k = maps.shape[1]
    weights["agg_mean"] = torch.full((maps.shape[0], k), 1.0 / k, dtype=torch.float64, device=weights["agg_robust"].device)
    ev = evaluate_aggregations(
        model, x, target, fns, weights, maps=maps, extra={"agg_var": functools.partial(agg_var, eps=agg_var_eps)},
        m=m_eval, radius=radius, share=share, baselines=baselines, blur_sigma=blur_sigma, generator=generator,
        batch_size=batch_size,
    )
    return (ev, weights, grams) if return_grams else (ev, weights)
