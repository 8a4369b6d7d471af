"""TemperatureScaling / fit_temperature: planted temperatures, argmax preservation, bad input."""

import math

import numpy as np
import pytest
import torch

from xcal_core.calibration import TemperatureScaling, fit_temperature, temperature_nll


def _planted(n=4000, k=5, t_true=2.5, seed=0):
    """Labels drawn from softmax(z); the model reports z * t_true, i.e. its true temperature is t_true."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, k, generator=g) * 2.0
    y = torch.multinomial(torch.softmax(z, 1), 1, generator=g).squeeze(1)
    return z * t_true, y


@pytest.mark.parametrize("t_true", [0.5, 1.0, 2.5])
def test_recovers_planted_temperature(t_true):
    logits, y = _planted(t_true=t_true)
    ts = TemperatureScaling().fit(logits, y)
    assert ts.temperature_ == pytest.approx(t_true, rel=0.08)


def test_minimizes_nll_against_grid():
    logits, y = _planted(n=1500, t_true=1.7, seed=3)
    t = fit_temperature(logits, y)
    grid = np.exp(np.linspace(np.log(0.05), np.log(20), 301))
    nlls = [temperature_nll(logits, y, g) for g in grid]
    assert temperature_nll(logits, y, t) <= min(nlls) + 1e-9
    assert abs(math.log(t) - math.log(grid[int(np.argmin(nlls))])) < 0.03


def test_keeps_argmax_and_probabilities_are_distributions():
    logits, y = _planted(n=500, t_true=3.0, seed=1)
    ts = TemperatureScaling().fit(logits, y)
    p = ts.predict_proba(logits)
    assert torch.equal(p.argmax(1), logits.argmax(1))
    assert torch.allclose(p.sum(1), torch.ones(500), atol=1e-6)
    assert torch.allclose(ts.transform(logits), logits / ts.temperature_)
    assert "temperature_" in repr(ts)


def test_boundary_optimum_is_clipped():
    # Perfectly separable, correct predictions: NLL keeps falling as T -> 0, so the lower bound is the answer.
    logits = torch.tensor([[3.0, 0.0], [0.0, 3.0]] * 20)
    y = torch.tensor([0, 1] * 20)
    assert fit_temperature(logits, y, bounds=(0.1, 10.0)) == pytest.approx(0.1, rel=1e-6)


def test_bad_input():
    logits, y = _planted(n=50)
    with pytest.raises(ValueError, match="looks like probabilities"):
        TemperatureScaling().fit(torch.softmax(logits, 1), y)
    with pytest.raises(ValueError, match="`labels` has 49 labels"):
        TemperatureScaling().fit(logits, y[:49])
    with pytest.raises(ValueError, match="outside"):
        TemperatureScaling().fit(logits, y + 10)
    bad = logits.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        TemperatureScaling().fit(bad, y)
    with pytest.raises(ValueError, match="`bounds`"):
        TemperatureScaling(bounds=(2.0, 1.0))
    with pytest.raises(RuntimeError, match="not fitted"):
        TemperatureScaling().predict_proba(logits)
    ts = TemperatureScaling().fit(logits, y)
    with pytest.raises(ValueError, match="classes"):
        ts.predict_proba(logits[:, :3])


@pytest.mark.parametrize("damage", ["rounded_2_decimals", "float16", "bfloat16", "percent"])
def test_inexact_probabilities_are_rejected_as_logits(damage):
    """Issue 21 item 11: probabilities rounded, in half precision or times 100 are not logits (they used to
    give T = 0.2 or 20 without a word)."""
    logits, y = _planted(n=300, t_true=1.0)
    p = torch.softmax(logits, 1)
    bad = {"rounded_2_decimals": p.round(decimals=2), "float16": p.half(), "bfloat16": p.bfloat16(), "percent": 100 * p}[damage]
    kind = "percentages" if damage == "percent" else "probabilities"
    with pytest.raises(ValueError, match=rf"`logits` looks like {kind}"):
        TemperatureScaling().fit(bad, y)
    if damage in ("float16", "bfloat16"):
        with pytest.raises(ValueError, match=f"given as torch.{damage}"):
            TemperatureScaling().fit(bad, y)
    TemperatureScaling().fit(torch.log(p).half(), y)  # half-precision log-probabilities are fine


def test_single_sample_fit_is_refused_and_a_bound_temperature_warns():
    logits, y = _planted(n=50)
    with pytest.raises(ValueError, match=r"`logits` has 1 sample\(s\); fitting a temperature needs at least 2"):
        TemperatureScaling().fit(logits[:1], y[:1])
    easy = torch.tensor([[3.0, 0.0], [0.0, 3.0]] * 20)
    with pytest.warns(UserWarning, match=r"T = 0.1 is at the lower end of `bounds` \(0.1, 10.0\)"):
        assert TemperatureScaling(bounds=(0.1, 10.0)).fit(easy, torch.tensor([0, 1] * 20)).temperature_ == pytest.approx(0.1)
    with pytest.warns(UserWarning, match="at the upper end of `bounds`"):
        TemperatureScaling().fit(easy, torch.tensor([1, 0] * 20))  # always wrong, confidently
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TemperatureScaling().fit(*_planted(n=500, t_true=2.0))  # an interior optimum: silent
