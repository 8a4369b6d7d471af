"""The batch runner: planning, sweeps, both executors, failure isolation, resume after a kill."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pandas as pd
import yaml
import pytest

from xcal_core.batch import RunSpec, kernel_threads, load_sweep, plan_runs, run_batch, summary_table
from xcal_core.runs import attempt_dirs

ROOT_NB = Path(__file__).resolve().parents[1] / "notebooks"

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
    # each kernel gets the cores shared out between the workers (no oversubscribed OpenMP threads)
    threads_row = ('import os\nrun.log_metrics([dict(experiment="e", dataset="d", model="m", method="x", '
                   'metric="omp_threads", value=float(os.environ.get("OMP_NUM_THREADS", -1)), '
                   'higher_is_better=True)])\nrun.finish()')
    _nb(nbdir / "00_quickstart.ipynb", OK.replace("run.finish()", threads_row))
    specs = plan_runs(nbdir, tmp_path / "out", profile="smoke", parameters={"SEED": 1}) + \
        plan_runs(nbdir, tmp_path / "out", profile="smoke", parameters={"SEED": 2})
    bad = _broken(nbdir, specs)
    res = run_batch(specs + [bad], executor="dask", workers=2, progress=lambda s: None)
    assert [r.status for r in res] == ["completed", "completed", "failed"]
    for s in specs:
        metrics = (s.run_dir / "metrics.csv").read_text()
        assert f",{float(s.params['SEED'])}," in metrics
        omp = pd.read_csv(s.run_dir / "metrics.csv").set_index("metric").loc["omp_threads", "value"]
        assert omp == float(os.environ.get("OMP_NUM_THREADS", kernel_threads(2)))
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
    # wait until the second run has started (its staging attempt has a manifest: the run folder itself
    # only appears when the attempt completes), then kill the whole sweep while it sleeps
    def second_started():
        return any((a / "manifest.json").exists() for a in attempt_dirs(specs[1].run_dir))

    while time.time() - t0 < 150 and not second_started():
        time.sleep(0.5)
    assert second_started() and not (specs[1].run_dir / "manifest.json").exists()
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


# ---------------------------------------------------------------------------------------------
# results are never lost; interrupted and concurrent batches (issue 21)
# ---------------------------------------------------------------------------------------------
import os  # noqa: E402
import signal  # noqa: E402
import threading  # noqa: E402

from xcal_core.batch import BatchInterrupted, yaml_load  # noqa: E402,F401
from xcal_core.params import load_schema  # noqa: E402
from xcal_core.report import copy_reference_runs  # noqa: E402
from xcal_core.runs import load_runs, read_manifest, recover_run_dir, update_manifest, write_metrics  # noqa: E402

BARE = 'PROFILE: str = "workshop"  # profile\nSEED: int = 0  # seed'
SLOW = ('from xcal_core.params import start_run\nrun = start_run("00_quickstart", globals())\nimport time\n'
        'for _ in range(1200):\n    time.sleep(0.1)\nrun.finish()')


def _wait_for(pred, limit=120.0, step=0.2):
    t0 = time.time()
    while time.time() - t0 < limit:
        if pred():
            return True
        time.sleep(step)
    return False


def _attempt_running(out):
    """A notebook of the batch under ``out`` has started (its manifest, staged or not, says running)."""
    return any((read_manifest(m.parent) or {}).get("status") == "running" for m in Path(out).rglob("manifest.json"))


from pathlib import Path  # noqa: E402


@pytest.mark.notebook
def test_a_failed_rerun_keeps_the_completed_result(nbdir, tmp_path):
    schema = load_schema("00_quickstart")
    # an explicit value equal to the schema default wins over the smoke preset (item 9), in the kernel too
    name = next(k for k, v in schema.profiles["smoke"].items() if v != schema.by_name[k].default and schema.by_name[k].type is int)
    default = schema.by_name[name].default
    _nb(nbdir / "00_quickstart.ipynb", OK, params=BARE)
    spec = plan_runs(nbdir, tmp_path / "out", profile="smoke", parameters={"SEED": 5, name: default})[0]
    assert run_batch([spec], progress=lambda s: None)[0].status == "completed"
    before = {f: (spec.run_dir / f).read_bytes() for f in ("executed.ipynb", "metrics.csv", "claims.csv", "params.yaml")}
    assert b".attempt-" not in before["executed.ipynb"] and str(spec.run_dir).encode() in before["params.yaml"]
    _nb(nbdir / "00_quickstart.ipynb", 'raise RuntimeError("boom in the rerun")', params=BARE)
    res = run_batch([spec], resume=False, progress=lambda s: None)[0]
    assert res.status == "failed" and "boom in the rerun" in res.error and "previous completed result is kept" in res.note
    m = read_manifest(spec.run_dir)
    assert m["status"] == "completed" and m["error"] is None
    assert {f: (spec.run_dir / f).read_bytes() for f in before} == before
    (failed,) = m["failed_attempts"]
    assert failed["status"] == "failed" and "boom" in failed["error"]
    assert read_manifest(spec.run_dir / failed["folder"])["status"] == "failed"
    assert len(load_runs(spec.run_dir)) == 1 and len(load_runs(tmp_path / "out")) == 1  # hidden attempts not read
    assert len(load_runs(tmp_path / "out", table="manifest", status=None)) == 1
    assert not [p for p in spec.run_dir.parent.iterdir() if ".attempt-" in p.name]  # no staging folder left
    (ref,) = copy_reference_runs([spec.run_dir], tmp_path / "ref")
    assert not (ref / ".attempts").exists() and (ref / "metrics.csv").exists()
    assert yaml.safe_load((spec.run_dir / "params.yaml").read_text())[name] == default  # not the smoke preset


def test_device_kind_is_part_of_the_run_identity(nbdir, tmp_path):
    auto, cpu, cuda, cuda7 = (plan_runs(nbdir, tmp_path / "out", profile="smoke", parameters=p)[0].run_dir
                              for p in ({}, {"DEVICE": "cpu"}, {"DEVICE": "cuda"}, {"DEVICE": "cuda:7"}))
    assert len({auto, cpu, cuda}) == 3 and cuda == cuda7
    # an 'auto' run completed on another device than 'auto' means here is reused, and says so
    import torch

    other = "cpu" if torch.cuda.is_available() else "cuda"
    spec = plan_runs(nbdir, tmp_path / "out", profile="smoke")[0]
    spec.run_dir.mkdir(parents=True)
    update_manifest(spec.run_dir, status="completed", device=other, minutes=0.1)
    (r,) = run_batch([spec], progress=lambda s: None)
    assert r.status == "skipped" and f"reused the result computed on {other}" in r.note


def test_stale_attempts_and_running_manifests_are_recognised(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run_dir = tmp_path / "g" / "00_quickstart__abc"
    run_dir.mkdir(parents=True)
    update_manifest(run_dir, status="running", pid=dead.pid, host=__import__("socket").gethostname())
    stage = tmp_path / "g" / ".00_quickstart__abc.attempt-20250101T000000000000-1"
    stage.mkdir()
    update_manifest(stage, status="running", pid=dead.pid, host=__import__("socket").gethostname())
    notes = recover_run_dir(run_dir)
    assert any("died while running" in n for n in notes)
    m = read_manifest(run_dir)
    assert m["status"] == "interrupted" and f"pid {dead.pid}" in m["error"]  # the stale attempt took its place
    assert not stage.exists()


def _concurrent_writer(d, n):
    return [sys.executable, "-c",
            "import sys; from pathlib import Path; from xcal_core.runs import update_manifest, write_metrics\n"
            "d = Path(sys.argv[1]); row = [dict(experiment='e', dataset='d', model='m', method='x', metric='v', "
            "value=1.0, seed=0, higher_is_better=True)]\nerrors = 0\n"
            "for i in range(int(sys.argv[2])):\n    try:\n        update_manifest(d, i=i); write_metrics(row, d)\n"
            "    except OSError:\n        errors += 1\nprint(errors)", str(d), str(n)]


def test_concurrent_writers_of_one_folder_never_collide(tmp_path):
    procs = [subprocess.Popen(_concurrent_writer(tmp_path, 150), stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert outs == ["0", "0"]
    assert read_manifest(tmp_path)["i"] == 149 and not list(tmp_path.glob("*.tmp"))


COUNTED = ('from xcal_core.params import start_run\nrun = start_run("00_quickstart", globals())\nimport os, time\n'
           'open(os.environ["XCAL_TEST_COUNT"], "a").write(f"{os.getpid()}\\n")\ntime.sleep(2)\nrun.finish()')


@pytest.mark.notebook
def test_two_batches_on_one_folder_run_the_notebook_once(nbdir, tmp_path):
    _nb(nbdir / "00_quickstart.ipynb", COUNTED, params=BARE)
    cmd = [sys.executable, "-m", "xcal_core.run", "--profile", "smoke", "--notebooks", "00", "--out", str(tmp_path / "out"),
           "--notebook-dir", str(nbdir)]
    env = dict(os.environ, XCAL_TEST_COUNT=str(tmp_path / "count.txt"))
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert len((tmp_path / "count.txt").read_text().split()) == 1  # executed once, not twice at the same time
    assert sorted("completed" in o.split("Scoreboard")[0].splitlines()[-2] or "skipped" in o for o in outs) == [True, True]
    assert sum(": skipped" in o for o in outs) == 1 and sum(": completed" in o for o in outs) == 1


@pytest.mark.notebook
@pytest.mark.slow
def test_runner_killed_or_terminated_takes_its_workers_along(nbdir, tmp_path):
    psutil = pytest.importorskip("psutil")
    _nb(nbdir / "00_quickstart.ipynb", SLOW, params=BARE)
    runners = {}
    for sig in ("SIGTERM", "SIGKILL"):
        cmd = [sys.executable, "-m", "xcal_core.run", "--profile", "smoke", "--notebooks", "00",
               "--out", str(tmp_path / sig), "--notebook-dir", str(nbdir)]
        runners[sig] = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert _wait_for(lambda: all(_attempt_running(tmp_path / s) for s in runners), limit=240)
    kids = {s: psutil.Process(p.pid).children(recursive=True) for s, p in runners.items()}
    assert all(len(k) >= 2 for k in kids.values())  # the worker and its kernel
    for s, p in runners.items():
        os.kill(p.pid, getattr(signal, s))
    out, err = runners["SIGTERM"].communicate(timeout=120)
    assert runners["SIGTERM"].returncode == 143 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("interrupted by SIGTERM: 0 completed, 0 skipped, 0 failed, 1 interrupted")
    runners["SIGKILL"].wait()

    def gone(procs):
        return all(not p.is_running() or p.status() == psutil.STATUS_ZOMBIE for p in procs)

    assert _wait_for(lambda: gone(kids["SIGTERM"] + kids["SIGKILL"]), limit=60), "a worker or kernel outlived its runner"
    spec = plan_runs(nbdir, tmp_path / "SIGKILL", profile="smoke")[0]
    assert _wait_for(lambda: (read_manifest(spec.run_dir) or {}).get("status") == "interrupted", limit=30)
    _nb(nbdir / "00_quickstart.ipynb", OK, params=BARE)  # the interrupted batch resumes
    assert run_batch([spec], progress=lambda s: None)[0].status == "completed"


@pytest.mark.notebook
@pytest.mark.slow
def test_dask_gives_up_when_every_worker_is_lost(nbdir, tmp_path):
    from distributed import LocalCluster

    _nb(nbdir / "00_quickstart.ipynb", SLOW, params=BARE)
    specs = plan_runs(nbdir, tmp_path / "out", profile="smoke")
    lines = []
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        def lose_every_worker():
            if _wait_for(lambda: _attempt_running(tmp_path / "out"), limit=240):
                cluster.scale(0)

        threading.Thread(target=lose_every_worker, daemon=True).start()
        out = []
        batch = threading.Thread(target=lambda: out.append(run_batch(
            specs, executor="dask", scheduler=cluster.scheduler_address, lost_workers_timeout=3, progress=lines.append)),
            daemon=True)
        batch.start()
        batch.join(timeout=300)
        assert not batch.is_alive(), "the runner hangs after losing every Dask worker"
    (res,) = out
    assert [r.status for r in res] == ["not_run"] and "no worker for 3 s" in res[0].error
    assert any(ln.startswith("0 workers, 1 runs waiting") for ln in lines)
    assert read_manifest(specs[0].run_dir)["status"] == "not_run"


def test_cli_parameters_are_never_dropped(nbdir, tmp_path, capsys):
    from xcal_core.run import main

    base = ["--profile", "smoke", "--notebooks", "00", "--notebook-dir", str(nbdir), "--out", str(tmp_path), "--dry-run"]
    assert main(base + ["-p", "n_explain", "3"]) == 2
    assert "'n_explain' (did you mean 'N_EXPLAIN'?)" in capsys.readouterr().err
    float_nb, float_name = next((nb, p.name) for nb in ("00_quickstart", "01_calibration_under_perturbations",
                                                        "02_calibrate_to_interpret") for p in load_schema(nb).params
                                if p.type is float and (p.low or 0) <= 1e-3 <= (p.high or 1e9))
    _nb(nbdir / f"{float_nb}.ipynb", OK)
    argv = ["--profile", "smoke", "--notebooks", float_nb[:2], "--notebook-dir", str(nbdir), "--out", str(tmp_path), "--dry-run"]
    assert main(argv + ["-p", float_name, "1e-3"]) == 0
    assert f"'{float_name}': 0.001" in capsys.readouterr().out
    plain = main(base) == 0 and capsys.readouterr().out
    schema = load_schema("00_quickstart")
    name = next(k for k, v in schema.profiles["smoke"].items() if v != schema.by_name[k].default)
    assert main(base + ["-p", name, str(schema.by_name[name].default)]) == 0
    explicit = capsys.readouterr().out
    assert explicit.split("->")[1] != plain.split("->")[1]  # its own folder: the default value, not the preset


def test_cli_reference_record_and_summary(nbdir, tmp_path, capsys):
    """--reference writes make_run.json (commit, minutes, cold cache, machine) beside the copied runs;
    --summary writes the scoreboard over the batch."""
    from xcal_core.run import main

    _nb(nbdir / "00_quickstart.ipynb", OK)
    ref, summary = tmp_path / "reference", tmp_path / "summary"
    rc = main(["--profile", "smoke", "--notebooks", "00", "--notebook-dir", str(nbdir), "--out", str(tmp_path / "out"),
               "--reference", str(ref), "--summary", str(summary)])
    assert rc == 0, capsys.readouterr()
    rec = json.loads((ref / "make_run.json").read_text())
    assert rec["n_runs"] == 1 and rec["n_failed"] == 0 and rec["minutes"] > 0 and "CPU cores" in rec["machine"]
    assert {"git_sha", "cold_cache", "shipped_checkpoints", "started"} <= set(rec)
    board = pd.read_csv(summary / "scoreboard.csv")
    assert sorted(board["claim_id"]) == ["C1", "C2"] and (summary / "scoreboard.png").exists()


def test_reference_record_keeps_the_latest_cold_and_warm_batch(tmp_path, monkeypatch):
    """make_run.json describes the latest batch and keeps the latest cold and warm one, so that README
    can give both times; the environment's install time comes from make venv's record."""
    import sys

    from xcal_core.run import _write_batch_record

    prefix = tmp_path / "venv"
    prefix.mkdir()
    (prefix / ".xcal-install-seconds").write_text("90\n")
    monkeypatch.setattr(sys, "prefix", str(prefix))
    ref = tmp_path / "reference"
    ref.mkdir()
    for minutes, cold, started in ((15.0, True, "t1"), (12.0, False, "t2"), (11.0, False, "t3")):
        _write_batch_record(ref, [], minutes, started, cold, {"sha": "abc", "dirty": False})
    rec = json.loads((ref / "make_run.json").read_text())
    assert (rec["minutes"], rec["cold_cache"], rec["install_minutes"]) == (11.0, False, 1.5)
    assert {k: (v["minutes"], v["started"]) for k, v in rec["records"].items()} == {"cold": (15.0, "t1"),
                                                                                      "warm": (11.0, "t3")}
    (prefix / ".xcal-install-seconds").unlink()  # unknown install time: no key, no error
    _write_batch_record(ref, [], 14.0, "t4", True, {"sha": "abd", "dirty": False})
    rec = json.loads((ref / "make_run.json").read_text())
    assert "install_minutes" not in rec and rec["records"]["warm"]["minutes"] == 11.0


def test_report_in_a_batch_written_elsewhere_reads_that_batch(tmp_path):
    # make retrain runs the workshop profile into papermill_runs/retrain: its 06 must read
    # papermill_runs/retrain/workshop, not the default papermill_runs/workshop (which may not exist)
    real = ROOT_NB
    (spec,) = plan_runs(real, tmp_path / "elsewhere", profile="workshop", notebooks=["06"])
    assert spec.params["RUN_PATHS"] == [str((tmp_path / "elsewhere").resolve() / "workshop")]
    (default,) = plan_runs(real, ROOT_NB.parent / "papermill_runs", profile="workshop", notebooks=["06"])
    assert "RUN_PATHS" not in default.params  # the default output root: the schema's default applies
    (given,) = plan_runs(real, tmp_path / "elsewhere", profile="workshop", notebooks=["06"],
                         parameters={"RUN_PATHS": ["papermill_runs/reference"]})
    assert given.params["RUN_PATHS"] == ["papermill_runs/reference"]
    (smoke,) = plan_runs(real, tmp_path / "elsewhere", profile="smoke", notebooks=["06"])
    assert "RUN_PATHS" not in smoke.params  # the smoke preset reads the committed reference run


def test_reference_record_names_the_tree_the_notebooks_ran_on(nbdir, tmp_path, monkeypatch):
    # copying the new reference run replaces committed files, so the tree is dirty by the time the
    # record is written; the record must say whether the notebooks ran on a clean commit
    import xcal_core.run as run_mod
    import xcal_core.runtime as runtime_mod

    ref = tmp_path / "reference"

    def fake_git_info(root=None, exclude=()):
        return {"sha": "f" * 40, "dirty": ref.exists() and any(ref.iterdir())}

    monkeypatch.setattr(runtime_mod, "git_info", fake_git_info)
    monkeypatch.setattr(run_mod, "git_info", fake_git_info, raising=False)
    _nb(nbdir / "00_quickstart.ipynb", OK)
    assert run_mod.main(["--profile", "smoke", "--notebooks", "00", "--notebook-dir", str(nbdir),
                         "--out", str(tmp_path / "out"), "--reference", str(ref)]) == 0
    rec = json.loads((ref / "make_run.json").read_text())
    assert rec["git_sha"] == "f" * 40 and rec["git_dirty"] is False


def test_kernel_threads_shares_the_cores_out():
    assert kernel_threads(2, cpus=2) == 1 and kernel_threads(2, cpus=16) == 8
    assert kernel_threads(4, cpus=2) == 1 and kernel_threads(1, cpus=None) >= 1


def test_reference_keeps_the_cold_record_across_batches_and_a_resumed_batch_is_no_time(nbdir, tmp_path,
                                                                                      monkeypatch):
    # the reference folder is replaced by each batch's runs: the cold record of an earlier batch must be
    # read before that copy, or a warm make run forgets the cold time. A batch that only reused completed
    # runs (make run twice) took seconds: it is no warm time.
    import xcal_core.run as run_mod

    monkeypatch.setenv("XCAL_CACHE_DIR", str(tmp_path / "cache"))
    _nb(nbdir / "00_quickstart.ipynb", OK)
    ref = tmp_path / "reference"
    args = ["--profile", "smoke", "--notebooks", "00", "--notebook-dir", str(nbdir), "--out", str(tmp_path / "out"),
            "--reference", str(ref)]
    assert run_mod.main(args) == 0  # empty cache: cold
    cold = json.loads((ref / "make_run.json").read_text())
    assert cold["cold_cache"] is True and set(cold["records"]) == {"cold"} and cold["n_skipped"] == 0
    (tmp_path / "cache" / "models").mkdir(parents=True)
    (tmp_path / "cache" / "models" / "m.pt").write_bytes(b"x")
    assert run_mod.main(args) == 0  # warm, but every run is reused
    rec = json.loads((ref / "make_run.json").read_text())
    assert rec["n_skipped"] == 1 and set(rec["records"]) == {"cold"}
    assert rec["records"]["cold"]["started"] == cold["started"]
    assert run_mod.main(args + ["--no-resume"]) == 0  # warm, executed
    rec = json.loads((ref / "make_run.json").read_text())
    assert set(rec["records"]) == {"cold", "warm"} and rec["records"]["warm"]["n_skipped"] == 0
    assert rec["records"]["cold"]["started"] == cold["started"] and rec["records"]["warm"]["cold_cache"] is False


def test_git_info_can_leave_out_the_files_make_run_rewrites(tmp_path):
    from xcal_core.runtime import git_info

    def git(*a):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *a], cwd=tmp_path, check=True,
                       capture_output=True)

    (tmp_path / "papermill_runs" / "reference").mkdir(parents=True)
    for f in ("README.md", "papermill_runs/reference/m.json", "code.py"):
        (tmp_path / f).write_text("a\n")
    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", "x")
    (tmp_path / "README.md").write_text("b\n")
    (tmp_path / "papermill_runs" / "reference" / "m.json").write_text("b\n")
    outputs = ("papermill_runs", "README.md")
    assert git_info(tmp_path)["dirty"] is True and git_info(tmp_path, exclude=outputs)["dirty"] is False
    assert git_info(tmp_path / "papermill_runs", exclude=outputs)["dirty"] is False  # paths are from the top
    (tmp_path / "code.py").write_text("b\n")
    assert git_info(tmp_path, exclude=outputs)["dirty"] is True
