"""Benchmark: xcal's batched explainers vs Captum on the same model and inputs, side by side.

Prints, per method, the median wall time of ours and of the reference (Captum with its usual
settings, Captum tuned for batching, and the one-call-per-image loop of the papers' code), the
median of the paired ratios reference / ours (> 1: ours is faster; each pair is timed back to
back) and the max relative difference between the two attributions (same estimator, so ~0 for
the deterministic methods).

    python benchmarks/bench_explainers.py                 # CPU, < 60 s on 2 idle cores
    python benchmarks/bench_explainers.py --device cuda --n 64 --size 32
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_pair(fn_a, fn_b, device, repeats):
    """Median times of two functions measured alternately (a, b, a, b, ...) and the median of the
    per-pair ratios t_b / t_a, so that load changes on a shared machine hit both sides alike."""
    out_a, out_b = fn_a(), fn_b()  # warm-up (hooks, kernels, lazy imports)
    _sync(device)
    ta, tb = [], []
    for _ in range(repeats):
        for fn, ts in ((fn_a, ta), (fn_b, tb)):
            t0 = time.perf_counter()
            out = fn()
            _sync(device)
            ts.append(time.perf_counter() - t0)
            if fn is fn_a:
                out_a = out
            else:
                out_b = out
    ratio = statistics.median(b / a for a, b in zip(ta, tb))
    return statistics.median(ta), statistics.median(tb), ratio, out_a, out_b


def rel_diff(a, b):
    a, b = a.detach().float().cpu(), b.detach().float().cpu()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    p.add_argument("--n", type=int, default=8, help="number of images explained at once")
    p.add_argument("--size", type=int, default=32, help="image side (3 x size x size inputs)")
    p.add_argument("--width", type=int, default=16, help="SmallCNN width")
    p.add_argument("--repeats", type=int, default=3, help="timed repetitions per method (median reported)")
    p.add_argument("--batch-size", type=int, default=256, help="batch_size for ours and Captum's internal batching")
    p.add_argument("--window", type=int, default=8, help="occlusion window (stride = window // 2)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    args = p.parse_args(argv)

    from captum.attr import (
        GradientShap,
        IntegratedGradients,
        LayerAttribution,
        LayerGradCam,
        NoiseTunnel,
        Occlusion,
        Saliency,
    )

    from xcal_core.explainers import explain
    from xcal_core.models import build_model
    from xcal_core.runtime import resolve_device

    warnings.filterwarnings("ignore", category=UserWarning)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    shape = (3, args.size, args.size)
    model = build_model("small_cnn", input_shape=shape, n_classes=10, width=args.width, seed=0).to(device).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.rand((args.n,) + shape, generator=g).to(device)
    with torch.no_grad():
        y = model(x).argmax(1)
    bs = args.batch_size
    layer = model.get_submodule(model.cam_layer)

    rows = []

    def compare(name, ours_fn, refs, check=True):
        for ref_name, ref_fn in refs:
            t_ours, t_ref, ratio, a_ours, a_ref = timed_pair(ours_fn, ref_fn, device, args.repeats)
            diff = rel_diff(a_ours, a_ref) if check else float("nan")
            rows.append((name, ref_name, t_ours, t_ref, ratio, diff))
            print(f"{name:21s} {ref_name:44s} ours {t_ours * 1e3:8.1f} ms  ref {t_ref * 1e3:8.1f} ms  "
                  f"ref/ours {ratio:5.2f}x  max rel diff {diff:.1e}", flush=True)

    xr = x.clone().requires_grad_()
    print(f"device={device} n={args.n} input={shape} batch_size={bs} threads={torch.get_num_threads()} "
          f"repeats={args.repeats} (median)\n")

    compare("saliency", lambda: explain(model, x, y, "saliency", batch_size=bs),
            [("captum Saliency", lambda: Saliency(model).attribute(xr, target=y))])

    steps = 50
    compare("integrated_gradients", lambda: explain(model, x, y, "integrated_gradients", steps=steps, batch_size=bs),
            [("captum IG (internal_batch_size=None)",
              lambda: IntegratedGradients(model).attribute(xr, baselines=0 * x, target=y, n_steps=steps)),
             (f"captum IG (internal_batch_size={bs})",
              lambda: IntegratedGradients(model).attribute(xr, baselines=0 * x, target=y, n_steps=steps,
                                                           internal_batch_size=bs)),
             ("captum IG, one call per sample (loop)",
              lambda: torch.cat([IntegratedGradients(model).attribute(
                  xr[i:i + 1], baselines=0 * x[i:i + 1], target=y[i:i + 1], n_steps=steps) for i in range(len(x))]))])

    # same sigma for both: an absolute stdev; estimates differ by Monte-Carlo noise only
    ns = 20
    compare("smoothgrad", lambda: explain(model, x, y, "smoothgrad", n_samples=ns, stdev=0.15, batch_size=bs,
                                          generator=torch.Generator().manual_seed(0)),
            [("captum NoiseTunnel(Saliency) nt_bs=1",
              lambda: NoiseTunnel(Saliency(model)).attribute(xr, nt_type="smoothgrad", nt_samples=ns, stdevs=0.15,
                                                             target=y, abs=False, nt_samples_batch_size=1)),
             ("captum NoiseTunnel(Saliency) nt_bs=all",
              lambda: NoiseTunnel(Saliency(model)).attribute(xr, nt_type="smoothgrad", nt_samples=ns, stdevs=0.15,
                                                             target=y, abs=False))],
            check=False)

    compare("gradient_shap", lambda: explain(model, x, y, "gradient_shap", n_samples=ns, baseline="black_white",
                                             batch_size=bs, generator=torch.Generator().manual_seed(0)),
            [("captum GradientShap", lambda: GradientShap(model).attribute(
                xr, baselines=torch.stack([torch.zeros(shape), torch.ones(shape)]).to(device), n_samples=ns,
                target=y))],
            check=False)

    def captum_cam():
        a = LayerGradCam(model, layer).attribute(x, target=y, relu_attributions=True)
        return LayerAttribution.interpolate(a, shape[1:], interpolate_mode="bilinear").expand_as(x)

    compare("gradcam", lambda: explain(model, x, y, "gradcam", batch_size=bs), [("captum LayerGradCam+interpolate", captum_cam)])

    win, stride = args.window, args.window // 2
    compare("occlusion", lambda: explain(model, x, y, "occlusion", window=win, stride=stride, batch_size=bs),
            [("captum Occlusion (perturbations_per_eval=1)",
              lambda: Occlusion(model).attribute(x, target=y, sliding_window_shapes=(3, win, win),
                                                 strides=(3, stride, stride), baselines=0.0)),
             (f"captum Occlusion (perturbations_per_eval={max(1, bs // args.n)})",
              lambda: Occlusion(model).attribute(x, target=y, sliding_window_shapes=(3, win, win),
                                                 strides=(3, stride, stride), baselines=0.0,
                                                 perturbations_per_eval=max(1, bs // args.n)))])

    print("\nratio = median over repeats of reference time / our time (> 1: ours faster). smoothgrad / gradient_shap diffs are not "
          "reported: both sides draw independent noise.")
    return rows


if __name__ == "__main__":
    main()
