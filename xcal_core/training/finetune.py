"""ID-ExpO fine-tuning: cross-entropy plus differentiable insertion / deletion regularizers.

Objective (spec §1.6):  L = CE + lambda1 * (R_ins + R_del) + lambda2 * mean(Phi^2), where R_ins and R_del
are built from the soft curves of :mod:`xcal_core.training.soft` and Phi is the batch of raw explanations.
``finetune_ce_only`` runs the same loop (optimizer, schedule, shuffling seed, evaluation, checkpoint
selection) with the regularizers off, the paper's main baseline.

Evaluation uses the *hard* ID-ExpO scores (spec §1.3): the plain mean of p(y | x_k) over the curve points
k = 1..L (no clean point, no trapezoid), up to S of the features, explanations for the predicted class,
curves tracking the true label. Checkpoints are selected by eta * Acc + Ins + (1 - Del) on the validation
split, only among epochs whose validation accuracy reaches ``acc_floor``.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F

from .._validation import check_choice, check_int, check_positive, model_device
from ..metrics.insertion_deletion import perturbation_curve, resolve_baseline
from .explainers import Explanation, check_differentiable_explainer
from .soft import DELETION_FORMS, _check_feature_mask, _check_S, _soft_curves, idexpo_regularizers

__all__ = [
    "explain_batch",
    "idexpo_scores",
    "evaluate_idexpo",
    "validation_score",
    "select_checkpoint",
    "FinetuneResult",
    "finetune_idexpo",
    "finetune_ce_only",
    "default_soft_step",
    "soft_step_for",
    "initial_evaluation",
    "default_eval_step",
]

BATCHNORM_MODES = ("train", "frozen")


def default_soft_step(n_features: int) -> int:
    """The released code's soft stride: n_features / 64 (cdel_n = 64), at least 1."""
    return max(1, n_features // 64)


def soft_step_for(n_features: int, S: float, n_soft_steps: int | None = None) -> int:
    """Features per soft step: :func:`default_soft_step` or, with ``n_soft_steps`` = M, the stride that
    gives about M soft steps up to ``floor(S * n_features)`` features (ceil(floor(S F) / M), at least 1).

    Args:
        n_features: number of features F (>= 2). S: fraction in (0, 1).
        n_soft_steps: wanted number of soft steps M >= 1, or None for the released rule.

    Returns:
        The stride (int >= 1).
    """
    n_features = check_int(n_features, "n_features", low=2)
    if n_soft_steps is None:
        return default_soft_step(n_features)
    n_soft_steps = check_int(n_soft_steps, "n_soft_steps", low=1)
    n_max = max(1, int(_check_S(S) * n_features))
    return max(1, -(-n_max // n_soft_steps))


def default_eval_step(n_features: int) -> int:
    """The released evaluation step: 64 of 1024 pixels on CIFAR-10, i.e. n_features / 16, at least 1."""
    return max(1, n_features // 16)


def _split_xy(split: Any, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    if hasattr(split, "x") and hasattr(split, "y"):
        return split.x, split.y
    if isinstance(split, (tuple, list)) and len(split) == 2:
        return split[0], split[1]
    raise TypeError(f"`{name}` must be a Split (with .x, .y) or an (x, y) tuple, got {type(split).__name__}")


def _positions(expl: Explanation, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Attributions laid out on the input grid (B, *grid) + the feature mask for perturbation_curve."""
    grid = tuple(x.shape[2:]) if x.ndim >= 3 else (x.shape[1],)
    return expl.per_position().reshape(x.shape[0], *grid), expl.feature_mask


def explain_batch(
    model: torch.nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    explainer: Any,
    *,
    batch_size: int = 128,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Detached explanations of many inputs, in chunks (evaluation use; the model is not changed).

    Args:
        model: classifier (put it in eval mode first). x: (N, C, H, W) or (N, D). target: int64 (N,).
        explainer: a differentiable explainer (``explainer(model, x, target, generator)``).
        batch_size: inputs explained per call. generator: for sampling explainers.

    Returns:
        (attributions (N, *grid) float32 on x's device, feature_mask (grid) or None).
    """
    device = model_device(model)
    outs, fmask = [], None
    # maps are detached here: an explainer that can drop its higher-order graph (second-order Grad-CAM) does
    explainer = getattr(explainer, "for_evaluation", lambda: explainer)()
    for s in range(0, x.shape[0], batch_size):
        xb = x[s : s + batch_size].to(device)
        with torch.enable_grad():
            expl = explainer(model, xb, target[s : s + batch_size].to(device), generator=generator)
        a, fmask = _positions(expl, xb)
        outs.append(a.detach())
    return torch.cat(outs).to(x.device), fmask


def idexpo_scores(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attributions: torch.Tensor,
    *,
    feature_mask: torch.Tensor | None = None,
    S: float = 0.5,
    step: int | None = None,
    baseline: Any = 0.0,
    batch_size: int = 512,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hard ID-ExpO insertion and deletion scores (spec §1.3), batched.

    Ins = mean_{k=1..L} p(y | x^ins_k) and Del = mean_{k=1..L} p(y | x^del_k): plain means of softmax
    probabilities over the curve points after 1..L steps of ``step`` features, up to ``floor(S * F)``
    features; the clean point is excluded.

    Args:
        model: classifier returning logits (eval mode). x: (N, C, H, W) in [0, 1] or (N, D).
        y: int64 (N,) labels tracked by the curves (the true labels in the paper's evaluation).
        attributions: (N, *grid) explanations per position (e.g. from :func:`explain_batch`).
        feature_mask: optional (grid) int ids grouping positions into features (segments, CAM cells).
        S: fraction of features perturbed, in (0, 1). step: features per step (default :func:`default_eval_step`).
        baseline: replacement value (0 = the mean colour in the model's normalised space is NOT implied;
            0 here is the value in the [0, 1] input space unless you pass another).
        batch_size: perturbed inputs per forward pass.

    Returns:
        (ins (N,), dele (N,)) float32 tensors in [0, 1]; higher Ins and lower Del are better.
    """
    S = _check_S(S)
    if feature_mask is not None:
        n_feat = int(torch.as_tensor(feature_mask).max()) + 1
    else:
        n_feat = int(torch.tensor(attributions.shape[1:]).prod())
    step = default_eval_step(n_feat) if step is None else check_int(step, "step", low=1)
    kw = dict(baseline=baseline, step=step, max_fraction=S, score="probability", feature_mask=feature_mask, batch_size=batch_size)
    ins = perturbation_curve(model, x, attributions, y, mode="insertion", **kw)[:, 1:].mean(1)
    dele = perturbation_curve(model, x, attributions, y, mode="deletion", **kw)[:, 1:].mean(1)
    return ins, dele


@torch.no_grad()
def _predict(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    device = model_device(model)
    return torch.cat([model(x[s : s + batch_size].to(device)).cpu() for s in range(0, x.shape[0], batch_size)])


def evaluate_idexpo(
    model: torch.nn.Module,
    split: Any,
    explainer: Any,
    *,
    S: float = 0.5,
    step: int | None = None,
    baseline: Any = 0.0,
    explain_target: str = "predicted",
    batch_size: int = 512,
    generator: torch.Generator | None = None,
) -> dict[str, Any]:
    """Accuracy and per-sample hard Ins / Del of a model on a split.

    Args:
        model: classifier returning logits; evaluated in eval mode (its mode is restored afterwards).
        split: Split or (x, y). explainer: differentiable explainer used for the maps.
        S, step, baseline: as in :func:`idexpo_scores`.
        explain_target: ``"predicted"`` (the released evaluation: maps for the argmax class, curves track
            the label) or ``"label"``.
        batch_size: forward-pass chunk size. generator: for sampling explainers (fix it for comparability).

    Returns:
        dict with ``accuracy`` (float), ``ins`` and ``del`` (N,) tensors, ``attributions`` (N, *grid),
        ``feature_mask`` and ``pred`` (N,).
    """
    check_choice(explain_target, "explain_target", ("predicted", "label"))
    x, y = _split_xy(split, "split")
    was_training = model.training
    model.eval()
    try:
        pred = _predict(model, x, batch_size).argmax(1)
        tgt = pred if explain_target == "predicted" else y.cpu()
        attr, fmask = explain_batch(model, x, tgt.to(x.device), explainer, batch_size=min(batch_size, 128), generator=generator)
        ins, dele = idexpo_scores(model, x, y, attr, feature_mask=fmask, S=S, step=step, baseline=baseline, batch_size=batch_size)
    finally:
        model.train(was_training)
    acc = float((pred == y.cpu()).float().mean())
    return {"accuracy": acc, "ins": ins.cpu(), "del": dele.cpu(), "attributions": attr.cpu(), "feature_mask": fmask, "pred": pred}


def validation_score(accuracy: float, ins: float, dele: float, *, eta: float = 2.0, acc_floor: float | None = None) -> float:
    """The checkpoint score eta * Acc + Ins + (1 - Del); -1e8 when Acc is below ``acc_floor``."""
    if acc_floor is not None and accuracy < acc_floor:
        return -1e8
    return eta * accuracy + ins + (1.0 - dele)


def select_checkpoint(history: pd.DataFrame, *, eta: float = 2.0, acc_floor: float | None = None) -> int:
    """The epoch (>= 1) maximising :func:`validation_score` over a fine-tuning history (earliest on ties).

    Args:
        history: :attr:`FinetuneResult.history` (columns epoch, val_acc, val_ins, val_del).
        eta: accuracy weight >= 0. acc_floor: minimum validation accuracy (None: none).

    Returns:
        The selected epoch. When no epoch reaches the floor, the evaluated epoch with the best score
        ignoring the floor is returned (and the history's ``val_acc`` tells).
    """
    check_positive(eta, "eta", strict=False)
    h = history[(history["epoch"] >= 1) & history["val_acc"].notna()]
    if h.empty:
        raise ValueError("`history` has no evaluated epoch >= 1")
    scores = [validation_score(a, i, d, eta=eta, acc_floor=acc_floor) for a, i, d in zip(h["val_acc"], h["val_ins"], h["val_del"])]
    if max(scores) <= -1e8:
        scores = [validation_score(a, i, d, eta=eta) for a, i, d in zip(h["val_acc"], h["val_ins"], h["val_del"])]
    best = max(range(len(scores)), key=lambda j: (scores[j], -j))
    return int(h["epoch"].iloc[best])


@dataclass
class FinetuneResult:
    """Result of :func:`finetune_idexpo` / :func:`finetune_ce_only`.

    Attributes:
        model: the model at the selected epoch, in eval mode.
        history: per-epoch DataFrame: epoch (0 = before fine-tuning), loss, ce, r_ins, r_del, l2 (training
            means), val_acc, val_ins, val_del, val_score, param_shift (||theta - theta_0|| / ||theta_0|| over
            all parameters: how far the weights moved from the pretrained ones; NaN on epochs not
            evaluated), seconds (training time of the epoch), selected.
        best_epoch: the selected epoch.
        checkpoints: {epoch: state_dict on CPU} of every evaluated epoch (``keep_checkpoints=True``).
        config: the hyperparameters used.
    """

    model: torch.nn.Module
    history: pd.DataFrame
    best_epoch: int
    checkpoints: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    def model_at(self, epoch: int) -> torch.nn.Module:
        """A copy of the model with the weights of ``epoch`` (needs ``keep_checkpoints=True``)."""
        if epoch not in self.checkpoints:
            raise ValueError(f"no checkpoint for epoch {epoch}; available: {sorted(self.checkpoints)}")
        m = copy.deepcopy(self.model)
        m.load_state_dict(self.checkpoints[epoch])
        return m.eval()


def _set_train_mode(model: torch.nn.Module, batchnorm: str) -> None:
    model.train()
    if batchnorm == "frozen":
        for mod in model.modules():
            if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
                mod.eval()


def _state_cpu(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _idexpo_loss(
    model: torch.nn.Module,
    xb: torch.Tensor,
    yb: torch.Tensor,
    explainer: Any,
    generator: torch.Generator,
    checked: dict[str, Any],
    *,
    lambda1: float,
    lambda2: float,
    tau: float,
    S: float,
    soft_step: int | None,
    normalize: bool,
    n_soft_steps: int | None = None,
    baseline: Any,
    deletion_form: str,
    terms: str,
    forward_batch_size: int,
) -> tuple[torch.Tensor, ...]:
    """One ID-ExpO objective: (loss, ce, r_ins, r_del, l2), all scalar tensors, no host sync after step 1.

    Model passes: (1) the explainer's pass on the clean batch (per sample: BatchNorm statistics frozen, see
    :func:`~xcal_core.training.frozen_batch_statistics`); its logits also give the cross-entropy when they
    are the model's logits in its training mode (no BatchNorm layer in train mode), otherwise (2) one
    clean forward in the training mode gives them (sampling explainers always need it); (3) every soft
    insertion and deletion step of every image as one flat batch in chunks of ``forward_batch_size``, in
    the model's training mode. Thresholds and the gap scale are computed once per batch under no_grad.
    """
    expl = explainer(model, xb, yb, generator=generator)
    if not checked:
        if not isinstance(expl, Explanation):
            raise TypeError(f"`explainer` must return an Explanation, got {type(expl).__name__}")
        if not expl.phi.requires_grad:
            raise TypeError(f"`explainer` {explainer!r} returned a map without gradient; it is not differentiable")
        if expl.phi.ndim != 2 or expl.phi.shape[0] != xb.shape[0] or expl.phi.shape[1] < 2:
            raise ValueError(f"`explainer` must return phi of shape (B, F >= 2), got {tuple(expl.phi.shape)}")
        if expl.feature_mask is not None:
            _check_feature_mask(expl.feature_mask, xb, expl.phi.shape[1])
        checked["ok"] = True
    logits = expl.logits if expl.logits is not None else model(xb)
    ce = F.cross_entropy(logits, yb)
    phi = expl.phi if expl.phi.is_floating_point() else expl.phi.float()
    curves = _soft_curves(
        model, xb, phi, yb, S=S, step=soft_step_for(phi.shape[1], S, n_soft_steps) if soft_step is None else soft_step,
        tau=tau, baseline=resolve_baseline(baseline, xb, None), normalize=normalize,
        feature_mask=None if expl.feature_mask is None else expl.feature_mask.long(), batch_size=forward_batch_size,
    )
    clean_logp = torch.log_softmax(logits, 1).gather(1, yb[:, None])[:, 0]
    r_ins, r_del = idexpo_regularizers(curves, clean_logp, deletion_form=deletion_form)
    l2 = expl.raw.pow(2).mean()
    reg = r_ins + r_del if terms == "both" else (r_ins if terms == "ins" else r_del)
    loss = ce + lambda1 * reg + lambda2 * l2
    return loss, ce, r_ins, r_del, l2


def initial_evaluation(model: torch.nn.Module, data: Any, explainer: Any, *, S: float = 0.5, eval_step: int | None = None,
                       baseline: Any = 0.0, n_val: int | None = None, eval_seed: int = 0,
                       **_ignored: Any) -> dict[str, float]:
    """The validation scores :func:`finetune_idexpo` records at epoch 0, computed once for many runs.

    Args:
        model, data, explainer: as in :func:`finetune_idexpo`.
        S, eval_step, baseline, n_val, eval_seed: the same values the runs use (other fine-tuning options
            are accepted and ignored, so a shared ``**kwargs`` dict can be passed).

    Returns:
        ``{"accuracy": ..., "ins": ..., "del": ...}`` (validation means), for ``initial_eval``.
    """
    _, val = _train_val(data)
    x_va, y_va = _split_xy(val, "data[1]")
    if n_val is not None:
        x_va, y_va = x_va[:n_val], y_va[:n_val]
    ev = evaluate_idexpo(model, (x_va, y_va), explainer, S=S, step=eval_step, baseline=baseline,
                         generator=torch.Generator().manual_seed(check_int(eval_seed, "eval_seed", low=0)))
    return {"accuracy": ev["accuracy"], "ins": float(ev["ins"].mean()), "del": float(ev["del"].mean())}


def _train_val(data: Any) -> tuple[Any, Any]:
    if isinstance(data, (tuple, list)) and len(data) == 2 and not isinstance(data[0], torch.Tensor):
        return data[0], data[1]
    if hasattr(data, "train") and hasattr(data, "cal"):
        return data.train, data.cal
    raise TypeError("`data` must be a Dataset (train / cal splits) or a (train, val) pair of splits")


def finetune_idexpo(
    model: torch.nn.Module,
    data: Any,
    explainer: Any,
    *,
    lambda1: float = 0.01,
    lambda2: float = 1e-4,
    tau: float = 1.0,
    S: float = 0.5,
    eta: float = 2.0,
    deletion_form: str = "direct",
    regularize: bool = True,
    terms: str = "both",
    soft_step: int | None = None,
    n_soft_steps: int | None = None,
    normalize: bool = True,
    baseline: Any = 0.0,
    acc_floor: float | None = None,
    epochs: int = 10,
    lr: float = 1e-4,
    momentum: float = 0.9,
    nesterov: bool = True,
    weight_decay: float = 5e-4,
    batch_size: int = 128,
    batchnorm: str = "train",
    eval_every: int = 1,
    eval_step: int | None = None,
    n_val: int | None = None,
    keep_checkpoints: bool = True,
    seed: int = 0,
    copy_model: bool = True,
    forward_batch_size: int | None = None,
    eval_seed: int = 0,
    initial_eval: Mapping[str, float] | None = None,
) -> FinetuneResult:
    """Fine-tune a classifier with ID-ExpO's insertion / deletion regularizers (or CE only).

    Args:
        model: pretrained classifier returning logits; it is deep-copied unless ``copy_model=False``.
        data: a Dataset (``data.train`` trains, ``data.cal`` validates) or a pair (train, val) of Splits /
            (x, y) tuples.
        explainer: a differentiable explainer: :class:`DifferentiableGradCAM`, :class:`DifferentiableLIME`,
            :class:`DifferentiableKernelSHAP`.
        lambda1: weight of R_ins + R_del, >= 0 (config 0.01). lambda2: weight of mean(Phi^2), >= 0 (1e-4).
        tau: soft-mask temperature > 0 (1.0). S: fraction of features inserted / deleted, in (0, 1) (0.5).
        eta: accuracy weight of the checkpoint score, >= 0 (2.0).
        deletion_form: ``"direct"`` (-log(1 - p), the paper's natural form) or ``"ratio"`` (the released run).
        regularize: ``False`` gives the CE-only baseline (same everything else).
        terms: ``"both"`` (R_ins + R_del, the method), ``"ins"`` or ``"del"`` (one regularizer only: the
            ablation the released code's ``expl_loss_name`` flag intended but never wired).
        soft_step: features per soft step (default :func:`default_soft_step`).
        n_soft_steps: instead of ``soft_step``, the number M of soft steps per curve (the stride follows from
            the explainer's number of features, :func:`soft_step_for`); fewer steps = a cheaper, coarser
            relaxation (each step costs 2 forward passes per image).
        normalize: log-softmax the map before thresholding. baseline: replacement value (soft and hard).
        acc_floor: minimum validation accuracy for a checkpoint to be selectable (None: no floor).
        epochs: training epochs >= 1. lr, momentum, nesterov, weight_decay: SGD (spec: 1e-4, 0.9, True, 5e-4).
        batch_size: training batch size. batchnorm: ``"train"`` (BN statistics also see the perturbed
            inputs, as the code) or ``"frozen"`` (BN layers in eval mode during fine-tuning).
        eval_every: validate every k epochs (the last epoch is always validated). eval_step: hard-metric
            step (default :func:`default_eval_step`). n_val: use the first n validation samples.
        keep_checkpoints: keep every evaluated epoch's weights (for re-selection with another eta).
        seed: drives the shuffling, the explainer's sampling and dropout (global RNG restored afterwards).
        copy_model: fine-tune a copy. forward_batch_size: chunk size of the flat batch of all soft insertion and
            deletion steps of all images (default 4 * batch_size; a single pass of all B * 2M inputs was slower
            on CPU in ``benchmarks/bench_idexpo.py``).
        eval_seed: generator seed of the validation explanations (sampling explainers): the same for every
            epoch and every run, so checkpoints are compared on the same coalitions.
        initial_eval: the epoch-0 validation scores ``{"accuracy", "ins", "del"}`` when already known (they
            do not depend on the run: :func:`initial_evaluation`), saving one evaluation per run.

    Cost: a step forwards B clean inputs for the explanation (Grad-CAM: the cross-entropy shares them unless
    the model has BatchNorm layers in train mode, whose per-sample explanation pass uses the running
    statistics, so the cross-entropy takes a second clean pass) and B * 2M perturbed ones,
    M = ceil(floor(S * F) / soft_step) soft steps, and backpropagates through all of them, so on
    compute-bound hardware it costs about 1 + 2M CE-only steps (plus one, plus the surrogate's B * n_samples
    coalition inputs for LIME / KernelSHAP); ``benchmarks/bench_idexpo.py`` prints the measured ratios.

    Returns:
        :class:`FinetuneResult` with the selected model, the per-epoch history and the checkpoints.

    References:
        Yoshikawa & Iwata, AISTATS 2024; spec §1.5-1.9, §1.14.
    """
    check_differentiable_explainer(explainer)
    for name, v in (("lambda1", lambda1), ("lambda2", lambda2)):
        check_positive(v, name, strict=False)
    check_positive(tau, "tau")
    S = _check_S(S)
    check_positive(eta, "eta", strict=False)
    check_choice(deletion_form, "deletion_form", DELETION_FORMS)
    check_choice(terms, "terms", ("both", "ins", "del"))
    check_choice(batchnorm, "batchnorm", BATCHNORM_MODES)
    epochs = check_int(epochs, "epochs", low=1)
    batch_size = check_int(batch_size, "batch_size", low=1)
    eval_every = check_int(eval_every, "eval_every", low=1)
    if soft_step is not None:
        soft_step = check_int(soft_step, "soft_step", low=1)
    if n_soft_steps is not None:
        n_soft_steps = check_int(n_soft_steps, "n_soft_steps", low=1)
        if soft_step is not None:
            raise ValueError("pass either `soft_step` or `n_soft_steps`, not both")
    check_positive(lr, "lr")
    if acc_floor is not None and not 0.0 <= acc_floor <= 1.0:
        raise ValueError(f"`acc_floor` must be in [0, 1] or None, got {acc_floor}")
    train, val = _train_val(data)
    x_tr, y_tr = _split_xy(train, "data[0]")
    x_va, y_va = _split_xy(val, "data[1]")
    if n_val is not None:
        x_va, y_va = x_va[:n_val], y_va[:n_val]

    model = copy.deepcopy(model) if copy_model else model
    device = model_device(model)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0,
                          weight_decay=weight_decay)
    shuffle_gen = torch.Generator().manual_seed(seed)
    expl_gen = torch.Generator().manual_seed(seed + 1)
    eval_gen_seed = check_int(eval_seed, "eval_seed", low=0)
    if initial_eval is not None:
        missing = {"accuracy", "ins", "del"} - set(initial_eval)
        if missing:
            raise ValueError(f"`initial_eval` lacks {sorted(missing)}; pass initial_evaluation(...)'s output")
    rows: list[dict[str, Any]] = []
    checkpoints: dict[int, dict[str, torch.Tensor]] = {}
    best_key: list[tuple[bool, float]] = []
    theta0 = [p.detach().clone() for p in model.parameters()]
    norm0 = float(torch.sqrt(sum((p.double() ** 2).sum() for p in theta0)))

    def param_shift() -> float:
        with torch.no_grad():
            d = sum(((p.detach() - q).double() ** 2).sum() for p, q in zip(model.parameters(), theta0))
        return float(torch.sqrt(d)) / max(norm0, 1e-30)

    def evaluate(epoch: int, parts: dict[str, float], seconds: float) -> None:
        if epoch == 0 and initial_eval is not None:
            acc, ins, dele = (float(initial_eval[k]) for k in ("accuracy", "ins", "del"))
        else:
            ev = evaluate_idexpo(model, (x_va, y_va), explainer, S=S, step=eval_step, baseline=baseline,
                                 generator=torch.Generator().manual_seed(eval_gen_seed))
            acc, ins, dele = ev["accuracy"], float(ev["ins"].mean()), float(ev["del"].mean())
        rows.append({"epoch": epoch, **parts, "val_acc": acc, "val_ins": ins, "val_del": dele,
                     "val_score": validation_score(acc, ins, dele, eta=eta, acc_floor=acc_floor),
                     "param_shift": param_shift(), "seconds": seconds})
        if epoch == 0 and not keep_checkpoints:
            return
        if keep_checkpoints:
            checkpoints[epoch] = _state_cpu(model)
            return
        # only the best so far, with select_checkpoint's rule: key (reaches the floor, score), earliest on ties
        key = (acc_floor is None or acc >= acc_floor, validation_score(acc, ins, dele, eta=eta))
        if not best_key or key > best_key[0]:
            best_key[:] = [key]
            checkpoints.clear()
            checkpoints[epoch] = _state_cpu(model)

    fwd_bs = 4 * batch_size if forward_batch_size is None else check_int(forward_batch_size, "forward_batch_size", low=1)
    checked: dict[str, Any] = {}  # the explainer's output is validated on the first step only
    nan_parts = {"loss": float("nan"), "ce": float("nan"), "r_ins": float("nan"), "r_del": float("nan"), "l2": float("nan")}
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        evaluate(0, nan_parts, 0.0)
        n = x_tr.shape[0]
        for epoch in range(1, epochs + 1):
            _set_train_mode(model, batchnorm)
            t0 = time.perf_counter()
            # loss parts accumulate as detached tensors: one host sync per epoch, none per step
            sums = {k: torch.zeros((), device=device) for k in nan_parts}
            n_batches = 0
            perm = torch.randperm(n, generator=shuffle_gen)
            for s in range(0, n, batch_size):
                idx = perm[s : s + batch_size]
                xb, yb = x_tr[idx].to(device), y_tr[idx].to(device)
                if regularize:
                    loss, ce, r_ins, r_del, l2 = _idexpo_loss(model, xb, yb, explainer, expl_gen, checked, lambda1=lambda1,
                                                              lambda2=lambda2, tau=tau, S=S, soft_step=soft_step,
                                                              n_soft_steps=n_soft_steps,
                                                              normalize=normalize, baseline=baseline,
                                                              deletion_form=deletion_form, terms=terms,
                                                              forward_batch_size=fwd_bs)
                    parts_step = (r_ins, r_del, l2)
                else:
                    ce = F.cross_entropy(model(xb), yb)
                    loss = ce
                    parts_step = None
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sums["loss"] += loss.detach()
                sums["ce"] += ce.detach()
                if parts_step is not None:
                    for k, v in zip(("r_ins", "r_del", "l2"), parts_step):
                        sums[k] += v.detach()
                n_batches += 1
            seconds = time.perf_counter() - t0
            parts = {k: (float(v) / n_batches if regularize or k in ("loss", "ce") else float("nan")) for k, v in sums.items()}
            if epoch % eval_every == 0 or epoch == epochs:
                evaluate(epoch, parts, seconds)
            else:
                rows.append({"epoch": epoch, **parts, "val_acc": float("nan"), "val_ins": float("nan"),
                             "val_del": float("nan"), "val_score": float("nan"), "param_shift": float("nan"),
                             "seconds": seconds})
    history = pd.DataFrame(rows)
    best = select_checkpoint(history, eta=eta, acc_floor=acc_floor)
    history["selected"] = history["epoch"] == best
    model.load_state_dict(checkpoints[best])
    model.eval()
    if not keep_checkpoints:
        checkpoints = {}
    config = dict(lambda1=lambda1, lambda2=lambda2, tau=tau, S=S, eta=eta, deletion_form=deletion_form,
                  regularize=regularize, terms=terms, soft_step=soft_step, n_soft_steps=n_soft_steps, normalize=normalize, acc_floor=acc_floor, epochs=epochs,
                  lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay, batch_size=batch_size,
                  batchnorm=batchnorm, seed=seed, eval_seed=eval_gen_seed, explainer=repr(explainer))
    return FinetuneResult(model=model, history=history, best_epoch=best, checkpoints=checkpoints, config=config)


def finetune_ce_only(model: torch.nn.Module, data: Any, explainer: Any, **kwargs: Any) -> FinetuneResult:
    """The CE-only baseline: :func:`finetune_idexpo` with ``regularize=False`` (same optimizer, seeds,
    evaluation with ``explainer`` and checkpoint selection)."""
    if "regularize" in kwargs:
        raise TypeError("`regularize` is fixed to False in finetune_ce_only")
    return finetune_idexpo(model, data, explainer, regularize=False, **kwargs)
