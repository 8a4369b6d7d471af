"""Shared test setup: headless matplotlib, few threads, isolated caches."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import matplotlib  # noqa: E402

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

# Unit tests use tiny models, for which one thread is ~10x faster than two on a shared 2-core box.
# Under pytest-xdist every notebook kernel a worker starts gets one thread too, so `-n 2` on a
# 2-core machine does not oversubscribe the CPU.
torch.set_num_threads(1)
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")
