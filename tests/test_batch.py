"""The batch runner: planning, sweeps, both executors, failure isolation, resume after a kill."""

import json
import subprocess
import sys
import time

import nbformat
import pandas as pd
import pytest

from xcal_core.batch import RunSpec, load_sweep, plan_runs, run_batch, summary_table

OK = ('from xcal_core.params import start_run\nrun = start_run("00_quickstart", globals())\n'
      'run.log_metrics([dict(experiment="e", dataset="d", model="m", method="x", metric="seed_echo", value=float(run.seed), higher_is_better=True)])\n'
      'run.claim("C1", "s", "e", "o", "holds")\nrun.claim("C2", "s", "e", "o", "inconclusive", reason="n = 1")\nrun.finish()')


def _nb(path, body, params='PROFILE: str = "workshop"  # profile\nSEED: int = 0  # seed\nN_EPOCHS: int = 6  # epochs'):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    cell = nbformat.v4.new_code_cell(params)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell, nbformat.v4.new_code_cell(body)]
    nbformat.write(nb, path)


@pytest.fixture
def nbdir(tmp_path):
    d = tmp_path / "notebooks"
    d.mkdir()
    _nb(d / "00_quickstart.ipynb", OK)
    return d


def _broken(nbdir, specs):
    """A copy of a spec whose notebook raises (same schema, other seed -> other run dir)."""
    _nb(nbdir / "broken.ipynb", 'raise RuntimeError("boom in cell")')
    bad = plan_runs(nbdir, specs[0].run_dir.parents[1], profile="smoke", notebooks=["00"], parameters={"SEED": 99})[0]
    bad.notebook = nbdir / "broken.ipynb"
    return bad


def test_plan_runs_selection_and_errors(nbdir, tmp_path):
    specs = plan_runs(nbdir, tmp_path / "out", profile="smoke", notebooks=["0"])
    assert [s.notebook_id for s in specs] == ["00_quickstart"] and specs[0].run_dir.parent.name == "smoke"
    assert RunSpec.from_json(specs[0].to_json()) == specs[0]
    with pytest.raises(ValueError, match=r"`notebooks`: no notebook matches '07'"):
        plan_runs(nbdir, tmp_path / "out", notebooks=["07"])
    with pytest.raises(ValueError, match=r"did you mean 'N_EPOCHS'"):
        plan_runs(nbdir, tmp_path / "out", parameters={"N_EPOCH": 1})


def test_sweep_expansion(nbdir, tmp_path):
    sw = tmp_path / "seeds.yaml"
    sw.write_text("name: seeds\nprofile: smoke\nruns:\n  - notebook: '00'\n    parameters: {N_EPOCHS: 3}\n    grid: {SEED: [0, 1, 2]}\n"
                  "  - notebook: all\n    grid: {SEED: [0]}\n")
    specs = plan_runs(nbdir, tmp_path / "out", sweep=sw)
    # 3 seeds from the grid; the "all" entry at SEED 0 has other params (the smoke preset of N_EPOCHS) -> a 4th run
    assert len(specs) == 4 and {s.group for s in specs} == {"seeds"} and len({s.run_dir for s in specs}) == 4
    assert [s.params["SEED"] for s in specs] == [0, 1, 2, 0]
    sw.write_text("runs:\n  - notebook: '00'\n    grid: {N_EPOCH: [1]}\n")
    with pytest.raises(ValueError, match="did you mean 'N_EPOCHS'"):
        plan_runs(nbdir, tmp_path / "out", sweep=sw)
    sw.write_text("runs:\n  - notebok: '00'\n")
    with pytest.raises(ValueError, match=r"runs\[0\] needs a 'notebook' key"):
        load_sweep(sw)
    sw.write_text("runs:\n  - notebook: '00'\n    grid: {SEED: []}\n")
    with pytest.raises(ValueError, match="grid entry 'SEED' must be a non-empty list"):
        plan_runs(nbdir, tmp_path / "out", sweep=sw)


def test_run_batch_validates_arguments(nbdir, tmp_path):
    specs = plan_runs(nbdir, tmp_path / "out", profile="smoke")
    with pytest.raises(ValueError, match="`executor` must be one of"):
        run_batch(specs, executor="slurm")
    with pytest.raises(ValueError, match="`workers` must be a positive int"):
        run_batch(specs, workers=0)


@pytest.mark.notebook
def test_local_executor_isolates_failures_and_resumes(nbdir, tmp_path):
    specs = plan_runs(nbdir, tmp_path / "out", profile="smoke")
    bad = _broken(nbdir, specs)
    lines = []
    res = run_batch([bad, specs[0]], workers=2, progress=lines.append)
    assert [r.status for r in res] == ["failed", "completed"]
    assert "RuntimeError" in res[0].error and "boom in cell" in res[0].error
    m = json.loads((bad.run_dir / "manifest.json").read_text())
    assert m["status"] == "failed" and "boom" in m["error"]
    assert sum("failed 1" in ln for ln in lines) >= 1 and sum(ln.startswith("[done") for ln in lines) == 2
    assert summary_table(res)["claims"].tolist() == ["0 hold, 0 fail, 0 inconclusive of 0",
                                                     "1 hold, 0 fail, 1 inconclusive of 2"]
    again = run_batch(specs, progress=lines.append)
    assert again[0].status == "skipped"


@pytest.mark.notebook
@pytest.mark.slow
def test_dask_executor_with_a_real_local_cluster(nbdir, tmp_path):
    specs = plan_runs(nbdir, tmp_path / "out", profile="smoke", parameters={"SEED": 1}) + \
        plan_runs(nbdir, tmp_path / "out", profile="smoke", parameters={"SEED": 2})
    bad = _broken(nbdir, specs)
    res = run_batch(specs + [bad], executor="dask", workers=2, progress=lambda s: None)
    assert [r.status for r in res] == ["completed", "completed", "failed"]
    for s in specs:
        metrics = (s.run_dir / "metrics.csv").read_text()
        assert f",{float(s.params['SEED'])}," in metrics
    again = run_batch(specs, executor="dask", workers=2, progress=lambda s: None)
    assert [r.status for r in again] == ["skipped", "skipped"]


@pytest.mark.notebook
@pytest.mark.slow
def test_killed_sweep_resumes_without_redoing_finished_runs(nbdir, tmp_path):
    slow = OK.replace("run.finish()", "import time\nif run.seed == 2:\n    time.sleep(120)\nrun.finish()")
    _nb(nbdir / "00_quickstart.ipynb", slow)
    sw = tmp_path / "kill.yaml"
    sw.write_text("name: kill\nprofile: smoke\nruns:\n  - notebook: '00'\n    grid: {SEED: [1, 2]}\n")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "xcal_core.run", "--sweep", str(sw), "--out", str(out), "--notebook-dir", str(nbdir)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    specs = plan_runs(nbdir, out, sweep=sw)
    first = specs[0].run_dir / "manifest.json"
    t0 = time.time()
    while time.time() - t0 < 120:
        if first.exists() and json.loads(first.read_text()).get("status") == "completed":
            break
        time.sleep(0.5)
    # wait until the second run has started, then kill the whole sweep
    while time.time() - t0 < 150 and not (specs[1].run_dir / "manifest.json").exists():
        time.sleep(0.5)
    import os
    import signal

    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = json.loads(first.read_text())
    assert done_before["status"] == "completed"
    _nb(nbdir / "00_quickstart.ipynb", OK)  # the resumed sweep runs quickly
    res = run_batch(plan_runs(nbdir, out, sweep=sw), progress=lambda s: None)
    assert [r.status for r in res] == ["skipped", "completed"]
    assert json.loads(first.read_text())["started"] == done_before["started"]  # not redone


REPORT = ('import json\nfrom xcal_core.params import start_run\nrun = start_run("06_reproduction_report", globals())\n'
          'done = [p for p in run.dir.parent.glob("*/manifest.json") if json.loads(p.read_text())["status"] == "completed"]\n'
          'run.log_metrics([dict(experiment="e", dataset="d", model="m", method="x", metric="runs_done_before", '
          'value=float(len(done)), higher_is_better=True)])\nrun.finish()')


@pytest.mark.notebook
def test_report_notebooks_run_after_every_other_run(nbdir, tmp_path):
    _nb(nbdir / "06_reproduction_report.ipynb", REPORT, params='PROFILE: str = "smoke"  # profile\nSEED: int = 0  # seed')
    report = plan_runs(nbdir, tmp_path / "out", profile="smoke", notebooks=["06"])
    runs = plan_runs(nbdir, tmp_path / "out", profile="smoke", notebooks=["00"], parameters={"SEED": 1}) + \
        plan_runs(nbdir, tmp_path / "out", profile="smoke", notebooks=["00"], parameters={"SEED": 2})
    res = run_batch(report + runs, workers=2, progress=lambda s: None)  # the report is listed first
    assert [r.status for r in res] == ["completed"] * 3
    metrics = pd.read_csv(report[0].run_dir / "metrics.csv")
    assert metrics.set_index("metric").loc["runs_done_before", "value"] == 2.0
