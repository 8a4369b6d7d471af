"""Batch execution of notebooks: plan runs (profiles or sweeps), execute them locally or on Dask.

* :func:`plan_runs` resolves and validates every run's parameters up front and gives each its own
  directory ``<out>/<profile or sweep>/<notebook>__<param-hash>/``.
* :func:`execute_run` executes one notebook through papermill. It holds the run folder's lock
  (:func:`xcal_core.runs.run_lock`: a second batch waits, the same notebook never runs twice at once),
  runs in a staging folder of its own and moves it into place only when it completed or when there is
  no completed result to lose (:func:`xcal_core.runs.promote_attempt`), so a failed rerun keeps the last
  completed result and records the failed attempt beside it. A failure is recorded in a manifest
  (status ``failed``, error, traceback tail) and returned, never raised; a run already completed with
  identical parameters is skipped (resume), and one left ``running`` by a dead process is redone.
* :func:`run_batch` runs many: executor ``"local"`` (one process per run, ``workers`` at a time, one
  GPU per run through ``CUDA_VISIBLE_DEVICES`` when several GPUs exist) or ``"dask"`` (a Dask
  ``LocalCluster`` by default, or an existing scheduler address; GPU runs ask for a ``GPU`` worker
  resource). A progress line reports runs done / failed / remaining and the elapsed time.

Workers die with the runner: a local worker watches its parent and stops (killing its kernel) when the
runner is gone, even after SIGKILL; SIGTERM / SIGINT of the runner stop the workers and raise
:class:`BatchInterrupted` with the results so far. A Dask cluster that has lost every worker is
reported ("0 workers, N runs waiting") and given up after ``lost_workers_timeout`` seconds, the
runs recorded as ``not_run``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import pandas as pd
import yaml

from .params import device_kind, load_schema, params_hash, repo_root, resolve_params
from .runs import (RunLockTimeout, _now, _write_json, format_claim_counts, lock_busy, new_attempt_dir, pid_alive,
                   promote_attempt, read_manifest, recover_run_dir, run_lock, update_manifest)

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
    "BatchInterrupted",
    "yaml_load",
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
    status: str  # completed | failed | skipped | interrupted | not_run
    minutes: float
    claims_held: int = 0
    n_claims: int = 0
    error: str | None = None
    claims_failed: int = 0
    claims_inconclusive: int = 0
    note: str | None = None  # e.g. "kept the previous completed result", "reused the result computed on cpu"

    @property
    def claims(self) -> str:
        """``'3 hold, 1 fail, 2 inconclusive of 6'``."""
        return format_claim_counts({k: getattr(self, k) for k in ("claims_held", "n_claims", "claims_failed",
                                                                   "claims_inconclusive")})


def _claim_fields(m: dict) -> dict[str, int]:
    """The claim counts of a manifest as RunResult keyword arguments."""
    return {k: int(m.get(k, 0) or 0) for k in ("claims_held", "n_claims", "claims_failed", "claims_inconclusive")}


class BatchInterrupted(KeyboardInterrupt):
    """A batch stopped by SIGTERM / SIGINT. ``results`` holds one RunResult per spec: the finished ones,
    ``interrupted`` for runs that were stopped, ``not_run`` for runs that never started."""

    def __init__(self, results: list["RunResult"], signame: str = "SIGINT"):
        super().__init__(signame)
        self.results, self.signame = results, signame

    @property
    def summary(self) -> str:
        """One line: ``interrupted by SIGTERM: 1 completed, 0 failed, 1 interrupted, 2 not run; ...``."""
        c = {k: sum(r.status == k for r in self.results) for k in ("completed", "skipped", "failed", "interrupted", "not_run")}
        return (f"interrupted by {self.signame}: {c['completed']} completed, {c['skipped']} skipped, {c['failed']} failed, "
                f"{c['interrupted']} interrupted, {c['not_run']} not run; rerun the same command to resume "
                "(completed runs are kept and skipped)")


def _signame(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class _Signalled(KeyboardInterrupt):
    """Raised in the main thread by the SIGTERM handler of the runner and of its workers."""

    def __init__(self, signum: int):
        super().__init__(_signame(signum))
        self.signame = _signame(signum)


_PARENT_GONE: list[bool] = []


def _raise_on_signal(signum, frame):  # noqa: ARG001 - signal handler signature
    e = _Signalled(signum)
    if _PARENT_GONE:
        e.signame = f"{e.signame} (the batch runner that started this worker is gone)"
    raise e


_FLOAT_TAG = "tag:yaml.org,2002:float"


class _Yaml12Floats(yaml.SafeLoader):
    """PyYAML's safe loader, but reading floats as YAML 1.2 does: ``1e-3``, ``1E5``, ``.5`` are floats
    (YAML 1.1 leaves ``1e-3`` a string because it has no dot)."""


_Yaml12Floats.add_implicit_resolver(
    _FLOAT_TAG,
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def yaml_load(text: str) -> Any:
    """``yaml.safe_load`` with YAML 1.2 floats (``"1e-3"`` -> 0.001): the values of ``-p`` and of sweep files."""
    return yaml.load(text, Loader=_Yaml12Floats)  # noqa: S506 - a SafeLoader subclass


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
    spec = yaml_load(p.read_text()) or {}
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
        explicit = list(ps)  # given with -p / in the sweep: wins over the profile preset, must be a parameter
        ps = {**ps, "PROFILE": ps.get("PROFILE", profile)}
        resolved, _ = resolve_params(schema, ps, explicit=explicit + ["PROFILE"])
        if "RUN_PATHS" in schema.names and "RUN_PATHS" not in explicit:
            # a report reads the batch it belongs to: its default "papermill_runs/<group>" names the default
            # output root, so a batch written elsewhere (--out) points it at that batch's folder instead
            mine = out_dir.resolve() / group
            if [str(p) for p in resolved["RUN_PATHS"]] == [f"papermill_runs/{group}"] and \
                    mine != (repo_root() / "papermill_runs" / group).resolve():
                ps = {**ps, "RUN_PATHS": [str(mine)]}
                explicit = explicit + ["RUN_PATHS"]
                resolved, _ = resolve_params(schema, ps, explicit=explicit + ["PROFILE"])
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
def _join(*parts: str | None) -> str | None:
    text = "; ".join(p for p in parts if p)
    return text or None


def _device_note(spec: RunSpec, m: Mapping[str, Any]) -> str | None:
    """Say so when a completed run is handed back for a request it was not computed on.

    ``DEVICE`` counts by its kind in the run identity (:func:`xcal_core.params.params_hash`), so explicit
    ``cpu`` and ``cuda`` runs have folders of their own; a ``DEVICE='auto'`` run takes what the machine
    has, and reusing it on a machine where ``auto`` means another device is announced here.
    """
    ran_on = device_kind(m.get("device") or "")
    want = device_kind(spec.params.get("DEVICE", "auto"))
    if not ran_on or ran_on == "auto":
        return None
    if want == "auto":
        try:
            import torch

            want = "cuda" if torch.cuda.is_available() else "cpu"
        except Exception:  # noqa: BLE001 - no torch here: nothing to compare
            return None
        if ran_on != want:
            return (f"reused the result computed on {ran_on} (DEVICE='auto' means {want} here); "
                    f"-p DEVICE {want} runs it separately, --no-resume redoes it")
        return None
    return f"reused the result computed on {ran_on}, not {want}" if ran_on != want else None


def _skipped(spec: RunSpec, m: Mapping[str, Any]) -> RunResult:
    return RunResult(spec, "skipped", float(m.get("minutes") or 0.0), note=_device_note(spec, m), **_claim_fields(dict(m)))


def _stop_kernels(sig: int = signal.SIGTERM) -> None:
    """Stop the kernels this process started (each in its own session, so the signal goes to its group)."""
    me = os.getpid()
    proc = Path("/proc")
    if not proc.is_dir():  # the kernel's own parent poller ends it once this process is gone
        return
    for d in proc.glob("[0-9]*"):
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == me:
            pid = int(d.name)
            try:
                os.killpg(pid, sig) if os.getpgid(pid) == pid else os.kill(pid, sig)
            except OSError:
                pass


def execute_run(spec: RunSpec, kernel_name: str = "python3", resume: bool = True, timeout: int | None = None,
                lock_timeout: float | None = None, on_wait: Callable[[dict], None] | None = None) -> RunResult:
    """Execute one notebook with papermill; failures are recorded, never raised.

    The run folder's lock is held throughout (another batch waits for it; ``lock_timeout`` seconds at
    most, then the run is ``not_run``). Under the lock: a run completed meanwhile is skipped (with
    ``resume``); what a crashed attempt left is tidied (:func:`xcal_core.runs.recover_run_dir`); the
    notebook runs in a fresh staging folder, which replaces the run folder only if it completed or
    there was no completed result; otherwise the completed result is kept and the attempt archived in
    it (``.attempts/``). A KeyboardInterrupt (SIGINT, or SIGTERM in a batch worker) stops the kernel,
    records the attempt as ``interrupted`` and is raised again.
    """
    m = read_manifest(spec.run_dir)
    if resume and m and m.get("status") == "completed":
        return _skipped(spec, m)
    try:
        with run_lock(spec.run_dir, timeout=lock_timeout, on_wait=on_wait):
            return _execute_locked(spec, kernel_name, resume, timeout)
    except RunLockTimeout as e:
        return RunResult(spec, "not_run", 0.0, error=str(e))


def _execute_locked(spec: RunSpec, kernel_name: str, resume: bool, timeout: int | None) -> RunResult:
    import papermill as pm

    final = Path(spec.run_dir)
    notes = recover_run_dir(final)
    m = read_manifest(final) or {}
    if resume and m.get("status") == "completed":
        return _skipped(spec, m)
    if (m.get("status") == "running" and m.get("host") == socket.gethostname() and pid_alive(m.get("pid"))
            and int(m["pid"]) != os.getpid()):
        return RunResult(spec, "failed", 0.0, error=f"{final} is in use: process {m['pid']} on this machine has been "
                         f"running it since {m.get('started')} (outside a batch); not run")
    attempt = new_attempt_dir(final)
    _write_json(attempt / "manifest.json", {"notebook": spec.notebook_id, "profile": spec.params.get("PROFILE"),
                                            "status": "starting", "pid": os.getpid(), "host": socket.gethostname(),
                                            "started": _now(), "finished": None, "error": None})
    t0 = time.time()
    params = {**spec.params, "RUN_DIR": str(attempt.resolve())}
    error, tb = None, ""
    try:
        pm.execute_notebook(
            str(spec.notebook), str(attempt / "executed.ipynb"), parameters=params, kernel_name=kernel_name,
            cwd=str(Path(spec.notebook).parent), progress_bar=False, log_output=False, execution_timeout=timeout,
        )
    except KeyboardInterrupt as e:
        _stop_kernels()
        update_manifest(attempt, status="interrupted", finished=_now(), minutes=round((time.time() - t0) / 60, 3),
                        error=f"interrupted by {getattr(e, 'signame', 'SIGINT')}")
        promote_attempt(attempt, final)
        raise
    except Exception as e:  # noqa: BLE001 - one failing notebook must not stop the batch
        ename = getattr(e, "ename", None)
        error = f"{ename}: {getattr(e, 'evalue', '')}" if ename else f"{type(e).__name__}: {e}"
        tb = "".join(traceback.format_exception_only(type(e), e))[-4000:]
    minutes = (time.time() - t0) / 60
    m = read_manifest(attempt) or {}
    if error is None and m.get("status") != "completed":
        error = "the notebook ended without calling run.finish()"
    if error is not None:
        update_manifest(attempt, notebook=spec.notebook_id, profile=spec.params.get("PROFILE"), status="failed",
                        error=error, traceback=tb, finished=_now(), minutes=round(minutes, 3))
    else:
        update_manifest(attempt, minutes=round(minutes, 3), executed_notebook="executed.ipynb")
    kept = promote_attempt(attempt, final) == "kept"
    note = _join(*notes)
    if error is not None:
        if kept:
            note = _join(note, f"the previous completed result is kept; this attempt is archived in {final.name}/.attempts/")
        return RunResult(spec, "failed", minutes, error=error, note=note, **_claim_fields(m))
    return RunResult(spec, "completed", minutes, note=note, **_claim_fields(m))


def _record_not_run(spec: RunSpec, reason: str) -> RunResult:
    """A run that will not run (lost workers): recorded in its manifest unless a completed result is there."""
    try:
        with run_lock(spec.run_dir, timeout=15):  # a lost worker's process may take a moment to end
            recover_run_dir(spec.run_dir)  # an attempt it left behind is recorded as interrupted
            m = read_manifest(spec.run_dir) or {}
            if m.get("status") == "completed":
                return RunResult(spec, "not_run", 0.0, error=reason, note="the previous completed result is kept")
            Path(spec.run_dir).mkdir(parents=True, exist_ok=True)
            update_manifest(Path(spec.run_dir), notebook=spec.notebook_id, profile=spec.params.get("PROFILE"),
                            status="not_run", error=reason, finished=_now())
    except RunLockTimeout:  # still held by a live process: it records its own state
        pass
    return RunResult(spec, "not_run", 0.0, error=reason)


def _watch_parent(parent_pid: int, poll: float = 0.5) -> None:
    """Stop this worker when the runner that started it is gone (even after SIGKILL): SIGTERM to itself,
    which stops the kernel and records the attempt; a hard exit if that takes longer than 30 s."""
    def loop() -> None:
        while os.getppid() == parent_pid:
            time.sleep(poll)
        _PARENT_GONE.append(True)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)
        _stop_kernels(signal.SIGKILL)
        os._exit(1)

    threading.Thread(target=loop, name="xcal-parent-watch", daemon=True).start()


_RESULT_KEYS = ("status", "minutes", "error", "note", "claims_held", "n_claims", "claims_failed", "claims_inconclusive")


def _worker_main(argv: Sequence[str]) -> int:
    """Child-process entry of the local executor:
    ``python -m xcal_core.batch SPEC_JSON KERNEL TIMEOUT resume|rerun RESULT_JSON``."""
    spec = RunSpec.from_json(argv[0])
    timeout = int(argv[2]) if argv[2] != "none" else None
    resume = len(argv) > 3 and argv[3] == "resume"
    signal.signal(signal.SIGTERM, _raise_on_signal)
    _watch_parent(int(os.environ.get("XCAL_RUNNER_PID") or os.getppid()))
    try:
        res = execute_run(spec, kernel_name=argv[1], resume=resume, timeout=timeout)
    except KeyboardInterrupt:
        return 130
    if len(argv) > 4:
        Path(argv[4]).write_text(json.dumps({k: getattr(res, k) for k in _RESULT_KEYS}))
    return 0 if res.status in ("completed", "skipped") else 1


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
        if r.status == "skipped":
            self.skipped += 1
        elif r.status == "completed":
            self.done += 1
        else:  # failed, interrupted, not_run
            self.failed += 1
        remaining = self.total - self.done - self.failed - self.skipped
        el = (time.time() - self.t0) / 60
        err = f"  [{r.error}]" if r.error else ""
        note = f"  ({r.note})" if r.note else ""
        self.printer(f"[done {self.done + self.skipped} | failed {self.failed} | remaining {remaining} | {el:.1f} min] "
                     f"{r.spec.notebook_id}: {r.status} ({r.minutes:.2f} min, claims {r.claims}){err}{note}")


def _gpu_ids() -> list[str]:
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip() != ""]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001
        return []


def _worker_result(spec: RunSpec, proc: subprocess.Popen, t0: float, out: str, err: Any,
                   interrupted: str | None = None) -> RunResult:
    """The RunResult a worker wrote, or one made from its exit (killed, crashed, interrupted)."""
    minutes = (time.time() - t0) / 60
    try:
        d = json.loads(Path(out).read_text() or "null")
    except (OSError, ValueError):
        d = None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(out)
    err.seek(0)
    tail = err.read().strip().splitlines()
    err.close()
    if isinstance(d, dict):
        return RunResult(spec, **{k: d.get(k) for k in _RESULT_KEYS if k in d})
    if interrupted:
        return RunResult(spec, "interrupted", minutes, error=f"interrupted by {interrupted}",
                         note="rerun the same command to resume")
    m = read_manifest(spec.run_dir) or {}
    error = f"worker process exited with code {proc.returncode}: {tail[-1] if tail else ''}".strip()
    note = "the previous completed result is kept" if m.get("status") == "completed" else None
    return RunResult(spec, "failed", minutes, error=error, note=note)


def _stop_workers(running: Mapping[int, tuple], grace: float = 30.0) -> None:
    """SIGTERM every worker (each stops its kernel and records its attempt), SIGKILL what is left after ``grace`` s."""
    for proc, *_ in running.values():
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                proc.send_signal(signal.SIGTERM)
    t0 = time.time()
    while time.time() - t0 < grace and any(p.poll() is None for p, *_ in running.values()):
        time.sleep(0.1)
    for proc, *_ in running.values():
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                proc.kill()
            proc.wait()


def _say_if_busy(spec: RunSpec, printer: Callable[[str], None]) -> None:
    holder = lock_busy(spec.run_dir)
    if holder is not None:
        printer(f"waiting for {spec.run_dir}: another batch (pid {holder.get('pid')} on {holder.get('host')}, "
                f"since {holder.get('since')}) is running it; it is skipped once completed there")


def _run_local(specs, kernel_name, timeout, workers, progress: _Progress, resume: bool) -> list[RunResult]:
    gpus = _gpu_ids()
    pending = list(enumerate(specs))
    results: dict[int, RunResult] = {}
    running: dict[int, tuple] = {}
    free_slots = list(range(max(1, workers)))
    try:
        while pending or running:
            while pending and free_slots:
                i, spec = pending.pop(0)
                m = read_manifest(spec.run_dir)
                if resume and m and m.get("status") == "completed":
                    r = _skipped(spec, m)
                    results[i] = r
                    progress.finished(r)
                    continue
                slot = free_slots.pop(0)
                env = dict(os.environ, XCAL_RUNNER_PID=str(os.getpid()))
                gpu = None
                if spec.gpu and len(gpus) > 1:
                    gpu = gpus[slot % len(gpus)]
                    env["CUDA_VISIBLE_DEVICES"] = gpu
                progress.started(spec)
                _say_if_busy(spec, progress.printer)
                fd, out = tempfile.mkstemp(prefix="xcal-result-", suffix=".json")
                os.close(fd)
                err = tempfile.TemporaryFile(mode="w+")
                cmd = [sys.executable, "-m", "xcal_core.batch", spec.to_json(), kernel_name,
                       str(timeout) if timeout else "none", "resume" if resume else "rerun", out]
                proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err, text=True)
                running[i] = (proc, time.time(), slot, out, err)
            time.sleep(0.2)
            for i, (proc, t0, slot, out, err) in list(running.items()):
                if proc.poll() is None:
                    continue
                del running[i]
                free_slots.append(slot)
                r = _worker_result(specs[i], proc, t0, out, err)
                results[i] = r
                progress.finished(r)
    except KeyboardInterrupt as e:
        signame = getattr(e, "signame", "SIGINT")
        _stop_workers(running)
        for i, (proc, t0, slot, out, err) in running.items():
            results[i] = _worker_result(specs[i], proc, t0, out, err, interrupted=signame)
        for i, spec in pending:
            results[i] = RunResult(spec, "not_run", 0.0, error=f"not started: interrupted by {signame}")
        raise BatchInterrupted([results[i] for i in range(len(specs))], signame) from None
    return [results[i] for i in range(len(specs))]


def kernel_threads(workers: int, cpus: int | None = None) -> int:
    """CPU threads each kernel of a local ``workers``-process batch gets: the cores shared out, at least 1.

    Without it every kernel starts torch with one thread per core, and ``workers`` kernels on the same
    cores oversubscribe them (OpenMP threads spinning against each other).
    """
    cpus = os.cpu_count() if cpus is None else cpus
    return max(1, int(cpus or 1) // max(1, int(workers)))


def _dask_task(spec_json: str, kernel_name: str, timeout: int | None, resume: bool,
               threads: int | None = None) -> dict:
    spec = RunSpec.from_json(spec_json)
    if threads is not None:  # the kernel papermill starts inherits this worker's environment
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(var, str(threads))
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
    return {k: getattr(r, k) for k in _RESULT_KEYS}


def _run_dask(specs, kernel_name, timeout, workers, progress: _Progress, resume: bool, scheduler: str | None,
              lost_workers_timeout: float = 300.0) -> list[RunResult]:
    from distributed import Client, LocalCluster, as_completed

    n_gpus = len(_gpu_ids())
    cluster = None
    threads = None if scheduler else kernel_threads(workers)  # a remote cluster's machines are not ours to count
    if scheduler:
        client = Client(scheduler)
    else:
        kw = {"resources": {"GPU": 1}} if n_gpus else {}
        cluster = LocalCluster(n_workers=max(1, workers), threads_per_worker=1, processes=True, dashboard_address=None, **kw)
        client = Client(cluster)
    results: dict[int, RunResult] = {}
    try:
        futures = {}
        for i, spec in enumerate(specs):
            res = {"GPU": 1} if (spec.gpu and (n_gpus or scheduler)) else None
            progress.started(spec, verb="queued")  # dask decides when it starts
            f = client.submit(_dask_task, spec.to_json(), kernel_name, timeout, resume, threads, pure=False,
                              key=f"xcal-{spec.notebook_id}-{spec.run_dir.name}-{i}", resources=res)
            futures[f] = i
        ac = as_completed(list(futures))
        zero_since, last_said = None, 0.0
        while len(results) < len(specs):
            if ac.has_ready():
                for f in ac.next_batch(block=False):
                    i = futures[f]
                    try:
                        r = RunResult(specs[i], **f.result())
                    except Exception as e:  # noqa: BLE001 - a lost worker is a failed run, not a crashed batch
                        m = read_manifest(specs[i].run_dir) or {}
                        r = RunResult(specs[i], "failed", 0.0, error=f"dask task failed: {type(e).__name__}: {e}",
                                      note="the previous completed result is kept" if m.get("status") == "completed" else None)
                    results[i] = r
                    progress.finished(r)
                continue
            n_workers = len(client.nthreads())
            now = time.time()
            if n_workers == 0:
                zero_since = zero_since or now
                if now - last_said >= 10:
                    progress.printer(f"0 workers, {len(specs) - len(results)} runs waiting (no Dask worker for "
                                     f"{now - zero_since:.0f} s; giving up after {lost_workers_timeout:.0f} s)")
                    last_said = now
                if now - zero_since >= lost_workers_timeout:
                    reason = f"not run: the Dask cluster had no worker for {lost_workers_timeout:.0f} s (all workers lost)"
                    for f, i in futures.items():
                        if i not in results:
                            f.cancel()
                            r = _record_not_run(specs[i], reason)
                            results[i] = r
                            progress.finished(r)
                    break
            elif zero_since is not None:
                progress.printer(f"{n_workers} Dask worker(s) back after {now - zero_since:.0f} s")
                zero_since, last_said = None, 0.0
            time.sleep(0.5)
        return [results[i] for i in range(len(specs))]
    except KeyboardInterrupt as e:
        signame = getattr(e, "signame", "SIGINT")
        for f, i in futures.items():
            if i not in results:
                f.cancel()
                results[i] = RunResult(specs[i], "interrupted", 0.0, error=f"interrupted by {signame}",
                                       note="rerun the same command to resume")
        raise BatchInterrupted([results[i] for i in range(len(specs))], signame) from None
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def run_batch(specs: Sequence[RunSpec], executor: str = "local", workers: int = 1, kernel_name: str = "python3",
              resume: bool = True, timeout: int | None = None, scheduler: str | None = None,
              progress: Callable[[str], None] = print, lost_workers_timeout: float = 300.0) -> list[RunResult]:
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
        lost_workers_timeout: dask only: seconds without any worker before the waiting runs are given up
            (recorded as ``not_run``); the state is reported every 10 s meanwhile.

    Raises:
        BatchInterrupted: SIGINT (or SIGTERM, where the caller turns it into a KeyboardInterrupt as
            ``python -m xcal_core.run`` does): workers stopped, ``.results`` holds what was done.
    """
    if executor not in EXECUTORS:
        raise ValueError(f"`executor` must be one of {list(EXECUTORS)}, got {executor!r}")
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ValueError(f"`workers` must be a positive int, got {workers!r}")
    if scheduler and executor != "dask":
        raise ValueError("`scheduler` is only used with executor='dask'")
    if isinstance(lost_workers_timeout, bool) or not isinstance(lost_workers_timeout, (int, float)) or not lost_workers_timeout > 0:
        raise ValueError(f"`lost_workers_timeout` must be a positive number of seconds, got {lost_workers_timeout!r}")
    prog = _Progress(len(specs), progress)
    # Report notebooks (those reading other runs through RUN_PATHS) run after every other run has ended,
    # so that a parallel executor never builds a scoreboard from a half-finished batch.
    stages = [[i for i, s in enumerate(specs) if not _reads_runs(s)], [i for i, s in enumerate(specs) if _reads_runs(s)]]
    results: dict[int, RunResult] = {}
    for stage in stages:
        if not stage:
            continue
        part = [specs[i] for i in stage]
        try:
            if executor == "dask":
                out = _run_dask(part, kernel_name, timeout, workers, prog, resume, scheduler, lost_workers_timeout)
            else:
                out = _run_local(part, kernel_name, timeout, workers, prog, resume)
        except BatchInterrupted as e:
            results.update(zip(stage, e.results))
            for i, s in enumerate(specs):
                results.setdefault(i, RunResult(s, "not_run", 0.0, error=f"not started: interrupted by {e.signame}"))
            raise BatchInterrupted([results[i] for i in range(len(specs))], e.signame) from None
        results.update(zip(stage, out))
    return [results[i] for i in range(len(specs))]


def _reads_runs(spec: RunSpec) -> bool:
    """True for a notebook that reads other runs' outputs (its schema has ``RUN_PATHS``)."""
    try:
        return "RUN_PATHS" in load_schema(spec.notebook_id).names
    except (ValueError, KeyError, ImportError):
        return False


def summary_table(results: Sequence[RunResult]) -> pd.DataFrame:
    """One row per run: notebook, group, status, minutes, claims held/total, note, run directory."""
    return pd.DataFrame(
        [{"notebook": r.spec.notebook_id, "group": r.spec.group, "status": r.status, "minutes": round(r.minutes, 2),
          "claims": r.claims, "note": r.note or "", "run_dir": str(r.spec.run_dir)} for r in results],
        columns=["notebook", "group", "status", "minutes", "claims", "note", "run_dir"],
    )


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
