"""Stochastic layers and frozen model realisations for uncertainty of explanations.

Four sources of model uncertainty, all exposed through one object, :class:`Realisations`:

* **MC-Dropout** (Gal & Ghahramani, 2016): :class:`MCDropout` keeps a Bernoulli *unit* mask at test time;
* **MC-DropConnect** (Wan et al., 2013; Mobiny et al., 2021): :class:`DropConnectLinear` /
  :class:`DropConnectConv2d` drop *weights*;
* **Flipout** (Wen et al., ICLR 2018): :class:`FlipoutLinear` / :class:`FlipoutConv2d` hold a mean-field
  Gaussian weight posterior trained with the ELBO (:func:`kl_divergence` is its KL term) and the flipout
  estimator (pseudo-independent weight perturbations per example from shared noise and random sign flips);
* **deep ensembles** (Lakshminarayanan et al., 2017): M independently trained members.

**Frozen realisations.** A realisation t is one fixed sub-network f^(t): its dropout mask or weight
sample is derived deterministically from the integer seed ``seeds[t]`` and the layer's position, and is
*reused for every forward and backward pass* while it is frozen (the many passes of an Integrated
Gradients path or of LIME's samples all see the same network). ``Realisations.frozen(t)`` gives one
realisation as an ordinary module; ``Realisations.batched(idx)`` gives a module that evaluates several
realisations in one pass: its input batch is laid out in *realisation blocks*, row ``i`` belonging to
realisation ``idx[(i // rows) % G]`` (``G = len(idx)``; ``rows`` rows per block, ``B // G`` by default,
so ``x.repeat(G, 1, ...)`` puts copy g through realisation g). Masks and weight samples are identical in
both paths, so the batched path reproduces the looped one up to floating-point reordering.

Noise is drawn on the CPU from generators seeded by ``(seed_t, layer index)`` and moved to the model's
device, so a realisation is the same sub-network on every device.

References:
    Gal & Ghahramani, "Dropout as a Bayesian approximation", ICML 2016.
    Wan et al., "Regularization of neural networks using DropConnect", ICML 2013.
    Wen et al., "Flipout: efficient pseudo-independent weight perturbations on mini-batches", ICLR 2018.
    Blundell et al., "Weight uncertainty in neural networks", ICML 2015 (scale-mixture prior, ELBO).
    Lakshminarayanan et al., "Simple and scalable predictive uncertainty estimation using deep ensembles", NeurIPS 2017.
    Mulye & Valdenegro-Toro, "Uncertainty quantification for gradient-based explanations in neural networks", 2024.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from .._validation import check_fraction, check_int, check_positive, check_tensor, model_device
from .cache import CorruptCheckpointError, fetch_shipped, load_checkpoint, save_checkpoint

__all__ = [
    "UE_METHODS",
    "FlipoutPrior",
    "MCDropout",
    "DropConnectLinear",
    "DropConnectConv2d",
    "FlipoutLinear",
    "FlipoutConv2d",
    "STOCHASTIC_LAYERS",
    "stochastic_layers",
    "to_mc_dropout",
    "to_dropconnect",
    "to_flipout",
    "kl_divergence",
    "train_stochastic",
    "UQFamily",
    "train_uq_family",
    "Realisations",
    "sample_realisations",
    "stack_members",
]

UE_METHODS = ("mc_dropout", "dropconnect", "flipout", "ensemble")


# --------------------------------------------------------------------------------------------------
# noise derivation and realisation-block layout
# --------------------------------------------------------------------------------------------------
def _layer_generator(seed: int, layer_index: int, salt: int) -> torch.Generator:
    """A CPU generator seeded from (realisation seed, layer index, purpose)."""
    ss = np.random.SeedSequence(entropy=[int(seed) & 0xFFFFFFFFFFFFFFFF, layer_index, salt])
    return torch.Generator().manual_seed(int(ss.generate_state(1, dtype=np.uint64)[0]) >> 1)


def _to_blocks(x: torch.Tensor, groups: int, rows: int | None) -> tuple[torch.Tensor, int, int]:
    """(B, ...) in realisation-block layout -> (G, k*rows, ...) grouped by realisation."""
    b = x.shape[0]
    if rows is None:
        if b % groups:
            raise RuntimeError(
                f"a batched realisation module for {groups} realisations got a batch of {b} rows, not a multiple "
                f"of {groups}; feed x.repeat({groups}, ...) (realisation-major blocks)"
            )
        rows = b // groups
    if b % (groups * rows):
        raise RuntimeError(
            f"a batched realisation module expects batches made of blocks of {groups} x {rows} rows, got {b} rows; "
            "an explainer that re-chunks its inputs cannot use the vectorized path (use vectorize=False)"
        )
    k = b // (groups * rows)
    rest = x.shape[1:]
    xg = x.reshape(k, groups, rows, *rest).transpose(0, 1).reshape(groups, k * rows, *rest)
    return xg, k, rows


def _from_blocks(y: torch.Tensor, k: int, rows: int) -> torch.Tensor:
    """Inverse of :func:`_to_blocks`: (G, k*rows, ...) -> (B, ...)."""
    g = y.shape[0]
    rest = y.shape[2:]
    return y.reshape(g, k, rows, *rest).transpose(0, 1).reshape(g * k * rows, *rest)


class _StochasticMixin:
    """Shared frozen-state handling: ``_frozen = (seeds (G,), rows)`` or None."""

    _frozen: tuple[list[int], int | None] | None
    _uq_index: int
    _noise_cache: dict

    def _init_stochastic(self) -> None:
        self._frozen = None
        self._expand = None
        self._uq_index = 0
        self._noise_cache = {}

    def _freeze(self, seeds: Sequence[int], rows: int | None, index: int, expand: dict | None = None) -> None:
        self._frozen = ([int(s) for s in seeds], rows)
        self._expand = expand
        self._uq_index = index
        self._noise_cache = {}

    def _unfreeze(self) -> None:
        self._frozen = None
        self._expand = None
        self._noise_cache = {}

    def _blocks(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """The input grouped by realisation, (G, k * rows, ...), with k and rows for :func:`_from_blocks`.

        In expanding mode (``Realisations.batched(expand=True)``) the first stochastic layer a forward
        pass reaches receives the n shared rows and fans them out to all G realisations (a view), so
        every layer before it runs once for all realisations.
        """
        seeds, rows = self._frozen
        e = self._expand
        if e is not None and e["pending"]:
            e["pending"] = False
            return x.unsqueeze(0).expand(len(seeds), *x.shape), 1, x.shape[0]
        return _to_blocks(x, len(seeds), rows)


# --------------------------------------------------------------------------------------------------
# MC-Dropout
# --------------------------------------------------------------------------------------------------
class MCDropout(_StochasticMixin, nn.Module):
    """Dropout that can stay active at test time with a frozen unit mask per realisation.

    In ``train()`` mode it behaves like ``nn.Dropout`` (a fresh mask per example and pass). In ``eval()``
    mode it is the identity unless frozen, in which case every row of realisation t is multiplied by the
    same mask ``m_t / (1 - p)``, so realisation t is one fixed sub-network.

    Args:
        p: drop probability in [0, 1). ``p = 0`` gives identical realisations.
        mode: ``"element"`` (one Bernoulli per unit, i.e. per element of the feature shape, like
            ``nn.Dropout``) or ``"channel"`` (one per channel of a (N, C, ...) feature map, like ``nn.Dropout2d``).
    """

    def __init__(self, p: float = 0.5, mode: str = "element"):
        nn.Module.__init__(self)
        self._init_stochastic()
        self.p = check_fraction(p, "p", open_high=True)
        if mode not in ("element", "channel"):
            raise ValueError(f"unknown `mode` {mode!r}; expected one of ['element', 'channel']")
        self.mode = mode

    def extra_repr(self) -> str:
        return f"p={self.p}, mode={self.mode!r}"

    def _mask_shape(self, feat: tuple[int, ...]) -> tuple[int, ...]:
        if self.mode == "channel":
            return (feat[0],) + (1,) * (len(feat) - 1)
        return tuple(feat)

    def _masks(self, feat: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        key = (feat, device, dtype)
        if key not in self._noise_cache:
            seeds, _ = self._frozen
            shape = self._mask_shape(feat)
            ms = []
            for s in seeds:
                g = _layer_generator(s, self._uq_index, 1)
                ms.append((torch.rand(shape, generator=g) >= self.p).to(dtype) / (1.0 - self.p))
            self._noise_cache[key] = torch.stack(ms).to(device)
        return self._noise_cache[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._frozen is not None:
            xg, k, rows = self._blocks(x)
            m = self._masks(tuple(x.shape[1:]), x.device, x.dtype)
            return _from_blocks(xg * m.unsqueeze(1), k, rows)
        if self.training and self.p > 0:
            if self.mode == "channel" and x.ndim > 2:
                keep = torch.rand(x.shape[:2] + (1,) * (x.ndim - 2), device=x.device) >= self.p
                return x * keep.to(x.dtype) / (1.0 - self.p)
            return F.dropout(x, self.p, training=True)
        return x


# --------------------------------------------------------------------------------------------------
# DropConnect
# --------------------------------------------------------------------------------------------------
class _DropConnectMixin(_StochasticMixin):
    p: float
    weight: nn.Parameter

    def _weight_masks(self) -> torch.Tensor:
        key = ("w", self.weight.device, self.weight.dtype)
        if key not in self._noise_cache:
            seeds, _ = self._frozen
            ms = []
            for s in seeds:
                g = _layer_generator(s, self._uq_index, 2)
                ms.append(torch.rand(self.weight.shape, generator=g) >= self.p)
            self._noise_cache[key] = (torch.stack(ms).to(self.weight.dtype) / (1.0 - self.p)).to(self.weight.device)
        return self._noise_cache[key]

    def _train_weight(self) -> torch.Tensor:
        if self.p == 0:
            return self.weight
        keep = (torch.rand(self.weight.shape, device=self.weight.device) >= self.p).to(self.weight.dtype)
        return self.weight * keep / (1.0 - self.p)


class DropConnectLinear(_DropConnectMixin, nn.Linear):
    """``nn.Linear`` with Bernoulli weight masks (DropConnect), kept active in frozen realisations.

    Train mode draws one weight mask per forward pass (shared by the mini-batch); eval mode uses the
    expected weights (the masks are scaled by ``1 / (1 - p)``, so the expectation is ``weight``); a frozen
    realisation t uses the mask derived from its seed. The bias is not dropped.

    Args:
        in_features, out_features, bias: as ``nn.Linear``.
        p: weight drop probability in [0, 1).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, p: float = 0.5, **kw: Any):
        nn.Linear.__init__(self, in_features, out_features, bias=bias, **kw)
        self._init_stochastic()
        self.p = check_fraction(p, "p", open_high=True)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", p={self.p}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._frozen is not None:
            xg, k, rows = self._blocks(x)
            w = self.weight.unsqueeze(0) * self._weight_masks()  # (G, out, in)
            y = torch.einsum("gbi,goi->gbo", xg.reshape(xg.shape[0], -1, xg.shape[-1]), w)
            y = y.reshape(*xg.shape[:-1], self.out_features)
            if self.bias is not None:
                y = y + self.bias
            return _from_blocks(y, k, rows)
        w = self._train_weight() if self.training else self.weight
        return F.linear(x, w, self.bias)


def _grouped_conv2d(conv: nn.Conv2d, xg: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """Apply G different weight sets to G input groups in one conv call.

    xg (G, M, C, H, W), w (G, O, C/groups, kh, kw), b (G, O) or (O,) or None -> (G, M, O, H', W').
    """
    g, m, c, h, wd = xg.shape
    o = w.shape[1]
    xin = xg.permute(1, 0, 2, 3, 4).reshape(m, g * c, h, wd)
    if conv.padding_mode != "zeros":
        pad = conv._reversed_padding_repeated_twice
        xin = F.pad(xin, pad, mode=conv.padding_mode)
        padding: Any = 0
    else:
        padding = conv.padding
    bias = None
    if b is not None:
        bias = (b if b.ndim == 2 else b.unsqueeze(0).expand(g, -1)).reshape(g * o)
    y = F.conv2d(xin, w.reshape(g * o, *w.shape[2:]), bias, conv.stride, padding, conv.dilation, conv.groups * g)
    return y.reshape(m, g, o, *y.shape[2:]).permute(1, 0, 2, 3, 4)


class DropConnectConv2d(_DropConnectMixin, nn.Conv2d):
    """``nn.Conv2d`` with Bernoulli weight masks (DropConnect); see :class:`DropConnectLinear`.

    Args:
        in_channels, out_channels, kernel_size, ...: as ``nn.Conv2d``.
        p: weight drop probability in [0, 1).
    """

    def __init__(self, *args: Any, p: float = 0.5, **kw: Any):
        nn.Conv2d.__init__(self, *args, **kw)
        self._init_stochastic()
        self.p = check_fraction(p, "p", open_high=True)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", p={self.p}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._frozen is not None:
            xg, k, rows = self._blocks(x)
            w = self.weight.unsqueeze(0) * self._weight_masks()
            return _from_blocks(_grouped_conv2d(self, xg, w, self.bias), k, rows)
        w = self._train_weight() if self.training else self.weight
        return self._conv_forward(x, w, self.bias)


# --------------------------------------------------------------------------------------------------
# Flipout
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FlipoutPrior:
    """Scale-mixture Gaussian prior ``pi N(0, sigma1^2) + (1 - pi) N(0, sigma2^2)`` on every weight.

    ``pi = 1`` is a single Gaussian N(0, sigma1^2), for which the KL term is computed in closed form;
    otherwise it is a one-sample Monte Carlo estimate ``log q(w) - log p(w)`` (Blundell et al., 2015).
    Defaults are keras-uncertainty's (sigma1 = 1.5, sigma2 = 0.1, pi = 0.5).
    """

    sigma1: float = 1.5
    sigma2: float = 0.1
    pi: float = 0.5

    def __post_init__(self) -> None:
        check_positive(self.sigma1, "sigma1")
        check_positive(self.sigma2, "sigma2")
        if not (0.0 < float(self.pi) <= 1.0):
            raise ValueError(f"`pi` must be in (0, 1], got {self.pi}")

    def log_prob(self, w: torch.Tensor) -> torch.Tensor:
        """Sum of the prior log-density over the elements of ``w``."""
        def lg(s: float) -> torch.Tensor:
            return -0.5 * (w / s) ** 2 - math.log(s) - 0.5 * math.log(2 * math.pi)

        if self.pi == 1.0:
            return lg(self.sigma1).sum()
        return torch.logaddexp(math.log(self.pi) + lg(self.sigma1), math.log1p(-self.pi) + lg(self.sigma2)).sum()


class _FlipoutMixin(_StochasticMixin):
    weight_mu: nn.Parameter
    weight_rho: nn.Parameter
    bias_mu: nn.Parameter | None
    bias_rho: nn.Parameter | None
    prior: FlipoutPrior

    def _init_flipout(self, weight_shape: tuple[int, ...], out: int, bias: bool, prior: FlipoutPrior | None, rho_init: float) -> None:
        self._init_stochastic()
        self.prior = prior if prior is not None else FlipoutPrior()
        if not isinstance(self.prior, FlipoutPrior):
            raise TypeError(f"`prior` must be a FlipoutPrior, got {type(self.prior).__name__}")
        self.rho_init = float(rho_init)
        self.weight_mu = nn.Parameter(torch.empty(weight_shape))
        self.weight_rho = nn.Parameter(torch.full(weight_shape, self.rho_init))
        nn.init.kaiming_uniform_(self.weight_mu, a=math.sqrt(5))
        if bias:
            fan_in = int(np.prod(weight_shape[1:]))
            bound = 1 / math.sqrt(fan_in)
            self.bias_mu = nn.Parameter(torch.empty(out).uniform_(-bound, bound))
            self.bias_rho = nn.Parameter(torch.full((out,), self.rho_init))
        else:
            self.register_parameter("bias_mu", None)
            self.register_parameter("bias_rho", None)

    @property
    def weight_sigma(self) -> torch.Tensor:
        return F.softplus(self.weight_rho)

    @property
    def bias_sigma(self) -> torch.Tensor | None:
        return None if self.bias_rho is None else F.softplus(self.bias_rho)

    def kl(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """KL(q || prior) of this layer's weights and biases (closed form for a single Gaussian prior)."""
        total = self.weight_mu.new_zeros(())
        for mu, sig in ((self.weight_mu, self.weight_sigma), (self.bias_mu, self.bias_sigma)):
            if mu is None:
                continue
            if self.prior.pi == 1.0:
                s = self.prior.sigma1
                total = total + (math.log(s) - torch.log(sig) + (sig**2 + mu**2) / (2 * s**2) - 0.5).sum()
            else:
                eps = torch.randn(mu.shape, generator=generator).to(mu.device) if generator is not None else torch.randn_like(mu)
                w = mu + sig * eps
                log_q = (-0.5 * eps**2 - torch.log(sig) - 0.5 * math.log(2 * math.pi)).sum()
                total = total + log_q - self.prior.log_prob(w)
        return total

    def _sampled(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Frozen weight samples (G, *weight) and biases (G, out) of the frozen realisations."""
        key = ("wb", self.weight_mu.device, self.weight_mu.dtype)
        if key not in self._noise_cache:
            seeds, _ = self._frozen
            ew, eb = [], []
            for s in seeds:
                g = _layer_generator(s, self._uq_index, 3)
                ew.append(torch.randn(self.weight_mu.shape, generator=g))
                if self.bias_mu is not None:
                    eb.append(torch.randn(self.bias_mu.shape, generator=g))
            dev, dt = self.weight_mu.device, self.weight_mu.dtype
            self._noise_cache[key] = (torch.stack(ew).to(dev, dt), torch.stack(eb).to(dev, dt) if eb else None)
        ew, eb = self._noise_cache[key]
        w = self.weight_mu.unsqueeze(0) + self.weight_sigma.unsqueeze(0) * ew
        b = None if self.bias_mu is None else self.bias_mu.unsqueeze(0) + self.bias_sigma.unsqueeze(0) * eb
        return w, b

    @staticmethod
    def _signs(shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        return torch.randint(0, 2, shape, device=like.device).to(like.dtype) * 2 - 1


class FlipoutLinear(_FlipoutMixin, nn.Module):
    """Mean-field Gaussian ``nn.Linear`` trained with the flipout estimator (Wen et al., 2018).

    q(W) = N(weight_mu, softplus(weight_rho)^2) elementwise (same for the bias). Train mode: one shared
    perturbation ``dW = sigma * eps`` per pass, decorrelated across examples by random signs,
    ``y = x mu^T + ((x * s_in) dW^T) * s_out``. Eval mode: the mean weights. Frozen realisation t: the
    weight sample ``mu + sigma * eps_t`` for every row of that realisation.

    Args:
        in_features, out_features, bias: as ``nn.Linear``.
        prior: :class:`FlipoutPrior` (defaults to the scale mixture 0.5 N(0, 1.5^2) + 0.5 N(0, 0.1^2)).
        rho_init: initial ``rho`` (sigma = softplus(rho); -5 gives sigma ~ 6.7e-3).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, prior: FlipoutPrior | None = None, rho_init: float = -5.0):
        nn.Module.__init__(self)
        self.in_features, self.out_features = int(in_features), int(out_features)
        self._init_flipout((self.out_features, self.in_features), self.out_features, bias, prior, rho_init)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias_mu is not None}, prior={self.prior}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._frozen is not None:
            xg, k, rows = self._blocks(x)
            w, b = self._sampled()
            flat = xg.reshape(xg.shape[0], -1, xg.shape[-1])
            y = torch.einsum("gbi,goi->gbo", flat, w)
            if b is not None:
                y = y + b.unsqueeze(1)
            return _from_blocks(y.reshape(*xg.shape[:-1], self.out_features), k, rows)
        y = F.linear(x, self.weight_mu, self.bias_mu)
        if not self.training:
            return y
        dw = self.weight_sigma * torch.randn_like(self.weight_mu)
        lead = x.shape[:-1]
        s_in = self._signs(lead + (self.in_features,), x)
        s_out = self._signs(lead + (self.out_features,), x)
        pert = F.linear(x * s_in, dw)
        if self.bias_mu is not None:
            pert = pert + self.bias_sigma * torch.randn_like(self.bias_mu)
        return y + pert * s_out


class FlipoutConv2d(_FlipoutMixin, nn.Conv2d):
    """Mean-field Gaussian ``nn.Conv2d`` with the flipout estimator; see :class:`FlipoutLinear`.

    Sign flips are per example and channel (input and output channels), as in Wen et al. (2018).
    ``weight`` / ``bias`` of the underlying ``nn.Conv2d`` are removed; the posterior means are
    ``weight_mu`` / ``bias_mu``.
    """

    def __init__(self, *args: Any, prior: FlipoutPrior | None = None, rho_init: float = -5.0, **kw: Any):
        nn.Conv2d.__init__(self, *args, **kw)
        has_bias = self.bias is not None
        shape = tuple(self.weight.shape)
        del self.weight
        del self.bias
        self.register_parameter("bias", None)
        self._init_flipout(shape, self.out_channels, has_bias, prior, rho_init)

    @property
    def weight(self) -> torch.Tensor:  # type: ignore[override]
        """The posterior mean (what the deterministic layer would use)."""
        return self.weight_mu

    def extra_repr(self) -> str:
        return super().extra_repr() + f", prior={self.prior}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._frozen is not None:
            xg, k, rows = self._blocks(x)
            w, b = self._sampled()
            return _from_blocks(_grouped_conv2d(self, xg, w, b), k, rows)
        y = self._conv_forward(x, self.weight_mu, self.bias_mu)
        if not self.training:
            return y
        dw = self.weight_sigma * torch.randn_like(self.weight_mu)
        n = x.shape[0]
        s_in = self._signs((n, self.in_channels, 1, 1), x)
        s_out = self._signs((n, self.out_channels, 1, 1), x)
        pert = self._conv_forward(x * s_in, dw, None)
        if self.bias_mu is not None:
            pert = pert + (self.bias_sigma * torch.randn_like(self.bias_mu)).view(1, -1, 1, 1)
        return y + pert * s_out


STOCHASTIC_LAYERS = (MCDropout, DropConnectLinear, DropConnectConv2d, FlipoutLinear, FlipoutConv2d)
_KIND_LAYERS = {
    "mc_dropout": (MCDropout,),
    "dropconnect": (DropConnectLinear, DropConnectConv2d),
    "flipout": (FlipoutLinear, FlipoutConv2d),
}


def stochastic_layers(model: nn.Module, kind: str | None = None) -> list[nn.Module]:
    """The stochastic layers of ``model`` in module order (all kinds, or those of one UE ``kind``).

    Args:
        model: any module.
        kind: None, ``"mc_dropout"``, ``"dropconnect"`` or ``"flipout"``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
    if kind is not None and kind not in _KIND_LAYERS:
        raise ValueError(f"unknown `kind` {kind!r}; expected one of {list(_KIND_LAYERS)}")
    types = STOCHASTIC_LAYERS if kind is None else _KIND_LAYERS[kind]
    return [m for m in model.modules() if isinstance(m, types)]


# --------------------------------------------------------------------------------------------------
# conversion helpers
# --------------------------------------------------------------------------------------------------
def _replace_modules(model: nn.Module, make) -> int:
    """Replace child modules in place where ``make(child)`` returns a module; returns the count."""
    n = 0
    for name, child in list(model.named_children()):
        new = make(child)
        if new is not None:
            setattr(model, name, new)
            n += 1
        else:
            n += _replace_modules(child, make)
    return n


def _check_model(model: Any) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
    return model


def to_mc_dropout(model: nn.Module, p: float | None = None) -> nn.Module:
    """A copy of ``model`` whose ``nn.Dropout`` / ``nn.Dropout1d/2d`` layers are :class:`MCDropout`.

    Args:
        model: a trained model containing dropout layers (e.g. ``build_model(..., dropout=0.3)``).
        p: drop probability for every converted layer; None keeps each layer's own ``p``.

    Returns:
        The converted deep copy in eval mode (weights shared by value, not by reference).

    Raises:
        ValueError: the model has no dropout layer (MC-Dropout needs one), or ``p`` outside [0, 1).
    """
    _check_model(model)
    if p is not None:
        check_fraction(p, "p", open_high=True)
    out = copy.deepcopy(model)

    def make(m: nn.Module):
        if isinstance(m, (nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)):
            return MCDropout(m.p if p is None else p, mode="channel")
        if isinstance(m, nn.Dropout):
            return MCDropout(m.p if p is None else p, mode="element")
        return None

    n = _replace_modules(out, make)
    if n == 0 and not stochastic_layers(out, "mc_dropout"):
        raise ValueError(
            "`model` has no dropout layers, so MC-Dropout has nothing to sample; build it with dropout > 0 "
            "(e.g. build_model(..., dropout=0.3)) and train it, or use another UE method"
        )
    return out.eval()


def to_dropconnect(model: nn.Module, p: float = 0.5, *, layers: Sequence[str] = ("linear", "conv")) -> nn.Module:
    """A copy of ``model`` whose Linear / Conv2d layers are DropConnect layers with the same weights.

    ``nn.Dropout`` layers are kept as they are (they are inactive in eval mode). Train the result (e.g. with
    :func:`train_stochastic`) to obtain an MC-DropConnect model; converting a trained deterministic model
    without fine-tuning gives a valid but untrained-for-DropConnect twin.

    Args:
        model: any module with ``nn.Linear`` / ``nn.Conv2d`` layers.
        p: weight drop probability in [0, 1).
        layers: which layer types to convert, a subset of ``("linear", "conv")``.

    Returns:
        The converted deep copy (eval mode).
    """
    _check_model(model)
    check_fraction(p, "p", open_high=True)
    bad = [x for x in layers if x not in ("linear", "conv")]
    if bad or not layers:
        raise ValueError(f"`layers` must be a non-empty subset of ['linear', 'conv'], got {list(layers)}")
    out = copy.deepcopy(model)

    def make(m: nn.Module):
        if isinstance(m, STOCHASTIC_LAYERS):
            return None
        if "linear" in layers and type(m) is nn.Linear:
            new = DropConnectLinear(m.in_features, m.out_features, bias=m.bias is not None, p=p)
        elif "conv" in layers and type(m) is nn.Conv2d:
            new = DropConnectConv2d(m.in_channels, m.out_channels, m.kernel_size, stride=m.stride, padding=m.padding,
                                    dilation=m.dilation, groups=m.groups, bias=m.bias is not None, padding_mode=m.padding_mode, p=p)
        else:
            return None
        new.load_state_dict(m.state_dict())
        return new.to(m.weight.device)

    if _replace_modules(out, make) == 0:
        raise ValueError(f"`model` has no {' or '.join(layers)} layer to convert to DropConnect")
    return out.eval()


def to_flipout(model: nn.Module, *, prior: FlipoutPrior | None = None, rho_init: float = -5.0,
               layers: Sequence[str] = ("linear", "conv"), init_from_weights: bool = True) -> nn.Module:
    """A copy of ``model`` whose Linear / Conv2d layers are Flipout layers.

    Args:
        model: any module with ``nn.Linear`` / ``nn.Conv2d`` layers.
        prior: :class:`FlipoutPrior` shared by the converted layers.
        rho_init: initial ``rho`` of every weight (sigma = softplus(rho)).
        layers: subset of ``("linear", "conv")``.
        init_from_weights: posterior means start at the model's weights (else a fresh Kaiming init).

    Returns:
        The converted deep copy (eval mode); train it with :func:`train_stochastic` (ELBO).
    """
    _check_model(model)
    bad = [x for x in layers if x not in ("linear", "conv")]
    if bad or not layers:
        raise ValueError(f"`layers` must be a non-empty subset of ['linear', 'conv'], got {list(layers)}")
    out = copy.deepcopy(model)

    def make(m: nn.Module):
        if isinstance(m, STOCHASTIC_LAYERS):
            return None
        if "linear" in layers and type(m) is nn.Linear:
            new = FlipoutLinear(m.in_features, m.out_features, bias=m.bias is not None, prior=prior, rho_init=rho_init)
        elif "conv" in layers and type(m) is nn.Conv2d:
            new = FlipoutConv2d(m.in_channels, m.out_channels, m.kernel_size, stride=m.stride, padding=m.padding,
                                dilation=m.dilation, groups=m.groups, bias=m.bias is not None, padding_mode=m.padding_mode,
                                prior=prior, rho_init=rho_init)
        else:
            return None
        if init_from_weights:
            with torch.no_grad():
                new.weight_mu.copy_(m.weight)
                if m.bias is not None:
                    new.bias_mu.copy_(m.bias)
        return new.to(m.weight.device)

    if _replace_modules(out, make) == 0:
        raise ValueError(f"`model` has no {' or '.join(layers)} layer to convert to Flipout")
    return out.eval()


def kl_divergence(model: nn.Module, generator: torch.Generator | None = None) -> torch.Tensor:
    """Sum of KL(q || prior) over the Flipout layers of ``model`` (a scalar tensor with gradient).

    Closed form for a single-Gaussian prior (``pi = 1``), a one-sample Monte Carlo estimate for the scale
    mixture. Zero for a model without Flipout layers.
    """
    _check_model(model)
    layers = stochastic_layers(model, "flipout")
    if not layers:
        return torch.zeros((), device=model_device(model))
    return torch.stack([m.kl(generator) for m in layers]).sum()


# --------------------------------------------------------------------------------------------------
# training (ELBO for Flipout, plain loss with active masks for DropConnect / dropout)
# --------------------------------------------------------------------------------------------------
def _data_digest(x: torch.Tensor, y: torch.Tensor) -> str:
    h = hashlib.sha256()
    h.update(x.detach().cpu().contiguous().numpy().tobytes())
    h.update(y.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def train_stochastic(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int = 10,
    lr: float = 1e-3,
    batch_size: int = 64,
    kl_weight: float | None = None,
    weight_decay: float = 0.0,
    lr_schedule: str = "constant",
    task: str = "classification",
    seed: int = 0,
    cache_dir: str | Path | None = None,
    cache_tag: str = "",
    target_scale: float | None = None,
) -> tuple[nn.Module, pd.DataFrame]:
    """Train a model with stochastic layers: cross-entropy / MSE plus ``kl_weight * KL`` (the ELBO).

    Train mode keeps the layers stochastic (fresh dropout / DropConnect masks, flipout perturbations per
    pass). For Flipout the loss is the negative ELBO per example: ``NLL + kl_weight * KL`` with
    ``kl_weight = 1 / N_train`` by default (Blundell et al., 2015). Adam, shuffled mini-batches drawn from
    a generator seeded by ``seed``.

    Args:
        model: the module to train (modified in place and returned in eval mode).
        x: inputs (N, ...) float32 (images in [0, 1], tabular standardized).
        y: labels (N,) int64 for classification, targets (N,) or (N, 1) float32 for regression.
        epochs, lr, batch_size, weight_decay: optimisation settings.
        kl_weight: weight of the KL term (None = 1 / N; ignored when the model has no Flipout layer).
        lr_schedule: ``"constant"`` or ``"cosine"`` (cosine annealing of the learning rate to 0 over
            all steps, as in ``train_classifier``; it settles the noisy DropConnect / Flipout updates).
        task: ``"classification"`` or ``"regression"``.
        seed: seeds the mini-batch order and the layers' noise (global torch RNG is restored afterwards).
        cache_dir: if given, the trained state is cached there under a hash of the architecture, the
            initial weights, the data and the settings, and loaded instead of retrained. Files are
            written atomically with a checksum (:func:`xcal_core.models.cache.save_checkpoint`) and read
            with ``weights_only=True``; a truncated, foreign or unreadable file is reported with a warning
            naming it and retrained over.
        cache_tag: extra text mixed into the cache key.
        target_scale: regression only: the MSE is computed on ``(output - y) / target_scale`` (e.g. the
            training targets' std, matching a model with an output de-standardization layer); None = 1.

    Returns:
        (model in eval mode, history DataFrame with columns epoch, loss, nll, kl).
    """
    _check_model(model)
    x = check_tensor(x, "x")
    if task not in ("classification", "regression"):
        raise ValueError(f"unknown `task` {task!r}; expected one of ['classification', 'regression']")
    y = torch.as_tensor(y)
    if task == "classification":
        y = y.long()
    else:
        y = y.float().reshape(len(y), -1)
    if len(y) != len(x):
        raise ValueError(f"`x` and `y` must have the same length, got {len(x)} and {len(y)}")
    check_int(epochs, "epochs", low=1)
    check_int(batch_size, "batch_size", low=1)
    check_positive(lr, "lr")
    if lr_schedule not in ("constant", "cosine"):
        raise ValueError(f"unknown `lr_schedule` {lr_schedule!r}; expected one of ['constant', 'cosine']")
    n = len(x)
    kw = (1.0 / n) if kl_weight is None else float(check_positive(kl_weight, "kl_weight", strict=False))
    ts = 1.0 if target_scale is None else float(check_positive(target_scale, "target_scale"))
    device = model_device(model)

    path = None
    if cache_dir is not None:
        cfg = dict(arch=repr(model), init=hashlib.sha256(b"".join(
            t.detach().cpu().contiguous().numpy().tobytes() for t in model.state_dict().values())).hexdigest()[:16],
            data=_data_digest(x, y), epochs=epochs, lr=lr, batch_size=batch_size, kl_weight=kw,
            weight_decay=weight_decay, task=task, seed=seed, tag=cache_tag, target_scale=ts)
        if lr_schedule != "constant":  # keyed only when used, so existing constant-rate caches stay valid
            cfg["lr_schedule"] = lr_schedule
        key = hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:20]
        path = Path(cache_dir) / f"stochastic_{key}.pt"
        if not path.exists():
            fetch_shipped(path, cache_dir)  # a cold cache first takes the checkpoint shipped with the repository
        if path.exists():
            try:
                blob = load_checkpoint(path, map_location=device)
                if blob.get("key") != key:
                    raise CorruptCheckpointError(f"{path} belongs to another configuration")
                model.load_state_dict(blob["state"])
                return model.eval(), pd.DataFrame(blob["history"])
            except Exception as exc:  # noqa: BLE001 - truncated, foreign or incompatible file: retrain
                warnings.warn(f"cached stochastic model {path} is unusable ({type(exc).__name__}: {exc}); "
                              "retraining and overwriting it", UserWarning, stacklevel=2)

    g = torch.Generator().manual_seed(int(seed))
    rng_state = torch.get_rng_state()
    cuda_state = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    torch.manual_seed(int(seed))
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * -(-n // batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps) if lr_schedule == "cosine" else None
    has_kl = bool(stochastic_layers(model, "flipout"))
    rows = []
    try:
        model.train()
        for ep in range(epochs):
            perm = torch.randperm(n, generator=g)
            tot = tot_nll = tot_kl = 0.0
            for i in range(0, n, batch_size):
                idx = perm[i:i + batch_size]
                xb, yb = x[idx].to(device), y[idx].to(device)
                out = model(xb)
                nll = F.cross_entropy(out, yb) if task == "classification" else F.mse_loss(out / ts, yb / ts)
                kl = kl_divergence(model) if has_kl else out.new_zeros(())
                loss = nll + kw * kl
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if sched is not None:
                    sched.step()
                tot += float(loss.detach()) * len(idx)
                tot_nll += float(nll.detach()) * len(idx)
                tot_kl += float(kl.detach()) * len(idx)
            rows.append(dict(epoch=ep + 1, loss=tot / n, nll=tot_nll / n, kl=tot_kl / n))
    finally:
        torch.set_rng_state(rng_state)
        if cuda_state is not None:
            torch.cuda.set_rng_state_all(cuda_state)
    model.eval()
    if path is not None:
        save_checkpoint(path, {"key": key, "state": model.state_dict(), "history": rows})
    return model, pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------------
# realisations
# --------------------------------------------------------------------------------------------------
class _VmappedLayer(nn.Module):
    """G copies of one parameterized layer (one per ensemble member) applied with ``torch.func.vmap``.

    The layer's parameters and buffers are stacked over members (``torch.func.stack_module_state``) and
    held as non-persistent buffers (they follow ``.to(device)``); a parameter-free template of the layer
    is called with ``torch.func.functional_call`` on each member's slice. Input and output are in flat
    group-major layout: rows ``[g * n, (g + 1) * n)`` belong to member g.
    """

    def __init__(self, layers: Sequence[nn.Module]):
        super().__init__()
        from torch.func import stack_module_state

        params, buffers = stack_module_state(list(layers))
        self.groups = len(layers)
        self._pnames, self._bnames = list(params), list(buffers)
        for i, name in enumerate(self._pnames):
            self.register_buffer(f"stacked_p{i}", params[name].detach(), persistent=False)
        for i, name in enumerate(self._bnames):
            self.register_buffer(f"stacked_b{i}", buffers[name].detach(), persistent=False)
        template = copy.deepcopy(layers[0]).to("meta").eval()
        self._template = (template,)  # a tuple keeps the template out of the module tree (and of .to())

    def extra_repr(self) -> str:
        return f"groups={self.groups}, layer={self._template[0].__class__.__name__}"

    def _call(self, p: dict, b: dict, x: torch.Tensor) -> torch.Tensor:
        from torch.func import functional_call

        return functional_call(self._template[0], (p, b), (x,))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        from torch.func import vmap

        p = {n: getattr(self, f"stacked_p{i}") for i, n in enumerate(self._pnames)}
        b = {n: getattr(self, f"stacked_b{i}") for i, n in enumerate(self._bnames)}
        hg = h.reshape(self.groups, h.shape[0] // self.groups, *h.shape[1:])
        y = vmap(self._call)(p, b, hg)
        return y.reshape(y.shape[0] * y.shape[1], *y.shape[2:])


def _structure(m: nn.Module) -> list:
    """What must agree between members for them to be stacked: module types, tensor names, shapes, dtypes."""
    mods = [(n, type(s)) for n, s in m.named_modules()]
    tensors = [(n, tuple(t.shape), t.dtype, t.device) for n, t in list(m.named_parameters()) + list(m.named_buffers())]
    return [mods, tensors]


def stack_members(members: Sequence[nn.Module]) -> nn.Module | None:
    """One module evaluating G architecture-identical members on a flat group-major batch, or None.

    The result is a copy of member 0 whose every parameterized leaf layer is replaced by a
    :class:`_VmappedLayer` over the members' copies of that layer; parameter-free modules (``nn.ReLU``,
    pooling, ``nn.Flatten``) stay ordinary modules between them, so module hooks (Captum's Guided
    Backprop on ``nn.ReLU``) keep working. Input (G * n, ...) rows ``[g n, (g + 1) n)`` go through member
    g; output (G * n, K). Weights are a snapshot taken now (eval mode: BatchNorm uses running statistics).

    Returns None when the members cannot be stacked (different architectures, or parameters held by a
    module that also has children); callers then loop over members.
    """
    ref = members[0]
    s0 = _structure(ref)
    if any(_structure(m) != s0 for m in members[1:]):
        return None
    units = []
    for name, mod in ref.named_modules():
        own = list(mod.parameters(recurse=False)) + list(mod.buffers(recurse=False))
        if not own:
            continue
        if any(True for _ in mod.children()):
            return None
        units.append(name)
    if not units:
        return None
    if units == [""]:
        return _VmappedLayer(members)
    skeleton = copy.deepcopy(ref).eval()
    for name in units:
        parent_name, _, child = name.rpartition(".")
        parent = skeleton.get_submodule(parent_name) if parent_name else skeleton
        setattr(parent, child, _VmappedLayer([m.get_submodule(name) for m in members]))
    return skeleton


class _Expanding(nn.Module):
    """A frozen stochastic model in expanding mode: n inputs in, (G * n, K) outputs out (see ``batched``)."""

    def __init__(self, model: nn.Module, state: dict):
        super().__init__()
        self.model = model
        self._state = state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._state["pending"] = True
        try:
            y = self.model(x)
            if self._state["pending"]:
                raise RuntimeError("no stochastic layer was reached in the forward pass, so the inputs were never "
                                   "fanned out to the realisations")
        finally:
            self._state["pending"] = False
        return y


class _MemberStack(nn.Module):
    """Evaluate ensemble members on a realisation-block batch (row blocks -> members).

    Architecture-identical members run in one pass (:func:`stack_members`: vmapped parameterized layers);
    otherwise the members are looped over. Both give the per-member outputs (up to float reordering).
    """

    def __init__(self, members: Sequence[nn.Module], rows: int | None, vectorize: bool = True, expand: bool = False):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.rows = rows
        self.expand = expand
        self.stacked = stack_members(members) if vectorize and len(members) > 1 else None
        self.eval()

    @property
    def vectorized(self) -> bool:
        """True when the members run in one vmapped pass."""
        return self.stacked is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = len(self.members)
        if self.expand:
            x = x.repeat(g, *([1] * (x.ndim - 1)))
        xg, k, rows = _to_blocks(x, g, self.rows)
        if self.vectorized:
            y = self.stacked(xg.reshape(g * xg.shape[1], *xg.shape[2:]))
            y = y.reshape(g, xg.shape[1], *y.shape[1:])
        else:
            y = torch.stack([m(xg[i]) for i, m in enumerate(self.members)])
        return _from_blocks(y, k, rows)


class Realisations:
    """T frozen realisations of a stochastic model, or the M members of a deep ensemble.

    Build it with :func:`sample_realisations`. Every realisation is a deterministic function of its seed
    (or member), so repeated calls are bit-identical.

    Attributes:
        kind: one of :data:`UE_METHODS`.
        seeds: (T,) int64 seeds of the realisations (None for ensembles).
        model: the stochastic model (None for ensembles); members: the ensemble members (else None).
        stack_members: ensembles: ``True`` runs architecture-identical members in one vmapped pass
            (:func:`stack_members`), ``False`` loops over them inside the batched module, ``"auto"``
            (default) stacks on accelerators and loops on the CPU, where the stacked pass measured 1.4-2x
            slower for small CNNs (grouped convolutions plus a layout copy per layer;
            ``benchmarks/bench_uq.py`` prints both). Results agree to float rounding either way.
    """

    def __init__(self, kind: str, *, model: nn.Module | None = None, seeds: torch.Tensor | None = None,
                 members: Sequence[nn.Module] | None = None):
        self.kind = kind
        self.model = model
        self.seeds = seeds
        self.members = list(members) if members is not None else None
        self.stack_members: bool | str = "auto"

    def __len__(self) -> int:
        return len(self.members) if self.members is not None else len(self.seeds)

    def __repr__(self) -> str:
        return f"Realisations(kind={self.kind!r}, T={len(self)})"

    @property
    def device(self) -> torch.device:
        return model_device(self.members[0] if self.members is not None else self.model)

    def _indices(self, indices: Sequence[int] | None) -> list[int]:
        idx = list(range(len(self))) if indices is None else [int(i) for i in indices]
        if not idx:
            raise ValueError("`indices` is empty; expected at least one realisation index")
        bad = [i for i in idx if not 0 <= i < len(self)]
        if bad:
            raise ValueError(f"`indices` {bad} out of range for {len(self)} realisations")
        return idx

    @contextmanager
    def batched(self, indices: Sequence[int] | None = None, rows: int | None = None, *,
                vectorize: bool | str | None = None, expand: bool = False) -> Iterator[nn.Module]:
        """Context yielding one module that evaluates realisations ``indices`` on realisation blocks.

        Row ``i`` of any input batch goes through realisation ``indices[(i // rows) % G]``; with
        ``rows=None`` a batch of B rows is split into G equal consecutive blocks. The module is in eval
        mode, keeps autograd (for gradient explainers) and is restored when the context exits.

        Ensembles: with ``vectorize=True`` architecture-identical members run in one pass, their
        parameterized layers stacked and vmapped (:func:`stack_members`, a snapshot of the weights taken
        on entry); ``False`` (or members that differ in architecture) loops over the members inside the
        module; ``"auto"`` stacks on accelerators only; None uses :attr:`stack_members`. Stochastic
        models always run all G realisations in one pass (per-block masks / weight samples).

        ``expand=True`` (forward passes only, e.g. predictions, LIME's perturbed inputs): the module takes
        the n inputs *once* and returns the (G * n, K) outputs of all G realisations, realisation-major.
        Stochastic models fan the rows out at the first stochastic layer a forward pass reaches, so the
        layers before it (all convolutions of an MC-Dropout CNN with dropout before its head) run once
        for all realisations. Not for input gradients: those would be summed over the realisations.
        """
        idx = self._indices(indices)
        if vectorize is None:
            vectorize = self.stack_members
        if vectorize not in ("auto", True, False):
            raise ValueError(f"`vectorize` must be 'auto', True, False or None, got {vectorize!r}")
        if vectorize == "auto":
            vectorize = self.device.type != "cpu"
        if rows is not None:
            check_int(rows, "rows", low=1)
            if expand:
                raise ValueError("`rows` and `expand=True` are exclusive (an expanding module takes each input once)")
        if self.members is not None:
            was = [(m, m.training) for mem in self.members for m in mem.modules()]
            for m in self.members:
                m.eval()
            try:
                yield _MemberStack([self.members[i] for i in idx], rows, vectorize=vectorize, expand=expand)
            finally:
                for m, w in was:
                    m.training = w
            return
        layers = stochastic_layers(self.model, self.kind)
        was = [(m, m.training) for m in self.model.modules()]
        self.model.eval()
        seeds = [int(self.seeds[i]) for i in idx]
        state = {"pending": False} if expand else None
        for j, layer in enumerate(layers):
            layer._freeze(seeds, rows, j, state)
        try:
            yield _Expanding(self.model, state) if expand else self.model
        finally:
            for layer in layers:
                layer._unfreeze()
            for m, w in was:
                m.training = w

    @contextmanager
    def frozen(self, t: int) -> Iterator[nn.Module]:
        """Context yielding realisation ``t`` as an ordinary module (any batch layout)."""
        if self.members is not None:
            t = self._indices([t])[0]
            m = self.members[t]
            was = [(mm, mm.training) for mm in m.modules()]
            m.eval()
            try:
                yield m
            finally:
                for mm, w in was:
                    mm.training = w
            return
        with self.batched([t]) as m:
            yield m

    @torch.no_grad()
    def predict(self, x: torch.Tensor, *, batch_size: int = 512, realisation_batch: int | None = None) -> torch.Tensor:
        """Outputs of every realisation, (T, N, K) logits (or (T, N, 1) regression outputs).

        Args:
            x: inputs (N, ...) on any device (moved to the model's device).
            batch_size: inputs per chunk (each chunk runs ``realisation_batch`` realisations at once).
            realisation_batch: realisations per forward pass (None = all T).
        """
        x = check_tensor(x, "x").to(self.device)
        check_int(batch_size, "batch_size", low=1)
        t_all = len(self)
        rb = t_all if realisation_batch is None else check_int(realisation_batch, "realisation_batch", low=1)
        outs = []
        for r0 in range(0, t_all, rb):
            idx = list(range(r0, min(t_all, r0 + rb)))
            chunks = []
            with self.batched(idx, expand=True) as m:  # layers before the first stochastic one run once
                for i in range(0, len(x), batch_size):
                    xb = x[i:i + batch_size]
                    chunks.append(m(xb).reshape(len(idx), len(xb), -1))
            outs.append(torch.cat(chunks, 1))
        return torch.cat(outs, 0)


def sample_realisations(
    model: nn.Module | Sequence[nn.Module],
    n: int | None = None,
    *,
    kind: str | None = None,
    generator: torch.Generator | None = None,
) -> Realisations:
    """Draw T frozen realisations of a stochastic model, or wrap ensemble members.

    Args:
        model: a model with stochastic layers (MC-Dropout: ``nn.Dropout`` layers are converted with
            :func:`to_mc_dropout` on a copy; DropConnect / Flipout layers from :func:`to_dropconnect` /
            :func:`to_flipout`), or a sequence of >= 2 ensemble members with the same input/output shapes.
        n: number of realisations T >= 2 (ensembles: None or the number of members).
        kind: one of ``"mc_dropout"``, ``"dropconnect"``, ``"flipout"``, ``"ensemble"``; None infers it
            (a sequence -> ensemble; else the model's only kind of stochastic layer).
        generator: torch generator for the realisation seeds (None uses a fresh unseeded draw; pass one
            for reproducibility).

    Returns:
        :class:`Realisations`.

    Raises:
        ValueError: T < 2, unknown kind, or a model without the stochastic layers ``kind`` needs.
    """
    if kind is not None and kind not in UE_METHODS:
        raise ValueError(f"unknown `kind` {kind!r}; expected one of {list(UE_METHODS)}")
    if isinstance(model, (list, tuple, nn.ModuleList)):
        if kind not in (None, "ensemble"):
            raise ValueError(f"a sequence of models is a deep ensemble; got `kind` {kind!r}")
        members = list(model)
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 members (T >= 2), got {len(members)}")
        for i, m in enumerate(members):
            if not isinstance(m, nn.Module):
                raise TypeError(f"`model[{i}]` must be a torch.nn.Module, got {type(m).__name__}")
        if n is not None and n != len(members):
            raise ValueError(f"`n` ({n}) must equal the number of ensemble members ({len(members)}) or be None")
        return Realisations("ensemble", members=members)
    _check_model(model)
    if n is None:
        raise ValueError("`n` (the number of realisations T) is required for a stochastic model")
    check_int(n, "n", low=2)
    if kind == "ensemble":
        raise ValueError("`kind` 'ensemble' needs a sequence of member models, got a single module")
    if kind is None:
        kinds = [k for k in _KIND_LAYERS if stochastic_layers(model, k)]
        if not kinds and any(isinstance(m, nn.Dropout) for m in model.modules()):
            kinds = ["mc_dropout"]
        if len(kinds) != 1:
            raise ValueError(
                f"cannot infer `kind`: the model has stochastic layers of kinds {kinds}; pass kind= explicitly"
                if kinds else "`model` has no stochastic layers (dropout, DropConnect or Flipout); pass an ensemble or convert it")
        kind = kinds[0]
    if kind == "mc_dropout" and not stochastic_layers(model, "mc_dropout"):
        model = to_mc_dropout(model)
    elif not stochastic_layers(model, kind):
        helper = {"dropconnect": "to_dropconnect", "flipout": "to_flipout"}[kind]
        raise ValueError(f"`model` has no {kind} layers; convert it with {helper}(model, ...) and train it first")
    seeds = torch.randint(0, 2**62, (n,), generator=generator, dtype=torch.int64)
    return Realisations(kind, model=model, seeds=seeds)


# --------------------------------------------------------------------------------------------------
# one architecture, four sources of uncertainty
# --------------------------------------------------------------------------------------------------
@dataclass
class UQFamily:
    """Trained twins of one architecture, one per UE method.

    Attributes:
        models: {kind: model (mc_dropout / dropconnect / flipout) or list of members (ensemble)}.
        histories: {kind: training history DataFrame (the first member's for ensembles)}.
        task: ``"classification"`` or ``"regression"``.
    """

    models: dict
    histories: dict
    task: str

    def realisations(self, kind: str, n: int, *, generator: torch.Generator | None = None) -> Realisations:
        """:func:`sample_realisations` of one member of the family (ensembles ignore ``n``)."""
        if kind not in self.models:
            raise ValueError(f"unknown `kind` {kind!r}; this family has {list(self.models)}")
        if kind == "ensemble":
            return sample_realisations(self.models[kind])
        return sample_realisations(self.models[kind], n, kind=kind, generator=generator)


def train_uq_family(
    model_name: str,
    dataset: Any,
    *,
    methods: Sequence[str] = UE_METHODS,
    epochs: int = 10,
    lr: float = 1e-3,
    batch_size: int = 128,
    seed: int = 0,
    device: str | torch.device = "cpu",
    cache_dir: str | Path | None = None,
    model_kwargs: dict | None = None,
    dropout_p: float = 0.3,
    dropconnect_p: float = 0.3,
    flipout_prior: FlipoutPrior | None = None,
    flipout_rho_init: float = -5.0,
    flipout_kl_scale: float = 1.0,
    n_members: int = 5,
    lr_schedule: str = "constant",
    progress: bool = False,
) -> UQFamily:
    """Train the MC-Dropout, MC-DropConnect, Flipout and deep-ensemble twins of one architecture.

    * ``mc_dropout``: ``train_classifier(model_name, ..., dropout=dropout_p)``, then :func:`to_mc_dropout`;
    * ``dropconnect``: the same architecture without dropout, converted with :func:`to_dropconnect` before
      training and trained with active weight masks (:func:`train_stochastic`);
    * ``flipout``: converted with :func:`to_flipout` (fresh posterior means, ``rho = flipout_rho_init``) and
      trained on the ELBO with KL weight 1 / N_train;
    * ``ensemble``: ``n_members`` models trained by ``train_classifier`` with seeds ``seed, seed + 1, ...``
      (independent initialisations and batch orders).

    All twins are cached in ``cache_dir`` (keyed by configuration and data), so reruns load them.

    Args:
        model_name: a ``build_model`` name (``"small_cnn"``, ``"mlp"``, ...).
        dataset: an ``xcal_core.data.Dataset`` (classification or regression).
        methods: subset of :data:`UE_METHODS`.
        epochs, lr, batch_size, seed, device, cache_dir: training settings shared by all twins.
        model_kwargs: extra ``build_model`` keyword arguments (e.g. ``width``); ``dropout`` is set here.
        dropout_p, dropconnect_p: drop probabilities in [0, 1) (dropout_p > 0 for MC-Dropout).
        flipout_prior: :class:`FlipoutPrior` (keras-uncertainty's scale mixture by default).
        flipout_rho_init: initial rho of the Flipout weights.
        flipout_kl_scale: multiplier of the ELBO's KL weight 1 / N_train (1 = the ELBO; < 1 down-weights
            the KL, a "tempered" posterior that small training sets need to fit at all).
        n_members: ensemble size M >= 2.
        lr_schedule: ``"constant"`` or ``"cosine"`` for every twin (``train_classifier`` and
            :func:`train_stochastic` alike).
        progress: show progress bars of ``train_classifier``.

    Returns:
        :class:`UQFamily`.
    """
    from .factory import build_model
    from .training import train_classifier

    bad = [m for m in methods if m not in UE_METHODS]
    if bad or not methods:
        raise ValueError(f"`methods` must be a non-empty subset of {list(UE_METHODS)}, got {list(methods)}")
    check_fraction(dropout_p, "dropout_p", open_high=True)
    check_fraction(dropconnect_p, "dropconnect_p", open_high=True)
    if "mc_dropout" in methods and dropout_p == 0:
        raise ValueError("`dropout_p` must be > 0 for MC-Dropout (p = 0 gives T identical realisations)")
    check_int(n_members, "n_members", low=2)
    info = dataset.info
    task = info.task
    mk = dict(model_kwargs or {})
    mk.pop("dropout", None)
    if lr_schedule not in ("constant", "cosine"):
        raise ValueError(f"unknown `lr_schedule` {lr_schedule!r}; expected one of ['constant', 'cosine']")
    common = dict(epochs=epochs, lr=lr, batch_size=batch_size, device=device, cache_dir=cache_dir, progress=progress,
                  lr_schedule=lr_schedule)
    models: dict = {}
    hists: dict = {}
    if "mc_dropout" in methods:
        res = train_classifier(model_name, dataset, seed=seed, model_kwargs={**mk, "dropout": dropout_p}, **common)
        models["mc_dropout"] = to_mc_dropout(res.model)
        hists["mc_dropout"] = res.history
    if "ensemble" in methods:
        members = []
        for i in range(n_members):
            res = train_classifier(model_name, dataset, seed=seed + i, model_kwargs={**mk, "dropout": 0.0}, **common)
            members.append(res.model)
            if i == 0:
                hists["ensemble"] = res.history
        models["ensemble"] = members
    twins = [k for k in ("dropconnect", "flipout") if k in methods]
    if twins:
        x, y = dataset.train.x, dataset.train.y
        bk = dict(mk, dropout=0.0)
        if getattr(info, "normalization", None) is not None and "normalization" not in bk:
            bk["normalization"] = info.normalization
        ts = None
        if task == "regression":
            yf = torch.as_tensor(y).float()
            ts = float(yf.std())
            if model_name in ("mlp", "tabular_resnet") and "target_normalization" not in bk:
                bk["target_normalization"] = (float(yf.mean()), ts)
        n_out = 1 if task == "regression" else info.n_classes
        dev = torch.device(device) if not isinstance(device, torch.device) else device
        for kind in twins:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                base = build_model(model_name, info.input_shape, n_out, **bk)
                if kind == "dropconnect":
                    m = to_dropconnect(base, dropconnect_p)
                else:
                    m = to_flipout(base, prior=flipout_prior, rho_init=flipout_rho_init, init_from_weights=True)
            m = m.to(dev)
            kw = check_positive(flipout_kl_scale, "flipout_kl_scale", strict=False) / len(x) if kind == "flipout" else None
            m, h = train_stochastic(m, x, y, epochs=epochs, lr=lr, batch_size=batch_size, task=task, seed=seed, kl_weight=kw,
                                    lr_schedule=lr_schedule,
                                    cache_dir=None if cache_dir is None else Path(cache_dir) / "models",
                                    cache_tag=f"{model_name}/{getattr(info, 'name', '')}/{kind}", target_scale=ts)
            models[kind] = m
            hists[kind] = h
    return UQFamily(models={k: models[k] for k in methods}, histories=hists, task=task)
