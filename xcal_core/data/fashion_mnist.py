"""Fashion-MNIST: 70 000 real 28x28 grayscale images of garments in 10 classes, read offline.

The four official idx files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each gzipped or not) are parsed with numpy
from the first of these folders that holds all four:

1. ``<data_dir>/fashion-mnist/``;
2. ``<data_dir>/FashionMNIST/raw/`` (torchvision's layout);
3. ``/usr/share/datasets/fashion-mnist/``, where Debian's package ``dataset-fashion-mnist`` (30 MB)
   installs them: ``apt-get update && apt-get install -y dataset-fashion-mnist``.

With ``allow_download=True`` and none of them complete, torchvision downloads the files into
``<data_dir>/FashionMNIST/raw/``. ``make run`` and ``make test`` install the Debian package when the
files are missing and they can (``apt-get`` present, running as root).

References:
    Xiao, Rasul, Vollgraf. Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine Learning
    Algorithms. arXiv:1708.07747, 2017.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .._validation import check_fraction, check_int
from ._base import Dataset, Split, build_image, official_split_indices, register_dataset, resolve_data_dir

__all__ = ["FASHION_MNIST_CLASSES", "FASHION_MNIST_FILES", "SYSTEM_FASHION_MNIST_DIR", "fashion_mnist_dirs",
           "find_fashion_mnist", "read_idx", "garment_masks"]

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
FASHION_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
SYSTEM_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where Debian's ``dataset-fashion-mnist`` package puts the idx files (``$XCAL_FASHION_MNIST_SYSTEM_DIR``
overrides it, e.g. for tests)."""

_MAGIC = {2049: 1, 2051: 3}  # unsigned-byte idx files: labels (1-D), images (3-D)
_INSTALL = "apt-get update && apt-get install -y dataset-fashion-mnist"


def _system_dir() -> Path:
    env = os.environ.get("XCAL_FASHION_MNIST_SYSTEM_DIR")
    return Path(env) if env else SYSTEM_FASHION_MNIST_DIR


def fashion_mnist_dirs(data_dir: Any = None) -> list[Path]:
    """The three folders searched, in order: ``<data_dir>/fashion-mnist``, ``<data_dir>/FashionMNIST/raw``
    and the Debian package's ``/usr/share/datasets/fashion-mnist``."""
    root = resolve_data_dir(data_dir)
    return [root / "fashion-mnist", root / "FashionMNIST" / "raw", _system_dir()]


def _file_in(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        p = folder / name
        if p.is_file():
            return p
    return None


def find_fashion_mnist(data_dir: Any = None) -> dict[str, Path] | None:
    """The four idx files from the first searched folder that holds all of them, or None."""
    for folder in fashion_mnist_dirs(data_dir):
        found = {k: _file_in(folder, stem) for k, stem in FASHION_MNIST_FILES.items()}
        if all(found.values()):
            return found  # type: ignore[return-value]
    return None


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Parse one unsigned-byte idx file (gzipped when its name ends in ``.gz``) into a uint8 array.

    The header is big-endian: two zero bytes, the type code 0x08 (unsigned byte), the number of
    dimensions, then one uint32 per dimension. Label files (magic 2049) are 1-D, image files (magic
    2051) are 3-D ``(N, rows, cols)``.

    Raises:
        ValueError: naming the file, for a wrong magic number, a header that does not fit, or a body
            shorter or longer than the header's sizes (a truncated download).
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as e:  # a truncated gzip stream raises EOFError
        raise ValueError(f"idx file {str(path)!r} cannot be read ({type(e).__name__}: {e}); "
                         f"it is probably truncated or not a gzip file: delete it and reinstall") from None
    if len(raw) < 8:
        raise ValueError(f"idx file {str(path)!r} is truncated: {len(raw)} bytes, shorter than the 8-byte header")
    magic = int.from_bytes(raw[:4], "big")
    if magic not in _MAGIC:
        raise ValueError(f"idx file {str(path)!r} has magic number {magic} (0x{magic:08x}); expected 2049 "
                         f"(labels) or 2051 (images), unsigned-byte idx files")
    ndim = _MAGIC[magic]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"idx file {str(path)!r} is truncated inside its header ({len(raw)} of {header} bytes)")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims)) + header
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "longer than its header says"
        raise ValueError(f"idx file {str(path)!r} is {what}: {len(raw)} bytes, the header {dims} needs {expected}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _read_pair(images: Path, labels: Path) -> tuple[np.ndarray, np.ndarray]:
    x, y = read_idx(images), read_idx(labels)
    if x.ndim != 3:
        raise ValueError(f"idx file {str(images)!r} holds labels (1-D), expected images (magic 2051)")
    if y.ndim != 1:
        raise ValueError(f"idx file {str(labels)!r} holds images (3-D), expected labels (magic 2049)")
    if len(x) != len(y):
        raise ValueError(f"{str(images)!r} has {len(x)} images but {str(labels)!r} has {len(y)} labels")
    if y.size and int(y.max()) >= len(FASHION_MNIST_CLASSES):
        raise ValueError(f"idx file {str(labels)!r} has label {int(y.max())}; Fashion-MNIST labels are 0..9")
    return x, y.astype(np.int64)


def garment_masks(x: torch.Tensor, threshold: float = 0.1, max_hole: int = 4) -> torch.Tensor:
    """Garment silhouettes of grayscale images: pixels above ``threshold``, with holes of at most
    ``max_hole`` pixels closed.

    A proxy for localization, not an annotation: it marks where the garment is bright against the
    black background, so dark parts of a garment (prints, shadows) can fall outside it, and larger
    holes (a bag's handle) stay open on purpose.

    Args:
        x: float32 images ``(N, 1, H, W)`` in [0, 1].
        threshold: intensity above which a pixel belongs to the garment, in (0, 1).
        max_hole: background regions not connected to the image border and of at most this many
            pixels are filled (4-connectivity).

    Returns:
        bool ``(N, H, W)``.
    """
    from scipy import ndimage

    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"`x` must be grayscale images (N, 1, H, W), got {getattr(x, 'shape', type(x))}")
    threshold = check_fraction(threshold, "threshold", open_low=True, open_high=True)
    max_hole = check_int(max_hole, "max_hole", low=0)
    fg = (x[:, 0] > threshold).cpu().numpy()
    out = fg.copy()
    if max_hole > 0 and fg.size:
        # one labelling of the whole stack; the structure connects pixels only within an image
        structure = np.zeros((3, 3, 3), dtype=bool)
        structure[1] = ndimage.generate_binary_structure(2, 1)
        lab, n = ndimage.label(~fg, structure=structure)
        if n:
            sizes = np.bincount(lab.ravel(), minlength=n + 1)
            small = sizes <= max_hole
            small[0] = False
            border = np.concatenate([lab[:, 0].ravel(), lab[:, -1].ravel(), lab[:, :, 0].ravel(), lab[:, :, -1].ravel()])
            small[np.unique(border)] = False
            out |= small[lab]
    return torch.from_numpy(out)


def _missing_message(data_dir: Any) -> str:
    dirs = fashion_mnist_dirs(data_dir)
    names = ", ".join(f"{s}[.gz]" for s in FASHION_MNIST_FILES.values())
    lines = []
    for d in dirs:
        present = [s for s in FASHION_MNIST_FILES.values() if _file_in(d, s)] if d.is_dir() else []
        state = "missing" if not d.is_dir() else f"incomplete ({len(present)} of 4 files)"
        lines.append(f"  {d}  [{state}]")
    return (
        "dataset 'fashion_mnist' not found. Searched, in order:\n" + "\n".join(lines) + "\n"
        f"Any of these provides the four idx files ({names}):\n"
        f"  1. Debian's package (30 MB, offline mirrors work): `{_INSTALL}` (as root; "
        f"`make run` / `make test` do this when they can);\n"
        f"  2. copy the official files into {dirs[0]}/ (or torchvision's layout {dirs[1]}/);\n"
        f"  3. pass allow_download=True (ALLOW_DOWNLOAD=True in a notebook) to download them with torchvision."
    )


@register_dataset("fashion_mnist")
def load_fashion_mnist(
    *,
    data_dir: Any = None,
    allow_download: bool = False,
    seed: int = 0,
    cal_fraction: float = 0.1,
    n_train: int | None = None,
    n_cal: int | None = None,
    n_test: int | None = None,
    image_size: int = 28,
    mask_threshold: float = 0.1,
) -> Dataset:
    """Fashion-MNIST (Xiao et al. 2017): 70 000 real 28x28 grayscale garment images, 10 classes.

    The official 60 000 / 10 000 split: ``cal`` is carved from the official training images
    (stratified, seeded), ``test`` is the official test set (a stratified subsample when ``n_test``
    caps it). ``Split.masks`` holds each garment's silhouette (:func:`garment_masks`), a proxy for
    localization (not an annotation). Files are looked up as described in the module docstring.

    Args:
        cal_fraction: fraction of the 60 000 training images used as the calibration split.
        n_train, n_cal, n_test: optional caps (stratified subsamples; only those images are converted).
        image_size: output side; other than 28 resizes with antialiased bilinear interpolation (masks
            are computed on the resized images).
        mask_threshold: intensity threshold of the silhouettes, in (0, 1).

    Raises:
        FileNotFoundError: no folder holds the four files and ``allow_download`` is False; the
            message lists the three ways to get them.
        ValueError: a truncated file, a wrong magic number, or image and label counts that disagree
            (the message names the file).
    """
    image_size = check_int(image_size, "image_size", low=8, high=1024)
    mask_threshold = check_fraction(mask_threshold, "mask_threshold", open_low=True, open_high=True)
    files = find_fashion_mnist(data_dir)
    if files is None:
        if not allow_download:
            raise FileNotFoundError(_missing_message(data_dir))
        import torchvision.datasets as tvd

        root = resolve_data_dir(data_dir)
        root.mkdir(parents=True, exist_ok=True)
        tvd.FashionMNIST(root=str(root), train=True, download=True)
        tvd.FashionMNIST(root=str(root), train=False, download=True)
        files = find_fashion_mnist(data_dir)
        if files is None:
            raise FileNotFoundError(_missing_message(data_dir))
    x_tr, y_tr = _read_pair(files["train_images"], files["train_labels"])
    x_te, y_te = _read_pair(files["test_images"], files["test_labels"])
    tr, ca, te = official_split_indices(y_tr, y_te, seed=seed, cal_fraction=cal_fraction,
                                        n_train=n_train, n_cal=n_cal, n_test=n_test)

    def make(x: np.ndarray, y: np.ndarray, idx: np.ndarray) -> Split:
        xt = torch.from_numpy(np.ascontiguousarray(x[idx])).unsqueeze(1).float().div_(255.0)
        if image_size != xt.shape[-1]:
            xt = F.interpolate(xt, size=(image_size, image_size), mode="bilinear", antialias=True,
                               align_corners=False).clamp_(0.0, 1.0)
        return Split(xt, torch.as_tensor(y[idx]), garment_masks(xt, mask_threshold))

    source = str(files["train_images"].parent)
    return build_image(
        "fashion_mnist", make(x_tr, y_tr, tr), make(x_tr, y_tr, ca), make(x_te, y_te, te),
        class_names=FASHION_MNIST_CLASSES,
        extra={"source": source, "masks": f"garment silhouettes (intensity > {mask_threshold}, holes <= 4 px "
                                          "closed): a localization proxy, not an annotation"},
    )
