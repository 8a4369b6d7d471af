"""Model-agnostic saliency: RISE and Meaningful Perturbation, batched over images and perturbations.

Both methods only query the score of the explained class (no gradients of the model for RISE; the
gradient of the score with respect to a mask for MP), which is why Calibrate-to-Interpret finds that
calibration changes them the most: they see the calibrated *scores* directly.

======================  ===============================================================  ==========
method                  what it returns (shaped like ``x``, the same map in every channel)  stochastic
======================  ===============================================================  ==========
``rise``                ``sum_j s_c(x * m_j + b (1 - m_j)) m_j / (M E[m])`` (Petsiuk 2018)   yes
``meaningful_perturbation``  ``1 - m*`` with ``m*`` the optimized preservation mask (Fong 2017)  no
======================  ===============================================================  ==========

Reduce a result with ``reduce_channels(attr, "mean")`` to get the (N, H, W) map back.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from .._validation import check_choice, check_fraction, check_int, check_positive, check_tensor
from ._registry import register
from .core import DEFAULT_BATCH_SIZE, _make_generator
from .perturbation import forward_autocast

__all__ = ["blur_fixed_kernel", "rise", "rise_masks", "meaningful_perturbation"]

_INTERP = ("bicubic", "bilinear", "nearest")
_RISE_NORMALIZATION = ("expected", "per_mask")


def blur_fixed_kernel(x: Any, kernel_size: int = 11, sigma: float = 2.0) -> torch.Tensor:
    """Depthwise Gaussian blur with a fixed ``kernel_size`` x ``kernel_size`` kernel and reflection padding.

    Unlike a radius-3-sigma kernel, the kernel size is fixed, so a large ``sigma`` gives a box blur of
    that size (the Calibrate-to-Interpret deletion uses 11 x 11 with sigma 10 at 224 px).

    Args:
        x: float (N, C, H, W) images in [0, 1].
        kernel_size: odd kernel side >= 1 (1 returns a copy).
        sigma: Gaussian standard deviation in pixels, > 0.

    Returns:
        Blurred images, same shape, dtype and device (values stay in the input's range).
    """
    x = check_tensor(x, "x", ndim=4, dtype=None)
    kernel_size = check_int(kernel_size, "kernel_size", low=1)
    if kernel_size % 2 == 0:
        raise ValueError(f"`kernel_size` must be odd, got {kernel_size}")
    sigma = float(check_positive(sigma, "sigma"))
    if kernel_size == 1:
        return x.clone()
    r = kernel_size // 2
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    n, c, h, w = x.shape
    y = x.reshape(n * c, 1, h, w)
    y = F.pad(y, (0, 0, r, r), mode="reflect" if r < h else "replicate")
    y = F.conv2d(y, k.view(1, 1, -1, 1))
    y = F.pad(y, (r, r, 0, 0), mode="reflect" if r < w else "replicate")
    y = F.conv2d(y, k.view(1, 1, 1, -1))
    return y.reshape(n, c, h, w)


def _check_x_image(x: torch.Tensor, method: str) -> None:
    if x.ndim != 4:
        raise ValueError(f"`{method}` needs image inputs x of shape (N, C, H, W), got shape {tuple(x.shape)}")


def _baseline_like(baseline: Any, x: torch.Tensor) -> torch.Tensor:
    """A float or a tensor broadcastable to x (one input's shape, (C,) per channel, or x's shape)."""
    if isinstance(baseline, bool):
        raise TypeError("`baseline` must be a float or a tensor, got bool")
    if isinstance(baseline, (int, float)):
        if not math.isfinite(baseline):
            raise ValueError(f"`baseline` must be finite, got {baseline}")
        return torch.full_like(x, float(baseline))
    b = check_tensor(baseline, "baseline").to(device=x.device, dtype=x.dtype)
    if b.ndim == 1 and b.shape[0] == x.shape[1]:
        b = b.view(1, -1, 1, 1)
    try:
        return torch.broadcast_to(b, x.shape)
    except RuntimeError:
        raise ValueError(f"`baseline` of shape {tuple(b.shape)} does not broadcast to x {tuple(x.shape)}") from None


class _RiseMaskBank:
    """RISE masks generated lazily by index: grids and shifts drawn up front, upsampled per chunk."""

    def __init__(self, n_masks, size, grid_size, p_keep, interpolation, binarize, generator, device):
        h, w = size
        self.size = size
        self.cell = (math.ceil(h / grid_size), math.ceil(w / grid_size))
        self.up = ((grid_size + 1) * self.cell[0], (grid_size + 1) * self.cell[1])
        g = generator
        self.grids = (torch.rand((n_masks, 1, grid_size, grid_size), generator=g, device=g.device) < p_keep).float().to(device)
        self.dx = torch.randint(0, self.cell[0], (n_masks,), generator=g, device=g.device).to(device)
        self.dy = torch.randint(0, self.cell[1], (n_masks,), generator=g, device=g.device).to(device)
        self.interpolation = interpolation
        self.binarize = binarize
        # grids get one extra cell so a shifted crop of size (H, W) always fits
        self.grids = F.pad(self.grids, (0, 1, 0, 1), mode="replicate")

    def get(self, start: int, stop: int) -> torch.Tensor:
        """Masks ``start..stop-1`` as float (stop - start, H, W) in [0, 1]."""
        g = self.grids[start:stop]
        kw = {} if self.interpolation == "nearest" else {"align_corners": False}
        up = F.interpolate(g, size=self.up, mode=self.interpolation, **kw)[:, 0].clamp_(0.0, 1.0)
        if self.binarize:
            up = (up >= 0.5).to(up.dtype)
        h, w = self.size
        rows = self.dx[start:stop, None] + torch.arange(h, device=up.device)
        cols = self.dy[start:stop, None] + torch.arange(w, device=up.device)
        m = torch.arange(stop - start, device=up.device)
        return up[m[:, None, None], rows[:, :, None], cols[:, None, :]]


def rise_masks(
    n_masks: int,
    size: tuple[int, int],
    *,
    grid_size: int = 8,
    p_keep: float = 0.6,
    interpolation: str = "bicubic",
    binarize: bool = False,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """The random RISE masks: binary ``grid_size`` x ``grid_size`` grids, upsampled, randomly shifted.

    Each grid cell is kept with probability ``p_keep``; the grid (plus one cell) is upsampled to
    ``(grid_size + 1) * ceil(H / grid_size)`` pixels and cropped to (H, W) at a random offset within one
    cell (Petsiuk et al. 2018). Bicubic values are clamped to [0, 1].

    Args:
        n_masks: number of masks M >= 1.
        size: (H, W) of the images.
        grid_size: grid side s >= 1 (C2I: 8 at 32-224 px; 4 for 8 x 8 digits).
        p_keep: keep probability of a cell, in (0, 1].
        interpolation: ``"bicubic"`` (C2I), ``"bilinear"`` (original RISE) or ``"nearest"``.
        binarize: re-binarize at 0.5 after upsampling (what the C2I code does).
        generator: torch.Generator (None = fresh random seed).
        device: where the masks live.

    Returns:
        float32 (M, H, W) masks with values in [0, 1].
    """
    n_masks = check_int(n_masks, "n_masks", low=1)
    h, w = (check_int(int(v), "size", low=1) for v in size)
    grid_size = check_int(grid_size, "grid_size", low=1)
    p_keep = check_fraction(p_keep, "p_keep", open_low=True)
    check_choice(interpolation, "interpolation", _INTERP)
    bank = _RiseMaskBank(n_masks, (h, w), grid_size, p_keep, interpolation, binarize, _make_generator(generator), torch.device(device))
    return bank.get(0, n_masks)


@register("rise", stochastic=True)
@torch.no_grad()
def rise(
    model: torch.nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
    n_masks: int = 4000,
    grid_size: int = 8,
    p_keep: float = 0.6,
    interpolation: str = "bicubic",
    binarize: bool = False,
    baseline: Any = 0.0,
    normalization: str = "expected",
    amp: bool = False,
    **_: Any,
) -> torch.Tensor:
    """RISE: score-weighted average of random masks (Petsiuk et al. 2018), batched over images and masks.

    Every (image, mask) pair is one forward pass of ``x * m + baseline * (1 - m)``; pairs run in chunks
    of ``batch_size`` inputs, masks are upsampled per chunk (memory stays O(batch_size * H * W)). All
    images share the same masks (as in RISE), so a larger batch of images costs no extra mask draws.

    Args (method kwargs of :func:`explain`; ``model`` already returns the score to explain):
        n_masks: M (C2I: 4000).
        grid_size, p_keep, interpolation, binarize: see :func:`rise_masks` (C2I: 8, 0.6, bicubic).
        baseline: value of masked pixels: a float (default 0.0, black) or a tensor broadcastable to x
            (e.g. the training mean image, which is what the C2I code's "0 in normalized space" means).
        normalization: ``"expected"`` divides by ``M * p_keep`` (the paper's eq. 7); ``"per_mask"``
            divides each mask's term by its own kept area (the C2I code).
        amp: float16 autocast of the forward passes on CUDA (ignored on the CPU); the scores are
            accumulated in float32, and the average over M masks washes out float16's rounding.

    Returns:
        float32 (N, C, H, W): the saliency map (non-negative for non-negative scores) in every channel.

    References:
        Petsiuk, Das, Saenko. RISE: Randomized Input Sampling for Explanation of Black-box Models.
        BMVC 2018. Scafarto et al., Calibrate to Interpret, 2022 (settings).
    """
    _check_x_image(x, "rise")
    n_masks = check_int(n_masks, "n_masks", low=1)
    grid_size = check_int(grid_size, "grid_size", low=1)
    p_keep = check_fraction(p_keep, "p_keep", open_low=True)
    check_choice(interpolation, "interpolation", _INTERP)
    check_choice(normalization, "normalization", _RISE_NORMALIZATION)
    if not isinstance(amp, bool):
        raise TypeError(f"`amp` must be a bool, got {type(amp).__name__}")
    bs = DEFAULT_BATCH_SIZE if batch_size is None else check_int(batch_size, "batch_size", low=1)
    n, c, h, w = x.shape
    base = _baseline_like(baseline, x)
    bank = _RiseMaskBank(n_masks, (h, w), grid_size, p_keep, interpolation, binarize, _make_generator(generator), x.device)
    sal = torch.zeros(n, h * w, dtype=torch.float32, device=x.device)
    total = n * n_masks
    for start in range(0, total, bs):  # pairs in mask-major order: idx = j * N + i
        stop = min(start + bs, total)
        j0, j1 = start // n, (stop - 1) // n + 1
        masks = bank.get(j0, j1)  # (J, H, W)
        idx = torch.arange(start, stop, device=x.device)
        i, j = idx % n, idx // n - j0
        m = masks[j][:, None]  # (B, 1, H, W)
        xp = x[i] * m + base[i] * (1.0 - m)
        with forward_autocast(x.device, amp):
            z = model(xp)
        s = z.gather(1, target[i][:, None]).to(torch.float32)  # (B, 1)
        mf = m.reshape(m.shape[0], -1)
        if normalization == "per_mask":
            s = s / mf.sum(1, keepdim=True).clamp_min(1e-12)
        sal.index_add_(0, i, s * mf)
    sal = sal / (n_masks * (p_keep if normalization == "expected" else 1.0))
    return sal.view(n, 1, h, w).expand(n, c, h, w).contiguous()


class _Adam:
    """Adam (Kingma & Ba 2015) on one tensor, same update as ``torch.optim.Adam`` with default betas / eps.

    Hand-written because constructing the first ``torch.optim`` optimizer imports ``torch._dynamo``,
    which costs seconds on a busy laptop CPU (measured: 20 s under load), longer than the optimization.
    """

    def __init__(self, param: torch.Tensor, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.p, self.lr, self.b1, self.b2, self.eps = param, lr, betas[0], betas[1], eps
        self.m = torch.zeros_like(param)
        self.v = torch.zeros_like(param)
        self.t = 0

    @torch.no_grad()
    def step(self, grad: torch.Tensor) -> None:
        self.t += 1
        self.m.mul_(self.b1).add_(grad, alpha=1 - self.b1)
        self.v.mul_(self.b2).addcmul_(grad, grad, value=1 - self.b2)
        denom = (self.v / (1 - self.b2**self.t)).sqrt_().add_(self.eps)
        self.p.addcdiv_(self.m, denom, value=-self.lr / (1 - self.b1**self.t))


def _tv(m: torch.Tensor, power: float) -> torch.Tensor:
    """Per-sample total variation mean|d_row m|^p + mean|d_col m|^p of masks (B, 1, h, w) -> (B,)."""
    dr = (m[:, :, 1:, :] - m[:, :, :-1, :]).abs().pow(power).flatten(1)
    dc = (m[:, :, :, 1:] - m[:, :, :, :-1]).abs().pow(power).flatten(1)
    zero = m.new_zeros(m.shape[0])
    return (dr.mean(1) if dr.shape[1] else zero) + (dc.mean(1) if dc.shape[1] else zero)


@register("meaningful_perturbation")
def meaningful_perturbation(
    model: torch.nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    batch_size: int | None = None,
    mask_size: int = 28,
    n_steps: int = 600,
    lr: float = 0.1,
    l1: float = 0.1,
    tv: float = 1.0,
    tv_power: float = 3.0,
    blur_kernel: int = 11,
    blur_sigma: float = 2.0,
    amp: bool = False,
    **_: Any,
) -> torch.Tensor:
    """Meaningful Perturbation (Fong & Vedaldi 2017) in the Calibrate-to-Interpret form, batched over images.

    A preservation mask ``m`` in [0, 1] (``mask_size`` x ``mask_size``, initialized to ones, bilinearly
    upsampled to H x W as ``M``) blends the image with its blur, ``x M + blur(x) (1 - M)``; Adam minimizes
    ``s_c(perturbed) + l1 * mean|1 - m| + tv * (mean|d_row m|^p + mean|d_col m|^p)``, clamping ``m`` to
    [0, 1] after every step. The loss of a chunk of images is the sum of their losses, and Adam is
    element-wise, so optimizing ``batch_size`` images together equals optimizing each alone. Deterministic.

    Args (method kwargs of :func:`explain`; ``model`` already returns the score to explain):
        mask_size: side of the optimized mask (C2I: 28 whatever the resolution); clipped to (H, W).
        n_steps: Adam steps (C2I: 600).
        lr: Adam learning rate (C2I: 0.1).
        l1: weight of the deletion-area term ``mean|1 - m|`` (C2I code: 0.1).
        tv: weight of the total-variation term (C2I code: 1; the paper's "beta = 0.4" may mean 0.4).
        tv_power: exponent p of the TV term (C2I: 3).
        blur_kernel, blur_sigma: the blur of :func:`blur_fixed_kernel` (C2I: 11, 2; scale down for small images).
        amp: bfloat16 autocast of the model's forward and backward passes on CUDA (ignored on the CPU);
            the mask, its penalties and Adam stay float32. bfloat16 has float32's range, so the small
            gradients of the score need no loss scaling.

    Returns:
        float32 (N, C, H, W): ``1 - M`` (high = deleting this region lowers the score) in every channel.

    References:
        Fong, Vedaldi. Interpretable Explanations of Black Boxes by Meaningful Perturbation. ICCV 2017.
        Scafarto et al., Calibrate to Interpret, 2022 (eq. 8 and settings).
    """
    _check_x_image(x, "meaningful_perturbation")
    mask_size = check_int(mask_size, "mask_size", low=1)
    n_steps = check_int(n_steps, "n_steps", low=1)
    lr = float(check_positive(lr, "lr"))
    l1 = float(check_positive(l1, "l1", strict=False))
    tv = float(check_positive(tv, "tv", strict=False))
    tv_power = float(check_positive(tv_power, "tv_power"))
    if not isinstance(amp, bool):
        raise TypeError(f"`amp` must be a bool, got {type(amp).__name__}")
    bs = DEFAULT_BATCH_SIZE if batch_size is None else check_int(batch_size, "batch_size", low=1)
    n, c, h, w = x.shape
    mh, mw = min(mask_size, h), min(mask_size, w)
    blurred = blur_fixed_kernel(x, blur_kernel, blur_sigma)
    out = torch.empty(n, 1, h, w, dtype=torch.float32, device=x.device)
    for start in range(0, n, bs):  # chunks of images; the optimization steps are sequential by nature
        xi, bi, ti = x[start:start + bs], blurred[start:start + bs], target[start:start + bs]
        m = torch.ones(xi.shape[0], 1, mh, mw, device=x.device, requires_grad=True)
        adam = _Adam(m, lr)
        for _step in range(n_steps):
            up = F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False)
            xp = xi * up + bi * (1.0 - up)
            with forward_autocast(x.device, amp, torch.bfloat16):
                z = model(xp)
            score = z.gather(1, ti[:, None])[:, 0].float()
            loss = (score + l1 * (1.0 - m).abs().flatten(1).mean(1) + tv * _tv(m, tv_power)).sum()
            (grad,) = torch.autograd.grad(loss, m)
            adam.step(grad)
            with torch.no_grad():
                m.clamp_(0.0, 1.0)
        with torch.no_grad():
            out[start:start + bs] = 1.0 - F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False)
    return out.expand(n, c, h, w).contiguous()
