"""Figures for ID-ExpO (notebook 05). Functions return ``(fig, ax)``; nothing is shown or saved.

Figures follow :mod:`xcal_core.viz.style`: at most 12 x 6 inches, one colour + marker + line style per
curve, readable log ticks, titles wrapped to the axes width.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .style import FONT, fit_title, line_styles, readable_log_axis

__all__ = [
    "plot_perturbation_curves",
    "plot_idexpo_tradeoff",
    "plot_delta_scatter",
    "plot_training_history",
    "plot_soft_vs_hard",
]


def _np(t: Any) -> np.ndarray:
    if hasattr(t, "detach"):
        t = t.detach().cpu().numpy()
    return np.asarray(t, dtype=float)


def plot_perturbation_curves(
    fractions: Any,
    curves_by_method: Mapping[str, Any],
    *,
    title: str | None = None,
    ylabel: str = "p(y | perturbed x)",
    ax: plt.Axes | None = None,
) -> tuple[plt.Figure, plt.Axes]:
    """Mean insertion or deletion curves (+/- one standard error) of several methods.

    Args:
        fractions: (L + 1,) x positions, fraction of features changed (e.g. ``curve_fractions``).
        curves_by_method: ``{label: (N, L + 1) curves}`` (e.g. ``perturbation_curve`` outputs).
        title, ylabel: labels. ax: optional Axes.

    Returns:
        (fig, ax).
    """
    if not curves_by_method:
        raise ValueError("`curves_by_method` must be a non-empty dict {label: (N, L + 1) curves}")
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(4.8, 3.6), layout="constrained")
    xs = _np(fractions)
    for (label, c), style in zip(curves_by_method.items(), line_styles(len(curves_by_method), n_points=len(xs))):
        c = _np(c)
        if c.ndim != 2 or c.shape[1] != xs.shape[0]:
            raise ValueError(f"curves of {label!r} must have shape (N, {xs.shape[0]}), got {c.shape}")
        m = c.mean(0)
        se = c.std(0, ddof=1) / np.sqrt(c.shape[0]) if c.shape[0] > 1 else np.zeros_like(m)
        (line,) = ax.plot(xs, m, label=label, **style)
        ax.fill_between(xs, m - se, m + se, color=line.get_color(), alpha=0.15, lw=0)
    ax.set_xlabel("fraction of features changed")
    ax.set_ylabel(ylabel)
    ax.set_ylim(-0.02, 1.02) if ylabel.startswith("p(") else None
    ax.grid(alpha=0.3)
    ax.legend(fontsize=FONT["legend"])
    fit_title(ax, title)
    return fig, ax


def plot_idexpo_tradeoff(sweep: pd.DataFrame, *, title: str | None = None, axes: Any = None) -> tuple[plt.Figure, Any]:
    """The paper's Fig. 2 analogue: mean Ins and mean 1 - Del against accuracy, one point per eta.

    Args:
        sweep: DataFrame from :func:`xcal_core.training.eta_sweep` (columns method, eta, accuracy, ins,
            one_minus_del); an optional column ``group`` (e.g. explainer) gives one marker per group.
        title: suptitle. axes: optional array of 2 Axes.

    Returns:
        (fig, axes) with axes[0] = Ins vs accuracy, axes[1] = 1 - Del vs accuracy.
    """
    need = {"method", "eta", "accuracy", "ins", "one_minus_del"}
    if not need <= set(sweep.columns):
        raise ValueError(f"`sweep` needs columns {sorted(need)}, got {list(sweep.columns)}")
    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.6), layout="constrained")
    else:
        fig = axes[0].figure
    colors = {"ce_only": "tab:gray", "idexpo": "tab:red", "pretrained": "black"}
    sw = sweep.copy()
    if "group" not in sw.columns:
        sw["group"] = ""
    markers = dict(zip(sw["group"].unique().tolist(), "os^Dv<>P*"))
    for (method, group), d in sw.groupby(["method", "group"], sort=False):
        label = f"{method}" + (f" ({group})" if group else "")
        for ax, col in zip(axes, ("ins", "one_minus_del")):
            ax.scatter(d["accuracy"], d[col], c=colors.get(method, "tab:blue"), marker=markers.get(group, "o"),
                       s=20 + 12 * d["eta"], alpha=0.8, label=label, edgecolors="k", linewidths=0.4)
    for ax, lab in zip(axes, ("mean insertion (higher is better)", "mean 1 - deletion (higher is better)")):
        ax.set_xlabel("test accuracy")
        ax.set_ylabel(lab)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    uniq = dict(zip(labels, handles))
    axes[0].legend(uniq.values(), uniq.keys(), fontsize=FONT["legend"], title="marker size ~ eta", title_fontsize=FONT["legend"])
    if title:
        fig.suptitle(title, fontsize=FONT["title"])
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    return fig, axes


def plot_delta_scatter(
    d_ins: Any,
    d_one_minus_del: Any,
    shares: Mapping[str, float] | None = None,
    *,
    title: str | None = None,
    ax: plt.Axes | None = None,
) -> tuple[plt.Figure, plt.Axes]:
    """The paper's Fig. 4 analogue: per-sample change in Ins vs change in 1 - Del after fine-tuning.

    Args:
        d_ins, d_one_minus_del: (N,) changes (after - before). shares: optional output of
            :func:`xcal_core.training.quadrant_shares`, printed in the quadrants.
        title: axes title. ax: optional Axes.

    Returns:
        (fig, ax).
    """
    a, b = _np(d_ins), _np(d_one_minus_del)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"`d_ins` and `d_one_minus_del` must be 1-D of the same length, got {a.shape} and {b.shape}")
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(4.4, 4.2), layout="constrained")
    both = (a > 0) & (b > 0)
    ax.scatter(a[~both], b[~both], s=8, alpha=0.5, c="tab:gray", label="not both better")
    ax.scatter(a[both], b[both], s=8, alpha=0.6, c="tab:red", label="both better")
    ax.axhline(0, c="k", lw=0.8)
    ax.axvline(0, c="k", lw=0.8)
    lim = max(np.abs(a).max(), np.abs(b).max(), 1e-3) * 1.1
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    if shares:
        for key, (x, y) in {"both_better": (0.97, 0.97), "ins_only": (0.97, 0.03), "del_only": (0.03, 0.97),
                            "neither": (0.03, 0.03)}.items():
            ax.text(x, y, f"{100 * shares[key]:.0f}%", transform=ax.transAxes, ha="right" if x > 0.5 else "left",
                    va="top" if y > 0.5 else "bottom", fontsize=10, weight="bold")
    ax.set_xlabel("change in insertion")
    ax.set_ylabel("change in 1 - deletion")
    ax.legend(fontsize=FONT["legend"], loc="lower center")
    fit_title(ax, title)
    return fig, ax


def plot_training_history(history: pd.DataFrame, *, title: str | None = None, axes: Any = None) -> tuple[plt.Figure, Any]:
    """Loss parts (left) and validation accuracy / Ins / Del (right) per epoch of a fine-tuning run.

    Args:
        history: :attr:`FinetuneResult.history`. title: suptitle. axes: optional 2 Axes.

    Returns:
        (fig, axes).
    """
    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.4), layout="constrained")
    else:
        fig = axes[0].figure
    h = history
    parts = [col for col in ("ce", "r_ins", "r_del") if col in h and h[col].notna().any()]
    for col, style in zip(parts, line_styles(len(parts), n_points=len(h))):
        axes[0].plot(h["epoch"], h[col], label=col, **style)
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("training loss part")
    axes[0].legend(fontsize=FONT["legend"])
    v = h[h["val_acc"].notna()]
    vals = (("val_acc", "accuracy"), ("val_ins", "Ins"), ("val_del", "Del"))
    for (col, lab), style in zip(vals, line_styles(len(vals), n_points=len(v))):
        axes[1].plot(v["epoch"], v[col], label=lab, **style)
    if "selected" in h and h["selected"].any():
        axes[1].axvline(int(h.loc[h["selected"], "epoch"].iloc[0]), c="k", ls="--", lw=0.8, label="selected")
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel("validation")
    axes[1].legend(fontsize=FONT["legend"])
    for ax in axes:
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=FONT["title"])
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    return fig, axes


def plot_soft_vs_hard(agreement: pd.DataFrame, *, title: str | None = None, ax: plt.Axes | None = None) -> tuple[plt.Figure, plt.Axes]:
    """Mean |soft - hard| of Ins and Del against the temperature tau (log-log, readable ticks).

    Args:
        agreement: DataFrame from :func:`xcal_core.training.soft_hard_agreement`. title: axes title. ax: optional Axes.

    Returns:
        (fig, ax).
    """
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(5.0, 3.6), layout="constrained")
    groups = list(agreement.groupby("metric"))
    styles = line_styles(2 * len(groups))
    for k, (metric, d) in enumerate(groups):
        mean_style, max_style = styles[2 * k], {**styles[2 * k + 1], "color": styles[2 * k]["color"]}
        ax.plot(d["tau"], d["mean_abs_diff"].clip(lower=1e-7), label=f"{metric}: mean |soft - hard|", **mean_style)
        ax.plot(d["tau"], d["max_abs_diff"].clip(lower=1e-7), label=f"{metric}: max", **max_style)
    ax.axhline(0.01, c="k", lw=0.8, ls="--", label="0.01")
    readable_log_axis(ax, "both")
    ax.set_xlabel("temperature tau")
    ax.set_ylabel("|soft - hard| score")
    ax.grid(alpha=0.3, which="major")
    ax.legend(fontsize=FONT["legend"])
    fit_title(ax, title)
    return fig, ax
