"""Dataset containers, the dataset registry and the seeded, stratified split machinery.

Every loader returns a :class:`Dataset` with three :class:`Split` s (``train``, ``cal``, ``test``) and a
:class:`DatasetInfo`. Conventions (CONTRIBUTING.md):

* images are float32 ``(N, C, H, W)`` in ``[0, 1]``; ``info.normalization`` holds the per-channel
  training ``(mean, std)`` so that a model can normalize internally;
* tabular inputs are float32 ``(N, D)``, already standardized with the training split's statistics,
  which are kept in ``info.standardization`` as ``(mean, std)`` of the raw features;
* labels are int64 ``(N,)`` for classification and float32 ``(N,)`` for regression.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from .._validation import check_fraction, check_int

__all__ = [
    "DATASETS",
    "Dataset",
    "DatasetInfo",
    "Split",
    "available_datasets",
    "load_dataset",
    "register_dataset",
    "resolve_data_dir",
]

TASKS = ("classification", "regression")
KINDS = ("image", "tabular")
SPLIT_NAMES = ("train", "cal", "test")

# name -> loader(*, data_dir, allow_download, seed, **options) -> Dataset
DATASETS: dict[str, Callable[..., Dataset]] = {}

# Loaders whose name takes a suffix: "openml:<id or name>" -> DATASETS["openml"](spec="<id or name>", ...)
_PREFIXED = ("openml", "standin")


# ----------------------------------------------------------------------------------------------
# containers
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class DatasetInfo:
    """Metadata of a loaded dataset.

    Attributes:
        name: registry name, e.g. ``"shapes"`` or ``"openml:61"``.
        task: ``"classification"`` or ``"regression"``.
        kind: ``"image"`` or ``"tabular"``.
        input_shape: shape of one input, ``(C, H, W)`` for images, ``(D,)`` for tabular data.
        n_classes: number of classes K (1 for regression).
        feature_names: ``D`` feature names for tabular data; channel names for images
            (``("red", "green", "blue")`` or ``("intensity",)``).
        class_names: ``K`` class names (``None`` for regression).
        train_mean: float32 tensor shaped like one input, the mean training input (the ``"mean"``
            baseline of perturbation methods).
        normalization: images only: ``(mean, std)`` per channel, each a tuple of C floats computed on
            the training split, for a model's internal input normalization. ``None`` for tabular data.
        standardization: tabular only: ``(mean, std)`` float32 tensors ``(D,)`` of the *raw* training
            features that were used to standardize every split (already applied). ``None`` for images.
        extra: dataset-specific metadata, e.g. ``informative_features`` (synthetic_tabular),
            ``difficulty`` (shapes), ``target_mean`` / ``target_std`` (regression), ``source``.
    """

    name: str
    task: str
    kind: str
    input_shape: tuple[int, ...]
    n_classes: int
    feature_names: tuple[str, ...]
    class_names: tuple[str, ...] | None
    train_mean: torch.Tensor
    normalization: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    standardization: tuple[torch.Tensor, torch.Tensor] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"unknown `task` {self.task!r}; expected one of {list(TASKS)}")
        if self.kind not in KINDS:
            raise ValueError(f"unknown `kind` {self.kind!r}; expected one of {list(KINDS)}")
        if tuple(self.train_mean.shape) != tuple(self.input_shape):
            raise ValueError(
                f"`train_mean` must be shaped like one input {tuple(self.input_shape)}, got {tuple(self.train_mean.shape)}"
            )

    @property
    def is_image(self) -> bool:
        """True for image datasets (inputs ``(N, C, H, W)``)."""
        return self.kind == "image"

    @property
    def is_classification(self) -> bool:
        """True for classification datasets (int64 labels)."""
        return self.task == "classification"


@dataclass
class Split:
    """One split of a dataset: inputs, targets and (optionally) ground-truth object masks.

    Attributes:
        x: float32 inputs ``(N, C, H, W)`` in [0, 1] (images) or ``(N, D)`` standardized (tabular).
        y: int64 class labels ``(N,)`` or float32 regression targets ``(N,)``.
        masks: optional bool ``(N, H, W)`` ground-truth object masks (``shapes``), else ``None``.
    """

    x: torch.Tensor
    y: torch.Tensor
    masks: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.x, torch.Tensor) or not isinstance(self.y, torch.Tensor):
            raise TypeError("`x` and `y` of a Split must be torch tensors")
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(f"`x` has {self.x.shape[0]} samples but `y` has {self.y.shape[0]}")
        if self.masks is not None:
            if self.masks.shape[0] != self.x.shape[0]:
                raise ValueError(f"`masks` has {self.masks.shape[0]} samples but `x` has {self.x.shape[0]}")
            if self.masks.dtype != torch.bool:
                raise TypeError(f"`masks` must be a bool tensor, got {self.masks.dtype}")

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, idx: Any) -> Split:
        """A new Split with the samples selected by ``idx``.

        Args:
            idx: int64 index tensor / array / list, bool mask of length N, or a slice.

        Returns:
            Split holding ``x[idx]``, ``y[idx]`` and ``masks[idx]`` (copies for index arrays, views for slices).
        """
        if not isinstance(idx, slice):
            idx = torch.as_tensor(np.asarray(idx) if not isinstance(idx, torch.Tensor) else idx)
            if idx.dtype != torch.bool:
                idx = idx.long().reshape(-1)
                if idx.numel() and (int(idx.min()) < -len(self) or int(idx.max()) >= len(self)):
                    raise IndexError(f"`idx` out of range for a split of {len(self)} samples")
            elif idx.shape != (len(self),):
                raise ValueError(f"a boolean `idx` must have shape ({len(self)},), got {tuple(idx.shape)}")
        return Split(self.x[idx], self.y[idx], None if self.masks is None else self.masks[idx])

    def loader(
        self,
        batch_size: int = 256,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        *,
        with_masks: bool = False,
        drop_last: bool = False,
    ) -> DataLoader:
        """A ``torch.utils.data.DataLoader`` over ``(x, y)`` (or ``(x, y, masks)``).

        Args:
            batch_size: samples per batch (>= 1).
            shuffle: reshuffle every epoch; pass ``generator`` for a reproducible order.
            generator: torch.Generator driving the shuffle (``None`` uses torch's global RNG).
            with_masks: also yield the bool masks (only for splits that have them).
            drop_last: drop the last incomplete batch.

        Returns:
            DataLoader yielding ``(x, y)`` batches (``(x, y, masks)`` with ``with_masks=True``).
        """
        check_int(batch_size, "batch_size", low=1)
        tensors = [self.x, self.y]
        if with_masks:
            if self.masks is None:
                raise ValueError("`with_masks=True` but this split has no masks")
            tensors.append(self.masks)
        return DataLoader(
            TensorDataset(*tensors), batch_size=batch_size, shuffle=shuffle, generator=generator, drop_last=drop_last
        )

    def to(self, device: torch.device | str) -> Split:
        """A copy of the split on ``device``."""
        return Split(self.x.to(device), self.y.to(device), None if self.masks is None else self.masks.to(device))


@dataclass
class Dataset:
    """A dataset with metadata and its train / calibration / test splits.

    Attributes:
        info: :class:`DatasetInfo`.
        train: training split (fits models and all training statistics).
        cal: calibration / validation split, disjoint from ``train`` and ``test``.
        test: test split.
    """

    info: DatasetInfo
    train: Split
    cal: Split
    test: Split

    def __post_init__(self) -> None:
        for name in SPLIT_NAMES:
            _validate_split(getattr(self, name), name, self.info)

    @classmethod
    def from_tensors(
        cls,
        name: str,
        *,
        train: Sequence[Any],
        cal: Sequence[Any],
        test: Sequence[Any],
        class_names: Sequence[str] | None = None,
        kind: str = "image",
        task: str = "classification",
        feature_names: Sequence[str] | None = None,
    ) -> "Dataset":
        """Your own data as a :class:`Dataset`: the public, validated constructor.

        Args:
            name: a name for the dataset (used in cache keys, metrics and figures).
            train, cal, test: each a tuple ``(x, y)`` or ``(x, y, masks)`` of torch tensors or numpy
                arrays. ``x``: images ``(N, C, H, W)`` with values in [0, 1] (``kind="image"``; a model
                normalizes internally) or tabular features ``(N, D)``, already standardized as you want
                them (``kind="tabular"``). ``y``: integer class labels ``(N,)`` in ``[0, K)``
                (classification) or real targets ``(N,)`` (regression). ``masks``: optional bool
                object masks ``(N, H, W)`` (images only). ``cal`` fits calibrators and monitors
                training; keep it disjoint from ``train`` and ``test``.
            class_names: K names for classification; default ``("0", ..., "K-1")`` with K the largest
                label + 1 over all splits.
            kind: ``"image"`` or ``"tabular"``.
            task: ``"classification"`` or ``"regression"`` (tabular only).
            feature_names: D names of tabular features (default ``x0, x1, ...``).

        Returns:
            A :class:`Dataset`; images get ``info.normalization`` (per-channel training mean and std).

        Raises:
            TypeError / ValueError naming the argument: a split that is not ``(x, y)``, an empty split,
            wrong shapes or dtypes, images outside [0, 1], NaN or inf, labels outside the classes,
            inputs whose shape differs between splits.
        """
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"`name` must be a non-empty string, got {name!r}")
        if kind not in KINDS:
            raise ValueError(f"unknown `kind` {kind!r}; expected one of {list(KINDS)}")
        if task not in TASKS:
            raise ValueError(f"unknown `task` {task!r}; expected one of {list(TASKS)}")
        if kind == "image" and task != "classification":
            raise ValueError("`task` must be 'classification' for kind='image'")
        parts = {s: _tensors_of(v, s, kind, task) for s, v in (("train", train), ("cal", cal), ("test", test))}
        shapes = {s: tuple(p[0].shape[1:]) for s, p in parts.items()}
        if len(set(shapes.values())) > 1:
            raise ValueError(f"`train`, `cal` and `test` inputs must share one shape per sample, got {shapes}")
        if task == "classification":
            top = max(int(p[1].max()) for p in parts.values())
            if class_names is None:
                class_names = tuple(str(k) for k in range(max(top + 1, 2)))
            if isinstance(class_names, str) or not all(isinstance(c, str) for c in class_names):
                raise TypeError("`class_names` must be a sequence of strings")
            if len(class_names) < 2:
                raise ValueError(f"`class_names` must name at least 2 classes, got {len(class_names)}")
            for s, p in parts.items():
                if int(p[1].max()) >= len(class_names):
                    raise ValueError(f"`{s}`: label {int(p[1].max())} is outside the {len(class_names)} classes of "
                                     f"`class_names` (labels must lie in [0, {len(class_names) - 1}])")
        elif class_names is not None:
            raise ValueError("`class_names` must be None for task='regression'")
        splits = {s: Split(*p) for s, p in parts.items()}
        if kind == "image":
            return build_image(name, splits["train"], splits["cal"], splits["test"], class_names=class_names,
                               extra={"source": "Dataset.from_tensors"})
        d = shapes["train"][0]
        if feature_names is None:
            feature_names = tuple(f"x{j}" for j in range(d))
        if len(feature_names) != d:
            raise ValueError(f"`feature_names` must name the {d} features, got {len(feature_names)}")
        info = DatasetInfo(
            name=name, task=task, kind="tabular", input_shape=(d,),
            n_classes=len(class_names) if task == "classification" else 1,
            feature_names=tuple(str(f) for f in feature_names),
            class_names=tuple(class_names) if task == "classification" else None,
            train_mean=splits["train"].x.mean(0), normalization=None, standardization=None,
            extra={"source": "Dataset.from_tensors"},
        )
        return cls(info, splits["train"], splits["cal"], splits["test"])

    @property
    def splits(self) -> dict[str, Split]:
        """``{"train": ..., "cal": ..., "test": ...}``."""
        return {"train": self.train, "cal": self.cal, "test": self.test}

    def fingerprint(self) -> str:
        """A short hex digest of the name and all split tensors (stable across runs; for cache keys)."""
        cached = getattr(self, "_fingerprint", None)
        if cached is not None:
            return cached
        h = hashlib.sha1(self.info.name.encode())
        for name in SPLIT_NAMES:
            s = getattr(self, name)
            for t in (s.x, s.y):
                t = t.detach().cpu().contiguous()
                h.update(str((name, tuple(t.shape), str(t.dtype))).encode())
                h.update(t.numpy().tobytes())
        digest = h.hexdigest()[:16]
        object.__setattr__(self, "_fingerprint", digest)
        return digest

    def __repr__(self) -> str:
        i = self.info
        return (
            f"Dataset({i.name!r}, task={i.task}, kind={i.kind}, input_shape={tuple(i.input_shape)}, "
            f"n_classes={i.n_classes}, train={len(self.train)}, cal={len(self.cal)}, test={len(self.test)})"
        )


def _tensors_of(value: Any, arg: str, kind: str, task: str) -> tuple[torch.Tensor, ...]:
    """Validate one ``(x, y[, masks])`` argument of :meth:`Dataset.from_tensors`; errors name ``arg``."""
    if isinstance(value, (torch.Tensor, np.ndarray)) or not isinstance(value, (tuple, list)) or len(value) not in (2, 3):
        raise TypeError(f"`{arg}` must be a tuple (x, y) or (x, y, masks), got {type(value).__name__}")
    out = []
    for what, t in zip(("x", "y", "masks"), value):
        if isinstance(t, np.ndarray):
            t = torch.from_numpy(np.ascontiguousarray(t))
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"`{arg}`: {what} must be a torch tensor or numpy array, got {type(t).__name__}")
        out.append(t.detach().cpu())
    x, y = out[0], out[1]
    if x.shape[0] == 0:
        raise ValueError(f"`{arg}` is empty: it needs at least one sample")
    if not x.is_floating_point():
        hint = " (uint8 images: divide by 255 first)" if x.dtype == torch.uint8 else ""
        raise TypeError(f"`{arg}`: x must be a floating-point tensor, got {x.dtype}{hint}")
    x = x.float()
    if kind == "image" and x.ndim != 4:
        raise ValueError(f"`{arg}`: images must be (N, C, H, W), got shape {tuple(x.shape)}")
    if kind == "tabular" and x.ndim != 2:
        raise ValueError(f"`{arg}`: tabular x must be (N, D), got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"`{arg}`: x contains {int((~torch.isfinite(x)).sum())} NaN or inf value(s)")
    if kind == "image" and (float(x.min()) < 0.0 or float(x.max()) > 1.0):
        raise ValueError(f"`{arg}`: images must lie in [0, 1], got [{float(x.min()):.4g}, {float(x.max()):.4g}]")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"`{arg}`: y must be (N,) with N = {x.shape[0]} (the number of inputs), got shape {tuple(y.shape)}")
    if task == "classification":
        if y.is_floating_point():
            if not torch.isfinite(y).all() or not torch.equal(y, y.round()):
                raise TypeError(f"`{arg}`: classification labels must be integers, got non-integer {y.dtype} values")
        elif y.dtype == torch.bool or y.is_complex():
            raise TypeError(f"`{arg}`: classification labels must be integers, got {y.dtype}")
        y = y.long()
        if int(y.min()) < 0:
            raise ValueError(f"`{arg}`: labels must be >= 0, got {int(y.min())}")
    else:
        if not y.is_floating_point():
            y = y.float()
        if not torch.isfinite(y).all():
            raise ValueError(f"`{arg}`: y contains NaN or inf value(s)")
        y = y.float()
    masks = None
    if len(out) == 3:
        masks = out[2]
        if kind != "image":
            raise ValueError(f"`{arg}`: masks are only for images")
        if masks.dtype != torch.bool:
            raise TypeError(f"`{arg}`: masks must be a bool tensor, got {masks.dtype}")
        if tuple(masks.shape) != (x.shape[0], *x.shape[-2:]):
            raise ValueError(f"`{arg}`: masks must be (N, H, W) = {(x.shape[0], *x.shape[-2:])}, got {tuple(masks.shape)}")
    return (x, y, masks)


def _validate_split(split: Split, name: str, info: DatasetInfo) -> None:
    if not isinstance(split, Split):
        raise TypeError(f"split `{name}` must be a Split, got {type(split).__name__}")
    if len(split) == 0:
        raise ValueError(
            f"split `{name}` of dataset {info.name!r} is empty; increase its size "
            f"(n_{name} / {'cal_fraction' if name == 'cal' else 'test_fraction' if name == 'test' else 'the other fractions'})"
        )
    x, y = split.x, split.y
    if x.dtype != torch.float32:
        raise TypeError(f"split `{name}`: `x` must be float32, got {x.dtype}")
    if tuple(x.shape[1:]) != tuple(info.input_shape):
        raise ValueError(f"split `{name}`: inputs have shape {tuple(x.shape[1:])}, info says {tuple(info.input_shape)}")
    if not torch.isfinite(x).all():
        n_bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"split `{name}` of dataset {info.name!r}: `x` contains {n_bad} NaN or inf value(s)")
    if info.kind == "image" and (float(x.min()) < 0.0 or float(x.max()) > 1.0):
        raise ValueError(
            f"split `{name}`: image inputs must lie in [0, 1], got [{float(x.min()):.3g}, {float(x.max()):.3g}]"
        )
    if y.ndim != 1:
        raise ValueError(f"split `{name}`: `y` must be 1-D (N,), got shape {tuple(y.shape)}")
    if info.task == "classification":
        if y.dtype != torch.int64:
            raise TypeError(f"split `{name}`: classification labels must be int64, got {y.dtype}")
        if int(y.min()) < 0 or int(y.max()) >= info.n_classes:
            raise ValueError(
                f"split `{name}`: labels outside [0, {info.n_classes - 1}] (min {int(y.min())}, max {int(y.max())})"
            )
    else:
        if y.dtype != torch.float32:
            raise TypeError(f"split `{name}`: regression targets must be float32, got {y.dtype}")
        if not torch.isfinite(y).all():
            raise ValueError(f"split `{name}` of dataset {info.name!r}: `y` contains NaN or inf value(s)")
    if split.masks is not None and tuple(split.masks.shape[1:]) != tuple(x.shape[-2:]):
        raise ValueError(f"split `{name}`: masks must be (N, H, W) = (N, {x.shape[-2]}, {x.shape[-1]}), got {tuple(split.masks.shape)}")


# ----------------------------------------------------------------------------------------------
# registry and entry point
# ----------------------------------------------------------------------------------------------


def register_dataset(name: str) -> Callable[[Callable[..., Dataset]], Callable[..., Dataset]]:
    """Decorator adding a loader ``fn(*, data_dir, allow_download, seed, **options) -> Dataset`` to :data:`DATASETS`."""

    def deco(fn: Callable[..., Dataset]) -> Callable[..., Dataset]:
        if name in DATASETS and DATASETS[name] is not fn:
            raise ValueError(f"dataset {name!r} is already registered")
        DATASETS[name] = fn
        return fn

    return deco


def available_datasets() -> list[str]:
    """Valid dataset names (``"openml:<id or name>"`` stands for every OpenML dataset)."""
    return [f"{n}:<id or name>" if n == "openml" else f"{n}:<name>" if n in _PREFIXED else n for n in DATASETS]


_RESERVED = ("data_dir", "allow_download", "seed", "spec")


def load_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    allow_download: bool = False,
    seed: int = 0,
    **options: Any,
) -> Dataset:
    """Load a dataset by name with seeded train / calibration / test splits.

    Bundled and synthetic sets work offline: ``digits``, ``breast_cancer``, ``wine``, ``iris``,
    ``diabetes`` (regression), ``shapes`` (procedural RGB images with object masks) and
    ``synthetic_tabular``. Real sets read their official on-disk formats from ``data_dir``:
    ``cifar10``, ``cifar100``, ``stl10``, ``imagenet`` (a local ILSVRC2012 validation folder),
    ``california_housing`` and ``openml:<id or name>``; they download only with ``allow_download=True``
    and otherwise raise ``FileNotFoundError`` saying which files to place where.

    Args:
        name: registry name (see :data:`DATASETS`), or ``"openml:<id or name>"``.
        data_dir: root folder of real datasets; ``None`` uses ``$XCAL_DATA_DIR`` or ``<repo>/data``.
            Ignored by bundled and synthetic sets.
        allow_download: let real loaders download missing files (the notebooks' ``ALLOW_DOWNLOAD``).
        seed: seed of the split (and of the generation for synthetic sets); same seed -> same data.
        **options: loader-specific options, e.g. ``cal_fraction``, ``test_fraction``, ``n_train``,
            ``n_cal``, ``n_test`` (caps), ``upsample`` (digits), ``difficulty`` / ``image_size`` (shapes).
            Unknown options raise ``ValueError`` listing the valid ones.

    Returns:
        :class:`Dataset` with ``info``, ``train``, ``cal`` and ``test``.

    Raises:
        ValueError: unknown dataset name or option, bad option value, an empty split, NaN/inf in the data.
        FileNotFoundError: a real dataset's files are missing and ``allow_download`` is False.
    """
    if not isinstance(name, str):
        raise TypeError(f"`name` must be a dataset name string, got {type(name).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"`seed` must be an int, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"`seed` must be >= 0, got {seed}")
    if not isinstance(allow_download, (bool, np.bool_)):
        raise TypeError(f"`allow_download` must be a bool, got {type(allow_download).__name__}")
    key, spec = name, None
    if ":" in name:
        key, spec = name.split(":", 1)
        if key not in _PREFIXED or not spec.strip():
            raise ValueError(f"unknown dataset {name!r}; expected one of {available_datasets()}")
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {available_datasets()}")
    if key in _PREFIXED and spec is None:
        example = "'standin:<name>', e.g. 'standin:imagenet'" if key == "standin" else f"'{key}:<id or name>', e.g. '{key}:61' or '{key}:iris'"
        raise ValueError(f"dataset {name!r} needs a suffix: use {example}")
    loader = DATASETS[key]
    params = inspect.signature(loader).parameters
    valid = [p for p in params if p not in _RESERVED and params[p].kind is inspect.Parameter.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for dataset {name!r}; valid options: {valid}")
    kwargs: dict[str, Any] = dict(options)
    if key in _PREFIXED:
        kwargs["spec"] = spec.strip()
    return loader(data_dir=data_dir, allow_download=bool(allow_download), seed=int(seed), **kwargs)


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    """The root of real datasets: ``data_dir``, else ``$XCAL_DATA_DIR``, else ``<repo>/data``."""
    if data_dir is None or str(data_dir) == "":
        env = os.environ.get("XCAL_DATA_DIR")
        data_dir = env if env else Path(__file__).resolve().parents[2] / "data"
    return Path(data_dir).expanduser()


# ----------------------------------------------------------------------------------------------
# seeded, stratified splitting
# ----------------------------------------------------------------------------------------------


def _rng(seed: int, purpose: str) -> np.random.Generator:
    """An independent numpy generator for ``(seed, purpose)``."""
    return np.random.default_rng(np.random.SeedSequence(entropy=int(seed), spawn_key=(zlib.crc32(purpose.encode()),)))


def stratified_order(y: np.ndarray | None, n: int, rng: np.random.Generator, stratify: bool = True) -> np.ndarray:
    """A random permutation of ``range(n)`` in which every contiguous block is (nearly) stratified.

    Each sample of class ``c`` gets the position ``(rank + u) / n_c`` (rank in a random order of its
    class, ``u ~ U(0, 1)``); sorting by position interleaves the classes in proportion, so any
    contiguous chunk holds each class's share up to about one sample.
    """
    if not stratify or y is None:
        return rng.permutation(n)
    y = np.asarray(y)
    pos = np.empty(n, dtype=np.float64)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        ranks = rng.permutation(idx.size)
        pos[idx] = (ranks + rng.uniform(0.0, 1.0, idx.size)) / idx.size
    return np.argsort(pos, kind="stable")


def _check_cap(value: Any, name: str) -> int | None:
    if value is None:
        return None
    return check_int(value, name, low=1)


def split_sizes(
    n: int,
    cal_fraction: float,
    test_fraction: float,
    n_train: int | None,
    n_cal: int | None,
    n_test: int | None,
) -> tuple[int, int, int]:
    """Sizes of (train, cal, test) from fractions of ``n`` and optional caps (validated)."""
    cal_fraction = check_fraction(cal_fraction, "cal_fraction", open_low=True, open_high=True)
    test_fraction = check_fraction(test_fraction, "test_fraction", open_low=True, open_high=True)
    if cal_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"`cal_fraction` + `test_fraction` must be < 1 to leave a training split, got {cal_fraction} + {test_fraction}"
        )
    caps = [_check_cap(n_train, "n_train"), _check_cap(n_cal, "n_cal"), _check_cap(n_test, "n_test")]
    n_te = int(round(test_fraction * n))
    n_ca = int(round(cal_fraction * n))
    n_tr = n - n_te - n_ca
    sizes = [n_tr, n_ca, n_te]
    sizes = [s if c is None else min(s, c) for s, c in zip(sizes, caps)]
    for s, split_name, frac in zip(sizes, SPLIT_NAMES, ("1 - cal_fraction - test_fraction", "cal_fraction", "test_fraction")):
        if s <= 0:
            raise ValueError(
                f"split `{split_name}` would be empty: {n} samples with {frac} -> 0 samples; "
                f"use a larger fraction or more data"
            )
    return tuple(sizes)  # type: ignore[return-value]


def split_indices(
    y: np.ndarray | None,
    n: int,
    *,
    seed: int,
    stratify: bool,
    cal_fraction: float,
    test_fraction: float,
    n_train: int | None = None,
    n_cal: int | None = None,
    n_test: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded (stratified) train / cal / test index arrays over ``n`` samples.

    Test comes first in the stratified order, then cal, then train, so changing the ``n_train`` cap
    never changes the calibration or test samples.
    """
    n_tr, n_ca, n_te = split_sizes(n, cal_fraction, test_fraction, n_train, n_cal, n_test)
    order = stratified_order(y, n, _rng(seed, "split"), stratify)
    te = np.sort(order[:n_te])
    n_te_full = int(round(test_fraction * n))
    n_ca_full = int(round(cal_fraction * n))
    ca = np.sort(order[n_te_full : n_te_full + n_ca])
    tr = np.sort(order[n_te_full + n_ca_full : n_te_full + n_ca_full + n_tr])
    return tr, ca, te


def official_split_indices(
    y_train: np.ndarray,
    y_test: np.ndarray,
    *,
    seed: int,
    cal_fraction: float,
    n_train: int | None,
    n_cal: int | None,
    n_test: int | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices for datasets with an official train/test split: cal is carved from the official train
    split (stratified), test is the official test split (stratified subsample when ``n_test`` caps it).

    Returns:
        ``(train_idx, cal_idx)`` into the official training arrays and ``test_idx`` into the test arrays.
    """
    cal_fraction = check_fraction(cal_fraction, "cal_fraction", open_low=True, open_high=True)
    caps = [_check_cap(n_train, "n_train"), _check_cap(n_cal, "n_cal"), _check_cap(n_test, "n_test")]
    n = len(y_train)
    n_ca_full = int(round(cal_fraction * n))
    n_tr_full = n - n_ca_full
    n_tr = n_tr_full if caps[0] is None else min(n_tr_full, caps[0])
    n_ca = n_ca_full if caps[1] is None else min(n_ca_full, caps[1])
    n_te = len(y_test) if caps[2] is None else min(len(y_test), caps[2])
    for s, split_name in zip((n_tr, n_ca, n_te), SPLIT_NAMES):
        if s <= 0:
            raise ValueError(f"split `{split_name}` would be empty ({n} official training and {len(y_test)} test samples)")
    order = stratified_order(y_train, n, _rng(seed, "split"), True)
    ca = np.sort(order[:n_ca])
    tr = np.sort(order[n_ca_full : n_ca_full + n_tr])
    te_order = stratified_order(y_test, len(y_test), _rng(seed, "test-subsample"), True)
    te = np.sort(te_order[:n_te])
    return tr, ca, te


# ----------------------------------------------------------------------------------------------
# assembling datasets
# ----------------------------------------------------------------------------------------------


def cal_from_test_indices(
    y_train: np.ndarray,
    y_test: np.ndarray,
    *,
    seed: int,
    cal_fraction: float,
    n_train: int | None,
    n_cal: int | None,
    n_test: int | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices for datasets whose calibration split comes from the official **test** split (Calibrate to
    Interpret's protocol for Food-101 and CUB): a stratified order of the test split gives the first
    ``cal_fraction`` to calibration and the rest to evaluation (disjoint); the training split is a
    stratified subsample of the official training split.

    Returns:
        ``train_idx`` into the official training arrays, ``cal_idx`` and ``test_idx`` into the test arrays.
    """
    cal_fraction = check_fraction(cal_fraction, "cal_fraction", open_low=True, open_high=True)
    caps = [_check_cap(n_train, "n_train"), _check_cap(n_cal, "n_cal"), _check_cap(n_test, "n_test")]
    n_te_all = len(y_test)
    n_ca_full = int(round(cal_fraction * n_te_all))
    n_tr = len(y_train) if caps[0] is None else min(len(y_train), caps[0])
    n_ca = n_ca_full if caps[1] is None else min(n_ca_full, caps[1])
    n_te = n_te_all - n_ca_full if caps[2] is None else min(n_te_all - n_ca_full, caps[2])
    for s, split_name in zip((n_tr, n_ca, n_te), ("train", "cal", "test")):
        if s <= 0:
            raise ValueError(f"split `{split_name}` would be empty ({len(y_train)} official training and {n_te_all} test "
                             f"samples, cal_fraction={cal_fraction})")
    tr_order = stratified_order(y_train, len(y_train), _rng(seed, "train-subsample"), True)
    te_order = stratified_order(y_test, n_te_all, _rng(seed, "split"), True)
    return np.sort(tr_order[:n_tr]), np.sort(te_order[:n_ca]), np.sort(te_order[n_ca_full:n_ca_full + n_te])


def _finite_or_raise(a: np.ndarray | torch.Tensor, what: str, dataset: str) -> None:
    arr = a.numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        n_bad = int((~np.isfinite(arr)).sum())
        raise ValueError(f"dataset {dataset!r}: `{what}` contains {n_bad} NaN or inf value(s)")


def build_tabular(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    *,
    task: str,
    seed: int,
    feature_names: Sequence[str],
    class_names: Sequence[str] | None,
    cal_fraction: float,
    test_fraction: float,
    n_train: int | None,
    n_cal: int | None,
    n_test: int | None,
    standardize_target: bool = True,
    extra: dict[str, Any] | None = None,
) -> Dataset:
    """Split raw tabular arrays and standardize them with the training split's statistics.

    Args:
        x: raw features ``(N, D)`` (any real dtype, finite).
        y: class labels ``(N,)`` in ``[0, K)`` or regression targets ``(N,)``.
        standardize_target: regression only: also standardize ``y`` with training statistics (kept in
            ``info.extra["target_mean"]`` / ``["target_std"]`` to map predictions back).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y)
    if x.ndim != 2:
        raise ValueError(f"dataset {name!r}: features must be (N, D), got shape {x.shape}")
    _finite_or_raise(x, "x", name)
    if task == "regression":
        y = y.astype(np.float64)
        _finite_or_raise(y, "y", name)
    classification = task == "classification"
    tr, ca, te = split_indices(
        y if classification else None, len(y), seed=seed, stratify=classification,
        cal_fraction=cal_fraction, test_fraction=test_fraction, n_train=n_train, n_cal=n_cal, n_test=n_test,
    )
    mean = x[tr].mean(0)
    std = x[tr].std(0)
    std = np.where(std > 1e-12, std, 1.0)
    xs = ((x - mean) / std).astype(np.float32)
    extra = dict(extra or {})
    if classification:
        yt = torch.as_tensor(y.astype(np.int64))
        n_classes = len(class_names) if class_names is not None else int(y.max()) + 1
    else:
        if standardize_target:
            t_mean, t_std = float(y[tr].mean()), float(y[tr].std()) or 1.0
        else:
            t_mean, t_std = 0.0, 1.0
        extra.update(target_mean=t_mean, target_std=t_std, target_standardized=bool(standardize_target))
        yt = torch.as_tensor(((y - t_mean) / t_std).astype(np.float32))
        n_classes = 1
    xt = torch.from_numpy(xs)
    train = Split(xt[tr].clone(), yt[tr].clone())
    info = DatasetInfo(
        name=name,
        task=task,
        kind="tabular",
        input_shape=(x.shape[1],),
        n_classes=n_classes,
        feature_names=tuple(str(f) for f in feature_names),
        class_names=None if not classification else tuple(str(c) for c in class_names),
        train_mean=train.x.mean(0),
        normalization=None,
        standardization=(torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32)),
        extra=extra,
    )
    return Dataset(info, train, Split(xt[ca].clone(), yt[ca].clone()), Split(xt[te].clone(), yt[te].clone()))


def channel_names(c: int) -> tuple[str, ...]:
    """Channel names used as ``feature_names`` of image datasets."""
    return ("red", "green", "blue") if c == 3 else ("intensity",) if c == 1 else tuple(f"channel_{i}" for i in range(c))


def build_image(
    name: str,
    train: Split,
    cal: Split,
    test: Split,
    *,
    class_names: Sequence[str],
    extra: dict[str, Any] | None = None,
) -> Dataset:
    """Assemble an image dataset from float32 [0, 1] splits; computes ``train_mean`` and the
    per-channel training ``(mean, std)`` for ``info.normalization``."""
    for split_name, s in (("train", train), ("cal", cal), ("test", test)):
        if s.x.ndim != 4:
            raise ValueError(f"split `{split_name}` of {name!r}: images must be (N, C, H, W), got {tuple(s.x.shape)}")
        _finite_or_raise(s.x, f"{split_name}.x", name)
    x = train.x
    # float64 sums, rounded to 6 decimals: the statistics (and the model cache keys they enter) must not
    # depend on the order of a float32 reduction, which changes with the number of CPU threads
    x64 = x.double()
    ch_mean = x64.mean(dim=(0, 2, 3))
    ch_std = x64.std(dim=(0, 2, 3)).clamp_min(1e-6)
    info = DatasetInfo(
        name=name,
        task="classification",
        kind="image",
        input_shape=tuple(x.shape[1:]),
        n_classes=len(class_names),
        feature_names=channel_names(x.shape[1]),
        class_names=tuple(str(c) for c in class_names),
        train_mean=x.mean(0) if len(x) else torch.zeros(x.shape[1:]),
        normalization=(tuple(round(float(v), 6) for v in ch_mean), tuple(round(float(v), 6) for v in ch_std)),
        standardization=None,
        extra=dict(extra or {}),
    )
    return Dataset(info, train, cal, test)

