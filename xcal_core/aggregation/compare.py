"""Where one candidate stands among others on a per-image metric: its rank and paired tests against the best.

The paper's tables rank methods and aggregates by their mean over images. A rank alone cannot say whether
a lead is larger than the spread between images; :func:`standing` adds one-sided Wilcoxon signed-rank tests
over the same images (:func:`xcal_core.metrics.paired_test`): does the candidate beat the best of the
others, and is the best significantly ahead of it (if not, the candidate is "near the best").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..metrics.tests import PairedTest, paired_test

__all__ = ["Standing", "standing"]


@dataclass(frozen=True)
class Standing:
    """A candidate's standing on one metric (see :func:`standing`).

    Attributes:
        candidate: its name.
        rank: 1-based rank of its mean among ``n_candidates`` (1 = best; ties share the better rank).
        n_candidates: number of candidates ranked.
        value: its mean over images (NaN ignored).
        best_other: the best of the other candidates (by mean) and ``best_other_value`` its mean.
        beats_best: paired test "candidate better than ``best_other``" over the images.
        best_ahead: paired test "the overall best better than the candidate" (None when the candidate
            is ranked first).
        higher_is_better: the metric's direction.
    """

    candidate: str
    rank: int
    n_candidates: int
    value: float
    best_other: str
    best_other_value: float
    beats_best: PairedTest
    best_ahead: PairedTest | None
    higher_is_better: bool

    def lowest(self, alpha: float = 0.05) -> bool:
        """Ranked first *and* significantly better than the runner-up over images (the strong reading of
        "best in the table")."""
        return self.rank == 1 and self.beats_best.significant(alpha)

    def near_best(self, alpha: float = 0.05) -> bool:
        """Ranked first, or the best is not significantly ahead of it over images."""
        return self.rank == 1 or (self.best_ahead is not None and not self.best_ahead.significant(alpha))

    def judge(self, criterion: str = "best", alpha: float = 0.05, why: str | None = None) -> dict[str, Any]:
        """Verdict and reason of the claim "the candidate is the best" (or "best or near the best").

        ``criterion="best"``: holds when ranked first and significantly ahead of the runner-up over
        images; inconclusive when first by a margin within the image-to-image spread (or too few pairs);
        fails when another candidate is significantly ahead, inconclusive when it is ahead by noise only.
        ``criterion="near_best"``: holds when first or when the leader is not significantly ahead; fails
        otherwise. ``why`` (an established explanation) is appended to a failure's reason.

        Returns:
            ``{"verdict": ..., "reason": ...}`` for :meth:`xcal_core.runs.Run.claim`.
        """
        if criterion not in ("best", "near_best"):
            raise ValueError(f"`criterion` must be 'best' or 'near_best', got {criterion!r}")
        t = self.beats_best if self.rank == 1 else self.best_ahead
        share = t.share_greater if t.alternative == "greater" else t.share_less
        where = f"on {share:.0%} of {t.n} images, one-sided Wilcoxon p = {t.p:.2g}"
        if t.too_few:
            return {"verdict": "inconclusive",
                    "reason": f"only {t.n_informative} images differ between {self.candidate} and {self.best_other}: "
                              f"too few pairs for a paired test"}
        if self.rank == 1:
            if criterion == "near_best" or t.significant(alpha):
                return {"verdict": "holds", "reason": None}
            return {"verdict": "inconclusive",
                    "reason": f"{self.candidate} is first ({self.value:.4g} vs {self.best_other} {self.best_other_value:.4g}) "
                              f"but its lead is within the image-to-image spread (better {where})"}
        if not t.significant(alpha):
            if criterion == "near_best":
                return {"verdict": "holds", "reason": None}
            return {"verdict": "inconclusive",
                    "reason": f"{self.candidate} is rank {self.rank} ({self.value:.4g}), behind {self.best_other} "
                              f"({self.best_other_value:.4g}) by less than the image-to-image spread (ahead {where})"}
        reason = (f"{self.best_other} beats {self.candidate} ({self.best_other_value:.4g} vs {self.value:.4g}, rank "
                  f"{self.rank}/{self.n_candidates}; ahead {where})")
        return {"verdict": "fails", "reason": reason + (f": {why}" if why else "")}

    def describe(self) -> str:
        """One line: rank, means, and the paired test against the runner-up (or the leader)."""
        head = f"{self.candidate} rank {self.rank}/{self.n_candidates} ({self.value:.4g})"
        t = self.beats_best if self.rank == 1 else self.best_ahead
        share = t.share_greater if t.alternative == "greater" else t.share_less
        if self.rank == 1:
            return (f"{head}; runner-up {self.best_other} {self.best_other_value:.4g}; better on {share:.0%} "
                    f"of {t.n} images, one-sided Wilcoxon p = {t.p:.2g}")
        return (f"{head}; best {self.best_other} {self.best_other_value:.4g}, ahead on {share:.0%} of "
                f"{t.n} images, one-sided Wilcoxon p = {t.p:.2g}")


def _vec(v: Any, name: str) -> np.ndarray:
    a = v.detach().double().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v, dtype=float)
    if a.ndim != 1:
        raise ValueError(f"`per_image[{name!r}]` must be one value per image (n,), got shape {a.shape}")
    return a


def _paired(a: np.ndarray, b: np.ndarray, alternative: str) -> PairedTest:
    """:func:`paired_test` on the pairs where both values are finite (an all-NaN pair set counts as no pairs)."""
    ok = np.isfinite(a) & np.isfinite(b)
    if not ok.any():
        return PairedTest(0, 0, float("nan"), float("nan"), float("nan"), 0.0, 0.0, 1.0, alternative, True)
    return paired_test(a[ok], b[ok], alternative=alternative)


def standing(per_image: Mapping[str, Any], candidate: str, *, higher_is_better: bool = False,
             among: Sequence[str] | None = None) -> Standing:
    """Rank of ``candidate`` by mean, with paired tests against the best of the others.

    Args:
        per_image: candidate name -> per-image values (n,), the same images in the same order for all
            (e.g. :meth:`~xcal_core.aggregation.EvaluationResult.per_image`). NaN pairs are dropped
            by the tests and ignored by the means.
        candidate: the name to rank; must be in ``per_image``.
        higher_is_better: the metric's direction (FCOR: True; S_AVG, INFD: False).
        among: optional subset of names to rank against (the candidate is always included).

    Returns:
        :class:`Standing`.
    """
    if not isinstance(per_image, Mapping) or not per_image:
        raise ValueError("`per_image` must be a non-empty mapping name -> per-image values")
    if candidate not in per_image:
        raise ValueError(f"`candidate` {candidate!r} is not in `per_image` ({sorted(per_image)})")
    names = list(per_image) if among is None else list(dict.fromkeys([candidate, *among]))
    unknown = [n for n in names if n not in per_image]
    if unknown:
        raise ValueError(f"`among` names {unknown} are not in `per_image`")
    if len(names) < 2:
        raise ValueError("`standing` needs at least one other candidate to compare with")
    vals = {n: _vec(per_image[n], n) for n in names}
    sizes = {len(v) for v in vals.values()}
    if len(sizes) != 1:
        raise ValueError(f"`per_image` values must all have the same length, got {sorted(sizes)}")
    sign = -1.0 if higher_is_better else 1.0
    means = {n: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan") for n, v in vals.items()}
    key = {n: (sign * m if np.isfinite(m) else np.inf) for n, m in means.items()}
    rank = 1 + sum(1 for n in names if n != candidate and key[n] < key[candidate])
    others = [n for n in names if n != candidate]
    best_other = min(others, key=lambda n: key[n])
    better = "greater" if higher_is_better else "less"
    beats = _paired(vals[candidate], vals[best_other], better)
    ahead = None
    if rank > 1:
        ahead = _paired(vals[best_other], vals[candidate], better)
    return Standing(candidate, rank, len(names), means[candidate], best_other, means[best_other], beats, ahead,
                    bool(higher_is_better))
