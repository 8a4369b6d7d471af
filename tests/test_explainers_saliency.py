"""RISE and Meaningful Perturbation: planted-region recovery, batching invariance, reproducibility, bad input."""

import pytest
import torch

from xcal_core.explainers import explain, reduce_channels
from xcal_core.explainers._registry import STOCHASTIC
from xcal_core.explainers.saliency import blur_fixed_kernel, meaningful_perturbation, rise, rise_masks

H = 16


class RegionModel(torch.nn.Module):
    """Two-class toy: the class-0 logit grows with the mean brightness inside a planted region."""

    def __init__(self, region):
        super().__init__()
        self.register_buffer("r", region)
        self.lin = torch.nn.Linear(1, 1)  # a parameter, so the model has a device

    def forward(self, x):
        a = 6 * ((x * self.r).sum((1, 2, 3)) / self.r.sum() / x.shape[1] - 0.5)
        return torch.stack([a, -a], 1)


@pytest.fixture(scope="module")
def toy():
    region = torch.zeros(1, 1, H, H)
    region[..., 3:8, 9:14] = 1
    g = torch.Generator().manual_seed(0)
    x = 0.1 + 0.1 * torch.rand(4, 3, H, H, generator=g) + 0.7 * region
    return RegionModel(region).eval(), x, region[0, 0].bool()


def _mass_ratio(maps, region):
    """(mean saliency inside the region) / (mean saliency overall), per map."""
    m = maps.clamp_min(0)
    return (m[:, region].mean(1) / m.flatten(1).mean(1).clamp_min(1e-12))


def test_rise_finds_planted_region_better_than_random(toy):
    model, x, region = toy
    a = explain(model, x, 0, "rise", score="probability", generator=torch.Generator().manual_seed(1),
                n_masks=400, grid_size=4)
    assert a.shape == x.shape
    maps = reduce_channels(a, "mean")
    rand = torch.rand(maps.shape, generator=torch.Generator().manual_seed(2))
    assert (_mass_ratio(maps, region) > 1.15).all()
    assert (_mass_ratio(maps, region) > _mass_ratio(rand, region) + 0.1).all()
    # the same map in every channel
    assert torch.allclose(a[:, 0], a[:, 2])


def test_meaningful_perturbation_finds_planted_region(toy):
    model, x, region = toy
    a = explain(model, x, 0, "meaningful_perturbation", score="probability", n_steps=80, mask_size=8,
                blur_kernel=5, blur_sigma=2.0)
    maps = reduce_channels(a, "mean")
    assert maps.min() >= 0 and maps.max() <= 1
    inside, outside = maps[:, region].mean(1), maps[:, ~region].mean(1)
    assert (inside > outside + 0.3).all(), (inside, outside)


def test_batched_equals_one_image_at_a_time(toy):
    model, x, _ = toy
    t = torch.zeros(4, dtype=torch.long)
    kw = dict(n_masks=64, grid_size=4)
    batched = rise(model, x, t, batch_size=50, generator=torch.Generator().manual_seed(3), **kw)
    single = torch.cat([rise(model, x[i:i + 1], t[i:i + 1], batch_size=7, generator=torch.Generator().manual_seed(3), **kw)
                        for i in range(4)])
    assert torch.allclose(batched, single, atol=1e-5)
    mkw = dict(n_steps=15, mask_size=6, blur_kernel=3, blur_sigma=1.0)
    mb = meaningful_perturbation(model, x, t, batch_size=4, **mkw)
    ms = torch.cat([meaningful_perturbation(model, x[i:i + 1], t[i:i + 1], **mkw) for i in range(4)])
    assert torch.allclose(mb, ms, atol=1e-5)


def test_rise_reproducible_and_stochastic(toy):
    model, x, _ = toy
    assert "rise" in STOCHASTIC and "meaningful_perturbation" not in STOCHASTIC
    a1 = explain(model, x, 0, "rise", generator=torch.Generator().manual_seed(5), n_masks=32, grid_size=4)
    a2 = explain(model, x, 0, "rise", generator=torch.Generator().manual_seed(5), n_masks=32, grid_size=4)
    a3 = explain(model, x, 0, "rise", generator=torch.Generator().manual_seed(6), n_masks=32, grid_size=4)
    assert torch.equal(a1, a2) and not torch.allclose(a1, a3)


def test_rise_constant_model_gives_uniform_expected_map():
    class Const(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return torch.full((x.shape[0], 2), 0.5) + 0 * self.p

    x = torch.rand(2, 1, 12, 12)
    a = rise(Const(), x, torch.zeros(2, dtype=torch.long), n_masks=3000, grid_size=3, p_keep=0.5,
             interpolation="nearest", generator=torch.Generator().manual_seed(0))
    # E[s m] / (E[m]) = s = 0.5 everywhere, up to Monte-Carlo error
    assert abs(float(a.mean()) - 0.5) < 0.02 and float(a.std()) < 0.05
    per_mask = rise(Const(), x, torch.zeros(2, dtype=torch.long), n_masks=200, grid_size=3, normalization="per_mask",
                    generator=torch.Generator().manual_seed(0))
    assert per_mask.shape == x.shape and torch.isfinite(per_mask).all()


def test_rise_masks_properties():
    m = rise_masks(2000, (10, 14), grid_size=5, p_keep=0.6, generator=torch.Generator().manual_seed(0))
    assert m.shape == (2000, 10, 14) and m.min() >= 0 and m.max() <= 1
    assert abs(float(m.mean()) - 0.6) < 0.03
    b = rise_masks(50, (10, 14), grid_size=5, binarize=True, generator=torch.Generator().manual_seed(0))
    assert set(b.unique().tolist()) <= {0.0, 1.0}


def test_blur_fixed_kernel():
    x = torch.full((2, 3, 9, 9), 0.3)
    assert torch.allclose(blur_fixed_kernel(x, 5, 2.0), x)
    y = torch.rand(1, 1, 9, 9, generator=torch.Generator().manual_seed(0))
    box = torch.nn.functional.avg_pool2d(y, 3, stride=1)
    assert torch.allclose(blur_fixed_kernel(y, 3, 1e4)[..., 1:-1, 1:-1], box, atol=1e-5)
    with pytest.raises(ValueError, match="`kernel_size` must be odd"):
        blur_fixed_kernel(y, 4, 1.0)
    with pytest.raises(ValueError, match="`sigma`"):
        blur_fixed_kernel(y, 3, 0.0)


def test_bad_input(toy):
    model, x, _ = toy
    with pytest.raises(ValueError, match="unknown `method`"):
        explain(model, x, 0, "riser")
    with pytest.raises(ValueError, match="unknown `score`"):
        explain(model, x, 0, "rise", score="odds", n_masks=4)
    with pytest.raises(ValueError, match="needs image inputs"):
        rise(model, torch.rand(3, 5), torch.zeros(3, dtype=torch.long), n_masks=4)
    with pytest.raises(ValueError, match="`p_keep`"):
        rise(model, x, torch.zeros(4, dtype=torch.long), n_masks=4, p_keep=0.0)
    with pytest.raises(ValueError, match="unknown `normalization`"):
        rise(model, x, torch.zeros(4, dtype=torch.long), n_masks=4, normalization="area")
    with pytest.raises(ValueError, match="`baseline`"):
        rise(model, x, torch.zeros(4, dtype=torch.long), n_masks=4, baseline=torch.zeros(5, 5))
    with pytest.raises(ValueError, match="`lr`"):
        meaningful_perturbation(model, x, torch.zeros(4, dtype=torch.long), lr=0.0)
    with pytest.raises(ValueError, match="needs image inputs"):
        meaningful_perturbation(model, torch.rand(3, 5), torch.zeros(3, dtype=torch.long))


def test_amp_is_a_no_op_on_the_cpu_and_is_validated(toy):
    model, x, _ = toy
    t = torch.zeros(len(x), dtype=torch.long)
    for method, kw in (("rise", {"n_masks": 40, "grid_size": 4}), ("meaningful_perturbation", {"n_steps": 5, "mask_size": 4})):
        a = explain(model, x, t, method, score="probability", generator=torch.Generator().manual_seed(0), **kw)
        b = explain(model, x, t, method, score="probability", generator=torch.Generator().manual_seed(0), amp=True, **kw)
        assert torch.equal(a, b), method
        with pytest.raises(TypeError, match=r"`amp` must be a bool"):
            explain(model, x, t, method, score="probability", amp=1, **kw)
