"""The reproduction report: a scoreboard of claims across runs, seeds and profiles, from run folders only.

Everything here reads the tidy files written by runs (``claims.csv``, ``metrics.csv``,
``manifest.json``) through :func:`xcal_core.runs.load_runs`; nothing reads executed notebooks.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from .params import repo_root
from .runs import load_runs, read_manifest

__all__ = ["resolve_run_paths", "scoreboard_metrics", "scoreboard", "load_scoreboard", "runtime_table", "metric_summary", "format_scoreboard", "copy_reference_runs"]


def resolve_run_paths(paths: Sequence[str | Path]) -> list[Path]:
    """Resolve run folders relative to the repository; raise naming the missing ones if none exists."""
    if isinstance(paths, (str, Path)) or not paths:
        raise ValueError(f"`paths` must be a non-empty list of folders, got {paths!r}")
    root = repo_root()
    resolved = [Path(p) if Path(p).is_absolute() else root / p for p in paths]
    existing = [p for p in resolved if p.exists()]
    if not existing:
        raise FileNotFoundError(f"`paths`: none of {[str(p) for p in resolved]} exists; run `make run` first "
                                "or point RUN_PATHS at papermill_runs/reference")
    return existing


def _observed_summary(values: Sequence[str]) -> str:
    """'0.031' for one run; 'mean ± sd (min..max, n)' when every observation is a number; else distinct values."""
    vals = [str(v) for v in values]
    if len(vals) == 1:
        return vals[0]
    try:
        nums = np.array([float(v) for v in vals])
    except ValueError:
        uniq = list(dict.fromkeys(vals))
        return " | ".join(uniq[:4]) + (" | ..." if len(uniq) > 4 else "")
    return f"{nums.mean():.4g} ± {nums.std(ddof=1):.2g} ({nums.min():.4g}..{nums.max():.4g}, n={len(nums)})"


def scoreboard(claims: pd.DataFrame) -> pd.DataFrame:
    """One row per (notebook, paper, claim, profile): expected vs observed and how often the claim held.

    Args:
        claims: rows of ``load_runs(paths, table="claims")`` (columns of claims.csv plus ``notebook,
            profile, run_seed``).

    Returns:
        DataFrame with ``notebook, paper, claim_id, profile, statement, expected, observed, runs, seeds,
        held, held_share, verdict`` where ``verdict`` is ``holds`` (every run), ``fails`` (no run) or
        ``mixed``; sorted by notebook and claim.
    """
    need = {"claim_id", "paper", "statement", "expected", "observed", "holds", "notebook", "profile"}
    missing = need - set(claims.columns)
    if missing:
        raise ValueError(f"`claims` lacks columns {sorted(missing)}; pass load_runs(paths, table='claims')")
    cols = ["notebook", "paper", "claim_id", "profile", "statement", "expected", "observed", "runs", "seeds", "held", "held_share", "verdict"]
    if claims.empty:
        return pd.DataFrame(columns=cols)
    df = claims.copy()
    df["holds"] = df["holds"].astype(str).str.lower().isin(["true", "1"])
    if "run_seed" not in df.columns:
        df["run_seed"] = np.nan
    rows = []
    for (nb, paper, cid, prof), g in df.groupby(["notebook", "paper", "claim_id", "profile"], sort=True):
        held = int(g["holds"].sum())
        n = len(g)
        rows.append({
            "notebook": nb, "paper": paper, "claim_id": cid, "profile": prof,
            "statement": g["statement"].iloc[0], "expected": g["expected"].iloc[0],
            "observed": _observed_summary(g["observed"].tolist()), "runs": n,
            "seeds": int(g["run_seed"].nunique()), "held": held, "held_share": held / n,
            "verdict": "holds" if held == n else ("fails" if held == 0 else "mixed"),
        })
    return pd.DataFrame(rows, columns=cols)


def scoreboard_metrics(board: pd.DataFrame) -> pd.DataFrame:
    """Tidy metric rows of a scoreboard: per notebook and profile, the share of (claim, run) pairs that held."""
    rows = []
    for (nb, prof), g in board.groupby(["notebook", "profile"], sort=True):
        rows.append({"experiment": "scoreboard", "dataset": prof, "model": "-", "method": nb, "metric": "claims_held_share",
                     "level": None, "value": float(g["held"].sum() / g["runs"].sum()), "higher_is_better": True})
    return pd.DataFrame(rows, columns=["experiment", "dataset", "model", "method", "metric", "level", "value", "higher_is_better"])


def runtime_table(manifests: pd.DataFrame) -> pd.DataFrame:
    """Per notebook and profile: runs, completed, failed, median minutes, device(s), claims held/total."""
    cols = ["notebook", "profile", "runs", "completed", "failed", "median_minutes", "max_minutes", "devices", "claims"]
    if manifests.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    for (nb, prof), g in manifests.groupby(["notebook", "profile"], sort=True):
        minutes = pd.to_numeric(g.get("minutes"), errors="coerce")
        rows.append({
            "notebook": nb, "profile": prof, "runs": len(g),
            "completed": int((g["status"] == "completed").sum()), "failed": int((g["status"] == "failed").sum()),
            "median_minutes": round(float(minutes.median()), 2) if minutes.notna().any() else math.nan,
            "max_minutes": round(float(minutes.max()), 2) if minutes.notna().any() else math.nan,
            "devices": ", ".join(sorted(set(map(str, g.get("device", pd.Series(dtype=str)).dropna())))),
            "claims": f"{int(pd.to_numeric(g.get('claims_held'), errors='coerce').fillna(0).sum())}/"
                      f"{int(pd.to_numeric(g.get('n_claims'), errors='coerce').fillna(0).sum())}",
        })
    return pd.DataFrame(rows, columns=cols)


def metric_summary(metrics: pd.DataFrame, by: Sequence[str] = ("notebook", "experiment", "dataset", "model", "method", "metric", "level")) -> pd.DataFrame:
    """Mean, standard deviation, 95% normal CI half-width and count of ``value`` over seeds/runs per group."""
    by = [b for b in by if b in metrics.columns]
    if metrics.empty:
        return pd.DataFrame(columns=[*by, "mean", "std", "ci95", "n", "higher_is_better"])
    g = metrics.assign(level=metrics["level"].fillna(-1.0)).groupby(by, sort=True)
    out = g["value"].agg(["mean", "std", "count"]).rename(columns={"count": "n"}).reset_index()
    out["std"] = out["std"].fillna(0.0)
    out["ci95"] = 1.96 * out["std"] / np.sqrt(out["n"].clip(lower=1))
    out["higher_is_better"] = g["higher_is_better"].first().to_numpy()
    out["level"] = out["level"].where(out["level"] >= 0, np.nan)
    return out[[*by, "mean", "std", "ci95", "n", "higher_is_better"]]


def format_scoreboard(board: pd.DataFrame, width: int = 60) -> str:
    """A terminal-friendly rendering of :func:`scoreboard` (statement shortened to ``width`` characters)."""
    if board.empty:
        return "(no claims found)"
    t = board[["notebook", "claim_id", "profile", "verdict", "held", "runs", "statement", "observed"]].copy()
    t["statement"] = t["statement"].map(lambda s: s if len(s) <= width else s[: width - 1] + "…")
    t["observed"] = t["observed"].map(lambda s: s if len(s) <= 40 else s[:39] + "…")
    t["held"] = t["held"].astype(str) + "/" + t["runs"].astype(str)
    return t.drop(columns=["runs"]).to_string(index=False)


def copy_reference_runs(run_dirs: Iterable[str | Path], reference_dir: str | Path) -> list[Path]:
    """Replace ``reference_dir`` by copies of completed runs (without ``artifacts/``), for committing.

    Returns the copied run directories. Runs that did not complete are not copied; the previous
    reference is removed only when at least one run completed.
    """
    done = [Path(d) for d in run_dirs if (read_manifest(d) or {}).get("status") == "completed"]
    if not done:
        return []
    ref = Path(reference_dir)
    if ref.exists():
        shutil.rmtree(ref)
    ref.mkdir(parents=True)
    out = []
    for d in done:
        dst = ref / d.name
        shutil.copytree(d, dst, ignore=shutil.ignore_patterns("artifacts", "*.tmp"))
        out.append(dst)
    return out


def load_scoreboard(paths: Iterable[str | Path] | str | Path) -> pd.DataFrame:
    """Shortcut: ``scoreboard(load_runs(paths, table="claims"))``."""
    return scoreboard(load_runs(paths, table="claims"))
