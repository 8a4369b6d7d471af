"""Benchmark: explanation distributions with all T realisations vectorized vs a Python loop over T.

Both paths compute the same T frozen realisations (MC-Dropout, DropConnect, Flipout, a deep ensemble) and
the same explanations (Guided Backprop and Integrated Gradients); the script checks that the results are
identical (max abs difference printed) and prints wall-time ratios measured side by side in one run.

    python benchmarks/bench_uq.py [--t 30] [--n 64] [--steps 32] [--repeats 3] [--device auto]
"""

from __future__ import annotations

import argparse
import time

import torch

from xcal_core.models import build_model
from xcal_core.models.stochastic import sample_realisations, to_dropconnect, to_flipout
from xcal_core.runtime import resolve_device
from xcal_core.uq import explanation_distribution


def _time(fn, repeats: int) -> tuple[float, torch.Tensor]:
    best, out = float("inf"), None
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--t", type=int, default=30, help="realisations T")
    ap.add_argument("--n", type=int, default=64, help="images explained")
    ap.add_argument("--steps", type=int, default=32, help="IG steps")
    ap.add_argument("--members", type=int, default=5, help="ensemble members")
    ap.add_argument("--size", type=int, default=8, help="image side (digits-like 1 x size x size)")
    ap.add_argument("--batch-size", type=int, default=4096, help="rows per forward pass, vectorized path")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    dev = resolve_device(args.device)
    torch.manual_seed(0)
    shape = (1, args.size, args.size)
    x = torch.rand(args.n, *shape, generator=torch.Generator().manual_seed(1)).to(dev)
    base = build_model("small_cnn", shape, 10, dropout=0.3).to(dev).eval()
    plain = build_model("small_cnn", shape, 10).to(dev).eval()
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    real = {
        "mc_dropout": sample_realisations(base, args.t, generator=g()),
        "dropconnect": sample_realisations(to_dropconnect(plain, 0.3), args.t, generator=g()),
        "flipout": sample_realisations(to_flipout(plain, rho_init=-3.0), args.t, generator=g()),
        "ensemble": sample_realisations([build_model("small_cnn", shape, 10).to(dev).eval() for _ in range(args.members)]),
    }
    print(f"device={dev}  T={args.t}  N={args.n}  input={shape}  IG steps={args.steps}  threads={torch.get_num_threads()}")
    print(f"{'UE method':<12} {'explainer':<22} {'loop s':>8} {'vector s':>9} {'speed-up':>9} {'max |diff|':>11}")
    for kind, r in real.items():
        for method, kw in [("guided_backprop", {}), ("integrated_gradients", {"steps": args.steps})]:
            t_loop, a = _time(lambda: explanation_distribution(r, x, "predicted", method, vectorize=False, **kw), args.repeats)
            t_vec, b = _time(lambda: explanation_distribution(r, x, "predicted", method, vectorize=True,
                                                              batch_size=args.batch_size, **kw), args.repeats)
            diff = float((a - b).abs().max())
            print(f"{kind:<12} {method:<22} {t_loop:8.3f} {t_vec:9.3f} {t_loop / t_vec:8.2f}x {diff:11.2e}")


if __name__ == "__main__":
    main()
