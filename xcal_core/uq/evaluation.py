"""Modified insertion / deletion of explanation distributions (Mulye & Valdenegro-Toro 2024, Sec. 3.3).

Instead of scoring each explanation E_t on its own, features are ranked by the **mean map** E_mu, by
the **std map** E_sigma and **at random**, and the class score of the **mean prediction**
(1/T) sum_t softmax(f^(t)(x)) is tracked while the ranked features are deleted from x (or inserted
into the baseline). Lower deletion AUC and higher insertion AUC mean a more faithful ranking. The
individual samples E_t can be scored the same way (:func:`sample_perturbation_auc`) to see how the
mean map compares with the maps it averages.

All curves run on :func:`xcal_core.metrics.perturbation_curve` (batched over inputs and steps), with
the mean-prediction model evaluating all realisations in one pass per chunk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from .._validation import check_int, check_tensor
from ..metrics import curve_auc, curve_fractions, perturbation_curve
from ..models.stochastic import Realisations
from .summaries import ExplanationSummary

__all__ = ["RANKINGS", "MeanPrediction", "RankedCurves", "ranked_perturbation_curves", "sample_perturbation_auc",
           "top_ranked_share"]

RANKINGS = ("mean", "std", "random")


class MeanPrediction(nn.Module):
    """The mean prediction of T realisations as a module: mean softmax (classifiers) or mean output.

    Args:
        realisations: the T realisations (all are evaluated, ``realisation_batch`` at a time).
        output: ``"probability"`` (mean of the softmax, rows sum to 1) or ``"logit"`` (mean logit);
            regressors (1 output) always return the mean output.
        realisation_batch: realisations per forward pass (None = all T in one pass).
    """

    def __init__(self, realisations: Realisations, output: str = "probability", realisation_batch: int | None = None):
        super().__init__()
        if not isinstance(realisations, Realisations):
            raise TypeError(f"`realisations` must be a Realisations, got {type(realisations).__name__}")
        if output not in ("probability", "logit"):
            raise ValueError(f"unknown `output` {output!r}; expected one of ['probability', 'logit']")
        self.realisations = realisations
        self.output = output
        self.realisation_batch = len(realisations) if realisation_batch is None else check_int(realisation_batch, "realisation_batch", low=1)
        self._anchor = nn.Parameter(torch.zeros(0, device=realisations.device), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t_all = len(self.realisations)
        total = None
        for r0 in range(0, t_all, self.realisation_batch):
            idx = list(range(r0, min(t_all, r0 + self.realisation_batch)))
            with self.realisations.batched(idx, expand=True) as m:  # shared layers before the first stochastic one
                y = m(x).reshape(len(idx), len(x), -1)
            if y.shape[-1] > 1 and self.output == "probability":
                y = torch.softmax(y, -1)
            s = y.sum(0)
            total = s if total is None else total + s
        return total / t_all


@dataclass
class RankedCurves:
    """Insertion / deletion curves of several rankings.

    Attributes:
        fractions: (L + 1,) x axis in [0, 1].
        curves: {(ranking, mode): (N, L + 1) scores of the mean prediction}.
        auc: {(ranking, mode): (N,) trapezoid AUC}.
    """

    fractions: torch.Tensor
    curves: dict = field(default_factory=dict)
    auc: dict = field(default_factory=dict)

    def to_frame(self) -> pd.DataFrame:
        """Tidy AUCs: columns index, ranking, mode, auc."""
        rows = []
        for (rk, mode), a in self.auc.items():
            a = a.detach().cpu().numpy()
            rows.append(pd.DataFrame({"index": np.arange(len(a)), "ranking": rk, "mode": mode, "auc": a}))
        return pd.concat(rows, ignore_index=True)


def _mean_model(model: Any) -> tuple[nn.Module, str]:
    if isinstance(model, Realisations):
        return MeanPrediction(model, "probability").eval(), "output"
    if isinstance(model, nn.Module):
        return model.eval(), "probability"
    raise TypeError(f"`model` must be a Realisations or a torch.nn.Module, got {type(model).__name__}")


def ranked_perturbation_curves(
    model: Realisations | nn.Module,
    x: Any,
    summary: ExplanationSummary,
    target: Any,
    *,
    rankings: tuple[str, ...] = RANKINGS,
    modes: tuple[str, ...] = ("deletion", "insertion"),
    baseline: Any = 0.0,
    step: int = 1,
    max_fraction: float = 1.0,
    feature_mask: Any = None,
    batch_size: int = 256,
    generator: torch.Generator | None = None,
) -> RankedCurves:
    """Deletion / insertion curves of the mean prediction with features ranked by E_mu, E_sigma or at random.

    Args:
        model: the realisations (their mean softmax is tracked) or a single classifier returning logits
            (its softmax is tracked).
        x: inputs (N, ...) float32.
        summary: :class:`~xcal_core.uq.ExplanationSummary` of the inputs' explanation distributions; its
            maps are shaped like x or like x without the channel dim (channels move together).
        target: (N,) int64 class tracked per input (e.g. the mean prediction's class); regressors: 0.
        rankings: subset of ``("mean", "std", "random")``. The mean map ranks by its signed value (pass
            absolute maps to rank by magnitude); the random ranking draws uniform scores from ``generator``.
        modes: subset of ``("deletion", "insertion")``.
        baseline, step, max_fraction, feature_mask, batch_size: see :func:`~xcal_core.metrics.perturbation_curve`.
        generator: torch generator for the random ranking.

    Returns:
        :class:`RankedCurves` (on x's device).
    """
    m, score = _mean_model(model)
    x = check_tensor(x, "x")
    if not isinstance(summary, ExplanationSummary):
        raise TypeError(f"`summary` must be an ExplanationSummary (from summarize), got {type(summary).__name__}")
    bad = [r for r in rankings if r not in RANKINGS]
    if bad or not rankings:
        raise ValueError(f"`rankings` must be a non-empty subset of {list(RANKINGS)}, got {list(rankings)}")
    badm = [r for r in modes if r not in ("deletion", "insertion")]
    if badm or not modes:
        raise ValueError(f"`modes` must be a non-empty subset of ['deletion', 'insertion'], got {list(modes)}")
    if summary.mean.shape[0] != len(x):
        raise ValueError(f"`summary` describes {summary.mean.shape[0]} inputs but `x` has {len(x)}")
    maps = {"mean": summary.mean, "std": summary.std}
    if "random" in rankings:
        maps["random"] = torch.rand(summary.mean.shape, generator=generator).to(summary.mean.device)
    res = None
    for rk in rankings:
        for mode in modes:
            c = perturbation_curve(m, x, maps[rk].to(x.device), target, mode=mode, baseline=baseline, step=step,
                                   max_fraction=max_fraction, score=score, feature_mask=feature_mask, batch_size=batch_size)
            if res is None:
                res = RankedCurves(fractions=_fractions_for(x, step, max_fraction, feature_mask).to(c.device))
            res.curves[(rk, mode)] = c
            res.auc[(rk, mode)] = curve_auc(c, res.fractions.to(c.device))
    return res


def _fractions_for(x: torch.Tensor, step: int, max_fraction: float, feature_mask: Any) -> torch.Tensor:
    """The curve's x axis, counting features the way perturbation_curve does."""
    if feature_mask is not None:
        fm = torch.as_tensor(feature_mask)
        grid = x.shape[2:] if x.ndim > 2 else x.shape[1:]
        fm = fm.reshape(-1, int(np.prod(grid)))
        n_feat = max(int(torch.unique(row).numel()) for row in fm)
    else:
        n_feat = int(np.prod(x.shape[2:])) if x.ndim > 2 else int(x.shape[1])
    return curve_fractions(n_feat, step, max_fraction)


def sample_perturbation_auc(
    model: Realisations | nn.Module,
    x: Any,
    maps: Any,
    target: Any,
    *,
    mode: str = "deletion",
    baseline: Any = 0.0,
    step: int = 1,
    max_fraction: float = 1.0,
    feature_mask: Any = None,
    batch_size: int = 256,
) -> torch.Tensor:
    """AUC of every individual explanation sample E_t, tracked on the mean prediction, (T, N).

    Args:
        model: realisations (mean softmax tracked) or a classifier (softmax tracked).
        x: inputs (N, ...).
        maps: (T, N, ...) explanation samples (shaped like x, or without the channel dim).
        target: (N,) int64 tracked class.
        mode, baseline, step, max_fraction, feature_mask, batch_size: as :func:`ranked_perturbation_curves`.

    Returns:
        (T, N) float AUCs; all T x N curves run as one batched call.
    """
    m, score = _mean_model(model)
    x = check_tensor(x, "x")
    d = check_tensor(maps, "maps")
    if d.ndim < 3 or d.shape[1] != len(x):
        raise ValueError(f"`maps` must be (T, N, ...) with N = {len(x)}, got shape {tuple(d.shape)}")
    t_all, n = d.shape[:2]
    tgt = torch.as_tensor(target, device=x.device).reshape(-1)
    if tgt.numel() == 1:
        tgt = tgt.expand(n)
    fm = feature_mask
    if fm is not None:
        fm = torch.as_tensor(fm)
        if fm.ndim == x.ndim - 1 and fm.shape[0] == n and x.ndim > 2:
            fm = fm.repeat(t_all, *([1] * (fm.ndim - 1)))
    xr = x.repeat(t_all, *([1] * (x.ndim - 1)))
    c = perturbation_curve(m, xr, d.reshape(t_all * n, *d.shape[2:]).to(x.device), tgt.repeat(t_all), mode=mode,
                           baseline=baseline, step=step, max_fraction=max_fraction, score=score,
                           feature_mask=fm, batch_size=batch_size)
    return curve_auc(c, _fractions_for(x, step, max_fraction, feature_mask).to(c.device)).reshape(t_all, n)


def top_ranked_share(maps: Any, region: Any, fraction: float) -> torch.Tensor:
    """Share of each input's top-ranked features that lie in a region, (N,).

    A diagnostic for insertion / deletion: with a zero baseline, deleting a pixel that is already 0 (the
    black background of Fashion-MNIST) changes nothing, so a map that ranks background pixels first
    deletes slowly whatever it explains.

    Args:
        maps: (N, ...) rankings (e.g. a summary's mean map; larger = ranked first).
        region: (N, ...) bool, the same shape (e.g. ``x == 0``).
        fraction: the top fraction of features to look at, in (0, 1] (at least one feature).

    Returns:
        (N,) float: the share of the ``ceil(fraction * D)`` top-ranked features inside ``region``.
    """
    m = check_tensor(maps, "maps")
    r = torch.as_tensor(region)
    if r.shape != m.shape or r.dtype != torch.bool:
        raise ValueError(f"`region` must be a bool tensor shaped like `maps` {tuple(m.shape)}, got {r.dtype} {tuple(r.shape)}")
    if not isinstance(fraction, (int, float)) or not 0.0 < float(fraction) <= 1.0:
        raise ValueError(f"`fraction` must be in (0, 1], got {fraction!r}")
    n = m.shape[0]
    flat, reg = m.reshape(n, -1), r.reshape(n, -1).to(m.device)
    k = max(1, int(np.ceil(float(fraction) * flat.shape[1])))
    top = flat.topk(k, dim=1).indices
    return reg.gather(1, top).float().mean(1)
