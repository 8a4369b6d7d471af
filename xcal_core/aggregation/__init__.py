"""Optimized aggregation of feature attributions (AGG_mean / var / robust / faith / opt; Decker et al., ICML 2024)."""

from .aggregate import *  # noqa: F401,F403
from .compare import *  # noqa: F401,F403
from .gram import *  # noqa: F401,F403
from .methods import *  # noqa: F401,F403
from .normalize import *  # noqa: F401,F403
from .qp import *  # noqa: F401,F403
