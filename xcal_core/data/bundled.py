"""scikit-learn's bundled datasets (offline): digits, breast_cancer, wine, iris, diabetes."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .._validation import check_int
from ._base import Dataset, Split, build_image, build_tabular, register_dataset, split_indices

__all__: list[str] = []


@register_dataset("digits")
def load_digits(
    *,
    data_dir: Any = None,
    allow_download: bool = False,
    seed: int = 0,
    upsample: int = 1,
    cal_fraction: float = 0.2,
    test_fraction: float = 0.2,
    n_train: int | None = None,
    n_cal: int | None = None,
    n_test: int | None = None,
) -> Dataset:
    """UCI handwritten digits (1797 images, 10 classes) as float32 ``(N, 1, 8*upsample, 8*upsample)`` in [0, 1].

    Args:
        upsample: integer factor >= 1; ``4`` gives 32x32 images by bilinear interpolation (values stay
            in [0, 1] because bilinear weights are convex).
        cal_fraction, test_fraction: fractions of the 1797 samples for the calibration and test splits.
        n_train, n_cal, n_test: optional caps on the split sizes (stratified subsets).
    """
    from sklearn.datasets import load_digits as _sk_load

    upsample = check_int(upsample, "upsample", low=1, high=32)
    bunch = _sk_load()
    x = torch.as_tensor(bunch.data.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    if upsample > 1:
        x = F.interpolate(x, scale_factor=upsample, mode="bilinear", align_corners=False).clamp_(0.0, 1.0)
    y = torch.as_tensor(bunch.target.astype(np.int64))
    tr, ca, te = split_indices(
        bunch.target, len(y), seed=seed, stratify=True, cal_fraction=cal_fraction, test_fraction=test_fraction,
        n_train=n_train, n_cal=n_cal, n_test=n_test,
    )
    splits = [Split(x[i].contiguous(), y[i].contiguous()) for i in (tr, ca, te)]
    return build_image(
        "digits", *splits, class_names=[str(d) for d in range(10)],
        extra={"source": "sklearn.datasets.load_digits (bundled)", "upsample": upsample},
    )


def _tabular_loader(name: str, sk_name: str, task: str):
    def loader(
        *,
        data_dir: Any = None,
        allow_download: bool = False,
        seed: int = 0,
        cal_fraction: float = 0.2,
        test_fraction: float = 0.2,
        n_train: int | None = None,
        n_cal: int | None = None,
        n_test: int | None = None,
        standardize_target: bool = True,
    ) -> Dataset:
        import sklearn.datasets as skd

        bunch = getattr(skd, sk_name)()
        class_names = list(bunch.target_names) if task == "classification" else None
        return build_tabular(
            name, bunch.data, bunch.target, task=task, seed=seed,
            feature_names=list(bunch.feature_names), class_names=class_names,
            cal_fraction=cal_fraction, test_fraction=test_fraction, n_train=n_train, n_cal=n_cal, n_test=n_test,
            standardize_target=standardize_target, extra={"source": f"sklearn.datasets.{sk_name} (bundled)"},
        )

    loader.__name__ = f"load_{name}"
    loader.__doc__ = (
        f"scikit-learn's bundled ``{name}`` ({task}) as float32 ``(N, D)`` features standardized with the\n"
        "    training split's statistics.\n\n"
        "    Args:\n"
        "        cal_fraction, test_fraction: fractions of the samples for the calibration and test splits\n"
        "            (stratified for classification).\n"
        "        n_train, n_cal, n_test: optional caps on the split sizes.\n"
        "        standardize_target: regression only: standardize targets with training statistics\n"
        "            (``info.extra['target_mean' / 'target_std']`` map them back); ignored for classification.\n"
    )
    return register_dataset(name)(loader)


load_breast_cancer = _tabular_loader("breast_cancer", "load_breast_cancer", "classification")
load_wine = _tabular_loader("wine", "load_wine", "classification")
load_iris = _tabular_loader("iris", "load_iris", "classification")
load_diabetes = _tabular_loader("diabetes", "load_diabetes", "regression")
