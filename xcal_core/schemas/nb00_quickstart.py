"""Parameters of notebooks/00_quickstart.ipynb: a one-minute tour of the notebook contract."""

from xcal_core.params import NotebookSchema, Param

SCHEMA = NotebookSchema(
    notebook_id="00_quickstart",
    paper="xcal quickstart (temperature scaling: Guo et al., ICML 2017)",
    params=[
        Param("DATASET", str, "shapes", "bundled image dataset", choices=["shapes", "digits"]),
        Param("N_TRAIN", int, 2000, "training images", low=64, high=100_000),
        Param("N_EPOCHS", int, 6, "training epochs of the small CNN", low=1, high=200),
        Param("LR", float, 2e-3, "Adam learning rate", low=1e-6, high=1.0),
        Param("N_BINS", int, 15, "bins of the reliability diagram / ECE", low=2, high=100),
        Param("METHODS", list, ["saliency", "integrated_gradients", "gradcam"], "explanation methods in the saliency grid", item_type=str),
        Param("N_SHOW", int, 4, "test images in the saliency grid", low=1, high=16),
    ],
    profiles={
        "smoke": {"N_TRAIN": 256, "N_EPOCHS": 1, "N_SHOW": 2},
        "workshop": {},
        "paper": {"N_TRAIN": 20_000, "N_EPOCHS": 20, "N_SHOW": 8},
    },
)
