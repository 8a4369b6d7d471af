"""SharedLogits: the same logits as the network, one forward pass per distinct input row, no caching
where gradients are needed, and calibrated models built on it give the results they give without it."""

import pytest
import torch

from xcal_core.calibration import CalibratedModel, SharedLogits


class Counting(torch.nn.Module):
    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.lin = torch.nn.Linear(12, 4)
        with torch.no_grad():
            self.lin.weight.copy_(torch.randn(4, 12, generator=g))
        self.rows = 0

    def forward(self, x):
        self.rows += x.shape[0]
        return self.lin(x.flatten(1))


def test_same_logits_one_pass_per_distinct_row():
    net = Counting().eval()
    shared = SharedLogits(net)
    x = torch.rand(8, 3, 2, 2, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = net(x)
        net.rows = 0
        a = shared(x)
        b = shared(torch.cat([x[2:5], torch.rand(2, 3, 2, 2), x[:1]]))  # 4 rows seen, 2 new
    assert torch.equal(a, ref) and torch.allclose(b[:3], ref[2:5]) and torch.equal(b[5], ref[0])
    assert net.rows == 8 + 2 and shared.hits == 4 and shared.misses == 10
    # a row differing in one bit is a different row
    y = x[:1].clone()
    y.view(-1)[0] = torch.nextafter(y.view(-1)[0], torch.tensor(2.0))
    with torch.no_grad():
        out = shared(y)
    assert net.rows == 11 and torch.allclose(out, net.lin(y.flatten(1)))
    # the same bytes in another shape are another input
    with torch.no_grad():
        shared(x[:1].reshape(1, 12))
    assert net.rows == 12


def test_calibrated_models_on_shared_logits_match_and_share():
    net = Counting().eval()
    shared = SharedLogits(net)
    x = torch.rand(16, 12, generator=torch.Generator().manual_seed(2))
    t2 = CalibratedModel(shared, temperature=2.0)
    t05 = CalibratedModel(shared, temperature=0.5)
    with torch.no_grad():
        p2, p05 = t2(x), t05(x)
        assert torch.allclose(p2, net.lin(x) / 2) and torch.allclose(p05, net.lin(x) / 0.5)
    assert shared.misses == 16 and shared.hits == 16


def test_gradient_passes_bypass_the_cache():
    net = Counting().eval()
    shared = SharedLogits(net)
    x = torch.rand(4, 12, generator=torch.Generator().manual_seed(3), requires_grad=True)
    out = CalibratedModel(shared, temperature=2.0)(x)
    out[:, 0].sum().backward()
    assert x.grad is not None and torch.allclose(x.grad, net.lin.weight[0].expand(4, -1) / 2)
    assert shared.hits == 0 and shared.misses == 0 and net.rows == 4
    with torch.no_grad():
        shared(x.detach())
        shared(x.detach())
    assert shared.hits == 4


def test_eviction_and_bad_input():
    net = Counting().eval()
    shared = SharedLogits(net, max_rows=10)
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for _ in range(6):
            shared(torch.rand(4, 12, generator=g))
    assert shared._rows <= 10 and len(shared._index) == shared._rows
    shared.clear()
    assert shared.hits == 0 and not shared._index
    with pytest.raises(TypeError, match="`model`"):
        SharedLogits("net")
    with pytest.raises(ValueError, match="`max_rows`"):
        SharedLogits(net, max_rows=0)
