"""Benchmark: xcal's batched, mask-carrying perturbation explainers vs Captum, and ce_kl cost.

Part 1 runs, on the same CNN, images, patch feature mask, zero baseline and sample budget,
ours and Captum's ShapleyValueSampling / KernelShap / Lime / FeatureAblation side by side and
prints the median wall times, the ratio Captum / ours (> 1: ours is faster) and the agreement:
for the sampling estimators both are compared with exact Shapley values (2^d coalitions, so d is
kept small), for Feature Ablation the two must be identical.

Part 2 times ``ce_kl`` (leave-one-out Dirichlet kernel, chunked) at n = 1000 and 5000, K = 10,
with a fixed bandwidth and with the leave-one-out bandwidth search, and reports the peak resident
memory growth of a fresh subprocess.

    python benchmarks/bench_perturbation_explainers.py            # CPU, about 1-2 min on 2 cores
    python benchmarks/bench_perturbation_explainers.py --device cuda --n 32
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import warnings

import torch


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, repeats):
    fn()  # warm-up (lazy imports, kernels)
    _sync(device)
    ts, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        _sync(device)
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), out


def mean_abs(a, b):
    return float((a.detach().float().cpu() - b.detach().float().cpu()).abs().mean())


_CE_KL_CHILD = r"""
import json, sys, time, torch
from xcal_core.metrics import ce_kl
n, k, search = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
g = torch.Generator().manual_seed(0)
z = torch.randn(n, k, generator=g) * 3
p = torch.softmax(z, 1)
y = torch.multinomial(p, 1, generator=g).squeeze(1)
ce_kl(p[:50], y[:50], 0.01)  # warm-up

def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    return float("nan")

try:  # reset the peak-RSS counter (Linux), so VmHWM measures this call only
    open("/proc/self/clear_refs", "w").write("5")
except OSError:
    pass
before = rss("VmRSS:")
t0 = time.perf_counter()
v = ce_kl(p, y, None if search else 0.01)
dt = time.perf_counter() - t0
print(json.dumps({"seconds": dt, "peak_growth_mb": rss("VmHWM:") - before, "value": v}))
"""


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--n", type=int, default=8, help="images explained at once")
    p.add_argument("--patch", type=int, default=4, help="patch side on 16 x 16 images (4 -> d = 16 features)")
    p.add_argument("--shapley-perms", type=int, default=16, help="permutations of Shapley sampling")
    p.add_argument("--kernel-samples", type=int, default=256, help="coalitions of KernelSHAP / LIME")
    p.add_argument("--repeats", type=int, default=3, help="timed repetitions (median reported)")
    p.add_argument("--batch-size", type=int, default=512, help="our batch_size and Captum's perturbations_per_eval")
    p.add_argument("--skip-ce-kl", action="store_true", help="skip part 2")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")

    from captum._utils.models.linear_model import SkLearnLinearRegression
    from captum.attr import FeatureAblation, KernelShap, Lime, ShapleyValueSampling

    from xcal_core.explainers.perturbation import (
        feature_ablation,
        kernel_shap,
        lime,
        lime_cosine_kernel,
        shapley_exact,
        shapley_sampling,
    )
    from xcal_core.perturbations import count_features, patch_feature_mask

    device = torch.device(args.device)
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(), torch.nn.Linear(32, 10),
    ).eval().to(device)
    x = torch.rand(args.n, 3, 16, 16, device=device)
    target = model(x).argmax(1)
    fm = patch_feature_mask(16, 16, args.patch).to(device)
    d = count_features(fm)
    fm_captum = fm[None, None].expand(1, 3, 16, 16).contiguous()
    bs = args.batch_size
    print(f"device={device}  n={args.n}  features d={d}  threads={torch.get_num_threads()}")
    exact = shapley_exact(model, x, target, feature_mask=fm, batch_size=4096) if d <= 16 else None

    def sim(_o, _p, interp, **kw):
        return lime_cosine_kernel(interp.bool(), 0.25).float()

    rows = []
    cases = [
        ("shapley_sampling", args.shapley_perms,
         lambda: shapley_sampling(model, x, target, n_samples=args.shapley_perms, feature_mask=fm, batch_size=bs,
                                  generator=torch.Generator().manual_seed(1)),
         lambda: ShapleyValueSampling(model).attribute(x, target=target, baselines=0.0, feature_mask=fm_captum,
                                                       n_samples=args.shapley_perms, perturbations_per_eval=bs)),
        ("kernel_shap", args.kernel_samples,
         lambda: kernel_shap(model, x, target, n_samples=args.kernel_samples, feature_mask=fm, batch_size=bs,
                             generator=torch.Generator().manual_seed(2)),
         lambda: KernelShap(model).attribute(x, target=target, baselines=0.0, feature_mask=fm_captum,
                                             n_samples=args.kernel_samples, perturbations_per_eval=bs)),
        ("lime", args.kernel_samples,
         lambda: lime(model, x, target, n_samples=args.kernel_samples, feature_mask=fm, batch_size=bs,
                      generator=torch.Generator().manual_seed(3)),
         lambda: Lime(model, interpretable_model=SkLearnLinearRegression(), similarity_func=sim).attribute(
             x, target=target, baselines=0.0, feature_mask=fm_captum, n_samples=args.kernel_samples, perturbations_per_eval=bs)),
        ("feature_ablation", d + 1,
         lambda: feature_ablation(model, x, target, feature_mask=fm, batch_size=bs),
         lambda: FeatureAblation(model).attribute(x, target=target, baselines=0.0, feature_mask=fm_captum, perturbations_per_eval=bs)),
    ]
    for name, budget, ours_fn, theirs_fn in cases:
        t_ours, a_ours = timed(ours_fn, device, args.repeats)
        t_theirs, a_theirs = timed(theirs_fn, device, args.repeats)
        row = {"method": name, "budget": budget, "ours_s": t_ours, "captum_s": t_theirs, "ratio": t_theirs / t_ours,
               "ours_vs_captum": mean_abs(a_ours, a_theirs)}
        if exact is not None and name in ("shapley_sampling", "kernel_shap"):
            row["ours_vs_exact"] = mean_abs(a_ours, exact)
            row["captum_vs_exact"] = mean_abs(a_theirs, exact)
        rows.append(row)
    scale = float(exact.abs().mean()) if exact is not None else float("nan")
    print(f"\nmean |exact Shapley| = {scale:.4g} (scale for the agreement columns)")
    print(f"{'method':<18}{'budget':>7}{'ours [s]':>10}{'captum [s]':>12}{'captum/ours':>13}{'|ours-captum|':>15}{'|ours-exact|':>14}{'|captum-exact|':>16}")
    for r in rows:
        print(f"{r['method']:<18}{r['budget']:>7}{r['ours_s']:>10.3f}{r['captum_s']:>12.3f}{r['ratio']:>13.1f}"
              f"{r['ours_vs_captum']:>15.3g}{r.get('ours_vs_exact', float('nan')):>14.3g}{r.get('captum_vs_exact', float('nan')):>16.3g}")

    if args.skip_ce_kl:
        return
    print("\nce_kl (K = 10, chunk_size 512, float64, CPU; peak = growth of the process's max RSS)")
    print(f"{'n':>6}{'bandwidth':>14}{'seconds':>10}{'peak MB':>10}{'value':>10}")
    for n in (1000, 5000):
        for search in (False, True):
            out = subprocess.run([sys.executable, "-c", _CE_KL_CHILD, str(n), "10", "1" if search else "0"],
                                 capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{n:>6}{'LOO search' if search else 'fixed 0.01':>14}{r['seconds']:>10.2f}{r['peak_growth_mb']:>10.1f}{r['value']:>10.4f}")
    print("(an unchunked n x n x K float64 tensor at n = 5000 would need ~2000 MB)")


if __name__ == "__main__":
    main()
