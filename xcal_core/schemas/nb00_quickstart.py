"""Parameters of notebooks/00_quickstart.ipynb: a tour of the notebook contract on real images."""

from xcal_core.params import NotebookSchema, Param

SCHEMA = NotebookSchema(
    notebook_id="00_quickstart",
    paper="Guo et al., On Calibration of Modern Neural Networks, ICML 2017",
    params=[
        Param("N_TRAIN", int, 20_000, "Fashion-MNIST training images (of the official 60 000)", low=64, high=60_000),
        Param("N_CAL", int, 2000, "calibration images, carved from the official training split", low=32, high=30_000),
        Param("N_TEST", int, 2000, "test images (of the official 10 000)", low=32, high=10_000),
        Param("MODEL", str, "small_cnn", "training recipe of the classifier (xcal_core.models.RECIPES)",
              choices=("small_cnn", "resnet20", "small_cnn_overconfident")),
        Param("N_EPOCHS", int, 8, "training epochs (8 = the recipe's; another value trains a new model)",
              low=0, high=200),
        Param("N_BINS", int, 15, "bins of the reliability diagram and the ECE", low=2, high=100),
        Param("N_FLOOR_DRAWS", int, 30, "label redraws for the ECE's floor under perfect calibration", low=2, high=1000),
        Param("METHODS", list, ["saliency", "integrated_gradients", "gradcam"],
              "explanation methods compared against the garment silhouettes", item_type=str,
              choices=("saliency", "integrated_gradients", "gradcam", "input_x_gradient", "guided_backprop",
                       "smoothgrad", "deeplift", "gradient_shap")),
        Param("N_EXPLAIN", int, 200, "test images whose explanations are scored against the silhouettes", low=4, high=10_000),
        Param("N_SHOW", int, 4, "images shown in the saliency grid", low=1, high=8),
    ],
    profiles={
        "smoke": {"N_TRAIN": 256, "N_CAL": 256, "N_TEST": 256, "N_EPOCHS": 2, "N_FLOOR_DRAWS": 5, "N_EXPLAIN": 16, "N_SHOW": 2},
        "workshop": {},
        "paper": {"N_TRAIN": 54_000, "N_CAL": 6000, "N_TEST": 10_000, "N_FLOOR_DRAWS": 100, "N_EXPLAIN": 2000},
    },
)
