"""Parameters of notebooks/02_calibrate_to_interpret.ipynb (Scafarto et al., Calibrate to Interpret).

The parameters cell holds what a workshop changes (data sizes, the model recipe, how many images each
experiment uses, the explainers' sampling budgets); the paper-scale and expert knobs are ``advanced``:
they keep the paper's values as defaults, the ``paper`` profile sets them, and ``-p`` can override them.
"""

from xcal_core.params import NotebookSchema, Param
from xcal_core.schemas import _choices

_METHODS = ["sensitivity", "integrated_gradients", "rise", "meaningful_perturbation"]
RECIPE_NAMES = ("small_cnn", "resnet20", "small_cnn_overconfident")
"""Training recipes a MODELS entry may name (``xcal_core.models.RECIPES``; a recipe name wins over the
architecture of the same name). Checked against the registry in tests/test_metrics_c2i.py."""

SCHEMA = NotebookSchema(
    notebook_id="02_calibrate_to_interpret",
    paper="Calibrate to Interpret: Scafarto, Posocco, Bonnefoy, ECML-PKDD workshops 2022",
    params=[
        Param("DATASETS", list, ["fashion_mnist"], "image datasets, one model each (standin:<name> are synthetic stand-ins)",
              item_type=str, choices=["fashion_mnist", "shapes", "digits", "cifar10", "cifar100", "food101", "cub200",
                                      "standin:cifar100", "standin:food101", "standin:cub200"]),
        Param("MODELS", list, ["small_cnn_overconfident"],
              "per DATASETS entry: a training recipe or an architecture (tv:<arch> for torchvision)",
              item_type=str, choices=tuple(dict.fromkeys(RECIPE_NAMES + _choices.MODELS))),
        Param("N_TRAIN", int, 20_000, "training images (Fashion-MNIST: of the official 60 000)", low=50, high=100_000),
        Param("N_CAL", int, 2000, "calibration images (fit TS and Dirichlet; carved from the training split)",
              low=20, high=50_000),
        Param("N_TEST", int, 2000, "held-out images for accuracy and ECE", low=20, high=50_000),
        Param("N_FLOOR_DRAWS", int, 30, "label redraws for the ECE floor of a perfectly calibrated model", low=2, high=1000),
        Param("N_EXPLAIN", int, 100, "held-out images explained and evaluated (paired tests need 100)", low=2, high=10_000),
        Param("METHODS", list, _METHODS, "saliency methods", item_type=str, choices=_METHODS),
        Param("RISE_MASKS", int, 500, "RISE masks per image (paper 4000)", low=8, high=100_000),
        Param("MP_STEPS", int, 150, "Meaningful Perturbation Adam steps (paper 600)", low=1, high=5000),
        Param("TEMPERATURES", list, [0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 8.0], "fixed temperatures of the MP sweep",
              item_type=float, low=0.01, high=100.0),
        Param("N_TEMP_EXPLAIN", int, 30, "images in the MP temperature sweep", low=2, high=10_000),
        Param("N_LIPSCHITZ", int, 30, "images in the Lipschitz stability estimate (paper 150)", low=1, high=10_000),
        Param("LIP_NEIGHBOURS", int, 4, "neighbours per image in the Lipschitz estimate (paper 40)", low=1, high=1000),
        # ---- advanced: paper-scale and expert knobs (not in the parameters cell)
        Param("CHECKPOINTS", list, [], "local weights files: model or dataset/model and a file joined by an equals sign "
              "(relative to DATA_DIR)", item_type=str, advanced=True),
        Param("STANDIN_IF_MISSING", bool, False, "use a synthetic stand-in of the real size when a real dataset is absent",
              advanced=True),
        Param("STANDIN_EPOCHS", int, 2, "training epochs on a stand-in when no weights are given", low=1, high=500,
              advanced=True),
        Param("IMAGE_SIZE", int, 0, "image side for food101, cub200 and stand-ins (0: the dataset's own size)", low=0,
              high=1024, advanced=True),
        Param("N_EPOCHS", int, 0, "training epochs (0: a recipe's own; 40 for an architecture that is not a recipe)",
              low=0, high=500, advanced=True),
        Param("LR", float, 2e-3, "Adam learning rate of an architecture that is not a recipe", low=1e-6, high=1.0,
              advanced=True),
        Param("BATCH_SIZE", int, 256, "inputs per forward pass of the explainers and metrics", low=1, high=1_000_000,
              advanced=True),
        Param("GRAD_BATCH_SIZE", int, 256, "inputs per back-propagated chunk (sensitivity, IG, MP masks)", low=1,
              high=1_000_000, advanced=True),
        Param("AMP", bool, False, "mixed precision of the RISE and MP forward passes on CUDA (ignored on the CPU)",
              advanced=True),
        Param("ECE_BINS", int, 15, "bins of the equal-width ECE and reliability diagrams", low=2, high=100, advanced=True),
        Param("DIRICHLET_REG", float, 0.01, "L2 weight of Dirichlet calibration", low=0.0, advanced=True),
        Param("DIRICHLET_ODIR", bool, False, "use ODIR instead of plain L2 for Dirichlet calibration", advanced=True),
        Param("IG_STEPS", int, 30, "Integrated Gradients steps (black and white references)", low=2, high=1000,
              advanced=True),
        Param("RISE_GRID", int, 8, "RISE grid side (clipped to H // 4)", low=2, high=64, advanced=True),
        Param("RISE_P", float, 0.6, "RISE keep probability of a grid cell", low=0.05, high=1.0, advanced=True),
        Param("MP_MASK_SIZE", int, 28, "Meaningful Perturbation mask side (clipped to H // 2)", low=2, high=224,
              advanced=True),
        Param("MP_L1", float, 0.1, "Meaningful Perturbation L1 weight", low=0.0, advanced=True),
        Param("MP_TV", float, 1.0, "Meaningful Perturbation TV weight (code 1, paper beta 0.4)", low=0.0, advanced=True),
        Param("MP_BLUR_SIGMA", float, 2.0, "Meaningful Perturbation blur sigma (pixels)", low=0.1, high=50.0,
              advanced=True),
        Param("DELETION_KERNEL", int, 11, "deletion blur kernel side (capped at 2 (H // 4) - 1 on small images)", low=1,
              high=31, advanced=True),
        Param("DELETION_STEPS", int, 25, "points of each deletion and insertion curve (paper 100)", low=2,
              high=100_000, advanced=True),
        Param("DELETION_SIGMA", float, 10.0, "deletion blur sigma (paper 10)", low=0.1, high=100.0, advanced=True),
        Param("N_SEGMENTS", int, 50, "superpixels of the random baseline (SLIC; paper 100 at 32 px and more)", low=4,
              high=1000, advanced=True),
        Param("N_ORDERS", int, 5, "random superpixel orders averaged in the baseline", low=1, high=50, advanced=True),
        Param("LIP_METHODS", list, ["sensitivity", "meaningful_perturbation"],
              "methods in the Lipschitz estimate (each neighbour costs a full explanation)", item_type=str,
              choices=_METHODS, advanced=True),
        Param("LIP_RADIUS", float, 0.05, "l2 radius of the Lipschitz neighbourhood", low=1e-6, high=10.0, advanced=True),
        Param("SCORE_ABLATION", bool, True, "also explain the uncalibrated model with logits (the C2I code's variant)",
              advanced=True),
    ],
    profiles={
        "smoke": {
            "N_TRAIN": 1024, "N_CAL": 256, "N_TEST": 256, "N_FLOOR_DRAWS": 5, "N_EXPLAIN": 12, "N_EPOCHS": 2,
            "IG_STEPS": 6, "RISE_MASKS": 48, "MP_STEPS": 10, "N_ORDERS": 2,
            "TEMPERATURES": [0.5, 1.0, 2.0], "N_TEMP_EXPLAIN": 6, "N_LIPSCHITZ": 3, "LIP_NEIGHBOURS": 2,
            "DELETION_STEPS": 20,
        },
        "workshop": {},
        "paper": {
            "DATASETS": ["cifar100", "cifar100", "food101", "cub200"],
            "MODELS": ["vgg_cifar", "resnet_cifar", "tv:resnet50", "tv:efficientnet_b0"], "BATCH_SIZE": 1024,
            "GRAD_BATCH_SIZE": 256, "AMP": True,
            "N_TRAIN": 10_000, "N_EPOCHS": 60, "N_CAL": 3000, "N_FLOOR_DRAWS": 100,
            "N_TEST": 2500, "N_EXPLAIN": 2500, "RISE_MASKS": 4000, "MP_STEPS": 600, "DELETION_STEPS": 100,
            "N_SEGMENTS": 100, "N_TEMP_EXPLAIN": 500, "N_LIPSCHITZ": 150, "LIP_NEIGHBOURS": 40,
            "LIP_METHODS": _METHODS,
        },
    },
)
