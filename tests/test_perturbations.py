"""Coalition masks, levels from masks, level bins (incl. unachievable ones), baselines."""

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from xcal_core.perturbations import (
    achievable_counts,
    apply_coalitions,
    bin_edges,
    count_features,
    empty_bins,
    gaussian_blur,
    level_to_bin,
    make_baseline,
    patch_feature_mask,
    perturbation_level,
    perturbed_logits,
    sample_keep_masks,
    sample_keep_masks_in_bin,
    sample_keep_masks_per_bin,
    superpixel_feature_mask,
    tabular_feature_mask,
)

def _close(a, b, rtol=1.3e-6, atol=1e-5):
    """assert_close without torch.testing's slow first-call import."""
    a, b = torch.as_tensor(a), torch.as_tensor(b).to(torch.as_tensor(a).dtype)
    assert a.shape == b.shape and torch.allclose(a, b, rtol=rtol, atol=atol), f"{a} != {b}"



def test_feature_masks():
    assert tabular_feature_mask(4).tolist() == [0, 1, 2, 3]
    fm = patch_feature_mask(4, 4, 2)
    assert fm.tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]
    fm = patch_feature_mask(5, 3, (2, 2))  # ragged border patches
    assert count_features(fm) == 3 * 2 and fm[4, 2] == 5
    img = torch.zeros(2, 3, 16, 16)
    img[0, :, :, 8:] = 1.0  # two flat halves -> SLIC separates them
    sp = superpixel_feature_mask(img, n_segments=4, compactness=10.0)
    assert sp.shape == (2, 16, 16) and sp.dtype == torch.long
    assert int(sp[0].max()) + 1 == len(torch.unique(sp[0]))
    assert not (set(sp[0, :, :8].unique().tolist()) & set(sp[0, :, 8:].unique().tolist()))


def test_level_from_mask_not_from_pixels():
    keep = torch.tensor([[True, True, True, True], [False, True, False, True], [False] * 4])
    _close(perturbation_level(keep), torch.tensor([0.0, 0.5, 1.0]))
    # replacing zero-valued pixels by a zero baseline changes no pixel, but the level is still 1/2
    x = torch.zeros(1, 4, 4)
    pert = apply_coalitions(x, keep[1:2], patch_feature_mask(4, 4, 2), torch.zeros(1, 4, 4))
    assert torch.equal(pert[0], x)
    assert float(perturbation_level(keep[1:2])) == 0.5
    with pytest.raises(TypeError, match="bool"):
        perturbation_level(torch.ones(2, 3))


def test_level_bins_and_edges():
    d = 10
    levels = torch.arange(d + 1) / d
    assert level_to_bin(levels, 10).tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9]  # 3/10 -> bin 3 despite round-off
    assert level_to_bin(torch.tensor([0.0, 0.499, 0.5, 1.0]), 2).tolist() == [0, 0, 1, 1]
    _close(bin_edges(4), torch.tensor([0, 0.25, 0.5, 0.75, 1.0], dtype=torch.float64))
    with pytest.raises(ValueError, match=r"`levels` must be in \[0, 1\]"):
        level_to_bin(torch.tensor([1.5]), 10)


def test_unachievable_bins_are_explicit():
    # d = 7: levels 0, 1/7=.14, 2/7=.29, 3/7=.43, 4/7=.57, 5/7=.71, 6/7=.86, 1
    counts = achievable_counts(7, 10)
    assert counts[3] == [] and counts[0] == [0] and counts[9] == [7]
    assert empty_bins(7, 10) == [3, 6]  # [.3,.4) and [.6,.7) hold no k/7
    with pytest.raises(ValueError, match="bin 3 of 10 .* no achievable level"):
        sample_keep_masks_in_bin(7, 5, 3, 10)
    keep, bins = sample_keep_masks_per_bin(7, 4, 10, generator=torch.Generator().manual_seed(0))
    assert keep.shape == (8 * 4, 7)
    assert set(bins.tolist()) == set(range(10)) - {3, 6}
    assert torch.equal(level_to_bin(perturbation_level(keep), 10), bins)


def test_sampled_masks_have_the_right_level_and_are_uniform():
    g = torch.Generator().manual_seed(1)
    keep = sample_keep_masks(8, 4000, 0.25, generator=g)
    assert torch.all(perturbation_level(keep) == 0.25)
    # each feature is replaced with probability 2/8
    freq = (~keep).float().mean(0)
    assert torch.allclose(freq, torch.full((8,), 0.25), atol=0.03)
    keep_b = sample_keep_masks_in_bin(20, 3000, 4, 10, generator=g)  # bin [.4,.5): k in {8, 9}
    ks = (~keep_b).sum(1)
    assert set(ks.unique().tolist()) == {8, 9}
    assert abs(float((ks == 8).float().mean()) - 0.5) < 0.05


def test_baselines():
    x = torch.rand(3, 2, 9, 9, generator=torch.Generator().manual_seed(2))
    assert torch.equal(make_baseline(x, "zero"), torch.zeros_like(x))
    mean = x.mean(0)
    assert torch.equal(make_baseline(x, "mean", train_mean=mean)[1], mean)
    blurred = make_baseline(x, "blur", sigma=1.0)
    ref = np.stack([[gaussian_filter(c, sigma=1.0, mode="mirror", truncate=3.0) for c in img] for img in x.double().numpy()])
    np.testing.assert_allclose(blurred.numpy(), ref, atol=1e-5)
    assert blurred.min() >= 0 and blurred.max() <= 1
    assert torch.equal(gaussian_blur(x[0], 1.0), blurred[0])
    noisy = make_baseline(x, "noise", noise_std=0.1, generator=torch.Generator().manual_seed(3))
    again = make_baseline(x, "noise", noise_std=0.1, generator=torch.Generator().manual_seed(3))
    assert torch.equal(noisy, again) and not torch.equal(noisy, x) and noisy.min() >= 0
    with pytest.raises(ValueError, match="`train_mean` is required"):
        make_baseline(x, "mean")
    with pytest.raises(ValueError, match="unknown `kind`"):
        make_baseline(x, "gray")
    with pytest.raises(ValueError, match="needs images"):
        make_baseline(torch.rand(4, 3), "blur")


def test_apply_coalitions_and_perturbed_logits():
    x = torch.arange(1.0, 5.0)
    keep = torch.tensor([[True, False, True, False]])
    out = apply_coalitions(x, keep, tabular_feature_mask(4), torch.full((4,), -1.0))
    assert out.tolist() == [[1.0, -1.0, 3.0, -1.0]]
    img = torch.ones(2, 4, 4)
    out = apply_coalitions(img, torch.tensor([[True, False, False, True]]), patch_feature_mask(4, 4, 2), torch.zeros(2, 4, 4))
    assert out.shape == (1, 2, 4, 4) and float(out.sum()) == 2 * 8  # two kept patches, both channels

    model = torch.nn.Linear(5, 3)
    xs = torch.randn(6, 5)
    g = torch.Generator().manual_seed(4)
    logits, idx, lv = perturbed_logits(model, xs, tabular_feature_mask(5), torch.zeros(5), n_per_bin=2, n_bins=10, generator=g, batch_size=7)
    n_bins_used = 10 - len(empty_bins(5, 10))
    assert logits.shape == (6 * 2 * n_bins_used, 3) and idx.tolist() == sorted(idx.tolist())
    assert set(level_to_bin(lv, 10).tolist()) == set(range(10)) - set(empty_bins(5, 10))
    logits2, _, lv2 = perturbed_logits(model, xs, tabular_feature_mask(5), 0.0, levels=[0.0, 0.6], n_per_level=3, generator=g)
    assert logits2.shape == (36, 3) and set(lv2.tolist()) == {0.0, 0.6000000238418579}
    clean = logits2.reshape(6, 6, 3)[:, 0]
    _close(clean, model(xs).detach())
    with pytest.raises(ValueError, match="`baseline`"):
        perturbed_logits(model, xs, tabular_feature_mask(5), torch.zeros(4))
    with pytest.raises(ValueError, match="ids must be 0..d-1"):
        perturbed_logits(model, xs, torch.tensor([0, 1, 3, 3, 4]), 0.0)
