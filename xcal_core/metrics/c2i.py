"""The statistics behind the Calibrate-to-Interpret claims (notebook 02).

* :func:`is_control`: a model whose fitted temperature is close to 1 needs no calibration; its
  before/after comparisons are a control, not a test of the paper.
* :func:`ratio_test`: per-image ratios ``after / before`` (e.g. Otsu-TV of the calibrated map over the
  uncalibrated one) with their median and a paired one-sided Wilcoxon test.
* :func:`count_improved`: how many (method, calibrator) cases improve, for "all cases but one".
* :func:`temperature_sweep_summary`: where a metric is lowest over a grid of fixed temperatures, whether
  that is near the fitted temperature, whether the metric depends on the temperature at all (Friedman
  test over the same images), and its rank correlation with the ECE.

References:
    Scafarto, Posocco, Bonnefoy. Calibrate to Interpret. ECML-PKDD workshops 2022 (sections 4.4-4.6).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from .tests import PairedTest, paired_test

__all__ = [
    "CONTROL_BAND",
    "is_control",
    "RatioTest",
    "ratio_test",
    "count_improved",
    "SweepSummary",
    "temperature_sweep_summary",
]

CONTROL_BAND: tuple[float, float] = (0.9, 1.1)
"""Fitted temperatures in this band mark a model that is calibrated already: temperature scaling moves
its probabilities by at most ~10 % in log-odds, so "before vs after calibration" compares a model with
itself and cannot test the paper's claims."""


def _vec(v: Any, name: str) -> np.ndarray:
    if isinstance(v, torch.Tensor):
        v = v.detach().cpu().double().numpy()
    a = np.asarray(v, dtype=np.float64)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"`{name}` must be a non-empty 1-D sequence, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"`{name}` contains NaN or inf")
    return a


def is_control(temperature: float, band: Sequence[float] = CONTROL_BAND) -> bool:
    """Whether a fitted temperature marks a control setting (a model that needs no calibration).

    Args:
        temperature: the fitted temperature T > 0 (:class:`xcal_core.calibration.TemperatureScaling`).
        band: inclusive (low, high) band around 1, default :data:`CONTROL_BAND`.

    Returns:
        True when ``low <= T <= high``.
    """
    t = float(temperature)
    if not math.isfinite(t) or t <= 0:
        raise ValueError(f"`temperature` must be a finite number > 0, got {temperature!r}")
    lo, hi = (float(b) for b in band)
    if not 0 < lo <= 1 <= hi:
        raise ValueError(f"`band` must satisfy 0 < low <= 1 <= high, got {tuple(band)!r}")
    return lo <= t <= hi


@dataclass(frozen=True)
class RatioTest:
    """Result of :func:`ratio_test`.

    Attributes:
        n: number of images.
        n_zero_both: images where both values are 0 (ratio 1: nothing changed).
        n_zero_before: images where only ``before`` is 0 (ratio inf: got worse from nothing).
        median_ratio: median of the per-image ratios ``after / before`` (inf counts as the largest).
        share_lower: share of images with ``after < before``.
        test: the paired one-sided Wilcoxon test of ``after`` against ``before``.
    """

    n: int
    n_zero_both: int
    n_zero_before: int
    median_ratio: float
    share_lower: float
    test: PairedTest

    def describe(self, what: str = "ratio") -> str:
        """``'median ratio 0.31 (lower in 82 % of 100 images), one-sided Wilcoxon p = 2e-09'``."""
        return (f"median {what} {self.median_ratio:.3g} (lower in {100 * self.share_lower:.0f} % of {self.n} images), "
                f"one-sided Wilcoxon p = {self.test.p:.2g}")


def ratio_test(after: Any, before: Any, alternative: str = "less") -> RatioTest:
    """Per-image ratios ``after / before`` of a non-negative metric, and a paired test.

    Zero denominators are kept, not dropped: an image whose two values are both 0 has ratio 1 (no change),
    one whose ``before`` alone is 0 has ratio inf. The test is :func:`xcal_core.metrics.paired_test`
    of the raw values (the ratio itself is not tested: its scale is asymmetric).

    Args:
        after: (N,) non-negative values after the change (e.g. Otsu-TV of calibrated maps).
        before: (N,) non-negative values of the same images before.
        alternative: ``"less"`` (after < before, default) or ``"greater"``.

    Returns:
        :class:`RatioTest`.

    Raises:
        ValueError: lengths differ, negative values, NaN/inf.
    """
    a, b = _vec(after, "after"), _vec(before, "before")
    if a.shape != b.shape:
        raise ValueError(f"`after` and `before` must have the same length, got {a.size} and {b.size}")
    if (a < 0).any() or (b < 0).any():
        raise ValueError("`after` and `before` must be non-negative (a ratio of signed values has no meaning)")
    zero_both = (a == 0) & (b == 0)
    zero_before = (b == 0) & (a > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(zero_both, 1.0, np.where(zero_before, np.inf, a / np.where(b == 0, 1.0, b)))
    return RatioTest(int(a.size), int(zero_both.sum()), int(zero_before.sum()), float(np.median(r)),
                     float(np.mean(a < b)), paired_test(a, b, alternative=alternative))


def count_improved(before: Any, after: Any, higher_is_better: bool = True) -> tuple[int, int]:
    """How many paired cases improve strictly (ties do not count as improvements).

    Args:
        before, after: (C,) case values (e.g. BTR of each (method, calibrator) before / after calibration).
        higher_is_better: direction of the metric.

    Returns:
        ``(n_improved, n_cases)``.
    """
    a, b = _vec(after, "after"), _vec(before, "before")
    if a.shape != b.shape:
        raise ValueError(f"`after` and `before` must have the same length, got {a.size} and {b.size}")
    better = a > b if higher_is_better else a < b
    return int(better.sum()), int(a.size)


@dataclass(frozen=True)
class SweepSummary:
    """Result of :func:`temperature_sweep_summary`.

    Attributes:
        temperatures: the grid (sorted).
        mean: mean metric per temperature.
        t_best: the temperature of the lowest mean.
        fitted: the fitted temperature.
        factor: the tolerance (``t_best / fitted`` within ``[1 / factor, factor]`` counts as near).
        near_fitted: whether ``t_best`` is within that factor of ``fitted``.
        friedman_p: p-value of the Friedman test that the metric does not depend on the temperature
            (the same images at every temperature); NaN with fewer than 3 temperatures.
        spearman: Spearman rank correlation of the mean metric with ``eces`` (NaN without them).
        spearman_p: its two-sided p-value.
        n_images: images per temperature.
    """

    temperatures: np.ndarray
    mean: np.ndarray
    t_best: float
    fitted: float
    factor: float
    near_fitted: bool
    friedman_p: float
    spearman: float
    spearman_p: float
    n_images: int


def temperature_sweep_summary(
    temperatures: Sequence[float],
    per_image: Any,
    fitted: float,
    eces: Sequence[float] | None = None,
    factor: float = 1.5,
) -> SweepSummary:
    """Where a per-image metric (lower = better) is lowest over fixed temperatures, and how it varies.

    Args:
        temperatures: (T,) distinct temperatures > 0.
        per_image: (T, N) values of the same N images at each temperature (e.g. MP deletion areas on
            the invariant score).
        fitted: the fitted temperature (> 0).
        eces: optional (T,) ECE at each temperature, for the rank correlation.
        factor: tolerance factor (> 1) around ``fitted`` (the C2I criterion: 1.5).

    Returns:
        :class:`SweepSummary` (sorted by temperature).

    Raises:
        ValueError: shapes that do not match, non-positive temperatures or ``fitted``, ``factor`` <= 1.
    """
    from scipy import stats

    t = _vec(temperatures, "temperatures")
    v = np.asarray(per_image.detach().cpu().numpy() if isinstance(per_image, torch.Tensor) else per_image, dtype=np.float64)
    if v.ndim != 2 or v.shape[0] != t.size or v.shape[1] == 0:
        raise ValueError(f"`per_image` must have shape (len(temperatures)={t.size}, N >= 1), got {v.shape}")
    if not np.isfinite(v).all():
        raise ValueError("`per_image` contains NaN or inf")
    if (t <= 0).any() or np.unique(t).size != t.size:
        raise ValueError(f"`temperatures` must be distinct and > 0, got {t.tolist()}")
    fitted = float(fitted)
    if not math.isfinite(fitted) or fitted <= 0:
        raise ValueError(f"`fitted` must be a finite temperature > 0, got {fitted!r}")
    factor = float(factor)
    if not factor > 1:
        raise ValueError(f"`factor` must be > 1, got {factor}")
    order = np.argsort(t)
    t, v = t[order], v[order]
    mean = v.mean(1)
    t_best = float(t[int(np.argmin(mean))])
    near = 1.0 / factor <= t_best / fitted <= factor
    fp = float("nan")
    if t.size >= 3 and v.shape[1] >= 2 and np.ptp(v, axis=0).any():
        fp = float(stats.friedmanchisquare(*v).pvalue)
    elif t.size >= 3:
        fp = 1.0  # identical values at every temperature: no dependence at all
    rho = rho_p = float("nan")
    if eces is not None:
        e = _vec(eces, "eces")
        if e.size != t.size:
            raise ValueError(f"`eces` must have {t.size} values, got {e.size}")
        e = e[order]
        if np.ptp(e) > 0 and np.ptp(mean) > 0:
            res = stats.spearmanr(mean, e)
            rho, rho_p = float(res.statistic), float(res.pvalue)
    return SweepSummary(t, mean, t_best, fitted, factor, bool(near), fp, rho, rho_p, int(v.shape[1]))
