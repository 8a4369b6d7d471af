"""Tests of xcal_core.viz.training (ID-ExpO figures) and the analysis helpers they plot."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from xcal_core.training import beats_seed_spread, compare_methods, format_comparison, quadrant_shares, to_metric_rows
from xcal_core.viz import (
    plot_delta_scatter,
    plot_idexpo_tradeoff,
    plot_perturbation_curves,
    plot_soft_vs_hard,
    plot_training_history,
)


def test_quadrant_shares_known_answer():
    d_ins = torch.tensor([0.1, 0.2, -0.1, -0.2, 0.3])
    d_omd = torch.tensor([0.1, -0.1, 0.2, -0.3, 0.0])
    s = quadrant_shares(d_ins, d_omd)
    assert s == pytest.approx({"both_better": 0.2, "ins_only": 0.4, "del_only": 0.2, "neither": 0.2})
    with pytest.raises(ValueError, match="same length"):
        quadrant_shares(torch.zeros(3), torch.zeros(4))


def test_compare_methods_and_metric_rows():
    table = pd.DataFrame({"method": ["pretrained", "ce_only", "ce_only", "idexpo", "idexpo"], "seed": [0, 0, 1, 0, 1],
                          "lambda1": [np.nan, np.nan, np.nan, 0.1, 0.1], "ins": [0.3, 0.30, 0.34, 0.50, 0.52],
                          "del": [0.2, 0.2, 0.21, 0.1, 0.12], "accuracy": [0.9, 0.9, 0.91, 0.9, 0.9],
                          "seconds_per_epoch": [np.nan, 1.0, 1.0, 3.0, 3.1]})
    c = compare_methods(table, "ins", lambda1=0.1)
    assert c["diff"] == pytest.approx(0.19) and c["spread"] == pytest.approx(0.04) and c["n_seeds"] == 2
    with pytest.raises(ValueError, match="unknown `metric`"):
        compare_methods(table, "auc")
    with pytest.raises(ValueError, match="lambda1=0.5"):
        compare_methods(table, "ins", lambda1=0.5)
    assert c["paired"] == pytest.approx([0.20, 0.18]) and c["paired_min"] == pytest.approx(0.18)
    assert beats_seed_spread(c, increase=True)  # 0.19 > spread 0.04, every seed higher
    assert not beats_seed_spread(c, increase=False)
    assert not beats_seed_spread(c, min_seeds=3)  # two seeds cannot give a verdict at min_seeds=3
    d = compare_methods(table, "del", lambda1=0.1)
    assert d["diff"] == pytest.approx(-0.095) and beats_seed_spread(d, increase=False)
    # an effect inside the seed noise does not count, nor one that flips sign in a seed
    noisy = table.assign(ins=[0.3, 0.30, 0.40, 0.36, 0.41])
    cn = compare_methods(noisy, "ins", lambda1=0.1)
    assert cn["diff"] == pytest.approx(0.035) and cn["spread"] == pytest.approx(0.10) and not beats_seed_spread(cn)
    flip = pd.DataFrame({"method": ["ce_only"] * 3 + ["idexpo"] * 3, "seed": [0, 1, 2] * 2, "lambda1": [np.nan] * 3 + [0.1] * 3,
                         "ins": [0.51, 0.41, 0.41, 0.50, 0.60, 0.60]})
    cf = compare_methods(flip, "ins", lambda1=0.1)  # mean gain 0.123 > spread 0.1, but seed 0 got worse
    assert cf["diff"] > cf["spread"] and cf["paired_min"] == pytest.approx(-0.01) and not beats_seed_spread(cf)
    assert format_comparison(c, "Ins") == "Ins 0.320 -> 0.510 (diff +0.190, seed spread 0.040, per seed +0.180..+0.200)"
    with pytest.raises(ValueError, match="min_seeds"):
        beats_seed_spread(c, min_seeds=0)
    rows = to_metric_rows(table, experiment="gradcam", dataset="digits", model="small_cnn")
    assert list(rows.columns) == ["experiment", "dataset", "model", "method", "metric", "level", "seed", "value", "higher_is_better"]
    assert len(rows) == 5 * 4 - 1  # the pretrained model has no seconds_per_epoch
    assert set(rows.loc[rows["metric"] == "del", "higher_is_better"]) == {False}


def test_figures_return_fig_and_axes():
    fr = torch.linspace(0, 0.5, 9)
    fig, ax = plot_perturbation_curves(fr, {"a": torch.rand(5, 9), "b": torch.rand(5, 9)}, title="t")
    assert ax.get_title() == "t" and len(ax.get_lines()) == 2
    with pytest.raises(ValueError, match="shape"):
        plot_perturbation_curves(fr, {"a": torch.rand(5, 8)})
    sweep = pd.DataFrame({"method": ["ce_only", "idexpo"] * 2, "eta": [0.5, 0.5, 3.0, 3.0], "accuracy": [0.9, 0.88, 0.9, 0.9],
                          "ins": [0.3, 0.5, 0.3, 0.4], "one_minus_del": [0.7, 0.9, 0.7, 0.8]})
    fig, axes = plot_idexpo_tradeoff(sweep)
    assert len(axes) == 2 and axes[1].get_ylabel().startswith("mean 1 - deletion")
    with pytest.raises(ValueError, match="columns"):
        plot_idexpo_tradeoff(sweep.drop(columns="ins"))
    fig, ax = plot_delta_scatter(torch.randn(20), torch.randn(20), quadrant_shares(torch.randn(20), torch.randn(20)))
    assert len(ax.texts) == 4
    hist = pd.DataFrame({"epoch": [0, 1, 2], "ce": [np.nan, 0.5, 0.4], "r_ins": [np.nan, 1.0, 0.9], "r_del": [np.nan, 2.0, 1.5],
                         "val_acc": [0.9, 0.9, 0.91], "val_ins": [0.3, 0.4, 0.5], "val_del": [0.3, 0.2, 0.1],
                         "selected": [False, False, True]})
    fig, axes = plot_training_history(hist)
    assert len(axes[0].get_lines()) == 3
    agree = pd.DataFrame({"tau": [1.0, 10.0] * 2, "metric": ["ins", "ins", "del", "del"], "mean_abs_diff": [0.1, 0.001, 0.2, 0.002],
                          "max_abs_diff": [0.3, 0.01, 0.4, 0.02]})
    fig, ax = plot_soft_vs_hard(agree)
    assert ax.get_xscale() == "log"


def test_claim_verdicts_from_comparisons():
    from xcal_core.training import accuracy_kept_verdict, eta_tradeoff_verdict, ins_del_verdict, seed_gain_verdict

    table = pd.DataFrame({"method": ["ce_only"] * 3 + ["idexpo"] * 3, "seed": [0, 1, 2] * 2,
                          "lambda1": [np.nan] * 3 + [0.1] * 3, "ins": [0.30, 0.31, 0.32, 0.40, 0.41, 0.43],
                          "del": [0.40, 0.41, 0.39, 0.395, 0.38, 0.42], "accuracy": [0.90, 0.91, 0.90, 0.86, 0.87, 0.86]})
    ins, dele, acc = (compare_methods(table, m, lambda1=0.1) for m in ("ins", "del", "accuracy"))
    v = ins_del_verdict(ins, dele, context="fm, 3 seeds")
    assert v["verdict"] == "fails" and "Del" in v["reason"] and "Ins" not in v["reason"]
    assert v["observed"].startswith("fm, 3 seeds: Ins 0.310 -> 0.413")
    assert ins_del_verdict(ins, dele, note="ceiling")["reason"].endswith("; ceiling")
    assert seed_gain_verdict(ins, "Ins")["verdict"] == "holds"
    assert "within the seed spread" in seed_gain_verdict(dele, "Del", increase=False)["reason"]
    assert "other way" in seed_gain_verdict(ins, "Ins", increase=False)["reason"]
    one = compare_methods(table[table["seed"] == 0], "ins", lambda1=0.1)
    assert seed_gain_verdict(one, "Ins")["verdict"] == "inconclusive"
    a = accuracy_kept_verdict(acc)
    assert a["verdict"] == "fails" and "-0.040" in a["reason"]
    assert accuracy_kept_verdict(acc, tolerance=0.05)["verdict"] == "holds"
    per_eta = pd.DataFrame({"faith_diff": [0.1, 0.2], "faith_spread": [0.01, 0.02]})
    base = {"n_etas": 2, "n_a_better": 2, "a_better_at_every_eta": True, "spearman_acc": 0.8, "spearman_faith": -0.9,
            "n_selections": 3, "acc_range": 0.02, "faith_range": 0.1}
    assert eta_tradeoff_verdict(per_eta, base)["verdict"] == "holds"
    bad = eta_tradeoff_verdict(per_eta, {**base, "spearman_faith": 0.2}, note="validation too small")
    assert bad["verdict"] == "fails" and bad["reason"].endswith("; validation too small")
    flat = {**base, "n_selections": 1, "spearman_acc": float("nan"), "spearman_faith": float("nan")}
    assert eta_tradeoff_verdict(per_eta, flat)["verdict"] == "inconclusive"
    worse = eta_tradeoff_verdict(per_eta, {**flat, "a_better_at_every_eta": False, "n_a_better": 1})
    assert worse["verdict"] == "fails" and "1 of 2 etas" in worse["reason"]
    with pytest.raises(ValueError, match="min_rho"):
        eta_tradeoff_verdict(per_eta, base, min_rho=0)
