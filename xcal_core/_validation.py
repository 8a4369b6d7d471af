"""Input validation shared by every public function.

Each checker raises ``ValueError`` / ``TypeError`` with a message that names the argument and
says what was expected, so bad input never surfaces later as a cryptic torch error.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch


def as_tensor(x: Any, name: str, dtype: torch.dtype | None = torch.float32) -> torch.Tensor:
    """Convert numpy arrays / lists to a tensor (keeps an existing tensor's device)."""
    if isinstance(x, torch.Tensor):
        return x if dtype is None or x.dtype == dtype else x.to(dtype)
    if isinstance(x, (np.ndarray, list, tuple, float, int)):
        try:
            t = torch.as_tensor(np.asarray(x))
        except Exception as exc:  # ragged lists etc.
            raise TypeError(f"`{name}` could not be converted to a tensor: {exc}") from exc
        return t if dtype is None else t.to(dtype)
    raise TypeError(f"`{name}` must be a torch.Tensor or numpy array, got {type(x).__name__}")


def check_tensor(
    x: Any,
    name: str,
    *,
    ndim: int | Sequence[int] | None = None,
    finite: bool = True,
    nonempty: bool = True,
    dtype: torch.dtype | None = torch.float32,
) -> torch.Tensor:
    """Return ``x`` as a tensor after checking rank, emptiness and finiteness."""
    t = as_tensor(x, name, dtype=dtype)
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if t.ndim not in allowed:
            raise ValueError(f"`{name}` must have {' or '.join(map(str, allowed))} dimensions, got shape {tuple(t.shape)}")
    if nonempty and t.numel() == 0:
        raise ValueError(f"`{name}` is empty (shape {tuple(t.shape)}); expected at least one element")
    if finite and t.is_floating_point() and not torch.isfinite(t).all():
        n_bad = int((~torch.isfinite(t)).sum())
        raise ValueError(f"`{name}` contains {n_bad} NaN or inf value(s)")
    return t


def check_labels(y: Any, name: str, n_classes: int | None = None, n: int | None = None) -> torch.Tensor:
    """Integer class labels of shape (N,), each in [0, n_classes)."""
    t = as_tensor(y, name, dtype=None)
    if t.is_floating_point():
        if not torch.all(t == t.round()):
            raise TypeError(f"`{name}` must hold integer class labels, got non-integer floats")
    t = t.long()
    if t.ndim != 1:
        raise ValueError(f"`{name}` must be 1-D (N,), got shape {tuple(t.shape)}")
    if t.numel() == 0:
        raise ValueError(f"`{name}` is empty; expected at least one label")
    if n is not None and t.shape[0] != n:
        raise ValueError(f"`{name}` has {t.shape[0]} labels but {n} samples were given")
    if n_classes is not None and (int(t.min()) < 0 or int(t.max()) >= n_classes):
        raise ValueError(
            f"`{name}` has labels outside [0, {n_classes - 1}] (min {int(t.min())}, max {int(t.max())})"
        )
    return t


def looks_like_probabilities(t: torch.Tensor, atol: float = 1e-4) -> bool:
    """True when every row is in [0, 1] and sums to 1 (what a softmax output looks like)."""
    if t.ndim != 2 or t.shape[1] < 2:
        return False
    return bool((t >= 0).all() and (t <= 1).all() and torch.allclose(t.sum(1), torch.ones_like(t[:, 0]), atol=atol))


def probability_like(t: torch.Tensor) -> str | None:
    """How a (N, K) tensor looks like probabilities that are not exact, or None.

    Beyond exact softmax rows (:func:`looks_like_probabilities`) this catches probabilities that were
    rounded (e.g. to 2 decimals), stored in float16 / bfloat16, or given in percent: every entry is
    >= 0, at most 1 (or 100), and every row sums to 1 (or 100) within ``min(0.1, 1e-3 + 0.005 K)``
    relative, which covers rounding each of the K entries to 2 decimals. Raw logits essentially never
    have every row non-negative and summing to a constant.
    """
    if t.ndim != 2 or t.shape[1] < 2 or t.numel() == 0 or not t.is_floating_point():
        return None
    t = t.detach().double()
    if not bool((t >= 0).all()):
        return None
    tol = min(0.1, 1e-3 + 0.005 * t.shape[1])
    sums, top = t.sum(1), float(t.max())
    if top <= 1 + 1e-6 and bool(((sums - 1).abs() <= tol).all()):
        return "probabilities (non-negative rows summing to 1, up to rounding or low precision)"
    if top <= 100 * (1 + 1e-6) and bool(((sums - 100).abs() <= 100 * tol).all()):
        return "percentages (non-negative rows summing to 100: probabilities times 100)"
    return None


def check_logits(logits: Any, name: str = "logits") -> torch.Tensor:
    """Logits of shape (N, K), K >= 2, finite; rejects probability rows, also rounded, low-precision or
    in percent (use log-probabilities instead)."""
    t = check_tensor(logits, name, ndim=2)
    if t.shape[1] < 2:
        raise ValueError(f"`{name}` must have K >= 2 class columns, got shape {tuple(t.shape)}")
    if looks_like_probabilities(t):
        raise ValueError(
            f"`{name}` looks like probabilities (rows in [0, 1] summing to 1); pass raw logits "
            "(or log-probabilities, e.g. torch.log(probs))"
        )
    kind = probability_like(t)
    if kind is not None:
        raw = getattr(logits, "dtype", None)
        precision = f" (given as {raw})" if raw in (torch.float16, torch.bfloat16, np.float16) else ""
        raise ValueError(
            f"`{name}` looks like {kind}{precision}; pass raw logits in float32 "
            "(or log-probabilities of the exact probabilities, e.g. torch.log(probs))"
        )
    return t


def check_min_samples(n: int, minimum: int, name: str, what: str) -> None:
    """Raise when fewer than ``minimum`` samples (rows of ``name``) are given for ``what``."""
    if n < minimum:
        raise ValueError(f"`{name}` has {n} sample(s); {what} needs at least {minimum}")


def check_probs(probs: Any, name: str = "probs", atol: float = 1e-3) -> torch.Tensor:
    """Probabilities of shape (N, K) with rows in [0, 1] summing to 1."""
    t = check_tensor(probs, name, ndim=2)
    if t.shape[1] < 2:
        raise ValueError(f"`{name}` must have K >= 2 class columns, got shape {tuple(t.shape)}")
    if (t < -1e-6).any() or (t > 1 + 1e-6).any():
        raise ValueError(f"`{name}` must hold probabilities in [0, 1]; got values in [{float(t.min()):.3g}, {float(t.max()):.3g}] (did you pass logits? apply softmax first)")
    if not torch.allclose(t.sum(1), torch.ones_like(t[:, 0]), atol=atol):
        raise ValueError(f"`{name}` rows must sum to 1 (max deviation {float((t.sum(1) - 1).abs().max()):.3g})")
    return t


def check_choice(value: Any, name: str, choices: Iterable[Any]) -> Any:
    """``value`` must be one of ``choices``; the error lists them."""
    choices = list(choices)
    if value not in choices:
        raise ValueError(f"unknown `{name}` {value!r}; expected one of {choices}")
    return value


def check_positive(value: Any, name: str, *, strict: bool = True) -> float:
    """A real number > 0 (or >= 0 with ``strict=False``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"`{name}` must be a number, got {type(value).__name__}")
    if not np.isfinite(value) or (value <= 0 if strict else value < 0):
        raise ValueError(f"`{name}` must be {'> 0' if strict else '>= 0'}, got {value}")
    return value


def check_int(value: Any, name: str, *, low: int | None = None, high: int | None = None) -> int:
    """An integer in [low, high] (bounds inclusive, None = open)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"`{name}` must be an int, got {type(value).__name__}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"`{name}` must be in [{low if low is not None else '-inf'}, {high if high is not None else 'inf'}], got {value}")
    return int(value)


def check_fraction(value: Any, name: str, *, open_low: bool = False, open_high: bool = False) -> float:
    """A float in [0, 1] (ends excluded when open_low / open_high)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"`{name}` must be a number in [0, 1], got {type(value).__name__}")
    lo_ok = value > 0 if open_low else value >= 0
    hi_ok = value < 1 if open_high else value <= 1
    if not (lo_ok and hi_ok):
        raise ValueError(f"`{name}` must be in {'(' if open_low else '['}0, 1{')' if open_high else ']'}, got {value}")
    return float(value)


def check_same_length(name_a: str, a: Any, name_b: str, b: Any) -> None:
    """Raise when two batched inputs disagree on N."""
    if len(a) != len(b):
        raise ValueError(f"`{name_a}` and `{name_b}` must have the same length, got {len(a)} and {len(b)}")


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of a model's first parameter or buffer (CPU for parameter-free modules)."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")
