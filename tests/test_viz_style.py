"""The shared figure style: every public viz function fits a slide, maps carry colorbars, mask outlines
have a halo, the lines of one plot differ in marker or line style, log ticks and titles do not overlap.

The catalogue below renders every public function of ``xcal_core.viz`` on small synthetic inputs, sized
like the notebooks' largest cases (12 UE x explainer rows, 12 saliency columns, 45 bars, ...). A new
public viz function must be added to it (``test_catalogue_covers_every_public_function``).
"""

import itertools
import warnings

import matplotlib

matplotlib.use("Agg")

import matplotlib.patheffects as pe  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import xcal_core.report as report_mod  # noqa: E402
import xcal_core.viz as viz  # noqa: E402

SLIDE = (12.0, 6.0)
H = W = 12


# --------------------------------------------------------------------------------------------- inputs
def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _images(n=4):
    return torch.rand(n, 3, H, W, generator=_gen(1))


def _masks(n=4):
    m = torch.zeros(n, H, W, dtype=torch.bool)
    m[:, 3:8, 4:9] = True
    return m


def _summaries(rows=12):
    from xcal_core.uq import summarize

    return {f"ue{i // 3}\nexplainer_{i % 3}": summarize(torch.rand(4, 2, 1, H, W, generator=_gen(i)), absolute=True,
                                                        channel_reduce="sum") for i in range(rows)}


def _ranked_curves():
    from xcal_core.metrics import curve_auc
    from xcal_core.uq import RankedCurves

    fr = torch.linspace(0, 1, 11)
    c = {(k, "deletion"): torch.rand(3, 11, generator=_gen(i)) for i, k in enumerate(("mean", "std", "random"))}
    return RankedCurves(fractions=fr, curves=c, auc={k: curve_auc(v, fr) for k, v in c.items()})


def _ce_table():
    return pd.DataFrame([{"method": m, "level": lv, "seed": s, "ce_kl": lv + 0.01 * s}
                         for m in ("uncalibrated", "temperature_scaling", "recalx", "dirichlet")
                         for lv in np.linspace(0, 1, 6) for s in range(2)])


def _probs(seed=0):
    return torch.softmax(2 * torch.randn(300, 3, generator=_gen(seed)), 1)


def _labels():
    return torch.randint(0, 3, (300,), generator=_gen(5))


def _per_image(n_methods=10):
    rng = np.random.default_rng(0)
    return pd.DataFrame([{"model": mo, "method": f"method_{k}", "ssim": rng.uniform(), "lipschitz": rng.lognormal(1, 2)}
                         for mo in ("uncalibrated", "temperature_scaling") for k in range(n_methods) for _ in range(4)])


def _sweep():
    t = [0.25, 0.5, 1, 1.5, 2, 3, 4, 8]
    return pd.DataFrame({"temperature": t * 2, "deletion_area": np.linspace(0.4, 0.8, 16), "ece": np.linspace(0, 0.7, 16),
                         "dataset": ["shapes"] * 8 + ["digits"] * 8})


def _summary(level=True, n=3):
    rows = []
    for k in range(n):
        for lv in (np.linspace(0, 1, 5) if level else [np.nan]):
            rows.append({"notebook": "01_calibration", "dataset": "shapes", "model": "cnn", "method": f"method_{k}",
                         "metric": "ece", "level": lv, "mean": 0.1 * lv if level else 0.1 * k, "std": 0.0, "ci95": 0.01,
                         "n": 3, "higher_is_better": False})
    return pd.DataFrame(rows)


_AGG_METHODS = ("input_x_gradient", "smoothgrad", "gradient_shap", "saliency", "guided_backprop", "deeplift",
                "integrated_gradients", "vargrad", "gradcam")


def _key_rows(name):
    """Metrics rows of one key figure of the report (xcal_core.report.KEY_FIGURES), three seeds."""
    from xcal_core.report import select_key_rows

    rows = []
    for seed in range(3):
        if name == "05_ins_del":
            rows += [{"experiment": "gradcam", "dataset": "fashion_mnist", "model": "small_cnn", "method": m,
                      "metric": k, "seed": seed, "value": 0.5 + 0.1 * i + 0.01 * seed}
                     for i, m in enumerate(("pretrained", "ce_only", "idexpo")) for k in ("ins", "del")]
        else:  # 04: five strategies and nine single methods on both metrics
            rows += [{"experiment": "main", "dataset": "fashion_mnist", "model": "small_cnn", "method": m,
                      "metric": k, "seed": seed, "value": 0.1 * (i + 1) + 0.01 * seed}
                     for i, m in enumerate(("agg_mean", "agg_var", "agg_robust", "agg_faith", "agg_opt",
                                            *_AGG_METHODS))
                     for k in ("sens_avg", "infidelity")]
    frame = pd.DataFrame(rows).assign(notebook=f"{name[:2]}_nb", profile="smoke", run_seed=0, run_dir="r", level=np.nan,
                                      setting="", higher_is_better=False)
    params = {"IMAGE_DATASETS": ["fashion_mnist"], "MODELS": ["small_cnn"], "DATASET": "fashion_mnist",
              "MODEL": "small_cnn", "METHODS": list(_AGG_METHODS)}
    return frame, select_key_rows(frame, name, params={"r": params})


def _board():
    return pd.DataFrame({"notebook": [f"0{i}_nb" for i in range(7) for _ in range(4)], "profile": "smoke",
                         "claim_id": [f"C{j}" for _ in range(7) for j in range(4)],
                         "verdict": ["holds", "fails", "inconclusive", "mixed"] * 7})


def _history():
    return pd.DataFrame({"epoch": [0, 1, 2, 3], "ce": [np.nan, 0.5, 0.4, 0.3], "r_ins": [np.nan, 1.0, 0.9, 0.8],
                         "r_del": [np.nan, 2.0, 1.5, 1.2], "val_acc": [0.9, 0.9, 0.91, 0.92], "val_ins": [0.3, 0.4, 0.5, 0.5],
                         "val_del": [0.3, 0.2, 0.1, 0.1], "selected": [False, False, True, False]})


def _agreement():
    return pd.DataFrame({"tau": [0.25, 1, 4, 16, 64, 256, 1024] * 2, "metric": ["del"] * 7 + ["ins"] * 7,
                         "mean_abs_diff": np.r_[np.geomspace(0.25, 0.02, 7), np.geomspace(0.3, 0.05, 7)],
                         "max_abs_diff": np.r_[np.full(7, 0.8), np.full(7, 0.95)]})


def _attrs(n):
    g = _gen(2)
    return {"saliency": torch.rand(n, 3, H, W, generator=g), "integrated_gradients": torch.randn(n, 3, H, W, generator=g),
            "gradcam": torch.rand(n, H, W, generator=g), "smoothgrad": torch.rand(n, 3, H, W, generator=g)}


# --------------------------------------------------------------------------------------------- catalogue
# name -> (draw function returning (fig, ax or axes), set of checks)
# checks: "map" (every map panel explained by a colorbar), "mask" (outlines with a halo),
#         "lines:k" (at least k labelled lines, pairwise different marker or line style), "log" (readable ticks)
CATALOGUE = {
    "plot_attribution": (lambda: viz.plot_attribution(_images(1)[0], _attrs(1)["integrated_gradients"][0], mask=_masks(1)[0]),
                         {"map", "mask"}),
    "plot_attribution_grid": (lambda: viz.plot_attribution_grid(_images(12), _attrs(12), masks=_masks(12)), {"map", "mask"}),
    "plot_feature_attributions": (lambda: viz.plot_feature_attributions(
        {"saliency": torch.rand(5, 60, generator=_gen()), "lime": torch.randn(5, 60, generator=_gen(1))}), set()),
    "plot_reliability_diagram": (lambda: viz.plot_reliability_diagram(_probs(), _labels()), set()),
    "plot_ce_vs_level": (lambda: viz.plot_ce_vs_level(_ce_table(), logy=True), {"lines:4", "log"}),
    "plot_temperatures": (lambda: viz.plot_temperatures([1.0, 1.2, 1.0, 2.0], global_temperature=1.1), set()),
    "plot_ce_with_floor": (lambda: viz.plot_ce_with_floor(_ce_table().assign(
        ce_kl_floor=lambda d: 0.1 + 0.2 * d.level, ce_kl_floor_sd=0.02)), {"lines:4"}),
    "plot_reliability_lines": (lambda: viz.plot_reliability_lines({"uncalibrated": _probs(0), "temperature_scaling": _probs(1),
                                                                   "recalx": _probs(2)}, _labels()), {"lines:3"}),
    "plot_floor_vs_bandwidth": (lambda: viz.plot_floor_vs_bandwidth(pd.DataFrame(
        [{"set": s, "bandwidth": h, "ce_kl": 0.5 / (1 + 10 * h) + o + 0.05, "ce_kl_floor": 0.5 / (1 + 10 * h) + o,
          "ce_kl_floor_sd": 0.01} for s, o in (("clean", 0.0), ("level 0.5", 0.2), ("level 1", 0.4))
         for h in np.logspace(-5, 0, 12)]), chosen={"clean": 1e-3, "per level": 0.05}), {"lines:3", "log"}),
    "plot_retrain_curves": (lambda: viz.plot_retrain_curves(pd.DataFrame(
        [{"k": k, "method": m, "seed": s, "increase": 0.1 * k} for k in (1, 2, 3) for m in ("uncalibrated", "recalx")
         for s in range(3)]), differ=[2]), {"lines:2"}),
    "plot_uncertainty_maps": (lambda: viz.plot_uncertainty_maps(_images(1)[0], _summaries(12), title="12 rows"), {"map"}),
    "plot_cv_by_class": (lambda: viz.plot_cv_by_class(torch.rand(200, generator=_gen()), torch.arange(200) % 20,
                                                      [f"class {i}" for i in range(20)], highlight=[3]), set()),
    "plot_ranked_curves": (lambda: viz.plot_ranked_curves(_ranked_curves(), "deletion"), {"lines:3"}),
    "plot_feature_uncertainty": (lambda: viz.plot_feature_uncertainty(
        {k: (np.random.default_rng(0).random(20), np.full(20, 0.1)) for k in ("GBP", "IG", "LIME")},
        [f"feature {i}" for i in range(20)]), set()),
    "plot_cv_vs_entropy": (lambda: viz.plot_cv_vs_entropy(np.arange(20.0), np.arange(20.0) ** 2, label="GBP"), set()),
    "plot_cv_table": (lambda: viz.plot_cv_table(pd.DataFrame(np.random.default_rng(0).random((8, 8)),
                                                             index=[f"ue {i}" for i in range(8)],
                                                             columns=[f"ex {i}" for i in range(8)])), {"map"}),
    "plot_scoreboard": (lambda: viz.plot_scoreboard(_board()), set()),
    "plot_verdict_grid": (lambda: viz.plot_verdict_grid(pd.concat([_board().assign(run_seed=s) for s in range(5)])),
                          set()),
    "plot_metric_summary": (lambda: viz.plot_metric_summary(_summary(), "ece"), {"lines:3"}),
    "plot_metric_summary[45 bars]": (lambda: viz.plot_metric_summary(_summary(level=False, n=45), "ece"), set()),
    "key_figures": (lambda: (list(report_mod.key_figures(_key_rows("05_ins_del")[0], ["05_ins_del"], params={
        "r": {"IMAGE_DATASETS": ["fashion_mnist"], "MODELS": ["small_cnn"]}}).figures.values())[0], None), set()),
    "plot_key_figure[04]": (lambda: viz.plot_key_figure(_key_rows("04_aggregation")[1]), set()),
    "plot_key_figure[05]": (lambda: viz.plot_key_figure(_key_rows("05_ins_del")[1]), set()),
    "plot_perturbation_curves": (lambda: viz.plot_perturbation_curves(
        torch.linspace(0, 1, 41), {k: torch.rand(4, 41, generator=_gen(i)) for i, k in enumerate(("a", "b", "c"))}),
        {"lines:3"}),
    "plot_idexpo_tradeoff": (lambda: viz.plot_idexpo_tradeoff(pd.DataFrame(
        {"method": ["ce_only", "idexpo"] * 2, "eta": [0.5, 0.5, 3.0, 3.0], "accuracy": [0.9, 0.88, 0.9, 0.9],
         "ins": [0.3, 0.5, 0.3, 0.4], "one_minus_del": [0.7, 0.9, 0.7, 0.8]}), title="trade-off"), set()),
    "plot_delta_scatter": (lambda: viz.plot_delta_scatter(torch.randn(30, generator=_gen()), torch.randn(30, generator=_gen(1))),
                           set()),
    "plot_training_history": (lambda: viz.plot_training_history(_history(), title="history"), {"lines:3"}),
    "plot_soft_vs_hard": (lambda: viz.plot_soft_vs_hard(_agreement()), {"lines:4", "log"}),
    "plot_reliability_overlay": (lambda: viz.plot_reliability_overlay({"raw": _probs(0), "ts": _probs(1), "dir": _probs(2)},
                                                                      _labels()), {"lines:3"}),
    "plot_c2i_boxplots": (lambda: viz.plot_c2i_boxplots(_per_image(), "lipschitz", log=True), {"log"}),
    "plot_mean_deletion_curves": (lambda: viz.plot_mean_deletion_curves(
        {k: torch.rand(3, 101, generator=_gen(i)) for i, k in enumerate(("uncalibrated", "temperature_scaling", "dirichlet"))},
        torch.linspace(0, 1, 101), random={"uncalibrated": torch.rand(3, 101, generator=_gen(9))}), {"lines:3"}),
    "plot_c2i_bars": (lambda: viz.plot_c2i_bars(_per_image().groupby(["model", "method"], sort=False).mean(numeric_only=True)
                                                .reset_index(), "ssim"), set()),
    "plot_temperature_sweep": (lambda: viz.plot_temperature_sweep(_sweep(), fitted={"shapes": 1.67, "digits": 0.99}),
                               {"lines:2", "log"}),
    "plot_saliency_comparison": (lambda: viz.plot_saliency_comparison(
        _images(4), {f"model {i}\nmethod {i}": torch.rand(4, H, W, generator=_gen(i)) for i in range(12)}, title="t"), {"map"}),
    "plot_ssim_primer": (lambda: viz.plot_ssim_primer(torch.rand(H, W, generator=_gen()), torch.rand(H, W, generator=_gen(1)),
                                                      0.4), {"map"}),
    "plot_deletion_primer": (lambda: viz.plot_deletion_primer(
        _images(3), [0.0, 0.1, 0.3], torch.linspace(1, 0, 11), torch.linspace(0, 0.99, 11), 0.5,
        random_curve=torch.linspace(1, 0.4, 11), random_area=0.7), set()),
    "plot_btr_primer": (lambda: viz.plot_btr_primer(torch.rand(50, generator=_gen()), torch.rand(50, generator=_gen(1))),
                        set()),
    "plot_otsu_tv_primer": (lambda: viz.plot_otsu_tv_primer(
        {k: torch.rand(H, W, generator=_gen(i)) for i, k in enumerate(("smooth", "noisy"))},
        {k: torch.rand(H, W, generator=_gen(i)) > 0.5 for i, k in enumerate(("smooth", "noisy"))},
        {"smooth": 1e-4, "noisy": 2e-2}), {"map"}),
    "plot_lipschitz_primer": (lambda: viz.plot_lipschitz_primer(_images(1)[0], _images(1)[0] + 0.01,
                                                                torch.rand(H, W, generator=_gen()),
                                                                torch.rand(H, W, generator=_gen(1)), 12.0), {"map"}),
    "plot_maps_by_method": (lambda: viz.plot_maps_by_method(
        _images(2), {m: {c: torch.rand(2, H, W, generator=_gen(i + j)) for j, c in enumerate(("uncalibrated", "ts", "dir"))}
                     for i, m in enumerate(("sensitivity", "ig", "rise", "mp"))}, n_show=2), {"map"}),
    "plot_temperature_views": (lambda: (lambda r: (r[0], r[1][0]))(viz.plot_temperature_views(pd.DataFrame(
        {"temperature": [0.25, 0.5, 1.0, 2.0, 4.0, 8.0], "ece": [0.2, 0.12, 0.05, 0.02, 0.1, 0.3],
         "inv_deletion_area": [0.4, 0.35, 0.3, 0.28, 0.3, 0.33], "deletion_area": [0.2, 0.25, 0.3, 0.35, 0.4, 0.45]}),
        fitted=1.8)), {"lines:2", "log"}),  # the log-T panel
    "plot_metric_bars": (lambda: viz.plot_metric_bars({f"candidate_{i}": torch.rand(8, generator=_gen(i)) for i in range(40)}),
                         set()),
    "plot_weight_distributions": (lambda: viz.plot_weight_distributions(
        torch.distributions.Dirichlet(torch.ones(12)).sample((20,)), [f"method_{i}" for i in range(12)]), set()),
    "plot_aggregation_maps": (lambda: viz.plot_aggregation_maps(
        _images(4), {f"method_{i}": torch.rand(4, H, W, generator=_gen(i)) for i in range(9)}, masks=_masks(4)),
        {"map", "mask"}),
    "plot_generalization_gap": (lambda: viz.plot_generalization_gap(
        [5, 10, 25, 50, 100], {"robust": torch.rand(5, 6, generator=_gen()), "faith": torch.rand(5, 6, generator=_gen(1))}),
        {"lines:2", "log"}),
    "plot_theorem_check": (lambda: viz.plot_theorem_check(torch.rand(10, generator=_gen()), torch.rand(10, generator=_gen(1))),
                           set()),
    "plot_method_count": (lambda: viz.plot_method_count([2, 3, 4], {"a": torch.rand(3, 5, generator=_gen()),
                                                                   "b": torch.rand(3, 5, generator=_gen(1))}, ylabel="S"),
                          {"lines:2"}),
}


_DRAWN: dict = {}


def _draw(name, fresh=False):
    """Each catalogue figure is made once and inspected by several tests (read-only); ``fresh`` for rendering."""
    if fresh or name not in _DRAWN:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # small-panel warnings of the deliberately large grids
            _DRAWN[name] = CATALOGUE[name][0]()
    return _DRAWN[name]


def _with_check(prefix):
    return [n for n, (_, checks) in CATALOGUE.items() if any(c.startswith(prefix) for c in checks)]


# --------------------------------------------------------------------------------------------- probes
def _all_axes(fig):
    out = []
    for a in fig.axes:
        out.append(a)
        out.extend(a.child_axes)
    return out


def _colorbar_axes(fig):
    return [a for a in _all_axes(fig) if getattr(a, "_colorbar", None) is not None or a.get_label() == "<colorbar>"]


def _map_axes(fig):
    """Axes showing a scalar map (an image with a colormap and 2-D data), not RGB inputs or colorbars."""
    cbs = set(map(id, _colorbar_axes(fig)))
    return [a for a in fig.axes if id(a) not in cbs and any(im.get_array().ndim == 2 and im.get_cmap().name != "gray"
                                                            for im in a.images)]


def _has_halo(artist):
    return any(isinstance(p, pe.Stroke) for p in artist.get_path_effects())


def _legend_lines(ax):
    """The labelled data lines of an axes (errorbar lines included; axhline / axvline references excluded)."""
    from matplotlib.container import ErrorbarContainer
    from matplotlib.lines import Line2D

    handles, _ = ax.get_legend_handles_labels()
    lines = []
    for h in handles:
        if isinstance(h, ErrorbarContainer):
            h = h.lines[0]
        if not isinstance(h, Line2D):
            continue
        if len(np.atleast_1d(h.get_xdata())) > 1 and h.get_transform() == ax.transData:  # axhline: blended transform
            lines.append(h)
    return lines


def _line_key(line):
    return (str(line.get_marker()), str(line.get_linestyle()), repr(getattr(line, "_unscaled_dash_pattern", None)))


def _visible_ticklabel_boxes(ax, which_axis):
    axis = ax.xaxis if which_axis == "x" else ax.yaxis
    lo, hi = sorted(axis.get_view_interval())
    boxes = []
    for tick in [*axis.get_major_ticks(), *axis.get_minor_ticks()]:
        lab = tick.label1
        if lab.get_visible() and lab.get_text() and lo * (1 - 1e-9) <= tick.get_loc() <= hi * (1 + 1e-9):
            boxes.append(lab.get_window_extent())
    return boxes


def _overlapping(boxes, pad=1.0):
    return [(a, b) for a, b in itertools.combinations(boxes, 2)
            if a.x0 < b.x1 - pad and b.x0 < a.x1 - pad and a.y0 < b.y1 - pad and b.y0 < a.y1 - pad]


# --------------------------------------------------------------------------------------------- tests
def test_catalogue_covers_every_public_function():
    public = {n for n in dir(viz) if n.startswith("plot_") and callable(getattr(viz, n))}
    covered = {n.split("[")[0] for n in CATALOGUE}
    assert public <= covered, f"add these viz functions to the style catalogue: {sorted(public - covered)}"


@pytest.mark.parametrize("name", list(CATALOGUE))
def test_default_figure_fits_a_slide(name):
    fig, _ = _draw(name)
    w, h = fig.get_size_inches()
    assert w <= SLIDE[0] + 1e-6 and h <= SLIDE[1] + 1e-6, f"{name}: {w:.1f} x {h:.1f} in exceeds {SLIDE}"


@pytest.mark.parametrize("name", _with_check("map"))
def test_map_figures_have_colorbars(name):
    fig, _ = _draw(name)
    maps, cbs = _map_axes(fig), _colorbar_axes(fig)
    assert maps, f"{name}: no map panel found"
    assert cbs, f"{name}: {len(maps)} map panels and no colorbar"
    # every colormap shown in a map panel is explained by a colorbar
    shown = {im.get_cmap().name for a in maps for im in a.images if im.get_array().ndim == 2} - {"gray"}  # grey underlays
    explained = {a._colorbar.cmap.name for a in cbs}
    assert shown <= explained, f"{name}: colormaps {sorted(shown - explained)} have no colorbar"


@pytest.mark.parametrize("name", _with_check("mask"))
def test_mask_outlines_have_a_halo(name):
    fig, _ = _draw(name)
    outlines = [c for a in fig.axes for c in a.collections if type(c).__name__ == "QuadContourSet"]
    assert outlines, f"{name}: no mask outline drawn"
    assert all(_has_halo(c) for c in outlines), f"{name}: a mask outline has no Stroke path effect (halo)"
    assert {tuple(np.round(c.get_edgecolor()[0][:3], 3)) for c in outlines} == {(1.0, 1.0, 1.0)}  # white on the black halo


@pytest.mark.parametrize("name", _with_check("lines"))
def test_lines_differ_in_marker_or_linestyle(name):
    fig, obj = _draw(name)
    need = int(next(c for c in CATALOGUE[name][1] if c.startswith("lines")).split(":")[1])
    for ax in np.atleast_1d(obj):
        lines = _legend_lines(ax)
        assert len(lines) >= need, f"{name}: expected >= {need} labelled lines, found {len(lines)}"
        keys = [_line_key(l) for l in lines]
        dup = [k for k in set(keys) if keys.count(k) > 1]
        assert not dup, f"{name}: lines share marker and line style {dup}"


@pytest.mark.parametrize("name", _with_check("log"))
def test_log_tick_labels_do_not_overlap(name):
    fig, ax = _draw(name, fresh=True)  # a figure closed by pyplot no longer lays out its ticks
    fig.canvas.draw()
    checked = 0
    for which in ("x", "y"):
        if (ax.get_xscale() if which == "x" else ax.get_yscale()) != "log":
            continue
        boxes = _visible_ticklabel_boxes(ax, which)
        assert 2 <= len(boxes) <= 8, f"{name}: {len(boxes)} labelled ticks on the log {which} axis"
        assert not _overlapping(boxes), f"{name}: overlapping tick labels on the log {which} axis"
        checked += 1
    assert checked, f"{name}: no log axis"


@pytest.mark.parametrize("name", ["plot_metric_summary[45 bars]", "plot_feature_attributions", "plot_metric_bars",
                                  "plot_cv_by_class", "plot_weight_distributions", "plot_c2i_boxplots"])
def test_category_labels_do_not_overlap(name):
    fig, ax = _draw(name, fresh=True)
    fig.canvas.draw()
    for which in ("x", "y"):
        boxes = [t.get_window_extent() for t in (ax.get_xticklabels() if which == "x" else ax.get_yticklabels())
                 if t.get_visible() and t.get_text()]
        assert not _overlapping(boxes), f"{name}: overlapping {which} tick labels"


def test_long_titles_of_neighbouring_panels_do_not_overlap():
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    long = "AGG_robust: S_AVG (deeplift > vargrad > guided_backprop > smoothgrad > integrated_gradients)"
    for a in axes:
        viz.plot_method_count([2, 3, 4], {"a": torch.rand(3, 5, generator=_gen())}, ylabel="S", title=long, ax=a)
    fig.canvas.draw()
    boxes = [a.title.get_window_extent() for a in axes]
    assert not _overlapping(boxes)
    assert "deeplift" in axes[0].get_title() and "\n" in axes[0].get_title()  # wrapped, not cut


def test_attribution_grid_columns_share_one_scale_with_raw_values():
    attrs = _attrs(3)
    fig, axes = viz.plot_attribution_grid(_images(3), attrs, normalize=None)
    for j in range(1, axes.shape[1]):
        clims = {axes[i, j].images[-1].get_clim() for i in range(3)}
        assert len(clims) == 1, f"column {j} rows use different colour limits {clims}"


# --------------------------------------------------------------------------------------------- the helpers
def test_fit_figsize_and_grid_layout():
    from xcal_core.viz.style import SLIDE_MAX, fit_figsize, grid_layout

    assert SLIDE_MAX == (12.0, 6.0)
    assert fit_figsize(6, 4) == (6, 4)
    assert fit_figsize(24, 6) == pytest.approx((12, 3))  # uniform shrink
    assert fit_figsize(6, 12, keep_aspect=False) == (6, 6)
    with pytest.raises(ValueError, match="`width` and `height`"):
        fit_figsize(0, 3)
    small = grid_layout(2, 4, (2.0, 2.0))
    assert small.blocks == 1 and small.panel == (2.0, 2.0)
    tall = grid_layout(12, 4, (2.0, 1.6))  # notebook 03's 12 (UE x explainer) rows
    assert tall.figsize[0] <= 12 and tall.figsize[1] <= 6
    assert tall.blocks == 2 and tall.rows_per_block == 6 and min(tall.panel) >= 0.8
    assert [i for i in range(12) if tall.block_top(i)] == [0, 6]
    with pytest.warns(UserWarning, match="show fewer rows"):
        huge = grid_layout(60, 6)
    assert huge.figsize[0] <= 12 and huge.figsize[1] <= 6
    with pytest.raises(ValueError, match="`n_rows` and `n_cols`"):
        grid_layout(0, 3)


def test_panel_axes_index_logically_when_wrapped():
    from xcal_core.viz.style import panel_axes

    fig, axes, lay = panel_axes(12, 2, (1.0, 0.8))
    assert axes.shape == (12, 2) and lay.blocks == 2
    fig.canvas.draw()
    # row 6 starts the second block: to the right of row 0, at the same height
    p0, p6 = axes[0, 0].get_position(), axes[6, 0].get_position()
    assert p6.x0 > axes[0, 1].get_position().x1 and p6.y0 == pytest.approx(p0.y0, abs=0.02)


def test_slide_subplots_and_slide_style():
    from xcal_core.viz.style import SLIDE_RC, slide_style, slide_subplots

    fig, axes = slide_subplots(1, 4)
    assert axes.shape == (4,) and fig.get_size_inches()[0] <= 12
    with pytest.raises(TypeError, match="figsize"):
        slide_subplots(1, 2, figsize=(3, 3))
    before = matplotlib.rcParams["legend.fontsize"]
    with slide_style({"font.size": 13}):
        assert matplotlib.rcParams["font.size"] == 13
        assert matplotlib.rcParams["axes.titlesize"] == SLIDE_RC["axes.titlesize"]
    assert matplotlib.rcParams["legend.fontsize"] == before


def test_outline_mask_and_colorbar():
    from xcal_core.viz.style import add_colorbar, outline_mask

    fig, ax = plt.subplots()
    im = ax.imshow(np.zeros((H, W)), cmap="viridis")
    assert outline_mask(ax, np.zeros((H, W))) is None  # nothing to outline
    cs = outline_mask(ax, _masks(1)[0])
    assert _has_halo(cs)
    with pytest.raises(ValueError, match="`mask` must be"):
        outline_mask(ax, np.zeros(5))
    cb = add_colorbar(ax, im, "a / max|a|")
    assert cb.ax in ax.child_axes and cb.ax.get_label() == "<colorbar>" and cb.ax.get_ylabel() == "a / max|a|"
    with pytest.raises(ValueError, match="unknown `location`"):
        add_colorbar(ax, im, location="top")


@pytest.mark.parametrize("lims", [(0.25, 8), (1e-7, 1), (3, 8), (0.9, 1.1), (1e-30, 1e30), (5, 100), (1e-3, 1e3)])
def test_readable_log_locator(lims):
    from xcal_core.viz.style import ReadableLogLocator

    t = ReadableLogLocator(6).tick_values(*lims)
    assert 2 <= len(t) <= 6
    assert np.all((t >= lims[0] * (1 - 1e-9)) & (t <= lims[1] * (1 + 1e-9)))


def test_readable_log_axis_labels_plainly():
    from xcal_core.viz.style import readable_log_axis

    fig, ax = plt.subplots()
    ax.plot([0.25, 8], [1, 2])
    readable_log_axis(ax, "x")
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert labels == ["0.5", "1", "2", "5"]
    assert all(t.get_text() == "" for t in ax.get_xticklabels(minor=True))
    with pytest.raises(ValueError, match="unknown `axis`"):
        readable_log_axis(ax, "z")


def test_line_styles_are_distinct_and_layered():
    from xcal_core.viz.style import line_styles

    s = line_styles(8, n_points=100)
    assert len({(d["marker"], str(d["linestyle"])) for d in s}) == 8
    assert all(a["zorder"] < b["zorder"] and a["linewidth"] > b["linewidth"] for a, b in zip(s, s[1:]))
    assert s[0]["markevery"] == (0, 10) and s[1]["markevery"] == (1, 10) and "markevery" not in line_styles(2, n_points=5)[0]
    assert line_styles(0) == []
    with pytest.raises(ValueError, match="`n` must be"):
        line_styles(-1)


def test_wrap_text():
    from xcal_core.viz.style import wrap_text

    assert wrap_text("IG", 1.0) == "IG"
    assert wrap_text("mc_dropout\nintegrated_gradients", 1.0, 8) == "mc_dropout\nintegrated_\ngradients"
    cut = wrap_text("one two three four five six seven eight", 0.6, 10, max_lines=2)
    assert cut.count("\n") == 1 and cut.endswith("…")
