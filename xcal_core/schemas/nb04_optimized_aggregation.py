"""Parameters of notebooks/04_optimized_aggregation.ipynb (Decker et al., ICML 2024: AGG_robust / faith / opt)."""

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
        Param("DATASET", str, "digits", "dataset of the main experiments (standin:imagenet: a synthetic stand-in of ImageNet's size)",
              choices=["digits", "shapes", "cifar10", "imagenet", "standin:imagenet"]),
        Param("MODEL", str, "small_cnn", "classifier architecture (xcal_core.models; tv:<arch> uses torchvision's pretrained weights)",
              choices=["small_cnn", "resnet18_cifar", *PAPER_TV_MODELS]),
        Param("N_TRAIN", int, 3000, "training images (at most the split size)", low=64, high=100_000),
        Param("N_EPOCHS", int, 15, "training epochs", low=1, high=300),
        Param("LR", float, 2e-3, "Adam learning rate", low=1e-6, high=1.0),
        Param("N_IMAGES", int, 100, "test images explained and evaluated", low=2, high=10_000),
        Param("METHODS", list, GRADIENT_METHODS, "attribution methods aggregated in the main tables", item_type=str,
              choices=_choices.EXPLAINERS),
        Param("PERTURBATION_METHODS", list, ["occlusion", "feature_ablation", "kernel_shap"], "perturbation family for the diversity study", item_type=str,
              choices=_choices.EXPLAINERS),
        Param("PATCH", int, 2, "patch size (px) of the perturbation methods", low=1, high=64),
        Param("IG_STEPS", int, 16, "Integrated Gradients steps", low=1, high=512),
        Param("NOISE_SAMPLES", int, 10, "SmoothGrad / VarGrad / GradientSHAP samples", low=1, high=512),
        Param("SHAP_SAMPLES", int, 64, "KernelSHAP coalitions per image", low=8, high=4096),
        Param("M_AGG", int, 50, "metric samples used to fit the weights (paper: 50)", low=1, high=10_000),
        Param("M_EVAL", int, 200, "fresh metric samples for evaluation (paper: 200)", low=2, high=10_000),
        Param("M_GRID", list, [5, 10, 25, 50, 100], "m values of the generalization study", item_type=int, low=1, high=10_000),
        Param("RADIUS", float, 0.1, "half-width of the uniform input noise (paper: 0.1)", low=1e-6, high=10.0),
        Param("SHARE", float, 0.2, "masked area of Infidelity / FCOR (paper: 0.2)", low=0.01, high=1.0),
        Param("BLUR_SIGMA", float, 1.0, "Gaussian blur sigma (px) of the baseline image", low=0.1, high=64.0),
        Param("BASELINES", list, ["blur", "zero", "mean"], "replacement baselines of INFD and FCOR; the first one is fitted", item_type=str, choices=["blur", "zero", "mean"]),
        Param("AGG_VAR_EPS", float, 0.1, "epsilon of AGG_var", low=1e-6, high=10.0),
        Param("SOLVER", str, "exact", "simplex QP solver", choices=["exact", "cvxpy"]),
        Param("N_TIMING", int, 8, "images for the per-strategy cost measurement", low=1, high=1000),
        Param("LOC_DATASET", str, "shapes", "dataset with object masks for the localization section", choices=["shapes", "none"]),
        Param("LOC_N_TRAIN", int, 2000, "training images of the localization model", low=64, high=100_000),
        Param("LOC_N_EPOCHS", int, 8, "training epochs of the localization model", low=1, high=300),
        Param("LOC_N_IMAGES", int, 16, "images of the localization section", low=1, high=10_000),
        Param("LOC_M_AGG", int, 10, "metric samples for the localization weights", low=1, high=10_000),
        Param("BATCH_SIZE", int, 512, "perturbed inputs per explanation call / forward pass", low=1, high=65_536),
        Param("MORE_MODELS", list, [], "further models scored with the Table 1-2 protocol, each as dataset=model (e.g. imagenet=tv:resnet18)", item_type=str),
        Param("IMAGENET_N_TRAIN", int, 2000, "training images loaded from ImageNet (used only to train on a stand-in)", low=16, high=1_000_000),
        Param("IMAGE_SIZE", int, 0, "image side for imagenet and stand-ins (0: the dataset's own size)", low=0, high=1024),
        Param("STANDIN_IF_MISSING", bool, False, "use a synthetic stand-in of the real size when a real dataset is absent (said plainly)"),
        Param("STANDIN_EPOCHS", int, 2, "training epochs of a model on a stand-in when no weights are given", low=1, high=500),
    ],
    profiles={
        "smoke": {
            "N_TRAIN": 300, "N_EPOCHS": 2, "N_IMAGES": 4,
            "METHODS": ["saliency", "input_x_gradient", "integrated_gradients", "smoothgrad", "gradcam"],
            "PERTURBATION_METHODS": ["occlusion", "feature_ablation"],
            "IG_STEPS": 4, "NOISE_SAMPLES": 3, "SHAP_SAMPLES": 16, "M_AGG": 5, "M_EVAL": 10, "M_GRID": [2, 5, 10],
            "N_TIMING": 2, "LOC_N_TRAIN": 200, "LOC_N_EPOCHS": 1, "LOC_N_IMAGES": 2, "LOC_M_AGG": 2,
        },
        "workshop": {},
        "paper": {
            # ImageNet validation folder, pretrained torchvision models (VGG16 in the main sections, the others
            # in section 11 with the CIFAR-10 ResNet-18 trained here), 500 images as in the paper
            "DATASET": "imagenet", "MODEL": "tv:vgg16", "N_TRAIN": 50_000, "N_EPOCHS": 30, "N_IMAGES": 500,
            "MORE_MODELS": [f"imagenet={m}" for m in PAPER_TV_MODELS[1:]] + ["cifar10=resnet18_cifar"],
            "PATCH": 16, "IG_STEPS": 50, "NOISE_SAMPLES": 20, "SHAP_SAMPLES": 256, "BLUR_SIGMA": 8.0,
            "N_TIMING": 50, "LOC_N_TRAIN": 3000, "LOC_N_EPOCHS": 15, "LOC_N_IMAGES": 100, "LOC_M_AGG": 50,
            # back-propagated chunks of 256 inputs at 224 px (VGG16: ~25-30 GB of activations and their
            # gradients in fp32), within an 80 GB GPU with room for the perturbation stacks
            "BATCH_SIZE": 256,
        },
    },
)
