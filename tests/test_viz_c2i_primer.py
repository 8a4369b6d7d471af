"""Tutorial figures of notebook 02: each renders, fits a slide, carries colorbars for its maps, and
rejects inconsistent inputs with an error naming the argument."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib import pyplot as plt  # noqa: E402

from xcal_core.viz import (plot_btr_primer, plot_deletion_primer, plot_lipschitz_primer,  # noqa: E402
                           plot_maps_by_method, plot_otsu_tv_primer, plot_ssim_primer, plot_temperature_views)

H = 14


def _g(i=0):
    return torch.Generator().manual_seed(i)


def _fits(fig):
    w, h = fig.get_size_inches()
    assert w <= 12 + 1e-6 and h <= 6 + 1e-6, (w, h)
    fig.canvas.draw()


def _n_colorbars(fig):
    return sum(1 for a in fig.axes for c in a.child_axes if c.get_label() == "<colorbar>")


def test_primers_render_fit_and_carry_colorbars():
    m = torch.rand(2, H, H, generator=_g())
    fig, axes = plot_ssim_primer(m[0], m[1], 0.42, labels=("a", "b"))
    _fits(fig)
    assert _n_colorbars(fig) == 1 and "0.42" in fig._suptitle.get_text()
    plt.close(fig)
    stages = torch.rand(3, 1, H, H, generator=_g(1))
    fr = torch.linspace(0, 0.99, 11)
    fig, axes = plot_deletion_primer(stages, [0.0, 0.1, 0.3], torch.linspace(1, 0, 11), fr, 0.5,
                                     random_curve=torch.linspace(1, 0.3, 11), random_area=0.65, label="MP")
    _fits(fig)
    assert len(axes) == 4 and len(axes[-1].get_lines()) >= 2
    assert any("0.65" in t.get_text() for t in axes[-1].get_legend().get_texts())
    plt.close(fig)
    with pytest.raises(ValueError, match="`stages`"):
        plot_deletion_primer(stages[:2], [0.0, 0.1, 0.3], torch.ones(11), fr, 0.5)
    fig, ax = plot_btr_primer(torch.tensor([0.1, 0.5, 0.2]), torch.tensor([0.3, 0.4, 0.25]))
    _fits(fig)
    assert "0.67" in ax.get_title()
    plt.close(fig)
    with pytest.raises(ValueError, match="`method_area`"):
        plot_btr_primer(torch.rand(3), torch.rand(4))
    fig, axes = plot_otsu_tv_primer({"smooth": m[0], "noisy": m[1]}, {"smooth": m[0] > 0.5, "noisy": m[1] > 0.5},
                                    {"smooth": 1e-4, "noisy": 3e-2})
    _fits(fig)
    assert axes.shape == (2, 2) and _n_colorbars(fig) == 1 and "0.03" in axes[1, 1].get_title()
    plt.close(fig)
    with pytest.raises(ValueError, match="missing"):
        plot_otsu_tv_primer({"a": m[0]}, {}, {})
    x = torch.rand(1, H, H, generator=_g(2))
    fig, axes = plot_lipschitz_primer(x, x + 0.01, m[0], m[1], 12.5)
    _fits(fig)
    assert len(axes) == 5 and _n_colorbars(fig) == 3
    plt.close(fig)


def test_maps_by_method_has_at_most_six_columns():
    imgs = torch.rand(3, 1, H, H, generator=_g(3))
    cals = ["uncalibrated", "temperature_scaling", "dirichlet"]
    maps = {m: {c: torch.rand(3, H, H, generator=_g(i + j)) for j, c in enumerate(cals)}
            for i, m in enumerate(["sensitivity", "integrated_gradients", "rise", "meaningful_perturbation"])}
    fig, axes = plot_maps_by_method(imgs, maps, n_show=2, title="before / after")
    _fits(fig)
    assert axes.shape == (6, 5) and _n_colorbars(fig) == 1
    plt.close(fig)
    with pytest.raises(ValueError, match="at most 5"):
        plot_maps_by_method(imgs, {str(k): {"u": imgs[:, 0]} for k in range(6)})
    with pytest.raises(ValueError, match="same calibrations"):
        plot_maps_by_method(imgs, {"a": {"u": imgs[:, 0]}, "b": {"t": imgs[:, 0]}})


def test_temperature_views_splits_the_two_sides():
    t = np.array([0.25, 0.5, 1.0, 2.0, 4.0, 8.0])
    sweep = pd.DataFrame({"temperature": t, "ece": np.abs(np.log(t / 2.0)) / 10,
                          "inv_deletion_area": 0.3 + 0.01 * np.log(t / 2.0) ** 2, "deletion_area": 0.2 + 0.05 * t})
    fig, axes = plot_temperature_views(sweep, fitted=2.2, title="MP vs T")
    _fits(fig)
    assert axes[0].get_xscale() == "log"
    labels = [line.get_label() for line in axes[1].get_lines()]
    assert any("over-confident" in s for s in labels) and any("under-confident" in s for s in labels)
    over = [line for line in axes[1].get_lines() if "over" in line.get_label()][0]
    assert len(over.get_xdata()) == 4  # T = 0.25 ... 2.0 lie below the fitted 2.2
    plt.close(fig)
    with pytest.raises(ValueError, match="lacks column"):
        plot_temperature_views(sweep.drop(columns="ece"), fitted=2.2)
