"""Figures of the reproduction report: the claim scoreboard and metric summaries over seeds."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

__all__ = ["plot_scoreboard", "plot_metric_summary", "key_figures"]

_VERDICT_COLORS = {"holds": "#2a9d8f", "mixed": "#e9c46a", "fails": "#e76f51"}


def plot_scoreboard(board: pd.DataFrame, ax: Any = None) -> tuple[Any, Any]:
    """Horizontal bars: share of runs in which each claim held, coloured by verdict.

    Args:
        board: output of :func:`xcal_core.report.scoreboard`.
        ax: optional Axes.

    Returns:
        ``(fig, ax)``.
    """
    if board.empty:
        raise ValueError("`board` is empty: no claims were found in the given runs")
    labels = (board["notebook"].str.slice(0, 2) + " " + board["claim_id"] + " [" + board["profile"] + "]").tolist()
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 0.35 * len(board) + 1.2))
    else:
        fig = ax.figure
    y = np.arange(len(board))[::-1]
    ax.barh(y, board["held_share"], color=[_VERDICT_COLORS[v] for v in board["verdict"]], edgecolor="black", linewidth=0.4)
    for yi, (h, n) in zip(y, zip(board["held"], board["runs"])):
        ax.text(1.01, yi, f"{h}/{n}", va="center", fontsize=8)
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlim(0, 1.12)
    ax.set_xlabel("share of runs in which the claim held")
    ax.set_title("Claims of the papers on our data")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in _VERDICT_COLORS.values()]
    ax.legend(handles, list(_VERDICT_COLORS), loc="lower right", fontsize=8, frameon=False)
    return fig, ax


def plot_metric_summary(summary: pd.DataFrame, metric: str, notebook: str | None = None, hue: str = "method",
                        ax: Any = None, dataset: str | None = None) -> tuple[Any, Any]:
    """Mean ± 95% CI of one metric: lines over ``level`` when levels exist, else bars per ``hue``.

    Args:
        summary: output of :func:`xcal_core.report.metric_summary`.
        metric: metric name to draw.
        notebook: restrict to rows of this notebook (id or number prefix).
        dataset: restrict to one dataset; by default, when several are present, the one with the most
            rows (named in the title), so that different datasets' level grids are never mixed.
        hue: column that distinguishes series (default ``method``).
        ax: optional Axes.

    Returns:
        ``(fig, ax)``.
    """
    df = summary[summary["metric"] == metric]
    if notebook is not None and "notebook" in df.columns:
        df = df[df["notebook"].astype(str).str.startswith(notebook)]
    if df.empty:
        raise ValueError(f"no rows for metric {metric!r}" + (f" in notebook {notebook!r}" if notebook else "")
                         + f"; metrics present: {sorted(summary['metric'].unique())}")
    if "dataset" in df.columns and df["dataset"].nunique() > 1 or dataset is not None:
        dataset = dataset if dataset is not None else df["dataset"].value_counts().index[0]
        df = df[df["dataset"] == dataset]
        if df.empty:
            raise ValueError(f"no rows for metric {metric!r} on dataset {dataset!r}")
    if "model" in df.columns and df["model"].nunique() > 1 and df["level"].notna().any():
        df = df[df["model"] == df["model"].value_counts().index[0]]
    if ax is None:
        fig, ax = plt.subplots(figsize=(5.5, 3.4))
    else:
        fig = ax.figure
    arrow = "↑" if bool(df["higher_is_better"].iloc[0]) else "↓"
    if df["level"].notna().any():
        for name, g in df.dropna(subset=["level"]).groupby(hue, sort=True):
            g = g.groupby("level", as_index=False).agg(mean=("mean", "mean"), ci95=("ci95", "max")).sort_values("level")
            ax.plot(g["level"], g["mean"], marker="o", ms=3, label=str(name))
            ax.fill_between(g["level"], g["mean"] - g["ci95"], g["mean"] + g["ci95"], alpha=0.2)
        ax.set_xlabel("level")
        ax.legend(fontsize=8, frameon=False)
    else:
        g = df.groupby(hue, as_index=False).agg(mean=("mean", "mean"), ci95=("ci95", "max"))
        ax.bar(g[hue].astype(str), g["mean"], yerr=g["ci95"], capsize=3, color="#457b9d")
        ax.tick_params(axis="x", labelrotation=30)
    ax.set_ylabel(f"{metric} {arrow}")
    where = " · ".join(str(v) for v in (notebook, dataset, df["model"].iloc[0] if "model" in df.columns and df["model"].nunique() == 1 else None) if v)
    ax.set_title(f"{where + ' · ' if where else ''}{metric} (mean ± 95% CI over runs)", fontsize=10)
    return fig, ax


def key_figures(summary: pd.DataFrame, specs: list[str]) -> tuple[dict[str, Any], list[str]]:
    """Draw ``"<notebook number>:<metric>"`` figures from a metric summary.

    Returns:
        ``({figure_id: fig}, missing)``: one figure per spec whose rows exist, and the specs without rows.
    """
    figs, missing = {}, []
    for spec in specs:
        if ":" not in spec:
            raise ValueError(f"`specs`: {spec!r} must look like '01:ce_kl'")
        nb, metric = spec.split(":", 1)
        rows = summary[(summary["metric"] == metric) & summary["notebook"].astype(str).str.startswith(nb)] if len(summary) else summary
        if len(rows) == 0:
            missing.append(spec)
            continue
        fig, _ = plot_metric_summary(summary, metric, notebook=nb)
        figs[f"key_{nb}_{metric}"] = fig
    return figs, missing
