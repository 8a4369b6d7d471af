import numpy as np
import pytest
import quantus
import torch

from xcal_core.metrics import higher_is_better
from xcal_core.metrics.localization import attribution_map, pointing_game, relevance_mass_accuracy


def _masks(n=4, h=8, w=8):
    m = torch.zeros(n, h, w, dtype=torch.bool)
    m[:, 2:5, 3:7] = True
    return m


def test_known_answers():
    m = _masks(2)
    a = torch.zeros(2, 8, 8)
    a[0][m[0]] = 1.0  # all mass inside
    a[1] = 1.0  # uniform: mass share = area fraction
    rma = relevance_mass_accuracy(a, m)
    assert torch.allclose(rma, torch.tensor([1.0, 12 / 64]))
    assert pointing_game(a, m).tolist() == [1.0, 1.0]  # ties: any maximum inside counts
    b = torch.zeros(1, 3, 8, 8)
    b[0, :, 0, 0] = -5.0  # strongest relevance outside (abs), positive part is empty
    b[0, 1, 3, 4] = 1.0
    assert pointing_game(b, m[:1]).item() == 0.0
    assert pointing_game(b, m[:1], how="positive").item() == 1.0
    assert relevance_mass_accuracy(torch.zeros(1, 8, 8), m[:1]).item() == 0.0
    assert higher_is_better("relevance_mass_accuracy") and higher_is_better("pointing_game")


def test_matches_quantus_on_random_maps():
    g = torch.Generator().manual_seed(0)
    n = 6
    a = torch.rand(n, 1, 8, 8, generator=g)
    m = torch.rand(n, 8, 8, generator=g) > 0.6
    x = torch.rand(n, 1, 8, 8, generator=g)
    y = np.zeros(n, dtype=int)
    ours = relevance_mass_accuracy(a, m).numpy()
    theirs = quantus.RelevanceMassAccuracy(normalise=False, disable_warnings=True)(
        model=None, x_batch=x.numpy(), y_batch=y, a_batch=a.numpy(), s_batch=m[:, None].numpy().astype(float))
    assert np.allclose(ours, theirs, atol=1e-6)
    pg = quantus.PointingGame(normalise=False, disable_warnings=True)(
        model=None, x_batch=x.numpy(), y_batch=y, a_batch=a.numpy(), s_batch=m[:, None].numpy().astype(float))
    assert np.array_equal(pointing_game(a, m).numpy(), np.asarray(pg, dtype=float))


def test_errors_name_the_argument():
    m = _masks(2)
    with pytest.raises(ValueError, match="`masks` must have shape"):
        relevance_mass_accuracy(torch.rand(2, 8, 8), m[:, :4])
    with pytest.raises(ValueError, match="`masks` has an empty mask"):
        pointing_game(torch.rand(2, 8, 8), torch.zeros(2, 8, 8, dtype=torch.bool))
    bad = torch.rand(2, 8, 8)
    bad[1, 4, 4] = float("nan")
    with pytest.raises(ValueError, match="`attributions` contains 1 NaN"):
        relevance_mass_accuracy(bad, m)
    with pytest.raises(ValueError, match="`how` must be 'abs' or 'positive'"):
        attribution_map(torch.rand(2, 8, 8), how="max")
    with pytest.raises(ValueError, match="`attributions` must have 3 or 4 dimensions"):
        pointing_game(torch.rand(8, 8), m)


def test_localization_table_and_uniform_reference():
    from xcal_core.metrics.summary import localization_table

    m = _masks(3)
    inside = torch.zeros(3, 8, 8)
    inside[m] = 1.0
    t = localization_table({"perfect": inside, "flat": torch.ones(3, 8, 8)}, m)
    v = t.set_index(["method", "metric"])["value"]
    assert v[("perfect", "relevance_mass_accuracy")] == 1.0
    assert v[("flat", "relevance_mass_accuracy")] == pytest.approx(12 / 64)
    assert v[("uniform", "relevance_mass_accuracy")] == pytest.approx(12 / 64)
    assert t["higher_is_better"].all()
    with pytest.raises(TypeError, match="`attributions` must be a non-empty dict"):
        localization_table({}, m)
    with pytest.raises(ValueError, match="not a registered localization metric"):
        localization_table({"a": inside}, m, metrics=["ece"])
