"""Figures of notebook 04 (optimized aggregation). Each function takes an optional ``ax`` and returns ``(fig, ax)``.

Figures follow :mod:`xcal_core.viz.style`: at most 12 x 6 inches, titles wrapped to the axes width, mask
outlines white on a black halo, a colorbar for the maps' shared scale, one marker per curve, readable
log ticks.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch

from .style import (
    FONT,
    add_colorbar,
    finish_layout,
    fit_figsize,
    fit_title,
    line_styles,
    outline_mask,
    panel_axes,
    readable_log_axis,
)

__all__ = [
    "plot_metric_bars",
    "plot_weight_distributions",
    "plot_aggregation_maps",
    "plot_generalization_gap",
    "plot_theorem_check",
    "plot_method_count",
]

AGG_COLOR = "#c0392b"
SINGLE_COLOR = "#7f8c8d"


def _np(v: Any) -> np.ndarray:
    if isinstance(v, torch.Tensor):
        return v.detach().cpu().double().numpy()
    return np.asarray(v, dtype=float)


def _ax(ax, figsize):
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=fit_figsize(*figsize, keep_aspect=False), layout="constrained")
        return fig, ax
    return ax.figure, ax


def plot_metric_bars(values: Mapping[str, Any], *, title: str = "", ylabel: str = "", higher_is_better: bool = False, ax=None,
                     reference: float | None = None, reference_label: str = "reference"):
    """Mean +- 95 % CI per candidate as horizontal bars, sorted best first; aggregates (``agg_*``) in red.

    Args:
        values: candidate name -> per-image values (n,) (NaN ignored).
        title, ylabel: labels (``ylabel`` labels the value axis).
        higher_is_better: sort direction.
        ax: optional matplotlib Axes.
        reference: optional value drawn as a dashed vertical line across all bars (e.g. the score of a
            uniform map), labelled ``reference_label`` in a legend.
        reference_label: legend text of the reference line.

    Returns:
        (fig, ax).
    """
    if not values:
        raise ValueError("`values` is empty")
    names = list(values)
    means = np.array([np.nanmean(_np(values[n])) for n in names])
    cis = np.array([1.96 * np.nanstd(_np(values[n])) / np.sqrt(max(1, np.isfinite(_np(values[n])).sum())) for n in names])
    order = np.argsort(-means if higher_is_better else means)
    fig, ax = _ax(ax, (6, 0.35 * len(names) + 1.2))
    ypos = np.arange(len(names))
    colors = [AGG_COLOR if names[i].startswith("agg_") else SINGLE_COLOR for i in order]
    ax.barh(ypos, means[order], xerr=cis[order], color=colors, alpha=0.85, capsize=2)
    avail_pt = ax.get_position().height * fig.get_size_inches()[1] * 72
    ax.set_yticks(ypos, [names[i] for i in order], fontsize=max(6.0, min(FONT["tick"], 0.8 * avail_pt / max(len(names), 1))))
    ax.invert_yaxis()
    ax.set_xlabel(ylabel + (" (higher is better)" if higher_is_better else " (lower is better)"))
    fit_title(ax, title)
    ax.grid(axis="x", alpha=0.3)
    if reference is not None:
        ref = float(reference)
        if not np.isfinite(ref):
            raise ValueError(f"`reference` must be a finite number, got {reference!r}")
        ax.axvline(ref, color="k", ls="--", lw=1.2, label=reference_label)
        ax.legend(fontsize=FONT["legend"], loc="lower right")
    return fig, ax


def plot_weight_distributions(weights: Any, names: Sequence[str], *, title: str = "Per-image aggregation weights", ax=None):
    """Box plots of per-image convex weights per method (the paper's Figure 4).

    Args:
        weights: (N, k) weights on the simplex.
        names: the k method names.
        ax: optional Axes.

    Returns:
        (fig, ax).
    """
    w = _np(weights)
    if w.ndim != 2 or w.shape[1] != len(names):
        raise ValueError(f"`weights` must have shape (N, {len(names)}), got {w.shape}")
    fig, ax = _ax(ax, (0.7 * len(names) + 2, 3.2))
    ax.boxplot([w[:, i] for i in range(w.shape[1])], showfliers=True, flierprops={"markersize": 2})
    ax.set_xticks(np.arange(1, len(names) + 1), names, rotation=45, ha="right")
    ax.set_ylim(-0.03, 1.03)
    ax.set_ylabel("weight")
    fit_title(ax, title)
    ax.grid(axis="y", alpha=0.3)
    return fig, ax


def plot_aggregation_maps(images: Any, maps: Mapping[str, Any], *, masks: Any = None, scores: Mapping[str, Any] | None = None, cmap: str = "magma", axes=None):
    """Grid of inputs (rows) and attribution maps (columns), with ground-truth mask outlines.

    Every map is scaled to its own max, so all panels share one 0-1 colour scale, shown by one colorbar
    next to the top-right panel. A new figure fits 12 x 6 inches (see
    :func:`xcal_core.viz.style.grid_layout`).

    Args:
        images: (n, C, H, W) images in [0, 1].
        maps: column title -> (n, H, W) maps (each row scaled to its own max for display).
        masks: optional (n, H, W) bool object masks, outlined white on a black halo on the input and
            on every map.
        scores: optional column title -> (n,) values printed under each map (e.g. mass in mask).
        cmap: colormap of the maps.
        axes: optional array of Axes (n, 1 + len(maps)).

    Returns:
        (fig, axes).
    """
    import matplotlib.pyplot as plt

    img = _np(images)
    n = img.shape[0]
    cols = list(maps)
    tops, tw = [0], None
    if axes is None:
        fig, axes, lay = panel_axes(n, 1 + len(cols), (1.5, 1.7), extra=(0.8, 0.5))
        tops, tw = [r for r in range(n) if lay.block_top(r)], lay.panel[0]
    else:
        axes = np.asarray(axes).reshape(n, 1 + len(cols))
        fig = axes[0, 0].figure
    mk = None if masks is None else _np(masks).astype(bool)
    mappable = None
    for r in range(n):
        im = np.transpose(img[r], (1, 2, 0))
        axes[r, 0].imshow(im[..., 0] if im.shape[-1] == 1 else np.clip(im, 0, 1), cmap="gray" if im.shape[-1] == 1 else None)
        if mk is not None:
            outline_mask(axes[r, 0], mk[r])
        if r in tops:
            fit_title(axes[r, 0], "input", fontsize=FONT["small"], width=tw)
        for c, name in enumerate(cols):
            a = _np(maps[name])[r]
            mx = np.abs(a).max()
            h = axes[r, c + 1].imshow(a / mx if mx > 0 else a, cmap=cmap, vmin=0, vmax=1)
            mappable = h if mappable is None else mappable
            if mk is not None:
                outline_mask(axes[r, c + 1], mk[r])
            if r in tops:
                fit_title(axes[r, c + 1], name, fontsize=FONT["small"], width=tw)
            if scores is not None and name in scores:
                axes[r, c + 1].set_xlabel(f"{float(_np(scores[name])[r]):.2f}", fontsize=FONT["small"])
    for a in np.ravel(axes):
        a.set_xticks([])
        a.set_yticks([])
    if mappable is not None:
        add_colorbar(axes[0, -1], mappable, "map / its max")
    finish_layout(fig)
    return fig, axes


def plot_generalization_gap(ms: Sequence[int], gaps: Mapping[str, Any], *, relative: bool = True, ax=None, title: str = "Generalization gap of the estimated weights"):
    """Mean gap (held-out objective of the m-sample weights minus the held-out optimum) vs m, log-log,
    with the ``C / sqrt(m)`` shape of Theorem 4.3 anchored at the first point.

    Args:
        ms: sample counts (increasing).
        gaps: strategy -> (len(ms), N) per-image gaps.
        relative: divide each curve by its mean at the first m (curves of different metrics share one axis).
        ax: optional Axes.

    Returns:
        (fig, ax).
    """
    ms_a = np.asarray(ms, dtype=float)
    fig, ax = _ax(ax, (5, 3.6))
    for (name, g), style in zip(gaps.items(), line_styles(len(gaps))):
        g = _np(g)
        if g.shape[0] != len(ms_a):
            raise ValueError(f"`gaps[{name!r}]` must have {len(ms_a)} rows (one per m), got {g.shape}")
        if relative:
            first = np.nanmean(g[0])
            g = g / (first if first > 0 else 1.0)
        mean = np.nanmean(g, axis=1)
        ci = 1.96 * np.nanstd(g, axis=1) / np.sqrt(g.shape[1])
        style = {**style, "linestyle": "-"}  # dashed is reserved for the reference curves
        line = ax.errorbar(ms_a, mean, yerr=ci, capsize=2, label=name, **style)
        ref = mean[0] * np.sqrt(ms_a[0] / ms_a)
        ax.plot(ms_a, ref, ls="--", lw=1.2, color=line[0].get_color(), alpha=0.6, zorder=1.5)
    readable_log_axis(ax, "x")
    ax.set_ylim(bottom=min(0.0, ax.get_ylim()[0]))
    ax.set_xlabel("metric samples m used to fit the weights")
    ax.set_ylabel(f"held-out excess objective{' / its value at m = %g' % ms_a[0] if relative else ''}")
    fit_title(ax, title + "\n(dashed: C / sqrt(m) through the first point)")
    ax.legend(fontsize=FONT["legend"])
    ax.grid(alpha=0.3)
    return fig, ax


def plot_theorem_check(aggregate: Any, weighted: Any, *, ax=None, title: str = "Theorem 4.2 per image"):
    """Scatter of ``Q(phi^w)`` against ``sum_i w_i Q(phi^i)``; every point must lie on or below the diagonal.

    Args:
        aggregate, weighted: (N,) values.
        ax: optional Axes.

    Returns:
        (fig, ax).
    """
    a, b = _np(aggregate), _np(weighted)
    fig, ax = _ax(ax, (4, 4))
    ax.scatter(b, a, s=10, alpha=0.7, color=AGG_COLOR)
    hi = float(np.nanmax(np.concatenate([a, b]))) * 1.05
    ax.plot([0, hi], [0, hi], color="k", lw=0.8, ls="--", label="y = x")
    ax.set_xlabel(r"$\sum_i \omega_i Q(\phi^i)$")
    ax.set_ylabel(r"$Q(\phi^\omega)$")
    fit_title(ax, title)
    ax.legend(fontsize=FONT["legend"])
    ax.grid(alpha=0.3)
    return fig, ax


def plot_method_count(ks: Sequence[int], values: Mapping[str, Any], *, ylabel: str, ax=None, title: str = ""):
    """Mean metric (+- 95 % CI over images) of an aggregate as methods are added (Tables 8/9 analogue).

    Args:
        ks: number of methods at each point.
        values: curve name -> (len(ks), N) per-image values.
        ylabel: metric label.
        ax: optional Axes.

    Returns:
        (fig, ax).
    """
    fig, ax = _ax(ax, (5, 3.6))
    for (name, v), style in zip(values.items(), line_styles(len(values))):
        v = _np(v)
        mean = np.nanmean(v, axis=1)
        ci = 1.96 * np.nanstd(v, axis=1) / np.sqrt(v.shape[1])
        ax.errorbar(list(ks), mean, yerr=ci, capsize=2, label=name, **style)
    ax.set_xlabel("number of aggregated methods k")
    ax.set_ylabel(ylabel)
    fit_title(ax, title)
    ax.legend(fontsize=FONT["legend"])
    ax.grid(alpha=0.3)
    return fig, ax
