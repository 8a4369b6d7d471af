"""Post-hoc calibrators as fit / predict_proba estimators on logits."""

from .dirichlet import *  # noqa: F401,F403
from .recalx import *  # noqa: F401,F403
from .recalx_claims import *  # noqa: F401,F403
from .temperature import *  # noqa: F401,F403
from .shared_logits import *  # noqa: F401,F403
