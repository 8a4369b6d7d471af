"""Dirichlet calibration (Kull et al., 2019) and a calibrated-model wrapper for explainers.

Dirichlet calibration is multinomial logistic regression on the **log-probabilities** of the
uncalibrated classifier: ``q = softmax(W log p + b)`` with a full ``W`` (K, K) and ``b`` (K,).
``log p = log_softmax(logits)`` is invariant to adding a constant to a row of logits, so the
calibrator accepts either raw logits or log-probabilities (``torch.log(probs)``) and gives the same
result for both; it rejects probability rows (pass ``torch.log(probs)`` instead).

Regularization (``reg`` = lambda):

* ``odir=False`` (default; what ``dirichletcal``'s ``FullDirichletCalibrator(reg_lambda=0.01)`` uses and
  what the Calibrate-to-Interpret code calls): the softmax is invariant to adding the same vector to every
  row of ``[W | b]``, so the last row is fixed to zero (reference-row parameterization) and the objective
  is ``mean NLL + reg * (||W||_F^2 + ||b||^2)`` over the K-1 free rows: plain L2 towards zero.
* ``odir=True`` (Off-Diagonal and Intercept Regularization, Kull et al. 2019): all K rows are free and the
  objective is ``mean NLL + reg / (K (K - 1)) * sum_{i != j} W_ij^2 + reg_mu / K * sum_j b_j^2``.

``structure="diagonal"`` (``W = diag(w)``, vector scaling of log-probabilities) and ``structure="scalar"``
(``W = s I``, ``b = 0``: exactly temperature scaling with ``T = 1 / s``) are constrained variants.

References:
    Kull, Perello-Nieto, Kängsepp, Silva Filho, Song, Flach. Beyond temperature scaling: Obtaining
    well-calibrated multi-class probabilities with Dirichlet calibration. NeurIPS 2019.
    Scafarto, Posocco, Bonnefoy. Calibrate to Interpret. ECML-PKDD workshops 2022 (section 3.1).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from scipy.optimize import minimize

from .._validation import check_choice, check_int, check_labels, check_logits, check_min_samples, check_positive

__all__ = ["DirichletCalibration", "CalibratedModel"]

_STRUCTURES = ("full", "diagonal", "scalar")


class DirichletCalibration:
    """Post-hoc Dirichlet calibration: ``softmax(W log_softmax(logits) + b)``, fit by penalized NLL.

    Example::

        dc = DirichletCalibration(reg=0.01).fit(cal_logits, cal_labels)
        dc.W_, dc.b_                 # (K, K), (K,)
        dc.predict_proba(test_logits)

    Input domain: ``logits`` (N, K) raw scores **or** log-probabilities; both give the same calibrated
    output because the map acts on ``log_softmax(logits)``. Probabilities (rows in [0, 1] summing to 1)
    are rejected: pass ``torch.log(probs)``.

    Args:
        reg: L2 weight lambda >= 0 (see the module docstring for where it applies). 0 = plain
            maximum likelihood, i.e. multinomial logistic regression on log-probabilities.
        odir: use ODIR (off-diagonal and intercept penalties) instead of plain L2 on all parameters.
        reg_mu: intercept weight mu of ODIR (defaults to ``reg``); ignored unless ``odir=True``.
        structure: ``"full"`` (W full), ``"diagonal"`` (W diagonal, b free) or ``"scalar"`` (W = s I,
            b = 0, equal to temperature scaling). ``odir`` only applies to ``"full"``.
        max_iter: most L-BFGS-B iterations, >= 1.
        tol: L-BFGS-B gradient tolerance (``gtol``), > 0.
        eps: probabilities are clipped to ``[eps, 1]`` before the log (as ``dirichletcal`` does), in (0, 1).

    Attributes:
        W_: fitted (K, K) float64 weight matrix (in the reference-row form for ``odir=False``,
            i.e. last row zero; predictions are unaffected by that choice).
        b_: fitted (K,) float64 intercept.
        n_classes_: K.
        converged_: whether L-BFGS-B reported success.
        n_iter_: iterations used.

    References:
        Kull et al., NeurIPS 2019 (Dirichlet calibration, ODIR).
    """

    def __init__(
        self,
        reg: float = 0.01,
        odir: bool = False,
        reg_mu: float | None = None,
        structure: str = "full",
        max_iter: int = 1000,
        tol: float = 1e-7,
        eps: float = 1e-12,
    ) -> None:
        self.reg = float(check_positive(reg, "reg", strict=False))
        if not isinstance(odir, bool):
            raise TypeError(f"`odir` must be a bool, got {type(odir).__name__}")
        self.odir = odir
        self.reg_mu = None if reg_mu is None else float(check_positive(reg_mu, "reg_mu", strict=False))
        self.structure = check_choice(structure, "structure", _STRUCTURES)
        if odir and structure != "full":
            raise ValueError(f"`odir`=True needs `structure`='full', got {structure!r}")
        self.max_iter = check_int(max_iter, "max_iter", low=1)
        self.tol = float(check_positive(tol, "tol"))
        eps = float(check_positive(eps, "eps"))
        if eps >= 1:
            raise ValueError(f"`eps` must be in (0, 1), got {eps}")
        self.eps = eps

    # ------------------------------------------------------------------ parameterization
    def _log_probs(self, z: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(z, dim=1).clamp_min(math.log(self.eps))

    def _unpack(self, theta: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(W, b) from the free parameter vector (float64 torch)."""
        if self.structure == "scalar":
            return theta[0] * torch.eye(k, dtype=theta.dtype), torch.zeros(k, dtype=theta.dtype)
        if self.structure == "diagonal":
            return torch.diag(theta[:k]), theta[k:]
        if self.odir:
            wb = theta.view(k, k + 1)
        else:  # reference row: the last row of [W | b] is zero
            wb = torch.cat([theta.view(k - 1, k + 1), torch.zeros(1, k + 1, dtype=theta.dtype)], 0)
        return wb[:, :k], wb[:, k]

    def _init(self, k: int) -> np.ndarray:
        if self.structure == "scalar":
            return np.ones(1)
        if self.structure == "diagonal":
            return np.concatenate([np.ones(k), np.zeros(k)])
        wb = np.concatenate([np.eye(k), np.zeros((k, 1))], 1)
        if not self.odir:
            wb = (wb - wb[-1:])[:-1]
        return wb.ravel()

    def _wb_numpy(self, theta: np.ndarray, k: int) -> np.ndarray:
        """[W | b] (K, K + 1) from the free parameters."""
        w, b = self._unpack(torch.from_numpy(np.asarray(theta, dtype=np.float64)), k)
        return np.concatenate([w.numpy(), b.numpy()[:, None]], 1)

    def _grad_theta(self, g_wb: np.ndarray, k: int) -> np.ndarray:
        """Chain rule from d/d[W | b] to d/d(free parameters)."""
        if self.structure == "scalar":
            return np.array([np.trace(g_wb[:, :k])])
        if self.structure == "diagonal":
            return np.concatenate([np.diagonal(g_wb[:, :k]), g_wb[:, k]])
        return (g_wb if self.odir else g_wb[:-1]).ravel()

    def _penalty_numpy(self, theta: np.ndarray, k: int) -> tuple[float, np.ndarray]:
        """Penalty value and its gradient with respect to the free parameters."""
        if self.structure == "full" and self.odir:
            wb = theta.reshape(k, k + 1)
            mask = np.ones((k, k + 1))
            mask[np.arange(k), np.arange(k)] = 0.0
            mu = self.reg if self.reg_mu is None else self.reg_mu
            scale = mask * (self.reg / (k * (k - 1)))
            scale[:, k] = mu / k
            return float((scale * wb**2).sum()), (2.0 * scale * wb).ravel()
        return self.reg * float(theta @ theta), 2.0 * self.reg * theta

    # ------------------------------------------------------------------ estimator API
    def fit(self, logits: Any, labels: Any) -> "DirichletCalibration":
        """Fit ``W`` and ``b`` by minimizing the penalized mean NLL with L-BFGS-B (float64).

        Args:
            logits: (N, K) float raw scores or log-probabilities of a held-out calibration split.
            labels: (N,) int64 class indices in [0, K).

        Returns:
            self, with ``W_``, ``b_``, ``n_classes_``, ``converged_``, ``n_iter_`` set.

        Raises:
            ValueError: fewer than 2 samples, probabilities passed as logits (also rounded, float16 or in
                percent), NaN/inf, label count or range mismatch.
        """
        z = check_logits(logits, "logits")
        check_min_samples(z.shape[0], 2, "logits", "fitting Dirichlet calibration")
        y = check_labels(labels, "labels", n_classes=z.shape[1], n=z.shape[0]).cpu()
        k = int(z.shape[1])
        logp = self._log_probs(z.detach().double().cpu())
        xa = np.concatenate([logp.numpy(), np.ones((logp.shape[0], 1))], 1)  # (N, K + 1)
        onehot = np.eye(k)[y.numpy()]
        n = xa.shape[0]

        def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
            wb = self._wb_numpy(theta, k)
            s = xa @ wb.T
            s -= s.max(1, keepdims=True)
            lse = np.log(np.exp(s).sum(1))
            loss = float(np.mean(lse - (s * onehot).sum(1)))
            g_wb = (np.exp(s - lse[:, None]) - onehot).T @ xa / n  # d loss / d [W | b], (K, K + 1)
            pen, g_pen = self._penalty_numpy(theta, k)
            return loss + pen, self._grad_theta(g_wb, k) + g_pen

        res = minimize(objective, self._init(k), jac=True, method="L-BFGS-B",
                       options={"maxiter": self.max_iter, "gtol": self.tol, "ftol": 1e-13})
        w, b = self._unpack(torch.from_numpy(res.x), k)
        self.W_ = w.detach().clone()
        self.b_ = b.detach().clone()
        self.n_classes_ = k
        self.converged_ = bool(res.success)
        self.n_iter_ = int(res.nit)
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "W_"):
            raise RuntimeError("DirichletCalibration is not fitted; call .fit(logits, labels) first")

    def calibrate_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Differentiable ``W log_softmax(logits) + b`` without input validation (used by :class:`CalibratedModel`).

        Args:
            logits: (N, K) float tensor of raw scores (any device; gradients flow through).

        Returns:
            (N, K) calibrated logits on the device of ``logits``, in its dtype (float32 for half-precision
            logits: the map is computed outside any autocast region, in float32 at least).
        """
        self._check_fitted()
        dtype = logits.dtype if logits.dtype in (torch.float32, torch.float64) else torch.float32
        key = (logits.device, dtype, self.W_.data_ptr(), self.b_.data_ptr())
        cache = getattr(self, "_device_params", None)
        if cache is None or cache[0] != key:  # copy W, b to the device once, not in every forward pass
            cache = self._device_params = (key, self.W_.to(device=logits.device, dtype=dtype),
                                           self.b_.to(device=logits.device, dtype=dtype))
        _, w, b = cache
        with torch.autocast(device_type=logits.device.type, enabled=False):
            return self._log_probs(logits.to(dtype)) @ w.T + b

    def transform(self, logits: Any) -> torch.Tensor:
        """Calibrated logits ``W log_softmax(logits) + b``, (N, K), same device and dtype as the input.

        Args:
            logits: (N, K) raw scores or log-probabilities (not probabilities).
        """
        self._check_fitted()
        z = check_logits(logits, "logits")
        if z.shape[1] != self.n_classes_:
            raise ValueError(f"`logits` has {z.shape[1]} classes but the calibrator was fit on {self.n_classes_}")
        return self.calibrate_logits(z)

    def predict_proba(self, logits: Any) -> torch.Tensor:
        """Calibrated probabilities ``softmax(W log_softmax(logits) + b)``, (N, K) rows summing to 1."""
        return torch.softmax(self.transform(logits), dim=1)

    def __repr__(self) -> str:
        state = f"n_classes_={self.n_classes_}" if hasattr(self, "W_") else "unfitted"
        return f"DirichletCalibration(reg={self.reg}, odir={self.odir}, structure={self.structure!r}, {state})"


class CalibratedModel(torch.nn.Module):
    """A classifier followed by a fitted calibrator (or a fixed temperature), returning calibrated logits.

    The forward pass is differentiable, so gradient explainers and perturbation explainers see the
    calibrated model; ``softmax`` of the output is the calibrated probability. Argmax can change under
    Dirichlet calibration, never under temperature scaling.

    Args:
        model: classifier returning logits (N, K).
        calibrator: a fitted :class:`DirichletCalibration`, a fitted temperature scaler (anything with a
            ``temperature_`` attribute, e.g. :class:`xcal_core.calibration.TemperatureScaling`), or any
            object with a torch ``transform(logits)``; mutually exclusive with ``temperature``.
        temperature: a fixed temperature T > 0 (output ``logits / T``), e.g. for temperature sweeps.

    Raises:
        ValueError: both or neither of ``calibrator`` / ``temperature``; ``temperature`` <= 0.
        RuntimeError: an unfitted calibrator.
    """

    def __init__(self, model: torch.nn.Module, calibrator: Any = None, *, temperature: float | None = None) -> None:
        super().__init__()
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
        if (calibrator is None) == (temperature is None):
            raise ValueError("pass exactly one of `calibrator` and `temperature`")
        self.model = model
        self.calibrator = calibrator
        self.training = model.training  # mirror the wrapped model's mode (explainers check it)
        if temperature is not None:
            self.temperature = float(check_positive(temperature, "temperature"))
        elif isinstance(calibrator, DirichletCalibration):
            calibrator._check_fitted()
            self.temperature = None
        elif getattr(calibrator, "temperature_", None) is not None:
            self.temperature = float(check_positive(calibrator.temperature_, "calibrator.temperature_"))
        elif hasattr(calibrator, "transform"):
            if hasattr(calibrator, "fit") and not any(a.endswith("_") and not a.startswith("_") for a in vars(calibrator)):
                raise RuntimeError(f"{type(calibrator).__name__} is not fitted; call .fit(logits, labels) first")
            self.temperature = None
        else:
            raise TypeError(f"`calibrator` must be a fitted calibrator with a `transform`, got {type(calibrator).__name__}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.model(x)
        if self.temperature is not None:
            return z / self.temperature
        if isinstance(self.calibrator, DirichletCalibration):
            return self.calibrator.calibrate_logits(z)
        return self.calibrator.transform(z)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}" if self.temperature is not None else f"calibrator={self.calibrator!r}"
