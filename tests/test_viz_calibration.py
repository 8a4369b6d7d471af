"""Calibration figures return (fig, ax), draw what they are given, and accept an existing Axes."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from xcal_core.viz import plot_ce_vs_level, plot_reliability_diagram, plot_temperatures  # noqa: E402


def test_reliability_diagram():
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(500, 3, generator=g) * 2, 1)
    y = torch.multinomial(p, 1, generator=g).squeeze(1)
    fig, ax = plot_reliability_diagram(p, y, n_bins=10, title="rd", label="model")
    assert ax.get_title() == "rd" and len(ax.patches) >= 5
    assert any("ECE =" in t.get_text() for t in ax.get_legend().get_texts())
    plt.close(fig)
    fig, axes = plt.subplots(1, 2)
    f2, a2 = plot_reliability_diagram(p, y, axes[1], binning="adaptive")
    assert f2 is fig and a2 is axes[1]
    plt.close(fig)
    with pytest.raises(ValueError, match="probabilities"):
        plot_reliability_diagram(torch.randn(10, 3) * 5, y[:10])


def test_ce_vs_level_with_bands():
    rows = [{"method": m, "level": lv, "seed": s, "ce_kl": (lv + 0.1) * (3 if m == "uncalibrated" else 1) + 0.01 * s}
            for m in ("uncalibrated", "recalx") for lv in np.linspace(0, 1, 6) for s in range(3)]
    fig, ax = plot_ce_vs_level(pd.DataFrame(rows), title="curves")
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["uncalibrated", "ReCalX"]
    assert len(ax.collections) == 2  # one band per method
    line = ax.get_lines()[0]
    np.testing.assert_allclose(line.get_ydata(), (np.linspace(0, 1, 6) + 0.1) * 3 + 0.01)
    plt.close(fig)


def test_temperatures():
    fig, ax = plot_temperatures([1.0, 1.2, 1.0, 2.0], global_temperature=1.1, fitted=[True, True, False, True])
    assert ax.get_xlim() == (0, 1) and any("without data" in t.get_text() for t in ax.get_legend().get_texts())
    plt.close(fig)
