"""Infidelity, Faithfulness Correlation, Sensitivity-n: cross-checks with Quantus / Captum on identical
perturbations, known answers on a linear model, mask draws, errors."""

import numpy as np
import pytest
import torch
from torch import nn

from xcal_core.metrics import (
    blur_images,
    faithfulness_correlation,
    infidelity,
    masked_sums_and_deltas,
    random_masks,
    sensitivity_n,
)


def saliency(model, x, target):
    x = x.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model(x).gather(1, target[:, None]).sum(), x)
    return g


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 64, 5)).eval()
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    y = model(x).argmax(1)
    return model, x, y, saliency(model, x, y)


@pytest.fixture(scope="module")
def linear():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 4)).eval()
    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([0, 1, 2, 3, 0])
    a = saliency(model, x, y) * x  # InputXGradient: exact for a linear model and a zero baseline
    return model, x, y, a


def test_faithfulness_correlation_matches_quantus_with_recorded_draws(setup):
    quantus = pytest.importorskip("quantus")
    from quantus.functions.perturb_func import batch_baseline_replacement_by_indices

    model, x, y, a = setup
    drawn = []

    def perturb(arr, indices, **kw):
        drawn.append(indices.copy())
        return batch_baseline_replacement_by_indices(arr, indices, **kw)

    np.random.seed(0)
    metric = quantus.FaithfulnessCorrelation(nr_runs=20, subset_size=10, return_aggregate=False, perturb_func=perturb, disable_warnings=True)
    q = np.asarray(metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a.numpy(), channel_first=True, device="cpu"))
    masks = torch.zeros(20, 6, 64, dtype=torch.bool)
    for j, idx in enumerate(drawn):
        masks[j].scatter_(1, torch.as_tensor(idx), True)
    black = x.reshape(6, -1).min(1).values.view(6, 1, 1, 1)  # Quantus' "black" = per-sample minimum
    ours = faithfulness_correlation(model, x, y, a, masks=masks.view(20, 6, 1, 8, 8), baseline=black)
    np.testing.assert_allclose(ours.numpy(), q, rtol=1e-4, atol=1e-5)


def test_infidelity_matches_quantus_patch_sweep(setup):
    quantus = pytest.importorskip("quantus")
    model, x, y, a = setup
    # Quantus replaces 2x2 patches cumulatively in raster order and weights by x - x_perturbed
    steps, cur = [], torch.zeros(6, 8, 8, dtype=torch.bool)
    for bi in range(4):
        for bj in range(4):
            cur = cur.clone()
            cur[:, 2 * bi : 2 * bi + 2, 2 * bj : 2 * bj + 2] = True
            steps.append(cur)
    black = x.reshape(6, -1).min(1).values.view(6, 1, 1, 1)
    ours = infidelity(model, x, y, a, masks=torch.stack(steps), baseline=black, weighting="difference", normalize=False)
    q = quantus.Infidelity(perturb_patch_sizes=[2], n_perturb_samples=1, disable_warnings=True)(
        model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a.numpy(), channel_first=True, device="cpu"
    )
    np.testing.assert_allclose(ours.numpy(), np.asarray(q), rtol=1e-4, atol=1e-9)


def test_infidelity_matches_captum_with_yeh_normalization(setup):
    captum_infidelity = pytest.importorskip("captum.metrics").infidelity
    model, x, y, a = setup
    m = 25
    masks = random_masks(m, 6, (8, 8), 0.2, generator=torch.Generator().manual_seed(3))

    def perturb(inputs):  # captum repeats each input m times, sample-major
        mm = masks.permute(1, 0, 2, 3).reshape(-1, 1, 8, 8).float()
        return inputs * mm, inputs * (1 - mm)

    ref = captum_infidelity(model, perturb, x, a, target=y, n_perturb_samples=m, normalize=True)
    ours = infidelity(model, x, y, a, masks=masks, baseline="zero", weighting="difference", normalize=True)
    torch.testing.assert_close(ours, ref.float(), rtol=1e-4, atol=1e-9)


def test_known_answers_on_linear_model(linear):
    model, x, y, a = linear
    kw = dict(baseline="zero", n_samples=40, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(infidelity(model, x, y, a, **kw), torch.zeros(5), atol=1e-9)
    assert torch.allclose(faithfulness_correlation(model, x, y, a, **kw), torch.ones(5), atol=1e-5)
    sn = sensitivity_n(model, x, y, a, ns=[1, 4, 16, 32], n_samples=30, generator=torch.Generator().manual_seed(1))
    assert sn.shape == (5, 4) and torch.allclose(sn, torch.ones_like(sn), atol=1e-5)
    # the negated map is perfectly anti-correlated; Yeh's rescaling (beta = -1) makes it faithful again
    assert torch.allclose(faithfulness_correlation(model, x, y, -a, **kw), -torch.ones(5), atol=1e-5)
    assert torch.allclose(infidelity(model, x, y, -a, **kw), torch.zeros(5), atol=1e-9)
    assert float(infidelity(model, x, y, -a, normalize=False, **kw).min()) > 0


def test_generator_matches_random_masks_and_masks_have_exact_area(setup):
    model, x, y, a = setup
    masks = random_masks(30, 6, (8, 8), 0.2, generator=torch.Generator().manual_seed(4))
    assert masks.shape == (30, 6, 8, 8) and torch.all(masks.flatten(2).sum(-1) == 12)
    ours = infidelity(model, x, y, a, n_samples=30, share=0.2, generator=torch.Generator().manual_seed(4), batch_size=7)
    torch.testing.assert_close(ours, infidelity(model, x, y, a, masks=masks))
    groups = torch.arange(64).view(8, 8) // 4  # 16 groups of 4 pixels
    gm = random_masks(10, 2, (8, 8), 0.25, feature_mask=groups, generator=torch.Generator().manual_seed(0))
    assert torch.all(gm.flatten(2).sum(-1) == 16)
    assert torch.all(gm.view(10, 2, 16, 4).float().std(-1) == 0)  # whole groups


def test_stacked_maps_share_masks_and_scores(setup):
    model, x, y, a = setup
    maps = torch.stack([a[:, 0].abs(), a[:, 0].clamp_min(0)], dim=1)  # (N, 2, H, W)
    kw = dict(n_samples=15, generator=torch.Generator().manual_seed(5))
    s, d = masked_sums_and_deltas(model, x, y, maps, stacked=True, **kw)
    s0, d0 = masked_sums_and_deltas(model, x, y, maps[:, 0], **dict(kw, generator=torch.Generator().manual_seed(5)))
    assert s.shape == (6, 15, 2) and d.shape == (6, 15)
    torch.testing.assert_close(s[..., 0], s0)
    torch.testing.assert_close(d, d0)


def test_blur_baseline_properties():
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    b = blur_images(x, 1.0)
    assert b.shape == x.shape
    torch.testing.assert_close(b.mean((2, 3)), x.mean((2, 3)), atol=0.05, rtol=0)
    assert float(b.std()) < float(x.std())
    const = torch.full((1, 1, 5, 5), 0.3)
    torch.testing.assert_close(blur_images(const, 2.0), const)


def test_bad_inputs(setup):
    model, x, y, a = setup
    with pytest.raises(ValueError, match="shaped like one input"):
        infidelity(model, x, y, torch.zeros(6, 3, 8, 8), n_samples=2)
    with pytest.raises(ValueError, match="pass `attributions`"):
        infidelity(model, x, y, n_samples=2)
    with pytest.raises(ValueError, match="NaN"):
        faithfulness_correlation(model, x, y, torch.full_like(a, float("nan")), n_samples=2)
    with pytest.raises(ValueError, match="masks"):
        infidelity(model, x, y, a, masks=torch.ones(3, 6, 4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="share"):
        infidelity(model, x, y, a, share=0.0)
    with pytest.raises(ValueError, match="baseline"):
        infidelity(model, x, y, a, baseline="noise")
    with pytest.raises(ValueError, match="weighting"):
        infidelity(model, x, y, a, weighting="area")
    with pytest.raises(ValueError, match="blur"):
        infidelity(nn.Linear(4, 2), torch.rand(3, 4), 0, torch.rand(3, 4), n_samples=2)
    with pytest.raises(ValueError, match="ns"):
        sensitivity_n(model, x, y, a, ns=[])
    with pytest.raises(ValueError, match="n_features"):
        sensitivity_n(model, x, y, a, ns=[65])
    with pytest.raises(ValueError, match="target"):
        infidelity(model, x, torch.tensor([0, 9, 0, 0, 0, 0]), a, n_samples=2)
    assert infidelity.higher_is_better is False and faithfulness_correlation.higher_is_better is True
