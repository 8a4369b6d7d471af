"""Model factories: every architecture the notebooks train, behind one ``build_model`` call.

Conventions shared by all models built here:

* Inputs are what the data layer produces: images float32 (N, C, H, W) in [0, 1], tabular float32
  (N, D) already standardized. A model includes its own input normalization: pass
  ``normalization=(mean, std)`` and a :class:`Normalize` module becomes its first layer.
* Classifiers return logits (N, K); regressors (``n_classes=1``) return (N, 1).
* Every ReLU is its own ``nn.ReLU(inplace=False)`` instance that runs exactly once per forward pass
  (no reuse, no ``F.relu``), so Captum's DeepLift and GuidedBackprop rules apply
  (see ``specs/ecosystem.md`` 2.1).
* Convolutional models set ``model.cam_layer``, the dotted name of the layer Grad-CAM should use;
  :func:`get_layer` resolves it.
* Every built model carries ``model.xcal_spec`` (name, input shape, number of outputs, keyword
  arguments), ``model.input_shape`` and ``model.n_classes``.
"""

from __future__ import annotations

import functools

import os
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from .._validation import check_fraction, check_int

__all__ = [
    "MODELS",
    "IMAGENET_NORMALIZATION",
    "Normalize",
    "OutputScale",
    "MLP",
    "TabularResNet",
    "SmallCNN",
    "ResNet18Cifar",
    "build_model",
    "available_models",
    "get_layer",
    "reused_modules",
    "torchvision_weights_path",
    "pretrained_normalization",
    "ResNetCifar",
    "VGGCifar",
    "load_weights",
    "checkpoint_for",
    "load_or_train_classifier",
    "dataset_model_pairs",
]

IMAGENET_NORMALIZATION = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


# --------------------------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------------------------
class Normalize(nn.Module):
    """Input normalization ``(x - mean) / std`` as a module (the first layer of a model).

    Args:
        mean: a scalar, a per-channel / per-feature sequence of length C (images) or D (tabular),
            or a tensor broadcastable to one input.
        std: same forms as ``mean``; every entry must be > 0.
        input_shape: shape of one input, e.g. ``(3, 32, 32)`` or ``(30,)``. Per-channel values are
            reshaped to ``(C, 1, 1)`` for images.

    Shapes:
        input (N, *input_shape) -> output of the same shape. Gradients flow through (it is affine),
        so attributions with respect to the [0, 1] input are well defined.
    """

    def __init__(self, mean: Any, std: Any, input_shape: Sequence[int]):
        super().__init__()
        shape = tuple(int(s) for s in input_shape)
        m = self._shape_stat(mean, "normalization mean", shape)
        s = self._shape_stat(std, "normalization std", shape)
        if not torch.isfinite(m).all() or not torch.isfinite(s).all():
            raise ValueError("`normalization` must hold finite mean and std values")
        if (s <= 0).any():
            raise ValueError(f"`normalization` std must be > 0 everywhere, got min {float(s.min()):.3g}")
        self.register_buffer("mean", m.unsqueeze(0))
        self.register_buffer("std", s.unsqueeze(0))

    @staticmethod
    def _shape_stat(v: Any, name: str, shape: tuple[int, ...]) -> torch.Tensor:
        t = torch.as_tensor(v.detach().cpu() if isinstance(v, torch.Tensor) else v, dtype=torch.float32)
        if t.ndim == 0:
            return t.reshape((1,) * len(shape))
        if t.ndim == 1 and len(shape) >= 2:
            if t.numel() != shape[0]:
                raise ValueError(f"`{name}` has {t.numel()} entries but the input has {shape[0]} channels")
            return t.reshape((shape[0],) + (1,) * (len(shape) - 1))
        try:
            torch.broadcast_shapes(t.shape, shape)
        except RuntimeError as exc:
            raise ValueError(f"`{name}` of shape {tuple(t.shape)} does not broadcast to the input shape {shape}") from exc
        if t.ndim > len(shape):
            raise ValueError(f"`{name}` of shape {tuple(t.shape)} has more dimensions than one input {shape}")
        return t

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"shape={tuple(self.mean.shape[1:])}"


class OutputScale(nn.Module):
    """Affine output map ``y = z * std + mean`` (last layer of a regressor trained on standardized targets)."""

    def __init__(self, mean: float, std: float):
        super().__init__()
        if not (float(std) > 0):
            raise ValueError(f"`target_normalization` std must be > 0, got {std}")
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.std + self.mean

    def extra_repr(self) -> str:
        return f"mean={float(self.mean):.4g}, std={float(self.std):.4g}"


def _make_normalize(normalization: Any, input_shape: tuple[int, ...]) -> nn.Module:
    if normalization is None:
        return nn.Identity()
    if not isinstance(normalization, (tuple, list)) or len(normalization) != 2:
        raise ValueError("`normalization` must be None or a (mean, std) pair")
    return Normalize(normalization[0], normalization[1], input_shape)


def _make_output(target_normalization: Any) -> nn.Module:
    if target_normalization is None:
        return nn.Identity()
    if not isinstance(target_normalization, (tuple, list)) or len(target_normalization) != 2:
        raise ValueError("`target_normalization` must be None or a (mean, std) pair of floats")
    return OutputScale(float(target_normalization[0]), float(target_normalization[1]))


def _check_dropout(p: Any, name: str) -> float:
    return check_fraction(p, name, open_high=True)


# --------------------------------------------------------------------------------------------
# tabular models
# --------------------------------------------------------------------------------------------
class MLP(nn.Module):
    """Multi-layer perceptron: Flatten -> [Linear -> ReLU -> Dropout] x L -> Linear.

    Args:
        input_shape: shape of one input; (D,) for tabular data, images are flattened.
        n_classes: number of outputs K (1 for regression).
        hidden: hidden layer widths, e.g. ``(128, 64)``; empty gives multinomial logistic regression.
        dropout: dropout probability after each hidden ReLU, in [0, 1).
        normalization: optional (mean, std) for the :class:`Normalize` first layer.
        target_normalization: optional (mean, std) of a regression target (see :class:`OutputScale`).
    """

    def __init__(self, input_shape, n_classes, hidden=(128, 64), dropout=0.0, normalization=None,
                 target_normalization=None):
        super().__init__()
        dropout = _check_dropout(dropout, "dropout")
        hidden = [check_int(h, "hidden", low=1) for h in hidden]
        d_in = 1
        for s in input_shape:
            d_in *= int(s)
        self.normalize = _make_normalize(normalization, tuple(input_shape))
        layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
        for i, h in enumerate(hidden, start=1):
            layers[f"fc{i}"] = nn.Linear(d_in, h)
            layers[f"relu{i}"] = nn.ReLU()
            if dropout > 0:
                layers[f"drop{i}"] = nn.Dropout(dropout)
            d_in = h
        self.body = nn.Sequential(layers)
        self.head = nn.Linear(d_in, n_classes)
        self.output = _make_output(target_normalization)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.head(self.body(self.normalize(x))))


class _TabularResBlock(nn.Module):
    """``x + Dropout(Linear(Dropout(ReLU(Linear(BatchNorm(x))))))`` (Gorishniy et al. 2021, Sec. 3.2)."""

    def __init__(self, d: int, d_hidden: int, hidden_dropout: float, residual_dropout: float):
        super().__init__()
        self.norm = nn.BatchNorm1d(d)
        self.linear1 = nn.Linear(d, d_hidden)
        self.relu = nn.ReLU()
        self.drop_hidden = nn.Dropout(hidden_dropout)
        self.linear2 = nn.Linear(d_hidden, d)
        self.drop_residual = nn.Dropout(residual_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.drop_hidden(self.relu(self.linear1(self.norm(x))))
        return x + self.drop_residual(self.linear2(z))


class TabularResNet(nn.Module):
    """The ResNet baseline for tabular data of Gorishniy et al. (2021).

    ``ResNet(x) = Prediction(ResNetBlock(...ResNetBlock(Linear(x))))`` with
    ``ResNetBlock(x) = x + Dropout(Linear(Dropout(ReLU(Linear(BatchNorm(x))))))`` and
    ``Prediction(x) = Linear(ReLU(BatchNorm(x)))``.

    Args:
        input_shape: (D,) (other shapes are flattened).
        n_classes: number of outputs K (1 for regression).
        d: width of the residual stream.
        d_hidden: width inside each block (the paper tunes ``d_hidden_factor * d``).
        n_blocks: number of residual blocks (>= 1).
        hidden_dropout: dropout inside a block, after the ReLU.
        residual_dropout: dropout on the block's output before the skip addition.
        normalization, target_normalization: see :class:`MLP`.

    References:
        Gorishniy, Rubachev, Khrulkov, Babenko. Revisiting Deep Learning Models for Tabular Data.
        NeurIPS 2021.
    """

    def __init__(self, input_shape, n_classes, d=64, d_hidden=128, n_blocks=2, hidden_dropout=0.0,
                 residual_dropout=0.0, normalization=None, target_normalization=None):
        super().__init__()
        d = check_int(d, "d", low=1)
        d_hidden = check_int(d_hidden, "d_hidden", low=1)
        n_blocks = check_int(n_blocks, "n_blocks", low=1)
        hidden_dropout = _check_dropout(hidden_dropout, "hidden_dropout")
        residual_dropout = _check_dropout(residual_dropout, "residual_dropout")
        d_in = 1
        for s in input_shape:
            d_in *= int(s)
        self.normalize = _make_normalize(normalization, tuple(input_shape))
        self.flatten = nn.Flatten()
        self.first = nn.Linear(d_in, d)
        self.blocks = nn.Sequential(*[_TabularResBlock(d, d_hidden, hidden_dropout, residual_dropout) for _ in range(n_blocks)])
        self.head_norm = nn.BatchNorm1d(d)
        self.head_relu = nn.ReLU()
        self.head = nn.Linear(d, n_classes)
        self.output = _make_output(target_normalization)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.blocks(self.first(self.flatten(self.normalize(x))))
        return self.output(self.head(self.head_relu(self.head_norm(z))))


# --------------------------------------------------------------------------------------------
# image models
# --------------------------------------------------------------------------------------------
class SmallCNN(nn.Module):
    """A small VGG-style CNN for 8x8 (digits) up to 32x32+ (shapes, CIFAR) images.

    ``n_blocks`` blocks of ``[Conv3x3 -> (BatchNorm) -> ReLU] x convs_per_block``; every block but
    the last ends in a 2x2 max-pool; the channel count doubles per block (``width``, ``2 width``,
    ...). Then the head: global average pooling (``head="avg"``, translation invariant) or flattening
    of the last feature map (``head="flatten"``, keeps position), optional dropout and a linear
    classifier. Layers are named ``features.conv1, features.relu1, ..., features.pool1, ...``,
    ``dropout``, ``fc``; ``cam_layer`` is the last conv (at 4x4 for 8x8 inputs, 8x8 for 32x32 inputs).

    Args:
        input_shape: (C, H, W), H and W >= 4.
        n_classes: number of classes K.
        width: channels of the first block.
        n_blocks: number of conv blocks; ``None`` picks 2 for inputs smaller than 16 px, else 3.
        convs_per_block: convolutions per block (1 or more).
        dropout: dropout probability before the classifier, in [0, 1).
        batch_norm: insert BatchNorm2d after each conv (default). Measured on ``shapes`` (3000 train
            images, 5 epochs, Adam 2e-3, batch 64): 0.84 test accuracy with BatchNorm, 0.53 without
            (with the He initialization used then; PyTorch's default initialization stayed at chance).
        head: ``"avg"`` or ``"flatten"``; ``None`` picks ``"flatten"`` for inputs smaller than 16 px
            (digits: position matters, the map is only 4x4) and ``"avg"`` otherwise.
        normalization: optional per-channel (mean, std) for the :class:`Normalize` first layer.
    """

    def __init__(self, input_shape, n_classes, width=16, n_blocks=None, convs_per_block=2, dropout=0.0,
                 batch_norm=True, head=None, normalization=None):
        super().__init__()
        c, h, w = (int(s) for s in input_shape)
        width = check_int(width, "width", low=1)
        convs_per_block = check_int(convs_per_block, "convs_per_block", low=1)
        dropout = _check_dropout(dropout, "dropout")
        if n_blocks is None:
            n_blocks = 2 if min(h, w) < 16 else 3
        n_blocks = check_int(n_blocks, "n_blocks", low=1)
        if min(h, w) < 2 ** (n_blocks - 1):
            raise ValueError(f"`input_shape` {tuple(input_shape)} is too small for n_blocks={n_blocks} "
                             f"(needs H, W >= {2 ** (n_blocks - 1)})")
        self.normalize = _make_normalize(normalization, (c, h, w))
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        k = 0
        c_in = c
        for b in range(n_blocks):
            c_out = width * 2 ** b
            for _ in range(convs_per_block):
                k += 1
                layers[f"conv{k}"] = nn.Conv2d(c_in, c_out, 3, padding=1, bias=not batch_norm)
                if batch_norm:
                    layers[f"bn{k}"] = nn.BatchNorm2d(c_out)
                layers[f"relu{k}"] = nn.ReLU()
                c_in = c_out
            if b < n_blocks - 1:
                layers[f"pool{b + 1}"] = nn.MaxPool2d(2)
        self.features = nn.Sequential(layers)
        if head is None:
            head = "flatten" if min(h, w) < 16 else "avg"
        if head not in ("avg", "flatten"):
            raise ValueError(f"unknown `head` {head!r}; expected one of ['avg', 'flatten']")
        self.head = head
        side_h, side_w = h // 2 ** (n_blocks - 1), w // 2 ** (n_blocks - 1)
        self.pool = nn.AdaptiveAvgPool2d(1) if head == "avg" else nn.Identity()
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(c_in if head == "avg" else c_in * side_h * side_w, n_classes)
        self.cam_layer = f"features.conv{k}"
        if not batch_norm:  # without BatchNorm the default init shrinks the signal layer by layer
            for m in self.features:
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.flatten(self.pool(self.features(self.normalize(x))))
        return self.fc(self.dropout(z))


class _BasicBlock(nn.Module):
    """Pre-activation-free ResNet basic block with two distinct ReLU modules."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
        else:
            self.shortcut = nn.Identity()
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class ResNet18Cifar(nn.Module):
    """ResNet-18 for 32x32 inputs: 3x3 stride-1 stem, no max-pool, stages [2, 2, 2, 2].

    Args:
        input_shape: (C, H, W); designed for 32x32 but any H, W >= 8 works (global pooling).
        n_classes: number of classes K.
        width: channels of the first stage (64 in He et al.; stages use width x 1, 2, 4, 8).
        dropout: dropout before the classifier, in [0, 1).
        normalization: optional per-channel (mean, std) for the :class:`Normalize` first layer.

    ``cam_layer = "layer4"`` (the last stage's output).

    References:
        He, Zhang, Ren, Sun. Deep Residual Learning for Image Recognition. CVPR 2016 (CIFAR variant:
        3x3 stem without max-pool, as commonly used for 32x32 inputs).
    """

    def __init__(self, input_shape, n_classes, width=64, dropout=0.0, normalization=None):
        super().__init__()
        c, h, w = (int(s) for s in input_shape)
        width = check_int(width, "width", low=1)
        dropout = _check_dropout(dropout, "dropout")
        self.normalize = _make_normalize(normalization, (c, h, w))
        self.conv1 = nn.Conv2d(c, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        c_in = width
        for i, (mult, stride) in enumerate([(1, 1), (2, 2), (4, 2), (8, 2)], start=1):
            c_out = width * mult
            setattr(self, f"layer{i}", nn.Sequential(_BasicBlock(c_in, c_out, stride), _BasicBlock(c_out, c_out, 1)))
            c_in = c_out
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(c_in, n_classes)
        self.cam_layer = "layer4"
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.relu(self.bn1(self.conv1(self.normalize(x))))
        z = self.layer4(self.layer3(self.layer2(self.layer1(z))))
        return self.fc(self.dropout(self.flatten(self.pool(z))))


class ResNetCifar(nn.Module):
    """The CIFAR ResNet of He et al. (2016, Sec. 4.2): depth 6n + 2, three stages of n basic blocks.

    3x3 stem with ``width`` channels, stages of ``width``, ``2 width``, ``4 width`` channels (16, 32, 64 in
    the paper) at strides 1, 2, 2, global average pooling and a linear classifier. Depth 32 (n = 5) is
    the ResNet-32 that Calibrate to Interpret explains on CIFAR-100. Shortcuts that change shape are
    1x1 convolutions with BatchNorm (option B).

    Args:
        input_shape: (C, H, W), H, W >= 8.
        n_classes: number of classes K.
        depth: 6n + 2 (20, 32, 44, 56, 110, ...).
        width: channels of the first stage.
        normalization: optional per-channel (mean, std) for the :class:`Normalize` first layer.

    ``cam_layer = "layer3"``.
    """

    def __init__(self, input_shape, n_classes, depth=32, width=16, normalization=None):
        super().__init__()
        c, h, w = (int(s) for s in input_shape)
        depth = check_int(depth, "depth", low=8)
        if (depth - 2) % 6:
            raise ValueError(f"`depth` must be 6n + 2 (20, 32, 44, 56, ...), got {depth}")
        width = check_int(width, "width", low=1)
        n = (depth - 2) // 6
        self.normalize = _make_normalize(normalization, (c, h, w))
        self.conv1 = nn.Conv2d(c, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        c_in = width
        for i, (mult, stride) in enumerate([(1, 1), (2, 2), (4, 2)], start=1):
            c_out = width * mult
            blocks = [_BasicBlock(c_in, c_out, stride)] + [_BasicBlock(c_out, c_out, 1) for _ in range(n - 1)]
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
            c_in = c_out
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(c_in, n_classes)
        self.cam_layer = "layer3"
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.relu(self.bn1(self.conv1(self.normalize(x))))
        z = self.layer3(self.layer2(self.layer1(z)))
        return self.fc(self.flatten(self.pool(z)))


_VGG_CFG = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


class VGGCifar(nn.Module):
    """VGG (Simonyan & Zisserman 2015) for 32x32 inputs: the ImageNet convolution stack with BatchNorm and
    a small classifier ``Linear(512, 512) -> ReLU -> Dropout -> Linear(512, 512) -> ReLU -> Dropout ->
    Linear(512, K)`` on the 1x1 map (the common CIFAR adaptation, e.g. VGG16-BN of Calibrate to Interpret).

    Args:
        input_shape: (C, H, W) with H, W >= 32 (five 2x2 max-pools); larger inputs are average-pooled to 1x1.
        n_classes: number of classes K.
        depth: 11, 13, 16 or 19.
        batch_norm: BatchNorm after every convolution.
        dropout: dropout in the classifier, in [0, 1).
        normalization: optional per-channel (mean, std) for the :class:`Normalize` first layer.

    Layers are ``features.conv1 .. features.convN`` (with ``bnK``, ``reluK``, ``poolK``) and
    ``classifier.fc1 .. fc3``; ``cam_layer`` is the last convolution.
    """

    def __init__(self, input_shape, n_classes, depth=16, batch_norm=True, dropout=0.5, normalization=None):
        super().__init__()
        c, h, w = (int(s) for s in input_shape)
        if depth not in _VGG_CFG:
            raise ValueError(f"`depth` must be one of {sorted(_VGG_CFG)}, got {depth!r}")
        if min(h, w) < 32:
            raise ValueError(f"`input_shape` {tuple(input_shape)} is too small for VGG (needs H, W >= 32)")
        dropout = _check_dropout(dropout, "dropout")
        self.normalize = _make_normalize(normalization, (c, h, w))
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        k = pools = 0
        c_in = c
        for v in _VGG_CFG[depth]:
            if v == "M":
                pools += 1
                layers[f"pool{pools}"] = nn.MaxPool2d(2)
                continue
            k += 1
            layers[f"conv{k}"] = nn.Conv2d(c_in, v, 3, padding=1, bias=not batch_norm)
            if batch_norm:
                layers[f"bn{k}"] = nn.BatchNorm2d(v)
            layers[f"relu{k}"] = nn.ReLU()
            c_in = v
        self.features = nn.Sequential(layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(OrderedDict(
            fc1=nn.Linear(512, 512), relu1=nn.ReLU(), drop1=nn.Dropout(dropout),
            fc2=nn.Linear(512, 512), relu2=nn.ReLU(), drop2=nn.Dropout(dropout),
            fc3=nn.Linear(512, n_classes)))
        self.cam_layer = f"features.conv{k}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.pool(self.features(self.normalize(x)))))


# --------------------------------------------------------------------------------------------
# torchvision architectures
# --------------------------------------------------------------------------------------------
# Families whose activations are all distinct nn.ReLU modules after the patching below.
_TV_RELU_SAFE = ("resnet", "resnext", "wide_resnet", "vgg", "alexnet", "squeezenet")


def _tv_list() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def pretrained_normalization(channels: int = 3) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The input normalization of ImageNet-pretrained torchvision weights for ``channels`` input channels.

    Three channels give the ImageNet (mean, std); other channel counts (whose stem conv is rebuilt
    from the channel-mean of the pretrained filters) get the channel-averaged values.
    """
    m, s = IMAGENET_NORMALIZATION
    if channels == 3:
        return m, s
    return (sum(m) / 3,) * channels, (sum(s) / 3,) * channels


def torchvision_weights_path(arch: str) -> tuple[str, str]:
    """Where torch hub caches the default pretrained weights of a torchvision architecture.

    Args:
        arch: a torchvision classification model name, e.g. ``"resnet18"``.

    Returns:
        ``(path, url)``: the checkpoint file under ``torch.hub.get_dir()/checkpoints`` and its URL.
    """
    import torchvision

    weights = torchvision.models.get_model_weights(arch).DEFAULT
    url = weights.url
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url)), url


class _TVBasicBlock(nn.Module):
    """Forward of torchvision's BasicBlock with separate ReLU modules (``relu1``, ``relu2``)."""

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + identity)


class _TVBottleneck(nn.Module):
    """Forward of torchvision's Bottleneck with separate ReLU modules (``relu1..relu3``)."""

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu3(out + identity)


def _untie_resnet_relus(model: nn.Module) -> None:
    from torchvision.models import resnet as tvr

    for m in model.modules():
        for cls, patched, n in ((tvr.BasicBlock, _TVBasicBlock, 2), (tvr.Bottleneck, _TVBottleneck, 3)):
            if type(m) is cls:
                m.__class__ = type(f"{cls.__name__}SeparateReLU", (patched, cls), {})
                del m.relu
                for i in range(1, n + 1):
                    setattr(m, f"relu{i}", nn.ReLU())


def _parent_and_attr(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    parent_name, _, attr = name.rpartition(".")
    return (model.get_submodule(parent_name) if parent_name else model), attr


def _build_torchvision(arch: str, input_shape, n_classes, *, pretrained=False, allow_download=False,
                       normalization=None, dropout=None) -> nn.Module:
    import torchvision

    c = int(input_shape[0])
    if pretrained:
        if arch.startswith("vit_") and tuple(int(v) for v in input_shape[1:]) != (224, 224):
            raise ValueError(f"pretrained tv:{arch} needs 224x224 inputs, got {tuple(input_shape)}; "
                             "use image_size=224 or a randomly initialised ViT (pretrained=False)")
        path, url = torchvision_weights_path(arch)
        if os.path.isfile(path):
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as exc:
                raise ValueError(f"`pretrained` weights file {path} for tv:{arch} could not be read ({exc}); "
                                 f"delete it and download again ({url})") from exc
        elif allow_download:
            state = torchvision.models.get_model_weights(arch).DEFAULT.get_state_dict(progress=True, check_hash=True)
        else:
            raise ValueError(
                f"`pretrained=True` for tv:{arch} needs its weights, which are not in the torch hub cache: "
                f"put {os.path.basename(path)} (from {url}) at {path}, or pass allow_download=True"
            )
        if dropout is not None:
            raise ValueError(f"`dropout` cannot be set for pretrained tv:{arch} (the pretrained classifier keeps its own)")
        model = torchvision.models.get_model(arch, weights=None)
        model.load_state_dict(state)
        if normalization is None:
            normalization = pretrained_normalization(c)
    else:
        kw = {"num_classes": n_classes}
        if dropout is not None:
            kw["dropout"] = float(dropout)
        if arch.startswith("vit_") and (int(input_shape[1]) != 224 or int(input_shape[2]) != 224):
            if int(input_shape[1]) != int(input_shape[2]):
                raise ValueError(f"tv:{arch} needs square inputs, got {tuple(input_shape)}")
            kw["image_size"] = int(input_shape[1])  # randomly initialised ViT: position embeddings for this size
        try:
            model = torchvision.models.get_model(arch, weights=None, **kw)
        except TypeError as exc:
            raise ValueError(f"tv:{arch} does not accept these options ({exc}); `dropout` exists only for "
                             "architectures with a dropout classifier (e.g. vgg, alexnet)") from exc

    # 1) separate, non-inplace ReLUs
    _untie_resnet_relus(model)
    for m in model.modules():
        if isinstance(m, (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.SiLU)) and getattr(m, "inplace", False):
            m.inplace = False
    if not arch.startswith(_TV_RELU_SAFE):
        warnings.warn(
            f"tv:{arch} uses functional or non-ReLU activations; Captum's DeepLift/GuidedBackprop rules may not "
            f"apply to it (families with distinct nn.ReLU modules: {', '.join(_TV_RELU_SAFE)})",
            UserWarning, stacklevel=3,
        )

    # 2) input channels
    if c != 3:
        first = next((n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)
        if first is None:
            raise ValueError(f"tv:{arch} has no Conv2d stem; it only accepts 3-channel inputs")
        old = model.get_submodule(first)
        new = nn.Conv2d(c, old.out_channels, old.kernel_size, old.stride, old.padding, old.dilation, old.groups,
                        old.bias is not None, old.padding_mode)
        if pretrained:
            with torch.no_grad():
                new.weight.copy_(old.weight.mean(1, keepdim=True).repeat(1, c, 1, 1) * 3.0 / c)
                if old.bias is not None:
                    new.bias.copy_(old.bias)
        parent, attr = _parent_and_attr(model, first)
        setattr(parent, attr, new)

    # 3) classifier head
    if pretrained and n_classes != 1000:
        head = None
        for n, m in model.named_modules():
            if (isinstance(m, nn.Linear) and m.out_features == 1000) or (isinstance(m, nn.Conv2d) and m.out_channels == 1000):
                head = n
        if head is None:
            raise ValueError(f"could not find the 1000-class head of tv:{arch} to replace")
        old = model.get_submodule(head)
        new = (nn.Linear(old.in_features, n_classes) if isinstance(old, nn.Linear)
               else nn.Conv2d(old.in_channels, n_classes, old.kernel_size, old.stride, old.padding))
        parent, attr = _parent_and_attr(model, head)
        setattr(parent, attr, new)

    # 4) Grad-CAM layer
    if hasattr(model, "layer4"):
        cam = "layer4"
    else:
        convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and (m.out_channels != n_classes or m.kernel_size != (1, 1))]
        cam = convs[-1] if convs else None

    wrapper = _TorchvisionWrapper(model, _make_normalize(normalization, tuple(input_shape)))
    wrapper.cam_layer = f"net.{cam}" if cam else None
    wrapper.normalization_used = normalization
    return wrapper


class _TorchvisionWrapper(nn.Module):
    """``net(normalize(x))``: a torchvision model with the input normalization as its first layer."""

    def __init__(self, net: nn.Module, normalize: nn.Module):
        super().__init__()
        self.normalize = normalize
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))


# --------------------------------------------------------------------------------------------
# registry and factory
# --------------------------------------------------------------------------------------------
def _image_shape(input_shape, name):
    if len(input_shape) != 3:
        raise ValueError(f"`input_shape` for {name!r} must be (C, H, W), got {tuple(input_shape)}")


MODELS: dict[str, dict[str, Any]] = {
    "mlp": {"builder": MLP, "kind": "any", "doc": "multi-layer perceptron (hidden, dropout)"},
    "tabular_resnet": {"builder": TabularResNet, "kind": "any",
                       "doc": "Gorishniy et al. 2021 tabular ResNet (d, d_hidden, n_blocks, hidden_dropout, residual_dropout)"},
    "small_cnn": {"builder": SmallCNN, "kind": "image", "doc": "small VGG-style CNN for 8x8..32x32 (width, n_blocks, dropout)"},
    "resnet18_cifar": {"builder": ResNet18Cifar, "kind": "image", "doc": "ResNet-18, 3x3 stem, no max-pool (width, dropout)"},
    "resnet_cifar": {"builder": ResNetCifar, "kind": "image", "doc": "He et al. CIFAR ResNet, depth 6n+2 (depth=32, width=16)"},
    "resnet20": {"builder": functools.partial(ResNetCifar, depth=20), "kind": "image",
                 "doc": "ResNet-20 of He et al. (width 16, 0.27 M weights): the small ResNet for 28x28 / 32x32"},
    "vgg_cifar": {"builder": VGGCifar, "kind": "image", "doc": "VGG-BN for 32x32 with a 512-512-K classifier (depth=16, dropout)"},
}
"""Registry of the built-in architectures; torchvision models are available as ``"tv:<arch>"``."""


def available_models(include_torchvision: bool = True) -> list[str]:
    """Names accepted by :func:`build_model` (built-ins, then ``tv:<arch>`` for torchvision)."""
    names = list(MODELS)
    if include_torchvision:
        names += [f"tv:{a}" for a in _tv_list()]
    return names


def build_model(name: str, input_shape: Sequence[int], n_classes: int, **kwargs: Any) -> nn.Module:
    """Build an (untrained, or torchvision-pretrained) model by name.

    Args:
        name: one of ``MODELS`` (``"mlp"``, ``"tabular_resnet"``, ``"small_cnn"``, ``"resnet18_cifar"``)
            or ``"tv:<arch>"`` for a torchvision classification architecture (``"tv:resnet18"``,
            ``"tv:vgg16"``, ``"tv:resnet50"``, ...).
        input_shape: shape of one input without the batch dim: (C, H, W) for images, (D,) for tabular.
        n_classes: number of outputs K >= 1 (K >= 2 classes for a classifier, 1 for a regressor).
        **kwargs: architecture options (see each class), plus for every model
            ``normalization=(mean, std)`` (per-channel for images) to make :class:`Normalize` the first
            layer, and ``seed`` (int) to make the initialization reproducible without touching the
            global RNG. Torchvision models take ``pretrained`` (default False), ``allow_download``
            (default False) and ``dropout``; pretrained weights load only from the torch hub cache
            (``torchvision_weights_path``) unless ``allow_download=True``; the 1000-class head is
            replaced when ``n_classes != 1000`` and the ImageNet normalization is used unless one is
            given. Randomly initialised ``tv:vit_*`` models accept any square input size (their
            position embeddings are built for it). ``checkpoint`` (a local file, any model) loads
            weights after building: see :func:`load_weights`.

    Returns:
        An ``nn.Module`` in train mode mapping float32 (N, *input_shape) inputs in [0, 1] (or
        standardized tabular features) to logits (N, K). It has attributes ``input_shape``,
        ``n_classes``, ``xcal_spec`` and, for convolutional models, ``cam_layer``.

    Raises:
        ValueError: unknown ``name`` (the message lists valid names), bad ``input_shape`` /
            ``n_classes``, unknown keyword, or pretrained weights that are neither cached nor allowed
            to download; a ``checkpoint`` whose tensors do not fit the architecture.
        FileNotFoundError: ``checkpoint`` names a file that does not exist.
    """
    if not isinstance(name, str):
        raise TypeError(f"`name` must be a string, got {type(name).__name__}")
    if isinstance(input_shape, torch.Size):
        input_shape = tuple(input_shape)
    if not isinstance(input_shape, (tuple, list)) or not input_shape or not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in input_shape
    ):
        raise ValueError(f"`input_shape` must be a non-empty tuple of positive ints, got {input_shape!r}")
    input_shape = tuple(int(s) for s in input_shape)
    n_classes = check_int(n_classes, "n_classes", low=1)
    kwargs = dict(kwargs)
    seed = kwargs.pop("seed", None)
    checkpoint = kwargs.pop("checkpoint", None)
    if checkpoint is not None and not isinstance(checkpoint, (str, os.PathLike)):
        raise TypeError(f"`checkpoint` must be a file path, got {type(checkpoint).__name__}")

    if name.startswith("tv:"):
        arch = name[3:]
        valid = _tv_list()
        if arch not in valid:
            raise ValueError(f"unknown torchvision model {name!r}; expected 'tv:<arch>' with arch one of {valid}")
        _image_shape(input_shape, name)
        allowed = {"pretrained", "allow_download", "normalization", "dropout"}
        bad = set(kwargs) - allowed
        if bad:
            raise ValueError(f"unknown keyword(s) {sorted(bad)} for {name!r}; expected some of {sorted(allowed)}")
        builder: Callable[[], nn.Module] = lambda: _build_torchvision(arch, input_shape, n_classes, **kwargs)  # noqa: E731
    else:
        if name not in MODELS:
            raise ValueError(f"unknown model `name` {name!r}; expected one of {list(MODELS)} or 'tv:<arch>' "
                             f"(torchvision, e.g. 'tv:resnet18')")
        entry = MODELS[name]
        if entry["kind"] == "image":
            _image_shape(input_shape, name)
        import inspect

        params = set(inspect.signature(entry["builder"]).parameters) - {"input_shape", "n_classes"}
        bad = set(kwargs) - params
        if bad:
            raise ValueError(f"unknown keyword(s) {sorted(bad)} for model {name!r}; expected some of {sorted(params)}")
        builder = lambda: entry["builder"](input_shape, n_classes, **kwargs)  # noqa: E731

    if seed is not None:
        seed = check_int(seed, "seed", low=0)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = builder()
    else:
        model = builder()
    if checkpoint is not None:
        load_weights(model, checkpoint)
        kwargs["checkpoint"] = str(checkpoint)
    model.input_shape = input_shape
    model.n_classes = n_classes
    if not hasattr(model, "cam_layer"):
        model.cam_layer = None
    model.xcal_spec = {"name": name, "input_shape": input_shape, "n_classes": n_classes, "kwargs": kwargs}
    return model


def get_layer(model: nn.Module, name: str | None = None) -> nn.Module:
    """Resolve a dotted layer name (e.g. ``model.cam_layer``) to the submodule.

    Args:
        model: the model.
        name: dotted name as in ``model.named_modules()``; ``None`` uses ``model.cam_layer``.

    Returns:
        The submodule.

    Raises:
        ValueError: no such layer (the message lists the model's top-level children), or ``name`` is
            None and the model has no ``cam_layer``.
    """
    if name is None:
        name = getattr(model, "cam_layer", None)
        if name is None:
            raise ValueError("`name` is None and the model has no `cam_layer`; pass a layer name")
    try:
        return model.get_submodule(name)
    except AttributeError as exc:
        names = [n for n, _ in model.named_modules() if n]
        raise ValueError(f"`name` {name!r} is not a layer of the model; layers include {names[:40]}"
                         + (" ..." if len(names) > 40 else "")) from exc


def reused_modules(model: nn.Module, example_input: torch.Tensor, types: tuple[type, ...] = (nn.Module,)) -> list[str]:
    """Names of leaf modules called more than once in one forward pass (DeepLift breaks on those).

    Also reports modules registered under two names. Runs one forward pass in eval mode without
    gradients (the model's mode is restored).

    Args:
        model: the model.
        example_input: a batch (N, *input_shape) on the model's device.
        types: restrict the check to these module types (e.g. ``(nn.ReLU,)``).

    Returns:
        Sorted list of offending module names; empty when every leaf module runs at most once.
    """
    counts: dict[int, int] = {}
    names: dict[int, list[str]] = {}
    for n, m in model.named_modules(remove_duplicate=False):
        if len(list(m.children())) == 0 and isinstance(m, types):
            names.setdefault(id(m), []).append(n)
    handles = []
    seen = set()
    for n, m in model.named_modules():
        if id(m) in names and id(m) not in seen:
            seen.add(id(m))
            handles.append(m.register_forward_hook(lambda mod, i, o: counts.__setitem__(id(mod), counts.get(id(mod), 0) + 1)))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example_input)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    bad = set()
    for k, ns in names.items():
        if len(ns) > 1 or counts.get(k, 0) > 1:
            bad.update(ns)
    return sorted(bad)


# --------------------------------------------------------------------------------------------
# local checkpoints and "pretrained if available, else train" for the paper profiles
# --------------------------------------------------------------------------------------------
def load_weights(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load a local weights file into a model built by :func:`build_model` (in place).

    Accepted files: a ``torch.save`` of a state dict; a dict holding one under ``"state_dict"`` or
    ``"model"`` (common training-script layouts, also xcal's cache payloads); an xcal checkpoint
    written by :func:`~xcal_core.models.cache.save_checkpoint`. A ``"module."`` prefix (DataParallel)
    is stripped. For torchvision models the keys may be those of the bare torchvision network
    (``conv1.weight``, as hub checkpoints have them) or of the xcal wrapper (``net.conv1.weight``).
    Files are read with ``weights_only=True``: nothing in them is executed.

    Args:
        model: the target model (architecture and class count must match the file).
        path: the weights file.

    Returns:
        ``model``, with the loaded weights.

    Raises:
        FileNotFoundError: ``path`` does not exist (the message names it).
        ValueError: the file holds no state dict, or its tensors do not fit the model (missing /
            unexpected keys or shape mismatches, listed).
    """
    from pathlib import Path

    from .cache import CorruptCheckpointError, load_checkpoint

    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"`checkpoint` file {str(p)!r} does not exist; place the model's weights there "
                                "(a torch.save of its state_dict) or remove it from CHECKPOINTS")
    try:
        obj = load_checkpoint(p)
    except CorruptCheckpointError:
        try:
            obj = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ValueError(f"`checkpoint` file {str(p)!r} could not be read as a torch state dict ({exc})") from exc
    state = obj
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"`checkpoint` file {str(p)!r} holds no state dict of tensors")
    state = {(k[7:] if k.startswith("module.") else k): v for k, v in state.items()}
    target = model
    own = model.state_dict()
    if isinstance(model, _TorchvisionWrapper) and not any(k.startswith("net.") for k in state):
        target = model.net
        own = model.net.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in own
              if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        raise ValueError(
            f"`checkpoint` file {str(p)!r} does not fit the model: "
            + "; ".join(part for part in (
                f"missing keys {missing[:6]}{' ...' if len(missing) > 6 else ''}" if missing else "",
                f"unexpected keys {unexpected[:6]}{' ...' if len(unexpected) > 6 else ''}" if unexpected else "",
                f"shape mismatches {shapes[:4]}" if shapes else "") if part))
    target.load_state_dict(state)
    return model


def checkpoint_for(checkpoints: Sequence[str], model_name: str, dataset_name: str | None = None,
                   data_dir: str | os.PathLike | None = None) -> str | None:
    """The local weights file for a model from a notebook's ``CHECKPOINTS`` list.

    Entries are ``"<model>=<file>"`` or ``"<dataset>/<model>=<file>"`` (the dataset-qualified entry
    wins), e.g. ``"tv:resnet50=weights/resnet50_food101.pth"`` or ``"cifar100/vgg_cifar=vgg16_bn.pt"``.
    Relative file names are resolved against ``data_dir``.

    Args:
        checkpoints: the entries (may be empty).
        model_name: a :func:`build_model` name.
        dataset_name: the dataset the model is used on (for qualified entries).
        data_dir: base folder of relative file names (None: the current directory).

    Returns:
        The file path as a string, or None when no entry names this model.

    Raises:
        ValueError: an entry without ``=`` or with an empty side (the message names ``CHECKPOINTS``).
    """
    from pathlib import Path

    if isinstance(checkpoints, str) or not isinstance(checkpoints, (list, tuple)):
        raise TypeError(f"`CHECKPOINTS` must be a list of '<model>=<file>' strings, got {type(checkpoints).__name__}")
    table: dict[str, str] = {}
    for entry in checkpoints:
        if not isinstance(entry, str) or "=" not in entry:
            raise ValueError(f"`CHECKPOINTS` entry {entry!r} must look like '<model>=<file>' or '<dataset>/<model>=<file>'")
        key, _, file = entry.partition("=")
        key, file = key.strip(), file.strip()
        if not key or not file:
            raise ValueError(f"`CHECKPOINTS` entry {entry!r} has an empty model name or file")
        table[key] = file
    file = table.get(f"{dataset_name}/{model_name}") if dataset_name else None
    file = file if file is not None else table.get(model_name)
    if file is None:
        return None
    p = Path(file).expanduser()
    if not p.is_absolute() and data_dir is not None and str(data_dir):
        p = Path(data_dir).expanduser() / p
    return str(p)


def load_or_train_classifier(
    model_name: str,
    dataset: Any,
    *,
    epochs: int,
    pretrained: bool = False,
    checkpoint: str | os.PathLike | None = None,
    allow_download: bool = False,
    standin_epochs: int = 2,
    **train_kwargs: Any,
) -> tuple[nn.Module, str]:
    """The classifier a paper-profile notebook explains: local checkpoint, pretrained weights, or trained here.

    Decision, in order:

    1. ``checkpoint`` given: build the architecture, load the file (:func:`load_weights`; a missing
       file raises ``FileNotFoundError`` naming it), then train ``epochs`` more (usually 0).
    2. ``pretrained`` (torchvision ``tv:`` models): torchvision's ImageNet weights from the torch hub
       cache (downloaded only with ``allow_download``); on real data a missing file raises the
       ``ValueError`` that says where to put it.
    3. On a synthetic stand-in (``dataset.info.extra["standin"]``) without a checkpoint: start from the
       pretrained weights when they are cached, else from a random initialisation, and train
       ``max(epochs, standin_epochs)`` epochs, so that the paper-scale code runs on a model that has
       learnt something about the stand-in.
    4. Otherwise: train ``epochs`` epochs from a random initialisation.

    Training goes through :func:`~xcal_core.models.train_classifier` (seeded, cached under
    ``train_kwargs["cache_dir"]``).

    Args:
        model_name: a :func:`build_model` name.
        dataset: an ``xcal_core.data.Dataset``.
        epochs: training epochs (0: use the weights as they are).
        pretrained: use torchvision's pretrained weights (``tv:`` models only).
        checkpoint: a local weights file (see :func:`checkpoint_for`), or None.
        allow_download: let torchvision download pretrained weights.
        standin_epochs: minimum training epochs on a stand-in dataset (>= 1).
        **train_kwargs: passed to ``train_classifier`` (``seed``, ``device``, ``cache_dir``, ``lr``,
            ``batch_size``, ``model_kwargs``, ...).

    Returns:
        ``(model, note)``: the model in eval mode on the training device, and one line saying where
        its weights come from (notebooks print it).

    Raises:
        FileNotFoundError: ``checkpoint`` does not exist.
        ValueError: pretrained weights requested for a non-torchvision model, or missing on real data.
    """
    from .training import train_classifier

    epochs = check_int(epochs, "epochs", low=0)
    standin_epochs = check_int(standin_epochs, "standin_epochs", low=1)
    if pretrained and not model_name.startswith("tv:"):
        raise ValueError(f"`pretrained=True` needs a torchvision model ('tv:<arch>'), got {model_name!r}; "
                         "give its weights as a local checkpoint instead")
    standin = bool(getattr(getattr(dataset, "info", None), "extra", {}).get("standin", False))
    mk = dict(train_kwargs.pop("model_kwargs", None) or {})
    train_kwargs.setdefault("progress", False)
    if checkpoint is not None:
        if not os.path.isfile(os.path.expanduser(str(checkpoint))):
            raise FileNotFoundError(f"checkpoint for {model_name!r} not found: {str(checkpoint)!r}; put the weights file "
                                    "there or remove the model's CHECKPOINTS entry")
        mk["checkpoint"] = str(checkpoint)
        res = train_classifier(model_name, dataset, epochs=epochs, model_kwargs=mk, **train_kwargs)
        note = f"{model_name}: weights from the local checkpoint {checkpoint}" + (f", then {epochs} epochs of training" if epochs else "")
        return res.model, note
    if standin:
        have = False
        if pretrained:
            path, _ = torchvision_weights_path(model_name[3:])
            have = os.path.isfile(path) or allow_download
        if have:
            mk.update(pretrained=True, allow_download=allow_download)
        n_ep = max(epochs, standin_epochs)
        res = train_classifier(model_name, dataset, epochs=n_ep, model_kwargs=mk or None, **train_kwargs)
        start = "pretrained ImageNet weights" if have else "a random initialisation"
        return res.model, (f"{model_name}: STAND-IN run, trained {n_ep} epoch(s) on {dataset.info.name} from {start}"
                           + ("" if have or not pretrained else " (pretrained weights absent)"))
    if pretrained:
        mk.update(pretrained=True, allow_download=allow_download)
        res = train_classifier(model_name, dataset, epochs=epochs, model_kwargs=mk, **train_kwargs)
        return res.model, f"{model_name}: torchvision pretrained weights" + (f", fine-tuned {epochs} epochs" if epochs else "")
    res = train_classifier(model_name, dataset, epochs=epochs, model_kwargs=mk or None, **train_kwargs)
    return res.model, f"{model_name}: trained {epochs} epoch(s) on {dataset.info.name} from a random initialisation"


def dataset_model_pairs(datasets: Sequence[str], models: Sequence[str]) -> list[tuple[str, str, str]]:
    """Pair a notebook's ``DATASETS`` with its ``MODELS`` and name each pair.

    Args:
        datasets: dataset names, e.g. ``["cifar100", "cifar100", "food101"]``.
        models: one model name for all datasets, or one per dataset.

    Returns:
        ``[(key, dataset, model), ...]`` in order. ``key`` is the dataset name when every dataset
        appears once, else ``"<dataset>-<model>"``, with every character other than letters, digits,
        ``_``, ``.`` and ``-`` replaced by ``_`` (e.g. ``"cifar100-vgg_cifar"``, ``"food101-tv_resnet50"``,
        ``"standin_cub200"``); keys label results, figure files and claim ids.

    Raises:
        ValueError: empty lists, a length mismatch, or a repeated (dataset, model) pair.
    """
    datasets, models = list(datasets), list(models)
    if not datasets or not models:
        raise ValueError("`DATASETS` and `MODELS` must not be empty")
    if len(models) == 1:
        models = models * len(datasets)
    if len(models) != len(datasets):
        raise ValueError(f"`MODELS` must hold one model for all datasets or one per dataset; got {len(models)} models "
                         f"for {len(datasets)} datasets")
    pairs = list(zip(datasets, models))
    if len(set(pairs)) != len(pairs):
        raise ValueError(f"(dataset, model) pairs must be distinct, got {pairs}")
    import re

    unique = len(set(datasets)) == len(datasets)
    return [(re.sub(r"[^A-Za-z0-9_.-]", "_", d if unique else f"{d}-{m}"), d, m) for d, m in pairs]
