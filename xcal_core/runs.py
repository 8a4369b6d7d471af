"""Run outputs: the directory layout, manifest, tidy metrics/claims, figures, reading results back.

Layout (DESIGN.md)::

    papermill_runs/<profile or sweep>/<notebook>__<param-hash>/
        executed.ipynb  params.yaml  manifest.json
        metrics.csv     experiment, dataset, model, method, metric, level, seed, value, higher_is_better
        claims.csv      claim_id, paper, statement, expected, observed, verdict, reason
        figures/*.png   artifacts/ (git-ignored)

Results are read back with :func:`load_runs`, never from executed notebooks.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import re
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


def _write_json(path: Path, obj: Mapping[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=_json_default))
    os.replace(tmp, path)


def read_manifest(run_dir: str | Path) -> dict | None:
    """The run's ``manifest.json`` as a dict, or None when missing or unreadable."""
    p = Path(run_dir) / "manifest.json"
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def update_manifest(run_dir: Path, **fields: Any) -> dict:
    m = read_manifest(run_dir) or {}
    m.update(fields)
    _write_json(run_dir / "manifest.json", m)
    return m


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
    tmp = path.with_suffix(".csv.tmp")
    df.to_csv(tmp, index=False)
    os.replace(tmp, path)
    return path


def write_claims(rows: Any, run_dir: str | Path, default_paper: str | None = None) -> Path:
    """Validate and write ``claims.csv`` into ``run_dir`` (atomically); returns the path."""
    df = validate_claims(rows, default_paper)
    path = Path(run_dir) / "claims.csv"
    tmp = path.with_suffix(".csv.tmp")
    df.to_csv(tmp, index=False)
    os.replace(tmp, path)
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
    rewritten to disk at each call, so a later failing cell loses nothing.
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

    # construction -------------------------------------------------------------------------
    @classmethod
    def open(cls, schema: NotebookSchema, resolved: Mapping[str, Any], overrides: Sequence[str]) -> "Run":
        root = repo_root()
        h = params_hash(resolved)
        run_dir = Path(resolved["RUN_DIR"]) if resolved["RUN_DIR"] else root / "papermill_runs" / resolved["PROFILE"] / f"{schema.notebook_id}__{h}"
        device = resolve_device(resolved["DEVICE"])
        rng = seed_everything(resolved["SEED"])
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "figures").mkdir(exist_ok=True)
        self = cls(schema, resolved, overrides, run_dir.resolve())
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
        else:
            dirs.extend(sorted(m.parent for m in p.rglob("manifest.json")))
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
