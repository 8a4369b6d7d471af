"""Training with a checkpoint cache, and batched logits / probabilities extraction.

``train_classifier`` is seeded and bit-for-bit reproducible on the CPU (same versions, same thread
count): the initialization and dropout draw from a forked, seeded torch RNG (the caller's global
RNG state is restored afterwards), shuffling and augmentation use their own ``torch.Generator``.
Results are cached under ``cache_dir`` keyed by a hash of the dataset (name + content
fingerprint), model name and keyword arguments, hyperparameters, seed and device type; a second
call with the same configuration loads the checkpoint instead of training.
"""

from __future__ import annotations

import math
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._validation import (
    check_choice,
    check_fraction,
    check_int,
    check_labels,
    check_positive,
    check_tensor,
    model_device,
)
from ..runtime import resolve_device
from .cache import CorruptCheckpointError, config_hash, dataset_fingerprint, fetch_shipped, load_checkpoint, save_checkpoint
from .factory import MODELS, build_model, pretrained_normalization

if TYPE_CHECKING:  # pandas is imported lazily (it is slow to import)
    import pandas as pd

__all__ = [
    "TrainResult",
    "train_classifier",
    "train_regressor",
    "predict_logits",
    "predict_proba",
    "random_crop_flip",
    "CACHE_FORMAT",
]

CACHE_FORMAT = "xcal-model-v1"
_OPTIMIZERS = ("adam", "adamw", "sgd")
_SCHEDULES = ("constant", "cosine")
_TASKS = ("classification", "regression")


@dataclass
class TrainResult:
    """What :func:`train_classifier` returns.

    Attributes:
        model: the trained model, in eval mode, on the training device.
        history: one row per epoch run. Classification columns: ``epoch, train_loss`` (mean
            cross-entropy with label smoothing), ``cal_loss`` (NLL on the cal split), ``cal_acc``,
            ``lr``, ``seconds``. Regression: ``cal_acc`` is replaced by ``cal_rmse`` (target units) and
            the losses are MSE on the standardized target.
        from_cache: True when the model was loaded from ``path`` without training.
        path: the checkpoint file, or None without a ``cache_dir``.
        key: the configuration hash (SHA-256 hex) used as the cache key.
        config: the configuration that was hashed (JSON-able).
        best_epoch: the epoch (1-based) whose weights the model holds (the last one unless early
            stopping restored an earlier best); 0 for ``epochs=0``.
    """

    model: nn.Module
    history: "pd.DataFrame"
    from_cache: bool
    path: Path | None
    key: str = ""
    config: dict = field(default_factory=dict)
    best_epoch: int = 0


# --------------------------------------------------------------------------------------------
# prediction
# --------------------------------------------------------------------------------------------
def _check_model_input(model: nn.Module, x: Any, name: str = "x") -> torch.Tensor:
    t = check_tensor(x, name, finite=True)
    shape = getattr(model, "input_shape", None)
    if shape is not None:
        shape = tuple(shape)
        if t.ndim != len(shape) + 1:
            raise ValueError(f"`{name}` must be a batch of shape (N, {', '.join(map(str, shape))}), got shape {tuple(t.shape)}")
        if tuple(t.shape[1:]) != shape:
            raise ValueError(f"`{name}` has per-sample shape {tuple(t.shape[1:])} but the model expects {shape}")
    return t


class _EvalMode:
    """Context manager: put a model in eval mode and restore every submodule's flag afterwards."""

    def __init__(self, model: nn.Module, enabled: bool = True):
        self.model, self.enabled = model, enabled

    def __enter__(self):
        if self.enabled:
            self.flags = [(m, m.training) for m in self.model.modules()]
            self.model.eval()
        return self.model

    def __exit__(self, *exc):
        if self.enabled:
            for m, flag in self.flags:
                m.training = flag
        return False


def predict_logits(model: nn.Module, x: Any, batch_size: int = 512, *, eval_mode: bool = True) -> torch.Tensor:
    """Model outputs for a batch of inputs, in chunks, without gradients.

    Args:
        model: a classifier returning logits (N, K) (or a regressor returning (N, 1)).
        x: float32 inputs (N, *input_shape): images in [0, 1], or standardized tabular features;
            tensor (any device) or numpy array. Must be finite; when the model has ``input_shape``
            (every model from :func:`build_model`) the per-sample shape must match it.
        batch_size: inputs per forward pass.
        eval_mode: run in eval mode (dropout off, BatchNorm running stats) and restore each
            submodule's mode afterwards; pass False to keep the model's current modes (e.g. MC
            dropout with only the Dropout modules in train mode).

    Returns:
        float32 tensor (N, K) of logits on the device of ``x`` (CPU for numpy input).

    Raises:
        ValueError: NaN/inf in ``x``, empty ``x``, wrong per-sample shape, ``batch_size`` < 1.
    """
    out_device = x.device if isinstance(x, torch.Tensor) else torch.device("cpu")
    t = _check_model_input(model, x)
    batch_size = check_int(batch_size, "batch_size", low=1)
    dev = model_device(model)
    outs = []
    with _EvalMode(model, eval_mode), torch.no_grad():
        for i in range(0, t.shape[0], batch_size):
            outs.append(model(t[i:i + batch_size].to(dev, non_blocking=True)).float())
    out = torch.cat(outs)
    return out.to(out_device)


def predict_proba(model: nn.Module, x: Any, batch_size: int = 512, *, eval_mode: bool = True) -> torch.Tensor:
    """Softmax probabilities (N, K) of a classifier; see :func:`predict_logits` for the arguments.

    Raises:
        ValueError: the model has a single output (a regressor), plus :func:`predict_logits`'s errors.
    """
    logits = predict_logits(model, x, batch_size, eval_mode=eval_mode)
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise ValueError(f"`model` returns shape {tuple(logits.shape)}; predict_proba needs a classifier with K >= 2 logits")
    return torch.softmax(logits, dim=1)


# --------------------------------------------------------------------------------------------
# augmentation
# --------------------------------------------------------------------------------------------
def random_crop_flip(x: torch.Tensor, generator: torch.Generator | None = None, padding: int | None = None,
                     flip: bool = True) -> torch.Tensor:
    """Batched random crop (after zero padding) and horizontal flip of images.

    Args:
        x: float images (N, C, H, W) in [0, 1].
        generator: CPU torch.Generator for the crop offsets and flips (None: global RNG).
        padding: zero padding on each side before cropping back to (H, W); None uses
            ``max(1, H // 8)`` (4 px for 32x32 inputs, as in the usual CIFAR recipe).
        flip: also flip each image left-right with probability 1/2.

    Returns:
        Tensor shaped like ``x`` on ``x``'s device.
    """
    n, c, h, w = x.shape
    p = max(1, h // 8) if padding is None else int(padding)
    dy = torch.randint(0, 2 * p + 1, (n,), generator=generator).to(x.device)
    dx = torch.randint(0, 2 * p + 1, (n,), generator=generator).to(x.device)
    xp = F.pad(x, (p, p, p, p))
    rows = (dy[:, None] + torch.arange(h, device=x.device)[None, :])  # (N, H)
    cols = (dx[:, None] + torch.arange(w, device=x.device)[None, :])  # (N, W)
    if flip:
        do_flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
        cols = torch.where(do_flip[:, None], cols.flip(1), cols)
    idx_n = torch.arange(n, device=x.device)[:, None, None, None]
    idx_c = torch.arange(c, device=x.device)[None, :, None, None]
    return xp[idx_n, idx_c, rows[:, None, :, None], cols[:, None, None, :]]


# --------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------
def _plain(v: Any) -> Any:
    """Tensors/arrays/tuples -> nested lists of Python floats (for model kwargs and configs)."""
    if isinstance(v, torch.Tensor):
        return v.detach().cpu().double().tolist()
    if isinstance(v, np.ndarray):
        return v.astype(np.float64).tolist()
    if isinstance(v, (tuple, list)):
        return [_plain(u) for u in v]
    if isinstance(v, dict):
        return {k: _plain(u) for k, u in v.items()}
    if isinstance(v, np.generic):
        return v.item()
    return v


def _safe(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(s)).strip("-") or "x"


def _split_xy(split: Any, name: str, input_shape: tuple, task: str, n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    if split is None or not hasattr(split, "x") or not hasattr(split, "y"):
        raise ValueError(f"`dataset.{name}` must be a split with `.x` and `.y`")
    x = check_tensor(split.x, f"dataset.{name}.x")
    if tuple(x.shape[1:]) != tuple(input_shape):
        raise ValueError(f"`dataset.{name}.x` has per-sample shape {tuple(x.shape[1:])} but dataset.info.input_shape is {tuple(input_shape)}")
    if task == "classification":
        y = check_labels(split.y, f"dataset.{name}.y", n_classes=n_classes, n=x.shape[0])
    else:
        y = check_tensor(split.y, f"dataset.{name}.y").reshape(-1)
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"`dataset.{name}.y` has {y.shape[0]} targets but `dataset.{name}.x` has {x.shape[0]} samples")
    return x, y


def _dataset_normalization(info: Any) -> Any:
    norm = getattr(info, "normalization", None)
    if norm is None:
        return None
    if isinstance(norm, dict):
        norm = (norm.get("mean"), norm.get("std"))
    return _plain(tuple(norm))


def train_classifier(
    model_name: str,
    dataset: Any,
    *,
    epochs: int,
    lr: float = 1e-3,
    batch_size: int = 128,
    weight_decay: float = 0.0,
    optimizer: str = "adam",
    momentum: float = 0.9,
    lr_schedule: str = "constant",
    seed: int = 0,
    device: str | torch.device = "cpu",
    cache_dir: str | Path | None = None,
    model_kwargs: dict | None = None,
    early_stopping_patience: int | None = None,
    augment: bool = False,
    label_smoothing: float = 0.0,
    progress: bool = True,
    task: str | None = None,
    amp: bool | None = None,
) -> TrainResult:
    """Train (or load from the cache) a model on ``dataset.train``, monitoring ``dataset.cal``.

    Args:
        model_name: a :func:`~xcal_core.models.build_model` name (``"small_cnn"``, ``"mlp"``, ``"tv:resnet18"``, ...).
        dataset: an ``xcal_core.data.Dataset``: ``.info`` (``name``, ``task``, ``input_shape``,
            ``n_classes``, optional ``normalization`` = per-channel (mean, std)), ``.train`` and ``.cal``
            splits with ``.x`` float32 (N, *input_shape) and ``.y`` int64 labels (N,) (float targets for
            regression).
        epochs: number of passes over the training split (>= 0; 0 returns the initialized model).
        lr: learning rate (> 0).
        batch_size: training mini-batch size; a trailing batch of a single sample is skipped (BatchNorm
            cannot train on it).
        weight_decay: L2 penalty (decoupled for ``"adamw"``), >= 0.
        optimizer: ``"adam"``, ``"adamw"`` or ``"sgd"`` (with ``momentum``, Nesterov off).
        momentum: SGD momentum in [0, 1).
        lr_schedule: ``"constant"`` or ``"cosine"`` (cosine annealing to 0 over all steps).
        seed: seeds the initialization, dropout, shuffling and augmentation (>= 0).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"auto"`` or a ``torch.device``.
        cache_dir: folder for checkpoints (``<cache_dir>/models/<model>__<dataset>__<key>.pt``); None
            disables caching.
        model_kwargs: keyword arguments for ``build_model``. Unless it sets ``normalization``, the
            dataset's ``info.normalization`` is used (pretrained torchvision models keep their
            ImageNet normalization). For regression with ``mlp`` / ``tabular_resnet`` the training
            targets' mean and std become ``target_normalization`` unless given.
        early_stopping_patience: stop after this many epochs without a lower cal NLL (cal MSE for
            regression) and restore the best epoch's weights; None trains all ``epochs``.
        augment: random crop (zero padding ``H // 8``) + horizontal flip of image batches.
        label_smoothing: cross-entropy label smoothing in [0, 1) (classification only).
        progress: show a tqdm progress bar over epochs.
        task: ``"classification"`` or ``"regression"``; None uses ``dataset.info.task``.
        amp: mixed precision: forward passes under ``torch.autocast`` in bfloat16 (weights, optimizer
            and loss stay float32). None (default) turns it on exactly when ``device`` is a CUDA GPU
            with bfloat16 support, and off on the CPU, where it does not help. It is part of the
            cache key when on.

    Returns:
        :class:`TrainResult` (model in eval mode on ``device``, per-epoch history, ``from_cache``,
        ``path``, ``key``, ``config``, ``best_epoch``).

    Raises:
        ValueError / TypeError: unknown model/optimizer/schedule/task names (listing the valid ones),
            out-of-range hyperparameters, NaN/inf inputs, labels outside [0, n_classes), splits whose
            shape disagrees with ``dataset.info.input_shape``, empty splits.

    A cached checkpoint that is truncated or otherwise unreadable triggers a ``UserWarning`` and a
    retrain that overwrites it; checkpoints are written atomically.
    """
    # ---- validate arguments ----
    if not isinstance(model_name, str):
        raise TypeError(f"`model_name` must be a string, got {type(model_name).__name__}")
    if not model_name.startswith("tv:") and model_name not in MODELS:
        raise ValueError(f"unknown `model_name` {model_name!r}; expected one of {list(MODELS)} or 'tv:<arch>'")
    epochs = check_int(epochs, "epochs", low=0)
    lr = float(check_positive(lr, "lr"))
    batch_size = check_int(batch_size, "batch_size", low=1)
    weight_decay = float(check_positive(weight_decay, "weight_decay", strict=False))
    check_choice(optimizer, "optimizer", _OPTIMIZERS)
    momentum = check_fraction(momentum, "momentum", open_high=True)
    check_choice(lr_schedule, "lr_schedule", _SCHEDULES)
    seed = check_int(seed, "seed", low=0)
    if early_stopping_patience is not None:
        early_stopping_patience = check_int(early_stopping_patience, "early_stopping_patience", low=1)
    label_smoothing = check_fraction(label_smoothing, "label_smoothing", open_high=True)
    if not isinstance(augment, bool):
        raise TypeError(f"`augment` must be a bool, got {type(augment).__name__}")
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    if amp is None:
        amp = dev.type == "cuda" and torch.cuda.is_bf16_supported()
    elif not isinstance(amp, bool):
        raise TypeError(f"`amp` must be a bool or None, got {type(amp).__name__}")
    elif amp and dev.type != "cuda":
        raise ValueError(f"`amp=True` needs a CUDA device (bfloat16 autocast); `device` is {dev}")
    info = getattr(dataset, "info", None)
    if info is None:
        raise TypeError("`dataset` must be an xcal_core.data.Dataset (with .info, .train, .cal)")
    task = task if task is not None else getattr(info, "task", "classification")
    check_choice(task, "task", _TASKS)
    input_shape = tuple(int(s) for s in info.input_shape)
    if task == "classification":
        n_classes = check_int(info.n_classes, "dataset.info.n_classes", low=2)
        n_out = n_classes
    else:
        n_classes, n_out = 0, 1
    x_tr, y_tr = _split_xy(dataset.train, "train", input_shape, task, n_classes)
    cal = getattr(dataset, "cal", None)
    x_cal = y_cal = None
    if cal is not None and len(cal.x) > 0:
        x_cal, y_cal = _split_xy(cal, "cal", input_shape, task, n_classes)
    elif early_stopping_patience is not None:
        raise ValueError("`early_stopping_patience` needs a non-empty `dataset.cal` split")
    if augment and len(input_shape) != 3:
        raise ValueError(f"`augment=True` needs image inputs (C, H, W); this dataset has input_shape {input_shape}")

    # ---- resolve model kwargs ----
    mk = dict(model_kwargs or {})
    if "seed" in mk:
        raise ValueError("`model_kwargs` must not contain 'seed'; pass `seed=` to train_classifier")
    is_pretrained_tv = model_name.startswith("tv:") and bool(mk.get("pretrained", False))
    if "normalization" not in mk:
        norm = pretrained_normalization(input_shape[0]) if is_pretrained_tv else _dataset_normalization(info)
        if norm is not None:
            mk["normalization"] = norm
    if task == "regression" and model_name in ("mlp", "tabular_resnet") and "target_normalization" not in mk:
        sd = float(y_tr.std()) if y_tr.numel() > 1 else 1.0
        mk["target_normalization"] = (float(y_tr.mean()), sd if sd > 0 else 1.0)
    mk = _plain(mk)

    config = {
        "format": CACHE_FORMAT,
        "dataset": str(getattr(info, "name", "")),
        "data_fingerprint": dataset_fingerprint(dataset),
        "task": task,
        "model": model_name,
        "model_kwargs": {k: v for k, v in mk.items() if k != "allow_download"},  # does not change the weights
        "input_shape": list(input_shape),
        "n_outputs": n_out,
        "epochs": epochs, "lr": lr, "batch_size": batch_size, "weight_decay": weight_decay,
        "optimizer": optimizer, "momentum": momentum if optimizer == "sgd" else None, "lr_schedule": lr_schedule,
        "early_stopping_patience": early_stopping_patience, "augment": augment,
        "label_smoothing": label_smoothing if task == "classification" else None,
        "seed": seed, "device_type": dev.type, "torch": torch.__version__.split("+")[0],
    }
    if amp:  # only when on, so CPU cache keys are unchanged
        config["amp"] = "bfloat16"
    key = config_hash(config)
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / "models" / f"{_safe(model_name)}__{_safe(config['dataset'])}__{key[:20]}.pt"

    def _build(for_cache_hit: bool = False) -> nn.Module:
        kw = dict(mk)
        if for_cache_hit and is_pretrained_tv:
            # the checkpoint holds every weight: build the same architecture without needing the
            # pretrained file (the head and normalization are identical to the fine-tuned model's)
            kw["pretrained"] = False
            kw.pop("allow_download", None)
        return build_model(model_name, input_shape, n_out, **kw)

    import pandas as pd

    # ---- cache hit (a cold cache first takes the checkpoint shipped with the repository, if any) ----
    if path is not None and not path.exists():
        fetch_shipped(path, cache_dir)
    if path is not None and path.exists():
        try:
            payload = load_checkpoint(path)
            if payload.get("format") != CACHE_FORMAT or payload.get("key") != key:
                raise CorruptCheckpointError(f"{path} belongs to another configuration")
            with torch.random.fork_rng(devices=[]):
                model = _build(for_cache_hit=True)
            model.load_state_dict(payload["state_dict"])
            model.to(dev).eval()
            return TrainResult(model=model, history=pd.DataFrame(payload["history"]), from_cache=True, path=path,
                               key=key, config=config, best_epoch=int(payload.get("best_epoch", epochs)))
        except Exception as exc:  # corrupt, truncated, foreign or incompatible file: retrain
            warnings.warn(f"cached checkpoint {path} is unusable ({type(exc).__name__}: {exc}); retraining and overwriting it",
                          UserWarning, stacklevel=2)

    # ---- train ----
    cuda_devices = [dev.index] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(seed)
        model = _build().to(dev)
        model, history, best_epoch = _fit(
            model, x_tr, y_tr, x_cal, y_cal, task=task, epochs=epochs, lr=lr, batch_size=batch_size,
            weight_decay=weight_decay, optimizer=optimizer, momentum=momentum, lr_schedule=lr_schedule, seed=seed,
            patience=early_stopping_patience, augment=augment, label_smoothing=label_smoothing, progress=progress,
            desc=f"{model_name} on {config['dataset']}", amp=amp,
        )
    model.eval()
    if path is not None:
        payload = {
            "format": CACHE_FORMAT, "key": key, "config": _plain(config),
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "history": {c: history[c].tolist() for c in history.columns}, "best_epoch": best_epoch,
        }
        save_checkpoint(path, payload)
    return TrainResult(model=model, history=history, from_cache=False, path=path, key=key, config=config,
                       best_epoch=best_epoch)


def train_regressor(model_name: str, dataset: Any, **kwargs: Any) -> TrainResult:
    """:func:`train_classifier` with ``task="regression"``: MSE on the standardized target, (N, 1) outputs.

    The ``mlp`` and ``tabular_resnet`` models get ``target_normalization`` = (mean, std) of the
    training targets, so they predict in the target's units while training on a unit-scale loss.
    History columns: ``epoch, train_loss, cal_loss, cal_rmse, lr, seconds``.
    """
    if "task" in kwargs and kwargs["task"] != "regression":
        raise ValueError("`task` must be 'regression' for train_regressor")
    kwargs["task"] = "regression"
    return train_classifier(model_name, dataset, **kwargs)


def _target_scale(model: nn.Module) -> float:
    from .factory import OutputScale

    for m in model.modules():
        if isinstance(m, OutputScale):
            return float(m.std)
    return 1.0


def _fit(model, x_tr, y_tr, x_cal, y_cal, *, task, epochs, lr, batch_size, weight_decay, optimizer, momentum,
         lr_schedule, seed, patience, augment, label_smoothing, progress, desc, amp=False):
    import pandas as pd

    try:  # notebook widget bar only when ipywidgets is there (tqdm.auto warns otherwise)
        import ipywidgets  # noqa: F401
        from tqdm.auto import tqdm
    except ImportError:
        from tqdm import tqdm

    dev = model_device(model)
    # Keep the data where the model is when it fits comfortably; otherwise move per batch.
    on_dev = dev.type == "cpu" or x_tr.numel() * x_tr.element_size() < 2**30
    x_src = x_tr.to(dev) if on_dev else x_tr
    y_src = y_tr.to(dev) if on_dev else y_tr
    n = x_tr.shape[0]
    steps_per_epoch = sum(1 for i in range(0, n, batch_size) if min(batch_size, n - i) > 1 or n == 1)
    g_shuffle = torch.Generator().manual_seed(seed)
    g_aug = torch.Generator().manual_seed(seed + 0x9E3779B1)

    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer == "adam":
        opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    elif optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    total_steps = max(1, epochs * steps_per_epoch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps) if lr_schedule == "cosine" else None

    scale = _target_scale(model) if task == "regression" else 1.0

    def loss_fn(out, y):
        if task == "classification":
            return F.cross_entropy(out, y, label_smoothing=label_smoothing)
        return F.mse_loss(out.reshape(-1) / scale, y / scale)

    def evaluate():
        if x_cal is None:
            return math.nan, math.nan
        out = predict_logits(model, x_cal, batch_size=max(512, batch_size)).to(dev)
        y = y_cal.to(dev)
        if task == "classification":
            return float(F.cross_entropy(out, y)), float((out.argmax(1) == y).float().mean())
        mse = F.mse_loss(out.reshape(-1), y)
        return float(mse) / scale**2, float(mse.sqrt())

    rows = []
    best_loss, best_epoch, best_state, bad_epochs = math.inf, epochs, None, 0
    bar = tqdm(range(1, epochs + 1), desc=desc, disable=not progress, leave=False, mininterval=0.5)
    for epoch in bar:
        t0 = time.perf_counter()
        model.train()
        perm = torch.randperm(n, generator=g_shuffle).to(x_src.device)  # one copy per epoch, not per step
        # The loss sum stays on the device (float64, so the value equals the float sum) and is read once
        # per epoch: no host-device sync inside the step loop.
        tot = torch.zeros((), dtype=torch.float64, device=dev)
        cnt = 0
        lr_now = opt.param_groups[0]["lr"]
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            if idx.numel() == 1 and n > 1:
                continue  # a single-sample batch breaks BatchNorm
            xb = x_src[idx].to(dev, non_blocking=True)
            yb = y_src[idx].to(dev, non_blocking=True)
            if augment:
                xb = random_crop_flip(xb, generator=g_aug)
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=amp):
                out = model(xb)
            loss = loss_fn(out.float(), yb)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            tot += loss.detach().double() * idx.numel()
            cnt += idx.numel()
        tot = float(tot)
        if not math.isfinite(tot):
            raise FloatingPointError(f"training loss became {tot} at epoch {epoch}; lower `lr`")
        cal_loss, cal_metric = evaluate()
        row = {"epoch": epoch, "train_loss": tot / max(cnt, 1), "cal_loss": cal_loss,
               ("cal_acc" if task == "classification" else "cal_rmse"): cal_metric,
               "lr": lr_now, "seconds": time.perf_counter() - t0}
        rows.append(row)
        bar.set_postfix(train_loss=f"{row['train_loss']:.3f}", cal_loss=f"{cal_loss:.3f}")
        if patience is not None:
            if cal_loss < best_loss - 1e-7:
                best_loss, best_epoch, bad_epochs = cal_loss, epoch, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                bad_epochs += 1
                if bad_epochs >= patience:
                    break
    bar.close()
    if patience is not None and best_state is not None:
        model.load_state_dict(best_state)
    else:
        best_epoch = len(rows)
    cols = ["epoch", "train_loss", "cal_loss", "cal_acc" if task == "classification" else "cal_rmse", "lr", "seconds"]
    history = pd.DataFrame(rows, columns=cols)
    return model, history, best_epoch
