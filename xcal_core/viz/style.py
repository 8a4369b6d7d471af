"""The one figure style of ``xcal_core.viz``: slide-sized figures, visible outlines, colorbars, readable axes.

Every viz function of this package uses these helpers, and notebooks can use them for the figures they
compose themselves (``fig, axes = slide_subplots(1, 3)`` instead of ``plt.subplots(1, 3, figsize=(16, 4))``).

The conventions, all chosen so that a figure saved by ``run.save_figure`` (150 dpi) reads on one slide:

* **Size**: a figure is at most :data:`SLIDE_MAX` = 12 x 6 inches. :func:`fit_figsize` makes a size fit;
  :func:`grid_layout` / :func:`panel_axes` size panel grids, shrinking panels and wrapping long lists of
  rows into side-by-side blocks (see :func:`grid_layout` for what happens with many panels).
  Figures passed in by the caller (``ax=`` / ``axes=``) are never resized.
* **Colour scales**: every map carries a colorbar (:func:`add_colorbar`, an inset that does not resize
  the panel). Where panels share one scale, one bar serves them all and its label (or the figure's
  x label) says which scale it is, e.g. one bar under each column of an attribution grid, or one
  ``"map / its max"`` bar for a grid of maps that are each scaled to their own max.
* **Mask outlines**: white line with a black halo (:func:`outline_mask`), visible on any image colour.
* **Log axes**: at most ~6 labelled ticks with plain labels, unlabelled minor ticks (:func:`readable_log_axis`).
* **Several lines on one axes**: each gets its own colour, marker and line style; earlier lines are drawn
  wider and with larger markers underneath later ones, so coinciding lines stay visible (:func:`line_styles`).
* **Text**: 8 pt at the least (:data:`FONT`), except the tick labels of long category lists, which shrink
  to as little as 6 pt rather than overlap; long titles are wrapped to the axes width (:func:`fit_title`,
  :func:`wrap_text`); :func:`slide_style` sets readable rcParams for a block of code.

Nothing here changes global matplotlib state on import; :func:`slide_style` is a context manager.
"""

from __future__ import annotations

import contextlib
import math
import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib
import matplotlib.ticker as mticker
import numpy as np

__all__ = [
    "SLIDE_MAX",
    "MIN_PANEL",
    "FONT",
    "SLIDE_RC",
    "COLORS",
    "MARKERS",
    "LINESTYLES",
    "slide_style",
    "fit_figsize",
    "GridLayout",
    "grid_layout",
    "panel_axes",
    "slide_subplots",
    "finish_layout",
    "outline_mask",
    "add_colorbar",
    "readable_log_axis",
    "ReadableLogLocator",
    "line_styles",
    "fit_title",
    "wrap_text",
]

SLIDE_MAX: tuple[float, float] = (12.0, 6.0)
"""Largest figure size in inches (width, height): one 16:9 slide at 150 dpi is 1800 x 900 px."""

MIN_PANEL: float = 0.8
"""Smallest panel side in inches that :func:`grid_layout` accepts without a warning."""

FONT: dict[str, float] = {"title": 11, "panel_title": 9, "label": 10, "tick": 9, "legend": 8, "small": 8}
"""Font sizes (pt) used by the viz functions (category tick labels of long lists may go down to 6 pt)."""

SLIDE_RC: dict[str, Any] = {
    "font.size": 10,
    "axes.titlesize": FONT["title"],
    "axes.labelsize": FONT["label"],
    "xtick.labelsize": FONT["tick"],
    "ytick.labelsize": FONT["tick"],
    "legend.fontsize": FONT["legend"],
    "legend.framealpha": 0.85,
    "figure.titlesize": 12,
    "savefig.dpi": 150,
    "lines.linewidth": 1.8,
    "lines.markersize": 5,
    "image.interpolation": "nearest",
}
"""rcParams of the slide style (see :func:`slide_style`)."""

# Okabe-Ito: distinguishable for the common colour-vision deficiencies, and in print.
COLORS: tuple[str, ...] = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
MARKERS: tuple[str, ...] = ("o", "s", "^", "D", "v", "P", "X", "*")
LINESTYLES: tuple[Any, ...] = ("-", "--", "-.", ":", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 1)), (0, (8, 2)), (0, (3, 1, 1, 1)))


@contextlib.contextmanager
def slide_style(overrides: dict[str, Any] | None = None) -> Iterator[None]:
    """Context manager applying :data:`SLIDE_RC` (plus ``overrides``) to the figures drawn inside it.

    Example::

        with slide_style():
            fig, ax = plot_ce_vs_level(table)
            run.save_figure(fig, "fig2_ce_vs_level")

    Args:
        overrides: rcParams set on top of :data:`SLIDE_RC`, e.g. ``{"font.size": 12}``.
    """
    with matplotlib.rc_context({**SLIDE_RC, **(overrides or {})}):
        yield


def _check_size(max_size: Sequence[float]) -> tuple[float, float]:
    if len(max_size) != 2 or min(max_size) <= 0:
        raise ValueError(f"`max_size` must be (width, height) in inches > 0, got {max_size!r}")
    return float(max_size[0]), float(max_size[1])


def fit_figsize(
    width: float, height: float, max_size: Sequence[float] = SLIDE_MAX, *, keep_aspect: bool = True
) -> tuple[float, float]:
    """Make ``(width, height)`` fit ``max_size``.

    Args:
        width, height: the wanted size in inches (> 0).
        max_size: the largest allowed (width, height); default :data:`SLIDE_MAX`.
        keep_aspect: shrink both sides by the same factor (grids of images); False clamps each side on
            its own (a bar chart whose height grows with the number of bars keeps its width).

    Returns:
        ``(width, height)`` in inches, unchanged when it already fits.
    """
    mw, mh = _check_size(max_size)
    if width <= 0 or height <= 0:
        raise ValueError(f"`width` and `height` must be > 0, got {width}, {height}")
    if not keep_aspect:
        return (min(float(width), mw), min(float(height), mh))
    s = min(1.0, mw / width, mh / height)
    return (float(width) * s, float(height) * s)


@dataclass(frozen=True)
class GridLayout:
    """Where the panels of a logical ``n_rows x n_cols`` grid go on a slide-sized figure.

    Attributes:
        n_rows, n_cols: the logical grid (e.g. one row per sample, one column per method).
        blocks: number of side-by-side blocks the rows are wrapped into (1 = no wrapping).
        rows_per_block: rows in each block; logical row ``i`` is row ``i % rows_per_block`` of block
            ``i // rows_per_block``.
        figsize: figure size in inches, at most ``max_size``.
        panel: size of one panel in inches after fitting.
    """

    n_rows: int
    n_cols: int
    blocks: int
    rows_per_block: int
    figsize: tuple[float, float]
    panel: tuple[float, float]

    def block_top(self, i: int) -> bool:
        """Whether logical row ``i`` is the first row of its block (where column titles go)."""
        return i % self.rows_per_block == 0

    def block_bottom(self, i: int) -> bool:
        """Whether logical row ``i`` is the last row drawn in its block."""
        return (i + 1) % self.rows_per_block == 0 or i == self.n_rows - 1


def grid_layout(
    n_rows: int,
    n_cols: int,
    panel: Sequence[float] = (2.0, 2.0),
    *,
    extra: Sequence[float] = (0.4, 0.6),
    max_size: Sequence[float] = SLIDE_MAX,
    min_panel: float = MIN_PANEL,
    max_blocks: int = 4,
) -> GridLayout:
    """Size a grid of panels so that the figure fits a slide, whatever the number of panels.

    What happens with many panels: panels keep the requested size ``panel`` while the figure fits
    ``max_size``; otherwise they are shrunk uniformly until it does (the figure never exceeds
    ``max_size``). When a long list of rows would shrink panels below ``min_panel`` inches, the rows are
    wrapped into up to ``max_blocks`` side-by-side blocks of columns (e.g. 12 rows x 4 columns become two
    blocks of 6 rows x 4 columns), whichever number of blocks gives the largest panels. If panels are
    still smaller than ``min_panel`` a ``UserWarning`` says so: show fewer rows (``n_show``) or split
    the figure.

    Args:
        n_rows, n_cols: the logical grid (>= 1 each).
        panel: wanted (width, height) of one panel in inches, including its colorbar if it has one.
        extra: (width, height) in inches for what is outside the panels (row labels, suptitle,
            column titles).
        max_size: largest figure (width, height); default :data:`SLIDE_MAX`.
        min_panel: smallest acceptable panel side in inches before wrapping / warning.
        max_blocks: most side-by-side blocks to wrap rows into (1 disables wrapping).

    Returns:
        :class:`GridLayout`.
    """
    mw, mh = _check_size(max_size)
    if int(n_rows) < 1 or int(n_cols) < 1:
        raise ValueError(f"`n_rows` and `n_cols` must be >= 1, got {n_rows}, {n_cols}")
    n_rows, n_cols = int(n_rows), int(n_cols)
    pw, ph = float(panel[0]), float(panel[1])
    ex, ey = float(extra[0]), float(extra[1])
    if pw <= 0 or ph <= 0:
        raise ValueError(f"`panel` must be (width, height) > 0, got {panel!r}")
    if ex >= mw or ey >= mh or ex < 0 or ey < 0:
        raise ValueError(f"`extra` {extra!r} must be >= 0 and smaller than `max_size` {max_size!r}")

    def scale(blocks: int) -> tuple[float, int]:
        rpb = math.ceil(n_rows / blocks)
        return min(1.0, (mw - ex) / (blocks * n_cols * pw), (mh - ey) / (rpb * ph)), rpb

    s, rpb = scale(1)
    blocks = 1
    if min(pw, ph) * s < min_panel:
        for b in range(2, max(1, int(max_blocks)) + 1):
            sb, rb = scale(b)
            if math.ceil(n_rows / rb) < b:  # would leave an empty block
                continue
            if sb > s * 1.001:
                s, rpb, blocks = sb, rb, b
    if min(pw, ph) * s < min_panel:
        warnings.warn(
            f"a {n_rows} x {n_cols} panel grid fits {mw:g} x {mh:g} in only with {min(pw, ph) * s:.2f} in panels "
            f"(< {min_panel:g} in); show fewer rows or split the figure",
            UserWarning,
            stacklevel=3,
        )
    w = min(mw, blocks * n_cols * pw * s + ex)
    h = min(mh, rpb * ph * s + ey)
    return GridLayout(n_rows, n_cols, blocks, rpb, (w, h), (pw * s, ph * s))


def panel_axes(
    n_rows: int,
    n_cols: int,
    panel: Sequence[float] = (2.0, 2.0),
    *,
    extra: Sequence[float] = (0.4, 0.6),
    max_size: Sequence[float] = SLIDE_MAX,
    min_panel: float = MIN_PANEL,
    max_blocks: int = 4,
    block_space: float = 0.06,
) -> tuple[Any, np.ndarray, GridLayout]:
    """A new constrained-layout figure holding a logical ``n_rows x n_cols`` grid sized by :func:`grid_layout`.

    Args:
        n_rows, n_cols, panel, extra, max_size, min_panel, max_blocks: as in :func:`grid_layout`.
        block_space: horizontal gap between wrapped blocks (fraction of the figure width).

    Returns:
        ``(fig, axes, layout)``: ``axes`` is a (n_rows, n_cols) object array indexed logically
        (``axes[i, j]`` is row ``i``'s panel ``j`` wherever its block is placed); ``layout`` the
        :class:`GridLayout` used.
    """
    import matplotlib.pyplot as plt

    lay = grid_layout(n_rows, n_cols, panel, extra=extra, max_size=max_size, min_panel=min_panel, max_blocks=max_blocks)
    fig = plt.figure(figsize=lay.figsize, layout="constrained")
    outer = fig.add_gridspec(1, lay.blocks, wspace=block_space if lay.blocks > 1 else 0.0)
    subs = [outer[0, b].subgridspec(lay.rows_per_block, n_cols) for b in range(lay.blocks)]
    axes = np.empty((lay.n_rows, lay.n_cols), dtype=object)
    for i in range(lay.n_rows):
        b, r = divmod(i, lay.rows_per_block)
        for j in range(lay.n_cols):
            axes[i, j] = fig.add_subplot(subs[b][r, j])
    return fig, axes, lay


def slide_subplots(
    nrows: int = 1,
    ncols: int = 1,
    *,
    panel: Sequence[float] = (4.0, 3.2),
    extra: Sequence[float] = (0.3, 0.4),
    max_size: Sequence[float] = SLIDE_MAX,
    squeeze: bool = True,
    **kwargs: Any,
) -> tuple[Any, Any]:
    """``plt.subplots`` with a figure size that fits a slide: ``panel`` per subplot, shrunk to ``max_size``.

    For notebooks composing their own figures. Rows are never wrapped here (use :func:`panel_axes` for
    that); a grid too large for ``max_size`` gets smaller panels.

    Args:
        nrows, ncols: subplot grid.
        panel: wanted (width, height) of one subplot in inches.
        extra: inches added for suptitle / outer labels.
        max_size: largest figure size; default :data:`SLIDE_MAX`.
        squeeze: as in ``plt.subplots``.
        **kwargs: passed to ``plt.subplots`` (``sharey``, ``layout``, ...); ``figsize`` is not accepted.

    Returns:
        ``(fig, axes)`` as ``plt.subplots`` returns them; the layout engine is ``"constrained"`` unless
        ``layout`` is given.
    """
    import matplotlib.pyplot as plt

    if "figsize" in kwargs:
        raise TypeError("`slide_subplots` computes the figure size; pass `panel` / `max_size` instead of `figsize`")
    if int(nrows) < 1 or int(ncols) < 1:
        raise ValueError(f"`nrows` and `ncols` must be >= 1, got {nrows}, {ncols}")
    size = fit_figsize(ncols * float(panel[0]) + float(extra[0]), nrows * float(panel[1]) + float(extra[1]), max_size)
    kwargs.setdefault("layout", "constrained")
    return plt.subplots(int(nrows), int(ncols), figsize=size, squeeze=squeeze, **kwargs)


def finish_layout(fig: Any) -> None:
    """Apply ``tight_layout`` to a figure without a layout engine (figures from :func:`panel_axes` have one)."""
    if fig.get_layout_engine() is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            fig.tight_layout()


def outline_mask(
    ax: Any,
    mask: Any,
    *,
    color: str = "white",
    halo: str = "black",
    linewidth: float = 1.4,
    halo_width: float = 1.6,
    level: float = 0.5,
) -> Any:
    """Outline a binary mask on an image axes with a light line on a dark halo, visible on any colour.

    Args:
        ax: matplotlib Axes showing an (H, W) image.
        mask: (H, W) bool / {0, 1} array or tensor (a leading channel axis is reduced with ``max``).
        color: colour of the line.
        halo: colour of the stroke drawn under the line (``matplotlib.patheffects.Stroke``).
        linewidth: line width in points.
        halo_width: extra width of the halo on top of ``linewidth``.
        level: contour level (0.5 for binary masks).

    Returns:
        The ``ContourSet``, or None when the mask is constant (nothing to outline).
    """
    import matplotlib.patheffects as pe

    m = mask.detach().float().cpu().numpy() if hasattr(mask, "detach") else np.asarray(mask, dtype=float)
    if m.ndim == 3:
        m = m.max(0)
    if m.ndim != 2:
        raise ValueError(f"`mask` must be (H, W) or (C, H, W), got shape {m.shape}")
    if m.min() == m.max():
        return None
    cs = ax.contour(m.astype(float), levels=[level], colors=[color], linewidths=linewidth)
    cs.set_path_effects([pe.Stroke(linewidth=linewidth + halo_width, foreground=halo), pe.Normal()])
    return cs


def add_colorbar(
    ax: Any,
    mappable: Any,
    label: str | None = None,
    *,
    location: str = "right",
    size: float = 0.06,
    pad: float = 0.03,
    nticks: int = 3,
    fontsize: float | None = None,
) -> Any:
    """A colorbar in an inset next to (or under) one panel, with few ticks; it does not resize the panel.

    The colorbar axes is a child of ``ax`` (``ax.child_axes``) labelled ``"<colorbar>"``; tight and
    constrained layouts make room for it.

    Args:
        ax: the Axes whose colours the bar explains.
        mappable: the image / collection (e.g. the return value of ``ax.imshow``).
        label: colorbar label (e.g. ``"attribution / max |a|"``), wrapped to the bar's length; None for none.
        location: ``"right"`` (vertical) or ``"bottom"`` (horizontal).
        size: thickness as a fraction of the panel width (right) or height (bottom).
        pad: gap to the panel as a fraction of the panel.
        nticks: at most this many ticks (+1).
        fontsize: tick / label size; default ``FONT["small"]``.

    Returns:
        The ``Colorbar``.
    """
    if location not in ("right", "bottom"):
        raise ValueError(f"unknown `location` {location!r}; expected one of ['right', 'bottom']")
    fs = FONT["small"] if fontsize is None else fontsize
    fig = ax.figure
    alpha = mappable.get_alpha() if hasattr(mappable, "get_alpha") else None
    if alpha is not None and np.all(np.asarray(alpha) < 1):  # a translucent overlay: draw its bar opaque
        import matplotlib.cm as mcm

        mappable = mcm.ScalarMappable(norm=mappable.norm, cmap=mappable.get_cmap())
    if location == "right":
        cax = ax.inset_axes([1.0 + pad, 0.0, size, 1.0])
        cb = fig.colorbar(mappable, cax=cax, orientation="vertical")
    else:
        cax = ax.inset_axes([0.0, -pad - size, 1.0, size])
        cb = fig.colorbar(mappable, cax=cax, orientation="horizontal")
    cax.set_label("<colorbar>")
    cb.locator = mticker.MaxNLocator(nbins=max(1, int(nticks)), steps=[1, 2, 5, 10])
    cb.formatter = mticker.FuncFormatter(_short_number)
    cb.update_ticks()
    cb.ax.tick_params(labelsize=fs, length=2, pad=1)
    if label:
        pos = ax.get_position()
        length = pos.height * fig.get_size_inches()[1] if location == "right" else pos.width * fig.get_size_inches()[0]
        cb.set_label(wrap_text(label, max(length, 0.5), fs), fontsize=fs)
    return cb


def _short_number(v: float, _pos: Any = None) -> str:
    """``0``, ``0.5``, ``-1``, ``1.2e+03``: at most 3 significant digits, no ``-0``."""
    return "0" if v == 0 else f"{v:.3g}"


def _log_label(v: float, _pos: Any = None) -> str:
    if v <= 0 or not np.isfinite(v):
        return ""
    e = math.floor(math.log10(v) + 1e-9)
    if -3 <= e <= 3:
        return f"{v:g}"
    mant = v / 10.0**e
    if abs(mant - 1) < 1e-6:
        return f"$10^{{{e}}}$"
    return f"${mant:g}\\times10^{{{e}}}$"


class ReadableLogLocator(mticker.Locator):
    """Log-axis major ticks, at most ``numticks`` of them: 1-2-5 (or 1-3) per decade on short ranges,
    every decade or every k-th decade on long ones, "nice" linear values inside a single decade."""

    _SUBS = ((1.0, 2.0, 5.0), (1.0, 3.0), (1.0,))

    def __init__(self, numticks: int = 6):
        self.numticks = max(2, int(numticks))

    def __call__(self):
        vmin, vmax = self.axis.get_view_interval()
        return self.tick_values(vmin, vmax)

    def tick_values(self, vmin: float, vmax: float) -> np.ndarray:
        vmin, vmax = sorted((float(vmin), float(vmax)))
        if not (np.isfinite(vmin) and np.isfinite(vmax)) or vmax <= 0:
            return np.array([1.0])
        vmin = max(vmin, np.finfo(float).tiny)
        lo, hi = math.floor(math.log10(vmin)), math.ceil(math.log10(vmax))

        def inside(t: np.ndarray) -> np.ndarray:
            return t[(t >= vmin * (1 - 1e-9)) & (t <= vmax * (1 + 1e-9))]

        for subs in self._SUBS:
            t = inside(np.array([s * 10.0**d for d in range(lo, hi + 1) for s in subs]))
            if 2 <= len(t) <= self.numticks:
                return t
        decades = inside(np.array([10.0**d for d in range(lo, hi + 1)]))
        if len(decades) < 2:  # less than a decade: nice linear values
            t = mticker.MaxNLocator(nbins=self.numticks - 1, steps=[1, 2, 2.5, 5, 10]).tick_values(vmin, vmax)
            return inside(t[t > 0])
        for stride in range(1, hi - lo + 2):
            t = inside(np.array([10.0**d for d in range(lo, hi + 1) if d % stride == 0]))
            if 2 <= len(t) <= self.numticks:
                return t
        return decades[[0, -1]]


def readable_log_axis(ax: Any, axis: str = "x", *, numticks: int = 6) -> None:
    """Log scale with non-overlapping tick labels: at most ``numticks`` plain labels, unlabelled minor ticks.

    Sets the axis to ``"log"``. Short ranges (about two decades or less, e.g. temperatures 0.25-8) are
    labelled 0.2, 0.5, 1, 2, 5; long ranges every decade or every k-th decade (``10^-6``, ``10^-4``, ...);
    ranges inside one decade get nice linear values. Values in [1e-3, 1e3] are written plainly (``0.01``,
    ``100``), others as powers of ten.

    Args:
        ax: matplotlib Axes.
        axis: ``"x"``, ``"y"`` or ``"both"``.
        numticks: most labelled major ticks per axis (>= 2).
    """
    if axis not in ("x", "y", "both"):
        raise ValueError(f"unknown `axis` {axis!r}; expected one of ['x', 'y', 'both']")
    for name in ("x", "y") if axis == "both" else (axis,):
        (ax.set_xscale if name == "x" else ax.set_yscale)("log")
        a = ax.xaxis if name == "x" else ax.yaxis
        a.set_major_locator(ReadableLogLocator(numticks))
        a.set_major_formatter(mticker.FuncFormatter(_log_label))
        a.set_minor_locator(mticker.LogLocator(base=10.0, subs=tuple(range(2, 10)), numticks=12))
        a.set_minor_formatter(mticker.NullFormatter())


def line_styles(n: int, *, colors: Sequence[str] | None = None, n_points: int | None = None) -> list[dict[str, Any]]:
    """Keyword dicts for ``ax.plot`` that keep ``n`` overlapping lines distinguishable.

    Line ``i`` gets colour ``COLORS[i]``, marker ``MARKERS[i]`` and line style ``LINESTYLES[i]`` (cycled),
    and the first lines are drawn wider, with larger markers and a lower ``zorder``, so a later line
    lying on top of an earlier one leaves a visible rim of it.

    Args:
        n: number of lines (>= 0).
        colors: optional colours to use instead of :data:`COLORS`.
        n_points: points per line; with more than 15, markers are drawn on about 10 of them
            (``markevery``, staggered between lines) so they do not merge into a thick line.

    Returns:
        ``n`` dicts with keys ``color``, ``marker``, ``linestyle``, ``linewidth``, ``markersize``,
        ``zorder``, ``alpha`` (and ``markevery`` when ``n_points`` > 15).
    """
    if int(n) < 0:
        raise ValueError(f"`n` must be >= 0, got {n}")
    cols = tuple(colors) if colors else COLORS
    out = []
    for i in range(int(n)):
        frac = i / max(int(n) - 1, 1)
        d = {
            "color": cols[i % len(cols)],
            "marker": MARKERS[i % len(MARKERS)],
            "linestyle": LINESTYLES[i % len(LINESTYLES)],
            "linewidth": 2.6 - 1.2 * frac,
            "markersize": 7.0 - 3.0 * frac,
            "zorder": 2.0 + 0.1 * i,
            "alpha": 0.9,
        }
        if n_points is not None and n_points > 15:
            step = max(1, int(n_points) // 10)
            d["markevery"] = ((i * step) // max(int(n), 1), step)  # staggered: markers of lines never coincide
        out.append(d)
    return out


def fit_title(
    ax: Any,
    text: str | None,
    *,
    fontsize: float | None = None,
    max_lines: int | None = None,
    width: float | None = None,
    **kwargs: Any,
) -> Any:
    """Set an axes title wrapped to the axes width, so titles of neighbouring panels cannot overlap.

    Args:
        ax: matplotlib Axes.
        text: the title (None or empty sets nothing).
        fontsize: title size in pt; default ``FONT["title"]``.
        max_lines: longer titles are cut with an ellipsis after this many lines (None: never cut).
        width: width in inches to wrap to; default the axes' current width (before a layout engine
            runs, which makes it a slight underestimate).
        **kwargs: passed to ``ax.set_title``.

    Returns:
        The title ``Text`` (or None when ``text`` is empty).
    """
    if not text:
        return None
    fs = FONT["title"] if fontsize is None else float(fontsize)
    fig = ax.figure
    width_in = float(width) if width is not None else ax.get_position().width * fig.get_size_inches()[0]
    return ax.set_title(wrap_text(text, width_in, fs, max_lines=max_lines), fontsize=fs, **kwargs)


def wrap_text(text: str, width: float, fontsize: float = FONT["small"], *, max_lines: int | None = None) -> str:
    """Wrap ``text`` into lines of at most ``width`` inches at ``fontsize`` pt (an estimate: 0.55 em per
    character). Lines break at spaces, and inside long words after ``_``, ``-`` or ``/``
    (``integrated_gradients`` -> ``integrated_`` / ``gradients``); existing newlines are kept.

    Args:
        text: the text.
        width: line width in inches.
        fontsize: font size in pt.
        max_lines: cut with an ellipsis after this many lines (None: no limit).

    Returns:
        The wrapped text (unchanged when it fits).
    """
    chars = max(8, int(float(width) * 72 / (0.55 * float(fontsize))))
    lines: list[str] = []
    for part in str(text).split("\n"):
        words: list[str] = []
        for w in part.split(" "):
            words.extend(re.findall(r"[^_\-/]+[_\-/]*|[_\-/]+", w) if len(w) > chars else [w])
            words[-1] += " "  # a space after every original word; pieces of a word join without one
        line = ""
        for w in words:
            if line and len((line + w).rstrip()) > chars:
                lines.append(line.rstrip())
                line = ""
            line += w
        lines.append(line.rstrip())
    if max_lines is not None and len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1][: max(0, chars - 1)].rstrip() + "…"
    return "\n".join(lines)
