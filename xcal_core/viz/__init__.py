"""Figures. Every function takes an optional ``ax`` and returns ``(fig, ax)``; nothing is shown or saved here."""

from .attributions import *  # noqa: F401,F403
from .calibration import *  # noqa: F401,F403
from .uq import *  # noqa: F401,F403
from .report import *  # noqa: F401,F403
from .training import *  # noqa: F401,F403
from .c2i import *  # noqa: F401,F403
from .aggregation import *  # noqa: F401,F403
