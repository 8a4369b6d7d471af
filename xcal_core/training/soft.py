"""Soft (differentiable) insertion / deletion, the core construction of ID-ExpO.

The hard metrics rank features by the explanation and switch the top ones on or off: a step function
of the explanation. ID-ExpO keeps the ranking only to *place thresholds* and replaces each binary mask
by a sigmoid around its threshold, so the perturbed inputs (and the model's scores on them) become
differentiable in the explanation, and through the explanation in the model's parameters.

Construction (spec §1.4, rebuilt from the released code), per explanation phi over F features:

1. psi = log_softmax(phi) over the F features (optional, ``normalize=True``; keeps the order, fixes the scale);
2. sort psi descending; for the m-th soft step with c_m = min(m * step, n_max) changed features the
   threshold is the midpoint t_m = (psi_(c_m) + psi_(c_m + 1)) / 2 (1-based order statistics; for
   c_m = F the threshold sits half a gap below the smallest value: the spec's off-by-one guard);
3. gap scale s = mean of the strictly positive consecutive gaps of the sorted psi, pooled over the batch
   (one scalar; 1.0 when every map is constant, the spec's NaN guard);
4. t_m and s are constants (stop-gradient); alpha_m = sigmoid((tau / s) * (psi - t_m)) is ~1 for the top
   c_m features and ~0 for the others; as tau grows it becomes the hard mask;
5. deletion input alpha_m * b + (1 - alpha_m) * x, insertion input alpha_m * x + (1 - alpha_m) * b
   (channels move together).

References:
    Yoshikawa & Iwata, "Explanation-based Training with Differentiable Insertion/Deletion Metric-aware
    Regularizers", AISTATS 2024 (ID-ExpO), and its released code as summarised in specs/idexpo_c2i_uq.md §1.4-1.5.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .._validation import check_choice, check_int, check_positive, check_tensor
from ..metrics.insertion_deletion import _counts, resolve_baseline

__all__ = ["soft_masks", "soft_insertion_deletion", "SoftCurves", "idexpo_regularizers", "DELETION_FORMS"]

DELETION_FORMS = ("direct", "ratio")


def _check_S(S: Any) -> float:
    if isinstance(S, bool) or not isinstance(S, (int, float)):
        raise TypeError(f"`S` must be a fraction in (0, 1), got {type(S).__name__}")
    if not 0.0 < float(S) < 1.0:
        raise ValueError(f"`S` (fraction of features inserted / deleted) must be in (0, 1), got {S}")
    return float(S)


def soft_masks(
    phi: Any,
    *,
    S: float = 0.5,
    step: int = 1,
    tau: float = 1.0,
    normalize: bool = True,
    eps: float = 1e-12,
    reference: Any = None,
) -> torch.Tensor:
    """Soft top-k masks of explanations, differentiable in ``phi`` (ID-ExpO's sigmoid relaxation).

    Args:
        phi: explanations (B, F), one raw score per feature (pixels or segments), any real values.
        S: fraction of the F features inserted / deleted by the last soft step, in (0, 1).
        step: features added per soft step (the spec's stride r), >= 1.
        tau: temperature > 0; larger is sharper (tau -> inf gives the hard 0/1 masks).
        normalize: apply log-softmax over the features first (as the released config does).
        eps: added to the gap scale to keep the slope finite.
        reference: optional (B, F) explanations the thresholds and the gap scale are computed from
            (default: ``phi`` itself). The returned masks are then exactly differentiable in ``phi`` with
            those constants, which is what the stop-gradient means (and what ``gradcheck`` can verify).

    Returns:
        alpha: float tensor (B, M, F) in (0, 1) with M = ceil(floor(S * F) / step); ``alpha[:, m]`` is ~1
        on the top ``min((m + 1) * step, floor(S * F))`` features. Thresholds and the gap scale are
        detached; gradients reach ``phi`` through the sigmoid (and the log-softmax coupling).
    """
    S = _check_S(S)
    step = check_int(step, "step", low=1)
    tau = check_positive(tau, "tau")
    p = check_tensor(phi, "phi", ndim=2, dtype=None)
    if not p.is_floating_point():
        p = p.float()
    n_feat = p.shape[1]
    if n_feat < 2:
        raise ValueError(f"`phi` needs at least 2 features, got shape {tuple(p.shape)}")
    r = None
    if reference is not None:
        r = check_tensor(reference, "reference", ndim=2, dtype=None).to(device=p.device, dtype=p.dtype)
        if r.shape != p.shape:
            raise ValueError(f"`reference` must be shaped like `phi` {tuple(p.shape)}, got {tuple(r.shape)}")
    return _soft_masks(p, S=S, step=step, tau=tau, normalize=normalize, eps=eps, reference=r)


def _soft_masks(p: torch.Tensor, *, S: float, step: int, tau: float, normalize: bool, eps: float = 1e-12,
                reference: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`soft_masks` on validated float (B, F) inputs, without host syncs."""
    n_feat = p.shape[1]
    psi = torch.log_softmax(p, dim=1) if normalize else p
    if reference is None:
        psi_ref = psi.detach()
    else:
        r = reference.detach()
        psi_ref = torch.log_softmax(r, dim=1) if normalize else r
    with torch.no_grad():
        srt = torch.sort(psi_ref, dim=1, descending=True).values  # (B, F)
        gaps = srt[:, :-1] - srt[:, 1:]
        pos = gaps > 0
        # mean of the positive gaps, 1.0 when there is none; no host sync (``bool(pos.any())``) in the step
        n_pos = pos.sum()
        scale = torch.where(n_pos > 0, (gaps * pos).sum() / n_pos.clamp(min=1), torch.ones((), dtype=psi.dtype, device=psi.device))
        scale = scale + eps
        counts = _counts(n_feat, step, S)[1:].to(psi.device)  # (M,) changed features, >= 1
        ext = torch.cat([srt, srt[:, -1:] - scale], dim=1)  # guard for c_m = F
        thresholds = 0.5 * (ext[:, counts - 1] + ext[:, counts])  # (B, M)
    return torch.sigmoid((tau / scale) * (psi[:, None, :] - thresholds[:, :, None]))


@dataclass
class SoftCurves:
    """Scores of all soft steps of a batch.

    Attributes:
        ins_logp: (B, M) log p(y | soft insertion input m).
        del_logp: (B, M) log p(y | soft deletion input m).
        alpha: (B, M, F) the soft masks used.
    """

    ins_logp: torch.Tensor
    del_logp: torch.Tensor
    alpha: torch.Tensor

    @property
    def ins(self) -> torch.Tensor:
        """Soft insertion score per sample (B,): mean probability over the soft steps."""
        return self.ins_logp.exp().mean(1)

    @property
    def dele(self) -> torch.Tensor:
        """Soft deletion score per sample (B,): mean probability over the soft steps."""
        return self.del_logp.exp().mean(1)


def _broadcast_masks(alpha: torch.Tensor, x: torch.Tensor, feature_mask: torch.Tensor | None) -> torch.Tensor:
    """(B, M, F) feature masks -> (B, M, 1, *grid) (images) or (B, M, D) (tabular)."""
    b, m, f = alpha.shape
    if feature_mask is not None:
        ids = feature_mask.reshape(-1).to(alpha.device)
        alpha = alpha[:, :, ids]  # (B, M, P)
    if x.ndim >= 3:
        return alpha.reshape(b, m, 1, *x.shape[2:])
    return alpha.reshape(b, m, x.shape[1])


def _check_feature_mask(feature_mask: Any, x: torch.Tensor, n_feat: int) -> torch.Tensor | None:
    if feature_mask is None:
        grid = x.shape[2:] if x.ndim >= 3 else x.shape[1:]
        if n_feat != int(torch.tensor(grid).prod()):
            raise ValueError(
                f"`phi` has {n_feat} features but `x` has {tuple(grid)} positions; pass a `feature_mask` "
                "mapping positions to features"
            )
        return None
    m = check_tensor(feature_mask, "feature_mask", dtype=None).long()
    grid = tuple(x.shape[2:]) if x.ndim >= 3 else (x.shape[1],)
    if tuple(m.shape) != grid:
        raise ValueError(f"`feature_mask` must have shape {grid}, got {tuple(m.shape)}")
    if int(m.min()) != 0 or int(m.max()) != n_feat - 1:
        raise ValueError(f"`feature_mask` must hold ids 0..{n_feat - 1} (one per feature of `phi`), got range [{int(m.min())}, {int(m.max())}]")
    return m


def soft_insertion_deletion(
    model: torch.nn.Module,
    x: Any,
    phi: Any,
    target: Any,
    *,
    S: float = 0.5,
    step: int = 1,
    tau: float = 1.0,
    baseline: Any = 0.0,
    normalize: bool = True,
    feature_mask: Any = None,
    batch_size: int | None = None,
    reference: Any = None,
) -> SoftCurves:
    """Differentiable insertion and deletion scores: all 2M soft steps of all samples, batched.

    All B * 2M perturbed inputs (M insertion and M deletion steps per sample) form one flat batch that is
    pushed through the model in chunks of ``batch_size``; each chunk's inputs are built only when it is
    run (``baseline + a * (x - baseline)`` with a = alpha for insertion and 1 - alpha for deletion), so
    no (B, 2M, C, H, W) copy is held besides what autograd saves.

    Args:
        model: classifier returning logits (N, K); used in its current train/eval mode (gradients flow).
        x: inputs (B, C, H, W) in [0, 1] or (B, D); inputs are not differentiated.
        phi: explanations (B, F) over F features, or (B, H, W) / (B, 1, H, W) / (B, D) per position;
            differentiable (e.g. a Grad-CAM map built with ``create_graph``).
        target: int64 labels (B,) whose log-probability is tracked.
        S: fraction of features inserted / deleted by the last step, in (0, 1).
        step: features per soft step (stride r), >= 1.
        tau: temperature > 0 (tau -> inf gives the hard curves of :func:`~xcal_core.metrics.perturbation_curve`
            with the same ``step`` and ``max_fraction=S``, columns 1..M).
        baseline: replacement values as in :func:`~xcal_core.metrics.perturbation_curve` (default 0).
        normalize: log-softmax the explanation over its features before thresholding.
        feature_mask: int ids (H, W) / (D,) in 0..F-1 mapping each position to its feature of ``phi``
            (segment explainers); ``None`` when ``phi`` has one value per position.
        batch_size: most perturbed inputs per forward pass (``None``: all 2 B M in one pass).
        reference: optional explanations (shaped like ``phi``) that fix the thresholds and gap scale,
            see :func:`soft_masks`.

    Returns:
        :class:`SoftCurves` with (B, M) log-probabilities for insertion and deletion and the masks.
    """
    S = _check_S(S)
    step = check_int(step, "step", low=1)
    tau = check_positive(tau, "tau")
    xt = check_tensor(x, "x", ndim=(2, 3, 4, 5), dtype=None)
    p = check_tensor(phi, "phi", dtype=None)
    if p.shape[0] != xt.shape[0]:
        raise ValueError(f"`phi` and `x` must have the same length, got {p.shape[0]} and {xt.shape[0]}")
    p = p.reshape(p.shape[0], -1)
    fm = _check_feature_mask(feature_mask, xt, p.shape[1])
    if p.shape[1] < 2:
        raise ValueError(f"`phi` needs at least 2 features, got shape {tuple(p.shape)}")
    ref = None
    if reference is not None:
        ref = check_tensor(reference, "reference", dtype=None).to(device=p.device, dtype=p.dtype).reshape(p.shape[0], -1)
        if ref.shape != p.shape:
            raise ValueError(f"`reference` must be shaped like `phi` {tuple(p.shape)}, got {tuple(ref.shape)}")
    tgt = torch.as_tensor(target, device=xt.device).long().reshape(-1)
    if tgt.shape[0] != xt.shape[0]:
        raise ValueError(f"`target` has {tgt.shape[0]} entries but `x` has {xt.shape[0]} samples")
    bsz = None if batch_size is None else check_int(batch_size, "batch_size", low=1)
    return _soft_curves(model, xt, p, tgt, S=S, step=step, tau=tau, baseline=resolve_baseline(baseline, xt, None),
                        normalize=normalize, feature_mask=fm, batch_size=bsz, reference=ref)


def _soft_curves(
    model: torch.nn.Module,
    x: torch.Tensor,
    phi: torch.Tensor,
    target: torch.Tensor,
    *,
    S: float,
    step: int,
    tau: float,
    baseline: torch.Tensor,
    normalize: bool,
    feature_mask: torch.Tensor | None,
    batch_size: int | None,
    reference: torch.Tensor | None = None,
) -> SoftCurves:
    """:func:`soft_insertion_deletion` on validated inputs (the training step's path: no host syncs).

    x (B, ...), phi (B, F), target int64 (B,) on x's device, baseline broadcastable to x, feature_mask
    None or validated (grid) ids.
    """
    phi = phi if phi.is_floating_point() else phi.float()
    alpha = _soft_masks(phi, S=S, step=step, tau=tau, normalize=normalize, reference=reference)  # (B, M, F)
    b, m, _ = alpha.shape
    # one flat batch of B * 2M inputs, sample-major: [ins_1..ins_M, del_1..del_M] per sample;
    # every input is base + a * (x - base) with a = alpha (insertion) or 1 - alpha (deletion)
    a_feat = torch.cat([alpha, 1.0 - alpha], dim=1).reshape(b * 2 * m, -1).to(x.dtype)  # (B*2M, F)
    if feature_mask is not None:
        a_feat = a_feat[:, feature_mask.reshape(-1).to(a_feat.device)]  # (B*2M, P)
    grid = x.shape[2:] if x.ndim >= 3 else x.shape[1:]
    a_pos = a_feat.reshape(b * 2 * m, *((1, *grid) if x.ndim >= 3 else grid))  # channels move together
    base = baseline.expand_as(x) if baseline.shape != x.shape else baseline
    diff = x - base
    rows = torch.arange(b, device=x.device).repeat_interleave(2 * m)  # sample of each flat input
    tg = target[rows]
    n_all = b * 2 * m
    chunk = n_all if batch_size is None else batch_size
    parts = []
    for s in range(0, n_all, chunk):
        r = rows[s : s + chunk]
        inputs = torch.addcmul(base[r], a_pos[s : s + chunk], diff[r])
        out = model(inputs)
        parts.append(torch.log_softmax(out, dim=1).gather(1, tg[s : s + chunk, None])[:, 0])
    logp = torch.cat(parts).reshape(b, 2 * m)
    return SoftCurves(ins_logp=logp[:, :m], del_logp=logp[:, m:], alpha=alpha)


def idexpo_regularizers(
    curves: SoftCurves, clean_logp: torch.Tensor | None = None, *, deletion_form: str = "direct"
) -> tuple[torch.Tensor, torch.Tensor]:
    """ID-ExpO's insertion and deletion regularizers (batch means, to be minimised).

    Args:
        curves: soft curves from :func:`soft_insertion_deletion`.
        clean_logp: (B,) log p(y | x) on the clean inputs (needed by ``"ratio"``; not detached, as in the code).
        deletion_form: ``"direct"``: R_del = -mean_m log(1 - p(y | x_del_m)) (the counterpart of R_ins);
            ``"ratio"``: R_del = mean_m [log p(y | x_del_m) - log p(y | x)] (the released Grad-CAM run).

    Returns:
        (R_ins, R_del): scalar tensors; R_ins = -mean_m log p(y | x_ins_m), averaged over the batch.
    """
    check_choice(deletion_form, "deletion_form", DELETION_FORMS)
    r_ins = -curves.ins_logp.mean()
    if deletion_form == "direct":
        # log(1 - p) computed stably from log p
        lp = curves.del_logp.clamp(max=-1e-7)
        r_del = -torch.log(-torch.expm1(lp)).mean()
    else:
        if clean_logp is None:
            raise ValueError("`clean_logp` (log p(y|x) on the clean inputs) is required for deletion_form='ratio'")
        r_del = (curves.del_logp - clean_logp[:, None]).mean()
    return r_ins, r_del
