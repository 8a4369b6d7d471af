"""Parameters of notebooks/06_reproduction_report.ipynb: the scoreboard of claims across runs."""

from xcal_core.params import NotebookSchema, Param

# the names of xcal_core.report.KEY_FIGURES (kept equal by tests/test_viz_report.py)
KEY_FIGURE_NAMES = ("01_ce_kl", "02_ece", "03_cv", "04_aggregation", "05_ins_del")

SCHEMA = NotebookSchema(
    notebook_id="06_reproduction_report",
    paper="all five papers (scoreboard)",
    params=[
        Param("RUN_PATHS", list, ["papermill_runs/workshop"],
              "run folders to read (relative to the repository or absolute); searched recursively", item_type=str),
        Param("KEY_FIGURES", list, list(KEY_FIGURE_NAMES),
              "key figures redrawn from metrics.csv (xcal_core.report.KEY_FIGURES: one row selection each)",
              item_type=str, choices=KEY_FIGURE_NAMES),
        Param("INCLUDE_FAILED", bool, False, "also list failed runs in the runtime table"),
    ],
    profiles={
        # CI reads the committed reference run so the smoke test never depends on earlier runs
        "smoke": {"RUN_PATHS": ["papermill_runs/reference"]},
        "workshop": {},
        "paper": {"RUN_PATHS": ["papermill_runs/paper"]},
    },
)
