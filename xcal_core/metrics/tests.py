"""Paired statistical tests over images (or any paired samples), used to judge the papers' claims.

A claim such as "calibrated explanations put more mass on the object" compares two per-image
scores on the *same* images: a paired test over images is the right test, not a comparison of two
means. :func:`paired_test` gives the one-sided Wilcoxon signed-rank test with the numbers a claim
reports (n, the median difference, the share of images that improve) and says when there are too
few informative pairs for the test to have power.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["PairedTest", "paired_test", "MIN_PAIRS"]

MIN_PAIRS = 10
"""Below this many non-tied pairs a one-sided Wilcoxon test at 0.05 has little power: such a test is
reported as too small (``PairedTest.too_few``), and a claim resting on it is inconclusive."""


@dataclass(frozen=True)
class PairedTest:
    """Result of :func:`paired_test`.

    Attributes:
        n: number of pairs.
        n_informative: pairs whose difference is not 0 (the Wilcoxon test ignores ties).
        median_a, median_b: medians of the two samples.
        median_diff: median of ``a - b``.
        share_greater: share of pairs with ``a > b``.
        share_less: share of pairs with ``a < b``.
        p: one-sided p-value for the alternative.
        alternative: ``"greater"`` (a > b) or ``"less"`` (a < b).
        too_few: fewer than :data:`MIN_PAIRS` informative pairs.
    """

    n: int
    n_informative: int
    median_a: float
    median_b: float
    median_diff: float
    share_greater: float
    share_less: float
    p: float
    alternative: str
    too_few: bool

    def significant(self, alpha: float = 0.05) -> bool:
        """The alternative holds at level ``alpha`` (and the test had enough pairs)."""
        return (not self.too_few) and self.p < alpha

    def describe(self, a: str = "a", b: str = "b") -> str:
        """``'median a 0.41 vs b 0.33, a > b in 71 % of 200 pairs, one-sided Wilcoxon p = 3e-09'``."""
        op = ">" if self.alternative == "greater" else "<"
        share = self.share_greater if self.alternative == "greater" else self.share_less
        return (f"median {a} {self.median_a:.3g} vs {b} {self.median_b:.3g}, {a} {op} {b} in {100 * share:.0f} % "
                f"of {self.n} pairs, one-sided Wilcoxon p = {self.p:.2g}")


def paired_test(a: Any, b: Any, alternative: str = "greater") -> PairedTest:
    """One-sided Wilcoxon signed-rank test of paired samples ``a`` and ``b``.

    Args:
        a, b: 1-D sequences / arrays / tensors of the same length N >= 1 (finite values): the two
            scores of each image.
        alternative: ``"greater"`` tests a > b, ``"less"`` tests a < b.

    Returns:
        :class:`PairedTest` (p = 1 when every difference is 0).
    """
    from scipy import stats

    if alternative not in ("greater", "less"):
        raise ValueError(f"`alternative` must be 'greater' or 'less', got {alternative!r}")
    xa = _vector(a, "a")
    xb = _vector(b, "b")
    if xa.shape != xb.shape:
        raise ValueError(f"`a` and `b` must have the same length, got {xa.size} and {xb.size}")
    d = xa - xb
    n_inf = int(np.count_nonzero(d))
    p = float(stats.wilcoxon(xa, xb, alternative=alternative).pvalue) if n_inf > 0 else 1.0
    return PairedTest(int(d.size), n_inf, float(np.median(xa)), float(np.median(xb)), float(np.median(d)),
                      float(np.mean(d > 0)), float(np.mean(d < 0)), p, alternative, n_inf < MIN_PAIRS)


def _vector(v: Any, name: str) -> np.ndarray:
    if isinstance(v, torch.Tensor):
        v = v.detach().cpu().double().numpy()
    x = np.asarray(v, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"`{name}` must be a non-empty 1-D sequence, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"`{name}` contains NaN or inf")
    return x
