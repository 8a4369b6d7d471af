"""Parameters of notebooks/02_calibrate_to_interpret.ipynb (Scafarto et al., Calibrate to Interpret)."""

from xcal_core.params import NotebookSchema, Param

_METHODS = ["sensitivity", "integrated_gradients", "rise", "meaningful_perturbation"]

SCHEMA = NotebookSchema(
    notebook_id="02_calibrate_to_interpret",
    paper="Calibrate to Interpret: Scafarto, Posocco, Bonnefoy, ECML-PKDD workshops 2022",
    params=[
        Param("DATASETS", list, ["shapes", "digits"], "image datasets, one model each", item_type=str,
              choices=["shapes", "digits", "cifar10", "cifar100"]),
        Param("MODEL", str, "small_cnn", "classifier architecture (build_model name)",
              choices=["small_cnn", "resnet18_cifar"]),
        Param("N_TRAIN", int, 500, "training images (small, so the model ends up over-confident)", low=50, high=100_000),
        Param("N_EPOCHS", int, 40, "training epochs (long, no weight decay: over-confidence)", low=1, high=500),
        Param("LR", float, 2e-3, "Adam learning rate", low=1e-6, high=1.0),
        Param("N_CAL", int, 300, "calibration images (fit TS and Dirichlet)", low=20, high=50_000),
        Param("N_TEST", int, 500, "held-out images for ECE and accuracy", low=20, high=50_000),
        Param("N_EXPLAIN", int, 24, "held-out images explained and evaluated", low=2, high=10_000),
        Param("METHODS", list, _METHODS, "saliency methods", item_type=str, choices=_METHODS),
        Param("ECE_BINS", int, 15, "bins of the equal-width ECE and reliability diagrams", low=2, high=100),
        Param("DIRICHLET_REG", float, 0.01, "L2 weight of Dirichlet calibration", low=0.0),
        Param("DIRICHLET_ODIR", bool, False, "use ODIR instead of plain L2 for Dirichlet calibration"),
        Param("IG_STEPS", int, 30, "Integrated Gradients steps (black and white references)", low=2, high=1000),
        Param("RISE_MASKS", int, 500, "RISE masks per image (paper: 4000)", low=8, high=100_000),
        Param("RISE_GRID", int, 8, "RISE grid side (clipped to H // 2)", low=2, high=64),
        Param("RISE_P", float, 0.6, "RISE keep probability of a grid cell", low=0.05, high=1.0),
        Param("MP_STEPS", int, 150, "Meaningful Perturbation Adam steps (paper: 600)", low=1, high=5000),
        Param("MP_MASK_SIZE", int, 8, "Meaningful Perturbation mask side (paper: 28; clipped to H // 2)", low=2, high=224),
        Param("MP_L1", float, 0.1, "Meaningful Perturbation L1 weight", low=0.0),
        Param("MP_TV", float, 1.0, "Meaningful Perturbation TV weight (code 1, paper beta 0.4)", low=0.0),
        Param("MP_BLUR_SIGMA", float, 2.0, "Meaningful Perturbation blur sigma (pixels)", low=0.1, high=50.0),
        Param("DELETION_KERNEL", int, 11, "deletion blur kernel side (capped at 2 (H // 4) - 1 on small images)", low=1, high=31),
        Param("DELETION_SIGMA", float, 10.0, "deletion blur sigma (paper: 10)", low=0.1, high=100.0),
        Param("N_SEGMENTS", int, 100, "superpixels of the random baseline (SLIC; a grid of ~16 cells on 8x8 digits)", low=4, high=1000),
        Param("N_ORDERS", int, 5, "random superpixel orders averaged in the baseline", low=1, high=50),
        Param("TEMPERATURES", list, [0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 8.0], "fixed temperatures of the MP sweep",
              item_type=float, low=0.01, high=100.0),
        Param("N_TEMP_EXPLAIN", int, 12, "images in the MP temperature sweep", low=2, high=10_000),
        Param("N_LIPSCHITZ", int, 6, "images in the Lipschitz stability estimate (paper: 150)", low=1, high=10_000),
        Param("LIP_NEIGHBOURS", int, 6, "neighbours per image in the Lipschitz estimate (paper: 40)", low=1, high=1000),
        Param("LIP_RADIUS", float, 0.05, "l2 radius of the Lipschitz neighbourhood", low=1e-6, high=10.0),
        Param("SCORE_ABLATION", bool, True, "also explain the uncalibrated model with logits (the C2I code's variant)"),
    ],
    profiles={
        "smoke": {
            "DATASETS": ["digits"], "N_TRAIN": 200, "N_EPOCHS": 2, "N_CAL": 100, "N_TEST": 150, "N_EXPLAIN": 6,
            "IG_STEPS": 6, "RISE_MASKS": 48, "MP_STEPS": 10, "N_ORDERS": 2, "TEMPERATURES": [0.5, 1.0, 2.0],
            "N_TEMP_EXPLAIN": 4, "N_LIPSCHITZ": 2, "LIP_NEIGHBOURS": 2,
        },
        "workshop": {},
        "paper": {
            "DATASETS": ["cifar100"], "MODEL": "resnet18_cifar", "N_TRAIN": 45_000, "N_EPOCHS": 60, "N_CAL": 3000,
            "N_TEST": 2500, "N_EXPLAIN": 2500, "RISE_MASKS": 4000, "MP_STEPS": 600, "MP_MASK_SIZE": 28,
            "N_TEMP_EXPLAIN": 500, "N_LIPSCHITZ": 150, "LIP_NEIGHBOURS": 40,
        },
    },
)
