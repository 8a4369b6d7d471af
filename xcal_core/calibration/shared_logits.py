"""One network, several calibrations: compute each input's logits once and share them.

Calibrate to Interpret explains and evaluates the *same* network under several post-hoc calibrations
(uncalibrated, temperature scaling, Dirichlet, a grid of fixed temperatures). A calibrator only
post-processes the logits, so whenever two calibrated models see the same input, the network's forward
pass is the same:

* RISE draws the same masks for every model (common random numbers), so every masked image is seen
  by every calibrated model;
* a random-order deletion baseline with one seed perturbs the images identically for every model;
* the fixed-evaluator (calibration-invariant) view scores exactly the perturbed images that the
  own-model view scores, only through another calibration.

:class:`SharedLogits` wraps the network and remembers the logits of every input row it has seen without
gradients, keyed by the row's exact bytes (a 128-bit BLAKE2b digest; rows equal bit for bit share logits,
any other row is recomputed). Wrap it once and build every calibrated model on top of it:
``shared = SharedLogits(net)``, ``CalibratedModel(shared, ts)``, ``CalibratedModel(shared, temperature=2)``.
Passes that need gradients (Sensitivity, Integrated Gradients, Meaningful Perturbation) bypass the
cache, and so do inputs on a non-CPU device (a device-to-host copy per batch would cost more than it saves).
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch

from .._validation import check_int

__all__ = ["SharedLogits"]


class SharedLogits(torch.nn.Module):
    """A classifier whose gradient-free forward passes reuse the logits of inputs it has seen.

    Args:
        model: classifier returning logits (N, K); used in its current mode (call ``eval()`` first).
        max_rows: most cached rows; when full, the oldest half is dropped (>= 1).

    Attributes:
        hits, misses: rows answered from the cache / computed by ``model`` (gradient-free CPU passes).

    Example::

        shared = SharedLogits(net)
        models = {"uncalibrated": shared, "temperature_scaling": CalibratedModel(shared, ts)}
    """

    def __init__(self, model: torch.nn.Module, max_rows: int = 1_000_000) -> None:
        super().__init__()
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.max_rows = check_int(max_rows, "max_rows", low=1)
        self.training = model.training
        self.cam_layer = getattr(model, "cam_layer", None)
        self.clear()

    def clear(self) -> None:
        """Forget every cached row (and reset the counters)."""
        self._index: dict[bytes, tuple[int, int]] = {}
        self._chunks: dict[int, torch.Tensor] = {}
        self._chunk_keys: dict[int, list[bytes]] = {}
        self._next_chunk = 0
        self._rows = 0
        self.hits = 0
        self.misses = 0

    def _evict(self) -> None:
        for cid in sorted(self._chunks)[: max(1, len(self._chunks) // 2)]:
            for k in self._chunk_keys.pop(cid):
                self._index.pop(k, None)
            self._rows -= self._chunks.pop(cid).shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() or x.requires_grad or x.device.type != "cpu" or x.ndim < 2 or x.shape[0] == 0:
            return self.model(x)
        rows = x.detach().contiguous().reshape(x.shape[0], -1)
        raw = rows.numpy().view("uint8").reshape(x.shape[0], -1) if rows.dtype != torch.bfloat16 else None
        if raw is None:  # numpy has no bfloat16: hash the raw 16-bit patterns
            raw = rows.view(torch.int16).numpy().view("uint8").reshape(x.shape[0], -1)
        tag = f"{tuple(x.shape[1:])}|{x.dtype}".encode()
        keys = [hashlib.blake2b(r.tobytes(), digest_size=16).digest() + tag for r in raw]
        found = [self._index.get(k) for k in keys]
        missing = [i for i, f in enumerate(found) if f is None]
        out = None
        if missing:
            new = self.model(x[missing] if len(missing) < x.shape[0] else x)
            if new.ndim != 2:
                raise ValueError(f"`model` must return a 2-D output (N, K), got shape {tuple(new.shape)}")
            out = torch.empty((x.shape[0], new.shape[1]), dtype=new.dtype, device=new.device)
            out[missing] = new
            cid = self._next_chunk
            self._next_chunk += 1
            kept = []
            for j, i in enumerate(missing):
                if keys[i] not in self._index:  # duplicates within one batch are stored once
                    self._index[keys[i]] = (cid, j)
                    kept.append(keys[i])
            self._chunks[cid] = new.detach()
            self._chunk_keys[cid] = kept
            self._rows += new.shape[0]
        hit_rows = [i for i, f in enumerate(found) if f is not None]
        if hit_rows:
            cached = torch.stack([self._chunks[found[i][0]][found[i][1]] for i in hit_rows])
            if out is None:
                out = torch.empty((x.shape[0], cached.shape[1]), dtype=cached.dtype, device=cached.device)
            out[hit_rows] = cached.to(out.dtype)
        self.hits += len(hit_rows)
        self.misses += len(missing)
        while self._rows > self.max_rows and len(self._chunks) > 1:
            self._evict()
        return out

    def extra_repr(self) -> str:
        return f"max_rows={self.max_rows}, cached_rows={self._rows}, hits={self.hits}, misses={self.misses}"
