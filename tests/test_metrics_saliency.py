"""Saliency-map metrics: SSIM vs scikit-image, deletion with blur, random baseline, BTR, Otsu-TV, Lipschitz."""

import numpy as np
import pytest
import torch
from skimage.filters import threshold_otsu
from skimage.metrics import structural_similarity

from xcal_core.metrics import (
    btr,
    deletion_area,
    deletion_curves,
    insertion_area,
    insertion_curves,
    local_lipschitz,
    otsu_tv,
    random_deletion_curves,
    saliency_maps,
    ssim,
    superpixels,
)

H = 16


class RegionModel(torch.nn.Module):
    """Two-class toy whose class-0 logit grows with the brightness inside a planted region."""

    def __init__(self, region):
        super().__init__()
        self.register_buffer("r", region)
        self.lin = torch.nn.Linear(1, 1)

    def forward(self, x):
        a = 6 * ((x * self.r).sum((1, 2, 3)) / self.r.sum() / x.shape[1] - 0.5)
        return torch.stack([a, -a], 1)


@pytest.fixture(scope="module")
def toy():
    region = torch.zeros(1, 1, H, H)
    region[..., 3:8, 9:14] = 1
    g = torch.Generator().manual_seed(0)
    x = 0.1 + 0.1 * torch.rand(6, 3, H, H, generator=g) + 0.7 * region
    return RegionModel(region).eval(), x, region[0, 0]


# ----------------------------------------------------------------------------- SSIM


@pytest.mark.parametrize("shape", [(8, 8), (16, 20)])
def test_ssim_matches_skimage(shape):
    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, *shape, generator=g)
    b = (a + 0.3 * torch.rand(3, *shape, generator=g)).clamp(0, 1)
    ours = ssim(a, b, normalize=False)
    ref = [structural_similarity(a[i].double().numpy(), b[i].double().numpy(), data_range=1.0) for i in range(3)]
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-5)
    # with normalization: skimage on min-max normalized maps
    n = saliency_maps(b * 3 + 1, normalize=True)
    ref2 = structural_similarity(saliency_maps(a)[0].double().numpy(), n[0].double().numpy(), data_range=1.0)
    assert abs(float(ssim(a, b * 3 + 1)[0]) - ref2) < 1e-5


def test_ssim_identity_constant_and_bad_input():
    m = torch.rand(4, 9, 9, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(ssim(m, m), torch.ones(4))
    const = torch.full((2, 9, 9), 0.4)
    out = ssim(const, const)
    assert torch.isfinite(out).all() and torch.allclose(out, torch.ones(2))
    assert torch.isfinite(ssim(const, m[:2])).all()
    with pytest.raises(ValueError, match="`maps_b` must have the shape"):
        ssim(m, m[:, :8])
    with pytest.raises(ValueError, match="`win_size`"):
        ssim(m[:, :5, :5], m[:, :5, :5])
    with pytest.raises(ValueError, match="`maps_a` must be saliency maps"):
        ssim(torch.rand(2, 3, 9, 9), torch.rand(2, 3, 9, 9))
    assert ssim.higher_is_better is True


def test_saliency_maps_reduction():
    a = torch.randn(2, 3, 5, 5, generator=torch.Generator().manual_seed(2))
    m = saliency_maps(a)
    assert m.shape == (2, 5, 5) and float(m.min()) == 0.0 and float(m.max()) == 1.0
    expected = a.abs().sum(1)
    expected = (expected - expected.amin((1, 2), keepdim=True)) / (expected.amax((1, 2), keepdim=True) - expected.amin((1, 2), keepdim=True))
    assert torch.allclose(m, expected, atol=1e-6)


# ----------------------------------------------------------------------------- deletion, random baseline, BTR


def test_deletion_area_perfect_lt_random_lt_inverted(toy):
    model, x, region = toy
    target = torch.zeros(6, dtype=torch.long)
    g = torch.Generator().manual_seed(3)
    perfect = region.expand(6, H, H) + 0.01 * torch.rand(6, H, H, generator=g)
    inverted = 1.0 - perfect
    rand = torch.rand(6, H, H, generator=g)
    areas = {}
    for name, maps in [("perfect", perfect), ("random", rand), ("inverted", inverted)]:
        curves, fr = deletion_curves(model, x, maps, target, kernel_size=5, sigma=10.0, batch_size=97)
        assert torch.allclose(curves[:, 0], torch.ones(6))
        areas[name] = deletion_area(curves, fr)
    assert (areas["perfect"] < areas["random"]).all() and (areas["random"] < areas["inverted"]).all()
    assert deletion_area.higher_is_better is False


def test_random_baseline_and_btr(toy):
    model, x, region = toy
    target = torch.zeros(6, dtype=torch.long)
    seg = superpixels(x, n_segments=16, method="grid")
    assert seg.shape == (6, H, H) and int(seg.max()) == 15
    curves, fr = deletion_curves(model, x, region.expand(6, H, H), target, kernel_size=5)
    rnd = random_deletion_curves(model, x, target, seg, fractions=fr, n_orders=5, kernel_size=5,
                                 generator=torch.Generator().manual_seed(4))
    assert rnd.shape == curves.shape and rnd.min() >= 0 and rnd.max() <= 1
    assert torch.allclose(rnd[:, 0], torch.ones(6))
    a_method, a_random = deletion_area(curves, fr), deletion_area(rnd, fr)
    assert btr(a_method, a_random) == 1.0
    assert btr(a_random + 1, a_random) == 0.0
    assert btr(torch.tensor([0.1, 0.5]), torch.tensor([0.2, 0.4])) == 0.5
    with pytest.raises(ValueError, match="`random_area` must have the shape"):
        btr(a_method, a_random[:3])


def test_random_curves_known_answer_constant_model():
    class Const(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return torch.tensor([[2.0, 0.0]]).expand(x.shape[0], 2) + 0 * self.p

    x = torch.rand(3, 3, 12, 12, generator=torch.Generator().manual_seed(5))
    seg = superpixels(x, n_segments=20, method="slic")
    assert seg.shape == (3, 12, 12) and all(len(seg[i].unique()) == int(seg[i].max()) + 1 for i in range(3))
    rnd = random_deletion_curves(Const(), x, 0, seg, n_orders=2, kernel_size=3, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(rnd, torch.ones_like(rnd))


def test_random_curve_x_axis_is_pixel_fraction():
    """A model scoring the fraction of untouched pixels: the random curve must be 1 - (fraction deleted)."""

    x0 = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(7))

    class Untouched(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("x0", x0)

        def forward(self, x):
            s = (x == self.x0).flatten(1).float().mean(1).clamp(1e-6, 1 - 1e-6)
            return torch.stack([torch.log(s), torch.log(1 - s)], 1)

    seg = torch.zeros(8, 8, dtype=torch.long)
    seg[:, 4:] = 1
    seg[6:, :4] = 2  # unequal segment sizes: 24, 32 and 8 pixels
    fr = torch.linspace(0, 1, 11)
    rnd = random_deletion_curves(Untouched(), x0, 0, seg, fractions=fr, n_orders=4, kernel_size=3, sigma=5.0,
                                 generator=torch.Generator().manual_seed(1))
    assert torch.allclose(rnd[0], 1 - fr, atol=1e-4)
    # scoring every second segment only coarsens the interpolation; this curve is linear, so it is exact
    rnd2 = random_deletion_curves(Untouched(), x0, 0, seg, fractions=fr, n_orders=4, kernel_size=3, sigma=5.0,
                                  generator=torch.Generator().manual_seed(1), segment_step=2)
    assert torch.allclose(rnd2[0], 1 - fr, atol=1e-4)
    with pytest.raises(ValueError, match="`segment_step`"):
        random_deletion_curves(Untouched(), x0, 0, seg, segment_step=0)


def test_insertion_area_perfect_gt_random_gt_inverted(toy):
    model, x, region = toy
    target = torch.zeros(6, dtype=torch.long)
    g = torch.Generator().manual_seed(3)
    perfect = region.expand(6, H, H) + 0.01 * torch.rand(6, H, H, generator=g)
    areas = {}
    for name, maps in [("perfect", perfect), ("random", torch.rand(6, H, H, generator=g)), ("inverted", 1 - perfect)]:
        curves, fr = insertion_curves(model, x, maps, target, kernel_size=5, sigma=10.0, batch_size=97)
        assert torch.allclose(curves[:, -1], torch.ones(6), atol=1e-5)  # everything back = the clean score
        areas[name] = insertion_area(curves, fr)
    assert (areas["perfect"] > areas["random"]).all() and (areas["random"] > areas["inverted"]).all()
    assert insertion_area.higher_is_better is True
    with pytest.raises(ValueError, match="needs `score`"):
        insertion_curves(model, x, perfect, target, score="logit")


# ----------------------------------------------------------------------------- Otsu-TV


def test_otsu_tv_disk_lt_noise_and_known_answer():
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    disk = (((yy - 16) ** 2 + (xx - 16) ** 2) < 64).float() * 0.8 + 0.05 * torch.rand(32, 32, generator=torch.Generator().manual_seed(0))
    noise = torch.rand(32, 32, generator=torch.Generator().manual_seed(1))
    tv = otsu_tv(torch.stack([disk, noise]), form="plain")
    assert tv[0] < tv[1] / 5
    half = torch.zeros(1, 6, 9)
    half[..., :4] = 1.0
    assert torch.allclose(otsu_tv(half, form="code"), torch.tensor([(1 / 8) ** 3]))
    assert torch.allclose(otsu_tv(half, form="plain"), torch.tensor([1 / 8]))
    # matches a direct skimage computation
    b = (noise.numpy() > threshold_otsu(noise.numpy())).astype(float)
    ref = np.abs(np.diff(b, axis=0)).mean() ** 3 + np.abs(np.diff(b, axis=1)).mean() ** 3
    assert abs(float(otsu_tv(noise)[0]) - ref) < 1e-6


def test_otsu_tv_constant_map_and_bad_input():
    out = otsu_tv(torch.full((2, 7, 7), 0.3))
    assert torch.equal(out, torch.zeros(2))
    with pytest.raises(ValueError, match="unknown `form`"):
        otsu_tv(torch.rand(1, 5, 5), form="cubic")
    with pytest.raises(ValueError, match="`maps` must be saliency maps"):
        otsu_tv(torch.rand(1, 3, 5, 5))


# ----------------------------------------------------------------------------- Lipschitz


def test_local_lipschitz_linear_known_constant():
    x = torch.rand(5, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    c = 2.5
    lip = local_lipschitz(None, x, 0, lambda m, xx, t: c * xx, reduce=None, normalize=False, n_neighbours=7,
                          radius=0.05, batch_size=6, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(lip, torch.full((5,), c), atol=1e-4)
    # an elementwise linear map is bounded by its largest gain
    w = torch.linspace(0.5, 3.0, 32).view(1, 2, 4, 4)
    lip_w = local_lipschitz(None, x, 0, lambda m, xx, t: w * xx, reduce=None, normalize=False, n_neighbours=20,
                            generator=torch.Generator().manual_seed(2))
    assert (lip_w <= 3.0 + 1e-4).all() and (lip_w >= 0.5).all()
    # a map that ignores its input is perfectly stable
    lip0 = local_lipschitz(None, x, 0, lambda m, xx, t: torch.ones_like(xx), normalize=False, n_neighbours=4,
                           generator=torch.Generator().manual_seed(3))
    assert torch.allclose(lip0, torch.zeros(5))


def test_local_lipschitz_bad_input():
    x = torch.rand(2, 1, 4, 4)
    with pytest.raises(TypeError, match="`explain_fn`"):
        local_lipschitz(None, x, 0, "saliency")
    with pytest.raises(ValueError, match="`radius`"):
        local_lipschitz(None, x, 0, lambda m, xx, t: xx, radius=0.0)
    with pytest.raises(ValueError, match="`target`"):
        local_lipschitz(None, x, torch.tensor([0, 1, 1]), lambda m, xx, t: xx)


def test_deletion_bad_input(toy):
    model, x, region = toy
    with pytest.raises(ValueError, match="`maps` and `x`"):
        deletion_curves(model, x, torch.rand(2, H, H), 0)
    with pytest.raises(ValueError, match="needs `score`"):
        deletion_curves(model, x, torch.rand(6, H, H), 0, score="logit")
    with pytest.raises(ValueError, match="`segments` must have shape"):
        random_deletion_curves(model, x, 0, torch.zeros(6, 5, 5, dtype=torch.long))


# ----------------------------------------------------------------------------- drivers


def test_saliency_report_and_lipschitz_report(toy):
    from xcal_core.calibration import CalibratedModel
    from xcal_core.metrics import lipschitz_report, saliency_report

    model, x, region = toy
    models = {"uncalibrated": model, "t2": CalibratedModel(model, temperature=2.0)}
    methods = {"sensitivity": {"method": "saliency"}, "rise": {"method": "rise", "n_masks": 64, "grid_size": 4}}
    masks = region.bool().expand(6, H, H)
    rep = saliency_report(models, x, methods, segments=superpixels(x, 16, "grid"), object_masks=masks,
                          n_orders=2, kernel_size=5, seed=0, reference="t2")
    df = rep.per_image
    assert len(df) == 2 * 2 * 6
    assert df.loc[df.model == "t2", "ssim"].isna().all() and df.loc[df.model == "uncalibrated", "ssim"].notna().all()
    # temperature scaling keeps the argmax; RISE with shared masks on a rescaled score gives a similar map
    assert torch.equal(rep.targets["uncalibrated"], rep.targets["t2"])
    assert df.loc[(df.model == "uncalibrated") & (df.method == "rise"), "ssim"].min() > 0.5
    assert df["mass_in_mask"].between(0, 1).all() and df["better_than_random"].isin([0.0, 1.0]).all()
    summ = rep.summary()
    assert set(summ.columns) >= {"model", "method", "btr", "deletion_area", "otsu_tv", "ssim"} and len(summ) == 4
    assert rep.curves[("t2", "rise")].shape == (6, rep.fractions.shape[0])
    lip = lipschitz_report(models, x[:2], {"sensitivity": {"method": "saliency"}}, n_neighbours=3)
    assert len(lip) == 4 and (lip.lipschitz >= 0).all()
    with pytest.raises(ValueError, match="'method' key"):
        saliency_report(models, x, {"bad": {"steps": 3}})
    with pytest.raises(ValueError, match="unknown `reference`"):
        saliency_report(models, x, methods, reference="dirichlet")


def test_a_method_spec_may_set_its_own_batch_size(toy):
    from xcal_core.metrics.saliency import _explain_spec

    model, x, _ = toy
    sizes = []
    hook = model.register_forward_hook(lambda m, inp, out: sizes.append(inp[0].shape[0]))
    try:
        spec = {"method": "meaningful_perturbation", "n_steps": 2, "mask_size": 4, "blur_kernel": 3}
        t = torch.zeros(len(x), dtype=torch.long)
        a = _explain_spec(model, x, t, spec, "probability", 0, 64)
        assert max(sizes) == len(x)  # the report's batch size: all six images optimized together
        sizes.clear()
        b = _explain_spec(model, x, t, {**spec, "batch_size": 2}, "probability", 0, 64)
        assert max(sizes) == 2  # the spec's own chunk size wins (MP back-propagates through its chunk)
        assert torch.allclose(a, b, atol=1e-5)  # and the maps do not depend on it
    finally:
        hook.remove()


def test_invariant_view_gives_an_identical_map_an_identical_score_under_two_temperatures(toy):
    """The fixed-evaluator view cannot move with T; the own-model view (the paper's form) does.

    The logit gradient of ``z / T`` is ``grad z / T``; for T = 0.5 and 2 (powers of two) the scaling is
    exact in floating point, so the min-max normalized maps of the two temperatures are bit-identical.
    """
    from xcal_core.calibration import CalibratedModel
    from xcal_core.metrics import saliency_report

    model, x, _ = toy
    models = {"T=0.5": CalibratedModel(model, temperature=0.5), "T=2": CalibratedModel(model, temperature=2.0)}
    rep = saliency_report(models, x, {"grad": {"method": "saliency"}}, scores={k: "logit" for k in models},
                          segments=superpixels(x, 16, "grid"), n_orders=2, kernel_size=5, evaluator=model)
    assert torch.equal(rep.maps[("T=0.5", "grad")], rep.maps[("T=2", "grad")])
    d = rep.per_image.set_index(["model", "image"])
    for col in ("inv_deletion_area", "inv_insertion_area", "inv_random_area", "inv_better_than_random"):
        assert np.array_equal(d.loc["T=0.5", col].to_numpy(), d.loc["T=2", col].to_numpy()), col
    # the paper's form scores each map with its own softened probability: same map, different score
    own_a, own_b = d.loc["T=0.5", "deletion_area"].to_numpy(), d.loc["T=2", "deletion_area"].to_numpy()
    assert np.abs(own_a - own_b).max() > 1e-3
    # ... and so does its random baseline (here a saturated T = 0.5 keeps the curve near 1 for longer)
    assert np.abs(d.loc["T=2", "random_area"].to_numpy() - d.loc["T=0.5", "random_area"].to_numpy()).min() > 1e-2
    # the invariant view equals scoring the maps with the evaluator directly
    curves, fr = deletion_curves(model, x, rep.maps[("T=2", "grad")], rep.targets["T=2"], kernel_size=5)
    assert np.allclose(deletion_area(curves, fr).numpy(), d.loc["T=2", "inv_deletion_area"].to_numpy())


def test_saliency_report_views_and_bad_input(toy):
    from xcal_core.calibration import CalibratedModel
    from xcal_core.metrics import saliency_report

    model, x, _ = toy
    models = {"uncalibrated": model, "t2": CalibratedModel(model, temperature=2.0)}
    seg = superpixels(x, 16, "grid")
    rep = saliency_report(models, x, {"grad": {"method": "saliency"}}, segments=seg, n_orders=2, kernel_size=5,
                          evaluator=model)
    df = rep.per_image
    u = df[df.model == "uncalibrated"]
    # the evaluator is one of the models: its own view and the invariant view coincide
    assert np.array_equal(u.deletion_area.to_numpy(), u.inv_deletion_area.to_numpy())
    assert rep.inv_random_curves["t2"] is rep.inv_random_curves["uncalibrated"]  # same classes: one baseline
    assert {"inv_btr", "btr", "inv_insertion_area"} <= set(rep.summary().columns)
    only = saliency_report(models, x, {"grad": {"method": "saliency"}}, segments=seg, n_orders=2, kernel_size=5,
                           evaluator=model, own_view=False, insertion=False)
    assert "deletion_area" not in only.per_image and "inv_insertion_area" not in only.per_image
    assert np.allclose(only.per_image.inv_deletion_area, df.inv_deletion_area)
    with pytest.raises(ValueError, match="nothing to score"):
        saliency_report(models, x, {"grad": {"method": "saliency"}}, own_view=False)
    with pytest.raises(TypeError, match="`evaluator`"):
        saliency_report(models, x, {"grad": {"method": "saliency"}}, evaluator="uncalibrated")


def test_otsu_binarize_and_deletion_stages(toy):
    from xcal_core.explainers.saliency import blur_fixed_kernel
    from xcal_core.metrics import deletion_stages, otsu_binarize

    half = torch.zeros(2, 6, 9)
    half[:, :, :4] = 1.0
    half[1] = 0.3  # constant: no foreground
    b = otsu_binarize(half)
    assert b.dtype == torch.bool and b[0, :, :4].all() and not b[0, :, 4:].any() and not b[1].any()
    model, x, region = toy
    maps = region.expand(6, H, H) + 0.01 * torch.arange(H * H).view(H, H) / (H * H)
    st = deletion_stages(x, maps, torch.tensor([0.0, 25 / (H * H), 1.0]), kernel_size=5)
    assert st.shape == (3, 6, 3, H, H)
    assert torch.equal(st[0], x)  # nothing deleted
    blurred = blur_fixed_kernel(x, 5, 10.0)
    assert torch.allclose(st[2], blurred)  # everything deleted
    changed = (st[1] != x).any(1)  # the 25 region pixels (the map's top 25) took the blurred values
    assert torch.equal(changed[0], region.bool())
    # the stage the deletion curve scores gives the curve's value at that point
    curves, fr = deletion_curves(model, x, maps, 0, kernel_size=5, step=25, normalize=False)
    with torch.no_grad():
        p = torch.softmax(model(st[1]), 1)[:, 0]
    assert torch.allclose(curves[:, 1], p, atol=1e-6)
    with pytest.raises(ValueError, match="`fractions`"):
        deletion_stages(x, maps, torch.tensor([1.5]))


def test_saliency_report_on_shared_logits_is_unchanged_and_shares_forward_passes(toy):
    from xcal_core.calibration import CalibratedModel, SharedLogits
    from xcal_core.metrics import saliency_report

    model, x, _ = toy
    methods = {"rise": {"method": "rise", "n_masks": 32, "grid_size": 4}, "grad": {"method": "saliency"}}
    kw = dict(segments=superpixels(x, 16, "grid"), n_orders=2, kernel_size=5, seed=3)
    plain = saliency_report({"u": model, "t2": CalibratedModel(model, temperature=2.0)}, x, methods, evaluator=model, **kw)
    shared = SharedLogits(model)
    rep = saliency_report({"u": shared, "t2": CalibratedModel(shared, temperature=2.0)}, x, methods, evaluator=shared, **kw)
    cols = ["deletion_area", "random_area", "inv_deletion_area", "inv_insertion_area", "ssim", "otsu_tv"]
    a, b = plain.per_image[cols].to_numpy(), rep.per_image[cols].to_numpy()
    assert np.allclose(a, b, atol=1e-6, equal_nan=True)
    # the calibrated model's RISE masks, random orders and own-view curves were all seen by the network already
    assert shared.hits > shared.misses / 2
