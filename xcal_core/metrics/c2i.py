"""The statistics behind the Calibrate-to-Interpret claims (notebook 02).

* :func:`is_control`: a model whose fitted temperature is close to 1 needs no calibration; its
  before/after comparisons are a control, not a test of the paper.
* :func:`ratio_test`: per-image ratios ``after / before`` (e.g. Otsu-TV of the calibrated map over the
  uncalibrated one) with their median and a paired one-sided Wilcoxon test.
* :func:`count_improved`: how many (method, calibrator) cases improve, for "all cases but one".
* :func:`temperature_sweep_summary`: where a metric is lowest over a grid of fixed temperatures, whether
  that is near the fitted temperature, whether the metric depends on the temperature at all (Friedman
  test over the same images), and its rank correlation with the ECE.
* :class:`Verdict` and the ``*_verdict`` functions: each claim's criterion as strong as the paper's
  statement, with the reason it fails and the reason it has no power (too few informative pairs, no
  over-confidence to fix, a metric that does not depend on the temperature).

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
    "Verdict",
    "ece_verdict",
    "paired_verdict",
    "btr_verdict",
    "ratio_verdict",
    "sweep_verdict",
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


# ------------------------------------------------------------------------------------------ verdicts


@dataclass(frozen=True)
class Verdict:
    """A claim's test result, ready for ``run.claim(..., observed, **judge(passed, fail_reason, inconclusive))``.

    Attributes:
        passed: the criterion held.
        observed: what was measured, in one line (numbers of this run).
        fail_reason: why it failed (used when ``passed`` is False).
        inconclusive: why the test has no power here (None when it has).
    """

    passed: bool
    observed: str
    fail_reason: str
    inconclusive: str | None = None

    @property
    def verdict(self) -> str:
        """``"holds"``, ``"fails"`` or ``"inconclusive"``."""
        return "inconclusive" if self.inconclusive else ("holds" if self.passed else "fails")


def ece_verdict(before: dict, after: dict, floor_q95: dict, min_ece: float = 0.05, min_cut: float = 0.5) -> Verdict:
    """Calibration cuts the ECE of an over-confident model by at least ``min_cut``, under every estimator.

    The test needs a model to calibrate: every uncalibrated ECE at least ``min_ece`` and above its floor
    under perfect calibration (``floor_q95``, the 95th percentile); otherwise it is inconclusive.

    Args:
        before, after: ``{estimator: ECE}`` uncalibrated / calibrated, the same estimators.
        floor_q95: ``{estimator: 95th percentile of the floor}`` of the uncalibrated model.
        min_ece: the smallest uncalibrated ECE that counts as over-confident (C2I spec: 0.05).
        min_cut: the smallest relative reduction (C2I spec: 0.5; the paper reports 60-85 %).

    Returns:
        :class:`Verdict`.
    """
    if not before or set(before) != set(after) or not set(before) <= set(floor_q95):
        raise ValueError("`before`, `after` and `floor_q95` must cover the same estimators")
    cut = {k: 1 - after[k] / before[k] if before[k] > 0 else 0.0 for k in before}
    observed = "; ".join(f"{k}: {before[k]:.3f} -> {after[k]:.3f} ({100 * cut[k]:.0f} % cut; floor q95 "
                         f"{floor_q95[k]:.3f})" for k in before)
    weak = [k for k in before if before[k] < min_ece or before[k] <= floor_q95[k]]
    no_power = None
    if weak:
        no_power = ("nothing to calibrate: the uncalibrated " + ", ".join(
            f"{k} {before[k]:.3f}" for k in weak) + f" is below {min_ece} or within the floor of a perfectly "
            "calibrated model (" + ", ".join(f"q95 {floor_q95[k]:.3f}" for k in weak) + ")")
    short = [k for k in before if cut[k] < min_cut]
    fail = ("the reduction is below " + f"{100 * min_cut:.0f} %: " +
            ", ".join(f"{k} {100 * cut[k]:.0f} % ({before[k]:.3f} -> {after[k]:.3f})" for k in short)) if short else ""
    return Verdict(not short, observed, fail, no_power)


def paired_verdict(tests: dict, alpha: float = 0.05, expect: str = "significant") -> Verdict:
    """All paired tests significant (``expect="significant"``) or none (``expect="none"``, e.g. "neutral").

    Args:
        tests: ``{case label: PairedTest}`` (:func:`xcal_core.metrics.paired_test`).
        alpha: significance level.
        expect: ``"significant"``: the claim needs every alternative to hold; ``"none"``: the claim is
            that no case moves in the tested (harmful) direction.

    Returns:
        :class:`Verdict`; inconclusive when a test has fewer than 10 informative pairs.
    """
    if not tests:
        raise ValueError("`tests` must hold at least one PairedTest")
    if expect not in ("significant", "none"):
        raise ValueError(f"`expect` must be 'significant' or 'none', got {expect!r}")
    observed = "; ".join(f"{k}: median {t.median_b:.3g} -> {t.median_a:.3g}, {'lower' if t.alternative == 'less' else 'higher'} "
                         f"in {100 * (t.share_less if t.alternative == 'less' else t.share_greater):.0f} % of {t.n}, "
                         f"p = {t.p:.2g}" for k, t in tests.items())
    small = [k for k, t in tests.items() if t.too_few]
    no_power = (f"fewer than 10 informative pairs for {', '.join(small)} (" + ", ".join(
        f"{tests[k].n_informative} of {tests[k].n}" for k in small) + ")") if small else None
    sig = [k for k, t in tests.items() if t.significant(alpha)]
    if expect == "significant":
        miss = [k for k in tests if k not in sig]
        fail = ("not significant at " + f"{alpha}: " + ", ".join(f"{k} (p = {tests[k].p:.2g}, median difference "
                                                                  f"{tests[k].median_diff:+.3g})" for k in miss)) if miss else ""
        return Verdict(not miss, observed, fail, no_power)
    fail = ("significant change in the tested direction for " + ", ".join(
        f"{k} (p = {tests[k].p:.2g}, median difference {tests[k].median_diff:+.3g})" for k in sig)) if sig else ""
    return Verdict(not sig, observed, fail, no_power)


def btr_verdict(before: dict, after: dict, flips: dict, allowed_failures: int = 1, min_flips: int = 10) -> Verdict:
    """BTR improves in all (method, calibrator) cases but ``allowed_failures`` (C2I: "all but one").

    Args:
        before, after: ``{case: BTR}`` uncalibrated / calibrated.
        flips: ``{case: images whose better-than-random outcome differs between the two}``; a case can
            only change by these images.
        allowed_failures: cases allowed not to improve.
        min_flips: with fewer flipped images over all cases the comparison has no power (inconclusive).

    Returns:
        :class:`Verdict`.
    """
    if not before or set(before) != set(after) or set(before) != set(flips):
        raise ValueError("`before`, `after` and `flips` must cover the same cases")
    keys = list(before)
    n_up, n = count_improved([before[k] for k in keys], [after[k] for k in keys])
    observed = f"{n_up}/{n} cases improve; " + "; ".join(
        f"{k}: {before[k]:.2f} -> {after[k]:.2f} ({flips[k]} images flip)" for k in keys)
    total = sum(int(v) for v in flips.values())
    no_power = (f"only {total} images change their better-than-random outcome over all {n} cases (< {min_flips})"
                if total < min_flips else None)
    not_up = [k for k in keys if not after[k] > before[k]]
    fail = (f"{len(not_up)} of {n} cases do not improve (at most {allowed_failures} allowed): "
            + ", ".join(f"{k} {before[k]:.2f} -> {after[k]:.2f}" for k in not_up))
    return Verdict(n - n_up <= allowed_failures, observed, fail, no_power)


def ratio_verdict(tests: dict, max_median: float = 0.5, alpha: float = 0.05) -> Verdict:
    """Every per-image ratio has a median below ``max_median`` and a significant paired decrease.

    Args:
        tests: ``{case: RatioTest}`` (:func:`ratio_test`, alternative "less").
        max_median: the largest median ratio that counts (C2I spec: 0.5 for MP's Otsu-TV; paper ~0.1).
        alpha: significance level of the paired tests.

    Returns:
        :class:`Verdict`; inconclusive when a paired test has fewer than 10 informative pairs.
    """
    if not tests:
        raise ValueError("`tests` must hold at least one RatioTest")
    observed = "; ".join(f"{k}: {t.describe()}" for k, t in tests.items())
    small = [k for k, t in tests.items() if t.test.too_few]
    no_power = (f"fewer than 10 informative pairs for {', '.join(small)}") if small else None
    bad = [k for k, t in tests.items() if not (t.median_ratio < max_median and t.test.significant(alpha))]
    fail = ", ".join(f"{k}: median ratio {tests[k].median_ratio:.3g} (needs < {max_median}), p = {tests[k].test.p:.2g}"
                     for k in bad)
    return Verdict(not bad, observed, fail, no_power)


def sweep_verdict(summary: SweepSummary, alpha: float = 0.05) -> Verdict:
    """The metric is lowest near the fitted temperature and rises with the ECE (C2I Fig. 8).

    Passes when the argmin lies within the summary's factor of the fitted T and Spearman(metric, ECE) > 0.
    Inconclusive when the metric does not depend on the temperature detectably (Friedman p >= ``alpha``):
    then the argmin is noise.

    Args:
        summary: :func:`temperature_sweep_summary` with ``eces`` given.
        alpha: level of the Friedman test.

    Returns:
        :class:`Verdict`.
    """
    s = summary
    observed = (f"argmin T = {s.t_best:g} (fitted T = {s.fitted:.2f}, ratio {s.t_best / s.fitted:.2f}); "
                f"Spearman(area, ECE) = {s.spearman:.2f} (p = {s.spearman_p:.2g}); Friedman p = {s.friedman_p:.2g} "
                f"over {s.n_images} images; mean area {s.mean.min():.3f}-{s.mean.max():.3f}")
    flat = not (s.friedman_p < alpha)
    no_power = (f"the area does not depend on T detectably over {s.n_images} images (Friedman p = {s.friedman_p:.2g}): "
                "the argmin is noise") if flat else None
    why = []
    if not s.near_fitted:
        why.append(f"the lowest mean area is at T = {s.t_best:g}, {max(s.t_best / s.fitted, s.fitted / s.t_best):.1f}x "
                   f"from the fitted T = {s.fitted:.2f} (allowed x{s.factor:g})")
    if not s.spearman > 0:
        why.append(f"Spearman(area, ECE) = {s.spearman:.2f} is not positive")
    return Verdict(not why, observed, "; ".join(why), no_power)
