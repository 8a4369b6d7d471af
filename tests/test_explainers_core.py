"""Tests of xcal_core.explainers.core: explain() and the gradient / CAM / occlusion / LRP methods.

Native methods are cross-checked against Captum 0.9 (or a manual computation with the same noise
draws) on small models built here, plus properties (IG and DeepLift completeness, temperature
scaling) and every documented error.
"""

import pytest
import torch
from torch import nn

from xcal_core.explainers import (
    ScoreModel,
    available_methods,
    explain,
    ig_alphas_weights,
    normalize_attributions,
    reduce_channels,
)
from xcal_core.explainers._registry import NEEDS_LAYER, STOCHASTIC

captum_attr = pytest.importorskip("captum.attr")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models gain nothing from 2 threads, and lose a lot when the cores are shared."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class TinyCNN(nn.Module):
    """Conv -> ReLU -> Conv -> ReLU -> MaxPool -> Flatten -> Linear, each ReLU its own module."""

    def __init__(self, c=3, k=5, hw=8, seed=0, pool=nn.MaxPool2d):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.features = nn.Sequential(
            nn.Conv2d(c, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), pool(2)
        )
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(8 * (hw // 2) ** 2, k)
        for p in self.parameters():  # deterministic init, larger weights -> non-trivial outputs
            p.data = torch.randn(p.shape, generator=g) * 0.25
        self.cam_layer = "features.2"

    def forward(self, x):
        return self.fc(self.flatten(self.features(x)))


class TinyMLP(nn.Module):
    def __init__(self, d=6, k=3, bias=True, seed=1):
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(d, 16, bias=bias), nn.ReLU(), nn.Linear(16, k, bias=bias))

    def forward(self, x):
        return self.net(x)


class Scaled(nn.Module):
    """A model whose logits are divided by a temperature (argmax and ranking preserved)."""

    def __init__(self, model, t):
        super().__init__()
        self.model, self.t = model, t

    def forward(self, x):
        return self.model(x) / self.t


@pytest.fixture(scope="module")
def cnn():
    return TinyCNN().eval()


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 8, 8, generator=g)
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    return x, y


def close(a, b, rtol=1e-4, atol=1e-5):
    torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


# --------------------------------------------------------------------------------------------
# registry / bookkeeping
# --------------------------------------------------------------------------------------------
def test_available_methods_filters():
    names = available_methods()
    core = {"saliency", "gradient", "input_x_gradient", "integrated_gradients", "smoothgrad", "vargrad",
            "gradient_shap", "guided_backprop", "deconvolution", "deeplift", "gradcam", "guided_gradcam",
            "occlusion", "lrp"}
    assert core <= set(names) and names == sorted(names)
    assert {"smoothgrad", "vargrad", "gradient_shap"} <= set(available_methods(stochastic=True))
    assert not set(available_methods(stochastic=True)) & set(available_methods(stochastic=False))
    assert {"gradcam", "guided_gradcam"} <= set(available_methods(needs_layer=True))
    assert set(available_methods(stochastic=True)) == STOCHASTIC & set(names)
    assert set(available_methods(needs_layer=True)) == NEEDS_LAYER & set(names)


# --------------------------------------------------------------------------------------------
# gradient family vs Captum
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("abs_", [True, False])
def test_saliency_matches_captum(cnn, data, abs_):
    x, y = data
    ours = explain(cnn, x, y, "saliency", abs=abs_)
    ref = captum_attr.Saliency(cnn).attribute(x.clone().requires_grad_(), target=y, abs=abs_)
    close(ours, ref)
    if abs_:
        assert (ours >= 0).all()


def test_gradient_and_input_x_gradient_match_captum(cnn, data):
    x, y = data
    g = explain(cnn, x, y, "gradient")
    close(g, captum_attr.Saliency(cnn).attribute(x.clone().requires_grad_(), target=y, abs=False))
    ixg = explain(cnn, x, y, "input_x_gradient", batch_size=4)
    close(ixg, captum_attr.InputXGradient(cnn).attribute(x.clone().requires_grad_(), target=y))
    close(ixg, x * g)


@pytest.mark.parametrize("rule", ["gausslegendre", "riemann_left", "riemann_right", "riemann_middle"])
def test_integrated_gradients_matches_captum(cnn, data, rule):
    x, y = data
    ours = explain(cnn, x, y, "integrated_gradients", steps=16, rule=rule, batch_size=7)
    ref = captum_attr.IntegratedGradients(cnn).attribute(
        x.clone().requires_grad_(), baselines=torch.zeros_like(x), target=y, n_steps=16, method=rule
    )
    close(ours, ref, rtol=1e-4, atol=1e-5)


def test_ig_black_white_and_mean_baselines(cnn, data):
    x, y = data
    ig = captum_attr.IntegratedGradients(cnn)
    xr = x.clone().requires_grad_()
    black = ig.attribute(xr, baselines=torch.zeros_like(x), target=y, n_steps=12)
    white = ig.attribute(xr, baselines=torch.ones_like(x), target=y, n_steps=12)
    close(explain(cnn, x, y, "integrated_gradients", steps=12, baseline="black_white"), (black + white) / 2)
    close(explain(cnn, x, y, "integrated_gradients", steps=12, baseline="white"), white)
    mean = x.mean(0)
    ref = ig.attribute(xr, baselines=mean.expand_as(x).contiguous(), target=y, n_steps=12)
    close(explain(cnn, x, y, "integrated_gradients", steps=12, baseline="mean", baseline_value=mean), ref)
    close(explain(cnn, x, y, "integrated_gradients", steps=12, baseline=0.5),
          ig.attribute(xr, baselines=0.5, target=y, n_steps=12))


def test_ig_black_white_abs_is_the_mean_of_the_two_absolute_maps(cnn, data):
    """combine="abs" (the C2I code): |map| of each reference, then the mean; not |mean of signed maps|."""
    x, y = data
    kw = dict(steps=12, rule="riemann_left")
    black = explain(cnn, x, y, "integrated_gradients", baseline="black", **kw)
    white = explain(cnn, x, y, "integrated_gradients", baseline="white", **kw)
    both = explain(cnn, x, y, "integrated_gradients", baseline="black_white", combine="abs", **kw)
    close(both, (black.abs() + white.abs()) / 2)
    assert bool((both >= 0).all())
    signed = explain(cnn, x, y, "integrated_gradients", baseline="black_white", **kw)
    close(signed, (black + white) / 2)
    # the two references disagree in sign somewhere, so the signed mean loses mass the abs mean keeps
    assert float(signed.abs().sum()) < float(both.sum()) - 1e-3
    close(explain(cnn, x, y, "integrated_gradients", baseline="white", combine="abs", **kw), white.abs())
    with pytest.raises(ValueError, match="combine"):
        explain(cnn, x, y, "integrated_gradients", baseline="black_white", combine="max", **kw)


@pytest.mark.parametrize("rule", ["gausslegendre", "riemann_trapezoid"])
def test_ig_completeness(cnn, data, rule):
    """sum(attr) = f(x) - f(baseline) up to the quadrature error (Sundararajan et al., Prop. 1)."""
    x, y = data
    attr = explain(cnn, x, y, "integrated_gradients", steps=128, rule=rule)
    with torch.no_grad():
        gap = cnn(x).gather(1, y[:, None]).squeeze(1) - cnn(torch.zeros_like(x)).gather(1, y[:, None]).squeeze(1)
    torch.testing.assert_close(attr.sum((1, 2, 3)), gap, rtol=2e-2, atol=2e-2 * float(gap.abs().max()))
    # with few steps the left Riemann sum is clearly worse than Gauss-Legendre
    err = {}
    for r in ("gausslegendre", "riemann_left"):
        a = explain(cnn, x, y, "integrated_gradients", steps=4, rule=r)
        err[r] = float((a.sum((1, 2, 3)) - gap).abs().mean())
    assert err["gausslegendre"] < err["riemann_left"]


def test_ig_quadrature_weights():
    for rule in ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid"):
        a, w = ig_alphas_weights(9, rule)
        assert a.shape == w.shape == (9,)
        assert float(w.sum()) == pytest.approx(1.0)
        assert float(a.min()) >= 0 and float(a.max()) <= 1
        # integrates a cubic exactly (GL) or approximately (Riemann): int_0^1 a^3 = 1/4
        assert float((w * a**3).sum()) == pytest.approx(0.25, abs=0.1)
    a, _ = ig_alphas_weights(5, "riemann_left")
    assert torch.allclose(a, torch.tensor([0, 0.2, 0.4, 0.6, 0.8], dtype=torch.float64))


def test_smoothgrad_and_vargrad_match_manual_captum(cnn, data):
    """Same noise draws (one (N, ...) standard normal per draw) -> NoiseTunnel(Saliency) semantics."""
    x, y = data
    n_samples, level = 7, 0.2
    sigma = level * (x.flatten(1).amax(1) - x.flatten(1).amin(1))
    g = torch.Generator().manual_seed(3)
    noise = [torch.randn(x.shape, generator=g) for _ in range(n_samples)]
    sal = captum_attr.Saliency(cnn)
    grads = torch.stack([
        sal.attribute((x + sigma.view(-1, 1, 1, 1) * e).requires_grad_(), target=y, abs=False) for e in noise
    ])
    kw = dict(n_samples=n_samples, noise_level=level, batch_size=10)
    sg = explain(cnn, x, y, "smoothgrad", generator=torch.Generator().manual_seed(3), **kw)
    close(sg, grads.mean(0))
    sg_abs = explain(cnn, x, y, "smoothgrad", generator=torch.Generator().manual_seed(3), abs=True, **kw)
    close(sg_abs, grads.abs().mean(0))
    sg_sq = explain(cnn, x, y, "smoothgrad", generator=torch.Generator().manual_seed(3), squared=True, **kw)
    close(sg_sq, (grads**2).mean(0))
    vg = explain(cnn, x, y, "vargrad", generator=torch.Generator().manual_seed(3), **kw)
    close(vg, grads.var(0, unbiased=False), atol=1e-5, rtol=1e-3)
    # absolute stdev: same as Captum's NoiseTunnel(stdevs=...) formula
    g = torch.Generator().manual_seed(4)
    e = torch.randn(x.shape, generator=g)
    ref = sal.attribute((x + 0.05 * e).requires_grad_(), target=y, abs=False)
    close(explain(cnn, x, y, "smoothgrad", n_samples=1, stdev=0.05, generator=torch.Generator().manual_seed(4)), ref)


def test_smoothgrad_close_to_captum_noise_tunnel_in_expectation(cnn, data):
    x, y = data
    ours = explain(cnn, x, y, "smoothgrad", n_samples=400, stdev=0.05, abs=True,
                   generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    ref = captum_attr.NoiseTunnel(captum_attr.Saliency(cnn)).attribute(
        x.clone().requires_grad_(), nt_type="smoothgrad", nt_samples=400, stdevs=0.05, target=y,
        nt_samples_batch_size=1200)
    rel = float((ours - ref).norm() / ref.norm())
    assert rel < 0.1


def test_gradient_shap_manual_draws_and_expectation(cnn, data):
    x, y = data
    n = x.shape[0]
    # manual computation with the documented draw order: baseline index, alpha, (noise)
    g = torch.Generator().manual_seed(5)
    dist = torch.stack([torch.zeros_like(x), torch.ones_like(x)])
    sal = captum_attr.Saliency(cnn)
    acc = torch.zeros_like(x)
    for _ in range(3):
        idx = torch.randint(2, (n,), generator=g)
        alpha = torch.rand((n,), generator=g).view(-1, 1, 1, 1)
        b = dist[idx, torch.arange(n)]
        acc += (x - b) * sal.attribute((b + alpha * (x - b)).requires_grad_(), target=y, abs=False)
    ours = explain(cnn, x, y, "gradient_shap", n_samples=3, generator=torch.Generator().manual_seed(5), batch_size=5)
    close(ours, acc / 3)
    # E over alpha with one baseline = integrated gradients
    gs = explain(cnn, x, y, "gradient_shap", n_samples=600, baseline="zero", generator=torch.Generator().manual_seed(0))
    ig = explain(cnn, x, y, "integrated_gradients", steps=64)
    assert float((gs - ig).norm() / ig.norm()) < 0.1


def test_stochastic_methods_deterministic_with_generator(cnn, data):
    x, y = data
    for m in ("smoothgrad", "vargrad", "gradient_shap"):
        a = explain(cnn, x, y, m, n_samples=5, generator=torch.Generator().manual_seed(11))
        b = explain(cnn, x, y, m, n_samples=5, generator=torch.Generator().manual_seed(11), batch_size=4)
        c = explain(cnn, x, y, m, n_samples=5, generator=torch.Generator().manual_seed(12))
        close(a, b)
        assert not torch.allclose(a, c)
    state = torch.get_rng_state()
    explain(cnn, x, y, "smoothgrad", n_samples=3)  # no generator: fresh one, global RNG untouched
    assert torch.equal(state, torch.get_rng_state())


# --------------------------------------------------------------------------------------------
# propagation methods, CAM, occlusion, LRP
# --------------------------------------------------------------------------------------------
def test_guided_backprop_deconvolution_deeplift_match_captum(cnn, data):
    x, y = data
    xr = x.clone().requires_grad_()
    close(explain(cnn, x, y, "guided_backprop", batch_size=4), captum_attr.GuidedBackprop(cnn).attribute(xr, target=y))
    close(explain(cnn, x, y, "deconvolution"), captum_attr.Deconvolution(cnn).attribute(xr, target=y))
    dl = explain(cnn, x, y, "deeplift")
    close(dl, captum_attr.DeepLift(cnn).attribute(xr, baselines=torch.zeros_like(x), target=y))
    # summation-to-delta (Captum's max-pool rule does not conserve it, so check on average pooling)
    avg = TinyCNN(pool=nn.AvgPool2d).eval()
    for baseline, b in (("zero", torch.zeros_like(x)), (0.3, torch.full_like(x, 0.3))):
        dl = explain(avg, x, y, "deeplift", baseline=baseline)
        with torch.no_grad():
            gap = avg(x).gather(1, y[:, None]).squeeze(1) - avg(b).gather(1, y[:, None]).squeeze(1)
        torch.testing.assert_close(dl.sum((1, 2, 3)), gap, rtol=1e-3, atol=1e-3)


def test_deeplift_reused_relu_raises():
    relu = nn.ReLU()
    m = nn.Sequential(nn.Linear(4, 5), relu, nn.Linear(5, 5), relu, nn.Linear(5, 2)).eval()
    with pytest.raises(ValueError, match="nn.ReLU module used once"):
        explain(m, torch.rand(3, 4), 0, "deeplift")


@pytest.mark.parametrize("score", ["logit", "probability"])
def test_gradcam_matches_captum_layer_gradcam(cnn, data, score):
    x, y = data
    ours = explain(cnn, x, y, "gradcam", score=score, batch_size=4)
    sm = ScoreModel(cnn, score)
    ref = captum_attr.LayerGradCam(sm, cnn.features[2]).attribute(x, target=y, relu_attributions=True)
    ref = captum_attr.LayerAttribution.interpolate(ref, (8, 8), interpolate_mode="bilinear")
    assert ours.shape == x.shape
    for c in range(3):  # broadcast over channels
        close(ours[:, c : c + 1], ref)
    assert (ours >= 0).all() and ours.abs().sum() > 0
    # explicit layer by name or module gives the same
    close(explain(cnn, x, y, "gradcam", score=score, layer="features.2"), ours)
    close(explain(cnn, x, y, "gradcam", score=score, layer=cnn.features[2]), ours)


def test_guided_gradcam_matches_captum(cnn, data):
    x, y = data
    ours = explain(cnn, x, y, "guided_gradcam", upsample="nearest")
    ref = captum_attr.GuidedGradCam(cnn, cnn.features[2]).attribute(x.clone().requires_grad_(), target=y)
    close(ours, ref)


@pytest.mark.parametrize("window,stride", [(2, 2), (3, 2), ((2, 4), (1, 2))])
def test_occlusion_matches_captum(cnn, data, window, stride):
    x, y = data
    ours = explain(cnn, x, y, "occlusion", window=window, stride=stride, baseline=0.25, batch_size=13)
    w = (window, window) if isinstance(window, int) else window
    s = (stride, stride) if isinstance(stride, int) else stride
    ref = captum_attr.Occlusion(cnn).attribute(
        x, target=y, sliding_window_shapes=(3,) + w, strides=(3,) + s, baselines=0.25, perturbations_per_eval=8)
    close(ours, ref, rtol=1e-4, atol=1e-5)


def test_occlusion_tabular_and_per_channel():
    m = TinyMLP().eval()
    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(2))
    ours = explain(m, x, 1, "occlusion", window=2, stride=1)
    ref = captum_attr.Occlusion(m).attribute(x, target=1, sliding_window_shapes=(2,), strides=(1,), baselines=0.0)
    close(ours, ref)
    cnn = TinyCNN().eval()
    xi = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    ours = explain(cnn, xi, 0, "occlusion", window=(1, 4, 4), stride=(1, 4, 4))
    ref = captum_attr.Occlusion(cnn).attribute(xi, target=0, sliding_window_shapes=(1, 4, 4), strides=(1, 4, 4))
    close(ours, ref)


def test_lrp_matches_captum_and_conserves_relevance(cnn, data):
    # MLP: every leaf has a Captum rule -> identical to Captum's LRP
    m = TinyMLP(bias=False).eval()
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(0))
    ours = explain(m, x, 2, "lrp")
    close(ours, captum_attr.LRP(m).attribute(x.clone().requires_grad_(), target=2))
    with torch.no_grad():  # bias-free ReLU net: relevance sums to the logit
        close(ours.sum(1), m(x)[:, 2], rtol=1e-4, atol=1e-4)
    # CNN with nn.Flatten (no Captum rule): runs, and leaves no `rule` attribute behind
    xc, yc = data
    a = explain(cnn, xc, yc, "lrp")
    assert a.shape == xc.shape and torch.isfinite(a).all()
    assert not any(hasattr(mod, "rule") for mod in cnn.modules())


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.relu, self.fc2, self.head = nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        return self.head(x + self.fc2(self.relu(self.fc1(x))))


def test_lrp_rejects_skip_connections():
    with pytest.raises(ValueError, match="lrp needs a sequential model.*'fc2'|lrp needs a sequential model.*'head'"):
        explain(Residual().eval(), torch.rand(3, 4), 0, "lrp")


# --------------------------------------------------------------------------------------------
# score, dtype, device, modes
# --------------------------------------------------------------------------------------------
def test_score_probability_and_temperature(cnn, data):
    x, y = data
    t = 2.5
    hot = Scaled(cnn, t).eval()
    # logit attributions of z/T are exactly 1/T times those of z (argmax-preserving rescaling) ...
    close(explain(hot, x, y, "gradient"), explain(cnn, x, y, "gradient") / t)
    close(explain(hot, x, y, "integrated_gradients", steps=8), explain(cnn, x, y, "integrated_gradients", steps=8) / t)
    # ... but probability attributions change in a non-proportional way
    gp = explain(cnn, x, y, "gradient", score="probability")
    gph = explain(hot, x, y, "gradient", score="probability")
    ratio = (gph / gp)[gp.abs() > 1e-6]
    assert float(ratio.std()) > 1e-3
    # the probability score equals the softmax chain rule: dp_c = p_c (dz_c - sum_k p_k dz_k)
    with torch.no_grad():
        p = torch.softmax(cnn(x), 1)
    jac = torch.stack([explain(cnn, x, k, "gradient") for k in range(5)], 1)  # (N, K, C, H, W)
    pc = p.gather(1, y[:, None]).view(-1, 1, 1, 1)
    expected = pc * (jac[torch.arange(6), y] - (p.view(6, 5, 1, 1, 1) * jac).sum(1))
    close(gp, expected, rtol=1e-3, atol=1e-6)
    # log-probability IG completeness
    ig = explain(cnn, x, y, "integrated_gradients", score="log_probability", steps=64)
    with torch.no_grad():
        lp = torch.log_softmax(cnn(x), 1).gather(1, y[:, None]).squeeze(1)
        lb = torch.log_softmax(cnn(torch.zeros_like(x)), 1).gather(1, y[:, None]).squeeze(1)
    torch.testing.assert_close(ig.sum((1, 2, 3)), lp - lb, rtol=2e-2, atol=2e-2)


def test_dtype_device_detached_and_modes_restored():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 3))
    m.train()
    x = torch.rand(4, 3, 2, 2, dtype=torch.float64)
    a = explain(m, x, torch.tensor([0, 1, 2, 0]), "saliency")
    assert a.dtype == torch.float32 and a.device == x.device and a.shape == x.shape and not a.requires_grad
    assert m.training and m[3].training  # modes restored
    # it ran in eval mode: deterministic and equal to the eval-mode result
    m_eval = m.eval()
    b = explain(m_eval, x.float(), torch.tensor([0, 1, 2, 0]), "saliency")
    close(a, b)
    # MC-dropout recipe: model in eval, dropout switched to train -> left stochastic
    m[3].train()
    torch.manual_seed(1)
    c1 = explain(m, x, 0, "gradient")
    c2 = explain(m, x, 0, "gradient")
    assert not torch.allclose(c1, c2)
    assert not m.training and m[3].training


def test_target_none_explains_the_predicted_class(cnn, data):
    x, _ = data
    with torch.no_grad():
        pred = cnn(x).argmax(1)
    close(explain(cnn, x, None, "gradient", batch_size=4), explain(cnn, x, pred, "gradient"))


def test_no_parameter_grads_accumulated(cnn, data):
    x, y = data
    for meth in ("saliency", "integrated_gradients", "gradcam", "smoothgrad"):
        explain(cnn, x, y, meth, generator=torch.Generator().manual_seed(0))
    assert all(p.grad is None for p in cnn.parameters())


def test_with_xcal_small_cnn():
    models = pytest.importorskip("xcal_core.models")
    # one block: no max-pool (whose Captum DeepLift rule breaks summation-to-delta); with Normalize
    m = models.build_model("small_cnn", input_shape=(3, 16, 16), n_classes=4, width=4, n_blocks=1, seed=0,
                           normalization=((0.5, 0.4, 0.3), (0.2, 0.25, 0.3))).eval()
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 3])
    cam = explain(m, x, y, "gradcam")
    ref = captum_attr.LayerGradCam(m, m.get_submodule(m.cam_layer)).attribute(x, target=y, relu_attributions=True)
    close(cam[:, :1], captum_attr.LayerAttribution.interpolate(ref, (16, 16), interpolate_mode="bilinear"))
    dl = explain(m, x, y, "deeplift")
    with torch.no_grad():
        gap = m(x).gather(1, y[:, None]).squeeze(1) - m(torch.zeros_like(x)).gather(1, y[:, None]).squeeze(1)
    torch.testing.assert_close(dl.sum((1, 2, 3)), gap, rtol=1e-3, atol=1e-3)


# --------------------------------------------------------------------------------------------
# post-processing
# --------------------------------------------------------------------------------------------
def test_reduce_channels_and_normalize():
    a = torch.tensor([[[[1.0, -2.0]], [[-3.0, 0.5]]]])  # (1, 2, 1, 2)
    assert torch.equal(reduce_channels(a, "sum"), torch.tensor([[[-2.0, -1.5]]]))
    assert torch.equal(reduce_channels(a, "abs_sum"), torch.tensor([[[4.0, 2.5]]]))
    assert torch.equal(reduce_channels(a, "mean"), torch.tensor([[[-1.0, -0.75]]]))
    assert torch.equal(reduce_channels(a, "max_abs"), torch.tensor([[[3.0, 2.0]]]))
    b = torch.tensor([[2.0, -4.0, 1.0], [0.0, 0.0, 0.0], [1.0, 1.0, 3.0]])
    close(normalize_attributions(b, "max_abs"), torch.tensor([[0.5, -1.0, 0.25], [0, 0, 0], [1 / 3, 1 / 3, 1.0]]))
    close(normalize_attributions(b, "minmax"), torch.tensor([[1.0, 0.0, 5 / 6], [0, 0, 0], [0.0, 0.0, 1.0]]))
    close(normalize_attributions(b, "sum_abs").abs().sum(1), torch.tensor([1.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match="`how`"):
        reduce_channels(a, "median")
    with pytest.raises(ValueError, match="`attr` must have 4"):
        reduce_channels(a[0], "sum")
    with pytest.raises(ValueError, match="`how`"):
        normalize_attributions(b, "zscore")


# --------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------
def test_errors(cnn, data):
    x, y = data
    with pytest.raises(ValueError, match=r"unknown `method` 'salience'.*integrated_gradients"):
        explain(cnn, x, y, "salience")
    with pytest.raises(ValueError, match=r"`target` must be in \[0, 4\]"):
        explain(cnn, x, 5, "saliency")
    with pytest.raises(ValueError, match=r"`target` must be in \[0, 4\]"):
        explain(cnn, x, torch.tensor([0, 1, 2, 3, 4, -1]), "saliency")
    with pytest.raises(ValueError, match=r"`target` must be an int or have shape \(6,\)"):
        explain(cnn, x, torch.tensor([0, 1]), "saliency")
    with pytest.raises(TypeError, match="`target` must hold integer"):
        explain(cnn, x, torch.zeros(6), "saliency")
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="`x` contains 1 NaN or inf"):
        explain(cnn, bad, y, "saliency")
    with pytest.raises(TypeError, match="`x` must be a floating-point"):
        explain(cnn, (x * 255).to(torch.uint8), y, "saliency")
    with pytest.raises(ValueError, match="unknown `score`"):
        explain(cnn, x, y, "saliency", score="prob")
    with pytest.raises(ValueError, match="`baseline`"):
        explain(cnn, x, y, "integrated_gradients", baseline="grey")
    with pytest.raises(ValueError, match="`baseline_value`"):
        explain(cnn, x, y, "integrated_gradients", baseline="mean")
    with pytest.raises(ValueError, match="`rule`"):
        explain(cnn, x, y, "integrated_gradients", rule="simpson")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['n_steps'\] for method 'integrated_gradients'.*'steps'"):
        explain(cnn, x, y, "integrated_gradients", n_steps=8)
    with pytest.raises(ValueError, match="`n_samples`"):
        explain(cnn, x, y, "smoothgrad", n_samples=0)
    with pytest.raises(ValueError, match="`stride`"):
        explain(cnn, x, y, "occlusion", window=2, stride=3)
    with pytest.raises(ValueError, match="`batch_size`"):
        explain(cnn, x, y, "saliency", batch_size=0)
    no_cam = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 5)).eval()
    with pytest.raises(ValueError, match="no `cam_layer`"):
        explain(no_cam, x, y, "gradcam")
    with pytest.raises(ValueError, match="is not a layer of the model"):
        explain(no_cam, x, y, "gradcam", layer="features.9")
    with pytest.raises(ValueError, match=r"\(N, K, h, w\) feature map"):
        explain(no_cam, x, y, "gradcam", layer="3")
    reg = nn.Linear(6, 1)
    with pytest.raises(ValueError, match="K >= 2"):
        explain(reg, torch.rand(3, 6), 0, "saliency", score="probability")
    with pytest.raises(TypeError, match="`model` must be a torch.nn.Module"):
        explain(lambda z: z, x, y, "saliency")
    with pytest.raises(ValueError, match="use score='logit'"):
        explain(cnn, x, y, "lrp", score="probability")
    with pytest.raises(ValueError, match="needs image inputs"):
        explain(TinyMLP().eval(), torch.rand(3, 6), 0, "gradcam", layer="net.0")


def test_guided_backprop_and_deconvolution_are_silent():
    # Captum announces its ReLU hooks with a UserWarning on every call; explain() silences exactly that
    import warnings

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3)).eval()
    x = torch.randn(2, 4)
    for method in ("guided_backprop", "deconvolution"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            explain(model, x, 0, method)
        assert not [w for w in caught if "backward hooks" in str(w.message)], method
    # other warnings still reach the caller
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from xcal_core.explainers.core import _quiet_captum

        with _quiet_captum():
            warnings.warn("something else", UserWarning)
    assert [str(w.message) for w in caught] == ["something else"]
