"""Our batched explanation metrics vs Quantus 0.6 on the same model, inputs, explanation function and draws.

Both sides get identical perturbations (Quantus through a custom ``perturb_func`` that hands over our noise,
or our functions through the masks Quantus drew) and the same sample counts, so the values must agree; Quantus
runs with its own batching as designed (``batch_size`` = all images: one explanation call / forward pass per
draw over the whole batch). Every time is the best of ``--repeats`` runs, measured side by side in this one run.

Besides the two implementations the script times the *floor*: only the model passes a metric cannot avoid
(m x N input-gradient passes for the sensitivity metrics, whose explanation is ``input_x_gradient``; m x N
forward passes for Infidelity / Faithfulness Correlation), as bare PyTorch, with the best of several chunk sizes
(64 ... 4096 inputs per pass; the winner is printed). ``quantus/floor`` is the largest speedup any implementation
could show over Quantus; ``ours/floor`` is what our engine spends on top of those passes (1.0 = nothing).
``rel.diff`` is max |quantus - ours| / max |quantus| over the samples; the script stops if it exceeds 1e-4.

What the numbers say. Measured 2026-11-23 on the idle 2-core workshop CPU with both cores (``--threads 2``, the
default; 64 images, 200 draws, best of 3, wall clock); the output of a run is the authority:

    model      metric                    quantus  ours     ours vs quantus  quantus/floor  ours/floor  rel.diff
    small_cnn  avg_sensitivity           0.86 s   0.36 s    2.4x             3.3x          1.38x       1e-07
    small_cnn  max_sensitivity           0.95 s   0.26 s    3.6x             3.6x          1.00x       1e-07
    small_cnn  faithfulness_correlation  0.58 s   0.13 s    4.6x             5.8x          1.26x       2e-07
    small_cnn  infidelity                0.43 s   0.11 s    3.8x             4.7x          1.21x       3e-07
    linear     avg_sensitivity           0.43 s   0.028 s  15.0x           328x           22x          2e-07
    linear     max_sensitivity           0.43 s   0.029 s  14.9x           327x           22x          9e-08
    linear     faithfulness_correlation  0.36 s   0.011 s  32.0x           824x           26x          2e-07
    linear     infidelity                0.26 s   0.010 s  26.0x           626x           24x          6e-07

With one thread (``--threads 1 --clock cpu``, same day) the small CNN gave 2.6-3.2x with quantus/floor 2.7-4.1x,
and the linear model 14-30x.

* ``--model linear`` (64 -> 10 softmax): the model passes cost almost nothing; Quantus' per-draw Python and numpy
  work (perturbation, ``np.allclose`` "perturbation caused no change" checks on every sample and draw, attribution
  asserts, numpy <-> torch copies) is the whole cost, and ours is 15-32x faster: the >= 10x target holds.
* ``--model small_cnn`` (the digits CNN of the notebooks, 4 conv layers + BatchNorm): the >= 10x target is NOT
  reachable on a CPU, by any implementation. Both sides must run the same m x N = 12 800 input-gradient passes
  (the sensitivity metrics re-explain every perturbed input; that backward pass *is* the explanation) or forward
  passes (Infidelity / FCOR), and those passes alone (the floor, at its best batch size) already take 1/3.3 to
  1/5.8 of Quantus' total time. Ours runs at 1.0-1.4x the floor (one chunked explanation call per batch of
  perturbed inputs of all samples, one chunked forward per batch of masked inputs, the clean forward once,
  inference mode, no per-sample loops or numpy round trips), so its speedup is capped by ``quantus/floor``. Quantus
  runs no model pass these estimators could skip (one clean forward per batch plus one pass per draw; with
  ``return_nan_when_prediction_changes=False`` it runs no prediction check), so there is no redundant pass to
  remove and nothing beneath the floor without reducing the number of draws. Only hardware on which the passes get much cheaper relative to
  Quantus' host-side numpy work (a GPU; not measured here) or a cheaper model moves the ratio.

    python benchmarks/bench_metrics.py [--model both] [--n 64] [--samples 200] [--threads N] [--repeats 3] [--clock wall]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch

FLOOR_CHUNKS = (64, 128, 256, 512, 1024, 4096)  # the floor gets the best of these batch sizes


CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}
clock = time.perf_counter


def best_of(fn, repeats: int):
    """(last result, best time) over ``repeats`` calls."""
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = clock()
        out = fn()
        best = min(best, clock() - t0)
    return out, best


def floor_gradients(model, xs: torch.Tensor, ts: torch.Tensor, chunk: int) -> None:
    """The bare input-gradient passes of ``input_x_gradient`` on every perturbed input, ``chunk`` inputs per pass."""
    for s in range(0, xs.shape[0], chunk):
        xi = xs[s : s + chunk].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(model(xi).gather(1, ts[s : s + chunk, None]).sum(), xi)
        _ = xi.detach() * g


def floor_forward(model, xs: torch.Tensor, chunk: int) -> None:
    """The bare forward passes on every masked input, ``chunk`` inputs per pass."""
    with torch.inference_mode():
        for s in range(0, xs.shape[0], chunk):
            model(xs[s : s + chunk])


def rel_diff(q, o) -> float:
    """max |quantus - ours| over the samples, relative to max |quantus| (NaN-aware: both NaN counts as equal)."""
    q, o = np.asarray(q, dtype=np.float64), np.asarray(o, dtype=np.float64)
    if not np.array_equal(np.isnan(q), np.isnan(o)):
        return float("inf")
    return float(np.nanmax(np.abs(q - o)) / max(np.nanmax(np.abs(q)), 1e-300))


def best_floor(fn, repeats: int) -> tuple[float, int]:
    """Fastest time of ``fn(chunk)`` over :data:`FLOOR_CHUNKS` (best of ``repeats`` each) and its chunk size."""
    return min((best_of(lambda: fn(c), repeats)[1], c) for c in FLOOR_CHUNKS)


def run_model(kind: str, args) -> list[tuple]:
    import quantus
    from quantus.functions.perturb_func import batch_baseline_replacement_by_indices

    from xcal_core.data import load_dataset
    from xcal_core.explainers import explain
    from xcal_core.metrics import avg_sensitivity, faithfulness_correlation, infidelity, max_sensitivity, uniform_noise
    from xcal_core.models import build_model

    torch.manual_seed(0)
    ds = load_dataset("digits", seed=0)
    if kind == "small_cnn":
        model = build_model("small_cnn", ds.info.input_shape, ds.info.n_classes).eval()  # untrained: speed only
    else:
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, ds.info.n_classes)).eval()
    n, m, R = args.n, args.samples, args.repeats
    x = ds.test.x[:n]
    with torch.no_grad():
        y = model(x).argmax(1)

    def ours_fn(mdl, xx, tt):
        return explain(mdl, xx, tt, "input_x_gradient")

    def quantus_fn(model, inputs, targets, **kw):  # Quantus' numpy interface around the same explanation
        return ours_fn(model, torch.as_tensor(inputs), torch.as_tensor(targets).long()).numpy()

    a = ours_fn(model, x, y)
    xn, yn, an = x.numpy(), y.numpy(), a.numpy()
    rows = []

    # --- Average / Max sensitivity: Quantus gets our noise through perturb_func
    noise = uniform_noise(m, tuple(x.shape), 0.1, generator=torch.Generator().manual_seed(1))
    xs = (x[None] + noise).reshape(m * n, *x.shape[1:])
    ts = y.repeat(m)
    t_floor_grad, c_grad = best_floor(lambda c: floor_gradients(model, xs, ts, c), R)
    for name, cls, ours in (("avg_sensitivity", quantus.AvgSensitivity, avg_sensitivity), ("max_sensitivity", quantus.MaxSensitivity, max_sensitivity)):
        calls = {"i": 0}

        def perturb(arr, indices, **kw):
            e = noise[calls["i"] % m].reshape(arr.shape).numpy()
            calls["i"] += 1
            return arr + e

        metric = cls(nr_samples=m, perturb_func=perturb, disable_warnings=True)
        q, tq = best_of(lambda: np.asarray(metric(model=model, x_batch=xn, y_batch=yn, a_batch=an, explain_func=quantus_fn,
                                                  channel_first=True, device="cpu", batch_size=n)), R)
        o, to = best_of(lambda: ours(model, x, y, ours_fn, attributions=a, noise=noise).numpy(), R)
        rows.append((name, tq, to, t_floor_grad, c_grad, rel_diff(q, o)))

    # --- Faithfulness correlation: our function gets the masks Quantus drew (first run)
    drawn = []

    def perturb_rec(arr, indices, **kw):
        drawn.append(indices.copy())
        return batch_baseline_replacement_by_indices(arr, indices, **kw)

    def quantus_fcor():
        drawn.clear()  # keep the masks of the run whose values are returned (the last one)
        return np.asarray(metric(model=model, x_batch=xn, y_batch=yn, a_batch=an, channel_first=True, device="cpu", batch_size=n))

    metric = quantus.FaithfulnessCorrelation(nr_runs=m, subset_size=13, return_aggregate=False, perturb_func=perturb_rec, disable_warnings=True)
    q, tq = best_of(quantus_fcor, R)
    masks = torch.zeros(m, n, 64, dtype=torch.bool)
    for j, idx in enumerate(drawn):
        masks[j].scatter_(1, torch.as_tensor(idx), True)
    black = x.reshape(n, -1).min(1).values.view(-1, 1, 1, 1)
    o, to = best_of(lambda: faithfulness_correlation(model, x, y, a, masks=masks.view(m, n, 1, 8, 8), baseline=black).numpy(), R)
    xs_f = torch.where(masks.view(m, n, 1, 8, 8), black[None], x[None]).reshape(m * n, *x.shape[1:])
    tf, cf = best_floor(lambda c: floor_forward(model, xs_f, c), R)
    rows.append(("faithfulness_correlation", tq, to, tf, cf, rel_diff(q, o)))

    # --- Infidelity: Quantus' design (cumulative 2x2 patch sweep, x - x_perturbed weighting, no rescaling)
    steps, cur = [], torch.zeros(n, 8, 8, dtype=torch.bool)
    for bi in range(4):
        for bj in range(4):
            cur = cur.clone()
            cur[:, 2 * bi : 2 * bi + 2, 2 * bj : 2 * bj + 2] = True
            steps.append(cur)
    reps = max(1, m // 16)  # Quantus repeats the sweep n_perturb_samples times; so do we (same forward count)
    sweep = torch.stack(steps).repeat(reps, 1, 1, 1)
    metric = quantus.Infidelity(perturb_patch_sizes=[2], n_perturb_samples=reps, disable_warnings=True)
    q, tq = best_of(lambda: np.asarray(metric(model=model, x_batch=xn, y_batch=yn, a_batch=an, channel_first=True, device="cpu", batch_size=n)), R)
    o, to = best_of(lambda: infidelity(model, x, y, a, masks=sweep, baseline=black, weighting="difference", normalize=False).numpy(), R)
    xs_i = torch.where(sweep.unsqueeze(2), black[None], x[None]).reshape(-1, *x.shape[1:])
    tf, cf = best_floor(lambda c: floor_forward(model, xs_i, c), R)
    rows.append(("infidelity", tq, to, tf, cf, rel_diff(q, o)))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=64, help="images (digits test split)")
    ap.add_argument("--samples", type=int, default=200, help="noise draws / masks per image (paper: 200)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads for both sides (default: all cores)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per side; the best is reported")
    ap.add_argument("--model", choices=["small_cnn", "linear", "both"], default="both",
                    help="small_cnn (compute-bound on CPU), a linear softmax model on the 64 pixels (overhead-bound), or both")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="wall time, or process CPU time (steadier on a shared machine; use with --threads 1)")
    args = ap.parse_args()
    global clock
    clock = CLOCK[args.clock]
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    args.threads = torch.get_num_threads()
    warnings.filterwarnings("ignore")

    kinds = ["small_cnn", "linear"] if args.model == "both" else [args.model]
    for kind in kinds:
        rows = run_model(kind, args)
        print(f"\ndigits {kind} (untrained), {args.n} images, {args.samples} draws, torch threads {args.threads}, "
              f"explain_fn = input_x_gradient, best of {args.repeats}, {args.clock} clock")
        print(f"{'metric':26s} {'quantus_s':>10s} {'ours_s':>8s} {'ours vs quantus':>16s} {'floor_s':>8s} {'(chunk)':>7s} "
              f"{'quantus/floor':>14s} {'ours/floor':>11s} {'rel.diff':>9s}")
        for name, tq, to, tf, cf, d in rows:
            print(f"{name:26s} {tq:10.3f} {to:8.3f} {tq / to:15.1f}x {tf:8.3f} {cf:7d} {tq / tf:13.1f}x {to / tf:10.2f}x {d:9.1e}")
        met = sum(tq / to >= 10 for _, tq, to, _, _, _ in rows)
        caps = [tq / tf for _, tq, _, tf, _, _ in rows]
        print(f"target >= 10x faster than Quantus: met on {met}/{len(rows)} metrics. quantus/floor, the most any implementation "
              f"could gain (the m x N model passes are unavoidable), is {min(caps):.1f}x to {max(caps):.1f}x here"
              + (f"; on {sum(c < 10 for c in caps)} metric(s) it is below 10x, so 10x is out of reach there for any implementation "
                 "on this CPU." if min(caps) < 10 else "."))
        bad = [name for name, *_, d in rows if not d <= 1e-4]
        assert not bad, f"ours and Quantus disagree on {bad}"


if __name__ == "__main__":
    main()
