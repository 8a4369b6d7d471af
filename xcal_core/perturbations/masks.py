"""Coalition masks over features, perturbation levels and their bins.

Vocabulary (ReCalX, Decker et al. 2025):

* A **feature mask** assigns every input element to one of ``d`` features: an int64 tensor of
  feature ids ``0 .. d-1``, shaped like one input (or broadcastable to it, e.g. ``(H, W)`` for
  ``(C, H, W)`` images so that channels move together). Builders: :func:`tabular_feature_mask`,
  :func:`patch_feature_mask`, :func:`superpixel_feature_mask`.
* A **coalition** is a boolean ``keep_mask`` of shape ``(d,)`` (batched: ``(..., d)``);
  ``True`` = the feature is kept from the input, ``False`` = it is replaced by the baseline.
* The **perturbation level** of a coalition is the fraction of *replaced* features,
  ``level = (d - |kept|) / d`` in [0, 1], computed from the mask (never by comparing pixels, which
  undercounts wherever the baseline equals the input, e.g. zero background pixels).
* Levels are grouped into ``n_bins`` equal-width bins on [0, 1]; bin ``b = min(floor(level * B), B - 1)``
  (level 1 goes to the last bin). With few features some bins contain no achievable level k/d
  (d = 7, B = 10: bin [0.3, 0.4) is empty); :func:`achievable_counts` lists them and the samplers
  refuse to draw from them.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch

from .._validation import check_fraction, check_int, check_tensor, model_device

__all__ = [
    "tabular_feature_mask",
    "patch_feature_mask",
    "superpixel_feature_mask",
    "count_features",
    "perturbation_level",
    "level_to_bin",
    "bin_edges",
    "achievable_counts",
    "empty_bins",
    "sample_keep_masks",
    "sample_keep_masks_in_bin",
    "sample_keep_masks_per_bin",
    "expand_keep_mask",
    "apply_coalitions",
    "perturbed_logits",
]

_LEVEL_EPS = 1e-6  # levels are float32 k/d; 7/10 in float32 is 0.69999999


# ----------------------------------------------------------------------------------------------
# feature masks
# ----------------------------------------------------------------------------------------------

def tabular_feature_mask(n_features: int) -> torch.Tensor:
    """One feature per column: ``arange(n_features)``, shape (D,), int64."""
    n_features = check_int(n_features, "n_features", low=1)
    return torch.arange(n_features, dtype=torch.long)


def patch_feature_mask(height: int, width: int, patch_size: int | tuple[int, int]) -> torch.Tensor:
    """Square (or rectangular) patches in row-major order, shape (H, W), int64 ids 0..d-1.

    Patches at the right / bottom border are smaller when ``patch_size`` does not divide the image.

    Args:
        height, width: image size in pixels (>= 1).
        patch_size: patch side ``p`` or ``(ph, pw)``, each >= 1.

    Returns:
        (H, W) int64 feature ids; ``d = ceil(H / ph) * ceil(W / pw)``.
    """
    height = check_int(height, "height", low=1)
    width = check_int(width, "width", low=1)
    ph, pw = (patch_size, patch_size) if isinstance(patch_size, (int, np.integer)) else tuple(patch_size)
    ph = check_int(ph, "patch_size", low=1)
    pw = check_int(pw, "patch_size", low=1)
    rows = torch.arange(height) // ph
    cols = torch.arange(width) // pw
    n_cols = math.ceil(width / pw)
    return rows[:, None] * n_cols + cols[None, :]


def superpixel_feature_mask(
    images: Any, n_segments: int = 16, compactness: float = 10.0, sigma: float = 0.0
) -> torch.Tensor:
    """SLIC superpixels (scikit-image) as feature masks, one per image, ids relabelled to 0..d_i-1.

    Args:
        images: (N, C, H, W) or (C, H, W) float images in [0, 1].
        n_segments: approximate number of superpixels (SLIC's target, >= 1).
        compactness: SLIC colour / space trade-off (> 0).
        sigma: Gaussian smoothing before segmenting (>= 0).

    Returns:
        (N, H, W) int64 feature ids (or (H, W) for a single image). The number of superpixels can
        differ between images; :func:`count_features` gives it per image.
    """
    from skimage.segmentation import slic

    x = check_tensor(images, "images", ndim=(3, 4))
    single = x.ndim == 3
    if single:
        x = x[None]
    n_segments = check_int(n_segments, "n_segments", low=1)
    arr = x.detach().cpu().permute(0, 2, 3, 1).numpy().astype(np.float64)
    out = []
    for img in arr:
        channel_axis = -1 if img.shape[-1] > 1 else None
        seg = slic(img if channel_axis is not None else img[..., 0], n_segments=n_segments, compactness=compactness,
                   sigma=sigma, start_label=0, channel_axis=channel_axis)
        _, relabelled = np.unique(seg, return_inverse=True)
        out.append(torch.as_tensor(relabelled.reshape(seg.shape), dtype=torch.long))
    masks = torch.stack(out)
    return masks[0] if single else masks


def count_features(feature_mask: Any) -> int:
    """Number of features ``d = max id + 1`` of a feature mask whose ids are 0..d-1 (all used)."""
    fm = _check_feature_mask(feature_mask)
    return int(fm.max()) + 1


def _check_feature_mask(feature_mask: Any, name: str = "feature_mask") -> torch.Tensor:
    fm = check_tensor(feature_mask, name, dtype=None)
    if fm.is_floating_point():
        if not torch.all(fm == fm.round()):
            raise TypeError(f"`{name}` must hold integer feature ids")
    fm = fm.long()
    if int(fm.min()) < 0:
        raise ValueError(f"`{name}` must hold feature ids >= 0, got min {int(fm.min())}")
    d = int(fm.max()) + 1
    if torch.unique(fm).numel() != d:
        raise ValueError(f"`{name}` ids must be 0..d-1 with every id used (found {torch.unique(fm).numel()} distinct ids, max {d - 1})")
    return fm


# ----------------------------------------------------------------------------------------------
# levels and bins
# ----------------------------------------------------------------------------------------------

def perturbation_level(keep_mask: Any) -> torch.Tensor:
    """Fraction of replaced features of each coalition: ``1 - kept / d``.

    Args:
        keep_mask: (..., d) bool (True = kept) coalition masks.

    Returns:
        (...) float32 levels in [0, 1].
    """
    km = torch.as_tensor(keep_mask)
    if km.dtype != torch.bool:
        raise TypeError(f"`keep_mask` must be a bool tensor (True = kept), got dtype {km.dtype}")
    if km.ndim < 1 or km.shape[-1] < 1:
        raise ValueError(f"`keep_mask` must have a last dimension of d >= 1 features, got shape {tuple(km.shape)}")
    d = km.shape[-1]
    return (d - km.sum(-1)).float() / d


def _check_levels(levels: Any, name: str = "levels") -> torch.Tensor:
    lv = check_tensor(levels, name, dtype=None)
    lv = lv.float() if not lv.is_floating_point() else lv
    if (lv < 0).any() or (lv > 1).any():
        raise ValueError(f"`{name}` must be in [0, 1]; got values in [{float(lv.min()):.3g}, {float(lv.max()):.3g}]")
    return lv


def level_to_bin(levels: Any, n_bins: int) -> torch.Tensor:
    """Bin index ``min(floor(level * n_bins), n_bins - 1)`` of each level (level 1 -> last bin).

    A tolerance of 1e-6 protects exact bin edges from float32 round-off (7/10 must land in bin 7).

    Args:
        levels: (...) float levels in [0, 1].
        n_bins: number of equal-width bins, >= 1.

    Returns:
        (...) int64 bin indices in [0, n_bins).
    """
    n_bins = check_int(n_bins, "n_bins", low=1)
    lv = _check_levels(levels)
    return torch.floor(lv.double() * n_bins + _LEVEL_EPS).long().clamp(0, n_bins - 1)


def bin_edges(n_bins: int) -> torch.Tensor:
    """(n_bins + 1,) float64 edges of the equal-width level bins on [0, 1]."""
    n_bins = check_int(n_bins, "n_bins", low=1)
    return torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)


def achievable_counts(n_features: int, n_bins: int) -> list[list[int]]:
    """For each bin, the numbers of replaced features ``k`` (0..d) whose level k/d falls in it.

    Args:
        n_features: d >= 1.
        n_bins: B >= 1.

    Returns:
        A list of B lists of ints; an empty list marks a bin no coalition can reach.
    """
    d = check_int(n_features, "n_features", low=1)
    n_bins = check_int(n_bins, "n_bins", low=1)
    bins = level_to_bin(torch.arange(d + 1, dtype=torch.float64) / d, n_bins)
    return [[k for k in range(d + 1) if int(bins[k]) == b] for b in range(n_bins)]


def empty_bins(n_features: int, n_bins: int) -> list[int]:
    """Indices of the bins with no achievable level for ``n_features`` features."""
    return [b for b, ks in enumerate(achievable_counts(n_features, n_bins)) if not ks]


# ----------------------------------------------------------------------------------------------
# sampling coalitions
# ----------------------------------------------------------------------------------------------

def _random_subsets(n_replaced: torch.Tensor, d: int, generator: torch.Generator | None) -> torch.Tensor:
    """(M, d) keep masks with exactly ``n_replaced[m]`` uniformly chosen features replaced."""
    m = n_replaced.shape[0]
    ranks = torch.argsort(torch.rand(m, d, generator=generator), dim=1).argsort(dim=1)
    return ranks >= n_replaced[:, None]


def sample_keep_masks(
    n_features: int, n: int, level: float, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``n`` uniformly random coalitions with ``round(level * d)`` replaced features each.

    The achieved level is ``round(level * d) / d``; check it with :func:`perturbation_level`.

    Args:
        n_features: d >= 1.
        n: number of coalitions, >= 1.
        level: target fraction of replaced features in [0, 1].
        generator: torch random generator (CPU).

    Returns:
        (n, d) bool keep masks.
    """
    d = check_int(n_features, "n_features", low=1)
    n = check_int(n, "n", low=1)
    level = check_fraction(level, "level")
    k = int(round(level * d))
    return _random_subsets(torch.full((n,), k, dtype=torch.long), d, generator)


def sample_keep_masks_in_bin(
    n_features: int, n: int, bin_index: int, n_bins: int = 10, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``n`` coalitions whose levels lie in bin ``bin_index``.

    The number of replaced features is drawn uniformly among the achievable counts of the bin, then a
    uniformly random subset of that size is replaced.

    Args:
        n_features: d >= 1.
        n: number of coalitions, >= 1.
        bin_index: bin in [0, n_bins).
        n_bins: number of equal-width level bins, >= 1.
        generator: torch random generator (CPU).

    Returns:
        (n, d) bool keep masks.

    Raises:
        ValueError: when the bin holds no achievable level (see :func:`empty_bins`).
    """
    d = check_int(n_features, "n_features", low=1)
    n = check_int(n, "n", low=1)
    n_bins = check_int(n_bins, "n_bins", low=1)
    bin_index = check_int(bin_index, "bin_index", low=0, high=n_bins - 1)
    ks = achievable_counts(d, n_bins)[bin_index]
    if not ks:
        raise ValueError(
            f"bin {bin_index} of {n_bins} ([{bin_index / n_bins:.3g}, {(bin_index + 1) / n_bins:.3g})) has no achievable "
            f"level with d = {d} features; empty bins: {empty_bins(d, n_bins)}"
        )
    choice = torch.randint(len(ks), (n,), generator=generator)
    return _random_subsets(torch.as_tensor(ks, dtype=torch.long)[choice], d, generator)


def sample_keep_masks_per_bin(
    n_features: int, n_per_bin: int, n_bins: int = 10, *, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n_per_bin`` coalitions for every bin that has an achievable level; empty bins are skipped.

    Args:
        n_features: d >= 1.
        n_per_bin: coalitions per non-empty bin, >= 1.
        n_bins: number of equal-width level bins, >= 1.
        generator: torch random generator (CPU).

    Returns:
        ``(keep_masks, bins)``: (M, d) bool masks and (M,) int64 bin index of each, with
        ``M = n_per_bin * (n_bins - len(empty_bins(d, n_bins)))``.
    """
    d = check_int(n_features, "n_features", low=1)
    n_per_bin = check_int(n_per_bin, "n_per_bin", low=1)
    n_bins = check_int(n_bins, "n_bins", low=1)
    counts = achievable_counts(d, n_bins)
    k_all, b_all = [], []
    for b, ks in enumerate(counts):
        if not ks:
            continue
        choice = torch.randint(len(ks), (n_per_bin,), generator=generator)
        k_all.append(torch.as_tensor(ks, dtype=torch.long)[choice])
        b_all.append(torch.full((n_per_bin,), b, dtype=torch.long))
    k = torch.cat(k_all)
    return _random_subsets(k, d, generator), torch.cat(b_all)


# ----------------------------------------------------------------------------------------------
# applying coalitions
# ----------------------------------------------------------------------------------------------

def expand_keep_mask(keep_mask: torch.Tensor, feature_mask: torch.Tensor) -> torch.Tensor:
    """Map feature-level keep masks to input-element keep masks.

    Args:
        keep_mask: (..., d) bool coalitions.
        feature_mask: int64 ids 0..d-1, shape S_f (one input, or broadcastable to it).

    Returns:
        (..., *S_f) bool, True where the input element is kept.
    """
    lead = keep_mask.shape[:-1]
    flat = keep_mask.reshape(-1, keep_mask.shape[-1])
    out = flat[:, feature_mask.reshape(-1)]
    return out.reshape(*lead, *feature_mask.shape)


def _broadcast_feature_mask(feature_mask: torch.Tensor, input_shape: tuple[int, ...]) -> torch.Tensor:
    """Align a feature mask with one input's shape S: (H, W) for (C, H, W) inputs gets a channel dim."""
    fm = feature_mask
    if fm.ndim < len(input_shape):
        fm = fm.reshape((1,) * (len(input_shape) - fm.ndim) + tuple(fm.shape))
    if not _broadcastable(tuple(fm.shape), input_shape):
        raise ValueError(f"`feature_mask` of shape {tuple(feature_mask.shape)} does not broadcast to inputs of shape {input_shape}")
    return fm


def _broadcastable(shape: tuple[int, ...], target: tuple[int, ...]) -> bool:
    """True when ``shape`` broadcasts to ``target`` (pure Python; torch.broadcast_shapes imports torch.fx lazily)."""
    if len(shape) > len(target):
        return False
    return all(s in (1, t) for s, t in zip(shape[::-1], target[::-1]))


def apply_coalitions(x: torch.Tensor, keep_mask: torch.Tensor, feature_mask: torch.Tensor, baseline: torch.Tensor) -> torch.Tensor:
    """Perturbed inputs ``where(kept, x, baseline)`` for every coalition.

    Args:
        x: (*S) one input.
        keep_mask: (M, d) bool coalitions.
        feature_mask: int64 ids 0..d-1 broadcastable to S (e.g. (H, W) for (C, H, W)).
        baseline: replacement values broadcastable to S.

    Returns:
        (M, *S) perturbed inputs (same dtype / device as ``x``).
    """
    fm = _broadcast_feature_mask(feature_mask.to(x.device), tuple(x.shape))
    kept = expand_keep_mask(keep_mask.to(x.device), fm)
    return torch.where(kept, x.unsqueeze(0), baseline.to(x.device, x.dtype).unsqueeze(0))


@torch.no_grad()
def perturbed_logits(
    model: torch.nn.Module,
    x: Any,
    feature_mask: Any,
    baseline: Any,
    *,
    n_per_bin: int = 10,
    n_bins: int = 10,
    levels: Any | None = None,
    n_per_level: int | None = None,
    generator: torch.Generator | None = None,
    batch_size: int = 512,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits of randomly perturbed copies of every input, with their levels (ReCalX fitting / evaluation data).

    Two sampling modes: per bin (default; ``n_per_bin`` coalitions in every non-empty level bin, the
    ReCalX recipe of 10 perturbations per sample per bin) or at fixed ``levels`` (``n_per_level``
    coalitions with ``round(level * d)`` replaced features each, for level curves).

    Args:
        model: classifier returning (B, K) logits; inputs are moved to its device once.
        x: (N, *S) float inputs (images in [0, 1] or standardized tabular rows).
        feature_mask: int64 feature ids 0..d-1 broadcastable to S (shared by all inputs).
        baseline: replacement values, a tensor broadcastable to (N, *S) or a float.
        n_per_bin: coalitions per input and non-empty bin (per-bin mode).
        n_bins: number of level bins (per-bin mode).
        levels: list of levels in [0, 1] (fixed-level mode).
        n_per_level: coalitions per input and level (fixed-level mode; default ``n_per_bin``).
        generator: torch generator for the coalitions.
        batch_size: forward-pass chunk size.
        transform: optional map applied to the model output (default: identity).

    Returns:
        ``(logits, sample_index, levels)``: (N * M, K) float logits, (N * M,) int64 index into ``x``
        of each row and (N * M,) float32 level of each row, ordered sample-major.
    """
    dev = model_device(model)
    xs = check_tensor(x, "x", ndim=None).to(dev)
    n = xs.shape[0]
    fm = _check_feature_mask(feature_mask).to(dev)
    fm = _broadcast_feature_mask(fm, tuple(xs.shape[1:]))
    d = int(fm.max()) + 1
    batch_size = check_int(batch_size, "batch_size", low=1)
    base = torch.as_tensor(baseline, dtype=xs.dtype).to(dev)
    try:
        base = torch.broadcast_to(base, xs.shape)
    except RuntimeError as exc:
        raise ValueError(f"`baseline` of shape {tuple(base.shape)} does not broadcast to `x` of shape {tuple(xs.shape)}") from exc
    if levels is None:
        keeps = [sample_keep_masks_per_bin(d, n_per_bin, n_bins, generator=generator)[0] for _ in range(n)]
    else:
        lv = _check_levels(levels).flatten().tolist()
        per = check_int(n_per_level if n_per_level is not None else n_per_bin, "n_per_level", low=1)
        keeps = [torch.cat([sample_keep_masks(d, per, level, generator=generator) for level in lv]) for _ in range(n)]
    keep = torch.stack(keeps).to(dev)  # (N, M, d)
    m = keep.shape[1]
    flat_keep = keep.reshape(n * m, d)
    sample_idx = torch.arange(n, device=dev).repeat_interleave(m)
    outs = []
    for start in range(0, n * m, batch_size):
        sl = slice(start, min(start + batch_size, n * m))
        idx = sample_idx[sl]
        kept = expand_keep_mask(flat_keep[sl], fm)
        batch = torch.where(kept, xs[idx], base[idx])
        out = model(batch)
        outs.append(transform(out) if transform is not None else out)
    return torch.cat(outs), sample_idx, perturbation_level(flat_keep)
