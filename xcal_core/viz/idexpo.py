"""Figures of notebook 05 (ID-ExpO) that explain the method and its eta grid. Functions return ``(fig, ax)``.

* :func:`plot_soft_relaxation`: the soft insertion / deletion idea on one image, before it is used: the
  hard top-k mask of a curve step, the sigmoid masks that replace it at several temperatures, and the
  soft deletion and insertion inputs the model sees.
* :func:`plot_eta_grid`: test accuracy, Ins and 1 - Del of the checkpoint each method selects at every
  accuracy weight eta of the grid (mean over fine-tuning seeds, band = seed range).

Figures follow :mod:`xcal_core.viz.style` (slide size, colorbars, one colour + marker + line style per line).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .style import FONT, add_colorbar, fit_title, line_styles, slide_subplots

__all__ = ["plot_soft_relaxation", "plot_eta_grid"]


def _np(t: Any) -> np.ndarray:
    if hasattr(t, "detach"):
        t = t.detach().cpu().numpy()
    return np.asarray(t, dtype=float)


def _gray(img: np.ndarray) -> np.ndarray:
    """(C, H, W) or (H, W) in [0, 1] -> something imshow can draw ((H, W) grey or (H, W, 3))."""
    if img.ndim == 2:
        return img
    if img.shape[0] == 1:
        return img[0]
    return np.clip(np.moveaxis(img, 0, -1), 0, 1)


def plot_soft_relaxation(
    image: Any,
    phi: Any,
    hard: Any,
    alphas: Mapping[float, Any],
    *,
    feature_mask: Any = None,
    baseline: float = 0.0,
    show_tau: float | None = None,
    title: str | None = None,
) -> tuple[plt.Figure, Any]:
    """The soft insertion / deletion construction on one image, in one figure.

    Top row: the image, its explanation, the hard mask of one curve step (its top-k features) and the
    soft mask that replaces it at temperature ``show_tau``. Bottom row: every feature's mask value against
    its rank in the explanation (hard step vs sigmoids at each temperature), and the soft deletion input
    alpha * b + (1 - alpha) * x and insertion input alpha * x + (1 - alpha) * b at ``show_tau``.

    Args:
        image: (C, H, W) or (H, W) image in [0, 1].
        phi: (F,) explanation, one score per feature.
        hard: (F,) the hard 0/1 mask of the step (1 = among the top k).
        alphas: ``{tau: (F,) soft mask of the same step}`` (e.g. ``soft_masks(phi[None], tau=tau)[0, m]``).
        feature_mask: (H, W) int ids 0..F-1 mapping pixels to features; None when F = H * W.
        baseline: the replacement value b.
        show_tau: the temperature drawn in the image panels (default: the smallest in ``alphas``).
        title: suptitle.

    Returns:
        (fig, axes) with axes a (2, 4) array; the rank plot spans ``axes[1, 0]`` and ``axes[1, 1]``.
    """
    img = _np(image)
    if img.ndim not in (2, 3):
        raise ValueError(f"`image` must be (C, H, W) or (H, W), got shape {img.shape}")
    grid = img.shape[-2:]
    p, h = _np(phi).reshape(-1), _np(hard).reshape(-1)
    if p.shape != h.shape:
        raise ValueError(f"`phi` and `hard` must both have F entries, got {p.shape} and {h.shape}")
    if not alphas:
        raise ValueError("`alphas` must be a non-empty dict {tau: (F,) soft mask}")
    al = {float(t): _np(a).reshape(-1) for t, a in alphas.items()}
    for t, a in al.items():
        if a.shape != p.shape:
            raise ValueError(f"`alphas[{t:g}]` must have {p.shape[0]} entries, got {a.shape[0]}")
    if feature_mask is None:
        if p.shape[0] != grid[0] * grid[1]:
            raise ValueError(f"`phi` has {p.shape[0]} features but the image has {grid[0] * grid[1]} pixels; "
                             "pass `feature_mask`")
        ids = np.arange(p.shape[0]).reshape(grid)
    else:
        ids = _np(feature_mask).astype(int)
        if ids.shape != grid or ids.min() != 0 or ids.max() != p.shape[0] - 1:
            raise ValueError(f"`feature_mask` must be {grid} ids 0..{p.shape[0] - 1}")
    t_show = min(al) if show_tau is None else float(show_tau)
    if t_show not in al:
        raise ValueError(f"`show_tau` {show_tau} is not a key of `alphas` {sorted(al)}")
    a_show = al[t_show][ids]
    x = img if img.ndim == 3 else img[None]
    x_del = a_show[None] * baseline + (1 - a_show[None]) * x
    x_ins = a_show[None] * x + (1 - a_show[None]) * baseline
    k = int(h.sum())

    fig, axes = slide_subplots(2, 4, panel=(2.9, 2.6), layout="constrained")
    axes[1, 1].remove()
    rank_ax = axes[1, 0]
    rank_ax.set_subplotspec(axes[1, 0].get_gridspec()[1, 0:2])
    panels = [
        (axes[0, 0], _gray(img), "gray", "image x", None),
        (axes[0, 1], p[ids], "inferno", "explanation phi", "phi"),
        (axes[0, 2], h[ids], "gray_r", f"hard mask: top {k} features", "mask"),
        (axes[0, 3], a_show, "gray_r", f"soft mask alpha, tau {t_show:g}", "alpha"),
        (axes[1, 2], _gray(x_del), "gray", f"soft deletion input, tau {t_show:g}", None),
        (axes[1, 3], _gray(x_ins), "gray", f"soft insertion input, tau {t_show:g}", None),
    ]
    for ax, data, cmap, name, cbar in panels:
        lim = (0.0, 1.0) if cbar in ("mask", "alpha", None) else (None, None)
        im = ax.imshow(data, cmap=cmap, vmin=lim[0], vmax=lim[1], interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        fit_title(ax, name, fontsize=FONT["panel_title"])
        if cbar is not None:
            add_colorbar(ax, im, cbar)
    order = np.argsort(-p, kind="stable")
    ranks = np.arange(1, p.shape[0] + 1)
    styles = line_styles(len(al) + 1, n_points=p.shape[0])
    rank_ax.step(ranks, h[order], where="mid", label="hard (top k)", **{**styles[0], "marker": None})
    for (t, a), st in zip(sorted(al.items()), styles[1:]):
        rank_ax.plot(ranks, a[order], label=f"soft, tau = {t:g}", **st)
    rank_ax.axvline(k + 0.5, color="k", lw=0.8, ls="--")
    rank_ax.text(k + 0.5, 0.5, " threshold", fontsize=FONT["small"], va="center")
    rank_ax.set_xlabel("feature rank in the explanation (1 = highest phi)")
    rank_ax.set_ylabel("mask value alpha")
    rank_ax.set_ylim(-0.05, 1.05)
    rank_ax.grid(alpha=0.3)
    rank_ax.legend(fontsize=FONT["legend"], loc="upper right")
    if title:
        fig.suptitle(title, fontsize=FONT["title"])
    return fig, axes


def plot_eta_grid(sweep: pd.DataFrame, *, title: str | None = None, axes: Any = None,
                  methods: Mapping[str, str] | None = None) -> tuple[plt.Figure, Any]:
    """Test accuracy, Ins and 1 - Del of each method's selected checkpoint at every eta of the grid.

    Args:
        sweep: from :func:`xcal_core.training.eta_sweep` (columns method, eta, seed, accuracy, ins,
            one_minus_del); several seeds give the mean line and a min-max band.
        title: suptitle. axes: optional 3 Axes.
        methods: ``{method: label}`` to draw, in order (default ``{"ce_only": "CE-only", "idexpo": "ID-ExpO"}``).

    Returns:
        (fig, axes): accuracy, Ins and 1 - Del against eta (log scale when eta spans a factor > 4).
    """
    need = {"method", "eta", "accuracy", "ins", "one_minus_del"}
    if not need <= set(sweep.columns):
        raise ValueError(f"`sweep` needs columns {sorted(need)}, got {list(sweep.columns)}")
    methods = dict(methods or {"ce_only": "CE-only", "idexpo": "ID-ExpO"})
    present = [m for m in methods if (sweep["method"] == m).any()]
    if not present:
        raise ValueError(f"`sweep` has none of the methods {list(methods)}")
    if axes is None:
        fig, axes = slide_subplots(1, 3, panel=(3.8, 3.3))
    else:
        fig = axes[0].figure
    etas = np.sort(sweep["eta"].unique())
    styles = line_styles(len(present), n_points=len(etas))
    cols = (("accuracy", "test accuracy"), ("ins", "Ins (higher is better)"), ("one_minus_del", "1 - Del (higher is better)"))
    for m, st in zip(present, styles):
        d = sweep[sweep["method"] == m].groupby("eta")
        for ax, (col, _) in zip(axes, cols):
            mean, lo, hi = d[col].mean(), d[col].min(), d[col].max()
            ax.plot(mean.index, mean.values, label=methods[m], **st)
            ax.fill_between(mean.index, lo.values, hi.values, color=st["color"], alpha=0.15, lw=0)
    for ax, (_, lab) in zip(axes, cols):
        ax.set_xlabel("accuracy weight eta")
        ax.set_ylabel(lab)
        if etas.max() > 4 * etas.min() > 0:
            ax.set_xscale("log")
            ax.set_xticks(etas)
            ax.set_xticklabels([f"{e:g}" for e in etas])
            ax.minorticks_off()
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=FONT["legend"], title="band: seed range", title_fontsize=FONT["legend"])
    if title:
        fig.suptitle(title, fontsize=FONT["title"])
    return fig, axes
