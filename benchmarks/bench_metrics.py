"""Our batched explanation metrics vs Quantus 0.6 on the same model, inputs, explanation function and draws.

On a CPU the model's own forward/backward passes dominate for a CNN, and both sides run the same number of
them, so the ratio there is bounded by Quantus' per-step overhead; ``--model linear`` shows the overhead-bound
case. Both sides get identical perturbations (Quantus through a custom ``perturb_func`` that hands over our noise,
or our functions through the masks Quantus drew), so the values must agree; the ratio column is
Quantus' time over ours, measured side by side in this one run.

    python benchmarks/bench_metrics.py [--n 64] [--samples 200] [--threads 1]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=64, help="images (digits test split)")
    ap.add_argument("--samples", type=int, default=200, help="noise draws / masks per image (paper: 200)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads for both sides")
    ap.add_argument("--model", choices=["small_cnn", "linear"], default="small_cnn",
                    help="small_cnn (compute-bound on CPU) or a linear softmax model on the 64 pixels (overhead-bound)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")

    import quantus
    from quantus.functions.perturb_func import batch_baseline_replacement_by_indices

    from xcal_core.data import load_dataset
    from xcal_core.explainers import explain
    from xcal_core.metrics import avg_sensitivity, faithfulness_correlation, infidelity, max_sensitivity, uniform_noise
    from xcal_core.models import build_model

    torch.manual_seed(0)
    ds = load_dataset("digits", seed=0)
    if args.model == "small_cnn":
        model = build_model("small_cnn", ds.info.input_shape, ds.info.n_classes).eval()  # untrained: speed only
    else:
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, ds.info.n_classes)).eval()
    x = ds.test.x[: args.n]
    y = model(x).argmax(1)
    m = args.samples

    def ours_fn(mdl, xx, tt):
        return explain(mdl, xx, tt, "input_x_gradient")

    def quantus_fn(model, inputs, targets, **kw):
        return ours_fn(model, torch.as_tensor(inputs), torch.as_tensor(targets).long()).numpy()

    a = ours_fn(model, x, y)
    xn, yn, an = x.numpy(), y.numpy(), a.numpy()
    rows = []

    def timed(fn):
        t0 = time.perf_counter()
        out = fn()
        return out, time.perf_counter() - t0

    # --- Average / Max sensitivity: Quantus gets our noise through perturb_func
    noise = uniform_noise(m, tuple(x.shape), 0.1, generator=torch.Generator().manual_seed(1))
    for name, cls, ours in (("avg_sensitivity", quantus.AvgSensitivity, avg_sensitivity), ("max_sensitivity", quantus.MaxSensitivity, max_sensitivity)):
        calls = {"i": 0}

        def perturb(arr, indices, **kw):
            e = noise[calls["i"]].reshape(arr.shape).numpy()
            calls["i"] += 1
            return arr + e

        metric = cls(nr_samples=m, perturb_func=perturb, disable_warnings=True)
        q, tq = timed(lambda: np.asarray(metric(model=model, x_batch=xn, y_batch=yn, a_batch=an, explain_func=quantus_fn, channel_first=True, device="cpu", batch_size=args.n)))
        o, to = timed(lambda: ours(model, x, y, ours_fn, attributions=a, noise=noise, batch_size=4096).numpy())
        rows.append((name, tq, to, float(np.max(np.abs(q - o)))))

    # --- Faithfulness correlation: our function gets the masks Quantus drew
    drawn = []

    def perturb_rec(arr, indices, **kw):
        drawn.append(indices.copy())
        return batch_baseline_replacement_by_indices(arr, indices, **kw)

    metric = quantus.FaithfulnessCorrelation(nr_runs=m, subset_size=13, return_aggregate=False, perturb_func=perturb_rec, disable_warnings=True)
    q, tq = timed(lambda: np.asarray(metric(model=model, x_batch=xn, y_batch=yn, a_batch=an, channel_first=True, device="cpu", batch_size=args.n)))
    masks = torch.zeros(m, args.n, 64, dtype=torch.bool)
    for j, idx in enumerate(drawn):
        masks[j].scatter_(1, torch.as_tensor(idx), True)
    black = x.reshape(args.n, -1).min(1).values.view(-1, 1, 1, 1)
    o, to = timed(lambda: faithfulness_correlation(model, x, y, a, masks=masks.view(m, args.n, 1, 8, 8), baseline=black, batch_size=4096).numpy())
    rows.append(("faithfulness_correlation", tq, to, float(np.nanmax(np.abs(q - o)))))

    # --- Infidelity: Quantus' design (cumulative 2x2 patch sweep, x - x_perturbed weighting, no rescaling)
    steps, cur = [], torch.zeros(args.n, 8, 8, dtype=torch.bool)
    for bi in range(4):
        for bj in range(4):
            cur = cur.clone()
            cur[:, 2 * bi : 2 * bi + 2, 2 * bj : 2 * bj + 2] = True
            steps.append(cur)
    reps = max(1, m // 16)  # Quantus repeats the sweep n_perturb_samples times; so do we
    sweep = torch.stack(steps).repeat(reps, 1, 1, 1)
    metric = quantus.Infidelity(perturb_patch_sizes=[2], n_perturb_samples=reps, disable_warnings=True)
    q, tq = timed(lambda: np.asarray(metric(model=model, x_batch=xn, y_batch=yn, a_batch=an, channel_first=True, device="cpu", batch_size=args.n)))
    o, to = timed(lambda: infidelity(model, x, y, a, masks=sweep, baseline=black, weighting="difference", normalize=False, batch_size=4096).numpy())
    rows.append(("infidelity", tq, to, float(np.max(np.abs(q - o)))))

    print(f"digits {args.model} (untrained), {args.n} images, {m} draws, torch threads {args.threads}, explain_fn = input_x_gradient")
    print(f"{'metric':26s} {'quantus_s':>10s} {'ours_s':>8s} {'speedup':>8s} {'max|diff|':>10s}")
    for name, tq, to, d in rows:
        print(f"{name:26s} {tq:10.3f} {to:8.3f} {tq / to:7.1f}x {d:10.2e}")


if __name__ == "__main__":
    main()
