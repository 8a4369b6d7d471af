"""Key figures of the reproduction report: each selects exactly its rows of metrics.csv (decoys planted
next to them: other explainers, settings, experiments, notebooks, profiles), shows the spread over seeds,
and is reported missing, not drawn empty, without its rows."""

import itertools

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from xcal_core.report import KEY_FIGURES, describe_key_rows, key_figures, run_params, select_key_rows  # noqa: E402
from xcal_core.viz.report import plot_key_figure  # noqa: E402

NB = {"01": "01_calibration_under_perturbations", "02": "02_calibrate_to_interpret",
      "03": "03_uncertainty_of_explanations", "04": "04_optimized_aggregation", "05": "05_idexpo_training"}
PARAMS = {
    "01": {"IMAGE_MODELS": ["small_cnn", "resnet20"], "PATCH_SIZES": [7, 4], "IMAGE_BASELINES": ["zero", "blur"]},
    "02": {},
    "03": {"DATASET": "fashion_mnist", "UE_METHODS": ["mc_dropout", "ensemble"],
           "EXPLAINERS": ["guided_backprop", "lime"]},
    "04": {"DATASET": "fashion_mnist", "MODEL": "small_cnn", "METHODS": ["saliency", "gradcam", "deeplift"]},
    "05": {"IMAGE_DATASETS": ["fashion_mnist"], "MODELS": ["small_cnn", "resnet20"]},
}


class Rows:
    """A synthetic metrics frame; rows added with ``want=True`` are the ones the figure must select."""

    def __init__(self):
        self.rows = []

    def add(self, nb, want, *, experiment, dataset, model, method, metric, value, level=np.nan, seed=0,
            run="r0", profile="workshop", run_seed=0, setting=""):
        self.rows.append(dict(experiment=experiment, dataset=dataset, model=model, method=method, metric=metric,
                              level=level, setting=setting, seed=seed, value=float(value), higher_is_better=False,
                              notebook=NB[nb], profile=profile, run_seed=run_seed, run_dir=f"{nb}/{run}",
                              want=want, id=len(self.rows)))

    def frame(self):
        return pd.DataFrame(self.rows)


def _params(frame):
    return {d: PARAMS[d.split("/")[0]] for d in frame["run_dir"].unique()}


def _check(frame, name):
    sel = select_key_rows(frame.drop(columns="want"), name, params=_params(frame))
    assert not sel.missing, sel.missing
    assert sorted(sel.rows["id"]) == sorted(frame.loc[frame["want"], "id"]), (
        "selected rows differ: extra " + str(sorted(set(sel.rows["id"]) - set(frame.loc[frame["want"], "id"])))
        + ", lacking " + str(sorted(set(frame.loc[frame["want"], "id"]) - set(sel.rows["id"]))))
    return sel


def _frame_01(seeds=(0, 1)):
    r = Rows()
    levels = (0.0, 0.5, 1.0)
    for seed, meth, lvl in itertools.product(seeds, ("uncalibrated", "recalx"), levels):
        base = 0.3 if meth == "uncalibrated" else 0.1
        for metric, v in (("ce_kl", base + 0.01 * seed - 0.1 * lvl), ("ce_kl_floor", 0.05), ("ce_kl_floor_sd", 0.01)):
            r.add("01", True, experiment="calibration_vs_level", dataset="fashion_mnist:7x7:zero", model="small_cnn",
                  method=meth, metric=metric, value=v, level=lvl, seed=seed)
        # decoys: other calibrator, other cells of the grid, other metrics and experiments
        kw = dict(experiment="calibration_vs_level", metric="ce_kl", value=9.0, level=lvl, seed=seed)
        r.add("01", False, dataset="fashion_mnist:7x7:zero", model="small_cnn", method="temperature_scaling", **kw)
        r.add("01", False, dataset="fashion_mnist:4x4:zero", model="small_cnn", method=meth, **kw)
        r.add("01", False, dataset="fashion_mnist:7x7:blur", model="small_cnn", method=meth, **kw)
        r.add("01", False, dataset="fashion_mnist:7x7:zero", model="resnet20", method=meth, **kw)
        r.add("01", False, dataset="wine:columns:mean", model="mlp", method=meth, **kw)
        r.add("01", False, experiment="calibration_vs_level", dataset="fashion_mnist:7x7:zero", model="small_cnn",
              method=meth, metric="ece", value=9.0, level=lvl, seed=seed)
        r.add("01", False, experiment="calibration_vs_level", dataset="fashion_mnist:7x7:zero", model="small_cnn",
              method=meth, metric="ce_kl", value=9.0, level=lvl, seed=seed, profile="smoke", run="smoke")
    r.add("01", False, experiment="ce_kl_over_levels", dataset="fashion_mnist:7x7:zero", model="small_cnn",
          method="recalx", metric="ce_kl", value=9.0)
    r.add("02", False, experiment="calibration_vs_level", dataset="fashion_mnist:7x7:zero", model="small_cnn",
          method="recalx", metric="ce_kl", value=9.0, level=0.5)
    return r.frame()


def test_key_01_selects_the_main_cell_with_its_floor():
    sel = _check(_frame_01(), "01_ce_kl")
    assert sel.profile == "workshop" and sel.n_replicates == 2
    fig, ax = plot_key_figure(sel)
    lines = [ln for ln in ax.lines if len(ln.get_xdata()) == 3 and ln.get_label() != "_nolegend_"]
    drawn = sorted(tuple(np.round(ln.get_ydata(), 6)) for ln in lines if max(ln.get_ydata()) > 0.06)
    want = sorted(tuple(np.round([b + 0.01 * s - 0.1 * lv for lv in (0.0, 0.5, 1.0)], 6))
                  for b in (0.3, 0.1) for s in (0, 1))
    assert drawn == want  # one line per seed and method, no mean line over seeds, no decoy
    text = describe_key_rows(sel)
    assert "uncalibrated 0.255 on average over the 3 levels (max 0.305 at level 0.00)" in text
    assert "ReCalX 0.055 on average" in text and "means over 2 seeds; a thin line per seed" in text
    assert "within its floor + 2 sd at 2 of 3 levels" in text  # 0.105, 0.055, 0.005 vs 0.05 + 2 x 0.01
    plt.close(fig)


def test_key_02_ece_per_calibrator_with_floor_and_controls():
    r = Rows()
    for (ds, model, temp), seed in itertools.product(
            (("fashion_mnist", "small_cnn_overconfident", 0.4), ("cifar10", "resnet", 1.02)), (0, 1)):
        for meth, v in (("uncalibrated", 0.2), ("temperature_scaling", 0.05), ("dirichlet", 0.07)):
            r.add("02", True, experiment="calibration", dataset=ds, model=model, method=meth, metric="ece",
                  value=v + 0.01 * seed, seed=seed)
            for dec in ("ece_kde", "nll", "accuracy"):
                r.add("02", False, experiment="calibration", dataset=ds, model=model, method=meth, metric=dec,
                      value=9.0, seed=seed)
        r.add("02", True, experiment="calibration", dataset=ds, model=model, method="uncalibrated",
              metric="ece_floor_q95", value=0.03, seed=seed)
        r.add("02", True, experiment="calibration", dataset=ds, model=model, method="temperature_scaling",
              metric="fitted_temperature", value=temp, seed=seed)
        r.add("02", False, experiment="calibration", dataset=ds, model=model, method="uncalibrated",
              metric="ece_kde_floor_q95", value=9.0, seed=seed)
        for t in (0.5, 2.0):  # the MP temperature sweep is not ECE before/after calibration
            r.add("02", False, experiment="mp_temperature_sweep", dataset=ds, model=model,
                  method="fixed_temperature", metric="ece", value=9.0, level=t, seed=seed)
        r.add("02", False, experiment="saliency/rise", dataset=ds, model=model, method="uncalibrated",
              metric="deletion_area", value=9.0, seed=seed)
    r.add("01", False, experiment="calibration", dataset="fashion_mnist", model="small_cnn_overconfident",
          method="uncalibrated", metric="ece", value=9.0)
    sel = _check(r.frame(), "02_ece")
    text = describe_key_rows(sel)
    assert "cifar10/resnet: ECE uncalibrated 0.205 -> temperature scaling 0.055, Dirichlet 0.075" in text
    assert "CONTROL (fitted T = 1.02" in text and text.count("CONTROL") == 1
    fig, ax = plot_key_figure(sel)
    heights = sorted(round(p.get_height(), 6) for p in ax.patches if p.get_height() > 0 and p.get_width() < 0.5)
    assert heights == sorted([0.205, 0.055, 0.075] * 2)  # bars = means over the 2 seeds, no decoy bar
    assert sum(len(c.get_offsets()) for c in ax.collections if hasattr(c, "get_offsets")) >= 12  # a dot per seed
    assert any("CONTROL" in t.get_text() for t in ax.get_xticklabels())
    plt.close(fig)


def test_key_03_cv_per_ue_method_and_explainer_not_per_class():
    r = Rows()
    for ue, ex in itertools.product(("mc_dropout", "ensemble"), ("guided_backprop", "lime")):
        v = {"guided_backprop": 0.4, "lime": 0.6}[ex] + (0.1 if ue == "ensemble" else 0.0)
        r.add("03", True, experiment="explanation_uncertainty", dataset="fashion_mnist", model=ue, method=ex,
              metric="cv_mean", value=v)
        for metric in ("cv_global", "std_mean", "undefined_share"):
            r.add("03", False, experiment="explanation_uncertainty", dataset="fashion_mnist", model=ue, method=ex,
                  metric=metric, value=9.0)
        r.add("03", False, experiment="explanation_uncertainty", dataset="diabetes", model=ue, method=ex,
              metric="cv_mean", value=9.0)  # the regression set
        for c in range(3):  # the old per-class rows had the class index in `level`
            r.add("03", False, experiment="explanation_uncertainty_by_class", dataset="fashion_mnist", model=ue,
                  method=ex, metric="cv_mean", value=9.0, level=float(c))
        r.add("03", False, experiment="class_differences", dataset="fashion_mnist", model=ue, method=ex,
              metric="kruskal_p_cv_mean", value=9.0)
    r.add("03", False, experiment="explanation_uncertainty", dataset="fashion_mnist", model="mc_dropout",
          method="integrated_gradients", metric="cv_mean", value=9.0)  # not in EXPLAINERS of this run
    r.add("03", False, experiment="explanation_uncertainty", dataset="fashion_mnist", model="flipout",
          method="lime", metric="cv_mean", value=9.0)  # not in UE_METHODS of this run
    sel = _check(r.frame(), "03_cv")
    assert describe_key_rows(sel).startswith("mean CV over the 4 (UE method, explainer) cells from 0.40 "
                                             "(MC-Dropout, GBP) to 0.70 (ensemble, LIME)")
    fig, ax = plot_key_figure(sel)
    assert sorted(round(p.get_height(), 6) for p in ax.patches if p.get_height() > 0) == [0.4, 0.5, 0.6, 0.7]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["MC-Dropout", "ensemble"]
    assert ax.get_xlabel() != "level"
    plt.close(fig)


def test_key_04_strategies_and_best_single_method_of_the_main_setting():
    r = Rows()
    values = {"sens_avg": {"agg_mean": 0.3, "agg_var": 0.4, "agg_robust": 0.05, "agg_faith": 0.6, "agg_opt": 0.07,
                           "saliency": 0.8, "gradcam": 0.04, "deeplift": 0.5},
              "infidelity": {"agg_mean": 2.0, "agg_var": 2.1, "agg_robust": 2.2, "agg_faith": 1.5, "agg_opt": 1.6,
                             "saliency": 3.0, "gradcam": 2.5, "deeplift": 1.4}}
    for metric, d in values.items():
        best = min((v, k) for k, v in d.items() if not k.startswith("agg_"))[1]
        for meth, v in d.items():
            r.add("04", meth.startswith("agg_") or meth == best, experiment="main", dataset="fashion_mnist",
                  model="small_cnn", method=meth, metric=metric, value=v)
            r.add("04", False, experiment="more_models", dataset="fashion_mnist", model="resnet20", method=meth,
                  metric=metric, value=9.0)
            r.add("04", False, experiment="ablation", dataset="fashion_mnist", model="small_cnn", method=meth,
                  metric=metric, value=0.0)
        for dec in ("agg_robust_k3", "agg_faith_fit_zero"):  # ablation variants of the strategies
            r.add("04", False, experiment="main", dataset="fashion_mnist", model="small_cnn", method=dec,
                  metric=metric, value=0.0)
        r.add("04", False, experiment="main", dataset="fashion_mnist", model="small_cnn", method="lime",
              metric=metric, value=0.0)  # a perturbation method: not in METHODS
    for meth in ("agg_robust", "agg_faith"):
        for metric in ("sens_max", "infidelity_zero", "fcor"):
            r.add("04", False, experiment="main", dataset="fashion_mnist", model="small_cnn", method=meth,
                  metric=metric, value=9.0)
        r.add("04", False, experiment="localization", dataset="shapes", model="small_cnn", method=meth,
              metric="mass_in_mask", value=9.0)
    sel = _check(r.frame(), "04_aggregation")
    text = describe_key_rows(sel)
    assert "S_AVG: AGG_robust 0.05, lowest strategy AGG_robust 0.05, best single method Grad-CAM 0.04" in text
    assert "INFD: AGG_faith 1.5, lowest strategy AGG_faith 1.5, best single method DeepLift 1.4" in text
    fig, axes = plot_key_figure(sel)
    for ax, metric in zip(axes, ("sens_avg", "infidelity")):
        assert len([p for p in ax.patches if p.get_height() > 0]) == 6  # 5 strategies + the best single method
        assert sorted(round(p.get_height(), 6) for p in ax.patches) == sorted(
            v for k, v in values[metric].items() if k.startswith("agg_") or v == min(
                x for m, x in values[metric].items() if not m.startswith("agg_")))
    plt.close(fig)


def _frame_05(seeds=(0, 1, 2), runs=("r0",), methods=("pretrained", "ce_only", "idexpo")):
    r = Rows()
    for run, seed in itertools.product(runs, seeds):
        for meth in methods:
            if meth == "pretrained" and seed != seeds[0]:
                continue  # the pretrained model has one seed, as in notebook 05
            ins = {"pretrained": 0.5, "ce_only": 0.52, "idexpo": 0.6}[meth] + 0.01 * seed
            for metric, v in (("ins", ins), ("del", 1 - ins)):
                r.add("05", True, experiment="gradcam", dataset="fashion_mnist", model="small_cnn", method=meth,
                      metric=metric, value=v, seed=seed, run=run)
                for exp in ("lime", "kernelshap", "gradcam_first_order", "gradcam_second_order"):
                    r.add("05", False, experiment=exp, dataset="fashion_mnist", model="small_cnn", method=meth,
                          metric=metric, value=9.0, seed=seed, run=run)
                r.add("05", False, experiment="gradcam", dataset="fashion_mnist", model="resnet20", method=meth,
                      metric=metric, value=9.0, seed=seed, run=run)
                r.add("05", False, experiment="gradcam", dataset="cifar10", model="small_cnn", method=meth,
                      metric=metric, value=9.0, seed=seed, run=run)
            for metric in ("accuracy", "sensitivity_n", "mass_in_mask", "seconds_per_epoch"):
                r.add("05", False, experiment="gradcam", dataset="fashion_mnist", model="small_cnn", method=meth,
                      metric=metric, value=9.0, seed=seed, run=run)
    return r.frame()


def test_key_05_gradcam_only_on_the_main_setting_with_a_dot_per_seed():
    frame = _frame_05()
    sel = _check(frame, "05_ins_del")
    assert sel.n_replicates == 3
    text = describe_key_rows(sel)
    assert "Ins (higher is better): pretrained 0.500, CE-only 0.530, ID-ExpO 0.610" in text
    assert "Del (lower is better): pretrained 0.500, CE-only 0.470, ID-ExpO 0.390" in text
    fig, axes = plot_key_figure(sel)
    assert [round(p.get_height(), 6) for p in axes[0].patches] == [0.5, 0.53, 0.61]
    dots = sorted(np.round(np.concatenate([c.get_offsets()[:, 1] for c in axes[0].collections]), 6))
    assert dots == [0.52, 0.53, 0.54, 0.6, 0.61, 0.62]  # every seed of the fine-tuned models; no t-interval
    assert not any(len(c.get_segments()) for c in axes[0].collections if hasattr(c, "get_segments"))
    plt.close(fig)


def test_seeds_of_several_runs_are_separate_replicates():
    sel = _check(_frame_05(seeds=(0, 1), runs=("seed0", "seed1")), "05_ins_del")
    assert sel.n_replicates == 4  # (run, seed) pairs
    assert "means over 4 seeds" in describe_key_rows(sel)


def test_missing_rows_are_reported_and_not_drawn():
    frame = _frame_05(methods=("pretrained", "ce_only")).drop(columns="want")
    out = key_figures(frame, params=_params(frame.assign(want=True)))
    assert out.figures == {}
    assert set(out.missing) == set(KEY_FIGURES)
    assert "ins/idexpo" in out.missing["05_ins_del"] and "del/idexpo" in out.missing["05_ins_del"]
    assert out.missing["01_ce_kl"] == "no runs of notebook 01 were read"
    assert out.captions["01_ce_kl"].startswith("01_ce_kl: not drawn")
    sel = select_key_rows(frame, "05_ins_del", params=_params(frame.assign(want=True)))
    with pytest.raises(ValueError, match="has no rows"):
        plot_key_figure(sel)
    full = _frame_05().drop(columns="want")
    other = full.assign(run_dir="05/other")  # another main setting in its params: nothing of it was logged
    sel = select_key_rows(other, "05_ins_del", params={"05/other": {"IMAGE_DATASETS": ["stl10"], "MODELS": ["x"]}})
    assert sel.missing.startswith("no rows of experiment gradcam")
    with pytest.raises(ValueError, match="unknown key figure"):
        key_figures(full, names=["05:ins"])


def test_key_figures_draw_what_exists_at_slide_size():
    frame = pd.concat([_frame_01(), _frame_05()], ignore_index=True)
    out = key_figures(frame.drop(columns="want"), params=_params(frame))
    assert list(out.figures) == ["key_01_ce_kl", "key_05_ins_del"]
    assert set(out.missing) == {"02_ece", "03_cv", "04_aggregation"}
    for fig in out.figures.values():
        w, h = fig.get_size_inches()
        assert w <= 12 and h <= 6
        plt.close(fig)


def test_run_params_read_each_runs_params_yaml(tmp_path):
    d = tmp_path / "05_idexpo_training__abc"
    d.mkdir()
    (d / "params.yaml").write_text("IMAGE_DATASETS:\n- fashion_mnist\nMODELS:\n- small_cnn\n- resnet20\n")
    frame = _frame_05().drop(columns="want").assign(run_dir=str(d))
    assert run_params(frame)[str(d)]["MODELS"] == ["small_cnn", "resnet20"]
    sel = select_key_rows(frame, "05_ins_del")
    assert len(sel.rows) == 14 and not sel.missing
    (d / "params.yaml").write_text("IMAGE_DATASETS:\n- fashion_mnist\nMODELS:\n- resnet20\n")
    assert sorted(set(select_key_rows(frame, "05_ins_del").rows["value"])) == [9.0]  # now resnet20's rows
    (d / "params.yaml").write_text("IMAGE_DATASETS:\n- fashion_mnist\nMODELS:\n- vgg11\n")
    assert "no rows of experiment gradcam" in select_key_rows(frame, "05_ins_del").missing


def test_notebook_parameter_lists_every_key_figure():
    from xcal_core.params import load_schema

    param = next(p for p in load_schema("06_reproduction_report").params if p.name == "KEY_FIGURES")
    assert list(param.choices) == list(KEY_FIGURES) == param.default


def test_two_rows_for_one_bar_are_not_pooled():
    frame = _frame_05()
    extra = frame[frame["want"] & (frame["method"] == "idexpo")].assign(setting="lambda1=0.3")
    both = pd.concat([frame, extra], ignore_index=True).drop(columns="want")
    sel = select_key_rows(both, "05_ins_del", params=_params(frame))
    assert "share a bar or point of one seed" in sel.missing and "setting" in sel.missing
    assert sel.rows.empty


def test_key_04_tick_labels_do_not_overlap():
    methods = ("input_x_gradient", "smoothgrad", "gradient_shap", "saliency", "guided_backprop", "deeplift",
               "integrated_gradients", "vargrad", "gradcam")
    r = Rows()
    for metric in ("sens_avg", "infidelity"):
        for i, m in enumerate(("agg_mean", "agg_var", "agg_robust", "agg_faith", "agg_opt", *methods)):
            r.add("04", True, experiment="main", dataset="fashion_mnist", model="small_cnn", method=m, metric=metric,
                  value=1.0 + i)  # the first single method is the best one: the longest label
    frame = r.frame()
    sel = select_key_rows(frame, "04_aggregation", params={"04/r0": {**PARAMS["04"], "METHODS": list(methods)}})
    fig, axes = plot_key_figure(sel)
    fig.canvas.draw()
    for ax in axes:
        boxes = [t.get_window_extent() for t in ax.get_xticklabels() if t.get_text()]
        assert len(boxes) == 6
        for a, b in itertools.combinations(boxes, 2):
            assert not (a.x0 < b.x1 - 1 and b.x0 < a.x1 - 1 and a.y0 < b.y1 - 1 and b.y0 < a.y1 - 1)
    plt.close(fig)
