"""Tutorial figures of notebook 02 (Calibrate to Interpret): one small picture per metric, the maps
before / after calibration per method, and the temperature sweep in its two views.

Every function returns ``(fig, axes)``; the values shown (SSIM, TV, areas, Lipschitz ratios) are computed
by :mod:`xcal_core.metrics` and passed in: nothing is computed, shown or saved here. Figures follow
:mod:`xcal_core.viz.style` (at most 12 x 6 inches, a colorbar for every map scale, readable log ticks).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .style import COLORS, FONT, add_colorbar, fit_title, line_styles, panel_axes, readable_log_axis, slide_subplots

__all__ = [
    "plot_ssim_primer",
    "plot_deletion_primer",
    "plot_btr_primer",
    "plot_otsu_tv_primer",
    "plot_lipschitz_primer",
    "plot_maps_by_method",
    "plot_temperature_views",
]


def _np(t: Any) -> np.ndarray:
    return t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t)


def _map2d(m: Any, name: str) -> np.ndarray:
    a = _np(m).astype(float)
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2:
        raise ValueError(f"`{name}` must be one (H, W) map, got shape {a.shape}")
    return a


def _image(x: Any, name: str) -> tuple[np.ndarray, str | None]:
    a = _np(x).astype(float)
    if a.ndim == 3:
        a = np.moveaxis(a, 0, -1)
        if a.shape[-1] == 1:
            a = a[..., 0]
    if a.ndim not in (2, 3):
        raise ValueError(f"`{name}` must be one image (C, H, W) or (H, W), got shape {_np(x).shape}")
    return np.clip(a, 0, 1), ("gray" if a.ndim == 2 else None)


def _show_image(ax, x, name, title=None):
    im, cmap = _image(x, name)
    ax.imshow(im, cmap=cmap, vmin=0, vmax=1)
    ax.set_xticks([]), ax.set_yticks([])
    if title:
        fit_title(ax, title, fontsize=FONT["panel_title"])


def _show_map(ax, m, name, title=None, cmap="inferno", vmin=0.0, vmax=1.0):
    h = ax.imshow(_map2d(m, name), cmap=cmap, vmin=vmin, vmax=vmax)
    ax.set_xticks([]), ax.set_yticks([])
    if title:
        fit_title(ax, title, fontsize=FONT["panel_title"])
    return h


def plot_ssim_primer(map_a: Any, map_b: Any, value: float, labels: Sequence[str] = ("map A", "map B")):
    """Two saliency maps of one image and their SSIM (what notebook 02 compares before / after calibration).

    Args:
        map_a, map_b: (H, W) maps in [0, 1].
        value: their SSIM (:func:`xcal_core.metrics.ssim`).
        labels: panel titles.

    Returns:
        (fig, axes) with two map panels sharing one colorbar.
    """
    fig, axes = slide_subplots(1, 2, panel=(2.2, 2.2), extra=(0.6, 0.5))
    h = _show_map(axes[0], map_a, "map_a", labels[0])
    _show_map(axes[1], map_b, "map_b", labels[1])
    add_colorbar(axes[1], h, "saliency (0-1)")
    fig.suptitle(f"SSIM = {float(value):.2f} (1 = identical structure)", fontsize=FONT["title"])
    return fig, axes


def plot_deletion_primer(stages: Any, fractions: Sequence[float], curve: Any, curve_fractions: Any, area: float,
                         random_curve: Any = None, random_area: float | None = None, label: str = "method"):
    """What a deletion curve does: the image with its top pixels blurred away, and the score as it falls.

    Args:
        stages: (F, C, H, W) one image after deleting ``fractions`` of its pixels
            (:func:`xcal_core.metrics.deletion_stages`, one image).
        fractions: (F,) the deleted fractions of ``stages``.
        curve: (L + 1,) the image's normalized deletion curve.
        curve_fractions: (L + 1,) its x positions.
        area: its deletion area (:func:`xcal_core.metrics.deletion_area`).
        random_curve: optional (L + 1,) random-order curve of the same image (grey), for comparison.
        random_area: the random curve's area.
        label: legend label of ``curve``.

    Returns:
        (fig, axes): F image panels and the curve panel, areas shaded.
    """
    st = _np(stages)
    fr = list(fractions)
    if st.ndim != 4 or st.shape[0] != len(fr):
        raise ValueError(f"`stages` must be (len(fractions)={len(fr)}, C, H, W), got shape {st.shape}")
    xs, c = _np(curve_fractions).astype(float), _np(curve).astype(float)
    if c.shape != xs.shape:
        raise ValueError(f"`curve` has {c.shape} points but `curve_fractions` {xs.shape}")
    fig, axes = slide_subplots(1, len(fr) + 1, panel=(1.9, 2.0), extra=(1.2, 0.4),
                               gridspec_kw={"width_ratios": [1] * len(fr) + [1.8]})
    for ax, s, f in zip(axes[:-1], st, fr):
        _show_image(ax, s, "stages", f"{100 * f:.0f} % deleted")
    ax = axes[-1]
    ax.plot(xs, c, color=COLORS[0], lw=2, label=f"{label} (area {float(area):.2f})")
    ax.fill_between(xs, 0, c, color=COLORS[0], alpha=0.2)
    if random_curve is not None:
        r = _np(random_curve).astype(float)
        if r.shape != xs.shape:
            raise ValueError(f"`random_curve` has {r.shape} points but `curve_fractions` {xs.shape}")
        extra = "" if random_area is None else f" (area {float(random_area):.2f})"
        ax.plot(xs, r, color="0.4", lw=1.5, ls="--", label=f"random order{extra}")
    for f in fr:
        ax.axvline(f, color="0.7", lw=0.8, ls=":")
    ax.set_xlabel("fraction of pixels deleted")
    ax.set_ylabel("score / clean score")
    ax.set_ylim(0, max(1.05, float(np.nanmax(c)) * 1.05))
    ax.legend(fontsize=FONT["legend"], loc="upper right")
    fit_title(ax, "deletion curve: lower area = more faithful", fontsize=FONT["panel_title"])
    return fig, axes


def plot_btr_primer(method_area: Any, random_area: Any, label: str = "method"):
    """Better-than-random as a picture: each image's deletion area against its random-order area.

    Points under the diagonal beat the random order; BTR is their share.

    Args:
        method_area, random_area: (N,) per-image areas (the same images, the same scorer).
        label: the method's name.

    Returns:
        (fig, ax).
    """
    a, r = _np(method_area).astype(float).ravel(), _np(random_area).astype(float).ravel()
    if a.shape != r.shape or a.size == 0:
        raise ValueError(f"`method_area` and `random_area` must be non-empty and of one length, got {a.size}, {r.size}")
    fig, ax = slide_subplots(1, 1, panel=(3.6, 3.2))
    below = a < r
    ax.scatter(r[below], a[below], s=14, color=COLORS[0], marker="o", label=f"better than random ({below.mean():.0%})")
    ax.scatter(r[~below], a[~below], s=18, color=COLORS[1], marker="x", label=f"not better ({(~below).mean():.0%})")
    lo, hi = float(min(a.min(), r.min())), float(max(a.max(), r.max()))
    pad = 0.05 * (hi - lo + 1e-9)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.5", lw=1, ls=":")
    ax.set_xlim(lo - pad, hi + pad), ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlabel("random-order deletion area")
    ax.set_ylabel(f"{label} deletion area")
    ax.legend(fontsize=FONT["legend"], loc="upper left")
    fit_title(ax, f"BTR = {below.mean():.2f}: share of images under the diagonal", fontsize=FONT["panel_title"])
    return fig, ax


def plot_otsu_tv_primer(maps: dict, binarized: dict, values: dict):
    """Otsu-TV as a picture: each map, its Otsu foreground, and the total variation of that foreground.

    Args:
        maps: ``{label: (H, W) map in [0, 1]}`` (two or three examples, e.g. a smooth and a noisy map).
        binarized: ``{label: (H, W) bool}`` their Otsu foregrounds (:func:`xcal_core.metrics.otsu_binarize`).
        values: ``{label: float}`` their Otsu-TV (:func:`xcal_core.metrics.otsu_tv`).

    Returns:
        (fig, axes) of shape (2, len(maps)).
    """
    if not isinstance(maps, dict) or not maps:
        raise ValueError("`maps` must be a non-empty dict {label: (H, W) map}")
    missing = [k for k in maps if k not in binarized or k not in values]
    if missing:
        raise ValueError(f"`binarized` and `values` need an entry for every map; missing {missing}")
    fig, axes = slide_subplots(2, len(maps), panel=(2.0, 2.0), extra=(0.8, 0.4), squeeze=False)
    h = None
    for j, (k, m) in enumerate(maps.items()):
        h = _show_map(axes[0, j], m, f"maps[{k!r}]", k)
        _show_map(axes[1, j], np.asarray(_np(binarized[k]), dtype=float), f"binarized[{k!r}]",
                  f"Otsu-TV = {float(values[k]):.2g}", cmap="gray")
    add_colorbar(axes[0, -1], h, "saliency (0-1)")
    axes[0, 0].set_ylabel("map", fontsize=FONT["label"])
    axes[1, 0].set_ylabel("Otsu foreground", fontsize=FONT["label"])
    return fig, axes


def plot_lipschitz_primer(x: Any, x_neighbour: Any, map_x: Any, map_neighbour: Any, value: float):
    """The local Lipschitz ratio as a picture: a nearby input, its map, and how much the map moved.

    Args:
        x, x_neighbour: (C, H, W) the image and a neighbour in the l2 ball.
        map_x, map_neighbour: (H, W) their normalized saliency maps.
        value: ``||S(x) - S(x')|| / ||x - x'||`` for this pair.

    Returns:
        (fig, axes) with five panels: x, x' - x, S(x), S(x'), |S(x) - S(x')|.
    """
    d = _np(x_neighbour).astype(float) - _np(x).astype(float)
    if d.ndim != 3:
        raise ValueError(f"`x` and `x_neighbour` must be (C, H, W) images of one shape, got {_np(x).shape}")
    fig, axes = slide_subplots(1, 5, panel=(1.9, 2.0), extra=(0.9, 0.6))
    _show_image(axes[0], x, "x", "image x")
    lim = float(np.abs(d).max()) or 1.0
    hd = axes[1].imshow(d.sum(0), cmap="RdBu_r", vmin=-lim, vmax=lim)
    axes[1].set_xticks([]), axes[1].set_yticks([])
    fit_title(axes[1], f"x' - x (||.|| = {np.linalg.norm(d):.3f})", fontsize=FONT["panel_title"])
    add_colorbar(axes[1], hd, "pixel change")
    h = _show_map(axes[2], map_x, "map_x", "S(x)")
    _show_map(axes[3], map_neighbour, "map_neighbour", "S(x')")
    add_colorbar(axes[3], h, "saliency (0-1)")
    diff = np.abs(_map2d(map_x, "map_x") - _map2d(map_neighbour, "map_neighbour"))
    hm = _show_map(axes[4], diff, "diff", f"|S(x) - S(x')| (||.|| = {np.linalg.norm(diff):.2f})", cmap="magma",
                   vmax=max(float(diff.max()), 1e-6))
    add_colorbar(axes[4], hm, "map change")
    fig.suptitle(f"local Lipschitz ratio ||S(x) - S(x')|| / ||x - x'|| = {float(value):.3g} (the estimate is the max "
                 "over neighbours)", fontsize=FONT["title"])
    return fig, axes


def plot_maps_by_method(images: Any, maps: dict, n_show: int = 2, title: str | None = None):
    """Maps before / after calibration (C2I Fig. 1): a column per method, a row per (image, calibration).

    Args:
        images: float (N, C, H, W) images in [0, 1].
        maps: ``{method: {calibration: (N, H, W) maps in [0, 1]}}`` (at most 5 methods, so the figure has
            at most 6 columns); every method must list the same calibrations.
        n_show: images shown (rows = n_show x calibrations).
        title: optional figure title.

    Returns:
        (fig, axes) of shape (n_show * calibrations, 1 + len(maps)); one shared colorbar.
    """
    if not isinstance(maps, dict) or not maps:
        raise ValueError("`maps` must be a non-empty dict {method: {calibration: (N, H, W) maps}}")
    if len(maps) > 5:
        raise ValueError(f"at most 5 methods (6 columns), got {len(maps)}")
    cals = list(next(iter(maps.values())))
    if any(list(v) != cals for v in maps.values()):
        raise ValueError("every method in `maps` must list the same calibrations in the same order")
    imgs = _np(images)
    n_show = max(1, min(int(n_show), imgs.shape[0]))
    rows = [(i, c) for i in range(n_show) for c in cals]
    fig, axes, lay = panel_axes(len(rows), 1 + len(maps), (1.5, 1.5), extra=(1.6, 0.9 if title else 0.6), max_blocks=1)
    h = None
    for r, (i, cal) in enumerate(rows):
        _show_image(axes[r, 0], imgs[i], "images")
        axes[r, 0].set_ylabel(f"image {i}\n{cal.replace('_', ' ')}", fontsize=FONT["small"])
        for c, meth in enumerate(maps, start=1):
            h = _show_map(axes[r, c], maps[meth][cal][i], f"maps[{meth!r}][{cal!r}]")
    for c, label in enumerate(["image"] + [m.replace("_", " ") for m in maps]):
        fit_title(axes[0, c], label, fontsize=FONT["small"], width=lay.panel[0])
    add_colorbar(axes[0, -1], h, "saliency (0-1)")
    if title:
        fig.suptitle(title, fontsize=FONT["title"])
    return fig, axes


def plot_temperature_views(sweep: Any, fitted: float, views: dict | None = None, ece: str = "ece",
                           title: str | None = None):
    """MP deletion area over fixed temperatures in two views, and against the ECE (C2I Fig. 8).

    Left: each view's mean area against T (log axis, readable ticks), the fitted T as a dotted line.
    Right: the area of the first view against the ECE at each temperature, points labelled with their
    T; the over-confident side (T below the fitted T) and the under-confident side are separate series,
    each joined in temperature order (ECE falls along one and rises along the other, so one line through
    all points would zigzag).

    Args:
        sweep: DataFrame with one row per temperature: ``temperature``, the ECE column and the view columns.
        fitted: the fitted temperature.
        views: ``{column: legend label}`` (default ``{"inv_deletion_area": ..., "deletion_area": ...}``).
        ece: the ECE column.
        title: optional figure title.

    Returns:
        (fig, axes) with two panels.
    """
    views = dict(views or {"inv_deletion_area": "invariant score (fixed evaluator)",
                           "deletion_area": "own calibrated score (paper's form)"})
    cols = ["temperature", ece, *views]
    missing = [c for c in cols if c not in getattr(sweep, "columns", [])]
    if missing:
        raise ValueError(f"`sweep` lacks column(s) {missing}; got {list(getattr(sweep, 'columns', []))}")
    fitted = float(fitted)
    d = sweep.sort_values("temperature")
    t = d["temperature"].to_numpy(float)
    fig, axes = slide_subplots(1, 2, panel=(4.6, 3.4), extra=(0.4, 0.6 if title else 0.3))
    ax = axes[0]
    for (col, label), style in zip(views.items(), line_styles(len(views))):
        ax.plot(t, d[col].to_numpy(float), label=label, **style)
    ax.axvline(fitted, color="0.3", ls=":", lw=1.5, label=f"fitted T = {fitted:.2f}")
    ax.set_xscale("log")
    readable_log_axis(ax, "x")
    ax.set_xlabel("temperature T")
    ax.set_ylabel("mean MP deletion area")
    ax.legend(fontsize=FONT["legend"])
    fit_title(ax, "deletion area vs temperature", fontsize=FONT["panel_title"])
    ax = axes[1]
    first = next(iter(views))
    y, e = d[first].to_numpy(float), d[ece].to_numpy(float)
    for side, keep, color, marker in (("over-confident (T < fitted)", t < fitted, COLORS[0], "o"),
                                      ("under-confident (T >= fitted)", t >= fitted, COLORS[1], "s")):
        if keep.any():
            ax.plot(e[keep], y[keep], color=color, marker=marker, lw=1.2, ls="-", label=side)
    for ti, ei, yi in zip(t, e, y):
        ax.annotate(f"T={ti:g}", (ei, yi), textcoords="offset points", xytext=(4, 3), fontsize=FONT["small"])
    ax.set_xlabel("ECE at that temperature")
    ax.set_ylabel(f"mean MP deletion area ({views[first].split(' (')[0]})")
    ax.legend(fontsize=FONT["legend"])
    fit_title(ax, "deletion area vs ECE", fontsize=FONT["panel_title"])
    if title:
        fig.suptitle(title, fontsize=FONT["title"])
    return fig, axes
