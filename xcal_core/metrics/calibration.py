"""Calibration metrics on predicted probabilities: ECE (uniform / adaptive), classwise ECE, NLL,
Brier score, reliability-diagram data and the consistent KL calibration-error estimator ``ce_kl``.

All functions take ``probs`` (N, K) with rows summing to 1 (apply softmax to logits first) and
``labels`` (N,) int64 in [0, K). Dataset-level metrics return Python floats.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from .._validation import check_choice, check_int, check_labels, check_positive, check_probs
from ._meta import metric

__all__ = [
    "ece",
    "classwise_ece",
    "nll",
    "brier",
    "ReliabilityData",
    "reliability_data",
    "ce_kl",
    "select_bandwidth",
    "loo_log_likelihood",
    "BANDWIDTH_GRID",
    "calibration_floor",
    "FloorSummary",
    "compare_to_floor",
    "ce_kl_floor",
    "select_bandwidth_pooled",
]

# Grid of Popordanoska et al. (2024): 50 log-spaced values in [1e-5, 1e-1] plus 0.2, 0.4, ..., 1.0.
BANDWIDTH_GRID: tuple[float, ...] = tuple(np.logspace(-5, -1, 50).tolist()) + (0.2, 0.4, 0.6, 0.8, 1.0)


def _inputs(probs: Any, labels: Any) -> tuple[torch.Tensor, torch.Tensor]:
    p = check_probs(probs, "probs").detach()
    y = check_labels(labels, "labels", n_classes=p.shape[1], n=p.shape[0]).to(p.device)
    return p, y


def _bin_ids(conf: torch.Tensor, n_bins: int, binning: str) -> torch.Tensor:
    """Bin index per sample. Uniform: bins [lo, hi) of width 1/n_bins, the last one closed [lo, 1], with
    the edges ``linspace(0, 1, n_bins + 1)`` in the confidences' dtype: the convention of torchmetrics
    and netcal, so a confidence exactly on an edge k/B goes to bin k.
    Adaptive: equal-mass bins over the sorted confidences (sizes differ by at most one)."""
    n = conf.shape[0]
    if binning == "uniform":
        edges = torch.linspace(0, 1, n_bins + 1, dtype=conf.dtype, device=conf.device)
        return (torch.bucketize(conf, edges, right=True) - 1).clamp(0, n_bins - 1)
    order = torch.argsort(conf, stable=True)
    ids = torch.empty(n, dtype=torch.long, device=conf.device)
    # rank r -> bin floor(r * n_bins / n): the np.array_split partition of the sorted order
    ids[order] = (torch.arange(n, device=conf.device) * n_bins) // n
    return ids


def _binned_gap(conf: torch.Tensor, hit: torch.Tensor, n_bins: int, binning: str) -> tuple[float, torch.Tensor, torch.Tensor, torch.Tensor]:
    ids = _bin_ids(conf, n_bins, binning)
    count = torch.bincount(ids, minlength=n_bins).double()
    s_conf = torch.zeros(n_bins, dtype=torch.float64, device=conf.device).index_add_(0, ids, conf.double())
    s_hit = torch.zeros(n_bins, dtype=torch.float64, device=conf.device).index_add_(0, ids, hit.double())
    gap = float((s_hit - s_conf).abs().sum() / conf.shape[0])
    return gap, count, s_conf, s_hit


@metric(higher_is_better=False, category="calibration")
def ece(probs: Any, labels: Any, n_bins: int = 15, binning: str = "uniform") -> float:
    """Top-label expected calibration error.

    ECE = sum_b |B_b| / N * |acc(B_b) - conf(B_b)| over bins of the top-label confidence.

    Args:
        probs: (N, K) float probabilities, rows summing to 1.
        labels: (N,) int64 true classes in [0, K).
        n_bins: number of bins, >= 1.
        binning: ``"uniform"`` (equal-width bins [lo, hi) on [0, 1], the last one closed, as
            torchmetrics and netcal: a confidence on an edge k/B falls in bin k) or
            ``"adaptive"`` (equal-mass bins, Nixon et al. 2019).

    Returns:
        ECE in [0, 1] (float).

    References:
        Naeini et al., AAAI 2015; Guo et al., ICML 2017; Nixon et al., CVPR-W 2019 (adaptive bins).
    """
    p, y = _inputs(probs, labels)
    n_bins = check_int(n_bins, "n_bins", low=1)
    check_choice(binning, "binning", ["uniform", "adaptive"])
    conf, pred = p.max(dim=1)
    return _binned_gap(conf, (pred == y), n_bins, binning)[0]


@metric(higher_is_better=False, category="calibration")
def classwise_ece(probs: Any, labels: Any, n_bins: int = 15, binning: str = "uniform") -> float:
    """Classwise ECE: the mean over classes k of the binned gap between p_k and 1[y = k].

    Args:
        probs: (N, K) float probabilities, rows summing to 1.
        labels: (N,) int64 true classes in [0, K).
        n_bins: bins per class, >= 1.
        binning: ``"uniform"`` or ``"adaptive"``, as in :func:`ece`.

    Returns:
        Classwise ECE in [0, 1] (float).

    References:
        Kull et al., Beyond temperature scaling: Dirichlet calibration. NeurIPS 2019.
    """
    p, y = _inputs(probs, labels)
    n_bins = check_int(n_bins, "n_bins", low=1)
    check_choice(binning, "binning", ["uniform", "adaptive"])
    gaps = [_binned_gap(p[:, k], (y == k), n_bins, binning)[0] for k in range(p.shape[1])]
    return float(np.mean(gaps))


@metric(higher_is_better=False, category="calibration")
def nll(probs: Any, labels: Any, eps: float = 1e-12) -> float:
    """Mean negative log-likelihood -log p_y (nats); probabilities are clamped to >= ``eps``.

    Args:
        probs: (N, K) float probabilities, rows summing to 1.
        labels: (N,) int64 true classes in [0, K).
        eps: floor applied before the log, > 0.

    Returns:
        Mean NLL (float, >= 0).
    """
    p, y = _inputs(probs, labels)
    check_positive(eps, "eps")
    py = p.double().gather(1, y[:, None]).squeeze(1).clamp_min(eps)
    return float(-py.log().mean())


@metric(higher_is_better=False, category="calibration")
def brier(probs: Any, labels: Any) -> float:
    """Multiclass Brier score: mean over samples of sum_k (p_k - 1[y = k])^2, in [0, 2].

    Args:
        probs: (N, K) float probabilities, rows summing to 1.
        labels: (N,) int64 true classes in [0, K).

    Returns:
        Brier score (float).

    References:
        Brier, Monthly Weather Review 1950.
    """
    p, y = _inputs(probs, labels)
    onehot = torch.nn.functional.one_hot(y, p.shape[1]).double()
    return float(((p.double() - onehot) ** 2).sum(1).mean())


@dataclass(frozen=True)
class ReliabilityData:
    """Per-bin statistics of a top-label reliability diagram.

    Attributes:
        bin_lower, bin_upper: (B,) float bin edges (for adaptive bins: min / max confidence in the bin).
        confidence: (B,) mean top-label confidence per bin (NaN for empty bins).
        accuracy: (B,) fraction of correct top-label predictions per bin (NaN for empty bins).
        count: (B,) int number of samples per bin.
        ece: the ECE over these bins.
        binning: ``"uniform"`` or ``"adaptive"``.
    """

    bin_lower: np.ndarray
    bin_upper: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    count: np.ndarray
    ece: float
    binning: str

    def to_frame(self):
        """The bins as a pandas DataFrame (one row per bin)."""
        import pandas as pd

        return pd.DataFrame(
            {
                "bin_lower": self.bin_lower,
                "bin_upper": self.bin_upper,
                "confidence": self.confidence,
                "accuracy": self.accuracy,
                "count": self.count,
            }
        )


def reliability_data(probs: Any, labels: Any, n_bins: int = 15, binning: str = "uniform") -> ReliabilityData:
    """Data of a top-label reliability diagram (per-bin confidence, accuracy and count).

    Args:
        probs: (N, K) float probabilities, rows summing to 1.
        labels: (N,) int64 true classes in [0, K).
        n_bins: number of bins, >= 1.
        binning: ``"uniform"`` or ``"adaptive"``, as in :func:`ece`.

    Returns:
        :class:`ReliabilityData`; its ``ece`` equals :func:`ece` with the same arguments.
    """
    p, y = _inputs(probs, labels)
    n_bins = check_int(n_bins, "n_bins", low=1)
    check_choice(binning, "binning", ["uniform", "adaptive"])
    conf, pred = p.max(dim=1)
    gap, count, s_conf, s_hit = _binned_gap(conf, (pred == y), n_bins, binning)
    cnt = count.cpu().numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.where(cnt > 0, s_conf.cpu().numpy() / cnt, np.nan)
        acc = np.where(cnt > 0, s_hit.cpu().numpy() / cnt, np.nan)
    if binning == "uniform":
        lower = np.arange(n_bins) / n_bins
        upper = np.arange(1, n_bins + 1) / n_bins
    else:
        ids = _bin_ids(conf, n_bins, binning).cpu().numpy()
        c = conf.double().cpu().numpy()
        lower = np.array([c[ids == b].min() if (ids == b).any() else np.nan for b in range(n_bins)])
        upper = np.array([c[ids == b].max() if (ids == b).any() else np.nan for b in range(n_bins)])
    return ReliabilityData(lower, upper, mean_conf, acc, cnt.astype(np.int64), gap, binning)


# ----------------------------------------------------------------------------------------------
# KL calibration error with a leave-one-out Dirichlet kernel (Popordanoska et al.)
# ----------------------------------------------------------------------------------------------

def _dirichlet_terms(p: torch.Tensor, bandwidth: float, log_p: torch.Tensor) -> torch.Tensor:
    """log normalizer c_j of Dir(alpha_j = p_j / h + 1): lgamma(sum alpha) - sum lgamma(alpha)."""
    alpha = p / bandwidth + 1.0
    return torch.lgamma(alpha.sum(1)) - torch.lgamma(alpha).sum(1)


def _prepare(p: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    p = p.double().clamp_min(eps)
    p = p / p.sum(1, keepdim=True)
    return p, p.log()


def _chunks(n: int, chunk_size: int):
    for start in range(0, n, chunk_size):
        yield start, min(start + chunk_size, n)


def _exclude(logk: torch.Tensor, start: int, stop: int, groups: torch.Tensor | None) -> torch.Tensor:
    """Leave-one-out: set log K[i, i] (or, with ``groups``, every j of i's group) to -inf, in place."""
    if groups is None:
        idx = torch.arange(start, stop, device=logk.device)
        logk[idx - start, idx] = -math.inf
    else:
        logk.masked_fill_(groups[start:stop, None] == groups[None, :], -math.inf)
    return logk


def _check_groups(groups: Any, n: int, device: torch.device) -> torch.Tensor | None:
    if groups is None:
        return None
    g = torch.as_tensor(groups, device=device).long().flatten()
    if g.numel() != n:
        raise ValueError(f"`groups` must have one entry per sample ({n}), got {g.numel()}")
    if torch.unique(g).numel() < 2:
        raise ValueError("`groups` must contain at least 2 distinct groups for a leave-one-group-out estimate")
    return g


def _loo_log_kernel(p: torch.Tensor, log_p: torch.Tensor, c: torch.Tensor, bandwidth: float, start: int, stop: int,
                    groups: torch.Tensor | None = None) -> torch.Tensor:
    """Rows ``start:stop`` of log K[i, j] = log Dir(p_i; p_j / h + 1) with the left-out entries set to -inf.

    log Dir(p_i; alpha_j) = c_j + sum_k (alpha_jk - 1) log p_ik = c_j + (log p_i . p_j) / h.
    """
    logk = (log_p[start:stop] @ p.T) / bandwidth + c[None, :]
    return _exclude(logk, start, stop, groups)


def loo_log_likelihood(probs: Any, bandwidths: Sequence[float], *, groups: Any = None, chunk_size: int = 512, eps: float = 1e-45) -> torch.Tensor:
    """Leave-one-out log-likelihood of ``probs`` under the Dirichlet KDE, for each bandwidth.

    LL(h) = sum_i log( 1/(N-1) sum_{j != i} Dir(p_i; p_j / h + 1) ). The N x N matrix
    G = log(P) P^T is shared by all bandwidths and built chunk by chunk (O(chunk_size * N) memory).

    Args:
        probs: (N, K) float probabilities, rows summing to 1, N >= 2.
        bandwidths: candidate bandwidths h > 0.
        groups: optional (N,) int group id per row; rows of the same group (e.g. several perturbations
            of one input, or repeated copies) are left out together.
        chunk_size: rows of the kernel matrix held in memory at once.
        eps: floor on probabilities before taking logs (rows are renormalized).

    Returns:
        (len(bandwidths),) float64 log-likelihoods (-inf where not finite).
    """
    p = check_probs(probs, "probs").detach()
    if p.shape[0] < 2:
        raise ValueError(f"`probs` needs at least 2 samples for a leave-one-out estimate, got {p.shape[0]}")
    chunk_size = check_int(chunk_size, "chunk_size", low=1)
    hs = [float(check_positive(h, "bandwidths")) for h in bandwidths]
    grp = _check_groups(groups, p.shape[0], p.device)
    p, log_p = _prepare(p, eps)
    n = p.shape[0]
    cs = [_dirichlet_terms(p, h, log_p) for h in hs]
    ll = torch.zeros(len(hs), dtype=torch.float64, device=p.device)
    for start, stop in _chunks(n, chunk_size):
        g = log_p[start:stop] @ p.T  # (c, N), shared by every bandwidth
        for t, h in enumerate(hs):
            logk = _exclude(torch.add(cs[t][None, :], g, alpha=1.0 / h), start, stop, grp)
            ll[t] += (torch.logsumexp(logk, dim=1) - torch.isfinite(logk).sum(1).double().log()).sum()
    return torch.where(torch.isfinite(ll), ll, torch.full_like(ll, -math.inf))


def select_bandwidth(
    probs: Any,
    grid: Sequence[float] | None = None,
    *,
    groups: Any = None,
    search: str = "coarse_to_fine",
    chunk_size: int = 512,
    eps: float = 1e-45,
) -> float:
    """Dirichlet-kernel bandwidth that maximizes the leave-one-out log-likelihood of ``probs``.

    ``search="exhaustive"`` evaluates every grid point (cost O(|grid| N^2)).
    ``"coarse_to_fine"`` (default) evaluates every 4th point of the sorted grid, then every point
    within 4 positions of the best one: the same answer as the exhaustive search when the
    likelihood is unimodal over the grid (as it is for kernel density estimates in practice), at
    about a third of the cost. Choose the bandwidth once per model and reuse it (ReCalX pitfall A11.4).

    Args:
        probs: (N, K) float probabilities, rows summing to 1, N >= 2.
        grid: candidate bandwidths (> 0); default :data:`BANDWIDTH_GRID` (Popordanoska et al.).
        groups: optional (N,) group ids left out together (see :func:`loo_log_likelihood`). Exact
            copies of a row (e.g. several "perturbations" of an input at level 0) drive the plain LOO
            likelihood to its smallest bandwidth; group them.
        search: ``"coarse_to_fine"`` or ``"exhaustive"``.
        chunk_size: rows of the N x N kernel matrix held in memory at once.
        eps: floor on probabilities before taking logs (rows are renormalized).

    Returns:
        The best bandwidth (float).

    References:
        Popordanoska, Gruber, Tiulpin, Buettner, Blaschko. Consistent and Asymptotically Unbiased
        Estimation of Proper Calibration Errors. AISTATS 2024.
    """
    check_choice(search, "search", ["coarse_to_fine", "exhaustive"])
    grid_t = sorted(float(h) for h in (BANDWIDTH_GRID if grid is None else grid))
    if not grid_t:
        raise ValueError("`grid` is empty; expected at least one bandwidth")
    if search == "exhaustive" or len(grid_t) <= 12:
        ll = loo_log_likelihood(probs, grid_t, groups=groups, chunk_size=chunk_size, eps=eps)
        return grid_t[int(torch.argmax(ll))]
    step = 4
    coarse = list(range(0, len(grid_t), step))
    if coarse[-1] != len(grid_t) - 1:
        coarse.append(len(grid_t) - 1)
    ll_c = loo_log_likelihood(probs, [grid_t[i] for i in coarse], groups=groups, chunk_size=chunk_size, eps=eps)
    best = coarse[int(torch.argmax(ll_c))]
    fine = [i for i in range(max(0, best - step + 1), min(len(grid_t), best + step)) if i not in coarse]
    scores = dict(zip(coarse, ll_c.tolist()))
    if fine:
        scores.update(zip(fine, loo_log_likelihood(probs, [grid_t[i] for i in fine], groups=groups, chunk_size=chunk_size, eps=eps).tolist()))
    return grid_t[max(scores, key=lambda i: (scores[i], -i))]


@metric(higher_is_better=False, category="calibration")
def ce_kl(
    probs: Any,
    labels: Any,
    bandwidth: float | None = None,
    *,
    groups: Any = None,
    chunk_size: int = 512,
    eps: float = 1e-45,
) -> float:
    """Consistent estimator of the KL calibration error CE_KL = E[KL(P(Y | f(X)) || f(X))].

    The calibration map is estimated with a leave-one-out Dirichlet kernel regression,
    c_i = sum_{j != i} K(p_i; p_j) onehot(y_j) / sum_{j != i} K(p_i; p_j), with
    K(.; p_j) the Dirichlet pdf of concentration p_j / h + 1 (computed in log space, float64),
    and CE_KL = mean_i KL(c_i || p_i). The N x N kernel is processed in row chunks, so memory is
    O(chunk_size * N) (N = 5000, K = 10: ~20 MB per chunk of 512 rows) and time O(N^2 K).

    Args:
        probs: (N, K) float probabilities, rows summing to 1, N >= 2.
        labels: (N,) int64 true classes in [0, K).
        bandwidth: kernel bandwidth h > 0; ``None`` picks it by leave-one-out likelihood with
            :func:`select_bandwidth`. To compare models or perturbation levels fairly, choose it once
            and pass it explicitly.
        groups: optional (N,) int group id per row. Rows of the same group are left out together
            (leave-one-group-out), e.g. several perturbations of the same input, which share a label
            and, at low levels, nearly the same prediction; without it their copies leak each other's
            labels into the estimated calibration map.
        chunk_size: rows of the kernel matrix held in memory at once.
        eps: floor on probabilities (and on the estimated calibration map) before taking logs.

    Returns:
        The CE_KL estimate (float, >= 0 up to estimator error; 0 for a perfectly calibrated model in
        the large-N limit).

    References:
        Popordanoska, Gruber, Tiulpin, Buettner, Blaschko. Consistent and Asymptotically Unbiased
        Estimation of Proper Calibration Errors. AISTATS 2024.
    """
    p, y = _inputs(probs, labels)
    return float(_ce_kl_many(p, y[:, None], bandwidth, groups=groups, chunk_size=chunk_size, eps=eps)[0])


def _ce_kl_many(
    p: torch.Tensor,
    label_sets: torch.Tensor,
    bandwidth: float | None = None,
    *,
    groups: Any = None,
    chunk_size: int = 512,
    eps: float = 1e-45,
) -> torch.Tensor:
    """CE_KL of the same predictions under several label vectors, sharing one kernel pass.

    The leave-one-out kernel weights depend on the predictions and the bandwidth only, so the
    estimate for D label vectors costs one pass over the N x N kernel plus a (chunk, N) x (N, D*K)
    product per chunk. ``p`` is a checked (N, K) probability tensor, ``label_sets`` (N, D) int64
    labels on its device (column d is one label vector). Returns (D,) float64 estimates.
    """
    if p.shape[0] < 2:
        raise ValueError(f"`probs` needs at least 2 samples for a leave-one-out estimate, got {p.shape[0]}")
    chunk_size = check_int(chunk_size, "chunk_size", low=1)
    check_positive(eps, "eps")
    grp = _check_groups(groups, p.shape[0], p.device)
    h = select_bandwidth(p, groups=grp, chunk_size=chunk_size, eps=eps) if bandwidth is None else float(check_positive(bandwidth, "bandwidth"))
    p, log_p = _prepare(p, eps)
    n, k = p.shape
    d = label_sets.shape[1]
    onehot = torch.nn.functional.one_hot(label_sets, k).double().reshape(n, d * k)  # (N, D*K)
    c = _dirichlet_terms(p, h, log_p)
    total = torch.zeros(d, dtype=torch.float64, device=p.device)
    for start, stop in _chunks(n, chunk_size):
        logk = _loo_log_kernel(p, log_p, c, h, start, stop, grp)
        w = torch.softmax(logk, dim=1)  # normalized LOO kernel weights per row
        cal = (w @ onehot).reshape(stop - start, d, k).clamp_min(eps)
        kl = (cal * (cal.log() - log_p[start:stop, None, :])).sum(2)  # (chunk, D)
        total += kl.sum(0)
    return total / n


# ----------------------------------------------------------------------------------------------
# the estimator's floor: its value on perfectly calibrated predictions of the same kind
# ----------------------------------------------------------------------------------------------


def calibration_floor(
    probs: Any,
    metric_fn: Any = "ece",
    *,
    n_draws: int = 20,
    generator: torch.Generator | None = None,
    **metric_kwargs: Any,
) -> torch.Tensor:
    """Values of a calibration-error estimator on the same predictions with labels redrawn from them.

    Drawing every label from the model's own predicted probabilities, ``y_i ~ Categorical(p_i)``,
    makes the predictions perfectly calibrated by construction: the true calibration error is 0, so
    whatever the estimator returns is its bias and noise at this sample size and with these
    predictions (the *floor*). A measured calibration error is evidence of miscalibration only where
    it clearly exceeds this floor; see :func:`compare_to_floor`.

    Args:
        probs: (N, K) float probabilities, rows summing to 1.
        metric_fn: ``"ece"``, ``"classwise_ece"``, ``"ce_kl"`` or a callable ``f(probs, labels, **kw)
            -> float``. For ``"ce_kl"`` every draw shares one pass over the N x N kernel (the
            leave-one-out weights depend on the predictions only), so D draws cost about one estimate.
        n_draws: independent label draws (>= 2), for the floor's spread.
        generator: torch.Generator for the draws (on the CPU).
        **metric_kwargs: passed to the metric each time (e.g. ``n_bins=15``; for ``ce_kl`` pass the
            same ``bandwidth`` and ``groups`` as for the real labels).

    Returns:
        float64 tensor (n_draws,) of the estimator's values under perfect calibration.
    """
    p = check_probs(probs, "probs").detach()
    n_draws = check_int(n_draws, "n_draws", low=2)
    fns = {"ece": ece, "classwise_ece": classwise_ece, "ce_kl": ce_kl}
    if isinstance(metric_fn, str):
        check_choice(metric_fn, "metric_fn", list(fns))
        metric_fn = fns[metric_fn]
    elif not callable(metric_fn):
        raise TypeError(f"`metric_fn` must be one of {list(fns)} or a callable, got {type(metric_fn).__name__}")
    if metric_fn is ce_kl:  # one kernel pass for every draw: the LOO weights do not depend on the labels
        return _ce_kl_many(p, _draw_labels(p, n_draws, generator), **metric_kwargs).cpu()
    labels = _draw_labels(p, n_draws, generator)
    out = torch.empty(n_draws, dtype=torch.float64)
    for d in range(n_draws):
        out[d] = float(metric_fn(p, labels[:, d], **metric_kwargs))
    return out


def _draw_labels(p: torch.Tensor, n_draws: int, generator: torch.Generator | None) -> torch.Tensor:
    """(N, n_draws) int64 labels, column d drawn as y_i ~ Categorical(p_i) (on the CPU, then moved to p's device)."""
    p_cpu = p.double().cpu().clamp_min(0)
    draws = [torch.multinomial(p_cpu, 1, generator=generator).squeeze(1) for _ in range(n_draws)]
    return torch.stack(draws, dim=1).to(p.device)


@dataclass(frozen=True)
class FloorSummary:
    """A calibration error next to its estimator's floor (see :func:`compare_to_floor`).

    Attributes:
        value: the estimate with the real labels.
        floor_mean, floor_sd: mean and standard deviation of the floor draws.
        floor_q95: 95th percentile of the floor draws.
        excess: ``value - floor_mean`` (the part of the estimate that is not estimator bias).
        above_floor: ``value > floor_q95``: the miscalibration is distinguishable from none.
    """

    value: float
    floor_mean: float
    floor_sd: float
    floor_q95: float
    excess: float
    above_floor: bool

    def as_dict(self) -> dict[str, float | bool]:
        return {k: getattr(self, k) for k in ("value", "floor_mean", "floor_sd", "floor_q95", "excess", "above_floor")}


def ce_kl_floor(
    probs: Any,
    labels: Any,
    bandwidth: float | None = None,
    *,
    groups: Any = None,
    n_draws: int = 20,
    generator: torch.Generator | None = None,
    chunk_size: int = 512,
    eps: float = 1e-45,
) -> FloorSummary:
    """CE_KL of ``probs`` against ``labels`` next to its floor: the same estimate under perfect calibration.

    The floor is :func:`calibration_floor` ``(probs, "ce_kl", n_draws=..., generator=...,
    bandwidth=..., groups=...)``: every label redrawn from the predictions themselves, so the true
    CE_KL is 0 and whatever the estimator returns is its bias and noise at this sample size, with
    these predictions and this bandwidth (same draws for the same generator state). The kernel
    estimate of the calibration map is biased upwards wherever it averages few neighbours (a small
    bandwidth, sparse or spread-out predictions), and that bias depends on the predictions: a
    calibrator that softens predictions changes its own floor. Compare methods on
    ``excess = value - floor_mean``, never on the raw values. The real labels and all the draws share
    one pass over the N x N kernel.

    Args:
        probs: (N, K) float probabilities, rows summing to 1, N >= 2.
        labels: (N,) int64 true classes in [0, K).
        bandwidth: kernel bandwidth h > 0, or None to choose it by leave-one-out likelihood on
            ``probs`` (:func:`select_bandwidth`). Pass the bandwidth every compared method uses.
        groups: optional (N,) group ids left out together (see :func:`ce_kl`).
        n_draws: label draws for the floor, >= 2.
        generator: torch.Generator for the draws (CPU).
        chunk_size: rows of the kernel matrix held in memory at once.
        eps: floor on probabilities, as in :func:`ce_kl`.

    Returns:
        :class:`FloorSummary`: ``value`` (CE_KL with ``labels``), ``floor_mean``, ``floor_sd``,
        ``floor_q95`` of the draws, ``excess = value - floor_mean`` and ``above_floor``
        (``value > floor_q95``).

    References:
        Popordanoska, Gruber, Tiulpin, Buettner, Blaschko. Consistent and Asymptotically Unbiased
        Estimation of Proper Calibration Errors. AISTATS 2024 (the estimator). Decker, Tresp,
        Buettner. ReCalX, NeurIPS 2025 (CE_KL per perturbation level).
    """
    p, y = _inputs(probs, labels)
    n_draws = check_int(n_draws, "n_draws", low=2)
    sets = torch.cat([y[:, None], _draw_labels(p, n_draws, generator)], dim=1)
    values = _ce_kl_many(p, sets, bandwidth, groups=groups, chunk_size=chunk_size, eps=eps).cpu()
    return compare_to_floor(float(values[0]), values[1:])


def select_bandwidth_pooled(
    prob_sets: Sequence[Any],
    groups: Sequence[Any] | None = None,
    *,
    max_rows: int | None = 2000,
    generator: torch.Generator | None = None,
    grid: Sequence[float] | None = None,
    chunk_size: int = 512,
    eps: float = 1e-45,
) -> float:
    """One Dirichlet-kernel bandwidth for several sets of predictions, by LOO likelihood on their pool.

    The rule for comparing calibrators at one perturbation level: the predictions of every method
    on the same perturbed inputs are pooled and the bandwidth that maximizes their leave-one-out
    likelihood (:func:`select_bandwidth`) is used for all of them. It adapts to where the
    predictions of that level lie in the simplex (clean ones in the corners, heavily perturbed
    ones spread out), which a bandwidth chosen once on clean predictions does not, and it favours
    no method. Rows with the same group id (the same input, in every set) are left out together,
    since the methods' versions of one input are near-copies of each other.

    Args:
        prob_sets: one or more (N_s, K) probability tensors with the same K.
        groups: optional, one (N_s,) int id tensor per set; equal ids in different sets mark the
            same input. Default: no grouping across sets (each row its own group).
        max_rows: choose on a random subset of at most this many pooled rows (the LOO likelihood
            costs O(rows^2 K) per candidate); None uses all rows.
        generator: torch.Generator for that subset (CPU).
        grid, chunk_size, eps: as in :func:`select_bandwidth`.

    Returns:
        The bandwidth (float).

    References:
        Popordanoska et al., AISTATS 2024 (the LOO-likelihood bandwidth of the Dirichlet kernel).
    """
    if isinstance(prob_sets, torch.Tensor) or not isinstance(prob_sets, (list, tuple)) or not prob_sets:
        raise TypeError("`prob_sets` must be a non-empty list of (N, K) probability tensors")
    sets = [check_probs(q, f"prob_sets[{i}]").detach() for i, q in enumerate(prob_sets)]
    if len({q.shape[1] for q in sets}) != 1:
        raise ValueError(f"`prob_sets` must share the number of classes, got {[q.shape[1] for q in sets]}")
    if groups is None:
        offsets = np.cumsum([0] + [q.shape[0] for q in sets])
        grp = [torch.arange(o, o + q.shape[0]) for o, q in zip(offsets, sets)]
    else:
        if len(groups) != len(sets):
            raise ValueError(f"`groups` must hold one id tensor per set ({len(sets)}), got {len(groups)}")
        grp = []
        for i, (g, q) in enumerate(zip(groups, sets)):
            g = torch.as_tensor(g).long().flatten().cpu()
            if g.numel() != q.shape[0]:
                raise ValueError(f"`groups[{i}]` must have one id per row of `prob_sets[{i}]` ({q.shape[0]}), got {g.numel()}")
            grp.append(g)
    dev = sets[0].device
    pool = torch.cat([q.to(dev).double() for q in sets])
    pool_g = torch.cat(grp).to(dev)
    if max_rows is not None:
        max_rows = check_int(max_rows, "max_rows", low=2)
        if pool.shape[0] > max_rows:
            keep = torch.randperm(pool.shape[0], generator=generator)[:max_rows].to(dev)
            pool, pool_g = pool[keep], pool_g[keep]
    if torch.unique(pool_g).numel() < 2:
        raise ValueError("`prob_sets` must hold at least 2 distinct inputs (groups) to choose a bandwidth")
    return select_bandwidth(pool, grid, groups=pool_g, chunk_size=chunk_size, eps=eps)


def compare_to_floor(value: float, floor: Any) -> FloorSummary:
    """Put a calibration-error estimate next to its floor (from :func:`calibration_floor`).

    Args:
        value: the estimate with the real labels.
        floor: (D,) floor draws, D >= 2.

    Returns:
        :class:`FloorSummary`.
    """
    f = torch.as_tensor(floor, dtype=torch.float64).reshape(-1)
    if f.numel() < 2 or not torch.isfinite(f).all():
        raise ValueError(f"`floor` must hold >= 2 finite draws, got {f.numel()}")
    if not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise ValueError(f"`value` must be a finite number, got {value!r}")
    q95 = float(torch.quantile(f, 0.95))
    mean = float(f.mean())
    return FloorSummary(float(value), mean, float(f.std()), q95, float(value) - mean, float(value) > q95)
