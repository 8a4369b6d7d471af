"""Registry of explanation methods behind :func:`xcal_core.explainers.explain`.

A method is a function ``fn(model, x, target, *, score, batch_size, generator, **kw) -> Tensor``
returning attributions shaped like ``x`` (raw, signed, float32, on x's device). ``score`` is
already applied: the model passed in returns the scalar-per-class score to explain (logit,
probability or log-probability), so methods never need to know about it.
"""

from __future__ import annotations

from typing import Callable

METHODS: dict[str, Callable] = {}
# Methods whose result depends on a random generator (LIME, KernelSHAP, RISE, SmoothGrad...).
STOCHASTIC: set[str] = set()
# Methods that need a convolutional layer (Grad-CAM family).
NEEDS_LAYER: set[str] = set()


def register(name: str, *, stochastic: bool = False, needs_layer: bool = False) -> Callable[[Callable], Callable]:
    def wrap(fn: Callable) -> Callable:
        if name in METHODS and METHODS[name] is not fn:
            raise RuntimeError(f"explanation method {name!r} registered twice")
        METHODS[name] = fn
        if stochastic:
            STOCHASTIC.add(name)
        if needs_layer:
            NEEDS_LAYER.add(name)
        return fn

    return wrap
