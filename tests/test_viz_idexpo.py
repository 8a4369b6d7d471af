"""Tests of xcal_core.viz.idexpo: the soft-relaxation figure and the eta-grid figure of notebook 05."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from xcal_core.training import grid_segments, soft_masks  # noqa: E402
from xcal_core.viz.idexpo import plot_eta_grid, plot_soft_relaxation  # noqa: E402


def _colorbars(fig):
    return [a for ax in fig.axes for a in ax.child_axes if a.get_label() == "<colorbar>"]


def test_soft_relaxation_figure_renders_with_colorbars():
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 28, 28, generator=g)
    phi = torch.rand(49, generator=g)
    fmask = grid_segments((28, 28), 4)
    k = 12
    hard = torch.zeros(49).index_fill_(0, phi.argsort(descending=True)[:k], 1.0)
    alphas = {t: soft_masks(phi[None], S=0.5, step=1, tau=t)[0, k - 1] for t in (0.25, 1.0, 64.0)}
    fig, axes = plot_soft_relaxation(image, phi, hard, alphas, feature_mask=fmask, show_tau=1.0, title="t")
    w, h = fig.get_size_inches()
    assert w <= 12.0 + 1e-6 and h <= 6.0 + 1e-6
    assert len(_colorbars(fig)) == 3  # explanation, hard mask, soft mask
    rank_ax = axes[1, 0]
    assert len(rank_ax.get_lines()) == 1 + len(alphas) + 1  # hard step, one sigmoid per tau, threshold line
    # the drawn soft mask at large tau is close to the hard step (that is what the figure shows)
    y64 = rank_ax.get_lines()[3].get_ydata()
    assert np.abs(y64 - np.sort(hard.numpy())[::-1]).max() < 0.05
    fig.canvas.draw()
    plt.close(fig)
    with pytest.raises(ValueError, match="feature_mask"):
        plot_soft_relaxation(image, phi, hard, alphas)  # 49 features, 784 pixels
    with pytest.raises(ValueError, match="show_tau"):
        plot_soft_relaxation(image, phi, hard, alphas, feature_mask=fmask, show_tau=3.0)
    with pytest.raises(ValueError, match="alphas"):
        plot_soft_relaxation(image, phi, hard, {}, feature_mask=fmask)


def test_eta_grid_figure_draws_every_eta_and_both_methods():
    rows = [{"method": m, "eta": e, "seed": s, "accuracy": 0.8 + 0.01 * s, "ins": 0.5, "one_minus_del": 0.7}
            for m in ("ce_only", "idexpo") for e in (0.5, 1.0, 2.0, 10.0) for s in (0, 1, 2)]
    fig, axes = plot_eta_grid(pd.DataFrame(rows), title="t")
    w, h = fig.get_size_inches()
    assert w <= 12.0 + 1e-6 and h <= 6.0 + 1e-6 and len(axes) == 3
    for ax in axes:
        assert len(ax.get_lines()) == 2 and len(ax.collections) == 2  # mean lines and seed bands
        assert list(ax.get_lines()[0].get_xdata()) == [0.5, 1.0, 2.0, 10.0]
        assert ax.get_xscale() == "log"
    assert axes[1].get_ylabel().startswith("Ins")
    fig.canvas.draw()
    plt.close(fig)
    with pytest.raises(ValueError, match="columns"):
        plot_eta_grid(pd.DataFrame(rows).drop(columns="ins"))
    with pytest.raises(ValueError, match="none of the methods"):
        plot_eta_grid(pd.DataFrame(rows), methods={"other": "x"})
