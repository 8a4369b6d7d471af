"""Run outputs: the directory layout, manifest, tidy metrics/claims, figures, reading results back.

Layout (DESIGN.md)::

    papermill_runs/<profile or sweep>/<notebook>__<param-hash>/
        executed.ipynb  params.yaml  manifest.json
        metrics.csv     experiment, dataset, model, method, metric, level, seed, value, higher_is_better
        claims.csv      claim_id, paper, statement, expected, observed, verdict, reason
        figures/*.png   artifacts/ (git-ignored)

Results are read back with :func:`load_runs`, never from executed notebooks.

Safety of results (used by :mod:`xcal_core.batch`):

* Every batch attempt runs in its own staging folder ``.<run>.attempt-<time>-<pid>`` beside the run
  folder, and :func:`promote_attempt` moves it into place only when it completed, or when there was no
  completed result to lose. A failed or interrupted rerun leaves the last completed result as it was
  and is archived inside it under ``.attempts/`` (listed in the manifest's ``failed_attempts``).
* :func:`run_lock` is an exclusive lock per run folder (``.<run>.lock`` beside it), held by the process
  executing the run and released by the operating system when that process ends, however it ends.
* Files are written to unique temporary names and renamed into place; :func:`update_manifest` is
  serialised across processes.
* Manifests record the ``pid`` and ``host`` of the process that wrote ``running``; :func:`is_stale`
  tells a run whose process is gone. Hidden folders (names starting with ``.``) are never read as runs.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd
import yaml

from .params import NotebookSchema, ParamValues, params_hash, repo_root
from .runtime import env_line, env_summary, resolve_device, seed_everything

__all__ = [
    "METRICS_COLUMNS",
    "METRIC_KEY",
    "CLAIMS_COLUMNS",
    "VERDICTS",
    "claim_counts",
    "judge",
    "format_claim_counts",
    "FIGURE_DPI",
    "Run",
    "validate_metrics",
    "validate_claims",
    "write_metrics",
    "write_claims",
    "save_figure",
    "read_manifest",
    "load_runs",
    "update_manifest",
    "run_lock",
    "RunLockTimeout",
    "lock_holder",
    "lock_busy",
    "new_attempt_dir",
    "attempt_dirs",
    "promote_attempt",
    "recover_run_dir",
    "is_stale",
    "pid_alive",
]

METRICS_COLUMNS = ("experiment", "dataset", "model", "method", "metric", "level", "setting", "seed", "value",
                   "higher_is_better")
METRIC_KEY = ("experiment", "dataset", "model", "method", "metric", "level", "setting", "seed")
"""The columns that identify a measurement: no two rows of a run's ``metrics.csv`` share all of them."""
CLAIMS_COLUMNS = ("claim_id", "paper", "statement", "expected", "observed", "verdict", "reason")
VERDICTS = ("holds", "fails", "inconclusive")
"""A claim's verdict. ``fails`` and ``inconclusive`` need a reason. A test that cannot fail, or has no
power (too few samples, a control setting), is ``inconclusive``, never ``holds`` (CONTRIBUTING.md)."""
LEGACY_REASON = "claims.csv from before verdicts (holds column): no reason recorded"
FIGURE_DPI = 150
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    return str(o)


_UMASK: list[int] = []


def _umask() -> int:
    if not _UMASK:
        mask = os.umask(0o022)
        os.umask(mask)
        _UMASK.append(mask)
    return _UMASK[0]


def _atomic_write(path: Path, write: Any) -> None:
    """Call ``write(tmp_path)`` on a unique temporary name beside ``path``, then rename it into place
    (two writers never share a temporary file; a reader never sees a half-written file)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _write_json(path: Path, obj: Mapping[str, Any]) -> None:
    text = json.dumps(obj, indent=2, default=_json_default)
    _atomic_write(path, lambda t: t.write_text(text))


try:  # POSIX
    import fcntl as _fcntl
except ImportError:  # pragma: no cover - Windows
    _fcntl = None
    import msvcrt as _msvcrt


def _try_lock(f: Any) -> bool:
    try:
        if _fcntl is not None:
            _fcntl.flock(f.fileno(), _fcntl.LOCK_EX | _fcntl.LOCK_NB)
        else:  # pragma: no cover
            f.seek(0)
            _msvcrt.locking(f.fileno(), _msvcrt.LK_NBLCK, 1)
        return True
    except OSError:
        return False


@contextlib.contextmanager
def _file_lock(path: Path, poll: float = 0.01):
    """A short exclusive lock on ``path`` (blocking), for read-modify-write of one file."""
    with open(path, "a+") as f:
        if _fcntl is not None:
            _fcntl.flock(f.fileno(), _fcntl.LOCK_EX)  # blocking; released when the file is closed
        else:  # pragma: no cover
            while not _try_lock(f):
                time.sleep(poll)
        yield f


def read_manifest(run_dir: str | Path) -> dict | None:
    """The run's ``manifest.json`` as a dict, or None when missing or unreadable."""
    p = Path(run_dir) / "manifest.json"
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def update_manifest(run_dir: Path, **fields: Any) -> dict:
    """Merge ``fields`` into ``run_dir/manifest.json`` (atomic; serialised across processes)."""
    run_dir = Path(run_dir)
    with _file_lock(run_dir / ".manifest.lock"):
        m = read_manifest(run_dir) or {}
        m.update(fields)
        _write_json(run_dir / "manifest.json", m)
    return m


# --------------------------------------------------------------------------------------------
# run-folder lock, staging folders, stale runs
# --------------------------------------------------------------------------------------------
class RunLockTimeout(TimeoutError):
    """Another process held a run folder's lock for longer than the caller wanted to wait."""


def _lock_path(run_dir: Path) -> Path:
    run_dir = Path(run_dir)
    return run_dir.parent / f".{run_dir.name}.lock"


def lock_holder(run_dir: str | Path) -> dict:
    """What the last holder of a run folder's lock wrote (``pid``, ``host``, ``since``); {} if unknown."""
    try:
        return json.loads(_lock_path(Path(run_dir)).read_text() or "{}")
    except (OSError, ValueError):
        return {}


@contextlib.contextmanager
def run_lock(run_dir: str | Path, timeout: float | None = None, on_wait: Any = None, poll: float = 0.5):
    """Hold the exclusive lock of one run folder while executing it.

    The lock is an OS file lock on ``.<run>.lock`` beside the folder (the folder itself is replaced
    when an attempt is promoted), so it is released when its process ends, even by SIGKILL. A second
    batch that reaches the same folder waits here; it never runs the same notebook at the same time.

    Args:
        run_dir: the run folder (its parent is created).
        timeout: seconds to wait at most (None: wait as long as it takes).
        on_wait: called once with :func:`lock_holder`'s dict when the lock is busy.
        poll: seconds between attempts.

    Raises:
        RunLockTimeout: still busy after ``timeout`` seconds.
    """
    run_dir = Path(run_dir)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    f = open(_lock_path(run_dir), "a+")
    try:
        t0, told = time.time(), False
        while not _try_lock(f):
            if not told and on_wait is not None:
                on_wait(lock_holder(run_dir))
                told = True
            if timeout is not None and time.time() - t0 > timeout:
                h = lock_holder(run_dir)
                raise RunLockTimeout(f"{run_dir} is being run by pid {h.get('pid')} on {h.get('host')} "
                                     f"(since {h.get('since')}); waited {timeout:.0f} s")
            time.sleep(poll)
        f.seek(0)
        f.truncate()
        f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": _now()}))
        f.flush()
        yield run_dir
    finally:
        f.close()


def lock_busy(run_dir: str | Path) -> dict | None:
    """None when nobody holds the run folder's lock, else :func:`lock_holder`'s dict (the lock is not taken)."""
    path = _lock_path(Path(run_dir))
    if not path.exists():
        return None
    with open(path, "a+") as f:
        if _try_lock(f):
            return None
    return lock_holder(run_dir)


def pid_alive(pid: Any) -> bool:
    """Whether process ``pid`` exists on this machine."""
    try:
        pid = int(pid)
    except (TypeError, ValueError):
        return False
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:  # pragma: no cover - e.g. Windows for a dead pid
        return False
    return True


def is_stale(manifest: Mapping[str, Any] | None) -> bool:
    """True for a manifest left at ``running`` (or ``starting``) by a process of this host that is gone."""
    if not manifest or manifest.get("status") not in ("running", "starting"):
        return False
    if manifest.get("host") not in (None, socket.gethostname()):
        return False  # another machine's process: cannot tell from here
    return not pid_alive(manifest.get("pid"))


def new_attempt_dir(run_dir: str | Path) -> Path:
    """A fresh, empty staging folder for one attempt at ``run_dir``: ``.<run>.attempt-<utc time>-<pid>``."""
    run_dir = Path(run_dir)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    d = run_dir.parent / f".{run_dir.name}.attempt-{stamp}-{os.getpid()}"
    d.mkdir(parents=True)
    return d


def attempt_dirs(run_dir: str | Path) -> list[Path]:
    """Staging folders of ``run_dir`` left on disk (oldest first)."""
    run_dir = Path(run_dir)
    return sorted(p for p in run_dir.parent.glob(f".{run_dir.name}.attempt-*") if p.is_dir())


def _relocate(folder: Path, old: Path, new: Path) -> None:
    """Replace the path ``old`` by ``new`` in the text files of a promoted attempt (params.yaml's RUN_DIR,
    the parameters and printed paths of executed.ipynb), so they name the folder the result lives in."""
    pairs = [(str(old), str(new)), (json.dumps(str(old))[1:-1], json.dumps(str(new))[1:-1])]
    for name in ("executed.ipynb", "params.yaml"):
        f = folder / name
        if not f.is_file():
            continue
        text = f.read_text(encoding="utf-8")
        new_text = text
        for a, b in pairs:
            new_text = new_text.replace(a, b)
        if new_text != text:
            _atomic_write(f, lambda t, s=new_text: t.write_text(s, encoding="utf-8"))


def promote_attempt(attempt: str | Path, run_dir: str | Path) -> str:
    """Move a finished attempt into place, or keep the previous completed result (call under :func:`run_lock`).

    The attempt replaces ``run_dir`` when it completed, or when ``run_dir`` holds no completed result.
    Otherwise (a failed or interrupted rerun over a completed result) the completed result stays as it
    was, and the attempt is archived in ``run_dir/.attempts/<attempt>`` and listed in the manifest's
    ``failed_attempts``.

    Returns:
        ``"promoted"`` or ``"kept"`` (the previous completed result was kept).
    """
    attempt, run_dir = Path(attempt), Path(run_dir)
    new = read_manifest(attempt) or {}
    old = read_manifest(run_dir) if run_dir.exists() else None
    if new.get("status") == "completed" or not old or old.get("status") != "completed":
        _relocate(attempt, attempt.resolve(), run_dir.resolve())
        update_manifest(attempt, attempt=int((old or {}).get("attempt") or 0) + 1)
        trash = None
        if run_dir.exists():
            trash = run_dir.parent / f".{run_dir.name}.replaced-{attempt.name.rsplit('attempt-', 1)[-1]}"
            os.replace(run_dir, trash)
        os.replace(attempt, run_dir)
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
        return "promoted"
    dst = run_dir / ".attempts" / attempt.name.rsplit("attempt-", 1)[-1]
    dst.parent.mkdir(exist_ok=True)
    os.replace(attempt, dst)
    entry = {k: new.get(k) for k in ("status", "started", "finished", "minutes", "error", "device", "pid", "host")}
    entry["folder"] = str(dst.relative_to(run_dir))
    update_manifest(run_dir, failed_attempts=list(old.get("failed_attempts") or []) + [entry])
    return "kept"


def recover_run_dir(run_dir: str | Path) -> list[str]:
    """Tidy a run folder after a crash (call under :func:`run_lock`); returns what was done, one line each.

    * a promotion cut short between its two renames is finished (the previous folder is put back);
    * staging folders of dead attempts are marked ``interrupted`` (their ``running`` manifest was stale:
      its pid is gone from this host, or it was written on another host) and promoted or archived like any
      finished attempt, so nothing they hold is lost; an attempt whose process still runs is left alone;
    * a ``running`` manifest in the run folder itself whose process is gone is marked ``interrupted``.
    """
    run_dir = Path(run_dir)
    notes = []
    replaced = sorted(run_dir.parent.glob(f".{run_dir.name}.replaced-*"))
    if replaced and not run_dir.exists():
        os.replace(replaced[-1], run_dir)
        notes.append(f"restored {run_dir.name} from an interrupted replacement")
    for r in run_dir.parent.glob(f".{run_dir.name}.replaced-*"):
        shutil.rmtree(r, ignore_errors=True)
    for a in attempt_dirs(run_dir):
        m = read_manifest(a) or {}
        if m.get("status") in (None, "starting", "running"):
            if m.get("host") == socket.gethostname() and pid_alive(m.get("pid")) and int(m["pid"]) != os.getpid():
                continue  # its process still runs (e.g. a notebook open in Jupyter): not stale, left alone
            who = f"pid {m.get('pid')} on {m.get('host')}" if m.get("pid") else "a process"
            update_manifest(a, status="interrupted", finished=m.get("finished") or _now(),
                            error=m.get("error") or f"stale: {who} ended without finishing this attempt")
            notes.append(f"an earlier attempt ({who}, started {m.get('started')}) died while running")
        promote_attempt(a, run_dir)
    m = read_manifest(run_dir)
    if is_stale(m):
        update_manifest(run_dir, status="interrupted", error=f"stale: pid {m.get('pid')} on {m.get('host')} "
                        "ended without finishing this run")
        notes.append(f"a stale running manifest (pid {m.get('pid')} on {m.get('host')}) was marked interrupted")
    return notes


# --------------------------------------------------------------------------------------------
# tidy tables
# --------------------------------------------------------------------------------------------
def _as_frame(rows: Any, name: str, columns: Sequence[str] = ()) -> pd.DataFrame:
    if isinstance(rows, pd.DataFrame):
        return rows.copy()
    if isinstance(rows, Mapping):
        rows = [rows]
    if not isinstance(rows, Iterable) or isinstance(rows, (str, bytes)):
        raise TypeError(f"`{name}` must be a DataFrame, a dict or a list of dicts, got {type(rows).__name__}")
    rows = list(rows)
    if not all(isinstance(r, Mapping) for r in rows):
        raise TypeError(f"`{name}` must contain dicts (one per row)")
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=list(columns))


def _check_columns(df: pd.DataFrame, required: Sequence[str], name: str) -> None:
    missing = [c for c in required if c not in df.columns]
    extra = [c for c in df.columns if c not in required]
    if missing or extra:
        raise ValueError(f"`{name}` must have exactly the columns {list(required)}; missing {missing}, unexpected {extra}")


def _check_text(df: pd.DataFrame, cols: Sequence[str], name: str) -> None:
    for c in cols:
        bad = df[c].map(lambda v: not isinstance(v, str) or not v.strip())
        if bad.any():
            i = int(bad.to_numpy().nonzero()[0][0])
            raise ValueError(f"`{name}` column {c!r} must hold non-empty strings; row {i} has {df[c].iloc[i]!r}")


def _as_bool(v: Any) -> bool | None:
    if isinstance(v, bool):
        return v
    if hasattr(v, "dtype") and str(getattr(v, "dtype", "")) == "bool":
        return bool(v)
    return None


def validate_metrics(rows: Any, default_seed: int | None = None) -> pd.DataFrame:
    """Check metric rows against the tidy schema and return them as a DataFrame in column order.

    Args:
        rows: DataFrame or list of dicts with columns ``experiment, dataset, model, method, metric,
            level, setting, seed, value, higher_is_better``. ``level`` (a perturbation level or another
            numeric axis) may be missing/None (-> NaN); ``setting`` names a varied hyper-parameter or
            condition as text (``"lambda1=0.1"``, ``"T=2"``, ``"k=4"``; missing/None -> ``""``); ``seed``
            may be missing (-> ``default_seed``).

    Raises:
        ValueError / TypeError naming the column and the first bad row; ValueError when two rows share
        every key column (:data:`METRIC_KEY`): each measurement is logged once.
    """
    df = _as_frame(rows, "metrics", METRICS_COLUMNS)
    if "level" not in df.columns:
        df["level"] = math.nan
    if "setting" not in df.columns:
        df["setting"] = ""
    if "seed" not in df.columns and default_seed is not None:
        df["seed"] = default_seed
    _check_columns(df, METRICS_COLUMNS, "metrics")
    df = df[list(METRICS_COLUMNS)].reset_index(drop=True)
    if len(df) == 0:
        return df
    _check_text(df, ("experiment", "dataset", "model", "method", "metric"), "metrics")
    try:
        df["level"] = pd.to_numeric(df["level"].map(lambda v: math.nan if v is None else v), errors="raise").astype(float)
    except (ValueError, TypeError):
        raise ValueError("`metrics` column 'level' must be numeric or None") from None
    vals = pd.to_numeric(df["value"].map(lambda v: float(v) if hasattr(v, "item") else v), errors="coerce")
    bad = vals.isna() & df["value"].notna()
    if bad.any() or df["value"].isna().any():
        i = int((bad | df["value"].isna()).to_numpy().nonzero()[0][0])
        raise ValueError(f"`metrics` column 'value' must be numbers (not NaN); row {i} has {df['value'].iloc[i]!r}")
    if (~vals.map(math.isfinite)).any():
        i = int((~vals.map(math.isfinite)).to_numpy().nonzero()[0][0])
        raise ValueError(f"`metrics` column 'value' must be finite; row {i} ({df['metric'].iloc[i]}) has {vals.iloc[i]}")
    df["value"] = vals.astype(float)
    seeds = df["seed"].map(lambda v: int(v) if isinstance(v, (int,)) and not isinstance(v, bool) or (hasattr(v, "item") and float(v).is_integer()) else None)
    if seeds.isna().any():
        i = int(seeds.isna().to_numpy().nonzero()[0][0])
        raise ValueError(f"`metrics` column 'seed' must be integers; row {i} has {df['seed'].iloc[i]!r}")
    df["seed"] = seeds.astype("int64")
    hib = df["higher_is_better"].map(_as_bool)
    if hib.isna().any():
        i = int(hib.isna().to_numpy().nonzero()[0][0])
        raise ValueError(f"`metrics` column 'higher_is_better' must be True/False; row {i} has {df['higher_is_better'].iloc[i]!r}")
    df["higher_is_better"] = hib.astype(bool)
    df["setting"] = df["setting"].map(lambda v: "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v))
    _check_unique_metrics(df)
    return df


def _check_unique_metrics(df: pd.DataFrame) -> None:
    """Raise naming the first key shared by two rows (see :data:`METRIC_KEY`)."""
    if len(df) < 2:
        return
    key = df[list(METRIC_KEY)].assign(level=df["level"].fillna(-1e300))
    dup = key.duplicated(keep=False)
    if dup.any():
        row = df[dup].iloc[0]
        shown = {k: row[k] for k in METRIC_KEY}
        raise ValueError(f"`metrics`: {int(dup.sum())} rows share the key {shown}; log each measurement once, and "
                         "put a varied hyper-parameter or condition in the `setting` column")


def _legacy_claims(df: pd.DataFrame) -> pd.DataFrame:
    """Old ``claims.csv`` files had a boolean ``holds`` column: map it to ``verdict`` / ``reason``."""
    if "holds" not in df.columns or "verdict" in df.columns:
        return df
    df = df.copy()
    held = df.pop("holds").map(lambda v: _as_bool(v) if _as_bool(v) is not None else str(v).strip().lower() in ("true", "1"))
    df["verdict"] = held.map(lambda h: "holds" if h else "fails")
    df["reason"] = held.map(lambda h: "" if h else LEGACY_REASON)
    return df


def _check_verdict(verdict: Any, reason: Any, where: str) -> tuple[str, str]:
    """Validate one (verdict, reason) pair; ``where`` names the row or argument in messages."""
    if isinstance(verdict, bool) or (hasattr(verdict, "dtype") and str(getattr(verdict, "dtype", "")) == "bool"):
        raise TypeError(f"{where}: `verdict` must be one of {list(VERDICTS)}, not a bool {verdict!r} "
                        "(write verdict='holds', or 'fails' / 'inconclusive' with a reason)")
    if not isinstance(verdict, str) or verdict not in VERDICTS:
        raise ValueError(f"{where}: `verdict` must be one of {list(VERDICTS)}, got {verdict!r}")
    if reason is None or (isinstance(reason, float) and math.isnan(reason)):
        reason = ""
    if not isinstance(reason, str):
        raise TypeError(f"{where}: `reason` must be a string, got {type(reason).__name__}")
    reason = reason.strip()
    if verdict != "holds" and not reason:
        raise ValueError(f"{where}: a claim whose verdict is {verdict!r} needs a `reason` saying why "
                         "(e.g. 'effect within the estimator's noise floor', 'n = 6 images, too few for the test')")
    return verdict, reason


def validate_claims(rows: Any, default_paper: str | None = None) -> pd.DataFrame:
    """Check claim rows (``claim_id, paper, statement, expected, observed, verdict, reason``) and return
    a DataFrame in column order.

    ``verdict`` is one of :data:`VERDICTS`; ``reason`` may be empty only when the verdict is ``holds``.
    Rows of old files with a boolean ``holds`` column instead are read as ``holds`` / ``fails``.
    """
    df = _as_frame(rows, "claims", CLAIMS_COLUMNS)
    df = _legacy_claims(df)
    if "paper" not in df.columns and default_paper is not None:
        df["paper"] = default_paper
    if "reason" not in df.columns and "verdict" in df.columns:
        df["reason"] = ""
    _check_columns(df, CLAIMS_COLUMNS, "claims")
    df = df[list(CLAIMS_COLUMNS)].reset_index(drop=True)
    if len(df) == 0:
        return df
    for c in ("expected", "observed"):
        df[c] = df[c].map(lambda v: v if isinstance(v, str) else (f"{v:.4g}" if isinstance(v, float) else str(v)))
    _check_text(df, ("claim_id", "paper", "statement", "expected", "observed"), "claims")
    dup = df["claim_id"][df["claim_id"].duplicated()]
    if len(dup):
        raise ValueError(f"`claims` column 'claim_id' must be unique; duplicated: {sorted(set(dup))}")
    checked = [_check_verdict(v, r, f"`claims` row {i} ({df['claim_id'].iloc[i]})")
               for i, (v, r) in enumerate(zip(df["verdict"], df["reason"]))]
    df["verdict"] = [v for v, _ in checked]
    df["reason"] = [r for _, r in checked]
    return df


def judge(passed: bool, fail_reason: str, inconclusive: str | None = None) -> dict[str, str]:
    """The ``verdict`` / ``reason`` keyword arguments of :meth:`Run.claim` from a test's outcome.

    Args:
        passed: whether the test's criterion was met.
        fail_reason: why the claim failed, used when ``passed`` is False.
        inconclusive: a reason why the test has no power here (too few samples, a control setting, a
            test that cannot fail). When given, the verdict is ``inconclusive`` whatever ``passed`` is.

    Returns:
        ``{"verdict": ..., "reason": ...}``, e.g. ``run.claim("C1", s, e, o, **judge(p < 0.05, "p = 0.3"))``.
    """
    if inconclusive is not None and str(inconclusive).strip():
        return {"verdict": "inconclusive", "reason": str(inconclusive).strip()}
    if _as_bool(passed) is None and not isinstance(passed, (int,)):
        raise TypeError(f"`passed` must be a bool, got {type(passed).__name__}")
    if bool(passed):
        return {"verdict": "holds", "reason": ""}
    if not isinstance(fail_reason, str) or not fail_reason.strip():
        raise ValueError("`fail_reason` must say why the claim failed (a non-empty string)")
    return {"verdict": "fails", "reason": fail_reason.strip()}


def claim_counts(verdicts: Iterable[str]) -> dict[str, int]:
    """``{"holds": h, "fails": f, "inconclusive": i, "total": n}`` of a sequence of verdicts."""
    vs = list(verdicts)
    out = {v: sum(1 for x in vs if x == v) for v in VERDICTS}
    out["total"] = len(vs)
    return out


def format_claim_counts(counts: Mapping[str, Any]) -> str:
    """``'3 hold, 1 fail, 2 inconclusive of 6'`` from :func:`claim_counts` (or a manifest's fields)."""
    h = int(counts.get("holds", counts.get("claims_held", 0)) or 0)
    f = int(counts.get("fails", counts.get("claims_failed", 0)) or 0)
    i = int(counts.get("inconclusive", counts.get("claims_inconclusive", 0)) or 0)
    n = int(counts.get("total", counts.get("n_claims", h + f + i)) or 0)
    return f"{h} hold, {f} fail, {i} inconclusive of {n}"


def write_metrics(rows: Any, run_dir: str | Path, default_seed: int | None = None) -> Path:
    """Validate and write ``metrics.csv`` into ``run_dir`` (atomically); returns the path."""
    df = validate_metrics(rows, default_seed)
    path = Path(run_dir) / "metrics.csv"
    _atomic_write(path, lambda t: df.to_csv(t, index=False))
    return path


def write_claims(rows: Any, run_dir: str | Path, default_paper: str | None = None) -> Path:
    """Validate and write ``claims.csv`` into ``run_dir`` (atomically); returns the path."""
    df = validate_claims(rows, default_paper)
    path = Path(run_dir) / "claims.csv"
    _atomic_write(path, lambda t: df.to_csv(t, index=False))
    return path


def save_figure(fig: Any, figure_id: str, run_dir: str | Path, dpi: int = FIGURE_DPI) -> Path:
    """Save a matplotlib figure as ``figures/<figure_id>.png`` at a fixed DPI; returns the path.

    Args:
        fig: a ``matplotlib.figure.Figure`` or the ``(fig, ax)`` tuple that viz functions return.
        figure_id: file stem, letters/digits/``_.-`` (e.g. ``"fig2_ce_vs_level"``).
    """
    from matplotlib.figure import Figure

    if isinstance(fig, tuple) and fig and isinstance(fig[0], Figure):
        fig = fig[0]
    if not isinstance(fig, Figure):
        raise TypeError(f"`fig` must be a matplotlib Figure (or the (fig, ax) tuple of a viz function), got {type(fig).__name__}")
    if not isinstance(figure_id, str) or not _ID.match(figure_id):
        raise ValueError(f"`figure_id` {figure_id!r} must be letters, digits, '_', '.', '-' (e.g. 'fig2_ce_vs_level')")
    d = Path(run_dir) / "figures"
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{figure_id}.png"
    fig.savefig(path, dpi=dpi, bbox_inches="tight", facecolor="white")
    return path


# --------------------------------------------------------------------------------------------
# the Run object a notebook holds
# --------------------------------------------------------------------------------------------
class Run:
    """One notebook execution: resolved parameters, device, random streams and the output writers.

    Created by :func:`xcal_core.params.start_run`. Metrics and claims are validated when logged and
    rewritten to disk at each call, so a later failing cell loses nothing. A run started outside the
    batch runner over a completed result (a rerun in Jupyter) works in a staging folder beside it
    (``run.dir``) that :meth:`finish` moves into place, so an abandoned or failing rerun never destroys
    the completed result.
    """

    def __init__(self, schema: NotebookSchema, resolved: Mapping[str, Any], overrides: Sequence[str], run_dir: Path):
        self.schema = schema
        self.notebook_id = schema.notebook_id
        self.params = dict(resolved)
        self.p = ParamValues(resolved)
        self.overrides = list(overrides)
        self.profile = resolved["PROFILE"]
        self.seed = resolved["SEED"]
        self.dir = run_dir
        self._metrics = []
        self._claims = []
        self._t0 = time.time()
        self._final = None  # the run folder this run replaces in finish(), when it works in a staging folder

    # construction -------------------------------------------------------------------------
    @classmethod
    def open(cls, schema: NotebookSchema, resolved: Mapping[str, Any], overrides: Sequence[str]) -> "Run":
        root = repo_root()
        h = params_hash(resolved)
        run_dir = Path(resolved["RUN_DIR"]) if resolved["RUN_DIR"] else root / "papermill_runs" / resolved["PROFILE"] / f"{schema.notebook_id}__{h}"
        device = resolve_device(resolved["DEVICE"])
        rng = seed_everything(resolved["SEED"])
        final = None
        if ".attempt-" not in run_dir.name and (read_manifest(run_dir) or {}).get("status") == "completed":
            # a run outside the batch runner (Jupyter) over a completed result: work in a staging folder
            # and put it in place only in finish(), so a failing or abandoned run never destroys the result
            final, run_dir = run_dir, new_attempt_dir(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "figures").mkdir(exist_ok=True)
        self = cls(schema, resolved, overrides, run_dir.resolve())
        self._final = final
        self.device = device
        self.rng = rng
        self.data_dir = Path(resolved["DATA_DIR"] or os.environ.get("XCAL_DATA_DIR") or root / "data").resolve()
        self.cache_dir = Path(os.environ.get("XCAL_CACHE_DIR") or root / ".cache" / "xcal").resolve()
        self.artifacts_dir = self.dir / "artifacts"
        self.artifacts_dir.mkdir(exist_ok=True)
        self.params_hash = h
        (self.dir / "params.yaml").write_text(yaml.safe_dump(dict(resolved), sort_keys=False))
        env = env_summary()
        previous = read_manifest(self.dir) or {}
        _write_json(
            self.dir / "manifest.json",
            {
                "notebook": schema.notebook_id,
                "paper": schema.paper,
                "profile": self.profile,
                "params_hash": h,
                "overrides": self.overrides,
                "seed": self.seed,
                "device": str(device),
                "status": "running",
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started": _now(),
                "finished": None,
                "minutes": None,
                "error": None,
                "git_sha": env["git_sha"],
                "git_dirty": env["git_dirty"],
                "env": env,
                "attempt": int(previous.get("attempt", 0)) + 1,
                "figures": [],
                "n_metrics": 0,
                "n_claims": 0,
                "claims_held": 0,
                "claims_failed": 0,
                "claims_inconclusive": 0,
            },
        )
        for stale in ("metrics.csv", "claims.csv"):
            (self.dir / stale).unlink(missing_ok=True)
        return self

    def __repr__(self) -> str:
        return f"Run({self.notebook_id!r}, profile={self.profile!r}, device={self.device}, dir={str(self.dir)!r})"

    # outputs ------------------------------------------------------------------------------
    def save_figure(self, fig: Any, figure_id: str) -> Path:
        """Save a figure as ``figures/<figure_id>.png`` (150 dpi) and record it in the manifest."""
        path = save_figure(fig, figure_id, self.dir)
        m = read_manifest(self.dir) or {}
        figs = [f for f in m.get("figures", []) if f != path.name] + [path.name]
        update_manifest(self.dir, figures=figs)
        return path

    def log_metrics(self, rows: Any) -> pd.DataFrame:
        """Append tidy metric rows (validated now) and rewrite ``metrics.csv``; returns the new rows."""
        df = validate_metrics(rows, default_seed=self.seed)
        _check_unique_metrics(pd.concat([self.metrics, df], ignore_index=True) if self._metrics else df)
        self._metrics.append(df)
        write_metrics(self.metrics, self.dir)
        update_manifest(self.dir, n_metrics=len(self.metrics))
        return df

    @property
    def metrics(self) -> pd.DataFrame:
        """All metric rows logged so far."""
        frames = [f for f in self._metrics if len(f)]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(METRICS_COLUMNS))

    def claim(self, claim_id: str, statement: str, expected: Any, observed: Any, verdict: str | bool,
              reason: str | None = None, paper: str | None = None) -> dict:
        """Record the verdict of a paper's claim on our data; rewrites ``claims.csv``.

        Args:
            claim_id: unique id within the notebook.
            statement: the claim, in words.
            expected: what the paper states, as the test's criterion.
            observed: what this run measured (a number or a short text).
            verdict: ``"holds"``, ``"fails"`` or ``"inconclusive"`` (:data:`VERDICTS`). ``True`` is
                accepted for ``"holds"``; ``False`` is rejected, since a failure needs a reason.
                A test that cannot fail, or has too little power, is ``"inconclusive"``.
            reason: required unless the verdict is ``"holds"``: the concrete reason (estimator floor,
                sample size, a control setting, a real disagreement with the paper, ...).
            paper: defaults to the notebook's paper.

        Returns:
            The row written.
        """
        if verdict is True or (hasattr(verdict, "dtype") and str(getattr(verdict, "dtype", "")) == "bool" and bool(verdict)):
            verdict = "holds"
        where = f"claim {claim_id!r}"
        if verdict is False or (hasattr(verdict, "dtype") and str(getattr(verdict, "dtype", "")) == "bool"):
            raise TypeError(f"{where}: `verdict` False is ambiguous: pass verdict='fails' or 'inconclusive' "
                            "together with a `reason`")
        verdict, reason = _check_verdict(verdict, reason, where)
        row = {"claim_id": claim_id, "paper": paper or self.schema.paper, "statement": statement,
               "expected": expected, "observed": observed, "verdict": verdict, "reason": reason}
        others = [r for r in self._claims if r["claim_id"] != claim_id]
        validate_claims(others + [row])
        self._claims = others + [row]
        write_claims(self._claims, self.dir)
        update_manifest(self.dir, **self._claim_fields())
        return row

    def _claim_fields(self) -> dict[str, int]:
        c = claim_counts(r["verdict"] for r in self._claims)
        return {"n_claims": c["total"], "claims_held": c["holds"], "claims_failed": c["fails"],
                "claims_inconclusive": c["inconclusive"]}

    @property
    def claims(self) -> pd.DataFrame:
        return validate_claims(self._claims) if self._claims else pd.DataFrame(columns=list(CLAIMS_COLUMNS))

    def artifact(self, name: str) -> Path:
        """Path inside ``artifacts/`` (git-ignored) for logits, attributions, checkpoints."""
        if not isinstance(name, str) or not _ID.match(name.replace("/", "_")):
            raise ValueError(f"`name` {name!r} must be a simple file name")
        return self.artifacts_dir / name

    def finish(self) -> dict:
        """Write metrics/claims, mark the manifest completed and print a summary plus the environment line."""
        write_metrics(self.metrics, self.dir)
        write_claims(self._claims, self.dir)
        minutes = (time.time() - self._t0) / 60
        fields = self._claim_fields()
        m = update_manifest(self.dir, status="completed", finished=_now(), minutes=round(minutes, 3),
                             n_metrics=len(self.metrics), **fields)
        if self._final is not None:
            try:
                with run_lock(self._final, timeout=30):
                    promote_attempt(self.dir, self._final)
                self.dir, self._final = Path(self._final).resolve(), None
                self.artifacts_dir = self.dir / "artifacts"
            except RunLockTimeout as e:
                print(f"{e}: this completed run stays in {self.dir}; the next batch over {self._final} puts it in place")
        print(f"{self.notebook_id}: {len(self.metrics)} metric rows, claims {format_claim_counts(fields)}, "
              f"{len(m.get('figures', []))} figures -> {self.dir}")
        print(env_line(m.get("env")))
        return m


# --------------------------------------------------------------------------------------------
# reading results back
# --------------------------------------------------------------------------------------------
def _run_dirs(paths: Iterable[str | Path] | str | Path) -> list[Path]:
    if isinstance(paths, (str, Path)):
        paths = [paths]
    dirs: list[Path] = []
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise FileNotFoundError(f"`paths`: {p} does not exist")
        if (p / "manifest.json").exists():
            dirs.append(p)
        else:  # staging folders and archived attempts are hidden (.name): never read as runs
            dirs.extend(sorted(m.parent for m in p.rglob("manifest.json")
                               if not any(part.startswith(".") for part in m.parent.relative_to(p).parts)))
    return dirs


def load_runs(paths: Iterable[str | Path] | str | Path, table: str = "metrics", status: str | None = "completed") -> pd.DataFrame:
    """Read metrics, claims or manifests of many runs into one DataFrame.

    Args:
        paths: run directories or folders containing them (searched recursively).
        table: ``"metrics"``, ``"claims"`` or ``"manifest"`` (one row per run).
        status: keep only runs with this manifest status (None keeps all).

    Returns:
        The concatenated rows plus ``notebook, profile, run_seed, params_hash, run_dir`` columns.
    """
    if table not in ("metrics", "claims", "manifest"):
        raise ValueError(f"`table` must be 'metrics', 'claims' or 'manifest', got {table!r}")
    frames = []
    for d in _run_dirs(paths):
        m = read_manifest(d)
        if m is None or (status is not None and m.get("status") != status):
            continue
        meta = {"notebook": m.get("notebook"), "profile": m.get("profile"), "run_seed": m.get("seed"),
                "params_hash": m.get("params_hash"), "run_dir": str(d)}
        if table == "manifest":
            row = {k: v for k, v in m.items() if k != "env"}
            row.update(meta)
            frames.append(pd.DataFrame([row]))
            continue
        f = d / f"{table}.csv"
        if not f.exists() or f.stat().st_size == 0:
            continue
        df = pd.read_csv(f, keep_default_na=False) if table == "claims" else pd.read_csv(f)
        if table == "claims":
            df = _legacy_claims(df)
        if table == "metrics":
            df["setting"] = df["setting"].fillna("").astype(str) if "setting" in df.columns else ""
            df = df[[*METRICS_COLUMNS, *[c for c in df.columns if c not in METRICS_COLUMNS]]]
        for k, v in meta.items():
            df[k] = v
        frames.append(df)
    if not frames:
        cols = {"metrics": list(METRICS_COLUMNS), "claims": list(CLAIMS_COLUMNS), "manifest": []}[table]
        return pd.DataFrame(columns=cols + ["notebook", "profile", "run_seed", "params_hash", "run_dir"])
    return pd.concat(frames, ignore_index=True)
