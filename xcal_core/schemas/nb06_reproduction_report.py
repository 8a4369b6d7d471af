"""Parameters of notebooks/06_reproduction_report.ipynb: the scoreboard of claims across runs."""

from xcal_core.params import NotebookSchema, Param

SCHEMA = NotebookSchema(
    notebook_id="06_reproduction_report",
    paper="all five papers (scoreboard)",
    params=[
        Param("RUN_PATHS", list, ["papermill_runs/workshop"],
              "run folders to read (relative to the repository or absolute); searched recursively", item_type=str),
        Param("KEY_FIGURES", list,
              ["00:ece", "01:ce_kl", "02:ece", "03:cv_mean", "04:sens_avg", "05:ins"],
              "'<notebook number>:<metric>' pairs redrawn from metrics.csv", item_type=str),
        Param("INCLUDE_FAILED", bool, False, "also list failed runs in the runtime table"),
    ],
    profiles={
        # CI reads the committed reference run so the smoke test never depends on earlier runs
        "smoke": {"RUN_PATHS": ["papermill_runs/reference"]},
        "workshop": {},
        "paper": {"RUN_PATHS": ["papermill_runs/paper"]},
    },
)
