"""Grids of (UE method x explainer) explanation distributions and the paper's analyses over them.

These functions carry the experiment of notebook 03 (Mulye & Valdenegro-Toro 2024) so that the notebook
only calls them: explanation distributions for every combination, per-input scalars joined with
predictive uncertainty, ranked insertion / deletion with paired tests, the true-logit variant, class-level
Kruskal-Wallis tests and the stability of the explainer ordering across UE methods.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import stats

from .._validation import check_int, check_tensor
from ..models.stochastic import Realisations
from .distributions import explanation_distribution
from .evaluation import RankedCurves, ranked_perturbation_curves
from .summaries import kruskal_by_class, map_rank_correlation, predictive_uncertainty, summarize

__all__ = [
    "ExplanationGrid",
    "explanation_grid",
    "ranked_auc_grid",
    "ranking_tests",
    "true_logit_agreement",
    "class_kruskal_table",
    "explainer_order_stability",
    "uncertainty_correlation",
    "metric_rows",
]


@dataclass
class ExplanationGrid:
    """Explanation distributions of every (UE method, explainer) pair on the same inputs.

    Attributes:
        x: inputs (N, ...); labels: (N,) true labels (or None).
        realisations: {ue: Realisations}.
        outputs: {ue: (T, N, K) realisation outputs}.
        targets: {ue: (T, N) explained classes, or None for regressors}.
        n_inputs: {explainer: how many leading inputs it explained (LIME may use a subset)}.
        dists: {(ue, explainer): (T, n, ...) raw attributions}.
        summaries: {(ue, explainer): ExplanationSummary of the post-processed maps}.
        settings: the summary settings (absolute, channel_reduce, rel_eps).
        explainers: {explainer: keyword arguments used} (reused by :func:`true_logit_agreement`).
    """

    x: torch.Tensor
    labels: torch.Tensor | None
    realisations: dict
    outputs: dict
    targets: dict
    n_inputs: dict
    dists: dict = field(default_factory=dict)
    summaries: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    explainers: dict = field(default_factory=dict)

    @property
    def regression(self) -> bool:
        return next(iter(self.outputs.values())).shape[-1] == 1

    def frame(self) -> pd.DataFrame:
        """Per-input table: ue, explainer, index, label, pred, correct, cv_mean, cv_median, std_mean,
        mean_abs, cv_global, and the predictive uncertainty of the UE method (entropy and mutual
        information for classifiers, output std for regressors)."""
        rows = []
        for (ue, ex), s in self.summaries.items():
            n = s.mean.shape[0]
            per = {k: v.detach().cpu().numpy() for k, v in s.per_input().items()}
            pu = predictive_uncertainty(self.outputs[ue][:, :n])
            df = pd.DataFrame({"ue": ue, "explainer": ex, "index": np.arange(n), **per})
            if self.regression:
                df["pred"] = pu["mean"].cpu().numpy()
                df["pred_std"] = pu["std"].cpu().numpy()
                if self.labels is not None:
                    df["label"] = self.labels[:n].cpu().numpy()
            else:
                pred = pu["mean_probs"].argmax(-1).cpu().numpy()
                df["pred"] = pred
                df["entropy"] = pu["entropy"].cpu().numpy()
                df["mutual_information"] = pu["mutual_information"].cpu().numpy()
                if self.labels is not None:
                    lab = self.labels[:n].cpu().numpy()
                    df["label"] = lab
                    df["correct"] = pred == lab
            rows.append(df)
        return pd.concat(rows, ignore_index=True)

    def cv_table(self, stat: str = "cv_mean", inputs: int | None = None) -> pd.DataFrame:
        """Dataset mean of a per-input scalar as a (UE method x explainer) table.

        Args:
            stat: a :meth:`ExplanationSummary.per_input` key.
            inputs: average over the first ``inputs`` inputs only (e.g. the LIME subset, for a like-for-like
                comparison); None uses every input each explainer explained.
        """
        f = self.frame()
        if inputs is not None:
            f = f[f["index"] < inputs]
        t = f.pivot_table(index="ue", columns="explainer", values=stat, aggfunc="mean")
        return t.reindex(index=list(self.realisations), columns=list(self.n_inputs))


def explanation_grid(
    realisations: Mapping[str, Realisations],
    x: Any,
    explainers: Mapping[str, dict],
    *,
    labels: Any = None,
    target: str = "predicted",
    n_inputs: Mapping[str, int] | None = None,
    absolute: bool = True,
    channel_reduce: str | None = None,
    rel_eps: float = 1e-8,
    batch_size: int = 2048,
    generator: torch.Generator | None = None,
) -> ExplanationGrid:
    """Explanation distributions and summaries for every (UE method, explainer) pair.

    Args:
        realisations: {UE method name: Realisations}.
        x: inputs (N, ...) float32.
        explainers: {explain method name: keyword arguments for it} (e.g. ``{"lime": {"n_samples": 500,
            "feature_mask": mask}}``).
        labels: (N,) true labels (classes, or regression targets), used for ``target="true"`` and the tables.
        target: see :func:`~xcal_core.uq.realisation_targets` (``"output"`` for regressors).
        n_inputs: {explainer: number of leading inputs to explain} (default all N), e.g. fewer for LIME.
        absolute, channel_reduce, rel_eps: summary settings (:func:`~xcal_core.uq.summarize`).
        batch_size: rows per forward pass (see :func:`~xcal_core.uq.explanation_distribution`).
        generator: generator for stochastic explainers; each (UE, explainer) pair starts from its state.

    Returns:
        :class:`ExplanationGrid`.
    """
    if not realisations:
        raise ValueError("`realisations` is empty; expected {UE method: Realisations}")
    if not explainers:
        raise ValueError("`explainers` is empty; expected {method: kwargs}")
    x = check_tensor(x, "x")
    n = len(x)
    counts = {}
    for ex in explainers:
        k = n if n_inputs is None or ex not in n_inputs else check_int(n_inputs[ex], f"n_inputs[{ex!r}]", low=1)
        counts[ex] = min(k, n)
    lab = None if labels is None else torch.as_tensor(labels)
    state = generator.get_state() if generator is not None else None
    grid = ExplanationGrid(x=x, labels=lab, realisations=dict(realisations), outputs={}, targets={}, n_inputs=counts,
                           settings=dict(absolute=absolute, channel_reduce=channel_reduce, rel_eps=rel_eps, target=target),
                           explainers={k: dict(v) for k, v in explainers.items()})
    for ue, r in realisations.items():
        grid.outputs[ue] = r.predict(x.to(r.device), batch_size=max(1, batch_size // len(r))).to(x.device)
        for ex, kw in explainers.items():
            m = counts[ex]
            g = None
            if state is not None:
                g = torch.Generator(device=generator.device)
                g.set_state(state)
            cls_labels = lab[:m] if (lab is not None and target == "true") else None
            d, tg = explanation_distribution(r, x[:m], target, ex, labels=cls_labels, batch_size=batch_size, generator=g,
                                             return_targets=True, **kw)
            grid.dists[(ue, ex)] = d
            grid.summaries[(ue, ex)] = summarize(d, absolute=absolute, channel_reduce=channel_reduce, rel_eps=rel_eps)
            if ue not in grid.targets or (tg is not None and tg.shape[1] > grid.targets[ue].shape[1]):
                grid.targets[ue] = tg
    return grid


def ranked_auc_grid(
    grid: ExplanationGrid,
    *,
    explainers: list[str] | None = None,
    baseline: Any = 0.0,
    step: int = 1,
    max_fraction: float = 1.0,
    feature_mask: Any = None,
    batch_size: int = 512,
    generator: torch.Generator | None = None,
) -> tuple[pd.DataFrame, dict]:
    """Insertion / deletion AUCs of the mean prediction, features ranked by mean, std and at random.

    For classifiers the tracked class is the mean prediction's argmax; for regressors the output itself.

    Returns:
        (tidy DataFrame with columns ue, explainer, index, ranking, mode, auc;
        {(ue, explainer): RankedCurves}).
    """
    exs = list(grid.n_inputs) if explainers is None else list(explainers)
    frames, curves = [], {}
    for (ue, ex), s in grid.summaries.items():
        if ex not in exs:
            continue
        m = s.mean.shape[0]
        out = grid.outputs[ue][:, :m]
        if out.shape[-1] == 1:
            tgt = torch.zeros(m, dtype=torch.long)
        else:
            tgt = torch.softmax(out, -1).mean(0).argmax(-1)
        rc: RankedCurves = ranked_perturbation_curves(grid.realisations[ue], grid.x[:m], s, tgt.to(grid.x.device),
                                                      baseline=baseline, step=step, max_fraction=max_fraction,
                                                      feature_mask=feature_mask, batch_size=batch_size, generator=generator)
        curves[(ue, ex)] = rc
        df = rc.to_frame()
        df.insert(0, "explainer", ex)
        df.insert(0, "ue", ue)
        frames.append(df)
    if not frames:
        raise ValueError(f"no summaries for `explainers` {exs}")
    return pd.concat(frames, ignore_index=True), curves


def ranking_tests(aucs: pd.DataFrame, *, against: str = "random", ranking: str = "mean") -> pd.DataFrame:
    """Paired one-sided Wilcoxon signed-rank tests of a ranking against another, per (ue, explainer, mode).

    Deletion tests ``AUC_ranking < AUC_against`` and insertion ``AUC_ranking > AUC_against`` (the better
    direction). Columns: ue, explainer, mode, auc_<ranking>, auc_<against>, p_value, better (mean AUC in
    the better direction and p < 0.05), n.
    """
    need = {"ue", "explainer", "index", "ranking", "mode", "auc"}
    if not isinstance(aucs, pd.DataFrame) or not need <= set(aucs.columns):
        raise ValueError(f"`aucs` must be a DataFrame with columns {sorted(need)} (from ranked_auc_grid)")
    rows = []
    for (ue, ex, mode), g in aucs.groupby(["ue", "explainer", "mode"], sort=False):
        a = g[g["ranking"] == ranking].set_index("index")["auc"]
        b = g[g["ranking"] == against].set_index("index")["auc"].reindex(a.index)
        alt = "less" if mode == "deletion" else "greater"
        diff = (a - b).to_numpy()
        p = float(stats.wilcoxon(a.to_numpy(), b.to_numpy(), alternative=alt).pvalue) if np.any(diff != 0) and len(a) > 1 else 1.0
        good = (a.mean() < b.mean()) if mode == "deletion" else (a.mean() > b.mean())
        rows.append({"ue": ue, "explainer": ex, "mode": mode, f"auc_{ranking}": float(a.mean()), f"auc_{against}": float(b.mean()),
                     "p_value": p, "better": bool(good and p < 0.05), "n": len(a)})
    return pd.DataFrame(rows)


def true_logit_agreement(grid: ExplanationGrid, explainers: list[str], *, batch_size: int = 2048,
                         explainer_kwargs: Mapping[str, dict] | None = None) -> pd.DataFrame:
    """Spearman correlation between the mean maps of the predicted-logit and the true-logit variants.

    For every UE method and explainer, the distribution is recomputed with ``target="true"`` on the same
    realisations and with the grid's explainer settings (``explainer_kwargs`` overrides them); the two
    variants differ only in realisations whose argmax is not the label.

    Returns:
        DataFrame with columns ue, explainer, index, rho, any_wrong (some realisation mispredicts),
        misclassified (the mean prediction is wrong).
    """
    if grid.labels is None or grid.regression:
        raise ValueError("`grid` must come from a classifier with `labels` for the true-logit variant")
    kw_all = explainer_kwargs or {}
    rows = []
    for ue, r in grid.realisations.items():
        for ex in explainers:
            if (ue, ex) not in grid.summaries:
                raise ValueError(f"`explainers` entry {ex!r} is not in the grid")
            s_pred = grid.summaries[(ue, ex)]
            m = s_pred.mean.shape[0]
            kw = {**grid.explainers.get(ex, {}), **kw_all.get(ex, {})}
            d = explanation_distribution(r, grid.x[:m], "true", ex, labels=grid.labels[:m], batch_size=batch_size, **kw)
            st = grid.settings
            s_true = summarize(d, absolute=st["absolute"], channel_reduce=st["channel_reduce"], rel_eps=st["rel_eps"])
            rho = map_rank_correlation(s_pred.mean, s_true.mean).numpy()
            out = grid.outputs[ue][:, :m]
            lab = grid.labels[:m].to(out.device)
            any_wrong = (out.argmax(-1) != lab).any(0).cpu().numpy()
            mis = (torch.softmax(out, -1).mean(0).argmax(-1) != lab).cpu().numpy()
            rows.append(pd.DataFrame({"ue": ue, "explainer": ex, "index": np.arange(m), "rho": rho,
                                      "any_wrong": any_wrong, "misclassified": mis}))
    return pd.concat(rows, ignore_index=True)


def class_kruskal_table(frame: pd.DataFrame, *, value: str = "cv_mean", by: str = "label") -> pd.DataFrame:
    """Kruskal-Wallis test of a per-input value across classes, per (ue, explainer).

    Args:
        frame: :meth:`ExplanationGrid.frame` output. value: the per-input column. by: the class column.

    Returns:
        DataFrame with columns ue, explainer, H, p_value, n, highest_class (largest mean value).
    """
    if by not in frame.columns or value not in frame.columns:
        raise ValueError(f"`frame` needs columns {by!r} and {value!r}")
    rows = []
    for (ue, ex), g in frame.groupby(["ue", "explainer"], sort=False):
        try:
            h, p = kruskal_by_class(torch.tensor(g[value].to_numpy(dtype=float)), torch.tensor(g[by].to_numpy()))
        except ValueError:
            h, p = float("nan"), float("nan")
        top = g.groupby(by)[value].mean().idxmax()
        rows.append({"ue": ue, "explainer": ex, "H": h, "p_value": p, "n": len(g), "highest_class": int(top)})
    return pd.DataFrame(rows)


def explainer_order_stability(table: pd.DataFrame) -> tuple[float, pd.DataFrame]:
    """Kendall tau between the explainer orderings (by a table's values) of every pair of UE methods.

    Args:
        table: (UE method x explainer) table, e.g. :meth:`ExplanationGrid.cv_table`.

    Returns:
        (minimum pairwise tau, DataFrame with columns ue_a, ue_b, tau).
    """
    if not isinstance(table, pd.DataFrame) or table.shape[0] < 2 or table.shape[1] < 2:
        raise ValueError("`table` must have at least 2 UE rows and 2 explainer columns")
    rows = []
    for a, b in combinations(table.index, 2):
        tau = stats.kendalltau(table.loc[a].to_numpy(), table.loc[b].to_numpy()).statistic
        rows.append({"ue_a": a, "ue_b": b, "tau": float(tau)})
    df = pd.DataFrame(rows)
    return float(df["tau"].min()), df


def uncertainty_correlation(frame: pd.DataFrame, *, x: str = "entropy", y: str = "cv_mean") -> pd.DataFrame:
    """Spearman correlation between two per-input columns (e.g. predictive entropy vs explanation CV).

    Returns:
        DataFrame per (ue, explainer) with columns ue, explainer, spearman, p_value, n.
    """
    if x not in frame.columns or y not in frame.columns:
        raise ValueError(f"`frame` needs columns {x!r} and {y!r}")
    rows = []
    for (ue, ex), g in frame.groupby(["ue", "explainer"], sort=False):
        a, b = g[x].to_numpy(dtype=float), g[y].to_numpy(dtype=float)
        if len(a) > 2 and np.ptp(a) > 0 and np.ptp(b) > 0:
            r = stats.spearmanr(a, b)
            rho, p = float(r.statistic), float(r.pvalue)
        else:
            rho, p = float("nan"), float("nan")
        rows.append({"ue": ue, "explainer": ex, "spearman": rho, "p_value": p, "n": len(g)})
    return pd.DataFrame(rows)


def metric_rows(dataset: str, frame: pd.DataFrame, *, aucs: pd.DataFrame | None = None,
                agreement: pd.DataFrame | None = None, by_class: bool = True) -> pd.DataFrame:
    """Tidy metric rows (the runs format) from the per-input tables of one dataset.

    * ``cv_mean`` / ``std_mean`` per (UE method = ``model``, explainer = ``method``), experiment
      ``explanation_uncertainty``; per class (``level`` = class) in ``explanation_uncertainty_by_class``;
    * ``ins_auc`` / ``del_auc`` per ranking, experiment ``insertion_deletion/<ranking>``;
    * ``rank_corr_true_vs_pred`` (median Spearman), experiment ``true_logit``.

    Returns:
        DataFrame with columns experiment, dataset, model, method, metric, level, value, higher_is_better.
    """
    rows = []
    for (ue, ex), g in frame.groupby(["ue", "explainer"], sort=False):
        for metric_name in ("cv_mean", "std_mean"):
            rows.append(dict(experiment="explanation_uncertainty", dataset=dataset, model=ue, method=ex, metric=metric_name,
                             level=float("nan"), value=float(g[metric_name].mean()), higher_is_better=False))
            if by_class and "label" in g.columns and "correct" in g.columns:
                for c, gc in g.groupby("label"):
                    rows.append(dict(experiment="explanation_uncertainty_by_class", dataset=dataset, model=ue, method=ex,
                                     metric=metric_name, level=float(c), value=float(gc[metric_name].mean()), higher_is_better=False))
    if aucs is not None:
        for (ue, ex, rk, mode), g in aucs.groupby(["ue", "explainer", "ranking", "mode"], sort=False):
            rows.append(dict(experiment=f"insertion_deletion/{rk}", dataset=dataset, model=ue, method=ex,
                             metric="ins_auc" if mode == "insertion" else "del_auc", level=float("nan"),
                             value=float(g["auc"].mean()), higher_is_better=mode == "insertion"))
    if agreement is not None:
        for (ue, ex), g in agreement.groupby(["ue", "explainer"], sort=False):
            rows.append(dict(experiment="true_logit", dataset=dataset, model=ue, method=ex, metric="rank_corr_true_vs_pred",
                             level=float("nan"), value=float(g["rho"].median()), higher_is_better=True))
    return pd.DataFrame(rows)
