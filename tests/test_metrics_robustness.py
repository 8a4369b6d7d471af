"""Average- / Max-Sensitivity: exact agreement with Quantus on identical noise, known answers, errors."""

import numpy as np
import pytest
import torch
from torch import nn

from xcal_core.metrics import avg_sensitivity, max_sensitivity, sensitivity_samples, uniform_noise


def _cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 64, 5)).eval()


def saliency(model, x, target):
    x = x.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model(x).gather(1, target[:, None]).sum(), x)
    return g


def input_x_gradient(model, x, target):
    return saliency(model, x, target) * x


@pytest.fixture(scope="module")
def setup():
    model = _cnn()
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    y = model(x).argmax(1)
    return model, x, y


def _quantus_scores(cls, model, x, y, noise, fn):
    quantus = pytest.importorskip("quantus")
    calls = {"i": 0}

    def perturb(arr, indices, **kw):  # hand Quantus exactly our draws, one (N, d) block per step
        e = noise[calls["i"]].reshape(arr.shape).numpy()
        calls["i"] += 1
        return arr + e

    def explain_np(model, inputs, targets, **kw):
        return fn(model, torch.as_tensor(inputs), torch.as_tensor(targets).long()).numpy()

    metric = cls(nr_samples=noise.shape[0], perturb_func=perturb, disable_warnings=True)
    a = fn(model, x, y).numpy()
    return np.asarray(metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a, explain_func=explain_np, channel_first=True, device="cpu"))


@pytest.mark.parametrize("fn", [saliency, input_x_gradient])
def test_matches_quantus_on_identical_noise(setup, fn):
    quantus = pytest.importorskip("quantus")
    model, x, y = setup
    noise = uniform_noise(9, tuple(x.shape), 0.1, generator=torch.Generator().manual_seed(2))
    ours_avg = avg_sensitivity(model, x, y, fn, noise=noise, batch_size=7).numpy()
    ours_max = max_sensitivity(model, x, y, fn, noise=noise, batch_size=7).numpy()
    np.testing.assert_allclose(ours_avg, _quantus_scores(quantus.AvgSensitivity, model, x, y, noise, fn), rtol=1e-5)
    np.testing.assert_allclose(ours_max, _quantus_scores(quantus.MaxSensitivity, model, x, y, noise, fn), rtol=1e-5)


def test_generator_draws_equal_uniform_noise_and_batch_size_invariant(setup):
    model, x, y = setup
    a = avg_sensitivity(model, x, y, saliency, n_samples=5, radius=0.2, generator=torch.Generator().manual_seed(3), batch_size=4)
    noise = uniform_noise(5, tuple(x.shape), 0.2, generator=torch.Generator().manual_seed(3))
    b = avg_sensitivity(model, x, y, saliency, noise=noise, batch_size=64)
    torch.testing.assert_close(a, b)
    assert float(noise.abs().max()) <= 0.2


def test_known_answer_linear_model_input_x_gradient():
    # f(x) = W x: InputXGradient = w * x, so phi(x) - phi(x + eps) = -w * eps and
    # E ||w * eps||^2 = r^2 / 3 * sum(w^2) for eps ~ U[-r, r].
    torch.manual_seed(0)
    lin = nn.Sequential(nn.Flatten(), nn.Linear(16, 3, bias=False)).eval()
    x = torch.rand(4, 1, 4, 4)
    y = torch.tensor([0, 1, 2, 0])
    r, m = 0.1, 4000
    s = avg_sensitivity(lin, x, y, input_x_gradient, n_samples=m, radius=r, norm="squared", generator=torch.Generator().manual_seed(0), batch_size=4000)
    w2 = (lin[1].weight[y] ** 2).sum(1).detach()
    expected = r**2 / 3 * w2
    # sampling sd of the mean: each draw's ||w*eps||^2 has variance sum w^4 * Var(eps^2) = sum w^4 * 4 r^4 / 45
    sd = torch.sqrt((lin[1].weight[y] ** 4).sum(1).detach() * 4 * r**4 / 45 / m)
    assert torch.all((s - expected).abs() < 4 * sd)
    # saliency of a linear model does not move at all
    assert torch.allclose(max_sensitivity(lin, x, y, saliency, n_samples=5, norm="l2"), torch.zeros(4))


def test_norms_are_consistent_and_max_bounds_avg(setup):
    model, x, y = setup
    noise = uniform_noise(6, tuple(x.shape), 0.1, generator=torch.Generator().manual_seed(4))
    l2 = sensitivity_samples(model, x, y, saliency, noise=noise, norm="l2")
    sq = sensitivity_samples(model, x, y, saliency, noise=noise, norm="squared")
    rel = sensitivity_samples(model, x, y, saliency, noise=noise, norm="relative")
    torch.testing.assert_close(sq, l2**2)
    torch.testing.assert_close(rel, l2 / saliency(model, x, y).reshape(6, -1).norm(dim=1, keepdim=True))
    assert l2.shape == (6, 6)
    assert torch.all(max_sensitivity(model, x, y, saliency, noise=noise) >= avg_sensitivity(model, x, y, saliency, noise=noise) - 1e-7)
    assert avg_sensitivity.higher_is_better is False and max_sensitivity.category == "robustness"


def test_precomputed_attributions_and_zero_map_gives_nan(setup):
    model, x, y = setup
    noise = uniform_noise(3, tuple(x.shape), 0.1, generator=torch.Generator().manual_seed(5))
    a = saliency(model, x, y)
    torch.testing.assert_close(avg_sensitivity(model, x, y, saliency, attributions=a, noise=noise), avg_sensitivity(model, x, y, saliency, noise=noise))
    zero = lambda m, xx, t: torch.zeros_like(xx)  # noqa: E731
    assert torch.isnan(avg_sensitivity(model, x, y, zero, noise=noise)).all()


def test_bad_inputs(setup):
    model, x, y = setup
    with pytest.raises(TypeError, match="explain_fn"):
        avg_sensitivity(model, x, y, "saliency")
    with pytest.raises(ValueError, match="norm"):
        avg_sensitivity(model, x, y, saliency, norm="l1")
    with pytest.raises(ValueError, match="n_samples"):
        avg_sensitivity(model, x, y, saliency, n_samples=0)
    with pytest.raises(ValueError, match="radius"):
        avg_sensitivity(model, x, y, saliency, radius=-0.1)
    with pytest.raises(ValueError, match="noise"):
        avg_sensitivity(model, x, y, saliency, noise=torch.zeros(3, 2, 1, 8, 8))
    with pytest.raises(ValueError, match="NaN"):
        avg_sensitivity(model, x, y, lambda m, xx, t: torch.full_like(xx, float("nan")), n_samples=2)
    with pytest.raises(ValueError, match="shape"):
        avg_sensitivity(model, x, y, saliency, attributions=torch.zeros(6, 8, 8), n_samples=2)
    with pytest.raises(ValueError, match="target"):
        avg_sensitivity(model, x, torch.tensor([0, 1]), saliency, n_samples=2)
    with pytest.raises(TypeError, match="model"):
        avg_sensitivity(lambda z: z, x, y, saliency)
