"""Tests of xcal_core.viz.uq: figure layout and content, no show()/savefig(), bad input."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from xcal_core.uq import ExplanationSummary, RankedCurves, summarize  # noqa: E402
from xcal_core.viz import (  # noqa: E402
    plot_cv_by_class,
    plot_cv_table,
    plot_cv_vs_entropy,
    plot_feature_uncertainty,
    plot_ranked_curves,
    plot_uncertainty_maps,
)


@pytest.fixture(autouse=True)
def no_show_or_save(monkeypatch):
    calls = []
    monkeypatch.setattr(plt, "show", lambda *a, **k: calls.append("show"))
    monkeypatch.setattr(plt.Figure, "savefig", lambda *a, **k: calls.append("savefig"))
    yield calls
    assert calls == []
    plt.close("all")


def _summary(seed=0):
    d = torch.rand(5, 3, 1, 6, 6, generator=torch.Generator().manual_seed(seed))
    return summarize(d, absolute=True, channel_reduce="sum")


def test_uncertainty_maps_grid_layout_and_content():
    s = {"MC-Dropout / GBP": _summary(0), "Ensemble / IG": _summary(1)}
    img = torch.rand(1, 6, 6)
    fig, axes = plot_uncertainty_maps(img, s, index=1, title="digit 3")
    assert axes.shape == (2, 4)
    assert [a.get_title() for a in axes[0]] == ["input", "mean $E_\\mu$", "std $E_\\sigma$", "CV"]
    assert axes[1, 0].get_ylabel() == "Ensemble / IG"
    # the std panel of row 2 shows input 1's std map
    shown = axes[1, 2].images[0].get_array()
    assert np.allclose(shown, s["Ensemble / IG"].std[1].numpy())
    fig2, ax2 = plot_uncertainty_maps(img, s, columns=("cv",), cv_clip=1.0)
    assert ax2.shape == (2, 2) and ax2[0, 1].images[0].get_clim()[1] == 1.0


def test_cv_by_class_boxes_and_highlight():
    v = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    fig, ax = plot_cv_by_class(v, y, ["a", "b", "c"], highlight=[2])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    boxes = [p for p in ax.patches]
    assert len(boxes) == 3
    assert boxes[2].get_facecolor() != boxes[0].get_facecolor()
    assert ax.get_ylabel() == "mean CV per image"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["most confused"]


def test_ranked_curves_legend_has_auc():
    fr = torch.linspace(0, 1, 5)
    c = {("mean", "deletion"): torch.tensor([[1.0, 0.5, 0.2, 0.1, 0.0]] * 2),
         ("random", "deletion"): torch.tensor([[1.0, 0.9, 0.7, 0.4, 0.0]] * 2)}
    from xcal_core.metrics import curve_auc

    rc = RankedCurves(fractions=fr, curves=c, auc={k: curve_auc(v, fr) for k, v in c.items()})
    fig, ax = plot_ranked_curves(rc, "deletion")
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[0] == f"rank by mean (AUC {float(curve_auc(c[('mean', 'deletion')])[0]):.3f})"
    assert len(ax.lines) == 2
    with pytest.raises(ValueError, match="holds no insertion curves"):
        plot_ranked_curves(rc, "insertion")
    with pytest.raises(ValueError, match="unknown `mode`"):
        plot_ranked_curves(rc, "both")


def test_feature_uncertainty_bars_and_errors():
    st = {"GBP": (np.array([1.0, 2.0, 3.0]), np.array([0.1, 0.2, 0.3])), "IG": (np.ones(3), np.zeros(3))}
    fig, ax = plot_feature_uncertainty(st, ["age", "bmi", "bp"])
    heights = sorted(round(p.get_height(), 6) for p in ax.patches)
    assert heights == [1.0, 1.0, 1.0, 1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match="must hold two vectors of length 3"):
        plot_feature_uncertainty({"GBP": (np.ones(2), np.ones(2))}, ["a", "b", "c"])


def test_cv_vs_entropy_and_table():
    e = np.arange(10.0)
    fig, ax = plot_cv_vs_entropy(e * 2, e, label="GBP")
    assert "Spearman 1.00" in ax.get_legend().get_texts()[0].get_text()
    t = pd.DataFrame([[0.1, 0.5], [0.2, 0.4]], index=["mc_dropout", "ensemble"], columns=["GBP", "IG"])
    fig, ax = plot_cv_table(t, title="mean CV")
    assert [x.get_text() for x in ax.texts] == ["0.100", "0.500", "0.200", "0.400"]
    with pytest.raises(ValueError, match="non-empty DataFrame"):
        plot_cv_table(pd.DataFrame())
    with pytest.raises(ValueError, match="same length"):
        plot_cv_vs_entropy(e, e[:3])


def test_bad_input():
    with pytest.raises(ValueError, match="`summaries` is empty"):
        plot_uncertainty_maps(torch.rand(1, 6, 6), {})
    with pytest.raises(ValueError, match="`columns` must be"):
        plot_uncertainty_maps(torch.rand(1, 6, 6), {"a": _summary()}, columns=("median",))
    with pytest.raises(ValueError, match="same length"):
        plot_cv_by_class([1.0, 2.0], [0])
    assert isinstance(_summary(), ExplanationSummary)
