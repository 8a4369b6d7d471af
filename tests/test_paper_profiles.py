"""The ``paper`` profiles of notebooks 01 to 05 run end to end (on the CPU, without real data).

Each test executes a notebook with ``PROFILE="paper"`` and the paper profile's own dataset and model
lists, an empty ``DATA_DIR`` and ``STANDIN_IF_MISSING=True``, so every dataset falls back to its
synthetic stand-in:

- 01: ImageNet with ResNet50 / DenseNet121 / ViT-B/16, and the OpenML tabular suite;
- 02: CIFAR-100 with VGG16-BN and ResNet-32, Food-101 with ResNet-50, CUB-200-2011 with EfficientNet-B0;
- 03: CIFAR-10 with the four UE twins of the width-32 small CNN, California housing with an MLP family;
- 04: ImageNet with VGG16 / ResNet18 / MobileNetV2 / DenseNet121 / ViT-B/16, CIFAR-10 with ResNet-18;
- 05: CIFAR-10 and STL-10 with the CIFAR ResNet-18, breast cancer (bundled) with an MLP.

Only the counts are overridden (tiny sample and step counts, 32 x 32 images, 16 x 16 for 03 and 05,
one training epoch, small batch sizes), so the tests exercise the paper code path (loops over models,
stand-in fallbacks, randomly initialised torchvision models trained on the stand-ins, per-seed
retraining, the ``AMP`` and ``GRAD_BATCH_SIZE`` plumbing, which is a no-op on the CPU) in about a
minute each.

Note on the overrides: a papermill value equal to the schema default counts as "not given" and the
profile preset wins (``xcal_core.params`` resolution rule), so every override below differs from the
default.
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from xcal_core.batch import RunSpec, execute_run
from xcal_core.params import load_schema, resolve_params

ROOT = Path(__file__).resolve().parents[1]

NB01_TINY = {
    "TABULAR_DATASETS": ["openml:credit"], "TABULAR_EPOCHS": 1,
    "N_FIT": 10, "N_PER_BIN": 1, "N_EVAL_ROWS": 12, "N_FLOOR_DRAWS": 2, "MAX_BANDWIDTH_ROWS": 40,
    "IMAGE_SIZE": 32, "N_TRAIN": 32, "N_CAL": 40, "STANDIN_EPOCHS": 1, "IMAGE_BASELINES": ["blur"],
    "N_SENS": 1, "SENS_DRAWS": 1, "EXPLAINER_SAMPLES": 8, "N_LOCALIZATION": 2, "N_SHOW": 2, "SHAPLEY_PERMS": 2,
    "RETRAIN_DATASETS": ["openml:credit"], "RETRAIN_K_MAX": 1, "RETRAIN_SEEDS": 1, "N_IMPORTANCE": 8,
    "ABLATION_BINS": [1, 10], "ABLATION_CAL_SIZES": [5, 10], "BATCH_SIZE": 64,
}

NB02_TINY = {
    "IMAGE_SIZE": 32, "N_TRAIN": 64, "N_EPOCHS": 1, "STANDIN_EPOCHS": 1, "N_CAL": 40, "N_TEST": 40, "N_EXPLAIN": 4,
    "IG_STEPS": 4, "RISE_MASKS": 16, "MP_STEPS": 3, "MP_MASK_SIZE": 4, "N_ORDERS": 1, "TEMPERATURES": [0.5, 2.0],
    "N_TEMP_EXPLAIN": 2, "N_LIPSCHITZ": 1, "LIP_NEIGHBOURS": 1, "N_SEGMENTS": 16, "BATCH_SIZE": 64, "DELETION_STEPS": 8,
}


def test_paper_profiles_are_sized_for_an_80gb_gpu():
    # inference-only chunks of 1024 inputs (ImageNet-size models: ~15-30 GB of activations without autograd);
    # back-propagated chunks (gradients, IG, MP masks) of 256 (ResNet-50 / EfficientNet-B0 at 224 px)
    nb01, _ = resolve_params(load_schema("01_calibration_under_perturbations"), {"PROFILE": "paper"})
    assert nb01["BATCH_SIZE"] == 1024 and nb01["IMAGE_N_SEEDS"] >= 3 and nb01["N_SEEDS"] >= 5
    assert nb01["N_EVAL_ROWS"] >= 5000  # the paper's >= 5000 evaluation samples per level
    nb02, _ = resolve_params(load_schema("02_calibrate_to_interpret"), {"PROFILE": "paper"})
    assert (nb02["BATCH_SIZE"], nb02["GRAD_BATCH_SIZE"], nb02["AMP"]) == (1024, 256, True)
    # the workshop profile keeps full precision and the CPU-sized chunks
    ws, _ = resolve_params(load_schema("02_calibrate_to_interpret"), {"PROFILE": "workshop"})
    assert (ws["BATCH_SIZE"], ws["GRAD_BATCH_SIZE"], ws["AMP"]) == (256, 256, False)


def _run_paper(notebook_id: str, overrides: dict, tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("XCAL_CACHE_DIR", str(tmp_path / "cache"))  # train here, never reuse another run's models
    (tmp_path / "no_data").mkdir()
    run_dir = tmp_path / notebook_id
    params = {"PROFILE": "paper", "DEVICE": "cpu", "DATA_DIR": str(tmp_path / "no_data"), "STANDIN_IF_MISSING": True,
              **overrides}
    path = ROOT / "notebooks" / f"{notebook_id}.ipynb"
    res = execute_run(RunSpec(path, notebook_id, params, run_dir, "paper-standin"), resume=False, timeout=900)
    assert res.status == "completed", f"{path.name} (paper profile, stand-ins) failed: {res.error}"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["profile"] == "paper"
    return run_dir


def _stream_text(run_dir: Path) -> str:
    nb = nbformat.read(run_dir / "executed.ipynb", as_version=4)
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                   if o.get("output_type") == "stream")


def _run_announced(notebook_id: str, overrides: dict, notes: list[str], tmp_path: Path, monkeypatch):
    """Run a paper profile on stand-ins, check that each line of ``notes`` was printed, return (metrics, claims)."""
    run_dir = _run_paper(notebook_id, overrides, tmp_path, monkeypatch)
    out = _stream_text(run_dir)
    for note in notes:
        assert note in out, note
    return pd.read_csv(run_dir / "metrics.csv"), pd.read_csv(run_dir / "claims.csv")


@pytest.mark.notebook
@pytest.mark.slow
def test_nb01_paper_profile_runs_on_standins(tmp_path, monkeypatch):
    run_dir = _run_paper("01_calibration_under_perturbations", NB01_TINY, tmp_path, monkeypatch)
    out = _stream_text(run_dir)
    # the stand-ins are announced plainly, and so is where each model's weights come from
    assert "STAND-IN DATA: standin:credit is a synthetic stand-in for openml:credit" in out
    assert "STAND-IN DATA: standin:imagenet is a synthetic stand-in for imagenet (input (3, 32, 32), 1000 classes" in out
    for arch in ("tv:resnet50", "tv:densenet121", "tv:vit_b_16"):
        assert f"{arch}: STAND-IN run, trained 1 epoch(s) on standin:imagenet" in out
    metrics = pd.read_csv(run_dir / "metrics.csv")
    claims = pd.read_csv(run_dir / "claims.csv")
    assert claims.statement.str.contains(r"\[STAND-IN DATA: standin:credit, standin:imagenet\]").all()
    lv = metrics[metrics.experiment == "calibration_vs_level"]
    # every paper image model has its per-level curves, labelled with the stand-in's name
    assert set(lv[lv.dataset == "standin:imagenet:16x16:blur"].model) == {"tv:resnet50", "tv:densenet121", "tv:vit_b_16"}
    assert set(lv[lv.dataset == "standin:credit:columns:mean"].model) == {"mlp", "tabular_resnet"}
    assert set(lv[lv.dataset == "standin:credit:columns:mean"].seed) == {0, 1, 2, 3, 4}  # the paper profile's N_SEEDS = 5
    assert set(lv[lv.dataset == "standin:imagenet:16x16:blur"].seed) == {0, 1, 2}  # IMAGE_N_SEEDS = 3
    # every CE_KL comes with its floor, per level and method
    assert {"ce_kl", "ce_kl_floor", "ce_kl_floor_sd", "ece", "accuracy"} <= set(lv.metric)
    # the bands are over training seeds: every repetition has its own trained model, so the test-split NLLs
    # of the repetitions' models (same data, same split) all differ; a model shared by the repetitions would repeat them
    tm = metrics[(metrics.experiment == "trained_models") & (metrics.metric == "nll")]
    per = tm.groupby(["dataset", "model"]).agg(seeds=("seed", "nunique"), values=("value", "nunique"), n=("value", "size"))
    assert per.loc[("standin:credit", "mlp"), "seeds"] == 5 and per.loc[("standin:imagenet", "tv:vit_b_16"), "seeds"] == 3
    assert len(per) == 5 and (per["values"] == per["seeds"]).all() and (per["n"] == per["seeds"]).all()
    for arch in ("tv:resnet50", "tv:densenet121", "tv:vit_b_16"):
        assert f"{arch}: STAND-IN run, trained 1 epoch(s) on standin:imagenet from a random initialisation (pretrained weights absent) (seed 2)" in out
    # sensitivity and localization ran for each image model
    sens = metrics[metrics.experiment == "local_robustness"]
    assert {m.split(":kernel_shap")[0] for m in sens.model if ":kernel_shap" in m} == {"tv:resnet50", "tv:densenet121", "tv:vit_b_16"}
    assert set(metrics[metrics.metric == "mass_in_mask"].model) == {"tv:resnet50", "tv:densenet121", "tv:vit_b_16"}


@pytest.mark.notebook
@pytest.mark.slow
def test_nb02_paper_profile_runs_on_standins(tmp_path, monkeypatch):
    run_dir = _run_paper("02_calibrate_to_interpret", NB02_TINY, tmp_path, monkeypatch)
    out = _stream_text(run_dir)
    for real in ("cifar100", "food101", "cub200"):
        assert f"STAND-IN DATA: standin:{real} is a synthetic stand-in for {real}" in out
    for arch, ds in (("vgg_cifar", "cifar100"), ("resnet_cifar", "cifar100"), ("tv:resnet50", "food101"),
                     ("tv:efficientnet_b0", "cub200")):
        assert f"{arch}: STAND-IN run, trained 1 epoch(s) on standin:{ds}" in out
    metrics = pd.read_csv(run_dir / "metrics.csv")
    claims = pd.read_csv(run_dir / "claims.csv")
    assert claims.statement.str.contains("STAND-IN DATA").all()
    # one key per (dataset, model): CIFAR-100 appears twice, so keys name the model too
    assert {"c2i_ts_ece_cifar100-vgg_cifar", "c2i_ts_ece_cifar100-resnet_cifar", "c2i_ts_ece_food101-tv_resnet50",
            "c2i_ts_ece_cub200-tv_efficientnet_b0"} <= set(claims.claim_id)
    cal = metrics[(metrics.experiment == "calibration") & (metrics.metric == "ece")]
    assert set(zip(cal.dataset, cal.model)) == {("standin:cifar100", "vgg_cifar"), ("standin:cifar100", "resnet_cifar"),
                                                 ("standin:food101", "tv:resnet50"), ("standin:cub200", "tv:efficientnet_b0")}
    sal = metrics[metrics.experiment.str.startswith("saliency/")]
    assert set(sal.model) == {"vgg_cifar", "resnet_cifar", "tv:resnet50", "tv:efficientnet_b0"}
    assert {"ssim", "deletion_area", "btr", "otsu_tv", "lipschitz", "mass_in_mask"} <= set(sal.metric)
    # the calibration-invariant view (every map scored by the same network) is there for every model
    assert {"inv_deletion_area", "inv_btr", "inv_insertion_area"} <= set(sal.metric)
    assert set(sal[sal.metric == "inv_deletion_area"].model) == set(sal.model)


_CIFAR_STANDIN = "cifar10"  # the paper profile's own entry: without data it falls back to standin:cifar10
NB04_PAPER_MODELS = ["tv:vgg16", "tv:resnet18", "tv:mobilenet_v2", "tv:densenet121", "tv:vit_b_16", "resnet18_cifar"]
NB04_TINY = {
    "IMAGE_SIZE": 32, "IMAGENET_N_TRAIN": 32, "N_TRAIN": 64, "N_EPOCHS": 1, "STANDIN_EPOCHS": 1, "N_IMAGES": 3,
    "METHODS": ["saliency", "input_x_gradient", "smoothgrad"], "PERTURBATION_METHODS": ["occlusion", "feature_ablation"],
    "PATCH": 8, "IG_STEPS": 2, "NOISE_SAMPLES": 2, "SHAP_SAMPLES": 8, "M_AGG": 3, "M_EVAL": 4, "M_GRID": [2, 3],
    "FAMILY_N_IMAGES": 3, "LOC_DATASET": "none", "BATCH_SIZE": 64,
    "MORE_MODELS": [f"imagenet/{m}" for m in NB04_PAPER_MODELS[1:5]] + [f"{_CIFAR_STANDIN}/resnet18_cifar"],
}


@pytest.mark.notebook
@pytest.mark.slow
def test_nb04_paper_profile_runs_on_standins(tmp_path, monkeypatch):
    # the paper profile itself: the models, 500 images, back-propagated chunks of 256 (80 GB GPU)
    paper, _ = resolve_params(load_schema("04_optimized_aggregation"), {"PROFILE": "paper"})
    assert (paper["DATASET"], paper["MODEL"], paper["N_IMAGES"], paper["BATCH_SIZE"]) == ("imagenet", "tv:vgg16", 500, 256)
    assert [e.split("/")[1] for e in paper["MORE_MODELS"]] == NB04_PAPER_MODELS[1:]
    run_dir = _run_paper("04_optimized_aggregation", NB04_TINY, tmp_path, monkeypatch)
    out = _stream_text(run_dir)
    assert "STAND-IN DATA: standin:imagenet is a synthetic stand-in for imagenet (input (3, 32, 32), 1000 classes" in out
    assert "STAND-IN DATA in this run (standin:imagenet)" in out
    for arch in NB04_PAPER_MODELS[:5]:
        assert f"{arch}: STAND-IN run, trained 1 epoch(s) on standin:imagenet from a random initialisation" in out
    assert "resnet18_cifar: STAND-IN run, trained 1 epoch(s) on standin:cifar10" in out
    metrics = pd.read_csv(run_dir / "metrics.csv")
    claims = pd.read_csv(run_dir / "claims.csv")
    # every paper model has its Table 1-2 rows: VGG16 in the main sections, the others in section 11
    assert set(NB04_PAPER_MODELS) <= set(metrics.model)
    main = metrics[metrics.experiment == "main"]
    assert set(main.model) == {"tv:vgg16"} and set(main.dataset) == {"standin:imagenet"}
    more = metrics[metrics.experiment == "more_models"]
    assert set(more.model) == set(NB04_PAPER_MODELS[1:])
    for model in NB04_PAPER_MODELS[1:]:
        rows = more[more.model == model]
        assert {"agg_robust", "agg_faith", "agg_opt", "agg_mean", "agg_var", "saliency"} <= set(rows.method)
        assert {"sens_avg", "sens_max", "infidelity", "fcor"} <= set(rows.metric) and rows.value.notna().all()
    # every claim says it was computed on stand-in data
    assert {"C1", "C4", "C8"} <= set(claims.claim_id)
    assert claims.statement.str.contains(r"\[STAND-IN DATA: standin:").all()


NB03_UE = ["mc_dropout", "dropconnect", "flipout", "ensemble"]
NB03_TINY = {
    "IMAGE_SIZE": 16, "N_TRAIN": 64, "N_CAL": 32, "N_TEST": 100, "N_EPOCHS": 1, "N_REALISATIONS": 4, "N_MEMBERS": 2,
    "IG_STEPS": 4, "LIME_SAMPLES": 20, "N_EXPLAIN": 10, "N_EXPLAIN_LIME": 4, "N_TRUE_LOGIT": 4, "N_PERTURB": 4,
    "PERTURB_STEP_FRACTION": 0.1, "REG_EPOCHS": 2,
}


@pytest.mark.notebook
@pytest.mark.slow
def test_nb03_paper_profile_runs_on_standins(tmp_path, monkeypatch):
    # the paper profile itself: CIFAR-10 with the width-32 miniVGG-like CNN, California housing, T = 50, M = 10
    paper, _ = resolve_params(load_schema("03_uncertainty_of_explanations"), {"PROFILE": "paper"})
    assert (paper["DATASET"], paper["REGRESSION_DATASET"], paper["CNN_WIDTH"]) == ("cifar10", "california_housing", 32)
    assert (paper["N_REALISATIONS"], paper["N_MEMBERS"], paper["UE_METHODS"]) == (50, 10, NB03_UE)
    metrics, claims = _run_announced("03_uncertainty_of_explanations", NB03_TINY, [
        "STAND-IN DATA: standin:cifar10 is a synthetic stand-in for cifar10 (input (3, 16, 16), 10 classes",
        "STAND-IN DATA: standin:california_housing is a synthetic stand-in for california_housing (input (8,), regression",
        "STAND-IN DATA in this run (standin:california_housing, standin:cifar10)"], tmp_path, monkeypatch)
    # every UE method has its explanation-uncertainty rows on both stand-ins, labelled with the stand-in's name
    eu = metrics[metrics.experiment == "explanation_uncertainty"]
    assert set(eu.dataset) == {"standin:cifar10", "standin:california_housing"}
    for ds in ("standin:cifar10", "standin:california_housing"):
        assert set(eu[eu.dataset == ds].model) == set(NB03_UE)
    assert set(metrics[metrics.experiment == "insertion_deletion/mean"].model) == set(NB03_UE)
    # every claim says it was computed on stand-in data (claim ids keep the paper's dataset names)
    assert {"U1_cifar10", "U2_cifar10", "U4_cifar10", "U1_california_housing"} <= set(claims.claim_id)
    assert claims.statement.str.contains(r"\[STAND-IN DATA", regex=True).all()


NB05_TINY = {
    # 16 x 16 images: 2 x 2 Grad-CAM cells of the CIFAR ResNet-18 and 4 LIME cells keep the ID-ExpO steps cheap on the CPU
    "IMAGE_SIZE": 16, "N_TRAIN": 32, "N_CAL": 16, "N_FINETUNE": 32, "N_VAL": 16, "N_TEST": 16, "PRETRAIN_EPOCHS": 1,
    "EPOCHS": 1, "N_SEEDS": 2, "LAMBDA1_GRID": [0.1], "ETAS": [1.0, 3.0], "TAUS": [1.0, 1024.0], "LIME_CELL": 8,
    "LIME_SAMPLES": 4, "KERNELSHAP_SAMPLES": 8, "SENS_NS": [1, 4], "SENS_SAMPLES": 5, "N_CHECK": 8, "N_SHOW": 2,
    "BATCH_SIZE": 16,
}


@pytest.mark.notebook
@pytest.mark.slow
def test_nb05_paper_profile_runs_on_standins(tmp_path, monkeypatch):
    # the paper profile itself: CIFAR-10 and STL-10 with the CIFAR ResNet-18, 100 fine-tuning epochs, breast cancer for KernelSHAP
    paper, _ = resolve_params(load_schema("05_idexpo_training"), {"PROFILE": "paper"})
    assert (paper["IMAGE_DATASETS"], paper["MODELS"], paper["EPOCHS"]) == (["cifar10", "stl10"], ["resnet18_cifar"], 100)
    assert paper["TABULAR_DATASET"] == "breast_cancer"
    metrics, claims = _run_announced("05_idexpo_training", NB05_TINY, [
        "STAND-IN DATA: standin:cifar10 is a synthetic stand-in for cifar10 (input (3, 16, 16), 10 classes",
        "STAND-IN DATA: standin:stl10 is a synthetic stand-in for stl10 (input (3, 16, 16), 10 classes",
        "STAND-IN DATA in this run (standin:cifar10, standin:stl10)"], tmp_path, monkeypatch)
    # the Grad-CAM comparison ran on both stand-ins, labelled with the stand-in's name, for the paper's model
    gc = metrics[metrics.experiment == "gradcam"]
    for ds in ("standin:cifar10", "standin:stl10"):
        rows = gc[gc.dataset == ds]
        assert set(rows.method) == {"pretrained", "ce_only", "idexpo"} and set(rows.model) == {"resnet18_cifar"}
    # LIME and first-order Grad-CAM on the first dataset, KernelSHAP on the bundled tabular set
    assert set(metrics[metrics.experiment == "lime"].dataset) == {"standin:cifar10"}
    assert set(metrics[metrics.experiment == "gradcam_first_order"].dataset) == {"standin:cifar10"}
    assert set(metrics[metrics.experiment == "kernelshap"].dataset) == {"breast_cancer"}
    # every claim says it was computed on stand-in data (claim ids keep the paper's dataset names)
    assert {"gradcam_ins_del_resnet18_cifar", "gradcam_ins_del_resnet18_cifar_stl10", "lime_ins_del_cifar10",
            "eta_tradeoff", "soft_tracks_hard"} <= set(claims.claim_id)
    assert claims.statement.str.contains(r"[STAND-IN DATA: standin:cifar10, standin:stl10]", regex=False).all()
