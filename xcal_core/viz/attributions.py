"""Attribution figures: one heatmap, a samples x methods grid, feature-attribution bars.

Every function takes an optional ``ax`` / ``axes`` and returns ``(fig, ax)`` / ``(fig, axes)``;
nothing is shown or saved here (use ``run.save_figure``).

Colour conventions: signed maps use a diverging colormap centred on 0 (``"bwr"``: red = evidence
for the class, blue = against); non-negative maps (saliency, Grad-CAM, VarGrad) use a sequential
one (``"inferno"``). Maps are normalized per sample (see ``normalize``) so colours compare
within a panel, not absolute values across panels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from .._validation import check_choice, check_tensor

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


def _draw(ax, image, amap, *, cmap, overlay, alpha, mask, signed, normalize):
    import matplotlib.pyplot as plt  # noqa: F401  (backend chosen by the caller)

    a = _normalized(amap, normalize)
    if signed:
        lim = float(np.abs(a).max()) or 1.0
        vmin, vmax = -lim, lim
        cm = cmap or "bwr"
    else:
        vmin, vmax = (0.0, 1.0) if normalize is not None else (float(a.min()), float(a.max()) or 1.0)
        cm = cmap or "inferno"
    if overlay and image is not None:
        grey = image if image.ndim == 2 else image.mean(-1)
        ax.imshow(grey, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        im = ax.imshow(a, cmap=cm, vmin=vmin, vmax=vmax, alpha=alpha, interpolation="nearest")
    else:
        im = ax.imshow(a, cmap=cm, vmin=vmin, vmax=vmax, interpolation="nearest")
    if mask is not None:
        m = _to_numpy(mask).astype(float)
        if m.ndim == 3:
            m = m.max(0)
        if m.min() != m.max():
            ax.contour(m, levels=[0.5], colors="lime", linewidths=1.2)
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
    colorbar: bool = False,
) -> tuple[Any, Any]:
    """Draw one attribution map, optionally over its image and with a ground-truth contour.

    Args:
        image: (C, H, W) or (H, W) in [0, 1] (one sample), or None for the map alone.
        attribution: (C, H, W) or (H, W) raw attributions of that sample (channels are reduced with
            ``reduce``).
        ax: matplotlib Axes to draw on; a new figure is made when None.
        mask: optional (H, W) ground-truth mask (bool or {0, 1}); its outline is drawn in green.
        reduce: channel reduction: ``"sum"``, ``"abs_sum"``, ``"mean"``, ``"max_abs"``.
        normalize: ``"max_abs"`` (default), ``"minmax"`` or None (raw values).
        signed: diverging colormap centred on 0 when True; sequential when False; None picks
            True when the reduced map has negative values.
        cmap: colormap name; default ``"bwr"`` (signed) / ``"inferno"`` (non-negative).
        overlay: draw the map semi-transparently over the grey image.
        alpha: opacity of the map when overlaid.
        title: axes title.
        colorbar: add a colorbar.

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
        fig, ax = plt.subplots(figsize=(3, 3))
    else:
        fig = ax.figure
    im = _draw(ax, img, amap, cmap=cmap, overlay=overlay, alpha=alpha, mask=mask, signed=signed, normalize=normalize)
    if title:
        ax.set_title(title)
    if colorbar:
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
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
) -> tuple[Any, Any]:
    """A grid of attribution maps: one row per sample, the image then one column per method.

    Args:
        images: float (N, C, H, W) images in [0, 1].
        attributions_by_method: ``{method name: (N, C, H, W) or (N, H, W) attributions}``, e.g.
            ``{"saliency": explain(model, x, y, "saliency"), ...}``; the column order follows the
            mapping.
        masks: optional (N, H, W) ground-truth masks; their outlines are drawn on every panel.
        titles: optional N row labels (e.g. ``"circle (p=0.93)"``) shown on the image column.
        cmap: colormap for all maps; default per map (``"bwr"`` signed, ``"inferno"`` non-negative).
        overlay: draw each map over the grey image.
        axes: optional existing (N, 1 + M) array of Axes.
        reduce: channel reduction (``"sum"``, ``"abs_sum"``, ``"mean"``, ``"max_abs"``).
        normalize: per-panel normalization: ``"max_abs"``, ``"minmax"`` or None.
        alpha: map opacity when overlaid.
        panel_size: inches per panel.

    Returns:
        ``(fig, axes)`` with ``axes`` a (N, 1 + M) numpy array of Axes.

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
    if axes is None:
        fig, axes = plt.subplots(n, n_cols, figsize=(panel_size * n_cols, panel_size * n), squeeze=False)
    else:
        axes = np.asarray(axes, dtype=object).reshape(n, n_cols) if np.size(axes) == n * n_cols else None
        if axes is None:
            raise ValueError(f"`axes` must hold {n} x {n_cols} Axes")
        fig = axes[0, 0].figure
    for i in range(n):
        img = _image_hwc(imgs[i])
        ax = axes[i, 0]
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
        if mk is not None and mk[i].min() != mk[i].max():
            ax.contour(mk[i], levels=[0.5], colors="lime", linewidths=1.2)
        ax.set_xticks([])
        ax.set_yticks([])
        if titles is not None:
            ax.set_ylabel(str(titles[i]), fontsize=8)
        for j, (name, arr) in enumerate(maps.items(), start=1):
            amap = _map_2d(arr[i], reduce)
            signed = bool((arr < 0).any())  # per method, so all rows of a column share a colormap
            _draw(axes[i, j], img, amap, cmap=cmap, overlay=overlay, alpha=alpha,
                  mask=None if mk is None else mk[i], signed=signed, normalize=normalize)
    axes[0, 0].set_title("input", fontsize=9)
    for j, name in enumerate(maps, start=1):
        axes[0, j].set_title(name.replace("_", " "), fontsize=9)
    fig.tight_layout()
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
        fig, ax = plt.subplots(figsize=(5, 0.3 * len(order) + 1.2))
    else:
        fig = ax.figure
    height = 0.8 / len(vals)
    ypos = np.arange(len(order))
    for j, (name, v) in enumerate(vals.items()):
        ax.barh(ypos + (j - (len(vals) - 1) / 2) * height, v[order], height=height, label=name.replace("_", " "))
    ax.set_yticks(ypos)
    ax.set_yticklabels([names[i] for i in order])
    ax.axvline(0, color="k", linewidth=0.8)
    ax.set_xlabel("mean |attribution|" if sample is None else f"attribution (sample {sample})")
    ax.legend(fontsize=8)
    return fig, ax
