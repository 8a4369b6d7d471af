"""Localization of attributions against ground-truth object masks (for ``shapes``-like data)."""

from __future__ import annotations

import torch

from .._validation import as_tensor, check_tensor
from ._meta import metric

__all__ = ["relevance_mass_accuracy", "pointing_game", "attribution_map"]


def attribution_map(attributions: torch.Tensor, how: str = "abs") -> torch.Tensor:
    """Collapse image attributions (N, C, H, W) or (N, H, W) to non-negative maps (N, H, W).

    Args:
        attributions: raw, signed attributions.
        how: ``"abs"`` (sum of |a| over channels) or ``"positive"`` (sum over channels, then clamp at 0).
    """
    a = check_tensor(attributions, "attributions", ndim=(3, 4))
    if how not in ("abs", "positive"):
        raise ValueError(f"`how` must be 'abs' or 'positive', got {how!r}")
    if a.ndim == 4:
        a = a.abs().sum(1) if how == "abs" else a.sum(1)
    elif how == "abs":
        a = a.abs()
    return a.clamp_min(0)


def _check_masks(masks, a: torch.Tensor) -> torch.Tensor:
    m = as_tensor(masks, "masks", dtype=None)
    if m.shape != a.shape:
        raise ValueError(f"`masks` must have shape {tuple(a.shape)} (N, H, W) like the attribution maps, got {tuple(m.shape)}")
    m = m.to(device=a.device).bool()
    if not m.flatten(1).any(1).all():
        raise ValueError("`masks` has an empty mask (no object pixel) for at least one sample")
    return m


@metric(higher_is_better=True, category="localization")
def relevance_mass_accuracy(attributions: torch.Tensor, masks: torch.Tensor, how: str = "abs") -> torch.Tensor:
    """Share of the attribution mass inside the object mask (Arras et al., 2022).

    Args:
        attributions: (N, C, H, W) or (N, H, W) raw attributions; collapsed by :func:`attribution_map`.
        masks: (N, H, W) bool ground-truth object masks.
        how: ``"abs"`` or ``"positive"`` relevance.

    Returns:
        (N,) float in [0, 1]; a map spread uniformly scores the mask's area fraction. Samples whose map
        is all zero score 0.

    References:
        Arras, Osman, Samek. CLEVR-XAI: a benchmark dataset for the ground truth evaluation of neural
        network explanations. Information Fusion 2022.
    """
    a = attribution_map(attributions, how)
    m = _check_masks(masks, a)
    total = a.flatten(1).sum(1)
    inside = (a * m).flatten(1).sum(1)
    return torch.where(total > 0, inside / total.clamp_min(torch.finfo(a.dtype).tiny), torch.zeros_like(total))


@metric(higher_is_better=True, category="localization")
def pointing_game(attributions: torch.Tensor, masks: torch.Tensor, how: str = "abs") -> torch.Tensor:
    """1.0 when a maximum of the attribution map falls inside the object mask, else 0.0 (Zhang et al., 2018).

    Args:
        attributions: (N, C, H, W) or (N, H, W) raw attributions.
        masks: (N, H, W) bool object masks.
        how: ``"abs"`` or ``"positive"``.

    Returns:
        (N,) float in {0, 1}. Ties count as a hit when any tied maximum is inside the mask.
    """
    a = attribution_map(attributions, how)
    m = _check_masks(masks, a)
    flat = a.flatten(1)
    is_max = flat == flat.max(1, keepdim=True).values
    return (is_max & m.flatten(1)).any(1).float()
