"""Mask-carrying, batched perturbation explainers and the level-aware (ReCalX) model wrapper.

Every explainer here works on *features* defined by a feature mask (tabular columns, image patches,
superpixels; see :mod:`xcal_core.perturbations.masks`). It builds coalitions (bool keep masks over
the features, True = kept), evaluates all perturbed inputs ``where(kept, x, baseline)`` of all
samples in chunked forward passes of at most ``batch_size`` inputs, and turns the scores into one
attribution per feature, spread over the feature's input elements (attributions are shaped like
``x``; every element of a feature carries the feature's value, as in Captum).

While a chunk is evaluated, the perturbation level of each of its rows (fraction of replaced
features, from the coalition itself) is published through :func:`coalition_levels`. A
:class:`LevelAwareModel` reads it and divides every query's logits by the temperature of its own
level's bin, which is how ReCalX recalibrates explanations (``ReCalX(...).fit(...).wrap(model)``).
Because the coalitions depend only on ``generator``, re-running an explainer with an identically
seeded generator on the uncalibrated and the recalibrated model uses the very same coalitions.

Estimators (same estimators as Captum's ShapleyValueSampling / KernelShap / Lime /
FeatureAblation, cross-checked in ``tests/test_explainers_perturbation.py``):

* ``feature_ablation``: phi_i = v(all) - v(all without i).
* ``shapley_sampling``: permutation sampling with antithetic pairs (each permutation and its
  reverse), Castro et al. 2009; Mitchell et al. 2022.
* ``shapley_exact``: all 2^d coalitions (d <= 16), the reference for the samplers.
* ``kernel_shap``: Lundberg & Lee 2017; coalition sizes drawn from the Shapley kernel, the full and
  empty coalitions weighted 1e6, weighted linear regression with intercept.
* ``lime``: Ribeiro et al. 2016; Bernoulli(1/2) coalitions, exponential kernel on the cosine
  distance between the coalition and the full coalition, weighted (ridge) regression with intercept.
"""

from __future__ import annotations

import contextlib
import math
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Iterator

import torch

from .._validation import check_int, check_positive, check_tensor, model_device
from ..perturbations.baselines import BASELINES, make_baseline
from ..perturbations.masks import _LEVEL_EPS, _broadcastable, level_to_bin, perturbation_level
from ._registry import register

__all__ = [
    "LevelAwareModel",
    "forward_autocast",
    "coalition_levels",
    "current_levels",
    "evaluate_coalitions",
    "feature_ablation",
    "shapley_sampling",
    "shapley_exact",
    "kernel_shap",
    "lime",
    "lime_cosine_kernel",
]

DEFAULT_BATCH_SIZE = 256
_LEVELS: ContextVar[torch.Tensor | None] = ContextVar("xcal_coalition_levels", default=None)


# ----------------------------------------------------------------------------------------------
# mixed precision of the forward passes
# ----------------------------------------------------------------------------------------------

def forward_autocast(device: torch.device | str, amp: bool, dtype: torch.dtype = torch.float16):
    """Context for the model's forward passes: ``torch.autocast`` on CUDA when ``amp``, else nothing.

    Mixed precision only runs on CUDA devices (on the CPU it would be slower, and the result would
    change); callers cast the scores they keep to float32. ``float16`` (default) keeps 11 bits of the
    logits' mantissa, enough for scores that are averaged (RISE) or compared; ``bfloat16`` has float32's
    range, which gradients of a loss (Meaningful Perturbation's mask) need without a loss scale.

    Args:
        device: the device the model runs on.
        amp: turn mixed precision on (ignored unless ``device`` is CUDA).
        dtype: ``torch.float16`` or ``torch.bfloat16``.

    Returns:
        A context manager.
    """
    if not isinstance(amp, bool):
        raise TypeError(f"`amp` must be a bool, got {type(amp).__name__}")
    if dtype not in (torch.float16, torch.bfloat16):
        raise ValueError(f"`dtype` must be torch.float16 or torch.bfloat16, got {dtype}")
    if amp and torch.device(device).type == "cuda":
        return torch.autocast(device_type="cuda", dtype=dtype)
    return contextlib.nullcontext()


# ----------------------------------------------------------------------------------------------
# level plumbing and the level-aware wrapper
# ----------------------------------------------------------------------------------------------

@contextmanager
def coalition_levels(levels: torch.Tensor) -> Iterator[None]:
    """Publish the perturbation level of each row of the next forward pass(es).

    Args:
        levels: (B,) float levels in [0, 1], one per row of the batch being evaluated.
    """
    token = _LEVELS.set(levels)
    try:
        yield
    finally:
        _LEVELS.reset(token)


def current_levels() -> torch.Tensor | None:
    """Levels published by the innermost :func:`coalition_levels` block (None outside one)."""
    return _LEVELS.get()


class LevelAwareModel(torch.nn.Module):
    """Divides a classifier's logits by a temperature chosen by each query's perturbation level.

    With B temperatures, a query of level ``l`` uses ``temperatures[min(floor(l * B), B - 1)]``.
    The level comes from ``levels=`` or from the mask-carrying explainers of this module (through
    :func:`coalition_levels`). A single temperature (B = 1, global temperature scaling) needs no level.

    Args:
        model: classifier returning (N, K) logits.
        temperatures: (B,) positive temperatures, one per equal-width level bin.
        default_level: level used when a forward pass carries no level (e.g. ``0.0`` for clean inputs);
            ``None`` (default) raises instead, so a mask-less explainer (e.g. Captum's) cannot silently
            use the wrong temperature.

    Returns from forward:
        (N, K) recalibrated logits.
    """

    def __init__(self, model: torch.nn.Module, temperatures: Any, *, default_level: float | None = None) -> None:
        super().__init__()
        t = check_tensor(temperatures, "temperatures", ndim=(0, 1)).flatten()
        if (t <= 0).any():
            raise ValueError(f"`temperatures` must be > 0, got min {float(t.min()):.3g}")
        self.model = model
        self.register_buffer("temperatures", t.to(model_device(model)))
        self.default_level = default_level

    @property
    def n_bins(self) -> int:
        return int(self.temperatures.numel())

    def forward(self, x: torch.Tensor, levels: torch.Tensor | None = None) -> torch.Tensor:
        z = self.model(x)
        if self.n_bins == 1:
            return z / self.temperatures[0]
        published = levels is None
        lv = levels if levels is not None else current_levels()
        if lv is None:
            if self.default_level is None:
                raise RuntimeError(
                    "LevelAwareModel was called without perturbation levels: use a mask-carrying explainer "
                    "(shapley_sampling, shapley_exact, kernel_shap, lime, feature_ablation), pass levels=..., "
                    "or build it with default_level=0.0 for clean inputs"
                )
            lv = torch.full((z.shape[0],), float(self.default_level), device=z.device)
        lv = torch.as_tensor(lv, device=z.device)
        if lv.shape != (z.shape[0],):
            raise ValueError(f"`levels` must have shape ({z.shape[0]},) to match the batch, got {tuple(lv.shape)}")
        if published:  # computed from the coalitions by the explainer: valid, and checking them would sync the device
            bins = torch.floor(lv.double() * self.n_bins + _LEVEL_EPS).long().clamp_(0, self.n_bins - 1)
        else:
            bins = level_to_bin(lv, self.n_bins)
        t = self.temperatures[bins.to(z.device)]
        return z / t.to(z.dtype)[:, None]


# ----------------------------------------------------------------------------------------------
# shared machinery
# ----------------------------------------------------------------------------------------------

def _targets(target: Any, n: int, device: torch.device) -> torch.Tensor:
    if isinstance(target, int):
        return torch.full((n,), target, dtype=torch.long, device=device)
    t = torch.as_tensor(target, device=device).long().flatten()
    if t.numel() == 1:
        return t.expand(n).clone()
    if t.numel() != n:
        raise ValueError(f"`target` must be an int or have one entry per sample ({n}), got {t.numel()}")
    return t


def _baseline(x: torch.Tensor, baseline: Any, blur_sigma: float, train_mean: Any) -> torch.Tensor:
    if isinstance(baseline, str):
        if baseline not in BASELINES:
            raise ValueError(f"unknown `baseline` {baseline!r}; expected one of {list(BASELINES)}, a float or a tensor")
        if baseline == "noise":
            raise ValueError("`baseline`='noise' is random; draw it with make_baseline(x, 'noise', generator=...) and pass the tensor")
        return make_baseline(x, baseline, train_mean=train_mean, sigma=blur_sigma)
    if isinstance(baseline, (int, float)):
        return torch.full_like(x, float(baseline))
    b = check_tensor(baseline, "baseline").to(x.device, x.dtype)
    try:
        return torch.broadcast_to(b, x.shape)
    except RuntimeError as exc:
        raise ValueError(f"`baseline` of shape {tuple(b.shape)} does not broadcast to `x` of shape {tuple(x.shape)}") from exc


def _feature_masks(feature_mask: Any, x: torch.Tensor) -> torch.Tensor:
    """(N, *S_f) per-sample feature ids, S_f broadcastable to one input's shape S.

    Accepted: None (every input element is a feature), a shared mask broadcastable to S (e.g. (H, W)
    for (C, H, W) images or (D,) for tabular rows), or per-sample masks (N, ...) whose first dim is N
    (e.g. (N, H, W) SLIC superpixels).
    """
    n, shape = x.shape[0], tuple(x.shape[1:])
    if feature_mask is None:
        fm = torch.arange(math.prod(shape), device=x.device).reshape(shape)
        return fm.unsqueeze(0).expand(n, *shape)
    fm = check_tensor(feature_mask, "feature_mask", dtype=None).to(x.device)
    if fm.is_floating_point():
        if not torch.all(fm == fm.round()):
            raise TypeError("`feature_mask` must hold integer feature ids")
    fm = fm.long()
    per_sample = fm.ndim >= 2 and fm.shape[0] == n and (fm.ndim == x.ndim or (fm.ndim == x.ndim - 1 and x.ndim >= 3))
    if not per_sample:
        fm = fm.unsqueeze(0)
    inner = fm.shape[1:]
    if len(inner) < len(shape):
        inner = (1,) * (len(shape) - len(inner)) + tuple(inner)
        fm = fm.reshape(fm.shape[0], *inner)
    if not _broadcastable(tuple(inner), shape):
        raise ValueError(f"`feature_mask` of shape {tuple(feature_mask.shape)} does not broadcast to inputs of shape {shape}")
    if int(fm.min()) < 0:
        raise ValueError("`feature_mask` must hold feature ids >= 0")
    fm = fm.expand(n, *inner)
    # ids must be 0..d_i - 1 with every id used, per sample: one vectorized check, one host sync
    flat = (fm if per_sample else fm[:1]).reshape(fm.shape[0] if per_sample else 1, -1)
    mx = flat.amax(1)
    used = torch.zeros(flat.shape[0], int(mx.max()) + 1, dtype=torch.bool, device=flat.device).scatter_(1, flat, True)
    n_used = used.sum(1)
    bad = (n_used != mx + 1).nonzero()
    if bad.numel():
        i = int(bad[0, 0])
        raise ValueError(f"`feature_mask` ids must be 0..d-1 with every id used (sample {i}: {int(n_used[i])} ids, max {int(mx[i])})")
    return fm


def _n_features(fm: torch.Tensor) -> torch.Tensor:
    return fm.reshape(fm.shape[0], -1).amax(1) + 1


@torch.no_grad()
def evaluate_coalitions(
    model: torch.nn.Module,
    x: torch.Tensor,
    baseline: torch.Tensor,
    feature_masks: torch.Tensor,
    keep: torch.Tensor,
    target: torch.Tensor,
    batch_size: int = DEFAULT_BATCH_SIZE,
    amp: bool = False,
) -> torch.Tensor:
    """Target scores of every coalition of every sample, in chunked forward passes.

    Args:
        model: returns (B, K) scores; called under :func:`coalition_levels` with each row's level.
        x: (N, *S) inputs on the model's device.
        baseline: (N, *S) replacement values.
        feature_masks: (N, *S_f) int64 feature ids 0..d-1 (S_f broadcastable to S; same d for all N).
        keep: (N, M, d) bool coalitions (True = kept).
        target: (N,) int64 class whose score is returned.
        batch_size: maximum inputs per forward pass.
        amp: float16 autocast of the forward passes on CUDA (see :func:`forward_autocast`).

    Returns:
        (N, M) float32 scores ``model(where(kept, x, baseline))[target]``.
    """
    n, m, d = keep.shape
    flat_keep = keep.reshape(n * m, d)
    fm_flat = feature_masks.reshape(n, -1)
    s_f = feature_masks.shape[1:]
    levels = perturbation_level(flat_keep)
    out = torch.empty(n * m, dtype=torch.float32, device=x.device)
    for start in range(0, n * m, batch_size):
        stop = min(start + batch_size, n * m)
        idx = torch.arange(start, stop, device=x.device) // m
        kept = torch.gather(flat_keep[start:stop], 1, fm_flat[idx]).reshape(stop - start, *s_f)
        batch = torch.where(kept, x[idx], baseline[idx])
        with coalition_levels(levels[start:stop]), forward_autocast(x.device, amp):
            scores = model(batch)
        if scores.ndim != 2:
            raise ValueError(f"the model must return (B, K) scores, got shape {tuple(scores.shape)}")
        out[start:stop] = scores.gather(1, target[idx, None]).squeeze(1).float()
    return out.reshape(n, m)


def _run_grouped(model, x, target, feature_mask, baseline, blur_sigma, train_mean, batch_size, estimator, amp=False) -> torch.Tensor:
    """Prepare inputs, group samples by their number of features, run ``estimator`` per group and
    spread the per-feature attributions over the input elements."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
    dev = model_device(model)
    xs = check_tensor(x, "x").to(dev)
    if xs.ndim < 2:
        raise ValueError(f"`x` must be batched (N, ...), got shape {tuple(xs.shape)}")
    n = xs.shape[0]
    bs = DEFAULT_BATCH_SIZE if batch_size is None else check_int(batch_size, "batch_size", low=1)
    if not isinstance(amp, bool):
        raise TypeError(f"`amp` must be a bool, got {type(amp).__name__}")
    tgt = _targets(target, n, dev)
    base = _baseline(xs, baseline, blur_sigma, train_mean)
    fms = _feature_masks(feature_mask, xs)
    ds = _n_features(fms)
    attr = torch.zeros_like(xs)
    for d in torch.unique(ds).tolist():
        sel = torch.nonzero(ds == d).flatten()
        phi = estimator(lambda keep, s=sel: evaluate_coalitions(model, xs[s], base[s], fms[s], keep, tgt[s], bs, amp), len(sel), int(d))
        spread = torch.gather(phi.to(xs.dtype), 1, fms[sel].reshape(len(sel), -1)).reshape(len(sel), *fms.shape[1:])
        attr[sel] = torch.broadcast_to(spread, (len(sel), *xs.shape[1:]))
    return attr


def _weighted_regression(z: torch.Tensor, y: torch.Tensor, w: torch.Tensor, alpha: float) -> torch.Tensor:
    """Batched weighted least squares with intercept; returns the (N, d) coefficients.

    Solves (A^T W A + R) beta = A^T W y with A = [1, z] in float64, R = alpha on the coefficients
    (not the intercept) plus a 1e-10 relative jitter so rank-deficient designs return the
    near-minimum-norm solution.
    """
    n, m, d = z.shape
    a = torch.cat([torch.ones(n, m, 1, dtype=torch.float64, device=z.device), z.double()], dim=2)
    aw = a * w.double()[..., None]
    gram = aw.transpose(1, 2) @ a
    rhs = aw.transpose(1, 2) @ y.double()[..., None]
    reg = torch.full((d + 1,), float(alpha), dtype=torch.float64, device=z.device)
    reg[0] = 0.0
    scale = gram.diagonal(dim1=1, dim2=2).mean(1).clamp_min(1e-300)
    ridge = torch.diag_embed(reg.expand(n, d + 1) + 1e-10 * scale[:, None])
    beta = torch.linalg.solve(gram + ridge, rhs).squeeze(2)
    return beta[:, 1:]


def _check_baseline_kwargs(blur_sigma: float) -> None:
    check_positive(blur_sigma, "blur_sigma")


# ----------------------------------------------------------------------------------------------
# explainers
# ----------------------------------------------------------------------------------------------

_COMMON_ARGS = """
        model: module returning (N, K) scores (the front door :func:`explain` already applied ``score``;
            wrap a classifier with :meth:`ReCalX.wrap` to recalibrate each query by its level).
        x: (N, *S) float inputs (images (N, C, H, W) in [0, 1], tabular rows (N, D)).
        target: int or (N,) int64 class to explain.
        feature_mask: int64 feature ids 0..d-1: shared, broadcastable to one input (e.g. (H, W) patches
            for (C, H, W) images, (D,) for tabular), or per sample (N, ...) such as SLIC superpixels;
            None = every input element is a feature.
        baseline: replacement values: a float, a tensor broadcastable to ``x`` (e.g. the training
            mean), or ``"zero"`` / ``"blur"`` (Gaussian blur with ``blur_sigma``) / ``"mean"`` (needs ``train_mean``).
        blur_sigma: blur standard deviation in pixels for ``baseline="blur"``.
        train_mean: per-element training mean for ``baseline="mean"``.
        batch_size: maximum perturbed inputs per forward pass (None = 256).
        generator: torch generator for the random coalitions (CPU).
        score: ignored (kept for the registry's signature; the model already returns the score).
        amp: float16 autocast of the forward passes on CUDA (default False: with hundreds of features
            the differences between coalition scores are close to float16's resolution of the logits).
"""


@register("feature_ablation")
def feature_ablation(
    model: torch.nn.Module,
    x: torch.Tensor,
    target: Any,
    *,
    feature_mask: Any = None,
    baseline: Any = 0.0,
    blur_sigma: float = 2.0,
    train_mean: Any = None,
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
    score: str | None = None,
    amp: bool = False,
) -> torch.Tensor:
    """Feature ablation: phi_i = v(all features) - v(all but feature i replaced by the baseline).

    Args:{common}
    Returns:
        (N, *S) float32 attributions shaped like ``x``.

    References:
        Zeiler & Fergus 2014 (occlusion); Captum ``FeatureAblation``.
    """
    _check_baseline_kwargs(blur_sigma)

    def estimator(evaluate, n, d):
        keep = torch.ones(d + 1, d, dtype=torch.bool)
        keep[1:] = ~torch.eye(d, dtype=torch.bool)
        v = evaluate(keep.unsqueeze(0).expand(n, d + 1, d).to(model_device(model)))
        return v[:, :1] - v[:, 1:]

    return _run_grouped(model, x, target, feature_mask, baseline, blur_sigma, train_mean, batch_size, estimator, amp)


@register("shapley_sampling", stochastic=True)
def shapley_sampling(
    model: torch.nn.Module,
    x: torch.Tensor,
    target: Any,
    *,
    n_samples: int = 32,
    antithetic: bool = True,
    feature_mask: Any = None,
    baseline: Any = 0.0,
    blur_sigma: float = 2.0,
    train_mean: Any = None,
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
    score: str | None = None,
    amp: bool = False,
) -> torch.Tensor:
    """Shapley values by permutation sampling, with antithetic (reversed) permutation pairs.

    For each sampled permutation the features are added one by one to the empty coalition (all
    replaced); each feature gets its marginal contribution, averaged over permutations. Pairing every
    permutation with its reverse keeps the estimator unbiased and reduces its variance. Uses
    ``n_samples * (d - 1) + 2`` forward passes per sample.

    Args:
        n_samples: number of permutations per sample (>= 1; rounded up to even when ``antithetic``).
        antithetic: pair each permutation with its reverse.{common}
    Returns:
        (N, *S) float32 attributions; per sample they sum to v(all) - v(none) exactly.

    References:
        Castro, Gomez, Tejada 2009; Mitchell, Cooper, Frank, Holmes, "Sampling permutations for
        Shapley value estimation", JMLR 2022 (antithetic pairs); Captum ``ShapleyValueSampling``.
    """
    n_samples = check_int(n_samples, "n_samples", low=1)
    _check_baseline_kwargs(blur_sigma)
    dev = model_device(model)

    def estimator(evaluate, n, d):
        p = n_samples + (n_samples % 2) if antithetic else n_samples
        n_draw = p // 2 if antithetic else p
        perms = torch.argsort(torch.rand(n, n_draw, d, generator=generator), dim=2)
        if antithetic:
            perms = torch.cat([perms, perms.flip(2)], dim=1)
        ranks = perms.argsort(dim=2)  # (n, p, d): position of each feature in the permutation
        steps = torch.arange(1, d, dtype=torch.long)  # interior coalitions: first t features kept
        inner = ranks[:, :, None, :] < steps[None, None, :, None]  # (n, p, d-1, d)
        ends = torch.stack([torch.zeros(d, dtype=torch.bool), torch.ones(d, dtype=torch.bool)])
        keep = torch.cat([ends.expand(n, 2, d), inner.reshape(n, p * (d - 1), d)], dim=1).to(dev)
        v = evaluate(keep)
        v_empty, v_full = v[:, :1], v[:, 1:2]
        path = torch.cat([v_empty.expand(n, p)[..., None], v[:, 2:].reshape(n, p, d - 1), v_full.expand(n, p)[..., None]], dim=2)
        delta = path[:, :, 1:] - path[:, :, :-1]  # (n, p, d): contribution of the feature added at step t
        phi = torch.zeros(n, d, dtype=torch.float32, device=dev)
        phi.scatter_add_(1, perms.to(dev).reshape(n, -1), delta.reshape(n, -1))
        return phi / p

    return _run_grouped(model, x, target, feature_mask, baseline, blur_sigma, train_mean, batch_size, estimator, amp)


@register("shapley_exact")
def shapley_exact(
    model: torch.nn.Module,
    x: torch.Tensor,
    target: Any,
    *,
    feature_mask: Any = None,
    baseline: Any = 0.0,
    blur_sigma: float = 2.0,
    train_mean: Any = None,
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
    score: str | None = None,
    max_features: int = 16,
    amp: bool = False,
) -> torch.Tensor:
    """Exact Shapley values from all 2^d coalitions (d <= ``max_features``).

    phi_i = sum_{S not containing i} |S|! (d - |S| - 1)! / d! * (v(S + i) - v(S)).

    Args:
        max_features: refuse masks with more features than this (2^d forward passes per sample).{common}
    Returns:
        (N, *S) float32 attributions shaped like ``x``.

    References:
        Shapley 1953; Strumbelj & Kononenko 2010.
    """
    _check_baseline_kwargs(blur_sigma)
    max_features = check_int(max_features, "max_features", low=1, high=24)
    dev = model_device(model)

    def estimator(evaluate, n, d):
        if d > max_features:
            raise ValueError(f"shapley_exact needs 2^d forward passes; d = {d} exceeds `max_features` = {max_features}")
        codes = torch.arange(2**d, dtype=torch.long)
        bits = 1 << torch.arange(d, dtype=torch.long)
        keep = (codes[:, None] & bits[None, :]) != 0  # (2^d, d)
        v = evaluate(keep.unsqueeze(0).expand(n, 2**d, d).to(dev)).double()
        size = keep.sum(1)
        weight = torch.tensor([math.factorial(s) * math.factorial(d - s - 1) / math.factorial(d) if s < d else 0.0
                               for s in range(d + 1)], dtype=torch.float64)
        phi = torch.zeros(n, d, dtype=torch.float64, device=dev)
        for i in range(d):
            without = codes[(codes & bits[i]) == 0]
            w = weight[size[without]].to(dev)
            phi[:, i] = ((v[:, without | bits[i]] - v[:, without]) * w).sum(1)
        return phi.float()

    return _run_grouped(model, x, target, feature_mask, baseline, blur_sigma, train_mean, batch_size, estimator, amp)


@register("kernel_shap", stochastic=True)
def kernel_shap(
    model: torch.nn.Module,
    x: torch.Tensor,
    target: Any,
    *,
    n_samples: int = 256,
    feature_mask: Any = None,
    baseline: Any = 0.0,
    blur_sigma: float = 2.0,
    train_mean: Any = None,
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
    score: str | None = None,
    amp: bool = False,
) -> torch.Tensor:
    """Kernel SHAP: weighted linear regression on coalitions drawn from the Shapley kernel.

    The first two coalitions are the full and the empty one (weight 1e6, enforcing
    sum(phi) ~ v(all) - v(none)); the other ``n_samples - 2`` draw the number of kept features k in
    1..d-1 with probability proportional to (d - 1) / (k (d - k)) and then a uniformly random subset of
    that size (weight 1). The attributions are the regression coefficients (intercept excluded).
    Identical estimator to Captum's ``KernelShap`` with its default linear regression.

    Args:
        n_samples: coalitions per sample (>= 2; >= d + 1 for a well-posed regression).{common}
    Returns:
        (N, *S) float32 attributions shaped like ``x``.

    References:
        Lundberg & Lee, A Unified Approach to Interpreting Model Predictions, NeurIPS 2017.
    """
    n_samples = check_int(n_samples, "n_samples", low=2)
    _check_baseline_kwargs(blur_sigma)
    dev = model_device(model)

    def estimator(evaluate, n, d):
        m = n_samples - 2
        full_empty = torch.stack([torch.ones(d, dtype=torch.bool), torch.zeros(d, dtype=torch.bool)])
        if d > 1 and m > 0:
            ks = torch.arange(1, d, dtype=torch.float64)
            probs = (d - 1) / (ks * (d - ks))
            k = torch.multinomial(probs.expand(n * m, d - 1), 1, replacement=True, generator=generator).squeeze(1) + 1
            ranks = torch.argsort(torch.rand(n * m, d, generator=generator), dim=1).argsort(dim=1)
            sampled = (ranks < k[:, None]).reshape(n, m, d)
            keep = torch.cat([full_empty.expand(n, 2, d), sampled], dim=1)
        else:
            keep = full_empty.expand(n, 2, d)
        keep = keep.to(dev)
        v = evaluate(keep)
        w = torch.ones(keep.shape[:2], dtype=torch.float64, device=dev)
        w[:, :2] = 1e6
        return _weighted_regression(keep.double(), v, w, 0.0).float()

    return _run_grouped(model, x, target, feature_mask, baseline, blur_sigma, train_mean, batch_size, estimator, amp)


@register("lime", stochastic=True)
def lime(
    model: torch.nn.Module,
    x: torch.Tensor,
    target: Any,
    *,
    n_samples: int = 256,
    kernel_width: float = 0.25,
    alpha: float = 0.0,
    feature_mask: Any = None,
    baseline: Any = 0.0,
    blur_sigma: float = 2.0,
    train_mean: Any = None,
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
    score: str | None = None,
    amp: bool = False,
) -> torch.Tensor:
    """LIME: a locally weighted linear surrogate on random coalitions.

    Coalitions keep each feature independently with probability 1/2. A coalition z (binary, d) gets
    the weight exp(-D(z)^2 / (2 kernel_width^2)) with the cosine distance D(z) = 1 - |z| / sqrt(|z| d)
    to the full coalition (the interpretable-space kernel of the ``lime`` package, in Captum's
    Gaussian form). The attributions are the coefficients of a weighted least-squares (ridge
    ``alpha`` on the coefficients) linear regression with intercept.

    Args:
        n_samples: coalitions per sample (>= 1).
        kernel_width: width of the exponential kernel (> 0).
        alpha: ridge penalty on the coefficients (>= 0; 0 = ordinary weighted least squares).{common}
    Returns:
        (N, *S) float32 attributions shaped like ``x``.

    References:
        Ribeiro, Singh, Guestrin, "Why should I trust you?", KDD 2016; Captum ``Lime``.
    """
    n_samples = check_int(n_samples, "n_samples", low=1)
    kernel_width = float(check_positive(kernel_width, "kernel_width"))
    alpha = float(check_positive(alpha, "alpha", strict=False))
    _check_baseline_kwargs(blur_sigma)
    dev = model_device(model)

    def estimator(evaluate, n, d):
        keep = (torch.rand(n, n_samples, d, generator=generator) < 0.5).to(dev)
        v = evaluate(keep)
        w = lime_cosine_kernel(keep, kernel_width)
        return _weighted_regression(keep.double(), v, w, alpha).float()

    return _run_grouped(model, x, target, feature_mask, baseline, blur_sigma, train_mean, batch_size, estimator, amp)


def lime_cosine_kernel(keep: torch.Tensor, kernel_width: float) -> torch.Tensor:
    """LIME's sample weight exp(-D^2 / (2 w^2)), D = cosine distance of the binary coalition to all-ones.

    Args:
        keep: (..., d) bool coalitions.
        kernel_width: w > 0.

    Returns:
        (...) float64 weights in (0, 1].
    """
    d = keep.shape[-1]
    kept = keep.sum(-1).double()
    dist = 1.0 - torch.sqrt(kept / d)
    return torch.exp(-(dist**2) / (2 * kernel_width**2))


for _fn in (feature_ablation, shapley_sampling, shapley_exact, kernel_shap, lime):
    _fn.__doc__ = _fn.__doc__.replace("{common}", _COMMON_ARGS)
