"""Replacement values (baselines) for perturbed features: mean, zero, blur, noise.

A baseline is a tensor shaped like the inputs it perturbs: feature ``i`` of a perturbed input
takes the baseline's value wherever the coalition replaces ``i``
(see :func:`xcal_core.perturbations.apply_coalitions`).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .._validation import check_choice, check_positive, check_tensor

__all__ = ["BASELINES", "make_baseline", "gaussian_blur"]

BASELINES: tuple[str, ...] = ("mean", "zero", "blur", "noise")


def _gaussian_kernel1d(sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    radius = max(1, int(math.ceil(3.0 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(images: Any, sigma: float) -> torch.Tensor:
    """Gaussian-blurred copy of images (separable kernel of radius ceil(3 sigma), reflect padding).

    The one blur of xcal: metrics (insertion/deletion, infidelity, faithfulness correlation) use it too.

    Args:
        images: (N, C, H, W) or (C, H, W) float images (any range; [0, 1] stays in [0, 1]).
        sigma: standard deviation of the kernel in pixels, > 0.

    Returns:
        Blurred images of the same shape, dtype and device (values stay in [0, 1]).
    """
    x = check_tensor(images, "images", ndim=(3, 4))
    sigma = float(check_positive(sigma, "sigma"))
    single = x.ndim == 3
    if single:
        x = x[None]
    n, c, h, w = x.shape
    k = _gaussian_kernel1d(sigma, x.dtype, x.device)
    radius = k.numel() // 2
    y = x.reshape(n * c, 1, h, w)
    # reflect padding needs pad < size: on tiny images the kernel is truncated to the image and renormalized
    for size, pad_of, view_of in ((h, lambda r: (0, 0, r, r), (1, 1, -1, 1)), (w, lambda r: (r, r, 0, 0), (1, 1, 1, -1))):
        r = min(radius, size - 1)
        if r <= 0:
            continue
        kk = k[radius - r: radius + r + 1]
        kk = kk / kk.sum()
        y = torch.nn.functional.conv2d(torch.nn.functional.pad(y, pad_of(r), mode="reflect"), kk.view(*view_of))
    y = y.reshape(n, c, h, w)
    return y[0] if single else y


def make_baseline(
    x: Any,
    kind: str = "zero",
    *,
    train_mean: Any | None = None,
    sigma: float = 2.0,
    noise_std: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Baseline tensor shaped like ``x`` for one of the replacement rules.

    Args:
        x: (N, ...) float inputs (images (N, C, H, W) in [0, 1] or tabular (N, D) standardized rows).
        kind: ``"mean"`` (the training split's per-element mean, ``train_mean``), ``"zero"``,
            ``"blur"`` (Gaussian-blurred copy of each image with ``sigma``; images only) or
            ``"noise"`` (``x`` plus i.i.d. N(0, noise_std^2) noise; clipped to [0, 1] for 4-D images).
        train_mean: (...) float mean of one input over the training split (e.g. ``ds.info.train_mean``);
            required for ``"mean"``.
        sigma: blur standard deviation in pixels (> 0).
        noise_std: standard deviation of the noise (> 0).
        generator: torch generator for ``"noise"``.

    Returns:
        (N, ...) float baseline, same shape, dtype and device as ``x``.
    """
    xs = check_tensor(x, "x")
    check_choice(kind, "kind", BASELINES)
    if kind == "zero":
        return torch.zeros_like(xs)
    if kind == "mean":
        if train_mean is None:
            raise ValueError("`train_mean` is required for kind='mean' (pass the training split's mean, e.g. ds.info.train_mean)")
        m = check_tensor(train_mean, "train_mean").to(xs.device, xs.dtype)
        try:
            return torch.broadcast_to(m, xs.shape).clone()
        except RuntimeError as exc:
            raise ValueError(f"`train_mean` of shape {tuple(m.shape)} does not broadcast to `x` of shape {tuple(xs.shape)}") from exc
    if kind == "blur":
        if xs.ndim != 4:
            raise ValueError(f"kind='blur' needs images (N, C, H, W); `x` has shape {tuple(xs.shape)}")
        return gaussian_blur(xs, sigma)
    noise_std = float(check_positive(noise_std, "noise_std"))
    eps = torch.randn(xs.shape, generator=generator, dtype=xs.dtype).to(xs.device)
    out = xs + noise_std * eps
    return out.clamp(0, 1) if xs.ndim == 4 else out
