"""Attribution post-processing shared by every aggregation strategy: channel reduction, |.|, scaling."""

from __future__ import annotations

from typing import Any

import torch

from .._validation import check_choice, check_positive, check_tensor
from ..metrics.faithfulness import blur_images

__all__ = ["normalize_attributions"]

_REDUCE = ("sum", "abs_sum", "none")
_SCALE = ("max", "minmax", "none")


def normalize_attributions(
    attributions: Any,
    *,
    reduce: str = "sum",
    absolute: bool = True,
    scale: str = "max",
    smooth_sigma: float | None = None,
) -> torch.Tensor:
    """Turn raw attributions into comparable non-negative maps in [0, 1] (paper, App. C.2).

    The order is: reduce the channel dim, take ``|.|``, optionally Gaussian-smooth (the released code's
    sigma = 1 px step, off by default because the paper does not mention it), then scale per sample.
    Constant and all-zero maps never produce NaN: they scale to all zeros.

    Args:
        attributions: raw signed float attributions (N, C, *spatial) for images / sequences, or (N, D)
            for tabular rows (no channel dim). Finite values.
        reduce: channel reduction for inputs with a channel dim: ``"sum"`` (sum over channels, then
            ``|.|``: the released code), ``"abs_sum"`` (sum of ``|.|``), or ``"none"`` (keep the channels).
        absolute: take the absolute value (the paper's maps are non-negative).
        smooth_sigma: Gaussian smoothing sigma in pixels for image maps (None = off).
        scale: ``"max"`` divide by the per-sample max of ``|map|`` (the paper), ``"minmax"`` map
            ``[min, max]`` to ``[0, 1]`` (the released code), or ``"none"``.

    Returns:
        float32 tensor (N, *spatial) (or (N, C, *spatial) with ``reduce="none"``, (N, D) for tabular).
    """
    a = check_tensor(attributions, "attributions", ndim=(2, 3, 4, 5))
    return _normalize(a, reduce=reduce, absolute=absolute, scale=scale, smooth_sigma=smooth_sigma)


def _normalize(a: torch.Tensor, *, reduce: str = "sum", absolute: bool = True, scale: str = "max", smooth_sigma: float | None = None) -> torch.Tensor:
    """:func:`normalize_attributions` without the finiteness check of the input (which reads a value back
    from the device): for chunk loops that check finiteness once at the end (see ``aggregation.gram._maps``)."""
    a = a.float()
    check_choice(reduce, "reduce", _REDUCE)
    check_choice(scale, "scale", _SCALE)
    if a.ndim >= 3:
        if reduce == "sum":
            a = a.sum(1)
        elif reduce == "abs_sum":
            a = a.abs().sum(1)
    if absolute:
        a = a.abs()
    if smooth_sigma is not None:
        check_positive(smooth_sigma, "smooth_sigma")
        if a.ndim == 3:
            a = blur_images(a.unsqueeze(1), float(smooth_sigma))[:, 0]
        elif a.ndim == 4:
            a = blur_images(a, float(smooth_sigma))
        else:
            raise ValueError("`smooth_sigma` needs image maps (N, H, W) or (N, C, H, W)")
    flat = a.reshape(a.shape[0], -1)
    if scale == "max":
        mx = flat.abs().max(1).values
        flat = torch.where(mx[:, None] > 0, flat / mx.clamp_min(torch.finfo(flat.dtype).tiny)[:, None], torch.zeros_like(flat))
    elif scale == "minmax":
        lo, hi = flat.min(1).values, flat.max(1).values
        rng = hi - lo
        flat = torch.where(rng[:, None] > 0, (flat - lo[:, None]) / rng.clamp_min(torch.finfo(flat.dtype).tiny)[:, None], torch.zeros_like(flat))
    return flat.view_as(a)
