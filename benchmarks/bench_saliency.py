"""RISE and Meaningful Perturbation throughput: batched over images vs one image at a time.

Both runs use the same implementation and settings; "one at a time" is the usual per-image loop of
research code (RISE: each image's masks still go through the model in chunks, MP: one optimization per
image); for RISE a third column is the naive loop with one forward pass per (image, mask). Ratios are
measured side by side in one process, on the same model and images.

Usage::

    python benchmarks/bench_saliency.py [--n-images 16] [--size 32] [--rise-masks 1000] [--mp-steps 100] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import torch

from xcal_core.explainers import explain
from xcal_core.models import build_model


def _time(fn, repeats: int = 1) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-images", type=int, default=16)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--rise-masks", type=int, default=1000)
    ap.add_argument("--mp-steps", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model("small_cnn", input_shape=(3, args.size, args.size), n_classes=6).to(args.device).eval()
    x = torch.rand(args.n_images, 3, args.size, args.size, device=args.device)
    target = torch.zeros(args.n_images, dtype=torch.long)
    n = args.n_images

    rise_kw = dict(score="probability", n_masks=args.rise_masks, grid_size=8, batch_size=args.batch_size)
    mp_kw = dict(score="probability", n_steps=args.mp_steps, mask_size=8, blur_kernel=11, blur_sigma=2.0, batch_size=args.batch_size)
    rows = []
    for name, kw in [("rise", rise_kw), ("meaningful_perturbation", mp_kw)]:
        warm = {**kw, "n_masks": 8} if name == "rise" else {**kw, "n_steps": 2}
        explain(model, x[:2], target[:2], name, generator=torch.Generator().manual_seed(0), **warm)  # warm-up
        batched = _time(lambda: explain(model, x, target, name, generator=torch.Generator().manual_seed(0), **kw))
        looped = _time(lambda: [explain(model, x[i:i + 1], target[i:i + 1], name, generator=torch.Generator().manual_seed(0), **kw)
                                for i in range(n)])
        naive = None
        if name == "rise":  # the naive loop: one forward pass per (image, mask), timed on 2 images
            naive = 2 / _time(lambda: explain(model, x[:2], target[:2], name, generator=torch.Generator().manual_seed(0),
                                              **{**kw, "batch_size": 1}))
        rows.append((name, n / batched, n / looped, looped / batched, naive))
    print(f"{n} images {args.size}x{args.size}, small_cnn, {args.threads} threads, device {args.device}, "
          f"RISE {args.rise_masks} masks, MP {args.mp_steps} steps, batch_size {args.batch_size}")
    print(f"{'method':<26}{'batched img/s':>15}{'one-at-a-time img/s':>22}{'speed-up':>10}{'per-mask loop img/s':>22}{'speed-up':>10}")
    for name, b, lp, r, nv in rows:
        tail = f"{nv:>22.2f}{b / nv:>9.1f}x" if nv else f"{'-':>22}{'-':>10}"
        print(f"{name:<26}{b:>15.2f}{lp:>22.2f}{r:>9.1f}x{tail}")


if __name__ == "__main__":
    main()
