"""Models: factories, training with a checkpoint cache, logits extraction, stochastic layers.

* :mod:`.factory`: ``build_model(name, input_shape, n_classes, **kw)`` for ``mlp``, ``tabular_resnet``,
  ``small_cnn``, ``resnet18_cifar`` and torchvision architectures (``"tv:<arch>"``); ``get_layer``,
  ``Normalize``, ``reused_modules``.
* :mod:`.training`: ``train_classifier`` / ``train_regressor`` (seeded, cached by config + data
  hash), ``predict_logits``, ``predict_proba``.
* :mod:`.cache`: verified atomic checkpoint files and content fingerprints.
* :mod:`.stochastic`: MC-Dropout, DropConnect, Flipout layers and frozen model realisations.
* :mod:`.recipes`: named training recipes shared by the notebooks (``train_recipe``), so one cached
  model serves every notebook that uses it.
"""

from .factory import *  # noqa: F401,F403
from .cache import *  # noqa: F401,F403
from .training import *  # noqa: F401,F403
from .stochastic import *  # noqa: F401,F403
from .recipes import *  # noqa: F401,F403
