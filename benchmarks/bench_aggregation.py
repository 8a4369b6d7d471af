"""Seconds per image of AGG_faith / AGG_robust / AGG_opt: our batched pipeline vs a naive loop with the released
code's structure (one image at a time, a Python loop over perturbations and methods, one cvxpy solve per image),
plus the QP alone (cvxpy per problem vs the batched exact solver). Ratios are measured side by side in one run.

    python benchmarks/bench_aggregation.py [--n 8] [--m 50] [--threads 1] [--device cpu]
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch


def naive_weights(model, x1, t1, fns, strategy, m, radius, share, gen):
    """The released code's loop structure for one image (batch size 1 everywhere)."""
    from xcal_core.aggregation import combine_grams, infidelity_gram, normalize_attributions, solve_simplex_qp
    from xcal_core.metrics import blur_images

    phi0 = torch.stack([normalize_attributions(fn(model, x1, t1)).flatten() for fn in fns])  # (k, d)
    grams = []
    if strategy in ("robust", "opt"):
        G = torch.zeros(len(fns), len(fns), dtype=torch.float64)
        for _ in range(m):  # one perturbation at a time
            xp = x1 + (torch.rand(x1.shape, generator=gen) * 2 - 1) * radius
            phis = torch.stack([normalize_attributions(fn(model, xp, t1)).flatten() for fn in fns])  # one method at a time
            gam = (phi0 - phis).double()
            G += gam @ gam.T
        grams.append(G / m)
    if strategy in ("faith", "opt"):
        base = blur_images(x1, 1.0)
        d = phi0.shape[1]
        n_sel = max(1, int(share * d))
        sums, deltas = [], []
        with torch.no_grad():
            f0 = model(x1)[0, t1[0]]
            for _ in range(m):
                sel = torch.randperm(d, generator=gen)[:n_sel]
                mask = torch.zeros(d, dtype=torch.bool)
                mask[sel] = True
                xp = torch.where(mask.view(1, 1, *x1.shape[2:]), base, x1)
                deltas.append(f0 - model(xp)[0, t1[0]])
                sums.append(phi0[:, mask].sum(1))
        grams.append(infidelity_gram(torch.stack(sums)[None], torch.stack(deltas)[None])[0])
    G = combine_grams(grams) if len(grams) == 2 else grams[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return solve_simplex_qp(G)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=8, help="images")
    ap.add_argument("--m", type=int, default=50, help="metric samples per image (paper: 50)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--qp", type=int, default=500, help="QPs in the solver comparison")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")

    from xcal_core.aggregation import aggregate, make_methods, solve_simplex_qp, solve_simplex_qp_exact
    from xcal_core.data import load_dataset
    from xcal_core.models import build_model

    torch.manual_seed(0)
    ds = load_dataset("digits", seed=0)
    device = torch.device(args.device)
    model = build_model("small_cnn", ds.info.input_shape, ds.info.n_classes).eval().to(device)
    x = ds.test.x[: args.n].to(device)
    t = model(x).argmax(1)
    names = ["saliency", "guided_backprop", "deeplift", "integrated_gradients", "input_x_gradient", "smoothgrad", "vargrad"]
    fns = make_methods(names, ig_steps=50, noise_samples=20, generator=torch.Generator(device=device).manual_seed(0))
    fns_list = list(fns.values())
    aggregate(model, x[:2], t[:2], fns, "robust", m=2)  # warm-up (hooks, cvxpy import)

    print(f"digits small_cnn, {args.n} images, k = {len(names)} methods (Table 1 set), m = {args.m}, device {device}, threads {args.threads}")
    print(f"{'strategy':10s} {'naive s/img':>12s} {'batched s/img':>14s} {'speedup':>8s}")
    for strategy in ("faith", "robust", "opt"):
        gen = torch.Generator(device=device).manual_seed(1)
        t0 = time.perf_counter()
        for i in range(args.n):
            naive_weights(model, x[i : i + 1], t[i : i + 1], fns_list, strategy, args.m, 0.1, 0.2, gen)
        naive = (time.perf_counter() - t0) / args.n
        t0 = time.perf_counter()
        aggregate(model, x, t, fns, strategy, m=args.m, blur_sigma=1.0, generator=torch.Generator(device=device).manual_seed(1), batch_size=2048)
        ours = (time.perf_counter() - t0) / args.n
        print(f"{strategy:10s} {naive:12.3f} {ours:14.3f} {naive / ours:7.1f}x")

    A = torch.randn(args.qp, 30, len(names), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    M = A.transpose(1, 2) @ A / 30
    solve_simplex_qp(M[:2])
    t0 = time.perf_counter()
    wc = solve_simplex_qp(M)
    tc = time.perf_counter() - t0
    t0 = time.perf_counter()
    we = solve_simplex_qp_exact(M)
    te = time.perf_counter() - t0
    gap = float(torch.einsum("bi,bij,bj->b", we, M, we).sub(torch.einsum("bi,bij,bj->b", wc, M, wc)).max())
    print(f"QP, {args.qp} problems with k = {len(names)}: cvxpy (OSQP, DPP, one compile) {tc:.3f} s, batched exact {te:.3f} s "
          f"-> {tc / te:.1f}x; max objective(exact) - objective(cvxpy) = {gap:.1e}")


if __name__ == "__main__":
    main()
