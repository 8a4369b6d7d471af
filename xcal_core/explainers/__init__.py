"""One call signature for every explanation method: ``explain(model, x, target, method, ...)``."""

from ._registry import METHODS
from .core import *  # noqa: F401,F403
from .perturbation import *  # noqa: F401,F403
from .saliency import *  # noqa: F401,F403
