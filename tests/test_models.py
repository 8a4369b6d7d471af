"""Tests for xcal_core.models: factories, training + checkpoint cache, prediction helpers."""

from __future__ import annotations

import os
import warnings
from types import SimpleNamespace as NS

import numpy as np
import pytest
import torch
from torch import nn

from xcal_core.models import (
    IMAGENET_NORMALIZATION,
    MODELS,
    CorruptCheckpointError,
    Normalize,
    build_model,
    config_hash,
    get_layer,
    load_checkpoint,
    predict_logits,
    predict_proba,
    random_crop_flip,
    reused_modules,
    save_checkpoint,
    tensor_fingerprint,
    torchvision_weights_path,
    train_classifier,
    train_regressor,
)
from xcal_core.models import training as training_mod


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------
def _blobs(n: int, seed: int, d: int = 6, k: int = 3) -> NS:
    """Linearly separable Gaussian blobs: class c centred at 3 * e_c."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % k
    x = torch.randn(n, d, generator=g) * 0.5
    x[torch.arange(n), y] += 3.0
    return NS(x=x, y=y)


def _tab_ds(name="blobs", n_train=240, n_cal=90) -> NS:
    info = NS(name=name, task="classification", kind="tabular", input_shape=(6,), n_classes=3, normalization=None)
    return NS(info=info, train=_blobs(n_train, 0), cal=_blobs(n_cal, 1), test=_blobs(n_cal, 2))


def _img_split(n: int, seed: int) -> NS:
    """4 classes on 8x8 images: which quadrant holds a bright 3x3 square."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 8, 8, generator=g) * 0.3
    y = torch.arange(n) % 4
    for i in range(n):
        r, c = divmod(int(y[i]), 2)
        x[i, 0, r * 4:r * 4 + 3, c * 4:c * 4 + 3] += 0.7
    return NS(x=x, y=y)


def _img_ds(n_train=160, n_cal=64) -> NS:
    info = NS(name="quadrants", task="classification", kind="image", input_shape=(1, 8, 8), n_classes=4,
              normalization=((0.3,), (0.3,)))
    return NS(info=info, train=_img_split(n_train, 0), cal=_img_split(n_cal, 1), test=_img_split(n_cal, 2))


def _state_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


FAST = dict(progress=False, lr=1e-2, batch_size=32)

# (name, input_shape, n_classes, kwargs)
CASES = [
    ("mlp", (6,), 3, {"hidden": (16, 8), "dropout": 0.1}),
    ("mlp", (1, 8, 8), 1, {}),  # images are flattened; 1 output = regressor
    ("tabular_resnet", (6,), 3, {"d": 8, "d_hidden": 16, "n_blocks": 2, "hidden_dropout": 0.1, "residual_dropout": 0.1}),
    ("small_cnn", (1, 8, 8), 10, {"dropout": 0.2, "batch_norm": False}),
    ("small_cnn", (3, 32, 32), 6, {"width": 4, "batch_norm": True}),
    ("resnet18_cifar", (3, 32, 32), 10, {"width": 4, "dropout": 0.1}),
    ("resnet_cifar", (3, 32, 32), 100, {"depth": 8, "width": 4}),
    ("vgg_cifar", (3, 32, 32), 10, {"depth": 11, "dropout": 0.1}),
    ("tv:resnet18", (3, 32, 32), 7, {}),
    ("tv:resnet18", (1, 16, 16), 4, {}),  # 1-channel input: the stem conv is replaced
]
CASE_IDS = [f"{c[0]}-{'x'.join(map(str, c[1]))}" for c in CASES]


@pytest.fixture(scope="module")
def built():
    """Each case's model, built once (seeded), with an input batch."""
    out = []
    for name, shape, k, kw in CASES:
        m = build_model(name, shape, k, seed=0, **kw).eval()
        x = torch.rand(3, *shape, generator=torch.Generator().manual_seed(1))
        out.append((m, x, k))
    return out


# ------------------------------------------------------------------------------------------
# factory
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("i", range(len(CASES)), ids=CASE_IDS)
def test_output_shape_and_metadata(built, i):
    m, x, k = built[i]
    out = m(x)
    assert out.shape == (3, k)
    assert torch.isfinite(out).all()
    assert m.input_shape == CASES[i][1] and m.n_classes == k and m.xcal_spec["name"] == CASES[i][0]


@pytest.mark.parametrize("i", range(len(CASES)), ids=CASE_IDS)
def test_every_relu_is_a_distinct_module_run_once(built, i):
    m, x, _ = built[i]
    relus = [mod for _, mod in m.named_modules(remove_duplicate=False) if isinstance(mod, nn.ReLU)]
    assert relus, "every architecture here has ReLUs"
    assert len({id(r) for r in relus}) == len(relus)  # no instance registered twice
    assert not any(r.inplace for r in relus)
    assert reused_modules(m, x) == []  # no leaf module called twice in a forward pass


def test_untied_torchvision_blocks_compute_the_same_function():
    """The ReLU-untying patch of torchvision's BasicBlock / Bottleneck keeps the forward pass exact."""
    import torchvision
    from torchvision.models.resnet import BasicBlock, Bottleneck

    from xcal_core.models.factory import _untie_resnet_relus

    for block in (BasicBlock, Bottleneck):
        torch.manual_seed(0)
        net = torchvision.models.ResNet(block, [1, 1, 1, 1], num_classes=3).eval()
        x = torch.rand(2, 3, 32, 32)
        before = net(x)
        assert reused_modules(net, x, (nn.ReLU,))  # torchvision reuses `relu` inside blocks
        _untie_resnet_relus(net)
        for m in net.modules():
            if isinstance(m, nn.ReLU):
                m.inplace = False
        torch.testing.assert_close(net(x), before, rtol=0, atol=0)
        assert reused_modules(net, x) == []
        assert isinstance(net.layer1[0], block)  # still a BasicBlock / Bottleneck for isinstance checks


def test_reused_modules_detects_torchvision_shared_relu():
    import torchvision

    raw = torchvision.models.resnet18(num_classes=3).eval()  # BasicBlock calls self.relu twice
    bad = reused_modules(raw, torch.rand(1, 3, 32, 32), (nn.ReLU,))
    assert "layer1.0.relu" in bad and "layer4.1.relu" in bad
    shared = nn.Sequential(nn.Linear(2, 2), act := nn.ReLU(), nn.Linear(2, 2), act)
    assert reused_modules(shared, torch.rand(2, 2)) == ["1", "3"]


@pytest.mark.parametrize("name,shape,kw", [("small_cnn", (1, 8, 8), {}), ("resnet18_cifar", (3, 16, 16), {"width": 4})])
def test_deeplift_completeness_holds(name, shape, kw):
    """DeepLift's rule applies (it raises on reused ReLUs): attributions sum to f(x) - f(0)."""
    from captum.attr import DeepLift

    m = build_model(name, shape, 3, seed=0, **kw).eval()
    x = torch.rand(4, *shape, generator=torch.Generator().manual_seed(0))
    target = torch.tensor([0, 1, 2, 0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        attr, delta = DeepLift(m).attribute(x, baselines=0 * x, target=target, return_convergence_delta=True)
    gap = m(x)[torch.arange(4), target] - m(0 * x)[torch.arange(4), target]
    torch.testing.assert_close(attr.flatten(1).sum(1), gap.detach(), atol=2e-3, rtol=0)
    assert delta.abs().max() < 2e-3


@pytest.mark.parametrize("i", [3, 4, 5, 6, 7], ids=[CASE_IDS[j] for j in [3, 4, 5, 6, 7]])
def test_cam_layer_resolves_to_conv(built, i):
    m, x, _ = built[i]
    layer = get_layer(m, m.cam_layer)
    assert layer is get_layer(m)  # default: model.cam_layer
    assert isinstance(layer, nn.Conv2d) or any(isinstance(s, nn.Conv2d) for s in layer.modules())
    feats = {}
    h = layer.register_forward_hook(lambda mod, inp, out: feats.setdefault("a", out))
    m(x)
    h.remove()
    assert feats["a"].ndim == 4  # a spatial feature map for Grad-CAM


def test_small_cnn_cam_layer_is_last_conv_at_expected_resolution():
    from captum.attr import LayerGradCam

    for shape, res in [((1, 8, 8), 4), ((3, 32, 32), 8)]:
        m = build_model("small_cnn", shape, 5, seed=0).eval()
        convs = [n for n, mod in m.named_modules() if isinstance(mod, nn.Conv2d)]
        assert m.cam_layer == convs[-1]
        cam = LayerGradCam(m, get_layer(m)).attribute(torch.rand(2, *shape), target=1)
        assert cam.shape == (2, 1, res, res)


def test_small_cnn_heads():
    auto8 = build_model("small_cnn", (1, 8, 8), 3, width=4)  # small input: flatten the 4x4 map
    assert auto8.head == "flatten" and auto8.fc.in_features == 8 * 4 * 4
    auto32 = build_model("small_cnn", (3, 32, 32), 3, width=4)  # larger: global average pooling
    assert auto32.head == "avg" and auto32.fc.in_features == 16
    odd = build_model("small_cnn", (3, 20, 28), 3, width=4, head="flatten")  # 20x28 -> 5x7
    assert odd.fc.in_features == 16 * 5 * 7 and odd(torch.rand(2, 3, 20, 28)).shape == (2, 3)


def test_get_layer_unknown_name():
    m = build_model("small_cnn", (1, 8, 8), 3)
    with pytest.raises(ValueError, match="`name` 'features.conv99' is not a layer"):
        get_layer(m, "features.conv99")
    with pytest.raises(ValueError, match="has no `cam_layer`"):
        get_layer(build_model("mlp", (4,), 2))


def test_normalization_is_the_first_layer():
    mean, std = (0.2, 0.4, 0.6), (0.1, 0.2, 0.3)
    m = build_model("small_cnn", (3, 8, 8), 4, normalization=(mean, std), seed=3).eval()
    plain = build_model("small_cnn", (3, 8, 8), 4, seed=3).eval()
    assert isinstance(next(iter(m.children())), Normalize)
    x = torch.rand(5, 3, 8, 8)
    z = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(m(x), plain(z))
    torch.testing.assert_close(m.normalize(x), z)
    # tabular: per-feature statistics
    t = build_model("mlp", (3,), 2, normalization=([1.0, 2.0, 3.0], [2.0, 2.0, 2.0]))
    torch.testing.assert_close(t.normalize(torch.tensor([[3.0, 2.0, 1.0]])), torch.tensor([[1.0, 0.0, -1.0]]))
    with pytest.raises(ValueError, match="std must be > 0"):
        build_model("small_cnn", (3, 8, 8), 4, normalization=(mean, (0.1, 0.0, 0.3)))
    with pytest.raises(ValueError, match="has 2 entries but the input has 3 channels"):
        build_model("small_cnn", (3, 8, 8), 4, normalization=((0.1, 0.2), (1.0, 1.0)))


def test_build_model_seed_is_reproducible_and_leaves_global_rng_alone():
    state = torch.get_rng_state()
    a = build_model("resnet18_cifar", (3, 16, 16), 5, width=4, seed=7)
    b = build_model("resnet18_cifar", (3, 16, 16), 5, width=4, seed=7)
    c = build_model("resnet18_cifar", (3, 16, 16), 5, width=4, seed=8)
    assert torch.equal(torch.get_rng_state(), state)
    assert _state_equal(a, b) and not _state_equal(a, c)


def test_tabular_resnet_block_structure():
    m = build_model("tabular_resnet", (5,), 2, d=8, d_hidden=12, n_blocks=3)
    blk = m.blocks[0]
    kinds = [type(s).__name__ for s in blk.children()]
    assert kinds == ["BatchNorm1d", "Linear", "ReLU", "Dropout", "Linear", "Dropout"]
    assert len(m.blocks) == 3 and blk.linear1.out_features == 12 and m.head.in_features == 8
    # skip connection: zeroing the second linear layer makes a block the identity
    with torch.no_grad():
        blk.linear2.weight.zero_()
        blk.linear2.bias.zero_()
    blk.eval()
    z = torch.randn(4, 8)
    torch.testing.assert_close(blk(z), z)


def test_factory_errors():
    with pytest.raises(ValueError, match=r"unknown model `name` 'lenet'; expected one of \['mlp'"):
        build_model("lenet", (1, 8, 8), 10)
    with pytest.raises(ValueError, match="unknown torchvision model 'tv:resnet19'"):
        build_model("tv:resnet19", (3, 32, 32), 10)
    with pytest.raises(ValueError, match=r"`n_classes` must be in \[1, inf\]"):
        build_model("mlp", (4,), 0)
    with pytest.raises(TypeError, match="`n_classes` must be an int"):
        build_model("mlp", (4,), 2.5)
    with pytest.raises(ValueError, match="`input_shape` for 'small_cnn' must be"):
        build_model("small_cnn", (64,), 3)
    with pytest.raises(ValueError, match="`input_shape` must be a non-empty tuple"):
        build_model("mlp", (0, 3), 3)
    with pytest.raises(ValueError, match=r"unknown keyword\(s\) \['widht'\]"):
        build_model("small_cnn", (1, 8, 8), 3, widht=8)
    with pytest.raises(ValueError, match="`dropout` must be in"):
        build_model("small_cnn", (1, 8, 8), 3, dropout=1.0)
    with pytest.raises(ValueError, match=r"unknown `head` 'max'; expected one of \['avg', 'flatten'\]"):
        build_model("small_cnn", (1, 8, 8), 3, head="max")
    with pytest.raises(ValueError, match="too small for n_blocks=4"):
        build_model("small_cnn", (1, 4, 4), 3, n_blocks=4)


def test_pretrained_needs_cache_or_download(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    path, url = torchvision_weights_path("resnet18")
    assert path.startswith(str(tmp_path)) and path.endswith(os.path.basename(url))
    with pytest.raises(ValueError, match=r"pretrained=True` for tv:resnet18 needs its weights.*allow_download=True"):
        build_model("tv:resnet18", (3, 32, 32), 10, pretrained=True)
    # a file already in the hub cache is used without any download
    import torchvision

    ref = torchvision.models.resnet18()
    os.makedirs(os.path.dirname(path))
    torch.save(ref.state_dict(), path)
    m = build_model("tv:resnet18", (3, 32, 32), 10, pretrained=True).eval()
    assert torch.equal(m.net.conv1.weight, ref.conv1.weight)
    assert m.net.fc.out_features == 10  # head replaced
    torch.testing.assert_close(m.normalize.mean.flatten(), torch.tensor(IMAGENET_NORMALIZATION[0]))
    assert reused_modules(m, torch.rand(1, 3, 32, 32)) == []
    # same weights, 1000 classes: the pretrained head stays
    m1000 = build_model("tv:resnet18", (3, 32, 32), 1000, pretrained=True)
    assert torch.equal(m1000.net.fc.weight, ref.fc.weight)
    # grayscale input: the stem sums the pretrained RGB filters (mean x 3 / C), normalization averaged
    g = build_model("tv:resnet18", (1, 16, 16), 10, pretrained=True)
    torch.testing.assert_close(g.net.conv1.weight, ref.conv1.weight.sum(1, keepdim=True))
    torch.testing.assert_close(g.normalize.mean.flatten(), torch.tensor([sum(IMAGENET_NORMALIZATION[0]) / 3]))
    # fine-tuning through train_classifier, then a cache hit that no longer needs the weights file
    gen = torch.Generator().manual_seed(0)
    tiny = NS(x=torch.rand(4, 3, 8, 8, generator=gen), y=torch.arange(4) % 2)
    ds = NS(info=NS(name="tiny", task="classification", input_shape=(3, 8, 8), n_classes=2,
                    normalization=((0.5,) * 3, (0.2,) * 3)), train=tiny, cal=tiny, test=tiny)
    kw = dict(epochs=1, batch_size=4, seed=0, progress=False, cache_dir=tmp_path / "cache",
              model_kwargs={"pretrained": True})
    ft = train_classifier("tv:resnet18", ds, **kw)
    torch.testing.assert_close(ft.model.normalize.std.flatten(), torch.tensor(IMAGENET_NORMALIZATION[1]))
    os.remove(path)
    hit = train_classifier("tv:resnet18", ds, **kw)
    assert hit.from_cache and _state_equal(hit.model, ft.model)
    # unreadable cached weights: a clear error, not a pickle traceback
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(b"garbage")
    with pytest.raises(ValueError, match="could not be read"):
        build_model("tv:resnet18", (3, 32, 32), 10, pretrained=True)


@pytest.mark.slow
def test_tv_vgg11_relus_and_cam_layer():
    m = build_model("tv:vgg11", (3, 32, 32), 5, seed=0).eval()
    x = torch.rand(1, 3, 32, 32)
    assert m(x).shape == (1, 5)
    assert isinstance(get_layer(m), nn.Conv2d) and m.cam_layer == "net.features.18"
    assert reused_modules(m, x) == []
    assert not any(r.inplace for r in m.modules() if isinstance(r, nn.ReLU))


# ------------------------------------------------------------------------------------------
# prediction helpers
# ------------------------------------------------------------------------------------------
def test_predict_logits_batches_restores_mode_and_supports_mc_dropout():
    m = build_model("mlp", (6,), 3, hidden=(32,), dropout=0.5, seed=0)
    m.train()
    x = torch.randn(37, 6)
    full = predict_logits(m, x)
    torch.testing.assert_close(predict_logits(m, x, batch_size=5), full)
    assert m.training and all(mod.training for mod in m.modules())  # mode restored
    m.eval()
    torch.testing.assert_close(full, m(x).detach())
    assert not full.requires_grad and full.shape == (37, 3)
    # numpy input -> CPU tensor
    torch.testing.assert_close(predict_logits(m, x.numpy()), full)
    # eval_mode=False keeps MC dropout active
    for mod in m.modules():
        if isinstance(mod, nn.Dropout):
            mod.train()
    a, b = predict_logits(m, x, eval_mode=False), predict_logits(m, x, eval_mode=False)
    assert not torch.allclose(a, b)
    p = predict_proba(m, x)
    torch.testing.assert_close(p, torch.softmax(full, 1))
    torch.testing.assert_close(p.sum(1), torch.ones(37))


def test_predict_errors():
    m = build_model("small_cnn", (1, 8, 8), 3)
    x = torch.rand(4, 1, 8, 8)
    x[1, 0, 2, 2] = float("nan")
    with pytest.raises(ValueError, match="`x` contains 1 NaN or inf"):
        predict_logits(m, x)
    with pytest.raises(ValueError, match=r"per-sample shape \(3, 8, 8\) but the model expects \(1, 8, 8\)"):
        predict_logits(m, torch.rand(2, 3, 8, 8))
    with pytest.raises(ValueError, match=r"must be a batch of shape \(N, 1, 8, 8\)"):
        predict_logits(m, torch.rand(1, 8, 8))
    with pytest.raises(ValueError, match="`x` is empty"):
        predict_logits(m, torch.rand(0, 1, 8, 8))
    with pytest.raises(ValueError, match=r"`batch_size` must be in \[1"):
        predict_logits(m, torch.rand(2, 1, 8, 8), batch_size=0)
    with pytest.raises(ValueError, match="predict_proba needs a classifier"):
        predict_proba(build_model("mlp", (4,), 1), torch.rand(2, 4))


def test_random_crop_flip_known_answers():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4)
    g = torch.Generator().manual_seed(0)
    out = random_crop_flip(x, generator=g, padding=0, flip=True)
    for i in range(2):  # without padding each image is either unchanged or mirrored
        assert torch.equal(out[i], x[i]) or torch.equal(out[i], x[i].flip(-1))
    big = torch.rand(64, 3, 8, 8)
    a = random_crop_flip(big, generator=torch.Generator().manual_seed(1), padding=2)
    b = random_crop_flip(big, generator=torch.Generator().manual_seed(1), padding=2)
    assert torch.equal(a, b) and a.shape == big.shape and not torch.equal(a, big)
    # every output is a crop of the zero-padded (possibly mirrored) image
    padded = torch.nn.functional.pad(big, (2, 2, 2, 2))
    for i in range(8):
        found = False
        for src in (padded[i], padded[i].flip(-1)):
            for dy in range(5):
                for dx in range(5):
                    found |= torch.equal(src[:, dy:dy + 8, dx:dx + 8], a[i])
        assert found


# ------------------------------------------------------------------------------------------
# training and the cache
# ------------------------------------------------------------------------------------------
def test_training_learns_separable_blobs():
    ds = _tab_ds()
    res = train_classifier("mlp", ds, epochs=8, seed=0, model_kwargs={"hidden": (16,)}, **FAST)
    h = res.history
    assert list(h.columns) == ["epoch", "train_loss", "cal_loss", "cal_acc", "lr", "seconds"]
    assert len(h) == 8 and h.train_loss.iloc[-1] < 0.5 * h.train_loss.iloc[0]
    assert not res.model.training and res.from_cache is False and res.path is None
    acc = (predict_logits(res.model, ds.test.x).argmax(1) == ds.test.y).float().mean()
    assert acc > 0.95  # chance is 1/3
    assert h.cal_acc.iloc[-1] > 0.95


def test_sgd_cosine_schedule_label_smoothing_and_progress(capsys):
    ds = _tab_ds()
    res = train_classifier("mlp", ds, epochs=4, lr=0.1, optimizer="sgd", lr_schedule="cosine", batch_size=32,
                           label_smoothing=0.1, seed=0, progress=True, model_kwargs={"hidden": (8,)})
    expected = [0.05 * (1 + np.cos(np.pi * e / 4)) for e in range(4)]  # per-step cosine, read at epoch start
    np.testing.assert_allclose(res.history.lr.to_numpy(), expected, rtol=1e-6)
    assert "mlp on blobs" in capsys.readouterr().err  # the progress bar
    assert res.history.cal_acc.iloc[-1] > 0.9
    adamw = train_classifier("mlp", ds, epochs=2, optimizer="adamw", weight_decay=0.1, seed=0, progress=False,
                             model_kwargs={"hidden": (8,)})
    adam = train_classifier("mlp", ds, epochs=2, optimizer="adam", weight_decay=0.1, seed=0, progress=False,
                            model_kwargs={"hidden": (8,)})
    assert adamw.key != adam.key and not _state_equal(adamw.model, adam.model)


def test_small_cnn_learns_quadrants_with_dataset_normalization():
    ds = _img_ds()
    res = train_classifier("small_cnn", ds, epochs=6, seed=0, model_kwargs={"width": 8}, **FAST)
    assert isinstance(res.model.normalize, Normalize)  # dataset normalization went inside
    torch.testing.assert_close(res.model.normalize.mean.flatten(), torch.tensor([0.3]))
    assert res.history.cal_acc.iloc[-1] > 0.9  # chance is 0.25
    assert res.history.train_loss.iloc[-1] < res.history.train_loss.iloc[0]


def test_training_is_deterministic_and_leaves_global_rng_alone():
    ds = _img_ds(64, 16)
    kw = dict(epochs=1, model_kwargs={"width": 4, "dropout": 0.3}, augment=True, **FAST)
    state = torch.get_rng_state()
    a = train_classifier("small_cnn", ds, seed=1, **kw)
    b = train_classifier("small_cnn", ds, seed=1, **kw)
    assert torch.equal(torch.get_rng_state(), state)
    assert _state_equal(a.model, b.model)
    assert a.history.drop(columns="seconds").equals(b.history.drop(columns="seconds"))
    c = train_classifier("small_cnn", ds, seed=2, **kw)
    assert not _state_equal(a.model, c.model)


def test_cache_hit_skips_training(tmp_path, monkeypatch):
    ds = _tab_ds()
    kw = dict(epochs=3, seed=0, cache_dir=tmp_path, model_kwargs={"hidden": (8,)}, **FAST)
    first = train_classifier("mlp", ds, **kw)
    assert first.from_cache is False and first.path.is_file() and first.path.parent == tmp_path / "models"

    def boom(*a, **k):
        raise AssertionError("trained although the checkpoint was cached")

    monkeypatch.setattr(training_mod, "_fit", boom)
    second = train_classifier("mlp", ds, **kw)
    assert second.from_cache is True and second.path == first.path and second.key == first.key
    assert _state_equal(first.model, second.model) and not second.model.training
    assert second.history.equals(first.history)
    torch.testing.assert_close(predict_logits(second.model, ds.test.x), predict_logits(first.model, ds.test.x))
    # any change of hyperparameter, seed, model kwargs or data content is a different key
    for change in ({"lr": 2e-2}, {"seed": 1}, {"model_kwargs": {"hidden": (9,)}}):
        with pytest.raises(AssertionError, match="trained although"):
            train_classifier("mlp", ds, **{**kw, **change})
    ds2 = _tab_ds()
    ds2.train.x[0, 0] += 1e-3
    with pytest.raises(AssertionError, match="trained although"):
        train_classifier("mlp", ds2, **kw)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "flipped_byte"])
def test_corrupt_cache_warns_and_retrains(tmp_path, damage):
    ds = _tab_ds()
    kw = dict(epochs=2, seed=0, cache_dir=tmp_path, model_kwargs={"hidden": (8,)}, **FAST)
    first = train_classifier("mlp", ds, **kw)
    raw = first.path.read_bytes()
    bad = {"truncate": raw[: len(raw) // 2], "garbage": b"not a checkpoint at all" * 10, "empty": b"",
           "flipped_byte": raw[:-10] + bytes([raw[-10] ^ 0xFF]) + raw[-9:]}[damage]
    first.path.write_bytes(bad)
    with pytest.warns(UserWarning, match="cached checkpoint .* is unusable.*retraining"):
        again = train_classifier("mlp", ds, **kw)
    assert again.from_cache is False and _state_equal(first.model, again.model)
    assert load_checkpoint(first.path)["key"] == first.key  # rewritten and valid
    assert train_classifier("mlp", ds, **kw).from_cache is True
    assert not list((tmp_path / "models").glob("*.tmp"))  # no temp files left behind


def test_early_stopping_restores_best_epoch():
    ds = _tab_ds(n_train=60, n_cal=60)
    # a big model, a high learning rate and a noisy cal split overfit quickly
    ds.cal.y = ds.cal.y[torch.randperm(60, generator=torch.Generator().manual_seed(0))]
    res = train_classifier("mlp", ds, epochs=30, seed=0, early_stopping_patience=2,
                           model_kwargs={"hidden": (64, 64)}, progress=False, lr=3e-2, batch_size=16)
    h = res.history
    assert len(h) < 30
    best = int(h.cal_loss.idxmin())
    assert res.best_epoch == best + 1 and len(h) == res.best_epoch + 2
    nll = torch.nn.functional.cross_entropy(predict_logits(res.model, ds.cal.x), ds.cal.y)
    assert float(nll) == pytest.approx(h.cal_loss.min(), rel=1e-5)


def test_train_regressor_beats_the_mean():
    g = torch.Generator().manual_seed(0)
    w = torch.tensor([2.0, -1.0, 0.5, 0.0])

    def split(n):
        x = torch.randn(n, 4, generator=g)
        return NS(x=x, y=50.0 + 20.0 * (x @ w) + torch.randn(n, generator=g))

    info = NS(name="linreg", task="regression", kind="tabular", input_shape=(4,), n_classes=1, normalization=None)
    ds = NS(info=info, train=split(200), cal=split(60), test=split(60))
    res = train_regressor("mlp", ds, epochs=25, seed=0, model_kwargs={"hidden": (16,)}, **FAST)
    assert list(res.history.columns) == ["epoch", "train_loss", "cal_loss", "cal_rmse", "lr", "seconds"]
    pred = predict_logits(res.model, ds.test.x)
    assert pred.shape == (60, 1)
    rmse = float(((pred[:, 0] - ds.test.y) ** 2).mean().sqrt())
    assert rmse < 0.2 * float(ds.test.y.std())  # target std ~ 46, noise 1
    # outputs are in target units thanks to the output scale layer
    assert abs(float(pred.mean()) - float(ds.test.y.mean())) < 3.0


def test_train_classifier_errors():
    ds = _tab_ds()
    with pytest.raises(ValueError, match=r"unknown `model_name` 'cnn'; expected one of \["):
        train_classifier("cnn", ds, epochs=1, progress=False)
    with pytest.raises(ValueError, match="unknown `optimizer` 'rmsprop'"):
        train_classifier("mlp", ds, epochs=1, optimizer="rmsprop", progress=False)
    with pytest.raises(ValueError, match="`lr` must be > 0"):
        train_classifier("mlp", ds, epochs=1, lr=0.0, progress=False)
    with pytest.raises(TypeError, match="`epochs` must be an int"):
        train_classifier("mlp", ds, epochs=1.5, progress=False)
    with pytest.raises(ValueError, match="`label_smoothing` must be in"):
        train_classifier("mlp", ds, epochs=1, label_smoothing=1.0, progress=False)
    with pytest.raises(ValueError, match="`augment=True` needs image inputs"):
        train_classifier("mlp", ds, epochs=1, augment=True, progress=False)
    with pytest.raises(ValueError, match="`model_kwargs` must not contain 'seed'"):
        train_classifier("mlp", ds, epochs=1, model_kwargs={"seed": 3}, progress=False)
    bad = _tab_ds()
    bad.train.y = bad.train.y.clone()
    bad.train.y[0] = 3
    with pytest.raises(ValueError, match=r"`dataset.train.y` has labels outside \[0, 2\]"):
        train_classifier("mlp", bad, epochs=1, progress=False)
    nan = _tab_ds()
    nan.cal.x[3, 1] = float("inf")
    with pytest.raises(ValueError, match="`dataset.cal.x` contains 1 NaN or inf"):
        train_classifier("mlp", nan, epochs=1, progress=False)
    one = _tab_ds()
    one.info.n_classes = 1
    with pytest.raises(ValueError, match=r"`dataset.info.n_classes` must be in \[2"):
        train_classifier("mlp", one, epochs=1, progress=False)
    shape = _tab_ds()
    shape.info.input_shape = (5,)
    with pytest.raises(ValueError, match="per-sample shape"):
        train_classifier("mlp", shape, epochs=1, progress=False)
    no_cal = _tab_ds()
    no_cal.cal = None
    with pytest.raises(ValueError, match="`early_stopping_patience` needs a non-empty `dataset.cal`"):
        train_classifier("mlp", no_cal, epochs=1, early_stopping_patience=2, progress=False)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="`device` 'cuda' requested but CUDA is not available"):
            train_classifier("mlp", ds, epochs=1, device="cuda", progress=False)


def test_real_digits_small_cnn(tmp_path):
    data = pytest.importorskip("xcal_core.data")
    ds = data.load_dataset("digits")
    res = train_classifier("small_cnn", ds, epochs=3, lr=3e-3, seed=0, progress=False, cache_dir=tmp_path)
    assert res.model(ds.test.x[:2]).shape == (2, ds.info.n_classes)
    acc = float((predict_logits(res.model, ds.test.x).argmax(1) == ds.test.y).float().mean())
    assert acc > 0.7  # chance is 0.1
    assert res.path.name.startswith("small_cnn__digits__")


def test_real_shapes_uses_dataset_normalization_and_learns(tmp_path):
    data = pytest.importorskip("xcal_core.data")
    ds = data.load_dataset("shapes", n_train=600, n_cal=200, n_test=100, image_size=16, difficulty=0.0)
    res = train_classifier("small_cnn", ds, epochs=4, lr=3e-3, batch_size=32, seed=0, progress=False,
                           model_kwargs={"width": 8})
    torch.testing.assert_close(res.model.normalize.mean.flatten(), torch.tensor(ds.info.normalization[0]))
    torch.testing.assert_close(res.model.normalize.std.flatten(), torch.tensor(ds.info.normalization[1]))
    h = res.history
    assert h.train_loss.iloc[-1] < h.train_loss.iloc[0] and h.cal_acc.iloc[-1] > 1.5 / ds.info.n_classes


# ------------------------------------------------------------------------------------------
# cache module
# ------------------------------------------------------------------------------------------
def test_checkpoint_roundtrip_and_corruption(tmp_path):
    p = tmp_path / "a" / "ck.pt"
    payload = {"w": torch.arange(6.0).reshape(2, 3), "meta": {"name": "x", "vals": [1, 2.5]}}
    save_checkpoint(p, payload)
    back = load_checkpoint(p)
    assert torch.equal(back["w"], payload["w"]) and back["meta"] == payload["meta"]
    p.write_bytes(p.read_bytes()[:-1])
    with pytest.raises(CorruptCheckpointError, match="failed its checksum"):
        load_checkpoint(p)
    p.write_bytes(b"PK\x03\x04junk")
    with pytest.raises(CorruptCheckpointError, match="not an xcal checkpoint"):
        load_checkpoint(p)


def test_hashes_are_order_free_and_content_sensitive():
    assert config_hash({"a": 1, "b": (1, 2)}) == config_hash({"b": [1, 2], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})
    x = np.zeros((3, 4), dtype=np.float32)
    y = x.copy()
    y[2, 3] = 1e-7
    assert tensor_fingerprint(x) == tensor_fingerprint(torch.from_numpy(x.copy()))
    assert tensor_fingerprint(x) != tensor_fingerprint(y)
    assert tensor_fingerprint(x) != tensor_fingerprint(x.reshape(4, 3))


def test_registry_lists_models():
    assert set(MODELS) == {"mlp", "tabular_resnet", "small_cnn", "resnet18_cifar", "resnet_cifar", "vgg_cifar", "resnet20"}


def test_resnet20_is_the_depth_20_cifar_resnet_and_fits_28px():
    m = build_model("resnet20", (1, 28, 28), 10, seed=0)
    ref = build_model("resnet_cifar", (1, 28, 28), 10, depth=20, seed=0)
    assert _n_params(m) == _n_params(ref) == 272_186  # He et al.: ResNet-20 has 0.27 M weights
    assert m.cam_layer == "layer3" and len(m.layer1) == 3
    assert m.eval()(torch.rand(2, 1, 28, 28)).shape == (2, 10)


# ------------------------------------------------------------------------------------------
# paper-profile architectures, local checkpoints, "pretrained if available, else train"
# ------------------------------------------------------------------------------------------
def _n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_cifar_resnet_and_vgg_known_sizes():
    from xcal_core.models import ResNetCifar

    # He et al. (2016) Table 6 (CIFAR-10): ResNet-20 0.27M, ResNet-32 0.46M, ResNet-56 0.85M parameters;
    # our projection shortcuts (option B) add ~3k parameters to the paper's parameter-free option A
    for depth, ref in ((20, 0.27e6), (32, 0.46e6), (56, 0.85e6)):
        assert abs(_n_params(build_model("resnet_cifar", (3, 32, 32), 10, depth=depth)) - ref) < 0.01e6
    net = build_model("resnet_cifar", (3, 32, 32), 10, depth=32)
    assert sum(isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) for m in net.modules()) == 31  # 6n + 1 3x3 convs
    # VGG16-BN for CIFAR: 13 convolutions (14.7M) + the 512-512-K classifier
    vgg = build_model("vgg_cifar", (3, 32, 32), 100, depth=16)
    assert sum(isinstance(m, nn.Conv2d) for m in vgg.modules()) == 13
    chans = [3, 64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    convs = sum(9 * a * b + 2 * b for a, b in zip(chans, chans[1:]))  # bias-free 3x3 convs + BatchNorm affine
    assert convs == 14_718_912
    assert _n_params(vgg) == convs + (512 * 512 + 512) * 2 + 512 * 100 + 100
    assert get_layer(vgg).out_channels == 512
    with pytest.raises(ValueError, match=r"`depth` must be 6n \+ 2"):
        ResNetCifar((3, 32, 32), 10, depth=30)
    with pytest.raises(ValueError, match=r"`depth` must be one of \[11, 13, 16, 19\]"):
        build_model("vgg_cifar", (3, 32, 32), 10, depth=15)
    with pytest.raises(ValueError, match=r"too small for VGG"):
        build_model("vgg_cifar", (3, 16, 16), 10)


def test_vit_accepts_small_square_inputs_only_when_randomly_initialised(tmp_path, monkeypatch):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vit = build_model("tv:vit_b_16", (3, 32, 32), 5, seed=0).eval()
        with torch.no_grad():
            assert vit(torch.rand(2, 3, 32, 32)).shape == (2, 5)
        with pytest.raises(ValueError, match=r"needs square inputs"):
            build_model("tv:vit_b_16", (3, 32, 48), 5)
        monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
        with pytest.raises(ValueError, match=r"pretrained tv:vit_b_16 needs 224x224 inputs"):
            path, _ = torchvision_weights_path("vit_b_16")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            open(path, "wb").close()  # present (empty) file: the size check comes first
            build_model("tv:vit_b_16", (3, 32, 32), 5, pretrained=True)


def test_checkpoint_files_load_in_common_layouts(tmp_path):
    from xcal_core.models import load_weights

    src = build_model("resnet_cifar", (3, 32, 32), 10, depth=8, seed=0)
    plain = tmp_path / "plain.pt"
    torch.save(src.state_dict(), plain)
    assert _state_equal(build_model("resnet_cifar", (3, 32, 32), 10, depth=8, seed=1, checkpoint=str(plain)), src)
    # a torchvision network's own keys (hub layout), nested under "state_dict" with DataParallel's prefix
    tv = build_model("tv:resnet18", (3, 32, 32), 7, seed=0)
    nested = tmp_path / "tv.pth"
    torch.save({"epoch": 3, "state_dict": {"module." + k: v for k, v in tv.net.state_dict().items()}}, nested)
    tv2 = build_model("tv:resnet18", (3, 32, 32), 7, seed=5, checkpoint=nested)
    assert _state_equal(tv2, tv) and tv2.xcal_spec["kwargs"]["checkpoint"] == str(nested)
    # an xcal checkpoint (cache payload)
    save_checkpoint(tmp_path / "x.pt", {"format": "xcal-model-v1", "state_dict": src.state_dict()})
    assert _state_equal(load_weights(build_model("resnet_cifar", (3, 32, 32), 10, depth=8, seed=2), tmp_path / "x.pt"), src)
    with pytest.raises(FileNotFoundError, match=r"`checkpoint` file '.*missing.pt' does not exist"):
        build_model("resnet_cifar", (3, 32, 32), 10, depth=8, checkpoint=str(tmp_path / "missing.pt"))
    with pytest.raises(ValueError, match=r"does not fit the model: shape mismatches \['fc.weight: file \(7, 512\) vs model \(9, 512\)"):
        build_model("tv:resnet18", (3, 32, 32), 9, checkpoint=nested)
    with pytest.raises(ValueError, match=r"does not fit the model: missing keys"):
        build_model("resnet_cifar", (3, 32, 32), 10, depth=14, checkpoint=str(plain))
    torch.save({"note": "no tensors"}, tmp_path / "junk.pt")
    with pytest.raises(ValueError, match=r"holds no state dict of tensors"):
        build_model("resnet_cifar", (3, 32, 32), 10, depth=8, checkpoint=str(tmp_path / "junk.pt"))
    with pytest.raises(TypeError, match=r"`checkpoint` must be a file path"):
        build_model("mlp", (4,), 2, checkpoint=3)


def test_checkpoint_for_parses_the_notebook_parameter():
    from xcal_core.models import checkpoint_for

    entries = ["tv:resnet50=weights/r50.pth", "food101/tv:resnet50=/abs/food_r50.pth", "vgg_cifar = vgg.pt "]
    assert checkpoint_for(entries, "tv:resnet50", "food101", "/data") == "/abs/food_r50.pth"
    assert checkpoint_for(entries, "tv:resnet50", "cub200", "/data") == "/data/weights/r50.pth"
    assert checkpoint_for(entries, "vgg_cifar", None, None) == "vgg.pt"
    assert checkpoint_for(entries, "resnet_cifar", "cifar100", "/data") is None
    assert checkpoint_for([], "tv:resnet50") is None
    with pytest.raises(ValueError, match=r"`CHECKPOINTS` entry 'tv:resnet50' must look like '<model>=<file>'"):
        checkpoint_for(["tv:resnet50"], "tv:resnet50")
    with pytest.raises(ValueError, match=r"empty model name or file"):
        checkpoint_for(["tv:resnet50="], "tv:resnet50")
    with pytest.raises(TypeError, match=r"`CHECKPOINTS` must be a list"):
        checkpoint_for("tv:resnet50=a.pt", "tv:resnet50")


def test_load_or_train_classifier_decides_by_weights_and_data(tmp_path, monkeypatch):
    from xcal_core.data import load_dataset
    from xcal_core.models import load_or_train_classifier

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))  # no pretrained weights anywhere
    standin = load_dataset("standin:cifar100", n_train=64, n_cal=32, n_test=32, image_size=32)
    kw = dict(seed=0, batch_size=32, cache_dir=tmp_path / "cache")
    m, note = load_or_train_classifier("tv:resnet18", standin, epochs=0, pretrained=True, standin_epochs=1, **kw)
    assert note == ("tv:resnet18: STAND-IN run, trained 1 epoch(s) on standin:cifar100 from a random initialisation "
                    "(pretrained weights absent)")
    assert not m.training and m.net.fc.out_features == 100
    # a local checkpoint wins and is used as is with epochs=0
    ck = tmp_path / "r18.pt"
    torch.save(m.state_dict(), ck)
    m2, note2 = load_or_train_classifier("tv:resnet18", standin, epochs=0, pretrained=True, checkpoint=ck, **kw)
    assert _state_equal(m2, m) and note2 == f"tv:resnet18: weights from the local checkpoint {ck}"
    with pytest.raises(FileNotFoundError, match=r"checkpoint for 'tv:resnet18' not found: '.*nope.pt'"):
        load_or_train_classifier("tv:resnet18", standin, epochs=0, checkpoint=tmp_path / "nope.pt", **kw)
    # real data without the pretrained file: the factory's error says where to put it
    real = load_dataset("shapes", n_train=64, n_cal=32, n_test=32)
    with pytest.raises(ValueError, match=r"pretrained=True` for tv:resnet18 needs its weights"):
        load_or_train_classifier("tv:resnet18", real, epochs=0, pretrained=True, **kw)
    with pytest.raises(ValueError, match=r"`pretrained=True` needs a torchvision model"):
        load_or_train_classifier("small_cnn", real, epochs=1, pretrained=True, **kw)
    m3, note3 = load_or_train_classifier("small_cnn", real, epochs=1, **kw)
    assert note3 == "small_cnn: trained 1 epoch(s) on shapes from a random initialisation"


def test_shipped_checkpoints_fill_a_cold_cache(tmp_path, monkeypatch):
    """A checkpoint committed under checkpoints/ (same relative path as in the cache) is copied into a cold
    cache and loaded without training; a damaged shipped file is ignored; XCAL_SHIPPED_CHECKPOINTS=off
    ignores them all (make retrain)."""
    import shutil

    ds = _tab_ds()
    kw = dict(epochs=2, seed=0, model_kwargs={"hidden": (8,)}, **FAST)
    first = train_classifier("mlp", ds, cache_dir=tmp_path / "cache_a", **kw)
    shipped = tmp_path / "checkpoints"
    shutil.copytree(tmp_path / "cache_a" / "models", shipped / "models")
    monkeypatch.setenv("XCAL_SHIPPED_CHECKPOINTS", str(shipped))

    def boom(*a, **k):
        raise AssertionError("trained although a checkpoint was shipped")

    with monkeypatch.context() as m:
        m.setattr(training_mod, "_fit", boom)
        second = train_classifier("mlp", ds, cache_dir=tmp_path / "cache_b", **kw)
    assert second.from_cache and second.path.is_file() and _state_equal(first.model, second.model)
    # switched off: trains (into a third cold cache)
    monkeypatch.setenv("XCAL_SHIPPED_CHECKPOINTS", "off")
    assert train_classifier("mlp", ds, cache_dir=tmp_path / "cache_c", **kw).from_cache is False
    # a damaged shipped file is not copied: the model is trained
    monkeypatch.setenv("XCAL_SHIPPED_CHECKPOINTS", str(shipped))
    f = next((shipped / "models").glob("*.pt"))
    f.write_bytes(f.read_bytes()[:100])
    third = train_classifier("mlp", ds, cache_dir=tmp_path / "cache_d", **kw)
    assert third.from_cache is False and _state_equal(first.model, third.model)
