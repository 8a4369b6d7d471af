"""Robustness of explanations: Average- and Max-Sensitivity, batched over perturbations and samples.

Sensitivity asks how much an explanation changes when the input moves a little:
``S(x) = || phi(x) - phi(x + eps) ||`` over random noise ``eps ~ U[-r, r]`` (elementwise). All
``n_samples`` perturbed copies of all ``N`` inputs are explained in chunks of at most ``batch_size``
inputs (one call of the explanation function per chunk), on the model's device.

The default settings match ``quantus.AvgSensitivity`` / ``quantus.MaxSensitivity`` (0.6): 200 draws of
uniform noise with radius 0.2, score ``||phi(x) - phi(x+eps)||_2 / ||phi(x)||_2`` (the "relative" norm).
The optimized-aggregation paper (Decker et al., ICML 2024) evaluates with radius 0.1 and optimizes the
squared norm (``norm="squared"``).

References:
    Yeh, Hsieh, Suggala, Inouye, Ravikumar. On the (in)fidelity and sensitivity of explanations.
    NeurIPS 2019 (Max-Sensitivity).
    Bhatt, Weller, Moura. Evaluating and aggregating feature-based model explanations. IJCAI 2020
    (Average-Sensitivity).
    Hedstroem et al. Quantus: an explainable AI toolkit. JMLR 2023.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from .._validation import check_choice, check_int, check_positive, check_tensor, model_device
from ._meta import metric

__all__ = ["avg_sensitivity", "max_sensitivity", "sensitivity_samples", "uniform_noise"]

ExplainFn = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
_NORMS = ("relative", "l2", "squared")
_SCORES = ("logit", "probability", "log_probability", "output")


# ----------------------------------------------------------------------------------- shared helpers


def _check_model(model: Any) -> torch.nn.Module:
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
    return model


def _check_x(x: Any) -> torch.Tensor:
    t = check_tensor(x, "x", ndim=(2, 3, 4, 5), dtype=None)
    return t if t.is_floating_point() else t.float()


def _targets(target: Any, n: int, device: torch.device) -> torch.Tensor:
    """Class index per sample as int64 (N,) on ``device`` (an int applies to every sample)."""
    if isinstance(target, torch.Tensor) and target.ndim == 0:
        target = int(target)
    if isinstance(target, bool):
        raise TypeError("`target` must be an int or an int64 tensor (N,), got bool")
    if isinstance(target, int):
        t = torch.full((n,), target, dtype=torch.long)
    else:
        t = check_tensor(target, "target", ndim=1, dtype=None)
        if t.is_floating_point():
            if not bool((t == t.round()).all()):
                raise TypeError("`target` must hold integer class indices")
            t = t.long()
        if t.shape[0] != n:
            raise ValueError(f"`target` has {t.shape[0]} entries but `x` has {n} samples")
    if int(t.min()) < 0:
        raise ValueError(f"`target` must hold class indices >= 0, got {int(t.min())}")
    return t.to(device=device, dtype=torch.long)


def _check_target_range(tgt: torch.Tensor, n_out: int) -> None:
    """Class indices must address a column of an (N, n_out) output (one device read-back)."""
    if int(tgt.max()) >= n_out:
        raise ValueError(f"`target` must be in [0, {n_out - 1}] for a model with {n_out} outputs, got {int(tgt.max())}")


def _select_score(out: torch.Tensor, tgt: torch.Tensor, score: str, *, check: bool = True) -> torch.Tensor:
    """The target column of the model output after the requested link (N,).

    ``check=False`` skips the target-range check (it reads a value back from the device): loops check the
    whole target vector once and then pass False for every chunk.
    """
    if out.ndim != 2:
        raise ValueError(f"`model` must return a 2-D output (N, K), got shape {tuple(out.shape)}")
    if check:
        _check_target_range(tgt, out.shape[1])
    if score == "probability":
        out = torch.softmax(out, dim=1)
    elif score == "log_probability":
        out = torch.log_softmax(out, dim=1)
    return out.gather(1, tgt[:, None])[:, 0]


class _DrawStream:
    """Lazily drawn per-draw tensors ``draw(j) -> (N, ...)`` for j = 0..m-1, served by flat (j, i) rows.

    Chunks walk the flat index j-major (all samples of draw 0, then draw 1, ...), so at most the draws a
    chunk spans are held in memory and the random stream does not depend on ``batch_size``.
    """

    def __init__(self, draw: Callable[[int], torch.Tensor] | None, m: int, fixed: torch.Tensor | None = None):
        self.draw, self.m, self.fixed = draw, m, fixed
        self.cache: dict[int, torch.Tensor] = {}
        self.next = 0

    def rows(self, j: torch.Tensor, i: torch.Tensor, span: tuple[int, int] | None = None) -> torch.Tensor:
        """Rows of draws ``j`` for samples ``i``; ``span = (min(j), max(j))`` as Python ints when the caller
        knows them (chunk loops do), which avoids reading them back from the device every chunk."""
        if self.fixed is not None:
            return self.fixed[j.to(self.fixed.device), i.to(self.fixed.device)]
        lo, hi = (int(j.min()), int(j.max())) if span is None else span
        while self.next <= hi:
            self.cache[self.next] = self.draw(self.next)
            self.next += 1
        for key in [k for k in self.cache if k < lo]:
            del self.cache[key]
        block = torch.stack([self.cache[k] for k in range(lo, hi + 1)])
        return block[(j - lo).to(block.device), i.to(block.device)]


def _gen_device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def _uniform(shape: tuple[int, ...], radius: float, generator: torch.Generator | None) -> torch.Tensor:
    return (torch.rand(shape, generator=generator, device=_gen_device(generator)) * 2.0 - 1.0) * radius


def uniform_noise(n_samples: int, shape: tuple[int, ...], radius: float = 0.2, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Noise draws ``U[-radius, radius]`` elementwise, in the order the sensitivity metrics consume them.

    Args:
        n_samples: number of draws m >= 1.
        shape: shape of one batch of inputs (N, ...).
        radius: half-width r > 0 of the uniform distribution.
        generator: torch generator (draws happen on its device); draws are made one (N, ...) block per draw j.

    Returns:
        float32 tensor (m, N, ...): exactly the noise that :func:`avg_sensitivity` adds with the same
        generator state (pass it back as ``noise=`` to reuse it).
    """
    n_samples = check_int(n_samples, "n_samples", low=1)
    check_positive(radius, "radius")
    return torch.stack([_uniform(shape, radius, generator) for _ in range(n_samples)])


def _explain_checked(explain_fn: ExplainFn, model: torch.nn.Module, x: torch.Tensor, tgt: torch.Tensor, like: tuple[int, ...] | None,
                     finite: torch.Tensor | None = None) -> torch.Tensor:
    """Call ``explain_fn`` and check its output. With a ``finite`` flag (0-dim bool tensor on the device) the
    finiteness check is accumulated into it instead (no device read-back per chunk; the caller checks
    the flag once with :func:`_raise_if_not_finite`)."""
    a = explain_fn(model, x, tgt)
    if not isinstance(a, torch.Tensor):
        raise TypeError(f"`explain_fn` must return a torch.Tensor, got {type(a).__name__}")
    if a.shape[0] != x.shape[0]:
        raise ValueError(f"`explain_fn` returned {a.shape[0]} attributions for {x.shape[0]} inputs")
    if like is not None and tuple(a.shape[1:]) != like:
        raise ValueError(f"`explain_fn` returned attributions of shape {tuple(a.shape[1:])} per input, expected {like} (the shape of `attributions`)")
    if finite is not None:
        finite &= torch.isfinite(a).all()
    elif not bool(torch.isfinite(a).all()):
        raise ValueError("`explain_fn` returned NaN or inf attributions")
    return a.detach()


def _raise_if_not_finite(finite: torch.Tensor) -> None:
    """The deferred check of :func:`_explain_checked` (one device read-back per call of a metric)."""
    if not bool(finite):
        raise ValueError("`explain_fn` returned NaN or inf attributions")


# ------------------------------------------------------------------------------------------ engine


def sensitivity_samples(
    model: torch.nn.Module,
    x: Any,
    target: Any,
    explain_fn: ExplainFn,
    *,
    attributions: Any = None,
    n_samples: int = 200,
    radius: float = 0.2,
    norm: str = "relative",
    noise: Any = None,
    generator: torch.Generator | None = None,
    batch_size: int = 256,
) -> torch.Tensor:
    """Per-draw explanation change ``||phi(x) - phi(x + eps_j)||`` for every sample and noise draw.

    Args:
        model: classifier returning logits (N, K); inputs move to its device.
        x: inputs (N, ...) (images float32 in [0, 1], or standardized tabular rows).
        target: class index per sample (int or int64 (N,)), passed to ``explain_fn``.
        explain_fn: ``fn(model, x, target) -> attributions`` (N, ...) (any fixed per-input shape, e.g.
            raw attributions shaped like x or normalized maps (N, H, W)); it is called on chunks of the
            perturbed inputs and must not depend on the chunk's composition.
        attributions: the explanations of the unperturbed inputs (N, ...) (Quantus' ``a_batch``);
            computed with ``explain_fn`` when None.
        n_samples: number of noise draws m >= 1 (ignored when ``noise`` is given).
        radius: noise half-width r > 0: ``eps ~ U[-r, r]`` elementwise, no clipping (as Quantus).
        norm: ``"relative"`` ``||d||_2 / ||phi(x)||_2`` (Quantus default), ``"l2"`` ``||d||_2``, or
            ``"squared"`` ``||d||_2^2`` (the paper's generalized-L2 form).
        noise: optional explicit noise (m, N, ...) shaped like x per draw; overrides the random draws.
        generator: torch generator for the noise (see :func:`uniform_noise` for the draw order).
        batch_size: most perturbed inputs per ``explain_fn`` call, >= 1.

    Returns:
        float32 tensor (N, m) on x's device. With ``norm="relative"`` a sample whose unperturbed
        explanation is all zero gives NaN (0/0 or x/0), as in Quantus.
    """
    model = _check_model(model)
    if not callable(explain_fn):
        raise TypeError(f"`explain_fn` must be callable fn(model, x, target), got {type(explain_fn).__name__}")
    check_choice(norm, "norm", _NORMS)
    batch_size = check_int(batch_size, "batch_size", low=1)
    x_in = _check_x(x)
    out_device = x_in.device
    device = model_device(model)
    xd = x_in.to(device)
    n = xd.shape[0]
    tgt = _targets(target, n, device)

    if attributions is None:
        finite0 = torch.ones((), dtype=torch.bool, device=device)
        a0 = torch.cat([_explain_checked(explain_fn, model, xd[s : s + batch_size], tgt[s : s + batch_size], None, finite0)
                        for s in range(0, n, batch_size)])
        _raise_if_not_finite(finite0)
    else:
        a0 = check_tensor(attributions, "attributions").to(device)
        if a0.shape[0] != n:
            raise ValueError(f"`attributions` has {a0.shape[0]} rows but `x` has {n} samples")
    a0_flat = a0.reshape(n, -1).float()

    if noise is not None:
        eps = check_tensor(noise, "noise", dtype=None).float()
        if eps.ndim != xd.ndim + 1 or tuple(eps.shape[1:]) != tuple(xd.shape):
            raise ValueError(f"`noise` must have shape (m, *x.shape) = (m, {', '.join(map(str, xd.shape))}), got {tuple(eps.shape)}")
        m = eps.shape[0]
        stream = _DrawStream(None, m, fixed=eps.to(device))
    else:
        m = check_int(n_samples, "n_samples", low=1)
        check_positive(radius, "radius")
        shape = tuple(xd.shape)
        stream = _DrawStream(lambda j: _uniform(shape, radius, generator).to(device=device, dtype=xd.dtype), m)

    total = m * n
    out = torch.empty(total, device=device, dtype=torch.float32)
    like = tuple(a0.shape[1:])
    finite = torch.ones((), dtype=torch.bool, device=device)
    for start in range(0, total, batch_size):
        stop = min(start + batch_size, total)
        idx = torch.arange(start, stop, device=device)
        j, i = idx // n, idx % n
        xp = xd[i] + stream.rows(j, i, (start // n, (stop - 1) // n))
        ap = _explain_checked(explain_fn, model, xp, tgt[i], like, finite).reshape(idx.shape[0], -1).float()
        d = (a0_flat[i] - ap).norm(dim=1)
        if norm == "squared":
            d = d * d
        elif norm == "relative":
            d = d / a0_flat[i].norm(dim=1)
        out[idx] = d
    _raise_if_not_finite(finite)
    return out.view(m, n).t().contiguous().to(out_device)


@metric(higher_is_better=False, category="robustness")
def avg_sensitivity(model: torch.nn.Module, x: Any, target: Any, explain_fn: ExplainFn, **kwargs: Any) -> torch.Tensor:
    """Average-Sensitivity: mean explanation change over uniform input noise (lower is more robust).

    Args:
        model, x, target, explain_fn: as in :func:`sensitivity_samples`.
        **kwargs: ``attributions``, ``n_samples`` (200), ``radius`` (0.2), ``norm`` ("relative"),
            ``noise``, ``generator``, ``batch_size`` (256) of :func:`sensitivity_samples`.

    Returns:
        float32 tensor (N,): ``mean_j ||phi(x) - phi(x + eps_j)|| (/ ||phi(x)||)``, NaN draws ignored
        (Quantus' nanmean).

    References:
        Bhatt, Weller, Moura. Evaluating and aggregating feature-based model explanations. IJCAI 2020.
    """
    return torch.nanmean(sensitivity_samples(model, x, target, explain_fn, **kwargs), dim=1)


@metric(higher_is_better=False, category="robustness")
def max_sensitivity(model: torch.nn.Module, x: Any, target: Any, explain_fn: ExplainFn, **kwargs: Any) -> torch.Tensor:
    """Max-Sensitivity: largest explanation change over uniform input noise (lower is more robust).

    Args:
        model, x, target, explain_fn: as in :func:`sensitivity_samples`.
        **kwargs: options of :func:`sensitivity_samples`.

    Returns:
        float32 tensor (N,): ``max_j ||phi(x) - phi(x + eps_j)|| (/ ||phi(x)||)``, NaN draws ignored.

    References:
        Yeh et al. On the (in)fidelity and sensitivity of explanations. NeurIPS 2019.
    """
    s = sensitivity_samples(model, x, target, explain_fn, **kwargs)
    s = torch.where(torch.isnan(s), torch.full_like(s, -torch.inf), s).max(dim=1).values
    return torch.where(torch.isinf(s) & (s < 0), torch.full_like(s, torch.nan), s)
