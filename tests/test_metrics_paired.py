import numpy as np
import pytest
import torch
from scipy import stats

from xcal_core.metrics import MIN_PAIRS, paired_test


def test_paired_test_matches_scipy_and_detects_a_planted_shift():
    rng = np.random.default_rng(0)
    b = rng.normal(size=200)
    a = b + 0.3 + rng.normal(scale=0.5, size=200)  # planted shift
    t = paired_test(torch.tensor(a), b)
    assert t.p == pytest.approx(stats.wilcoxon(a, b, alternative="greater").pvalue)
    assert t.significant() and t.median_diff > 0.2 and t.share_greater > 0.6 and not t.too_few
    assert not paired_test(a, b, alternative="less").significant()
    null = paired_test(b + rng.normal(scale=0.5, size=200), b)  # no shift: not significant
    assert null.p > 0.01
    assert "one-sided Wilcoxon p" in t.describe("calibrated", "raw")


def test_paired_test_without_power_says_so():
    t = paired_test([1.0, 2.0, 3.0], [0.0, 1.0, 2.0])  # 3 pairs, all better: still too few
    assert t.too_few and not t.significant() and t.n == 3
    ties = paired_test(np.ones(50), np.ones(50))
    assert ties.p == 1.0 and ties.n_informative == 0 and ties.too_few
    assert MIN_PAIRS == 10
    with pytest.raises(ValueError, match="same length"):
        paired_test([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="`a` contains NaN"):
        paired_test([np.nan, 1.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="`alternative`"):
        paired_test([1.0], [1.0], alternative="two-sided")
