"""Tests of xcal_core.training: soft insertion/deletion, differentiable explainers, ID-ExpO fine-tuning."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from xcal_core.metrics import perturbation_curve
from xcal_core.training import (
    compare_finetuning,
    eta_sweep,
    map_agreement,
    summarize_eta_sweep,
    threshold_ties,
    frozen_batch_statistics,
    DifferentiableGradCAM,
    DifferentiableKernelSHAP,
    DifferentiableLIME,
    coalition_weights,
    evaluate_idexpo,
    finetune_ce_only,
    finetune_idexpo,
    grid_segments,
    idexpo_regularizers,
    idexpo_scores,
    sample_coalitions,
    select_checkpoint,
    soft_insertion_deletion,
    soft_masks,
    surrogate_projection,
    validation_score,
)



@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: one intra-op thread is faster (and steadier on a busy 2-core box); restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

class TinyCNN(nn.Module):
    """conv -> act -> conv ("cam") -> act -> GAP -> fc, for 1x8x8 inputs."""

    def __init__(self, n_classes=3, act=nn.ReLU, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.act1 = act()
        self.pool = nn.MaxPool2d(2)
        self.cam = nn.Conv2d(4, 6, 3, padding=1)
        self.act2 = act()
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, n_classes)
        self.cam_layer = "cam"

    def forward(self, x):
        return self.fc(self.gap(self.act2(self.cam(self.pool(self.act1(self.conv1(x)))))).flatten(1))


class TinyBNCNN(nn.Module):
    """conv -> BN -> ReLU -> pool -> conv ("cam") -> BN -> ReLU -> GAP -> fc, for 1x8x8 inputs: the CAM layer
    feeds a BatchNorm, as in the small CNN of the notebooks."""

    def __init__(self, n_classes=3, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.pool = nn.MaxPool2d(2)
        self.cam = nn.Conv2d(4, 6, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(6)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, n_classes)
        self.cam_layer = "cam"
        with torch.no_grad():  # running statistics that differ from any batch's, as after pretraining
            self.bn1.running_mean.uniform_(-0.2, 0.2)
            self.bn1.running_var.uniform_(0.5, 2.0)
            self.bn2.running_mean.uniform_(-0.2, 0.2)
            self.bn2.running_var.uniform_(0.5, 2.0)
            self.fc.weight.mul_(30.0)  # maps of order 1, so that an absolute tolerance of 1e-5 is strict

    def forward(self, x):
        z = self.pool(torch.relu(self.bn1(self.conv1(x))))
        return self.fc(self.gap(torch.relu(self.bn2(self.cam(z)))).flatten(1))


def _blob_data(n, seed):
    """8x8 images, class = which third of the image holds a bright blob (plus noise)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    x = 0.2 * torch.rand(n, 1, 8, 8, generator=g)
    for c in range(3):
        idx = y == c
        x[idx, 0, 2:5, 1 + 2 * c : 3 + 2 * c] += 0.8
    return x.clamp(0, 1), y


# ------------------------------------------------------------------------------------------ soft metrics


def test_soft_masks_shape_range_and_hard_limit():
    torch.manual_seed(0)
    phi = torch.randn(3, 20)
    a = soft_masks(phi, S=0.5, step=3, tau=1.0)
    assert a.shape == (3, 4, 20)  # floor(0.5 * 20) = 10 -> counts 3, 6, 9, 10
    assert bool(((a > 0) & (a < 1)).all())
    hard = soft_masks(phi, S=0.5, step=3, tau=1e6)
    order = phi.argsort(1, descending=True)
    for m, c in enumerate([3, 6, 9, 10]):
        expect = torch.zeros(3, 20)
        expect.scatter_(1, order[:, :c], 1.0)
        assert torch.allclose(hard[:, m], expect, atol=1e-4)
    # constant maps: the gap guard keeps it finite (0.5 everywhere)
    const = soft_masks(torch.zeros(2, 10), S=0.5)
    assert torch.isfinite(const).all() and torch.allclose(const, torch.full_like(const, 0.5))


def test_soft_converges_to_hard_as_tau_grows():
    model = TinyCNN(seed=1).eval()
    torch.manual_seed(1)
    x = torch.rand(4, 1, 8, 8)
    y = torch.tensor([0, 1, 2, 1])
    phi = torch.randn(4, 64)  # continuous: no ties
    ref_ins = perturbation_curve(model, x, phi.view(4, 8, 8), y, mode="insertion", step=4, max_fraction=0.5)[:, 1:]
    ref_del = perturbation_curve(model, x, phi.view(4, 8, 8), y, mode="deletion", step=4, max_fraction=0.5)[:, 1:]
    errs = []
    for tau in (1.0, 10.0, 100.0, 1e5):
        with torch.no_grad():
            c = soft_insertion_deletion(model, x, phi, y, S=0.5, step=4, tau=tau)
        errs.append(max(float((c.ins_logp.exp() - ref_ins).abs().max()), float((c.del_logp.exp() - ref_del).abs().max())))
    assert errs[-1] < 1e-4
    assert errs[0] > errs[-1] and errs[1] >= errs[-1]
    # mean soft scores == hard ID-ExpO scores (mean over k >= 1) at large tau
    ins, dele = idexpo_scores(model, x, y, phi.view(4, 8, 8), S=0.5, step=4)
    assert torch.allclose(c.ins, ins, atol=1e-4) and torch.allclose(c.dele, dele, atol=1e-4)


def test_soft_gradients_finite_nonzero_and_gradcheck():
    model = TinyCNN(act=nn.Tanh, seed=2).double().eval()
    torch.manual_seed(2)
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    y = torch.tensor([0, 2])
    phi = torch.randn(2, 64, dtype=torch.float64, requires_grad=True)
    c = soft_insertion_deletion(model, x, phi, y, S=0.5, step=8, tau=1.0, baseline=0.5)
    r_ins, r_del = idexpo_regularizers(c, deletion_form="direct")
    (g,) = torch.autograd.grad(r_ins + r_del, phi)
    assert torch.isfinite(g).all() and float(g.abs().sum()) > 0

    # tiny gradcheck (float64): 2 samples x 6 features, 2 features per step
    lin = nn.Linear(6, 3).double()
    xt = torch.rand(2, 6, dtype=torch.float64)
    p6 = torch.randn(2, 6, dtype=torch.float64, requires_grad=True)
    p0 = p6.detach().clone()  # thresholds and gap scale are constants (stop-gradient): fix them at p0

    def f(p):
        cc = soft_insertion_deletion(lin, xt, p, torch.tensor([0, 1]), S=0.5, step=1, tau=2.0, reference=p0)
        return torch.cat([cc.ins_logp, cc.del_logp], 1)

    assert torch.autograd.gradcheck(f, (p6,), eps=1e-6, atol=1e-5)
    # without the reference the gradient is the same at p0 (only the constants' dependence is dropped)
    (ga,) = torch.autograd.grad(f(p6).sum(), p6)
    cc = soft_insertion_deletion(lin, xt, p6, torch.tensor([0, 1]), S=0.5, step=1, tau=2.0)
    (gb,) = torch.autograd.grad(torch.cat([cc.ins_logp, cc.del_logp], 1).sum(), p6)
    assert torch.allclose(ga, gb)


def test_soft_with_feature_mask_matches_pixel_level():
    model = TinyCNN(seed=3).eval()
    torch.manual_seed(3)
    x = torch.rand(2, 1, 8, 8)
    y = torch.tensor([1, 0])
    seg = grid_segments((8, 8), 4)  # 4 segments of 16 pixels
    assert seg.shape == (8, 8) and int(seg.max()) == 3 and int((seg == 0).sum()) == 16
    phi_seg = torch.randn(2, 4)
    with torch.no_grad():
        c = soft_insertion_deletion(model, x, phi_seg, y, S=0.5, step=1, tau=1e5, feature_mask=seg)
        hard = perturbation_curve(model, x, phi_seg[:, seg.reshape(-1)].view(2, 8, 8), y, mode="deletion",
                                  feature_mask=seg, max_fraction=0.5)
    assert torch.allclose(c.del_logp.exp(), hard[:, 1:], atol=1e-4)


def test_soft_inputs_follow_the_formula_and_chunks_are_invisible():
    """All B * 2M soft inputs: insertion alpha x + (1 - alpha) b, deletion alpha b + (1 - alpha) x, channels
    together; chunking the flat batch changes nothing (eval mode)."""

    class Recorder(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3 * 4 * 4, 5)
            self.seen = []

        def forward(self, x):
            self.seen.append(x.detach().clone())
            return self.fc(x.flatten(1))

    torch.manual_seed(4)
    net = Recorder().eval()
    x, y = torch.rand(3, 3, 4, 4), torch.tensor([0, 3, 4])
    base = torch.tensor([0.2, 0.5, 0.8])  # per-channel baseline
    phi = torch.randn(3, 16, requires_grad=True)
    c = soft_insertion_deletion(net, x, phi, y, S=0.5, step=3, tau=2.0, baseline=base)
    inputs = torch.cat(net.seen).view(3, 2 * 3, 3, 4, 4)  # M = ceil(8 / 3) = 3
    a = c.alpha.detach().view(3, 3, 1, 4, 4)
    b = base.view(1, 1, 3, 1, 1)
    assert torch.allclose(inputs[:, :3], a * x[:, None] + (1 - a) * b, atol=1e-6)
    assert torch.allclose(inputs[:, 3:], a * b + (1 - a) * x[:, None], atol=1e-6)
    for bs in (1, 4, 7):
        net.seen.clear()
        cb = soft_insertion_deletion(net, x, phi, y, S=0.5, step=3, tau=2.0, baseline=base, batch_size=bs)
        assert len(net.seen) == -(-18 // bs) and max(t.shape[0] for t in net.seen) == bs
        assert torch.allclose(cb.ins_logp, c.ins_logp, atol=1e-6) and torch.allclose(cb.del_logp, c.del_logp, atol=1e-6)
    (g,) = torch.autograd.grad(cb.ins_logp.sum() - cb.del_logp.sum(), phi)
    assert torch.isfinite(g).all() and float(g.abs().sum()) > 0
    with pytest.raises(ValueError, match="batch_size"):
        soft_insertion_deletion(net, x, phi, y, batch_size=0)


def test_regularizer_forms():
    ins_logp = torch.log(torch.tensor([[0.5, 0.25]]))
    del_logp = torch.log(torch.tensor([[0.5, 0.75]]))

    class C:
        pass

    c = C()
    c.ins_logp, c.del_logp = ins_logp, del_logp
    r_ins, r_del = idexpo_regularizers(c, deletion_form="direct")
    assert float(r_ins) == pytest.approx(-(np.log(0.5) + np.log(0.25)) / 2, rel=1e-5)
    assert float(r_del) == pytest.approx(-(np.log(0.5) + np.log(0.25)) / 2, rel=1e-5)  # -log(1 - p)
    clean = torch.log(torch.tensor([0.9]))
    _, r_ratio = idexpo_regularizers(c, clean, deletion_form="ratio")
    assert float(r_ratio) == pytest.approx((np.log(0.5) + np.log(0.75)) / 2 - np.log(0.9), rel=1e-5)
    with pytest.raises(ValueError, match="clean_logp"):
        idexpo_regularizers(c, deletion_form="ratio")
    with pytest.raises(ValueError, match="`deletion_form`"):
        idexpo_regularizers(c, deletion_form="log")


# ------------------------------------------------------------------------------- differentiable explainers


def test_gradcam_matches_captum_layer_gradcam():
    captum_attr = pytest.importorskip("captum.attr")
    model = TinyCNN(seed=4).eval()
    torch.manual_seed(4)
    x = torch.rand(3, 1, 8, 8)
    y = torch.tensor([0, 1, 2])
    e = DifferentiableGradCAM(upsample=False)(model, x, y)
    ref = captum_attr.LayerGradCam(model, model.cam).attribute(x, target=y, relu_attributions=True)[:, 0]
    assert torch.allclose(e.raw, ref, atol=1e-6)
    assert e.phi.shape == (3, 16) and e.feature_mask.shape == (8, 8)
    up = DifferentiableGradCAM(upsample=True)(model, x, y)
    assert up.phi.shape == (3, 64) and up.feature_mask is None
    assert torch.allclose(up.phi.view(3, 8, 8)[:, ::2, ::2], e.raw, atol=1e-6)  # pixel repetition


@pytest.mark.parametrize("second_order", [False, True])
def test_training_gradcam_is_per_sample_in_train_mode(second_order):
    # the map ID-ExpO trains on must be each sample's own Grad-CAM, also with BatchNorm in train mode
    # (batch statistics would otherwise couple the samples of the batch)
    from xcal_core.explainers import explain

    model = TinyBNCNN(seed=11)
    x, y = _blob_data(16, seed=11)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    e = DifferentiableGradCAM(second_order=second_order, upsample=True)(model, x, y)
    assert model.training and model.bn2.training  # modes restored
    for k, v in model.state_dict().items():  # the explanation pass does not touch the running statistics
        assert torch.equal(v, before[k]), k
    assert e.phi.requires_grad and e.logits is None  # train-mode logits come from a separate pass
    # reference 1: explain(..., "gradcam") with the same weights (in eval mode), pixel repetition
    ref = explain(model, x, y, "gradcam", upsample="nearest")[:, 0].reshape(16, -1)
    assert model.training
    assert torch.allclose(e.phi.detach(), ref, atol=1e-5, rtol=0)
    # reference 2: each sample alone through the training-mode explainer
    alone = torch.cat([DifferentiableGradCAM(second_order=second_order)(model, x[i : i + 1], y[i : i + 1]).phi.detach()
                       for i in range(16)])
    assert torch.allclose(e.phi.detach(), alone, atol=1e-5, rtol=0)
    # the evaluation copy drops the second-order graph and gives the same values
    ev = DifferentiableGradCAM(second_order=second_order).for_evaluation()
    assert not ev.second_order and ev.batchnorm == "frozen"
    assert torch.allclose(ev(model, x, y).phi.detach(), ref, atol=1e-5, rtol=0)
    # the coupled pass (one batched backward with batch statistics) is a different map, by a wide margin
    assert float(ref.abs().max()) > 0.1
    coupled = DifferentiableGradCAM(second_order=second_order, batchnorm="batch")(model, x, y)
    assert coupled.logits is not None
    rel = float((coupled.phi.detach() - ref).norm() / ref.norm())
    assert rel > 0.05
    # in eval mode the two modes agree (no batch statistics to couple the samples); the coupled train-mode
    # pass above updated the running statistics, so the reference is recomputed
    model.eval()
    ref = explain(model, x, y, "gradcam", upsample="nearest")[:, 0].reshape(16, -1)
    e_eval = DifferentiableGradCAM(second_order=second_order, batchnorm="batch")(model, x, y)
    assert torch.allclose(e_eval.phi.detach(), ref, atol=1e-5, rtol=0) and e_eval.logits is not None


def test_training_surrogate_is_per_sample_in_train_mode():
    model = TinyBNCNN(seed=12).train()
    x, y = _blob_data(6, seed=12)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    before = model.bn1.running_mean.clone()
    for make in (DifferentiableLIME, DifferentiableKernelSHAP):
        model.load_state_dict(state)  # the coupled pass of the previous round moved the running statistics
        ex = make(feature_mask=grid_segments((8, 8), 4), n_samples=24, batch_size=20)
        phi = ex(model, x, y, generator=torch.Generator().manual_seed(3)).phi
        assert phi.requires_grad and model.training and torch.equal(model.bn1.running_mean, before)
        alone = torch.cat([ex(model, x[i : i + 1], y[i : i + 1], generator=torch.Generator().manual_seed(3)).phi
                           for i in range(6)])
        assert torch.allclose(phi.detach(), alone.detach(), atol=1e-5, rtol=0)
        model.eval()
        ev = ex(model, x, y, generator=torch.Generator().manual_seed(3)).phi
        model.train()
        assert torch.allclose(phi.detach(), ev.detach(), atol=1e-6, rtol=0)
        detached = ex.for_evaluation()(model, x, y, generator=torch.Generator().manual_seed(3)).phi
        assert not detached.requires_grad and torch.allclose(detached, phi.detach(), atol=1e-6)
        coupled = make(feature_mask=grid_segments((8, 8), 4), n_samples=24, batch_size=20, batchnorm="batch")
        phc = coupled(model, x, y, generator=torch.Generator().manual_seed(3)).phi
        assert float((phc.detach() - phi.detach()).abs().max()) > 1e-3


def test_second_order_gradcam_differs_and_matches_finite_differences():
    model = TinyCNN(act=nn.Softplus, seed=5).double().eval()
    torch.manual_seed(5)
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    y = torch.tensor([1, 2])
    R = torch.randn(2, 4, 4, dtype=torch.float64)

    def loss(order2):
        e = DifferentiableGradCAM(second_order=order2, relu=False, upsample=False)(model, x, y)
        return (e.raw * R).sum()

    g2 = torch.autograd.grad(loss(True), [model.fc.weight, model.cam.weight])
    # first order: the map does not depend on the classifier head at all (its weights are constants)
    g1 = torch.autograd.grad(loss(False), [model.fc.weight, model.cam.weight], allow_unused=True, materialize_grads=True)
    assert float(g1[0].abs().max()) == 0.0
    assert not torch.allclose(g2[0], g1[0]) and not torch.allclose(g2[1], g1[1])
    # finite differences of the map itself w.r.t. a few parameters match the second-order gradient only
    eps = 1e-6
    for param, grad2, grad1 in ((model.fc.weight, g2[0], g1[0]), (model.cam.weight, g2[1], g1[1])):
        flat = param.data.view(-1)
        for j in (0, 5, 11):
            old = float(flat[j])
            flat[j] = old + eps
            lp = float(loss(True).detach())
            flat[j] = old - eps
            lm = float(loss(True).detach())
            flat[j] = old
            fd = (lp - lm) / (2 * eps)
            assert fd == pytest.approx(float(grad2.view(-1)[j]), rel=1e-4, abs=1e-8)
        assert float((grad2 - grad1).abs().max()) > 1e-4


def test_closed_form_surrogate_equals_sklearn_ridge():
    sk = pytest.importorskip("sklearn.linear_model")
    g = torch.Generator().manual_seed(6)
    for kind, ridge in (("lime", 1.0), ("kernelshap", 1e-3)):
        z = sample_coalitions(8, 40, kind, g)
        w = coalition_weights(z, kind)
        v = torch.randn(40, dtype=torch.float64)
        beta = surrogate_projection(z, w, ridge) @ v
        fit = sk.Ridge(alpha=ridge, fit_intercept=True, solver="cholesky").fit(
            z.double().numpy(), v.numpy(), sample_weight=w.numpy()
        )
        np.testing.assert_allclose(beta[1:].numpy(), fit.coef_, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(float(beta[0]), fit.intercept_, rtol=1e-5, atol=1e-6)


def test_surrogate_recovers_linear_contributions_and_is_differentiable():
    torch.manual_seed(7)
    lin = nn.Linear(5, 2)
    x = torch.randn(3, 5)
    y = torch.tensor([0, 1, 1])
    for make in (DifferentiableKernelSHAP, DifferentiableLIME):
        e = make(n_samples=64, score="logit", ridge=1e-8)(lin, x, y, generator=torch.Generator().manual_seed(0))
        contrib = lin.weight[y] * x  # exact Shapley values of a linear model w.r.t. the zero baseline
        assert torch.allclose(e.phi, contrib, atol=1e-4)
        assert e.phi.requires_grad
        (gw,) = torch.autograd.grad(e.phi.sum(), lin.weight)
        # d sum(phi) / dW[c, j] = sum over samples with y = c of x_j
        expect = torch.zeros_like(lin.weight).index_add_(0, y, x)
        assert torch.allclose(gw, expect, atol=1e-4)


def test_coalition_sampler():
    g = torch.Generator().manual_seed(8)
    z = sample_coalitions(6, 200, "kernelshap", g)
    assert z.shape == (200, 6) and bool((z[0] == 1).all()) and bool((z[1] == 0).all())
    sizes = z[2:].sum(1)
    assert int(sizes.min()) >= 1 and int(sizes.max()) <= 5
    # the kernel puts more mass on extreme sizes than on the middle one
    assert int(((sizes == 1) | (sizes == 5)).sum()) > int((sizes == 3).sum())
    w = coalition_weights(z, "kernelshap", constraint_weight=1e5)
    assert float(w[0]) == 1e5 and float(w[1]) == 1e5 and torch.allclose(w[2:], torch.ones(198, dtype=torch.float64))
    zl = sample_coalitions(6, 50, "lime", g)
    wl = coalition_weights(zl, "lime", kernel_width=0.25)
    assert float(wl[0]) == 1.0 and bool((wl[1:] < 1).all())
    k = zl.sum(1).double()
    # lime's kernel: sqrt(exp(-D^2 / sigma^2)) = exp(-D^2 / (2 sigma^2)), D the cosine distance to all-ones
    dist = 1 - torch.sqrt(k / 6)
    assert torch.allclose(wl, torch.sqrt(torch.exp(-(dist**2) / 0.25**2)))
    assert torch.allclose(wl, torch.exp(-(dist**2) / (2 * 0.0625)))


# ------------------------------------------------------------------------------------------- fine-tuning


@pytest.fixture(scope="module")
def toy():
    torch.manual_seed(9)
    x, y = _blob_data(96, seed=9)
    xv, yv = _blob_data(64, seed=10)
    model = TinyCNN(seed=9)
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    for _ in range(30):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval(), (x, y), (xv, yv)


def test_finetune_regularizers_move_ins_and_del_the_intended_way(toy):
    model, train, val = toy
    gc = DifferentiableGradCAM(second_order=False, upsample=False)
    kw = dict(epochs=3, lr=0.01, batch_size=32, S=0.5, seed=0)
    r_ce = finetune_ce_only(model, (train, val), gc, lambda1=0.3, **kw)
    r_id = finetune_idexpo(model, (train, val), gc, lambda1=0.3, **kw)
    h_id, h_ce = r_id.history, r_ce.history
    assert list(h_id.columns[:6]) == ["epoch", "loss", "ce", "r_ins", "r_del", "l2"]
    assert h_id["epoch"].tolist() == [0, 1, 2, 3] and h_id["selected"].sum() == 1
    assert h_id.loc[0, "val_ins"] == h_ce.loc[0, "val_ins"]  # same start, same evaluation
    last_id, last_ce = h_id.iloc[-1], h_ce.iloc[-1]
    assert last_id["val_ins"] > last_ce["val_ins"] and last_id["val_del"] < last_ce["val_del"]
    assert last_id["val_acc"] >= last_ce["val_acc"] - 0.02
    assert h_ce["r_ins"].isna().all() and h_id["r_ins"].iloc[1:].notna().all()
    # each regularizer alone moves its own metric the intended way
    ins_only = finetune_idexpo(model, (train, val), gc, lambda1=1.0, terms="ins", **kw).history.iloc[-1]
    del_only = finetune_idexpo(model, (train, val), gc, lambda1=1.0, terms="del", **kw).history.iloc[-1]
    assert ins_only["val_ins"] > last_ce["val_ins"] + 0.01
    assert del_only["val_del"] < last_ce["val_del"] - 0.05
    # deterministic under the seed; the input model is not modified
    again = finetune_idexpo(model, (train, val), gc, lambda1=0.3, **kw)
    pd.testing.assert_frame_equal(again.history.drop(columns="seconds"), h_id.drop(columns="seconds"))
    assert not model.training and r_id.model_at(0) is not None
    ev = evaluate_idexpo(r_id.model, val, gc)
    assert ev["ins"].shape == (64,) and 0 <= ev["accuracy"] <= 1


def test_finetune_with_lime_and_frozen_batchnorm_runs(toy):
    model, train, val = toy
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))
    lime = DifferentiableLIME(feature_mask=grid_segments((8, 8), 4), n_samples=12)
    before = net[2].running_mean.clone()
    r = finetune_idexpo(net, (train, val), lime, epochs=1, batch_size=64, batchnorm="frozen", n_val=32,
                        deletion_form="ratio", keep_checkpoints=False)
    assert torch.equal(r.model[2].running_mean, before)  # frozen BN statistics
    assert r.best_epoch == 1 and list(r.checkpoints) == []
    r2 = finetune_idexpo(net, (train, val), lime, epochs=1, batch_size=64, batchnorm="train", n_val=32)
    assert not torch.equal(r2.model[2].running_mean, before)


def test_ce_only_history_records_how_far_the_weights_moved(toy):
    model, train, val = toy
    gc = DifferentiableGradCAM(second_order=False, upsample=False)
    h = finetune_ce_only(model, (train, val), gc, epochs=2, lr=0.05, batch_size=32).history
    assert h.loc[0, "param_shift"] == 0.0
    assert 0 < h.loc[1, "param_shift"] < h.loc[2, "param_shift"] < 1  # moved, and further each epoch
    assert h["ce"].iloc[1] != h["ce"].iloc[2]
    h0 = finetune_ce_only(model, (train, val), gc, epochs=1, lr=1e-12, momentum=0.0, weight_decay=0.0).history
    assert h0.loc[1, "param_shift"] < 1e-9  # a learning rate of ~0 leaves the weights where they were


def test_eta_sweep_selects_per_seed_and_summary(toy):
    model, train, val = toy
    gc = DifferentiableGradCAM(second_order=False, upsample=False)
    runs = compare_finetuning(model, (train, val), gc, seeds=[0, 1], lambda1=0.3, extra_lambda1=[1.0],
                              extra_all_seeds=True, epochs=2, lr=0.01, batch_size=48)
    assert sorted(runs) == ["ce_only/seed0", "ce_only/seed1", "idexpo/lambda1=0.3/seed0", "idexpo/lambda1=0.3/seed1",
                            "idexpo/lambda1=1/seed0", "idexpo/lambda1=1/seed1"]
    # epoch 0 is evaluated once and shared; it equals what a run computes on its own
    alone = finetune_ce_only(model, (train, val), gc, epochs=1, lr=0.01, batch_size=48, seed=5).history.iloc[0]
    for r in runs.values():
        h0 = r.history.iloc[0]
        assert (h0["val_acc"], h0["val_ins"], h0["val_del"]) == (alone["val_acc"], alone["val_ins"], alone["val_del"])
    with pytest.raises(ValueError, match="initial_eval"):
        finetune_ce_only(model, (train, val), gc, epochs=1, initial_eval={"accuracy": 0.5})
    sweep = eta_sweep(runs, val, gc, etas=[0.5, 50.0], by_seed=True)
    assert len(sweep) == 2 * 2 * 2 and set(sweep["seed"]) == {0, 1}
    for _, row in sweep.iterrows():  # every selection comes from its own seed and maximises the score there
        assert row["run"].endswith(f"seed{row['seed']}")
        cands = [(r.history, k) for k, r in runs.items() if k.endswith(f"seed{row['seed']}")
                 and (k.startswith("idexpo") == (row["method"] == "idexpo"))]
        best = max(validation_score(a, i, d, eta=row["eta"]) for h, _ in cands
                   for a, i, d in zip(h["val_acc"][1:], h["val_ins"][1:], h["val_del"][1:]))
        h = runs[row["run"]].history.set_index("epoch").loc[row["epoch"]]
        assert validation_score(h["val_acc"], h["val_ins"], h["val_del"], eta=row["eta"]) == pytest.approx(best)
    assert (sweep["faithfulness"] == sweep["ins"] + 1 - sweep["del"]).all()
    pooled = eta_sweep(runs, val, gc, etas=[0.5], by_seed=False)
    assert set(pooled["seed"]) == {-1} and len(pooled) == 2
    from xcal_core.training import candidate_accuracies

    cand = candidate_accuracies(runs, val)  # on the validation split itself, accuracy == val_acc
    assert len(cand) == 6 * 2 and set(cand["method"]) == {"ce_only", "idexpo"}
    assert np.allclose(cand["accuracy"], cand["val_acc"])


def test_summarize_eta_sweep_known_answer():
    rows = []
    for k, eta in enumerate([0.5, 1.0, 2.0, 4.0]):
        for seed in (0, 1, 2):
            rows.append({"method": "idexpo", "eta": eta, "seed": seed, "run": f"r{k}", "epoch": 1,
                         "accuracy": 0.80 + 0.01 * k, "faithfulness": 1.5 - 0.05 * k + 0.001 * seed})
            rows.append({"method": "ce_only", "eta": eta, "seed": seed, "run": "c", "epoch": 1,
                         "accuracy": 0.85, "faithfulness": 1.2 + 0.002 * seed})
    per_eta, summ = summarize_eta_sweep(pd.DataFrame(rows))
    assert summ["spearman_acc"] == pytest.approx(1.0) and summ["spearman_faith"] == pytest.approx(-1.0)
    assert summ["a_better_at_every_eta"] and summ["n_a_better"] == 4 and summ["n_etas"] == 4
    assert summ["n_selections"] == 4 and summ["acc_range"] == pytest.approx(0.03)
    assert per_eta["faith_diff"].iloc[0] == pytest.approx(0.3 - 0.001) and per_eta["faith_spread"].iloc[0] == pytest.approx(0.004)
    # the same selection at every eta: no trade-off to correlate (NaN), one selection
    flat = pd.DataFrame(rows).assign(accuracy=0.8, faithfulness=lambda d: d["faithfulness"].where(d["method"] == "ce_only", 1.5),
                                     run=lambda d: d["run"].where(d["method"] == "ce_only", "r0"))
    _, s2 = summarize_eta_sweep(flat)
    assert np.isnan(s2["spearman_acc"]) and s2["n_selections"] == 1
    # an effect inside the seed spread does not count
    noisy = pd.DataFrame(rows)
    noisy.loc[(noisy["method"] == "ce_only") & (noisy["seed"] == 2), "faithfulness"] = 1.49
    per_n, s3 = summarize_eta_sweep(noisy)
    assert not s3["a_better_at_every_eta"] and not per_n["a_better"].any()
    with pytest.raises(ValueError, match="columns"):
        summarize_eta_sweep(pd.DataFrame(rows).drop(columns="seed"))


def test_threshold_ties_and_map_agreement_known_answers():
    phi = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0, -1.0, -2.0, -3.0],   # distinct: no tie
                        [4.0, 3.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],      # cutoff 2 fine, cutoff 4 inside the zeros
                        [4.0, 3.0, 3.0, 1.0, 0.0, -1.0, -2.0, -3.0]])  # tie at ranks 2-3 straddles cutoff 2
    assert threshold_ties(phi, S=0.5, step=2).tolist() == [False, True, True]
    assert threshold_ties(phi, S=0.5, step=4).tolist() == [False, True, False]
    a = torch.arange(12.0).reshape(2, 6)
    same = map_agreement(a, a, top_k=2)
    assert same["max_abs_diff"] == 0 and same["rel_l2"] == 0 and same["median_spearman"] == pytest.approx(1.0)
    assert same["top_k_overlap"] == 1.0
    rev = map_agreement(a.flip(1), a, top_k=2)
    assert rev["median_spearman"] == pytest.approx(-1.0) and rev["top_k_overlap"] == 0.0
    const = map_agreement(torch.zeros(2, 6), a, top_k=2)
    assert np.isnan(const["spearman"]).all() and np.isnan(const["median_spearman"])
    with pytest.raises(ValueError, match="same shape"):
        map_agreement(a, a[:, :5])
    with pytest.raises(ValueError, match="top_k"):
        map_agreement(a, a, top_k=7)


def test_frozen_batch_statistics_restores_modes_and_rejects_non_modules():
    model = TinyBNCNN(seed=1).train()
    model.bn1.eval()  # a layer already frozen stays frozen afterwards
    with frozen_batch_statistics(model) as froze:
        assert froze and not model.bn2.training and model.training
    assert model.bn2.training and not model.bn1.training
    with pytest.raises(RuntimeError):
        with frozen_batch_statistics(model):
            raise RuntimeError("boom")
    assert model.bn2.training
    with frozen_batch_statistics(model.eval()) as froze:
        assert not froze
    with pytest.raises(TypeError, match="`model`"):
        with frozen_batch_statistics("model"):
            pass


def test_refresh_batchnorm_statistics_recovers_the_data_statistics():
    from xcal_core.training import refresh_batchnorm_statistics

    model = TinyBNCNN(seed=2).eval()  # running statistics planted far from any batch's
    x, _ = _blob_data(40, seed=2)
    fresh = refresh_batchnorm_statistics(model, x, batch_size=40)  # one batch: exactly the statistics of x
    assert not fresh.training and fresh is not model
    with torch.no_grad():
        a1 = fresh.conv1(x)
    assert torch.allclose(fresh.bn1.running_mean, a1.mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(fresh.bn1.running_var, a1.var((0, 2, 3), unbiased=True), rtol=1e-4)
    assert fresh.bn1.momentum == model.bn1.momentum == 0.1
    two = refresh_batchnorm_statistics(model, x, batch_size=20)  # two equal batches: the mean is exact too
    assert torch.allclose(two.bn1.running_mean, a1.mean((0, 2, 3)), atol=1e-5)
    assert not torch.allclose(model.bn1.running_mean, fresh.bn1.running_mean)  # the input model is untouched
    lin = nn.Linear(3, 2)
    assert torch.equal(refresh_batchnorm_statistics(lin, torch.rand(4, 3)).weight, lin.weight)


def test_soft_step_for():
    from xcal_core.training import soft_step_for

    assert soft_step_for(49, 0.5) == 1 and soft_step_for(1024, 0.5) == 16  # released rule: F / 64
    assert soft_step_for(49, 0.5, 8) == 3 and soft_step_for(16, 0.5, 8) == 1 and soft_step_for(30, 0.5, 8) == 2
    with pytest.raises(ValueError, match="n_soft_steps"):
        soft_step_for(49, 0.5, 0)


def test_checkpoint_selection():
    h = pd.DataFrame({"epoch": [0, 1, 2, 3], "val_acc": [0.9, 0.95, 0.7, 0.9], "val_ins": [0.3, 0.3, 0.9, 0.5],
                      "val_del": [0.3, 0.3, 0.1, 0.2]})
    assert validation_score(0.9, 0.5, 0.2, eta=2.0) == pytest.approx(3.1)
    assert validation_score(0.7, 0.9, 0.1, eta=2.0, acc_floor=0.8) == -1e8
    assert select_checkpoint(h, eta=2.0, acc_floor=0.8) == 3  # epoch 2 is below the floor
    assert select_checkpoint(h, eta=2.0) == 2  # without the floor: 1.4 + 0.9 + 0.9
    assert select_checkpoint(h, eta=20.0, acc_floor=0.8) == 1  # accuracy dominates
    assert select_checkpoint(h, eta=2.0, acc_floor=0.99) == 2  # nobody reaches it: best ignoring the floor


# -------------------------------------------------------------------------------------------- bad input


def test_bad_input_errors(toy):
    model, train, val = toy
    gc = DifferentiableGradCAM()
    with pytest.raises(ValueError, match="`S`"):
        soft_masks(torch.randn(2, 8), S=1.0)
    with pytest.raises(ValueError, match="`S`"):
        finetune_idexpo(model, (train, val), gc, S=0.0)
    with pytest.raises(ValueError, match="`tau`"):
        soft_masks(torch.randn(2, 8), tau=0.0)
    with pytest.raises(ValueError, match="`tau`"):
        finetune_idexpo(model, (train, val), gc, tau=-1.0)
    with pytest.raises(ValueError, match="unknown `layer` 'conv9'.*'cam'"):
        DifferentiableGradCAM("conv9")(model, train[0][:2], train[1][:2])
    with pytest.raises(TypeError, match="not a differentiable explainer"):
        finetune_idexpo(model, (train, val), lambda m, x, t: torch.zeros_like(x))
    with pytest.raises(ValueError, match="`lambda1`"):
        finetune_idexpo(model, (train, val), gc, lambda1=-0.1)
    with pytest.raises(ValueError, match="`lambda2`"):
        finetune_idexpo(model, (train, val), gc, lambda2=-1.0)
    with pytest.raises(ValueError, match="`deletion_form`"):
        finetune_idexpo(model, (train, val), gc, deletion_form="log")
    with pytest.raises(ValueError, match="`batchnorm`"):
        finetune_idexpo(model, (train, val), gc, batchnorm="off")
    with pytest.raises(ValueError, match="`acc_floor`"):
        finetune_idexpo(model, (train, val), gc, acc_floor=80)
    with pytest.raises(TypeError, match="`data`"):
        finetune_idexpo(model, train[0], gc)
    with pytest.raises(ValueError, match="`phi` has 10 features"):
        soft_insertion_deletion(model, train[0][:2], torch.randn(2, 10), train[1][:2])
    with pytest.raises(ValueError, match="`feature_mask`"):
        soft_insertion_deletion(model, train[0][:2], torch.randn(2, 4), train[1][:2], feature_mask=torch.zeros(4, 4))
    with pytest.raises(ValueError, match="`kind`"):
        sample_coalitions(4, 10, "shap")
    with pytest.raises(ValueError, match="`terms`"):
        finetune_idexpo(model, (train, val), gc, terms="cins")
    with pytest.raises(TypeError, match="regularize"):
        finetune_ce_only(model, (train, val), gc, regularize=True)
    with pytest.raises(ValueError, match="`batchnorm`"):
        DifferentiableGradCAM(batchnorm="per_sample")
    with pytest.raises(ValueError, match="`batchnorm`"):
        DifferentiableLIME(batchnorm="eval")
