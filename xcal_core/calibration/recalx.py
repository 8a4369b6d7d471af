"""ReCalX: one temperature per perturbation-level bin (Decker, Tresp, Buettner, NeurIPS 2025).

Perturbation explainers query a model on inputs whose features are partly replaced by a baseline.
A model that is calibrated on clean data is usually miscalibrated on such inputs, differently at
each perturbation level. ReCalX partitions the level range [0, 1] into ``n_bins`` equal-width bins
and fits a temperature per bin on (logit, label) pairs of perturbed validation inputs. At
explanation time each query is divided by the temperature of its own level's bin
(:meth:`ReCalX.wrap` gives a model that does this for the mask-carrying explainers of
:mod:`xcal_core.explainers.perturbation`). Temperature scaling is strictly monotone per query, so
the predicted class of every query is unchanged (Proposition 4.2 of the paper).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from .._validation import check_choice, check_int, check_labels, check_logits, check_same_length
from ..perturbations.masks import _check_levels, level_to_bin
from .temperature import DEFAULT_BOUNDS, _check_bounds, fit_temperature, warn_if_at_bound

__all__ = ["ReCalX", "level_metrics", "evaluate_under_perturbation", "summarize_levels", "relative_reduction", "remove_and_retrain"]


class ReCalX:
    """Perturbation-level-binned temperature scaling.

    Example::

        logits, idx, levels = perturbed_logits(model, x_val, fm, baseline, n_per_bin=10)
        rc = ReCalX(n_bins=10).fit(logits, y_val[idx], levels)
        rc.temperatures_                  # (10,) one temperature per bin
        rc.predict_proba(test_logits, test_levels)
        calibrated_model = rc.wrap(model) # for explain(..., method="kernel_shap", ...)

    Args:
        n_bins: number of equal-width level bins B >= 1 (B = 1 is global temperature scaling on
            perturbed data).
        bounds: (T_min, T_max) search range of each temperature.
        min_samples: bins with fewer fitting pairs than this are not fit.
        empty: temperature of unfit bins: ``"identity"`` (T = 1, the paper's choice) or
            ``"nearest"`` (the temperature of the nearest fitted bin; ties go to the lower bin).

    Attributes:
        temperatures_: (B,) float32 tensor, one temperature per bin.
        counts_: (B,) int64 tensor, fitting pairs per bin.
        fitted_bins_: (B,) bool tensor, True where the bin had >= ``min_samples`` pairs.
        n_classes_: number of classes seen in :meth:`fit`.

    References:
        Decker, Tresp, Buettner. Improving the Reliability of Perturbation-based Explanations by
        Recalibrating under Perturbation (ReCalX). NeurIPS 2025, arXiv:2511.10439.
    """

    def __init__(
        self,
        n_bins: int = 10,
        *,
        bounds: tuple[float, float] = DEFAULT_BOUNDS,
        min_samples: int = 2,
        empty: str = "identity",
    ) -> None:
        self.n_bins = check_int(n_bins, "n_bins", low=1)
        self.bounds = _check_bounds(bounds)
        self.min_samples = check_int(min_samples, "min_samples", low=1)
        self.empty = check_choice(empty, "empty", ["identity", "nearest"])

    def _levels(self, levels: Any, n: int) -> torch.Tensor:
        lv = _check_levels(levels)
        if lv.ndim != 1:
            raise ValueError(f"`levels` must be 1-D (N,), got shape {tuple(lv.shape)}")
        check_same_length("logits", range(n), "levels", lv)
        return lv

    def fit(self, logits: Any, labels: Any, levels: Any) -> "ReCalX":
        """Fit one temperature per level bin by minimizing the NLL of that bin's pairs.

        Args:
            logits: (N, K) float raw scores of perturbed validation inputs (not probabilities).
            labels: (N,) int64 true classes of the unperturbed inputs, in [0, K).
            levels: (N,) float perturbation level of each row, in [0, 1].

        Returns:
            self, with ``temperatures_``, ``counts_``, ``fitted_bins_`` set.
        """
        z = check_logits(logits, "logits")
        y = check_labels(labels, "labels", n_classes=z.shape[1], n=z.shape[0])
        lv = self._levels(levels, z.shape[0])
        bins = level_to_bin(lv, self.n_bins).cpu()
        z, y = z.detach().cpu(), y.cpu()
        temps = torch.ones(self.n_bins, dtype=torch.float64)
        counts = torch.bincount(bins, minlength=self.n_bins)
        fitted = counts >= self.min_samples
        for b in range(self.n_bins):
            if fitted[b]:
                sel = bins == b
                temps[b] = fit_temperature(z[sel], y[sel], bounds=self.bounds)
        lo, hi = self.bounds
        at_bound = [b for b in range(self.n_bins) if fitted[b] and not lo * (1 + 1e-3) < float(temps[b]) < hi * (1 - 1e-3)]
        if at_bound:
            warn_if_at_bound(float(temps[at_bound[0]]), self.bounds,
                             f"ReCalX: level bin(s) {at_bound} fitted a temperature at a bound; bin {at_bound[0]}'s")
        if self.empty == "nearest" and fitted.any():
            fit_idx = torch.nonzero(fitted).flatten()
            for b in torch.nonzero(~fitted).flatten().tolist():
                temps[b] = temps[fit_idx[torch.argmin((fit_idx - b).abs())]]
        self.temperatures_ = temps.float()
        self.counts_ = counts
        self.fitted_bins_ = fitted
        self.n_classes_ = int(z.shape[1])
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "temperatures_"):
            raise RuntimeError("ReCalX is not fitted; call .fit(logits, labels, levels) first")

    def temperature_for(self, levels: Any) -> torch.Tensor:
        """Temperature of each level's bin, (N,) float32 (on the levels' device)."""
        self._check_fitted()
        lv = _check_levels(levels)
        return self.temperatures_.to(lv.device)[level_to_bin(lv, self.n_bins)]

    def transform(self, logits: Any, levels: Any) -> torch.Tensor:
        """Calibrated logits ``logits / T[bin(level)]`` row by row, (N, K), same device as ``logits``.

        Args:
            logits: (N, K) float raw scores (not probabilities).
            levels: (N,) float perturbation level of each row, in [0, 1].
        """
        self._check_fitted()
        z = check_logits(logits, "logits")
        if z.shape[1] != self.n_classes_:
            raise ValueError(f"`logits` has {z.shape[1]} classes but ReCalX was fit on {self.n_classes_}")
        lv = self._levels(levels, z.shape[0]).to(z.device)
        return z / self.temperature_for(lv).to(z.dtype)[:, None]

    def predict_proba(self, logits: Any, levels: Any) -> torch.Tensor:
        """Calibrated probabilities ``softmax(logits / T[bin(level)])``, (N, K) rows summing to 1."""
        return torch.softmax(self.transform(logits, levels), dim=1)

    def wrap(self, model: torch.nn.Module, *, default_level: float | None = 0.0):
        """A model that divides each perturbed query's logits by its level's temperature.

        The level of a query comes from the mask-carrying explainers of
        :mod:`xcal_core.explainers.perturbation` (``shapley_sampling``, ``shapley_exact``,
        ``kernel_shap``, ``lime``, ``feature_ablation``). A forward pass that carries no level (a clean
        input, a gradient method, :func:`explain`'s probe) uses ``default_level`` (0 = clean). Do not use
        mask-less perturbation explainers (Captum's, ``occlusion``, ``rise``) on the wrapped model: their
        queries would all get the level-0 temperature. Pass ``default_level=None`` to make such calls fail.

        Args:
            model: classifier returning (N, K) logits.
            default_level: level assumed for forward passes without one (in [0, 1]) or None to raise.

        Returns:
            :class:`xcal_core.explainers.LevelAwareModel` around ``model`` (on ``model``'s device).
        """
        from ..explainers.perturbation import LevelAwareModel

        self._check_fitted()
        if default_level is not None:
            _check_levels(torch.tensor([float(default_level)]), "default_level")
        return LevelAwareModel(model, self.temperatures_, default_level=default_level)

    def __repr__(self) -> str:
        if not hasattr(self, "temperatures_"):
            return f"ReCalX(n_bins={self.n_bins}, unfitted)"
        temps = ", ".join(f"{t:.3f}" for t in self.temperatures_.tolist())
        return f"ReCalX(n_bins={self.n_bins}, temperatures_=[{temps}])"


# ----------------------------------------------------------------------------------------------
# experiment helpers (notebook 01): calibration per perturbation level, level summaries,
# remove-and-retrain
# ----------------------------------------------------------------------------------------------



def level_metrics(
    probs: torch.Tensor,
    labels: torch.Tensor,
    levels: torch.Tensor,
    *,
    bandwidth: float,
    reference_pred: torch.Tensor | None = None,
    groups: torch.Tensor | None = None,
    n_bins_ece: int = 15,
) -> "pd.DataFrame":
    """Calibration metrics of perturbed predictions, one row per distinct perturbation level.

    Args:
        probs: (M, K) probabilities of perturbed inputs.
        labels: (M,) int64 true classes.
        levels: (M,) float perturbation level of each row.
        bandwidth: Dirichlet-kernel bandwidth of ``ce_kl`` (fixed across levels and methods).
        reference_pred: (M,) predicted classes of the uncalibrated model; adds ``argmax_agreement``.
        groups: (M,) index of the source input of each row; ``ce_kl`` then leaves out all perturbations
            of the same input together (they share the label and, at low levels, the prediction).
        n_bins_ece: bins of the top-label ECE.

    Returns:
        DataFrame with columns ``level, n, ce_kl, ece, nll, brier`` (+ ``argmax_agreement``).

    The metrics are computed on the device of ``probs`` (``ce_kl``'s O(M^2 K) kernel sums run on the GPU
    when the probabilities are there).
    """
    import pandas as pd

    from ..metrics.calibration import brier, ce_kl, ece, nll

    dev = probs.device
    rows = []
    lv = levels.detach().to(dev)
    labels = labels.detach().to(dev)
    groups = None if groups is None else groups.to(dev)
    reference_pred = None if reference_pred is None else reference_pred.to(dev)
    for level in torch.unique(lv).tolist():
        sel = (lv == level).nonzero().flatten()
        p, y = probs[sel].detach(), labels[sel]
        grp = None if groups is None else groups[sel]
        row = {"level": round(float(level), 6), "n": len(sel), "ce_kl": ce_kl(p, y, bandwidth, groups=grp),
               "ece": ece(p, y, n_bins_ece), "nll": nll(p, y), "brier": brier(p, y)}
        if reference_pred is not None:
            row["argmax_agreement"] = float((p.argmax(1) == reference_pred[sel]).double().mean())
        rows.append(row)
    return pd.DataFrame(rows)


def evaluate_under_perturbation(
    model: torch.nn.Module,
    fit_x: torch.Tensor,
    fit_y: torch.Tensor,
    eval_x: torch.Tensor,
    eval_y: torch.Tensor,
    feature_mask: torch.Tensor,
    *,
    baseline: str = "mean",
    train_mean: torch.Tensor | None = None,
    blur_sigma: float = 2.0,
    levels: Any = None,
    n_bins: int = 10,
    n_per_bin: int = 10,
    n_per_level: int = 10,
    bandwidth: float | None = None,
    generator: torch.Generator | None = None,
    batch_size: int = 1024,
) -> dict:
    """Fit global temperature scaling and ReCalX, then measure calibration at every perturbation level.

    Temperature scaling is fit on the clean ``fit_x`` logits; ReCalX on ``n_per_bin`` random
    coalitions per fitting input and level bin. The evaluation uses ``n_per_level`` fresh coalitions per
    evaluation input and level (disjoint inputs from the fitting ones, as ReCalX's protocol asks).
    ``ce_kl`` uses one bandwidth for all levels and methods (chosen by leave-one-out likelihood on
    the clean evaluation predictions when None) and leaves out all perturbations of the same
    evaluation input together (``groups``), since they share the label.

    Args:
        model: classifier returning (N, K) logits.
        fit_x, fit_y: (N_fit, *S) inputs and (N_fit,) labels for fitting the calibrators.
        eval_x, eval_y: (N_eval, *S) held-out inputs and labels for the evaluation.
        feature_mask: int64 feature ids broadcastable to one input (columns, patches).
        baseline: ``"mean"`` (needs ``train_mean``), ``"zero"`` or ``"blur"`` (``blur_sigma``).
        levels: evaluation levels in [0, 1] (default 0, 0.1, ..., 1).
        n_bins: ReCalX bins.
        n_per_bin, n_per_level: coalitions per input for fitting / evaluation.
        bandwidth: ``ce_kl`` bandwidth, or None to select it.
        generator: torch generator for all coalitions.
        batch_size: forward-pass chunk size (inputs per forward pass). Every forward pass runs without
            autograd and in float32 (on CUDA, cuDNN's TF32 convolutions): the temperatures and CE_KL
            are computed from these logits, so they are not rounded to half precision.

    Returns:
        dict with ``table`` (DataFrame: method, level, n, ce_kl, ece, nll, brier, argmax_agreement),
        ``ts`` (:class:`TemperatureScaling`), ``recalx`` (:class:`ReCalX`), ``bandwidth``, and the raw
        evaluation ``logits``, ``labels``, ``levels``, ``index`` (row -> evaluation input) and fitting ``fit_logits``, ``fit_labels``,
        ``fit_levels``, ``fit_index`` (row -> fitting input; for ablations that refit calibrators on
        the same draws).
    """
    import pandas as pd

    from ..metrics.calibration import select_bandwidth
    from ..models.training import predict_logits
    from ..perturbations.baselines import make_baseline
    from ..perturbations.masks import perturbed_logits
    from .temperature import TemperatureScaling

    levels = [round(0.1 * i, 10) for i in range(11)] if levels is None else list(levels)
    dev = next(iter(model.parameters())).device if any(True for _ in model.parameters()) else torch.device("cpu")

    def base_for(x):
        return make_baseline(x, baseline, train_mean=train_mean, sigma=blur_sigma) if baseline != "zero" else torch.zeros_like(x)

    fx, ex = fit_x.to(dev), eval_x.to(dev)
    clean_fit = predict_logits(model, fx, batch_size=batch_size).cpu()
    ts = TemperatureScaling().fit(clean_fit, fit_y)
    with torch.no_grad():  # no autograd graph is kept across the chunks of perturbed forward passes
        f_logits, f_idx, f_lv = perturbed_logits(model, fx, feature_mask, base_for(fx), n_per_bin=n_per_bin, n_bins=n_bins,
                                                 generator=generator, batch_size=batch_size)
    f_logits, f_y = f_logits.detach().cpu(), fit_y.cpu()[f_idx.cpu()]
    rc = ReCalX(n_bins=n_bins).fit(f_logits, f_y, f_lv.cpu())
    with torch.no_grad():
        e_logits, e_idx, e_lv = perturbed_logits(model, ex, feature_mask, base_for(ex), levels=levels, n_per_level=n_per_level,
                                                 generator=generator, batch_size=batch_size)
    # the metrics run where the logits are (the model's device): ce_kl's O(M^2 K) kernel is the costly part
    e_logits, e_y = e_logits.detach().float(), eval_y.to(e_idx.device)[e_idx]
    pred = e_logits.argmax(1)
    if bandwidth is None:
        clean = e_lv == 0
        sel = clean if clean.any() else torch.ones_like(clean)
        bandwidth = select_bandwidth(torch.softmax(e_logits[sel], 1), groups=e_idx[sel])
    probs = {"uncalibrated": torch.softmax(e_logits, 1), "temperature_scaling": ts.predict_proba(e_logits),
             "recalx": rc.predict_proba(e_logits, e_lv)}
    frames = []
    for method, p in probs.items():
        df = level_metrics(p, e_y, e_lv, bandwidth=bandwidth, reference_pred=pred, groups=e_idx)
        df.insert(0, "method", method)
        frames.append(df)
    return {"table": pd.concat(frames, ignore_index=True), "ts": ts, "recalx": rc, "bandwidth": float(bandwidth),
            "logits": e_logits.cpu(), "labels": e_y.cpu(), "levels": e_lv.cpu(), "index": e_idx.cpu(), "fit_logits": f_logits,
            "fit_labels": f_y, "fit_levels": f_lv.cpu(), "fit_index": f_idx.cpu()}


def summarize_levels(table: "pd.DataFrame", metric: str = "ce_kl", by: Sequence[str] = ("method",)) -> "pd.DataFrame":
    """Average and maximum of a per-level metric over the levels (the paper's CE^AVG / CE^MAX).

    Args:
        table: per-level rows with columns ``level``, ``metric`` and the ``by`` columns.
        metric: column to summarize.
        by: grouping columns (e.g. ``("dataset", "model", "method")``).

    Returns:
        DataFrame with ``by`` columns, ``avg`` and ``max``.
    """
    g = table.groupby(list(by), sort=False)[metric]
    return g.agg(avg="mean", max="max").reset_index()


def relative_reduction(before: Any, after: Any) -> Any:
    """(before - after) / before: the paper's "reduction of the maximum" (0.5 = halved)."""
    return (before - after) / before


def remove_and_retrain(
    dataset: Any,
    ranking: Sequence[int],
    ks: Sequence[int],
    *,
    model_name: str = "mlp",
    seeds: Sequence[int] = (0, 1, 2),
    fill_value: float = 0.0,
    **train_kwargs: Any,
) -> "pd.DataFrame":
    """Remove the top-k features of a ranking, retrain from scratch and report the test loss.

    A removed tabular feature is set to ``fill_value`` in every split (0 = the training mean of
    standardized features), so the retrained model cannot use it. ``k = 0`` (no removal) is always
    included as the reference.

    Args:
        dataset: an ``xcal_core.data.Dataset`` with tabular (N, D) splits.
        ranking: feature indices, most important first.
        ks: numbers of removed features to evaluate (each in [1, D - 1]).
        model_name: :func:`xcal_core.models.build_model` name.
        seeds: training seeds.
        fill_value: value written into removed columns.
        **train_kwargs: passed to :func:`xcal_core.models.train_classifier` (``epochs``, ``lr``,
            ``device``, ``cache_dir``, ``model_kwargs``, ...).

    Returns:
        DataFrame with columns ``k, seed, removed, test_loss`` (mean test cross-entropy).
    """
    import dataclasses

    import pandas as pd

    from ..metrics.calibration import nll
    from ..models import predict_logits, train_classifier

    rows = []
    ranking = [int(r) for r in ranking]
    train_kwargs.setdefault("progress", False)
    for k in sorted({0, *[int(k) for k in ks]}):
        removed = ranking[:k]

        def strip(split):
            x = split.x.clone()
            if removed:
                x[:, removed] = fill_value
            return dataclasses.replace(split, x=x)

        ds_k = dataclasses.replace(dataset, train=strip(dataset.train), cal=strip(dataset.cal), test=strip(dataset.test))
        for seed in seeds:
            res = train_classifier(model_name, ds_k, seed=int(seed), **train_kwargs)
            logits = predict_logits(res.model, ds_k.test.x)
            rows.append({"k": k, "seed": int(seed), "removed": tuple(removed),
                         "test_loss": nll(torch.softmax(logits.cpu(), 1), ds_k.test.y)})
    return pd.DataFrame(rows)
