"""The claims of Mulye & Valdenegro-Toro (2024) as tests with three verdicts (notebook 03).

Each function takes tables computed by :mod:`xcal_core.uq.experiment` and returns the keyword arguments
of ``Run.claim`` (``claim_id, statement, expected, observed, verdict, reason, paper``), so a notebook
records a claim with ``run.claim(**claim_lowest_cv(...))``. The criteria are fixed in advance (targets
U1-U5 of notebook 03); the verdict is

* ``holds`` when the test could have failed and did not;
* ``fails`` with the numbers that made it fail;
* ``inconclusive`` when the test has no power here (too few images, undefined values), or when the
  two CV summaries (:data:`~xcal_core.uq.CV_SUMMARIES`: the mean CV over the defined features and the
  ratio of totals) disagree, so that the answer depends on how the CV is summarised.

References:
    Mulye & Valdenegro-Toro, "Uncertainty quantification for gradient-based explanations in neural
    networks", 2024 (abstract: Guided Backpropagation has the lowest explanation uncertainty; class-level
    analysis; modified insertion / deletion; ground-truth-logit variant).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from .experiment import CV_SUMMARIES, explainer_order_stability

__all__ = [
    "PAPER_ID",
    "combine_summaries",
    "claim_lowest_cv",
    "claim_class_differences",
    "claim_beats_random",
    "claim_true_logit",
    "claim_order_stability",
]

PAPER_ID = "uq"
"""The paper id every claim of notebook 03 carries."""


def _label(summary: str) -> str:
    return CV_SUMMARIES.get(summary, summary)


def _check_tables(tables: Any, name: str) -> dict[str, pd.DataFrame]:
    if not isinstance(tables, Mapping) or not tables:
        raise ValueError(f"`{name}` must be a non-empty mapping {{CV summary: table}}, e.g. keys {list(CV_SUMMARIES)}")
    for k, t in tables.items():
        if not isinstance(t, pd.DataFrame) or t.empty:
            raise ValueError(f"`{name}[{k!r}]` must be a non-empty DataFrame")
    return dict(tables)


def combine_summaries(passed: Mapping[str, bool], details: Mapping[str, str],
                      inconclusive: str | None = None) -> dict[str, str]:
    """One verdict from the same test run on several CV summaries.

    Args:
        passed: {summary: whether the criterion was met on it}.
        details: {summary: what was measured on it, in words}.
        inconclusive: a reason why the test has no power at all (overrides everything).

    Returns:
        ``{"verdict", "reason"}``: ``holds`` if every summary passes, ``fails`` if none does, otherwise
        ``inconclusive`` (the summaries disagree, so the claim depends on how the CV is summarised).
    """
    if not passed:
        raise ValueError("`passed` is empty; expected {summary: bool}")
    missing = [k for k in passed if k not in details]
    if missing:
        raise ValueError(f"`details` lacks the summaries {missing}")
    if inconclusive:
        return {"verdict": "inconclusive", "reason": str(inconclusive)}
    ok = [k for k, v in passed.items() if v]
    bad = [k for k, v in passed.items() if not v]
    if not bad:
        return {"verdict": "holds", "reason": ""}
    if not ok:
        return {"verdict": "fails", "reason": "; ".join(f"{_label(k)}: {details[k]}" for k in bad)}
    return {"verdict": "inconclusive",
            "reason": "the two CV summaries disagree: it holds by the " + ", ".join(_label(k) for k in ok)
                      + " but not by the " + "; ".join(f"{_label(k)} ({details[k]})" for k in bad)
                      + ", so the answer depends on how the CV is summarised"}


def _result(claim_id: str, statement: str, expected: str, observed: str, verdict: dict, tag: str) -> dict[str, Any]:
    return {"claim_id": claim_id, "statement": statement + tag, "expected": expected, "observed": observed,
            "verdict": verdict["verdict"], "reason": verdict["reason"] or None, "paper": PAPER_ID}


def claim_lowest_cv(tables: Mapping[str, pd.DataFrame], *, dataset: str, explainer: str = "guided_backprop",
                    compare: Sequence[str] | None = None, need: int | None = None, claim_id: str | None = None,
                    tag: str = "") -> dict[str, Any]:
    """U1: ``explainer`` has the lowest dataset-mean CV of the compared explainers, for most UE methods.

    Args:
        tables: {CV summary: (UE method x explainer) table of dataset-mean CVs} (same images for every
            explainer), e.g. ``{s: grid.cv_table(s, inputs=n) for s in CV_SUMMARIES}``.
        dataset: dataset name (claim id ``U1_<dataset>``).
        explainer: the explainer the paper says is most certain.
        compare: the explainers it competes with (default: every column).
        need: how many UE methods it must win (default: 3 of 4, i.e. ceil(3/4 of the rows)).
        claim_id: override the id. tag: text appended to the statement (e.g. a stand-in-data notice).

    Returns:
        ``Run.claim`` keyword arguments. Inconclusive when a compared cell is undefined (NaN).
    """
    tables = _check_tables(tables, "tables")
    rows_passed, details, obs, undefined = {}, {}, [], []
    for summ, t in tables.items():
        cols = list(t.columns) if compare is None else list(compare)
        missing = [c for c in [explainer, *cols] if c not in t.columns]
        if missing:
            raise ValueError(f"`tables[{summ!r}]` lacks the explainer columns {missing}; it has {list(t.columns)}")
        if explainer not in cols:
            cols = [explainer, *cols]
        if len(cols) < 2:
            raise ValueError("`compare` must name at least one explainer besides `explainer`")
        sub = t[cols]
        k = math.ceil(0.75 * len(sub)) if need is None else int(need)
        if sub.isna().any().any():
            undefined.append(f"{_label(summ)} has undefined cells {sub.columns[sub.isna().any()].tolist()}")
        lowest = sub.idxmin(axis=1)
        wins = int((lowest == explainer).sum())
        others = [c for c in cols if c != explainer]
        margin = (sub[others].min(axis=1) - sub[explainer]) / sub[others].min(axis=1)
        rows_passed[summ] = wins >= k
        per_ue = ", ".join(f"{ue}: {ex}" for ue, ex in lowest.items())
        details[summ] = (f"{explainer} lowest for {wins}/{len(sub)} UE methods (need {k}); lowest per UE method: "
                         f"{per_ue}; {explainer}'s CV below (+) or above (-) the best other explainer's: "
                         + ", ".join(f"{ue} {m:+.0%}" for ue, m in margin.items()))
        obs.append(f"{_label(summ)}: {explainer} lowest for {wins}/{len(sub)} ({per_ue})")
    need_txt = "3 of 4" if need is None else str(need)
    verdict = combine_summaries(rows_passed, details, "; ".join(undefined) or None)
    others_txt = "the other explainers" if compare is None else ", ".join(c for c in compare if c != explainer)
    return _result(claim_id or f"U1_{dataset}",
                   f"{explainer} has the lowest explanation uncertainty (dataset-mean CV) of the explainers on {dataset}",
                   f"{explainer} lower than {others_txt} for >= {need_txt} UE methods, by both CV summaries",
                   "; ".join(obs), verdict, tag)


def claim_class_differences(kruskal: Mapping[str, pd.DataFrame], *, dataset: str, alpha: float = 0.01,
                            min_per_class: int = 5, class_counts: Mapping[int, int] | None = None,
                            claim_id: str | None = None, tag: str = "") -> dict[str, Any]:
    """U2: explanation uncertainty differs by class (Kruskal-Wallis p < ``alpha`` in at least half the combinations).

    Args:
        kruskal: {CV summary: :func:`~xcal_core.uq.class_kruskal_table` output (ue, explainer, H, p_value, n)}.
        dataset: dataset name (claim id ``U2_<dataset>``).
        alpha: significance level per combination.
        min_per_class: fewest images per class for a non-significant test to count as evidence.
        class_counts: {class: images} of the explained images. When the criterion is not met and some
            class has fewer than ``min_per_class`` images, the test had too little power: inconclusive
            (a significant test needs no such guard).
        claim_id, tag: as :func:`claim_lowest_cv`.
    """
    kruskal = _check_tables(kruskal, "kruskal")
    small = {int(c): int(n) for c, n in (class_counts or {}).items() if n < min_per_class}
    power = f"classes with fewer than {min_per_class} explained images: {small}" if small else None
    passed, details, obs = {}, {}, []
    for summ, k in kruskal.items():
        if "p_value" not in k.columns:
            raise ValueError(f"`kruskal[{summ!r}]` needs a 'p_value' column (from class_kruskal_table)")
        p = k["p_value"].dropna()
        if p.empty:
            power = power or f"no Kruskal-Wallis test could run on the {_label(summ)}"
            passed[summ], details[summ] = False, "no test"
            continue
        n_sig = int((p < alpha).sum())
        passed[summ] = n_sig >= len(p) / 2
        details[summ] = f"{n_sig}/{len(p)} combinations with p < {alpha:g} (median p = {p.median():.2g})"
        obs.append(f"{_label(summ)}: {details[summ]}")
    if passed and all(passed.values()):
        power = None  # significant everywhere: small classes did not hide anything
    return _result(claim_id or f"U2_{dataset}", f"Explanation uncertainty differs by class on {dataset}",
                   f"Kruskal-Wallis p < {alpha:g} for at least half of the UE x explainer combinations, by both CV summaries",
                   "; ".join(obs), combine_summaries(passed, details, power), tag)


def claim_beats_random(tests: pd.DataFrame, *, dataset: str,
                       explainers: Sequence[str] = ("guided_backprop", "integrated_gradients"),
                       claim_id: str | None = None, tag: str = "") -> dict[str, Any]:
    """U3: ranking pixels by the mean map beats a random ranking on deletion and insertion.

    Args:
        tests: :func:`~xcal_core.uq.ranking_tests` output (mean vs random; columns ue, explainer, mode,
            better, p_value, too_few, median_diff).
        dataset: dataset name (claim id ``U3_<dataset>``).
        explainers: the explainers the claim is about (those present in ``tests`` are judged).
        claim_id, tag: as :func:`claim_lowest_cv`.

    Returns:
        ``Run.claim`` keyword arguments: fails if any test with power fails, inconclusive if some test
        has fewer than 10 informative pairs, else holds.
    """
    need = {"ue", "explainer", "mode", "better", "p_value", "too_few"}
    if not isinstance(tests, pd.DataFrame) or not need <= set(tests.columns):
        raise ValueError(f"`tests` must be a DataFrame with columns {sorted(need)} (from ranking_tests)")
    t = tests[tests["explainer"].isin(list(explainers))]
    if t.empty:
        raise ValueError(f"`tests` holds none of the explainers {list(explainers)}")
    powered = t[~t["too_few"].astype(bool)]
    failed = powered[~powered["better"].astype(bool)]
    n_pass = int(powered["better"].astype(bool).sum())
    observed = f"{n_pass}/{len(t)} (UE, explainer, mode) tests significant (p < 0.05) in the better direction"
    if len(failed):
        reason = "not better than random: " + "; ".join(
            f"{r.ue}/{r.explainer} {r.mode} p = {r.p_value:.2g}" for r in failed.itertuples())
        verdict = {"verdict": "fails", "reason": reason}
    elif len(powered) < len(t):
        weak = t[t["too_few"].astype(bool)]
        verdict = {"verdict": "inconclusive", "reason": "fewer than 10 informative image pairs for " + ", ".join(
            f"{r.ue}/{r.explainer} {r.mode}" for r in weak.itertuples())}
    else:
        verdict = {"verdict": "holds", "reason": ""}
    return _result(claim_id or f"U3_{dataset}",
                   f"Mean maps beat a random ranking on deletion and insertion for {', '.join(explainers)} on {dataset}",
                   "Del_mu < Del_random and Ins_mu > Ins_random, paired one-sided Wilcoxon p < 0.05, for every UE method",
                   observed, verdict, tag)


def claim_true_logit(agreement: pd.DataFrame, *, dataset: str, ue_methods: Sequence[str],
                     explainers: Sequence[str], min_images: int = 30, threshold: float = 0.8,
                     claim_id: str | None = None, tag: str = "") -> dict[str, Any]:
    """U4: explaining the ground-truth logit instead of the predicted one hardly changes the mean maps.

    Judged only on images where some realisation predicts a class other than the label (elsewhere the
    two maps are identical and the agreement is 1 by construction).

    Args:
        agreement: :func:`~xcal_core.uq.true_logit_agreement` output (ue, explainer, rho, wrong_share,
            misclassified, n_available).
        dataset: dataset name (claim id ``U4_<dataset>``).
        ue_methods, explainers: every combination that must be judged (a missing one has 0 images).
        min_images: fewest images per combination for the test to have power.
        threshold: the median Spearman rho the maps must reach.
        claim_id, tag: as :func:`claim_lowest_cv`.

    Returns:
        ``Run.claim`` keyword arguments: fails if a combination with enough images has median rho below
        ``threshold``; otherwise inconclusive if some combination has fewer than ``min_images`` images;
        else holds.
    """
    need = {"ue", "explainer", "rho", "wrong_share"}
    if not isinstance(agreement, pd.DataFrame) or not need <= set(agreement.columns):
        raise ValueError(f"`agreement` must be a DataFrame with columns {sorted(need)} (from true_logit_agreement)")
    if not ue_methods or not explainers:
        raise ValueError("`ue_methods` and `explainers` must be non-empty")
    stats, few, low = [], [], []
    for ue in ue_methods:
        for ex in explainers:
            g = agreement[(agreement["ue"] == ue) & (agreement["explainer"] == ex)]
            n = len(g)
            med = float(g["rho"].median()) if n else float("nan")
            ws = float(g["wrong_share"].mean()) if n else float("nan")
            stats.append(f"{ue}/{ex}: median rho {med:.3f} on {n} images (mean share of wrong realisations {ws:.2f})")
            if n < min_images:
                few.append(f"{ue}/{ex} ({n} images)")
            elif med < threshold:
                low.append(f"{ue}/{ex} median rho {med:.3f} on {n} images")
    if low:
        verdict = {"verdict": "fails", "reason": f"median rho below {threshold} on images where some realisation "
                                                  "mispredicts: " + "; ".join(low)}
    elif few:
        verdict = {"verdict": "inconclusive", "reason": f"fewer than {min_images} images where some realisation "
                                                         "predicts another class than the label for " + ", ".join(few)}
    else:
        verdict = {"verdict": "holds", "reason": ""}
    return _result(claim_id or f"U4_{dataset}",
                   f"Explaining the ground-truth logit instead of the predicted one hardly changes the mean maps on {dataset}",
                   f"median Spearman rho >= {threshold} for every UE x explainer, over >= {min_images} images where "
                   "some realisation predicts another class than the label",
                   "; ".join(stats), verdict, tag)


def claim_order_stability(tables: Mapping[str, pd.DataFrame], *, dataset: str, tau: float = 0.67,
                          claim_id: str | None = None, tag: str = "") -> dict[str, Any]:
    """U5: the ordering of explainers by CV is the same across UE methods (Kendall tau >= ``tau`` for every pair).

    Args:
        tables: {CV summary: (UE method x explainer) table}, at least 2 rows and 2 columns each.
        dataset: dataset name (claim id ``U5_<dataset>``).
        tau: the smallest pairwise Kendall tau allowed (with three explainers only identical orderings
            reach 0.67).
        claim_id, tag: as :func:`claim_lowest_cv`.
    """
    tables = _check_tables(tables, "tables")
    passed, details, obs, undefined = {}, {}, [], []
    for summ, t in tables.items():
        if t.isna().any().any():
            undefined.append(f"{_label(summ)} has undefined cells")
            t = t.fillna(np.inf)
        tmin, pairs = explainer_order_stability(t)
        orders = {ue: " < ".join(t.loc[ue].sort_values().index) for ue in t.index}
        passed[summ] = bool(tmin >= tau)
        worst = pairs.loc[pairs["tau"].idxmin()]
        details[summ] = (f"min tau = {tmin:.2f} ({worst['ue_a']} vs {worst['ue_b']}); orderings: "
                         + "; ".join(f"{ue}: {o}" for ue, o in orders.items()))
        obs.append(f"{_label(summ)}: min tau = {tmin:.2f}")
    return _result(claim_id or f"U5_{dataset}", f"The ordering of explainers by CV is stable across UE methods on {dataset}",
                   f"Kendall tau >= {tau} between the explainer orderings of every pair of UE methods, by both CV summaries",
                   "; ".join(obs), combine_summaries(passed, details, "; ".join(undefined) or None), tag)
