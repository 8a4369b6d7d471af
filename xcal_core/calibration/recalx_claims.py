"""The criteria of notebook 01's claims (ReCalX, Decker et al. NeurIPS 2025), judged on floor-corrected values.

Every calibration error here is read against its *floor*: the same estimator on the same predictions with
labels redrawn from them (perfect calibration), see :func:`xcal_core.calibration.level_metrics`. A method's
*distance from calibration* at a level is ``|ce_kl - ce_kl_floor|``; its uncertainty is the floor's
standard deviation (the spread of the estimator under perfect calibration at that sample size). A
difference between two such quantities smaller than ``n_sd`` times their combined spread is *within the
floor's spread*: a cell with such a difference is counted as undecided, and a claim whose cells are
mostly undecided is ``inconclusive``.

Why the absolute value: the kernel estimator's bias grows with the entropy of the labels, and the floor
draws its labels from the predictions. An under-confident model (true labels sharper than its predictions)
therefore lands *below* its floor, an over-confident one above it; both are miscalibrated. Reading only
``value - floor`` would reward a calibrator that over-softens.

Each function returns a :class:`xcal_core.metrics.c2i.Verdict` (``passed``, ``observed``,
``fail_reason``, ``inconclusive``); notebooks record it with
``run.claim(id, statement, expected, v.observed, **judge(v.passed, v.fail_reason, v.inconclusive))``.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from ..metrics.c2i import Verdict

__all__ = [
    "CELL",
    "cell_summary",
    "growth_verdict",
    "ts_max_verdict",
    "recalx_lowest_verdict",
    "max_reduction_verdict",
    "retrain_verdict",
    "paired_cells_verdict",
    "flattening_verdict",
]

CELL: tuple[str, ...] = ("dataset", "features", "baseline", "model")
"""Columns that identify one experimental cell of the per-level table."""

_NEEDED = ("method", "level", "ce_kl", "ce_kl_floor", "ce_kl_floor_sd")


def _check_table(table: Any, cols: Sequence[str], name: str = "table") -> None:
    import pandas as pd

    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"`{name}` must be a pandas DataFrame, got {type(table).__name__}")
    missing = [c for c in cols if c not in table.columns]
    if missing:
        raise ValueError(f"`{name}` lacks the columns {missing}; it has {list(table.columns)}")
    if table.empty:
        raise ValueError(f"`{name}` is empty")


def _cell_name(key: Any) -> str:
    return "/".join(str(k) for k in (key if isinstance(key, tuple) else (key,)))


def cell_summary(table: Any, cells: Sequence[str] = CELL) -> Any:
    """AVG and MAX over levels of each method's distance from calibration, per cell (the paper's CE^AVG / CE^MAX).

    Per level the distance is ``|ce_kl - ce_kl_floor|`` (averaged over seeds when the table has several);
    ``avg`` is its mean over the levels and ``max`` its maximum. The spreads combine the estimator's
    noise, from the floors (``sqrt(mean(sd^2) / L)`` over the L levels for ``avg``, the floor sd at the
    level of the maximum for ``max``, both divided by sqrt(seeds)), with the variation between seeds
    when there are several (the standard error of the per-seed AVG / MAX, which also covers the
    training seed's model): ``avg_sd`` and ``max_sd``. ``raw_avg`` / ``raw_max`` are the same
    statistics of the raw CE_KL (without the floor), ``ece_avg`` / ``ece_max`` of the 15-bin ECE.

    Args:
        table: per-level rows with ``method, level, ce_kl, ce_kl_floor, ce_kl_floor_sd``, the ``cells``
            columns and optionally ``seed`` and ``ece``.
        cells: the columns identifying a cell.

    Returns:
        DataFrame with the ``cells`` columns, ``method``, ``avg``, ``avg_sd``, ``max``, ``max_sd``,
        ``max_level``, ``n_seeds``, ``raw_avg``, ``raw_max`` (and ``ece_avg``, ``ece_max``).
    """
    import pandas as pd

    cells = list(cells)
    _check_table(table, [*_NEEDED, *cells])
    t = table.assign(dist=(table["ce_kl"] - table["ce_kl_floor"]).abs(), var=table["ce_kl_floor_sd"] ** 2)
    agg = {"dist": ("dist", "mean"), "var": ("var", "mean"), "raw": ("ce_kl", "mean")}
    if "ece" in t.columns:
        agg["ece"] = ("ece", "mean")
    n_seeds = t.groupby([*cells, "method", "level"])["ce_kl"].size().rename("n_seeds")
    per = t.groupby([*cells, "method", "level"], sort=False).agg(**agg).join(n_seeds).reset_index()
    seed_se = _seed_se(t, [*cells, "method"])
    rows = []
    for key, g in per.groupby([*cells, "method"], sort=False):
        g = g.sort_values("level")
        i = int(np.argmax(g["dist"].to_numpy()))
        ns = g["n_seeds"].to_numpy().astype(float)
        se_avg, se_max, n_s = seed_se.get(key, (0.0, 0.0, 1))
        row = dict(zip([*cells, "method"], key))
        row.update({"avg": float(g["dist"].mean()),
                    "avg_sd": float(math.sqrt(np.mean(g["var"] / ns) / len(g) + se_avg ** 2)),
                    "max": float(g["dist"].iloc[i]),
                    "max_sd": float(math.sqrt(g["var"].iloc[i] / ns[i] + se_max ** 2)),
                    "max_level": float(g["level"].iloc[i]), "n_seeds": int(n_s),
                    "raw_avg": float(g["raw"].mean()), "raw_max": float(g["raw"].max())})
        if "ece" in g.columns:
            row.update({"ece_avg": float(g["ece"].mean()), "ece_max": float(g["ece"].max())})
        rows.append(row)
    return pd.DataFrame(rows)


def _seed_se(t: Any, keys: Sequence[str]) -> dict:
    """Standard errors over seeds of each group's AVG and MAX of ``dist`` over levels: {key: (se_avg, se_max, n)}."""
    if "seed" not in t.columns:
        return {}
    per_seed = t.groupby([*keys, "seed"], sort=False)["dist"].agg(["mean", "max"]).reset_index()
    out = {}
    for key, g in per_seed.groupby(list(keys), sort=False):
        n = len(g)
        if n >= 2:
            out[key] = (float(g["mean"].std(ddof=1) / math.sqrt(n)), float(g["max"].std(ddof=1) / math.sqrt(n)), n)
    return out


def _compare(a: float, a_sd: float, b: float, b_sd: float, n_sd: float) -> int:
    """+1 when a > b beyond n_sd combined spreads, -1 when a < b beyond it, 0 within the spread."""
    spread = n_sd * math.sqrt(a_sd ** 2 + b_sd ** 2)
    return 1 if a - b > spread else (-1 if b - a > spread else 0)


def growth_verdict(table: Any, cells: Sequence[str] = CELL, *, method: str = "uncalibrated", high: float = 0.7,
                   n_sd: float = 2.0) -> Verdict:
    """C1: miscalibration grows with the perturbation level, in most cells.

    Per cell the mean distance from calibration of ``method`` at the levels >= ``high`` is compared with
    the one at level 0 (the clean inputs); the cell grows / shrinks when the difference exceeds ``n_sd``
    combined spreads (the floors', plus the seeds' spread of the difference when there are several
    seeds), and is undecided otherwise. Holds when more than half of the cells grow;
    inconclusive when more than half are undecided; fails otherwise.

    Args:
        table: per-level rows (see :func:`cell_summary`).
        cells: cell columns.
        method: the method whose curve is judged (the paper: the uncalibrated model).
        high: the lowest level counted as high.
        n_sd: spreads a difference must exceed.

    Returns:
        :class:`~xcal_core.metrics.c2i.Verdict`.
    """
    cells = list(cells)
    _check_table(table, [*_NEEDED, *cells])
    t = table[table["method"] == method]
    if t.empty:
        raise ValueError(f"`table` has no rows of method {method!r}")
    t = t.assign(dist=(t["ce_kl"] - t["ce_kl_floor"]).abs(), var=t["ce_kl_floor_sd"] ** 2)
    per = t.groupby([*cells, "level"]).agg(dist=("dist", "mean"), var=("var", "mean"), n=("dist", "size")).reset_index()
    diff_se = {}  # the seeds' spread of (mean at high levels - level 0), when there are several seeds
    if "seed" in t.columns:
        d = t.assign(hi=t["level"] >= high - 1e-9, lo=t["level"] <= 1e-9)
        for key, g in d.groupby(cells, sort=False):
            per_seed = [float(gs.loc[gs["hi"], "dist"].mean() - gs.loc[gs["lo"], "dist"].mean())
                        for _, gs in g.groupby("seed")]
            if len(per_seed) >= 2:
                diff_se[key] = float(np.std(per_seed, ddof=1) / math.sqrt(len(per_seed)))
    grow, shrink, within, notes = [], [], [], []
    for key, g in per.groupby(cells, sort=False):
        lo, hi = g[g["level"] <= 1e-9], g[g["level"] >= high - 1e-9]
        if lo.empty or hi.empty:
            raise ValueError(f"cell {_cell_name(key)} needs level 0 and levels >= {high}")
        a = float(hi["dist"].mean())
        a_sd = math.sqrt(float((hi["var"] / hi["n"]).mean()) / len(hi) + diff_se.get(key, 0.0) ** 2)
        b, b_sd = float(lo["dist"].iloc[0]), math.sqrt(float(lo["var"].iloc[0] / lo["n"].iloc[0]))
        c = _compare(a, a_sd, b, b_sd, n_sd)
        (grow if c > 0 else shrink if c < 0 else within).append(_cell_name(key))
        notes.append(f"{_cell_name(key)}: {b:.3f} -> {a:.3f}")
    n = len(notes)
    observed = (f"{len(grow)}/{n} cells grow, {len(shrink)} shrink, {len(within)} within the floor's spread "
                f"(level 0 -> mean of levels >= {high}, |CE_KL - floor|): " + "; ".join(notes))
    inconclusive = (f"in {len(within)} of {n} cells the change lies within {n_sd:g} floor spreads"
                    if len(within) > n / 2 else None)
    fail = (f"only {len(grow)} of {n} cells grow beyond the floor's spread; {len(shrink)} shrink "
            f"({', '.join(shrink) or 'none'}): their clean predictions are already the most miscalibrated")
    return Verdict(len(grow) > n / 2, observed, fail, inconclusive)


def _pivot(summary: Any, cells: Sequence[str], stat: str) -> Any:
    return summary.pivot_table(index=list(cells), columns="method", values=[stat, f"{stat}_sd"], sort=False)


def ts_max_verdict(summary: Any, cells: Sequence[str] = CELL, *, n_sd: float = 2.0) -> Verdict:
    """C2: global temperature scaling does not fix the maximum over levels, in the majority of cells (paper: 7/8).

    A cell counts as "not fixed" when temperature scaling's MAX distance is not below the uncalibrated
    MAX by more than ``n_sd`` combined spreads. Cells whose uncalibrated MAX is itself within the spread
    of 0 have nothing to fix and are left out; with none left the claim is inconclusive.

    Args:
        summary: :func:`cell_summary` output with methods ``uncalibrated`` and ``temperature_scaling``.
        cells: cell columns.
        n_sd: spreads a difference must exceed.
    """
    cells = list(cells)
    _check_table(summary, [*cells, "method", "max", "max_sd"], "summary")
    w = _pivot(summary, cells, "max")
    rows, nothing, fixed = [], [], []
    for key, r in w.iterrows():
        u, u_sd = r["max", "uncalibrated"], r["max_sd", "uncalibrated"]
        ts, ts_sd = r["max", "temperature_scaling"], r["max_sd", "temperature_scaling"]
        if u <= n_sd * u_sd:
            nothing.append(_cell_name(key))
            continue
        c = _compare(ts, ts_sd, u, u_sd, n_sd)
        rows.append((_cell_name(key), u, ts, c))
        if c < 0:
            fixed.append(_cell_name(key))
    n = len(rows)
    not_fixed = n - len(fixed)
    worse = sum(1 for *_, c in rows if c > 0)
    observed = (f"TS does not lower the MAX beyond the floor's spread in {not_fixed}/{n} cells (worse in {worse}); "
                + "; ".join(f"{k}: {u:.3f} -> {ts:.3f}" for k, u, ts, _ in rows)
                + (f"; nothing to fix in {len(nothing)} cells" if nothing else ""))
    inconclusive = "no cell has an uncalibrated MAX above its floor's spread" if n == 0 else None
    fail = f"temperature scaling lowers the MAX in {len(fixed)} of {n} cells ({', '.join(fixed)})"
    return Verdict(n > 0 and not_fixed > n / 2, observed, fail, inconclusive)


def recalx_lowest_verdict(summary: Any, cells: Sequence[str] = CELL, *, n_sd: float = 2.0,
                          others: Sequence[str] = ("uncalibrated", "temperature_scaling")) -> Verdict:
    """C3: ReCalX has the lowest AVG and the lowest MAX in every cell (the paper: every table row).

    Per cell and statistic, ReCalX wins when it is below the best other method by more than ``n_sd``
    combined spreads, loses when above it by more, and is undecided otherwise. Holds when ReCalX wins
    both statistics in every cell; fails when it loses one anywhere; inconclusive otherwise (no loss,
    but some difference within the floor's spread).
    """
    cells = list(cells)
    _check_table(summary, [*cells, "method", "avg", "avg_sd", "max", "max_sd"], "summary")
    wins, losses, ties, notes = 0, [], [], []
    total = 0
    for stat in ("avg", "max"):
        w = _pivot(summary, cells, stat)
        for key, r in w.iterrows():
            best = min(others, key=lambda m: r[stat, m])
            c = _compare(r[stat, "recalx"], r[f"{stat}_sd", "recalx"], r[stat, best], r[f"{stat}_sd", best], n_sd)
            total += 1
            name = f"{_cell_name(key)} {stat.upper()}"
            if c < 0:
                wins += 1
            elif c > 0:
                losses.append(f"{name} ({r[stat, 'recalx']:.3f} vs {best} {r[stat, best]:.3f})")
            else:
                ties.append(name)
            if stat == "max":
                notes.append(f"{_cell_name(key)}: ReCalX MAX {r[stat, 'recalx']:.3f} vs {best} {r[stat, best]:.3f}")
    observed = (f"ReCalX lowest beyond the floor's spread in {wins}/{total} (cell, AVG/MAX) pairs, higher in "
                f"{len(losses)}, within the spread in {len(ties)}; " + "; ".join(notes))
    inconclusive = (f"no pair where ReCalX is higher, but {len(ties)} of {total} lie within {n_sd:g} floor spreads "
                    f"({', '.join(ties[:4])}{', ...' if len(ties) > 4 else ''})" if not losses and ties else None)
    fail = f"ReCalX is not the lowest in {len(losses)} of {total} pairs: {'; '.join(losses[:4])}"
    return Verdict(not losses and not ties, observed, fail, inconclusive)


def max_reduction_verdict(summary: Any, cells: Sequence[str] = CELL, *, cut: float = 0.5, n_sd: float = 2.0) -> Verdict:
    """C4: ReCalX reduces the MAX distance from calibration by at least ``cut`` in most cells (paper: median 89 %).

    Per cell: decided "yes" when ReCalX's MAX is below ``(1 - cut)`` times the uncalibrated MAX by more
    than ``n_sd`` combined spreads, "no" when above it by more, undecided otherwise; cells whose
    uncalibrated MAX is within the spread of 0 are undecided too (nothing to reduce). Holds when more
    than half of the cells are "yes"; inconclusive when more than half are undecided; fails otherwise.
    """
    cells = list(cells)
    _check_table(summary, [*cells, "method", "max", "max_sd"], "summary")
    w = _pivot(summary, cells, "max")
    yes, no, undecided, red = [], [], [], []
    for key, r in w.iterrows():
        u, u_sd = r["max", "uncalibrated"], r["max_sd", "uncalibrated"]
        rc, rc_sd = r["max", "recalx"], r["max_sd", "recalx"]
        name = _cell_name(key)
        red.append((name, (u - rc) / u if u > 0 else float("nan")))
        if u <= n_sd * u_sd:
            undecided.append(name)
            continue
        c = _compare(rc, rc_sd, (1 - cut) * u, (1 - cut) * u_sd, n_sd)
        (yes if c < 0 else no if c > 0 else undecided).append(name)
    n = len(red)
    vals = [v for _, v in red if v == v]
    observed = (f"MAX reduced by >= {100 * cut:.0f} % beyond the floor's spread in {len(yes)}/{n} cells, not in "
                f"{len(no)}, undecided {len(undecided)}; median reduction {100 * float(np.median(vals)):.0f} %: "
                + "; ".join(f"{k} {100 * v:.0f} %" for k, v in red))
    inconclusive = (f"{len(undecided)} of {n} cells are undecided within {n_sd:g} floor spreads"
                    if len(undecided) > n / 2 else None)
    fail = f"the reduction reaches {100 * cut:.0f} % in only {len(yes)} of {n} cells (not in {', '.join(no) or '-'})"
    return Verdict(len(yes) > n / 2, observed, fail, inconclusive)


def retrain_verdict(recalx_increase: Sequence[float], uncal_increase: Sequence[float], labels: Sequence[str],
                    *, min_pairs: int = 3) -> Verdict:
    """C6: where the two rankings differ, removing ReCalX's top features raises the retraining loss at least as much.

    Args:
        recalx_increase, uncal_increase: relative test-loss increase per (dataset, k) pair whose rankings
            differ (means over retraining seeds).
        labels: a name per pair.
        min_pairs: fewer differing pairs than this make the test powerless (inconclusive).
    """
    a = np.asarray(recalx_increase, dtype=float)
    b = np.asarray(uncal_increase, dtype=float)
    if a.shape != b.shape or len(labels) != len(a):
        raise ValueError("`recalx_increase`, `uncal_increase` and `labels` must have the same length")
    better = a >= b
    observed = (f"{int(better.sum())}/{len(a)} differing (dataset, k) pairs with a loss increase >= the "
                "uncalibrated ranking's" + (": " + "; ".join(f"{n} {100 * x:+.1f} % vs {100 * y:+.1f} %"
                                                             for n, x, y in zip(labels, a, b)) if len(a) else ""))
    inconclusive = (f"only {len(a)} (dataset, k) pairs where the two rankings differ (< {min_pairs}): "
                    "no power to compare the rankings" if len(a) < min_pairs else None)
    fail = f"the ReCalX ranking raises the loss less in {int((~better).sum())} of {len(a)} differing pairs"
    return Verdict(bool(len(a)) and better.mean() > 0.5, observed, fail, inconclusive)


def paired_cells_verdict(tests: Mapping[str, Any], *, alpha: float = 0.05, expect: str = "lower",
                         require: str = "majority") -> Verdict:
    """C7 / C8: a paired test over images per cell, ReCalX against the uncalibrated model.

    Args:
        tests: cell name -> :class:`xcal_core.metrics.PairedTest` of ReCalX (``a``) against uncalibrated
            (``b``), with the alternative in the expected direction.
        alpha: significance level of each test.
        expect: the expected direction in words (``"lower"``, ``"higher"``), for the observed line.
        require: ``"majority"`` (more than half of the cells significant) or ``"all"`` (every cell
            significant: the paper's "48/48 cells improve").

    Returns:
        Holds when the required share of cells is significant; inconclusive when more than half of
        the cells have too few informative pairs (``too_few``); fails otherwise, naming the cells that
        are not significant with their medians and the share of images that moved the expected way.
    """
    if not tests:
        raise ValueError("`tests` is empty")
    if require not in ("majority", "all"):
        raise ValueError(f"unknown `require` {require!r}; expected 'majority' or 'all'")
    sig = [k for k, t in tests.items() if not t.too_few and t.significant(alpha)]
    few = [k for k, t in tests.items() if t.too_few]
    n = len(tests)
    observed = (f"ReCalX {expect} with p < {alpha:g} in {len(sig)}/{n} cells; "
                + "; ".join(f"{k}: median {t.median_b:.3g} -> {t.median_a:.3g}, p = {t.p:.2g} (n = {t.n})"
                            for k, t in tests.items()))
    inconclusive = (f"{len(few)} of {n} cells have fewer than 10 informative image pairs" if len(few) > n / 2 else None)
    not_sig = [k for k in tests if k not in sig]

    def moved(t: Any) -> float:
        return t.share_less if t.alternative == "less" else t.share_greater

    detail = "; ".join(f"{k} (median {tests[k].median_b:.3g} -> {tests[k].median_a:.3g}, {expect} in "
                       f"{100 * moved(tests[k]):.0f} % of {tests[k].n} images, p = {tests[k].p:.2g})"
                       for k in not_sig[:4]) + ("; ..." if len(not_sig) > 4 else "")
    fail = f"not significant in {len(not_sig)} of {n} cells: {detail}"
    passed = len(sig) == n if require == "all" else len(sig) > n / 2
    return Verdict(passed, observed, fail, inconclusive)


def flattening_verdict(table: Any, cells: Sequence[str] = CELL, *, high: float = 0.7, tol: float = 0.05) -> Verdict:
    """ReCalX's flattened confidence at high levels matches the accuracy there (a check of what it learns).

    At every level >= ``high`` of every cell, ``|mean confidence - accuracy|`` of ReCalX must be below
    ``tol`` and below the uncalibrated model's. Needs the columns ``confidence`` and ``accuracy``.
    """
    cells = list(cells)
    _check_table(table, ["method", "level", "confidence", "accuracy", *cells])
    t = table[table["level"] >= high - 1e-9].assign(gap=lambda d: (d["confidence"] - d["accuracy"]).abs())
    g = t.groupby([*cells, "level", "method"])[["gap", "confidence", "accuracy"]].mean().reset_index()
    w = g.pivot_table(index=[*cells, "level"], columns="method", values="gap", sort=False)
    rc_ok = (w["recalx"] < tol) & (w["recalx"] <= w["uncalibrated"])
    worst = w["recalx"].idxmax()
    acc = g[g["method"] == "recalx"].set_index([*cells, "level"])
    observed = (f"ReCalX |confidence - accuracy| < {tol:g} and <= the uncalibrated gap at {int(rc_ok.sum())}/{len(w)} "
                f"(cell, level >= {high}) pairs; mean gap ReCalX {w['recalx'].mean():.3f} vs uncalibrated "
                f"{w['uncalibrated'].mean():.3f}; largest ReCalX gap {w['recalx'].max():.3f} at {_cell_name(worst)} "
                f"(confidence {acc.loc[worst, 'confidence']:.2f}, accuracy {acc.loc[worst, 'accuracy']:.2f})")
    bad = [k for k, ok in rc_ok.items() if not ok]
    fail = (f"ReCalX's confidence misses the accuracy by >= {tol:g} (or more than the uncalibrated model) at "
            f"{len(bad)} of {len(w)} pairs: " + "; ".join(
                f"{_cell_name(k[:-1])} level {k[-1]:.2f} (confidence {acc.loc[k, 'confidence']:.2f}, accuracy "
                f"{acc.loc[k, 'accuracy']:.2f})" for k in bad[:4]) + ("; ..." if len(bad) > 4 else ""))
    return Verdict(bool(rc_ok.all()), observed, fail, None)
