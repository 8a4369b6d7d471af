"""Grids of (UE method x explainer) explanation distributions and the paper's analyses over them.

These functions carry the experiment of notebook 03 (Mulye & Valdenegro-Toro 2024) so that the notebook
only calls them: the predictive quality of each UE method, explanation distributions for every
combination, per-input scalars joined with predictive uncertainty, ranked insertion / deletion with
paired tests, the true-logit variant on the images where it can differ, class-level Kruskal-Wallis
tests and the stability of the explainer ordering across UE methods.

References:
    Mulye & Valdenegro-Toro, "Uncertainty quantification for gradient-based explanations in neural
    networks", 2024.
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

from .. import explainers as _explainers
from .._validation import check_choice, check_int, check_labels, check_tensor
from ..metrics import accuracy, ece, nll, paired_test
from ..models.stochastic import Realisations
from .distributions import COALITIONS, explanation_distribution
from .evaluation import RankedCurves, ranked_perturbation_curves
from .summaries import (ExplanationSummary, kruskal_by_class, map_rank_correlation, pool_features,
                        predictive_uncertainty, summarize)

__all__ = [
    "CV_SUMMARIES",
    "ExplanationGrid",
    "explanation_grid",
    "predictive_scores",
    "ranked_auc_grid",
    "ranking_tests",
    "wrong_realisation_images",
    "true_logit_distribution",
    "true_logit_agreement",
    "class_kruskal_table",
    "class_error_rates",
    "pooled_cv_tables",
    "explainer_order_stability",
    "uncertainty_correlation",
    "metric_rows",
]

CV_SUMMARIES: dict[str, str] = {
    "cv_mean": "mean CV over the defined features",
    "cv_global": "ratio of totals (sum of std / sum of |mean|)",
}
"""The two per-input CV summaries every CV claim is judged on (see :mod:`xcal_core.uq.summaries`)."""


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
        """Per-input table: ue, explainer, index, label, pred, correct, the per-input summaries of
        :meth:`~xcal_core.uq.ExplanationSummary.per_input` (cv_mean, cv_median, cv_global,
        undefined_share, std_mean, mean_abs), and the predictive uncertainty of the UE method (entropy
        and mutual information for classifiers, output std for regressors)."""
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
            stat: a :meth:`ExplanationSummary.per_input` key (undefined values, NaN, are skipped).
            inputs: average over the first ``inputs`` inputs only (e.g. the LIME subset, for a like-for-like
                comparison); None uses every input each explainer explained.
        """
        f = self.frame()
        if stat not in f.columns:
            raise ValueError(f"unknown `stat` {stat!r}; expected a per-input column such as {list(CV_SUMMARIES)}")
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
    zero_tol: float = 1e-6,
    coalitions: str = "fresh",
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
        absolute, channel_reduce, rel_eps, zero_tol: summary settings (:func:`~xcal_core.uq.summarize`).
        coalitions: ``"fresh"`` or ``"shared"`` random numbers of stochastic explainers across
            realisations (:func:`~xcal_core.uq.explanation_distribution`).
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
    check_choice(coalitions, "coalitions", COALITIONS)
    n = len(x)
    counts = {}
    for ex in explainers:
        k = n if n_inputs is None or ex not in n_inputs else check_int(n_inputs[ex], f"n_inputs[{ex!r}]", low=1)
        counts[ex] = min(k, n)
    lab = None if labels is None else torch.as_tensor(labels)
    state = generator.get_state() if generator is not None else None
    grid = ExplanationGrid(x=x, labels=lab, realisations=dict(realisations), outputs={}, targets={}, n_inputs=counts,
                           settings=dict(absolute=absolute, channel_reduce=channel_reduce, rel_eps=rel_eps,
                                         zero_tol=zero_tol, target=target, coalitions=coalitions),
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
                                             coalitions=coalitions, return_targets=True, **kw)
            grid.dists[(ue, ex)] = d
            grid.summaries[(ue, ex)] = summarize(d, absolute=absolute, channel_reduce=channel_reduce, rel_eps=rel_eps,
                                                 zero_tol=zero_tol)
            if ue not in grid.targets or (tg is not None and tg.shape[1] > grid.targets[ue].shape[1]):
                grid.targets[ue] = tg
    return grid


def ranked_auc_grid(
    grid: ExplanationGrid,
    *,
    explainers: list[str] | None = None,
    n_inputs: int | None = None,
    baseline: Any = 0.0,
    step: int = 1,
    max_fraction: float = 1.0,
    feature_mask: Any = None,
    batch_size: int = 512,
    generator: torch.Generator | None = None,
) -> tuple[pd.DataFrame, dict]:
    """Insertion / deletion AUCs of the mean prediction, features ranked by mean, std and at random.

    For classifiers the tracked class is the mean prediction's argmax; for regressors the output itself.

    Args:
        grid: an :class:`ExplanationGrid`.
        explainers: the explainers to score (default all).
        n_inputs: score the first ``n_inputs`` inputs only (default every input each explainer explained).
        baseline, step, max_fraction, feature_mask, batch_size, generator: see
            :func:`~xcal_core.uq.ranked_perturbation_curves`.

    Returns:
        (tidy DataFrame with columns ue, explainer, index, ranking, mode, auc;
        {(ue, explainer): RankedCurves}).
    """
    exs = list(grid.n_inputs) if explainers is None else list(explainers)
    frames, curves = [], {}
    for (ue, ex), s in grid.summaries.items():
        if ex not in exs:
            continue
        m = s.mean.shape[0] if n_inputs is None else min(s.mean.shape[0], check_int(n_inputs, "n_inputs", low=1))
        if m < s.mean.shape[0]:
            s = ExplanationSummary(mean=s.mean[:m], std=s.std[:m], cv=s.cv[:m], eps=s.eps[:m],
                                   n_realisations=s.n_realisations, defined=s.defined[:m])
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


def ranking_tests(aucs: pd.DataFrame, *, against: str = "random", ranking: str = "mean", alpha: float = 0.05) -> pd.DataFrame:
    """Paired one-sided Wilcoxon signed-rank tests of a ranking against another, per (ue, explainer, mode).

    Deletion tests ``AUC_ranking < AUC_against`` and insertion ``AUC_ranking > AUC_against`` (the better
    direction), with :func:`~xcal_core.metrics.paired_test` over images.

    Returns:
        DataFrame with columns ue, explainer, mode, auc_<ranking>, auc_<against> (means over images),
        median_diff, p_value, n, n_informative, too_few (fewer than 10 informative pairs: no power),
        better (p < ``alpha`` in the better direction).
    """
    need = {"ue", "explainer", "index", "ranking", "mode", "auc"}
    if not isinstance(aucs, pd.DataFrame) or not need <= set(aucs.columns):
        raise ValueError(f"`aucs` must be a DataFrame with columns {sorted(need)} (from ranked_auc_grid)")
    for name, v in (("ranking", ranking), ("against", against)):
        if v not in set(aucs["ranking"]):
            raise ValueError(f"`{name}` {v!r} is not a ranking in `aucs`; it has {sorted(set(aucs['ranking']))}")
    rows = []
    for (ue, ex, mode), g in aucs.groupby(["ue", "explainer", "mode"], sort=False):
        a = g[g["ranking"] == ranking].set_index("index")["auc"]
        b = g[g["ranking"] == against].set_index("index")["auc"].reindex(a.index)
        t = paired_test(a.to_numpy(), b.to_numpy(), alternative="less" if mode == "deletion" else "greater")
        rows.append({"ue": ue, "explainer": ex, "mode": mode, f"auc_{ranking}": float(a.mean()),
                     f"auc_{against}": float(b.mean()), "median_diff": t.median_diff, "p_value": t.p, "n": t.n,
                     "n_informative": t.n_informative, "too_few": t.too_few, "better": bool(t.significant(alpha))})
    return pd.DataFrame(rows)


def predictive_scores(outputs: Mapping[str, Any], labels: Any, *, n_bins: int = 15) -> pd.DataFrame:
    """Quality of each UE method's mean prediction on labelled data.

    Args:
        outputs: {UE method: (T, N, K) logits of its T realisations} (e.g. ``Realisations.predict``), or
            (T, N, 1) regression outputs.
        labels: (N,) int64 classes, or (N,) float targets for regressors.
        n_bins: bins of the ECE.

    Returns:
        DataFrame indexed by UE method: classifiers: accuracy, nll, ece of the mean softmax
        (1/T) sum_t softmax(z_t), and n; regressors: rmse of the mean output, mean_std (mean over inputs
        of the std over realisations), n.
    """
    if not outputs:
        raise ValueError("`outputs` is empty; expected {UE method: (T, N, K) outputs}")
    rows = {}
    for ue, o in outputs.items():
        o = check_tensor(o, f"outputs[{ue!r}]", ndim=3).detach().cpu()
        if o.shape[2] == 1:
            y = check_tensor(labels, "labels", ndim=1).cpu()
            if len(y) != o.shape[1]:
                raise ValueError(f"`labels` has {len(y)} entries but `outputs[{ue!r}]` has {o.shape[1]} inputs")
            pu = predictive_uncertainty(o)
            rows[ue] = {"rmse": float(((pu["mean"] - y) ** 2).mean().sqrt()), "mean_std": float(pu["std"].mean()),
                        "n": o.shape[1]}
            continue
        y = check_labels(labels, "labels", n_classes=o.shape[2], n=o.shape[1])
        pm = torch.softmax(o.double(), -1).mean(0).float()
        rows[ue] = {"accuracy": accuracy(pm, y), "nll": nll(pm, y), "ece": ece(pm, y, n_bins=n_bins), "n": o.shape[1]}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("ue")


def pooled_cv_tables(grid: ExplanationGrid, feature_mask: Any, *, inputs: int | None = None,
                     explainers: list[str] | None = None) -> dict[str, pd.DataFrame]:
    """Dataset-mean CV tables with every map first summed within the cells of ``feature_mask``.

    The like-for-like version of :meth:`ExplanationGrid.cv_table` for explainers of different
    resolution: GBP and IG give one value per pixel, LIME one per cell; pooling every map to the same
    cells removes the advantage a coarse map has in a per-feature CV. LIME's maps are constant within
    its cells, so with equal-sized cells its pooled CV equals its per-pixel CV.

    Args:
        grid: an image :class:`ExplanationGrid` (its summary settings are reused).
        feature_mask: (H, W) cell index per pixel (e.g. LIME's mask).
        inputs: the first ``inputs`` inputs only (default: those each explainer explained).
        explainers: which explainers (default all).

    Returns:
        {summary: (UE method x explainer) table} for every key of :data:`CV_SUMMARIES`.
    """
    st = grid.settings
    exs = list(grid.n_inputs) if explainers is None else list(explainers)
    rows = []
    for (ue, ex), d in grid.dists.items():
        if ex not in exs:
            continue
        m = d.shape[1] if inputs is None else min(d.shape[1], check_int(inputs, "inputs", low=1))
        pooled = pool_features(d[:, :m], feature_mask, absolute=st.get("absolute", True),
                               channel_reduce=st.get("channel_reduce") or "sum")
        per = summarize(pooled, rel_eps=st.get("rel_eps", 1e-8), zero_tol=st.get("zero_tol", 1e-6)).per_input()
        rows.append({"ue": ue, "explainer": ex, **{k: float(np.nanmean(per[k].double().cpu().numpy()))
                                                    for k in CV_SUMMARIES}})
    if not rows:
        raise ValueError(f"the grid holds none of the explainers {exs}")
    df = pd.DataFrame(rows)
    order_ue = [u for u in grid.realisations if u in set(df["ue"])]
    order_ex = [e for e in exs if e in set(df["explainer"])]
    return {k: df.pivot(index="ue", columns="explainer", values=k).reindex(index=order_ue, columns=order_ex)
            for k in CV_SUMMARIES}


def class_error_rates(outputs: Any, labels: Any) -> pd.Series:
    """Error rate of the mean prediction per true class, (class -> share misclassified), from (T, N, K) logits."""
    o = check_tensor(outputs, "outputs", ndim=3).detach().cpu()
    y = check_labels(labels, "labels", n_classes=o.shape[2], n=o.shape[1]).numpy()
    pred = torch.softmax(o.double(), -1).mean(0).argmax(-1).numpy()
    return pd.Series(pred != y).groupby(y).mean().rename("error_rate").rename_axis("class")


def wrong_realisation_images(outputs: Any, labels: Any) -> torch.Tensor:
    """Which inputs some realisation predicts as a class other than the label, (N,) bool.

    Only there can explaining the true-class logit differ from explaining the predicted one: where every
    realisation predicts the label the two explanation distributions are identical.

    Args:
        outputs: (T, N, K) logits of T realisations. labels: (N,) int64 true classes.
    """
    o = check_tensor(outputs, "outputs", ndim=3)
    y = check_labels(labels, "labels", n_classes=o.shape[2], n=o.shape[1]).to(o.device)
    return (o.argmax(-1) != y).any(0)


def true_logit_distribution(realisations: Realisations, x: Any, labels: Any, method: str, pred_dist: Any,
                            pred_targets: Any, *, score: str = "logit", batch_size: int = 2048,
                            **method_kwargs: Any) -> torch.Tensor:
    """The ground-truth-logit explanation distribution, re-explaining only where it differs.

    E_t(x; y) equals E_t(x; argmax f^(t)(x)) wherever realisation t predicts the label, so only the
    (t, n) pairs with ``pred_targets[t, n] != labels[n]`` are explained again, one call per realisation
    on its mispredicted inputs. The result equals
    ``explanation_distribution(realisations, x, "true", method, labels=labels)`` for deterministic
    explainers (up to float rounding).

    Args:
        realisations: the T realisations. x: inputs (N, ...). labels: (N,) int64 true classes.
        method: a deterministic :func:`~xcal_core.explainers.explain` method (e.g. ``"guided_backprop"``).
        pred_dist: (T, N, ...) the predicted-logit distribution of the same inputs.
        pred_targets: (T, N) the classes it explained (``return_targets=True``).
        score, batch_size, method_kwargs: as :func:`~xcal_core.uq.explanation_distribution`.

    Returns:
        (T, N, ...) float32 distribution on x's device.
    """
    if not isinstance(realisations, Realisations):
        raise TypeError(f"`realisations` must be a Realisations, got {type(realisations).__name__}")
    x = check_tensor(x, "x")
    d = check_tensor(pred_dist, "pred_dist")
    t_all, n = len(realisations), len(x)
    if d.shape[:2] != (t_all, n) or d.shape[2:] != x.shape[1:]:
        raise ValueError(f"`pred_dist` must be (T, N, ...) = ({t_all}, {n}, {tuple(x.shape[1:])}), got {tuple(d.shape)}")
    tg = torch.as_tensor(pred_targets)
    if tuple(tg.shape) != (t_all, n):
        raise ValueError(f"`pred_targets` must be (T, N) = ({t_all}, {n}), got {tuple(tg.shape)}")
    y = check_labels(labels, "labels", n=n).to(tg.device)
    out = d.clone()
    wrong = tg != y[None]
    dev = realisations.device
    for t in torch.nonzero(wrong.any(1)).flatten().tolist():
        idx = torch.nonzero(wrong[t]).flatten()
        with realisations.frozen(t) as m:
            a = _explainers.explain(m, x[idx.to(x.device)].to(dev), y[idx].to(dev), method, score=score,
                                    batch_size=batch_size, **method_kwargs)
        out[t, idx.to(out.device)] = a.detach().float().to(out.device)
    return out


def true_logit_agreement(
    realisations: Mapping[str, Realisations],
    x: Any,
    labels: Any,
    explainers: Mapping[str, dict],
    *,
    outputs: Mapping[str, Any] | None = None,
    n_images: int = 40,
    absolute: bool = True,
    channel_reduce: str | None = None,
    batch_size: int = 2048,
) -> pd.DataFrame:
    """Predicted-logit vs ground-truth-logit mean maps, on the images where the two can differ.

    For every UE method, the first ``n_images`` inputs (in order) that some realisation predicts as a
    class other than the label (:func:`wrong_realisation_images`) are explained twice: with each
    realisation's predicted class and with the true class (:func:`true_logit_distribution`). The Spearman
    correlation of the two mean maps measures how much the variant changes the explanation. On the other
    inputs the two are identical by construction, so they would only inflate the agreement.

    Args:
        realisations: {UE method: Realisations} of a classifier.
        x: the pool of inputs (N, ...), e.g. the test split. labels: (N,) true classes.
        explainers: {deterministic explain method: keyword arguments}.
        outputs: {UE method: (T, N, K) logits on ``x``} if already computed (else predicted here).
        n_images: most inputs per UE method.
        absolute, channel_reduce: map post-processing (:func:`~xcal_core.uq.postprocess_maps`).
        batch_size: rows per forward pass.

    Returns:
        DataFrame with columns ue, explainer, index (position in ``x``), rho, wrong_share (share of the
        realisations that mispredict the input), misclassified (the mean prediction is wrong),
        n_available (how many inputs of the pool qualify for that UE method).
    """
    if not realisations:
        raise ValueError("`realisations` is empty; expected {UE method: Realisations}")
    if not explainers:
        raise ValueError("`explainers` is empty; expected {method: kwargs}")
    x = check_tensor(x, "x")
    check_int(n_images, "n_images", low=1)
    rows = []
    for ue, r in realisations.items():
        out = outputs[ue] if outputs is not None and ue in outputs else r.predict(x.to(r.device))
        out = check_tensor(out, f"outputs[{ue!r}]", ndim=3)
        if out.shape[-1] < 2:
            raise ValueError(f"`realisations[{ue!r}]` is a regressor; the true-logit variant needs a classifier")
        y = check_labels(labels, "labels", n_classes=out.shape[2], n=len(x)).to(out.device)
        qualify = wrong_realisation_images(out, y)
        idx = torch.nonzero(qualify).flatten()[:n_images]
        if len(idx) == 0:
            continue
        o = out[:, idx]
        wrong_share = (o.argmax(-1) != y[idx]).double().mean(0).cpu().numpy()
        mis = (torch.softmax(o, -1).mean(0).argmax(-1) != y[idx]).cpu().numpy()
        xs, ys = x[idx.to(x.device)], y[idx].cpu()
        for ex, kw in explainers.items():
            d, tg = explanation_distribution(r, xs, "predicted", ex, batch_size=batch_size, return_targets=True, **kw)
            d_true = true_logit_distribution(r, xs, ys, ex, d, tg.cpu(), batch_size=batch_size, **kw)
            s_p = summarize(d, absolute=absolute, channel_reduce=channel_reduce)
            s_t = summarize(d_true, absolute=absolute, channel_reduce=channel_reduce)
            rho = map_rank_correlation(s_p.mean, s_t.mean).numpy()
            rows.append(pd.DataFrame({"ue": ue, "explainer": ex, "index": idx.cpu().numpy(), "rho": rho,
                                      "wrong_share": wrong_share, "misclassified": mis,
                                      "n_available": int(qualify.sum())}))
    cols = ["ue", "explainer", "index", "rho", "wrong_share", "misclassified", "n_available"]
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=cols)


def class_kruskal_table(frame: pd.DataFrame, *, value: str = "cv_mean", by: str = "label") -> pd.DataFrame:
    """Kruskal-Wallis test of a per-input value across classes, per (ue, explainer).

    Args:
        frame: :meth:`ExplanationGrid.frame` output. value: the per-input column. by: the class column.

    Returns:
        DataFrame with columns ue, explainer, H, p_value, n (inputs with a defined value),
        highest_class (largest mean value; -1 if none is defined).
    """
    if by not in frame.columns or value not in frame.columns:
        raise ValueError(f"`frame` needs columns {by!r} and {value!r}")
    rows = []
    for (ue, ex), g in frame.groupby(["ue", "explainer"], sort=False):
        try:
            h, p = kruskal_by_class(torch.tensor(g[value].to_numpy(dtype=float)), torch.tensor(g[by].to_numpy()))
        except ValueError:
            h, p = float("nan"), float("nan")
        means = g.groupby(by)[value].mean().dropna()
        top = int(means.idxmax()) if len(means) else -1
        rows.append({"ue": ue, "explainer": ex, "H": h, "p_value": p, "n": int(g[value].notna().sum()),
                     "highest_class": top})
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
                agreement: pd.DataFrame | None = None, scores: pd.DataFrame | None = None,
                kruskal: Mapping[str, pd.DataFrame] | None = None, method_suffix: str = "") -> pd.DataFrame:
    """Tidy metric rows (the runs format) of one dataset; ``model`` is the UE method, ``method`` the explainer.

    * experiment ``explanation_uncertainty``: ``cv_mean`` (mean CV over the defined features),
      ``cv_global`` (ratio of totals), ``undefined_share`` and ``std_mean``, each averaged over inputs;
    * ``insertion_deletion/<ranking>``: ``ins_auc`` / ``del_auc`` (means over inputs);
    * ``true_logit``: ``median_rho`` and ``n_images`` (the images where the variant can differ);
    * ``predictive``: the mean prediction's ``accuracy``, ``nll``, ``ece`` (or ``rmse``), method
      ``mean_prediction``;
    * ``class_differences``: Kruskal-Wallis ``kruskal_p_<summary>`` per ``{summary: class_kruskal_table}``.

    Undefined values (NaN) are left out. ``method_suffix`` is appended to explainer names (e.g. a variant).

    Returns:
        DataFrame with columns experiment, dataset, model, method, metric, level, value, higher_is_better.
    """
    rows = []

    def add(experiment, model, method, metric_name, value, hib):
        if value is not None and np.isfinite(value):
            rows.append(dict(experiment=experiment, dataset=dataset, model=model, method=method, metric=metric_name,
                             level=float("nan"), value=float(value), higher_is_better=bool(hib)))

    for (ue, ex), g in frame.groupby(["ue", "explainer"], sort=False):
        for metric_name in ("cv_mean", "cv_global", "undefined_share", "std_mean"):
            if metric_name in g.columns:
                add("explanation_uncertainty", ue, ex + method_suffix, metric_name, g[metric_name].mean(), False)
    if aucs is not None:
        for (ue, ex, rk, mode), g in aucs.groupby(["ue", "explainer", "ranking", "mode"], sort=False):
            add(f"insertion_deletion/{rk}", ue, ex + method_suffix, "ins_auc" if mode == "insertion" else "del_auc",
                g["auc"].mean(), mode == "insertion")
    if agreement is not None and len(agreement):
        for (ue, ex), g in agreement.groupby(["ue", "explainer"], sort=False):
            add("true_logit", ue, ex + method_suffix, "median_rho", g["rho"].median(), True)
            add("true_logit", ue, ex + method_suffix, "n_images", float(len(g)), True)
    if scores is not None:
        hib = {"accuracy": True, "nll": False, "ece": False, "rmse": False}
        for ue, row in scores.iterrows():
            for metric_name, h in hib.items():
                if metric_name in row.index:
                    add("predictive", str(ue), "mean_prediction", metric_name, row[metric_name], h)
    if kruskal is not None:
        for summary, table in kruskal.items():
            for _, row in table.iterrows():
                add("class_differences", row["ue"], row["explainer"] + method_suffix, f"kruskal_p_{summary}",
                    row["p_value"], False)
    return pd.DataFrame(rows, columns=["experiment", "dataset", "model", "method", "metric", "level", "value",
                                       "higher_is_better"])
