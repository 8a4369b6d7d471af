"""Parameters of notebooks/00_quickstart.ipynb: a one-minute tour of the notebook contract."""

from xcal_core.params import NotebookSchema, Param

SCHEMA = NotebookSchema(
    notebook_id="00_quickstart",
    paper="Guo et al., On Calibration of Modern Neural Networks, ICML 2017",
    params=[
        Param("N_TRAIN", int, 2000, "training images of the shapes dataset", low=64, high=100_000),
        Param("N_TEST", int, 1000, "test images (the calibration split has the same size)", low=32, high=100_000),
        Param("DIFFICULTY", float, 0.3, "shapes difficulty: clutter, noise and scale range", low=0.0, high=1.0),
        Param("N_EPOCHS", int, 8, "training epochs of the small CNN", low=1, high=200),
        Param("BATCH_SIZE", int, 64, "training mini-batch size", low=1, high=4096),
        Param("LR", float, 2e-3, "Adam learning rate", low=1e-6, high=1.0),
        Param("N_BINS", int, 15, "bins of the reliability diagram and the ECE", low=2, high=100),
        Param("METHODS", list, ["saliency", "integrated_gradients", "gradcam"],
              "explanation methods compared against the object masks", item_type=str),
        Param("N_EXPLAIN", int, 200, "test images whose explanations are scored against the masks", low=4, high=10_000),
        Param("N_SHOW", int, 4, "images shown in the saliency grid", low=1, high=16),
    ],
    profiles={
        "smoke": {"N_TRAIN": 256, "N_TEST": 128, "N_EPOCHS": 2, "N_EXPLAIN": 16, "N_SHOW": 2},
        "workshop": {},
        "paper": {"N_TRAIN": 20_000, "N_TEST": 5000, "N_EPOCHS": 20, "N_EXPLAIN": 2000, "N_SHOW": 8},
    },
)
