"""Tests of xcal_core.viz.attributions: layout of the figures, no show()/savefig(), bad input."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from xcal_core.viz import plot_attribution, plot_attribution_grid, plot_feature_attributions  # noqa: E402


@pytest.fixture
def no_show_or_save(monkeypatch):
    calls = []
    monkeypatch.setattr(plt, "show", lambda *a, **k: calls.append("show"))
    monkeypatch.setattr(plt.Figure, "savefig", lambda *a, **k: calls.append("savefig"))
    monkeypatch.setattr(plt, "savefig", lambda *a, **k: calls.append("savefig"))
    return calls


def _batch(n=3, c=3, h=10, w=12):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, c, h, w, generator=g)
    masks = torch.zeros(n, h, w, dtype=torch.bool)
    masks[:, 2:6, 3:8] = True
    attrs = {
        "saliency": torch.rand(n, c, h, w, generator=g),  # non-negative
        "integrated_gradients": torch.randn(n, c, h, w, generator=g),  # signed
        "gradcam": torch.rand(n, h, w, generator=g),  # already reduced
    }
    return x, attrs, masks


def test_grid_layout(no_show_or_save):
    x, attrs, masks = _batch()
    fig, axes = plot_attribution_grid(x, attrs, masks=masks, titles=["a", "b", "c"])
    assert axes.shape == (3, 4)
    assert len(fig.axes) == 12
    assert [axes[0, j].get_title() for j in range(4)] == ["input", "saliency", "integrated gradients", "gradcam"]
    assert axes[1, 0].get_ylabel() == "b"
    # image column: one image; method columns: image underlay + map (overlay) and a mask contour
    assert len(axes[0, 0].images) == 1 and len(axes[0, 1].images) == 2
    assert len(axes[0, 1].collections) >= 1  # the contour
    # colormaps: sequential for the non-negative method, diverging for the signed one
    assert axes[0, 1].images[1].get_cmap().name == "inferno"
    assert axes[0, 2].images[1].get_cmap().name == "bwr"
    lo, hi = axes[0, 2].images[1].get_clim()
    assert lo == pytest.approx(-hi)
    assert no_show_or_save == []


def test_grid_no_overlay_grey_images_and_existing_axes(no_show_or_save):
    x, attrs, _ = _batch(n=2, c=1)
    fig0, ax0 = plt.subplots(2, 4)
    fig, axes = plot_attribution_grid(x, attrs, overlay=False, axes=ax0, normalize="minmax", reduce="abs_sum")
    assert fig is fig0 and axes.shape == (2, 4)
    assert len(axes[0, 1].images) == 1
    assert axes[0, 1].images[0].get_clim() == (0.0, 1.0)
    assert no_show_or_save == []


def test_single_attribution(no_show_or_save):
    x, attrs, masks = _batch(n=1)
    fig, ax = plot_attribution(x[0], attrs["integrated_gradients"][0], mask=masks[0], title="IG", colorbar=True)
    assert ax.get_title() == "IG"
    cbs = [a for a in ax.child_axes if a.get_label() == "<colorbar>"]  # panel + inset colorbar
    assert len(cbs) == 1 and cbs[0]._colorbar.cmap.name == "bwr"
    assert [c for c in ax.collections if c.get_path_effects()], "the mask outline has a halo"
    fig2, ax2 = plt.subplots()
    f, a = plot_attribution(None, np.abs(attrs["saliency"][0].numpy()), ax=ax2)
    assert f is fig2 and a is ax2 and len(ax2.images) == 1
    assert no_show_or_save == []


def test_feature_attributions(no_show_or_save):
    g = torch.Generator().manual_seed(1)
    attrs = {"saliency": torch.rand(5, 4, generator=g), "lime": torch.randn(5, 4, generator=g)}
    fig, ax = plot_feature_attributions(attrs, feature_names=["a", "b", "c", "d"], top_k=3)
    assert len(ax.patches) == 2 * 3
    assert len(ax.get_yticklabels()) == 3
    fig, ax = plot_feature_attributions(attrs, sample=2)
    assert len(ax.patches) == 8
    assert no_show_or_save == []


def test_errors():
    x, attrs, masks = _batch()
    with pytest.raises(ValueError, match="non-empty dict"):
        plot_attribution_grid(x, {})
    with pytest.raises(ValueError, match=r"attributions_by_method\['bad'\]"):
        plot_attribution_grid(x, {"bad": torch.rand(2, 3, 10, 12)})
    with pytest.raises(ValueError, match="`masks` must be"):
        plot_attribution_grid(x, attrs, masks=masks[:2])
    with pytest.raises(ValueError, match="`titles`"):
        plot_attribution_grid(x, attrs, titles=["a"])
    with pytest.raises(ValueError, match="`images` must have 4"):
        plot_attribution_grid(x[0], attrs)
    with pytest.raises(ValueError, match="unknown `reduce`"):
        plot_attribution(x[0], attrs["saliency"][0], reduce="median")
    with pytest.raises(ValueError, match="different sizes"):
        plot_attribution(x[0], torch.rand(5, 5))
    with pytest.raises(ValueError, match="`feature_names`"):
        plot_feature_attributions({"s": torch.rand(3, 4)}, feature_names=["a"])
