"""ReCalX: planted per-level temperatures, empty bins, argmax preservation, the level-aware wrapper."""

import numpy as np
import pytest
import torch

from xcal_core.calibration import ReCalX, TemperatureScaling
from xcal_core.explainers import LevelAwareModel, coalition_levels
from xcal_core.perturbations import level_to_bin, perturbed_logits, tabular_feature_mask

PLANTED = torch.tensor([0.6, 0.8, 1.0, 1.3, 1.6, 2.0, 2.5, 3.0, 3.5, 4.0])

def _close(a, b, rtol=1.3e-6, atol=1e-5):
    """assert_close without torch.testing's slow first-call import."""
    a, b = torch.as_tensor(a), torch.as_tensor(b).to(torch.as_tensor(a).dtype)
    assert a.shape == b.shape and torch.allclose(a, b, rtol=rtol, atol=atol), f"{a} != {b}"



def _planted(n=8000, k=4, seed=0, bins_used=None):
    g = torch.Generator().manual_seed(seed)
    levels = torch.rand(n, generator=g)
    if bins_used is not None:
        allowed = torch.tensor(bins_used)
        levels = (allowed[torch.randint(len(allowed), (n,), generator=g)] + torch.rand(n, generator=g)) / 10
    z = torch.randn(n, k, generator=g) * 2
    y = torch.multinomial(torch.softmax(z, 1), 1, generator=g).squeeze(1)
    t = PLANTED[level_to_bin(levels, 10)]
    return z * t[:, None], y, levels


def test_recovers_planted_per_level_temperatures():
    logits, y, levels = _planted()
    rc = ReCalX(n_bins=10).fit(logits, y, levels)
    assert rc.temperatures_.shape == (10,)
    _close(rc.temperatures_, PLANTED, rtol=0.12, atol=0.0)
    assert int(rc.counts_.sum()) == len(y) and bool(rc.fitted_bins_.all())
    # the per-bin fit is better than any single temperature on the same data
    from xcal_core.metrics import nll

    ts = TemperatureScaling().fit(logits, y)
    assert nll(rc.predict_proba(logits, levels), y) < nll(ts.predict_proba(logits), y) - 0.01


def test_one_bin_equals_global_temperature_scaling():
    logits, y, levels = _planted(n=3000, seed=1)
    rc = ReCalX(n_bins=1).fit(logits, y, levels)
    ts = TemperatureScaling().fit(logits, y)
    assert float(rc.temperatures_[0]) == pytest.approx(ts.temperature_, rel=1e-5)


@pytest.mark.parametrize("empty", ["identity", "nearest"])
def test_empty_bins(empty):
    logits, y, levels = _planted(n=4000, seed=2, bins_used=[0, 1, 2, 5, 6, 7, 8, 9])
    rc = ReCalX(n_bins=10, empty=empty).fit(logits, y, levels)
    assert rc.counts_[3] == 0 and rc.counts_[4] == 0
    assert rc.fitted_bins_.tolist() == [True] * 3 + [False] * 2 + [True] * 5
    got = rc.temperatures_[[3, 4]]
    # identity: T = 1; nearest: bin 3 copies bin 2 and bin 4 copies bin 5 (each at distance 1)
    exp = torch.ones(2) if empty == "identity" else rc.temperatures_[[2, 5]]
    _close(got, exp)
    _close(rc.temperatures_[[0, 9]], PLANTED[[0, 9]], rtol=0.15, atol=0.0)


def test_argmax_never_changes_and_transform_matches_bins():
    logits, y, levels = _planted(n=3000, seed=3)
    rc = ReCalX(n_bins=5).fit(logits, y, levels)
    p = rc.predict_proba(logits, levels)
    assert torch.equal(p.argmax(1), logits.argmax(1))
    t = rc.temperatures_[level_to_bin(levels, 5)]
    _close(rc.transform(logits, levels), logits / t[:, None])
    assert "temperatures_" in repr(rc)


def test_level_aware_wrapper_end_to_end():
    torch.manual_seed(0)
    d, k = 6, 3
    model = torch.nn.Sequential(torch.nn.Linear(d, 16), torch.nn.ReLU(), torch.nn.Linear(16, k)).eval()
    x = torch.randn(40, d)
    y = model(x).argmax(1)
    g = torch.Generator().manual_seed(1)
    logits, idx, lv = perturbed_logits(model, x, tabular_feature_mask(d), torch.zeros(d), n_per_bin=3, n_bins=5, generator=g, batch_size=64)
    assert logits.shape == (len(idx), k) and lv.shape == idx.shape
    rc = ReCalX(n_bins=5).fit(logits.detach(), y[idx], lv)
    wrapped = rc.wrap(model)
    assert isinstance(wrapped, LevelAwareModel)
    with coalition_levels(lv):
        out = wrapped(torch.zeros(len(lv), d) + 0.1)
    ref = rc.transform(model(torch.zeros(len(lv), d) + 0.1).detach(), lv)
    _close(out.detach(), ref)
    _close(wrapped(x[:5], levels=torch.zeros(5)).detach(), rc.transform(model(x[:5]).detach(), torch.zeros(5)))
    # without a level the wrapper assumes a clean input (level 0) ... or refuses when asked to
    _close(wrapped(x[:5]).detach(), rc.transform(model(x[:5]).detach(), torch.zeros(5)))
    with pytest.raises(RuntimeError, match="without perturbation levels"):
        rc.wrap(model, default_level=None)(x[:5])
    with pytest.raises(ValueError, match="must have shape"):
        wrapped(x[:5], levels=torch.zeros(4))
    # global temperature scaling needs no level
    ts = TemperatureScaling().fit(model(x).detach(), y)
    _close(ts.wrap(model)(x).detach(), ts.transform(model(x).detach()))


def test_bad_input():
    logits, y, levels = _planted(n=100, seed=4)
    with pytest.raises(ValueError, match="looks like probabilities"):
        ReCalX().fit(torch.softmax(logits, 1), y, levels)
    with pytest.raises(ValueError, match=r"`levels` must be in \[0, 1\]"):
        ReCalX().fit(logits, y, levels + 1.0)
    with pytest.raises(ValueError, match="same length"):
        ReCalX().fit(logits, y, levels[:50])
    with pytest.raises(ValueError, match="`labels` has 99 labels"):
        ReCalX().fit(logits, y[:99], levels)
    with pytest.raises(ValueError, match="`n_bins`"):
        ReCalX(n_bins=0)
    with pytest.raises(ValueError, match="unknown `empty`"):
        ReCalX(empty="zero")
    bad = logits.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        ReCalX().fit(bad, y, levels)
    with pytest.raises(RuntimeError, match="not fitted"):
        ReCalX().predict_proba(logits, levels)


class _Overconfident(torch.nn.Module):
    """Binary model with logits (0, 3 w.x): three times too confident, more so as features are removed."""

    def __init__(self, w):
        super().__init__()
        self.register_buffer("w", w)

    def forward(self, x):
        s = 3.0 * (x @ self.w)
        return torch.stack([torch.zeros_like(s), s], 1)


def test_evaluate_under_perturbation_and_summaries():
    from xcal_core.calibration import evaluate_under_perturbation, relative_reduction, summarize_levels

    g = torch.Generator().manual_seed(0)
    d = 5
    w = torch.tensor([1.5, -1.0, 0.8, 0.5, -0.3])
    x = torch.randn(700, d, generator=g)
    y = torch.bernoulli(torch.sigmoid(x @ w), generator=g).long()
    model = _Overconfident(w)
    res = evaluate_under_perturbation(model, x[:300], y[:300], x[300:], y[300:], tabular_feature_mask(d), baseline="zero",
                                      levels=[0.0, 0.4, 0.8, 1.0], n_bins=5, n_per_bin=5, n_per_level=4,
                                      n_floor_draws=5, generator=torch.Generator().manual_seed(1))
    table = res["table"]
    assert set(table.method) == {"uncalibrated", "temperature_scaling", "recalx"} and len(table) == 12
    # levels 0 (the clean input) and 1 (everything replaced) have one coalition: each input counted once
    n = table.groupby("level").n.first()
    assert n[0.0] == 400 and n[1.0] == 400 and n[0.4] == 1600 and n[0.8] == 1600
    assert (table.n_inputs == 400).all() and (table.argmax_agreement == 1.0).all()
    assert res["n_forward"] == 300 + 300 * 5 * 5 + 400 * (2 + 2 * 4)
    # one bandwidth per level, the same for every method; clean predictions get a smaller one than level 0.8
    bw = table.pivot(index="level", columns="method", values="bandwidth")
    assert (bw.nunique(axis=1) == 1).all() and bw.loc[0.0].iloc[0] < bw.loc[0.8].iloc[0]
    assert res["bandwidths"] == {lv: bw.loc[lv].iloc[0] for lv in bw.index}
    # floors: excess = value - floor, and the ECE floor too
    assert np.allclose(table.ce_kl_excess, table.ce_kl - table.ce_kl_floor)
    assert (table.ce_kl_floor_sd > 0).all() and (table.ece_floor > 0).all()
    # the planted overconfidence is undone: T ~ 3 on clean data, higher under perturbation
    assert 2.3 < res["ts"].temperature_ < 3.8
    assert float(res["recalx"].temperatures_[4]) > float(res["recalx"].temperatures_[0])
    unc = table[table.method == "uncalibrated"].set_index("level")
    rcx = table[table.method == "recalx"].set_index("level")
    # uncalibrated: clearly above its floor at every level below 1; ReCalX: within a few floor sds
    assert (unc.loc[[0.0, 0.4, 0.8], "ce_kl_z"] > 5).all()
    assert (rcx.loc[[0.0, 0.4, 0.8], "ce_kl_excess"].abs() < unc.loc[[0.0, 0.4, 0.8], "ce_kl_excess"] / 3).all()
    s = summarize_levels(table, "ce_kl_excess").set_index("method")
    assert s.loc["recalx", "avg"] < s.loc["temperature_scaling", "avg"]
    assert relative_reduction(s.loc["uncalibrated", "max"], s.loc["recalx", "max"]) > 0.5
    assert int(res["fit_index"].max()) == 299 and len(res["fit_index"]) == len(res["fit_logits"])
    # clean logits computed once (e.g. shared by the cells of one model) replace level 0's forward passes
    shared = evaluate_under_perturbation(model, x[:300], y[:300], x[300:], y[300:], tabular_feature_mask(d),
                                         baseline="zero", levels=[0.0, 0.4, 0.8, 1.0], n_bins=5, n_per_bin=5,
                                         n_per_level=4, n_floor_draws=5, generator=torch.Generator().manual_seed(1),
                                         clean_logits=model(x[300:]).detach())
    assert shared["n_forward"] == res["n_forward"] - 400
    lv0 = shared["table"][shared["table"].level == 0.0].reset_index(drop=True)
    assert np.allclose(lv0.ece, table[table.level == 0.0].reset_index(drop=True).ece)
    with pytest.raises(ValueError, match="`clean_logits`"):
        evaluate_under_perturbation(model, x[:100], y[:100], x[600:], y[600:], tabular_feature_mask(d), baseline="zero",
                                    levels=[0.0], clean_logits=model(x[:5]).detach())
    # a fixed bandwidth for every level and method
    fixed = evaluate_under_perturbation(model, x[:100], y[:100], x[600:], y[600:], tabular_feature_mask(d), baseline="zero",
                                        levels=[0.0, 0.6], n_bins=2, n_per_bin=2, bandwidth=0.05, n_floor_draws=0,
                                        generator=torch.Generator().manual_seed(1))
    assert (fixed["table"].bandwidth == 0.05).all() and "ce_kl_floor" not in fixed["table"]
    with pytest.raises(ValueError, match="`bandwidth`"):
        evaluate_under_perturbation(model, x[:100], y[:100], x[600:], y[600:], tabular_feature_mask(d), baseline="zero",
                                    levels=[0.0], bandwidth=-1.0)


def test_level_bandwidths_and_level_metrics_errors():
    from xcal_core.calibration import level_bandwidths, level_metrics

    g = torch.Generator().manual_seed(3)
    z = torch.randn(120, 3, generator=g)
    lv = torch.tensor([0.0, 0.5]).repeat(60)
    y = torch.randint(0, 3, (120,), generator=g)
    probs = {"a": torch.softmax(z, 1), "b": torch.softmax(z / 2, 1)}
    grp = torch.arange(60).repeat_interleave(2)
    hs = level_bandwidths(probs, lv, grp)
    assert set(hs) == {0.0, 0.5} and all(h > 0 for h in hs.values())
    lm = level_metrics(probs["a"], y, lv, bandwidth=hs, groups=grp, n_floor_draws=3, generator=g)
    assert lm.n_inputs.tolist() == [60, 60] and lm.bandwidth.tolist() == [hs[0.0], hs[0.5]]
    with pytest.raises(ValueError, match="no entry for level 0.5"):
        level_metrics(probs["a"], y, lv, bandwidth={0.0: 0.1})
    with pytest.raises(ValueError, match="`n_floor_draws`"):
        level_metrics(probs["a"], y, lv, bandwidth=0.1, n_floor_draws=1)
    with pytest.raises(TypeError, match="`probs`"):
        level_bandwidths(probs["a"], lv)
    with pytest.raises(ValueError, match=r"`probs\['b'\]` has 10 rows"):
        level_bandwidths({"a": probs["a"], "b": probs["b"][:10]}, lv)
    with pytest.raises(ValueError, match="`groups`"):
        level_bandwidths(probs, lv, grp[:5])


def test_image_classifier_for_trains_a_recipe_once(tmp_path):
    from xcal_core.calibration import image_classifier_for
    from xcal_core.data import Dataset

    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(48, 1, 12, 12, generator=g), torch.arange(48) % 3
    ds = Dataset.from_tensors("tiny", train=(x[:32], y[:32]), cal=(x[32:40], y[32:40]), test=(x[40:], y[40:]))
    m1, note1 = image_classifier_for("small_cnn", ds, seed=1, cache_dir=tmp_path, epochs=1)
    m2, note2 = image_classifier_for("small_cnn", ds, seed=1, cache_dir=tmp_path, epochs=1)
    assert "trained here" in note1 and "loaded from the model cache" in note2 and "1 epochs" in note2
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))
    assert m1(x[:2]).shape == (2, 3)
    with pytest.raises(TypeError, match="`name`"):
        image_classifier_for("", ds)
    with pytest.raises(ValueError, match="`epochs`"):
        image_classifier_for("small_cnn", ds, epochs=-2)


@pytest.mark.slow
def test_remove_and_retrain_fills_removed_columns():
    from xcal_core.calibration import remove_and_retrain
    from xcal_core.data import load_dataset

    ds = load_dataset("wine", seed=0)
    out = remove_and_retrain(ds, [0, 1, 2], [1, 2], model_name="mlp", seeds=(0,), epochs=2)
    assert out.k.tolist() == [0, 1, 2] and out.removed.tolist() == [(), (0,), (0, 1)]
    assert (out.test_loss > 0).all()
    # digits are (1, 8, 8) pixel features: feature i is element i of the flattened image
    digits = load_dataset("digits", seed=0)
    out = remove_and_retrain(digits, [21, 35], [1], model_name="mlp", seeds=(0,), epochs=1)
    assert out.k.tolist() == [0, 1] and out.removed.tolist() == [(), (21,)]


class _GradProbe(torch.nn.Module):
    """Logistic model with a trainable weight that records, per forward pass, the batch size and
    whether autograd was recording."""

    def __init__(self, d):
        super().__init__()
        self.lin = torch.nn.Linear(d, 2)
        self.calls = []

    def forward(self, x):
        self.calls.append((x.shape[0], torch.is_grad_enabled()))
        return self.lin(x)


def test_evaluate_under_perturbation_runs_chunked_without_autograd():
    from xcal_core.calibration import evaluate_under_perturbation

    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    x, y = torch.randn(120, 4, generator=g), torch.randint(0, 2, (120,), generator=g)
    model = _GradProbe(4).eval()
    res = evaluate_under_perturbation(model, x[:60], y[:60], x[60:], y[60:], tabular_feature_mask(4), baseline="zero",
                                      levels=[0.0, 0.5], n_bins=2, n_per_bin=3, n_per_level=2, bandwidth=0.1,
                                      n_floor_draws=2, generator=torch.Generator().manual_seed(1), batch_size=16)
    # every forward pass (clean fit logits included) is chunked and keeps no autograd graph: on a GPU a
    # graph kept across the chunks holds every chunk's activations
    assert model.calls and all(bs <= 16 for bs, _ in model.calls)
    assert not any(grad for _, grad in model.calls)
    assert not res["logits"].requires_grad and not res["fit_logits"].requires_grad
    assert len(res["logits"]) == 60 * 1 + 60 * 2  # level 0 once per input, level 0.5 twice


def test_a_level_bin_fitted_at_a_temperature_bound_warns():
    """Issue 21 item 11: a clipped temperature is reported, naming the bins."""
    logits, y, levels = _planted()
    hi = levels >= 0.9  # the last bin: confidently right on every sample -> T at the lower bound
    logits[hi] = torch.nn.functional.one_hot(y[hi], logits.shape[1]).float() - 0.5  # margin 1, always right
    with pytest.warns(UserWarning, match=r"ReCalX: level bin\(s\) \[9\] fitted a temperature at a bound"):
        ReCalX(n_bins=10).fit(logits, y, levels)
