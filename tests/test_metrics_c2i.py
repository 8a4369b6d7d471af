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


# ----------------------------------------------------------------------------- verdicts


def test_ece_verdict_pass_fail_and_no_power():
    from xcal_core.metrics import ece_verdict

    q = {"ece": 0.012, "ece_kde": 0.015}
    v = ece_verdict({"ece": 0.10, "ece_kde": 0.08}, {"ece": 0.02, "ece_kde": 0.03}, q)
    assert v.verdict == "holds" and "80 % cut" in v.observed
    v = ece_verdict({"ece": 0.10, "ece_kde": 0.08}, {"ece": 0.02, "ece_kde": 0.06}, q)
    assert v.verdict == "fails" and "ece_kde 25 %" in v.fail_reason
    v = ece_verdict({"ece": 0.03, "ece_kde": 0.08}, {"ece": 0.01, "ece_kde": 0.02}, q)  # not over-confident
    assert v.verdict == "inconclusive" and "ece 0.030" in v.inconclusive
    v = ece_verdict({"ece": 0.06, "ece_kde": 0.08}, {"ece": 0.01, "ece_kde": 0.02}, {"ece": 0.07, "ece_kde": 0.01})
    assert v.verdict == "inconclusive" and "q95 0.070" in v.inconclusive  # within the estimator's floor
    with pytest.raises(ValueError, match="same estimators"):
        ece_verdict({"ece": 0.1}, {"ece_kde": 0.1}, q)


def test_paired_verdict_directions_and_power():
    from xcal_core.metrics import paired_test, paired_verdict

    g = np.random.default_rng(1)
    a = g.random(100)
    lower = paired_test(a - 0.1 - 0.01 * g.random(100), a, "less")
    same = paired_test(a + 0.05, a, "less")  # higher everywhere: the "lower" alternative cannot hold
    tiny = paired_test(np.r_[a[:5] - 0.1, a[5:]], a, "less")
    assert paired_verdict({"mp": lower}).verdict == "holds"
    v = paired_verdict({"mp": lower, "rise": same})
    assert v.verdict == "fails" and "rise" in v.fail_reason and "mp" not in v.fail_reason
    assert paired_verdict({"mp": lower, "x": tiny}).verdict == "inconclusive"
    # "none": a neutrality claim fails when a case moves significantly in the harmful direction
    worse = paired_test(a + 0.1, a, "greater")
    assert paired_verdict({"ig": paired_test(a - 0.05, a, "greater")}, expect="none").verdict == "holds"
    v = paired_verdict({"ig": worse}, expect="none")
    assert v.verdict == "fails" and "ig" in v.fail_reason
    with pytest.raises(ValueError, match="`expect`"):
        paired_verdict({"mp": lower}, expect="some")


def test_btr_verdict_all_but_one_and_power():
    from xcal_core.metrics import btr_verdict

    before = {"a": 0.5, "b": 0.6, "c": 0.7}
    assert btr_verdict(before, {"a": 0.6, "b": 0.7, "c": 0.7}, {"a": 10, "b": 12, "c": 4}).verdict == "holds"
    v = btr_verdict(before, {"a": 0.4, "b": 0.7, "c": 0.7}, {"a": 10, "b": 12, "c": 4})
    assert v.verdict == "fails" and "2 of 3" in v.fail_reason
    v = btr_verdict(before, {"a": 0.51, "b": 0.61, "c": 0.71}, {"a": 1, "b": 1, "c": 1})
    assert v.verdict == "inconclusive" and "only 3 images" in v.inconclusive
    with pytest.raises(ValueError, match="same cases"):
        btr_verdict(before, {"a": 0.1}, {"a": 1})


def test_ratio_and_sweep_verdicts():
    from xcal_core.metrics import ratio_verdict

    g = np.random.default_rng(2)
    before = g.random(60) + 0.1
    assert ratio_verdict({"mp": ratio_test(0.2 * before, before)}).verdict == "holds"
    v = ratio_verdict({"mp": ratio_test(0.8 * before, before)})
    assert v.verdict == "fails" and "0.8" in v.fail_reason
    assert ratio_verdict({"mp": ratio_test(np.r_[0.1 * before[:5], before[5:]], before)}).verdict == "inconclusive"

    from xcal_core.metrics import sweep_verdict

    temps = [0.5, 1.0, 2.0, 4.0, 8.0]
    base = np.array([(math.log(t) - math.log(2.0)) ** 2 for t in temps])
    vals = 0.3 + 0.05 * base[:, None] + 0.005 * g.standard_normal((5, 80))
    eces = 0.02 + 0.1 * np.abs(np.log(np.array(temps) / 2.0))
    assert sweep_verdict(temperature_sweep_summary(temps, vals, 2.1, eces=eces)).verdict == "holds"
    v = sweep_verdict(temperature_sweep_summary(temps, vals, 6.5, eces=eces))
    assert v.verdict == "fails" and "3.2x" in v.fail_reason
    flat = np.tile(0.3 + 0.05 * g.random(80), (5, 1)) + 1e-5 * g.standard_normal((5, 80))
    v = sweep_verdict(temperature_sweep_summary(temps, flat, 2.1, eces=eces))
    assert v.verdict == "inconclusive" and "Friedman" in v.inconclusive


def test_nb02_recipe_choices_are_recipes():
    from xcal_core.models import RECIPES
    from xcal_core.schemas.nb02_calibrate_to_interpret import RECIPE_NAMES, SCHEMA

    assert set(RECIPE_NAMES) <= set(RECIPES)
    assert set(RECIPE_NAMES) <= set(SCHEMA.by_name["MODELS"].choices)
    assert SCHEMA.by_name["MODELS"].default[0] in RECIPES
