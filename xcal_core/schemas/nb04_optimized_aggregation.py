"""Parameters of notebooks/04_optimized_aggregation.ipynb (Decker et al., ICML 2024: AGG_robust / faith / opt).

The parameters cell shows what a workshop changes: the Fashion-MNIST models (the ``small_cnn`` recipe in
the main sections, the ``resnet20`` recipe repeating Tables 1-2), the images, the method families, the
metric samples of fitting and evaluation, the noise radius, the mask share and the baselines. The
explainer settings, the solver, the image counts of the side studies and the paper's scale (ImageNet
models, stand-ins, GPU batch sizes) are ``advanced``: set by the profiles or with ``-p``.
"""

from xcal_core.params import NotebookSchema, Param
from xcal_core.schemas import _choices

GRADIENT_METHODS = [
    "saliency", "input_x_gradient", "guided_backprop", "deeplift", "integrated_gradients",
    "smoothgrad", "vargrad", "gradient_shap", "gradcam",
]

# the ImageNet models of the paper's Tables 1-3 (VGG16 first: the main sections use it in the paper profile)
PAPER_TV_MODELS = ["tv:vgg16", "tv:resnet18", "tv:mobilenet_v2", "tv:densenet121", "tv:vit_b_16"]

SCHEMA = NotebookSchema(
    notebook_id="04_optimized_aggregation",
    paper="aggopt: Decker, Bhattarai, Gu, Tresp, Buettner, ICML 2024",
    params=[
        Param("DATASET", str, "fashion_mnist", "dataset of the main sections (standin:imagenet: a synthetic stand-in of ImageNet's size)",
              choices=["fashion_mnist", "digits", "shapes", "cifar10", "imagenet", "standin:imagenet"]),
        Param("MODEL", str, "small_cnn", "model of the main sections: a training recipe (xcal_core.models.RECIPES) or a model name "
              "(tv:<arch>: torchvision's pretrained weights)", choices=_choices.MODELS + ("small_cnn_overconfident",)),
        Param("MORE_MODELS", list, ["fashion_mnist/resnet20"], "further models scored with the Table 1-2 protocol, each as dataset/model",
              item_type=str, choices=["?*/?*"]),
        Param("N_TRAIN", int, 20_000, "training images (Fashion-MNIST: of the official 60 000)", low=64, high=1_000_000),
        Param("N_IMAGES", int, 40, "test images explained and evaluated (paper: 500)", low=2, high=10_000),
        Param("METHODS", list, GRADIENT_METHODS, "attribution methods aggregated in the main sections", item_type=str,
              choices=_choices.EXPLAINERS),
        Param("PERTURBATION_METHODS", list, ["feature_ablation", "kernel_shap", "lime"],
              "perturbation family of the diversity study (Tables 10-11)", item_type=str, choices=_choices.EXPLAINERS),
        Param("PATCH", int, 7, "patch side (px) of the perturbation methods (7: 16 patches on 28 px)", low=1, high=64),
        Param("M_AGG", int, 50, "metric samples (noise draws, masks) that fit the weights (paper: 50)", low=1, high=10_000),
        Param("M_EVAL", int, 50, "fresh metric samples of the held-out evaluation (paper: 200)", low=2, high=10_000),
        Param("M_GRID", list, [5, 10, 25, 50], "m values of the generalization study (at most M_AGG)", item_type=int, low=1, high=10_000),
        Param("RADIUS", float, 0.1, "half-width of the uniform input noise of S_AVG (paper: 0.1)", low=1e-6, high=10.0),
        Param("SHARE", float, 0.2, "masked share of the pixels in INFD / FCOR (paper: 0.2)", low=0.01, high=1.0),
        Param("BASELINES", list, ["blur", "zero", "mean"], "replacement baselines of INFD and FCOR; the first one fits the weights",
              item_type=str, choices=["blur", "zero", "mean"]),
        # ---- advanced: explainer settings, side-study sizes, solver, paper scale ----
        Param("N_CAL", int, 2000, "calibration images (part of the shared model's training split: keep 2000)", low=10,
              high=1_000_000, advanced=True),
        Param("N_EPOCHS", int, 0, "training epochs (0: the recipe's own; for a non-recipe model 0 means 15)", low=0, high=300,
              advanced=True),
        Param("LR", float, 2e-3, "Adam learning rate of a non-recipe model", low=1e-6, high=1.0, advanced=True),
        Param("IG_STEPS", int, 8, "Integrated Gradients steps (paper: 50)", low=1, high=512, advanced=True),
        Param("NOISE_SAMPLES", int, 5, "SmoothGrad / VarGrad / GradientSHAP samples (paper: 20)", low=1, high=512, advanced=True),
        Param("SHAP_SAMPLES", int, 24, "KernelSHAP / LIME coalitions per image", low=8, high=4096, advanced=True),
        Param("BLUR_SIGMA", float, 2.0, "Gaussian blur sigma (px) of the blur baseline", low=0.1, high=64.0, advanced=True),
        Param("AGG_VAR_EPS", float, 0.1, "epsilon of AGG_var", low=1e-6, high=10.0, advanced=True),
        Param("SOLVER", str, "exact", "simplex QP solver", choices=["exact", "cvxpy"], advanced=True),
        Param("FAMILY_N_IMAGES", int, 16, "images of the family study (the first of the N_IMAGES)", low=2, high=10_000, advanced=True),
        Param("MORE_N_IMAGES", int, 20, "images per further model (0: N_IMAGES)", low=0, high=10_000, advanced=True),
        Param("MORE_METHODS", list, ["saliency", "input_x_gradient", "guided_backprop", "deeplift", "gradcam"],
              "methods aggregated for the further models (empty: METHODS; the default: the single-pass methods)", item_type=str, choices=_choices.EXPLAINERS, advanced=True),
        Param("LOC_DATASET", str, "shapes", "dataset with exact object masks for the localization check", choices=["shapes", "none"],
              advanced=True),
        Param("LOC_N_TRAIN", int, 2000, "training images of the localization model", low=64, high=100_000, advanced=True),
        Param("LOC_N_EPOCHS", int, 8, "training epochs of the localization model", low=1, high=300, advanced=True),
        Param("LOC_N_IMAGES", int, 16, "images of the localization check", low=1, high=10_000, advanced=True),
        Param("LOC_M_AGG", int, 10, "noise draws for the localization model's robust weights", low=1, high=10_000, advanced=True),
        Param("BATCH_SIZE", int, 512, "perturbed inputs per explanation call / forward pass", low=1, high=65_536, advanced=True),
        Param("IMAGENET_N_TRAIN", int, 2000, "training images loaded from ImageNet (used only to train on a stand-in)", low=16,
              high=1_000_000, advanced=True),
        Param("IMAGE_SIZE", int, 0, "image side for imagenet and stand-ins (0: the dataset's own size)", low=0, high=1024, advanced=True),
        Param("STANDIN_IF_MISSING", bool, False, "use a synthetic stand-in of the real size when a real dataset is absent (said plainly)",
              advanced=True),
        Param("STANDIN_EPOCHS", int, 2, "training epochs of a model on a stand-in when no weights are given", low=1, high=500,
              advanced=True),
    ],
    profiles={
        "smoke": {
            "N_TRAIN": 400, "N_CAL": 100, "N_EPOCHS": 1, "N_IMAGES": 12,
            "METHODS": ["saliency", "input_x_gradient", "integrated_gradients", "smoothgrad", "gradcam"],
            "PERTURBATION_METHODS": ["feature_ablation", "kernel_shap"],
            "IG_STEPS": 4, "NOISE_SAMPLES": 2, "SHAP_SAMPLES": 16, "M_AGG": 5, "M_EVAL": 6, "M_GRID": [2, 5],
            "FAMILY_N_IMAGES": 12, "MORE_N_IMAGES": 12, "MORE_METHODS": ["saliency", "input_x_gradient", "gradcam"],
            "LOC_N_TRAIN": 200, "LOC_N_EPOCHS": 1, "LOC_N_IMAGES": 4, "LOC_M_AGG": 2,
        },
        "workshop": {},
        "paper": {
            # ImageNet validation folder, pretrained torchvision models (VGG16 in the main sections, the others
            # in the last section with the CIFAR-10 ResNet-18 trained here), 500 images as in the paper
            "DATASET": "imagenet", "MODEL": "tv:vgg16", "N_TRAIN": 50_000, "N_EPOCHS": 30, "N_IMAGES": 500,
            "MORE_MODELS": [f"imagenet/{m}" for m in PAPER_TV_MODELS[1:]] + ["cifar10/resnet18_cifar"],
            "PERTURBATION_METHODS": ["feature_ablation", "shapley_sampling", "lime"],
            "PATCH": 16, "IG_STEPS": 50, "NOISE_SAMPLES": 20, "SHAP_SAMPLES": 256, "BLUR_SIGMA": 8.0,
            "M_EVAL": 200, "M_GRID": [5, 10, 25, 50], "FAMILY_N_IMAGES": 100, "MORE_N_IMAGES": 0, "MORE_METHODS": [],
            "LOC_N_TRAIN": 3000, "LOC_N_EPOCHS": 15, "LOC_N_IMAGES": 100, "LOC_M_AGG": 50,
            # back-propagated chunks of 256 inputs at 224 px (VGG16: ~25-30 GB of activations and their
            # gradients in fp32), within an 80 GB GPU with room for the perturbation stacks
            "BATCH_SIZE": 256,
        },
    },
)
