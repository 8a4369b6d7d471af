"""Figures. Every function takes an optional ``ax`` and returns ``(fig, ax)``; nothing is shown or saved here.

All figures share one style (:mod:`xcal_core.viz.style`): at most 12 x 6 inches, a colorbar for every map
scale, mask outlines visible on any image, readable log ticks, distinguishable lines. Notebooks use the
same helpers for the figures they compose (``slide_subplots``, ``outline_mask``, ``add_colorbar``, ...).
"""

from .style import *  # noqa: F401,F403
from .attributions import *  # noqa: F401,F403
from .calibration import *  # noqa: F401,F403
from .recalx import *  # noqa: F401,F403
from .uq import *  # noqa: F401,F403
from .report import *  # noqa: F401,F403
from .training import *  # noqa: F401,F403
from .c2i import *  # noqa: F401,F403
from .c2i_primer import *  # noqa: F401,F403
from .aggregation import *  # noqa: F401,F403
