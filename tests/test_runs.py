import json
import math

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from xcal_core.params import start_run
from xcal_core.runs import CLAIMS_COLUMNS, METRICS_COLUMNS, load_runs, save_figure, validate_claims, validate_metrics

ROW = dict(experiment="e", dataset="shapes", model="cnn", method="ts", metric="ece", level=0.5, seed=0, value=0.1, higher_is_better=False)


def test_metrics_schema_is_enforced():
    df = validate_metrics([ROW, {**ROW, "level": None}])
    assert list(df.columns) == list(METRICS_COLUMNS) and math.isnan(df["level"][1])
    with pytest.raises(ValueError, match=r"missing \['higher_is_better'\]"):
        validate_metrics([{k: v for k, v in ROW.items() if k != "higher_is_better"}])
    with pytest.raises(ValueError, match=r"unexpected \['extra'\]"):
        validate_metrics([{**ROW, "extra": 1}])
    with pytest.raises(ValueError, match="column 'value' must be finite"):
        validate_metrics([{**ROW, "value": float("inf")}])
    with pytest.raises(ValueError, match="column 'value' must be numbers"):
        validate_metrics([{**ROW, "value": "high"}])
    with pytest.raises(ValueError, match="column 'higher_is_better' must be True/False"):
        validate_metrics([{**ROW, "higher_is_better": "yes"}])
    with pytest.raises(ValueError, match="column 'metric' must hold non-empty strings"):
        validate_metrics([{**ROW, "metric": ""}])
    with pytest.raises(TypeError, match="`metrics` must be a DataFrame"):
        validate_metrics(3)


def test_claims_schema_is_enforced():
    c = dict(claim_id="C1", paper="p", statement="s", expected="> 0", observed=0.25, verdict="holds", reason="")
    df = validate_claims([c])
    assert list(df.columns) == list(CLAIMS_COLUMNS) and df["observed"][0] == "0.25"
    assert list(CLAIMS_COLUMNS[-2:]) == ["verdict", "reason"]
    with pytest.raises(ValueError, match="must be unique"):
        validate_claims([c, c])
    with pytest.raises(ValueError, match="`verdict` must be one of"):
        validate_claims([{**c, "verdict": "maybe"}])
    with pytest.raises(TypeError, match="not a bool"):
        validate_claims([{**c, "verdict": True}])
    for v in ("fails", "inconclusive"):  # a failure or an inconclusive test needs a reason
        with pytest.raises(ValueError, match="needs a `reason`"):
            validate_claims([{**c, "verdict": v, "reason": "  "}])
        assert validate_claims([{**c, "verdict": v, "reason": "n = 6 images"}])["reason"][0] == "n = 6 images"


def test_old_claims_files_with_a_holds_column_are_still_read(tmp_path):
    d = tmp_path / "old"
    d.mkdir()
    (d / "manifest.json").write_text(json.dumps({"notebook": "01", "profile": "workshop", "status": "completed", "seed": 0}))
    (d / "claims.csv").write_text("claim_id,paper,statement,expected,observed,holds\n"
                                  "C1,p,s,e,o,True\nC2,p,s,e,o,False\n")
    claims = load_runs(tmp_path, table="claims")
    assert claims["verdict"].tolist() == ["holds", "fails"]
    assert claims["reason"][0] == "" and "before verdicts" in claims["reason"][1]
    assert validate_claims(claims[list(CLAIMS_COLUMNS)])["verdict"].tolist() == ["holds", "fails"]


def test_run_claim_records_three_verdicts(tmp_path):
    run = start_run("00_quickstart", PROFILE="smoke", RUN_DIR=str(tmp_path / "a"), DEVICE="cpu")
    run.claim("C1", "s", "e", 0.1, "holds")
    run.claim("C2", "s", "e", 0.2, "fails", reason="a real disagreement with the paper")
    run.claim("C3", "s", "e", 0.3, "inconclusive", reason="n = 6 images, too few for the test")
    run.claim("C4", "s", "e", 0.4, True)  # True is accepted for holds
    with pytest.raises(TypeError, match="False is ambiguous"):
        run.claim("C5", "s", "e", 0.5, False)
    with pytest.raises(ValueError, match="claim 'C6'.*needs a `reason`"):
        run.claim("C6", "s", "e", 0.5, "inconclusive")
    with pytest.raises(ValueError, match="`verdict` must be one of"):
        run.claim("C7", "s", "e", 0.5, "mixed", reason="r")
    m = json.loads((run.dir / "manifest.json").read_text())
    assert (m["n_claims"], m["claims_held"], m["claims_failed"], m["claims_inconclusive"]) == (4, 2, 1, 1)
    on_disk = pd.read_csv(run.dir / "claims.csv", keep_default_na=False)
    assert on_disk["verdict"].tolist() == ["holds", "fails", "inconclusive", "holds"]
    assert on_disk["reason"][2] == "n = 6 images, too few for the test"


def test_save_figure_png_fixed_dpi(tmp_path):
    fig, ax = plt.subplots(figsize=(2, 1))
    p = save_figure((fig, ax), "fig1_test", tmp_path)
    assert p.exists() and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="`figure_id`"):
        save_figure(fig, "bad id/", tmp_path)
    with pytest.raises(TypeError, match="`fig` must be a matplotlib Figure"):
        save_figure("nope", "x", tmp_path)


def test_run_outputs_and_load_runs(tmp_path):
    run = start_run("00_quickstart", PROFILE="smoke", RUN_DIR=str(tmp_path / "a"), DEVICE="cpu")
    run.log_metrics([ROW])
    assert (run.dir / "metrics.csv").exists()  # written at once: a later failing cell loses nothing
    run.log_metrics(pd.DataFrame([{**ROW, "metric": "nll"}]).drop(columns=["seed"]))
    run.claim("C1", "TS lowers ECE", "< before", 0.02, True)
    run.claim("C2", "x", "y", "z", "fails", reason="r")
    run.claim("C2", "x", "y", "z2", True)  # re-recording a claim replaces it
    fig, _ = plt.subplots()
    run.save_figure(fig, "f")
    m = run.finish()
    assert m["status"] == "completed" and m["n_claims"] == 2 and m["claims_held"] == 2 and m["figures"] == ["f.png"]
    metrics = load_runs(tmp_path)
    assert len(metrics) == 2 and set(metrics["notebook"]) == {"00_quickstart"}
    claims = load_runs(tmp_path, table="claims")
    assert list(claims["observed"]) == ["0.02", "z2"]
    man = load_runs(tmp_path, table="manifest")
    assert man["status"].tolist() == ["completed"]
    with pytest.raises(ValueError, match="`table`"):
        load_runs(tmp_path, table="x")
    with pytest.raises(FileNotFoundError, match="`paths`"):
        load_runs(tmp_path / "missing")


def test_metrics_setting_column_and_unique_keys(tmp_path):
    """A varied hyper-parameter goes in `setting`, not in `level`; two rows with the same key are refused,
    within one call and across calls; old metrics.csv files without `setting` still load."""
    df = validate_metrics([ROW, {**ROW, "setting": "lambda1=0.1"}, {**ROW, "setting": None, "level": None}])
    assert df["setting"].tolist() == ["", "lambda1=0.1", ""]
    with pytest.raises(ValueError, match="2 rows share the key.*'metric': 'ece'.*`setting` column"):
        validate_metrics([ROW, {**ROW, "value": 0.2}])
    run = start_run("00_quickstart", PROFILE="smoke", RUN_DIR=str(tmp_path / "a"), DEVICE="cpu")
    run.log_metrics([ROW])
    with pytest.raises(ValueError, match="share the key"):
        run.log_metrics([{**ROW, "value": 0.3}])  # the same measurement again (e.g. a pretrained row per seed)
    assert len(run.metrics) == 1  # the refused rows were not kept
    run.log_metrics([{**ROW, "seed": 1}])
    old = tmp_path / "old"
    old.mkdir()
    (old / "manifest.json").write_text(json.dumps({"notebook": "01", "profile": "workshop", "status": "completed"}))
    pd.DataFrame([{k: v for k, v in ROW.items()}]).to_csv(old / "metrics.csv", index=False)
    m = load_runs(old)
    assert list(m.columns[:10]) == list(METRICS_COLUMNS) and m["setting"].tolist() == [""]


def test_an_interactive_rerun_never_destroys_a_completed_result(tmp_path):
    """Issue 21: a notebook rerun in Jupyter over a completed result works beside it until run.finish()."""
    from xcal_core.runs import read_manifest

    d = tmp_path / "smoke" / "00_quickstart__x"

    def row(v):
        return [dict(experiment="e", dataset="d", model="m", method="x", metric="v", value=v, higher_is_better=True)]

    first = start_run("00_quickstart", PROFILE="smoke", RUN_DIR=str(d), DEVICE="cpu")
    first.log_metrics(row(1.0))
    first.finish()
    before = (d / "metrics.csv").read_bytes()
    abandoned = start_run("00_quickstart", PROFILE="smoke", RUN_DIR=str(d), DEVICE="cpu")
    assert abandoned.dir != d.resolve() and abandoned.dir.parent == d.parent.resolve() and abandoned.dir.name.startswith(".")
    abandoned.log_metrics(row(2.0))  # ... and the notebook fails here, never reaching run.finish()
    assert (d / "metrics.csv").read_bytes() == before and read_manifest(d)["status"] == "completed"
    assert load_runs(tmp_path)["value"].tolist() == [1.0]  # the staging folder is not read as a run
    third = start_run("00_quickstart", PROFILE="smoke", RUN_DIR=str(d), DEVICE="cpu")
    third.log_metrics(row(3.0))
    third.finish()
    assert third.dir == d.resolve() and load_runs(d)["value"].tolist() == [3.0]
    assert read_manifest(d)["attempt"] == 2
