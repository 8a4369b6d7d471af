"""Explainers that are differentiable in the model's parameters (what ID-ExpO trains through).

* :class:`DifferentiableGradCAM`: Grad-CAM at a chosen layer. With ``second_order=True`` the channel
  weights are built with ``create_graph=True`` so the training gradient flows through them (the paper's
  Fig. 1: "computes second-order derivatives"); ``second_order=False`` is the released code's variant
  (weights are constants; gradient reaches the parameters only through the activations).
* :class:`DifferentiableSurrogate` (``kind="lime"`` or ``"kernelshap"``): a weighted ridge regression of the
  model's probabilities on sampled binary coalitions of segments, solved in closed form. The coalitions and
  weights do not depend on the parameters, so phi = P v with a constant projection P and the exact
  derivative d phi / d theta = P d v / d theta.

Every explainer is called as ``explainer(model, x, target, generator=None) -> Explanation``.

**Per-sample maps in train mode.** BatchNorm in train mode normalises with the statistics of the batch,
so one forward pass of a batch couples its samples: the gradient of the summed target logits with
respect to sample i's activations then also carries the other samples' logits, and a surrogate's
coalition scores depend on which other inputs share the chunk. Both explainers therefore run their own
forward passes with the statistics of every BatchNorm layer frozen (``batchnorm="frozen"``, the
default: the running statistics are used and not updated, each module's mode is restored afterwards).
The map of sample i is then the Grad-CAM (or the LIME / KernelSHAP fit) of sample i alone, identical
to :func:`xcal_core.explainers.explain` on the same weights, whatever mode the model is in.
``batchnorm="batch"`` keeps the coupled pass (what a batched backward in train mode gives; for
measuring the coupling only).

References:
    Selvaraju et al., "Grad-CAM", ICCV 2017. Ribeiro et al., "Why should I trust you?", KDD 2016 (LIME).
    Lundberg & Lee, "A Unified Approach to Interpreting Model Predictions", NeurIPS 2017 (KernelSHAP).
    Yoshikawa & Iwata, AISTATS 2024 (ID-ExpO), spec §1.8.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from .._validation import check_choice, check_int, check_positive, check_tensor
from ..explainers.perturbation import lime_cosine_kernel
from ..metrics.insertion_deletion import resolve_baseline

__all__ = [
    "Explanation",
    "DifferentiableGradCAM",
    "DifferentiableSurrogate",
    "DifferentiableLIME",
    "DifferentiableKernelSHAP",
    "grid_segments",
    "sample_coalitions",
    "coalition_weights",
    "surrogate_projection",
    "check_differentiable_explainer",
    "frozen_batch_statistics",
    "EXPLAINER_BATCHNORM_MODES",
]

EXPLAINER_BATCHNORM_MODES = ("frozen", "batch")


@dataclass
class Explanation:
    """Output of a differentiable explainer.

    Attributes:
        phi: (B, F) one score per feature (pixels of the input grid, or segments), differentiable.
        feature_mask: (H, W) / (D,) int64 ids 0..F-1 mapping positions to features, or ``None`` when
            phi has one value per position.
        logits: (B, K) the clean-input logits of the explainer's forward pass when they are the
            model's logits in its current mode (Grad-CAM on a model without BatchNorm layers in train
            mode, or with ``batchnorm="batch"``), else ``None``; reuse them for the cross-entropy.
        raw: the explanation in its natural layout before flattening, for the magnitude penalty:
            Grad-CAM (B, h, w) at the layer's resolution, surrogates (B, F).
    """

    phi: torch.Tensor
    feature_mask: torch.Tensor | None
    logits: torch.Tensor | None
    raw: torch.Tensor

    def per_position(self) -> torch.Tensor:
        """phi broadcast to positions: (B, P) with P = H*W (or D)."""
        if self.feature_mask is None:
            return self.phi
        return self.phi[:, self.feature_mask.reshape(-1).to(self.phi.device)]


def _layer_names(model: torch.nn.Module) -> list[str]:
    return [n for n, _ in model.named_modules() if n]


def _get_layer(model: torch.nn.Module, layer: str | None) -> torch.nn.Module:
    if layer is None:
        layer = getattr(model, "cam_layer", None)
        if layer is None:
            raise ValueError("`layer` is None and the model has no `cam_layer` attribute; pass a layer name, "
                             f"one of {_layer_names(model)}")
    modules = dict(model.named_modules())
    if layer not in modules or not layer:
        raise ValueError(f"unknown `layer` {layer!r}; the model's layers are {_layer_names(model)}")
    return modules[layer]


def _training_batchnorms(model: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.training]


@contextmanager
def frozen_batch_statistics(model: torch.nn.Module) -> Iterator[bool]:
    """Run the block with every BatchNorm layer of ``model`` that is in train mode switched to eval mode.

    Inside, BatchNorm normalises with its running statistics and does not update them, so each sample's
    output depends on that sample only (no coupling through batch statistics); gradients still flow to
    every parameter (the affine weights of BatchNorm included). Other modules (dropout) keep their mode.
    Each module's mode is restored on exit, also after an exception.

    Args:
        model: a ``torch.nn.Module``.

    Yields:
        True when some BatchNorm layer was in train mode (and was frozen), else False.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
    bns = _training_batchnorms(model)
    for m in bns:
        m.train(False)
    try:
        yield bool(bns)
    finally:
        for m in bns:
            m.train(True)


@contextmanager
def _explanation_pass(model: torch.nn.Module, batchnorm: str) -> Iterator[bool]:
    """``frozen_batch_statistics`` for ``batchnorm="frozen"``; a no-op yielding False for ``"batch"``."""
    if batchnorm == "frozen":
        with frozen_batch_statistics(model) as froze:
            yield froze
    else:
        yield False


class DifferentiableGradCAM:
    """Grad-CAM maps that stay in the autograd graph of the model's parameters.

    Args:
        layer: dotted name of the layer whose output A (B, K, h, w) is used (``None``: ``model.cam_layer``).
        second_order: build the channel weights with ``create_graph=True`` so the parameter gradient of a
            loss on the map includes d w / d theta (the paper); ``False`` detaches them (the released code).
        relu: apply ReLU to the weighted sum (standard Grad-CAM).
        upsample: nearest-neighbour (pixel repetition) upsampling to the input's H x W, as in the code;
            when H, W are not multiples of h, w it falls back to bilinear.
        batchnorm: ``"frozen"`` (default): the explanation pass runs with BatchNorm's running statistics
            (see :func:`frozen_batch_statistics`), so the map of sample i is the Grad-CAM of sample i's
            own logit, the same as ``explain(model, x, target, "gradcam", upsample="nearest")`` on the
            same weights, in train mode too; the model's logits then come from a separate pass
            (``Explanation.logits`` is None when a BatchNorm layer was in train mode). ``"batch"``: one
            pass in the model's current mode; in train mode BatchNorm's batch statistics couple the
            samples and the gradient of the summed logits mixes them (kept to measure that coupling).

    Call:
        ``explainer(model, x, target)`` with x (B, C, H, W), target int64 (B,) whose *logit* is explained.
        Returns an :class:`Explanation` whose phi is (B, H*W) (or (B, h*w) without upsampling, then with a
        feature_mask mapping pixels to cells).

    The per-sample property rests on the model having no other layer that mixes samples (BatchNorm is the
    only one among torch's standard layers); dropout in train mode keeps the maps per sample but random.

    References:
        Selvaraju et al., "Grad-CAM", ICCV 2017; Yoshikawa & Iwata, AISTATS 2024 (Fig. 1: second order).
    """

    differentiable = True

    def __init__(self, layer: str | None = None, *, second_order: bool = True, relu: bool = True, upsample: bool = True,
                 batchnorm: str = "frozen"):
        if layer is not None and not isinstance(layer, str):
            raise TypeError(f"`layer` must be a layer name (str) or None, got {type(layer).__name__}")
        self.layer = layer
        self.second_order = bool(second_order)
        self.relu = bool(relu)
        self.upsample = bool(upsample)
        self.batchnorm = check_choice(batchnorm, "batchnorm", EXPLAINER_BATCHNORM_MODES)

    def __repr__(self) -> str:
        extra = "" if self.batchnorm == "frozen" else f", batchnorm={self.batchnorm!r}"
        return f"DifferentiableGradCAM(layer={self.layer!r}, second_order={self.second_order}{extra})"

    def for_evaluation(self) -> DifferentiableGradCAM:
        """The same maps without the second-order graph (for detached evaluation: cheaper, equal values)."""
        if not self.second_order:
            return self
        return DifferentiableGradCAM(self.layer, second_order=False, relu=self.relu, upsample=self.upsample,
                                     batchnorm=self.batchnorm)

    def __call__(self, model: torch.nn.Module, x: torch.Tensor, target: Any, generator: torch.Generator | None = None) -> Explanation:
        x = check_tensor(x, "x", ndim=4, dtype=None)
        module = _get_layer(model, self.layer)
        store: dict[str, torch.Tensor] = {}

        def hook(_m, _inp, out):
            store["A"] = out

        tgt = torch.as_tensor(target, device=x.device).long().reshape(-1)
        if tgt.shape[0] != x.shape[0]:
            raise ValueError(f"`target` has {tgt.shape[0]} entries but `x` has {x.shape[0]} samples")
        h = module.register_forward_hook(hook)
        try:
            with torch.enable_grad(), _explanation_pass(model, self.batchnorm) as froze:
                logits = model(x)
        finally:
            h.remove()
        if "A" not in store:
            raise RuntimeError(f"layer {self.layer!r} was not called in the model's forward pass")
        A = store["A"]
        if A.ndim != 4:
            raise ValueError(f"Grad-CAM needs a layer with (B, K, h, w) output; {self.layer!r} gives shape {tuple(A.shape)}")
        # with no sample-mixing layer in the pass, d(sum_j z_j) / dA_i = dz_i / dA_i: one backward gives
        # every sample's own-logit gradient
        z = logits.gather(1, tgt[:, None].to(logits.device)).sum()
        with torch.enable_grad():
            (g,) = torch.autograd.grad(z, A, create_graph=self.second_order, retain_graph=True)
        if not self.second_order:
            g = g.detach()
        w = g.mean(dim=(2, 3), keepdim=True)
        cam = (w * A).sum(1)  # (B, h, w)
        if self.relu:
            cam = F.relu(cam)
        b, hh, ww = cam.shape
        H, W = x.shape[2], x.shape[3]
        fmask = None
        if self.upsample:
            if H % hh == 0 and W % ww == 0:
                up = cam.repeat_interleave(H // hh, dim=1).repeat_interleave(W // ww, dim=2)
            else:
                up = F.interpolate(cam[:, None], size=(H, W), mode="bilinear", align_corners=False)[:, 0]
            phi = up.reshape(b, -1)
        else:
            if H % hh or W % ww:
                raise ValueError(f"`upsample=False` needs the input size {(H, W)} to be a multiple of the map size {(hh, ww)}")
            rows = torch.arange(H, device=x.device) // (H // hh)
            cols = torch.arange(W, device=x.device) // (W // ww)
            fmask = rows[:, None] * ww + cols[None, :]
            phi = cam.reshape(b, -1)
        return Explanation(phi=phi, feature_mask=fmask, logits=None if froze else logits, raw=cam)


def grid_segments(shape: tuple[int, int], cell: int | tuple[int, int]) -> torch.Tensor:
    """Segment ids of a regular grid of cells (the released config's ``grid4x4`` segmentation).

    Args:
        shape: image (H, W).
        cell: cell size in pixels (int or (ch, cw)), each >= 1; edge cells may be smaller.

    Returns:
        int64 (H, W) ids 0..G-1, row-major over cells.
    """
    if len(shape) != 2:
        raise ValueError(f"`shape` must be (H, W), got {shape}")
    ch, cw = (cell, cell) if isinstance(cell, int) else tuple(cell)
    ch = check_int(ch, "cell", low=1)
    cw = check_int(cw, "cell", low=1)
    H, W = int(shape[0]), int(shape[1])
    n_cols = math.ceil(W / cw)
    rows = torch.arange(H) // ch
    cols = torch.arange(W) // cw
    return rows[:, None] * n_cols + cols[None, :]


def sample_coalitions(d: int, n_samples: int, kind: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """Binary coalitions z in {0,1}^d (1 = segment kept), the first one all-ones.

    Args:
        d: number of segments, >= 2.
        n_samples: number of coalitions, >= 3.
        kind: ``"lime"``: number of switched-off segments uniform in 1..d (as the lime package);
            ``"kernelshap"``: the all-zero and all-one coalitions, then coalition sizes 1..d-1 drawn with
            probability proportional to the Shapley kernel's mass per size, (d-1) / (s (d-s)), and a
            uniform subset of that size (the usual KernelSHAP sampler).
        generator: torch.Generator for reproducible draws.

    Returns:
        float32 (n_samples, d).
    """
    d = check_int(d, "d", low=2)
    n_samples = check_int(n_samples, "n_samples", low=3)
    check_choice(kind, "kind", ("lime", "kernelshap"))
    z = torch.ones(n_samples, d)
    if kind == "lime":
        n_rest = n_samples - 1
        n_off = torch.randint(1, d + 1, (n_rest,), generator=generator)
        first = 1
    else:
        z[1] = 0.0
        n_rest = n_samples - 2
        s = torch.arange(1, d, dtype=torch.float64)
        probs = (d - 1) / (s * (d - s))
        sizes = torch.multinomial(probs / probs.sum(), n_rest, replacement=True, generator=generator) + 1
        n_off = d - sizes
        first = 2
    keys = torch.rand(n_rest, d, generator=generator)
    rank = keys.argsort(1).argsort(1)  # random permutation ranks per row
    z[first:] = (rank >= n_off[:, None]).float()
    return z


def coalition_weights(z: torch.Tensor, kind: str, *, kernel_width: float = 0.25, constraint_weight: float = 1e6) -> torch.Tensor:
    """Regression weights pi_j of coalitions.

    Args:
        z: (n, d) binary coalitions from :func:`sample_coalitions` with the same ``kind``.
        kind: ``"lime"``: exp(-D^2 / (2 sigma^2)) with D the cosine distance between z and the all-ones
            vector, D = 1 - sqrt(|z| / d), sigma = ``kernel_width`` (lime's image default 0.25): lime's
            kernel sqrt(exp(-D^2 / sigma^2)), the same as xcal's perturbation LIME
            (:func:`xcal_core.explainers.perturbation.lime_cosine_kernel`).
            ``"kernelshap"``: the Shapley kernel (d-1) / (C(d,|z|) |z| (d-|z|)) divided by the sampler's
            probability of z (importance weight, so the weighted fit targets the Shapley objective), which
            is proportional to 1 / (|z| (d - |z|)); the all-zero and all-one coalitions get
            ``constraint_weight`` (the usual soft version of the efficiency constraints).

    Returns:
        float64 (n,) non-negative weights.
    """
    check_choice(kind, "kind", ("lime", "kernelshap"))
    d = z.shape[1]
    size = z.double().sum(1)
    if kind == "lime":
        sigma = check_positive(kernel_width, "kernel_width")
        return lime_cosine_kernel(z.double(), float(sigma)).double()
    check_positive(constraint_weight, "constraint_weight")
    # Shapley kernel k(z) = (d-1) / (C(d,s) s (d-s)); the sampler draws a proper coalition with
    # q(z) = p(s) / C(d,s), p(s) = [(d-1) / (s (d-s))] / c, so k(z) / q(z) = c for every proper coalition:
    # the importance-corrected weights are uniform (scaled to 1 here).
    proper = torch.ones_like(size)
    return torch.where((size == 0) | (size == d), torch.full_like(size, float(constraint_weight)), proper)


def surrogate_projection(z: torch.Tensor, weights: torch.Tensor, ridge: float) -> torch.Tensor:
    """The constant matrix P with beta = P v for the weighted ridge fit v ~ beta_0 + z beta.

    Solves (Z1^T Pi Z1 + ridge * D) beta = Z1^T Pi v in float64, where Z1 = [1, z] has an intercept column
    that is not penalised (D = diag(0, 1, ..., 1)) and Pi = diag(weights).

    Args:
        z: (n, d) coalitions. weights: (n,) non-negative. ridge: >= 0 (> 0 when n < d + 1).

    Returns:
        float64 (d + 1, n); row 0 gives the intercept, rows 1..d the segment attributions.
    """
    ridge = check_positive(ridge, "ridge", strict=False)
    z1 = torch.cat([torch.ones(z.shape[0], 1, dtype=torch.float64), z.double()], dim=1)
    wz = z1 * weights.double()[:, None]
    gram = z1.T @ wz
    reg = torch.eye(z1.shape[1], dtype=torch.float64) * ridge
    reg[0, 0] = 0.0
    return torch.linalg.solve(gram + reg, wz.T)


class DifferentiableSurrogate:
    """LIME / KernelSHAP as a closed-form weighted ridge regression, differentiable in the parameters.

    For every image, the targets v_j = p(y | h(z_j)) of the perturbed inputs h(z_j) (segments with z = 1
    keep x, the others get the baseline) are regressed on the coalitions; the coalitions (shared by the
    images of a call) are drawn with ``generator`` and carry no gradient.

    Args:
        kind: ``"lime"`` or ``"kernelshap"``.
        feature_mask: int ids (H, W) (images) or (D,) (tabular) of the segments, 0..d-1; ``None``: every
            position is its own segment. For images see :func:`grid_segments`.
        n_samples: coalitions per call (spec suggestion for training: 2d-4d).
        baseline: value of switched-off segments, as in :func:`~xcal_core.metrics.perturbation_curve`.
        kernel_width: LIME's sigma (0.25). ridge: L2 penalty of the fit (LIME: lime's Ridge alpha = 1).
        score: ``"probability"`` (the spec) or ``"logit"`` for the regression targets.
        batch_size: most perturbed inputs per forward pass (``None``: all at once).
        batchnorm: ``"frozen"`` (default): the coalition passes run with BatchNorm's running statistics
            (:func:`frozen_batch_statistics`), so sample i's targets v_j, and its map, depend on sample i
            only, in train mode too; ``"batch"``: the model's current mode (in train mode the inputs
            sharing a chunk couple through the batch statistics).

    References:
        Ribeiro et al., KDD 2016 (LIME); Lundberg & Lee, NeurIPS 2017 (KernelSHAP); Yoshikawa & Iwata,
        AISTATS 2024 (ID-ExpO, Fig. 1 centre: training through LIME / KernelSHAP).
    """

    differentiable = True

    def __init__(self, kind: str = "lime", *, feature_mask: Any = None, n_samples: int = 128, baseline: Any = 0.0,
                 kernel_width: float = 0.25, ridge: float | None = None, score: str = "probability",
                 batch_size: int | None = None, batchnorm: str = "frozen"):
        self.kind = check_choice(kind, "kind", ("lime", "kernelshap"))
        self.feature_mask = None if feature_mask is None else check_tensor(feature_mask, "feature_mask", dtype=None).long()
        if self.feature_mask is not None and int(self.feature_mask.min()) != 0:
            raise ValueError("`feature_mask` ids must start at 0")
        self.n_samples = check_int(n_samples, "n_samples", low=3)
        self.baseline = baseline
        self.kernel_width = check_positive(kernel_width, "kernel_width")
        self.ridge = (1.0 if kind == "lime" else 1e-6) if ridge is None else check_positive(ridge, "ridge", strict=False)
        self.score = check_choice(score, "score", ("probability", "logit"))
        self.batch_size = None if batch_size is None else check_int(batch_size, "batch_size", low=1)
        self.batchnorm = check_choice(batchnorm, "batchnorm", EXPLAINER_BATCHNORM_MODES)

    def __repr__(self) -> str:
        extra = "" if self.batchnorm == "frozen" else f", batchnorm={self.batchnorm!r}"
        return f"DifferentiableSurrogate(kind={self.kind!r}, n_samples={self.n_samples}{extra})"

    def for_evaluation(self) -> _DetachedExplainer:
        """The same explainer run without autograd (detached evaluation: same values, no graph)."""
        return _DetachedExplainer(self)

    def _mask(self, x: torch.Tensor) -> torch.Tensor:
        grid = tuple(x.shape[2:]) if x.ndim >= 3 else (x.shape[1],)
        if self.feature_mask is None:
            return torch.arange(math.prod(grid)).reshape(grid)
        if tuple(self.feature_mask.shape) != grid:
            raise ValueError(f"`feature_mask` has shape {tuple(self.feature_mask.shape)} but inputs have positions {grid}")
        return self.feature_mask

    def __call__(self, model: torch.nn.Module, x: torch.Tensor, target: Any, generator: torch.Generator | None = None) -> Explanation:
        x = check_tensor(x, "x", ndim=(2, 4), dtype=None)
        fm = self._mask(x)
        d = int(fm.max()) + 1
        b = x.shape[0]
        tgt = torch.as_tensor(target, device=x.device).long().reshape(-1)
        if tgt.shape[0] != b:
            raise ValueError(f"`target` has {tgt.shape[0]} entries but `x` has {b} samples")
        z = sample_coalitions(d, self.n_samples, self.kind, generator)
        w = coalition_weights(z, self.kind, kernel_width=self.kernel_width)
        proj = surrogate_projection(z, w, self.ridge).to(device=x.device, dtype=x.dtype)  # (d+1, n)
        keep = z.to(x.device, x.dtype)[:, fm.reshape(-1).to(x.device)]  # (n, P)
        n = z.shape[0]
        if x.ndim == 4:
            keep = keep.reshape(1, n, 1, *x.shape[2:])
        else:
            keep = keep.reshape(1, n, x.shape[1])
        base = resolve_baseline(self.baseline, x, None)
        xp = (keep * x[:, None] + (1 - keep) * base[:, None]).reshape(b * n, *x.shape[1:])
        tg = tgt[:, None].expand(b, n).reshape(-1)
        chunks = [xp] if self.batch_size is None else list(xp.split(self.batch_size))
        tchunks = [tg] if self.batch_size is None else list(tg.split(self.batch_size))
        vals = []
        with _explanation_pass(model, self.batchnorm):
            for xc, tc in zip(chunks, tchunks):
                out = model(xc)
                out = torch.softmax(out, 1) if self.score == "probability" else out
                vals.append(out.gather(1, tc[:, None])[:, 0])
        v = torch.cat(vals).reshape(b, n)
        beta = v @ proj.T  # (B, d+1)
        phi = beta[:, 1:]
        return Explanation(phi=phi, feature_mask=fm.to(x.device), logits=None, raw=phi)


class _DetachedExplainer:
    """Runs a differentiable explainer under ``torch.no_grad`` (for evaluation: the graph is not needed)."""

    differentiable = False

    def __init__(self, explainer: Any):
        self.explainer = explainer

    def __repr__(self) -> str:
        return f"{self.explainer!r}.for_evaluation()"

    def __call__(self, model: torch.nn.Module, x: torch.Tensor, target: Any,
                 generator: torch.Generator | None = None) -> Explanation:
        with torch.no_grad():
            return self.explainer(model, x, target, generator=generator)


def DifferentiableLIME(**kwargs: Any) -> DifferentiableSurrogate:
    """:class:`DifferentiableSurrogate` with ``kind="lime"`` (see there for the arguments)."""
    return DifferentiableSurrogate("lime", **kwargs)


def DifferentiableKernelSHAP(**kwargs: Any) -> DifferentiableSurrogate:
    """:class:`DifferentiableSurrogate` with ``kind="kernelshap"`` (see there for the arguments)."""
    return DifferentiableSurrogate("kernelshap", **kwargs)


def check_differentiable_explainer(explainer: Any) -> Any:
    """Reject explainers ID-ExpO cannot train through (e.g. ``xcal_core.explainers.explain``, Captum methods)."""
    if not callable(explainer) or not getattr(explainer, "differentiable", False):
        raise TypeError(
            f"`explainer` {explainer!r} is not a differentiable explainer; ID-ExpO needs one whose map stays "
            "in the autograd graph of the model's parameters: DifferentiableGradCAM(...), DifferentiableLIME(...), "
            "DifferentiableKernelSHAP(...) (or an object with `differentiable = True` returning an Explanation)"
        )
    return explainer
