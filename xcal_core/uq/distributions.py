"""Explanation distributions: one explanation per frozen model realisation (or ensemble member).

``explanation_distribution(realisations, x, target, method)`` returns E_1(x), ..., E_T(x) stacked as a
(T, N, ...) tensor, where E_t is ``explain(f^(t), x, target_t, method)`` computed on the frozen
realisation f^(t) (Mulye & Valdenegro-Toro 2024, Sec. 3; a realisation stays frozen for its whole explanation).

Two paths give the same numbers:

* **vectorized** (:data:`VECTORIZABLE_METHODS`):

  - gradient methods (saliency, gradient, input x gradient, guided backprop, integrated gradients): G
    realisations run in one forward/backward pass on ``x`` repeated G times through
    ``Realisations.batched``; chunked over realisations and inputs by ``batch_size``;
  - LIME: the coalitions are drawn once, every chunk of perturbed inputs is built once and evaluated by
    G realisations in one pass, and the T weighted ridge regressions of a sample (same design, T
    right-hand sides) are one batched normal-equation solve;
  - deep ensembles: the members' parameterized layers are stacked and vmapped
    (:func:`~xcal_core.models.stochastic.stack_members`), so M members also run in one pass.

* **looped** (any method; the reference): one ``explain`` call per realisation; the explainer batches its
  own perturbations.

``vectorize="auto"`` takes whichever path measured faster on the device (:func:`_auto_vectorize`). The
vectorized LIME path needs shared coalitions (it builds every perturbed input once for all T).

**Stochastic explainers (LIME and any method that draws random numbers): ``coalitions``.** The paper
runs the explainer once per realisation, so each LIME run draws its own coalitions and the spread of
E_1..E_T holds the model's uncertainty *plus* LIME's own sampling noise: ``coalitions="fresh"`` (the
default) gives realisation t its own generator, seeded from ``generator`` by t alone. With
``coalitions="shared"`` every realisation starts from the same generator state (the same coalitions,
*common random numbers*), so the spread reflects the model only. The two differ by exactly LIME's
sampling variance; deterministic explainers give the same result either way.

References:
    Mulye & Valdenegro-Toro, "Uncertainty quantification for gradient-based explanations in neural networks", 2024.
"""

from __future__ import annotations

from typing import Any

import torch

from .._validation import check_choice, check_int, check_labels, check_positive, check_tensor
from .. import explainers as _explainers
from ..explainers.perturbation import _baseline as _lime_baseline
from ..explainers.perturbation import _feature_masks as _lime_feature_masks
from ..explainers.perturbation import _n_features as _lime_n_features
from ..explainers.perturbation import coalition_levels, lime_cosine_kernel
from ..models.stochastic import Realisations
from ..perturbations.masks import perturbation_level

__all__ = ["TARGET_MODES", "COALITIONS", "VECTORIZABLE_METHODS", "realisation_targets", "explanation_distribution",
           "realisation_generators"]

COALITIONS = ("fresh", "shared")
"""How stochastic explainers draw their random numbers across realisations (see the module docstring)."""

TARGET_MODES = ("predicted", "predicted_mean", "true", "output")
# Methods with a vectorized path -> the method kwarg that multiplies the rows each input expands to
# inside the explainer (IG evaluates ``steps`` path points per input, LIME ``n_samples`` coalitions);
# None = one row per input.
VECTORIZABLE_METHODS: dict[str, str | None] = {
    "gradient": None,
    "saliency": None,
    "input_x_gradient": None,
    "guided_backprop": None,
    "integrated_gradients": "steps",
    "lime": "n_samples",
}


class _BlockModule(torch.nn.Module):
    """A batched-realisation module that also answers shape probes.

    ``explain`` probes the model with one row before attributing; a batch that is not a whole number of
    realisation blocks is padded to one block (rows of realisation 0 come first) and cut back.
    """

    def __init__(self, inner: torch.nn.Module, block: int):
        super().__init__()
        self.inner = inner
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        if b % self.block == 0:
            return self.inner(x)
        if b < self.block:
            pad = x.new_zeros((self.block - b, *x.shape[1:]))
            return self.inner(torch.cat([x, pad]))[:b]
        raise RuntimeError(f"vectorized realisations expect whole blocks of {self.block} rows, got {b}")


def _check_realisations(realisations: Any) -> Realisations:
    if not isinstance(realisations, Realisations):
        raise TypeError(
            f"`realisations` must be a Realisations (from sample_realisations), got {type(realisations).__name__}")
    return realisations


def realisation_generators(generator: torch.Generator | None, n: int, coalitions: str = "fresh") -> list[torch.Generator]:
    """One generator per realisation for a stochastic explainer.

    Args:
        generator: the base generator (None draws one base seed from torch's global generator).
        n: number of realisations T >= 1.
        coalitions: ``"shared"``: every generator starts from the base generator's state (common random
            numbers); ``"fresh"``: generator t is seeded with the t-th of T seeds drawn from the base
            generator, so realisation t's draws depend on t and the base state only (not on the path).

    Returns:
        list of T ``torch.Generator`` on the base generator's device.
    """
    check_int(n, "n", low=1)
    check_choice(coalitions, "coalitions", COALITIONS)
    base = generator
    if base is None:
        base = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,))))
    if coalitions == "fresh":
        seeds = torch.randint(0, 2**62, (n,), generator=base, dtype=torch.int64).tolist()
        return [torch.Generator(device=base.device).manual_seed(int(s)) for s in seeds]
    state = base.get_state()
    out = []
    for _ in range(n):
        g = torch.Generator(device=base.device)
        g.set_state(state)
        out.append(g)
    return out


def _auto_vectorize(r: Realisations, method: str) -> bool:
    """What ``vectorize="auto"`` picks: the vectorized path unless the loop over T measured faster.

    Accelerators: vectorized for every method in :data:`VECTORIZABLE_METHODS`. CPU (one thread,
    ``benchmarks/bench_uq.py`` on 8x8 and 3x16x16 inputs, T = 30):

    * one-pass gradient methods (Guided Backprop, saliency, ...): vectorized (0.8-1.4x, about even);
    * Integrated Gradients: loop (vectorized 0.45-1.0x; the T x steps rows per input make batches large
      enough to be memory-bound, and DropConnect / Flipout convolutions run grouped over a
      realisation-interleaved layout whose copies cost more than the loop saves);
    * LIME: vectorized for MC-Dropout (layers before the dropout run once per perturbed input:
      12-31x) and ensembles (0.9-1.1x), loop for DropConnect and Flipout (vectorized 0.8-1.0x).
    """
    if method not in VECTORIZABLE_METHODS:
        return False
    if r.device.type != "cpu":
        return True
    if method == "lime":
        return r.kind in ("mc_dropout", "ensemble")
    return VECTORIZABLE_METHODS[method] is None


def realisation_targets(realisations: Realisations, x: Any, target: Any = "predicted", *, labels: Any = None,
                        outputs: torch.Tensor | None = None, batch_size: int = 512) -> torch.Tensor | None:
    """The class explained for every (realisation, input), (T, N) int64, or None for regressors.

    Args:
        realisations: :class:`~xcal_core.models.stochastic.Realisations`.
        x: inputs (N, ...).
        target: ``"predicted"`` (argmax of each realisation's logits), ``"predicted_mean"`` (argmax of the
            mean softmax over realisations, the same class for all t), ``"true"`` (``labels``, the
            ground-truth-logit variant), an int or an int64 tensor (N,) of classes, or ``"output"`` for
            regressors (the single output is explained; returns None).
        labels: (N,) int64 true classes, required for ``"true"``.
        outputs: precomputed ``realisations.predict(x)`` (T, N, K), to avoid a second pass.
        batch_size: chunk size of the prediction pass.

    Raises:
        ValueError: class targets on a regressor, ``"output"`` on a classifier, missing or bad labels.
    """
    _check_realisations(realisations)
    if outputs is None:
        outputs = realisations.predict(x, batch_size=batch_size)
    t_all, n, k = outputs.shape
    regression = k == 1
    if isinstance(target, str):
        if target not in TARGET_MODES:
            raise ValueError(f"unknown `target` {target!r}; expected one of {list(TARGET_MODES)} or class indices")
        if regression and target != "output":
            raise ValueError(f"`target` {target!r} needs a classifier, but the model is a regressor (1 output); use target='output'")
        if not regression and target == "output":
            raise ValueError("`target` 'output' is for regressors (1 output); this model is a classifier with "
                             f"{k} classes: use 'predicted', 'predicted_mean', 'true' or class indices")
        if target == "output":
            return None
        if target == "predicted":
            return outputs.argmax(-1)
        if target == "predicted_mean":
            return torch.softmax(outputs, -1).mean(0).argmax(-1).expand(t_all, n).clone()
        if labels is None:
            raise ValueError("`labels` are required for target='true' (the ground-truth-logit variant)")
        y = check_labels(labels, "labels", n_classes=k, n=n).to(outputs.device)
        return y.expand(t_all, n).clone()
    if regression:
        raise ValueError("class-index `target` given for a regressor (1 output); use target='output'")
    if isinstance(target, int) and not isinstance(target, bool):
        if not 0 <= target < k:
            raise ValueError(f"`target` {target} out of range for {k} classes")
        return torch.full((t_all, n), target, dtype=torch.long, device=outputs.device)
    y = check_labels(target, "target", n_classes=k, n=n).to(outputs.device)
    return y.expand(t_all, n).clone()


def explanation_distribution(
    realisations: Realisations,
    x: Any,
    target: Any = "predicted",
    method: str = "guided_backprop",
    *,
    labels: Any = None,
    score: str = "logit",
    vectorize: bool | str = "auto",
    batch_size: int = 2048,
    generator: torch.Generator | None = None,
    coalitions: str = "fresh",
    return_targets: bool = False,
    **method_kwargs: Any,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor | None]:
    """Explanations of ``x`` under each of T frozen realisations, stacked (T, N, ...).

    Args:
        realisations: T >= 2 realisations (:func:`~xcal_core.models.stochastic.sample_realisations`).
        x: inputs (N, ...) float32 (images in [0, 1], tabular standardized).
        target: see :func:`realisation_targets` (``"predicted"`` per realisation by default).
        method: any :func:`~xcal_core.explainers.explain` method name.
        labels: (N,) true classes for ``target="true"``.
        score: ``"logit"``, ``"probability"`` or ``"log_probability"`` (passed to ``explain``; regressors
            explain their output as is).
        vectorize: ``"auto"`` (the faster path for this device, see :func:`_auto_vectorize`), True
            (vectorized; error for methods outside :data:`VECTORIZABLE_METHODS`, and for LIME with fresh
            coalitions) or False (always loop; the reference path). Both paths give the same numbers
            (up to float rounding).
        batch_size: most rows per forward pass on the vectorized path (realisations x inputs x
            expansion, e.g. x integration steps for IG, x coalitions for LIME); passed to ``explain``
            on the looped path.
        generator: base generator for stochastic explainers (see ``coalitions``). None draws one base
            seed from torch's global generator.
        coalitions: ``"fresh"`` (default, as running the explainer once per realisation: each
            realisation draws its own LIME coalitions) or ``"shared"`` (common random numbers: the same
            coalitions for every realisation, so the spread is the model's alone). See
            :func:`realisation_generators`.
        return_targets: also return the (T, N) targets used (None for regressors).
        **method_kwargs: forwarded to ``explain`` (e.g. ``steps=50`` for IG, ``n_samples=500`` for LIME).

    Returns:
        dist (T, N, ...) float32 attributions shaped like x per realisation, on x's device; with
        ``return_targets`` the tuple (dist, targets).
    """
    r = _check_realisations(realisations)
    x = check_tensor(x, "x")
    if x.ndim < 2:
        raise ValueError(f"`x` must be batched (N, ...), got shape {tuple(x.shape)}")
    if not isinstance(method, str):
        raise TypeError(f"`method` must be a method name (str), got {type(method).__name__}")
    check_int(batch_size, "batch_size", low=1)
    check_choice(score, "score", ("logit", "probability", "log_probability"))
    if vectorize not in ("auto", True, False):
        raise ValueError(f"`vectorize` must be 'auto', True or False, got {vectorize!r}")
    check_choice(coalitions, "coalitions", COALITIONS)
    if vectorize is True and method not in VECTORIZABLE_METHODS:
        raise ValueError(f"`method` {method!r} has no vectorized path; vectorizable: {sorted(VECTORIZABLE_METHODS)} "
                         "(use vectorize='auto' or False)")
    if vectorize is True and method == "lime" and coalitions == "fresh":
        raise ValueError("`vectorize`=True needs coalitions='shared' for 'lime' (the vectorized path scores one "
                         "set of coalitions under all realisations); use vectorize='auto' or False for fresh coalitions")
    use_vec = vectorize is True or (vectorize == "auto" and _auto_vectorize(r, method)
                                     and not (method == "lime" and coalitions == "fresh"))
    out_device = x.device
    dev = r.device
    xd = x.to(dev)
    outputs = r.predict(xd, batch_size=max(1, batch_size // len(r)))
    targets = realisation_targets(r, xd, target, labels=labels, outputs=outputs)
    regression = targets is None
    t_all, n = len(r), len(x)
    explain_score = "logit" if regression else score

    def tgt(rows: torch.Tensor) -> torch.Tensor:
        return torch.zeros(len(rows), dtype=torch.long, device=dev) if regression else rows

    if use_vec and method == "lime":
        g_c = realisation_generators(generator, 1, "shared")[0]
        tg_all = torch.zeros((t_all, n), dtype=torch.long, device=dev) if regression else targets
        dist = _lime_distribution(r, xd, tg_all, explain_score, batch_size, g_c, dict(method_kwargs))
    elif use_vec:
        key = VECTORIZABLE_METHODS[method]
        per_row = int(method_kwargs.get(key, 50)) if key is not None else 1
        g_max = max(1, min(t_all, batch_size // per_row))
        res = torch.empty((t_all, n, *x.shape[1:]), dtype=torch.float32, device=dev)
        for r0 in range(0, t_all, g_max):
            idx = list(range(r0, min(t_all, r0 + g_max)))
            g = len(idx)
            n_chunk = max(1, batch_size // (g * per_row))
            for i0 in range(0, n, n_chunk):
                xb = xd[i0:i0 + n_chunk]
                nb = len(xb)
                block = g * nb
                xr = xb.repeat(g, *([1] * (xb.ndim - 1)))
                tr = tgt(targets[idx, i0:i0 + nb].reshape(-1)) if not regression else tgt(torch.empty(block))
                with r.batched(idx, rows=nb) as m:
                    # explain's chunks are whole blocks, so every row keeps its realisation
                    ebs = block * max(1, batch_size // block)
                    a = _explainers.explain(_BlockModule(m, block), xr, tr, method, score=explain_score,
                                            batch_size=ebs, **method_kwargs)
                res[r0:r0 + g, i0:i0 + nb] = a.detach().reshape(g, nb, *x.shape[1:]).float()
        dist = res
    else:
        gens = realisation_generators(generator, t_all, coalitions)
        outs = []
        for t, g_t in enumerate(gens):
            with r.frozen(t) as m:
                tr = tgt(torch.empty(n)) if regression else targets[t]
                a = _explainers.explain(m, xd, tr, method, score=explain_score, batch_size=batch_size, generator=g_t, **method_kwargs)
            outs.append(a.detach().float())
        dist = torch.stack(outs)
    dist = dist.to(out_device)
    if return_targets:
        return dist, (None if targets is None else targets.to(out_device))
    return dist


# ------------------------------------------------------------------------------------------------
# LIME for all realisations at once
# ------------------------------------------------------------------------------------------------
_LIME_DEFAULTS = dict(n_samples=256, kernel_width=0.25, alpha=0.0, feature_mask=None, baseline=0.0, blur_sigma=2.0,
                      train_mean=None)


def _apply_score(z: torch.Tensor, score: str) -> torch.Tensor:
    """The score ``explain`` would explain, from (..., K) logits."""
    if score == "probability":
        return torch.softmax(z, dim=-1)
    if score == "log_probability":
        return torch.log_softmax(z, dim=-1)
    return z


@torch.no_grad()
def _coalition_scores(r: Realisations, x: torch.Tensor, baseline: torch.Tensor, feature_masks: torch.Tensor,
                      keep: torch.Tensor, targets: torch.Tensor, score: str, batch_size: int) -> torch.Tensor:
    """Target scores of every coalition of every sample under every realisation, (T, N, M).

    The perturbed inputs ``where(kept, x, baseline)`` are built once per chunk of ``batch_size // G``
    (sample, coalition) rows and evaluated by G realisations in one pass (``Realisations.batched`` in
    expanding mode: layers before the first stochastic layer run once per row); ``targets`` (T, N)
    picks each realisation's class.
    """
    n, m, d = keep.shape
    t_all = len(r)
    flat_keep = keep.reshape(n * m, d)
    fm_flat = feature_masks.reshape(n, -1)
    s_f = feature_masks.shape[1:]
    levels = perturbation_level(flat_keep)
    out = torch.empty((t_all, n * m), dtype=torch.float32, device=x.device)
    g_max = max(1, min(t_all, batch_size))
    for r0 in range(0, t_all, g_max):
        idx = list(range(r0, min(t_all, r0 + g_max)))
        g = len(idx)
        rows = max(1, batch_size // g)
        tg = targets[idx]  # (G, N)
        with r.batched(idx, expand=True) as model:  # layers before the first stochastic one run once per row
            for start in range(0, n * m, rows):
                stop = min(start + rows, n * m)
                smp = torch.arange(start, stop, device=x.device) // m
                kept = torch.gather(flat_keep[start:stop], 1, fm_flat[smp]).reshape(stop - start, *s_f)
                batch = torch.where(kept, x[smp], baseline[smp])
                with coalition_levels(levels[start:stop].repeat(g)):
                    z = model(batch)
                z = _apply_score(z.reshape(g, stop - start, -1), score)
                out[r0:r0 + g, start:stop] = z.gather(2, tg[:, smp, None]).squeeze(2).float()
    return out.reshape(t_all, n, m)


def _weighted_regression_shared(z: torch.Tensor, y: torch.Tensor, w: torch.Tensor, alpha: float) -> torch.Tensor:
    """T weighted ridge regressions with intercept that share their design, solved together.

    ``z`` (N, M, d) and ``w`` (N, M) are the same for every realisation (common coalitions), so the
    normal-equation matrix ``A^T W A + R`` (A = [1, z], R = ``alpha`` on the coefficients plus a 1e-10
    relative jitter, as in LIME's own solver) is built and factorized once per sample and solved for
    the T right-hand sides ``A^T W y_t`` at once (float64).

    Returns:
        (T, N, d) float64 coefficients.
    """
    n, m, d = z.shape
    a = torch.cat([torch.ones(n, m, 1, dtype=torch.float64, device=z.device), z.double()], dim=2)
    aw = a * w.double()[..., None]
    gram = aw.transpose(1, 2) @ a  # (N, d+1, d+1)
    rhs = aw.transpose(1, 2) @ y.double().permute(1, 2, 0)  # (N, d+1, T)
    reg = torch.full((d + 1,), float(alpha), dtype=torch.float64, device=z.device)
    reg[0] = 0.0
    scale = gram.diagonal(dim1=1, dim2=2).mean(1).clamp_min(1e-300)
    ridge = torch.diag_embed(reg.expand(n, d + 1) + 1e-10 * scale[:, None])
    beta = torch.linalg.solve(gram + ridge, rhs)  # (N, d+1, T)
    return beta.permute(2, 0, 1)[..., 1:]


def _lime_distribution(r: Realisations, x: torch.Tensor, targets: torch.Tensor, score: str, batch_size: int,
                       generator: torch.Generator, kwargs: dict) -> torch.Tensor:
    """LIME explanations of ``x`` under all T realisations with common coalitions, (T, N, ...).

    The same computation as ``explain(frozen_t, x, targets[t], "lime", generator=<same state>)`` for
    every t: the coalitions are drawn once from ``generator`` exactly as LIME draws them (so every
    realisation sees the same coalitions, the variance-reducing *common random numbers* choice), all
    T x N x n_samples perturbed inputs go through chunked batched forwards, and the T weighted ridge
    regressions per sample are one multi-right-hand-side solve.
    """
    unknown = sorted(set(kwargs) - set(_LIME_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for method 'lime'; its options are {list(_LIME_DEFAULTS)}")
    kw = {**_LIME_DEFAULTS, **kwargs}
    n_samples = check_int(kw["n_samples"], "n_samples", low=1)
    kernel_width = float(check_positive(kw["kernel_width"], "kernel_width"))
    alpha = float(check_positive(kw["alpha"], "alpha", strict=False))
    check_positive(kw["blur_sigma"], "blur_sigma")
    xs = x.detach().to(torch.float32)
    base = _lime_baseline(xs, kw["baseline"], kw["blur_sigma"], kw["train_mean"])
    fms = _lime_feature_masks(kw["feature_mask"], xs)
    ds = _lime_n_features(fms)
    t_all = len(r)
    attr = torch.zeros((t_all, *xs.shape), dtype=torch.float32, device=xs.device)
    for d in torch.unique(ds).tolist():
        sel = torch.nonzero(ds == d).flatten()
        keep = (torch.rand(len(sel), n_samples, int(d), generator=generator) < 0.5).to(xs.device)
        v = _coalition_scores(r, xs[sel], base[sel], fms[sel], keep, targets[:, sel], score, batch_size)
        w = lime_cosine_kernel(keep, kernel_width)
        phi = _weighted_regression_shared(keep, v, w, alpha).float()  # (T, n_sel, d)
        idx = fms[sel].reshape(1, len(sel), -1).expand(t_all, -1, -1)
        spread = torch.gather(phi, 2, idx).reshape(t_all, len(sel), *fms.shape[1:])
        attr[:, sel] = torch.broadcast_to(spread, (t_all, len(sel), *xs.shape[1:]))
    return attr
