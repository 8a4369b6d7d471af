"""``synthetic_tabular``: classification data with known informative, redundant and noise features."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._validation import check_int, check_positive, check_fraction
from ._base import Dataset, _rng, build_tabular, register_dataset

__all__: list[str] = []


@register_dataset("synthetic_tabular")
def load_synthetic_tabular(
    *,
    data_dir: Any = None,
    allow_download: bool = False,
    seed: int = 0,
    n_samples: int = 3000,
    n_features: int = 20,
    n_informative: int = 5,
    n_redundant: int = 5,
    n_classes: int = 2,
    class_sep: float = 1.0,
    flip_y: float = 0.02,
    shuffle_features: bool = True,
    cal_fraction: float = 0.2,
    test_fraction: float = 0.2,
    n_train: int | None = None,
    n_cal: int | None = None,
    n_test: int | None = None,
) -> Dataset:
    """Gaussian-cluster classification (``sklearn.datasets.make_classification``) with a known ground truth.

    The label depends only on the ``n_informative`` features; ``n_redundant`` features are random
    linear combinations of them (informative in isolation, but carry no extra information); the
    remaining ``n_features - n_informative - n_redundant`` are independent noise. The columns are
    generated in that order (``shuffle=False``) and then, with ``shuffle_features=True``, permuted by
    the seed; ``info.extra`` records where each group ended up:
    ``informative_features``, ``redundant_features``, ``noise_features`` (sorted int index lists) and
    ``feature_roles`` (one of ``"informative"|"redundant"|"noise"`` per column).

    Args:
        n_samples: total samples before splitting (>= 10).
        n_features: number of columns D.
        n_informative: informative features (>= 1); ``n_classes * 2 <= 2 ** n_informative``.
        n_redundant: linear combinations of the informative features (>= 0).
        n_classes: number of classes K >= 2.
        class_sep: cluster separation (> 0); larger is easier.
        flip_y: fraction of labels flipped at random, in [0, 1) (label noise -> irreducible error).
        shuffle_features: permute the columns (seeded) so informative ones are not simply the first.
        cal_fraction, test_fraction, n_train, n_cal, n_test: split fractions and optional caps.
    """
    from sklearn.datasets import make_classification

    n_samples = check_int(n_samples, "n_samples", low=10)
    n_features = check_int(n_features, "n_features", low=1)
    n_informative = check_int(n_informative, "n_informative", low=1)
    n_redundant = check_int(n_redundant, "n_redundant", low=0)
    n_classes = check_int(n_classes, "n_classes", low=2)
    check_positive(class_sep, "class_sep")
    check_fraction(flip_y, "flip_y", open_high=True)
    if n_informative + n_redundant > n_features:
        raise ValueError(
            f"`n_informative` + `n_redundant` ({n_informative} + {n_redundant}) must be <= `n_features` ({n_features})"
        )
    if n_classes * 2 > 2**n_informative:
        raise ValueError(
            f"`n_classes` * 2 ({n_classes * 2}) must be <= 2 ** `n_informative` ({2 ** n_informative}); "
            "increase n_informative or lower n_classes"
        )
    rs = int(_rng(seed, "synthetic_tabular").integers(0, 2**31 - 1))
    x, y = make_classification(
        n_samples=n_samples, n_features=n_features, n_informative=n_informative, n_redundant=n_redundant,
        n_repeated=0, n_classes=n_classes, n_clusters_per_class=2, class_sep=float(class_sep), flip_y=float(flip_y),
        shuffle=False, random_state=rs,
    )
    roles = np.array(["informative"] * n_informative + ["redundant"] * n_redundant
                     + ["noise"] * (n_features - n_informative - n_redundant))
    if shuffle_features:
        perm = _rng(seed, "synthetic_tabular-columns").permutation(n_features)
        x, roles = x[:, perm], roles[perm]
    # rows come out sorted by class (shuffle=False); the split permutes them anyway
    extra = {
        "source": "sklearn.datasets.make_classification (synthetic)",
        "informative_features": np.flatnonzero(roles == "informative").tolist(),
        "redundant_features": np.flatnonzero(roles == "redundant").tolist(),
        "noise_features": np.flatnonzero(roles == "noise").tolist(),
        "feature_roles": roles.tolist(),
    }
    return build_tabular(
        "synthetic_tabular", x, y, task="classification", seed=seed,
        feature_names=[f"x{j}" for j in range(n_features)], class_names=[f"class_{k}" for k in range(n_classes)],
        cal_fraction=cal_fraction, test_fraction=test_fraction, n_train=n_train, n_cal=n_cal, n_test=n_test,
        extra=extra,
    )
