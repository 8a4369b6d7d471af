"""Parameters of notebooks/03_uncertainty_of_explanations.ipynb (Mulye & Valdenegro-Toro, 2024).

The parameters cell shows what a workshop changes: data sizes, the UE methods and explainers, the
number of realisations and images, and the two free choices that change what a claim measures (LIME's
coalitions, the Flipout KL weight). Training recipes, explainer settings and the paper's GPU-scale
knobs are ``advanced``: set by the profiles or with ``-p``, not shown in the cell.
"""

from xcal_core.params import NotebookSchema, Param

_UE = ["mc_dropout", "dropconnect", "flipout", "ensemble"]
_EXPLAINERS = ["guided_backprop", "integrated_gradients", "lime", "gradient", "input_x_gradient"]

SCHEMA = NotebookSchema(
    notebook_id="03_uncertainty_of_explanations",
    paper="Uncertainty Quantification for Gradient-based Explanations in Neural Networks: Mulye & Valdenegro-Toro, 2024 (arXiv 2403.17224)",
    params=[
        Param("DATASET", str, "fashion_mnist", "image dataset of every analysis and claim",
              choices=["fashion_mnist", "digits", "shapes", "cifar10"]),
        Param("N_TRAIN", int, 20_000, "training images (Fashion-MNIST: of the official 60 000)", low=32, high=100_000),
        Param("N_CAL", int, 2000, "calibration images, carved from the training split", low=16, high=30_000),
        Param("N_TEST", int, 1000, "test images: each UE method's accuracy / NLL / ECE, and the pool for U4",
              low=16, high=100_000),
        Param("UE_METHODS", list, _UE, "uncertainty-estimation methods", item_type=str, choices=_UE),
        Param("N_REALISATIONS", int, 20, "T realisations per input (MC-Dropout, DropConnect, Flipout)", low=2, high=1000),
        Param("N_MEMBERS", int, 5, "deep-ensemble members M (the ensemble's T is M)", low=2, high=50),
        Param("FLIPOUT_KL_SCALE", float, 1.0, "Flipout KL weight in units of 1/N_train (1: the ELBO)", low=0.0, high=10.0),
        Param("EXPLAINERS", list, ["guided_backprop", "integrated_gradients", "lime"], "explanation methods",
              item_type=str, choices=_EXPLAINERS),
        Param("N_EXPLAIN", int, 80, "test images explained by the gradient explainers", low=4, high=100_000),
        Param("N_EXPLAIN_LIME", int, 16, "test images explained by LIME (the first of the N_EXPLAIN)", low=2, high=100_000),
        Param("LIME_COALITIONS", str, "fresh", "fresh: each realisation's LIME draws its own coalitions; shared: the same",
              choices=["fresh", "shared"]),
        Param("N_TRUE_LOGIT", int, 40, "images per UE method for U4 (some realisation predicts another class)",
              low=1, high=100_000),
        Param("REGRESSION_DATASET", str, "diabetes", "tabular regression set ('none' skips the regression part)",
              choices=["diabetes", "california_housing", "none"]),
        # ---- advanced: recipes, explainer settings, paper-scale knobs (profiles / -p only) ----
        Param("IMAGE_SIZE", int, 0, "image side for cifar10, shapes and stand-ins (0: the dataset's own size)",
              low=0, high=512, advanced=True),
        Param("STANDIN_IF_MISSING", bool, False,
              "use a synthetic stand-in of the real size when a real dataset is absent (said plainly)", advanced=True),
        Param("MODEL", str, "small_cnn", "image architecture of the family (small_cnn ~ miniVGG at width 32)",
              choices=["small_cnn"], advanced=True),
        Param("CNN_WIDTH", int, 8, "channels of the first conv block", low=4, high=256, advanced=True),
        Param("N_EPOCHS", int, 4, "training epochs of every image model", low=1, high=500, advanced=True),
        Param("BATCH_SIZE", int, 128, "training mini-batch size", low=1, high=4096, advanced=True),
        Param("LR", float, 3e-3, "Adam learning rate", low=1e-6, high=1.0, advanced=True),
        Param("LR_SCHEDULE", str, "cosine", "learning-rate schedule of every image model", choices=["constant", "cosine"],
              advanced=True),
        Param("DROPOUT_P", float, 0.3, "MC-Dropout probability", low=0.01, high=0.9, advanced=True),
        Param("DROPCONNECT_P", float, 0.1, "MC-DropConnect weight-drop probability", low=0.0, high=0.9, advanced=True),
        Param("FLIPOUT_SIGMA1", float, 1.5, "scale-mixture prior: wide component sigma", low=1e-4, advanced=True),
        Param("FLIPOUT_SIGMA2", float, 0.1, "scale-mixture prior: narrow component sigma", low=1e-4, advanced=True),
        Param("FLIPOUT_PI", float, 0.5, "scale-mixture prior: weight of the wide component", low=0.001, high=1.0,
              advanced=True),
        Param("FLIPOUT_RHO_INIT", float, -5.0, "initial rho of the posterior, sigma = softplus(rho)", low=-20.0, high=5.0,
              advanced=True),
        Param("IG_STEPS", int, 16, "Integrated Gradients steps (zero baseline)", low=2, high=1000, advanced=True),
        Param("LIME_SAMPLES", int, 100, "LIME coalitions per explanation", low=10, high=100_000, advanced=True),
        Param("LIME_CELLS", int, 4, "LIME grid: cells per image side (4 -> 16 superpixels)", low=1, high=64, advanced=True),
        Param("ABS_MAPS", bool, True, "summarise |E_t| (the paper's heatmaps) instead of signed attributions",
              advanced=True),
        Param("CV_REL_EPS", float, 1e-8, "CV guard: eps is CV_REL_EPS times max |E_mu| per input", low=0.0, high=1.0,
              advanced=True),
        Param("CV_ZERO_TOL", float, 1e-6, "mean and std below this share of the map's scale: CV undefined, left out",
              low=0.0, high=0.5, advanced=True),
        Param("N_PERTURB", int, 40, "images of the insertion / deletion test (the first of the N_EXPLAIN)",
              low=2, high=100_000, advanced=True),
        Param("PERTURB_STEP_FRACTION", float, 0.2, "fraction of the pixels changed per insertion/deletion step",
              low=0.0, high=1.0, advanced=True),
        Param("PERTURB_BASELINE", str, "zero", "replacement value in insertion/deletion", choices=["zero", "mean", "blur"],
              advanced=True),
        Param("REG_HIDDEN", list, [64, 64], "hidden layers of the regression MLP", item_type=int, low=1, high=4096,
              advanced=True),
        Param("REG_EPOCHS", int, 150, "training epochs of every regression model", low=1, high=5000, advanced=True),
        Param("REG_LR", float, 3e-3, "Adam learning rate of the regression models", low=1e-6, high=1.0, advanced=True),
    ],
    profiles={
        "smoke": {
            "N_TRAIN": 300, "N_CAL": 100, "N_TEST": 120, "N_EPOCHS": 1, "N_REALISATIONS": 3, "N_MEMBERS": 2,
            "IG_STEPS": 4, "LIME_SAMPLES": 20, "N_EXPLAIN": 12, "N_EXPLAIN_LIME": 4, "N_TRUE_LOGIT": 6,
            "N_PERTURB": 6, "PERTURB_STEP_FRACTION": 0.5, "REG_EPOCHS": 2,
        },
        "workshop": {},
        "paper": {
            "DATASET": "cifar10", "REGRESSION_DATASET": "california_housing", "N_TRAIN": 50_000, "N_CAL": 5000,
            "N_TEST": 10_000, "CNN_WIDTH": 32, "N_EPOCHS": 60, "LR": 1e-3, "DROPCONNECT_P": 0.3,
            "N_REALISATIONS": 50, "N_MEMBERS": 10, "IG_STEPS": 50, "LIME_SAMPLES": 1000, "N_EXPLAIN": 1000,
            "N_EXPLAIN_LIME": 200, "N_TRUE_LOGIT": 200, "N_PERTURB": 500, "PERTURB_STEP_FRACTION": 0.01,
            "REG_EPOCHS": 200,
        },
    },
)
