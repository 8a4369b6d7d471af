"""Coalition masks over features, perturbation levels and replacement baselines."""

from .baselines import *  # noqa: F401,F403
from .masks import *  # noqa: F401,F403
