"""Summaries of explanation distributions: mean, std and coefficient-of-variation maps, scalars per input and class.

Given T explanations E_1..E_T of one input (Mulye & Valdenegro-Toro 2024, Sec. 3):

* mean map   E_mu    = (1/T) sum_t E_t
* std map    E_sigma = sqrt((1/T) sum_t (E_t - E_mu)^2)      (population std, ``ddof=0``)
* CV map     CV      = E_sigma / (|E_mu| + eps_n)

**Epsilon rule (no inf or NaN ever).** ``eps_n = rel_eps * max_j |E_mu[n, j]|`` (the scale of input n's
mean map) ``+ abs_eps``. Features whose mean and std are both exactly zero get CV = 0; a feature with
|E_mu| below ``rel_eps`` of the map's scale gets a large but finite CV, which is the instability the
paper warns about. With ``absolute=True`` (maps of |E_t|, the paper's heatmaps) every sample is >= 0, so
the CV is bounded by sqrt(T - 1) and the guard only matters for all-zero features.

References:
    Mulye & Valdenegro-Toro, "Uncertainty quantification for gradient-based explanations in neural networks", 2024.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import stats

from .._validation import check_labels, check_positive, check_tensor
from ..metrics._meta import metric

__all__ = [
    "ExplanationSummary",
    "postprocess_maps",
    "summarize",
    "explanation_cv",
    "explanation_std",
    "class_summary",
    "kruskal_by_class",
    "map_rank_correlation",
    "predictive_uncertainty",
]


@dataclass
class ExplanationSummary:
    """Elementwise summaries of an explanation distribution (all maps shaped (N, ...)).

    Attributes:
        mean: E_mu (raw attribution units; >= 0 when built from absolute maps).
        std: E_sigma (>= 0).
        cv: E_sigma / (|E_mu| + eps), finite, >= 0.
        eps: (N,) the epsilon used per input (see the module docstring).
        n_realisations: T.
    """

    mean: torch.Tensor
    std: torch.Tensor
    cv: torch.Tensor
    eps: torch.Tensor
    n_realisations: int

    def per_input(self) -> dict[str, torch.Tensor]:
        """Scalar summaries per input, each (N,): ``cv_mean`` (mean CV over features), ``cv_median``,
        ``std_mean`` (mean std over features), ``mean_abs`` (mean |E_mu|) and ``cv_global``
        (sum of std / sum of |mean|, a ratio of totals that is robust to near-zero features)."""
        n = self.mean.shape[0]
        cv, sd, mu = self.cv.reshape(n, -1), self.std.reshape(n, -1), self.mean.reshape(n, -1).abs()
        tot = mu.sum(1)
        return {
            "cv_mean": cv.mean(1),
            "cv_median": cv.median(1).values,
            "std_mean": sd.mean(1),
            "mean_abs": mu.mean(1),
            "cv_global": torch.where(tot > 0, sd.sum(1) / tot.clamp_min(torch.finfo(tot.dtype).tiny), torch.zeros_like(tot)),
        }

    def to_frame(self) -> pd.DataFrame:
        """The per-input scalars as a DataFrame (one row per input, column ``index``)."""
        d = {k: v.detach().cpu().numpy() for k, v in self.per_input().items()}
        return pd.DataFrame({"index": np.arange(self.mean.shape[0]), **d})


def postprocess_maps(dist: Any, *, absolute: bool = False, channel_reduce: str | None = None) -> torch.Tensor:
    """Turn raw attributions into heatmaps before summarising.

    Args:
        dist: (T, N, ...) explanation distribution (raw signed attributions shaped like the inputs).
        absolute: take |E_t| elementwise first (the paper's heatmaps).
        channel_reduce: None, ``"sum"`` or ``"max"`` over the channel axis (axis 2 of (T, N, C, H, W));
            needs image-shaped (5-D) distributions.

    Returns:
        (T, N, ...) float tensor ((T, N, H, W) after a channel reduction).
    """
    d = check_tensor(dist, "dist")
    if d.ndim < 3:
        raise ValueError(f"`dist` must be (T, N, ...) with at least 3 dimensions, got shape {tuple(d.shape)}")
    if absolute:
        d = d.abs()
    if channel_reduce is not None:
        if channel_reduce not in ("sum", "max"):
            raise ValueError(f"unknown `channel_reduce` {channel_reduce!r}; expected one of [None, 'sum', 'max']")
        if d.ndim != 5:
            raise ValueError(f"`channel_reduce` needs image distributions (T, N, C, H, W), got shape {tuple(d.shape)}")
        d = d.sum(2) if channel_reduce == "sum" else d.amax(2)
    return d


def summarize(dist: Any, *, absolute: bool = False, channel_reduce: str | None = None, rel_eps: float = 1e-8,
              abs_eps: float = 1e-12) -> ExplanationSummary:
    """Mean, std and coefficient-of-variation maps of an explanation distribution.

    Args:
        dist: (T, N, ...) float, T >= 2 realisations of the explanations of N inputs (e.g. from
            :func:`~xcal_core.uq.explanation_distribution`).
        absolute, channel_reduce: see :func:`postprocess_maps` (applied to each E_t first).
        rel_eps: relative epsilon (>= 0) times the scale max|E_mu| of each input's mean map.
        abs_eps: absolute floor (> 0) added to the denominator so all-zero maps give CV = 0.

    Returns:
        :class:`ExplanationSummary` with maps (N, ...).

    Raises:
        ValueError: T < 2, NaN/inf values, negative ``rel_eps`` or non-positive ``abs_eps``.
    """
    d = postprocess_maps(dist, absolute=absolute, channel_reduce=channel_reduce)
    if d.shape[0] < 2:
        raise ValueError(f"`dist` must hold T >= 2 realisations along axis 0, got T = {d.shape[0]}")
    check_positive(rel_eps, "rel_eps", strict=False)
    check_positive(abs_eps, "abs_eps")
    d64 = d.double()
    mean = d64.mean(0)
    std = d64.std(0, correction=0)
    n = mean.shape[0]
    scale = mean.abs().reshape(n, -1).amax(1)
    eps = rel_eps * scale + abs_eps
    cv = std / (mean.abs() + eps.reshape(n, *([1] * (mean.ndim - 1))))
    fmax = torch.finfo(d.dtype).max if d.is_floating_point() else torch.finfo(torch.float32).max
    cv = torch.nan_to_num(cv, nan=0.0, posinf=fmax).clamp_max(fmax)
    dt = d.dtype if d.is_floating_point() else torch.float32
    return ExplanationSummary(mean=mean.to(dt), std=std.to(dt), cv=cv.to(dt), eps=eps.to(dt), n_realisations=d.shape[0])


@metric(higher_is_better=False, category="uncertainty")
def explanation_cv(dist: Any, *, absolute: bool = True, channel_reduce: str | None = None, rel_eps: float = 1e-8) -> torch.Tensor:
    """Mean coefficient of variation of each input's explanation distribution, (N,) (lower = more certain).

    Args:
        dist: (T, N, ...) explanation distribution.
        absolute, channel_reduce, rel_eps: see :func:`summarize` (absolute maps by default).
    """
    return summarize(dist, absolute=absolute, channel_reduce=channel_reduce, rel_eps=rel_eps).per_input()["cv_mean"]


@metric(higher_is_better=False, category="uncertainty")
def explanation_std(dist: Any, *, absolute: bool = True, channel_reduce: str | None = None) -> torch.Tensor:
    """Mean standard deviation over features of each input's explanation distribution, (N,)."""
    return summarize(dist, absolute=absolute, channel_reduce=channel_reduce).per_input()["std_mean"]


def class_summary(values: Any, labels: Any, class_names: list[str] | None = None) -> pd.DataFrame:
    """Per-class statistics of a per-input scalar (e.g. ``cv_mean``).

    Args:
        values: (N,) float per-input values.
        labels: (N,) int64 class of each input (true or predicted).
        class_names: optional names indexed by label.

    Returns:
        DataFrame with columns class, name, n, mean, median, std, sorted by class.
    """
    v = check_tensor(values, "values", ndim=1, dtype=torch.float64).detach().cpu().numpy()
    y = check_labels(labels, "labels", n=len(v)).cpu().numpy()
    rows = []
    for c in np.unique(y):
        vc = v[y == c]
        rows.append(dict(cls=int(c), name=class_names[c] if class_names is not None else str(c), n=len(vc),
                         mean=float(vc.mean()), median=float(np.median(vc)), std=float(vc.std(ddof=1)) if len(vc) > 1 else float("nan")))
    return pd.DataFrame(rows).rename(columns={"cls": "class"})


def kruskal_by_class(values: Any, labels: Any) -> tuple[float, float]:
    """Kruskal-Wallis H test of a per-input scalar grouped by class.

    Args:
        values: (N,) float; labels: (N,) int64. Classes with fewer than 2 inputs are dropped.

    Returns:
        (H statistic, p-value).

    Raises:
        ValueError: fewer than two classes with at least 2 inputs.
    """
    v = check_tensor(values, "values", ndim=1, dtype=torch.float64).detach().cpu().numpy()
    y = check_labels(labels, "labels", n=len(v)).cpu().numpy()
    groups = [v[y == c] for c in np.unique(y) if (y == c).sum() >= 2]
    if len(groups) < 2:
        raise ValueError("`labels` must contain at least two classes with >= 2 inputs each for a Kruskal-Wallis test")
    res = stats.kruskal(*groups)
    return float(res.statistic), float(res.pvalue)


def map_rank_correlation(a: Any, b: Any) -> torch.Tensor:
    """Spearman rank correlation between two maps per input, (N,) in [-1, 1].

    Args:
        a, b: (N, ...) maps of the same shape (flattened per input; ties get average ranks). A constant
            map has no ranking: its correlation is reported as 1 if both maps are constant, else 0.
    """
    ta = check_tensor(a, "a")
    tb = check_tensor(b, "b")
    if ta.shape != tb.shape:
        raise ValueError(f"`a` and `b` must have the same shape, got {tuple(ta.shape)} and {tuple(tb.shape)}")
    n = ta.shape[0]
    ra = stats.rankdata(ta.detach().cpu().double().reshape(n, -1).numpy(), axis=1)
    rb = stats.rankdata(tb.detach().cpu().double().reshape(n, -1).numpy(), axis=1)
    ra -= ra.mean(1, keepdims=True)
    rb -= rb.mean(1, keepdims=True)
    na, nb = np.sqrt((ra**2).sum(1)), np.sqrt((rb**2).sum(1))
    num = (ra * rb).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where((na > 0) & (nb > 0), num / (na * nb), np.where((na == 0) & (nb == 0), 1.0, 0.0))
    return torch.as_tensor(np.clip(rho, -1, 1), dtype=torch.float32)


def predictive_uncertainty(outputs: Any) -> dict[str, torch.Tensor]:
    """Predictive uncertainty of T realisations' outputs, per input.

    Args:
        outputs: (T, N, K) logits of a classifier (K >= 2), or (T, N, 1) regression outputs.

    Returns:
        classification: ``entropy`` (of the mean softmax, nats), ``expected_entropy``,
        ``mutual_information`` (entropy - expected entropy, the epistemic part), ``mean_probs`` (N, K);
        regression: ``mean`` (N,) and ``std`` (N,) of the outputs.
    """
    o = check_tensor(outputs, "outputs", ndim=3)
    if o.shape[0] < 2:
        raise ValueError(f"`outputs` must hold T >= 2 realisations along axis 0, got T = {o.shape[0]}")
    if o.shape[2] == 1:
        return {"mean": o[..., 0].mean(0), "std": o[..., 0].std(0, correction=0)}
    logp = torch.log_softmax(o.double(), -1)
    p = logp.exp()
    pm = p.mean(0)
    ent = -(pm * torch.log(pm.clamp_min(1e-300))).sum(-1)
    exp_ent = -(p * logp).sum(-1).mean(0)
    return {"entropy": ent.float(), "expected_entropy": exp_ent.float(),
            "mutual_information": (ent - exp_ent).clamp_min(0).float(), "mean_probs": pm.float()}
