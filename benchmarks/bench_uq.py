"""Benchmark: explanation distributions with all T realisations vectorized vs a Python loop over T.

Both paths compute the same T frozen realisations (MC-Dropout, DropConnect, Flipout, a deep ensemble of M
members) and the same explanations (Guided Backprop, Integrated Gradients, LIME on a grid of patches); the
script checks that the results are identical (max abs difference printed) and prints wall-time ratios
measured side by side in one run (both paths with the same ``--batch-size``). The last column says which
path ``vectorize="auto"`` takes for that row on this device.

* loop: ``explanation_distribution(..., vectorize=False)``, one ``explain`` call per realisation / member;
* vectorized: all realisations of a chunk in one batched pass (per-block masks and weight samples;
  ensemble members: ``ensemble`` uses the device default, ``ens_stacked`` forces the members' layers to
  be stacked and vmapped); LIME builds every perturbed input once for all T realisations (the same
  coalitions for every realisation, as the loop uses; layers before the first stochastic layer run once
  per perturbed input) and solves the T weighted ridge regressions of a sample as one
  multi-right-hand-side system.

    python benchmarks/bench_uq.py [--t 30] [--n 64] [--steps 32] [--lime-samples 300] [--repeats 3] [--device auto]
                                  [--size 8] [--channels 1] [--kinds mc_dropout,dropconnect,...]
"""

from __future__ import annotations

import argparse
import time

import torch

from xcal_core.models import build_model
from xcal_core.perturbations.masks import patch_feature_mask
from xcal_core.models.stochastic import sample_realisations, to_dropconnect, to_flipout
from xcal_core.runtime import resolve_device
from xcal_core.uq import explanation_distribution
from xcal_core.uq.distributions import _auto_vectorize


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
    ap.add_argument("--lime-samples", type=int, default=300, help="LIME coalitions per explanation")
    ap.add_argument("--n-lime", type=int, default=20, help="images explained by LIME")
    ap.add_argument("--patch", type=int, default=2, help="LIME patch side (features = (size / patch)^2)")
    ap.add_argument("--size", type=int, default=8, help="image side (digits-like channels x size x size)")
    ap.add_argument("--channels", type=int, default=1, help="image channels (3 for shapes-like inputs)")
    ap.add_argument("--kinds", default="mc_dropout,dropconnect,flipout,ensemble,ens_stacked", help="rows to run")
    ap.add_argument("--batch-size", type=int, default=4096, help="rows per forward pass, vectorized path")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    dev = resolve_device(args.device)
    torch.manual_seed(0)
    shape = (args.channels, args.size, args.size)
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
    # the same members once more, forced to run stacked (vmapped) in the batched pass; the "ensemble" row
    # uses the device default (stacked on accelerators, a member loop inside the batched pass on the CPU)
    real["ens_stacked"] = sample_realisations(real["ensemble"].members)
    real["ens_stacked"].stack_members = True
    print(f"device={dev}  T={args.t}  M={args.members}  N={args.n} (LIME {args.n_lime})  input={shape}  "
          f"IG steps={args.steps}  LIME samples={args.lime_samples}  threads={torch.get_num_threads()}")
    print(f"{'UE method':<12} {'explainer':<22} {'loop s':>8} {'vector s':>9} {'speed-up':>9} {'max |diff|':>11} {'auto':>7}")
    mask = patch_feature_mask(args.size, args.size, args.patch)
    for v in (False, True):  # warm-up (first-call allocations, Captum imports) outside the timings
        explanation_distribution(real["mc_dropout"], x[:2], "predicted", "guided_backprop", vectorize=v)
    methods = [("guided_backprop", {}, x), ("integrated_gradients", {"steps": args.steps}, x),
               ("lime", {"n_samples": args.lime_samples, "feature_mask": mask}, x[:args.n_lime])]
    for kind, r in real.items():
        if kind not in args.kinds.split(","):
            continue
        for method, kw, xm in methods:
            if method == "lime":  # the same coalitions on both paths (and for every realisation): the
                # vectorized LIME path exists for shared coalitions only; fresh ones always loop
                kw = {**kw, "generator": torch.Generator().manual_seed(3), "coalitions": "shared"}
            t_loop, a = _time(lambda: explanation_distribution(r, xm, "predicted", method, vectorize=False,
                                                               batch_size=args.batch_size, **kw), args.repeats)
            t_vec, b = _time(lambda: explanation_distribution(r, xm, "predicted", method, vectorize=True,
                                                              batch_size=args.batch_size, **kw), args.repeats)
            diff = float((a - b).abs().max())
            auto = "vector" if _auto_vectorize(r, method) else "loop"  # (LIME with fresh coalitions: loop)
            print(f"{kind:<12} {method:<22} {t_loop:8.3f} {t_vec:9.3f} {t_loop / t_vec:8.2f}x {diff:11.2e} {auto:>7}",
                  flush=True)


if __name__ == "__main__":
    main()
