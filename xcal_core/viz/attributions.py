"""Attribution figures: one heatmap, a samples x methods grid, feature-attribution bars.

Every function takes an optional ``ax`` / ``axes`` and returns ``(fig, ax)`` / ``(fig, axes)``;
nothing is shown or saved here (use ``run.save_figure``).

Colour conventions: signed maps use a diverging colormap centred on 0 (``"bwr"``: red = evidence
for the class, blue = against); non-negative maps (saliency, Grad-CAM, VarGrad) use a sequential
one (``"inferno"``). Maps are normalized per sample (see ``normalize``) so colours compare
within a panel, not absolute values across panels; every map carries a colorbar saying which scale
it shows (one per column in grids, where all rows share it). Ground-truth masks are outlined white
on a black halo (:func:`xcal_core.viz.style.outline_mask`); figures fit a 12 x 6 inch slide.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from .._validation import check_choice, check_tensor
from .style import COLORS, FONT, add_colorbar, finish_layout, fit_figsize, fit_title, outline_mask, panel_axes, wrap_text

__all__ = ["plot_attribution", "plot_attribution_grid", "plot_feature_attributions"]

_REDUCE = ("sum", "abs_sum", "mean", "max_abs")
_NORMALIZE = ("max_abs", "minmax", None)


def _to_numpy(t: Any) -> np.ndarray:
    if isinstance(t, torch.Tensor):
        return t.detach().float().cpu().numpy()
    return np.asarray(t, dtype=np.float32)


def _image_hwc(image: np.ndarray) -> np.ndarray:
    """(C, H, W) or (H, W) in [0, 1] -> (H, W) grey or (H, W, 3) RGB for imshow."""
    if image.ndim == 2:
        return np.clip(image, 0, 1)
    if image.ndim != 3:
        raise ValueError(f"`images` entries must be (C, H, W) or (H, W), got shape {image.shape}")
    if image.shape[0] == 3:
        return np.clip(np.transpose(image, (1, 2, 0)), 0, 1)
    return np.clip(image.mean(0), 0, 1)


def _map_2d(attr: np.ndarray, reduce: str) -> np.ndarray:
    """(C, H, W) or (H, W) attribution -> (H, W)."""
    if attr.ndim == 2:
        return attr
    if attr.ndim != 3:
        raise ValueError(f"attributions must be (C, H, W) or (H, W) per sample, got shape {attr.shape}")
    if reduce == "sum":
        return attr.sum(0)
    if reduce == "abs_sum":
        return np.abs(attr).sum(0)
    if reduce == "mean":
        return attr.mean(0)
    return np.abs(attr).max(0)


def _normalized(a: np.ndarray, normalize: str | None) -> np.ndarray:
    if normalize is None:
        return a
    if normalize == "max_abs":
        s = np.abs(a).max()
        return a / s if s > 0 else np.zeros_like(a)
    lo, hi = a.min(), a.max()
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


_SCALE_LABEL = {"max_abs": "a / max|a| per map", "minmax": "min-max scaled per map", None: "attribution"}


def _limits(a: np.ndarray, signed: bool, normalize: str | None) -> tuple[float, float]:
    """Colour limits of an (already normalized) map: symmetric when signed, [0, 1] when normalized."""
    if signed:
        lim = float(np.abs(a).max()) or 1.0
        return -lim, lim
    if normalize is not None:
        return 0.0, 1.0
    lo, hi = float(a.min()), float(a.max())
    return lo, (hi if hi > lo else lo + 1.0)


def _draw(ax, image, amap, *, cmap, overlay, alpha, mask, signed, normalize, lims=None):
    a = _normalized(amap, normalize)
    vmin, vmax = lims if lims is not None else _limits(a, signed, normalize)
    cm = cmap or ("bwr" if signed else "inferno")
    if overlay and image is not None:
        grey = image if image.ndim == 2 else image.mean(-1)
        ax.imshow(grey, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        im = ax.imshow(a, cmap=cm, vmin=vmin, vmax=vmax, alpha=alpha, interpolation="nearest")
    else:
        im = ax.imshow(a, cmap=cm, vmin=vmin, vmax=vmax, interpolation="nearest")
    if mask is not None:
        outline_mask(ax, _to_numpy(mask))
    ax.set_xticks([])
    ax.set_yticks([])
    return im


def plot_attribution(
    image: torch.Tensor | np.ndarray | None,
    attribution: torch.Tensor | np.ndarray,
    ax: Any = None,
    *,
    mask: torch.Tensor | np.ndarray | None = None,
    reduce: str = "sum",
    normalize: str | None = "max_abs",
    signed: bool | None = None,
    cmap: str | None = None,
    overlay: bool = True,
    alpha: float = 0.6,
    title: str | None = None,
    colorbar: bool = True,
) -> tuple[Any, Any]:
    """Draw one attribution map, optionally over its image and with a ground-truth contour.

    Args:
        image: (C, H, W) or (H, W) in [0, 1] (one sample), or None for the map alone.
        attribution: (C, H, W) or (H, W) raw attributions of that sample (channels are reduced with
            ``reduce``).
        ax: matplotlib Axes to draw on; a new figure is made when None.
        mask: optional (H, W) ground-truth mask (bool or {0, 1}); its outline is drawn white on a black
            halo, visible on any colour.
        reduce: channel reduction: ``"sum"``, ``"abs_sum"``, ``"mean"``, ``"max_abs"``.
        normalize: ``"max_abs"`` (default), ``"minmax"`` or None (raw values).
        signed: diverging colormap centred on 0 when True; sequential when False; None picks
            True when the reduced map has negative values.
        cmap: colormap name; default ``"bwr"`` (signed) / ``"inferno"`` (non-negative).
        overlay: draw the map semi-transparently over the grey image.
        alpha: opacity of the map when overlaid.
        title: axes title (wrapped to the panel width).
        colorbar: add a colorbar labelled with the scale (default True; before the shared figure
            style the default was False).

    Returns:
        ``(fig, ax)``.
    """
    import matplotlib.pyplot as plt

    check_choice(reduce, "reduce", _REDUCE)
    check_choice(normalize, "normalize", _NORMALIZE)
    amap = _map_2d(_to_numpy(attribution), reduce)
    img = None if image is None else _image_hwc(_to_numpy(image))
    if img is not None and img.shape[:2] != amap.shape:
        raise ValueError(f"`image` {img.shape[:2]} and `attribution` {amap.shape} have different sizes")
    if signed is None:
        signed = bool((amap < 0).any())
    if ax is None:
        fig, ax = plt.subplots(figsize=(3.6, 3.2) if colorbar else (3.2, 3.2), layout="constrained")
    else:
        fig = ax.figure
    im = _draw(ax, img, amap, cmap=cmap, overlay=overlay, alpha=alpha, mask=mask, signed=signed, normalize=normalize)
    if title:
        fit_title(ax, title, fontsize=FONT["panel_title"] + 1)
    if colorbar:
        add_colorbar(ax, im, _SCALE_LABEL[normalize])
    return fig, ax


def plot_attribution_grid(
    images: torch.Tensor | np.ndarray,
    attributions_by_method: Mapping[str, torch.Tensor | np.ndarray],
    masks: torch.Tensor | np.ndarray | None = None,
    titles: Sequence[str] | None = None,
    cmap: str | None = None,
    overlay: bool = True,
    axes: Any = None,
    *,
    reduce: str = "sum",
    normalize: str | None = "max_abs",
    alpha: float = 0.6,
    panel_size: float = 1.8,
    colorbar: bool = True,
) -> tuple[Any, Any]:
    """A grid of attribution maps: one row per sample, the image then one column per method.

    Each method column shares one colour scale (maps normalized per sample with ``normalize``, or raw
    values on limits common to the column when ``normalize=None``), shown by one colorbar under the
    column's last panel. A new figure fits 12 x 6 inches: panels shrink below ``panel_size`` when
    needed and long sample lists are wrapped into side-by-side blocks
    (:func:`xcal_core.viz.style.grid_layout`).

    Args:
        images: float (N, C, H, W) images in [0, 1].
        attributions_by_method: ``{method name: (N, C, H, W) or (N, H, W) attributions}``, e.g.
            ``{"saliency": explain(model, x, y, "saliency"), ...}``; the column order follows the
            mapping.
        masks: optional (N, H, W) ground-truth masks; their outlines (white on a black halo) are drawn on
            every panel.
        titles: optional N row labels (e.g. ``"circle (p=0.93)"``) shown on the image column.
        cmap: colormap for all maps; default per map (``"bwr"`` signed, ``"inferno"`` non-negative).
        overlay: draw each map over the grey image.
        axes: optional existing (N, 1 + M) array of Axes.
        reduce: channel reduction (``"sum"``, ``"abs_sum"``, ``"mean"``, ``"max_abs"``).
        normalize: per-panel normalization: ``"max_abs"``, ``"minmax"`` or None.
        alpha: map opacity when overlaid.
        panel_size: largest side of a panel in inches (shrunk so that the figure fits a slide).
        colorbar: one colorbar per method column (default True).

    Returns:
        ``(fig, axes)`` with ``axes`` a (N, 1 + M) numpy array of Axes (indexed by sample and column
        even when the rows are wrapped into blocks).

    Raises:
        ValueError: empty mapping, wrong ranks, or attributions whose N / H / W differ from the images'.
    """
    import matplotlib.pyplot as plt

    check_choice(reduce, "reduce", _REDUCE)
    check_choice(normalize, "normalize", _NORMALIZE)
    imgs = _to_numpy(check_tensor(images, "images", ndim=4, finite=False))
    n, _, h, w = imgs.shape
    if not isinstance(attributions_by_method, Mapping) or len(attributions_by_method) == 0:
        raise ValueError("`attributions_by_method` must be a non-empty dict {method name: attributions}")
    maps = {}
    for name, a in attributions_by_method.items():
        arr = _to_numpy(a)
        if arr.ndim not in (3, 4) or arr.shape[0] != n or arr.shape[-2:] != (h, w):
            raise ValueError(
                f"`attributions_by_method[{name!r}]` must be (N, C, H, W) or (N, H, W) with N={n}, H={h}, W={w}; "
                f"got shape {arr.shape}"
            )
        maps[name] = arr
    if masks is not None:
        mk = _to_numpy(masks)
        if mk.ndim == 4:
            mk = mk.max(1)
        if mk.shape != (n, h, w):
            raise ValueError(f"`masks` must be (N, H, W) = {(n, h, w)}, got shape {mk.shape}")
    else:
        mk = None
    if titles is not None and len(titles) != n:
        raise ValueError(f"`titles` must have one entry per sample ({n}), got {len(titles)}")
    n_cols = 1 + len(maps)
    tops, title_width, own_figure = [0], None, axes is None
    if axes is None:
        cb_room = 0.45 if colorbar else 0.0
        extra = (0.5 if titles is not None else 0.2, 0.5 + cb_room)
        fig, axes, lay = panel_axes(n, n_cols, (panel_size, panel_size), extra=extra)
        tops, title_width = [i for i in range(n) if lay.block_top(i)], lay.panel[0]
    else:
        axes = np.asarray(axes, dtype=object).reshape(n, n_cols) if np.size(axes) == n * n_cols else None
        if axes is None:
            raise ValueError(f"`axes` must hold {n} x {n_cols} Axes")
        fig = axes[0, 0].figure
    # one colour scale per method column: the same colormap and limits in every row
    col_maps = {name: [_normalized(_map_2d(arr[i], reduce), normalize) for i in range(n)] for name, arr in maps.items()}
    col_signed = {name: bool((arr < 0).any()) for name, arr in maps.items()}
    col_lims = {name: _limits(np.stack(col_maps[name]), col_signed[name], normalize) for name in maps}
    last = {}
    for i in range(n):
        img = _image_hwc(imgs[i])
        ax = axes[i, 0]
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
        if mk is not None:
            outline_mask(ax, mk[i])
        ax.set_xticks([])
        ax.set_yticks([])
        if titles is not None:
            ax.set_ylabel(str(titles[i]) if title_width is None else wrap_text(str(titles[i]), title_width, FONT["small"]),
                          fontsize=FONT["small"])
        for j, name in enumerate(maps, start=1):
            last[name] = _draw(axes[i, j], img, col_maps[name][i], cmap=cmap, overlay=overlay, alpha=alpha,
                               mask=None if mk is None else mk[i], signed=col_signed[name], normalize=None,
                               lims=col_lims[name])
    for i in tops:
        fit_title(axes[i, 0], "input", fontsize=FONT["panel_title"], width=title_width)
        for j, name in enumerate(maps, start=1):
            fit_title(axes[i, j], name.replace("_", " "), fontsize=FONT["panel_title"], width=title_width)
    if colorbar:
        # the scale is the same text for every column: said once under the figure when the figure is ours
        for j, name in enumerate(maps, start=1):
            add_colorbar(axes[n - 1, j], last[name], None if own_figure else _SCALE_LABEL[normalize],
                         location="bottom", size=0.07, pad=0.04, nticks=2)
        if own_figure:
            fig.supxlabel(f"colour scale (bar under each column): {_SCALE_LABEL[normalize]}", fontsize=FONT["small"])
    finish_layout(fig)
    return fig, axes


def plot_feature_attributions(
    attributions_by_method: Mapping[str, torch.Tensor | np.ndarray],
    feature_names: Sequence[str] | None = None,
    sample: int | None = None,
    ax: Any = None,
    *,
    top_k: int | None = None,
) -> tuple[Any, Any]:
    """Grouped horizontal bars of tabular attributions, one colour per method.

    Args:
        attributions_by_method: ``{method: (N, D) or (D,) attributions}``.
        feature_names: D names (default ``x0, x1, ...``).
        sample: row to show; None shows the mean absolute attribution over the N samples.
        ax: Axes to draw on; a new figure when None.
        top_k: show only the k features with the largest mean |attribution| over methods.

    Returns:
        ``(fig, ax)``.
    """
    import matplotlib.pyplot as plt

    if not isinstance(attributions_by_method, Mapping) or len(attributions_by_method) == 0:
        raise ValueError("`attributions_by_method` must be a non-empty dict {method name: attributions}")
    vals = {}
    d = None
    for name, a in attributions_by_method.items():
        arr = _to_numpy(a)
        if arr.ndim == 1:
            arr = arr[None]
        if arr.ndim != 2:
            raise ValueError(f"`attributions_by_method[{name!r}]` must be (N, D) or (D,), got shape {arr.shape}")
        if d is None:
            d = arr.shape[1]
        elif arr.shape[1] != d:
            raise ValueError(f"all attributions must have the same D; {name!r} has {arr.shape[1]}, expected {d}")
        if sample is None:
            v = np.abs(arr).mean(0)
        else:
            if not 0 <= sample < arr.shape[0]:
                raise ValueError(f"`sample` must be in [0, {arr.shape[0] - 1}], got {sample}")
            v = arr[sample]
        vals[name] = v
    names = list(feature_names) if feature_names is not None else [f"x{i}" for i in range(d)]
    if len(names) != d:
        raise ValueError(f"`feature_names` has {len(names)} entries, expected {d}")
    order = np.argsort(-np.mean([np.abs(v) for v in vals.values()], axis=0))
    if top_k is not None:
        order = order[:top_k]
    order = order[::-1]  # largest at the top
    if ax is None:
        fig, ax = plt.subplots(figsize=fit_figsize(6.0, 0.3 * len(order) + 1.4, keep_aspect=False), layout="constrained")
    else:
        fig = ax.figure
    height = 0.8 / len(vals)
    ypos = np.arange(len(order))
    for j, (name, v) in enumerate(vals.items()):
        ax.barh(ypos + (j - (len(vals) - 1) / 2) * height, v[order], height=height, label=name.replace("_", " "),
                color=COLORS[j % len(COLORS)])
    ax.set_yticks(ypos)
    # tick labels shrink with many features so that they never overlap (6 pt at the least; use top_k)
    avail_pt = ax.get_position().height * fig.get_size_inches()[1] * 72
    ax.set_yticklabels([names[i] for i in order], fontsize=max(6.0, min(FONT["tick"], 0.8 * avail_pt / max(len(order), 1))))
    ax.axvline(0, color="k", linewidth=0.8)
    ax.set_xlabel("mean |attribution|" if sample is None else f"attribution (sample {sample})")
    ax.legend(fontsize=FONT["legend"])
    return fig, ax
