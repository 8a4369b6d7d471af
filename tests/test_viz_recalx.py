"""Notebook 01's figures: rendered, slide-sized, drawing what they are given (lines, bands, legends)."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from xcal_core.viz import (  # noqa: E402
    SLIDE_MAX,
    plot_ce_with_floor,
    plot_floor_vs_bandwidth,
    plot_reliability_lines,
    plot_retrain_curves,
)


def _fits_slide(fig):
    w, h = fig.get_size_inches()
    assert w <= SLIDE_MAX[0] + 1e-6 and h <= SLIDE_MAX[1] + 1e-6
    fig.canvas.draw()  # renders without error


def _level_table(seeds=(0,)):
    rows = []
    for m, scale in (("uncalibrated", 3.0), ("temperature_scaling", 2.0), ("recalx", 0.2)):
        for s in seeds:
            for lv in np.linspace(0, 1, 6):
                floor = 0.1 + 0.2 * lv
                rows.append({"method": m, "level": lv, "seed": s, "ce_kl": floor + scale * lv + 0.01 * s,
                             "ce_kl_floor": floor, "ce_kl_floor_sd": 0.02, "ece": 0.1 * scale * lv,
                             "ece_floor": 0.01, "ece_floor_sd": 0.002})
    t = pd.DataFrame(rows)
    return t.assign(ce_kl_excess=t.ce_kl - t.ce_kl_floor, ece_excess=t.ece - t.ece_floor)


def test_ce_with_floor_one_line_per_method_and_seed_and_a_band_per_method():
    fig, ax = plot_ce_with_floor(_level_table(), title="fashion_mnist small_cnn zero")
    _fits_slide(fig)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[:3] == ["uncalibrated", "temperature scaling", "ReCalX"] and labels[3].startswith("floor (dashed) ± 2 sd")
    assert len(ax.collections) == 3  # one floor band per method
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    assert band.min() == pytest.approx(0.1 - 0.04) and band.max() == pytest.approx(0.3 + 0.04)
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), 0.1 + 0.2 * np.linspace(0, 1, 6))  # the floor's mean
    np.testing.assert_allclose(ax.get_lines()[1].get_ydata(), 0.1 + 0.2 * np.linspace(0, 1, 6) + 3 * np.linspace(0, 1, 6))
    plt.close(fig)
    # three seeds: three lines per method, never an interval computed from seeds
    fig, ax = plot_ce_with_floor(_level_table(seeds=(0, 1, 2)), metric="ce_kl_excess")
    assert len([ln for ln in ax.get_lines() if len(ln.get_xdata()) == 6 and ln.get_label()[0] != "_"]) == 3
    assert len([ln for ln in ax.get_lines() if len(ln.get_xdata()) == 6]) == 9  # 3 methods x 3 seeds (no floor line)
    assert any("3 seeds" in t.get_text() for t in ax.get_legend().get_texts())
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    assert band.min() == pytest.approx(-0.04) and band.max() == pytest.approx(0.04)  # around 0 for the excess
    plt.close(fig)
    fig, axes = plt.subplots(1, 2)
    f2, a2 = plot_ce_with_floor(_level_table(), axes[1], metric="ece", legend=False)
    assert f2 is fig and a2 is axes[1] and a2.get_legend() is None and a2.get_ylabel() == "ECE (15 bins)"
    plt.close(fig)
    with pytest.raises(ValueError, match="lacks the columns"):
        plot_ce_with_floor(_level_table().drop(columns="ce_kl_floor_sd"))
    with pytest.raises(ValueError, match="`n_sd`"):
        plot_ce_with_floor(_level_table(), n_sd=0)


def test_reliability_lines_show_accuracy_and_each_method():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(600, 4, generator=g) * 2
    y = torch.multinomial(torch.softmax(z, 1), 1, generator=g).squeeze(1)
    probs = {"uncalibrated": torch.softmax(z * 3, 1), "recalx": torch.softmax(z, 1)}
    fig, ax = plot_reliability_lines(probs, y, title="level 0.5")
    _fits_slide(fig)
    acc = float((z.argmax(1) == y).double().mean())
    assert any(t.get_text() == f"accuracy {acc:.2f}" for t in ax.texts)
    confs = {t.get_text() for t in ax.texts if t.get_text().startswith("conf")}
    assert confs == {f"conf {float(q.max(1).values.mean()):.2f}" for q in probs.values()}
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["uncalibrated", "ReCalX"]
    assert len(ax.collections) == 2  # one scatter of bins per method
    plt.close(fig)
    with pytest.raises(TypeError, match="`probs`"):
        plot_reliability_lines(probs["recalx"], y)


def test_floor_vs_bandwidth_marks_the_chosen_bandwidths():
    hs = np.logspace(-3, 0, 8)
    rows = [{"set": s, "bandwidth": h, "ce_kl": f + 0.05, "ce_kl_floor": f, "ce_kl_floor_sd": 0.01}
            for s, off in (("clean", 0.0), ("level 0.75", 0.3)) for h, f in zip(hs, 0.5 / (1 + 10 * hs) + off)]
    fig, ax = plot_floor_vs_bandwidth(pd.DataFrame(rows), chosen={"clean rule": 0.003, "per level": 0.05})
    _fits_slide(fig)
    assert ax.get_xscale() == "log" and len(ax.collections) == 2
    assert {t.get_text().strip() for t in ax.texts} == {"clean rule", "per level"}
    plt.close(fig)


def test_retrain_curves_keep_identical_lines_visible():
    rows = [{"k": k, "method": m, "seed": s, "increase": 0.1 * k + 0.01 * s} for k in (1, 2, 3)
            for m in ("uncalibrated", "recalx") for s in range(3)]
    fig, ax = plot_retrain_curves(pd.DataFrame(rows), differ=[2], title="wine")
    _fits_slide(fig)
    lines = [ln for ln in ax.get_lines() if len(ln.get_xdata()) == 3]
    assert len(lines) == 2 and lines[0].get_linewidth() > lines[1].get_linewidth()  # the first drawn wider
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["uncalibrated", "ReCalX", "rankings differ"]
    assert list(ax.get_xticks()) == [1, 2, 3]
    plt.close(fig)
