"""The training loop's device-side bookkeeping and its mixed-precision switch."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from xcal_core import data
from xcal_core.models import train_classifier


@pytest.fixture(scope="module")
def wine():
    return data.load_dataset("wine")


def test_amp_off_on_cpu_keeps_the_cache_key_and_the_epoch_loss_is_deterministic(wine):
    res = train_classifier("mlp", wine, epochs=3, batch_size=32, seed=3, progress=False)
    assert "amp" not in res.config  # CPU keys are unchanged by the switch
    again = train_classifier("mlp", wine, epochs=1, batch_size=32, seed=3, progress=False)
    assert again.history["train_loss"].iloc[0] == res.history["train_loss"].iloc[0]  # bit-identical
    losses = res.history["train_loss"].to_numpy()
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]


def test_amp_true_needs_cuda(wine):
    with pytest.raises(ValueError, match="`amp=True` needs a CUDA device"):
        train_classifier("mlp", wine, epochs=1, amp=True, device="cpu", progress=False)


def test_amp_must_be_bool_or_none(wine):
    with pytest.raises(TypeError, match="`amp` must be a bool or None"):
        train_classifier("mlp", wine, epochs=1, amp="yes", progress=False)


def test_diverging_loss_raises_at_the_end_of_its_epoch(wine):
    # a learning rate that throws the weights to ~1e35 after one step: the logits overflow float32
    with pytest.raises(FloatingPointError, match="training loss became .* at epoch 1; lower `lr`"):
        train_classifier("mlp", wine, epochs=2, batch_size=32, lr=1e35, progress=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_amp_on_cuda_trains_in_bfloat16_and_keys_the_cache(wine):
    res = train_classifier("mlp", wine, epochs=2, device="cuda", progress=False)
    assert res.config.get("amp") == ("bfloat16" if torch.cuda.is_bf16_supported() else None)
    assert F.cross_entropy(res.model(wine.test.x.cuda()).float(), wine.test.y.cuda()).isfinite()
