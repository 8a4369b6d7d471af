"""Tests of xcal_core.data: bundled, synthetic and real loaders, splits and error messages.

Real loaders are exercised on tiny files written here in the official on-disk formats (CIFAR pickle
batches, STL-10 binaries, an ImageNet-style folder of JPEGs, scikit-learn's California housing cache
and OpenML cache). Nothing is downloaded.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from xcal_core.data import (
    DATASETS,
    SHAPE_CLASSES,
    Dataset,
    DatasetInfo,
    Split,
    available_datasets,
    generate_shapes,
    load_dataset,
)
from xcal_core.data._base import build_tabular, split_indices, stratified_order
from xcal_core.data.shapes import _sdf

BUNDLED = ["digits", "breast_cancer", "wine", "iris", "diabetes", "synthetic_tabular"]


def _check_common(ds: Dataset) -> None:
    info = ds.info
    assert isinstance(info, DatasetInfo)
    for name, s in ds.splits.items():
        assert len(s) > 0, name
        assert s.x.dtype == torch.float32
        assert tuple(s.x.shape[1:]) == tuple(info.input_shape)
        assert torch.isfinite(s.x).all()
        if info.task == "classification":
            assert s.y.dtype == torch.int64
            assert 0 <= int(s.y.min()) and int(s.y.max()) < info.n_classes
        else:
            assert s.y.dtype == torch.float32 and info.n_classes == 1
    assert info.train_mean.shape == tuple(info.input_shape)
    torch.testing.assert_close(info.train_mean, ds.train.x.mean(0))


# ----------------------------------------------------------------------------------------------
# bundled and synthetic sets
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_conventions(name):
    ds = load_dataset(name, seed=0)
    _check_common(ds)
    info = ds.info
    n_total = len(ds.train) + len(ds.cal) + len(ds.test)
    assert abs(len(ds.test) - 0.2 * n_total) <= 1 and abs(len(ds.cal) - 0.2 * n_total) <= 1
    if info.kind == "image":
        assert info.input_shape == (1, 8, 8) and info.n_classes == 10
        assert float(ds.train.x.min()) >= 0.0 and float(ds.train.x.max()) <= 1.0
        mean, std = info.normalization
        assert len(mean) == len(std) == 1
        assert mean[0] == pytest.approx(float(ds.train.x.mean()), abs=1e-5)
        assert std[0] == pytest.approx(float(ds.train.x.std()), rel=1e-3)
        assert info.standardization is None
    else:
        assert info.normalization is None
        assert len(info.feature_names) == info.input_shape[0]
        # standardized with the *training* statistics
        torch.testing.assert_close(ds.train.x.mean(0), torch.zeros(info.input_shape), atol=1e-4, rtol=0)
        torch.testing.assert_close(ds.train.x.std(0, unbiased=False), torch.ones(info.input_shape), atol=1e-3, rtol=0)
        assert ds.test.x.mean(0).abs().max() > 1e-3  # the other splits are not re-centred
    if info.task == "classification":
        assert info.class_names is not None and len(info.class_names) == info.n_classes
    else:
        assert info.class_names is None


def test_tabular_standardization_inverts_to_the_raw_rows():
    from sklearn.datasets import load_wine

    raw = load_wine().data
    ds = load_dataset("wine", seed=3)
    mean, std = ds.info.standardization
    back = (ds.test.x.double() * std.double() + mean.double()).numpy()
    # every reconstructed test row is one of the raw rows
    d = np.abs(back[:, None, :] - raw[None, :, :]).max(-1).min(1)
    assert d.max() < 1e-3
    # statistics are those of the training rows
    back_tr = ds.train.x.double() * std.double() + mean.double()
    np.testing.assert_allclose(back_tr.mean(0).numpy(), mean.numpy(), rtol=1e-4, atol=1e-4)


def test_regression_target_standardization_round_trip():
    from sklearn.datasets import load_diabetes

    raw_y = load_diabetes().target
    ds = load_dataset("diabetes", seed=1)
    e = ds.info.extra
    y = ds.train.y.double() * e["target_std"] + e["target_mean"]
    assert np.isin(np.round(y.numpy()), raw_y).all()
    assert float(ds.train.y.mean()) == pytest.approx(0.0, abs=1e-5)
    raw = load_dataset("diabetes", seed=1, standardize_target=False)
    torch.testing.assert_close(raw.train.y.double(), y, atol=1e-3, rtol=0)


def test_digits_upsample():
    small = load_dataset("digits", seed=0)
    big = load_dataset("digits", seed=0, upsample=4)
    assert big.info.input_shape == (1, 32, 32)
    assert float(big.train.x.min()) >= 0.0 and float(big.train.x.max()) <= 1.0
    torch.testing.assert_close(big.train.y, small.train.y)  # same split
    # documented: bilinear interpolation of the 8x8 digits (half-pixel centres)
    torch.testing.assert_close(big.test.x, F.interpolate(small.test.x, scale_factor=4, mode="bilinear"))
    # area-downsampling recovers the 8x8 digits up to the bilinear blur
    back = F.interpolate(big.test.x, size=(8, 8), mode="area")
    assert np.corrcoef(back.flatten().numpy(), small.test.x.flatten().numpy())[0, 1] > 0.97


@pytest.mark.parametrize("name", ["wine", "digits", "synthetic_tabular"])
def test_splits_are_stratified(name):
    ds = load_dataset(name, seed=5)
    y_all = torch.cat([ds.train.y, ds.cal.y, ds.test.y])
    p_all = torch.bincount(y_all, minlength=ds.info.n_classes).double() / len(y_all)
    for s in ds.splits.values():
        counts = torch.bincount(s.y, minlength=ds.info.n_classes).double()
        assert (counts - p_all * len(s)).abs().max() <= 1.5


def test_split_indices_partition_and_caps():
    y = np.repeat(np.arange(4), [50, 30, 15, 5])
    tr, ca, te = split_indices(y, len(y), seed=0, stratify=True, cal_fraction=0.2, test_fraction=0.3)
    both = np.concatenate([tr, ca, te])
    assert len(both) == len(y) == len(np.unique(both))  # a partition
    assert len(te) == 30 and len(ca) == 20 and len(tr) == 50
    # a cap on train keeps cal and test fixed
    tr2, ca2, te2 = split_indices(y, len(y), seed=0, stratify=True, cal_fraction=0.2, test_fraction=0.3, n_train=10)
    assert len(tr2) == 10 and set(tr2) <= set(tr)
    np.testing.assert_array_equal(ca2, ca)
    np.testing.assert_array_equal(te2, te)
    # every prefix of the stratified order is balanced up to one sample per class
    order = stratified_order(y, len(y), np.random.default_rng(0))
    for m in (10, 25, 60):
        counts = np.bincount(y[order[:m]], minlength=4)
        assert np.abs(counts - m * np.bincount(y) / len(y)).max() <= 1.0 + 1e-9


def test_determinism_and_seed_dependence():
    a, b = load_dataset("iris", seed=7), load_dataset("iris", seed=7)
    c = load_dataset("iris", seed=8)
    torch.testing.assert_close(a.test.x, b.test.x)
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    assert not torch.equal(a.test.x, c.test.x)


def test_split_subset_and_loader():
    ds = load_dataset("wine", seed=0)
    sub = ds.train.subset([3, 1, 4])
    torch.testing.assert_close(sub.x, ds.train.x[[3, 1, 4]])
    assert len(ds.train.subset(ds.train.y == 0)) == int((ds.train.y == 0).sum())
    batches = list(ds.train.loader(batch_size=32))
    assert sum(len(xb) for xb, _ in batches) == len(ds.train) and len(batches[0][0]) == 32
    o1 = torch.cat([yb for _, yb in ds.train.loader(16, shuffle=True, generator=torch.Generator().manual_seed(1))])
    o2 = torch.cat([yb for _, yb in ds.train.loader(16, shuffle=True, generator=torch.Generator().manual_seed(1))])
    torch.testing.assert_close(o1, o2)
    with pytest.raises(ValueError, match="no masks"):
        ds.train.loader(8, with_masks=True)
    with pytest.raises(IndexError, match="out of range"):
        ds.train.subset([len(ds.train)])


def test_synthetic_tabular_ground_truth():
    from sklearn.linear_model import LinearRegression, LogisticRegression

    ds = load_dataset("synthetic_tabular", seed=0, n_samples=2000, n_features=12, n_informative=4, n_redundant=3)
    e = ds.info.extra
    inf, red, noise = e["informative_features"], e["redundant_features"], e["noise_features"]
    assert sorted(inf + red + noise) == list(range(12)) and (len(inf), len(red), len(noise)) == (4, 3, 5)
    assert inf != [0, 1, 2, 3]  # columns were permuted by the seed
    x, y = ds.train.x.numpy(), ds.train.y.numpy()
    # redundant features are exact linear combinations of the informative ones
    r2 = LinearRegression().fit(x[:, inf], x[:, red]).score(x[:, inf], x[:, red])
    assert r2 > 0.999
    # the label is predictable from the informative features, not from the noise
    xt, yt = ds.test.x.numpy(), ds.test.y.numpy()
    acc_inf = LogisticRegression(max_iter=1000).fit(x[:, inf], y).score(xt[:, inf], yt)
    acc_noise = LogisticRegression(max_iter=1000).fit(x[:, noise], y).score(xt[:, noise], yt)
    assert acc_inf > 0.75 and acc_noise < 0.6
    corr = np.abs([np.corrcoef(x[:, j], y)[0, 1] for j in noise])
    assert corr.max() < 0.1


# ----------------------------------------------------------------------------------------------
# shapes
# ----------------------------------------------------------------------------------------------


def test_shape_sdf_areas_known_answers():
    """The signed distance functions enclose the analytic areas (unit object radius)."""
    g = torch.linspace(-1.3, 1.3, 601)
    py, px = torch.meshgrid(g, g, indexing="ij")
    cell = float(g[1] - g[0]) ** 2
    expected = {
        0: math.pi * 0.9**2,  # circle
        1: 1.56**2,  # square
        2: 3 * math.sqrt(3) * 0.55**2,  # equilateral triangle with inradius 0.55
        3: 2 * (2.0 * 0.6) - 0.6**2,  # plus: two 2.0 x 0.6 bars minus the shared centre
        4: math.pi * (0.96**2 - 0.48**2),  # ring
        # star: polar boundary R = 0.45 + 0.6 t with t a triangle wave, area = pi * E[R^2]
        5: math.pi * (0.45**2 + 0.45 * 0.6 + 0.6**2 / 3),
    }
    for k, area in expected.items():
        got = float((_sdf(k, px, py) < 0).sum()) * cell
        assert got == pytest.approx(area, rel=0.01), SHAPE_CLASSES[k]
    # the star has 5-fold symmetry: rotating by 72 degrees maps it onto itself
    a = 2 * math.pi / 5
    inside = _sdf(5, px, py) < 0
    rot = _sdf(5, math.cos(a) * px - math.sin(a) * py, math.sin(a) * px + math.cos(a) * py) < 0
    assert (inside ^ rot).float().mean() < 0.005


def test_shapes_dataset_conventions():
    ds = load_dataset("shapes", seed=0, n_train=120, n_cal=60, n_test=60)
    _check_common(ds)
    assert ds.info.input_shape == (3, 32, 32) and ds.info.n_classes == 6
    assert ds.info.class_names == SHAPE_CLASSES
    assert (len(ds.train), len(ds.cal), len(ds.test)) == (120, 60, 60)
    for s in ds.splits.values():
        assert s.masks is not None and s.masks.dtype == torch.bool and s.masks.shape == (len(s), 32, 32)
        assert float(s.x.min()) >= 0.0 and float(s.x.max()) <= 1.0
        assert torch.bincount(s.y, minlength=6).tolist() == [len(s) // 6] * 6  # exactly balanced
        assert s.masks.flatten(1).any(1).all()  # every image has an object
    xb, yb, mb = next(iter(ds.test.loader(16, with_masks=True)))
    assert mb.shape == (16, 32, 32)
    # image_size option
    big = load_dataset("shapes", n_train=12, n_cal=6, n_test=6, image_size=48)
    assert big.info.input_shape == (3, 48, 48) and big.test.masks.shape == (6, 48, 48)


def test_shapes_deterministic_by_seed():
    ds1 = load_dataset("shapes", seed=2, n_train=30, n_cal=12, n_test=12)
    ds2 = load_dataset("shapes", seed=2, n_train=18, n_cal=12, n_test=12)
    assert ds1.fingerprint() != ds2.fingerprint()
    torch.testing.assert_close(ds1.test.x, ds2.test.x)  # a different n_train leaves cal / test unchanged
    torch.testing.assert_close(ds1.cal.masks, ds2.cal.masks)
    a = generate_shapes(24, seed=3)
    b = generate_shapes(24, seed=3)
    c = generate_shapes(24, seed=4)
    for u, v in zip(a, b):
        assert torch.equal(u, v)
    assert not torch.equal(a[0], c[0])


def _interior(m: torch.Tensor) -> torch.Tensor:
    """Mask pixels whose 4 neighbours are also in the mask (drops anti-aliased edges)."""
    e = m.clone()
    e[:, 1:, :] &= m[:, :-1, :]
    e[:, :-1, :] &= m[:, 1:, :]
    e[:, :, 1:] &= m[:, :, :-1]
    e[:, :, :-1] &= m[:, :, 1:]
    return e


def test_shapes_masks_cover_the_object():
    x, y, m = generate_shapes(60, difficulty=0.0, seed=1, image_size=48)
    inner = _interior(m)
    outer = ~F.max_pool2d(m.float().unsqueeze(1), 5, stride=1, padding=2).squeeze(1).bool()
    n_pix = inner.flatten(1).sum(1)
    assert (n_pix > 5).all()
    w_in = inner.unsqueeze(1).float()
    mean_in = (x * w_in).sum((2, 3)) / n_pix.view(-1, 1)
    var_in = ((x - mean_in[..., None, None]) ** 2 * w_in).sum((2, 3)) / n_pix.view(-1, 1)
    w_out = outer.unsqueeze(1).float()
    mean_out = (x * w_out).sum((2, 3)) / w_out.sum((2, 3))
    # inside the mask: one flat colour (only pixel noise); it differs clearly from the background
    assert var_in.sqrt().max() < 0.05
    assert (mean_in - mean_out).norm(dim=1).median() > 0.3
    # a mask placed at a random shift does not have that property
    shifted = torch.roll(inner, shifts=(17, 11), dims=(1, 2)) & ~m
    has = shifted.flatten(1).sum(1) > 5
    ws = shifted[has].unsqueeze(1).float()
    ms = (x[has] * ws).sum((2, 3)) / ws.sum((2, 3))
    vs = ((x[has] - ms[..., None, None]) ** 2 * ws).sum((2, 3)) / ws.sum((2, 3))
    assert vs.sqrt().median() > var_in.sqrt().median()


def test_shapes_difficulty_is_measurable():
    def stats(d):
        x, _, m = generate_shapes(120, difficulty=d, seed=0)
        hf = (x - F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)).abs().mean()
        return float(m.float().mean()), float(hf)

    area0, hf0 = stats(0.0)
    area1, hf1 = stats(1.0)
    assert area1 < 0.75 * area0  # smaller objects
    assert hf1 > 2.0 * hf0  # more noise and clutter


# ----------------------------------------------------------------------------------------------
# errors
# ----------------------------------------------------------------------------------------------


def test_unknown_names_and_options():
    assert set(BUNDLED) | {"shapes", "cifar10", "imagenet", "openml"} <= set(DATASETS)
    assert "openml:<id or name>" in available_datasets()
    with pytest.raises(ValueError, match=r"unknown dataset 'nope'.*'digits'.*'shapes'"):
        load_dataset("nope")
    with pytest.raises(ValueError, match=r"unknown dataset 'foo:3'"):
        load_dataset("foo:3")
    with pytest.raises(ValueError, match="needs a suffix"):
        load_dataset("openml")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['upsampel'\].*'upsample'"):
        load_dataset("digits", upsampel=2)
    with pytest.raises(TypeError, match="`seed` must be an int"):
        load_dataset("iris", seed=1.5)


@pytest.mark.parametrize(
    "name, options, match",
    [
        ("iris", {"cal_fraction": 1.5}, "`cal_fraction` must be in"),
        ("iris", {"cal_fraction": 0.5, "test_fraction": 0.5}, r"`cal_fraction` \+ `test_fraction` must be < 1"),
        ("iris", {"test_fraction": 0.001}, "split `test` would be empty"),
        ("iris", {"n_train": 0}, "`n_train` must be in"),
        ("digits", {"upsample": 0}, "`upsample` must be in"),
        ("shapes", {"difficulty": 1.5}, "`difficulty` must be in"),
        ("shapes", {"image_size": 8}, "`image_size` must be in"),
        ("shapes", {"n_cal": 0}, "`n_cal` must be in"),
        ("synthetic_tabular", {"n_informative": 8, "n_redundant": 15}, "must be <= `n_features`"),
        ("openml:1", {"task": "clustering"}, "unknown `task`"),
    ],
)
def test_bad_option_values(name, options, match):
    with pytest.raises((ValueError, TypeError), match=match):
        load_dataset(name, **options)


def test_empty_split_and_nonfinite_data_are_rejected():
    x = np.random.default_rng(0).normal(size=(40, 3))
    y = np.arange(40) % 2
    kw = dict(task="classification", seed=0, feature_names=["a", "b", "c"], class_names=["n", "p"],
              cal_fraction=0.2, test_fraction=0.2, n_train=None, n_cal=None, n_test=None)
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"`x` contains 1 NaN or inf"):
        build_tabular("toy", bad, y, **kw)
    bad[3, 1] = np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        build_tabular("toy", bad, y, **kw)
    ds = build_tabular("toy", x, y, **kw)
    with pytest.raises(ValueError, match="split `cal` of dataset 'toy' is empty"):
        Dataset(ds.info, ds.train, ds.cal.subset([]), ds.test)
    nan_x = ds.test.x.clone()
    nan_x[0, 0] = float("nan")
    with pytest.raises(ValueError, match="split `test`.*NaN or inf"):
        Dataset(ds.info, ds.train, ds.cal, Split(nan_x, ds.test.y))
    with pytest.raises(ValueError, match="labels outside"):
        Dataset(ds.info, ds.train, ds.cal, Split(ds.test.x, ds.test.y + 5))
    with pytest.raises(ValueError, match="`x` has 8 samples but `y` has 7"):
        Split(torch.zeros(8, 3), torch.zeros(7, dtype=torch.long))


@pytest.mark.parametrize(
    "name, where",
    [
        ("cifar10", "cifar-10-batches-py"),
        ("cifar100", "cifar-100-python"),
        ("stl10", "stl10_binary"),
        ("california_housing", "cal_housing_py3.pkz"),
        ("openml:61", "openml"),
        ("openml:iris", "data_name/iris"),
    ],
)
def test_missing_real_data_says_what_to_put_where(tmp_path, name, where):
    with pytest.raises(FileNotFoundError, match=rf"(?s){name}.*{tmp_path}.*{where}.*ALLOW_DOWNLOAD=True"):
        load_dataset(name, data_dir=tmp_path)
    assert not any(tmp_path.iterdir())  # nothing was created


def test_missing_imagenet_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=rf"(?s){tmp_path}/imagenet/val/<wnid>/\*\.JPEG.*ALLOW_DOWNLOAD"):
        load_dataset("imagenet", data_dir=tmp_path)


def test_data_dir_defaults_to_env(tmp_path, monkeypatch):
    monkeypatch.setenv("XCAL_DATA_DIR", str(tmp_path / "env_data"))
    with pytest.raises(FileNotFoundError, match="env_data"):
        load_dataset("cifar10")


def test_import_has_no_side_effects(tmp_path):
    code = (
        "import sys, xcal_core.data as d; "
        "print(sorted(m for m in ('sklearn', 'torchvision', 'PIL', 'pandas') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert not any(tmp_path.iterdir())


# ----------------------------------------------------------------------------------------------
# real loaders on tiny files in the official formats
# ----------------------------------------------------------------------------------------------


def _cifar_images(n: int, offset: int) -> np.ndarray:
    """uint8 (n, 3072) rows; image i has pixel (c, h, w) = (i + offset + 7c + 3h + w) % 256."""
    c, h, w = np.meshgrid(np.arange(3), np.arange(32), np.arange(32), indexing="ij")
    base = (7 * c + 3 * h + w).reshape(-1)
    return ((np.arange(n)[:, None] + offset + base[None, :]) % 256).astype(np.uint8)


def _write_pickle(path, obj):
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=2)


def test_cifar10_reads_the_pickle_batches(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    for b in range(1, 6):  # 5 batches x 20 images, 2 per class each
        _write_pickle(folder / f"data_batch_{b}", {"batch_label": f"training batch {b} of 5",
                                                  "labels": [i % 10 for i in range(20)],
                                                  "data": _cifar_images(20, 100 * b), "filenames": []})
    _write_pickle(folder / "test_batch", {"batch_label": "testing batch 1 of 1", "labels": [i % 10 for i in range(30)],
                                          "data": _cifar_images(30, 0), "filenames": []})
    _write_pickle(folder / "batches.meta", {"label_names": names, "num_cases_per_batch": 20, "num_vis": 3072})
    ds = load_dataset("cifar10", data_dir=tmp_path, seed=0, cal_fraction=0.2)
    _check_common(ds)
    assert ds.info.class_names == tuple(names) and ds.info.input_shape == (3, 32, 32)
    assert (len(ds.train), len(ds.cal), len(ds.test)) == (80, 20, 30)  # cal carved from train; official test
    assert torch.bincount(ds.cal.y, minlength=10).tolist() == [2] * 10  # stratified
    # known pixel layout: test image i (all test images, sorted order) has (c, h, w) -> (i + 7c + 3h + w) % 256
    x = ds.test.x
    i = 5
    assert x[i, 2, 4, 9] * 255 == pytest.approx((i + 14 + 12 + 9) % 256)
    assert x[i, 0, 31, 0] * 255 == pytest.approx((i + 93) % 256)
    assert ds.test.y[i] == i % 10
    # caps subsample stratified
    capped = load_dataset("cifar10", data_dir=tmp_path, seed=0, cal_fraction=0.2, n_train=40, n_test=10)
    assert (len(capped.train), len(capped.cal), len(capped.test)) == (40, 20, 10)
    assert torch.bincount(capped.test.y, minlength=10).tolist() == [1] * 10
    # resized copies (e.g. for ImageNet-pretrained models): same images, antialiased bilinear
    big = load_dataset("cifar10", data_dir=tmp_path, seed=0, cal_fraction=0.2, image_size=64)
    assert big.info.input_shape == (3, 64, 64) and torch.equal(big.test.y, ds.test.y)
    assert torch.allclose(F.avg_pool2d(big.test.x, 2).mean((1, 2, 3)), ds.test.x.mean((1, 2, 3)), atol=0.02)


def test_cifar100_reads_train_test_meta(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    fine = [f"class{k:02d}" for k in range(100)]
    _write_pickle(folder / "train", {"fine_labels": list(range(100)) * 2, "coarse_labels": [0] * 200,
                                     "data": _cifar_images(200, 1), "filenames": []})
    _write_pickle(folder / "test", {"fine_labels": list(range(100)), "coarse_labels": [0] * 100,
                                    "data": _cifar_images(100, 2), "filenames": []})
    _write_pickle(folder / "meta", {"fine_label_names": fine, "coarse_label_names": ["c"]})
    ds = load_dataset("cifar100", data_dir=tmp_path, cal_fraction=0.5)
    _check_common(ds)
    assert ds.info.n_classes == 100 and (len(ds.train), len(ds.cal), len(ds.test)) == (100, 100, 100)
    assert torch.bincount(ds.train.y, minlength=100).tolist() == [1] * 100


def test_stl10_reads_the_binaries(tmp_path):
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    rng = np.random.default_rng(0)
    imgs = {s: rng.integers(0, 256, size=(n, 3, 96, 96), dtype=np.uint8) for s, n in (("train", 20), ("test", 10))}
    for s, arr in imgs.items():
        arr.transpose(0, 1, 3, 2).tofile(folder / f"{s}_X.bin")  # column-major planes, as in the archive
        (np.arange(len(arr)) % 10 + 1).astype(np.uint8).tofile(folder / f"{s}_y.bin")  # labels 1..10
    (folder / "class_names.txt").write_text("\n".join(["airplane", "bird", "car", "cat", "deer", "dog",
                                                       "horse", "monkey", "ship", "truck"]) + "\n")
    ds = load_dataset("stl10", data_dir=tmp_path, cal_fraction=0.5)
    _check_common(ds)
    assert ds.info.input_shape == (3, 96, 96) and ds.info.class_names[7] == "monkey"
    torch.testing.assert_close(ds.test.x, torch.from_numpy(imgs["test"]).float() / 255)
    torch.testing.assert_close(ds.test.y, torch.arange(10))
    small = load_dataset("stl10", data_dir=tmp_path, cal_fraction=0.5, image_size=48)
    assert small.info.input_shape == (3, 48, 48)


def test_imagenet_folder(tmp_path):
    from PIL import Image

    val = tmp_path / "imagenet" / "val"
    colors = {"n01440764": (200, 30, 30), "n01443537": (30, 200, 30), "n01484850": (30, 30, 200)}
    for wnid, col in colors.items():
        (val / wnid).mkdir(parents=True)
        for j in range(5):
            Image.new("RGB", (40 + 4 * j, 30), col).save(val / wnid / f"ILSVRC2012_val_{j:08d}.JPEG", quality=95)
    (tmp_path / "imagenet" / "LOC_synset_mapping.txt").write_text(
        "n01440764 tench, Tinca tinca\nn01443537 goldfish, Carassius auratus\nn01484850 great white shark\n")
    ds = load_dataset("imagenet", data_dir=tmp_path, image_size=16, resize=20, cal_fraction=0.2, test_fraction=0.2)
    _check_common(ds)
    assert ds.info.input_shape == (3, 16, 16)
    assert ds.info.class_names == ("tench", "goldfish", "great white shark")
    assert ds.info.extra["wnids"] == sorted(colors)
    assert (len(ds.train), len(ds.cal), len(ds.test)) == (9, 3, 3)
    for s in ds.splits.values():
        expect = torch.tensor([colors[w] for w in sorted(colors)], dtype=torch.float32)[s.y] / 255
        assert (s.x.mean((2, 3)) - expect).abs().max() < 4 / 255


def test_california_housing_from_sklearn_cache(tmp_path):
    import joblib

    rng = np.random.default_rng(0)
    n = 50
    households = rng.uniform(100, 500, n)
    arr = np.column_stack([
        rng.uniform(5e4, 5e5, n),  # median house value (USD)
        rng.uniform(1, 10, n),  # median income
        rng.uniform(1, 50, n),  # house age
        households * rng.uniform(3, 7, n),  # total rooms
        households * rng.uniform(1, 2, n),  # total bedrooms
        households * rng.uniform(2, 4, n),  # population
        households,
        rng.uniform(32, 42, n),  # latitude
        rng.uniform(-124, -114, n),  # longitude
    ])
    joblib.dump(arr, tmp_path / "cal_housing_py3.pkz", compress=6)
    ds = load_dataset("california_housing", data_dir=tmp_path, seed=0)
    _check_common(ds)
    assert ds.info.task == "regression" and ds.info.feature_names[0] == "MedInc"
    e = ds.info.extra
    y = ds.test.y.double() * e["target_std"] + e["target_mean"]
    # targets are the house values in units of 100 000 USD (float32 precision)
    assert np.abs(y.numpy()[:, None] * 1e5 - arr[None, :, 0]).min(1).max() < 1.0
    mean, std = ds.info.standardization
    rooms = ds.test.x[:, 2].double() * std[2] + mean[2]  # AveRooms = rooms / households in [3, 7]
    assert rooms.min() > 2.99 and rooms.max() < 7.01


def _write_openml_cache(root, data_id=42424, name="tinyset"):
    """A minimal OpenML cache in scikit-learn's layout: description, features, qualities, ARFF, name lookup."""
    rng = np.random.default_rng(0)
    n = 40
    rows = []
    for i in range(n):
        cls = "yes" if i % 2 else "no"
        color = ["red", "green"][i % 3 == 0]
        rows.append(f"{rng.normal() + (i % 2):.4f},{rng.uniform(0, 10):.4f},{color},{cls}")
    rows[7] = "?," + rows[7].split(",", 1)[1]  # one missing value
    arff = ("@RELATION tinyset\n@ATTRIBUTE a NUMERIC\n@ATTRIBUTE b NUMERIC\n@ATTRIBUTE color {red,green}\n"
            "@ATTRIBUTE class {no,yes}\n@DATA\n" + "\n".join(rows) + "\n").encode()
    base = root / "openml" / "openml.org"
    api = base / "api" / "v1" / "json" / "data"
    file_url = f"https://api.openml.org/data/v1/download/{data_id + 1}/{name}.arff"

    def put(path, payload: bytes):
        path.parent.mkdir(parents=True, exist_ok=True)
        with gzip.open(path, "wb") as fh:
            fh.write(payload)

    put(api / f"{data_id}.gz", json.dumps({"data_set_description": {
        "id": str(data_id), "name": name, "version": "1", "description": "tiny test set", "format": "ARFF",
        "url": file_url, "file_id": str(data_id + 1), "default_target_attribute": "class", "status": "active",
        "md5_checksum": hashlib.md5(arff).hexdigest()}}).encode())
    feats = [("a", "numeric", "false", 1), ("b", "numeric", "false", 0), ("color", "nominal", "false", 0),
             ("class", "nominal", "true", 0)]
    put(api / "features" / f"{data_id}.gz", json.dumps({"data_features": {"feature": [
        {"index": str(i), "name": f, "data_type": t, "is_target": tg, "is_ignore": "false",
         "is_row_identifier": "false", "number_of_missing_values": str(m)}
        for i, (f, t, tg, m) in enumerate(feats)]}}).encode())
    put(api / "qualities" / f"{data_id}.gz", json.dumps({"data_qualities": {"quality": [
        {"name": "NumberOfInstances", "value": f"{n}.0"}, {"name": "NumberOfFeatures", "value": "4.0"}]}}).encode())
    put(base / "data" / "v1" / "download" / str(data_id + 1) / f"{name}.arff.gz", arff)
    put(api / "list" / "data_name" / name / "limit" / "2" / "status" / "active" / ".gz", json.dumps(
        {"data": {"dataset": [{"did": data_id, "name": name, "version": 1, "status": "active"}]}}).encode())
    return n


def test_openml_from_cache_by_id_and_name(tmp_path):
    n = _write_openml_cache(tmp_path)
    ds = load_dataset("openml:42424", data_dir=tmp_path, seed=0, cal_fraction=0.25, test_fraction=0.25)
    _check_common(ds)
    assert ds.info.name == "openml:42424" and ds.info.task == "classification"
    assert ds.info.class_names == ("no", "yes")
    assert ds.info.feature_names == ("a", "b", "color=green", "color=red")  # one-hot categorical
    assert len(ds.train) + len(ds.cal) + len(ds.test) == n - 1  # the row with a missing value is dropped
    by_name = load_dataset("openml:tinyset", data_dir=tmp_path, seed=0, cal_fraction=0.25, test_fraction=0.25)
    torch.testing.assert_close(by_name.test.x, ds.test.x)
    with pytest.raises(ValueError, match="missing values"):
        load_dataset("openml:42424", data_dir=tmp_path, missing="error")
    reg = load_dataset("openml:42424", data_dir=tmp_path, task="regression", target="b")
    assert reg.info.task == "regression" and reg.train.y.dtype == torch.float32


# ----------------------------------------------------------------------------------------------
# synthetic stand-ins of the paper datasets, Food-101 and CUB-200-2011 folders
# ----------------------------------------------------------------------------------------------


def test_standin_images_have_the_real_sizes_and_say_so():
    from xcal_core.data import STANDINS, data_source_note

    ds = load_dataset("standin:cub200", n_train=40, n_cal=20, n_test=20)
    _check_common(ds)
    assert ds.info.input_shape == (3, 224, 224) and ds.info.n_classes == 200
    assert (len(ds.train), len(ds.cal), len(ds.test)) == (40, 20, 20)
    assert ds.info.extra["standin"] and ds.info.extra["replaces"] == "cub200"
    assert data_source_note(ds).startswith("STAND-IN DATA: standin:cub200")
    assert ds.train.masks is not None and ds.train.masks.shape == (40, 224, 224)
    assert 0.03 < ds.train.masks.float().mean() < 0.5  # an object, not the whole image
    # real sizes of the official splits and the loader defaults
    full = load_dataset("standin:cub200", image_size=8, n_train=None, n_cal=None, n_test=None)
    assert (len(full.train), len(full.cal) + len(full.test)) == (5994, 5794)  # cal carved from the official test split
    assert STANDINS["imagenet"].n_classes == 1000 and STANDINS["food101"].n_official_test == 25_250
    small = load_dataset("standin:imagenet", image_size=16, n_train=8, n_cal=8, n_test=8)
    assert small.info.n_classes == 1000 and small.info.input_shape == (3, 16, 16)


def test_standin_images_are_seeded_and_class_dependent():
    a = load_dataset("standin:cifar100", seed=3, n_train=3000, n_cal=100, n_test=600)
    b = load_dataset("standin:cifar100", seed=3, n_train=3000, n_cal=100, n_test=600)
    c = load_dataset("standin:cifar100", seed=4, n_train=3000, n_cal=100, n_test=600)
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.y, b.test.y)
    assert not torch.equal(a.train.x, c.train.x)
    # a different training cap leaves the calibration and test images unchanged
    d = load_dataset("standin:cifar100", seed=3, n_train=500, n_cal=100, n_test=600)
    assert torch.equal(a.test.x, d.test.x) and torch.equal(a.cal.x, d.cal.x)
    # structured, not noise: nearest class centroid on 8x8 thumbnails is far above chance (1 %)
    thumb = lambda x: F.avg_pool2d(x, 4).flatten(1)  # noqa: E731
    cent = torch.stack([thumb(a.train.x[a.train.y == k]).mean(0) for k in range(100)])
    pred = torch.cdist(thumb(a.test.x), cent).argmin(1)
    acc = (pred == a.test.y).float().mean().item()
    assert acc > 0.25, acc
    # images vary within a class (jitter), so the task is not a lookup
    same = a.train.x[a.train.y == 0]
    assert (same[0] - same[1]).abs().mean() > 0.01


def test_standin_tabular_and_errors():
    ds = load_dataset("standin:electricity", seed=0)
    _check_common(ds)
    assert ds.info.input_shape == (7,) and ds.info.n_classes == 2
    assert len(ds.train) + len(ds.cal) + len(ds.test) == 38_474
    small = load_dataset("standin:pol", n_samples=500, n_train=100)
    assert small.info.input_shape == (26,) and len(small.train) == 100
    with pytest.raises(ValueError, match=r"unknown stand-in 'standin:mnist'.*standin:imagenet"):
        load_dataset("standin:mnist")
    with pytest.raises(ValueError, match=r"`image_size` applies to image stand-ins only"):
        load_dataset("standin:credit", image_size=32)
    with pytest.raises(ValueError, match=r"`n_samples` applies to tabular stand-ins only"):
        load_dataset("standin:cifar100", n_samples=10)
    with pytest.raises(ValueError, match=r"needs a suffix: use 'standin:<name>'"):
        load_dataset("standin")
    assert "standin:<name>" in available_datasets()


def test_load_or_standin_falls_back_only_when_asked(tmp_path):
    from xcal_core.data import is_standin, load_or_standin

    with pytest.raises(FileNotFoundError, match=r"openml:credit"):
        load_or_standin("openml:credit", data_dir=tmp_path)
    ds = load_or_standin("openml:credit", data_dir=tmp_path, standin_if_missing=True, n_train=200)
    assert is_standin(ds) and ds.info.name == "standin:credit" and len(ds.train) == 200
    assert "openml:credit" in ds.info.extra["missing_real_data"]
    img = load_or_standin("imagenet", data_dir=tmp_path, standin_if_missing=True, image_size=16, n_train=10, n_cal=10, n_test=10)
    assert img.info.name == "standin:imagenet" and img.info.input_shape == (3, 16, 16)
    # present data is loaded as is; names without a stand-in re-raise
    assert not is_standin(load_or_standin("wine", standin_if_missing=True))
    with pytest.raises(FileNotFoundError):
        load_or_standin("food101", data_dir=tmp_path / "nothing_here", standin_if_missing=False)
    with pytest.raises(FileNotFoundError, match="openml:nonexistent_set"):
        load_or_standin("openml:nonexistent_set", data_dir=tmp_path, standin_if_missing=True)


def test_standins_of_the_uq_and_idexpo_paper_sets(tmp_path):
    from xcal_core.data import data_source_note, load_or_standin

    # STL-10 (ID-ExpO): 5 000 labelled training and 8 000 test images of 96 x 96, 10 classes
    full = load_dataset("standin:stl10", image_size=8, n_train=None, n_cal=None, n_test=None)
    assert (len(full.train) + len(full.cal), len(full.test)) == (5000, 8000) and full.info.n_classes == 10
    stl = load_or_standin("stl10", data_dir=tmp_path, standin_if_missing=True, n_train=12, n_cal=6, n_test=6)
    assert stl.info.name == "standin:stl10" and stl.info.input_shape == (3, 96, 96)
    # California housing (UQ regression): 20 640 rows, 8 features, a standardized real target, said plainly
    reg = load_or_standin("california_housing", data_dir=tmp_path, standin_if_missing=True)
    _check_common(reg)
    assert reg.info.task == "regression" and reg.info.input_shape == (8,)
    assert len(reg.train) + len(reg.cal) + len(reg.test) == 20_640
    assert reg.train.y.dtype == torch.float32 and abs(float(reg.train.y.mean())) < 1e-3
    assert abs(float(reg.train.y.std()) - 1) < 1e-2
    assert "regression" in data_source_note(reg) and data_source_note(reg).startswith("STAND-IN DATA")
    # the target depends on the first 5 features only (Friedman #1), so a linear fit leaves the noise features ~0
    x, y = reg.train.x.double(), reg.train.y.double()
    w = torch.linalg.lstsq(torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1), y[:, None]).solution[:8, 0]
    assert w[:2].abs().min() > 0.2 and w[5:].abs().max() < 0.05, w


def _jpeg(path, color, size=(30, 24)):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, quality=95)


FOOD_COLORS = {"apple_pie": (200, 30, 30), "baby_back_ribs": (30, 200, 30), "waffles": (30, 30, 200)}


def _fake_food101(root):
    folder = root / "food-101"
    train, test = [], []
    for cls, col in FOOD_COLORS.items():
        for j in range(6):
            _jpeg(folder / "images" / cls / f"{100 + j}.jpg", col)
            (train if j < 3 else test).append(f"{cls}/{100 + j}")
    (folder / "meta").mkdir(parents=True, exist_ok=True)
    (folder / "meta" / "train.txt").write_text("\n".join(train) + "\n")
    (folder / "meta" / "test.txt").write_text("\n".join(test) + "\n")
    (folder / "meta" / "classes.txt").write_text("\n".join(FOOD_COLORS) + "\n")
    return folder


def test_food101_folder(tmp_path):
    folder = _fake_food101(tmp_path)
    ds = load_dataset("food101", data_dir=tmp_path, image_size=16, resize=20, cal_fraction=1 / 3)
    _check_common(ds)
    assert ds.info.class_names == ("apple pie", "baby back ribs", "waffles") and ds.info.n_classes == 3
    assert (len(ds.train), len(ds.cal), len(ds.test)) == (9, 3, 6)
    files = ds.info.extra["files"]
    assert all("/meta/" not in f for f in files["train"])
    # calibration and evaluation images both come from the official test list, disjoint
    test_list = {str(folder / "images" / f"{l}.jpg") for l in (folder / "meta" / "test.txt").read_text().split()}
    assert set(files["cal"]) <= test_list and set(files["test"]) <= test_list and not set(files["cal"]) & set(files["test"])
    assert not set(files["train"]) & test_list
    colors = torch.tensor(list(FOOD_COLORS.values()), dtype=torch.float32) / 255
    for s in ds.splits.values():
        assert (s.x.mean((2, 3)) - colors[s.y]).abs().max() < 4 / 255
    (folder / "images" / "waffles" / "105.jpg").unlink()
    with pytest.raises(ValueError, match=r"1 image\(s\) listed in .*test.txt are missing"):
        load_dataset("food101", data_dir=tmp_path, image_size=16, resize=20)
    with pytest.raises(FileNotFoundError, match=r"(?s)food-101.*meta/train.txt.*food-101.tar.gz"):
        load_dataset("food101", data_dir=tmp_path / "nowhere")


def test_cub200_folder(tmp_path):
    folder = tmp_path / "CUB_200_2011"
    classes = {1: "001.Black_footed_Albatross", 2: "002.Laysan_Albatross"}
    colors = {1: (220, 40, 40), 2: (40, 40, 220)}
    images, labels, split = [], [], []
    i = 0
    for k, name in classes.items():
        for j in range(5):
            i += 1
            rel = f"{name}/{name.split('.')[1]}_{j:04d}_{i}.jpg"
            _jpeg(folder / "images" / rel, colors[k])
            images.append(f"{i} {rel}")
            labels.append(f"{i} {k}")
            split.append(f"{i} {1 if j < 2 else 0}")
    (folder / "images.txt").write_text("\n".join(images) + "\n")
    (folder / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (folder / "train_test_split.txt").write_text("\n".join(split) + "\n")
    (folder / "classes.txt").write_text("\n".join(f"{k} {v}" for k, v in classes.items()) + "\n")
    ds = load_dataset("cub200", data_dir=tmp_path, image_size=16, resize=18, cal_fraction=1 / 3)
    _check_common(ds)
    assert ds.info.class_names == ("Black footed Albatross", "Laysan Albatross")
    assert (len(ds.train), len(ds.cal), len(ds.test)) == (4, 2, 4)
    assert sorted(ds.train.y.tolist()) == [0, 0, 1, 1]
    col = torch.tensor([colors[1], colors[2]], dtype=torch.float32) / 255
    for s in ds.splits.values():
        assert (s.x.mean((2, 3)) - col[s.y]).abs().max() < 4 / 255
    assert not set(ds.info.extra["files"]["cal"]) & set(ds.info.extra["files"]["test"])
    (folder / "train_test_split.txt").write_text("\n".join(split[:-1]) + "\n")
    with pytest.raises(ValueError, match=r"image id\(s\) \[10\] of images.txt have no class label or train/test flag"):
        load_dataset("cub200", data_dir=tmp_path, image_size=16, resize=18)
    with pytest.raises(FileNotFoundError, match=r"(?s)CUB_200_2011.*images.txt.*CUB_200_2011.tgz"):
        load_dataset("cub200", data_dir=tmp_path / "nowhere")


# ------------------------------------------------------------------------------------------
# Fashion-MNIST: the idx parser, the three locations, masks
# ------------------------------------------------------------------------------------------
def _idx_bytes(arr):
    import numpy as np

    arr = np.asarray(arr, dtype=np.uint8)
    magic = 2051 if arr.ndim == 3 else 2049
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return header + arr.tobytes()


def _write_fashion(folder, n_train=60, n_test=20, fill=0, gz=False):
    """Small Fashion-MNIST idx files in the official format: class c images are a bright square
    of side 6 + c at the centre (plus ``fill`` everywhere, to tell folders apart)."""
    import gzip

    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        y = np.arange(n) % 10
        x = np.full((n, 28, 28), fill, dtype=np.uint8)
        for i, c in enumerate(y):
            s = 6 + c
            x[i, 14 - s // 2: 14 - s // 2 + s, 14 - s // 2: 14 - s // 2 + s] = 200
        for kind, arr in (("images-idx3", x), ("labels-idx1", y)):
            name = folder / f"{split}-{kind}-ubyte"
            data = _idx_bytes(arr)
            if gz:
                with gzip.open(str(name) + ".gz", "wb") as fh:
                    fh.write(data)
            else:
                name.write_bytes(data)
    return folder


@pytest.fixture
def no_system_fashion(tmp_path, monkeypatch):
    monkeypatch.setenv("XCAL_FASHION_MNIST_SYSTEM_DIR", str(tmp_path / "no-system-copy"))


def test_fashion_mnist_reads_official_idx_files(tmp_path, no_system_fashion):
    from xcal_core.data.fashion_mnist import FASHION_MNIST_CLASSES

    _write_fashion(tmp_path / "fashion-mnist", gz=True)
    ds = load_dataset("fashion_mnist", data_dir=tmp_path, cal_fraction=0.2, seed=1)
    assert ds.info.input_shape == (1, 28, 28) and ds.info.n_classes == 10
    assert ds.info.class_names == FASHION_MNIST_CLASSES and ds.info.class_names[9] == "Ankle boot"
    assert (len(ds.train), len(ds.cal), len(ds.test)) == (48, 12, 20)  # cal carved from the official train split
    assert set(torch.bincount(ds.cal.y, minlength=10).tolist()) <= {1, 2}  # stratified: 12 over 10 classes
    assert ds.train.x.dtype == torch.float32 and float(ds.train.x.max()) == pytest.approx(200 / 255)
    # the silhouette of class c is the (6 + c)^2 square
    for split in (ds.train, ds.test):
        assert split.masks.dtype == torch.bool
        assert torch.equal(split.masks.sum((1, 2)), (6 + split.y) ** 2)
    capped = load_dataset("fashion_mnist", data_dir=tmp_path, n_train=10, n_cal=5, n_test=10)
    assert (len(capped.train), len(capped.cal), len(capped.test)) == (10, 5, 10)
    assert "fashion-mnist" in ds.info.extra["source"] and "not an annotation" in ds.info.extra["masks"]


def test_fashion_mnist_search_order(tmp_path, monkeypatch):
    system = _write_fashion(tmp_path / "system", fill=3)
    monkeypatch.setenv("XCAL_FASHION_MNIST_SYSTEM_DIR", str(system))
    root = tmp_path / "data"

    def source():
        ds = load_dataset("fashion_mnist", data_dir=root, n_train=10, n_cal=5, n_test=5)
        return ds.info.extra["source"], round(float(ds.train.x[:, :, 0, 0].max()) * 255)

    assert source() == (str(system), 3)  # 3. the Debian package's folder
    _write_fashion(root / "FashionMNIST" / "raw", fill=2, gz=True)
    assert source() == (str(root / "FashionMNIST" / "raw"), 2)  # 2. torchvision's layout wins over 3.
    own = _write_fashion(root / "fashion-mnist", fill=1)
    (own / "t10k-labels-idx1-ubyte").unlink()  # an incomplete folder is skipped
    assert source()[1] == 2
    _write_fashion(root / "fashion-mnist", fill=1)
    assert source() == (str(root / "fashion-mnist"), 1)  # 1. <data_dir>/fashion-mnist wins over both


def test_fashion_mnist_missing_lists_all_three_ways(tmp_path, no_system_fashion):
    (tmp_path / "fashion-mnist").mkdir()
    (tmp_path / "fashion-mnist" / "train-images-idx3-ubyte").write_bytes(b"")
    with pytest.raises(FileNotFoundError) as e:
        load_dataset("fashion_mnist", data_dir=tmp_path)
    msg = str(e.value)
    assert "apt-get install -y dataset-fashion-mnist" in msg and "allow_download=True" in msg
    assert str(tmp_path / "fashion-mnist") in msg and str(tmp_path / "FashionMNIST" / "raw") in msg
    assert "no-system-copy" in msg and "incomplete (1 of 4 files)" in msg


def test_idx_parser_rejects_bad_files_naming_them(tmp_path, no_system_fashion):
    import gzip

    from xcal_core.data.fashion_mnist import read_idx

    good = _idx_bytes(np.zeros((3, 28, 28)))
    cases = {
        "truncated": good[:-10],
        "short_header": good[:6],
        "bad_magic": (2052).to_bytes(4, "big") + good[4:],
        "too_long": good + b"\x00",
    }
    for name, data in cases.items():
        p = tmp_path / f"{name}-idx3-ubyte"
        p.write_bytes(data)
        with pytest.raises(ValueError, match=re.escape(str(p))):
            read_idx(p)
    with pytest.raises(ValueError, match="magic number 2052"):
        read_idx(tmp_path / "bad_magic-idx3-ubyte")
    with pytest.raises(ValueError, match="truncated"):
        read_idx(tmp_path / "truncated-idx3-ubyte")
    broken_gz = tmp_path / "broken-idx3-ubyte.gz"
    with gzip.open(broken_gz, "wb") as fh:
        fh.write(good)
    broken_gz.write_bytes(broken_gz.read_bytes()[:-20])  # a cut-off download
    with pytest.raises(ValueError, match=re.escape(str(broken_gz)) + ".*truncated"):
        read_idx(broken_gz)
    assert read_idx(tmp_path.joinpath("ok-idx3-ubyte").write_bytes(good) and tmp_path / "ok-idx3-ubyte").shape == (3, 28, 28)
    # image and label counts that disagree, or swapped files, inside a dataset folder
    folder = _write_fashion(tmp_path / "fashion-mnist")
    (folder / "t10k-labels-idx1-ubyte").write_bytes(_idx_bytes(np.zeros(19)))
    with pytest.raises(ValueError, match="20 images but .*t10k-labels-idx1-ubyte.* has 19 labels"):
        load_dataset("fashion_mnist", data_dir=tmp_path)
    (folder / "t10k-labels-idx1-ubyte").write_bytes(_idx_bytes(np.zeros((20, 2, 2))))
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte.*expected labels"):
        load_dataset("fashion_mnist", data_dir=tmp_path)


def test_garment_masks_close_small_holes_only():
    from xcal_core.data.fashion_mnist import garment_masks

    x = torch.zeros(2, 1, 12, 12)
    x[:, :, 2:10, 2:10] = 0.8
    x[0, 0, 4, 4] = 0.0  # a 1-pixel hole: closed
    x[1, 0, 4:7, 4:7] = 0.0  # a 9-pixel hole (a bag's handle): stays open
    m = garment_masks(x, threshold=0.1, max_hole=4)
    assert m[0].sum() == 64 and bool(m[0, 4, 4])
    assert m[1].sum() == 64 - 9 and not bool(m[1, 5, 5])
    assert garment_masks(x, max_hole=0)[0].sum() == 63
    with pytest.raises(ValueError, match="`x` must be grayscale images"):
        garment_masks(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match="`threshold`"):
        garment_masks(x, threshold=1.5)


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(),
                    reason="Debian's dataset-fashion-mnist is not installed (make test installs it)")
def test_fashion_mnist_real_files_from_the_debian_package():
    ds = load_dataset("fashion_mnist", data_dir="/nonexistent", n_train=100, n_cal=50, n_test=100)
    assert ds.info.extra["source"] == "/usr/share/datasets/fashion-mnist"
    assert len(ds.train) == 100 and len(ds.test) == 100
    assert 0.2 < float(ds.test.masks.float().mean()) < 0.7  # silhouettes cover part of the image


def test_image_normalization_does_not_depend_on_the_thread_count():
    # the statistics enter the model cache keys: a float32 reduction's result changes with the number of
    # CPU threads, which gave one recipe two cache keys (and would hide shipped checkpoints on other machines)
    from xcal_core.data._base import Split, build_image

    before = torch.get_num_threads()
    try:
        for seed in range(4):  # a float32 mean differs between 1 and 2 threads for seeds 1-3 of these
            g = torch.Generator().manual_seed(seed)
            x = (torch.rand(20_000, 1, 28, 28, generator=g) * 255).round() / 255  # 8-bit pixels, as real images
            y = torch.randint(0, 10, (20_000,), generator=g)
            small = Split(x[:10], y[:10])
            stats = []
            for n in (1, 2, 4):
                torch.set_num_threads(n)
                stats.append(build_image("t", Split(x, y), small, small, class_names=[str(i) for i in range(10)])
                             .info.normalization)
            assert stats[0] == stats[1] == stats[2], f"seed {seed}: {stats}"
            assert stats[0][0][0] == pytest.approx(float(x.double().mean()), abs=1e-6)
    finally:
        torch.set_num_threads(before)
