"""Synthetic stand-ins of the paper datasets: ``standin:<name>`` with the real input size, class count
and split sizes, so that a notebook's ``paper`` profile can run (on a GPU, at full scale) where the
real data is absent.

A stand-in is **not** the real dataset and no number computed on it says anything about the papers'
claims; it exists to exercise the paper-scale code path (memory, batch sizes, timings). Every stand-in
carries ``info.extra["standin"] = True`` and a ``"source"`` that says so; notebooks print
:func:`data_source_note` for each dataset they load.

Images (``imagenet``, ``cifar10``, ``cifar100``, ``stl10``, ``food101``, ``cub200``) are structured and class-dependent, not
noise: class ``c`` has a fixed prototype (background and object colours, an oriented sinusoidal
texture, an object shape (disk, square or diamond) of a given size at a given place), and every image
jitters it (object position and size, texture phase, brightness, a smooth low-frequency noise field).
The object's footprint is returned as the ground-truth mask (``split.masks``), so localization
metrics run on stand-ins too. A small network learns the classes; with 1000 classes and a few images
per class it stays far from perfect, as a real model would on a hard task.

Tabular stand-ins (``electricity``, ``covertype``, ``credit``, ``pol``: the Grinsztajn et al. 2022
versions used by ReCalX) have the real number of rows and numeric features and two classes, drawn from
``sklearn.datasets.make_classification`` with a seeded, dataset-specific informative subset. The
regression stand-in ``california_housing`` (20 640 rows, 8 features, the set of Mulye &
Valdenegro-Toro) is Friedman's #1 function (``make_friedman1``: 5 informative features, 3 pure noise)
with its target standardized like the real loader's.

Prototypes depend on the dataset name only (not on ``seed``), so different seeds give different
samples and splits of the same task. Only the selected samples are rendered, in chunks.
"""

from __future__ import annotations

import math
import os
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .._validation import check_int
from ._base import (
    Dataset,
    Split,
    _rng,
    build_image,
    build_tabular,
    cal_from_test_indices,
    official_split_indices,
    register_dataset,
    split_indices,
)

__all__ = ["STANDINS", "StandinSpec", "load_or_standin", "data_source_note", "is_standin", "render_standin_images"]


@dataclass(frozen=True)
class StandinSpec:
    """Sizes of one stand-in, copied from the real dataset.

    Attributes:
        kind: ``"image"`` or ``"tabular"``.
        real: the real dataset's registry name (what the stand-in replaces).
        n_classes: number of classes K (0 for a regression target).
        image_size: side of the square RGB images (images only).
        n_features: number of numeric features (tabular only).
        n_official_train, n_official_test: sizes of the official train / test splits (0 for a pool
            without an official split, e.g. the ImageNet validation folder).
        n_pool: size of the single pool that is split three ways (ImageNet validation; tabular sets).
        cal_from: where the calibration split comes from: ``"train"`` (carved from the official
            training split), ``"test"`` (carved from the official test split, as Calibrate to Interpret
            does for Food-101 and CUB) or ``"pool"``.
        defaults: default caps ``(n_train, n_cal, n_test)`` (None = the whole split), as in the real loader.
    """

    kind: str
    real: str
    n_classes: int
    image_size: int = 0
    n_features: int = 0
    n_official_train: int = 0
    n_official_test: int = 0
    n_pool: int = 0
    cal_from: str = "train"
    defaults: tuple[int | None, int | None, int | None] = (None, None, None)


STANDINS: dict[str, StandinSpec] = {
    # ILSVRC2012 validation folder: 50 000 images, 1000 classes, 224 x 224 crops (load_imagenet defaults)
    "imagenet": StandinSpec("image", "imagenet", 1000, image_size=224, n_pool=50_000, cal_from="pool",
                            defaults=(2000, 2000, 2000)),
    # CIFAR-10: 50 000 / 10 000 images of 32 x 32, 10 classes
    "cifar10": StandinSpec("image", "cifar10", 10, image_size=32, n_official_train=50_000, n_official_test=10_000),
    # CIFAR-100: 50 000 / 10 000 images of 32 x 32, 100 classes
    "cifar100": StandinSpec("image", "cifar100", 100, image_size=32, n_official_train=50_000, n_official_test=10_000),
    # STL-10: the 5 000 labelled training / 8 000 test images of 96 x 96, 10 classes
    "stl10": StandinSpec("image", "stl10", 10, image_size=96, n_official_train=5000, n_official_test=8000),
    # Food-101: 75 750 / 25 250 images, 101 classes, 224 x 224 (load_food101 defaults)
    "food101": StandinSpec("image", "food101", 101, image_size=224, n_official_train=75_750, n_official_test=25_250,
                           cal_from="test", defaults=(2000, 2500, 2500)),
    # CUB-200-2011: 5994 / 5794 images, 200 classes, 224 x 224 (load_cub200 defaults)
    "cub200": StandinSpec("image", "cub200", 200, image_size=224, n_official_train=5994, n_official_test=5794,
                          cal_from="test", defaults=(2000, 2500, 2500)),
    # Grinsztajn et al. (2022) numerical classification versions used by ReCalX (rows, features)
    "electricity": StandinSpec("tabular", "openml:electricity", 2, n_features=7, n_pool=38_474, cal_from="pool"),
    "covertype": StandinSpec("tabular", "openml:covertype", 2, n_features=10, n_pool=566_602, cal_from="pool"),
    "credit": StandinSpec("tabular", "openml:credit", 2, n_features=10, n_pool=16_714, cal_from="pool"),
    "pol": StandinSpec("tabular", "openml:pol", 2, n_features=26, n_pool=10_082, cal_from="pool"),
    # California housing (Mulye & Valdenegro-Toro's regression set): 20 640 districts, 8 features, a real target
    "california_housing": StandinSpec("tabular", "california_housing", 0, n_features=8, n_pool=20_640, cal_from="pool"),
}
"""Stand-in name -> :class:`StandinSpec` (``load_dataset("standin:<name>")``)."""

# the real dataset name a stand-in replaces -> stand-in name
_REAL_TO_STANDIN = {s.real: k for k, s in STANDINS.items()}
_REAL_TO_STANDIN.update({"openml:" + k: k for k, s in STANDINS.items() if s.kind == "tabular"})


# ----------------------------------------------------------------------------------------------
# image rendering
# ----------------------------------------------------------------------------------------------


def _class_prototypes(name: str, n_classes: int) -> dict[str, np.ndarray]:
    """Fixed per-class parameters (depend on the stand-in name only)."""
    g = np.random.default_rng(np.random.SeedSequence(zlib.crc32(f"standin-prototypes-{name}".encode())))
    bg = g.uniform(0.1, 0.9, (n_classes, 3))
    fg = g.uniform(0.1, 0.9, (n_classes, 3))
    # keep object and background apart in colour so the object is visible
    close = np.linalg.norm(fg - bg, axis=1) < 0.35
    fg[close] = 1.0 - bg[close]
    return {
        "bg": bg, "fg": fg,
        "theta": g.uniform(0.0, math.pi, n_classes),          # texture orientation
        "freq": g.uniform(2.0, 9.0, n_classes),               # texture cycles per image side
        "amp": g.uniform(0.05, 0.2, n_classes),               # texture amplitude
        "centre": g.uniform(0.3, 0.7, (n_classes, 2)),        # object centre (row, col) in [0, 1]
        "radius": g.uniform(0.12, 0.28, n_classes),           # object size
        "shape": g.integers(0, 3, n_classes),                 # 0 disk, 1 square, 2 diamond
    }


def _sample_params(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per-sample jitter for ``n`` samples (drawn for the whole pool, so a sample never depends on caps)."""
    return {
        "shift": rng.uniform(-0.12, 0.12, (n, 2)).astype(np.float32),
        "scale": rng.uniform(0.75, 1.25, n).astype(np.float32),
        "phase": rng.uniform(0.0, 2 * math.pi, n).astype(np.float32),
        "bright": rng.uniform(-0.08, 0.08, n).astype(np.float32),
        "field": rng.normal(0.0, 0.06, (n, 3, 4, 4)).astype(np.float32),
    }


def render_standin_images(
    labels: np.ndarray,
    params: dict[str, np.ndarray],
    prototypes: dict[str, np.ndarray],
    image_size: int,
    *,
    chunk: int = 256,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Render stand-in images of the given classes.

    Args:
        labels: int (N,) class of each image.
        params: per-sample jitter arrays, each with N rows (see ``_sample_params``).
        prototypes: per-class parameters (see ``_class_prototypes``).
        image_size: side S of the square RGB images.
        chunk: images rendered at once (bounds the memory of the intermediates).

    Returns:
        ``(x, masks)``: float32 (N, 3, S, S) images in [0, 1] and bool (N, S, S) object masks.
    """
    n = int(len(labels))
    s = int(image_size)
    xs = torch.empty((n, 3, s, s), dtype=torch.float32)
    ms = torch.empty((n, s, s), dtype=torch.bool)
    coords = (torch.arange(s, dtype=torch.float32) + 0.5) / s
    rr, cc = torch.meshgrid(coords, coords, indexing="ij")  # (S, S) row / col in [0, 1]
    soft = 1.5 / s  # edge width: about one and a half pixels
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        y = torch.as_tensor(np.asarray(labels[a:b], dtype=np.int64))
        P = {k: torch.as_tensor(v[y.numpy()], dtype=torch.float32) for k, v in prototypes.items() if k != "shape"}
        shape = torch.as_tensor(prototypes["shape"][y.numpy()])
        J = {k: torch.as_tensor(v[a:b]) for k, v in params.items()}
        v = lambda t: t.view(-1, 1, 1)  # noqa: E731  (per-sample scalar -> broadcast over pixels)
        # oriented texture
        th, fr = P["theta"], P["freq"]
        proj = rr * v(torch.cos(th)) + cc * v(torch.sin(th))
        tex = v(P["amp"]) * torch.sin(2 * math.pi * v(fr) * proj + v(J["phase"]))
        # object footprint with a soft edge
        cy = v(P["centre"][:, 0] + J["shift"][:, 0])
        cx = v(P["centre"][:, 1] + J["shift"][:, 1])
        rad = v(P["radius"] * J["scale"])
        dy, dx = (rr - cy).abs(), (cc - cx).abs()
        dist = torch.where(v(shape) == 0, torch.sqrt(dy * dy + dx * dx),
                           torch.where(v(shape) == 1, torch.maximum(dy, dx), (dy + dx) / math.sqrt(2)))
        alpha = torch.sigmoid((rad - dist) / soft)  # (B, S, S) in (0, 1)
        bg = P["bg"].view(-1, 3, 1, 1) + tex.unsqueeze(1)
        fg = P["fg"].view(-1, 3, 1, 1) - 0.5 * tex.unsqueeze(1)
        img = bg * (1 - alpha.unsqueeze(1)) + fg * alpha.unsqueeze(1)
        field = F.interpolate(J["field"], size=(s, s), mode="bilinear", align_corners=False)
        img = img + field + J["bright"].view(-1, 1, 1, 1)
        xs[a:b] = img.clamp_(0.0, 1.0)
        ms[a:b] = alpha > 0.5
    return xs, ms


def _balanced_labels(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    return rng.permutation(np.arange(n) % k).astype(np.int64)


def _load_standin_images(name: str, spec: StandinSpec, *, seed: int, n_train, n_cal, n_test, image_size,
                         cal_fraction) -> Dataset:
    size = spec.image_size if image_size is None else check_int(image_size, "image_size", low=8, high=1024)
    protos = _class_prototypes(name, spec.n_classes)
    caps = [spec.defaults[i] if v == "default" else v for i, v in enumerate((n_train, n_cal, n_test))]
    if spec.cal_from == "pool":
        rng = _rng(seed, f"standin-{name}")
        y = _balanced_labels(spec.n_pool, spec.n_classes, rng)
        params = _sample_params(spec.n_pool, rng)
        frac = 0.2 if cal_fraction is None else cal_fraction
        tr, ca, te = split_indices(y, len(y), seed=seed, stratify=True, cal_fraction=frac, test_fraction=0.2,
                                   n_train=caps[0], n_cal=caps[1], n_test=caps[2])
        pools = {"train": (y, params, tr), "cal": (y, params, ca), "test": (y, params, te)}
    else:
        rng_tr, rng_te = _rng(seed, f"standin-{name}-train"), _rng(seed, f"standin-{name}-test")
        y_tr = _balanced_labels(spec.n_official_train, spec.n_classes, rng_tr)
        y_te = _balanced_labels(spec.n_official_test, spec.n_classes, rng_te)
        p_tr, p_te = _sample_params(len(y_tr), rng_tr), _sample_params(len(y_te), rng_te)
        if spec.cal_from == "train":
            frac = 0.1 if cal_fraction is None else cal_fraction
            tr, ca, te = official_split_indices(y_tr, y_te, seed=seed, cal_fraction=frac, n_train=caps[0],
                                                n_cal=caps[1], n_test=caps[2])
            pools = {"train": (y_tr, p_tr, tr), "cal": (y_tr, p_tr, ca), "test": (y_te, p_te, te)}
        else:
            tr, ca, te = cal_from_test_indices(y_tr, y_te, seed=seed, cal_fraction=0.5 if cal_fraction is None else cal_fraction,
                                               n_train=caps[0], n_cal=caps[1], n_test=caps[2])
            pools = {"train": (y_tr, p_tr, tr), "cal": (y_te, p_te, ca), "test": (y_te, p_te, te)}
    splits = {}
    for split_name, (y, params, idx) in pools.items():
        x, m = render_standin_images(y[idx], {k: v[idx] for k, v in params.items()}, protos, size)
        splits[split_name] = Split(x, torch.as_tensor(y[idx]), m)
    return build_image(
        f"standin:{name}", splits["train"], splits["cal"], splits["test"],
        class_names=[f"{name}_class_{k}" for k in range(spec.n_classes)],
        extra={"standin": True, "replaces": spec.real, "image_size": size,
               "source": f"synthetic stand-in for {spec.real} ({spec.n_classes} classes, {size}x{size} RGB); not real data"},
    )


# ----------------------------------------------------------------------------------------------
# tabular
# ----------------------------------------------------------------------------------------------


def _load_standin_tabular(name: str, spec: StandinSpec, *, seed: int, n_train, n_cal, n_test, n_samples,
                          cal_fraction) -> Dataset:
    from sklearn.datasets import make_classification, make_friedman1

    n = spec.n_pool if n_samples is None else check_int(n_samples, "n_samples", low=20)
    d = spec.n_features
    rs = int(_rng(seed, f"standin-{name}").integers(0, 2**31 - 1))
    if spec.n_classes == 0:  # regression: Friedman #1 (5 informative non-linear features, the rest noise)
        x, y = make_friedman1(n_samples=n, n_features=d, noise=1.0, random_state=rs)
        task, class_names, what = "regression", None, "make_friedman1 regression"
    else:
        n_inf = max(2, d // 2)
        x, y = make_classification(n_samples=n, n_features=d, n_informative=n_inf, n_redundant=min(2, d - n_inf),
                                   n_repeated=0, n_classes=2, n_clusters_per_class=3, class_sep=0.8, flip_y=0.05,
                                   shuffle=True, random_state=rs)
        task, class_names, what = "classification", ["class_0", "class_1"], "make_classification"
    caps = [None if v == "default" else v for v in (n_train, n_cal, n_test)]
    return build_tabular(
        f"standin:{name}", x, y, task=task, seed=seed, feature_names=[f"x{j}" for j in range(d)],
        class_names=class_names, cal_fraction=0.2 if cal_fraction is None else cal_fraction,
        test_fraction=0.2, n_train=caps[0], n_cal=caps[1], n_test=caps[2],
        extra={"standin": True, "replaces": spec.real,
               "source": f"synthetic stand-in for {spec.real} ({n} rows, {d} features, {what}); not real data"},
    )


@register_dataset("standin")
def load_standin(
    *,
    spec: str,
    data_dir: Any = None,
    allow_download: bool = False,
    seed: int = 0,
    n_train: int | None | str = "default",
    n_cal: int | None | str = "default",
    n_test: int | None | str = "default",
    cal_fraction: float | None = None,
    image_size: int | None = None,
    n_samples: int | None = None,
) -> Dataset:
    """A synthetic stand-in of a paper dataset, ``"standin:<name>"`` with ``<name>`` in :data:`STANDINS`.

    Images: float32 (N, 3, S, S) in [0, 1] with object masks, the real class count, the real official
    split sizes and the real loader's default caps. Tabular: standardized float32 (N, D), two classes (``california_housing``: a standardized real target).
    Nothing is read from ``data_dir`` and nothing is downloaded.

    Args:
        spec: the stand-in name (``imagenet``, ``cifar10``, ``cifar100``, ``stl10``, ``food101``, ``cub200``,
            ``electricity``, ``covertype``, ``credit``, ``pol``, ``california_housing`` (regression)).
        n_train, n_cal, n_test: caps on the split sizes; ``"default"`` uses the real loader's defaults,
            None the whole split.
        cal_fraction: share of the split the calibration set is carved from (default as the real loader).
        image_size: images only: side of the rendered images (default: the real size). A smaller side
            makes CPU tests of the paper code path cheap; the notebook says so.
        n_samples: tabular only: rows before splitting (default: the real row count).

    Returns:
        :class:`~xcal_core.data.Dataset`; ``info.extra["standin"]`` is True.

    Raises:
        ValueError: unknown stand-in name, an option that does not apply to its kind, bad sizes.
    """
    if spec not in STANDINS:
        raise ValueError(f"unknown stand-in 'standin:{spec}'; expected one of {['standin:' + k for k in STANDINS]}")
    st = STANDINS[spec]
    for v, nm in ((n_train, "n_train"), (n_cal, "n_cal"), (n_test, "n_test")):
        if v != "default" and v is not None:
            check_int(v, nm, low=1)
    if st.kind == "image":
        if n_samples is not None:
            raise ValueError(f"`n_samples` applies to tabular stand-ins only, not 'standin:{spec}' (use n_train / n_cal / n_test)")
        return _load_standin_images(spec, st, seed=seed, n_train=n_train, n_cal=n_cal, n_test=n_test,
                                    image_size=image_size, cal_fraction=cal_fraction)
    if image_size is not None:
        raise ValueError(f"`image_size` applies to image stand-ins only, not 'standin:{spec}'")
    return _load_standin_tabular(spec, st, seed=seed, n_train=n_train, n_cal=n_cal, n_test=n_test,
                                 n_samples=n_samples, cal_fraction=cal_fraction)


# ----------------------------------------------------------------------------------------------
# helpers for notebooks
# ----------------------------------------------------------------------------------------------


def is_standin(dataset_or_name: Any) -> bool:
    """True for a ``standin:`` name or a Dataset loaded from one."""
    if isinstance(dataset_or_name, str):
        return dataset_or_name.startswith("standin:")
    info = getattr(dataset_or_name, "info", None)
    return bool(info is not None and info.extra.get("standin", False))


def data_source_note(dataset: Dataset) -> str:
    """One line saying what data a notebook is running on; loud for stand-ins.

    Args:
        dataset: a loaded :class:`~xcal_core.data.Dataset`.

    Returns:
        ``"<name>: <source>"`` for real and bundled data; for a stand-in a line starting with
        ``"STAND-IN DATA:"`` that says the numbers do not test the paper's claims.
    """
    info = dataset.info
    sizes = f"train {len(dataset.train)}, cal {len(dataset.cal)}, test {len(dataset.test)}"
    task = "regression" if info.task == "regression" else f"{info.n_classes} classes"
    if is_standin(dataset):
        return (f"STAND-IN DATA: {info.name} is a synthetic stand-in for {info.extra.get('replaces')} "
                f"(input {tuple(info.input_shape)}, {task}; {sizes}). It exercises the paper-scale code "
                f"path only; its numbers say nothing about the paper's claims.")
    return f"{info.name}: {info.extra.get('source', 'bundled / generated')} (input {tuple(info.input_shape)}, {task}; {sizes})"


def load_or_standin(name: str, *, standin_if_missing: bool = False, **kwargs: Any) -> Dataset:
    """:func:`~xcal_core.data.load_dataset`, falling back to the stand-in when the real files are absent.

    Args:
        name: a dataset name (``"imagenet"``, ``"openml:electricity"``, ``"standin:cub200"``, ...).
        standin_if_missing: when the real loader raises ``FileNotFoundError`` and a stand-in of that
            dataset exists, load ``"standin:<name>"`` instead (the result says so in
            ``info.extra["standin"]``, and :func:`data_source_note` prints it). False re-raises.
        **kwargs: passed to ``load_dataset`` (``data_dir``, ``allow_download``, ``seed``, options). For
            the fallback only the options the stand-in accepts are kept (``n_train``, ``n_cal``,
            ``n_test``, ``image_size``).

    Returns:
        The loaded :class:`~xcal_core.data.Dataset`.

    Raises:
        FileNotFoundError: the real files are missing and either ``standin_if_missing`` is False or
            there is no stand-in for ``name``.
    """
    from ._base import load_dataset

    try:
        return load_dataset(name, **kwargs)
    except FileNotFoundError as exc:
        if not standin_if_missing or name not in _REAL_TO_STANDIN:
            raise
        keep = {"data_dir", "allow_download", "seed", "n_train", "n_cal", "n_test", "image_size"}
        kw = {k: v for k, v in kwargs.items() if k in keep}
        if STANDINS[_REAL_TO_STANDIN[name]].kind == "tabular":
            kw.pop("image_size", None)
        ds = load_dataset(f"standin:{_REAL_TO_STANDIN[name]}", **kw)
        ds.info.extra["missing_real_data"] = str(exc).splitlines()[0]
        return ds
