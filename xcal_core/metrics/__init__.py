"""Calibration metrics and explanation metrics; each declares ``higher_is_better`` (see ``_meta``)."""

from ._meta import METRICS, higher_is_better, metric
from .calibration import *  # noqa: F401,F403
from .calibration_kde import *  # noqa: F401,F403
from .faithfulness import *  # noqa: F401,F403
from .insertion_deletion import *  # noqa: F401,F403
from .robustness import *  # noqa: F401,F403
from .saliency import *  # noqa: F401,F403
from .localization import *  # noqa: F401,F403
from .summary import *  # noqa: F401,F403
from .tests import *  # noqa: F401,F403
from .c2i import *  # noqa: F401,F403
