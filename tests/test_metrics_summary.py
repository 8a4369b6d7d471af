import pytest
import torch

from xcal_core.metrics import ece, nll
from xcal_core.metrics.summary import accuracy, calibration_table


def test_accuracy_known_answer_and_errors():
    p = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    assert accuracy(p, torch.tensor([0, 1, 1])) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="`labels`"):
        accuracy(p, torch.tensor([0, 2, 1]))
    with pytest.raises(ValueError, match="`probs` must be a non-empty"):
        accuracy(torch.zeros(3), torch.tensor([0, 1, 1]))


def test_calibration_table_matches_the_metrics():
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(50, 3, generator=g) * 2, 1)
    y = torch.randint(0, 3, (50,), generator=g)
    t = calibration_table({"a": p, "b": torch.full((50, 3), 1 / 3)}, y, n_bins=10)
    assert list(t.columns) == ["method", "metric", "value", "higher_is_better"] and len(t) == 10
    v = t.set_index(["method", "metric"])["value"]
    assert v[("a", "ece")] == pytest.approx(ece(p, y, n_bins=10))
    assert v[("b", "nll")] == pytest.approx(nll(torch.full((50, 3), 1 / 3), y))
    assert not t.set_index("metric").loc["ece", "higher_is_better"].any()
    with pytest.raises(ValueError, match="unknown \\['eec'\\]"):
        calibration_table({"a": p}, y, metrics=["eec"])
    with pytest.raises(TypeError, match="`probs` must be a non-empty dict"):
        calibration_table(p, y)


def test_accuracy_rejects_nan_and_inf():
    """Issue 21 item 11: NaN rows used to count as class 0 predictions."""
    y = torch.tensor([0, 1, 0])
    with pytest.raises(ValueError, match=r"`probs` contains 6 NaN or inf"):
        accuracy(torch.full((3, 2), float("nan")), y)
    with pytest.raises(ValueError, match=r"`probs` contains 1 NaN or inf"):
        accuracy(torch.tensor([[0.9, 0.1], [0.2, float("inf")], [0.6, 0.4]]), y)
