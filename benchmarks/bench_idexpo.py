"""ID-ExpO and insertion/deletion timings, measured side by side in one run (ratios, no assertions).

1. Hard insertion/deletion curves: ``perturbation_curve`` (all samples x steps in chunked batches) vs a
   naive loop (one forward per sample and step), and vs Quantus' PixelFlipping (deletion only).
2. Soft insertion/deletion: the batched forward of all 2M soft steps vs one forward per soft step.
3. Seconds per training step: ID-ExpO (Grad-CAM first / second order, LIME, KernelSHAP) over CE-only on
   the same model and batch (issue 7 target: <= 3x for first-order Grad-CAM with batched soft steps).

Usage: ``python benchmarks/bench_idexpo.py [--quick] [--device cpu|cuda] [--threads N]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from xcal_core.metrics import perturbation_curve
from xcal_core.models import build_model
from xcal_core.training import (
    DifferentiableGradCAM,
    DifferentiableKernelSHAP,
    DifferentiableLIME,
    grid_segments,
    idexpo_regularizers,
    soft_insertion_deletion,
)


def _time(fn, repeat: int) -> float:
    fn()  # warm-up
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best


@torch.no_grad()
def naive_curve(model, x, attr, y, mode, step):
    """One perturbed input at a time (the usual research-code loop)."""
    n, c, h, w = x.shape
    order = torch.sort(attr.reshape(n, -1), dim=1, descending=True, stable=True).indices
    n_feat = h * w
    ks = list(range(0, n_feat, step)) + [n_feat]
    out = torch.empty(n, len(ks))
    for i in range(n):
        for j, k in enumerate(ks):
            m = torch.zeros(n_feat, dtype=torch.bool, device=x.device)
            m[order[i, :k]] = True
            m = m.view(1, 1, h, w)
            xi = x[i : i + 1]
            xp = torch.where(m, torch.zeros_like(xi), xi) if mode == "deletion" else torch.where(m, xi, torch.zeros_like(xi))
            out[i, j] = model(xp).softmax(1)[0, y[i]]
    return out


def bench_curves(model, x, y, step, repeat, device):
    attr = torch.randn(x.shape[0], *x.shape[2:], device=device)
    t_n = _time(lambda: naive_curve(model, x, attr, y, "deletion", step), max(1, repeat // 2))
    same = torch.allclose(perturbation_curve(model, x, attr, y, mode="deletion", step=step).cpu(),
                          naive_curve(model, x, attr, y, "deletion", step), atol=1e-5)
    print(f"[curves] {x.shape[0]} images {tuple(x.shape[1:])}, step {step} -> {x.shape[2] * x.shape[3] // step + 1} points")
    print(f"  naive loop (batch 1)       : {t_n * 1e3:9.1f} ms   (same values as batched: {same})")
    for bs in (64, 512):
        t_b = _time(lambda: perturbation_curve(model, x, attr, y, mode="deletion", step=step, batch_size=bs), repeat)
        print(f"  perturbation_curve bs={bs:<4d}: {t_b * 1e3:9.1f} ms   ratio naive / batched = {t_n / t_b:6.2f}x")
    if True:  # Quantus cross-timing on a 1-channel copy (Quantus ranks channel elements separately)
        try:
            import quantus

            xg = x[:, :1].contiguous()
            m1 = build_model("small_cnn", input_shape=(1, *x.shape[2:]), n_classes=6).to(device).eval()
            a_np = attr[:, None].cpu().numpy()
            metric = quantus.PixelFlipping(features_in_step=step, perturb_baseline=0.0, normalise=False, abs=False,
                                           disable_warnings=True)
            t_q = _time(lambda: metric(model=m1, x_batch=xg.cpu().numpy(), y_batch=y.cpu().numpy(), a_batch=a_np,
                                       channel_first=True, softmax=True, device=str(device)), 1)
            t_b1 = _time(lambda: perturbation_curve(m1, xg, attr, y, mode="deletion", step=step, batch_size=64), repeat)
            print(f"  1-channel copy: batched (bs=64) {t_b1 * 1e3:.1f} ms vs quantus.PixelFlipping {t_q * 1e3:.1f} ms   "
                  f"ratio quantus / batched = {t_q / t_b1:6.1f}x")
        except ImportError:
            print("  (quantus not installed: skipped)")


def bench_soft(model, x, y, repeat):
    phi = torch.randn(x.shape[0], x.shape[2] * x.shape[3], requires_grad=True)
    step = max(1, phi.shape[1] // 64)

    def run(bs):
        def f():
            c = soft_insertion_deletion(model, x, phi, y, S=0.5, step=step, tau=1.0, batch_size=bs)
            r1, r2 = idexpo_regularizers(c)
            (r1 + r2).backward()
        return f

    m = len(range(0, phi.shape[1] // 2, step))
    print(f"[soft] {x.shape[0]} images, M = {m} soft steps x 2 (forward + backward)")
    t_all = _time(run(None), repeat)
    print(f"  all 2BM inputs in one pass : {t_all * 1e3:9.1f} ms")
    for bs in (x.shape[0], 4 * x.shape[0]):
        t = _time(run(bs), repeat)
        print(f"  chunks of {bs:<4d}             : {t * 1e3:9.1f} ms   ratio one-pass / chunked = {t_all / t:5.2f}x")


def bench_training_step(model, x, y, repeat):
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, nesterov=True)
    seg = grid_segments(tuple(x.shape[2:]), max(1, x.shape[2] // 8))
    d = int(seg.max()) + 1
    g = torch.Generator().manual_seed(0)

    def ce_step():
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()

    def idexpo_step(explainer):
        def step():
            e = explainer(model, x, y, generator=g)
            logits = e.logits if e.logits is not None else model(x)
            ce = F.cross_entropy(logits, y)
            c = soft_insertion_deletion(model, x, e.phi, y, S=0.5, step=max(1, e.phi.shape[1] // 64), tau=1.0,
                                        feature_mask=e.feature_mask, batch_size=4 * x.shape[0])
            r1, r2 = idexpo_regularizers(c, torch.log_softmax(logits, 1).gather(1, y[:, None])[:, 0])
            loss = ce + 0.01 * (r1 + r2) + 1e-4 * e.raw.pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        return step

    model.train()
    t_ce = _time(ce_step, repeat)
    print(f"[training step] batch {x.shape[0]} x {tuple(x.shape[1:])}, small_cnn, soft steps in chunks of 4B; "
          f"CE-only {t_ce * 1e3:.1f} ms")
    for name, ex in [
        ("Grad-CAM 1st order (cells)", DifferentiableGradCAM(second_order=False, upsample=False)),
        ("Grad-CAM 2nd order (cells)", DifferentiableGradCAM(second_order=True, upsample=False)),
        ("Grad-CAM 1st order (pixels)", DifferentiableGradCAM(second_order=False, upsample=True)),
        (f"LIME ({d} cells, 2d samples)", DifferentiableLIME(feature_mask=seg, n_samples=2 * d)),
        (f"KernelSHAP ({d} cells, 2d)", DifferentiableKernelSHAP(feature_mask=seg, n_samples=2 * d)),
    ]:
        t = _time(idexpo_step(ex), repeat)
        print(f"  ID-ExpO {name:30s}: {t * 1e3:9.1f} ms   ratio over CE-only = {t / t_ce:6.1f}x")
    model.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller inputs and fewer repeats")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    size, n, repeat = (16, 8, 2) if args.quick else (32, 32, 3)
    model = build_model("small_cnn", input_shape=(3, size, size), n_classes=6).to(device).eval()
    x = torch.rand(n, 3, size, size, device=device)
    y = torch.randint(0, 6, (n,), device=device)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, numpy {np.__version__}")
    bench_curves(model, x, y, step=size * size // 64, repeat=repeat, device=device)
    bench_soft(model, x, y, repeat)
    bench_training_step(model, x, y, repeat)


if __name__ == "__main__":
    main()
