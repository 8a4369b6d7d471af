"""Explanation distributions: one explanation per frozen model realisation (or ensemble member).

``explanation_distribution(realisations, x, target, method)`` returns E_1(x), ..., E_T(x) stacked as a
(T, N, ...) tensor, where E_t is ``explain(f^(t), x, target_t, method)`` computed on the frozen
realisation f^(t) (Mulye & Valdenegro-Toro 2024, Sec. 3; the freezing rule is spec 3.2).

Two paths give the same numbers:

* **vectorized** (gradient methods: saliency, input x gradient, guided backprop, integrated gradients):
  G realisations run in one forward/backward pass on ``x`` repeated G times through
  ``Realisations.batched``; chunked over realisations and inputs by ``batch_size``.
* **looped** (any method, e.g. LIME): one ``explain`` call per realisation; the explainer batches its own
  perturbations. Stochastic explainers get *common random numbers*: every realisation starts from the
  same generator state (the same LIME samples), so the spread reflects the model, not the sampler.

References:
    Mulye & Valdenegro-Toro, "Uncertainty quantification for gradient-based explanations in neural networks", 2024.
"""

from __future__ import annotations

from typing import Any

import torch

from .._validation import check_int, check_labels, check_tensor
from .. import explainers as _explainers
from ..models.stochastic import Realisations

__all__ = ["TARGET_MODES", "VECTORIZABLE_METHODS", "realisation_targets", "explanation_distribution"]

TARGET_MODES = ("predicted", "predicted_mean", "true", "output")
# Methods with a vectorized path -> the method kwarg that multiplies the rows each input expands to
# inside the explainer (IG evaluates ``steps`` path points per input); None = one row per input.
VECTORIZABLE_METHODS: dict[str, str | None] = {
    "gradient": None,
    "saliency": None,
    "input_x_gradient": None,
    "guided_backprop": None,
    "integrated_gradients": "steps",
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
        vectorize: ``"auto"`` (vectorized for :data:`VECTORIZABLE_METHODS`, looped otherwise), True
            (error for other methods) or False (always loop; the reference path).
        batch_size: most rows per forward pass on the vectorized path (realisations x inputs x
            expansion, e.g. x integration steps for IG); passed to ``explain`` on the looped path.
        generator: generator for stochastic explainers; every realisation starts from its state (common
            random numbers). None draws one base seed from torch's global generator.
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
    if vectorize not in ("auto", True, False):
        raise ValueError(f"`vectorize` must be 'auto', True or False, got {vectorize!r}")
    if vectorize is True and method not in VECTORIZABLE_METHODS:
        raise ValueError(f"`method` {method!r} has no vectorized path; vectorizable: {sorted(VECTORIZABLE_METHODS)} "
                         "(use vectorize='auto' or False)")
    use_vec = method in VECTORIZABLE_METHODS and vectorize in ("auto", True)
    out_device = x.device
    dev = r.device
    xd = x.to(dev)
    outputs = r.predict(xd, batch_size=max(1, batch_size // len(r)))
    targets = realisation_targets(r, xd, target, labels=labels, outputs=outputs)
    regression = targets is None
    t_all, n = len(r), len(x)
    explain_score = "logit" if regression else score
    steps = int(method_kwargs.get("steps", method_kwargs.get("n_steps", 50))) if method == "integrated_gradients" else 1

    def tgt(rows: torch.Tensor) -> torch.Tensor:
        return torch.zeros(len(rows), dtype=torch.long, device=dev) if regression else rows

    if use_vec:
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
        base = generator
        if base is None:
            base = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,))))
        state = base.get_state()
        outs = []
        for t in range(t_all):
            g_t = torch.Generator(device=base.device)
            g_t.set_state(state)
            with r.frozen(t) as m:
                tr = tgt(torch.empty(n)) if regression else targets[t]
                a = _explainers.explain(m, xd, tr, method, score=explain_score, batch_size=batch_size, generator=g_t, **method_kwargs)
            outs.append(a.detach().float())
        dist = torch.stack(outs)
    dist = dist.to(out_device)
    if return_targets:
        return dist, (None if targets is None else targets.to(out_device))
    return dist
