"""ID-ExpO: soft insertion/deletion, differentiable Grad-CAM and LIME/KernelSHAP, fine-tuning (see CONTRIBUTING.md)."""

from .analysis import *  # noqa: F401,F403
from .explainers import *  # noqa: F401,F403
from .finetune import *  # noqa: F401,F403
from .soft import *  # noqa: F401,F403
