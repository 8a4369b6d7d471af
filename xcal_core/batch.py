"""Batch execution of notebooks: plan runs (profiles or sweeps), execute them locally or on Dask.

* :func:`plan_runs` resolves and validates every run's parameters up front and gives each its own
  directory ``<out>/<profile or sweep>/<notebook>__<param-hash>/``.
* :func:`execute_run` executes one notebook through papermill. A failure is recorded in the run's
  manifest (status ``failed``, error, traceback tail) and returned, never raised; a run already
  completed with identical parameters is skipped (resume).
* :func:`run_batch` runs many: executor ``"local"`` (one process per run, ``workers`` at a time, one
  GPU per run through ``CUDA_VISIBLE_DEVICES`` when several GPUs exist) or ``"dask"`` (a Dask
  ``LocalCluster`` by default, or an existing scheduler address; GPU runs ask for a ``GPU`` worker
  resource). A progress line reports runs done / failed / remaining and the elapsed time.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import pandas as pd
import yaml

from .params import load_schema, params_hash, resolve_params
from .runs import _now, format_claim_counts, read_manifest, update_manifest

__all__ = [
    "RunSpec",
    "RunResult",
    "discover_notebooks",
    "load_sweep",
    "plan_runs",
    "execute_run",
    "run_batch",
    "summary_table",
    "EXECUTORS",
]

EXECUTORS = ("local", "dask")


@dataclass
class RunSpec:
    """One planned execution: a notebook, its parameters (profile included) and its run directory."""

    notebook: Path
    notebook_id: str
    params: dict
    run_dir: Path
    group: str
    gpu: bool = False

    def to_json(self) -> str:
        d = asdict(self)
        d["notebook"], d["run_dir"] = str(self.notebook), str(self.run_dir)
        return json.dumps(d)

    @classmethod
    def from_json(cls, s: str) -> "RunSpec":
        d = json.loads(s)
        d["notebook"], d["run_dir"] = Path(d["notebook"]), Path(d["run_dir"])
        return cls(**d)


@dataclass
class RunResult:
    spec: RunSpec
    status: str  # completed | failed | skipped
    minutes: float
    claims_held: int = 0
    n_claims: int = 0
    error: str | None = None
    claims_failed: int = 0
    claims_inconclusive: int = 0

    @property
    def claims(self) -> str:
        """``'3 hold, 1 fail, 2 inconclusive of 6'``."""
        return format_claim_counts({k: getattr(self, k) for k in ("claims_held", "n_claims", "claims_failed",
                                                                   "claims_inconclusive")})


def _claim_fields(m: dict) -> dict[str, int]:
    """The claim counts of a manifest as RunResult keyword arguments."""
    return {k: int(m.get(k, 0) or 0) for k in ("claims_held", "n_claims", "claims_failed", "claims_inconclusive")}


# --------------------------------------------------------------------------------------------
# planning
# --------------------------------------------------------------------------------------------
def discover_notebooks(notebook_dir: str | Path, select: Sequence[str] | None = None) -> list[Path]:
    """Numbered notebooks ``NN_*.ipynb`` in number order, optionally filtered by stem or number prefix."""
    nbs = sorted(p for p in Path(notebook_dir).glob("[0-9][0-9]_*.ipynb"))
    if not select:
        return nbs
    chosen = []
    for s in select:
        s = str(s)
        s = Path(s).stem if s.endswith(".ipynb") else s
        hits = [p for p in nbs if p.stem == s] or [p for p in nbs if p.stem.startswith(s.zfill(2) + "_")]
        if not hits:
            raise ValueError(f"`notebooks`: no notebook matches {s!r}; available: {[p.stem for p in nbs]}")
        chosen.extend(h for h in hits if h not in chosen)
    return sorted(chosen)


def load_sweep(path: str | Path) -> dict:
    """Read a sweep YAML::

        name: seeds                  # output group (default: the file stem)
        profile: workshop            # default profile of its runs
        runs:
          - notebook: "01"           # stem or number prefix; "all" = every notebook
            parameters: {N_EPOCHS: 10}     # fixed values (optional)
            grid: {SEED: [0, 1, 2]}        # cartesian product (optional)
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"`sweep` file {p} does not exist")
    spec = yaml.safe_load(p.read_text()) or {}
    if not isinstance(spec, dict) or not isinstance(spec.get("runs"), list) or not spec["runs"]:
        raise ValueError(f"`sweep` {p}: expected a mapping with a non-empty 'runs' list")
    unknown = set(spec) - {"name", "profile", "runs", "description"}
    if unknown:
        raise ValueError(f"`sweep` {p}: unknown keys {sorted(unknown)}; allowed: name, profile, description, runs")
    spec.setdefault("name", p.stem)
    for i, r in enumerate(spec["runs"]):
        if not isinstance(r, dict) or "notebook" not in r:
            raise ValueError(f"`sweep` {p}: runs[{i}] needs a 'notebook' key")
        extra = set(r) - {"notebook", "parameters", "grid"}
        if extra:
            raise ValueError(f"`sweep` {p}: runs[{i}] has unknown keys {sorted(extra)}; allowed: notebook, parameters, grid")
    return spec


def _expand(entry: Mapping[str, Any]) -> list[dict]:
    fixed = dict(entry.get("parameters") or {})
    grid = dict(entry.get("grid") or {})
    if not grid:
        return [fixed]
    for k, v in grid.items():
        if not isinstance(v, list) or not v:
            raise ValueError(f"sweep grid entry {k!r} must be a non-empty list")
    keys = list(grid)
    return [{**fixed, **dict(zip(keys, combo))} for combo in itertools.product(*(grid[k] for k in keys))]


def plan_runs(notebook_dir: str | Path, out_dir: str | Path, profile: str = "workshop", notebooks: Sequence[str] | None = None,
              sweep: str | Path | None = None, parameters: Mapping[str, Any] | None = None) -> list[RunSpec]:
    """Resolve every run's parameters (validating them before anything runs) and its output directory.

    Args:
        notebook_dir: folder of the numbered notebooks.
        out_dir: output root (``papermill_runs/``); runs go to ``<out>/<profile or sweep name>/``.
        profile: profile of every run (a sweep file may set its own).
        notebooks: stems or number prefixes (default all); ignored with ``sweep``.
        sweep: a sweep YAML (see :func:`load_sweep`).
        parameters: extra parameters for every run (e.g. ``{"DEVICE": "cuda"}``).

    Returns:
        The runs in notebook-number order (sweep order for sweeps); duplicates are dropped.
    """
    out_dir = Path(out_dir)
    entries: list[tuple[Path, dict, str]] = []
    if sweep is not None:
        spec = load_sweep(sweep)
        profile = spec.get("profile", profile)
        for e in spec["runs"]:
            sel = None if str(e["notebook"]) == "all" else [str(e["notebook"])]
            for nb in discover_notebooks(notebook_dir, sel):
                for ps in _expand(e):
                    entries.append((nb, {**(parameters or {}), **ps}, spec["name"]))
    else:
        for nb in discover_notebooks(notebook_dir, notebooks):
            entries.append((nb, dict(parameters or {}), profile))
    specs, seen = [], set()
    for nb, ps, group in entries:
        schema = load_schema(nb.stem)
        ps = {**ps, "PROFILE": ps.get("PROFILE", profile)}
        resolved, _ = resolve_params(schema, ps)
        run_dir = out_dir / group / f"{nb.stem}__{params_hash(resolved)}"
        if run_dir in seen:
            continue
        seen.add(run_dir)
        gpu = str(resolved["DEVICE"]).startswith("cuda") or (resolved["DEVICE"] == "auto" and resolved["PROFILE"] == "paper")
        specs.append(RunSpec(nb, nb.stem, ps, run_dir, group, gpu))
    return specs


# --------------------------------------------------------------------------------------------
# one run
# --------------------------------------------------------------------------------------------
def execute_run(spec: RunSpec, kernel_name: str = "python3", resume: bool = True, timeout: int | None = None) -> RunResult:
    """Execute one notebook with papermill into ``spec.run_dir``; failures are recorded, never raised."""
    import papermill as pm

    m = read_manifest(spec.run_dir)
    if resume and m and m.get("status") == "completed":
        return RunResult(spec, "skipped", float(m.get("minutes") or 0.0), **_claim_fields(m))
    spec.run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    params = {**spec.params, "RUN_DIR": str(Path(spec.run_dir).resolve())}
    error, tb = None, ""
    try:
        pm.execute_notebook(
            str(spec.notebook), str(Path(spec.run_dir) / "executed.ipynb"), parameters=params, kernel_name=kernel_name,
            cwd=str(Path(spec.notebook).parent), progress_bar=False, log_output=False, execution_timeout=timeout,
        )
    except KeyboardInterrupt:
        update_manifest(Path(spec.run_dir), status="interrupted", finished=_now())
        raise
    except Exception as e:  # noqa: BLE001 - one failing notebook must not stop the batch
        ename = getattr(e, "ename", None)
        error = f"{ename}: {getattr(e, 'evalue', '')}" if ename else f"{type(e).__name__}: {e}"
        tb = "".join(traceback.format_exception_only(type(e), e))[-4000:]
    minutes = (time.time() - t0) / 60
    m = read_manifest(spec.run_dir) or {}
    if error is None and m.get("status") != "completed":
        error = "the notebook ended without calling run.finish()"
    if error is not None:
        update_manifest(Path(spec.run_dir), notebook=spec.notebook_id, profile=spec.params.get("PROFILE"), status="failed",
                        error=error, traceback=tb, finished=_now(), minutes=round(minutes, 3))
        return RunResult(spec, "failed", minutes, error=error, **_claim_fields(m))
    update_manifest(Path(spec.run_dir), minutes=round(minutes, 3), executed_notebook="executed.ipynb")
    return RunResult(spec, "completed", minutes, **_claim_fields(m))


def _result_from_manifest(spec: RunSpec, minutes: float, fallback_error: str | None) -> RunResult:
    m = read_manifest(spec.run_dir) or {}
    status = m.get("status")
    if status == "completed":
        return RunResult(spec, "completed", minutes, **_claim_fields(m))
    error = m.get("error") or fallback_error or f"run ended with status {status!r}"
    if status != "failed":
        update_manifest(Path(spec.run_dir), notebook=spec.notebook_id, status="failed", error=error, finished=_now())
    return RunResult(spec, "failed", minutes, error=error, **_claim_fields(m))


def _worker_main(argv: Sequence[str]) -> int:
    """Child-process entry of the local executor: ``python -m xcal_core.batch SPEC_JSON KERNEL TIMEOUT``."""
    spec = RunSpec.from_json(argv[0])
    timeout = int(argv[2]) if argv[2] != "none" else None
    res = execute_run(spec, kernel_name=argv[1], resume=False, timeout=timeout)
    return 0 if res.status == "completed" else 1


# --------------------------------------------------------------------------------------------
# executors
# --------------------------------------------------------------------------------------------
class _Progress:
    def __init__(self, total: int, printer: Callable[[str], None]):
        self.total, self.printer, self.t0 = total, printer, time.time()
        self.done = self.failed = self.skipped = 0

    def started(self, spec: RunSpec, verb: str = "start") -> None:
        self.printer(f"{verb} {spec.notebook_id} ({spec.group}) -> {spec.run_dir}")

    def finished(self, r: RunResult) -> None:
        if r.status == "failed":
            self.failed += 1
        elif r.status == "skipped":
            self.skipped += 1
        else:
            self.done += 1
        remaining = self.total - self.done - self.failed - self.skipped
        el = (time.time() - self.t0) / 60
        err = f"  [{r.error}]" if r.error else ""
        self.printer(f"[done {self.done + self.skipped} | failed {self.failed} | remaining {remaining} | {el:.1f} min] "
                     f"{r.spec.notebook_id}: {r.status} ({r.minutes:.2f} min, claims {r.claims}){err}")


def _gpu_ids() -> list[str]:
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip() != ""]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001
        return []


def _run_local(specs, kernel_name, timeout, workers, progress: _Progress, resume: bool) -> list[RunResult]:
    gpus = _gpu_ids()
    pending = list(enumerate(specs))
    results: dict[int, RunResult] = {}
    running: dict[int, tuple[subprocess.Popen, float, str | None, int]] = {}
    free_slots = list(range(max(1, workers)))
    while pending or running:
        while pending and free_slots:
            i, spec = pending.pop(0)
            m = read_manifest(spec.run_dir)
            if resume and m and m.get("status") == "completed":
                r = RunResult(spec, "skipped", float(m.get("minutes") or 0.0), **_claim_fields(m))
                results[i] = r
                progress.finished(r)
                continue
            slot = free_slots.pop(0)
            env = dict(os.environ)
            gpu = None
            if spec.gpu and len(gpus) > 1:
                gpu = gpus[slot % len(gpus)]
                env["CUDA_VISIBLE_DEVICES"] = gpu
            progress.started(spec)
            cmd = [sys.executable, "-m", "xcal_core.batch", spec.to_json(), kernel_name, str(timeout) if timeout else "none"]
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            running[i] = (proc, time.time(), gpu, slot)
        time.sleep(0.2)
        for i, (proc, t0, gpu, slot) in list(running.items()):
            if proc.poll() is None:
                continue
            err = proc.stderr.read() if proc.stderr else ""
            del running[i]
            free_slots.append(slot)
            fallback = f"worker process exited with code {proc.returncode}: {err.strip().splitlines()[-1] if err.strip() else ''}"
            r = _result_from_manifest(specs[i], (time.time() - t0) / 60, fallback)
            results[i] = r
            progress.finished(r)
    return [results[i] for i in range(len(specs))]


def _dask_task(spec_json: str, kernel_name: str, timeout: int | None, resume: bool) -> dict:
    spec = RunSpec.from_json(spec_json)
    if spec.gpu:
        try:
            from distributed import get_worker

            name = get_worker().name
            gpus = _gpu_ids()
            if len(gpus) > 1 and isinstance(name, int):
                os.environ["CUDA_VISIBLE_DEVICES"] = gpus[name % len(gpus)]
        except (ImportError, ValueError):
            pass
    r = execute_run(spec, kernel_name=kernel_name, resume=resume, timeout=timeout)
    return {"status": r.status, "minutes": r.minutes, "error": r.error,
            **{k: getattr(r, k) for k in ("claims_held", "n_claims", "claims_failed", "claims_inconclusive")}}


def _run_dask(specs, kernel_name, timeout, workers, progress: _Progress, resume: bool, scheduler: str | None) -> list[RunResult]:
    from distributed import Client, LocalCluster, as_completed

    n_gpus = len(_gpu_ids())
    cluster = None
    if scheduler:
        client = Client(scheduler)
    else:
        kw = {"resources": {"GPU": 1}} if n_gpus else {}
        cluster = LocalCluster(n_workers=max(1, workers), threads_per_worker=1, processes=True, dashboard_address=None, **kw)
        client = Client(cluster)
    try:
        futures = {}
        for i, spec in enumerate(specs):
            res = {"GPU": 1} if (spec.gpu and (n_gpus or scheduler)) else None
            progress.started(spec, verb="queued")  # dask decides when it starts
            f = client.submit(_dask_task, spec.to_json(), kernel_name, timeout, resume, pure=False,
                              key=f"xcal-{spec.notebook_id}-{spec.run_dir.name}-{i}", resources=res)
            futures[f] = i
        results: dict[int, RunResult] = {}
        for f in as_completed(list(futures)):
            i = futures[f]
            try:
                d = f.result()
                r = RunResult(specs[i], **d)
            except Exception as e:  # noqa: BLE001 - a lost worker is a failed run, not a crashed batch
                r = _result_from_manifest(specs[i], 0.0, f"dask task failed: {type(e).__name__}: {e}")
            results[i] = r
            progress.finished(r)
        return [results[i] for i in range(len(specs))]
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def run_batch(specs: Sequence[RunSpec], executor: str = "local", workers: int = 1, kernel_name: str = "python3",
              resume: bool = True, timeout: int | None = None, scheduler: str | None = None,
              progress: Callable[[str], None] = print) -> list[RunResult]:
    """Execute runs and return one :class:`RunResult` per spec (in the order given).

    Args:
        specs: from :func:`plan_runs`.
        executor: ``"local"`` (child processes) or ``"dask"`` (Dask distributed).
        workers: runs at a time (local) or LocalCluster workers (dask).
        kernel_name: Jupyter kernel (``python3`` = the interpreter running this).
        resume: skip runs whose manifest says ``completed`` (identical parameters = same directory).
        timeout: per-cell timeout in seconds.
        scheduler: address of an existing Dask scheduler (dask executor only).
        progress: receives one line per started and finished run.
    """
    if executor not in EXECUTORS:
        raise ValueError(f"`executor` must be one of {list(EXECUTORS)}, got {executor!r}")
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ValueError(f"`workers` must be a positive int, got {workers!r}")
    if scheduler and executor != "dask":
        raise ValueError("`scheduler` is only used with executor='dask'")
    prog = _Progress(len(specs), progress)
    # Report notebooks (those reading other runs through RUN_PATHS) run after every other run has ended,
    # so that a parallel executor never builds a scoreboard from a half-finished batch.
    stages = [[i for i, s in enumerate(specs) if not _reads_runs(s)], [i for i, s in enumerate(specs) if _reads_runs(s)]]
    results: dict[int, RunResult] = {}
    for stage in stages:
        if not stage:
            continue
        part = [specs[i] for i in stage]
        if executor == "dask":
            out = _run_dask(part, kernel_name, timeout, workers, prog, resume, scheduler)
        else:
            out = _run_local(part, kernel_name, timeout, workers, prog, resume)
        results.update(zip(stage, out))
    return [results[i] for i in range(len(specs))]


def _reads_runs(spec: RunSpec) -> bool:
    """True for a notebook that reads other runs' outputs (its schema has ``RUN_PATHS``)."""
    try:
        return "RUN_PATHS" in load_schema(spec.notebook_id).names
    except (ValueError, KeyError, ImportError):
        return False


def summary_table(results: Sequence[RunResult]) -> pd.DataFrame:
    """One row per run: notebook, group, status, minutes, claims held/total, run directory."""
    return pd.DataFrame(
        [{"notebook": r.spec.notebook_id, "group": r.spec.group, "status": r.status, "minutes": round(r.minutes, 2),
          "claims": r.claims, "run_dir": str(r.spec.run_dir)} for r in results],
        columns=["notebook", "group", "status", "minutes", "claims", "run_dir"],
    )


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
