"""Summaries of explanation distributions: mean, std and coefficient-of-variation maps, scalars per input and class.

Given T explanations E_1..E_T of one input (Mulye & Valdenegro-Toro 2024, Sec. 3):

* mean map   E_mu    = (1/T) sum_t E_t
* std map    E_sigma = sqrt((1/T) sum_t (E_t - E_mu)^2)      (population std, ``ddof=0``)
* CV map     CV      = E_sigma / |E_mu|

**Where the CV is undefined.** A feature whose mean and std are both (near) zero across the T
realisations (|E_mu| <= tol_n and E_sigma <= tol_n, with ``tol_n = zero_tol * max_j (|E_mu[n, j]| +
E_sigma[n, j])``, the scale of input n's maps) has CV = 0/0: it carries no attribution in any
realisation. Integrated Gradients with a zero baseline is exactly 0 on every black pixel, for example.
Its CV is NaN in the map and such features are **left out** of every per-input CV summary; the share
left out is reported as ``undefined_share``. Counting them as CV = 0 would make a map that is zero on
half its features look twice as certain as it is.

**Epsilon rule for the rest (never inf).** Elsewhere CV = E_sigma / (|E_mu| + eps_n), ``eps_n = rel_eps *
max_j |E_mu[n, j]| + abs_eps``: a feature with |E_mu| far below the map's scale but a clear spread gets a
large but finite CV, the instability the paper warns about. With ``absolute=True`` (maps of |E_t|, the
paper's heatmaps) every sample is >= 0, so the CV is bounded by sqrt(T - 1).

**Two per-input summaries** (:meth:`ExplanationSummary.per_input`): ``cv_mean``, the mean of the CV map
over the features where it is defined, and ``cv_global`` = sum_j E_sigma / sum_j |E_mu|, the ratio of
totals, which weighs features by their attribution mass and needs no exclusion (all-zero features add
0 to both sums).

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

from .._validation import check_int, check_labels, check_positive, check_tensor
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
    "planted_distribution",
    "pool_features",
]


@dataclass
class ExplanationSummary:
    """Elementwise summaries of an explanation distribution (all maps shaped (N, ...)).

    Attributes:
        mean: E_mu (raw attribution units; >= 0 when built from absolute maps).
        std: E_sigma (>= 0).
        cv: E_sigma / (|E_mu| + eps), >= 0 and finite where defined, NaN where mean and std are both
            (near) zero (see the module docstring).
        eps: (N,) the epsilon used per input.
        n_realisations: T.
        defined: bool map, False where the CV is undefined (0/0); None means "wherever ``cv`` is not NaN".
    """

    mean: torch.Tensor
    std: torch.Tensor
    cv: torch.Tensor
    eps: torch.Tensor
    n_realisations: int
    defined: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.defined is None:
            self.defined = ~torch.isnan(self.cv)

    def per_input(self) -> dict[str, torch.Tensor]:
        """Scalar summaries per input, each (N,).

        * ``cv_mean``: mean of the CV over the features where it is defined (NaN if there are none);
        * ``cv_median``: median of the same;
        * ``cv_global``: ratio of totals sum_j E_sigma / sum_j |E_mu| (NaN for an all-zero map);
        * ``undefined_share``: share of features left out of ``cv_mean`` (mean and std both ~0);
        * ``std_mean``: mean std over all features; ``mean_abs``: mean |E_mu| over all features.
        """
        n = self.mean.shape[0]
        cv = self.cv.reshape(n, -1).double()
        ok = self.defined.reshape(n, -1)
        sd, mu = self.std.reshape(n, -1).double(), self.mean.reshape(n, -1).abs().double()
        n_ok = ok.sum(1)
        cv0 = torch.where(ok, cv, torch.zeros_like(cv))
        cv_mean = torch.where(n_ok > 0, cv0.sum(1) / n_ok.clamp_min(1), torch.full_like(cv0[:, 0], float("nan")))
        cv_median = torch.where(ok, cv, torch.full_like(cv, float("nan"))).nanmedian(1).values
        tot = mu.sum(1)
        cv_global = torch.where(tot > 0, sd.sum(1) / tot.clamp_min(torch.finfo(tot.dtype).tiny),
                                torch.full_like(tot, float("nan")))
        dt = self.cv.dtype
        return {
            "cv_mean": cv_mean.to(dt),
            "cv_median": cv_median.to(dt),
            "cv_global": cv_global.to(dt),
            "undefined_share": (1.0 - n_ok.double() / ok.shape[1]).to(dt),
            "std_mean": sd.mean(1).to(dt),
            "mean_abs": mu.mean(1).to(dt),
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
              abs_eps: float = 1e-12, zero_tol: float = 1e-6) -> ExplanationSummary:
    """Mean, std and coefficient-of-variation maps of an explanation distribution.

    Args:
        dist: (T, N, ...) float, T >= 2 realisations of the explanations of N inputs (e.g. from
            :func:`~xcal_core.uq.explanation_distribution`).
        absolute, channel_reduce: see :func:`postprocess_maps` (applied to each E_t first).
        rel_eps: relative epsilon (>= 0) times the scale max|E_mu| of each input's mean map.
        abs_eps: absolute floor (> 0) added to the denominator.
        zero_tol: relative tolerance in [0, 1) for "mean and std both zero": a feature whose |E_mu| and
            E_sigma are both <= ``zero_tol`` times its input's scale max_j (|E_mu| + E_sigma) has an
            undefined CV (NaN, left out of the per-input CV summaries). 0 leaves out exact zeros only.

    Returns:
        :class:`ExplanationSummary` with maps (N, ...).

    Raises:
        ValueError: T < 2, NaN/inf values, negative ``rel_eps``, non-positive ``abs_eps``, ``zero_tol``
            outside [0, 1).

    References:
        Mulye & Valdenegro-Toro, "Uncertainty quantification for gradient-based explanations in neural
        networks", 2024, Sec. 3 (E_mu, E_sigma and CV = E_sigma / E_mu).
    """
    d = postprocess_maps(dist, absolute=absolute, channel_reduce=channel_reduce)
    if d.shape[0] < 2:
        raise ValueError(f"`dist` must hold T >= 2 realisations along axis 0, got T = {d.shape[0]}")
    check_positive(rel_eps, "rel_eps", strict=False)
    check_positive(abs_eps, "abs_eps")
    if not isinstance(zero_tol, (int, float)) or isinstance(zero_tol, bool) or not 0.0 <= float(zero_tol) < 1.0:
        raise ValueError(f"`zero_tol` must be a number in [0, 1), got {zero_tol!r}")
    d64 = d.double()
    mean = d64.mean(0)
    std = d64.std(0, correction=0)
    n = mean.shape[0]
    shape = (n, *([1] * (mean.ndim - 1)))
    scale = mean.abs().reshape(n, -1).amax(1)
    eps = rel_eps * scale + abs_eps
    cv = std / (mean.abs() + eps.reshape(shape))
    fmax = torch.finfo(d.dtype).max if d.is_floating_point() else torch.finfo(torch.float32).max
    cv = torch.nan_to_num(cv, nan=0.0, posinf=fmax).clamp_max(fmax)
    tol = (float(zero_tol) * (mean.abs() + std).reshape(n, -1).amax(1)).reshape(shape)
    defined = ~((mean.abs() <= tol) & (std <= tol))
    cv = torch.where(defined, cv, torch.full_like(cv, float("nan")))
    dt = d.dtype if d.is_floating_point() else torch.float32
    return ExplanationSummary(mean=mean.to(dt), std=std.to(dt), cv=cv.to(dt), eps=eps.to(dt), n_realisations=d.shape[0],
                              defined=defined)


@metric(higher_is_better=False, category="uncertainty")
def explanation_cv(dist: Any, *, absolute: bool = True, channel_reduce: str | None = None, rel_eps: float = 1e-8,
                   zero_tol: float = 1e-6) -> torch.Tensor:
    """Mean coefficient of variation of each input's explanation distribution, (N,) (lower = more certain).

    The mean runs over the features where the CV is defined (features whose mean and std are both ~0
    are left out, see :func:`summarize`); NaN for an input whose maps are zero everywhere.

    Args:
        dist: (T, N, ...) explanation distribution.
        absolute, channel_reduce, rel_eps, zero_tol: see :func:`summarize` (absolute maps by default).
    """
    return summarize(dist, absolute=absolute, channel_reduce=channel_reduce, rel_eps=rel_eps,
                     zero_tol=zero_tol).per_input()["cv_mean"]


@metric(higher_is_better=False, category="uncertainty")
def explanation_std(dist: Any, *, absolute: bool = True, channel_reduce: str | None = None) -> torch.Tensor:
    """Mean standard deviation over features of each input's explanation distribution, (N,)."""
    return summarize(dist, absolute=absolute, channel_reduce=channel_reduce).per_input()["std_mean"]


def _defined_values(values: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """(values, labels) as numpy arrays without the NaN values (inf is an error)."""
    v = check_tensor(values, "values", ndim=1, dtype=torch.float64, finite=False).detach().cpu().numpy()
    if np.isinf(v).any():
        raise ValueError(f"`values` contains {int(np.isinf(v).sum())} inf value(s)")
    y = check_labels(labels, "labels", n=len(v)).cpu().numpy()
    keep = ~np.isnan(v)
    return v[keep], y[keep]


def class_summary(values: Any, labels: Any, class_names: list[str] | None = None) -> pd.DataFrame:
    """Per-class statistics of a per-input scalar (e.g. ``cv_mean``).

    Args:
        values: (N,) float per-input values; NaN (an undefined summary, e.g. the CV of an all-zero
            map) is left out.
        labels: (N,) int64 class of each input (true or predicted).
        class_names: optional names indexed by label.

    Returns:
        DataFrame with columns class, name, n, mean, median, std, sorted by class (n counts the
        defined values).
    """
    v, y = _defined_values(values, labels)
    rows = []
    for c in np.unique(y):
        vc = v[y == c]
        rows.append(dict(cls=int(c), name=class_names[c] if class_names is not None else str(c), n=len(vc),
                         mean=float(vc.mean()), median=float(np.median(vc)), std=float(vc.std(ddof=1)) if len(vc) > 1 else float("nan")))
    return pd.DataFrame(rows).rename(columns={"cls": "class"})


def kruskal_by_class(values: Any, labels: Any) -> tuple[float, float]:
    """Kruskal-Wallis H test of a per-input scalar grouped by class.

    Args:
        values: (N,) float (NaN values, undefined summaries, are left out); labels: (N,) int64.
            Classes with fewer than 2 defined values are dropped.

    Returns:
        (H statistic, p-value).

    Raises:
        ValueError: fewer than two classes with at least 2 inputs.
    """
    v, y = _defined_values(values, labels)
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


def planted_distribution(n_inputs: int, n_features: int, n_realisations: int, *, cv: float = 0.5,
                         zero_share: float = 0.5, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """An explanation distribution whose CV is known: zero on some features, a planted CV on the rest.

    On a share ``zero_share`` of the features (chosen at random per input) every realisation is exactly 0,
    like Integrated Gradients with a zero baseline on black pixels. On the others
    E_t[n, j] = m[n, j] * (1 + cv * s_t[n, j]) with m ~ U(0.5, 1.5) and signs s = +1 for exactly half of
    the T realisations and -1 for the other half, so the population std is exactly ``cv * m`` and every
    defined feature has CV = ``cv``. A correct per-input summary reports ``cv``; counting the all-zero
    features as CV = 0 reports ``cv * (1 - zero_share)``.

    Args:
        n_inputs, n_features: N >= 1 inputs of D >= 2 features.
        n_realisations: T >= 2, even.
        cv: the planted CV in [0, 1] (<= 1 keeps every sample >= 0, like absolute maps).
        zero_share: share of the features that are zero in every realisation, in [0, 1).
        generator: torch generator for m, the signs and the zero features.

    Returns:
        (dist (T, N, D) float32, varying (N, D) bool: the features that are not all-zero).
    """
    n = check_int(n_inputs, "n_inputs", low=1)
    d = check_int(n_features, "n_features", low=2)
    t = check_int(n_realisations, "n_realisations", low=2)
    if t % 2:
        raise ValueError(f"`n_realisations` must be even (half +1, half -1 signs), got {t}")
    if not isinstance(cv, (int, float)) or not 0.0 <= float(cv) <= 1.0:
        raise ValueError(f"`cv` must be in [0, 1], got {cv!r}")
    if not isinstance(zero_share, (int, float)) or not 0.0 <= float(zero_share) < 1.0:
        raise ValueError(f"`zero_share` must be in [0, 1), got {zero_share!r}")
    n_zero = int(round(float(zero_share) * d))
    order = torch.rand(n, d, generator=generator).argsort(1)
    varying = torch.ones(n, d, dtype=torch.bool)
    varying.scatter_(1, order[:, :n_zero], False)
    m = 0.5 + torch.rand(n, d, generator=generator)
    signs = torch.cat([torch.ones(t // 2, n, d), -torch.ones(t // 2, n, d)])
    perm = torch.rand(t, n, d, generator=generator).argsort(0)
    signs = torch.gather(signs, 0, perm)
    dist = m * (1 + float(cv) * signs) * varying
    return dist.float(), varying


def pool_features(dist: Any, feature_mask: Any, *, absolute: bool = True, channel_reduce: str | None = "sum") -> torch.Tensor:
    """Sum an explanation distribution's maps within the cells of a feature mask, (T, N, K).

    Puts pixel maps (GBP, IG) on the resolution of a cell-based explainer (LIME on a grid of cells), so
    that their CVs can be compared like for like: a CV over 16 cells averages out pixel-level noise that
    a CV over 784 pixels keeps.

    Args:
        dist: (T, N, C, H, W) or (T, N, H, W) explanation distribution.
        feature_mask: (H, W) int64 cell index of every pixel, cells numbered 0..K-1 (e.g.
            :func:`~xcal_core.perturbations.masks.patch_feature_mask`).
        absolute, channel_reduce: map post-processing before pooling (:func:`postprocess_maps`);
            ``channel_reduce`` applies to 5-D distributions only.

    Returns:
        (T, N, K) float tensor: the sum of each cell's (absolute) attributions.
    """
    d = check_tensor(dist, "dist")
    if d.ndim not in (4, 5):
        raise ValueError(f"`dist` must be (T, N, C, H, W) or (T, N, H, W), got shape {tuple(d.shape)}")
    d = postprocess_maps(d, absolute=absolute, channel_reduce=channel_reduce if d.ndim == 5 else None)
    if d.ndim == 5:
        raise ValueError("`channel_reduce` must be 'sum' or 'max' to pool image distributions with channels")
    fm = torch.as_tensor(feature_mask)
    if fm.shape != d.shape[2:] or fm.is_floating_point():
        raise ValueError(f"`feature_mask` must be an integer (H, W) = {tuple(d.shape[2:])} map, got {tuple(fm.shape)}")
    ids = fm.reshape(-1).long().to(d.device)
    if int(ids.min()) < 0:
        raise ValueError("`feature_mask` must hold cell indices >= 0")
    k = int(ids.max()) + 1
    flat = d.reshape(d.shape[0], d.shape[1], -1)
    out = torch.zeros((d.shape[0], d.shape[1], k), dtype=flat.dtype, device=d.device)
    return out.index_add_(2, ids, flat)
