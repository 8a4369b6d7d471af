import json
import math

import matplotlib.pyplot as plt
import nbformat
import pandas as pd
import pytest

from xcal_core.params import start_run
from xcal_core.runs import (
    CLAIMS_COLUMNS,
    METRICS_COLUMNS,
    load_runs,
    load_sweep,
    plan_runs,
    run_batch,
    save_figure,
    summary_table,
    validate_claims,
    validate_metrics,
)

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
    c = dict(claim_id="C1", paper="p", statement="s", expected="> 0", observed=0.25, holds=True)
    df = validate_claims([c])
    assert list(df.columns) == list(CLAIMS_COLUMNS) and df["observed"][0] == "0.25"
    with pytest.raises(ValueError, match="must be unique"):
        validate_claims([c, c])
    with pytest.raises(ValueError, match="column 'holds' must be True/False"):
        validate_claims([{**c, "holds": "maybe"}])


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
    run.claim("C2", "x", "y", "z", False)
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


def _nb(path, body):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell('PROFILE: str = "workshop"  # profile\nN_EPOCHS: int = 6  # epochs')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(body)]
    nbformat.write(nb, path)


@pytest.mark.notebook
def test_batch_runner_isolates_failures_and_resumes(tmp_path):
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    ok = 'from xcal_core.params import start_run\nrun = start_run("00_quickstart", globals())\nrun.claim("C1", "s", "e", "o", True)\nrun.finish()'
    _nb(nbdir / "00_quickstart.ipynb", ok)
    _nb(nbdir / "00_quickstart_broken.ipynb", 'raise RuntimeError("boom in cell")')
    # the broken one has no schema: planning must fail clearly, before anything runs
    with pytest.raises(ValueError, match="unknown `notebook_id` '00_quickstart_broken'"):
        plan_runs(nbdir, tmp_path / "out", profile="smoke")
    specs = plan_runs(nbdir, tmp_path / "out", profile="smoke", notebooks=["00_quickstart"])
    assert len(specs) == 1 and specs[0].run_dir.parent.name == "smoke"
    # make a second spec that fails at run time (same schema, broken notebook)
    bad = plan_runs(nbdir, tmp_path / "out", profile="smoke", notebooks=["00_quickstart"], parameters={"SEED": 1})[0]
    bad.notebook = nbdir / "00_quickstart_broken.ipynb"
    lines = []
    res = run_batch([bad, specs[0]], progress=lines.append)
    assert [r.status for r in res] == ["failed", "completed"]
    assert "RuntimeError" in res[0].error and "boom in cell" in res[0].error
    m = json.loads((bad.run_dir / "manifest.json").read_text())
    assert m["status"] == "failed" and "boom" in m["error"]
    assert any("failed" in ln for ln in lines) and len(lines) == 4
    table = summary_table(res)
    assert table["claims"].tolist() == ["0/0", "1/1"]
    again = run_batch(specs, progress=lines.append)
    assert again[0].status == "skipped"


def test_sweep_expansion(tmp_path):
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    _nb(nbdir / "00_quickstart.ipynb", "pass")
    sw = tmp_path / "seeds.yaml"
    sw.write_text("name: seeds\nprofile: smoke\nruns:\n  - notebook: '00'\n    parameters: {N_EPOCHS: 2}\n    grid: {SEED: [0, 1, 2]}\n")
    specs = plan_runs(nbdir, tmp_path / "out", sweep=sw)
    assert len(specs) == 3 and {s.group for s in specs} == {"seeds"}
    assert len({s.run_dir for s in specs}) == 3
    sw.write_text("runs:\n  - notebook: '00'\n    grid: {N_EPOCH: [1]}\n")
    with pytest.raises(ValueError, match="did you mean 'N_EPOCHS'"):
        plan_runs(nbdir, tmp_path / "out", sweep=sw)
    sw.write_text("runs:\n  - notebok: '00'\n")
    with pytest.raises(ValueError, match=r"runs\[0\] needs a 'notebook' key"):
        load_sweep(sw)
