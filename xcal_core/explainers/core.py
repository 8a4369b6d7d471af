"""``explain``: one call signature over every attribution method, plus the gradient family.

``explain(model, x, target, method, score=..., batch_size=..., generator=..., **kw)`` validates its
inputs, wraps the classifier in a :class:`ScoreModel` (logits -> the score to explain), puts it in
eval mode and dispatches to a method from the registry (:mod:`._registry`). This module registers
the gradient-based methods and Grad-CAM / occlusion / LRP:

============================  =====================================================  ==========
method                        what it returns (shaped like ``x``)                    backend
============================  =====================================================  ==========
``saliency``                  ``|d s_c / d x|`` (``abs=False``: signed)             native
``gradient``                  ``d s_c / d x`` (signed)                              native
``input_x_gradient``          ``x * d s_c / d x``                                   native
``integrated_gradients``      path integral from a baseline (Sundararajan 2017)     native
``smoothgrad``                mean gradient under Gaussian input noise (Smilkov 2017) native
``vargrad``                   variance of that gradient (Adebayo 2018)              native
``gradient_shap``             expected gradients with random baselines (Lundberg 2017) native
``guided_backprop``           guided backpropagation (Springenberg 2015)            Captum
``deconvolution``             deconvnet (Zeiler & Fergus 2014)                      Captum
``deeplift``                  DeepLIFT rescale rule (Shrikumar 2017)                Captum
``gradcam``                   Grad-CAM, upsampled and broadcast over channels       native
``guided_gradcam``            guided backprop x upsampled Grad-CAM                  native+Captum
``occlusion``                 sliding-window occlusion (Zeiler & Fergus 2014)       native
``lrp``                       LRP, epsilon rule everywhere (Bach 2015)              Captum
============================  =====================================================  ==========

Every native method is batched: all perturbed / interpolated / noisy copies of all samples go
through chunked forward-backward passes of at most ``batch_size`` inputs, on the model's device.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._validation import as_tensor, check_choice, check_int, check_positive, check_tensor, model_device
from ._registry import METHODS, NEEDS_LAYER, STOCHASTIC, register

__all__ = [
    "SCORES",
    "DEFAULT_BATCH_SIZE",
    "ScoreModel",
    "explain",
    "available_methods",
    "reduce_channels",
    "normalize_attributions",
    "resolve_layer",
    "resolve_baselines",
    "ig_alphas_weights",
    "grad_cam",
    "input_gradients",
]

SCORES = ("logit", "probability", "log_probability")
DEFAULT_BATCH_SIZE = 256
IG_RULES = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")
BASELINES = ("zero", "black", "white", "black_white", "mean")
INTERPOLATION_MODES = ("bilinear", "nearest", "bicubic")


# --------------------------------------------------------------------------------------------
# the score wrapper and shared plumbing
# --------------------------------------------------------------------------------------------
class ScoreModel(nn.Module):
    """Wrap a classifier so its output is the score to explain.

    Args:
        model: a module mapping inputs (N, ...) to logits (N, K).
        score: ``"logit"`` (identity), ``"probability"`` (softmax over K) or ``"log_probability"``
            (log-softmax over K).

    The wrapped classifier is the submodule ``.model``: a layer named ``"features.conv2"`` in the
    classifier is ``"model.features.conv2"`` here. Use :func:`resolve_layer` on the inner model.
    """

    def __init__(self, model: nn.Module, score: str = "logit"):
        super().__init__()
        check_choice(score, "score", SCORES)
        self.model = model
        self.score = score

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.model(x)
        if self.score == "probability":
            return torch.softmax(z, dim=1)
        if self.score == "log_probability":
            return torch.log_softmax(z, dim=1)
        return z

    def extra_repr(self) -> str:
        return f"score={self.score!r}"


@contextmanager
def _eval_mode(model: nn.Module):
    """Eval mode for the call when the model is in train mode; every module's mode is restored.

    A model already in eval mode is left alone, so the MC-dropout recipe (``model.eval()`` then
    ``.train()`` on the dropout modules) keeps its stochastic dropout.
    """
    if not model.training:
        yield
        return
    states = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, s in states:
            m.training = s


def _make_generator(generator: torch.Generator | None) -> torch.Generator:
    """The given generator, or a fresh nondeterministically seeded one (global RNG untouched)."""
    if generator is None:
        g = torch.Generator()
        g.seed()
        return g
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"`generator` must be a torch.Generator or None, got {type(generator).__name__}")
    return generator


def _randn(shape: Sequence[int], generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.randn(tuple(shape), generator=generator, device=generator.device).to(device)


def _rand(shape: Sequence[int], generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(tuple(shape), generator=generator, device=generator.device).to(device)


def _bs(batch_size: int | None) -> int:
    return DEFAULT_BATCH_SIZE if batch_size is None else batch_size


def _select(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return scores.gather(1, target[:, None]).sum()


def input_gradients(
    model: nn.Module,
    inputs: torch.Tensor,
    target: torch.Tensor,
    *,
    batch_size: int | None = None,
) -> torch.Tensor:
    """Gradients of ``model(inputs)[i, target[i]]`` with respect to ``inputs[i]``, in chunks.

    Args:
        model: maps (M, ...) float32 to scores (M, K); already wrapped / in the wanted mode.
        inputs: float32 (M, ...) on the model's device.
        target: int64 (M,) class indices on the model's device.
        batch_size: at most this many inputs per forward-backward pass (default 256).

    Returns:
        float32 (M, ...) gradients, detached. Parameter ``.grad`` fields are not touched.
    """
    bs = _bs(batch_size)
    out = torch.empty_like(inputs)
    with torch.enable_grad():
        for s in range(0, inputs.shape[0], bs):
            xi = inputs[s : s + bs].detach().requires_grad_(True)
            (g,) = torch.autograd.grad(_select(model(xi), target[s : s + bs]), xi)
            out[s : s + bs] = g
    return out


def resolve_layer(model: nn.Module, layer: str | nn.Module | None = None) -> nn.Module:
    """The layer a layer-based method (Grad-CAM) uses.

    Args:
        model: the classifier (not the :class:`ScoreModel` wrapper).
        layer: a dotted submodule name (``"features.conv4"``), a submodule of ``model``, or
            ``None`` for ``model.cam_layer``.

    Returns:
        The submodule.

    Raises:
        ValueError: ``layer`` is None and the model has no ``cam_layer``; the name is not a layer of
            the model; the module is not part of the model.
    """
    if isinstance(model, ScoreModel):
        model = model.model
    if layer is None:
        layer = getattr(model, "cam_layer", None)
        if layer is None:
            raise ValueError(
                "`layer` is None and the model has no `cam_layer` attribute; pass layer=<dotted name of a "
                "conv layer> (e.g. the last convolution)"
            )
    if isinstance(layer, nn.Module):
        if not any(m is layer for m in model.modules()):
            raise ValueError("`layer` is a module that is not part of `model`")
        return layer
    if not isinstance(layer, str):
        raise TypeError(f"`layer` must be a dotted name, an nn.Module or None, got {type(layer).__name__}")
    try:
        return model.get_submodule(layer)
    except AttributeError as exc:
        names = [n for n, _ in model.named_modules() if n]
        raise ValueError(
            f"`layer` {layer!r} is not a layer of the model; layers include {names[:30]}"
            + (" ..." if len(names) > 30 else "")
        ) from exc


def available_methods(stochastic: bool | None = None, needs_layer: bool | None = None) -> list[str]:
    """Sorted names of the registered explanation methods.

    Args:
        stochastic: ``True``: only methods that draw random numbers (they take ``generator``);
            ``False``: only deterministic ones; ``None``: no filter.
        needs_layer: ``True``: only methods that need a conv layer (Grad-CAM family); ``False``:
            only the others; ``None``: no filter.

    Returns:
        list of method names accepted by :func:`explain`.
    """
    names = sorted(METHODS)
    if stochastic is not None:
        names = [n for n in names if (n in STOCHASTIC) == bool(stochastic)]
    if needs_layer is not None:
        names = [n for n in names if (n in NEEDS_LAYER) == bool(needs_layer)]
    return names


_COMMON = ("model", "x", "target", "score", "batch_size", "generator", "layer")


def _check_options(method: str, fn: Any, kwargs: dict) -> None:
    """Reject method kwargs the method does not take (a typo such as ``n_steps=`` for ``steps=``)."""
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        valid = [n for n in params if n not in _COMMON]
        raise ValueError(f"unknown option(s) {unknown} for method {method!r}; its options are {valid}")


def _check_target(target: Any, n: int, n_outputs: int, device: torch.device) -> torch.Tensor:
    if isinstance(target, bool):
        raise TypeError("`target` must be an int or an int64 tensor (N,), got bool")
    if isinstance(target, (int, np.integer)):
        t = torch.full((n,), int(target), dtype=torch.long)
    else:
        t = as_tensor(target, "target", dtype=None)
        if t.is_floating_point() or t.dtype == torch.bool:
            raise TypeError(f"`target` must hold integer class indices, got dtype {t.dtype}")
        t = t.long()
        if t.ndim == 0:
            t = t.expand(n).clone()
        if t.ndim != 1 or t.shape[0] != n:
            raise ValueError(f"`target` must be an int or have shape ({n},), got shape {tuple(t.shape)}")
    if int(t.min()) < 0 or int(t.max()) >= n_outputs:
        raise ValueError(
            f"`target` must be in [0, {n_outputs - 1}] (the model has {n_outputs} outputs), "
            f"got values in [{int(t.min())}, {int(t.max())}]"
        )
    return t.to(device)


# --------------------------------------------------------------------------------------------
# the entry point
# --------------------------------------------------------------------------------------------
def explain(
    model: nn.Module,
    x: torch.Tensor,
    target: int | torch.Tensor | None,
    method: str,
    *,
    score: str = "logit",
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
    **method_kwargs: Any,
) -> torch.Tensor:
    """Attributions of ``model``'s score for class ``target`` at inputs ``x``.

    Args:
        model: classifier mapping float32 (N, ...) inputs to logits (N, K) (a regressor's (N, 1)
            output works with ``score="logit"`` and ``target=0``). If it is in train mode it is put in
            eval mode for the call (every module's mode is restored afterwards); a model already in
            eval mode is used as is, so dropout modules switched back to train mode (MC dropout)
            stay stochastic.
        x: float32 (N, C, H, W) images in [0, 1] or (N, D) standardized features. Any device: the
            work runs on the model's device and the result comes back on ``x``'s.
        target: class to explain, an int for all samples or int64 (N,), each in [0, K); None
            explains each sample's predicted class (argmax of the model's logits).
        method: one of :func:`available_methods` (``"saliency"``, ``"integrated_gradients"``,
            ``"smoothgrad"``, ``"gradcam"``, ``"kernel_shap"``, ...).
        score: what is explained: ``"logit"`` (raw logit z_c), ``"probability"`` (softmax p_c) or
            ``"log_probability"`` (log p_c). Calibration (temperature scaling) changes the latter two
            but not the first.
        batch_size: at most this many inputs per forward pass inside the method (default 256).
        generator: torch.Generator for stochastic methods (:func:`available_methods`
            ``(stochastic=True)``); None draws from a fresh, randomly seeded generator.
        **method_kwargs: options of the method (``steps=``, ``baseline=``, ``n_samples=``,
            ``layer=``, ``window=``...); see the method's function in ``METHODS[method]``. Methods
            needing a layer take ``layer=`` (dotted name or submodule; default ``model.cam_layer``).

    Returns:
        float32 tensor shaped like ``x``, on ``x``'s device, detached: raw signed attributions
        (non-negative for ``saliency``, ``vargrad``, ``gradcam``).

    Raises:
        TypeError: ``model`` is not an nn.Module, ``x`` is not floating point, ``target`` is not
            integer.
        ValueError: unknown ``method`` (the message lists the available ones) or ``score``; NaN/inf
            or empty ``x``; model output not (N, K); ``target`` out of range; ``score`` other than
            ``"logit"`` for a single-output model; a layer method without a layer.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"unknown `method` {method!r}; available methods: {available_methods()}")
    check_choice(score, "score", SCORES)
    if isinstance(x, torch.Tensor) and not x.is_floating_point():
        raise TypeError(f"`x` must be a floating-point tensor (images in [0, 1] or standardized features), got {x.dtype}")
    x = check_tensor(x, "x", dtype=None)
    if not x.is_floating_point():
        raise TypeError(f"`x` must hold floating-point values, got {x.dtype}")
    if x.ndim < 2:
        raise ValueError(f"`x` must be a batch (N, ...) with at least 2 dimensions, got shape {tuple(x.shape)}")
    if batch_size is not None:
        check_int(batch_size, "batch_size", low=1)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"`generator` must be a torch.Generator or None, got {type(generator).__name__}")

    out_device = x.device
    device = model_device(model)
    xd = x.detach().to(device=device, dtype=torch.float32)
    wrapped = ScoreModel(model, score)
    with _eval_mode(model):
        wrapped.training = model.training  # the wrapper reports the inner model's mode (no propagation)
        n_outputs = getattr(model, "n_classes", None)  # set by xcal_core.models.build_model
        if target is None or not isinstance(n_outputs, int) or isinstance(n_outputs, bool) or n_outputs < 1:
            # no declared K (or the predicted class is needed anyway): one forward pass tells
            bsz = _bs(batch_size)
            with torch.no_grad():
                probe = model(xd[: 1 if target is not None else bsz])
            if not isinstance(probe, torch.Tensor) or probe.ndim != 2:
                shape = tuple(probe.shape) if isinstance(probe, torch.Tensor) else type(probe).__name__
                raise ValueError(f"`model` must return a (N, K) tensor of logits, got {shape}")
            n_outputs = probe.shape[1]
        if n_outputs == 1 and score != "logit":
            raise ValueError(f"`score`={score!r} needs a classifier with K >= 2 outputs; the model has 1 output (use score='logit')")
        if target is None:
            with torch.no_grad():
                t = torch.cat([probe.argmax(1)] + [model(xd[s : s + bsz]).argmax(1) for s in range(bsz, xd.shape[0], bsz)])
        else:
            t = _check_target(target, xd.shape[0], n_outputs, device)
        kwargs = dict(method_kwargs)
        _check_options(method, fn := METHODS[method], kwargs)
        if method in NEEDS_LAYER:
            kwargs["layer"] = resolve_layer(model, kwargs.get("layer"))
        with _quiet_captum():
            attr = fn(wrapped, xd, t, score=score, batch_size=batch_size, generator=generator, **kwargs)
    if not isinstance(attr, torch.Tensor) or attr.shape != x.shape:
        got = tuple(attr.shape) if isinstance(attr, torch.Tensor) else type(attr).__name__
        raise RuntimeError(f"method {method!r} returned {got}, expected a tensor shaped like `x` {tuple(x.shape)}")
    return attr.detach().to(device=out_device, dtype=torch.float32)


@contextmanager
def _quiet_captum():
    """Silence two informational Captum warnings where they arise, and nothing else.

    * "Setting backward hooks on ReLU activations ...": Captum's Guided Backprop / Deconvolution say on
      every call that they hook the ReLUs (and remove the hooks afterwards), which is what they are for.
    * "IProgress not found ...": importing Captum imports ``tqdm.auto``, which warns in a Jupyter
      kernel without ipywidgets; Captum's progress bars are never shown here.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU activations")
        warnings.filterwarnings("ignore", message="IProgress not found")
        yield


# --------------------------------------------------------------------------------------------
# post-processing
# --------------------------------------------------------------------------------------------
def reduce_channels(attr: torch.Tensor, how: str = "sum") -> torch.Tensor:
    """Collapse the channel dimension of image attributions.

    Args:
        attr: float (N, C, H, W) attributions.
        how: ``"sum"`` (signed sum over channels), ``"abs_sum"`` (sum of absolute values, as in the
            C2I and UQ papers), ``"mean"`` (signed mean) or ``"max_abs"`` (max of absolute values).

    Returns:
        float32 (N, H, W).
    """
    check_choice(how, "how", ("sum", "abs_sum", "mean", "max_abs"))
    a = check_tensor(attr, "attr", ndim=4, finite=False)
    if how == "sum":
        return a.sum(1)
    if how == "abs_sum":
        return a.abs().sum(1)
    if how == "mean":
        return a.mean(1)
    return a.abs().amax(1)


def normalize_attributions(attr: torch.Tensor, how: str = "max_abs", eps: float = 1e-12) -> torch.Tensor:
    """Normalize each sample's attributions separately.

    Args:
        attr: float (N, ...) attributions.
        how: ``"max_abs"`` (divide by max |a|: values in [-1, 1], sign kept), ``"minmax"``
            ((a - min) / (max - min): values in [0, 1], as in the C2I paper) or ``"sum_abs"``
            (divide by sum |a|: the absolute values sum to 1).
        eps: a sample whose scale (max |a|, max - min, sum |a|) is <= eps is returned as zeros.

    Returns:
        float32 tensor shaped like ``attr``.
    """
    check_choice(how, "how", ("max_abs", "minmax", "sum_abs"))
    a = check_tensor(attr, "attr", finite=False)
    if a.ndim < 2:
        raise ValueError(f"`attr` must be a batch (N, ...), got shape {tuple(a.shape)}")
    flat = a.reshape(a.shape[0], -1)
    if how == "max_abs":
        scale = flat.abs().amax(1, keepdim=True)
        out = flat / scale.clamp_min(eps)
    elif how == "sum_abs":
        scale = flat.abs().sum(1, keepdim=True)
        out = flat / scale.clamp_min(eps)
    else:
        lo = flat.amin(1, keepdim=True)
        scale = flat.amax(1, keepdim=True) - lo
        out = (flat - lo) / scale.clamp_min(eps)
    out = torch.where(scale > eps, out, torch.zeros_like(out))
    return out.reshape(a.shape)


# --------------------------------------------------------------------------------------------
# gradient methods
# --------------------------------------------------------------------------------------------
@register("saliency")
def saliency(model, x, target, *, batch_size=None, abs: bool = True, score=None, generator=None):
    """Saliency map: ``|d s_c(x) / d x|`` (Simonyan et al. 2014); ``abs=False`` gives the signed gradient.

    Same as Captum's ``Saliency(model).attribute(x, target, abs=abs)``.

    References:
        Simonyan, Vedaldi, Zisserman. Deep Inside Convolutional Networks. ICLR workshop 2014.
    """
    g = input_gradients(model, x, target, batch_size=batch_size)
    return g.abs() if abs else g


@register("gradient")
def gradient(model, x, target, *, batch_size=None, score=None, generator=None):
    """Signed gradient ``d s_c(x) / d x``."""
    return input_gradients(model, x, target, batch_size=batch_size)


@register("input_x_gradient")
def input_x_gradient(model, x, target, *, batch_size=None, score=None, generator=None):
    """Input times gradient ``x * d s_c(x) / d x`` (Shrikumar et al. 2016; = Captum ``InputXGradient``)."""
    return x * input_gradients(model, x, target, batch_size=batch_size)


def resolve_baselines(baseline: Any, x: torch.Tensor, baseline_value: Any = None) -> torch.Tensor:
    """Turn a baseline specification into a stack of B reference inputs.

    Args:
        baseline: ``"zero"`` / ``"black"`` (all zeros: a black image for [0, 1] inputs, the mean for
            standardized tabular inputs), ``"white"`` (all ones), ``"black_white"`` (both, B = 2:
            methods average over them, as in Calibrate-to-Interpret), ``"mean"`` (``baseline_value``,
            e.g. ``dataset.info.train_mean``), a float (constant), or a tensor broadcastable to ``x``
            ((N, ...), one input's shape, or (B, N, ...) for several references).
        x: float32 (N, ...) inputs.
        baseline_value: tensor broadcastable to ``x`` for ``baseline="mean"``.

    Returns:
        float32 (B, N, ...) on ``x``'s device.
    """
    if isinstance(baseline, str):
        check_choice(baseline, "baseline", BASELINES)
        if baseline in ("zero", "black"):
            return torch.zeros_like(x)[None]
        if baseline == "white":
            return torch.ones_like(x)[None]
        if baseline == "black_white":
            return torch.stack([torch.zeros_like(x), torch.ones_like(x)])
        if baseline_value is None:
            raise ValueError("`baseline`='mean' needs `baseline_value` (a tensor broadcastable to x, e.g. the training mean)")
        b = check_tensor(baseline_value, "baseline_value").to(x.device)
    elif isinstance(baseline, (int, float, np.integer, np.floating)) and not isinstance(baseline, bool):
        if not math.isfinite(float(baseline)):
            raise ValueError(f"`baseline` must be finite, got {baseline}")
        return torch.full_like(x, float(baseline))[None]
    elif isinstance(baseline, (torch.Tensor, np.ndarray)):
        b = check_tensor(baseline, "baseline").to(x.device)
    else:
        raise TypeError(f"`baseline` must be one of {list(BASELINES)}, a float or a tensor, got {type(baseline).__name__}")
    if b.ndim == x.ndim + 1:
        try:
            return torch.broadcast_to(b, (b.shape[0],) + tuple(x.shape)).clone()
        except RuntimeError as exc:
            raise ValueError(f"`baseline` of shape {tuple(b.shape)} is not (B, *x.shape) for x {tuple(x.shape)}") from exc
    try:
        return torch.broadcast_to(b, x.shape).clone()[None]
    except RuntimeError as exc:
        raise ValueError(f"`baseline` of shape {tuple(b.shape)} does not broadcast to x {tuple(x.shape)}") from exc


def ig_alphas_weights(steps: int, rule: str = "gausslegendre") -> tuple[torch.Tensor, torch.Tensor]:
    """Quadrature nodes and weights on [0, 1] for Integrated Gradients.

    Args:
        steps: number of nodes (>= 1; >= 2 for the trapezoid rule).
        rule: ``"gausslegendre"`` (Captum's default), ``"riemann_left"`` (alpha = k/m, k = 0..m-1,
            the C2I code), ``"riemann_right"``, ``"riemann_middle"``, ``"riemann_trapezoid"``.
            The Riemann nodes and weights match Captum's, except the trapezoid rule, which here uses
            the textbook weights 1/(m-1) (ends halved) so that the weights sum to 1; Captum's sum to
            (m-1)/m.

    Returns:
        ``(alphas, weights)``, float64 (steps,).
    """
    check_choice(rule, "rule", IG_RULES)
    m = check_int(steps, "steps", low=2 if rule == "riemann_trapezoid" else 1)
    if rule == "gausslegendre":
        nodes, w = np.polynomial.legendre.leggauss(m)
        return torch.from_numpy(0.5 * (nodes + 1)), torch.from_numpy(0.5 * w)
    k = torch.arange(m, dtype=torch.float64)
    if rule == "riemann_trapezoid":
        alphas = k / (m - 1)
        w = torch.full((m,), 1.0 / (m - 1), dtype=torch.float64)
        w[0] /= 2
        w[-1] /= 2
        return alphas, w
    w = torch.full((m,), 1.0 / m, dtype=torch.float64)
    offset = {"riemann_left": 0.0, "riemann_right": 1.0, "riemann_middle": 0.5}[rule]
    return (k + offset) / m, w


def _path_gradients(model, x, target, baselines, alphas, weights, batch_size):
    """sum_k w_k grad s_c(b + alpha_k (x - b)) for every (baseline, sample); (B, N, ...) result.

    All B * S * N path points go through chunked passes of ``batch_size`` inputs, built on the fly.
    """
    bsz = _bs(batch_size)
    n_base, n = baselines.shape[0], x.shape[0]
    n_steps = alphas.shape[0]
    total = n_base * n_steps * n
    acc = torch.zeros((n_base * n,) + tuple(x.shape[1:]), dtype=torch.float32, device=x.device)
    alphas = alphas.to(device=x.device, dtype=torch.float32)
    weights = weights.to(device=x.device, dtype=torch.float32)
    flat_base = baselines.reshape((n_base * n,) + tuple(x.shape[1:]))
    view = (-1,) + (1,) * (x.ndim - 1)
    for s in range(0, total, bsz):
        k = torch.arange(s, min(s + bsz, total), device=x.device)
        b_idx, rest = k // (n_steps * n), k % (n_steps * n)
        st, smp = rest // n, rest % n
        row = b_idx * n + smp
        base = flat_base[row]
        pts = base + alphas[st].view(view) * (x[smp] - base)
        g = input_gradients(model, pts, target[smp], batch_size=bsz)
        acc.index_add_(0, row, g * weights[st].view(view))
    return acc.reshape((n_base,) + tuple(x.shape))


@register("integrated_gradients")
def integrated_gradients(
    model, x, target, *, batch_size=None, steps: int = 50, baseline: Any = "zero", baseline_value: Any = None,
    rule: str = "gausslegendre", multiply_by_inputs: bool = True, combine: str = "signed", score=None,
    generator=None,
):
    """Integrated Gradients ``(x - b) * int_0^1 grad s_c(b + a (x - b)) da`` (Sundararajan et al. 2017).

    Args (method kwargs of :func:`explain`):
        steps: number of quadrature nodes m (default 50, Captum's default; C2I uses 30).
        baseline: see :func:`resolve_baselines`; ``"black_white"`` explains with the black (0) and
            the white (1) reference (Calibrate-to-Interpret's "black and white references combined")
            and combines the two maps as ``combine`` says. Default ``"zero"``.
        baseline_value: the tensor for ``baseline="mean"``.
        rule: quadrature rule, see :func:`ig_alphas_weights`; the default ``"gausslegendre"``
            reproduces Captum's ``IntegratedGradients`` with the same ``n_steps``.
        multiply_by_inputs: False returns the integrated gradient without the ``(x - b)`` factor.
        combine: how the maps of several references (B > 1) become one: ``"signed"`` (default) is the
            mean of the signed maps, so opposite signs cancel (black and white references usually
            disagree in sign, since ``x - b`` does); ``"abs"`` is the mean of each reference's
            absolute map, ``mean_b |a_b|`` (non-negative), which is what the Calibrate-to-Interpret
            code does (|.| of each reference's map, then the average). With one reference
            ``"abs"`` returns ``|a|``.

    Completeness: ``sum(attr) ~= s_c(x) - s_c(b)`` up to the quadrature error (per baseline; for
    ``"black_white"`` with ``combine="signed"`` the average of the two differences).

    References:
        Sundararajan, Taly, Yan. Axiomatic Attribution for Deep Networks. ICML 2017.
        Scafarto, Posocco, Bonnefoy. Calibrate to Interpret. ECML-PKDD workshops 2022 (section 4.2).
    """
    check_choice(combine, "combine", ("signed", "abs"))
    alphas, weights = ig_alphas_weights(steps, rule)
    baselines = resolve_baselines(baseline, x, baseline_value)
    avg_grad = _path_gradients(model, x, target, baselines, alphas, weights, batch_size)
    attr = (x[None] - baselines) * avg_grad if multiply_by_inputs else avg_grad
    return attr.abs().mean(0) if combine == "abs" else attr.mean(0)


def _noise_sigma(x, noise_level, stdev):
    view = (-1,) + (1,) * (x.ndim - 1)
    if stdev is not None:
        check_positive(stdev, "stdev", strict=False)
        return torch.full((x.shape[0],), float(stdev), device=x.device).view(view)
    check_positive(noise_level, "noise_level", strict=False)
    flat = x.reshape(x.shape[0], -1)
    return (noise_level * (flat.amax(1) - flat.amin(1))).view(view)


def _noisy_gradient_moments(model, x, target, n_samples, sigma, generator, batch_size):
    """Mean and (population) variance of the gradient at x + N(0, sigma^2) over n_samples draws.

    Noise is drawn one (N, ...) tensor per draw, in draw order, from ``generator``: the result does
    not depend on ``batch_size``. Forward-backward passes are chunked over (draw, sample) pairs.
    """
    n = x.shape[0]
    bsz = _bs(batch_size)
    g = _make_generator(generator)
    s1 = torch.zeros_like(x)
    s2 = torch.zeros_like(x)
    shift = None  # moments are accumulated around the first draw's gradient (no cancellation in VarGrad)
    draws_per_chunk = max(1, bsz // n)
    done = 0
    while done < n_samples:
        k = min(draws_per_chunk, n_samples - done)
        noise = torch.stack([_randn(x.shape, g, x.device) for _ in range(k)])  # (k, N, ...)
        pts = (x[None] + sigma[None] * noise).reshape((k * n,) + tuple(x.shape[1:]))
        grads = input_gradients(model, pts, target.repeat(k), batch_size=bsz).reshape((k,) + tuple(x.shape))
        if shift is None:
            shift = grads[0].clone()
        d = grads - shift
        s1 += d.sum(0)
        s2 += (d * d).sum(0)
        done += k
    m1, m2 = s1 / n_samples, s2 / n_samples
    return shift + m1, m2 - m1 * m1


@register("smoothgrad", stochastic=True)
def smoothgrad(
    model, x, target, *, batch_size=None, generator=None, n_samples: int = 20, noise_level: float = 0.15,
    stdev: float | None = None, abs: bool = False, squared: bool = False, score=None,
):
    """SmoothGrad: the gradient averaged over Gaussian-noised copies of the input (Smilkov et al. 2017).

    ``mean_j g(x + eps_j)`` with ``eps_j ~ N(0, sigma^2)``, ``g`` the signed gradient of the score.

    Args (method kwargs of :func:`explain`):
        n_samples: number of noisy copies per input (default 20).
        noise_level: sigma as a fraction of each input's value range ``max(x_i) - min(x_i)``
            (the paper's sigma / (x_max - x_min); 10-20% recommended; default 0.15).
        stdev: absolute sigma (overrides ``noise_level``), as Captum's ``stdevs``.
        abs: average ``|g|`` instead of ``g`` (= Captum ``NoiseTunnel(Saliency(m))`` smoothgrad,
            whose Saliency takes abs by default).
        squared: average ``g**2`` (Captum's ``"smoothgrad_sq"``; with ``abs`` irrelevant).

    Randomness: one standard normal (N, ...) tensor per draw from ``generator``; same generator
    state -> same result, whatever ``batch_size``.

    References:
        Smilkov, Thorat, Kim, Viegas, Wattenberg. SmoothGrad: removing noise by adding noise. 2017.
    """
    m = check_int(n_samples, "n_samples", low=1)
    sigma = _noise_sigma(x, noise_level, stdev)
    if abs and not squared:
        # |g| needs its own accumulation
        return _noisy_abs_mean(model, x, target, m, sigma, generator, batch_size)
    mean, var = _noisy_gradient_moments(model, x, target, m, sigma, generator, batch_size)
    return var + mean * mean if squared else mean


def _noisy_abs_mean(model, x, target, n_samples, sigma, generator, batch_size):
    n = x.shape[0]
    bsz = _bs(batch_size)
    g = _make_generator(generator)
    acc = torch.zeros_like(x)
    draws_per_chunk = max(1, bsz // n)
    done = 0
    while done < n_samples:
        k = min(draws_per_chunk, n_samples - done)
        noise = torch.stack([_randn(x.shape, g, x.device) for _ in range(k)])
        pts = (x[None] + sigma[None] * noise).reshape((k * n,) + tuple(x.shape[1:]))
        grads = input_gradients(model, pts, target.repeat(k), batch_size=bsz)
        acc += grads.abs().reshape((k,) + tuple(x.shape)).sum(0)
        done += k
    return acc / n_samples


@register("vargrad", stochastic=True)
def vargrad(
    model, x, target, *, batch_size=None, generator=None, n_samples: int = 20, noise_level: float = 0.15,
    stdev: float | None = None, score=None,
):
    """VarGrad: the variance of the gradient under Gaussian input noise (Adebayo et al. 2018).

    ``mean_j g_j**2 - (mean_j g_j)**2`` (population variance, as Captum's ``nt_type="vargrad"`` on a
    signed ``Saliency(abs=False)``). Noise and kwargs as :func:`smoothgrad`. Non-negative.

    References:
        Adebayo, Gilmer, Goodfellow, Kim. Local Explanation Methods for Deep Neural Networks Lack
        Sensitivity to Parameter Values. ICLR workshop 2018.
    """
    m = check_int(n_samples, "n_samples", low=1)
    sigma = _noise_sigma(x, noise_level, stdev)
    _, var = _noisy_gradient_moments(model, x, target, m, sigma, generator, batch_size)
    return var.clamp_min(0)


@register("gradient_shap", stochastic=True)
def gradient_shap(
    model, x, target, *, batch_size=None, generator=None, n_samples: int = 20, baseline: Any = "black_white",
    baseline_value: Any = None, stdev: float = 0.0, score=None,
):
    """GradientSHAP / expected gradients (Lundberg & Lee 2017; Erion et al. 2021).

    For each of ``n_samples`` draws per input: a reference ``b`` picked uniformly from the baseline
    distribution, ``alpha ~ U(0, 1)``, optional noise ``x' = x + N(0, stdev^2)``; the draw's
    attribution is ``(x' - b) * grad s_c(b + alpha (x' - b))``; the result is their mean (Captum's
    ``GradientShap`` semantics, drawn from ``generator`` instead of the global RNG).

    Args (method kwargs of :func:`explain`):
        n_samples: draws per input (default 20).
        baseline: the reference distribution, see :func:`resolve_baselines`; a (B, *one input)
            tensor is a distribution of B references shared by all inputs. Default
            ``"black_white"`` (the references 0 and 1).
        baseline_value: tensor for ``baseline="mean"``.
        stdev: absolute std of the input noise (default 0).

    References:
        Lundberg, Lee. A Unified Approach to Interpreting Model Predictions. NeurIPS 2017.
    """
    m = check_int(n_samples, "n_samples", low=1)
    check_positive(stdev, "stdev", strict=False)
    if isinstance(baseline, torch.Tensor) and baseline.ndim == x.ndim and baseline.shape[1:] == x.shape[1:] \
            and baseline.shape[0] != x.shape[0]:
        dist = check_tensor(baseline, "baseline").to(x.device)[:, None].expand((-1,) + tuple(x.shape)).contiguous()
    else:
        dist = resolve_baselines(baseline, x, baseline_value)  # (B, N, ...)
    n_base, n = dist.shape[0], x.shape[0]
    g = _make_generator(generator)
    bsz = _bs(batch_size)
    view = (-1,) + (1,) * (x.ndim - 1)
    acc = torch.zeros_like(x)
    draws_per_chunk = max(1, bsz // n)
    done = 0
    ar = torch.arange(n, device=x.device)
    while done < m:
        k = min(draws_per_chunk, m - done)
        pts, mults = [], []
        for _j in range(k):  # random numbers only; the passes below are batched over all draws
            idx = torch.randint(n_base, (n,), generator=g, device=g.device).to(x.device)
            alpha = _rand((n,), g, x.device).view(view)
            xin = x + stdev * _randn(x.shape, g, x.device) if stdev > 0 else x
            b = dist[idx, ar]
            pts.append(b + alpha * (xin - b))
            mults.append(xin - b)
        pts_t = torch.cat(pts)
        grads = input_gradients(model, pts_t, target.repeat(k), batch_size=bsz)
        acc += (grads * torch.cat(mults)).reshape((k,) + tuple(x.shape)).sum(0)
        done += k
    return acc / m


# --------------------------------------------------------------------------------------------
# Captum-backed propagation methods
# --------------------------------------------------------------------------------------------
def _chunked(fn, x, target, batch_size, *extra):
    """Apply ``fn(x_chunk, target_chunk, *extra_chunks)`` over chunks of at most batch_size samples."""
    bsz = _bs(batch_size)
    outs = []
    for s in range(0, x.shape[0], bsz):
        outs.append(fn(x[s : s + bsz], target[s : s + bsz], *[e[s : s + bsz] for e in extra]).detach())
    return torch.cat(outs)


def _captum_input(x):
    return x.detach().clone().requires_grad_(True)


@register("guided_backprop")
def guided_backprop(model, x, target, *, batch_size=None, score=None, generator=None):
    """Guided backpropagation (Springenberg et al. 2015) through every ``nn.ReLU`` module (Captum).

    A gradient passes a ReLU only where its input was positive and the incoming gradient is
    positive. Needs ReLUs as ``nn.ReLU`` modules (functional ``F.relu`` is not modified).

    References:
        Springenberg, Dosovitskiy, Brox, Riedmiller. Striving for Simplicity: The All Convolutional
        Net. ICLR workshop 2015.
    """
    from captum.attr import GuidedBackprop

    gb = GuidedBackprop(model)
    return _chunked(lambda xi, ti: gb.attribute(_captum_input(xi), target=ti), x, target, batch_size)


@register("deconvolution")
def deconvolution(model, x, target, *, batch_size=None, score=None, generator=None):
    """Deconvnet attributions (Zeiler & Fergus 2014): ReLUs applied to the backward signal (Captum).

    References:
        Zeiler, Fergus. Visualizing and Understanding Convolutional Networks. ECCV 2014.
    """
    from captum.attr import Deconvolution

    dc = Deconvolution(model)
    return _chunked(lambda xi, ti: dc.attribute(_captum_input(xi), target=ti), x, target, batch_size)


@register("deeplift")
def deeplift(model, x, target, *, batch_size=None, baseline: Any = "zero", baseline_value: Any = None,
             eps: float = 1e-10, score=None, generator=None):
    """DeepLIFT with the rescale rule (Shrikumar et al. 2017), via Captum's ``DeepLift``.

    Args (method kwargs of :func:`explain`):
        baseline: reference input, see :func:`resolve_baselines` (``"black_white"`` averages the two
            maps). Default ``"zero"``.
        baseline_value: tensor for ``baseline="mean"``.
        eps: Captum's stabilizer for the multiplier.

    Needs every nonlinearity as its own ``nn.ReLU`` module that runs once per forward pass (all
    ``xcal_core.models`` satisfy this); otherwise Captum's error is re-raised as ValueError.
    Summation-to-delta (``sum(attr) = s_c(x) - s_c(b)``) holds for ``score="logit"`` on models
    whose pooling is average pooling; Captum's max-pool rule does not conserve it (measured:
    deltas of 10-50% of the logit gap on a small CNN with ``nn.MaxPool2d``), nor does the softmax
    of ``score="probability"``, which is not a DeepLift module.

    References:
        Shrikumar, Greenside, Kundaje. Learning Important Features Through Propagating Activation
        Differences. ICML 2017.
    """
    from captum.attr import DeepLift

    baselines = resolve_baselines(baseline, x, baseline_value)
    dl = DeepLift(model, eps=eps)
    maps = []
    try:
        for b in baselines:
            maps.append(_chunked(lambda xi, ti, bi: dl.attribute(_captum_input(xi), baselines=bi, target=ti),
                                 x, target, batch_size, b))
    except RuntimeError as exc:
        if "DeepLift" in str(exc) or "used more than once" in str(exc):
            raise ValueError(
                "deeplift needs each ReLU as its own nn.ReLU module used once per forward pass; "
                f"Captum said: {exc}"
            ) from exc
        raise
    return torch.stack(maps).mean(0)


def _check_sequential_chain(model: nn.Module, x1: torch.Tensor) -> None:
    """Raise unless every leaf module consumes exactly the output of the leaf module run before it.

    That is the structure LRP's layer rules assume. Residual additions, branches or functional ops
    between modules (``x + f(x)``, ``F.relu``, ``.view``) break the chain.
    """
    names = {m: n for n, m in model.named_modules()}
    calls: list[tuple[nn.Module, Any, Any]] = []

    def hook(mod, inp, out):
        calls.append((mod, inp[0] if inp else None, out))  # keeps the tensors alive: identity is safe

    handles = [m.register_forward_hook(hook) for m in model.modules() if len(list(m.children())) == 0]
    try:
        with torch.no_grad():
            model(x1)
    finally:
        for h in handles:
            h.remove()
    for (_, _, prev_out), (mod, inp, _) in zip(calls[:-1], calls[1:]):
        if inp is not prev_out:
            raise ValueError(
                "lrp needs a sequential model (each layer feeding the next, as xcal's mlp and small_cnn); "
                f"the input of layer {names.get(mod, '?')!r} is not the output of the layer run before it "
                "(skip connection or functional op between modules). Use deeplift or integrated_gradients."
            )


@register("lrp")
def lrp(model, x, target, *, batch_size=None, score="logit", generator=None):
    """Layer-wise relevance propagation with Captum's default rules (epsilon rule, eps = 1e-9).

    Captum assigns the epsilon rule to Conv2d, Linear, pooling and BatchNorm2d layers and passes
    relevance through ReLU and Dropout. Shape-only or affine leaf modules Captum has no rule for
    (``nn.Flatten``, ``nn.Identity``, ``Normalize``, ``BatchNorm1d``...) get the epsilon rule for
    the call (for these it forwards relevance, up to the bias share). Only sequential models are
    accepted (each leaf module consumes the previous one's output: xcal's ``mlp`` and
    ``small_cnn``); models with skip connections (``resnet18_cifar``, ``tabular_resnet``) raise
    ValueError: there the epsilon rule on a bare ``+`` produced relevances of order 1e6 for logits
    of order 1. For a bias-free ReLU network the relevance sums to the logit. Needs
    ``score="logit"``.

    References:
        Bach, Binder, Montavon, Klauschen, Mueller, Samek. On Pixel-Wise Explanations for Non-Linear
        Classifier Decisions by Layer-Wise Relevance Propagation. PLoS ONE 2015.
    """
    if score != "logit":
        raise ValueError(f"lrp propagates the relevance of a logit; use score='logit' (got score={score!r})")
    from captum.attr import LRP
    from captum.attr._core.lrp import SUPPORTED_LAYERS_WITH_RULES, SUPPORTED_NON_LINEAR_LAYERS
    from captum.attr._utils.lrp_rules import EpsilonRule

    _check_sequential_chain(model.model if isinstance(model, ScoreModel) else model, x[:1])
    leaves = [m for m in model.modules() if len(list(m.children())) == 0]
    user_rules = {m: m.rule for m in leaves if hasattr(m, "rule")}
    added = []
    for m in leaves:
        if m in user_rules or type(m) in SUPPORTED_LAYERS_WITH_RULES or type(m) in SUPPORTED_NON_LINEAR_LAYERS:
            continue
        m.rule = EpsilonRule()
        added.append(m)

    def one(xi, ti):
        # Captum deletes every rule after each call: re-attach ours (and the user's) each time.
        for m in added:
            m.rule = EpsilonRule()
        for m, r in user_rules.items():
            m.rule = r
        return LRP(model).attribute(_captum_input(xi), target=ti)

    try:
        return _chunked(one, x, target, batch_size)
    finally:
        for m in added:
            if hasattr(m, "rule"):
                del m.rule
        for m, r in user_rules.items():
            m.rule = r


# --------------------------------------------------------------------------------------------
# Grad-CAM family
# --------------------------------------------------------------------------------------------
def grad_cam(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    layer: nn.Module,
    *,
    relu: bool = True,
    upsample: str | None = "bilinear",
    create_graph: bool = False,
) -> torch.Tensor:
    """Grad-CAM maps, differentiable if asked (building block of the ``"gradcam"`` method).

    ``cam = ReLU(sum_k w_k A_k)`` with ``w_k`` the spatial mean of ``d s_c / d A_k`` and ``A`` the
    output of ``layer`` (N, K, h, w).

    Args:
        model: maps x to scores (N, K) (a classifier or a :class:`ScoreModel`), in the wanted mode.
        x: float32 (N, C, H, W) on the model's device.
        target: int64 (N,) classes.
        layer: a submodule of ``model`` whose output is (N, K, h, w).
        relu: apply the ReLU (Grad-CAM); False keeps negative evidence.
        upsample: ``"bilinear"`` (as Captum's ``LayerAttribution.interpolate``), ``"nearest"``
            (pixel repetition, as ID-ExpO), ``"bicubic"``, or None to return the layer-resolution map.
        create_graph: keep the graph of the channel weights (second-order Grad-CAM, for training
            through the explanation); False treats ``w_k`` as constants. The result is then not
            detached.

    Returns:
        float32 (N, 1, H, W) (or (N, 1, h, w) with ``upsample=None``). Detached unless
        ``create_graph``.
    """
    if upsample is not None:
        check_choice(upsample, "upsample", INTERPOLATION_MODES)
    store: dict[str, torch.Tensor] = {}

    def hook(_m, _inp, out):
        store["a"] = out

    handle = layer.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            xi = x if (create_graph and x.requires_grad) else x.detach().requires_grad_(True)
            scores = model(xi)
            a = store.get("a")
            if not isinstance(a, torch.Tensor) or a.ndim != 4:
                got = tuple(a.shape) if isinstance(a, torch.Tensor) else type(a).__name__
                raise ValueError(f"`layer` must output a (N, K, h, w) feature map for Grad-CAM, got {got}")
            (grads,) = torch.autograd.grad(_select(scores, target), a, create_graph=create_graph)
            w = grads.mean(dim=(2, 3), keepdim=True)
            cam = (w * a).sum(1, keepdim=True)
            if relu:
                cam = F.relu(cam)
            if upsample is not None:
                kw = {} if upsample == "nearest" else {"align_corners": False}
                cam = F.interpolate(cam, size=tuple(x.shape[2:]), mode=upsample, **kw)
    finally:
        handle.remove()
    return cam if create_graph else cam.detach()


def _check_image(x, method):
    if x.ndim != 4:
        raise ValueError(f"`{method}` needs image inputs x of shape (N, C, H, W), got shape {tuple(x.shape)}")


@register("gradcam", needs_layer=True)
def gradcam(model, x, target, *, layer, batch_size=None, relu: bool = True, upsample: str = "bilinear",
            score=None, generator=None):
    """Grad-CAM (Selvaraju et al. 2017), upsampled to the input size and repeated over channels.

    Args (method kwargs of :func:`explain`):
        layer: dotted name or module (default ``model.cam_layer``), output (N, K, h, w).
        relu: keep only positive evidence (default True, as the paper).
        upsample: ``"bilinear"`` (default; = Captum ``LayerGradCam`` + ``LayerAttribution.interpolate``),
            ``"nearest"`` or ``"bicubic"``.

    Returns (N, C, H, W): the same (N, 1, H, W) map in every channel, so reducing with
    ``reduce_channels(..., "mean")`` gives the map back (``"sum"`` gives C times it).

    References:
        Selvaraju, Cogswell, Das, Vedantam, Parikh, Batra. Grad-CAM: Visual Explanations from Deep
        Networks via Gradient-based Localization. ICCV 2017.
    """
    _check_image(x, "gradcam")
    check_choice(upsample, "upsample", INTERPOLATION_MODES)
    cam = _chunked(lambda xi, ti: grad_cam(model, xi, ti, layer, relu=relu, upsample=upsample), x, target, batch_size)
    return cam.expand_as(x).contiguous()


@register("guided_gradcam", needs_layer=True)
def guided_gradcam(model, x, target, *, layer, batch_size=None, upsample: str = "bilinear",
                   score=None, generator=None):
    """Guided Grad-CAM: guided backprop times the upsampled Grad-CAM map (Selvaraju et al. 2017).

    ``upsample="nearest"`` reproduces Captum's ``GuidedGradCam`` default.
    """
    _check_image(x, "guided_gradcam")
    cam = gradcam(model, x, target, layer=layer, batch_size=batch_size, upsample=upsample)
    return guided_backprop(model, x, target, batch_size=batch_size) * cam


# --------------------------------------------------------------------------------------------
# occlusion
# --------------------------------------------------------------------------------------------
def _as_dims(value, name, n_dims, shape, default_lead):
    """int or tuple -> full per-feature-dim tuple; short tuples cover the trailing dims."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        vals = (int(value),) * max(1, n_dims - 1)  # all dims but the channel one (the only one for (N, D))
    elif isinstance(value, (tuple, list)) and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value):
        vals = tuple(int(v) for v in value)
    else:
        raise TypeError(f"`{name}` must be an int or a tuple of ints, got {value!r}")
    if len(vals) > n_dims:
        raise ValueError(f"`{name}` {vals} has more entries than the input has feature dims {tuple(shape)}")
    lead = tuple(default_lead[: n_dims - len(vals)])
    full = lead + vals
    for v, s in zip(full, shape):
        if v < 1 or v > s:
            raise ValueError(f"`{name}` {full} must be in [1, {tuple(shape)}] per dimension")
    return full


@register("occlusion")
def occlusion(model, x, target, *, batch_size=None, window: Any = 4, stride: Any = None, baseline: Any = 0.0,
              score=None, generator=None):
    """Sliding-window occlusion (Zeiler & Fergus 2014), batched; = Captum ``Occlusion``.

    Each window position replaces a patch with ``baseline``; every element gets the mean of
    ``s_c(x) - s_c(x occluded)`` over the windows that cover it. As in Captum, positions advance
    by ``stride`` and the last one per dimension is clipped at the border, so every element is
    covered.

    Args (method kwargs of :func:`explain`):
        window: patch size. For images an int k or (h, w) occludes all channels together (Captum's
            ``sliding_window_shapes=(C, h, w)``); a 3-tuple (c, h, w) is taken as is. For tabular
            (N, D) an int is the number of consecutive features. Default 4.
        stride: int or tuple like ``window`` (default: half the window, at least 1; the channel
            stride defaults to the channel window). Must be <= the window.
        baseline: float or tensor broadcastable to ``x``: the value occluded elements take.

    All N x (number of windows) occluded inputs run in chunked passes of ``batch_size``.

    References:
        Zeiler, Fergus. Visualizing and Understanding Convolutional Networks. ECCV 2014.
    """
    feat_shape = tuple(x.shape[1:])
    nd = len(feat_shape)
    win = _as_dims(window, "window", nd, feat_shape, feat_shape)
    if stride is None:
        strd = tuple(max(1, w // 2) for w in win)
        if nd >= 2:
            strd = (win[0],) + strd[1:]
    else:
        strd = _as_dims(stride, "stride", nd, feat_shape, win)
    for s, w, size in zip(strd, win, feat_shape):
        if s > w and size > w:
            raise ValueError(f"`stride` {strd} must be <= `window` {win} in every dimension the window does not cover fully")
    base = resolve_baselines(baseline, x)[0]
    dev = x.device
    # per-dimension 1-D masks (n_pos_d, size_d)
    dim_masks = []
    for w, s, size in zip(win, strd, feat_shape):
        n_pos = math.ceil((size - w) / s) + 1
        starts = torch.arange(n_pos, device=dev) * s
        pos = torch.arange(size, device=dev)
        dim_masks.append(((pos[None] >= starts[:, None]) & (pos[None] < starts[:, None] + w)).float())
    counts = [m.shape[0] for m in dim_masks]
    n_win = int(np.prod(counts))

    def masks_for(idx):  # (k,) window indices -> (k, *feat_shape) float masks
        out = None
        rem = idx
        per = []
        for c in reversed(counts):
            per.append(rem % c)
            rem = rem // c
        per.reverse()
        for d, (m, i) in enumerate(zip(dim_masks, per)):
            md = m[i].view((-1,) + tuple(m.shape[1] if j == d else 1 for j in range(nd)))
            out = md if out is None else out * md
        return out

    n = x.shape[0]
    bsz = _bs(batch_size)
    with torch.no_grad():
        full = model(x).gather(1, target[:, None]).squeeze(1)  # (N,)
        attr = torch.zeros_like(x)
        cover = torch.zeros(feat_shape, device=dev)
        samples_per_chunk = min(n, bsz)
        for s0 in range(0, n, samples_per_chunk):
            xs, bs_, ts, fs = x[s0:s0 + samples_per_chunk], base[s0:s0 + samples_per_chunk], \
                target[s0:s0 + samples_per_chunk], full[s0:s0 + samples_per_chunk]
            ns = xs.shape[0]
            wins_per_chunk = max(1, bsz // ns)
            for w0 in range(0, n_win, wins_per_chunk):
                idx = torch.arange(w0, min(w0 + wins_per_chunk, n_win), device=dev)
                mk = masks_for(idx)  # (k, ...)
                if s0 == 0:
                    cover += mk.sum(0)
                occluded = xs[None] * (1 - mk[:, None]) + bs_[None] * mk[:, None]  # (k, ns, ...)
                k = idx.shape[0]
                sc = model(occluded.reshape((k * ns,) + feat_shape)).gather(1, ts.repeat(k)[:, None]).view(k, ns)
                diff = fs[None] - sc  # (k, ns)
                attr[s0:s0 + ns] += torch.einsum("kn,k...->n...", diff, mk)
    return attr / cover.clamp_min(1)[None]
