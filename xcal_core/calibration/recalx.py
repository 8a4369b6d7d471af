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

from typing import Any, Mapping, Sequence

import torch

from .._validation import check_choice, check_int, check_labels, check_logits, check_same_length
from ..perturbations.masks import _check_levels, level_to_bin
from .temperature import DEFAULT_BOUNDS, _check_bounds, fit_temperature, warn_if_at_bound

__all__ = ["ReCalX", "level_bandwidths", "level_metrics", "evaluate_under_perturbation", "summarize_levels", "relative_reduction", "remove_and_retrain",
           "image_classifier_for"]


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



def level_bandwidths(
    probs: Mapping[str, torch.Tensor],
    levels: torch.Tensor,
    groups: torch.Tensor | None = None,
    *,
    max_rows: int | None = 2000,
    generator: torch.Generator | None = None,
) -> dict[float, float]:
    """One CE_KL bandwidth per perturbation level, chosen on the pooled predictions of all methods there.

    At each level the predictions of every method (uncalibrated, temperature scaling, ReCalX, ...) on
    the same perturbed inputs are pooled and the bandwidth maximizing their leave-one-out likelihood
    is used for all methods at that level (:func:`xcal_core.metrics.select_bandwidth_pooled`).
    Clean predictions sit in the simplex corners and get a small bandwidth; heavily perturbed ones
    spread out and get a larger one. A single bandwidth chosen on clean predictions and reused at
    every level instead makes the kernel average over a handful of neighbours at high levels, and the
    estimate then measures mostly its own bias (its floor).

    Args:
        probs: method name -> (M, K) probabilities of the same M perturbed rows.
        levels: (M,) float level of each row.
        groups: (M,) source-input id of each row (rows of one input are left out together, in every
            method's set); None: each row is its own input.
        max_rows: at most this many pooled rows per level are used to choose (random subset).
        generator: torch.Generator of those subsets (CPU).

    Returns:
        ``{level: bandwidth}`` with levels rounded to 6 decimals (the keys of :func:`level_metrics`).

    References:
        Popordanoska et al., AISTATS 2024 (LOO-likelihood bandwidth of the Dirichlet kernel).
    """
    from ..metrics.calibration import select_bandwidth_pooled

    if not isinstance(probs, Mapping) or not probs:
        raise TypeError("`probs` must be a non-empty dict: method name -> (M, K) probabilities")
    lv = _check_levels(levels).detach().flatten().cpu()
    for name, q in probs.items():
        if q.shape[0] != lv.shape[0]:
            raise ValueError(f"`probs[{name!r}]` has {q.shape[0]} rows but `levels` has {lv.shape[0]}")
    grp = torch.arange(lv.shape[0]) if groups is None else torch.as_tensor(groups).long().flatten().cpu()
    if grp.shape[0] != lv.shape[0]:
        raise ValueError(f"`groups` must have one id per row ({lv.shape[0]}), got {grp.shape[0]}")
    out = {}
    for level in torch.unique(lv).tolist():
        sel = (lv == level).nonzero().flatten()
        sets = [q[sel.to(q.device)] for q in probs.values()]
        out[round(float(level), 6)] = select_bandwidth_pooled(sets, [grp[sel]] * len(sets), max_rows=max_rows,
                                                              generator=generator)
    return out


def level_metrics(
    probs: torch.Tensor,
    labels: torch.Tensor,
    levels: torch.Tensor,
    *,
    bandwidth: float | Mapping[float, float],
    reference_pred: torch.Tensor | None = None,
    groups: torch.Tensor | None = None,
    n_bins_ece: int = 15,
    n_floor_draws: int = 0,
    generator: torch.Generator | None = None,
) -> "pd.DataFrame":
    """Calibration metrics of perturbed predictions, one row per distinct perturbation level.

    With ``n_floor_draws >= 2`` every CE_KL and ECE comes with its floor: the same estimator on the same
    predictions with every label redrawn from the predictions themselves (perfect calibration, true
    error 0; :func:`xcal_core.metrics.ce_kl_floor`, :func:`xcal_core.metrics.calibration_floor`).
    ``ce_kl_excess = ce_kl - ce_kl_floor`` is the part of the estimate that is not estimator bias.
    The floor is exact under calibration; for miscalibrated predictions the estimator's bias differs
    from it (it grows with the entropy of the true labels), so an over-confident model's excess
    overstates its CE_KL a little and an under-confident model's excess understates it and can be
    negative: ``ce_kl_z = (ce_kl - floor mean) / floor sd`` far below 0 is under-confidence.

    Args:
        probs: (M, K) probabilities of perturbed inputs.
        labels: (M,) int64 true classes.
        levels: (M,) float perturbation level of each row.
        bandwidth: Dirichlet-kernel bandwidth of ``ce_kl``: one float for every level, or
            ``{level: h}`` from :func:`level_bandwidths` (levels rounded to 6 decimals).
        reference_pred: (M,) predicted classes of the uncalibrated model; adds ``argmax_agreement``.
        groups: (M,) index of the source input of each row; ``ce_kl`` then leaves out all perturbations
            of the same input together (they share the label and, at low levels, the prediction).
        n_bins_ece: bins of the top-label ECE.
        n_floor_draws: label draws of the floors (0: no floors).
        generator: torch.Generator of the draws (CPU).

    Returns:
        DataFrame with columns ``level, n, n_inputs, bandwidth, ce_kl, ece, nll, brier, accuracy,
        confidence`` (mean top-label probability), ``argmax_agreement`` (with ``reference_pred``) and,
        with floors, ``ce_kl_floor, ce_kl_floor_sd, ce_kl_floor_q95, ce_kl_excess, ce_kl_z, ece_floor,
        ece_floor_sd, ece_excess``.

    The metrics are computed on the device of ``probs`` (``ce_kl``'s O(M^2 K) kernel sums run on the GPU
    when the probabilities are there).
    """
    import pandas as pd

    from ..metrics.calibration import brier, calibration_floor, ce_kl, ce_kl_floor, ece, nll

    n_floor_draws = check_int(n_floor_draws, "n_floor_draws", low=0)
    if n_floor_draws == 1:
        raise ValueError("`n_floor_draws` must be 0 (no floors) or >= 2 (a floor needs a spread)")
    dev = probs.device
    rows = []
    lv = levels.detach().to(dev)
    labels = labels.detach().to(dev)
    groups = None if groups is None else groups.to(dev)
    reference_pred = None if reference_pred is None else reference_pred.to(dev)
    for level in torch.unique(lv).tolist():
        key = round(float(level), 6)
        if isinstance(bandwidth, Mapping):
            if key not in bandwidth:
                raise ValueError(f"`bandwidth` has no entry for level {key}; levels present: {sorted(bandwidth)}")
            h = float(bandwidth[key])
        else:
            h = float(bandwidth)
        sel = (lv == level).nonzero().flatten()
        p, y = probs[sel].detach(), labels[sel]
        grp = None if groups is None else groups[sel]
        conf, pred = p.max(1)
        row = {"level": key, "n": len(sel), "n_inputs": len(sel) if grp is None else int(torch.unique(grp).numel()),
               "bandwidth": h}
        if n_floor_draws:
            f = ce_kl_floor(p, y, h, groups=grp, n_draws=n_floor_draws, generator=generator)
            e_floor = calibration_floor(p, "ece", n_draws=n_floor_draws, generator=generator, n_bins=n_bins_ece)
            e = ece(p, y, n_bins_ece)
            row.update({"ce_kl": f.value, "ce_kl_floor": f.floor_mean, "ce_kl_floor_sd": f.floor_sd,
                        "ce_kl_floor_q95": f.floor_q95, "ce_kl_excess": f.excess,
                        "ce_kl_z": f.excess / f.floor_sd if f.floor_sd > 0 else float("nan"),
                        "ece": e, "ece_floor": float(e_floor.mean()), "ece_floor_sd": float(e_floor.std()),
                        "ece_excess": e - float(e_floor.mean())})
        else:
            row.update({"ce_kl": ce_kl(p, y, h, groups=grp), "ece": ece(p, y, n_bins_ece)})
        row.update({"nll": nll(p, y), "brier": brier(p, y), "accuracy": float((pred == y).double().mean()),
                    "confidence": float(conf.double().mean())})
        if reference_pred is not None:
            row["argmax_agreement"] = float((pred == reference_pred[sel]).double().mean())
        rows.append(row)
    return pd.DataFrame(rows)


def _single_coalition_levels(levels: Sequence[float], d: int) -> tuple[list[float], list[float]]:
    """Split levels into those with one possible coalition (0 or d features replaced) and the others."""
    single = [lv for lv in levels if int(round(lv * d)) in (0, d)]
    return single, [lv for lv in levels if lv not in single]


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
    n_per_level: int = 1,
    bandwidth: float | None = None,
    n_floor_draws: int = 10,
    n_bins_ece: int = 15,
    max_bandwidth_rows: int | None = 2000,
    generator: torch.Generator | None = None,
    batch_size: int = 1024,
    clean_logits: torch.Tensor | None = None,
) -> dict:
    """Fit global temperature scaling and ReCalX, then measure calibration at every perturbation level.

    Temperature scaling is fit on the clean ``fit_x`` logits; ReCalX on ``n_per_bin`` random
    coalitions per fitting input and level bin. The evaluation uses ``n_per_level`` fresh coalitions per
    evaluation input and level (disjoint inputs from the fitting ones, as ReCalX's protocol asks);
    at a level with a single possible coalition (0: the clean input; 1: every feature replaced) each
    input is counted once, since its copies would be identical. CE_KL uses one bandwidth per level,
    chosen on the pooled predictions of the three methods at that level (:func:`level_bandwidths`),
    unless ``bandwidth`` fixes one for all; it leaves out all perturbations of the same evaluation
    input together (``groups``), since they share the label. Every CE_KL and ECE is reported with
    its floor (labels redrawn from the predictions; :func:`level_metrics`).

    Args:
        model: classifier returning (N, K) logits.
        fit_x, fit_y: (N_fit, *S) inputs and (N_fit,) labels for fitting the calibrators.
        eval_x, eval_y: (N_eval, *S) held-out inputs and labels for the evaluation.
        feature_mask: int64 feature ids broadcastable to one input (columns, patches).
        baseline: ``"mean"`` (needs ``train_mean``), ``"zero"`` or ``"blur"`` (``blur_sigma``).
        levels: evaluation levels in [0, 1] (default 0, 0.1, ..., 1).
        n_bins: ReCalX bins.
        n_per_bin, n_per_level: coalitions per input for fitting / evaluation.
        bandwidth: one ``ce_kl`` bandwidth for every level and method, or None for the per-level rule.
        n_floor_draws: label draws of the CE_KL and ECE floors (0: no floors).
        n_bins_ece: bins of the ECE.
        max_bandwidth_rows: pooled rows per level used to choose the bandwidth (random subset).
        generator: torch generator for all coalitions, bandwidth subsets and floor draws.
        batch_size: forward-pass chunk size (inputs per forward pass). Every forward pass runs without
            autograd and in float32 (on CUDA, cuDNN's TF32 convolutions): the temperatures and CE_KL
            are computed from these logits, so they are not rounded to half precision.
        clean_logits: optional (N_eval, K) logits of the unperturbed ``eval_x`` (e.g. already computed
            for the test accuracy, or shared by several cells of one model): level 0 then reuses them
            instead of a forward pass per input.

    Returns:
        dict with ``table`` (DataFrame: method, then the columns of :func:`level_metrics`),
        ``ts`` (:class:`TemperatureScaling`), ``recalx`` (:class:`ReCalX`), ``bandwidths``
        (``{level: h}``), ``n_forward`` (model forward passes: clean fit, fit perturbations, evaluation),
        and the raw evaluation ``logits``, ``labels``, ``levels``, ``index`` (row -> evaluation input)
        and fitting ``fit_logits``, ``fit_labels``, ``fit_levels``, ``fit_index`` (row -> fitting
        input; for ablations that refit calibrators on the same draws).
    """
    import pandas as pd

    from ..models.training import predict_logits
    from ..perturbations.baselines import make_baseline
    from ..perturbations.masks import count_features, perturbed_logits
    from .temperature import TemperatureScaling

    levels = [round(0.1 * i, 10) for i in range(11)] if levels is None else [float(v) for v in levels]
    _check_levels(torch.tensor(levels, dtype=torch.float64))
    n_per_level = check_int(n_per_level, "n_per_level", low=1)
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
    single, multi = _single_coalition_levels(levels, count_features(feature_mask))
    parts = []
    if clean_logits is not None and 0.0 in single:
        cl = check_logits(clean_logits, "clean_logits")
        if cl.shape[0] != ex.shape[0]:
            raise ValueError(f"`clean_logits` must have one row per `eval_x` input ({ex.shape[0]}), got {cl.shape[0]}")
        single = [lv for lv in single if lv != 0.0]
        n_eval = ex.shape[0]
        parts.append((cl.detach().to(dev).float(), torch.arange(n_eval, device=dev), torch.zeros(n_eval, device=dev)))
    with torch.no_grad():
        eb = base_for(ex)
        for lv_set, per in ((single, 1), (multi, n_per_level)):
            if lv_set:
                parts.append(perturbed_logits(model, ex, feature_mask, eb, levels=lv_set, n_per_level=per,
                                              generator=generator, batch_size=batch_size))
    e_logits = torch.cat([z for z, _, _ in parts]).detach().float()
    e_idx = torch.cat([i for _, i, _ in parts])
    e_lv = torch.cat([v for _, _, v in parts]).to(e_idx.device)
    # the metrics run where the logits are (the model's device): ce_kl's O(M^2 K) kernel is the costly part
    e_y = eval_y.to(e_idx.device)[e_idx]
    pred = e_logits.argmax(1)
    probs = {"uncalibrated": torch.softmax(e_logits, 1), "temperature_scaling": ts.predict_proba(e_logits),
             "recalx": rc.predict_proba(e_logits, e_lv)}
    if bandwidth is None:
        bandwidths = level_bandwidths(probs, e_lv, e_idx, max_rows=max_bandwidth_rows, generator=generator)
    else:
        h = float(bandwidth)
        if not h > 0:
            raise ValueError(f"`bandwidth` must be > 0 or None, got {bandwidth!r}")
        bandwidths = {round(float(v), 6): h for v in torch.unique(e_lv.cpu()).tolist()}
    frames = []
    for method, p in probs.items():
        df = level_metrics(p, e_y, e_lv, bandwidth=bandwidths, reference_pred=pred, groups=e_idx,
                           n_bins_ece=n_bins_ece, n_floor_draws=n_floor_draws, generator=generator)
        df.insert(0, "method", method)
        frames.append(df)
    n_forward = len(fit_x) + len(f_logits) + len(e_logits) - (0 if clean_logits is None else len(eval_x))
    return {"table": pd.concat(frames, ignore_index=True), "ts": ts, "recalx": rc, "bandwidths": bandwidths,
            "n_forward": n_forward, "logits": e_logits.cpu(), "labels": e_y.cpu(), "levels": e_lv.cpu(),
            "index": e_idx.cpu(), "fit_logits": f_logits, "fit_labels": f_y, "fit_levels": f_lv.cpu(),
            "fit_index": f_idx.cpu()}


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
    standardized features), so the retrained model cannot use it. Feature ``i`` is element ``i`` of the
    flattened input, so inputs shaped like images (digits as (1, 8, 8) pixel features) work too.
    ``k = 0`` (no removal) is always included as the reference.

    Args:
        dataset: an ``xcal_core.data.Dataset`` with tabular (N, D) splits (or (N, ...) pixel features).
        ranking: feature indices into the flattened input, most important first.
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
            if removed:  # feature i is element i of the flattened input: (N, D) rows or (N, 1, 8, 8) digits
                x.view(x.shape[0], -1)[:, removed] = fill_value
            return dataclasses.replace(split, x=x)

        ds_k = dataclasses.replace(dataset, train=strip(dataset.train), cal=strip(dataset.cal), test=strip(dataset.test))
        for seed in seeds:
            res = train_classifier(model_name, ds_k, seed=int(seed), **train_kwargs)
            logits = predict_logits(res.model, ds_k.test.x)
            rows.append({"k": k, "seed": int(seed), "removed": tuple(removed),
                         "test_loss": nll(torch.softmax(logits.cpu(), 1), ds_k.test.y)})
    return pd.DataFrame(rows)


def image_classifier_for(
    name: str,
    dataset: Any,
    *,
    seed: int = 0,
    device: Any = "cpu",
    cache_dir: Any = None,
    epochs: int = -1,
    checkpoints: Sequence[str] = (),
    data_dir: Any = None,
    allow_download: bool = False,
    standin_epochs: int = 2,
) -> tuple[torch.nn.Module, str]:
    """The image classifier of notebook 01: a shared training recipe, or a paper-profile model.

    A name in :data:`xcal_core.models.RECIPES` (``small_cnn``, ``resnet20``, ...) trains that recipe
    (:func:`~xcal_core.models.train_recipe`, cached and shared with every notebook that trains it on
    the same split and seed), unless ``CHECKPOINTS`` names a file for it. Any other name (``tv:<arch>``,
    a :func:`~xcal_core.models.build_model` name) goes through
    :func:`~xcal_core.models.load_or_train_classifier`: a local checkpoint, torchvision's pretrained
    weights, or training here (stand-ins announced).

    Args:
        name: recipe or model name.
        dataset: an ``xcal_core.data.Dataset`` with image splits.
        seed: training seed.
        device: training device.
        cache_dir: model cache folder (``run.cache_dir``).
        epochs: training epochs; -1 keeps the recipe's (for other models -1 means 0 with pretrained
            ``tv:`` weights, else the stand-in / default rule of ``load_or_train_classifier``).
        checkpoints: the notebook's ``CHECKPOINTS`` entries (``"<model>=<file>"``).
        data_dir: base folder of relative checkpoint files.
        allow_download: let torchvision download pretrained weights.
        standin_epochs: minimum training epochs on a stand-in dataset.

    Returns:
        ``(model, note)``: the model in eval mode and one line saying where its weights come from.
    """
    from ..models import RECIPES, checkpoint_for, load_or_train_classifier, train_recipe

    if not isinstance(name, str) or not name:
        raise TypeError(f"`name` must be a recipe or model name, got {name!r}")
    epochs = check_int(epochs, "epochs", low=-1)
    ck = checkpoint_for(list(checkpoints), name, dataset.info.name, data_dir)
    if name in RECIPES and ck is None:
        res = train_recipe(name, dataset, seed=seed, device=device, cache_dir=cache_dir,
                           epochs=None if epochs < 0 else epochs)
        how = "loaded from the model cache" if res.from_cache else "trained here"
        return res.model, f"{name}: recipe {RECIPES[name].model}, {res.config.get('epochs', '?')} epochs, {how}"
    model, note = load_or_train_classifier(
        RECIPES[name].model if name in RECIPES else name, dataset, epochs=max(epochs, 0),
        pretrained=name.startswith("tv:"), allow_download=allow_download, checkpoint=ck, standin_epochs=standin_epochs,
        seed=seed, device=device, cache_dir=cache_dir)
    return model, note
