"""Faithfulness of explanations under random masking: Infidelity, Faithfulness Correlation, Sensitivity-n.

All three compare, over random subsets ``I`` of the input features, the attribution mass inside the
subset, ``s = I^T phi``, with the change of the model's target score when the subset is replaced by a
baseline, ``df = f(x) - f(h(x, x_b, I))``:

* Infidelity (Yeh et al. 2019): ``E_I (beta * s - df)^2`` with Yeh's optimal rescaling
  ``beta = E[s df] / E[s^2]`` (one factor per explanation and sample, over all its masks);
* Faithfulness Correlation (Bhatt et al. 2020): Pearson correlation of ``s`` and ``df`` over the masks;
* Sensitivity-n (Ancona et al. 2018): the same correlation for subsets of exactly ``n`` features, for
  several ``n``.

The default protocol is the one of the optimized-aggregation paper (Decker et al., ICML 2024, App. C.1):
masks cover a random 20 % of the positions (pixels, all channels together), replaced by a Gaussian-blurred
copy of the image, with ``df`` on logits. All masked inputs of all samples are scored in chunked forward
passes of at most ``batch_size`` inputs; masks are drawn lazily per draw (memory O(batch) not O(m N d)).

References:
    Yeh, Hsieh, Suggala, Inouye, Ravikumar. On the (in)fidelity and sensitivity of explanations. NeurIPS 2019.
    Bhatt, Weller, Moura. Evaluating and aggregating feature-based model explanations. IJCAI 2020.
    Ancona, Ceolini, Oeztireli, Gross. Towards better understanding of gradient-based attribution methods
    for deep neural networks. ICLR 2018.
    Decker, Bhattarai, Gu, Tresp, Buettner. Provably better explanations with optimized aggregation of
    feature attributions. ICML 2024.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from ..perturbations.baselines import gaussian_blur
from .._validation import check_choice, check_fraction, check_int, check_positive, check_tensor, model_device
from ._meta import metric
from .insertion_deletion import resolve_baseline
from .robustness import ExplainFn, _check_model, _check_x, _check_target_range, _DrawStream, _explain_checked, _gen_device, _select_score, _targets

__all__ = [
    "random_masks",
    "masked_sums_and_deltas",
    "infidelity_from_samples",
    "correlation_from_samples",
    "infidelity",
    "faithfulness_correlation",
    "sensitivity_n",
    "blur_images",
]

_WEIGHTINGS = ("indicator", "difference")
_SCORES = ("logit", "probability", "log_probability", "output")


# ------------------------------------------------------------------------------------------ baselines


def blur_images(x: Any, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of images (N, C, H, W) with reflect padding; see :func:`xcal_core.perturbations.gaussian_blur`."""
    check_tensor(x, "x", ndim=4, dtype=None)
    return gaussian_blur(x, sigma)


# ------------------------------------------------------------------------------------------ masks


def _grid(x: torch.Tensor) -> tuple[int, ...]:
    return tuple(x.shape[2:]) if x.ndim >= 3 else (x.shape[1],)


def _group_ids(feature_mask: Any, n: int, grid: tuple[int, ...], device: torch.device) -> tuple[torch.Tensor, int]:
    """Per-sample consecutive group ids (N, P) and the group count G (every sample must have G groups)."""
    P = math.prod(grid)
    if feature_mask is None:
        return torch.arange(P, device=device).expand(n, P), P
    m = check_tensor(feature_mask, "feature_mask", dtype=None)
    if m.is_floating_point():
        if not bool((m == m.round()).all()):
            raise TypeError("`feature_mask` must hold integer group ids")
    m = m.long()
    if tuple(m.shape) in (grid, (1, *grid)):
        m = m.reshape(1, P).expand(n, P)
    elif tuple(m.shape) == (n, *grid):
        m = m.reshape(n, P)
    else:
        raise ValueError(f"`feature_mask` must have shape {grid} or {(n, *grid)}, got {tuple(m.shape)}")
    m = m.to(device)
    if m.stride(0) == 0:  # one mask for every sample
        ids = torch.unique(m[0], return_inverse=True)[1].expand(n, P)
    else:
        ids = torch.stack([torch.unique(row, return_inverse=True)[1] for row in m])
    counts = ids.max(1).values + 1
    if int(counts.min()) != int(counts.max()):
        raise ValueError("`feature_mask` must give every sample the same number of groups")
    return ids, int(counts[0])


def _draw_masks(ids: torch.Tensor, n_groups: int, n_select: int, generator: torch.Generator | None) -> torch.Tensor:
    """One draw: bool (N, P), ``n_select`` groups per sample chosen uniformly without replacement."""
    n = ids.shape[0]
    keys = torch.rand(n, n_groups, generator=generator, device=_gen_device(generator)).to(ids.device)
    chosen = torch.zeros(n, n_groups, dtype=torch.bool, device=ids.device)
    chosen.scatter_(1, keys.topk(n_select, dim=1, largest=False).indices, True)
    return chosen.gather(1, ids)


def _n_select(n_groups: int, share: float | None, n_features: int | None) -> int:
    if n_features is not None:
        return check_int(n_features, "n_features", low=1, high=n_groups)
    share = check_fraction(share, "share", open_low=True)
    return max(1, min(n_groups, int(math.floor(share * n_groups + 1e-9))))


def random_masks(
    n_samples: int,
    n: int,
    grid: Sequence[int],
    share: float = 0.2,
    *,
    n_features: int | None = None,
    feature_mask: Any = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random area masks in the order the faithfulness metrics draw them.

    Args:
        n_samples: number of masks per sample m >= 1.
        n: number of samples N.
        grid: position grid, e.g. (H, W) for images or (D,) for tabular rows.
        share: fraction of the G features (positions, or groups of ``feature_mask``) selected per mask,
            ``floor(share * G)`` (at least 1), in (0, 1].
        n_features: exact number of features per mask instead of ``share``.
        feature_mask: optional int group ids (*grid) or (N, *grid); whole groups (superpixels, patches)
            are selected together.
        generator: torch generator; one (N, G) block of uniform keys is drawn per mask.

    Returns:
        bool tensor (m, N, *grid): True where the input is replaced by the baseline.
    """
    m = check_int(n_samples, "n_samples", low=1)
    n = check_int(n, "n", low=1)
    grid = tuple(int(g) for g in grid)
    ids, G = _group_ids(feature_mask, n, grid, torch.device("cpu"))
    k = _n_select(G, share, n_features)
    return torch.stack([_draw_masks(ids, G, k, generator).view(n, *grid) for _ in range(m)])


# ------------------------------------------------------------------------------------------ engine


def _weights(a: torch.Tensor, x: torch.Tensor, level: str, weighting: str) -> tuple[torch.Tensor, str]:
    """Flatten attribution sets (N, S, *a_shape) into the space the masks live in: ('pos', (N,S,P)) or ('elem', (N,S,E))."""
    n, S = a.shape[:2]
    grid = _grid(x)
    a_shape = tuple(a.shape[2:])
    x_shape = tuple(x.shape[1:])
    channel_less = a_shape in (grid, (1, *grid)) and a_shape != x_shape
    if a_shape != x_shape and not channel_less:
        raise ValueError(
            f"attributions must be shaped like one input {x_shape}, or like its position grid {grid} / {(1, *grid)}, got {a_shape}"
        )
    if weighting == "indicator" and level == "pos" and (channel_less or x.ndim == 2):
        return a.reshape(n, S, -1), "pos"
    if channel_less and x.ndim >= 3:
        a = a.reshape(n, S, 1, *grid).expand(n, S, *x_shape)
    return a.reshape(n, S, -1), "elem"


@torch.no_grad()
def masked_sums_and_deltas(
    model: torch.nn.Module,
    x: Any,
    target: Any,
    attributions: Any,
    *,
    masks: Any = None,
    n_samples: int = 200,
    share: float = 0.2,
    n_features: int | None = None,
    feature_mask: Any = None,
    baseline: Any = "blur",
    blur_sigma: float | None = None,
    weighting: str = "indicator",
    score: str = "logit",
    generator: torch.Generator | None = None,
    batch_size: int = 256,
    stacked: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attribution mass in random masks and the model's score change when the masks are replaced.

    One pass serves several attribution maps per sample (e.g. k methods and their aggregates): they share
    the masks and the forward passes.

    Args:
        model: classifier returning logits (N, K) (or outputs to use as is with ``score="output"``).
        x: inputs (N, C, H, W) images in [0, 1] (or (N, D) tabular rows, (N, C, L) sequences).
        target: class index per sample (int or int64 (N,)).
        attributions: (N, ...) one map per sample, or (N, S, ...) S maps per sample with ``stacked=True``;
            each map is shaped like one input, or like its position grid (H, W) / (1, H, W). Finite values.
        masks: optional explicit bool masks (m, N, *grid) (positions, all channels together) or
            (m, N, *x.shape[1:]) (single elements, as Quantus draws them). Overrides the random draws.
        n_samples: number of random masks m per sample.
        share: fraction of the features in each random mask, in (0, 1] (paper: 0.2).
        n_features: exact feature count per mask instead of ``share``.
        feature_mask: optional group ids (*grid) or (N, *grid): masks select whole groups.
        baseline: replacement values: ``"blur"`` (Gaussian blur of x, images), ``"zero"``, ``"mean"``
            (per-sample, per-channel mean), a float, or a tensor broadcastable to x.
        blur_sigma: blur sigma in pixels (default ``0.1 * max(H, W)``).
        weighting: ``"indicator"``: ``s = sum of the attributions inside the mask`` (the paper's ``I^T phi``);
            ``"difference"``: ``s = sum(phi * (x - x_perturbed))`` (Yeh's perturbation vector, as Quantus
            and Captum compute it).
        score: ``"logit"``, ``"probability"``, ``"log_probability"`` or ``"output"``.
        generator: torch generator for the masks (same draw order as :func:`random_masks`).
        batch_size: most masked inputs per forward pass.
        stacked: ``attributions`` holds S maps per sample (N, S, ...).

    Returns:
        ``(sums, deltas)``: float32 (N, m, S) (or (N, m) for single maps) attribution mass per mask, and
        float32 (N, m) ``f(x)_t - f(x_masked)_t``; on x's device.
    """
    model = _check_model(model)
    check_choice(weighting, "weighting", _WEIGHTINGS)
    check_choice(score, "score", _SCORES)
    batch_size = check_int(batch_size, "batch_size", low=1)
    x_in = _check_x(x)
    out_device = x_in.device
    device = model_device(model)
    xd = x_in.to(device)
    n = xd.shape[0]
    tgt = _targets(target, n, device)
    grid = _grid(xd)
    P = math.prod(grid)
    a = check_tensor(attributions, "attributions").to(device)
    if a.shape[0] != n:
        raise ValueError(f"`attributions` has {a.shape[0]} rows but `x` has {n} samples")
    single = not stacked
    if single:
        a = a.unsqueeze(1)
    base = resolve_baseline(baseline, xd, blur_sigma)

    if masks is not None:
        mk = check_tensor(masks, "masks", dtype=None, finite=False)
        if mk.dtype != torch.bool:
            if not bool(((mk == 0) | (mk == 1)).all()):
                raise ValueError("`masks` must be boolean (or 0/1)")
            mk = mk.bool()
        if tuple(mk.shape[1:]) == (n, *grid):
            level = "pos"
        elif tuple(mk.shape[1:]) == tuple(xd.shape):
            level = "elem" if xd.ndim >= 3 else "pos"
        else:
            raise ValueError(f"`masks` must have shape (m, N, *grid) = (m, {n}, {', '.join(map(str, grid))}) or (m, *x.shape), got {tuple(mk.shape)}")
        m = mk.shape[0]
        stream = _DrawStream(None, m, fixed=mk.reshape(m, n, -1).to(device))
    else:
        m = check_int(n_samples, "n_samples", low=1)
        ids, G = _group_ids(feature_mask, n, grid, device)
        k = _n_select(G, share, n_features)
        level = "pos"
        stream = _DrawStream(lambda j: _draw_masks(ids, G, k, generator), m)

    W, space = _weights(a.float(), xd, level, weighting)
    S = W.shape[1]
    x_flat = xd.reshape(n, -1)
    b_flat = base.reshape(n, -1)
    C = x_flat.shape[1] // P if level == "pos" else 1
    with torch.inference_mode():  # the clean scores once; no autograd bookkeeping for any forward pass
        outs = [model(xd[s : s + batch_size]) for s in range(0, n, batch_size)]
        if outs[0].ndim == 2:
            _check_target_range(tgt, outs[0].shape[1])  # the whole target vector once, not per chunk
        f0 = torch.cat([_select_score(o, tgt[s : s + batch_size], score, check=False) for o, s in zip(outs, range(0, n, batch_size))]).float()

    total = m * n
    sums = torch.empty(total, S, device=device)
    deltas = torch.empty(total, device=device)
    for start in range(0, total, batch_size):
        stop = min(start + batch_size, total)
        idx = torch.arange(start, stop, device=device)
        j, i = idx // n, idx % n
        mrow = stream.rows(j, i, (start // n, (stop - 1) // n))  # (B, P) or (B, E)
        if level == "pos" and xd.ndim >= 3:
            m_elem = mrow.view(-1, 1, P).expand(-1, C, P).reshape(mrow.shape[0], -1)
        else:
            m_elem = mrow
        xp = torch.where(m_elem, b_flat[i], x_flat[i])
        with torch.inference_mode():
            deltas[idx] = f0[i] - _select_score(model(xp.view(-1, *xd.shape[1:])), tgt[i], score, check=False).float()
        if weighting == "difference":
            v = (x_flat[i] - xp).float()
        elif space == "pos":
            v = mrow.float()
        else:
            v = m_elem.float()
        sums[idx] = torch.einsum("bse,be->bs", W[i], v)
    sums = sums.view(m, n, S).permute(1, 0, 2).contiguous()
    deltas = deltas.view(m, n).t().contiguous()
    if single:
        sums = sums[..., 0]
    return sums.to(out_device), deltas.to(out_device)


def infidelity_from_samples(sums: Any, deltas: Any, normalize: bool = True) -> torch.Tensor:
    """Infidelity from per-mask attribution sums and score changes.

    Args:
        sums: (N, m) or (N, m, S) attribution mass ``I^T phi`` per mask (from :func:`masked_sums_and_deltas`).
        deltas: (N, m) score changes ``f(x) - f(x_masked)``.
        normalize: apply Yeh's optimal rescaling ``beta = sum(s df) / sum(s^2)`` per sample and map
            (beta = 0 for an all-zero map), making the score invariant to the map's scale.

    Returns:
        float32 (N,) or (N, S): ``mean_j (beta s_j - df_j)^2`` (lower is better).
    """
    s = check_tensor(sums, "sums", ndim=(2, 3), dtype=None).double()
    d = check_tensor(deltas, "deltas", ndim=2, dtype=None).double().to(s.device)
    if s.shape[:2] != d.shape:
        raise ValueError(f"`sums` {tuple(s.shape)} and `deltas` {tuple(d.shape)} must agree on (N, m)")
    if s.ndim == 3:
        d = d.unsqueeze(-1)
    if normalize:
        ss = (s * s).sum(1, keepdim=True)
        beta = torch.where(ss > 0, (s * d).sum(1, keepdim=True) / ss.clamp_min(1e-300), torch.zeros_like(ss))
        s = beta * s
    return ((s - d) ** 2).mean(1).float()


def correlation_from_samples(sums: Any, deltas: Any) -> torch.Tensor:
    """Pearson correlation over masks between attribution sums and score changes.

    Args:
        sums: (N, m) or (N, m, S); deltas: (N, m).

    Returns:
        float32 (N,) or (N, S) in [-1, 1]; NaN where either side is constant over the masks (as scipy).
    """
    s = check_tensor(sums, "sums", ndim=(2, 3), dtype=None).double()
    d = check_tensor(deltas, "deltas", ndim=2, dtype=None).double().to(s.device)
    if s.shape[:2] != d.shape:
        raise ValueError(f"`sums` {tuple(s.shape)} and `deltas` {tuple(d.shape)} must agree on (N, m)")
    if s.ndim == 3:
        d = d.unsqueeze(-1)
    sc = s - s.mean(1, keepdim=True)
    dc = d - d.mean(1, keepdim=True)
    num = (sc * dc).sum(1)
    den = torch.sqrt((sc * sc).sum(1) * (dc * dc).sum(1))
    tiny = 1e-12 * torch.sqrt((s * s).sum(1) * (d * d).sum(1)).clamp_min(1e-300)
    r = torch.where(den > tiny, num / den.clamp_min(1e-300), torch.full_like(num, math.nan))
    return r.clamp(-1.0, 1.0).float()


def _resolve_attributions(model, x, target, attributions, explain_fn, batch_size):
    if attributions is not None:
        return attributions
    if explain_fn is None:
        raise ValueError("pass `attributions` or an `explain_fn` to compute them")
    if not callable(explain_fn):
        raise TypeError(f"`explain_fn` must be callable fn(model, x, target), got {type(explain_fn).__name__}")
    xd = _check_x(x).to(model_device(model))
    tgt = _targets(target, xd.shape[0], xd.device)
    return torch.cat([_explain_checked(explain_fn, model, xd[s : s + batch_size], tgt[s : s + batch_size], None) for s in range(0, xd.shape[0], batch_size)])


@metric(higher_is_better=False, category="faithfulness")
def infidelity(
    model: torch.nn.Module,
    x: Any,
    target: Any,
    attributions: Any = None,
    explain_fn: ExplainFn | None = None,
    *,
    normalize: bool = True,
    **kwargs: Any,
) -> torch.Tensor:
    """Infidelity with random area masks and Yeh's optimal rescaling (lower is more faithful).

    Args:
        model, x, target: as in :func:`masked_sums_and_deltas`.
        attributions: maps (N, ...) shaped like x or like its grid; or None to compute them with ``explain_fn``.
        explain_fn: ``fn(model, x, target) -> attributions`` used when ``attributions`` is None.
        normalize: Yeh's rescaling with one factor per sample (see :func:`infidelity_from_samples`).
        **kwargs: mask and baseline options of :func:`masked_sums_and_deltas` (``masks``, ``n_samples``
            (200), ``share`` (0.2), ``feature_mask``, ``baseline`` ("blur"), ``blur_sigma``, ``weighting``
            ("indicator"), ``score`` ("logit"), ``generator``, ``batch_size``).

    Returns:
        float32 tensor (N,): ``mean_j (beta I_j^T phi - (f(x) - f(h(x, x_b, I_j))))^2``.

    References:
        Yeh et al., NeurIPS 2019; Decker et al., ICML 2024 (App. C.1).
    """
    a = _resolve_attributions(model, x, target, attributions, explain_fn, kwargs.get("batch_size", 256))
    s, d = masked_sums_and_deltas(model, x, target, a, **kwargs)
    return infidelity_from_samples(s, d, normalize=normalize)


@metric(higher_is_better=True, category="faithfulness")
def faithfulness_correlation(
    model: torch.nn.Module,
    x: Any,
    target: Any,
    attributions: Any = None,
    explain_fn: ExplainFn | None = None,
    **kwargs: Any,
) -> torch.Tensor:
    """Faithfulness Correlation: Pearson correlation of ``I^T phi`` and the score drop over random masks.

    Args:
        model, x, target, attributions, explain_fn: as in :func:`infidelity`.
        **kwargs: options of :func:`masked_sums_and_deltas` (paper defaults: 200 masks of 20 % of the
            positions, blur baseline, logits). Quantus' ``FaithfulnessCorrelation`` is the special case of
            element masks (``masks`` shaped (m, *x.shape)) or ``n_features=subset_size`` with its baseline.

    Returns:
        float32 tensor (N,) in [-1, 1] (higher is better); NaN for a sample whose map or score changes are
        constant over the masks.

    References:
        Bhatt, Weller, Moura. IJCAI 2020.
    """
    a = _resolve_attributions(model, x, target, attributions, explain_fn, kwargs.get("batch_size", 256))
    s, d = masked_sums_and_deltas(model, x, target, a, **kwargs)
    return correlation_from_samples(s, d)


@metric(higher_is_better=True, category="faithfulness")
def sensitivity_n(
    model: torch.nn.Module,
    x: Any,
    target: Any,
    attributions: Any = None,
    explain_fn: ExplainFn | None = None,
    *,
    ns: Sequence[int] = (1, 2, 4, 8, 16),
    n_samples: int = 100,
    baseline: Any = "zero",
    **kwargs: Any,
) -> torch.Tensor:
    """Sensitivity-n: correlation of attribution sums and score drops for random subsets of n features.

    Args:
        model, x, target, attributions, explain_fn: as in :func:`infidelity`.
        ns: subset cardinalities n (features = positions, or groups of ``feature_mask``), each in [1, G].
        n_samples: random subsets per n and sample.
        baseline: replacement values (Ancona et al. use zeros).
        **kwargs: other options of :func:`masked_sums_and_deltas` (``feature_mask``, ``score``,
            ``weighting``, ``generator``, ``batch_size``, ``blur_sigma``).

    Returns:
        float32 tensor (N, len(ns)); column c is the Pearson correlation for subsets of size ``ns[c]``.
        A method satisfies Sensitivity-n exactly when the column is 1.

    References:
        Ancona et al., ICLR 2018.
    """
    if "masks" in kwargs or "share" in kwargs or "n_features" in kwargs:
        raise TypeError("sensitivity_n draws its own subsets of size `ns`; do not pass `masks`, `share` or `n_features`")
    if isinstance(ns, int) or len(ns) == 0:
        raise ValueError(f"`ns` must be a non-empty sequence of subset sizes, got {ns!r}")
    a = _resolve_attributions(model, x, target, attributions, explain_fn, kwargs.get("batch_size", 256))
    cols = []
    for nn_ in ns:  # one fully batched pass per subset size
        s, d = masked_sums_and_deltas(model, x, target, a, n_samples=n_samples, n_features=nn_, baseline=baseline, **kwargs)
        cols.append(correlation_from_samples(s, d))
    return torch.stack(cols, dim=1)
