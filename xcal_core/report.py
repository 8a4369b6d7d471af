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
from .runs import VERDICTS, _legacy_claims, claim_counts, format_claim_counts, load_runs, read_manifest

__all__ = ["resolve_run_paths", "scoreboard_metrics", "scoreboard", "verdict_counts", "write_scoreboard_summary", "load_scoreboard", "runtime_table", "metric_summary", "format_scoreboard", "copy_reference_runs"]


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


def _verdict_across(counts: dict[str, int]) -> str:
    """One verdict for a claim over several runs: the common verdict when every run agrees, else ``mixed``."""
    seen = [v for v in VERDICTS if counts[v]]
    return seen[0] if len(seen) == 1 else "mixed"


def _reasons(values: Sequence[str], limit: int = 3) -> str:
    uniq = [r for r in dict.fromkeys(str(v).strip() for v in values) if r and r.lower() != "nan"]
    return " | ".join(uniq[:limit]) + (" | ..." if len(uniq) > limit else "")


def scoreboard(claims: pd.DataFrame) -> pd.DataFrame:
    """One row per (notebook, paper, claim, profile): expected vs observed and the verdicts over runs.

    Args:
        claims: rows of ``load_runs(paths, table="claims")`` (columns of claims.csv plus ``notebook,
            profile, run_seed``). Old files with a ``holds`` column are read as holds / fails.

    Returns:
        DataFrame with ``notebook, paper, claim_id, profile, statement, expected, observed, runs, seeds,
        holds, fails, inconclusive, held, held_share, verdict, reason``: ``holds`` / ``fails`` /
        ``inconclusive`` count the runs with each verdict (``held`` = ``holds``, kept for old readers);
        ``verdict`` is the common verdict when every run agrees, else ``mixed`` (a claim that flips
        between seeds); ``reason`` joins the distinct reasons given. Sorted by notebook and claim.
    """
    claims = validate_legacy(claims)
    need = {"claim_id", "paper", "statement", "expected", "observed", "verdict", "notebook", "profile"}
    missing = need - set(claims.columns)
    if missing:
        raise ValueError(f"`claims` lacks columns {sorted(missing)}; pass load_runs(paths, table='claims')")
    cols = ["notebook", "paper", "claim_id", "profile", "statement", "expected", "observed", "runs", "seeds",
            *VERDICTS, "held", "held_share", "verdict", "reason"]
    if claims.empty:
        return pd.DataFrame(columns=cols)
    df = claims.copy()
    bad = ~df["verdict"].isin(VERDICTS)
    if bad.any():
        raise ValueError(f"`claims` column 'verdict' must be one of {list(VERDICTS)}; got {df['verdict'][bad].iloc[0]!r}")
    if "reason" not in df.columns:
        df["reason"] = ""
    if "run_seed" not in df.columns:
        df["run_seed"] = np.nan
    rows = []
    for (nb, paper, cid, prof), g in df.groupby(["notebook", "paper", "claim_id", "profile"], sort=True):
        counts = claim_counts(g["verdict"])
        n = len(g)
        rows.append({
            "notebook": nb, "paper": paper, "claim_id": cid, "profile": prof,
            "statement": g["statement"].iloc[0], "expected": g["expected"].iloc[0],
            "observed": _observed_summary(g["observed"].tolist()), "runs": n,
            "seeds": int(g["run_seed"].nunique()), **{v: counts[v] for v in VERDICTS},
            "held": counts["holds"], "held_share": counts["holds"] / n,
            "verdict": _verdict_across(counts), "reason": _reasons(g["reason"].tolist()),
        })
    return pd.DataFrame(rows, columns=cols)


def validate_legacy(claims: pd.DataFrame) -> pd.DataFrame:
    """Claims rows with a ``holds`` column (old files) turned into ``verdict`` / ``reason``."""
    if not isinstance(claims, pd.DataFrame):
        raise TypeError(f"`claims` must be a DataFrame, got {type(claims).__name__}")
    return _legacy_claims(claims)


def scoreboard_metrics(board: pd.DataFrame) -> pd.DataFrame:
    """Tidy metric rows of a scoreboard: per notebook and profile, the share of (claim, run) pairs with
    each verdict (``claims_held_share``, ``claims_failed_share``, ``claims_inconclusive_share``)."""
    rows = []
    names = {"holds": "claims_held_share", "fails": "claims_failed_share", "inconclusive": "claims_inconclusive_share"}
    for (nb, prof), g in board.groupby(["notebook", "profile"], sort=True):
        total = float(g["runs"].sum())
        for v, metric_name in names.items():
            rows.append({"experiment": "scoreboard", "dataset": prof, "model": "-", "method": nb, "metric": metric_name,
                         "level": None, "value": float(g[v].sum() / total), "higher_is_better": v == "holds"})
    return pd.DataFrame(rows, columns=["experiment", "dataset", "model", "method", "metric", "level", "value", "higher_is_better"])


def verdict_counts(board: pd.DataFrame, by: str = "notebook") -> pd.DataFrame:
    """Per ``by`` (notebook), the number of claims whose verdict over runs is holds / fails /
    inconclusive / mixed, and the total."""
    cols = [by, *VERDICTS, "mixed", "total"]
    if board.empty:
        return pd.DataFrame(columns=cols)
    t = pd.crosstab(board[by], board["verdict"]).reindex(columns=[*VERDICTS, "mixed"], fill_value=0)
    t["total"] = t.sum(axis=1)
    t.columns.name = None
    return t.reset_index()[cols]


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
            "claims": format_claim_counts({k: int(pd.to_numeric(g.get(k), errors="coerce").fillna(0).sum())
                                           if k in g else 0 for k in ("claims_held", "claims_failed",
                                                                      "claims_inconclusive", "n_claims")}),
        })
    return pd.DataFrame(rows, columns=cols)


def metric_summary(metrics: pd.DataFrame, by: Sequence[str] = ("notebook", "experiment", "dataset", "model", "method", "metric",
                                                          "level", "setting")) -> pd.DataFrame:
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
    """A terminal-friendly rendering of :func:`scoreboard` (statement shortened to ``width`` characters),
    ending with the count of claims per verdict."""
    if board.empty:
        return "(no claims found)"
    t = board[["notebook", "claim_id", "profile", "verdict", "holds", "fails", "inconclusive", "runs",
               "statement", "observed"]].copy()
    t["statement"] = t["statement"].map(lambda s: s if len(s) <= width else s[: width - 1] + "…")
    t["observed"] = t["observed"].map(lambda s: s if len(s) <= 40 else s[:39] + "…")
    t["h/f/i"] = t["holds"].astype(str) + "/" + t["fails"].astype(str) + "/" + t["inconclusive"].astype(str)
    t = t[["notebook", "claim_id", "profile", "verdict", "h/f/i", "statement", "observed"]]
    c = board["verdict"].value_counts()
    total = (f"{len(board)} claims: {int(c.get('holds', 0))} hold, {int(c.get('fails', 0))} fail, "
             f"{int(c.get('inconclusive', 0))} inconclusive, {int(c.get('mixed', 0))} mixed across runs")
    return t.to_string(index=False) + "\n" + total


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
        # not copied: artifacts (git-ignored), temporary files, archived failed attempts, lock files
        shutil.copytree(d, dst, ignore=shutil.ignore_patterns("artifacts", "*.tmp", ".attempts", ".manifest.lock"))
        out.append(dst)
    return out


def load_scoreboard(paths: Iterable[str | Path] | str | Path) -> pd.DataFrame:
    """Shortcut: ``scoreboard(load_runs(paths, table="claims"))``."""
    return scoreboard(load_runs(paths, table="claims"))


def write_scoreboard_summary(paths: Iterable[str | Path] | str | Path, out_dir: str | Path) -> pd.DataFrame:
    """Write the scoreboard of every claim across the runs under ``paths`` (e.g. the seeds sweep) to
    ``out_dir``: ``scoreboard.csv`` (one row per claim: verdict counts over runs, the verdict over runs,
    reasons), ``verdicts.csv`` (per notebook: claims that hold / fail / are inconclusive in every run,
    and mixed ones) and ``scoreboard.png``. A claim whose verdict changes between runs is ``mixed``,
    never reported as one run's verdict.

    Returns:
        The scoreboard.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from .viz.report import plot_scoreboard

    board = scoreboard(load_runs(paths, table="claims"))
    if board.empty:
        raise ValueError(f"`paths`: no claims found under {paths}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    board.to_csv(out / "scoreboard.csv", index=False)
    verdict_counts(board).to_csv(out / "verdicts.csv", index=False)
    fig, _ = plot_scoreboard(board)
    fig.savefig(out / "scoreboard.png", dpi=150, bbox_inches="tight", facecolor="white")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return board
