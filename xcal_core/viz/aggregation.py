"""Figures of notebook 04 (optimized aggregation). Each function takes an optional ``ax`` and returns ``(fig, ax)``."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch

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
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    return ax.figure, ax


def plot_metric_bars(values: Mapping[str, Any], *, title: str = "", ylabel: str = "", higher_is_better: bool = False, ax=None):
    """Mean +- 95 % CI per candidate as horizontal bars, sorted best first; aggregates (``agg_*``) in red.

    Args:
        values: candidate name -> per-image values (n,) (NaN ignored).
        title, ylabel: labels (``ylabel`` labels the value axis).
        higher_is_better: sort direction.
        ax: optional matplotlib Axes.

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
    ax.set_yticks(ypos, [names[i] for i in order])
    ax.invert_yaxis()
    ax.set_xlabel(ylabel + (" (higher is better)" if higher_is_better else " (lower is better)"))
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
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
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    return fig, ax


def plot_aggregation_maps(images: Any, maps: Mapping[str, Any], *, masks: Any = None, scores: Mapping[str, Any] | None = None, cmap: str = "magma", axes=None):
    """Grid of inputs (rows) and attribution maps (columns), with ground-truth mask outlines.

    Args:
        images: (n, C, H, W) images in [0, 1].
        maps: column title -> (n, H, W) maps (each row scaled to its own max for display).
        masks: optional (n, H, W) bool object masks, drawn as contours on every map.
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
    if axes is None:
        fig, axes = plt.subplots(n, 1 + len(cols), figsize=(1.5 * (1 + len(cols)), 1.6 * n), squeeze=False)
    else:
        axes = np.asarray(axes).reshape(n, 1 + len(cols))
        fig = axes[0, 0].figure
    mk = None if masks is None else _np(masks).astype(bool)
    for r in range(n):
        im = np.transpose(img[r], (1, 2, 0))
        axes[r, 0].imshow(im[..., 0] if im.shape[-1] == 1 else np.clip(im, 0, 1), cmap="gray" if im.shape[-1] == 1 else None)
        if r == 0:
            axes[r, 0].set_title("input", fontsize=8)
        for c, name in enumerate(cols):
            a = _np(maps[name])[r]
            mx = np.abs(a).max()
            axes[r, c + 1].imshow(a / mx if mx > 0 else a, cmap=cmap, vmin=0, vmax=1)
            if mk is not None:
                axes[r, c + 1].contour(mk[r], levels=[0.5], colors="cyan", linewidths=0.6)
            if r == 0:
                axes[r, c + 1].set_title(name, fontsize=8)
            if scores is not None and name in scores:
                axes[r, c + 1].set_xlabel(f"{float(_np(scores[name])[r]):.2f}", fontsize=7)
    for a in np.ravel(axes):
        a.set_xticks([])
        a.set_yticks([])
    fig.tight_layout()
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
    fig, ax = _ax(ax, (5, 3.5))
    for name, g in gaps.items():
        g = _np(g)
        if g.shape[0] != len(ms_a):
            raise ValueError(f"`gaps[{name!r}]` must have {len(ms_a)} rows (one per m), got {g.shape}")
        if relative:
            first = np.nanmean(g[0])
            g = g / (first if first > 0 else 1.0)
        mean = np.nanmean(g, axis=1)
        ci = 1.96 * np.nanstd(g, axis=1) / np.sqrt(g.shape[1])
        line = ax.errorbar(ms_a, mean, yerr=ci, marker="o", capsize=2, label=name)
        ref = mean[0] * np.sqrt(ms_a[0] / ms_a)
        ax.plot(ms_a, ref, ls="--", color=line[0].get_color(), alpha=0.5)
    ax.set_xscale("log")
    ax.set_ylim(bottom=min(0.0, ax.get_ylim()[0]))
    ax.set_xlabel("metric samples m used to fit the weights")
    ax.set_ylabel(f"held-out excess objective{' / its value at m = %g' % ms_a[0] if relative else ''}")
    ax.set_title(title + "\n(dashed: C / sqrt(m) through the first point)")
    ax.legend(fontsize=8)
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
    ax.set_title(title)
    ax.legend(fontsize=8)
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
    fig, ax = _ax(ax, (5, 3.5))
    for name, v in values.items():
        v = _np(v)
        mean = np.nanmean(v, axis=1)
        ci = 1.96 * np.nanstd(v, axis=1) / np.sqrt(v.shape[1])
        ax.errorbar(list(ks), mean, yerr=ci, marker="o", capsize=2, label=name)
    ax.set_xlabel("number of aggregated methods k")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig, ax
