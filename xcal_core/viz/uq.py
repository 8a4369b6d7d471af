"""Figures for the uncertainty of explanations (notebook 03). Functions return ``(fig, ax)``; nothing is shown or saved.

Figures follow :mod:`xcal_core.viz.style`: at most 12 x 6 inches, a colorbar on every map, one colour +
marker + line style per curve.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy import stats

from .style import COLORS, FONT, add_colorbar, finish_layout, fit_figsize, fit_title, line_styles, panel_axes, wrap_text

__all__ = [
    "plot_uncertainty_maps",
    "plot_cv_by_class",
    "plot_ranked_curves",
    "plot_feature_uncertainty",
    "plot_cv_vs_entropy",
    "plot_cv_table",
]


def _np(t: Any) -> np.ndarray:
    if hasattr(t, "detach"):
        t = t.detach().cpu().numpy()
    return np.asarray(t, dtype=float)


def _image(img: Any) -> tuple[np.ndarray, str | None]:
    a = _np(img)
    if a.ndim == 3 and a.shape[0] in (1, 3):
        a = a[0] if a.shape[0] == 1 else np.transpose(a, (1, 2, 0))
    if a.ndim == 2:
        return a, "gray"
    return np.clip(a, 0, 1), None


def _map2d(m: Any) -> np.ndarray:
    a = _np(m)
    if a.ndim == 3:
        a = a.sum(0)
    if a.ndim != 2:
        raise ValueError(f"maps must be (H, W) or (C, H, W), got shape {a.shape}")
    return a


def plot_uncertainty_maps(
    image: Any,
    summaries: Mapping[str, Any],
    index: int = 0,
    *,
    columns: Sequence[str] = ("mean", "std", "cv"),
    cv_clip: float | None = None,
    axes: Any = None,
    title: str | None = None,
) -> tuple[plt.Figure, np.ndarray]:
    """Input image and the mean / std / CV maps of several (UE method x explainer) combinations.

    Every map has its own colorbar (the scales of explainers differ). A new figure fits 12 x 6 inches:
    with many rows (e.g. 4 UE methods x 3 explainers = 12) the rows are wrapped into side-by-side blocks
    and panels shrink (see :func:`xcal_core.viz.style.grid_layout`); ``axes[i, j]`` stays row ``i``'s
    panel ``j``.

    Args:
        image: (C, H, W) or (H, W) image in [0, 1].
        summaries: {row label: ExplanationSummary (maps (N, H, W) or (N, C, H, W))}; row ``index`` is shown.
        index: which input of the summaries to show.
        columns: subset and order of ``("mean", "std", "cv")``.
        cv_clip: upper colour limit of the CV column (None = the map's max).
        axes: optional (rows, 1 + len(columns)) array of axes.
        title: figure title.

    Returns:
        (fig, axes array).
    """
    if not summaries:
        raise ValueError("`summaries` is empty; expected at least one {label: ExplanationSummary}")
    bad = [c for c in columns if c not in ("mean", "std", "cv")]
    if bad or not columns:
        raise ValueError(f"`columns` must be a non-empty subset of ['mean', 'std', 'cv'], got {list(columns)}")
    rows = len(summaries)
    ncol = 1 + len(columns)
    tops, tw = [0], None
    if axes is None:
        fig, axes, lay = panel_axes(rows, ncol, (2.0, 1.6), extra=(0.6, 0.8 if title else 0.5))
        tops, tw = [i for i in range(rows) if lay.block_top(i)], lay.panel[0]
    else:
        axes = np.asarray(axes).reshape(rows, ncol)
        fig = axes[0, 0].figure
    img, cmap = _image(image)
    names = {"mean": "mean $E_\\mu$", "std": "std $E_\\sigma$", "cv": "CV"}
    cmaps = {"mean": "magma", "std": "viridis", "cv": "cividis"}
    for i, (label, s) in enumerate(summaries.items()):
        axes[i, 0].imshow(img, cmap=cmap, vmin=0, vmax=1)
        axes[i, 0].set_ylabel(label if tw is None else wrap_text(label, lay.panel[1], FONT["small"]), fontsize=FONT["small"])
        for j, col in enumerate(columns, start=1):
            m = _map2d(getattr(s, col)[index])
            vmax = cv_clip if (col == "cv" and cv_clip is not None) else None
            im = axes[i, j].imshow(m, cmap=cmaps[col], vmin=0 if col != "mean" or m.min() >= 0 else None, vmax=vmax)
            add_colorbar(axes[i, j], im)
            if i in tops:
                fit_title(axes[i, j], names[col], fontsize=FONT["panel_title"], width=tw)
        if i in tops:
            fit_title(axes[i, 0], "input", fontsize=FONT["panel_title"], width=tw)
    for a in axes.ravel():
        a.set_xticks([])
        a.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=FONT["title"])
    finish_layout(fig)
    return fig, axes


def plot_cv_by_class(
    values: Any,
    labels: Any,
    class_names: Sequence[str] | None = None,
    *,
    highlight: Sequence[int] = (),
    ylabel: str = "mean CV per image",
    title: str | None = None,
    ax: plt.Axes | None = None,
) -> tuple[plt.Figure, plt.Axes]:
    """Box plots of a per-input value (e.g. mean CV) grouped by class.

    Args:
        values: (N,) per-input values; labels: (N,) int class per input.
        class_names: names indexed by class.
        highlight: classes drawn in a contrasting colour (e.g. the most confused classes).
        ylabel, title: labels.
        ax: optional axes.
    """
    v, y = _np(values).ravel(), _np(labels).astype(int).ravel()
    if len(v) != len(y):
        raise ValueError(f"`values` and `labels` must have the same length, got {len(v)} and {len(y)}")
    classes = np.unique(y)
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(
        figsize=fit_figsize(max(4, 0.6 * len(classes) + 1.5), 3.4, keep_aspect=False), layout="constrained")
    bp = ax.boxplot([v[y == c] for c in classes], patch_artist=True, showfliers=False)
    for c, box in zip(classes, bp["boxes"]):
        box.set_facecolor("#e4572e" if c in set(highlight) else "#9ecae1")
    ax.set_xticks(range(1, len(classes) + 1))
    ax.set_xticklabels([class_names[c] if class_names is not None else str(c) for c in classes], rotation=30,
                       fontsize=FONT["small"], ha="right", rotation_mode="anchor")
    ax.set_xlabel("class")
    ax.set_ylabel(ylabel)
    if highlight:
        ax.plot([], [], "s", color="#e4572e", label="most confused")
        ax.legend(fontsize=FONT["legend"], loc="upper right")
    fit_title(ax, title)
    return fig, ax


def plot_ranked_curves(
    curves: Any,
    mode: str = "deletion",
    *,
    title: str | None = None,
    ylabel: str = "mean-prediction probability",
    ax: plt.Axes | None = None,
) -> tuple[plt.Figure, plt.Axes]:
    """Mean insertion or deletion curve (+- standard error over inputs) per ranking, AUC in the legend.

    Args:
        curves: :class:`~xcal_core.uq.RankedCurves`.
        mode: ``"deletion"`` or ``"insertion"``.
        title, ylabel: labels; ax: optional axes.
    """
    if mode not in ("deletion", "insertion"):
        raise ValueError(f"unknown `mode` {mode!r}; expected one of ['deletion', 'insertion']")
    keys = [k for k in curves.curves if k[1] == mode]
    if not keys:
        raise ValueError(f"`curves` holds no {mode} curves")
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(4.6, 3.4), layout="constrained")
    fr = _np(curves.fractions)
    colors = {"mean": "#1b9e77", "std": "#7570b3", "random": "#777777"}
    for (rk, _), style in zip(keys, line_styles(len(keys), n_points=len(fr))):
        c = _np(curves.curves[(rk, mode)])
        m, se = c.mean(0), c.std(0, ddof=1) / np.sqrt(len(c)) if len(c) > 1 else np.zeros(c.shape[1])
        auc = float(_np(curves.auc[(rk, mode)]).mean())
        style = {**style, "color": colors.get(rk, style["color"])}
        ax.plot(fr, m, label=f"rank by {rk} (AUC {auc:.3f})", **style)
        ax.fill_between(fr, m - se, m + se, color=style["color"], alpha=0.15, lw=0)
    ax.set_xlabel(f"fraction of features {'deleted' if mode == 'deletion' else 'inserted'}")
    ax.set_ylabel(ylabel)
    ax.set_xlim(0, 1)
    ax.legend(fontsize=FONT["legend"])
    fit_title(ax, title or mode)
    return fig, ax


def plot_feature_uncertainty(
    stats_by_method: Mapping[str, tuple[Any, Any]],
    feature_names: Sequence[str],
    *,
    ylabel: str = "mean |attribution|",
    title: str | None = None,
    ax: plt.Axes | None = None,
) -> tuple[plt.Figure, plt.Axes]:
    """Grouped bars of per-feature mean attribution with +-1 std error bars, one group per feature.

    Args:
        stats_by_method: {label: (mean (D,), std (D,))}, e.g. averaged over test rows.
        feature_names: D names.
        ylabel, title: labels; ax: optional axes.
    """
    if not stats_by_method:
        raise ValueError("`stats_by_method` is empty")
    d = len(feature_names)
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(
        figsize=fit_figsize(max(5, 0.7 * d + 2), 3.4, keep_aspect=False), layout="constrained")
    k = len(stats_by_method)
    width = 0.8 / k
    xs = np.arange(d)
    for i, (label, (m, s)) in enumerate(stats_by_method.items()):
        m, s = _np(m).ravel(), _np(s).ravel()
        if len(m) != d or len(s) != d:
            raise ValueError(f"`stats_by_method[{label!r}]` must hold two vectors of length {d}")
        ax.bar(xs + (i - (k - 1) / 2) * width, m, width, yerr=s, capsize=2, label=label, color=COLORS[i % len(COLORS)])
    ax.set_xticks(xs)
    ax.set_xticklabels(feature_names, rotation=30, fontsize=FONT["small"], ha="right", rotation_mode="anchor")
    ax.set_ylabel(ylabel)
    ax.axhline(0, color="k", lw=0.5)
    ax.legend(fontsize=FONT["legend"])
    fit_title(ax, title)
    return fig, ax


def plot_cv_vs_entropy(
    cv: Any,
    entropy: Any,
    *,
    label: str | None = None,
    xlabel: str = "predictive entropy (nats)",
    ylabel: str = "mean explanation CV",
    ax: plt.Axes | None = None,
) -> tuple[plt.Figure, plt.Axes]:
    """Scatter of per-input explanation CV against predictive uncertainty, Spearman rho in the legend."""
    c, e = _np(cv).ravel(), _np(entropy).ravel()
    if len(c) != len(e):
        raise ValueError(f"`cv` and `entropy` must have the same length, got {len(c)} and {len(e)}")
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(4.2, 3.4), layout="constrained")
    rho = stats.spearmanr(e, c).statistic if len(c) > 2 and np.ptp(c) > 0 and np.ptp(e) > 0 else float("nan")
    ax.scatter(e, c, s=10, alpha=0.6, label=f"{label + ': ' if label else ''}Spearman {rho:.2f}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=FONT["legend"])
    return fig, ax


def plot_cv_table(table: pd.DataFrame, *, title: str | None = None, fmt: str = ".3f", ax: plt.Axes | None = None,
                  label: str = "mean CV") -> tuple[plt.Figure, plt.Axes]:
    """Annotated heatmap of a (UE method x explainer) table of a CV summary (rows x columns of ``table``);
    ``label`` names the summary on the colorbar (e.g. ``"CV, ratio of totals"``)."""
    if not isinstance(table, pd.DataFrame) or table.empty:
        raise ValueError("`table` must be a non-empty DataFrame (rows: UE methods, columns: explainers)")
    vals = table.to_numpy(dtype=float)
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(
        figsize=fit_figsize(1.3 * table.shape[1] + 2.4, 0.5 * table.shape[0] + 1.4, keep_aspect=False), layout="constrained")
    im = ax.imshow(vals, cmap="YlOrRd", aspect="auto")
    add_colorbar(ax, im, label, size=0.04, nticks=4)
    ax.set_xticks(range(table.shape[1]))
    ax.set_xticklabels([str(c) for c in table.columns], fontsize=FONT["small"])
    ax.set_yticks(range(table.shape[0]))
    ax.set_yticklabels([str(i) for i in table.index], fontsize=FONT["small"])
    mid = np.nanmean(vals)
    for i in range(vals.shape[0]):
        for j in range(vals.shape[1]):
            ax.text(j, i, format(vals[i, j], fmt), ha="center", va="center", fontsize=FONT["small"],
                    color="white" if vals[i, j] > mid else "black")
    fit_title(ax, title)
    return fig, ax
