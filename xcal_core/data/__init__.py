"""Datasets: ``load_dataset(name, ...) -> Dataset(info, train, cal, test)``.

Real and offline: ``fashion_mnist`` (official idx files; Debian's ``dataset-fashion-mnist`` package, see
:mod:`xcal_core.data.fashion_mnist`). Bundled / synthetic (offline): ``digits``, ``breast_cancer``, ``wine``, ``iris``, ``diabetes``,
``shapes``, ``synthetic_tabular``. Real (official on-disk formats under ``data_dir``; download only
with ``allow_download=True``): ``cifar10``, ``cifar100``, ``stl10``, ``imagenet``,
``california_housing``, ``openml:<id or name>``, ``food101``, ``cub200``. Synthetic stand-ins of the
paper datasets with their real sizes: ``standin:<name>`` (see :mod:`xcal_core.data.standin`).

Importing this package only registers loaders: no file reads, downloads or heavy imports
(scikit-learn, torchvision and PIL are imported inside the loaders).
"""

from ._base import *  # noqa: F401,F403
from ._base import __all__ as _base_all
from . import bundled as _bundled  # noqa: F401  (registers the bundled loaders)
from . import shapes as _shapes  # noqa: F401
from . import synthetic as _synthetic  # noqa: F401
from . import real as _real  # noqa: F401
from . import fashion_mnist as _fashion_mnist  # noqa: F401
from . import standin as _standin  # noqa: F401
from .shapes import *  # noqa: F401,F403
from .shapes import __all__ as _shapes_all
from .standin import STANDINS, data_source_note, is_standin, load_or_standin  # noqa: F401

__all__ = [*_base_all, *_shapes_all, "STANDINS", "data_source_note", "is_standin", "load_or_standin"]
