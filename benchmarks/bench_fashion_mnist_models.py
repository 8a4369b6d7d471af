"""Training cost and quality of the workshop's Fashion-MNIST models (no assertions, printed numbers).

For each model (``small_cnn`` and the small ResNet ``resnet20``): seconds per training epoch on this
machine, measured from a cold cache, and the test accuracy, NLL and ECE (15 bins) of the trained model
on the official test images. The data are the real Fashion-MNIST idx files (``load_dataset("fashion_mnist")``).

Usage: ``python benchmarks/bench_fashion_mnist_models.py [--n-train 20000] [--epochs 8] [--models small_cnn resnet20]
[--device cpu|cuda] [--threads N]``
"""

from __future__ import annotations

import argparse
import time

import torch

from xcal_core.data import load_dataset
from xcal_core.metrics import accuracy, ece, nll
from xcal_core.models import predict_logits, train_classifier


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-train", type=int, default=20_000)
    ap.add_argument("--n-cal", type=int, default=2000)
    ap.add_argument("--n-test", type=int, default=10_000)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--models", nargs="+", default=["small_cnn", "resnet20"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    ds = load_dataset("fashion_mnist", n_train=a.n_train, n_cal=a.n_cal, n_test=a.n_test)
    print(f"{ds} loaded in {time.perf_counter() - t0:.1f} s from {ds.info.extra['source']}; "
          f"torch threads {torch.get_num_threads()}, device {a.device}")
    print(f"{'model':<10} {'weights':>8} {'epochs':>6} {'s/epoch':>8} {'total s':>8} {'test acc':>8} {'NLL':>6} {'ECE':>6}")
    for name in a.models:
        t = time.perf_counter()
        res = train_classifier(name, ds, epochs=a.epochs, lr=a.lr, batch_size=a.batch_size, seed=0,
                               device=a.device, cache_dir=None, progress=False)
        secs = time.perf_counter() - t
        logits = predict_logits(res.model, ds.test.x, batch_size=1024)
        probs = torch.softmax(logits.float(), dim=1).cpu()
        n_w = sum(p.numel() for p in res.model.parameters())
        print(f"{name:<10} {n_w / 1e6:>7.2f}M {a.epochs:>6} {secs / max(a.epochs, 1):>8.1f} {secs:>8.0f} "
              f"{accuracy(probs, ds.test.y):>8.3f} {nll(probs, ds.test.y):>6.3f} {ece(probs, ds.test.y):>6.3f}")


if __name__ == "__main__":
    main()
