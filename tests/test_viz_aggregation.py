"""Figures of notebook 04: each returns (fig, ax), draws what it is given, and rejects bad shapes."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from xcal_core.viz import (  # noqa: E402
    plot_aggregation_maps,
    plot_generalization_gap,
    plot_method_count,
    plot_metric_bars,
    plot_theorem_check,
    plot_weight_distributions,
)


def test_metric_bars_sorted_best_first_and_aggregates_highlighted():
    vals = {"saliency": torch.tensor([0.9, 1.1]), "agg_robust": torch.tensor([0.2, 0.4]), "smoothgrad": np.array([0.5, np.nan])}
    fig, ax = plot_metric_bars(vals, title="S", ylabel="S_AVG")
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["agg_robust", "smoothgrad", "saliency"]
    widths = [p.get_width() for p in ax.patches]
    assert widths == pytest.approx([0.3, 0.5, 1.0])
    assert ax.patches[0].get_facecolor()[:3] != ax.patches[1].get_facecolor()[:3]
    fig2, ax2 = plot_metric_bars(vals, higher_is_better=True)
    assert [t.get_text() for t in ax2.get_yticklabels()][0] == "saliency"
    with pytest.raises(ValueError, match="empty"):
        plot_metric_bars({})


def test_weight_distributions_one_box_per_method():
    w = torch.distributions.Dirichlet(torch.ones(4)).sample((20,))
    fig, ax = plot_weight_distributions(w, ["a", "b", "c", "d"])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c", "d"]
    assert ax.get_ylim()[0] < 0 < 1 < ax.get_ylim()[1]
    with pytest.raises(ValueError, match="shape"):
        plot_weight_distributions(w, ["a", "b"])


def test_aggregation_maps_grid_with_masks_and_scores():
    imgs = torch.rand(2, 3, 8, 8)
    maps = {"m1": torch.rand(2, 8, 8), "agg_opt": torch.zeros(2, 8, 8)}
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    masks[:, 2:5, 2:5] = True
    fig, axes = plot_aggregation_maps(imgs, maps, masks=masks, scores={"m1": torch.tensor([0.25, 0.5])})
    assert axes.shape == (2, 3)
    assert axes[0, 1].get_title() == "m1" and axes[1, 1].get_xlabel() == "0.50"
    assert len(axes[0, 2].images) == 1 and np.all(axes[0, 2].images[0].get_array() == 0)  # all-zero map stays finite


def test_generalization_gap_reference_curve_and_shape_check():
    ms = [5, 20, 80]
    gaps = {"robust": torch.tensor([[0.4, 0.4], [0.2, 0.2], [0.1, 0.1]])}
    fig, ax = plot_generalization_gap(ms, gaps, relative=False)
    ref = ax.get_lines()[-1].get_ydata()
    assert np.allclose(ref, [0.4, 0.2, 0.1])  # C / sqrt(m) anchored at the first point
    _, ax_rel = plot_generalization_gap(ms, gaps)
    assert np.allclose(ax_rel.get_lines()[-1].get_ydata(), [1.0, 0.5, 0.25])
    assert ax.get_xscale() == "log"
    with pytest.raises(ValueError, match="rows"):
        plot_generalization_gap([5, 10], gaps)


def test_theorem_check_and_method_count():
    fig, ax = plot_theorem_check(torch.tensor([0.1, 0.2]), torch.tensor([0.2, 0.3]))
    assert len(ax.collections) == 1 and ax.get_lines()[0].get_label() == "y = x"
    fig, ax = plot_method_count([2, 3, 4], {"AGG_robust": torch.rand(3, 5)}, ylabel="S_AVG")
    assert ax.get_xlabel() == "number of aggregated methods k" and ax.get_legend() is not None
    _, given = plt.subplots()
    fig2, ax2 = plot_method_count([2, 3], {"x": np.ones((2, 3))}, ylabel="y", ax=given)
    assert ax2 is given


def test_metric_bars_reference_line():
    vals = {"guided_backprop": torch.tensor([0.7, 0.8]), "agg_mean": torch.tensor([0.5, 0.6])}
    fig, ax = plot_metric_bars(vals, higher_is_better=True, reference=0.45, reference_label="object-area share")
    ref = [ln for ln in ax.get_lines() if ln.get_label() == "object-area share"]
    assert len(ref) == 1 and np.allclose(ref[0].get_xdata(), 0.45)
    assert ax.get_legend() is not None
    w, h = fig.get_size_inches()
    assert w <= 12 and h <= 6
    _, ax0 = plot_metric_bars(vals)
    assert ax0.get_legend() is None and not [ln for ln in ax0.get_lines() if ln.get_linestyle() == "--"]
    with pytest.raises(ValueError, match="reference"):
        plot_metric_bars(vals, reference=float("nan"))
