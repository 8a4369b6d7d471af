"""xcal_core: the tested core of xcal (uncertainty calibration x explanations).

Layers import one way (see CONTRIBUTING.md): runtime, params <- data, models <- perturbations,
explainers <- metrics, calibration, uq <- aggregation, training <- viz, runs.
Importing the package has no side effects (no downloads, file reads or global patches).
"""

__version__ = "0.1.0"
