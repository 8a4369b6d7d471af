"""The attribution methods of the paper's experiments as explanation functions ``fn(model, x, target)``.

Each preset wraps :func:`xcal_core.explainers.explain` with the settings used in notebook 04, so a
notebook can say ``make_methods(["saliency", "smoothgrad", ...])`` and hand the result to
:func:`~xcal_core.aggregation.aggregate`. Perturbation methods work on square patches (the paper's
16x16 patches on 224 px images; 2x2 on 8x8 digits, 7x7 on 28x28 Fashion-MNIST).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from .._validation import check_int, check_positive

__all__ = ["METHOD_PRESETS", "PAPER_ORDER", "ZERO_REFERENCE", "make_methods", "patch_mask"]

# name -> (explain method, family); the paper's display names in the notebook come from these keys
METHOD_PRESETS: dict[str, tuple[str, str]] = {
    "saliency": ("gradient", "gradient"),  # signed gradient; |.| is applied by the normalization
    "input_x_gradient": ("input_x_gradient", "gradient"),
    "guided_backprop": ("guided_backprop", "gradient"),
    "deeplift": ("deeplift", "gradient"),
    "integrated_gradients": ("integrated_gradients", "gradient"),
    "smoothgrad": ("smoothgrad", "gradient"),
    "vargrad": ("vargrad", "gradient"),
    "gradient_shap": ("gradient_shap", "gradient"),
    "gradcam": ("gradcam", "gradient"),
    "occlusion": ("occlusion", "perturbation"),
    "feature_ablation": ("feature_ablation", "perturbation"),
    "kernel_shap": ("kernel_shap", "perturbation"),
    "lime": ("lime", "perturbation"),
    "shapley_sampling": ("shapley_sampling", "perturbation"),
}
# methods whose reference input is the all-zero image: where a pixel is 0 (in every channel) their attribution is
# exactly 0 (x * gradient, the zero-baseline path integral, the rescale rule from a zero reference, and the
# 0-replacement ablations whose coalitions do not change when a zero patch is "removed")
ZERO_REFERENCE = ("input_x_gradient", "deeplift", "integrated_gradients", "occlusion", "feature_ablation", "shapley_sampling")
# Tables 8/9 add methods in this order (DeepLift, VarGrad, GuidedBP, SmoothGrad, IntGrad, InputxGrad, Saliency)
PAPER_ORDER = ("deeplift", "vargrad", "guided_backprop", "smoothgrad", "integrated_gradients", "input_x_gradient", "saliency")


def patch_mask(height: int, width: int, patch: int) -> torch.Tensor:
    """Integer group ids (H, W) of non-overlapping ``patch`` x ``patch`` squares (row-major)."""
    check_int(height, "height", low=1)
    check_int(width, "width", low=1)
    check_int(patch, "patch", low=1)
    rows = torch.arange(height) // patch
    cols = torch.arange(width) // patch
    return rows[:, None] * ((width + patch - 1) // patch) + cols[None, :]


def make_methods(
    names: Sequence[str],
    *,
    patch: int = 2,
    ig_steps: int = 32,
    noise_samples: int = 20,
    noise_level: float = 0.15,
    shap_samples: int = 64,
    shapley_perms: int = 2,
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
) -> dict[str, Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]]:
    """Explanation functions for preset method names.

    Args:
        names: keys of :data:`METHOD_PRESETS` (unknown names raise with the list).
        patch: patch size in pixels for occlusion / feature ablation / KernelSHAP (and the occlusion window).
        ig_steps: Integrated Gradients quadrature nodes.
        noise_samples: samples of SmoothGrad / VarGrad / GradientSHAP.
        noise_level: SmoothGrad / VarGrad noise sigma as a fraction of the input range.
        shap_samples: KernelSHAP / LIME coalitions per input.
        shapley_perms: permutations per input of Shapley value sampling (``(d - 1) x shapley_perms + 2``
            forward passes for d patches).
        generator: one torch generator shared by the stochastic methods (reproducible for a fixed call order).
        batch_size: inputs per forward pass inside the methods (None = the explainer default).

    Returns:
        dict name -> ``fn(model, x, target)`` returning float32 attributions shaped like x. The functions of
        ``"saliency"`` and ``"input_x_gradient"`` carry an attribute ``shared_gradient = (method, batch_size)``:
        when both are in a method set, :func:`~xcal_core.aggregation.explanation_stack`, the Gram builders and
        :func:`~xcal_core.aggregation.evaluate_aggregations` run one gradient pass for the two (``x * g``
        and ``g``), bit for bit what the two separate calls return.
    """
    from ..explainers import explain

    check_int(patch, "patch", low=1)
    check_int(ig_steps, "ig_steps", low=1)
    check_int(noise_samples, "noise_samples", low=1)
    check_int(shap_samples, "shap_samples", low=1)
    check_int(shapley_perms, "shapley_perms", low=1)
    check_positive(noise_level, "noise_level")
    if isinstance(names, str):
        raise TypeError("`names` must be a sequence of method names, not a single string")
    unknown = [n for n in names if n not in METHOD_PRESETS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; expected some of {sorted(METHOD_PRESETS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"`names` must be unique, got {list(names)}")

    def build(name: str):
        method, _ = METHOD_PRESETS[name]
        kw: dict[str, Any] = {}
        if method == "integrated_gradients":
            kw = {"steps": ig_steps}
        elif method in ("smoothgrad", "vargrad"):
            kw = {"n_samples": noise_samples, "noise_level": noise_level}
        elif method == "gradient_shap":
            kw = {"n_samples": noise_samples}
        elif method == "occlusion":
            kw = {"window": patch, "stride": patch}
        elif method in ("kernel_shap", "lime"):
            kw = {"n_samples": shap_samples}
        elif method == "shapley_sampling":
            kw = {"n_samples": shapley_perms}

        def fn(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            extra = dict(kw)
            if method in ("feature_ablation", "kernel_shap", "lime", "shapley_sampling"):
                extra["feature_mask"] = patch_mask(x.shape[-2], x.shape[-1], patch).to(x.device)
            return explain(model, x, target, method, generator=generator, batch_size=batch_size, **extra)

        fn.__name__ = name
        if method in ("gradient", "input_x_gradient"):
            # both are (x times) the plain input gradient: explanation_stack & co. compute it once for both
            fn.shared_gradient = (method, batch_size)
        return fn

    return {n: build(n) for n in names}
