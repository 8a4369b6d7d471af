"""The matrices ``E[Gamma^T Gamma]`` of the optimized-aggregation paper, built batched.

For k normalized maps Phi = (phi^1..phi^k) of one input, a generalized-L2 metric of the aggregate
``phi^w = Phi w`` is ``Q(phi^w) = w^T E[Gamma^T Gamma] w`` (Decker et al., ICML 2024, Sec. 4):

* Average-Sensitivity (squared): ``Gamma_j = Phi(x) - Phi(x + eps_j)`` (d x k; each method re-explained
  at the same perturbed input), so ``Gamma_j w`` is exactly the change of the aggregated map (spec B4);
* Infidelity: ``Gamma_j = beta * (I_j^T Phi) - df_j`` (1 x k) with one Yeh rescaling factor ``beta_i`` per
  method over all m masks (fixing the released code's per-index factors, spec B4.5).

All perturbed inputs of all samples go through the k explanation functions in chunks of ``batch_size``
inputs; per-draw Gram matrices are accumulated on the fly, so memory is O(N k^2 m), never O(N m d).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch

from .._validation import check_int, check_positive, check_tensor, model_device
from ..metrics.faithfulness import masked_sums_and_deltas
from ..metrics.robustness import _check_model, _check_x, _DrawStream, _targets, _uniform
from .normalize import _normalize, normalize_attributions

__all__ = [
    "resolve_methods",
    "explanation_stack",
    "sensitivity_gram",
    "faith_samples",
    "infidelity_gram",
    "combine_grams",
    "ambiguity_decomposition",
]

ExplainFn = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
DEFAULT_NORMALIZE = {"reduce": "sum", "absolute": True, "scale": "max", "smooth_sigma": None}


def resolve_methods(methods: Any) -> dict[str, ExplainFn]:
    """Explanation functions by name.

    Args:
        methods: a mapping ``name -> fn`` (``fn(model, x, target) -> attributions shaped like x``) or
            ``name -> registered method name``; or a sequence of registered method names / functions
            (named by ``__name__``). Registered names go through :func:`xcal_core.explainers.explain`.

    Returns:
        dict name -> explanation function, in the given order.
    """
    if isinstance(methods, (str, bytes)) or not isinstance(methods, (Mapping, Sequence)):
        raise TypeError(f"`methods` must be a mapping name -> explanation function or a sequence of method names, got {type(methods).__name__}")
    items = list(methods.items()) if isinstance(methods, Mapping) else [(m if isinstance(m, str) else getattr(m, "__name__", f"method_{i}"), m) for i, m in enumerate(methods)]
    out: dict[str, ExplainFn] = {}
    for name, fn in items:
        if name in out:
            raise ValueError(f"`methods` names must be unique, got {name!r} twice")
        if isinstance(fn, str):
            from ..explainers import METHODS, explain

            if METHODS and fn not in METHODS:
                raise ValueError(f"unknown explanation method {fn!r}; expected one of {sorted(METHODS)}")
            out[name] = (lambda mname: (lambda model, x, target: explain(model, x, target, mname)))(fn)
        elif callable(fn):
            out[name] = fn
        else:
            raise TypeError(f"method {name!r} must be a callable fn(model, x, target) or a method name, got {type(fn).__name__}")
    return out


def _normalize_kwargs(normalize: Mapping[str, Any] | None) -> dict[str, Any]:
    kw = dict(DEFAULT_NORMALIZE)
    if normalize is not None:
        unknown = set(normalize) - set(DEFAULT_NORMALIZE)
        if unknown:
            raise TypeError(f"unknown `normalize` option(s) {sorted(unknown)}; expected some of {sorted(DEFAULT_NORMALIZE)}")
        kw.update(normalize)
    return kw


def _gradient_groups(fns: Sequence[ExplainFn]) -> dict[int, Any]:
    """Position -> batch_size key for preset gradient / input-x-gradient methods that can share one pass.

    Only keys held by two or more methods count (one method alone gains nothing from sharing).
    """
    keys = {i: getattr(fn, "shared_gradient", None) for i, fn in enumerate(fns)}
    keys = {i: v for i, v in keys.items() if isinstance(v, tuple) and len(v) == 2 and v[0] in ("gradient", "input_x_gradient")}
    count: dict[Any, int] = {}
    for v in keys.values():
        count[v[1]] = count.get(v[1], 0) + 1
    return {i: v for i, v in keys.items() if count[v[1]] >= 2}


def _maps(fns: Sequence[ExplainFn], names: Sequence[str], model: torch.nn.Module, x: torch.Tensor, tgt: torch.Tensor, norm_kw: dict,
          finite: torch.Tensor | None = None) -> torch.Tensor:
    """Normalized maps of all methods for one chunk: (B, k, P).

    Preset Saliency and Input x Gradient (see :func:`~xcal_core.aggregation.make_methods`) share one
    gradient pass: ``explain(..., "gradient")`` once, then ``g`` and ``x * g``, which is exactly the
    arithmetic of the two separate explanation calls (same float32 values).

    With ``finite`` (bool (k,) on the device) the NaN / inf check of each method is accumulated into it
    instead of read back per chunk; the caller checks it once with :func:`_raise_if_not_finite`.
    """
    out = []
    groups = _gradient_groups(fns)
    shared: dict[Any, torch.Tensor] = {}
    for pos, (name, fn) in enumerate(zip(names, fns)):
        if pos in groups:
            method, bs = groups[pos]
            if bs not in shared:
                from ..explainers import explain

                shared[bs] = explain(model, x, tgt, "gradient", batch_size=bs)
            g = shared[bs]
            a = g if method == "gradient" else x.detach().to(torch.float32) * g
        else:
            a = fn(model, x, tgt)
        if not isinstance(a, torch.Tensor):
            raise TypeError(f"method {name!r} returned {type(a).__name__}, expected a torch.Tensor")
        if tuple(a.shape) != tuple(x.shape):
            raise ValueError(f"method {name!r} returned attributions of shape {tuple(a.shape)}; they must be shaped like the input {tuple(x.shape)}")
        if finite is not None:
            finite[pos] &= torch.isfinite(a).all()
            out.append(_normalize(a.detach(), **norm_kw).reshape(x.shape[0], -1))
            continue
        if not bool(torch.isfinite(a).all()):
            raise ValueError(f"method {name!r} returned NaN or inf attributions")
        out.append(normalize_attributions(a.detach(), **norm_kw).reshape(x.shape[0], -1))
    return torch.stack(out, dim=1)


def _raise_if_not_finite(finite: torch.Tensor, names: Sequence[str]) -> None:
    """The deferred check of :func:`_maps`: one device read-back per pass."""
    bad = [name for name, ok in zip(names, finite.tolist()) if not ok]
    if bad:
        raise ValueError(f"method {bad[0]!r} returned NaN or inf attributions")


def explanation_stack(
    model: torch.nn.Module,
    x: Any,
    target: Any,
    methods: Any,
    *,
    normalize: Mapping[str, Any] | None = None,
    batch_size: int = 256,
) -> torch.Tensor:
    """Normalized maps of k methods for N inputs.

    Args:
        model: classifier returning logits; x: inputs (N, C, H, W) in [0, 1] or (N, D).
        target: class per sample (int or int64 (N,)).
        methods: see :func:`resolve_methods`; each must return attributions shaped like x.
        normalize: options of :func:`~xcal_core.aggregation.normalize_attributions` (default: channel
            sum, ``|.|``, max scaling).
        batch_size: inputs per explanation call.

    Returns:
        float32 tensor (N, k, *grid) with grid = (H, W) (or (D,)); values in [0, 1] by default.
    """
    model = _check_model(model)
    fns = resolve_methods(methods)
    norm_kw = _normalize_kwargs(normalize)
    batch_size = check_int(batch_size, "batch_size", low=1)
    xd = _check_x(x).to(model_device(model))
    n = xd.shape[0]
    tgt = _targets(target, n, xd.device)
    finite = torch.ones(len(fns), dtype=torch.bool, device=xd.device)
    flat = torch.cat([_maps(list(fns.values()), list(fns), model, xd[s : s + batch_size], tgt[s : s + batch_size], norm_kw, finite)
                      for s in range(0, n, batch_size)])
    _raise_if_not_finite(finite, list(fns))
    grid = tuple(xd.shape[2:]) if xd.ndim >= 3 else (xd.shape[1],)
    if norm_kw["reduce"] == "none" and xd.ndim >= 3:
        grid = tuple(xd.shape[1:])
    return flat.view(n, len(fns), *grid)


def _perturbed_pass(model, xd, tgt, fns, names, norm_kw, m, radius, noise, generator, batch_size, consume):
    """Stream over all (draw, sample) pairs; ``consume(i, j, maps_pert (B, k, P))`` per chunk."""
    n = xd.shape[0]
    if noise is not None:
        eps = check_tensor(noise, "noise").to(xd.device)
        if tuple(eps.shape[1:]) != tuple(xd.shape):
            raise ValueError(f"`noise` must have shape (m, *x.shape), got {tuple(eps.shape)}")
        m = eps.shape[0]
        stream = _DrawStream(None, m, fixed=eps)
    else:
        m = check_int(m, "m", low=1)
        check_positive(radius, "radius")
        shape = tuple(xd.shape)
        stream = _DrawStream(lambda j: _uniform(shape, radius, generator).to(device=xd.device, dtype=xd.dtype), m)
    total = m * n
    finite = torch.ones(len(fns), dtype=torch.bool, device=xd.device)
    for start in range(0, total, batch_size):
        stop = min(start + batch_size, total)
        idx = torch.arange(start, stop, device=xd.device)
        j, i = idx // n, idx % n
        consume(i, j, _maps(fns, names, model, xd[i] + stream.rows(j, i, (start // n, (stop - 1) // n)), tgt[i], norm_kw, finite))
    _raise_if_not_finite(finite, names)
    return m


def sensitivity_gram(
    model: torch.nn.Module,
    x: Any,
    target: Any,
    methods: Any,
    *,
    m: int = 50,
    radius: float = 0.1,
    maps: Any = None,
    noise: Any = None,
    generator: torch.Generator | None = None,
    normalize: Mapping[str, Any] | None = None,
    batch_size: int = 256,
    per_draw: bool = False,
) -> torch.Tensor:
    """``E_eps[Gamma^T Gamma]`` of squared Average-Sensitivity, ``Gamma = Phi(x) - Phi(x + eps)``.

    Args:
        model, x, target, methods, normalize, batch_size: as in :func:`explanation_stack`.
        m: number of noise draws ``eps ~ U[-radius, radius]`` (elementwise, input space), >= 1.
        radius: noise half-width (paper: 0.1).
        maps: optional precomputed ``explanation_stack`` of the unperturbed inputs (N, k, *grid).
        noise: optional explicit noise (m, *x.shape), overriding the draws.
        generator: torch generator for the noise (same draw order as :func:`~xcal_core.metrics.uniform_noise`).
        per_draw: return the per-draw matrices (N, m, k, k) instead of their mean (for studies over m).

    Returns:
        float64 tensor (N, k, k) (PSD up to round-off), or (N, m, k, k) with ``per_draw=True``;
        ``w^T G w = mean_j ||phi^w(x) - phi^w(x + eps_j)||^2``.
    """
    model = _check_model(model)
    fns_d = resolve_methods(methods)
    fns, names = list(fns_d.values()), list(fns_d)
    k = len(fns)
    norm_kw = _normalize_kwargs(normalize)
    batch_size = check_int(batch_size, "batch_size", low=1)
    xd = _check_x(x).to(model_device(model))
    n = xd.shape[0]
    tgt = _targets(target, n, xd.device)
    if maps is None:
        maps = explanation_stack(model, xd, tgt, fns_d, normalize=normalize, batch_size=batch_size)
    phi0 = check_tensor(maps, "maps").to(xd.device).reshape(n, k, -1)
    m_eff = noise.shape[0] if noise is not None else check_int(m, "m", low=1)
    grams = torch.zeros(m_eff, n, k, k, dtype=torch.float64, device=xd.device)

    def consume(i, j, mp):
        g = (phi0[i] - mp).double()
        grams[j, i] = g @ g.transpose(1, 2)

    _perturbed_pass(model, xd, tgt, fns, names, norm_kw, m, radius, noise, generator, batch_size, consume)
    grams = grams.transpose(0, 1)
    return grams.contiguous() if per_draw else grams.mean(1)


def faith_samples(
    model: torch.nn.Module,
    x: Any,
    target: Any,
    maps: Any,
    *,
    m: int = 50,
    share: float = 0.2,
    baseline: Any = "blur",
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-mask attribution mass of k maps and the score drops: the data of the Infidelity Gram.

    Args:
        model, x, target: as in :func:`explanation_stack`.
        maps: (N, k, *grid) normalized maps (from :func:`explanation_stack`).
        m: number of random masks per sample (paper: m_agg = 50 for optimization, 200 for evaluation).
        share: fraction of positions per mask (paper: 0.2).
        baseline: replacement ("blur", "zero", "mean", float, tensor).
        **kwargs: other options of :func:`~xcal_core.metrics.masked_sums_and_deltas` (``feature_mask``,
            ``blur_sigma``, ``score`` ("logit"), ``generator``, ``batch_size``, ``masks``).

    Returns:
        ``(sums (N, m, k), deltas (N, m))``, float32.
    """
    m = check_int(m, "m", low=1)
    return masked_sums_and_deltas(model, x, target, maps, n_samples=m, share=share, baseline=baseline, stacked=True, **kwargs)


def infidelity_gram(sums: Any, deltas: Any, *, rescale: bool = True, return_beta: bool = False):
    """``E_I[Gamma^T Gamma]`` of Infidelity with one Yeh rescaling factor per method.

    Args:
        sums: (N, m, k) attribution mass of each method's map in each mask (``I_j^T phi^i``).
        deltas: (N, m) score drops ``f(x) - f(h(x, x_b, I_j))``.
        rescale: multiply each method's sums by ``beta_i = sum_j s_ji df_j / sum_j s_ji^2`` (Yeh's optimal
            scale over all m masks; 0 for an all-zero map). The QP then scores ``sum_i w_i beta_i phi^i``.
        return_beta: also return the factors (N, k).

    Returns:
        float64 (N, k, k) with ``w^T G w = mean_j (sum_i w_i beta_i s_ji - df_j)^2`` (and beta).
    """
    s = check_tensor(sums, "sums", ndim=3, dtype=None).double()
    d = check_tensor(deltas, "deltas", ndim=2, dtype=None).double().to(s.device)
    if s.shape[:2] != d.shape:
        raise ValueError(f"`sums` {tuple(s.shape)} and `deltas` {tuple(d.shape)} must agree on (N, m)")
    if rescale:
        ss = (s * s).sum(1)
        beta = torch.where(ss > 0, (s * d[..., None]).sum(1) / ss.clamp_min(1e-300), torch.zeros_like(ss))
    else:
        beta = torch.ones(s.shape[0], s.shape[2], dtype=torch.float64, device=s.device)
    gamma = beta[:, None, :] * s - d[..., None]
    G = gamma.transpose(1, 2) @ gamma / s.shape[1]
    return (G, beta) if return_beta else G


def combine_grams(grams: Sequence[Any], lambdas: Sequence[float] | None = None) -> torch.Tensor:
    """``sum_j lambda_j G_j / ||G_j||_F``: several generalized-L2 metrics as one QP (AGG_opt).

    Each Gram is divided by its own Frobenius norm per sample (the paper's App. C.2 wording; the released
    code divides by the norm of the stack of per-draw matrices instead), so the terms are comparable.

    Args:
        grams: matrices (N, k, k) (or (k, k)), same shape.
        lambdas: non-negative weights (default equal, 1 / len(grams)).

    Returns:
        float64 tensor like the inputs.
    """
    if len(grams) == 0:
        raise ValueError("`grams` must hold at least one matrix")
    gs = [check_tensor(g, f"grams[{i}]", dtype=None).double() for i, g in enumerate(grams)]
    if any(g.shape != gs[0].shape for g in gs):
        raise ValueError(f"`grams` must share one shape, got {[tuple(g.shape) for g in gs]}")
    lambdas = [1.0 / len(gs)] * len(gs) if lambdas is None else list(lambdas)
    if len(lambdas) != len(gs) or any(lam < 0 for lam in lambdas):
        raise ValueError("`lambdas` must be one non-negative weight per Gram matrix")
    out = torch.zeros_like(gs[0])
    for lam, g in zip(lambdas, gs):
        nrm = torch.linalg.matrix_norm(g, ord="fro")[..., None, None] if g.ndim >= 2 else g.abs()
        out = out + lam * g / torch.where(nrm > 0, nrm, torch.ones_like(nrm))
    return out


def ambiguity_decomposition(gram: Any, weights: Any) -> dict[str, torch.Tensor]:
    """Theorem 4.2's terms: ``Q(phi^w) = sum_i w_i Q(phi^i) - E[sum_i w_i ||Gamma (e_i - w)||^2]``.

    Args:
        gram: ``E[Gamma^T Gamma]`` (N, k, k) (or (k, k)).
        weights: (N, k) (or (k,)) convex weights.

    Returns:
        dict of float64 (N,) tensors: ``aggregate`` = ``w^T G w``, ``weighted`` = ``sum_i w_i G_ii``,
        ``diversity`` = ``sum_i w_i (e_i - w)^T G (e_i - w)`` (>= 0 for PSD G), and ``residual`` =
        ``aggregate - (weighted - diversity)``.
    """
    G = check_tensor(gram, "gram", ndim=(2, 3), dtype=None).double()
    w = check_tensor(weights, "weights", ndim=(1, 2), dtype=None).double().to(G.device)
    if G.ndim == 2:
        G, w = G[None], w[None] if w.ndim == 1 else w
    k = G.shape[-1]
    if w.shape != G.shape[:2]:
        raise ValueError(f"`weights` must have shape {tuple(G.shape[:2])}, got {tuple(w.shape)}")
    agg = torch.einsum("ni,nij,nj->n", w, G, w)
    diag = torch.diagonal(G, dim1=-2, dim2=-1)
    weighted = (w * diag).sum(-1)
    E = torch.eye(k, dtype=torch.float64, device=G.device)[None] - w[:, None, :]  # rows e_i - w
    div_i = torch.einsum("nia,nab,nib->ni", E, G, E)
    diversity = (w * div_i).sum(-1)
    return {"aggregate": agg, "weighted": weighted, "diversity": diversity, "residual": agg - (weighted - diversity)}
