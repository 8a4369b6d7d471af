"""Batch runner: ``python -m xcal_core.run --profile workshop [--notebooks 00 01] [--sweep f.yaml] [--out DIR]``.

Executes the numbered notebooks through papermill, one run directory each, skipping runs already
completed with identical parameters, and prints a progress line per notebook and a summary table.
Exit status 1 when any run failed (the others still ran). SIGTERM / SIGINT stop the workers and end
with a one-line summary (exit status 143 / 130); running the same command again resumes the batch.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import signal
import sys
import time
from pathlib import Path

from .params import PROFILES, repo_root
from .batch import EXECUTORS, BatchInterrupted, _raise_on_signal, plan_runs, run_batch, summary_table, yaml_load
from .report import copy_reference_runs, format_scoreboard, scoreboard, write_scoreboard_summary
from .runs import load_runs
from .runtime import env_summary, git_info


def _parse_param(items: list[list[str]] | None) -> dict:
    out = {}
    for name, value in items or []:
        out[name] = yaml_load(value)  # YAML 1.2 floats: "1e-3" is 0.001
    return out


def main(argv: list[str] | None = None) -> int:
    root = repo_root()
    ap = argparse.ArgumentParser(prog="python -m xcal_core.run", description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="workshop", choices=PROFILES, help="parameter preset (default: workshop)")
    ap.add_argument("--notebooks", nargs="*", default=None, help="ids, stems or number prefixes (default: all, in order)")
    ap.add_argument("--sweep", default=None, help="sweep YAML (papermill_runs/sweeps/<name>.yaml)")
    ap.add_argument("--out", default=str(root / "papermill_runs"), help="output root (default: papermill_runs/)")
    ap.add_argument("--notebook-dir", default=str(root / "notebooks"), help="where the numbered notebooks are")
    ap.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"),
                    help="extra parameter for every run (YAML-parsed value), e.g. -p DEVICE cuda")
    ap.add_argument("--kernel", default="python3", help="Jupyter kernel name (default: python3 = this interpreter)")
    ap.add_argument("--no-resume", action="store_true", help="rerun runs that already completed")
    ap.add_argument("--timeout", type=int, default=None, help="per-cell timeout in seconds")
    ap.add_argument("--executor", default="local", choices=EXECUTORS, help="local processes or a Dask cluster")
    ap.add_argument("--workers", type=int, default=1, help="runs at a time (local) / LocalCluster workers (dask)")
    ap.add_argument("--scheduler", default=None, help="address of an existing Dask scheduler (with --executor dask)")
    ap.add_argument("--lost-workers-timeout", type=float, default=300.0, metavar="SECONDS",
                    help="dask: give up the waiting runs after this long without any worker (default 300)")
    ap.add_argument("--reference", default=None, help="copy the completed runs here afterwards (replacing it), e.g. papermill_runs/reference")
    ap.add_argument("--summary", default=None, metavar="DIR",
                    help="write the scoreboard over all runs of this batch to DIR (e.g. papermill_runs/seeds_summary)")
    ap.add_argument("--dry-run", action="store_true", help="only list the planned runs")
    a = ap.parse_args(argv)
    try:
        specs = plan_runs(a.notebook_dir, a.out, profile=a.profile, notebooks=a.notebooks, sweep=a.sweep,
                          parameters=_parse_param(a.parameter))
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not specs:
        print(f"error: no notebooks found in {a.notebook_dir}", file=sys.stderr)
        return 2
    if a.dry_run:
        for s in specs:
            print(f"{s.notebook_id}  {s.params}  -> {s.run_dir}")
        return 0
    cache_models = Path(os.environ.get("XCAL_CACHE_DIR") or root / ".cache" / "xcal") / "models"
    cold_cache = not any(cache_models.glob("*.pt")) if cache_models.is_dir() else True
    t0, started = time.time(), _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    # the commit the notebooks ran at; the files make run itself rewrites (the reference run, README's
    # generated numbers) do not count as changes, so a second make run on a clean clone stays clean
    git_at_start = git_info(exclude=MAKE_RUN_OUTPUTS)
    previous = signal.signal(signal.SIGTERM, _raise_on_signal)  # SIGTERM ends like Ctrl-C: workers stopped, summary
    try:
        results = run_batch(specs, executor=a.executor, workers=a.workers, kernel_name=a.kernel, resume=not a.no_resume,
                            timeout=a.timeout, scheduler=a.scheduler, lost_workers_timeout=a.lost_workers_timeout)
    except BatchInterrupted as e:
        print(e.summary, file=sys.stderr)
        return 143 if e.signame == "SIGTERM" else 130
    except KeyboardInterrupt as e:  # before any run started
        print(f"interrupted by {getattr(e, 'signame', 'SIGINT')} before any run started", file=sys.stderr)
        return 143 if getattr(e, "signame", "") == "SIGTERM" else 130
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGTERM, previous)
    table = summary_table(results)
    print()
    print(table.drop(columns=["run_dir"]).to_string(index=False))
    run_dirs = [r.spec.run_dir for r in results if r.status in ("completed", "skipped")]
    if run_dirs:
        print("\nScoreboard (claims of the papers on our data):")
        print(format_scoreboard(scoreboard(load_runs(run_dirs, table="claims"))))
    minutes = (time.time() - t0) / 60
    if a.summary and run_dirs:
        write_scoreboard_summary(run_dirs, a.summary)
        print(f"\nscoreboard over {len(run_dirs)} run(s) written to {Path(a.summary).resolve()}")
    if a.reference:
        copied = publish_reference(results, Path(a.reference), minutes, started, cold_cache, git_at_start)
        print(f"\nreference run: {len(copied)} run(s) copied to {Path(a.reference).resolve()}")
    print(f"\nresults under {Path(a.out).resolve()}")
    return 1 if any(r.status == "failed" for r in results) else 0


MAKE_RUN_OUTPUTS = ("papermill_runs", "README.md")


def publish_reference(results, reference: Path, minutes: float, started: str, cold_cache: bool,
                      git: dict) -> list[Path]:
    """Replace ``reference`` by this batch's completed runs and write its ``make_run.json``, keeping the
    cold and warm records of earlier batches (read before the copy replaces the folder)."""
    previous = _read_records(reference)
    copied = copy_reference_runs([r.spec.run_dir for r in results], reference)
    if copied:
        _write_batch_record(reference, results, minutes, started, cold_cache, git, previous)
    return copied


def _write_batch_record(reference: Path, results, minutes: float, started: str, cold_cache: bool,
                        git: dict, previous: dict | None = None) -> None:
    """``make_run.json`` beside the reference runs: what produced them, for README's generated text.

    The top level describes this batch; ``records`` keeps the latest batch of each kind (``cold``: it
    started from an empty model cache, ``warm``: the models were cached), so that README can state both
    times. Only a batch that executed every run (none skipped as already completed, none failed) is a
    timing record: a resumed batch that reused earlier runs is listed at the top level only.
    ``install_minutes`` is how long the environment's install took (recorded by ``make venv`` in
    ``.venv/.xcal-install-seconds``), when known. ``previous``: the records to keep (default: those
    in ``reference/make_run.json``).
    """
    from .models.cache import shipped_dir

    env = env_summary()
    gpu = env.get("gpu") or env.get("cuda_device")
    rec = {
        "git_sha": git.get("sha"), "git_dirty": git.get("dirty"), "started": started,
        "minutes": round(minutes, 2), "cold_cache": cold_cache, "shipped_checkpoints": shipped_dir() is not None,
        "n_runs": len(results), "n_failed": sum(r.status == "failed" for r in results),
        "n_skipped": sum(r.status == "skipped" for r in results),
        "machine": f"{os.cpu_count()} CPU cores" + (f", {gpu}" if gpu else ", no GPU"),
    }
    install = Path(sys.prefix) / ".xcal-install-seconds"
    try:
        rec["install_minutes"] = round(float(install.read_text().split()[0]) / 60, 2)
    except (OSError, ValueError, IndexError):
        pass
    records = _read_records(reference) if previous is None else dict(previous)
    if rec["n_skipped"] == 0 and rec["n_failed"] == 0:
        records["cold" if cold_cache else "warm"] = dict(rec)
    (reference / "make_run.json").write_text(json.dumps({**rec, "records": records}, indent=1) + "\n")


def _read_records(reference: Path) -> dict:
    """The ``cold`` / ``warm`` batch records in ``reference/make_run.json`` ({} when there are none)."""
    try:
        records = json.loads((reference / "make_run.json").read_text()).get("records") or {}
    except (OSError, ValueError, AttributeError):
        return {}
    if not isinstance(records, dict):
        return {}
    return {k: v for k, v in records.items() if k in ("cold", "warm") and isinstance(v, dict)}


if __name__ == "__main__":
    sys.exit(main())
