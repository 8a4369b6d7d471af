"""Saliency-map metrics of Calibrate to Interpret: SSIM, blurred deletion, random baseline, BTR, Otsu-TV, Lipschitz.

A *saliency map* here is a float (N, H, W) tensor, one non-negative map per image; :func:`saliency_maps`
turns raw attributions (N, C, H, W) into min-max normalized maps as the paper does.

* :func:`ssim`: structural similarity of two maps of the same image (Wang et al. 2004), equal to
  ``skimage.metrics.structural_similarity`` with its defaults (7 x 7 uniform window, sample covariance).
* :func:`deletion_curves`: progressive deletion where each deleted pixel takes its value from a blurred
  copy of the *original* image (non-cumulative blur), normalized by the clean score; built on the
  batched engine :func:`xcal_core.metrics.perturbation_curve`.
* :func:`insertion_curves`: the mirror image: start from the blurred copy and put the top pixels back.
* :func:`random_deletion_curves`: the same deletion over superpixels in random orders (the baseline).
* :func:`btr`: better-than-random ratio, the fraction of images whose deletion area beats the baseline.
* :func:`otsu_tv`: total variation of the Otsu-binarized map (visual coherence).
* :func:`local_lipschitz`: ``max_j ||S(x) - S(x'_j)|| / ||x - x'_j||`` over random neighbours (stability).
* :func:`saliency_report`: every metric of every method under every (calibrated) model, in two views
  of faithfulness: each model scored by *its own* calibrated probability (the paper's form), and every
  map scored by *one fixed evaluator* (``evaluator=``), which does not move with the temperature.

Why two views. A deletion curve normalized by the clean score falls more slowly when the scores are
softer: ``softmax(z / T)`` of a larger temperature T changes less when the logits drop. The paper's form
scores a temperature-scaled model's map with that model's own probability, so a larger T raises the
deletion area (and the random baseline's) whatever the map. With a fixed evaluator the score depends on
the map (and the explained class) only, so an identical map under two temperatures gets an identical score.

References:
    Scafarto, Posocco, Bonnefoy. Calibrate to Interpret. ECML-PKDD workshops 2022 (section 4).
    Wang, Bovik, Sheikh, Simoncelli. Image quality assessment: from error visibility to structural
    similarity. IEEE TIP 2004. Otsu. A threshold selection method from gray-level histograms. 1979.
    Alvarez-Melis, Jaakkola. On the Robustness of Interpretability Methods. 2018.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from .._validation import check_choice, check_int, check_positive, check_tensor, model_device
from ..explainers.core import explain, normalize_attributions, reduce_channels
from ..explainers.saliency import blur_fixed_kernel
from ._meta import metric
from .insertion_deletion import curve_auc, curve_fractions, perturbation_curve

__all__ = [
    "saliency_maps",
    "ssim",
    "deletion_curves",
    "deletion_area",
    "insertion_curves",
    "insertion_area",
    "superpixels",
    "random_deletion_curves",
    "btr",
    "otsu_tv",
    "otsu_binarize",
    "deletion_stages",
    "local_lipschitz",
    "SaliencyReport",
    "saliency_report",
    "lipschitz_report",
]

_SCORES = ("probability", "logit", "log_probability", "output")
_REDUCE = ("abs_sum", "sum", "mean", "max_abs")


def saliency_maps(attributions: Any, reduce: str = "abs_sum", normalize: bool = True) -> torch.Tensor:
    """Raw attributions -> one (min-max normalized) saliency map per image.

    Args:
        attributions: float (N, C, H, W) attributions (raw, signed) or (N, H, W) maps.
        reduce: channel reduction of :func:`xcal_core.explainers.reduce_channels` (``"abs_sum"``, the
            paper's ``sum_c |a_c|``, is the default; maps repeated over channels such as RISE / MP /
            Grad-CAM give the same normalized map with ``"abs_sum"`` or ``"mean"``).
        normalize: min-max normalize each map to [0, 1] (a constant map becomes all zeros).

    Returns:
        float32 (N, H, W).
    """
    a = check_tensor(attributions, "attributions", ndim=(3, 4))
    check_choice(reduce, "reduce", _REDUCE)
    m = reduce_channels(a, reduce) if a.ndim == 4 else (a.abs() if reduce in ("abs_sum", "max_abs") else a)
    return normalize_attributions(m, "minmax") if normalize else m.float()


def _maps(maps: Any, name: str) -> torch.Tensor:
    t = check_tensor(maps, name, ndim=(2, 3, 4))
    if t.ndim == 2:
        t = t[None]
    if t.ndim == 4:
        if t.shape[1] != 1:
            raise ValueError(f"`{name}` must be saliency maps (N, H, W) or (N, 1, H, W), got shape {tuple(t.shape)}; "
                             "reduce channels first with saliency_maps()")
        t = t[:, 0]
    return t


@metric(higher_is_better=True, category="similarity")
def ssim(
    maps_a: Any,
    maps_b: Any,
    *,
    data_range: float = 1.0,
    win_size: int = 7,
    normalize: bool = True,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """Structural similarity between paired saliency maps (per pair), as skimage computes it.

    Uniform ``win_size`` x ``win_size`` windows, sample (co)variances (``N / (N - 1)``), constants
    ``C1 = (k1 R)^2`` and ``C2 = (k2 R)^2`` with ``R = data_range``; the mean is taken over the windows
    that lie fully inside the image (skimage's crop), so the result equals
    ``skimage.metrics.structural_similarity(a, b, data_range=R)`` for each pair.

    Args:
        maps_a: float (N, H, W) (or (N, 1, H, W), or one (H, W) map) saliency maps.
        maps_b: the same shape as ``maps_a``.
        data_range: dynamic range R > 0 of the maps (1 for min-max normalized maps).
        win_size: odd window side >= 3, at most min(H, W).
        normalize: min-max normalize each map first (the paper compares normalized maps). A constant
            map normalizes to zeros; two constant maps then have SSIM 1, never NaN.
        k1, k2: SSIM constants (> 0).

    Returns:
        float32 (N,) SSIM in [-1, 1]; 1 means identical maps.

    Raises:
        ValueError: shapes differ, window larger than the maps or even, non-positive constants.
    """
    a, b = _maps(maps_a, "maps_a"), _maps(maps_b, "maps_b")
    if a.shape != b.shape:
        raise ValueError(f"`maps_b` must have the shape of `maps_a` {tuple(a.shape)}, got {tuple(b.shape)}")
    win_size = check_int(win_size, "win_size", low=3)
    if win_size % 2 == 0:
        raise ValueError(f"`win_size` must be odd, got {win_size}")
    if win_size > min(a.shape[1:]):
        raise ValueError(f"`win_size` {win_size} exceeds the map size {tuple(a.shape[1:])}; pass a smaller odd `win_size`")
    r = float(check_positive(data_range, "data_range"))
    check_positive(k1, "k1"), check_positive(k2, "k2")
    if normalize:
        a, b = normalize_attributions(a, "minmax"), normalize_attributions(b, "minmax")
    a, b = a.double()[:, None], b.double()[:, None]
    pool = lambda t: F.avg_pool2d(t, win_size, stride=1)  # noqa: E731  (valid windows = skimage's crop)
    ux, uy = pool(a), pool(b)
    cov_norm = win_size**2 / (win_size**2 - 1)
    vx = cov_norm * (pool(a * a) - ux * ux)
    vy = cov_norm * (pool(b * b) - uy * uy)
    vxy = cov_norm * (pool(a * b) - ux * uy)
    c1, c2 = (k1 * r) ** 2, (k2 * r) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1).float()


def _default_step(n_pixels: int, n_points: int = 100) -> int:
    return max(1, int(round(n_pixels / n_points)))


def deletion_curves(
    model: torch.nn.Module,
    x: Any,
    maps: Any,
    target: Any,
    *,
    kernel_size: int = 11,
    sigma: float = 10.0,
    step: int | None = None,
    max_fraction: float = 0.99,
    score: str = "probability",
    normalize: bool = True,
    batch_size: int = 256,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Deletion curves with blurred-patch replacement, normalized to the clean score (C2I protocol).

    Pixels are ranked by the map (descending, ties by index). At each point the top pixels (all
    channels) take the values of ``blur_fixed_kernel(x, kernel_size, sigma)``: each deleted pixel gets the
    blur of a ``kernel_size`` patch of the *original* image centred on it. The curve is the score of
    ``target`` under ``model`` (pass the calibrated model to evaluate calibrated maps).

    Args:
        model: classifier returning logits (N, K), e.g. a :class:`xcal_core.calibration.CalibratedModel`.
        x: float32 (N, C, H, W) images in [0, 1].
        maps: saliency maps (N, H, W) (or attributions shaped like x, summed over channels to rank).
        target: class per sample (int or int64 (N,)); the paper uses the class predicted on the clean image.
        kernel_size: blur kernel side (paper: 11 at 224 px; e.g. 3 for 8 x 8 or 32 x 32 images).
        sigma: blur sigma (paper: 10, i.e. almost a box blur of the kernel size).
        step: pixels deleted per curve step (default ``round(H W / 100)``, i.e. about 1 % steps).
        max_fraction: the curve stops after this fraction of pixels (paper: 99 %).
        score: ``"probability"`` (softmax, the paper), ``"logit"``, ``"log_probability"`` or ``"output"``.
        normalize: divide each curve by its clean score (column 0); needs ``score`` in
            {"probability", "output"} (a positive score).
        batch_size: most perturbed images per forward pass.

    Returns:
        ``(curves, fractions)``: float32 (N, L + 1) curves (column 0 = clean, 1.0 when normalized) and
        (L + 1,) fractions of pixels deleted at each point.
    """
    x = check_tensor(x, "x", ndim=4)
    check_choice(score, "score", _SCORES)
    if normalize and score not in ("probability", "output"):
        raise ValueError(f"`normalize`=True divides by the clean score and needs `score` 'probability' or 'output', got {score!r}")
    n_pix = x.shape[2] * x.shape[3]
    step = _default_step(n_pix) if step is None else check_int(step, "step", low=1)
    m = check_tensor(maps, "maps", ndim=(3, 4))
    if m.shape[0] != x.shape[0]:
        raise ValueError(f"`maps` and `x` must have the same length, got {m.shape[0]} and {x.shape[0]}")
    blurred = blur_fixed_kernel(x, kernel_size, sigma)
    curves = perturbation_curve(model, x, m, target, mode="deletion", baseline=blurred, step=step,
                                max_fraction=max_fraction, score=score, batch_size=batch_size)
    fr = curve_fractions(n_pix, step, max_fraction)
    if normalize:
        curves = curves / curves[:, :1].clamp_min(1e-12)
    return curves.float(), fr


@metric(higher_is_better=False, category="faithfulness")
def deletion_area(curves: Any, fractions: Any = None) -> torch.Tensor:
    """Area under (normalized) deletion curves, x axis rescaled to [0, 1] (lower = more faithful).

    Args:
        curves: float (N, L + 1) curves from :func:`deletion_curves` or :func:`random_deletion_curves`.
        fractions: (L + 1,) x positions (the ``fractions`` those functions return); None = equally spaced.

    Returns:
        float32 (N,) areas.
    """
    return curve_auc(curves, fractions).float()


def insertion_curves(
    model: torch.nn.Module,
    x: Any,
    maps: Any,
    target: Any,
    *,
    kernel_size: int = 11,
    sigma: float = 10.0,
    step: int | None = None,
    max_fraction: float = 1.0,
    score: str = "probability",
    normalize: bool = True,
    batch_size: int = 256,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Insertion curves with the blurred copy as the start, normalized by the clean score.

    The mirror image of :func:`deletion_curves`: the curve starts from ``blur_fixed_kernel(x,
    kernel_size, sigma)`` (every pixel replaced as deletion replaces it) and puts the top-ranked pixels
    of ``x`` back, ``step`` at a time. Each point is the score of ``target`` divided by the score of the
    clean image, so the last point (all pixels back) is 1.

    Args:
        model: classifier returning logits (N, K).
        x: float32 (N, C, H, W) images in [0, 1].
        maps: saliency maps (N, H, W) (or attributions shaped like x, summed over channels to rank).
        target: class per sample (int or int64 (N,)).
        kernel_size, sigma, step, score, batch_size: as in :func:`deletion_curves`.
        max_fraction: the curve stops after this fraction of pixels (default: all of them).
        normalize: divide each curve by the clean image's score; needs ``score`` in
            {"probability", "output"}.

    Returns:
        ``(curves, fractions)``: float32 (N, L + 1) curves (column 0 = fully blurred) and the (L + 1,)
        fractions of pixels inserted.

    References:
        Petsiuk, Das, Saenko. RISE: Randomized Input Sampling for Explanation of Black-box Models. BMVC
        2018 (insertion metric).
    """
    x = check_tensor(x, "x", ndim=4)
    check_choice(score, "score", _SCORES)
    if normalize and score not in ("probability", "output"):
        raise ValueError(f"`normalize`=True divides by the clean score and needs `score` 'probability' or 'output', got {score!r}")
    n_pix = x.shape[2] * x.shape[3]
    step = _default_step(n_pix) if step is None else check_int(step, "step", low=1)
    m = check_tensor(maps, "maps", ndim=(3, 4))
    if m.shape[0] != x.shape[0]:
        raise ValueError(f"`maps` and `x` must have the same length, got {m.shape[0]} and {x.shape[0]}")
    blurred = blur_fixed_kernel(x, kernel_size, sigma)
    curves = perturbation_curve(model, x, m, target, mode="insertion", baseline=blurred, step=step,
                                max_fraction=max_fraction, score=score, batch_size=batch_size)
    fr = curve_fractions(n_pix, step, max_fraction)
    if normalize:
        clean = _clean_scores(model, x, target, score, batch_size).to(curves.device)
        curves = curves / clean[:, None].clamp_min(1e-12)
    return curves.float(), fr


@metric(higher_is_better=True, category="faithfulness")
def insertion_area(curves: Any, fractions: Any = None) -> torch.Tensor:
    """Area under (normalized) insertion curves, x axis rescaled to [0, 1] (higher = more faithful).

    Args:
        curves: float (N, L + 1) curves from :func:`insertion_curves`.
        fractions: (L + 1,) x positions; None = equally spaced.

    Returns:
        float32 (N,) areas.
    """
    return curve_auc(curves, fractions).float()


@torch.no_grad()
def _clean_scores(model: torch.nn.Module, x: torch.Tensor, target: Any, score: str, batch_size: int) -> torch.Tensor:
    """The score of ``target`` on the clean images, (N,) on x's device."""
    dev = model_device(model)
    n = x.shape[0]
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        tgt = torch.full((n,), int(target), dtype=torch.long)
    else:
        tgt = torch.as_tensor(target).long().reshape(-1)
    out = torch.cat([model(x[i:i + batch_size].to(dev)).float().cpu() for i in range(0, n, batch_size)])
    if score == "probability":
        out = torch.softmax(out, 1)
    elif score == "log_probability":
        out = torch.log_softmax(out, 1)
    return out.gather(1, tgt.cpu()[:, None])[:, 0].to(x.device)


def superpixels(x: Any, n_segments: int = 100, method: str = "slic", compactness: float = 10.0,
                max_num_iter: int = 10) -> torch.Tensor:
    """Superpixel labels per image: SLIC (scikit-image) or a regular grid of square cells.

    Args:
        x: float (N, C, H, W) images in [0, 1] (C = 1 or 3).
        n_segments: approximate number of segments per image (>= 1).
        method: ``"slic"`` (scikit-image SLIC; the paper, about 100 segments) or ``"grid"`` (square cells of
            side ``max(1, round(sqrt(H W / n_segments)))``, e.g. 2 x 2 cells on 8 x 8 digits).
        compactness: SLIC compactness (> 0).
        max_num_iter: SLIC k-means iterations (the C2I code uses 2).

    Returns:
        int64 (N, H, W) labels, consecutive from 0 within each image.
    """
    x = check_tensor(x, "x", ndim=4)
    n_segments = check_int(n_segments, "n_segments", low=1)
    check_choice(method, "method", ("slic", "grid"))
    n, c, h, w = x.shape
    if method == "grid":
        s = max(1, int(round(math.sqrt(h * w / n_segments))))
        rows = torch.arange(h) // s
        cols = torch.arange(w) // s
        lab = rows[:, None] * (int(cols.max()) + 1) + cols[None, :]
        return lab.expand(n, h, w).contiguous().to(x.device)
    from skimage.segmentation import slic

    check_positive(compactness, "compactness")
    arr = x.detach().cpu().double().numpy()
    out = np.empty((n, h, w), dtype=np.int64)
    for i in range(n):  # one SLIC per image (segmentation, not a perturbation)
        img = arr[i, 0] if c == 1 else np.moveaxis(arr[i], 0, -1)
        lab = slic(img, n_segments=n_segments, compactness=compactness, max_num_iter=max_num_iter, start_label=0,
                   channel_axis=None if c == 1 else -1, enforce_connectivity=True)
        out[i] = np.unique(lab, return_inverse=True)[1].reshape(h, w)
    return torch.from_numpy(out).to(x.device)


def _interp_rows(xp: torch.Tensor, fp: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Row-wise linear interpolation: xp, fp (R, L) with xp non-decreasing per row; x (T,) -> (R, T)."""
    xq = x.to(xp.dtype).expand(xp.shape[0], -1).contiguous()
    hi = torch.searchsorted(xp.contiguous(), xq, right=True).clamp(1, xp.shape[1] - 1)
    lo = hi - 1
    x0, x1 = xp.gather(1, lo), xp.gather(1, hi)
    y0, y1 = fp.gather(1, lo), fp.gather(1, hi)
    t = torch.where(x1 > x0, (xq - x0) / (x1 - x0).clamp_min(1e-12), torch.ones_like(xq))
    return y0 + t.clamp(0, 1) * (y1 - y0)


def random_deletion_curves(
    model: torch.nn.Module,
    x: Any,
    target: Any,
    segments: Any,
    *,
    fractions: Any = None,
    n_orders: int = 5,
    kernel_size: int = 11,
    sigma: float = 10.0,
    score: str = "probability",
    normalize: bool = True,
    clip: bool = True,
    batch_size: int = 256,
    generator: torch.Generator | None = None,
    segment_step: int = 1,
) -> torch.Tensor:
    """The random-order baseline: delete superpixels in random orders, averaged over ``n_orders`` orders.

    Each order deletes the segments of an image one by one (cumulatively) with the same blurred-patch
    replacement as :func:`deletion_curves`. Every curve is placed on the x axis of the fraction of
    *pixels* deleted and linearly interpolated onto ``fractions`` (so its area is comparable with a method's
    deletion area on the same grid), normalized by the clean score and clipped to [0, 1] as in the paper.
    All images of one order run through the batched engine together, one order after another (so host
    memory stays about twice the images at paper scale); each order is an independent draw (the C2I
    code reused one seed for its five orders).

    Args:
        model: classifier returning logits (N, K) (calibrated or not: the same model as the method curves).
        x: float32 (N, C, H, W) images in [0, 1].
        target: class per sample (int or int64 (N,)).
        segments: int (N, H, W) (or one (H, W)) superpixel labels, e.g. from :func:`superpixels`.
        fractions: (T,) pixel fractions to report (default: the grid of :func:`deletion_curves`).
        n_orders: random orders averaged (paper: 5).
        kernel_size, sigma, score, normalize, batch_size: as in :func:`deletion_curves`.
        clip: clip normalized curves to [0, 1].
        generator: torch.Generator for the orders (None = fresh random seed).
        segment_step: superpixels deleted between two scored points (1 = the paper, one at a time);
            the curve is interpolated onto ``fractions`` either way, so a larger step costs fewer
            forward passes and only coarsens the interpolation.

    Returns:
        float32 (N, T) mean curves.
    """
    x = check_tensor(x, "x", ndim=4)
    n, c, h, w = x.shape
    n_orders = check_int(n_orders, "n_orders", low=1)
    check_choice(score, "score", _SCORES)
    if normalize and score not in ("probability", "output"):
        raise ValueError(f"`normalize`=True needs `score` 'probability' or 'output', got {score!r}")
    segment_step = check_int(segment_step, "segment_step", low=1)
    seg = check_tensor(segments, "segments", ndim=(2, 3), dtype=None)
    if seg.ndim == 2:
        seg = seg.expand(n, -1, -1)
    if tuple(seg.shape) != (n, h, w):
        raise ValueError(f"`segments` must have shape {(n, h, w)} or {(h, w)}, got {tuple(seg.shape)}")
    seg = seg.long().cpu()
    fr = curve_fractions(h * w, _default_step(h * w), 0.99) if fractions is None else check_tensor(fractions, "fractions", ndim=1)
    if generator is None:
        generator = torch.Generator()
        generator.seed()
    # relabel consecutively per image
    flat = seg.reshape(n, -1)
    ids = torch.stack([torch.unique(r, return_inverse=True)[1] for r in flat])  # (N, P)
    g_max = int(ids.max()) + 1
    n_groups = ids.max(1).values + 1  # (N,)
    sizes = torch.zeros(n, g_max).scatter_add_(1, ids, torch.ones_like(ids, dtype=torch.float32))
    # random distinct scores per (order, image, group); absent groups score -1 (ranked last)
    r = torch.rand((n_orders, n, g_max), generator=generator, device=generator.device).cpu()
    present = torch.arange(g_max)[None] < n_groups[:, None]
    r = torch.where(present[None], r, torch.full_like(r, -1.0))
    # One order at a time on the original images (host memory stays ~2x the images, not 2 x n_orders x),
    # and the blurred replacement is computed once: it does not depend on the order.
    blurred = blur_fixed_kernel(x, kernel_size, sigma)
    feature_mask = ids.reshape(n, h, w)
    xs = fr.double()
    total = None
    for o in range(n_orders):
        attr = r[o].gather(1, ids).reshape(n, h, w)
        curves = perturbation_curve(model, x, attr, target, mode="deletion", baseline=blurred, step=segment_step,
                                    max_fraction=1.0, score=score, feature_mask=feature_mask,
                                    batch_size=batch_size).cpu().double()  # (N, ceil(G / step) + 1)
        order = torch.argsort(r[o], dim=1, descending=True, stable=True)
        cum = sizes.gather(1, order).cumsum(1) / (h * w)  # (N, G): pixel fraction after k + 1 segments
        done = torch.clamp(torch.arange(1, curves.shape[1]) * segment_step, max=g_max) - 1
        xpos = torch.cat([torch.zeros(n, 1, dtype=torch.float64), cum[:, done].double()], 1)
        if normalize:
            curves = curves / curves[:, :1].clamp_min(1e-12)
        out = _interp_rows(xpos, curves, xs)
        if normalize and clip:
            out = out.clamp(0.0, 1.0)
        total = out if total is None else total + out
    return (total / n_orders).float().to(x.device)


@metric(higher_is_better=True, category="faithfulness")
def btr(method_area: Any, random_area: Any) -> float:
    """Better-than-random ratio: fraction of images whose deletion area is lower than the random baseline's.

    Args:
        method_area: float (N,) deletion areas of a method (:func:`deletion_area`).
        random_area: float (N,) random-baseline areas of the same images under the same model.

    Returns:
        BTR in [0, 1] (Python float); higher is better.
    """
    a = check_tensor(method_area, "method_area", ndim=1)
    b = check_tensor(random_area, "random_area", ndim=1)
    if a.shape != b.shape:
        raise ValueError(f"`random_area` must have the shape of `method_area` {tuple(a.shape)}, got {tuple(b.shape)}")
    return float((a < b.to(a.device)).float().mean())


@metric(higher_is_better=False, category="complexity")
def otsu_tv(maps: Any, form: str = "code") -> torch.Tensor:
    """Total variation of the Otsu-binarized saliency map (visual coherence; lower = smoother).

    ``B = 1[S > threshold_otsu(S)]`` (scikit-image, on the min-max normalized map). With
    ``d_r = mean|B[i+1, j] - B[i, j]|`` and ``d_c = mean|B[i, j+1] - B[i, j]|``:
    ``form="code"`` returns ``d_r^3 + d_c^3`` (the C2I code: the cube of the means), ``form="plain"``
    returns ``d_r + d_c``.

    Args:
        maps: float (N, H, W) saliency maps (or (N, 1, H, W), or one (H, W) map).
        form: ``"code"`` or ``"plain"``.

    Returns:
        float32 (N,) TV values; a constant map (nothing to binarize) gives 0.
    """
    check_choice(form, "form", ("code", "plain"))
    bins = otsu_binarize(maps).double().numpy()
    out = np.zeros(bins.shape[0])
    for i, b in enumerate(bins):
        dr = np.abs(np.diff(b, axis=0)).mean() if b.shape[0] > 1 else 0.0
        dc = np.abs(np.diff(b, axis=1)).mean() if b.shape[1] > 1 else 0.0
        out[i] = dr**3 + dc**3 if form == "code" else dr + dc
    return torch.from_numpy(out).float()


def otsu_binarize(maps: Any) -> torch.Tensor:
    """The Otsu binarization of each saliency map (the foreground :func:`otsu_tv` measures).

    ``B = 1[S > threshold_otsu(S)]`` on the min-max normalized map (scikit-image's threshold, one
    histogram per map); a constant map has no foreground.

    Args:
        maps: float (N, H, W) saliency maps (or (N, 1, H, W), or one (H, W) map).

    Returns:
        bool (N, H, W) on the CPU.

    References:
        Otsu. A threshold selection method from gray-level histograms. IEEE TSMC 1979.
    """
    from skimage.filters import threshold_otsu

    m = _maps(maps, "maps")
    m = normalize_attributions(m, "minmax").detach().cpu().double().numpy()
    out = np.zeros(m.shape, dtype=bool)
    for i, s in enumerate(m):  # Otsu thresholds per map (a histogram each), no perturbation involved
        if s.max() > s.min():
            out[i] = s > threshold_otsu(s)
    return torch.from_numpy(out)


def deletion_stages(x: Any, maps: Any, fractions: Any, *, kernel_size: int = 11, sigma: float = 10.0) -> torch.Tensor:
    """The images a deletion curve scores at given fractions of deleted pixels (for showing the protocol).

    The top ``round(f H W)`` pixels of each map (descending, ties by index, as :func:`deletion_curves`
    ranks them) take their values from ``blur_fixed_kernel(x, kernel_size, sigma)``.

    Args:
        x: float32 (N, C, H, W) images in [0, 1].
        maps: (N, H, W) saliency maps.
        fractions: (F,) fractions in [0, 1].
        kernel_size, sigma: the replacement blur of :func:`deletion_curves`.

    Returns:
        float32 (F, N, C, H, W) images.
    """
    x = check_tensor(x, "x", ndim=4)
    m = _maps(maps, "maps")
    if m.shape[0] != x.shape[0] or tuple(m.shape[1:]) != tuple(x.shape[2:]):
        raise ValueError(f"`maps` must have shape {(x.shape[0], *x.shape[2:])}, got {tuple(m.shape)}")
    fr = check_tensor(fractions, "fractions", ndim=1).double()
    if bool((fr < 0).any()) or bool((fr > 1).any()):
        raise ValueError("`fractions` must lie in [0, 1]")
    n, c, h, w = x.shape
    blurred = blur_fixed_kernel(x, kernel_size, sigma)
    order = torch.argsort(m.reshape(n, -1).to(x.device), dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(h * w, device=x.device).expand(n, -1))
    counts = torch.round(fr * h * w).long().to(x.device)
    out = []
    for k in counts:  # a handful of fractions for display
        gone = (rank < k).view(n, 1, h, w)
        out.append(torch.where(gone, blurred, x))
    return torch.stack(out).float()


@metric(higher_is_better=False, category="robustness")
def local_lipschitz(
    model: torch.nn.Module,
    x: Any,
    target: Any,
    explain_fn: Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    n_neighbours: int = 40,
    radius: float = 0.05,
    reduce: str | None = "abs_sum",
    normalize: bool = True,
    batch_size: int = 64,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Local Lipschitz estimate ``max_j ||S(x) - S(x'_j)||_2 / ||x - x'_j||_2`` (Alvarez-Melis & Jaakkola 2018).

    The neighbours ``x'_j = x + delta_j`` are drawn uniformly in the l2 ball of ``radius`` around x
    (Gaussian direction, radius ``radius * U^(1/d)``); all neighbours of all samples are explained in
    calls of at most ``batch_size`` inputs.

    Args:
        model: the model to explain (calibrated or not).
        x: float32 (N, ...) inputs (images in [0, 1] or tabular rows).
        target: class per sample (int or int64 (N,)); the neighbours explain the same class.
        explain_fn: ``fn(model, x, target) -> attributions shaped like x`` (e.g. a lambda around
            :func:`xcal_core.explainers.explain`). A stochastic explainer should reuse one seed per
            call (common random numbers), otherwise its sampling noise counts as instability.
        n_neighbours: neighbours per sample (paper: 40).
        radius: l2 radius of the neighbourhood in input units (paper: 0.05).
        reduce: channel reduction for image attributions (see :func:`saliency_maps`) or None to
            compare the raw attributions.
        normalize: min-max normalize the maps before taking differences (the paper's "normalized" maps).
        batch_size: most neighbour inputs per ``explain_fn`` call.
        generator: torch.Generator for the neighbours (None = fresh random seed).

    Returns:
        float32 (N,) estimates (>= 0; lower = more stable).
    """
    if not callable(explain_fn):
        raise TypeError(f"`explain_fn` must be callable fn(model, x, target), got {type(explain_fn).__name__}")
    x = check_tensor(x, "x", ndim=(2, 3, 4, 5))
    n_neighbours = check_int(n_neighbours, "n_neighbours", low=1)
    radius = float(check_positive(radius, "radius"))
    batch_size = check_int(batch_size, "batch_size", low=1)
    if reduce is not None:
        check_choice(reduce, "reduce", _REDUCE)
    n = x.shape[0]
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        tgt = torch.full((n,), int(target), dtype=torch.long)
    else:
        tgt = torch.as_tensor(target).long().reshape(-1)
        if tgt.shape[0] != n:
            raise ValueError(f"`target` has {tgt.shape[0]} entries but `x` has {n} samples")
    tgt = tgt.to(x.device)
    if generator is None:
        generator = torch.Generator()
        generator.seed()
    d = x[0].numel()
    direction = torch.randn((n, n_neighbours, d), generator=generator, device=generator.device, dtype=torch.float64)
    direction = direction / direction.norm(dim=2, keepdim=True).clamp_min(1e-12)
    rad = radius * torch.rand((n, n_neighbours, 1), generator=generator, device=generator.device, dtype=torch.float64) ** (1.0 / d)
    delta = (direction * rad).to(device=x.device, dtype=x.dtype).view(n * n_neighbours, *x.shape[1:])

    def to_map(a: torch.Tensor) -> torch.Tensor:
        a = check_tensor(a, "explain_fn output")
        if reduce is not None and a.ndim == 4:
            a = reduce_channels(a, reduce)
        elif reduce in ("abs_sum", "max_abs"):
            a = a.abs()
        a = a.reshape(a.shape[0], -1)
        return normalize_attributions(a, "minmax") if normalize else a

    base = to_map(explain_fn(model, x, tgt))  # (N, D')
    xr = x.repeat_interleave(n_neighbours, 0) + delta
    tr = tgt.repeat_interleave(n_neighbours, 0)
    diffs = torch.empty(n * n_neighbours, dtype=torch.float64, device=x.device)
    for start in range(0, xr.shape[0], batch_size):  # chunks of neighbour inputs
        sl = slice(start, start + batch_size)
        mp = to_map(explain_fn(model, xr[sl], tr[sl]))
        ref = base.repeat_interleave(n_neighbours, 0)[sl]
        diffs[sl] = (mp - ref).double().norm(dim=1)
    ratio = diffs / delta.reshape(delta.shape[0], -1).double().norm(dim=1).clamp_min(1e-12)
    return ratio.view(n, n_neighbours).amax(1).float()


# ------------------------------------------------------------------------------------------ experiment drivers


@dataclass
class SaliencyReport:
    """Maps, deletion curves and per-image metrics of several methods on several (calibrated) models.

    Attributes:
        maps: ``{(model_name, method_name): float32 (N, H, W)}`` min-max normalized saliency maps.
        targets: ``{model_name: int64 (N,)}`` the class each model predicts on the clean images (explained).
        curves: ``{(model_name, method_name): float32 (N, L + 1)}`` deletion curves scored by the
            explained model itself (the paper's form), normalized by its clean score.
        random_curves: ``{model_name: float32 (N, L + 1)}`` random-superpixel baseline curves scored by
            each model itself.
        inv_curves, inv_insertion_curves: ``{(model_name, method_name): float32 (N, L + 1)}`` deletion
            and insertion curves of the same maps scored by the fixed ``evaluator`` (empty without one).
        inv_random_curves: ``{model_name: float32 (N, L + 1)}`` the random baseline scored by the
            evaluator for that model's explained classes (models with the same classes share one).
        fractions: float32 (L + 1,) fraction of pixels deleted (inserted) at each curve point.
        per_image: tidy DataFrame, one row per (model, method, image): ``ssim`` (against the reference
            model's map of the same method; NaN for the reference itself), ``otsu_tv``,
            ``otsu_tv_plain``, ``mass_in_mask`` (with object masks); the own-model view
            ``deletion_area``, ``random_area``, ``better_than_random`` (0/1) unless ``own_view=False``;
            the evaluator view ``inv_deletion_area``, ``inv_random_area``, ``inv_better_than_random``
            and ``inv_insertion_area`` when an ``evaluator`` is given.
    """

    maps: dict = field(default_factory=dict)
    targets: dict = field(default_factory=dict)
    curves: dict = field(default_factory=dict)
    random_curves: dict = field(default_factory=dict)
    inv_curves: dict = field(default_factory=dict)
    inv_insertion_curves: dict = field(default_factory=dict)
    inv_random_curves: dict = field(default_factory=dict)
    fractions: torch.Tensor | None = None
    per_image: Any = None

    def summary(self) -> Any:
        """Per (model, method) means of the per-image metrics; ``btr`` (``inv_btr``) = mean of
        ``better_than_random`` (``inv_better_than_random``)."""
        df = self.per_image.drop(columns=["image"])
        out = df.groupby(["model", "method"], sort=False).mean(numeric_only=True).reset_index()
        return out.rename(columns={"better_than_random": "btr", "inv_better_than_random": "inv_btr"})


def _check_models(models: Any) -> dict:
    if not isinstance(models, dict) or not models:
        raise TypeError("`models` must be a non-empty dict {name: torch.nn.Module}")
    for k, m in models.items():
        if not isinstance(m, torch.nn.Module):
            raise TypeError(f"`models`[{k!r}] must be a torch.nn.Module, got {type(m).__name__}")
    return models


def _check_methods(methods: Any) -> dict:
    if not isinstance(methods, dict) or not methods:
        raise TypeError("`methods` must be a non-empty dict {name: {'method': explain method, **kwargs}}")
    for k, spec in methods.items():
        if not isinstance(spec, dict) or "method" not in spec:
            raise ValueError(f"`methods`[{k!r}] must be a dict with a 'method' key (an explain method name), got {spec!r}")
    return methods


def _explain_spec(model, x, target, spec, score, seed, batch_size):
    kw = {k: v for k, v in spec.items() if k not in ("method", "batch_size")}
    bs = spec.get("batch_size", batch_size)  # a method's own chunk size (e.g. MP, which back-propagates) wins
    g = torch.Generator().manual_seed(int(seed))  # the same random draws for every model (common random numbers)
    return explain(model, x, target, spec["method"], score=score, generator=g, batch_size=bs, **kw)


def saliency_report(
    models: dict,
    x: Any,
    methods: dict,
    *,
    reference: str | None = None,
    scores: dict | None = None,
    segments: Any = None,
    object_masks: Any = None,
    n_orders: int = 5,
    kernel_size: int = 11,
    sigma: float = 10.0,
    step: int | None = None,
    seed: int = 0,
    batch_size: int = 256,
    evaluator: torch.nn.Module | None = None,
    own_view: bool = True,
    insertion: bool = True,
    segment_step: int = 1,
) -> SaliencyReport:
    """Explain the same images with every method under every model and evaluate the maps (C2I protocol).

    For each model the explained class is the model's own prediction on the clean image (so Dirichlet
    calibration may explain another class than the uncalibrated model). Maps are ``sum_c |a_c|``,
    min-max normalized. Stochastic methods draw the same random numbers for every model (a fresh
    generator seeded with ``seed``), so differences come from the model, not sampling; the random baselines
    of every model and view use the same superpixel orders too. Build the calibrated models on one
    :class:`xcal_core.calibration.SharedLogits` of the network (and pass it as the ``evaluator``): these
    common inputs then cost one forward pass for all models.

    Faithfulness comes in two views (see the module docstring for why):

    * **own** (``own_view=True``, the paper's form): each model's maps are scored by that model's own
      softmax probability, deletion curves normalized by the clean probability, and its random baseline
      deletes ``segments`` in ``n_orders`` random orders under the same model. It moves with the
      temperature even for an identical map.
    * **invariant** (``evaluator`` given): every map of every model is scored by the one ``evaluator``
      (e.g. the uncalibrated network), on the class the map explains, with its softmax probability
      normalized by the clean probability: deletion, insertion (when ``insertion``) and the random
      baseline. The score depends on the map and the explained class only, so an identical map from two
      temperatures gets an identical score. If ``evaluator`` is one of ``models`` its own-view curves are
      reused.

    Args:
        models: ``{name: model returning logits}``, e.g. ``{"uncalibrated": net,
            "temperature_scaling": CalibratedModel(net, ts), ...}``.
        x: float32 (N, C, H, W) images in [0, 1].
        methods: ``{name: {"method": explain method, **method kwargs}}``, e.g.
            ``{"sensitivity": {"method": "saliency"}, "rise": {"method": "rise", "n_masks": 2000}}``.
            A ``"batch_size"`` entry sets that method's own chunk size (default: ``batch_size``), e.g. a
            smaller one for Meaningful Perturbation, whose chunks of images are back-propagated.
        reference: model name the SSIM compares against (default: the first model).
        scores: optional ``{model name: score}`` of what each model's explainer explains
            (``"probability"`` by default: the paper's eqs.; ``"logit"`` reproduces the C2I code's
            uncalibrated branch). The deletion evaluation always uses probabilities.
        segments: int (N, H, W) superpixels for the random baseline (default: :func:`superpixels` SLIC, 100).
        object_masks: optional bool (N, H, W) ground-truth object masks (adds ``mass_in_mask``).
        n_orders, kernel_size, sigma, step: deletion settings (see :func:`deletion_curves`).
        seed: seed of the random orders and of stochastic explainers.
        batch_size: most inputs per forward pass.
        evaluator: the fixed model of the invariant view (None: no invariant view).
        own_view: compute the own-model view (at least one view is needed).
        insertion: add insertion curves to the invariant view.
        segment_step: superpixels deleted between scored points of the random baseline
            (:func:`random_deletion_curves`).

    Returns:
        A :class:`SaliencyReport`.

    References:
        Scafarto, Posocco, Bonnefoy. Calibrate to Interpret. ECML-PKDD workshops 2022 (section 4.4).
    """
    import pandas as pd

    models = _check_models(models)
    methods = _check_methods(methods)
    x = check_tensor(x, "x", ndim=4)
    names = list(models)
    reference = names[0] if reference is None else check_choice(reference, "reference", names)
    scores = {} if scores is None else dict(scores)
    for k, v in scores.items():
        check_choice(k, "scores key", names)
        check_choice(v, f"scores[{k!r}]", ("logit", "probability", "log_probability"))
    if evaluator is not None and not isinstance(evaluator, torch.nn.Module):
        raise TypeError(f"`evaluator` must be a torch.nn.Module or None, got {type(evaluator).__name__}")
    if evaluator is None and not own_view:
        raise ValueError("nothing to score: pass an `evaluator` or keep `own_view`=True")
    n, n_pix = x.shape[0], x.shape[2] * x.shape[3]
    step = _default_step(n_pix) if step is None else check_int(step, "step", low=1)
    fr = curve_fractions(n_pix, step, 0.99)
    if segments is None:
        segments = superpixels(x, 100, "slic")
    if object_masks is not None:
        object_masks = check_tensor(object_masks, "object_masks", ndim=3, dtype=None).bool()
        if tuple(object_masks.shape) != (n, *x.shape[2:]):
            raise ValueError(f"`object_masks` must have shape {(n, *x.shape[2:])}, got {tuple(object_masks.shape)}")
    deletion_kw = dict(kernel_size=kernel_size, sigma=sigma, step=step, batch_size=batch_size)
    random_kw = dict(fractions=fr, n_orders=n_orders, kernel_size=kernel_size, sigma=sigma, batch_size=batch_size,
                     segment_step=segment_step)
    rep = SaliencyReport(fractions=fr)
    inv_random_by_target: list[tuple[torch.Tensor, torch.Tensor]] = []  # (targets, curves): shared by equal targets
    rows = []
    for mname, model in models.items():
        with torch.no_grad():
            dev = model_device(model)
            logits = torch.cat([model(x[i:i + batch_size].to(dev)).to(x.device) for i in range(0, n, batch_size)])
        tgt = logits.argmax(1)
        rep.targets[mname] = tgt
        is_evaluator = evaluator is not None and model is evaluator
        if own_view:
            rep.random_curves[mname] = random_deletion_curves(
                model, x, tgt, segments, generator=torch.Generator().manual_seed(int(seed) + 7919), **random_kw)
        if evaluator is not None:
            known = [c for t, c in inv_random_by_target if torch.equal(t, tgt)]
            if known:
                rnd_inv = known[0]
            elif is_evaluator and own_view:
                rnd_inv = rep.random_curves[mname]
            else:
                rnd_inv = random_deletion_curves(evaluator, x, tgt, segments,
                                                 generator=torch.Generator().manual_seed(int(seed) + 7919), **random_kw)
            inv_random_by_target.append((tgt, rnd_inv))
            rep.inv_random_curves[mname] = rnd_inv
        for meth, spec in methods.items():
            attr = _explain_spec(model, x, tgt, spec, scores.get(mname, "probability"), seed, batch_size)
            maps = saliency_maps(attr)
            rep.maps[(mname, meth)] = maps
            tv_code, tv_plain = otsu_tv(maps, "code"), otsu_tv(maps, "plain")
            ssim_v = ssim(maps, rep.maps[(reference, meth)]) if mname != reference and (reference, meth) in rep.maps else torch.full((n,), float("nan"))
            cols = {"ssim": ssim_v, "otsu_tv": tv_code, "otsu_tv_plain": tv_plain}
            if own_view:
                curves, _ = deletion_curves(model, x, maps, tgt, **deletion_kw)
                rep.curves[(mname, meth)] = curves
                area, r_area = deletion_area(curves, fr), deletion_area(rep.random_curves[mname], fr)
                cols.update(deletion_area=area, random_area=r_area, better_than_random=(area < r_area).float())
            if evaluator is not None:
                if is_evaluator and own_view:
                    inv = rep.curves[(mname, meth)]
                else:
                    inv, _ = deletion_curves(evaluator, x, maps, tgt, **deletion_kw)
                rep.inv_curves[(mname, meth)] = inv
                area, r_area = deletion_area(inv, fr), deletion_area(rep.inv_random_curves[mname], fr)
                cols.update(inv_deletion_area=area, inv_random_area=r_area, inv_better_than_random=(area < r_area).float())
                if insertion:
                    ins, _ = insertion_curves(evaluator, x, maps, tgt, max_fraction=0.99, **deletion_kw)
                    rep.inv_insertion_curves[(mname, meth)] = ins
                    cols["inv_insertion_area"] = insertion_area(ins, fr)
            if object_masks is not None:
                inside = (maps * object_masks.to(maps.device)).flatten(1).sum(1)
                cols["mass_in_mask"] = inside / maps.flatten(1).sum(1).clamp_min(1e-12)
            frame = pd.DataFrame({k: v.detach().cpu().numpy() for k, v in cols.items()})
            frame.insert(0, "image", np.arange(n))
            frame.insert(0, "method", meth)
            frame.insert(0, "model", mname)
            rows.append(frame)
    if reference != names[0]:  # SSIM needs the reference maps first: fill rows computed before them
        for frame in rows:
            mname, meth = frame["model"].iloc[0], frame["method"].iloc[0]
            if mname != reference:
                frame["ssim"] = ssim(rep.maps[(mname, meth)], rep.maps[(reference, meth)]).cpu().numpy()
    rep.per_image = pd.concat(rows, ignore_index=True)
    return rep


def lipschitz_report(
    models: dict,
    x: Any,
    methods: dict,
    *,
    n_neighbours: int = 40,
    radius: float = 0.05,
    scores: dict | None = None,
    seed: int = 0,
    batch_size: int = 64,
) -> Any:
    """Local Lipschitz estimates of every method under every model (C2I Fig. 9), as a tidy DataFrame.

    Each model explains its own predicted class at x; the neighbours are the same for every model and
    method (one generator seeded with ``seed``), and stochastic explainers reuse one seed for every call.

    Args:
        models: ``{name: model}`` as in :func:`saliency_report`.
        x: float32 (N, ...) inputs.
        methods: ``{name: {"method": ..., **kwargs}}`` as in :func:`saliency_report` (a ``"batch_size"``
            entry is the method's own chunk size inside each explainer call).
        n_neighbours, radius: see :func:`local_lipschitz`.
        scores: optional ``{model name: score}`` (default ``"probability"``).
        seed: seed of the neighbours and of stochastic explainers.
        batch_size: most neighbour inputs per explainer call.

    Returns:
        pandas DataFrame with columns ``model``, ``method``, ``image``, ``lipschitz``.
    """
    import pandas as pd

    models = _check_models(models)
    methods = _check_methods(methods)
    x = check_tensor(x, "x", ndim=(2, 3, 4, 5))
    scores = {} if scores is None else dict(scores)
    rows = []
    for mname, model in models.items():
        with torch.no_grad():
            dev = model_device(model)
            tgt = torch.cat([model(x[i:i + batch_size].to(dev)).argmax(1) for i in range(0, x.shape[0], batch_size)]).to(x.device)
        for meth, spec in methods.items():
            score = scores.get(mname, "probability")
            fn = lambda m, xx, t, _s=spec, _sc=score: _explain_spec(m, xx, t, _s, _sc, seed, None)  # noqa: E731
            lip = local_lipschitz(model, x, tgt, fn, n_neighbours=n_neighbours, radius=radius, batch_size=batch_size,
                                  generator=torch.Generator().manual_seed(int(seed)))
            rows.append(pd.DataFrame({"model": mname, "method": meth, "image": np.arange(x.shape[0]),
                                      "lipschitz": lip.cpu().numpy()}))
    return pd.concat(rows, ignore_index=True)
