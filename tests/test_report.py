import json

import pandas as pd
import pytest

from xcal_core.report import (copy_reference_runs, format_scoreboard, metric_summary, runtime_table, scoreboard,
                               scoreboard_metrics, verdict_counts)


def _claims():
    base = dict(paper="P", statement="TS lowers ECE", expected="after < before", notebook="00_quickstart", profile="workshop")
    return pd.DataFrame([
        {**base, "claim_id": "C1", "observed": "0.10", "verdict": "holds", "reason": "", "run_seed": 0},
        {**base, "claim_id": "C1", "observed": "0.30", "verdict": "fails", "reason": "seed 1 differs", "run_seed": 1},
        {**base, "claim_id": "C2", "observed": "same", "verdict": "holds", "reason": "", "run_seed": 0},
        {**base, "claim_id": "C2", "observed": "same", "verdict": "holds", "reason": "", "run_seed": 1},
        {**base, "claim_id": "C1", "observed": "0.2", "verdict": "holds", "reason": "", "run_seed": 0, "profile": "smoke"},
        {**base, "claim_id": "C3", "observed": "n=6", "verdict": "inconclusive", "reason": "n = 6", "run_seed": 0},
        {**base, "claim_id": "C3", "observed": "n=6", "verdict": "inconclusive", "reason": "n = 6", "run_seed": 1},
        {**base, "claim_id": "C4", "observed": "x", "verdict": "fails", "reason": "floor", "run_seed": 0},
    ])


def test_scoreboard_counts_seeds_and_verdicts():
    b = scoreboard(_claims()).set_index(["claim_id", "profile"])
    assert b.loc[("C1", "workshop"), "verdict"] == "mixed" and b.loc[("C1", "workshop"), "held_share"] == 0.5
    assert b.loc[("C1", "workshop"), "seeds"] == 2
    assert b.loc[("C1", "workshop"), "observed"].startswith("0.2 ± 0.14")
    assert b.loc[("C2", "workshop"), "verdict"] == "holds" and b.loc[("C2", "workshop"), "observed"] == "same"
    assert b.loc[("C1", "smoke"), "runs"] == 1 and b.loc[("C1", "smoke"), "observed"] == "0.2"
    assert b.loc[("C1", "workshop"), ["holds", "fails", "inconclusive"]].tolist() == [1, 1, 0]
    assert b.loc[("C1", "workshop"), "reason"] == "seed 1 differs"
    assert b.loc[("C3", "workshop"), "verdict"] == "inconclusive" and b.loc[("C3", "workshop"), "reason"] == "n = 6"
    assert b.loc[("C4", "workshop"), "verdict"] == "fails"
    text = format_scoreboard(scoreboard(_claims()))
    assert "mixed" in text and "1/1/0" in text and "0/0/2" in text
    assert "5 claims: 2 hold, 1 fail, 1 inconclusive, 1 mixed" in text
    counts = verdict_counts(scoreboard(_claims())[lambda d: d.profile == "workshop"]).iloc[0]
    assert counts[["holds", "fails", "inconclusive", "mixed", "total"]].tolist() == [1, 1, 1, 1, 4]
    shares = scoreboard_metrics(scoreboard(_claims())).set_index(["dataset", "metric"])["value"]
    assert shares[("workshop", "claims_held_share")] == pytest.approx(3 / 7)
    assert shares[("workshop", "claims_failed_share")] == pytest.approx(2 / 7)
    assert shares[("workshop", "claims_inconclusive_share")] == pytest.approx(2 / 7)
    with pytest.raises(ValueError, match="lacks columns"):
        scoreboard(pd.DataFrame({"claim_id": ["C1"]}))
    assert scoreboard(_claims().iloc[:0]).empty


def test_metric_summary_over_seeds():
    m = pd.DataFrame({"notebook": "n", "experiment": "e", "dataset": "d", "model": "m", "method": "ts", "metric": "ece",
                      "level": [0.5, 0.5, float("nan")], "seed": [0, 1, 0], "value": [0.1, 0.3, 0.2], "higher_is_better": False})
    s = metric_summary(m)
    row = s[s["level"] == 0.5].iloc[0]
    assert row["mean"] == pytest.approx(0.2) and row["n"] == 2 and row["ci95"] == pytest.approx(1.96 * 0.1414214 / 2 ** 0.5, rel=1e-4)
    assert s["level"].isna().sum() == 1 and not s["higher_is_better"].any()


def test_runtime_table_and_reference_copy(tmp_path):
    man = pd.DataFrame([{"notebook": "00", "profile": "smoke", "status": "completed", "minutes": 0.5, "device": "cpu", "claims_held": 2,
                         "claims_failed": 0, "claims_inconclusive": 1, "n_claims": 3},
                        {"notebook": "00", "profile": "smoke", "status": "failed", "minutes": 0.1, "device": "cpu", "claims_held": 0, "n_claims": 0}])
    t = runtime_table(man).iloc[0]
    assert t["completed"] == 1 and t["failed"] == 1 and t["claims"] == "2 hold, 0 fail, 1 inconclusive of 3" and t["max_minutes"] == 0.5
    ok, bad = tmp_path / "runs" / "a", tmp_path / "runs" / "b"
    for d, st in ((ok, "completed"), (bad, "failed")):
        (d / "artifacts").mkdir(parents=True)
        (d / "artifacts" / "big.pt").write_bytes(b"x" * 100)
        (d / "manifest.json").write_text(json.dumps({"status": st}))
    ref = tmp_path / "reference"
    (ref / "old").mkdir(parents=True)
    copied = copy_reference_runs([ok, bad], ref)
    assert [p.name for p in copied] == ["a"] and not (ref / "old").exists()
    assert (ref / "a" / "manifest.json").exists() and not (ref / "a" / "artifacts").exists()
    assert copy_reference_runs([bad], ref) == [] and (ref / "a").exists()  # nothing completed: keep the old reference


def test_report_figures():
    from xcal_core.viz.report import plot_metric_summary, plot_scoreboard

    board = scoreboard(_claims())
    fig, ax = plot_scoreboard(board)
    # one bar per (notebook, profile) and verdict; every verdict that occurs is drawn with its count
    widths = {p.get_label(): [] for p in ax.containers}
    for cont in ax.containers:
        widths[cont.get_label()] = [r.get_width() for r in cont]
    assert sorted(widths) == ["fails (1)", "holds (2)", "inconclusive (1)", "mixed (1)"]
    assert sum(sum(w) for w in widths.values()) == len(board)
    texts = sorted(t.get_text() for t in ax.texts)
    assert texts == ["1", "1", "1", "1", "1"]  # smoke: 1 holds; workshop: 1 holds, 1 fails, 1 inconclusive, 1 mixed
    w, h = fig.get_size_inches()
    assert w <= 12 and h <= 6
    with pytest.raises(ValueError, match="`board` is empty"):
        plot_scoreboard(scoreboard(_claims().iloc[:0]))
    m = pd.DataFrame({"notebook": "01_x", "experiment": "e", "dataset": "d", "model": "m", "method": ["a", "a", "b", "b"],
                      "metric": "ece", "level": [0.0, 0.5, 0.0, 0.5], "seed": 0, "value": [0.1, 0.2, 0.1, 0.15], "higher_is_better": False})
    fig, ax = plot_metric_summary(metric_summary(m), "ece", notebook="01")
    assert len(ax.lines) == 2 and "↓" in ax.get_ylabel()
    fig, ax = plot_metric_summary(metric_summary(m.assign(level=float("nan"))), "ece")
    assert len(ax.patches) == 2
    with pytest.raises(ValueError, match="no rows for metric 'nll'"):
        plot_metric_summary(metric_summary(m), "nll")


def test_scoreboard_metrics_and_run_paths(tmp_path):
    from xcal_core.report import resolve_run_paths, scoreboard_metrics
    from xcal_core.runs import validate_metrics

    rows = scoreboard_metrics(scoreboard(_claims()))
    validate_metrics(rows, default_seed=0)
    assert rows.set_index(["dataset", "metric"]).loc[("workshop", "claims_held_share"), "value"] == pytest.approx(3 / 7)
    with pytest.raises(FileNotFoundError, match="none of"):
        resolve_run_paths([str(tmp_path / "nope")])
    assert resolve_run_paths([str(tmp_path)]) == [tmp_path]


def test_metric_summary_figure_never_mixes_datasets():
    from xcal_core.viz.report import plot_metric_summary

    m = pd.DataFrame({"notebook": "01_x", "experiment": "e", "dataset": ["a"] * 4 + ["b"] * 2, "model": "m", "method": "ts",
                      "metric": "ece", "level": [0.0, 0.5, 0.0, 0.5, 0.1, 0.2], "seed": [0, 0, 1, 1, 0, 0],
                      "value": [0.1, 0.2, 0.1, 0.2, 0.9, 0.9], "higher_is_better": False})
    fig, ax = plot_metric_summary(metric_summary(m), "ece")
    assert list(ax.lines[0].get_xdata()) == [0.0, 0.5] and "a" in ax.get_title()
    fig, ax = plot_metric_summary(metric_summary(m), "ece", dataset="b")
    assert list(ax.lines[0].get_xdata()) == [0.1, 0.2]


def test_write_scoreboard_summary_over_seeds(tmp_path):
    from xcal_core.report import write_scoreboard_summary

    for seed, v in ((0, "holds"), (1, "fails")):
        d = tmp_path / "seeds" / f"01_x__{seed}"
        d.mkdir(parents=True)
        (d / "manifest.json").write_text(json.dumps({"notebook": "01_x", "profile": "workshop", "status": "completed",
                                                     "seed": seed}))
        pd.DataFrame([{"claim_id": "C1", "paper": "p", "statement": "s", "expected": "e", "observed": str(seed),
                       "verdict": v, "reason": "" if v == "holds" else "r"},
                      {"claim_id": "C2", "paper": "p", "statement": "s", "expected": "e", "observed": "o",
                       "verdict": "inconclusive", "reason": "n = 6"}]).to_csv(d / "claims.csv", index=False)
    board = write_scoreboard_summary(tmp_path / "seeds", tmp_path / "summary")
    assert board.set_index("claim_id")["verdict"].to_dict() == {"C1": "mixed", "C2": "inconclusive"}
    counts = pd.read_csv(tmp_path / "summary" / "verdicts.csv").iloc[0]
    assert (counts["mixed"], counts["inconclusive"], counts["holds"]) == (1, 1, 0)
    assert (tmp_path / "summary" / "scoreboard.png").stat().st_size > 1000
    assert (tmp_path / "summary" / "verdict_grid.png").stat().st_size > 1000


def _seed_claims():
    """Claims of a seeds batch: 3 seeds of one notebook; C1 holds, C2 fails, C3 inconclusive in every
    seed, C4 flips between holds and fails, C5 between fails and inconclusive."""
    verdicts = {"C1": ["holds"] * 3, "C2": ["fails"] * 3, "C3": ["inconclusive"] * 3,
                "C4": ["holds", "fails", "holds"], "C5": ["fails", "inconclusive", "fails"]}
    return pd.DataFrame([{"claim_id": c, "paper": "P", "statement": "s", "expected": "e", "observed": str(k),
                          "verdict": v, "reason": "" if v == "holds" else f"why {k}", "notebook": "05_idexpo",
                          "profile": "workshop", "run_seed": k}
                         for c, vs in verdicts.items() for k, v in enumerate(vs)])


def test_scoreboard_across_seeds_keeps_fails_and_mixed_apart():
    from xcal_core.viz.report import plot_scoreboard

    b = scoreboard(_seed_claims()).set_index("claim_id")
    assert b["verdict"].to_dict() == {"C1": "holds", "C2": "fails", "C3": "inconclusive", "C4": "mixed", "C5": "mixed"}
    assert b.loc["C4", ["holds", "fails", "inconclusive", "runs", "seeds"]].tolist() == [2, 1, 0, 3, 3]
    assert b.loc["C5", ["holds", "fails", "inconclusive"]].tolist() == [0, 2, 1]
    assert b.loc["C5", "reason"] == "why 0 | why 1 | why 2"
    counts = verdict_counts(scoreboard(_seed_claims())).iloc[0]
    assert counts[["holds", "fails", "inconclusive", "mixed", "total"]].tolist() == [1, 1, 1, 2, 5]
    fig, ax = plot_scoreboard(scoreboard(_seed_claims()))
    widths = {c.get_label(): [r.get_width() for r in c] for c in ax.containers}
    assert widths == {"holds (1)": [1], "fails (1)": [1], "inconclusive (1)": [1], "mixed (2)": [2]}
    fails = next(c for c in ax.containers if c.get_label().startswith("fails"))[0]
    assert fails.get_hatch() == "//" and fails.get_width() > 0  # drawn, hatched, and labelled with its count
    left = fails.get_x()
    assert any(t.get_text() == "1" and abs(t.get_position()[0] - (left + 0.5)) < 1e-9 for t in ax.texts)
    assert "3 runs each" in ax.get_xlabel() and "mixed" in ax.get_xlabel()


def _tiles(ax):
    """{(row label, seed label): (face colour, letter)} of a verdict-grid panel."""
    import matplotlib.colors as mcolors

    rows = [t.get_text() for t in ax.get_yticklabels()]
    cols = [t.get_text() for t in ax.get_xticklabels()]
    letters = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}
    return {(rows[round(p.get_y() + 0.5)], cols[round(p.get_x() + 0.5)]):
            (mcolors.to_hex(p.get_facecolor()), letters[(round(p.get_y() + 0.5), round(p.get_x() + 0.5))])
            for p in ax.patches}


def test_verdict_grid_shows_each_seeds_verdict_per_claim():
    from xcal_core.viz.report import _VERDICT_COLORS, plot_verdict_grid

    claims = _seed_claims()
    claims["claim_id"] = "c2i_" + claims["claim_id"] + "_fashion_mnist"  # shared words are dropped from labels
    other = claims[claims["claim_id"] == "c2i_C1_fashion_mnist"].assign(notebook="01_other")
    fig, axes = plot_verdict_grid(pd.concat([claims, other]))
    w, h = fig.get_size_inches()
    assert w <= 12 + 1e-6 and h <= 6 + 1e-6
    panels = [a for a in axes.flat if a.get_visible() and a.patches]
    assert [a.get_title().replace("\n", " ") for a in panels] == ["01 other", "05 idexpo"]
    tiles = _tiles(panels[1])
    assert len(tiles) == 5 * 3 and {r for r, _ in tiles} == {"C1", "C2", "C3", "C4", "C5"}
    hexes = {v: c for v, c in _VERDICT_COLORS.items()}
    assert [tiles[("C4", s)] for s in "012"] == [(hexes["holds"], "H"), (hexes["fails"], "F"), (hexes["holds"], "H")]
    assert [tiles[("C5", s)][1] for s in "012"] == ["F", "I", "F"]
    assert _tiles(panels[0])[("c2i_C1_fashion_mnist", "1")] == (hexes["holds"], "H")  # one claim: label kept whole
    # a seed whose run lacks a claim is a blank tile, and two runs of one seed that disagree are M
    gap = claims[~((claims["claim_id"] == "c2i_C2_fashion_mnist") & (claims["run_seed"] == 2))]
    twice = pd.concat([gap, claims[(claims["claim_id"] == "c2i_C1_fashion_mnist") & (claims["run_seed"] == 0)]
                       .assign(verdict="fails")])
    fig, axes = plot_verdict_grid(twice)
    tiles = _tiles(axes.flat[0])
    assert tiles[("C2", "2")] == ("#ffffff", "-") and tiles[("C1", "0")] == (hexes["mixed"], "M")
    assert {t.get_text().split(":")[0] for t in fig.legends[0].get_texts()} == {"H", "F", "I", "M", "-"}
    with pytest.raises(ValueError, match="claims"):
        plot_verdict_grid(claims.drop(columns="run_seed"))
