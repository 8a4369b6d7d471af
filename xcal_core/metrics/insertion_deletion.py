"""Hard insertion / deletion curves: the batched engine every faithfulness notebook uses.

Features are ranked by their attribution (descending). A *deletion* curve starts from the input and
replaces the top-ranked features with a baseline, ``step`` features at a time; an *insertion* curve
starts from the baseline and puts the top-ranked features of the input back. Each point is the model's
score for the target class. A faithful explanation gives a steep deletion curve (small area) and a
steep insertion curve (large area).

All perturbed inputs of all samples (N samples x (L + 1) curve points) are built on the fly in chunks of
at most ``batch_size`` inputs and scored with one forward pass per chunk, on the model's device; there is
no Python loop over perturbation steps.

References:
    Petsiuk, Das & Saenko, "RISE: Randomized Input Sampling for Explanation of Black-box Models",
    BMVC 2018 (insertion and deletion metrics).
    Samek et al., "Evaluating the visualization of what a deep neural network has learned", IEEE TNNLS
    2017 (pixel flipping / region perturbation).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..perturbations.baselines import gaussian_blur
from .._validation import check_choice, check_fraction, check_int, check_positive, check_tensor, model_device
from ._meta import metric

__all__ = [
    "perturbation_curve",
    "curve_fractions",
    "curve_auc",
    "insertion_auc",
    "deletion_auc",
]

_MODES = ("insertion", "deletion")
_SCORES = ("probability", "logit", "log_probability", "output")
_BASELINES = ("zero", "mean", "blur")


# --------------------------------------------------------------------------------------------- helpers


def _n_max(n_features: int, max_fraction: float) -> int:
    """Number of features changed at the last curve point (at least 1)."""
    return max(1, min(n_features, int(math.floor(max_fraction * n_features + 1e-9))))


def _counts(n_features: int, step: int, max_fraction: float) -> torch.Tensor:
    """Number of changed features at each curve point: 0, step, 2 step, ..., n_max (last one clipped)."""
    n_max = _n_max(n_features, max_fraction)
    n_steps = math.ceil(n_max / step)
    return torch.clamp(torch.arange(n_steps + 1, dtype=torch.long) * step, max=n_max)


def curve_fractions(n_features: int, step: int = 1, max_fraction: float = 1.0) -> torch.Tensor:
    """Fraction of features changed at each point of a perturbation curve.

    Args:
        n_features: number of features F (pixels, feature-mask groups or tabular columns), >= 1.
        step: features changed per curve step, >= 1.
        max_fraction: the curve stops after ``floor(max_fraction * F)`` features (at least one), in (0, 1].

    Returns:
        float32 tensor (L + 1,) with ``L = ceil(n_max / step)``: ``[0, step, 2 step, ..., n_max] / F``.
        Column ``k`` of :func:`perturbation_curve` is the score after changing ``fractions[k] * F`` features.
    """
    n_features = check_int(n_features, "n_features", low=1)
    step = check_int(step, "step", low=1)
    max_fraction = check_fraction(max_fraction, "max_fraction", open_low=True)
    return _counts(n_features, step, max_fraction).to(torch.float32) / n_features


def curve_auc(scores: Any, fractions: Any = None) -> torch.Tensor:
    """Area under perturbation curves (trapezoid rule, x axis rescaled to [0, 1]).

    Args:
        scores: float tensor (N, L + 1), one curve per row (e.g. from :func:`perturbation_curve`), or (L + 1,).
        fractions: optional x positions (L + 1,), increasing (e.g. :func:`curve_fractions`); they are
            rescaled to [0, 1] so the area is the curve's mean height over the perturbed range. ``None``
            means equally spaced points.

    Returns:
        float32 tensor (N,) of areas (a scalar row for 1-D input gives shape (1,)).
    """
    s = check_tensor(scores, "scores", ndim=(1, 2))
    if s.ndim == 1:
        s = s[None]
    if s.shape[1] < 2:
        raise ValueError(f"`scores` needs at least 2 curve points per row, got shape {tuple(s.shape)}")
    if fractions is None:
        xs = torch.linspace(0.0, 1.0, s.shape[1], dtype=s.dtype, device=s.device)
    else:
        xs = check_tensor(fractions, "fractions", ndim=1).to(device=s.device, dtype=s.dtype)
        if xs.shape[0] != s.shape[1]:
            raise ValueError(f"`fractions` has {xs.shape[0]} points but `scores` has {s.shape[1]} columns")
        span = xs[-1] - xs[0]
        if not bool((xs[1:] >= xs[:-1]).all()) or float(span) <= 0:
            raise ValueError("`fractions` must be non-decreasing with fractions[-1] > fractions[0]")
        xs = (xs - xs[0]) / span
    dx = xs[1:] - xs[:-1]
    return ((s[:, 1:] + s[:, :-1]) * 0.5 * dx).sum(1)


def resolve_baseline(baseline: Any, x: torch.Tensor, blur_sigma: float | None) -> torch.Tensor:
    """The replacement values, broadcast to x's shape (N, ...)."""
    if isinstance(baseline, str):
        check_choice(baseline, "baseline", _BASELINES + ("float", "Tensor"))
        if baseline == "zero":
            return torch.zeros_like(x)
        if baseline == "mean":
            if x.ndim == 2:  # tabular: per-feature mean over the batch
                return x.mean(0, keepdim=True).expand_as(x)
            dims = tuple(range(2, x.ndim))  # per-sample, per-channel mean over positions
            return x.mean(dim=dims, keepdim=True).expand_as(x)
        if baseline == "blur":
            if x.ndim != 4:
                raise ValueError(f"`baseline`='blur' needs images (N, C, H, W), got `x` of shape {tuple(x.shape)}")
            sigma = 0.1 * max(x.shape[2], x.shape[3]) if blur_sigma is None else blur_sigma
            check_positive(sigma, "blur_sigma")
            return gaussian_blur(x, float(sigma))
    if isinstance(baseline, bool):
        raise TypeError("`baseline` must be 'zero', 'mean', 'blur', a float or a Tensor, got bool")
    if isinstance(baseline, (int, float)):
        if not math.isfinite(baseline):
            raise ValueError(f"`baseline` must be finite, got {baseline}")
        return torch.full_like(x, float(baseline))
    if isinstance(baseline, torch.Tensor):
        b = check_tensor(baseline, "baseline", nonempty=True).to(device=x.device, dtype=x.dtype)
        if x.ndim >= 3 and b.ndim == 1 and b.shape[0] == x.shape[1] and x.shape[1] > 1:
            b = b.view(1, -1, *([1] * (x.ndim - 2)))  # per-channel constant
        try:
            return torch.broadcast_to(b, x.shape)
        except RuntimeError:
            raise ValueError(
                f"`baseline` of shape {tuple(b.shape)} cannot be broadcast to `x` of shape {tuple(x.shape)}; "
                "pass a scalar, a per-channel (C,) vector, one input's shape or x's shape"
            ) from None
    raise TypeError(f"`baseline` must be 'zero', 'mean', 'blur', a float or a Tensor, got {type(baseline).__name__}")


def _feature_scores(x: torch.Tensor, attributions: Any) -> torch.Tensor:
    """Attributions as one score per position, shape (N, *grid) with grid = x.shape[2:] (images) or (D,)."""
    a = check_tensor(attributions, "attributions")
    if a.shape[0] != x.shape[0]:
        raise ValueError(f"`attributions` and `x` must have the same length, got {a.shape[0]} and {x.shape[0]}")
    if x.ndim == 2:
        if a.shape != x.shape:
            raise ValueError(f"`attributions` must be shaped like `x` {tuple(x.shape)}, got {tuple(a.shape)}")
        return a
    grid = tuple(x.shape[2:])
    if tuple(a.shape) == tuple(x.shape):
        return a.sum(1)  # channels move together: rank positions by the channel sum
    if tuple(a.shape) == (x.shape[0], *grid):
        return a
    if tuple(a.shape) == (x.shape[0], 1, *grid):
        return a[:, 0]
    raise ValueError(
        f"`attributions` must be shaped like `x` {tuple(x.shape)} or like `x` without the channel dim "
        f"{(x.shape[0], *grid)}, got {tuple(a.shape)}"
    )


def _groups(feature_mask: Any, n: int, grid: tuple[int, ...], device: torch.device) -> tuple[torch.Tensor, int]:
    """Per-sample consecutive group ids (N, P) and the largest group count G."""
    P = math.prod(grid)
    if feature_mask is None:
        return torch.arange(P, device=device).expand(n, P), P
    m = check_tensor(feature_mask, "feature_mask", dtype=None)
    if m.is_floating_point():
        if not bool((m == m.round()).all()):
            raise TypeError("`feature_mask` must hold integer group ids")
        m = m.long()
    if tuple(m.shape) == grid:
        m = m.expand(n, *grid)
    elif tuple(m.shape) == (1, *grid):
        m = m.expand(n, *grid)
    elif tuple(m.shape) != (n, *grid):
        raise ValueError(f"`feature_mask` must have shape {grid} or {(n, *grid)}, got {tuple(m.shape)}")
    m = m.reshape(n, P).to(device=device, dtype=torch.long)
    # relabel each sample's ids to 0..G_i-1 (sorted unique order)
    offset = m - m.min(1, keepdim=True).values
    width = int(offset.max()) + 1
    present = torch.zeros(n, width, dtype=torch.bool, device=device)
    present.scatter_(1, offset, True)
    new_id = present.long().cumsum(1) - 1
    ids = new_id.gather(1, offset)
    return ids, int(present.sum(1).max())


@torch.no_grad()
def perturbation_curve(
    model: torch.nn.Module,
    x: Any,
    attributions: Any,
    target: Any,
    *,
    mode: str = "deletion",
    baseline: Any = 0.0,
    step: int = 1,
    max_fraction: float = 1.0,
    score: str = "probability",
    feature_mask: Any = None,
    batch_size: int = 256,
    blur_sigma: float | None = None,
) -> torch.Tensor:
    """Insertion or deletion curves of many samples in chunked, batched forward passes.

    Features are positions (pixels of an image, all channels together; columns of a tabular row) or,
    with ``feature_mask``, groups of positions ranked by the mean attribution of their members. Ties in
    the ranking are broken by feature index (stable sort), so the curve is deterministic.

    Args:
        model: classifier returning logits (N, K) (or any (N, K) output with ``score="output"``). It is
            used as it is (call ``model.eval()`` first for deterministic curves); inputs move to its device.
        x: inputs (N, C, *spatial) for images (float32 in [0, 1]) or (N, D) for tabular rows.
        attributions: raw signed attributions shaped like ``x`` (summed over channels to rank positions)
            or like ``x`` without the channel dim (N, *spatial) or with a singleton channel (N, 1, *spatial).
        target: class index per sample, int or int64 tensor (N,), in [0, K).
        mode: ``"deletion"`` (start from x, replace the top features by the baseline) or
            ``"insertion"`` (start from the baseline, insert the top features of x).
        baseline: replacement values: ``"zero"``, ``"mean"`` (per-sample per-channel mean over positions
            for images, per-feature batch mean for tabular x), ``"blur"`` (Gaussian blur of x, images
            only), a float, or a tensor broadcastable to x (a (C,) vector is a per-channel constant).
        step: features changed per curve step, >= 1.
        max_fraction: fraction of the F features after which the curve stops, in (0, 1].
        score: ``"probability"`` (softmax), ``"logit"``, ``"log_probability"`` (log-softmax) or
            ``"output"`` (the model output column as is, e.g. for models returning probabilities).
        feature_mask: optional int group ids shaped like one position grid (*spatial) / (D,), or per
            sample (N, *spatial). With per-sample masks of different group counts G_i the curve is laid
            out for the largest count; samples with fewer groups reach their end state early and stay.
        batch_size: most perturbed inputs per forward pass, >= 1.
        blur_sigma: Gaussian sigma in pixels for ``baseline="blur"`` (default 0.1 * max(H, W)).

    Returns:
        tensor (N, L + 1) on x's device, x's float dtype (float32 normally). Column 0 is the unperturbed start (x for deletion,
        the baseline for insertion); column k has ``min(k * step, n_max)`` features changed, see
        :func:`curve_fractions` for the x axis.

    References:
        Petsiuk et al., BMVC 2018 (RISE insertion / deletion).
    """
    curve, _ = _curve(
        model, x, attributions, target, mode=mode, baseline=baseline, step=step, max_fraction=max_fraction,
        score=score, feature_mask=feature_mask, batch_size=batch_size, blur_sigma=blur_sigma,
    )
    return curve


@torch.no_grad()
def _curve(model, x, attributions, target, *, mode, baseline, step, max_fraction, score, feature_mask, batch_size, blur_sigma):
    """perturbation_curve plus the x positions (fractions of features changed), shape (L + 1,)."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
    check_choice(mode, "mode", _MODES)
    check_choice(score, "score", _SCORES)
    step = check_int(step, "step", low=1)
    max_fraction = check_fraction(max_fraction, "max_fraction", open_low=True)
    batch_size = check_int(batch_size, "batch_size", low=1)
    x_in = check_tensor(x, "x", ndim=(2, 3, 4, 5), dtype=None)
    if not x_in.is_floating_point():
        x_in = x_in.float()
    out_device = x_in.device
    device = model_device(model)
    xd = x_in.to(device)
    n = xd.shape[0]
    scores_grid = _feature_scores(xd, attributions).to(device=device, dtype=xd.dtype)
    grid = tuple(xd.shape[2:]) if xd.ndim >= 3 else (xd.shape[1],)
    if isinstance(target, torch.Tensor) and target.ndim == 0:
        target = int(target)
    if isinstance(target, (int,)) and not isinstance(target, bool):
        tgt = torch.full((n,), int(target), dtype=torch.long, device=device)
    else:
        tgt = check_tensor(target, "target", ndim=1, dtype=None)
        if tgt.is_floating_point():
            raise TypeError("`target` must hold integer class indices")
        if tgt.shape[0] != n:
            raise ValueError(f"`target` has {tgt.shape[0]} entries but `x` has {n} samples")
        tgt = tgt.to(device=device, dtype=torch.long)
    if int(tgt.min()) < 0:
        raise ValueError(f"`target` must hold class indices >= 0, got {int(tgt.min())}")
    base = resolve_baseline(baseline, xd, blur_sigma)

    ids, n_groups = _groups(feature_mask, n, grid, device)  # (N, P), G
    flat_scores = scores_grid.reshape(n, -1)
    # mean attribution per group; absent groups (per-sample masks with fewer groups) rank last
    sums = torch.zeros(n, n_groups, device=device, dtype=flat_scores.dtype).scatter_add_(1, ids, flat_scores)
    cnts = torch.zeros(n, n_groups, device=device, dtype=flat_scores.dtype).scatter_add_(1, ids, torch.ones_like(flat_scores))
    group_scores = torch.where(cnts > 0, sums / cnts.clamp_min(1), torch.full_like(sums, -math.inf))
    order = torch.argsort(group_scores, dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(n_groups, device=device).expand(n, n_groups))
    pos_rank = rank.gather(1, ids)  # (N, P): rank of each position's group

    counts = _counts(n_groups, step, max_fraction).to(device)  # (L + 1,)
    n_pts = counts.shape[0]
    total = n * n_pts
    x_flat = xd.reshape(n, xd.shape[1] if xd.ndim >= 3 else 1, -1)  # (N, C, P)
    b_flat = base.reshape(x_flat.shape)
    result = torch.empty(total, device=device, dtype=xd.dtype)
    for start in range(0, total, batch_size):
        idx = torch.arange(start, min(start + batch_size, total), device=device)
        i, k = idx // n_pts, idx % n_pts
        changed = (pos_rank[i] < counts[k][:, None]).unsqueeze(1)  # (B, 1, P)
        if mode == "deletion":
            xp = torch.where(changed, b_flat[i], x_flat[i])
        else:
            xp = torch.where(changed, x_flat[i], b_flat[i])
        out = model(xp.reshape(idx.shape[0], *xd.shape[1:]))
        if out.ndim != 2:
            raise ValueError(f"`model` must return a 2-D output (N, K), got shape {tuple(out.shape)}")
        if start == 0 and int(tgt.max()) >= out.shape[1]:
            raise ValueError(f"`target` must be in [0, {out.shape[1] - 1}] for a model with {out.shape[1]} outputs, got {int(tgt.max())}")
        if score == "probability":
            out = torch.softmax(out, dim=1)
        elif score == "log_probability":
            out = torch.log_softmax(out, dim=1)
        result[idx] = out.gather(1, tgt[i][:, None])[:, 0].to(result.dtype)
    fractions = counts.to(torch.float32).cpu() / n_groups
    return result.view(n, n_pts).to(out_device), fractions


_CURVE_DEFAULTS = dict(baseline=0.0, step=1, max_fraction=1.0, score="probability", feature_mask=None, batch_size=256, blur_sigma=None)


def _curve_kwargs(kwargs: dict) -> dict:
    unknown = set(kwargs) - set(_CURVE_DEFAULTS)
    if unknown:
        raise TypeError(f"unknown keyword argument(s) {sorted(unknown)}; expected some of {sorted(_CURVE_DEFAULTS)}")
    return {**_CURVE_DEFAULTS, **kwargs}


@metric(higher_is_better=True, category="faithfulness")
def insertion_auc(model: torch.nn.Module, x: Any, attributions: Any, target: Any, **kwargs: Any) -> torch.Tensor:
    """Area under the insertion curve per sample (higher = more faithful).

    Args:
        model, x, attributions, target: as in :func:`perturbation_curve`.
        **kwargs: keyword options of :func:`perturbation_curve` (baseline, step, max_fraction, score,
            feature_mask, batch_size, blur_sigma); ``mode`` is fixed.

    Returns:
        float32 tensor (N,): trapezoid area with the x axis (fraction of features inserted, up to
        ``max_fraction``) rescaled to [0, 1], i.e. the curve's mean height.
    """
    if "mode" in kwargs:
        raise TypeError("`mode` is fixed to 'insertion' in insertion_auc")
    curve, fractions = _curve(model, x, attributions, target, mode="insertion", **_curve_kwargs(kwargs))
    return curve_auc(curve, fractions)


@metric(higher_is_better=False, category="faithfulness")
def deletion_auc(model: torch.nn.Module, x: Any, attributions: Any, target: Any, **kwargs: Any) -> torch.Tensor:
    """Area under the deletion curve per sample (lower = more faithful).

    Args:
        model, x, attributions, target: as in :func:`perturbation_curve`.
        **kwargs: keyword options of :func:`perturbation_curve`; ``mode`` is fixed.

    Returns:
        float32 tensor (N,): trapezoid area with the x axis rescaled to [0, 1].
    """
    if "mode" in kwargs:
        raise TypeError("`mode` is fixed to 'deletion' in deletion_auc")
    curve, fractions = _curve(model, x, attributions, target, mode="deletion", **_curve_kwargs(kwargs))
    return curve_auc(curve, fractions)
