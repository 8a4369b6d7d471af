"""Figures of the reproduction report: the claim scoreboard and metric summaries over seeds."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .style import FONT, fit_figsize, fit_title, line_styles

__all__ = ["plot_scoreboard", "plot_metric_summary", "key_figures"]

_VERDICT_COLORS = {"holds": "#2a9d8f", "fails": "#e76f51", "inconclusive": "#8d99ae", "mixed": "#e9c46a"}
_VERDICT_HATCH = {"holds": "", "fails": "//", "inconclusive": "..", "mixed": "xx"}


def plot_scoreboard(board: pd.DataFrame, ax: Any = None) -> tuple[Any, Any]:
    """Per notebook, how many claims hold, fail, are inconclusive or are mixed across runs.

    One stacked horizontal bar per notebook (and profile, when several are present); every segment is
    labelled with its count, so a verdict that occurs is always visible, and the colours carry a hatch
    as well (readable in greyscale).

    Args:
        board: output of :func:`xcal_core.report.scoreboard` (``verdict`` over runs per claim).
        ax: optional Axes.

    Returns:
        ``(fig, ax)``.
    """
    if board.empty:
        raise ValueError("`board` is empty: no claims were found in the given runs")
    if "verdict" not in board.columns:
        raise ValueError("`board` lacks the 'verdict' column; pass xcal_core.report.scoreboard(...)")
    key = board["notebook"].astype(str).str.slice(0, 2)
    if board["profile"].nunique() > 1:
        key = key + " [" + board["profile"].astype(str) + "]"
    counts = pd.crosstab(key, board["verdict"]).reindex(columns=list(_VERDICT_COLORS), fill_value=0)
    counts = counts.sort_index(ascending=False)
    if ax is None:
        fig, ax = plt.subplots(figsize=(9, min(6.0, 0.5 * len(counts) + 1.6)))
    else:
        fig = ax.figure
    y = np.arange(len(counts))
    left = np.zeros(len(counts))
    for v, color in _VERDICT_COLORS.items():
        n = counts[v].to_numpy()
        ax.barh(y, n, left=left, color=color, hatch=_VERDICT_HATCH[v], edgecolor="black", linewidth=0.5,
                label=f"{v} ({int(n.sum())})")
        for yi, (l, c) in enumerate(zip(left, n)):
            if c:
                ax.text(l + c / 2, yi, str(int(c)), ha="center", va="center", fontsize=11, fontweight="bold",
                        bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.8))
        left = left + n
    ax.set_yticks(y, counts.index.tolist(), fontsize=11)
    ax.set_xlim(0, left.max() * 1.05 + 0.5)
    ax.set_xlabel("number of claims (verdict over all runs read)")
    ax.set_title(f"{len(board)} claims of the papers on our data")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=4, fontsize=10, frameon=False)
    return fig, ax


def plot_metric_summary(summary: pd.DataFrame, metric: str, notebook: str | None = None, hue: str = "method",
                        ax: Any = None, dataset: str | None = None) -> tuple[Any, Any]:
    """Mean ± 95% CI of one metric: lines over ``level`` when levels exist, else bars per ``hue``.

    Lines get one colour, marker and line style each (:func:`xcal_core.viz.style.line_styles`); with more
    than 8 bars they are drawn horizontally so that their labels never overlap. A new figure is at most
    12 x 6 inches.

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
    has_levels = bool(df["level"].notna().any())
    n_bars = 0 if has_levels else int(df[hue].nunique())
    horizontal = n_bars > 8
    if ax is None:
        size = fit_figsize(6.0, 0.22 * n_bars + 1.6, keep_aspect=False) if horizontal else (5.6, 3.6)
        fig, ax = plt.subplots(figsize=size, layout="constrained")
    else:
        fig = ax.figure
    arrow = "↑" if bool(df["higher_is_better"].iloc[0]) else "↓"
    if has_levels:
        groups = list(df.dropna(subset=["level"]).groupby(hue, sort=True))
        n_levels = int(df["level"].nunique())
        for (name, g), style in zip(groups, line_styles(len(groups), n_points=n_levels)):
            g = g.groupby("level", as_index=False).agg(mean=("mean", "mean"), ci95=("ci95", "max")).sort_values("level")
            ax.plot(g["level"], g["mean"], label=str(name), **style)
            ax.fill_between(g["level"], g["mean"] - g["ci95"], g["mean"] + g["ci95"], color=style["color"], alpha=0.15, lw=0)
        ax.set_xlabel("level")
        ax.legend(fontsize=FONT["legend"], frameon=False)
        ax.set_ylabel(f"{metric} {arrow}")
    else:
        g = df.groupby(hue, as_index=False).agg(mean=("mean", "mean"), ci95=("ci95", "max"))
        if horizontal:
            y = np.arange(len(g))
            ax.barh(y, g["mean"], xerr=g["ci95"], capsize=2, color="#457b9d")
            avail_pt = ax.get_position().height * fig.get_size_inches()[1] * 72
            ax.set_yticks(y, g[hue].astype(str).tolist(), fontsize=max(6.0, min(FONT["tick"], 0.8 * avail_pt / len(g))))
            ax.invert_yaxis()
            ax.set_xlabel(f"{metric} {arrow}")
        else:
            ax.bar(g[hue].astype(str), g["mean"], yerr=g["ci95"], capsize=3, color="#457b9d")
            ax.tick_params(axis="x", labelrotation=30)
            for t in ax.get_xticklabels():
                t.set_ha("right")
                t.set_rotation_mode("anchor")
            ax.set_ylabel(f"{metric} {arrow}")
    where = " · ".join(str(v) for v in (notebook, dataset, df["model"].iloc[0] if "model" in df.columns and df["model"].nunique() == 1 else None) if v)
    fit_title(ax, f"{where + ' · ' if where else ''}{metric} (mean ± 95% CI over runs)", fontsize=10)
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
