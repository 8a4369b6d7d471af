"""Real datasets in their official on-disk formats: CIFAR-10/100, STL-10, an ImageNet validation folder,
California housing and OpenML.

Nothing is downloaded unless ``allow_download=True`` (a notebook's ``ALLOW_DOWNLOAD``); without the
files every loader raises ``FileNotFoundError`` naming the exact folder and files to put in place.

The CIFAR and STL-10 readers parse torchvision's file layout themselves (the same pickle batches /
binary files that ``torchvision.datasets.CIFAR10`` / ``STL10`` read) instead of instantiating the
torchvision classes: those verify the md5 of every file, so they refuse anything but the full
official archives, and they decode every image even when only a subsample is needed. With
``allow_download=True`` the torchvision classes are used for the download (with its checksums), then
the files are read by the same code path.
"""

from __future__ import annotations

import gzip
import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .._validation import check_choice, check_int
from ._base import (
    Dataset,
    Split,
    build_image,
    build_tabular,
    cal_from_test_indices,
    official_split_indices,
    register_dataset,
    resolve_data_dir,
    split_indices,
)

__all__: list[str] = []

_DOWNLOAD_HINT = "or pass allow_download=True (ALLOW_DOWNLOAD=True in a notebook) to download it"


def _missing(dataset: str, root: Path, expected: list[Path], how: str) -> FileNotFoundError:
    missing = [p for p in expected if not p.exists()]
    lines = "\n".join(f"  {p}" for p in missing[:12]) + ("\n  ..." if len(missing) > 12 else "")
    return FileNotFoundError(
        f"dataset {dataset!r} not found under data_dir={str(root)!r}; missing file(s):\n{lines}\n{how}"
    )


def _to_float_images(u8: np.ndarray) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(u8)).float().div_(255.0)


def _image_dataset_from_official(
    name: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    class_names: list[str],
    *,
    seed: int,
    cal_fraction: float,
    n_train: int | None,
    n_cal: int | None,
    n_test: int | None,
    image_size: int | None = None,
    extra: dict[str, Any] | None = None,
) -> Dataset:
    """uint8 (N, C, H, W) official train/test arrays -> Dataset (cal carved from the official train split)."""
    tr, ca, te = official_split_indices(
        y_train, y_test, seed=seed, cal_fraction=cal_fraction, n_train=n_train, n_cal=n_cal, n_test=n_test
    )

    def make(x: np.ndarray, y: np.ndarray, idx: np.ndarray) -> Split:
        xt = _to_float_images(x[idx])
        if image_size is not None and xt.shape[-1] != image_size:
            xt = F.interpolate(xt, size=(image_size, image_size), mode="bilinear", antialias=True,
                               align_corners=False).clamp_(0.0, 1.0)
        return Split(xt, torch.as_tensor(np.asarray(y)[idx].astype(np.int64)))

    return build_image(
        name, make(x_train, y_train, tr), make(x_train, y_train, ca), make(x_test, y_test, te),
        class_names=class_names, extra=extra,
    )


# ----------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100 (python pickle batches, torchvision layout)
# ----------------------------------------------------------------------------------------------

_CIFAR = {
    "cifar10": dict(
        folder="cifar-10-batches-py", train=[f"data_batch_{i}" for i in range(1, 6)], test=["test_batch"],
        meta="batches.meta", meta_key="label_names", label_key="labels",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", tv="CIFAR10", size="163 MB",
    ),
    "cifar100": dict(
        folder="cifar-100-python", train=["train"], test=["test"], meta="meta", meta_key="fine_label_names",
        label_key="fine_labels", url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", tv="CIFAR100",
        size="161 MB",
    ),
}


def _read_cifar_batches(folder: Path, files: list[str], label_key: str) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for f in files:
        with open(folder / f, "rb") as fh:
            entry = pickle.load(fh, encoding="latin1")
        xs.append(np.asarray(entry["data"], dtype=np.uint8))
        ys.append(np.asarray(entry[label_key] if label_key in entry else entry["labels"], dtype=np.int64))
    return np.vstack(xs).reshape(-1, 3, 32, 32), np.concatenate(ys)


def _load_cifar(name: str, data_dir: Any, allow_download: bool, seed: int, image_size: int = 32, **opts: Any) -> Dataset:
    image_size = check_int(image_size, "image_size", low=8, high=1024)
    spec = _CIFAR[name]
    root = resolve_data_dir(data_dir)
    folder = root / spec["folder"]
    expected = [folder / f for f in spec["train"] + spec["test"] + [spec["meta"]]]
    if not all(p.exists() for p in expected):
        if not allow_download:
            raise _missing(
                name, root, expected,
                f"Extract the official python version ({spec['url']}) into {root} so that {folder} holds "
                f"{', '.join(spec['train'] + spec['test'] + [spec['meta']])} (torchvision's layout), "
                f"{_DOWNLOAD_HINT} ({spec['size']}).",
            )
        import torchvision.datasets as tvd

        root.mkdir(parents=True, exist_ok=True)
        getattr(tvd, spec["tv"])(root=str(root), train=True, download=True)
    x_tr, y_tr = _read_cifar_batches(folder, spec["train"], spec["label_key"])
    x_te, y_te = _read_cifar_batches(folder, spec["test"], spec["label_key"])
    with open(folder / spec["meta"], "rb") as fh:
        class_names = list(pickle.load(fh, encoding="latin1")[spec["meta_key"]])
    return _image_dataset_from_official(
        name, x_tr, y_tr, x_te, y_te, class_names, seed=seed, image_size=None if image_size == 32 else image_size,
        extra={"source": str(folder)}, **opts,
    )


@register_dataset("cifar10")
def load_cifar10(
    *,
    data_dir: Any = None,
    allow_download: bool = False,
    seed: int = 0,
    cal_fraction: float = 0.1,
    n_train: int | None = None,
    n_cal: int | None = None,
    n_test: int | None = None,
    image_size: int = 32,
) -> Dataset:
    """CIFAR-10 (32x32 RGB, 10 classes) from ``<data_dir>/cifar-10-batches-py/`` (torchvision's layout:
    pickle batches ``data_batch_1`` .. ``data_batch_5``, ``test_batch``, ``batches.meta``).

    The files are read directly in torchvision's format (no md5 check, so small test files in the same
    format load too); ``allow_download=True`` downloads the official archive with torchvision first.

    Args:
        cal_fraction: fraction of the official 50 000 training images carved out (stratified) as the
            calibration split; the test split is the official test set.
        n_train, n_cal, n_test: optional caps (stratified subsamples; only those images are decoded).
        image_size: output side; other than 32 resizes with antialiased bilinear interpolation.
    """
    return _load_cifar("cifar10", data_dir, allow_download, seed, image_size=image_size, cal_fraction=cal_fraction,
                       n_train=n_train, n_cal=n_cal, n_test=n_test)


@register_dataset("cifar100")
def load_cifar100(
    *,
    data_dir: Any = None,
    allow_download: bool = False,
    seed: int = 0,
    cal_fraction: float = 0.1,
    n_train: int | None = None,
    n_cal: int | None = None,
    n_test: int | None = None,
    image_size: int = 32,
) -> Dataset:
    """CIFAR-100 (32x32 RGB, 100 fine classes) from ``<data_dir>/cifar-100-python/`` (``train``, ``test``,
    ``meta`` pickles, torchvision's layout), read directly like :func:`load_cifar10`.

    Args:
        cal_fraction: fraction of the official training images used as the calibration split.
        n_train, n_cal, n_test: optional caps (stratified subsamples).
        image_size: output side; other than 32 resizes with antialiased bilinear interpolation.
    """
    return _load_cifar("cifar100", data_dir, allow_download, seed, image_size=image_size, cal_fraction=cal_fraction,
                       n_train=n_train, n_cal=n_cal, n_test=n_test)


# ----------------------------------------------------------------------------------------------
# STL-10 (binary files, torchvision layout)
# ----------------------------------------------------------------------------------------------

_STL_CLASSES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]


def _read_stl(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    x = np.fromfile(folder / f"{split}_X.bin", dtype=np.uint8)
    if x.size % (3 * 96 * 96):
        raise ValueError(f"{folder / f'{split}_X.bin'} has {x.size} bytes, not a multiple of 3*96*96")
    # column-major 96x96 planes, as torchvision's STL10 reads them
    x = x.reshape(-1, 3, 96, 96).transpose(0, 1, 3, 2)
    y = np.fromfile(folder / f"{split}_y.bin", dtype=np.uint8).astype(np.int64) - 1  # labels 1..10 on disk
    if len(y) != len(x):
        raise ValueError(f"STL-10 {split}: {len(x)} images but {len(y)} labels in {folder}")
    return x, y


@register_dataset("stl10")
def load_stl10(
    *,
    data_dir: Any = None,
    allow_download: bool = False,
    seed: int = 0,
    cal_fraction: float = 0.1,
    n_train: int | None = None,
    n_cal: int | None = None,
    n_test: int | None = None,
    image_size: int = 96,
) -> Dataset:
    """STL-10 (96x96 RGB, 10 classes; the 5 000 labelled training and 8 000 test images) from
    ``<data_dir>/stl10_binary/`` (``train_X.bin``, ``train_y.bin``, ``test_X.bin``, ``test_y.bin``,
    optional ``class_names.txt``), read directly in torchvision's binary format.

    Args:
        cal_fraction: fraction of the official training images used as the calibration split.
        n_train, n_cal, n_test: optional caps (stratified subsamples).
        image_size: output side; other than 96 resizes with antialiased bilinear interpolation.
    """
    image_size = check_int(image_size, "image_size", low=8, high=1024)
    root = resolve_data_dir(data_dir)
    folder = root / "stl10_binary"
    expected = [folder / f for f in ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin")]
    if not all(p.exists() for p in expected):
        if not allow_download:
            raise _missing(
                "stl10", root, expected,
                f"Extract the official binary archive (https://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz) "
                f"into {root} so that {folder} holds train_X.bin, train_y.bin, test_X.bin, test_y.bin and "
                f"class_names.txt (torchvision's layout), {_DOWNLOAD_HINT} (2.6 GB).",
            )
        import torchvision.datasets as tvd

        root.mkdir(parents=True, exist_ok=True)
        tvd.STL10(root=str(root), split="train", download=True)
    x_tr, y_tr = _read_stl(folder, "train")
    x_te, y_te = _read_stl(folder, "test")
    names_file = folder / "class_names.txt"
    class_names = names_file.read_text().split() if names_file.exists() else list(_STL_CLASSES)
    return _image_dataset_from_official(
        "stl10", x_tr, y_tr, x_te, y_te, class_names, seed=seed, cal_fraction=cal_fraction,
        n_train=n_train, n_cal=n_cal, n_test=n_test, image_size=None if image_size == 96 else image_size,
        extra={"source": str(folder)},
    )


# ----------------------------------------------------------------------------------------------
# ImageNet validation folder
# ----------------------------------------------------------------------------------------------

_IMG_EXT = (".jpeg", ".jpg", ".png", ".bmp", ".webp")


def _read_synset_names(root: Path, wnids: list[str]) -> list[str]:
    """Human-readable class names from ``LOC_synset_mapping.txt`` / ``synset_words.txt`` if present."""
    for fname in ("LOC_synset_mapping.txt", "synset_words.txt"):
        f = root / fname
        if f.exists():
            mapping = {}
            for line in f.read_text().splitlines():
                parts = line.strip().split(" ", 1)
                if len(parts) == 2:
                    mapping[parts[0]] = parts[1].split(",")[0].strip()
            return [mapping.get(w, w) for w in wnids]
    return list(wnids)


def _load_image(path: Path, resize: int, crop: int) -> np.ndarray:
    """Decode, resize the shorter side to ``resize`` (bilinear, antialiased) and centre-crop ``crop``."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        scale = resize / min(w, h)
        nw, nh = max(crop, round(w * scale)), max(crop, round(h * scale))
        im = im.resize((nw, nh), Image.BILINEAR, reducing_gap=None)
        left, top = (nw - crop) // 2, (nh - crop) // 2
        im = im.crop((left, top, left + crop, top + crop))
        return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)


@register_dataset("imagenet")
def load_imagenet(
    *,
    data_dir: Any = None,
    allow_download: bool = False,
    seed: int = 0,
    image_size: int = 224,
    resize: int = 256,
    cal_fraction: float = 0.2,
    test_fraction: float = 0.2,
    n_train: int | None = 2000,
    n_cal: int | None = 2000,
    n_test: int | None = 2000,
) -> Dataset:
    """A local ILSVRC2012 validation folder, ``<data_dir>/imagenet/val/<wnid>/*.JPEG`` (ImageFolder layout).

    Classes are the sorted ``<wnid>`` folder names, so with all 1000 folders the label indices match
    torchvision's pretrained ImageNet classifiers. Names come from ``<data_dir>/imagenet/LOC_synset_mapping.txt``
    (or ``synset_words.txt``) when present, else the wnids. All three splits are stratified subsets of
    the validation images; only the selected images are decoded (resize the shorter side to ``resize``,
    centre-crop ``image_size``, as in the standard evaluation transform). ImageNet cannot be
    downloaded automatically (licence), so ``allow_download`` has no effect.

    Args:
        image_size: side of the centre crop (default 224).
        resize: shorter side before cropping (>= image_size; default 256).
        cal_fraction, test_fraction: fractions of the validation images for calibration / test.
        n_train, n_cal, n_test: caps on the split sizes (default 2000 each, to bound memory:
            each 224x224 image takes 0.6 MB as float32); ``None`` uses the whole fraction.
    """
    image_size = check_int(image_size, "image_size", low=8, high=2048)
    resize = check_int(resize, "resize", low=image_size, high=4096)
    root = resolve_data_dir(data_dir)
    val = root / "imagenet" / "val"
    wnids = sorted(p.name for p in val.iterdir() if p.is_dir()) if val.is_dir() else []
    files: list[Path] = []
    labels: list[int] = []
    for k, w in enumerate(wnids):
        imgs = sorted(p for p in (val / w).iterdir() if p.suffix.lower() in _IMG_EXT)
        files += imgs
        labels += [k] * len(imgs)
    if not files:
        raise FileNotFoundError(
            f"dataset 'imagenet' not found: expected the ILSVRC2012 validation images sorted into one folder per "
            f"class, {val}/<wnid>/*.JPEG (e.g. {val}/n01440764/ILSVRC2012_val_00000293.JPEG; the ImageFolder "
            f"layout, 50 000 images in 1000 folders). "
            + ("That folder exists but holds no class folders with images. " if val.is_dir() else "")
            + "ImageNet cannot be downloaded automatically (licence; ALLOW_DOWNLOAD=True does not help): get "
            "ILSVRC2012_img_val.tar from image-net.org and sort it with the official validation labels."
        )
    y = np.asarray(labels, dtype=np.int64)
    n_classes_present = len(wnids)
    tr, ca, te = split_indices(
        y, len(y), seed=seed, stratify=True, cal_fraction=cal_fraction, test_fraction=test_fraction,
        n_train=n_train, n_cal=n_cal, n_test=n_test,
    )

    def make(idx: np.ndarray) -> Split:
        arr = np.stack([_load_image(files[i], resize, image_size) for i in idx])
        return Split(_to_float_images(arr), torch.as_tensor(y[idx]))

    return build_image(
        "imagenet", make(tr), make(ca), make(te), class_names=_read_synset_names(root / "imagenet", wnids),
        extra={"source": str(val), "wnids": wnids, "n_classes_present": n_classes_present,
               "files": {"train": [str(files[i]) for i in tr], "cal": [str(files[i]) for i in ca],
                         "test": [str(files[i]) for i in te]}},
    )


# ----------------------------------------------------------------------------------------------
# California housing (scikit-learn's cache file)
# ----------------------------------------------------------------------------------------------


@register_dataset("california_housing")
def load_california_housing(
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
    """California housing (20 640 districts, 8 features, median house value in 100 000 USD; regression)
    via ``sklearn.datasets.fetch_california_housing(data_home=<data_dir>)``.

    The file is scikit-learn's cache ``<data_dir>/cal_housing_py3.pkz`` (written by that function on a
    machine with internet access); ``allow_download=True`` lets scikit-learn download it.

    Args:
        cal_fraction, test_fraction, n_train, n_cal, n_test: split fractions and optional caps.
        standardize_target: standardize targets with training statistics (kept in ``info.extra``).
    """
    from sklearn.datasets import fetch_california_housing

    root = resolve_data_dir(data_dir)
    f = root / "cal_housing_py3.pkz"
    if not f.exists() and not allow_download:
        raise _missing(
            "california_housing", root, [f],
            f"Run sklearn.datasets.fetch_california_housing(data_home={str(root)!r}) on a machine with internet "
            f"access and copy {f.name} into {root}, {_DOWNLOAD_HINT}.",
        )
    bunch = fetch_california_housing(data_home=str(root), download_if_missing=bool(allow_download))
    return build_tabular(
        "california_housing", bunch.data, bunch.target, task="regression", seed=seed,
        feature_names=list(bunch.feature_names), class_names=None, cal_fraction=cal_fraction,
        test_fraction=test_fraction, n_train=n_train, n_cal=n_cal, n_test=n_test,
        standardize_target=standardize_target, extra={"source": str(f), "target_unit": "100,000 USD"},
    )


# ----------------------------------------------------------------------------------------------
# OpenML (scikit-learn's cache layout)
# ----------------------------------------------------------------------------------------------


def _openml_cached(base: Path, spec: str) -> tuple[bool, list[Path]]:
    """Whether fetch_openml can run offline from the cache under ``base`` (= <data_dir>/openml); the
    files it would need (as far as they can be known without the network)."""
    api = base / "openml.org" / "api" / "v1" / "json" / "data"
    needed: list[Path] = []
    if spec.isdigit():
        data_id = spec
    else:
        search = api / "list" / "data_name" / spec.lower() / "limit" / "2" / "status" / "active" / ".gz"
        needed.append(search)
        if not search.exists():
            return False, needed
        try:
            with gzip.open(search, "rt", encoding="utf-8") as fh:
                data_id = str(json.load(fh)["data"]["dataset"][0]["did"])
        except Exception:
            return False, needed
    desc = api / f"{data_id}.gz"
    needed += [desc, api / "features" / f"{data_id}.gz", api / "qualities" / f"{data_id}.gz"]
    if desc.exists():
        try:
            with gzip.open(desc, "rt", encoding="utf-8") as fh:
                url = json.load(fh)["data_set_description"]["url"]
            from urllib.parse import urlparse

            needed.append(base / "openml.org" / (urlparse(url).path.lstrip("/") + ".gz"))
        except Exception:
            pass
    return all(p.exists() for p in needed) and desc.exists(), needed


@register_dataset("openml")
def load_openml(
    *,
    spec: str,
    data_dir: Any = None,
    allow_download: bool = False,
    seed: int = 0,
    task: str = "auto",
    target: str | None = None,
    missing: str = "drop",
    cal_fraction: float = 0.2,
    test_fraction: float = 0.2,
    n_train: int | None = None,
    n_cal: int | None = None,
    n_test: int | None = None,
    standardize_target: bool = True,
) -> Dataset:
    """An OpenML dataset, ``"openml:<id or name>"`` (e.g. ``"openml:61"`` or ``"openml:iris"``), through
    ``sklearn.datasets.fetch_openml(data_home=<data_dir>)`` and its cache ``<data_dir>/openml/openml.org/...``.

    Categorical features are one-hot encoded (names ``"column=value"``), numeric ones kept; all are
    standardized with training statistics. A categorical / string / boolean target makes a
    classification task (classes sorted), a numeric target a regression task.

    Args:
        spec: the OpenML data id (digits) or dataset name (latest active version).
        task: ``"auto"``, ``"classification"`` or ``"regression"``.
        target: target column (default: the dataset's default target attribute).
        missing: rows with missing values: ``"drop"`` them or ``"error"``.
        cal_fraction, test_fraction, n_train, n_cal, n_test: split fractions and optional caps.
        standardize_target: regression only: standardize targets with training statistics.
    """
    check_choice(task, "task", ["auto", "classification", "regression"])
    check_choice(missing, "missing", ["drop", "error"])
    if target is not None and not isinstance(target, str):
        raise TypeError(f"`target` must be a column name (str) or None, got {type(target).__name__}")
    root = resolve_data_dir(data_dir)
    base = root / "openml"
    cached, needed = _openml_cached(base, spec)
    if not cached and not allow_download:
        raise _missing(
            f"openml:{spec}", root, needed,
            f"Run sklearn.datasets.fetch_openml({'data_id=' + spec if spec.isdigit() else 'name=' + repr(spec)}, "
            f"data_home=...) on a machine with internet access and copy the resulting openml/ folder to {base}, "
            f"{_DOWNLOAD_HINT}.",
        )
    import pandas as pd
    from sklearn.datasets import fetch_openml

    kw: dict[str, Any] = {"data_id": int(spec)} if spec.isdigit() else {"name": spec}
    if target is not None:
        kw["target_column"] = target
    bunch = fetch_openml(data_home=str(root), as_frame=True, parser="auto", cache=True, **kw)
    X, y = bunch.data, bunch.target
    if y is None:
        raise ValueError(f"OpenML dataset {spec!r} has no default target; pass the `target` option (a column name)")
    if isinstance(y, pd.DataFrame):
        if y.shape[1] != 1:
            raise ValueError(f"OpenML dataset {spec!r} has {y.shape[1]} targets; pick one with the `target` option")
        y = y.iloc[:, 0]
    is_cat = isinstance(y.dtype, pd.CategoricalDtype) or y.dtype == object or y.dtype == bool
    task_ = ("classification" if is_cat else "regression") if task == "auto" else task
    cat_cols = [c for c in X.columns if isinstance(X[c].dtype, pd.CategoricalDtype) or X[c].dtype in (object, bool)]
    rows_missing = X.isna().any(axis=1).to_numpy() | y.isna().to_numpy()
    if rows_missing.any():
        if missing == "error":
            raise ValueError(f"OpenML dataset {spec!r} has {int(rows_missing.sum())} row(s) with missing values "
                             "(use missing='drop')")
        X, y = X.loc[~rows_missing], y.loc[~rows_missing]
    Xn = pd.get_dummies(X, columns=cat_cols, prefix_sep="=", dtype=float) if cat_cols else X
    x = Xn.to_numpy(dtype=np.float64)
    if task_ == "classification":
        codes, classes = pd.factorize(y.astype(str), sort=True)
        yv, class_names = codes.astype(np.int64), [str(c) for c in classes]
    else:
        try:
            yv = y.to_numpy(dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"OpenML dataset {spec!r}: target is not numeric, use task='classification'") from exc
        class_names = None
    name = f"openml:{spec}"
    return build_tabular(
        name, x, yv, task=task_, seed=seed, feature_names=[str(c) for c in Xn.columns], class_names=class_names,
        cal_fraction=cal_fraction, test_fraction=test_fraction, n_train=n_train, n_cal=n_cal, n_test=n_test,
        standardize_target=standardize_target,
        extra={"source": f"https://www.openml.org/d/{bunch.details.get('id', spec) if hasattr(bunch, 'details') else spec}",
               "openml_name": getattr(bunch, "details", {}).get("name"), "categorical_features": cat_cols},
    )


# ----------------------------------------------------------------------------------------------
# Food-101 and CUB-200-2011 (official folder layouts; Calibrate to Interpret's datasets)
# ----------------------------------------------------------------------------------------------


def _decode_split(files: list[Path], labels: np.ndarray, idx: np.ndarray, resize: int, crop: int) -> Split:
    arr = np.stack([_load_image(files[i], resize, crop) for i in idx]) if len(idx) else np.zeros((0, 3, crop, crop), np.uint8)
    return Split(_to_float_images(arr), torch.as_tensor(labels[idx].astype(np.int64)))


def _fgvc_dataset(name: str, train_files, y_train, test_files, y_test, class_names, *, seed, cal_fraction, n_train,
                  n_cal, n_test, image_size, resize, source) -> Dataset:

    image_size = check_int(image_size, "image_size", low=8, high=2048)
    resize = check_int(resize, "resize", low=image_size, high=4096)
    tr, ca, te = cal_from_test_indices(y_train, y_test, seed=seed, cal_fraction=cal_fraction, n_train=n_train,
                                       n_cal=n_cal, n_test=n_test)
    return build_image(
        name, _decode_split(train_files, y_train, tr, resize, image_size),
        _decode_split(test_files, y_test, ca, resize, image_size), _decode_split(test_files, y_test, te, resize, image_size),
        class_names=class_names,
        extra={"source": source, "cal_from": "official test split",
               "files": {"train": [str(train_files[i]) for i in tr], "cal": [str(test_files[i]) for i in ca],
                         "test": [str(test_files[i]) for i in te]}},
    )


@register_dataset("food101")
def load_food101(
    *,
    data_dir: Any = None,
    allow_download: bool = False,
    seed: int = 0,
    cal_fraction: float = 0.5,
    n_train: int | None = 2000,
    n_cal: int | None = 2500,
    n_test: int | None = 2500,
    image_size: int = 224,
    resize: int = 224,
) -> Dataset:
    """Food-101 (101 classes; 75 750 training and 25 250 test images) from ``<data_dir>/food-101/``, the
    official archive's layout (also torchvision's): ``images/<class>/<id>.jpg``, ``meta/train.txt`` and
    ``meta/test.txt`` (one ``<class>/<id>`` per line, no extension), ``meta/classes.txt`` (class order;
    sorted folder names when absent).

    As in Calibrate to Interpret, the calibration split is carved from the official **test** split
    (stratified; the rest of the test split is the evaluation split, disjoint from it). Only the
    selected images are decoded: shorter side resized to ``resize``, centre crop ``image_size``.

    Args:
        cal_fraction: share of the official test split reserved for calibration (default 0.5).
        n_train, n_cal, n_test: caps (stratified subsamples; default 2000 / 2500 / 2500, the paper's
            2500 calibration and 2500 evaluation images); None uses the whole split.
        image_size: side of the centre crop (default 224).
        resize: shorter side before cropping (>= image_size).

    Raises:
        FileNotFoundError: the folder or its ``meta`` files are missing (unless ``allow_download``:
            torchvision then downloads the official 5 GB archive).
        ValueError: a listed image is missing.
    """
    root = resolve_data_dir(data_dir)
    folder = root / "food-101"
    expected = [folder / "meta" / "train.txt", folder / "meta" / "test.txt", folder / "images"]
    if not all(p.exists() for p in expected):
        if not allow_download:
            raise _missing(
                "food101", root, expected,
                f"Extract the official archive (http://data.vision.ee.ethz.ch/cvl/food-101.tar.gz) into {root} so that "
                f"{folder} holds images/<class>/<id>.jpg and meta/train.txt, meta/test.txt, meta/classes.txt, "
                f"{_DOWNLOAD_HINT} (5 GB).",
            )
        import torchvision.datasets as tvd

        root.mkdir(parents=True, exist_ok=True)
        tvd.Food101(root=str(root), split="train", download=True)
    classes_file = folder / "meta" / "classes.txt"
    classes = (classes_file.read_text().split() if classes_file.exists()
               else sorted(p.name for p in (folder / "images").iterdir() if p.is_dir()))
    index = {c: k for k, c in enumerate(classes)}

    def read(list_file: Path) -> tuple[list[Path], np.ndarray]:
        files, labels = [], []
        for line in list_file.read_text().split():
            cls = line.split("/", 1)[0]
            if cls not in index:
                raise ValueError(f"{list_file}: class {cls!r} of {line!r} is not in {classes_file.name}")
            f = folder / "images" / f"{line}.jpg"
            files.append(f)
            labels.append(index[cls])
        missing = [f for f in files if not f.exists()]
        if missing:
            raise ValueError(f"{len(missing)} image(s) listed in {list_file} are missing, e.g. {missing[0]}")
        return files, np.asarray(labels, dtype=np.int64)

    f_tr, y_tr = read(folder / "meta" / "train.txt")
    f_te, y_te = read(folder / "meta" / "test.txt")
    return _fgvc_dataset("food101", f_tr, y_tr, f_te, y_te, [c.replace("_", " ") for c in classes], seed=seed,
                         cal_fraction=cal_fraction, n_train=n_train, n_cal=n_cal, n_test=n_test, image_size=image_size,
                         resize=resize, source=str(folder))


@register_dataset("cub200")
def load_cub200(
    *,
    data_dir: Any = None,
    allow_download: bool = False,
    seed: int = 0,
    cal_fraction: float = 0.5,
    n_train: int | None = 2000,
    n_cal: int | None = 2500,
    n_test: int | None = 2500,
    image_size: int = 224,
    resize: int = 256,
) -> Dataset:
    """CUB-200-2011 (200 bird species; 5994 training and 5794 test images) from ``<data_dir>/CUB_200_2011/``,
    the official archive's layout: ``images.txt`` (``<image id> <relative path>``), ``image_class_labels.txt``
    (``<image id> <class id 1..200>``), ``train_test_split.txt`` (``<image id> <1 = train, 0 = test>``),
    optional ``classes.txt`` (``<class id> <name>``) and ``images/<class folder>/<file>.jpg``.

    The calibration split is carved from the official test split, as in Calibrate to Interpret
    ("Birds": 2500 calibration images). Only the selected images are decoded (shorter side to
    ``resize``, centre crop ``image_size``).

    Args:
        cal_fraction: share of the official test split reserved for calibration (default 0.5).
        n_train, n_cal, n_test: caps (stratified subsamples); None uses the whole split.
        image_size: side of the centre crop (default 224).
        resize: shorter side before cropping (>= image_size; default 256).

    Raises:
        FileNotFoundError: missing metadata files (unless ``allow_download``: the official archive is
            downloaded from data.caltech.edu).
        ValueError: inconsistent metadata (ids without a label or split, class ids outside 1..K, missing images).
    """
    root = resolve_data_dir(data_dir)
    folder = root / "CUB_200_2011"
    expected = [folder / f for f in ("images.txt", "image_class_labels.txt", "train_test_split.txt")]
    if not all(p.exists() for p in expected):
        url = "https://data.caltech.edu/records/65de6-vbk51/files/CUB_200_2011.tgz"
        if not allow_download:
            raise _missing(
                "cub200", root, expected,
                f"Extract the official archive ({url}) into {root} so that {folder} holds images.txt, "
                f"image_class_labels.txt, train_test_split.txt, classes.txt and images/, {_DOWNLOAD_HINT} (1.1 GB).",
            )
        from torchvision.datasets.utils import download_and_extract_archive

        root.mkdir(parents=True, exist_ok=True)
        download_and_extract_archive(url, download_root=str(root), filename="CUB_200_2011.tgz")

    def table(fname: str) -> dict[int, str]:
        out = {}
        for line in (folder / fname).read_text().splitlines():
            if line.strip():
                k, v = line.strip().split(" ", 1)
                out[int(k)] = v.strip()
        return out

    paths, labels, split = table("images.txt"), table("image_class_labels.txt"), table("train_test_split.txt")
    ids = sorted(paths)
    bad = [i for i in ids if i not in labels or i not in split]
    if bad:
        raise ValueError(f"CUB-200-2011: image id(s) {bad[:5]} of images.txt have no class label or train/test flag")
    cls = np.asarray([int(labels[i]) for i in ids], dtype=np.int64)
    classes_file = folder / "classes.txt"
    names = table("classes.txt") if classes_file.exists() else {}
    n_classes = max(len(names), int(cls.max()))
    if cls.min() < 1 or cls.max() > n_classes:
        raise ValueError(f"CUB-200-2011: class ids must lie in 1..{n_classes}, got {int(cls.min())}..{int(cls.max())}")
    class_names = [names.get(k, f"class_{k}").split(".", 1)[-1].replace("_", " ") for k in range(1, n_classes + 1)]
    files = [folder / "images" / paths[i] for i in ids]
    missing = [f for f in files if not f.exists()]
    if missing:
        raise ValueError(f"{len(missing)} image(s) listed in {folder / 'images.txt'} are missing, e.g. {missing[0]}")
    is_train = np.asarray([split[i].strip() == "1" for i in ids])
    y = cls - 1
    f_tr = [f for f, t in zip(files, is_train) if t]
    f_te = [f for f, t in zip(files, is_train) if not t]
    return _fgvc_dataset("cub200", f_tr, y[is_train], f_te, y[~is_train], class_names, seed=seed, cal_fraction=cal_fraction,
                         n_train=n_train, n_cal=n_cal, n_test=n_test, image_size=image_size, resize=resize, source=str(folder))
