"""Figures of notebook 02 (Calibrate to Interpret). Every function takes an optional ``ax`` and returns ``(fig, ax)``.

Inputs are the tidy DataFrames of :func:`xcal_core.metrics.saliency_report` / :func:`lipschitz_report`
(columns ``model``, ``method``, metric columns) or plain tensors; nothing is shown or saved here. Figures
follow :mod:`xcal_core.viz.style`: at most 12 x 6 inches, one colour + marker + line style per curve,
readable log ticks, a colorbar for every map scale.
"""

from __future__ import annotations

from typing import Any, Sequence

import matplotlib.pyplot as plt
import numpy as np

from .style import (
    COLORS,
    FONT,
    add_colorbar,
    finish_layout,
    fit_figsize,
    fit_title,
    line_styles,
    panel_axes,
    readable_log_axis,
)

__all__ = [
    "plot_reliability_overlay",
    "plot_c2i_boxplots",
    "plot_mean_deletion_curves",
    "plot_c2i_bars",
    "plot_temperature_sweep",
    "plot_saliency_comparison",
]

def _ax(ax, figsize=(5, 4)):
    if ax is None:
        fig, ax = plt.subplots(figsize=fit_figsize(*figsize, keep_aspect=False), layout="constrained")
    else:
        fig = ax.figure
    return fig, ax


def _np(t: Any) -> np.ndarray:
    return t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t)


def _check_columns(df: Any, cols: Sequence[str], name: str = "df") -> None:
    missing = [c for c in cols if c not in getattr(df, "columns", [])]
    if missing:
        raise ValueError(f"`{name}` lacks column(s) {missing}; got {list(getattr(df, 'columns', []))}")


def plot_reliability_overlay(probs: dict, labels: Any, n_bins: int = 15, ax=None, title: str | None = None):
    """Top-label reliability curves of several calibrations on one axis (C2I Fig. 2).

    Args:
        probs: ``{name: (N, K) probabilities}`` (e.g. uncalibrated, temperature scaling, Dirichlet).
        labels: (N,) int64 true classes.
        n_bins: equal-width confidence bins.
        ax: optional matplotlib Axes.
        title: optional title.

    Returns:
        (fig, ax). The legend shows each curve's binned ECE.
    """
    from ..metrics import reliability_data

    if not isinstance(probs, dict) or not probs:
        raise ValueError("`probs` must be a non-empty dict {name: (N, K) probabilities}")
    fig, ax = _ax(ax)
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls=":", label="perfect calibration")
    for (name, p), style in zip(probs.items(), line_styles(len(probs))):
        rd = reliability_data(p, labels, n_bins=n_bins)
        ok = rd.count > 0
        ax.plot(rd.confidence[ok], rd.accuracy[ok], label=f"{name} (ECE {rd.ece:.3f})", **style)
    ax.set_xlim(0, 1), ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (max probability)")
    ax.set_ylabel("accuracy")
    fit_title(ax, title or "Reliability diagram")
    ax.legend(fontsize=FONT["legend"], loc="upper left")
    return fig, ax


def plot_c2i_boxplots(df: Any, metric: str, ax=None, title: str | None = None, log: bool = False,
                         order: Sequence[str] | None = None, hue_order: Sequence[str] | None = None):
    """Boxplots of a per-image metric per method, one box per model (C2I Fig. 4 for ``ssim``, Fig. 9 for ``lipschitz``).

    Args:
        df: tidy DataFrame with columns ``model``, ``method`` and ``metric``; rows with NaN are dropped
            (e.g. the reference model's SSIM).
        metric: column to plot.
        ax: optional Axes. title: optional title. log: log-scaled y axis (readable ticks).
        order, hue_order: method order on the x axis and model order within a group.

    Returns:
        (fig, ax).
    """
    _check_columns(df, ["model", "method", metric])
    d = df.dropna(subset=[metric])
    methods = list(order) if order is not None else list(dict.fromkeys(d["method"]))
    models = list(hue_order) if hue_order is not None else list(dict.fromkeys(d["model"]))
    fig, ax = _ax(ax, (max(5, 1.6 * len(methods)), 4))
    width = 0.8 / max(1, len(models))
    colors = COLORS
    for j, model in enumerate(models):
        data = [d.loc[(d.method == m) & (d.model == model), metric].to_numpy() for m in methods]
        pos = np.arange(len(methods)) - 0.4 + width * (j + 0.5)
        keep = [k for k, v in enumerate(data) if len(v)]
        if not keep:
            continue
        bp = ax.boxplot([data[k] for k in keep], positions=pos[keep], widths=width * 0.9, patch_artist=True, showfliers=False)
        for box in bp["boxes"]:
            box.set_facecolor(colors[j % len(colors)])
            box.set_alpha(0.6)
        ax.plot([], [], color=colors[j % len(colors)], lw=6, alpha=0.6, label=model)
    ax.set_xticks(np.arange(len(methods)))
    ax.set_xticklabels(methods, rotation=15, ha="right", rotation_mode="anchor")
    ax.set_ylabel(metric)
    if log:
        readable_log_axis(ax, "y")
    fit_title(ax, title or metric)
    ax.legend(fontsize=FONT["legend"])
    return fig, ax


def plot_mean_deletion_curves(curves: dict, fractions: Any, ax=None, title: str | None = None, random: dict | None = None):
    """Mean normalized deletion curves, one line style per model (C2I Fig. 6).

    Args:
        curves: ``{label: (N, L + 1) curves}`` (e.g. ``{"uncalibrated": ..., "temperature_scaling": ...}``
            for one method).
        fractions: (L + 1,) fraction of pixels deleted.
        ax: optional Axes. title: optional title.
        random: optional ``{label: (N, L + 1)}`` random-baseline curves (drawn thin and grey).

    Returns:
        (fig, ax).
    """
    fig, ax = _ax(ax)
    fr = _np(fractions)
    styles = line_styles(len(curves), n_points=len(fr))
    for (name, c), style in zip(curves.items(), styles):
        c = _np(c)
        if c.shape[1] != fr.shape[0]:
            raise ValueError(f"`curves`[{name!r}] has {c.shape[1]} points but `fractions` has {fr.shape[0]}")
        ax.plot(fr, c.mean(0), label=name, **style)
    for style, (name, c) in zip(line_styles(len(random or {})), (random or {}).items()):
        ax.plot(fr, _np(c).mean(0), color="0.45", lw=1.2, ls=style["linestyle"], zorder=1.5, label=f"random ({name})")
    ax.set_xlabel("fraction of pixels deleted")
    ax.set_ylabel("score / clean score")
    fit_title(ax, title or "Deletion curves")
    ax.legend(fontsize=FONT["legend"])
    return fig, ax


def plot_c2i_bars(summary: Any, metric: str, ax=None, title: str | None = None,
                     order: Sequence[str] | None = None, hue_order: Sequence[str] | None = None):
    """Grouped bars of a summary metric per method and model (C2I Fig. 7: ``btr``, ``otsu_tv``, ``deletion_area``).

    Args:
        summary: DataFrame with columns ``model``, ``method`` and ``metric`` (one row per pair), e.g.
            :meth:`SaliencyReport.summary`.
        metric: the column to draw.
        ax, title, order, hue_order: as in :func:`plot_c2i_boxplots`.

    Returns:
        (fig, ax).
    """
    _check_columns(summary, ["model", "method", metric], "summary")
    methods = list(order) if order is not None else list(dict.fromkeys(summary["method"]))
    models = list(hue_order) if hue_order is not None else list(dict.fromkeys(summary["model"]))
    fig, ax = _ax(ax, (max(5, 1.6 * len(methods)), 4))
    width = 0.8 / max(1, len(models))
    for j, model in enumerate(models):
        vals = [summary.loc[(summary.method == m) & (summary.model == model), metric] for m in methods]
        vals = [float(v.iloc[0]) if len(v) else np.nan for v in vals]
        ax.bar(np.arange(len(methods)) - 0.4 + width * (j + 0.5), vals, width * 0.9, label=model, color=COLORS[j % len(COLORS)])
    ax.set_xticks(np.arange(len(methods)))
    ax.set_xticklabels(methods, rotation=15, ha="right", rotation_mode="anchor")
    ax.set_ylabel(metric)
    fit_title(ax, title or metric)
    ax.legend(fontsize=FONT["legend"])
    return fig, ax


def plot_temperature_sweep(sweep: Any, x: str = "temperature", y: str = "deletion_area", fitted: float | None = None,
                           ax=None, title: str | None = None, hue: str | None = "dataset"):
    """Mean MP deletion area against fixed temperatures (or their ECE), fitted temperature marked (C2I Fig. 8).

    Args:
        sweep: DataFrame with one row per (temperature[, dataset]) and columns ``x`` and ``y``.
        x: ``"temperature"`` (log-scaled axis with readable ticks) or ``"ece"``.
        y: the metric column.
        fitted: fitted temperature (or ``{hue value: T}``) drawn as a vertical line when ``x="temperature"``.
        ax, title: as above. hue: column separating lines (None = one line).

    Returns:
        (fig, ax).
    """
    _check_columns(sweep, [x, y], "sweep")
    fig, ax = _ax(ax)
    groups = [(None, sweep)] if hue is None or hue not in sweep.columns else list(sweep.groupby(hue, sort=False))
    for (name, d), style in zip(groups, line_styles(len(groups))):
        d = d.sort_values(x)
        line = ax.plot(d[x], d[y], label=name if name is not None else y, **style)[0]
        t = fitted.get(name) if isinstance(fitted, dict) else fitted
        if x == "temperature" and t is not None:
            ax.axvline(t, color=line.get_color(), ls=":", lw=1.5, label=f"fitted T = {t:.2f}" + (f" ({name})" if name else ""))
    if x == "temperature":
        readable_log_axis(ax, "x")
    ax.set_xlabel("temperature T" if x == "temperature" else "ECE (15 bins) at that temperature" if x == "ece" else x)
    ax.set_ylabel(f"mean {y}")
    fit_title(ax, title or f"MP {y} vs {x}")
    ax.legend(fontsize=FONT["legend"])
    return fig, ax


def plot_saliency_comparison(images: Any, maps: dict, n_show: int = 4, title: str | None = None, axes=None):
    """Qualitative grid: each row an image, then its saliency map under each (model, method) column (C2I Fig. 1/5).

    All maps share one colour scale (``inferno``, 0 to 1), shown by one colorbar next to the top-right
    panel. A new figure fits 12 x 6 inches (panels shrink, long row lists wrap into blocks; see
    :func:`xcal_core.viz.style.grid_layout`).

    Args:
        images: float (N, C, H, W) images in [0, 1].
        maps: ``{column label: (N, H, W) maps in [0, 1]}`` in display order.
        n_show: rows (images) to show.
        title: optional figure title.
        axes: optional (n_show, 1 + len(maps)) array of Axes.

    Returns:
        (fig, axes).
    """
    if not isinstance(maps, dict) or not maps:
        raise ValueError("`maps` must be a non-empty dict {label: (N, H, W) maps}")
    imgs = _np(images)
    n_show = min(int(n_show), imgs.shape[0])
    cols = 1 + len(maps)
    tops, tw = [0], None
    if axes is None:
        fig, axes, lay = panel_axes(n_show, cols, (1.6, 1.6), extra=(0.8, 0.9 if title else 0.6))
        tops, tw = [r for r in range(n_show) if lay.block_top(r)], lay.panel[0]
    else:
        axes = np.asarray(axes).reshape(n_show, cols)
        fig = axes[0, 0].figure
    mappable = None
    for r in range(n_show):
        im = np.moveaxis(imgs[r], 0, -1)
        axes[r, 0].imshow(im[..., 0] if im.shape[-1] == 1 else np.clip(im, 0, 1), cmap="gray" if im.shape[-1] == 1 else None)
        for c, (label, m) in enumerate(maps.items(), start=1):
            h = axes[r, c].imshow(_np(m)[r], cmap="inferno", vmin=0, vmax=1)
            mappable = h if mappable is None else mappable
            if r in tops:
                fit_title(axes[r, c], label, fontsize=FONT["small"], width=tw)
        if r in tops:
            fit_title(axes[r, 0], "image", fontsize=FONT["small"], width=tw)
    for a in axes.ravel():
        a.set_xticks([]), a.set_yticks([])
    add_colorbar(axes[0, -1], mappable, "shared 0-1 scale")
    if title:
        fig.suptitle(title, fontsize=FONT["title"])
    finish_layout(fig)
    return fig, axes
