"""The reproduction report: a scoreboard of claims across runs, seeds and profiles, from run folders only.

Everything here reads the tidy files written by runs (``claims.csv``, ``metrics.csv``,
``manifest.json``) through :func:`xcal_core.runs.load_runs`; nothing reads executed notebooks.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import yaml

from .params import load_schema, repo_root
from .runs import VERDICTS, _legacy_claims, claim_counts, format_claim_counts, load_runs, read_manifest
from .viz.report import AGG_STRATEGIES, LABELS, _means, controls, display_name, plot_key_figure

__all__ = [
    "resolve_run_paths", "scoreboard_metrics", "scoreboard", "verdict_counts", "write_scoreboard_summary",
    "load_scoreboard", "runtime_table", "metric_summary", "format_scoreboard", "copy_reference_runs",
    "AGG_STRATEGIES", "KEY_FIGURES", "KeyFigureSpec", "KeySelection", "PROFILE_ORDER", "run_params",
    "select_key_rows", "LABELS", "display_name", "controls", "describe_key_rows", "key_figures", "KeyFigures",
]


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
    and mixed ones), ``scoreboard.png`` (those counts) and ``verdict_grid.png`` (each claim's verdict in
    each seed). A claim whose verdict changes between runs is ``mixed``, never reported as one run's
    verdict.

    Returns:
        The scoreboard.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from .viz.report import plot_scoreboard, plot_verdict_grid

    claims = load_runs(paths, table="claims")
    board = scoreboard(claims)
    if board.empty:
        raise ValueError(f"`paths`: no claims found under {paths}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    board.to_csv(out / "scoreboard.csv", index=False)
    verdict_counts(board).to_csv(out / "verdicts.csv", index=False)
    import matplotlib.pyplot as plt

    for name, (fig, _) in (("scoreboard", plot_scoreboard(board)), ("verdict_grid", plot_verdict_grid(claims))):
        fig.savefig(out / f"{name}.png", dpi=150, bbox_inches="tight", facecolor="white")
        plt.close(fig)
    return board


# ------------------------------------------------------------------------------------------------
# Key figures: each one an explicit selection of metrics.csv rows (which experiment, setting,
# methods and metrics), made per run from that run's own parameters (params.yaml)
# ------------------------------------------------------------------------------------------------
PROFILE_ORDER = ("paper", "workshop", "smoke")
"""Most thorough first: a key figure over runs of several profiles shows the first one present."""


@dataclass(frozen=True)
class KeyFigureSpec:
    """One key figure: what it shows and how its rows are chosen.

    Attributes:
        name: identifier (``KEY_FIGURES`` parameter of notebook 06, figure file ``key_<name>``).
        notebook: number prefix of the notebook whose runs it reads (``"01"``).
        title: what the figure shows, in words.
        rows: the rows it selects, in words (printed with a missing figure).
        select: ``(metrics of one run, that run's parameters) -> rows``; every returned row is drawn.
        required: ``(metric, method)`` pairs that must all be present, else the figure is missing.
        setting: ``parameters -> text`` naming the setting looked for (in the reason of a missing figure).
    """

    name: str
    notebook: str
    title: str
    rows: str
    select: Callable[[pd.DataFrame, Mapping[str, Any]], pd.DataFrame]
    required: tuple[tuple[str, str], ...] = ()
    setting: Callable[[Mapping[str, Any]], str] | None = None


@dataclass
class KeySelection:
    """The rows one key figure draws (``rows``), or why it cannot be drawn (``missing``).

    ``rows`` are metrics.csv rows plus ``notebook, profile, run_seed, run_dir``, a ``role`` column
    (what the row is in the figure) and ``replicate`` (0, 1, ...: one per (run, seed) pair, the unit
    whose spread the figure shows).
    """

    spec: KeyFigureSpec
    rows: pd.DataFrame
    missing: str = ""
    profile: str = ""

    @property
    def n_replicates(self) -> int:
        return int(self.rows["replicate"].nunique()) if len(self.rows) else 0


def _first(value: Any, default: Any = None) -> Any:
    if isinstance(value, (list, tuple)):
        return value[0] if value else default
    return value if value not in (None, "") else default


def _is(col: pd.Series, value: Any) -> pd.Series:
    return col.astype(str) == str(value)


def _select_01(m: pd.DataFrame, p: Mapping[str, Any]) -> pd.DataFrame:
    k, base, model = _first(p.get("PATCH_SIZES")), _first(p.get("IMAGE_BASELINES")), _first(p.get("IMAGE_MODELS"))
    sel = ((m["experiment"] == "calibration_vs_level") & m["dataset"].astype(str).str.endswith(f":{k}x{k}:{base}")
           & _is(m["model"], model) & m["method"].isin(["uncalibrated", "recalx"])
           & m["metric"].isin(["ce_kl", "ce_kl_floor", "ce_kl_floor_sd"]) & m["level"].notna())
    return m[sel].assign(role=lambda d: d["metric"].map({"ce_kl": "value", "ce_kl_floor": "floor",
                                                         "ce_kl_floor_sd": "floor_sd"}))


def _select_02(m: pd.DataFrame, p: Mapping[str, Any]) -> pd.DataFrame:
    cal = m["experiment"] == "calibration"
    sel = cal & (m["metric"].eq("ece") | (m["metric"].eq("ece_floor_q95") & m["method"].eq("uncalibrated"))
                 | (m["metric"].eq("fitted_temperature") & m["method"].eq("temperature_scaling")))
    return m[sel].assign(role=lambda d: d["metric"].map({"ece": "value", "ece_floor_q95": "floor",
                                                         "fitted_temperature": "temperature"}))


def _select_03(m: pd.DataFrame, p: Mapping[str, Any]) -> pd.DataFrame:
    sel = ((m["experiment"] == "explanation_uncertainty") & (m["metric"] == "cv_mean")
           & _is(m["dataset"], p.get("DATASET")) & m["model"].isin(list(p.get("UE_METHODS") or []))
           & m["method"].isin(list(p.get("EXPLAINERS") or [])))
    return m[sel].assign(role="value")


_AGG_METRICS = {"sens_avg": "agg_robust", "infidelity": "agg_faith"}  # metric -> the strategy fitted to it


def _select_04(m: pd.DataFrame, p: Mapping[str, Any]) -> pd.DataFrame:
    main = ((m["experiment"] == "main") & _is(m["dataset"], p.get("DATASET")) & _is(m["model"], p.get("MODEL"))
            & m["metric"].isin(list(_AGG_METRICS)))
    agg = m[main & m["method"].isin(AGG_STRATEGIES)].assign(role="strategy")
    single = m[main & m["method"].isin(list(p.get("METHODS") or []))]
    best = []
    for metric, g in single.groupby("metric", sort=True):  # the best single method of this run, per metric
        name = g.groupby("method")["value"].mean().idxmin()  # both metrics: lower is better
        best.append(g[g["method"] == name].assign(role="best_single"))
    return pd.concat([agg, *best]) if best else agg


def _select_05(m: pd.DataFrame, p: Mapping[str, Any]) -> pd.DataFrame:
    sel = ((m["experiment"] == "gradcam") & _is(m["dataset"], _first(p.get("IMAGE_DATASETS")))
           & _is(m["model"], _first(p.get("MODELS"))) & m["metric"].isin(["ins", "del"])
           & m["method"].isin(["pretrained", "ce_only", "idexpo"]))
    return m[sel].assign(role="value")


KEY_FIGURES: dict[str, KeyFigureSpec] = {s.name: s for s in (
    KeyFigureSpec("01_ce_kl", "01", "CE_KL per perturbation level, uncalibrated vs ReCalX, with the floor",
                  "experiment calibration_vs_level; the main cell (first IMAGE_MODELS, first PATCH_SIZES, first "
                  "IMAGE_BASELINES); methods uncalibrated and recalx; metrics ce_kl, ce_kl_floor, ce_kl_floor_sd",
                  _select_01, (("ce_kl", "uncalibrated"), ("ce_kl", "recalx")),
                  lambda p: (f"dataset *:{_first(p.get('PATCH_SIZES'))}x{_first(p.get('PATCH_SIZES'))}:"
                             f"{_first(p.get('IMAGE_BASELINES'))}, model {_first(p.get('IMAGE_MODELS'))}")),
    KeyFigureSpec("02_ece", "02", "ECE before and after each calibrator, per setting (controls marked)",
                  "experiment calibration; metric ece of every calibrator, the uncalibrated ece_floor_q95 and "
                  "the fitted temperature (marks controls)", _select_02,
                  (("ece", "uncalibrated"), ("ece", "temperature_scaling"))),
    KeyFigureSpec("03_cv", "03", "Mean CV of the explanations per UE method and explainer",
                  "experiment explanation_uncertainty; metric cv_mean; the DATASET of the run (not the regression "
                  "set); UE_METHODS x EXPLAINERS", _select_03,
                  setting=lambda p: f"dataset {p.get('DATASET')}"),
    KeyFigureSpec("04_aggregation", "04", "Aggregation strategies on their objectives: S_AVG and INFD",
                  "experiment main; DATASET and MODEL of the run; metrics sens_avg and infidelity; the "
                  "AGG_STRATEGIES and the best single method of METHODS", _select_04,
                  (("sens_avg", "agg_robust"), ("infidelity", "agg_faith")),
                  lambda p: f"dataset {p.get('DATASET')}, model {p.get('MODEL')}"),
    KeyFigureSpec("05_ins_del", "05",
                  "Test Ins and Del of Grad-CAM maps on the main setting: pretrained, CE-only, ID-ExpO",
                  "experiment gradcam (Grad-CAM only: no LIME, KernelSHAP or first-order runs); first "
                  "IMAGE_DATASETS and MODELS; metrics ins and del", _select_05,
                  tuple((m, k) for m in ("ins", "del") for k in ("pretrained", "ce_only", "idexpo")),
                  lambda p: f"dataset {_first(p.get('IMAGE_DATASETS'))}, model {_first(p.get('MODELS'))}"),
)}
"""The key figures of the report, one explicit row selection each."""


def run_params(metrics: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """``{run_dir: parameters}`` of the runs in ``metrics``: the run's ``params.yaml``, else the
    notebook's resolved profile preset (what the run would have used)."""
    out: dict[str, dict[str, Any]] = {}
    if "run_dir" not in metrics.columns:
        return out
    for run_dir, g in metrics.groupby("run_dir", sort=False):
        f = Path(str(run_dir)) / "params.yaml"
        if f.exists():
            out[str(run_dir)] = yaml.safe_load(f.read_text()) or {}
            continue
        try:
            out[str(run_dir)] = load_schema(str(g["notebook"].iloc[0])).preset(str(g["profile"].iloc[0]))
        except (ValueError, KeyError, FileNotFoundError, ModuleNotFoundError):
            out[str(run_dir)] = {}
    return out


def select_key_rows(metrics: pd.DataFrame, name: str, params: Mapping[str, Mapping[str, Any]] | None = None,
                    profile: str | None = None) -> KeySelection:
    """The rows of key figure ``name`` (:data:`KEY_FIGURES`), chosen run by run with each run's parameters.

    Args:
        metrics: ``load_runs(paths)`` rows (at least the metrics.csv columns plus ``notebook``; ``profile``,
            ``run_seed`` and ``run_dir`` are filled in when absent: one run).
        name: key figure name.
        params: ``{run_dir: parameters}``; default :func:`run_params` (each run's params.yaml).
        profile: the profile to show; default the most thorough one present (:data:`PROFILE_ORDER`).

    Returns:
        A :class:`KeySelection`; ``missing`` says why when no (or not all required) rows exist.
    """
    if name not in KEY_FIGURES:
        raise ValueError(f"`name`: unknown key figure {name!r}; known: {list(KEY_FIGURES)}")
    spec = KEY_FIGURES[name]
    empty = pd.DataFrame(columns=[*metrics.columns, "role", "replicate"])
    if "notebook" not in metrics.columns:
        raise ValueError("`metrics` lacks the 'notebook' column; pass load_runs(paths)")
    m = metrics[metrics["notebook"].astype(str).str.startswith(spec.notebook)]
    m = m.assign(**{c: v for c, v in (("profile", ""), ("run_seed", 0), ("run_dir", "run")) if c not in m.columns})
    if m.empty:
        return KeySelection(spec, empty, f"no runs of notebook {spec.notebook} were read")
    present = [p for p in PROFILE_ORDER if p in set(m["profile"].astype(str))]
    profile = profile if profile is not None else (present[0] if present else str(m["profile"].iloc[0]))
    m = m[m["profile"].astype(str) == profile]
    if m.empty:
        return KeySelection(spec, empty, f"no runs of notebook {spec.notebook} in profile {profile!r}", profile)
    params = run_params(m) if params is None else params
    parts = [spec.select(g, params.get(str(d), {})) for d, g in m.groupby("run_dir", sort=True)]
    rows = pd.concat(parts) if parts else empty
    looked = sorted({spec.setting(params.get(str(d), {})) for d in m["run_dir"].unique()}) if spec.setting else []
    where = f" (looked for: {'; '.join(looked)})" if looked else ""
    if rows.empty:
        return KeySelection(spec, empty, f"no rows of {spec.rows}{where}", profile)
    have = set(zip(rows["metric"], rows["method"]))
    lacking = [f"{metric}/{method}" for metric, method in spec.required if (metric, method) not in have]
    if lacking:
        return KeySelection(spec, empty, f"rows {lacking} are missing ({spec.rows}){where}", profile)
    keys = rows[["run_dir", "seed"]].astype(str).apply(tuple, axis=1)
    order = {k: i for i, k in enumerate(dict.fromkeys(sorted(keys)))}
    rows = rows.assign(replicate=keys.map(order).astype(int))
    point = ["dataset", "model", "method", "metric", "level", "replicate"]
    dup = rows.assign(level=rows["level"].fillna(-1.0)).duplicated(point, keep=False)
    if dup.any():  # two rows for one bar or point of one seed: drawing them would pool two measurements
        other = [c for c in ("experiment", "setting") if rows.loc[dup, c].astype(str).nunique() > 1]
        return KeySelection(spec, empty, f"{int(dup.sum())} rows would share a bar or point of one seed "
                            f"(they differ only in {other or 'nothing'}); not pooled", profile)
    return KeySelection(spec, rows, "", profile)


def describe_key_rows(sel: KeySelection) -> str:
    """One line 'What you see' for a key figure, computed from the rows it draws (or why it is missing)."""
    name, r, dn = sel.spec.name, sel.rows, display_name
    if sel.missing:
        return f"{name}: not drawn: {sel.missing}."
    n = sel.n_replicates
    each = "a thin line per seed" if name == "01_ce_kl" else "dots: each seed"
    over = f" (means over {n} seeds; {each})" if n > 1 else " (one seed)"
    v = r[r["role"].isin(["value", "strategy"])]
    if name == "01_ce_kl":
        mean = _means(v, ["method", "level"])
        parts = []
        for meth in ("uncalibrated", "recalx"):
            s = mean[meth]
            parts.append(f"{dn(meth)} {s.mean():.3f} on average over the {len(s)} levels (max {s.max():.3f} "
                         f"at level {s.idxmax():.2f})")
        text = "CE_KL: " + "; ".join(parts)
        fl, sd = r[r["role"] == "floor"], r[r["role"] == "floor_sd"]
        if len(fl) and len(sd):
            top = _means(fl, ["method", "level"])["recalx"] + 2 * _means(sd, ["method", "level"])["recalx"]
            inside = int((mean["recalx"] <= top.reindex(mean["recalx"].index)).sum())
            text += f"; ReCalX is within its floor + 2 sd at {inside} of {len(top)} levels"
        return text + over + "."
    if name == "02_ece":
        ece, floor, ctrl = _means(v, ["dataset", "model", "method"]), r[r["role"] == "floor"], controls(r)
        fmean = _means(floor, ["dataset", "model"]) if len(floor) else pd.Series(dtype=float)
        parts = []
        for (d, m), g in ece.groupby(level=[0, 1], sort=True):
            g = g.droplevel([0, 1])
            g = g.reindex(sorted(g.index, key=lambda k: (k != "uncalibrated", k != "temperature_scaling", k)))
            after = ", ".join(f"{dn(k)} {x:.3f}" for k, x in g.items() if k != "uncalibrated")
            text = f"{d}/{m}: ECE uncalibrated {g.get('uncalibrated', float('nan')):.3f} -> {after}"
            if (d, m) in fmean.index:
                text += f" (floor {fmean[(d, m)]:.3f})"
            if (str(d), str(m)) in ctrl:
                text += f", a CONTROL (fitted T = {ctrl[(str(d), str(m))]:.2f}: nothing to calibrate)"
            parts.append(text)
        return "; ".join(parts) + over + "."
    if name == "03_cv":
        mean = _means(v, ["model", "method"])
        lo, hi = mean.idxmin(), mean.idxmax()
        per_ex = mean.groupby(level=1).mean().sort_values()
        return (f"mean CV over the {len(mean)} (UE method, explainer) cells from {mean.min():.2f} "
                f"({dn(lo[0])}, {dn(lo[1])}) to {mean.max():.2f} ({dn(hi[0])}, {dn(hi[1])}); "
                "averaged over UE methods: " + ", ".join(f"{dn(k)} {x:.2f}" for k, x in per_ex.items())
                + over + ".")
    if name == "04_aggregation":
        mean, best = _means(v, ["metric", "method"]), r[r["role"] == "best_single"]
        bmean = _means(best, ["metric", "method"])
        parts = []
        for metric, fitted in _AGG_METRICS.items():
            s = mean[metric]
            text = (f"{dn(metric)}: {dn(fitted)} {s.get(fitted, float('nan')):.3g}, lowest strategy "
                    f"{dn(s.idxmin())} {s.min():.3g}")
            if metric in bmean.index.get_level_values(0):
                (bname, bval), = bmean[metric].items()
                text += f", best single method {dn(bname)} {bval:.3g}"
            parts.append(text)
        return "; ".join(parts) + over + "."
    if name == "05_ins_del":
        mean = _means(v, ["metric", "method"])
        return "; ".join(f"{dn(metric)} ({'higher' if metric == 'ins' else 'lower'} is better): "
                         + ", ".join(f"{dn(k)} {mean[(metric, k)]:.3f}" for k in ("pretrained", "ce_only", "idexpo"))
                         for metric in ("ins", "del")) + over + "."
    raise ValueError(f"no description for key figure {name!r}")


@dataclass
class KeyFigures:
    """Result of :func:`key_figures`: per key figure its figure, the rows it drew, a one-line caption
    computed from those rows, or (``missing``) why it was not drawn."""

    figures: dict[str, Any] = field(default_factory=dict)
    selections: dict[str, Any] = field(default_factory=dict)
    captions: dict[str, str] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)

    def summary(self) -> pd.DataFrame:
        """Per key figure, the rows it drew: experiments, settings, methods, metrics, row and seed counts,
        or why it is missing."""
        out = {}
        for name, sel in self.selections.items():
            r = sel.rows

            def distinct(col: str, r: pd.DataFrame = r) -> str:
                return ", ".join(map(str, dict.fromkeys(r[col].astype(str)))) if len(r) else ""

            out[name] = {"notebook": sel.spec.notebook, "profile": sel.profile, "experiment": distinct("experiment"),
                         "dataset": distinct("dataset"), "model": distinct("model"), "method": distinct("method"),
                         "metric": distinct("metric"), "rows": len(r), "seeds": sel.n_replicates,
                         "missing": sel.missing}
        return pd.DataFrame.from_dict(out, orient="index")


def key_figures(metrics: pd.DataFrame, names: list[str] | None = None, params: dict | None = None,
                profile: str | None = None, draw: bool = True) -> KeyFigures:
    """Draw the report's key figures (:data:`KEY_FIGURES`) from metrics.csv rows.

    Args:
        metrics: ``load_runs(paths)`` (raw rows, not a summary: the figures show every seed).
        names: key figure names (default: all, in order).
        params: ``{run_dir: parameters}`` (default: each run's params.yaml).
        profile: profile to show (default: the most thorough one present).
        draw: draw the figures (False: only the selections and captions; draw one later with
            :func:`plot_key_figure`, e.g. to show it next to its caption in a notebook).

    Returns:
        :class:`KeyFigures`; ``figures`` keys are ``key_<name>``; a figure without rows is listed in
        ``missing`` (with the reason) and not drawn.
    """
    names = list(KEY_FIGURES) if names is None else list(names)
    unknown = [n for n in names if n not in KEY_FIGURES]
    if unknown:
        raise ValueError(f"`names`: unknown key figures {unknown}; known: {list(KEY_FIGURES)}")
    out = KeyFigures()
    for name in names:
        sel = select_key_rows(metrics, name, params=params, profile=profile)
        out.selections[name] = sel
        out.captions[name] = describe_key_rows(sel)
        if sel.missing:
            out.missing[name] = sel.missing
            continue
        if not draw:
            continue
        fig, _ = plot_key_figure(sel)
        out.figures[f"key_{name}"] = fig
    return out
