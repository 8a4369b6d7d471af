"""Quadratic programs on the probability simplex: ``min_w w^T M w  s.t.  w >= 0, sum(w) = 1``.

Two solvers that agree (tested): :func:`solve_simplex_qp` with cvxpy (what the paper used), made robust
against the released code's failure modes (float64, symmetrized, trace-scaled, PSD factor instead of a
``quad_form`` PSD check, status checked, DPP so a batch re-uses one compiled problem), and
:func:`solve_simplex_qp_exact`, an exact batched active-set enumeration in torch for many small problems
at once (k <= 12 methods: all 2^k - 1 supports, each solved in closed form).
"""

from __future__ import annotations

import itertools
import warnings
from typing import Any

import numpy as np
import torch

from .._validation import check_choice, check_tensor

__all__ = ["solve_simplex_qp", "solve_simplex_qp_exact", "simplex_objective", "project_simplex"]


_MAX_ENUM = 12


def _check_gram(M: Any, name: str = "M") -> tuple[torch.Tensor, bool]:
    t = check_tensor(M, name, ndim=(2, 3), dtype=None)
    if not t.is_floating_point():
        t = t.double()
    single = t.ndim == 2
    if single:
        t = t.unsqueeze(0)
    if t.shape[-1] != t.shape[-2]:
        raise ValueError(f"`{name}` must be square (k, k) or a batch (B, k, k), got shape {tuple(t.shape)}")
    if t.shape[-1] < 1:
        raise ValueError(f"`{name}` must have k >= 1, got shape {tuple(t.shape)}")
    t = t.double()
    t = 0.5 * (t + t.transpose(-1, -2))
    return t, single


def _check_allowed(allowed: Any, B: int, k: int, device: torch.device) -> torch.Tensor | None:
    """Bool (B, k) mask of methods that may get weight; a row with none allowed allows all (with a warning)."""
    if allowed is None:
        return None
    a = torch.as_tensor(allowed, device=device).bool()
    if a.ndim == 1:
        a = a.expand(B, k)
    if tuple(a.shape) != (B, k):
        raise ValueError(f"`allowed` must have shape ({B}, {k}) or ({k},), got {tuple(a.shape)}")
    empty = ~a.any(1)
    if bool(empty.any()):
        warnings.warn(f"{int(empty.sum())} problem(s) allow no method; all methods are allowed there", RuntimeWarning, stacklevel=3)
        a = a | empty[:, None]
    return a


def _scaled(M: torch.Tensor) -> torch.Tensor:
    """Divide each problem by its mean diagonal (argmin unchanged; all-zero problems stay zero)."""
    tr = torch.diagonal(M, dim1=-2, dim2=-1).abs().mean(-1)
    return M / torch.where(tr > 0, tr, torch.ones_like(tr))[:, None, None]


def simplex_objective(M: Any, w: Any) -> torch.Tensor:
    """``w^T M w`` per problem.

    Args:
        M: (k, k) or (B, k, k) matrices; w: (k,) or (B, k) weights.

    Returns:
        float64 tensor (B,) (or a 0-dim tensor for a single problem).
    """
    Mt, single = _check_gram(M)
    wt = check_tensor(w, "w", ndim=(1, 2), dtype=None).double().to(Mt.device)
    if wt.ndim == 1:
        wt = wt.unsqueeze(0)
    if wt.shape[-1] != Mt.shape[-1]:
        raise ValueError(f"`w` has {wt.shape[-1]} weights but `M` is {Mt.shape[-1]} x {Mt.shape[-1]}")
    out = torch.einsum("bi,bij,bj->b", wt, Mt, wt)
    return out[0] if single else out


def project_simplex(v: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of each row of ``v`` (B, k) onto the probability simplex (sort-based)."""
    k = v.shape[-1]
    u = torch.sort(v, dim=-1, descending=True).values
    css = u.cumsum(-1) - 1.0
    ar = torch.arange(1, k + 1, device=v.device, dtype=v.dtype)
    cond = u - css / ar > 0
    rho = cond.to(v.dtype).cumsum(-1).argmax(-1, keepdim=True)  # last True index
    theta = css.gather(-1, rho) / (rho + 1).to(v.dtype)
    return (v - theta).clamp_min(0.0)


def _pgd(M: torch.Tensor, iters: int = 5000) -> torch.Tensor:
    """Accelerated projected gradient (FISTA) for large k; converges to the optimum of the convex QP."""
    B, k, _ = M.shape
    L = torch.linalg.eigvalsh(M).amax(-1).clamp_min(1e-12) * 2.0
    w = torch.full((B, k), 1.0 / k, dtype=M.dtype, device=M.device)
    y, t = w.clone(), 1.0
    for _ in range(iters):
        grad = 2.0 * torch.einsum("bij,bj->bi", M, y)
        w_new = project_simplex(y - grad / L[:, None])
        t_new = 0.5 * (1.0 + (1.0 + 4.0 * t * t) ** 0.5)
        y = w_new + ((t - 1.0) / t_new) * (w_new - w)
        w, t = w_new, t_new
    return w


def solve_simplex_qp_exact(M: Any, *, ridge: float = 1e-10, allowed: Any = None) -> torch.Tensor:
    """Exact minimizers of many small simplex QPs at once (batched active-set enumeration).

    For every support S the equality-constrained minimizer is ``w_S = M_SS^-1 1 / (1^T M_SS^-1 1)``;
    the optimum is the feasible (``w_S >= 0``) candidate of lowest objective. A ridge of
    ``ridge * mean(diag M)`` makes rank-deficient problems (two identical methods) well posed; it moves
    the objective by at most that amount and picks the minimum-norm optimum among ties. Problems with
    k > 12 use accelerated projected gradient instead.

    Args:
        M: symmetric PSD (up to round-off) matrices (k, k) or (B, k, k), any float dtype; solved in float64.
        ridge: relative ridge >= 0.
        allowed: optional bool (B, k) or (k,): methods outside it get weight exactly 0 (e.g. all-zero maps,
            which are trivially "robust"). A problem with no allowed method allows all of them (warning).

    Returns:
        float64 tensor (k,) or (B, k) on M's device: weights >= 0 summing to 1.
    """
    Mt, single = _check_gram(M)
    if ridge < 0:
        raise ValueError(f"`ridge` must be >= 0, got {ridge}")
    B, k, _ = Mt.shape
    allow = _check_allowed(allowed, B, k, Mt.device)
    Ms = _scaled(Mt) + ridge * torch.eye(k, dtype=torch.float64, device=Mt.device)
    if allow is not None and k > _MAX_ENUM:
        # disallowed methods: a penalty far above any allowed objective (scaled problems have mean diag 1)
        Ms = Ms + torch.diag_embed((~allow).to(Ms.dtype) * 1e6 * k)
    if k == 1:
        w = torch.ones(B, 1, dtype=torch.float64, device=Mt.device)
    elif k > _MAX_ENUM:
        w = _pgd(Ms)
    else:
        best_val = torch.full((B,), float("inf"), dtype=torch.float64, device=Mt.device)
        w = torch.full((B, k), 1.0 / k, dtype=torch.float64, device=Mt.device)
        for s in range(1, k + 1):
            supports = torch.tensor(list(itertools.combinations(range(k), s)), device=Mt.device)  # (n_s, s)
            sub = Ms[:, supports[:, :, None], supports[:, None, :]]  # (B, n_s, s, s)
            ones = torch.ones(*sub.shape[:-1], 1, dtype=torch.float64, device=Mt.device)
            sol, info = torch.linalg.solve_ex(sub, ones)
            sol = sol[..., 0]
            den = sol.sum(-1, keepdim=True)
            ok = (info == 0) & (den[..., 0] > 0)
            cand = sol / torch.where(den > 0, den, torch.ones_like(den))
            ok = ok & (cand >= -1e-12).all(-1) & torch.isfinite(cand).all(-1)
            if allow is not None:
                ok = ok & allow[:, supports].all(-1)
            cand = cand.clamp_min(0.0)
            cand = cand / cand.sum(-1, keepdim=True).clamp_min(1e-300)
            val = torch.einsum("bns,bnst,bnt->bn", cand, sub, cand)
            val = torch.where(ok, val, torch.full_like(val, float("inf")))
            vbest, nbest = val.min(-1)
            better = vbest < best_val - 1e-15  # no `if better.any()`: that would read back from the device per size
            full = torch.zeros(B, k, dtype=torch.float64, device=Mt.device)
            full.scatter_(1, supports[nbest], cand[torch.arange(B, device=Mt.device), nbest])
            w = torch.where(better[:, None], full, w)
            best_val = torch.where(better, vbest, best_val)
    if allow is not None:
        w = torch.where(allow, w, torch.zeros_like(w))
        w = w / w.sum(-1, keepdim=True)
    return w[0] if single else w


def solve_simplex_qp(M: Any, *, solver: str | None = None, fallback: bool = True, allowed: Any = None, **solver_kwargs: Any) -> torch.Tensor:
    """Simplex QP with cvxpy (the paper's choice), robust to round-off and checked.

    Each matrix is symmetrized, scaled by its mean diagonal, and written as ``||L w||^2`` with
    ``L = diag(sqrt(max(lambda, 0))) V^T`` from its eigendecomposition, so a matrix that is PSD only up to
    round-off never trips cvxpy's DCP check (the released code's failure). The problem is DPP: a batch
    compiles once and re-solves with new data. Tiny negative weights from the solver's tolerance are
    clipped and the weights renormalized. A solver error or a status other than optimal falls back to
    :func:`solve_simplex_qp_exact` with a ``RuntimeWarning`` (never silent uniform weights).

    Args:
        M: (k, k) or (B, k, k) matrices.
        solver: cvxpy solver name (None = cvxpy's default, OSQP for this QP); e.g. "CLARABEL".
        fallback: use the exact solver on failure (else raise ``RuntimeError``).
        allowed: optional bool (B, k) or (k,) mask; other methods are constrained to weight 0.
        **solver_kwargs: passed to ``Problem.solve``.

    Returns:
        float64 tensor (k,) or (B, k) on M's device.
    """
    import cvxpy as cp

    Mt, single = _check_gram(M)
    if solver is not None:
        check_choice(solver, "solver", cp.installed_solvers())
    B, k, _ = Mt.shape
    allow = _check_allowed(allowed, B, k, Mt.device)
    upper = np.ones((B, k)) if allow is None else allow.cpu().numpy().astype(float)
    Ms = _scaled(Mt).cpu().numpy()
    w_var = cp.Variable(k, nonneg=True)
    L = cp.Parameter((k, k))
    u = cp.Parameter(k, nonneg=True)
    prob = cp.Problem(cp.Minimize(cp.sum_squares(L @ w_var)), [cp.sum(w_var) == 1, w_var <= u])
    out = np.empty((B, k))
    failed: list[int] = []
    for b in range(B):
        lam, V = np.linalg.eigh(Ms[b])
        L.value = np.sqrt(np.clip(lam, 0.0, None))[:, None] * V.T
        u.value = upper[b]
        try:
            prob.solve(solver=solver, **solver_kwargs)
            status = prob.status
        except Exception as exc:  # cvxpy.error.SolverError and friends
            status = f"error: {exc}"
        if status != cp.OPTIMAL or w_var.value is None or not np.all(np.isfinite(w_var.value)):
            failed.append(b)
            out[b] = np.nan
            continue
        w = np.clip(w_var.value, 0.0, None) * (upper[b] > 0)
        out[b] = w / w.sum() if w.sum() > 0 else np.full(k, 1.0 / k)
    res = torch.as_tensor(out, dtype=torch.float64, device=Mt.device)
    if failed:
        msg = f"cvxpy did not solve {len(failed)} of {B} simplex QPs (last status: {status!r})"
        if not fallback:
            raise RuntimeError(msg)
        warnings.warn(msg + "; using the exact batched solver for them", RuntimeWarning, stacklevel=2)
        idx = torch.as_tensor(failed, device=Mt.device)
        res[idx] = solve_simplex_qp_exact(Mt[idx], allowed=None if allow is None else allow[idx])
    return res[0] if single else res
