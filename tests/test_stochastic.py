"""Tests of xcal_core.models.stochastic: stochastic layers, conversions, frozen realisations, ELBO training."""

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from xcal_core.models.stochastic import (
    DropConnectConv2d,
    DropConnectLinear,
    FlipoutConv2d,
    FlipoutLinear,
    FlipoutPrior,
    MCDropout,
    Realisations,
    kl_divergence,
    sample_realisations,
    stochastic_layers,
    to_dropconnect,
    to_flipout,
    to_mc_dropout,
    train_stochastic,
)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def small_net(dropout=0.3, seed=0):
    torch.manual_seed(seed)
    layers = [nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.Flatten()]
    if dropout is not None:
        layers.append(nn.Dropout(dropout))
    layers += [nn.Linear(4 * 6 * 6, 3)]
    return nn.Sequential(*layers).eval()


X = torch.rand(5, 1, 6, 6, generator=gen(1))


def realise(kind, p=0.3, T=4, seed=0):
    net = small_net(dropout=p if kind == "mc_dropout" else None)
    m = {"mc_dropout": net, "dropconnect": to_dropconnect(net, p) if kind == "dropconnect" else None,
         "flipout": to_flipout(net, rho_init=-2.0) if kind == "flipout" else None}[kind]
    return sample_realisations(m, T, kind=kind, generator=gen(seed))


# ------------------------------------------------------------------------------- frozen realisations
@pytest.mark.parametrize("kind", ["mc_dropout", "dropconnect", "flipout"])
def test_frozen_realisation_is_bit_identical_and_realisations_differ(kind):
    r = realise(kind)
    with r.frozen(0) as m:
        a = m(X)
        b = m(X)
        # a sub-batch sees the same sub-network (mask shared by rows)
        c = m(X[2:4])
    assert torch.equal(a, b)
    assert torch.allclose(a[2:4], c, atol=1e-6)
    with r.frozen(1) as m:
        d = m(X)
    assert (a - d).abs().max() > 1e-3
    # leaving the context restores the deterministic model
    base = r.model(X)
    assert torch.equal(base, r.model(X))


@pytest.mark.parametrize("kind", ["mc_dropout", "dropconnect", "flipout"])
def test_realisations_reproducible_by_seed(kind):
    a = realise(kind, seed=3).predict(X)
    b = realise(kind, seed=3).predict(X)
    c = realise(kind, seed=4).predict(X)
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 1e-3


@pytest.mark.parametrize("kind", ["mc_dropout", "dropconnect", "flipout"])
def test_batched_equals_looped(kind):
    r = realise(kind, T=5)
    batched = r.predict(X, realisation_batch=3)
    looped = []
    for t in range(len(r)):
        with r.frozen(t) as m:
            looped.append(m(X))
    assert torch.allclose(batched, torch.stack(looped), atol=1e-5)
    # tiled layout: two copies of the (G x N) block, e.g. two integration steps
    with r.batched([1, 3], rows=len(X)) as m:
        y = m(torch.cat([X, X, X * 0.5, X * 0.5])).reshape(2, 2, len(X), -1)
    assert torch.allclose(y[0, 0], looped[1], atol=1e-5) and torch.allclose(y[0, 1], looped[3], atol=1e-5)
    with r.frozen(3) as m:
        assert torch.allclose(y[1, 1], m(X * 0.5), atol=1e-5)


@pytest.mark.parametrize("kind", ["mc_dropout", "dropconnect", "flipout", "ensemble"])
def test_expanding_mode_equals_repeated_inputs_and_shares_the_prefix(kind):
    if kind == "ensemble":
        r = sample_realisations([small_net(None, seed=s) for s in range(3)])
    else:
        r = realise(kind, T=3)
    with r.batched(vectorize=False) as m:
        ref = m(X.repeat(3, 1, 1, 1))
    calls = []
    first_conv = (r.members[0] if kind == "ensemble" else r.model)[0]
    h = first_conv.register_forward_hook(lambda mod, inp, out: calls.append(inp[0].shape[0]))
    try:
        with r.batched(expand=True, vectorize=True) as m:
            out = m(X)
    finally:
        h.remove()
    assert torch.allclose(out, ref, atol=1e-6)
    if kind == "mc_dropout":  # the convolutions before the dropout layer ran once, on the 5 shared rows
        assert calls == [len(X)]
    with pytest.raises(ValueError, match="`rows` and `expand=True` are exclusive"):
        with r.batched(rows=2, expand=True):
            pass


def test_expanding_mode_needs_a_stochastic_layer_on_the_path():
    r = sample_realisations(small_net(0.3), 2, generator=gen(0))
    with r.batched(expand=True) as m:
        m.model = nn.Identity()  # a forward pass that never reaches the dropout layer
        with pytest.raises(RuntimeError, match="no stochastic layer was reached"):
            m(X)


def test_bad_block_layout_raises():
    r = realise("dropconnect")
    with r.batched([0, 1, 2]) as m, pytest.raises(RuntimeError, match="multiple of 3"):
        m(X[:4])


def test_mc_dropout_p0_gives_identical_realisations():
    r = realise("mc_dropout", p=0.0)
    out = r.predict(X)
    assert torch.equal(out, out[:1].expand_as(out))


def test_mc_dropout_mask_statistics_and_train_mode():
    d = MCDropout(0.25)
    r = Realisations("mc_dropout", model=nn.Sequential(d), seeds=torch.arange(200))
    x = torch.ones(1, 400)
    y = r.predict(x)[:, 0]
    kept = (y > 0).float().mean()
    assert abs(float(kept) - 0.75) < 0.01  # 80,000 Bernoulli(0.75) draws
    assert torch.allclose(y[y > 0], torch.full_like(y[y > 0], 1 / 0.75))
    d.train()
    assert not torch.equal(d(x), d(x))
    d.eval()
    assert torch.equal(d(x), x)


def test_channel_dropout_masks_whole_channels():
    r = Realisations("mc_dropout", model=nn.Sequential(MCDropout(0.5, mode="channel")), seeds=torch.arange(8))
    y = r.predict(torch.ones(1, 6, 3, 3)).reshape(8, 6, 9)
    assert torch.all((y == 0).all(-1) | (y > 0).all(-1))


def test_dropconnect_expected_weight_and_eval_mode():
    lin = DropConnectLinear(6, 2, p=0.4).eval()
    r = Realisations("dropconnect", model=nn.Sequential(lin), seeds=torch.arange(2000))
    x = torch.randn(3, 6, generator=gen(2))
    mean = r.predict(x, realisation_batch=500).mean(0)
    assert torch.allclose(mean, lin(x), atol=0.08)  # inverted scaling: E[W * m / (1 - p)] = W
    with r.frozen(0):
        masks = lin._weight_masks()
    vals = torch.unique(masks)
    assert len(vals) == 2 and vals[0] == 0 and torch.isclose(vals[1], torch.tensor(1 / 0.6))


def test_dropconnect_conv_matches_masked_conv():
    conv = DropConnectConv2d(2, 3, 3, padding=1, p=0.5)
    r = Realisations("dropconnect", model=nn.Sequential(conv), seeds=torch.tensor([7, 8]))
    x = torch.rand(4, 2, 5, 5, generator=gen(3))
    with r.batched() as m:
        y = m(x.repeat(2, 1, 1, 1))
        masks = conv._weight_masks()
    for g in range(2):
        ref = F.conv2d(x, conv.weight * masks[g], conv.bias, padding=1)
        assert torch.allclose(y[g * 4:(g + 1) * 4], ref, atol=1e-5)


# ------------------------------------------------------------------------------- Flipout
def test_flipout_linear_mean_equals_mean_weight_layer():
    torch.manual_seed(0)
    lin = FlipoutLinear(5, 3, rho_init=-1.0)
    x = torch.randn(4, 5, generator=gen(4))
    ref = F.linear(x, lin.weight_mu, lin.bias_mu)
    assert torch.equal(lin.eval()(x), ref)  # eval mode: the mean weights
    r = Realisations("flipout", model=nn.Sequential(lin), seeds=torch.arange(4000))
    samples = r.predict(x, realisation_batch=1000)
    se = samples.std(0) / math.sqrt(len(r))
    assert torch.all((samples.mean(0) - ref).abs() < 4 * se + 1e-4)
    # the flipout training estimator is unbiased too
    lin.train()
    tr = torch.stack([lin(x) for _ in range(4000)])
    se = tr.std(0) / math.sqrt(4000)
    assert torch.all((tr.mean(0) - ref).abs() < 4 * se + 1e-4)
    # ... and pseudo-independent across examples: two identical rows get different perturbations
    y = lin(torch.cat([x[:1], x[:1]]))
    assert not torch.allclose(y[0], y[1])


def test_flipout_conv_frozen_matches_sampled_conv():
    conv = FlipoutConv2d(2, 3, 3, padding=1, rho_init=-1.0)
    r = Realisations("flipout", model=nn.Sequential(conv), seeds=torch.tensor([1, 2, 3]))
    x = torch.rand(2, 2, 5, 5, generator=gen(5))
    with r.batched() as m:
        y = m(x.repeat(3, 1, 1, 1))
        w, b = conv._sampled()
    for g in range(3):
        assert torch.allclose(y[2 * g:2 * g + 2], F.conv2d(x, w[g], b[g], padding=1), atol=1e-5)
    assert torch.equal(conv.eval()(x), F.conv2d(x, conv.weight_mu, conv.bias_mu, padding=1))


def test_flipout_kl_closed_form_and_mixture():
    lin = FlipoutLinear(4, 2, prior=FlipoutPrior(sigma1=1.0, pi=1.0), rho_init=-3.0)
    mu = lin.weight_mu.detach()
    sig = F.softplus(lin.weight_rho.detach())
    ref = (-torch.log(sig) + (sig**2 + mu**2) / 2 - 0.5).sum()
    mb, sb = lin.bias_mu.detach(), F.softplus(lin.bias_rho.detach())
    ref = ref + (-torch.log(sb) + (sb**2 + mb**2) / 2 - 0.5).sum()
    assert torch.allclose(lin.kl().detach(), ref, atol=1e-4)
    assert float(lin.kl().detach()) > 0
    # at the prior the KL is zero
    with torch.no_grad():
        lin.weight_mu.zero_(); lin.bias_mu.zero_()
        lin.weight_rho.fill_(math.log(math.e - 1)); lin.bias_rho.fill_(math.log(math.e - 1))  # softplus = 1
    assert abs(float(lin.kl().detach())) < 1e-5
    # scale mixture: Monte Carlo estimate, positive on average
    mix = FlipoutLinear(20, 10, rho_init=-4.0)
    g = gen(6)
    est = torch.stack([mix.kl(g).detach() for _ in range(200)]).mean()
    assert float(est) > 0
    net = to_flipout(small_net(None))
    assert float(kl_divergence(net, gen(0)).detach()) > 0
    assert float(kl_divergence(small_net(None))) == 0.0


def test_train_stochastic_reduces_elbo_and_caches(tmp_path):
    g = gen(7)
    x = torch.randn(256, 1, 6, 6, generator=g)
    y = (x.mean((1, 2, 3)) > 0).long() + (x[:, 0, 0, 0] > 1).long()
    net = to_flipout(small_net(None), rho_init=-5.0)
    model, hist = train_stochastic(net, x, y, epochs=6, lr=3e-3, batch_size=64, seed=0, cache_dir=tmp_path)
    assert list(hist.columns) == ["epoch", "loss", "nll", "kl"]
    assert hist["loss"].iloc[-1] < hist["loss"].iloc[0]
    assert (hist["kl"] > 0).all()
    assert not model.training
    files = list(tmp_path.glob("stochastic_*.pt"))
    assert len(files) == 1
    # a second identical call loads the cache: same weights, same history
    net2 = to_flipout(small_net(None), rho_init=-5.0)
    model2, hist2 = train_stochastic(net2, x, y, epochs=6, lr=3e-3, batch_size=64, seed=0, cache_dir=tmp_path)
    assert torch.equal(model2[-1].weight_mu, model[-1].weight_mu)
    assert hist2.equals(hist)


def test_train_stochastic_regression_dropconnect():
    g = gen(8)
    x = torch.randn(200, 4, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 0.0])
    torch.manual_seed(0)
    net = to_dropconnect(nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 1)), p=0.2)
    _, hist = train_stochastic(net, x, y, epochs=15, lr=1e-2, task="regression", seed=1)
    assert hist["nll"].iloc[-1] < 0.5 * hist["nll"].iloc[0]
    r = sample_realisations(net, 6, generator=gen(0))
    assert r.kind == "dropconnect" and r.predict(x[:3]).shape == (6, 3, 1)



@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_train_stochastic_lr_schedule_known_steps(schedule):
    # bias-only regression far from its target: the gradient keeps its sign, so every Adam step moves the
    # bias by (almost exactly) the current learning rate; 3 epochs x 2 batches = 6 steps
    torch.manual_seed(0)
    net = to_dropconnect(nn.Sequential(nn.Linear(1, 1)), p=0.0)
    b0 = float(net[0].bias.detach())
    x, y = torch.zeros(8, 1), torch.full((8,), 1e6)
    lr, steps = 1e-2, 6
    train_stochastic(net, x, y, epochs=3, lr=lr, batch_size=4, task="regression", seed=0, lr_schedule=schedule)
    rates = [lr] * steps if schedule == "constant" else [lr * (1 + math.cos(math.pi * k / steps)) / 2 for k in range(steps)]
    assert float(net[0].bias.detach()) - b0 == pytest.approx(sum(rates), rel=1e-4)
    assert float(net[0].weight.grad.abs().sum()) == 0.0  # zero inputs: only the bias moves
    with pytest.raises(ValueError, match="unknown `lr_schedule`"):
        train_stochastic(net, x, y, epochs=1, task="regression", lr_schedule="step")


# ------------------------------------------------------------------------------- conversions, ensembles
def test_conversions_keep_weights():
    net = small_net(0.2)
    dc = to_dropconnect(net, 0.3)
    fo = to_flipout(net)
    mc = to_mc_dropout(net, p=0.1)
    assert len(stochastic_layers(dc, "dropconnect")) == 3
    assert len(stochastic_layers(fo, "flipout")) == 3
    assert [m.p for m in stochastic_layers(mc, "mc_dropout")] == [0.1]
    # eval mode of every twin equals the deterministic network
    for twin in (dc, fo, mc):
        assert torch.allclose(twin(X), net(X), atol=1e-6)
    assert isinstance(net[5], nn.Dropout)  # original untouched


def test_ensemble_identical_members_zero_spread():
    net = small_net(None)
    r = sample_realisations([net, net, net])
    out = r.predict(X)
    assert r.kind == "ensemble" and len(r) == 3
    assert torch.equal(out.std(0), torch.zeros_like(out[0]))
    other = small_net(None, seed=1)
    r2 = sample_realisations([net, other])
    with r2.frozen(1) as m:
        assert m is other
    out2 = r2.predict(X)
    assert torch.allclose(out2[1], other(X), atol=1e-6)


@pytest.mark.parametrize("arch", ["small_cnn", "mlp", "tabular_resnet"])
def test_stacked_ensemble_equals_member_loop(arch):
    from captum.attr import GuidedBackprop

    from xcal_core.models import build_model

    shape = (1, 8, 8) if arch == "small_cnn" else (6,)
    torch.manual_seed(0)
    members = [build_model(arch, shape, 3).eval() for _ in range(3)]
    for m in members:  # distinct BatchNorm running statistics per member
        for mod in m.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                mod.running_mean.normal_()
                mod.running_var.uniform_(0.5, 2.0)
    r = sample_realisations(members)
    x = torch.rand(4, *shape, generator=gen(2))
    ref = torch.stack([m(x) for m in members])
    assert r.stack_members == "auto"
    with r.batched() as auto:  # the CPU default loops over members (the stacked pass is slower there)
        assert not auto.vectorized
    with r.batched(vectorize=True) as stack:
        assert stack.vectorized
        out = stack(x.repeat(3, *[1] * len(shape))).reshape(3, 4, -1)
        xr = x.repeat(3, *[1] * len(shape)).requires_grad_(True)
        tgt = torch.tensor([0, 1, 2, 0] * 3)
        gb = GuidedBackprop(stack).attribute(xr, target=tgt)
    assert torch.allclose(out, ref, atol=1e-6)
    gb_ref = torch.cat([GuidedBackprop(m).attribute(x.clone().requires_grad_(True), target=tgt[:4]) for m in members])
    assert torch.allclose(gb, gb_ref, atol=1e-6)
    assert (ref[0] - ref[1]).abs().max() > 1e-3
    with r.batched(vectorize=False) as loop:
        assert not loop.vectorized
        assert torch.allclose(loop(x.repeat(3, *[1] * len(shape))).reshape(3, 4, -1), out, atol=1e-6)
    # the stack is a snapshot: members are untouched and in their own modes afterwards
    assert all(not m.training for m in members)


def test_stack_members_falls_back_for_different_architectures():
    from xcal_core.models.stochastic import stack_members

    a, b = small_net(None), small_net(None, seed=1)
    c = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 36, 3)).eval()
    assert stack_members([a, b]) is not None
    assert stack_members([a, c]) is None
    r = sample_realisations([a, c])
    with r.batched(vectorize=True) as m:
        assert not m.vectorized
    assert torch.allclose(r.predict(X), torch.stack([a(X), c(X)]), atol=1e-6)
    # a single module with parameters (the whole member is one layer) stacks too
    lin = [nn.Linear(4, 2), nn.Linear(4, 2)]
    xl = torch.randn(3, 4, generator=gen(0))
    rl = sample_realisations(lin)
    rl.stack_members = True
    assert torch.allclose(rl.predict(xl), torch.stack([m(xl) for m in lin]), atol=1e-6)
    with pytest.raises(ValueError, match="`vectorize` must be 'auto', True, False or None"):
        with rl.batched(vectorize="yes"):
            pass


def test_sample_realisations_infers_kind_and_auto_converts_dropout():
    net = small_net(0.3)
    r = sample_realisations(net, 3, generator=gen(0))
    assert r.kind == "mc_dropout" and r.model is not net
    assert isinstance(r.model[5], MCDropout)


# ------------------------------------------------------------------------------- bad input
def test_bad_input_errors():
    net = small_net(None)
    with pytest.raises(ValueError, match="`n` must be in \\[2"):
        sample_realisations(small_net(0.3), 1)
    with pytest.raises(ValueError, match="no dropout layers"):
        sample_realisations(net, 4, kind="mc_dropout")
    with pytest.raises(ValueError, match="no dropout layers"):
        to_mc_dropout(net)
    with pytest.raises(ValueError, match="no stochastic layers"):
        sample_realisations(net, 4)
    with pytest.raises(ValueError, match="to_dropconnect"):
        sample_realisations(net, 4, kind="dropconnect")
    with pytest.raises(ValueError, match="unknown `kind`"):
        sample_realisations(net, 4, kind="bayes")
    with pytest.raises(ValueError, match="at least 2 members"):
        sample_realisations([net])
    with pytest.raises(ValueError, match="must equal the number of ensemble members"):
        sample_realisations([net, net], 3)
    with pytest.raises(ValueError, match="`p` must be in \\[0, 1\\)"):
        MCDropout(1.0)
    with pytest.raises(ValueError, match="`p` must be in \\[0, 1\\)"):
        to_dropconnect(net, p=-0.1)
    with pytest.raises(ValueError, match="`p` must be in \\[0, 1\\)"):
        to_mc_dropout(small_net(0.3), p=1.5)
    with pytest.raises(ValueError, match="`pi` must be in"):
        FlipoutPrior(pi=0.0)
    with pytest.raises(ValueError, match="`layers` must be"):
        to_flipout(net, layers=("lstm",))
    with pytest.raises(TypeError, match="`model` must be a torch.nn.Module"):
        to_dropconnect("net")
    r = realise("dropconnect")
    with pytest.raises(ValueError, match="out of range"):
        with r.frozen(9):
            pass
    with pytest.raises(ValueError, match="`x` and `y` must have the same length"):
        train_stochastic(net, torch.zeros(4, 1, 6, 6), torch.zeros(3).long(), epochs=1)
    with pytest.raises(ValueError, match="unknown `task`"):
        train_stochastic(net, torch.zeros(4, 1, 6, 6), torch.zeros(4).long(), epochs=1, task="ranking")


def test_train_uq_family_tabular(tmp_path):
    from xcal_core.data import load_dataset
    from xcal_core.models.stochastic import UQFamily, train_uq_family

    ds = load_dataset("iris", seed=0)
    fam = train_uq_family("mlp", ds, epochs=2, lr=1e-2, batch_size=16, seed=0, cache_dir=tmp_path, n_members=2,
                          model_kwargs={"hidden": (8,)}, flipout_kl_scale=0.1)
    assert isinstance(fam, UQFamily) and list(fam.models) == ["mc_dropout", "dropconnect", "flipout", "ensemble"]
    assert len(fam.models["ensemble"]) == 2
    assert not torch.equal(fam.models["ensemble"][0](ds.test.x), fam.models["ensemble"][1](ds.test.x))
    for kind in fam.models:
        r = fam.realisations(kind, 3, generator=gen(0))
        assert r.kind == kind and r.predict(ds.test.x[:4]).shape[1:] == (4, 3)
    # the twins are cached: a second call trains nothing and gives the same weights
    fam2 = train_uq_family("mlp", ds, methods=["flipout"], epochs=2, lr=1e-2, batch_size=16, seed=0, cache_dir=tmp_path,
                           model_kwargs={"hidden": (8,)}, flipout_kl_scale=0.1)
    x = ds.test.x[:5]
    assert torch.equal(fam2.models["flipout"](x), fam.models["flipout"](x))
    with pytest.raises(ValueError, match="`methods` must be a non-empty subset"):
        train_uq_family("mlp", ds, methods=["laplace"])
    with pytest.raises(ValueError, match="`dropout_p` must be > 0 for MC-Dropout"):
        train_uq_family("mlp", ds, methods=["mc_dropout"], dropout_p=0.0)
    with pytest.raises(ValueError, match="unknown `kind`"):
        fam2.realisations("ensemble", 3)
    with pytest.raises(ValueError, match="unknown `lr_schedule`"):
        train_uq_family("mlp", ds, methods=["flipout"], lr_schedule="linear")


class _Payload:
    """Unpickling this runs code: it must never happen for a cache file (weights_only loading)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("damage", ["truncated", "pickle_with_code", "old_plain_torch_save"])
def test_stochastic_cache_survives_bad_files_and_never_unpickles_code(tmp_path, damage):
    """Issue 21 item 2: a truncated / foreign file in the cache warns naming it and is retrained over;
    files are checksummed and read with weights_only=True, so a planted pickle runs nothing."""
    def fit():
        torch.manual_seed(0)
        net = to_mc_dropout(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.1), nn.Linear(8, 3)), p=0.1)
        x, y = torch.randn(32, 4, generator=gen(1)), torch.randint(0, 3, (32,), generator=gen(2))
        return train_stochastic(net, x, y, epochs=2, batch_size=16, seed=0, cache_dir=tmp_path)

    model, hist = fit()
    (path,) = tmp_path.glob("stochastic_*.pt")
    assert not list(tmp_path.glob("*.tmp*"))
    blob = path.read_bytes()
    marker = tmp_path / "code_ran"
    if damage == "truncated":
        path.write_bytes(blob[: len(blob) // 2])
    elif damage == "pickle_with_code":
        torch.save({"state": _Payload(str(marker)), "history": []}, path)
    else:
        torch.save({"state": model.state_dict(), "history": hist.to_dict("records")}, path)
    with pytest.warns(UserWarning, match=rf"cached stochastic model {path} is unusable.*retraining"):
        model2, hist2 = fit()
    assert not marker.exists()
    assert hist2.equals(hist) and all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), model2.state_dict().values()))
    model3, hist3 = fit()  # the retrained file is valid again and is loaded
    assert hist3.equals(hist)


def test_shipped_stochastic_checkpoint_fills_a_cold_cache(tmp_path, monkeypatch):
    """The stochastic families' files are shipped too (checkpoints/models/stochastic_<key>.pt, while the
    twins cache in <cache>/models): a cold cache takes the shipped file instead of training."""
    import shutil

    from xcal_core.models import stochastic as stochastic_mod

    def fit(cache):
        torch.manual_seed(0)
        net = to_mc_dropout(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.1), nn.Linear(8, 3)), p=0.1)
        x, y = torch.randn(32, 4, generator=gen(1)), torch.randint(0, 3, (32,), generator=gen(2))
        return train_stochastic(net, x, y, epochs=2, batch_size=16, seed=0, cache_dir=cache)

    model, hist = fit(tmp_path / "cache_a" / "models")
    (f,) = (tmp_path / "cache_a" / "models").glob("stochastic_*.pt")
    shipped = tmp_path / "checkpoints" / "models"
    shipped.mkdir(parents=True)
    shutil.copy2(f, shipped / f.name)
    monkeypatch.setenv("XCAL_SHIPPED_CHECKPOINTS", str(tmp_path / "checkpoints"))
    monkeypatch.setattr(stochastic_mod.torch.optim, "Adam", None)  # training would fail: it must not train
    model2, hist2 = fit(tmp_path / "cache_b")  # another layout: the name alone identifies the file
    assert (tmp_path / "cache_b" / f.name).is_file() and hist2.equals(hist)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), model2.state_dict().values()))
