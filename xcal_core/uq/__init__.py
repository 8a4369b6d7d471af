"""Uncertainty of explanations: distributions over model realisations, their summaries and evaluation.

See :mod:`xcal_core.models.stochastic` for the realisations (MC-Dropout, DropConnect, Flipout, ensembles).
"""

from .distributions import *  # noqa: F401,F403
from .evaluation import *  # noqa: F401,F403
from .summaries import *  # noqa: F401,F403
from .experiment import *  # noqa: F401,F403
from .claims import *  # noqa: F401,F403
