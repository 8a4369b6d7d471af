"""Tidy tables of several metrics at once, ready for ``run.log_metrics`` (plus accuracy)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import pandas as pd
import torch

from .._validation import check_labels, check_probs, check_tensor
from ._meta import METRICS, metric

__all__ = ["accuracy", "calibration_table", "localization_table"]

CALIBRATION_DEFAULT = ("accuracy", "ece", "classwise_ece", "nll", "brier")


@metric(higher_is_better=True, category="accuracy")
def accuracy(probs: Any, labels: Any) -> float:
    """Top-1 accuracy of probabilities or logits (N, K) against labels (N,), in [0, 1].

    Raises:
        ValueError: not a non-empty (N, K) array, NaN / inf entries (their argmax means nothing), or a
            label count / range mismatch.
    """
    p = torch.as_tensor(probs)
    if p.ndim != 2 or p.numel() == 0:
        raise ValueError(f"`probs` must be a non-empty (N, K) tensor, got shape {tuple(p.shape)}")
    p = check_tensor(p, "probs", ndim=2, dtype=None)
    y = check_labels(labels, "labels", n_classes=p.shape[1], n=p.shape[0])
    return float((p.argmax(1) == y.to(p.device)).float().mean())


def _table(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["method", "metric", "value", "higher_is_better"])


def calibration_table(probs: Mapping[str, Any], labels: Any, metrics: Sequence[str] = CALIBRATION_DEFAULT,
                      **metric_kwargs: Any) -> pd.DataFrame:
    """Calibration metrics of several predictors on the same labels, one tidy row per (method, metric).

    Args:
        probs: ``{method name: (N, K) probabilities}`` (e.g. ``{"uncalibrated": p0, "temperature": p1}``).
        labels: (N,) int64 classes.
        metrics: registered metric names taking ``(probs, labels)``; ``n_bins=...`` etc. go in ``metric_kwargs``
            and are passed to the metrics that accept them.

    Returns:
        DataFrame with columns ``method, metric, value, higher_is_better``; add ``experiment, dataset, model``
        (e.g. with ``.assign``) before ``run.log_metrics``.
    """
    import inspect

    if not isinstance(probs, Mapping) or not probs:
        raise TypeError("`probs` must be a non-empty dict {method name: (N, K) probabilities}")
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"`metrics`: unknown {unknown}; registered: {sorted(METRICS)}")
    rows = []
    for name, p in probs.items():
        p = check_probs(p, f"probs[{name!r}]")
        for m in metrics:
            fn = METRICS[m]
            accepted = inspect.signature(fn).parameters
            kw = {k: v for k, v in metric_kwargs.items() if k in accepted}
            rows.append({"method": name, "metric": m, "value": float(fn(p, labels, **kw)), "higher_is_better": fn.higher_is_better})
    return _table(rows)


def localization_table(attributions: Mapping[str, torch.Tensor], masks: Any,
                       metrics: Sequence[str] = ("relevance_mass_accuracy", "pointing_game")) -> pd.DataFrame:
    """Mean localization scores of several attribution methods against the same object masks.

    Args:
        attributions: ``{method name: (N, C, H, W) or (N, H, W) attributions}``.
        masks: (N, H, W) bool object masks.
        metrics: registered localization metrics returning a per-sample (N,) tensor.

    Returns:
        DataFrame ``method, metric, value (mean over samples), higher_is_better``; the uniform-map
        reference ``mask_fraction`` (mean object area share) is added as method ``"uniform"``.
    """
    if not isinstance(attributions, Mapping) or not attributions:
        raise TypeError("`attributions` must be a non-empty dict {method name: attributions}")
    rows = []
    for name, a in attributions.items():
        for m in metrics:
            if m not in METRICS or METRICS[m].category != "localization":
                raise ValueError(f"`metrics`: {m!r} is not a registered localization metric")
            fn = METRICS[m]
            rows.append({"method": name, "metric": m, "value": float(fn(a, masks).mean()), "higher_is_better": fn.higher_is_better})
    area = torch.as_tensor(masks).float().flatten(1).mean(1).mean()
    rows.append({"method": "uniform", "metric": "relevance_mass_accuracy", "value": float(area), "higher_is_better": True})
    return _table(rows)
