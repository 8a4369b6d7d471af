"""Statistics of the Calibrate-to-Interpret claims: control band, per-image ratios, case counts, sweeps."""

import math

import numpy as np
import pytest
import torch

from xcal_core.metrics import (CONTROL_BAND, count_improved, is_control, ratio_test,
                               temperature_sweep_summary)


def test_is_control_band():
    assert CONTROL_BAND == (0.9, 1.1)
    assert is_control(0.99) and is_control(0.9) and is_control(1.1)
    assert not is_control(1.67) and not is_control(0.8)
    assert is_control(1.3, band=(0.5, 1.5))
    with pytest.raises(ValueError, match="`temperature`"):
        is_control(0.0)
    with pytest.raises(ValueError, match="`band`"):
        is_control(1.0, band=(1.2, 1.5))


def test_ratio_test_known_answer_and_zeros():
    before = np.array([1.0, 2.0, 4.0, 0.0, 0.0] + [1.0] * 15)
    after = np.array([0.5, 0.5, 1.0, 0.0, 0.3] + [0.2] * 15)
    r = ratio_test(after, before)
    assert r.n == 20 and r.n_zero_both == 1 and r.n_zero_before == 1
    ratios = np.array([0.5, 0.25, 0.25, 1.0, np.inf] + [0.2] * 15)
    assert r.median_ratio == pytest.approx(float(np.median(ratios)))
    assert r.share_lower == pytest.approx(18 / 20)
    assert r.test.alternative == "less" and r.test.significant()
    assert "median ratio" in r.describe()
    # a planted null: identical values -> ratio 1, no significance
    same = torch.rand(30, generator=torch.Generator().manual_seed(0)) + 0.1
    r0 = ratio_test(same, same)
    assert r0.median_ratio == 1.0 and r0.test.p == 1.0 and not r0.test.significant()
    with pytest.raises(ValueError, match="non-negative"):
        ratio_test([-1.0, 1.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="same length"):
        ratio_test([1.0], [1.0, 2.0])


def test_count_improved_directions_and_ties():
    assert count_improved([0.5, 0.6, 0.7], [0.6, 0.6, 0.9]) == (2, 3)  # tie does not count
    assert count_improved([0.5, 0.6], [0.4, 0.7], higher_is_better=False) == (1, 2)
    with pytest.raises(ValueError, match="same length"):
        count_improved([1.0], [1.0, 2.0])


def test_temperature_sweep_planted_minimum_and_null():
    g = np.random.default_rng(0)
    temps = [0.5, 1.0, 2.0, 4.0, 8.0]
    fitted = 2.2
    # planted U shape in log T with its minimum at T = 2, plus per-image noise
    base = np.array([(math.log(t) - math.log(2.0)) ** 2 for t in temps])
    vals = 0.3 + 0.05 * base[:, None] + 0.005 * g.standard_normal((5, 120))
    eces = 0.02 + 0.1 * np.abs(np.log(np.array(temps) / fitted))
    s = temperature_sweep_summary(temps[::-1], vals[::-1], fitted, eces=eces[::-1])  # order does not matter
    assert list(s.temperatures) == temps and s.t_best == 2.0 and s.near_fitted
    assert s.friedman_p < 1e-6 and s.spearman > 0.5 and s.n_images == 120
    far = temperature_sweep_summary(temps, vals, fitted=6.0)
    assert not far.near_fitted and math.isnan(far.spearman)
    # planted null: the metric does not depend on T (the same values at every temperature + tiny noise)
    null = 0.3 + 0.05 * g.standard_normal((1, 120)) + 1e-4 * g.standard_normal((5, 120))
    assert temperature_sweep_summary(temps, null, fitted).friedman_p > 0.01
    const = np.tile(g.random(40), (5, 1))
    assert temperature_sweep_summary(temps, const, fitted).friedman_p == 1.0
    with pytest.raises(ValueError, match="`per_image`"):
        temperature_sweep_summary(temps, vals[:3], fitted)
    with pytest.raises(ValueError, match="`temperatures`"):
        temperature_sweep_summary([1.0, 1.0, 2.0, 3.0, 4.0], vals, fitted)
    with pytest.raises(ValueError, match="`factor`"):
        temperature_sweep_summary(temps, vals, fitted, factor=1.0)
    with pytest.raises(ValueError, match="`eces`"):
        temperature_sweep_summary(temps, vals, fitted, eces=[0.1, 0.2])
