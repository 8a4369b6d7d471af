"""Figures of notebook 01 (ReCalX): calibration error with its estimator floor, reliability lines per level,
the floor against the kernel bandwidth, and remove-and-retrain curves.

Every function takes an optional ``ax`` and returns ``(fig, ax)``; nothing is shown or saved. Figures follow
:mod:`xcal_core.viz.style` (slide-sized, one colour, marker and line style per method; earlier lines drawn
wider underneath later ones, so coinciding curves stay visible).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from .calibration import METHOD_STYLE
from .style import FONT, fit_title, line_styles, readable_log_axis

__all__ = ["plot_ce_with_floor", "plot_reliability_lines", "plot_floor_vs_bandwidth", "plot_retrain_curves"]

_YLABEL = {"ce_kl": "CE$_{KL}$", "ece": "ECE (15 bins)", "ce_kl_excess": "CE$_{KL}$ − floor",
           "ece_excess": "ECE − floor"}


def _axes(ax: Any, figsize: tuple[float, float]):
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    else:
        fig = ax.figure
    return fig, ax


def _method_styles(methods: Sequence[str], n_points: int) -> dict[str, dict[str, Any]]:
    cycle = line_styles(len(methods), n_points=n_points)
    out = {}
    for i, m in enumerate(methods):
        known = {k: v for k, v in METHOD_STYLE.get(m, {}).items() if k in ("color", "marker", "linestyle")}
        out[m] = {**cycle[i], **known}
    return out


def _check_columns(table: Any, cols: Sequence[str], name: str = "table") -> None:
    missing = [c for c in cols if c not in table.columns]
    if missing:
        raise ValueError(f"`{name}` lacks the columns {missing}; it has {list(table.columns)}")


def plot_ce_with_floor(
    table: Any,
    ax: Any = None,
    *,
    metric: str = "ce_kl",
    methods: Sequence[str] | None = None,
    seed_col: str = "seed",
    n_sd: float = 2.0,
    title: str | None = None,
    legend: bool = True,
) -> tuple[Any, Any]:
    """A calibration error per perturbation level, one line per method and seed, with each method's floor as a band.

    The floor is the estimator's value on the same predictions with labels redrawn from them (perfect
    calibration): a value inside its method's band is indistinguishable from a calibrated model at this
    sample size. With several seeds every seed gets its own thin line (no interval is computed from
    seeds), and the band spans every seed's floor ± ``n_sd`` standard deviations.

    Args:
        table: DataFrame with columns ``method``, ``level``, ``metric``, ``<metric>_floor`` and
            ``<metric>_floor_sd`` (as written by :func:`xcal_core.calibration.level_metrics` with floors),
            and optionally ``seed_col``. For ``metric="ce_kl_excess"`` (or ``"ece_excess"``) the band is
            0 ± ``n_sd`` floor standard deviations.
        ax: Axes to draw on (a new figure when None).
        metric: ``"ce_kl"``, ``"ece"``, ``"ce_kl_excess"`` or ``"ece_excess"``.
        methods: methods to draw, in order (default: those present, in ``METHOD_STYLE`` order).
        seed_col: column identifying repetitions (ignored when absent).
        n_sd: half-width of the band in floor standard deviations.
        title: axes title (wrapped to the axes width).
        legend: draw the legend.

    Returns:
        ``(fig, ax)``.
    """
    base = metric[: -len("_excess")] if metric.endswith("_excess") else metric
    _check_columns(table, ["method", "level", metric, f"{base}_floor", f"{base}_floor_sd"])
    if not n_sd > 0:
        raise ValueError(f"`n_sd` must be > 0, got {n_sd!r}")
    fig, ax = _axes(ax, (4.5, 3.2))
    present = list(dict.fromkeys(table["method"]))
    methods = [m for m in METHOD_STYLE if m in present] + [m for m in present if m not in METHOD_STYLE] \
        if methods is None else list(methods)
    styles = _method_styles(methods, int(table["level"].nunique()))
    seeds = list(dict.fromkeys(table[seed_col])) if seed_col in table.columns else [None]
    excess = metric.endswith("_excess")
    for m in methods:
        sub = table[table["method"] == m]
        st = styles[m]
        lo = (sub[f"{base}_floor"] - n_sd * sub[f"{base}_floor_sd"]) if not excess else -n_sd * sub[f"{base}_floor_sd"]
        hi = (sub[f"{base}_floor"] + n_sd * sub[f"{base}_floor_sd"]) if not excess else n_sd * sub[f"{base}_floor_sd"]
        band = sub.assign(lo=lo, hi=hi).groupby("level").agg(lo=("lo", "min"), hi=("hi", "max"))
        ax.fill_between(band.index, band["lo"], band["hi"], color=st["color"], alpha=0.22, lw=0, zorder=1)
        if not excess:  # the floor's mean as a thin dashed line in the method's colour
            ax.plot(band.index, (band["lo"] + band["hi"]) / 2, color=st["color"], lw=0.8, ls=(0, (2, 2)), zorder=1.5)
        for k, s in enumerate(seeds):
            one = sub if s is None else sub[sub[seed_col] == s]
            one = one.sort_values("level")
            kw = dict(st)
            if len(seeds) > 1:
                kw.update(linewidth=kw["linewidth"] * 0.6, markersize=kw["markersize"] * 0.7, alpha=0.75)
            label = METHOD_STYLE.get(m, {}).get("label", m) if k == 0 else None
            ax.plot(one["level"], one[metric], label=label, **kw)
    if excess:
        ax.axhline(0.0, color="gray", lw=0.8, ls=":")
    ax.plot([], [], color="gray", alpha=0.3, lw=8,
            label=f"floor (dashed) ± {n_sd:g} sd" + (" (around 0)" if excess else "")
            + (f", {len(seeds)} seeds" if len(seeds) > 1 else ""))
    ax.set_xlabel("perturbation level")
    ax.set_ylabel(_YLABEL.get(metric, metric))
    ax.set_xlim(0, 1)
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(fontsize=FONT["legend"])
    fit_title(ax, title, fontsize=FONT["panel_title"])
    return fig, ax


def plot_reliability_lines(
    probs: Mapping[str, Any],
    labels: Any,
    ax: Any = None,
    *,
    n_bins: int = 15,
    min_count: int = 5,
    title: str | None = None,
    legend: bool = True,
) -> tuple[Any, Any]:
    """Reliability diagram of several calibrators of the same predictions, one line per method, with the accuracy.

    Each line joins the (mean confidence, accuracy) of the bins holding at least ``min_count`` samples;
    the marker area grows with the bin's share of the samples. The accuracy of the predictions (the
    same for every method: calibration by temperature never moves an arg-max) is written in the corner
    with each method's mean confidence below it in the method's colour: a well calibrated model's mean
    confidence sits near the accuracy.

    Args:
        probs: method name -> (N, K) probabilities of the same N inputs.
        labels: (N,) int64 true classes.
        ax: Axes to draw on (a new figure when None).
        n_bins: equal-width confidence bins.
        min_count: bins with fewer samples are not drawn.
        title: axes title.
        legend: draw the legend.

    Returns:
        ``(fig, ax)``.
    """
    import torch

    from ..metrics.calibration import reliability_data

    if not isinstance(probs, Mapping) or not probs:
        raise TypeError("`probs` must be a non-empty dict: method name -> (N, K) probabilities")
    fig, ax = _axes(ax, (3.6, 3.4))
    methods = list(probs)
    styles = _method_styles(methods, n_bins)
    y = torch.as_tensor(labels)
    acc, confs = None, []
    for m in methods:
        p = torch.as_tensor(probs[m])
        rd = reliability_data(p, y, n_bins=n_bins)
        ok = rd.count >= min_count
        st = dict(styles[m])
        ax.plot(rd.confidence[ok], rd.accuracy[ok], label=METHOD_STYLE.get(m, {}).get("label", m),
                **{k: v for k, v in st.items() if k != "markersize"}, markersize=0)
        share = rd.count[ok] / max(rd.count.sum(), 1)
        ax.scatter(rd.confidence[ok], rd.accuracy[ok], s=12 + 200 * share, color=st["color"], marker=st["marker"],
                   zorder=st["zorder"], alpha=0.8, edgecolors="black", linewidths=0.3)
        acc = float((p.argmax(1) == y.to(p.device)).double().mean())
        confs.append((float(p.max(1).values.double().mean()), st["color"]))
    ax.plot([0, 1], [0, 1], ls="--", color="gray", lw=1)
    ax.axhline(acc, color="black", lw=0.8, ls=":")
    # bottom right: the accuracy, then each method's mean confidence in its colour
    for i, (c, col) in enumerate(confs[::-1]):
        ax.text(0.98, 0.03 + 0.075 * (i + 1), f"conf {c:.2f}", transform=ax.transAxes, ha="right", va="bottom",
                fontsize=FONT["small"], color=col)
    ax.text(0.98, 0.03, f"accuracy {acc:.2f}", transform=ax.transAxes, ha="right", va="bottom", fontsize=FONT["small"])
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy")
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(fontsize=FONT["legend"], loc="upper left")
    fit_title(ax, title, fontsize=FONT["panel_title"])
    return fig, ax


def plot_floor_vs_bandwidth(
    table: Any,
    ax: Any = None,
    *,
    chosen: Mapping[str, float] | None = None,
    title: str | None = None,
) -> tuple[Any, Any]:
    """CE_KL and its floor as a function of the kernel bandwidth, one colour per set of predictions.

    Args:
        table: DataFrame with columns ``set`` (e.g. ``"clean"``, ``"level 0.75"``), ``bandwidth``,
            ``ce_kl``, ``ce_kl_floor``, ``ce_kl_floor_sd``. The value is a solid line with markers,
            the floor a band of ± 2 sd with a dashed centre line, in the set's colour.
        ax: Axes to draw on.
        chosen: label -> bandwidth, drawn as labelled vertical lines (e.g. the bandwidth chosen on clean
            predictions and the one chosen per level).
        title: axes title.

    Returns:
        ``(fig, ax)``.
    """
    _check_columns(table, ["set", "bandwidth", "ce_kl", "ce_kl_floor", "ce_kl_floor_sd"])
    fig, ax = _axes(ax, (4.8, 3.4))
    sets = list(dict.fromkeys(table["set"]))
    styles = line_styles(len(sets))
    for s, st in zip(sets, styles):
        sub = table[table["set"] == s].sort_values("bandwidth")
        ax.fill_between(sub["bandwidth"], sub["ce_kl_floor"] - 2 * sub["ce_kl_floor_sd"],
                        sub["ce_kl_floor"] + 2 * sub["ce_kl_floor_sd"], color=st["color"], alpha=0.15, lw=0)
        ax.plot(sub["bandwidth"], sub["ce_kl_floor"], color=st["color"], ls="--", lw=1.2)
        ax.plot(sub["bandwidth"], sub["ce_kl"], label=f"{s}", **{**st, "linestyle": "-"})  # dashed = floor
    ax.plot([], [], color="gray", ls="--", lw=1.2, label="floor (± 2 sd band)")
    for i, (name, h) in enumerate((chosen or {}).items()):
        ax.axvline(h, color="black", lw=0.9, ls=(0, (1 + i, 2)))
        ax.text(h, 0.98 - 0.08 * i, f" {name}", transform=ax.get_xaxis_transform(), fontsize=FONT["small"],
                va="top", ha="left")
    ax.set_xscale("log")
    readable_log_axis(ax, "x")
    ax.set(xlabel="kernel bandwidth h", ylabel="CE$_{KL}$ estimate")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=FONT["legend"])
    fit_title(ax, title, fontsize=FONT["panel_title"])
    return fig, ax


def plot_retrain_curves(
    table: Any,
    ax: Any = None,
    *,
    methods: Sequence[str] = ("uncalibrated", "recalx"),
    differ: Sequence[int] | None = None,
    title: str | None = None,
) -> tuple[Any, Any]:
    """Test-loss increase after removing the top-k features of each ranking and retraining (one dataset).

    Args:
        table: DataFrame with columns ``k``, ``method``, ``increase`` (relative, 0.1 = +10 %) and
            optionally ``seed`` (each seed's value is drawn as a small dot, the mean as the line).
        ax: Axes to draw on.
        methods: methods to draw (earlier ones wider underneath, so identical curves stay visible).
        differ: values of k where the two rankings differ (shaded).
        title: axes title.

    Returns:
        ``(fig, ax)``.
    """
    _check_columns(table, ["k", "method", "increase"])
    fig, ax = _axes(ax, (4.5, 3.2))
    styles = _method_styles(list(methods), int(table["k"].nunique()))
    for k in differ or []:
        ax.axvspan(k - 0.4, k + 0.4, color=METHOD_STYLE["recalx"]["color"], alpha=0.12, lw=0)
    for i, m in enumerate(methods):
        sub = table[table["method"] == m]
        mean = sub.groupby("k")["increase"].mean()
        ax.plot(mean.index, 100 * mean.values, label=METHOD_STYLE.get(m, {}).get("label", m), **styles[m])
        if "seed" in sub.columns and sub["seed"].nunique() > 1:
            jitter = (i - (len(methods) - 1) / 2) * 0.08
            ax.scatter(sub["k"] + jitter, 100 * sub["increase"], s=9, color=styles[m]["color"], alpha=0.5, lw=0)
    if differ:
        ax.plot([], [], color=METHOD_STYLE["recalx"]["color"], alpha=0.25, lw=8, label="rankings differ")
    ax.set_xticks(sorted(table["k"].unique()))
    ax.set(xlabel="top-k features removed", ylabel="test loss increase [%]")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=FONT["legend"])
    fit_title(ax, title, fontsize=FONT["panel_title"])
    return fig, ax
