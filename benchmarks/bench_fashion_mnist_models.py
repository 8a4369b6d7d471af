"""Training cost and quality of the workshop's Fashion-MNIST models (no assertions, printed numbers).

For each training recipe (``xcal_core.models.RECIPES``: ``small_cnn``, the small ResNet ``resnet20`` and
``small_cnn_overconfident``):

* seconds per training epoch on this machine: ``--timing-epochs`` epochs (default 1) of the recipe's
  optimizer, learning-rate schedule and batch size, trained from scratch with no cache;
* the test accuracy, NLL and ECE (15 bins) of the recipe's fully trained model (seed 0) on the
  official test images: the model a notebook uses, loaded from the model cache or the shipped
  checkpoints (``checkpoints/``), trained in full only when neither has it.

The data are the real Fashion-MNIST idx files (``load_dataset("fashion_mnist")``), with the recipes'
20 000 training and 2 000 calibration images.

Usage: ``python benchmarks/bench_fashion_mnist_models.py [--recipes small_cnn resnet20 ...]
[--timing-epochs 1] [--n-test 10000] [--device cpu|cuda] [--threads N] [--cache-dir DIR]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from xcal_core.data import load_dataset
from xcal_core.metrics import accuracy, ece, nll
from xcal_core.models import RECIPES, predict_logits, train_recipe
from xcal_core.params import repo_root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipes", nargs="+", default=["small_cnn", "resnet20", "small_cnn_overconfident"],
                    choices=sorted(RECIPES))
    ap.add_argument("--timing-epochs", type=int, default=1, help="epochs trained from scratch for the timing")
    ap.add_argument("--n-train", type=int, default=20_000, help="training images (the recipes' cache key: 20000)")
    ap.add_argument("--n-cal", type=int, default=2000, help="calibration images (cache key: 2000)")
    ap.add_argument("--n-test", type=int, default=10_000)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    ap.add_argument("--cache-dir", default=None, help="model cache (default: <repo>/.cache/xcal, as the notebooks)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    cache = Path(a.cache_dir) if a.cache_dir else repo_root() / ".cache" / "xcal"
    t0 = time.perf_counter()
    ds = load_dataset("fashion_mnist", seed=0, n_train=a.n_train, n_cal=a.n_cal, n_test=a.n_test)
    print(f"{ds} loaded in {time.perf_counter() - t0:.1f} s from {ds.info.extra['source']}; "
          f"torch threads {torch.get_num_threads()}, device {a.device}")
    print(f"{'recipe':<24} {'weights':>8} {'s/epoch':>8} {'epochs':>6} {'full s*':>8} {'trained':>8} "
          f"{'test acc':>8} {'NLL':>6} {'ECE':>6}")
    for name in a.recipes:
        r = RECIPES[name]
        with tempfile.TemporaryDirectory() as tmp:  # an empty cache: the timing always trains
            t = time.perf_counter()
            train_recipe(name, ds, seed=0, device=a.device, cache_dir=tmp, epochs=a.timing_epochs)
            per_epoch = (time.perf_counter() - t) / max(a.timing_epochs, 1)
        t = time.perf_counter()
        res = train_recipe(name, ds, seed=0, device=a.device, cache_dir=cache)
        how = "cached" if res.from_cache else f"{time.perf_counter() - t:.0f} s"
        probs = torch.softmax(predict_logits(res.model, ds.test.x, batch_size=1024).float(), dim=1).cpu()
        n_w = sum(p.numel() for p in res.model.parameters())
        print(f"{name:<24} {n_w / 1e6:>7.2f}M {per_epoch:>8.1f} {r.epochs:>6} {per_epoch * r.epochs:>8.0f} "
              f"{how:>8} {accuracy(probs, ds.test.y):>8.3f} {nll(probs, ds.test.y):>6.3f} "
              f"{ece(probs, ds.test.y):>6.3f}")
    print("* full s: the recipe's epochs times the measured seconds per epoch (what a cold cache costs)")


if __name__ == "__main__":
    main()
