"""Calibration figures: reliability diagrams, calibration error vs perturbation level, ReCalX temperatures.

Every function takes an optional ``ax`` and returns ``(fig, ax)``; nothing is shown or saved. Figures follow
:mod:`xcal_core.viz.style` (slide-sized, one marker and line style per method, readable log ticks).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .style import FONT, fit_title, line_styles, readable_log_axis

__all__ = ["plot_reliability_diagram", "plot_ce_vs_level", "plot_temperatures", "METHOD_STYLE"]

METHOD_STYLE: dict[str, dict[str, Any]] = {
    "uncalibrated": {"color": "#d62728", "label": "uncalibrated", "marker": "o", "linestyle": "-"},
    "temperature_scaling": {"color": "#1f77b4", "label": "temperature scaling", "marker": "s", "linestyle": "--"},
    "recalx": {"color": "#2ca02c", "label": "ReCalX", "marker": "^", "linestyle": "-."},
}


def _axes(ax: Any, figsize: tuple[float, float]):
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    else:
        fig = ax.figure
    return fig, ax


def plot_reliability_diagram(
    probs: Any,
    labels: Any,
    ax: Any = None,
    *,
    n_bins: int = 15,
    binning: str = "uniform",
    title: str | None = None,
    color: str = "#1f77b4",
    label: str | None = None,
    show_counts: bool = True,
) -> tuple[Any, Any]:
    """Top-label reliability diagram: accuracy vs confidence per bin, with the ECE in the legend.

    Args:
        probs: (N, K) probabilities (rows summing to 1).
        labels: (N,) int64 true classes.
        ax: Axes to draw on (a new figure when None).
        n_bins, binning: as in :func:`xcal_core.metrics.ece`.
        title: axes title.
        color: bar colour.
        label: legend label prefix.
        show_counts: shade each bar by its share of the samples.

    Returns:
        ``(fig, ax)``.
    """
    from ..metrics.calibration import reliability_data

    rd = reliability_data(probs, labels, n_bins=n_bins, binning=binning)
    fig, ax = _axes(ax, (4.0, 4.0))
    ok = rd.count > 0
    centers = np.where(ok, rd.confidence, (rd.bin_lower + rd.bin_upper) / 2)
    widths = (rd.bin_upper - rd.bin_lower) if binning == "uniform" else np.full(len(rd.count), 1.0 / max(n_bins, 1))
    share = rd.count / max(rd.count.sum(), 1)
    alphas = 0.35 + 0.65 * share / share.max() if show_counts and share.max() > 0 else np.full(len(share), 0.8)
    for c, w, a, acc, o in zip(centers, widths, alphas, rd.accuracy, ok):
        if o:
            ax.bar(c, acc, width=w * 0.9, color=color, alpha=float(a), edgecolor="black", linewidth=0.4)
    ax.plot([0, 1], [0, 1], ls="--", color="gray", lw=1, label="perfect calibration")
    ax.plot([], [], color=color, lw=6, label=f"{label + ': ' if label else ''}ECE = {rd.ece:.3f}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top-label probability)")
    ax.set_ylabel("accuracy")
    ax.legend(loc="upper left", fontsize=FONT["legend"])
    fit_title(ax, title)
    return fig, ax


def plot_ce_vs_level(
    table: Any,
    ax: Any = None,
    *,
    metric: str = "ce_kl",
    methods: Sequence[str] | None = None,
    seed_col: str = "seed",
    ci: float = 0.95,
    title: str | None = None,
    logy: bool = False,
) -> tuple[Any, Any]:
    """Calibration error vs perturbation level, one line per method, with a confidence band over seeds.

    Args:
        table: DataFrame with columns ``method``, ``level``, ``metric`` and optionally ``seed_col``
            (several rows per (method, level) give a mean line and a t-interval band).
        ax: Axes to draw on (a new figure when None).
        metric: column to plot (``"ce_kl"``, ``"ece"``, ``"nll"``).
        methods: methods to draw, in order (default: those present, in ``METHOD_STYLE`` order).
        seed_col: column identifying repetitions (ignored when absent).
        ci: confidence level of the band.
        title: axes title (wrapped to the axes width).
        logy: logarithmic y axis (with :func:`~xcal_core.viz.style.readable_log_axis` ticks).

    Each method has its own colour, marker and line style (``METHOD_STYLE``, then
    :func:`~xcal_core.viz.style.line_styles` for other methods); earlier lines are drawn wider underneath
    later ones, so coinciding curves stay visible.

    Returns:
        ``(fig, ax)``.
    """
    from scipy import stats

    fig, ax = _axes(ax, (4.5, 3.2))
    present = list(dict.fromkeys(table["method"]))
    methods = [m for m in METHOD_STYLE if m in present] + [m for m in present if m not in METHOD_STYLE] if methods is None else list(methods)
    cycle = line_styles(len(methods), n_points=int(table["level"].nunique()))
    for i, m in enumerate(methods):
        sub = table[table["method"] == m]
        g = sub.groupby("level")[metric]
        mean, std, cnt = g.mean(), g.std(ddof=1), g.count()
        known = {k: v for k, v in METHOD_STYLE.get(m, {}).items() if k in ("color", "marker", "linestyle")}
        style = {**cycle[i], **known}
        ax.plot(mean.index, mean.values, label=METHOD_STYLE.get(m, {}).get("label", m), **style)
        if (cnt > 1).any():
            half = stats.t.ppf(0.5 + ci / 2, np.maximum(cnt.values - 1, 1)) * std.fillna(0).values / np.sqrt(cnt.values)
            ax.fill_between(mean.index, mean.values - half, mean.values + half, color=style["color"], alpha=0.15, lw=0)
    ax.set_xlabel("perturbation level (fraction of features replaced)")
    ax.set_ylabel({"ce_kl": "CE$_{KL}$", "ece": "ECE", "nll": "NLL"}.get(metric, metric))
    if logy:
        readable_log_axis(ax, "y")
    ax.set_xlim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=FONT["legend"])
    fit_title(ax, title)
    return fig, ax


def plot_temperatures(
    temperatures: Any,
    ax: Any = None,
    *,
    global_temperature: float | None = None,
    fitted: Any = None,
    title: str | None = None,
    label: str | None = None,
) -> tuple[Any, Any]:
    """ReCalX temperatures per level bin (step plot), with the global temperature as a reference line.

    Args:
        temperatures: (B,) per-bin temperatures (e.g. ``ReCalX.temperatures_``).
        ax: Axes to draw on.
        global_temperature: clean-data temperature-scaling T, drawn as a dashed line.
        fitted: (B,) bool, False bins (no data) are marked with crosses.
        title: axes title.
        label: legend label of the step line.

    Returns:
        ``(fig, ax)``.
    """
    t = np.asarray(temperatures, dtype=float).ravel()
    b = len(t)
    fig, ax = _axes(ax, (4.5, 3.0))
    edges = np.linspace(0, 1, b + 1)
    ax.stairs(t, edges, color=METHOD_STYLE["recalx"]["color"], lw=2, label=label or "ReCalX $T_b$")
    if fitted is not None:
        f = np.asarray(fitted, dtype=bool).ravel()
        centers = (edges[:-1] + edges[1:]) / 2
        if (~f).any():
            ax.plot(centers[~f], t[~f], "x", color="black", label="bin without data")
    if global_temperature is not None:
        ax.axhline(global_temperature, ls="--", color=METHOD_STYLE["temperature_scaling"]["color"], label="global TS")
    ax.axhline(1.0, ls=":", color="gray", lw=1)
    ax.set_xlabel("perturbation level bin")
    ax.set_ylabel("temperature T")
    ax.set_xlim(0, 1)
    ax.legend(fontsize=FONT["legend"])
    fit_title(ax, title)
    return fig, ax
