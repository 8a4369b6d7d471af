"""Notebook 01's claim criteria on planted per-level tables: each can hold, fail and lack power."""

import numpy as np
import pandas as pd
import pytest
import torch

from xcal_core.calibration import (
    cell_summary,
    flattening_verdict,
    growth_verdict,
    max_reduction_verdict,
    paired_cells_verdict,
    recalx_lowest_verdict,
    retrain_verdict,
    ts_max_verdict,
)
from xcal_core.metrics import paired_test

LEVELS = np.linspace(0, 1, 6)


def _table(curves, floor=0.3, sd=0.01, cells=("a", "b"), seeds=(0,)):
    """Per-level rows: ``curves[method]`` is the planted distance from calibration per level (negative =
    below the floor, as an under-confident model), the same in every cell and seed."""
    rows = []
    for c in cells:
        for m, excess in curves.items():
            for s in seeds:
                for lv, e in zip(LEVELS, excess):
                    rows.append({"dataset": c, "features": "7x7", "baseline": "zero", "model": "cnn", "method": m,
                                 "seed": s, "level": lv, "ce_kl": floor + e, "ce_kl_floor": floor,
                                 "ce_kl_floor_sd": sd, "ece": abs(e) / 3})
    return pd.DataFrame(rows)


GROW = np.linspace(0.05, 1.0, 6)
FLAT = np.full(6, 0.3)


def test_cell_summary_reads_distances_from_the_floor():
    t = _table({"uncalibrated": GROW, "recalx": -GROW / 2}, seeds=(0, 1))
    s = cell_summary(t).set_index(["dataset", "method"])
    assert s.loc[("a", "uncalibrated"), "max"] == pytest.approx(1.0) and s.loc[("a", "uncalibrated"), "max_level"] == 1.0
    # under-confidence (below the floor) is a distance too
    assert s.loc[("a", "recalx"), "avg"] == pytest.approx(np.mean(GROW) / 2)
    assert s.loc[("a", "recalx"), "max_sd"] == pytest.approx(0.01 / np.sqrt(2))  # two seeds
    assert s.loc[("a", "uncalibrated"), "raw_max"] == pytest.approx(1.3) and "ece_max" in s.columns
    with pytest.raises(ValueError, match="lacks the columns"):
        cell_summary(t.drop(columns="ce_kl_floor_sd"))
    with pytest.raises(TypeError, match="DataFrame"):
        cell_summary(t.to_dict())


def test_seeds_that_disagree_widen_the_spread():
    """Three seeds whose ReCalX MAX differs a lot: a small mean advantage is undecided, not a win."""
    rows = []
    for s, scale in enumerate((0.2, 1.0, 1.8)):
        t = _table({"uncalibrated": GROW, "temperature_scaling": GROW * 1.1, "recalx": GROW * scale * 0.9},
                   seeds=(s,))
        rows.append(t)
    t = pd.concat(rows, ignore_index=True)
    s = cell_summary(t).set_index(["dataset", "method"])
    assert s.loc[("a", "recalx"), "n_seeds"] == 3 and s.loc[("a", "recalx"), "max_sd"] > 0.2
    assert recalx_lowest_verdict(cell_summary(t)).verdict == "inconclusive"
    # growth: seeds whose curves disagree on the direction leave the cell undecided
    up = _table({"uncalibrated": GROW}, seeds=(0,))
    down = _table({"uncalibrated": GROW[::-1] * 0.5}, seeds=(1,))
    assert growth_verdict(pd.concat([up, down], ignore_index=True)).verdict == "inconclusive"


def test_growth_holds_fails_and_lacks_power():
    assert growth_verdict(_table({"uncalibrated": GROW})).verdict == "holds"
    shrink = growth_verdict(_table({"uncalibrated": GROW[::-1]}))
    assert shrink.verdict == "fails" and "2 shrink" in shrink.fail_reason
    flat = growth_verdict(_table({"uncalibrated": FLAT + np.array([0, 0, 0, 0.01, 0.01, 0.01])}, sd=0.05))
    assert flat.verdict == "inconclusive" and "within 2 floor spreads" in flat.inconclusive
    with pytest.raises(ValueError, match="no rows of method"):
        growth_verdict(_table({"recalx": GROW}))


def test_ts_max_majority():
    worse = ts_max_verdict(cell_summary(_table({"uncalibrated": GROW, "temperature_scaling": GROW * 1.3})))
    assert worse.verdict == "holds" and "worse in 2" in worse.observed
    fixed = ts_max_verdict(cell_summary(_table({"uncalibrated": GROW, "temperature_scaling": GROW * 0.3})))
    assert fixed.verdict == "fails" and "lowers the MAX in 2 of 2" in fixed.fail_reason
    nothing = ts_max_verdict(cell_summary(_table({"uncalibrated": GROW * 0.001, "temperature_scaling": GROW * 0.3})))
    assert nothing.verdict == "inconclusive"


def test_recalx_lowest_every_cell():
    others = {"uncalibrated": GROW, "temperature_scaling": GROW * 0.8}
    assert recalx_lowest_verdict(cell_summary(_table({**others, "recalx": GROW * 0.1}))).verdict == "holds"
    # an over-softening ReCalX (far below its floor) is not rewarded
    soft = recalx_lowest_verdict(cell_summary(_table({**others, "recalx": -GROW * 2})))
    assert soft.verdict == "fails"
    tie = recalx_lowest_verdict(cell_summary(_table({**others, "recalx": GROW * 0.8}, sd=0.2)))
    assert tie.verdict == "inconclusive" and "within 2 floor spreads" in tie.inconclusive


def test_max_reduction_majority():
    assert max_reduction_verdict(cell_summary(_table({"uncalibrated": GROW, "recalx": GROW * 0.1}))).verdict == "holds"
    small = max_reduction_verdict(cell_summary(_table({"uncalibrated": GROW, "recalx": GROW * 0.9})))
    assert small.verdict == "fails" and "median reduction 10 %" in small.observed
    noisy = max_reduction_verdict(cell_summary(_table({"uncalibrated": GROW * 0.05, "recalx": GROW * 0.04}, sd=0.05)))
    assert noisy.verdict == "inconclusive"


def test_retrain_needs_three_differing_pairs():
    assert retrain_verdict([0.3, 0.2, 0.4], [0.2, 0.1, 0.5], ["w1", "w2", "w3"]).verdict == "holds"
    assert retrain_verdict([0.1, 0.2, 0.1], [0.2, 0.3, 0.5], ["w1", "w2", "w3"]).verdict == "fails"
    one = retrain_verdict([0.3], [0.1], ["w2"])
    assert one.verdict == "inconclusive" and "only 1" in one.inconclusive
    with pytest.raises(ValueError, match="same length"):
        retrain_verdict([0.1], [0.1, 0.2], ["a"])


def test_paired_cells_over_images():
    g = torch.Generator().manual_seed(0)
    base = torch.rand(40, generator=g) + 1
    lower = {f"cell{i}": paired_test(base * 0.8, base, alternative="less") for i in range(3)}
    assert paired_cells_verdict(lower).verdict == "holds"
    noise = {f"cell{i}": paired_test(base + 0.01 * torch.randn(40, generator=g), base, alternative="less") for i in range(3)}
    assert paired_cells_verdict(noise).verdict == "fails"
    mixed = {**lower, "noisy": noise["cell0"]}
    assert paired_cells_verdict(mixed).verdict == "holds"
    strict = paired_cells_verdict(mixed, require="all")
    assert strict.verdict == "fails" and "not significant in 1 of 4 cells: noisy (median" in strict.fail_reason
    with pytest.raises(ValueError, match="`require`"):
        paired_cells_verdict(lower, require="most")
    few = {"cell": paired_test(base[:5] * 0.8, base[:5], alternative="less")}
    assert paired_cells_verdict(few).verdict == "inconclusive"
    with pytest.raises(ValueError, match="empty"):
        paired_cells_verdict({})


def test_flattening_matches_accuracy():
    rows = []
    for m, conf in (("uncalibrated", 0.9), ("recalx", 0.32)):
        for lv in LEVELS:
            rows.append({"dataset": "a", "features": "7x7", "baseline": "zero", "model": "cnn", "method": m, "level": lv,
                         "confidence": conf if lv >= 0.7 else 0.9, "accuracy": 0.3 if lv >= 0.7 else 0.88})
    t = pd.DataFrame(rows)
    assert flattening_verdict(t).verdict == "holds"
    off = flattening_verdict(t.assign(confidence=np.where(t.method == "recalx", 0.1, t.confidence)))
    assert off.verdict == "fails" and "confidence 0.10, accuracy 0.30" in off.observed
    assert "a/7x7/zero/cnn level 0.80 (confidence 0.10, accuracy 0.30)" in off.fail_reason
