"""Figures of notebook 02: each returns (fig, ax), draws what it is given, rejects malformed input."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from xcal_core.viz import (  # noqa: E402
    plot_mean_deletion_curves,
    plot_c2i_bars,
    plot_c2i_boxplots,
    plot_reliability_overlay,
    plot_saliency_comparison,
    plot_temperature_sweep,
)


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def _per_image():
    rng = np.random.default_rng(0)
    rows = []
    for model in ["uncalibrated", "temperature_scaling"]:
        for method in ["sensitivity", "rise"]:
            for i in range(5):
                rows.append({"model": model, "method": method, "image": i, "ssim": np.nan if model == "uncalibrated" else rng.uniform(),
                             "lipschitz": rng.uniform(1, 10)})
    return pd.DataFrame(rows)


def test_reliability_overlay_labels_carry_ece():
    g = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(200, 4, generator=g)
    y = torch.randint(0, 4, (200,), generator=g)
    fig, ax = plot_reliability_overlay({"raw": torch.softmax(logits, 1), "T=3": torch.softmax(logits / 3, 1)}, y, n_bins=10)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(lbl.startswith("raw (ECE") for lbl in labels) and len(ax.lines) == 3
    with pytest.raises(ValueError, match="`probs`"):
        plot_reliability_overlay({}, y)


def test_boxplots_and_bars():
    df = _per_image()
    fig, ax = plot_c2i_boxplots(df, "ssim", order=["sensitivity", "rise"])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["sensitivity", "rise"]
    fig, ax = plot_c2i_boxplots(df, "lipschitz", log=True)
    assert ax.get_yscale() == "log"
    summ = df.groupby(["model", "method"], sort=False).mean(numeric_only=True).reset_index()
    fig, ax = plot_c2i_bars(summ, "lipschitz")
    assert len(ax.patches) == 4
    heights = sorted(p.get_height() for p in ax.patches)
    np.testing.assert_allclose(heights, sorted(summ["lipschitz"]))
    with pytest.raises(ValueError, match="lacks column"):
        plot_c2i_bars(summ, "btr")


def test_deletion_curves_and_temperature_sweep():
    fr = torch.linspace(0, 0.99, 11)
    c = torch.linspace(1, 0, 11).expand(3, 11)
    fig, ax = plot_mean_deletion_curves({"uncal": c, "ts": c * 0.5}, fr, random={"uncal": c})
    assert len(ax.lines) == 3
    np.testing.assert_allclose(ax.lines[1].get_ydata(), (c * 0.5).mean(0).numpy())
    with pytest.raises(ValueError, match="points"):
        plot_mean_deletion_curves({"uncal": c[:, :5]}, fr)
    sweep = pd.DataFrame({"temperature": [0.5, 1, 2, 4] * 2, "deletion_area": np.arange(8.0), "ece": np.arange(8.0) / 10,
                          "dataset": ["a"] * 4 + ["b"] * 4})
    fig, ax = plot_temperature_sweep(sweep, fitted={"a": 1.7, "b": 2.2})
    assert ax.get_xscale() == "log" and len(ax.lines) == 4
    fig, ax = plot_temperature_sweep(sweep, x="ece")
    assert ax.get_xscale() == "linear"


def test_saliency_comparison_grid():
    imgs = torch.rand(3, 3, 8, 8)
    maps = {"uncal / rise": torch.rand(3, 8, 8), "ts / rise": torch.rand(3, 8, 8)}
    fig, axes = plot_saliency_comparison(imgs, maps, n_show=2)
    assert axes.shape == (2, 3) and axes[0, 1].get_title() == "uncal / rise"
    fig, axes = plot_saliency_comparison(torch.rand(2, 1, 8, 8), maps, n_show=5)
    assert axes.shape == (2, 3)
    with pytest.raises(ValueError, match="`maps`"):
        plot_saliency_comparison(imgs, {})
