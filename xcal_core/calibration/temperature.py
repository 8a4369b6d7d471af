"""Temperature scaling (Guo et al., 2017): one scalar T > 0 that divides the logits.

The temperature is fit by minimizing the mean negative log-likelihood of ``softmax(logits / T)``
with a bounded one-dimensional search on ``log T`` (Brent's method, scipy ``minimize_scalar``).
:func:`fit_temperature` is the shared engine; :class:`ReCalX` reuses it per perturbation-level bin.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch
from scipy.optimize import minimize_scalar

from .._validation import check_labels, check_logits, check_min_samples

__all__ = ["TemperatureScaling", "fit_temperature", "temperature_nll", "warn_if_at_bound"]

DEFAULT_BOUNDS: tuple[float, float] = (0.05, 20.0)


def _check_bounds(bounds: Any) -> tuple[float, float]:
    try:
        lo, hi = (float(b) for b in bounds)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"`bounds` must be a pair (T_min, T_max) of numbers, got {bounds!r}") from exc
    if not (0 < lo < hi < math.inf):
        raise ValueError(f"`bounds` must satisfy 0 < T_min < T_max < inf, got {bounds!r}")
    return lo, hi


def warn_if_at_bound(temperature: float, bounds: tuple[float, float], what: str = "fitted temperature") -> bool:
    """Warn (UserWarning) when a fitted temperature sits at an end of its search range; returns whether it does.

    A temperature at ``T_min`` usually means a calibration split the model gets (nearly) all right, or
    too few samples; one at ``T_max``, probabilities passed as logits or a model no better than chance.
    Either way the NLL optimum lies outside ``bounds`` and the value is a clipped, not a fitted, one.
    """
    lo, hi = bounds
    at = "lower" if temperature <= lo * (1 + 1e-3) else "upper" if temperature >= hi * (1 - 1e-3) else None
    if at is not None:
        warnings.warn(f"{what} T = {temperature:.4g} is at the {at} end of `bounds` {tuple(bounds)}: the NLL optimum "
                      "lies outside the search range (too few or too easy calibration samples, or inputs that are "
                      "not logits); widen `bounds` or check the calibration split", UserWarning, stacklevel=3)
    return at is not None


def temperature_nll(logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> float:
    """Mean negative log-likelihood of ``softmax(logits / temperature)`` (float64 arithmetic).

    Args:
        logits: (N, K) float raw scores (not probabilities).
        labels: (N,) int64 class indices in [0, K).
        temperature: scalar T > 0.

    Returns:
        The mean NLL in nats, a Python float.
    """
    z = logits.double() / float(temperature)
    return float(torch.nn.functional.cross_entropy(z, labels.long(), reduction="mean"))


def fit_temperature(
    logits: Any,
    labels: Any,
    *,
    bounds: tuple[float, float] = DEFAULT_BOUNDS,
    xatol: float = 1e-6,
) -> float:
    """Temperature that minimizes the NLL of ``softmax(logits / T)`` over ``T`` in ``bounds``.

    The search runs on ``log T`` with scipy's bounded Brent method in float64; the NLL of temperature
    scaling is smooth and unimodal in ``log T`` for any data with at least one non-tied prediction.

    Args:
        logits: (N, K) float raw scores, K >= 2 (probabilities are rejected).
        labels: (N,) int64 class indices in [0, K).
        bounds: (T_min, T_max), 0 < T_min < T_max; the result is clipped to this range.
        xatol: absolute tolerance on ``log T``.

    Returns:
        The fitted temperature T (Python float).

    Raises:
        ValueError: probabilities instead of logits, NaN/inf logits, label count or range mismatch, bad bounds.
    """
    z = check_logits(logits, "logits")
    y = check_labels(labels, "labels", n_classes=z.shape[1], n=z.shape[0])
    lo, hi = _check_bounds(bounds)
    z_np = z.detach().double().cpu().numpy()
    zy = np.take_along_axis(z_np, y.cpu().numpy()[:, None], axis=1)[:, 0]
    z_max = z_np.max(1)

    def objective(log_t: float) -> float:
        # mean NLL of softmax(z / T) in numpy (much cheaper than torch for a scalar search)
        inv_t = math.exp(-log_t)
        lse = z_max * inv_t + np.log(np.exp((z_np - z_max[:, None]) * inv_t).sum(1))
        return float(np.mean(lse - zy * inv_t))

    res = minimize_scalar(objective, bounds=(math.log(lo), math.log(hi)), method="bounded", options={"xatol": xatol})
    log_t = float(res.x)
    # Brent never evaluates the end points exactly; compare with them so a boundary optimum is returned as such.
    # The end points come first: on a tie (an NLL that underflows to 0 on a flat stretch) the bound wins, so
    # a degenerate fit is reported at its bound instead of at an arbitrary interior point.
    candidates = [(objective(math.log(lo)), math.log(lo)), (objective(math.log(hi)), math.log(hi)), (objective(log_t), log_t)]
    best = min(candidates, key=lambda c: c[0])[1]
    return float(np.clip(math.exp(best), lo, hi))


class TemperatureScaling:
    """Post-hoc temperature scaling of a classifier's logits (Guo et al., 2017).

    Example::

        ts = TemperatureScaling().fit(cal_logits, cal_labels)
        ts.temperature_            # fitted T
        ts.predict_proba(test_logits)

    Args:
        bounds: (T_min, T_max) search range of the temperature.

    Attributes:
        temperature_: fitted temperature (float), set by :meth:`fit`.
        n_classes_: number of classes K seen in :meth:`fit`.

    References:
        Guo, Pleiss, Sun, Weinberger. On Calibration of Modern Neural Networks. ICML 2017.
    """

    def __init__(self, bounds: tuple[float, float] = DEFAULT_BOUNDS) -> None:
        self.bounds = _check_bounds(bounds)

    def fit(self, logits: Any, labels: Any) -> "TemperatureScaling":
        """Fit T by minimizing the NLL on (logits, labels).

        Args:
            logits: (N, K) float raw scores of a held-out calibration split (not probabilities).
            labels: (N,) int64 class indices in [0, K).

        Returns:
            self, with ``temperature_`` set.

        Raises:
            ValueError: fewer than 2 samples (one sample drives T to a bound), probabilities passed as
                logits (also rounded, float16 or in percent), NaN/inf, label mismatch.

        Warns:
            UserWarning: the fitted temperature is at an end of ``bounds``.
        """
        z = check_logits(logits, "logits")
        check_min_samples(z.shape[0], 2, "logits", "fitting a temperature")
        self.temperature_ = fit_temperature(z, labels, bounds=self.bounds)
        warn_if_at_bound(self.temperature_, self.bounds)
        self.n_classes_ = int(z.shape[1])
        return self

    def _check_fitted_input(self, logits: Any) -> torch.Tensor:
        if not hasattr(self, "temperature_"):
            raise RuntimeError("TemperatureScaling is not fitted; call .fit(logits, labels) first")
        z = check_logits(logits, "logits")
        if z.shape[1] != self.n_classes_:
            raise ValueError(f"`logits` has {z.shape[1]} classes but the calibrator was fit on {self.n_classes_}")
        return z

    def transform(self, logits: Any) -> torch.Tensor:
        """Calibrated logits ``logits / temperature_``, (N, K) float, same device and dtype as the input."""
        z = self._check_fitted_input(logits)
        return z / self.temperature_

    def predict_proba(self, logits: Any) -> torch.Tensor:
        """Calibrated probabilities ``softmax(logits / temperature_)``, (N, K) rows summing to 1."""
        return torch.softmax(self.transform(logits), dim=1)

    def wrap(self, model: torch.nn.Module):
        """``model`` with its logits divided by ``temperature_`` (an :class:`xcal_core.explainers.LevelAwareModel`
        with one bin, so it needs no perturbation level)."""
        from ..explainers.perturbation import LevelAwareModel

        if not hasattr(self, "temperature_"):
            raise RuntimeError("TemperatureScaling is not fitted; call .fit(logits, labels) first")
        return LevelAwareModel(model, torch.tensor([self.temperature_]))

    def __repr__(self) -> str:
        t = getattr(self, "temperature_", None)
        return f"TemperatureScaling(temperature_={t:.4f})" if t is not None else "TemperatureScaling(unfitted)"
