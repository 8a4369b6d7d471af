"""Metric metadata: every metric declares its direction and category.

Usage::

    @metric(higher_is_better=False, category="calibration")
    def ece(probs, labels): ...

    ece.higher_is_better  # False
    METRICS["ece"]        # the function
"""

from __future__ import annotations

from typing import Callable, Literal

Category = Literal["calibration", "faithfulness", "robustness", "complexity", "localization", "uncertainty", "similarity", "accuracy"]

METRICS: dict[str, Callable] = {}


def metric(*, higher_is_better: bool, category: Category, name: str | None = None) -> Callable[[Callable], Callable]:
    """Attach ``higher_is_better`` and ``category`` to a metric function and register it by name."""

    def wrap(fn: Callable) -> Callable:
        fn.higher_is_better = higher_is_better
        fn.category = category
        fn.metric_name = name or fn.__name__
        METRICS[fn.metric_name] = fn
        return fn

    return wrap


def higher_is_better(metric_name: str) -> bool:
    """Direction of a registered metric (raises with the known names when unknown)."""
    if metric_name not in METRICS:
        raise ValueError(f"unknown metric {metric_name!r}; registered: {sorted(METRICS)}")
    return METRICS[metric_name].higher_is_better
