"""ID-ExpO and insertion/deletion timings, measured side by side in one run (ratios, no assertions).

1. Hard insertion/deletion curves: ``perturbation_curve`` (all samples x steps in chunked batches) vs a
   naive loop (one forward per sample and step), and vs Quantus' PixelFlipping (deletion only).
2. Soft insertion/deletion: the batched forward of all 2M soft steps vs one forward per soft step.
3. Seconds per training step: ID-ExpO (Grad-CAM first / second order, LIME, KernelSHAP) over CE-only on
   the same model and batch (issue 7 target: <= 3x for first-order Grad-CAM with batched soft steps).

Usage: ``python benchmarks/bench_idexpo.py [--quick] [--step-only] [--device cpu|cuda] [--threads N]``
"""

from __future__ import annotations

import argparse
import math
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
    default_soft_step,
    grid_segments,
    idexpo_regularizers,
    soft_insertion_deletion,
)
from xcal_core.training.finetune import _idexpo_loss


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


def _interleaved(fns: dict, repeat: int) -> dict:
    """Median seconds of each function, timed round-robin so machine load hits all of them alike."""
    for f in fns.values():  # warm-up (allocator, oneDNN primitives)
        f()
        f()
    times = {k: [] for k in fns}
    for _ in range(repeat):
        for k, f in fns.items():
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            t = time.perf_counter()
            f()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times[k].append(time.perf_counter() - t)
    return {k: float(np.median(v)) for k, v in times.items()}


def _notebook_cases(device):
    """The workshop profile of notebook 05: its models, input shapes, batch size and explainer settings."""
    torch.manual_seed(0)
    b = 64  # BATCH_SIZE
    cases = []
    for name, shape, k in (("digits", (1, 8, 8), 10), ("shapes", (3, 16, 16), 6)):
        model = build_model("small_cnn", input_shape=shape, n_classes=k).to(device)
        x, y = torch.rand(b, *shape, device=device), torch.randint(0, k, (b,), device=device)
        seg = grid_segments(shape[1:], 2)  # LIME_CELL = 2
        d = int(seg.max()) + 1
        explainers = [("Grad-CAM 1st order", DifferentiableGradCAM(second_order=False, upsample=False), 0),
                      ("Grad-CAM 2nd order", DifferentiableGradCAM(second_order=True, upsample=False), 0)]
        if name == "digits":  # the notebook runs LIME on the first dataset (16 cells, 32 coalitions)
            explainers.append((f"LIME ({d} cells, 32 coalitions)", DifferentiableLIME(feature_mask=seg, n_samples=32), 32))
        cases.append((name, model, x, y, explainers))
    model = build_model("mlp", input_shape=(30,), n_classes=2).to(device)  # breast_cancer, KernelSHAP 64 coalitions
    x, y = torch.rand(b, 30, device=device), torch.randint(0, 2, (b,), device=device)
    cases.append(("breast_cancer", model, x, y, [("KernelSHAP (30 features, 64 coalitions)", DifferentiableKernelSHAP(n_samples=64), 64)]))
    return cases


def bench_training_step(repeat: int, device, soft_steps_sweep=(1, 2, 4, 8)):
    """Seconds per training step, ID-ExpO over CE-only, with the step ``finetune_idexpo`` runs."""
    print("[training step] the notebook's workshop models and batch (64); ID-ExpO = finetune_idexpo's step "
          "(explainer + CE share the clean forward for Grad-CAM; all soft insertion and deletion steps of all "
          "images as one flat batch in chunks of 4B; no host syncs)")
    print("  'floor' = a CE step through (forwards per image) x 64 inputs, the clean batch then the rest in chunks of 4B "
          "as the soft steps: the forward and backward passes the method cannot avoid, without explainer and masks")
    summary = []
    sweep_met = None
    for name, model, x, y, explainers in _notebook_cases(device):
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=1e-6, momentum=0.9, nesterov=True, weight_decay=5e-4)
        g = torch.Generator().manual_seed(0)
        n_feat_default = None

        def ce_on(k):
            """CE step on the clean batch plus (k - 1) B more inputs pushed in chunks of 4B, one backward: the
            passes of an ID-ExpO step with k forwards per image, without the explainer and the masks."""
            xk, yk = x.repeat(k - 1, *([1] * (x.ndim - 1))), y.repeat(k - 1)
            chunk = 4 * x.shape[0]

            def step():
                opt.zero_grad()
                loss = F.cross_entropy(model(x), y)
                for s in range(0, xk.shape[0], chunk):
                    loss = loss + F.cross_entropy(model(xk[s : s + chunk]), yk[s : s + chunk])
                loss.backward()
                opt.step()
            return step

        def idexpo(explainer, soft_step=None):
            checked = {}

            def step():
                loss = _idexpo_loss(model, x, y, explainer, g, checked, lambda1=0.1, lambda2=1e-4, tau=1.0, S=0.5,
                                    soft_step=soft_step, normalize=True, baseline=0.0, deletion_form="direct",
                                    terms="both", forward_batch_size=4 * x.shape[0])[0]
                opt.zero_grad()
                loss.backward()
                opt.step()
            return step

        fns, meta = {"ce": ce_on(1)}, {}
        for label, ex, n_coal in explainers:
            n_feat = ex(model, x[:2], y[:2], generator=torch.Generator().manual_seed(0)).phi.shape[1]
            n_feat_default = n_feat if n_feat_default is None else n_feat_default
            m = math.ceil((n_feat // 2) / default_soft_step(n_feat))
            k = 1 + 2 * m + n_coal
            fns[label] = idexpo(ex)
            fns[f"floor {k}"] = ce_on(k)
            meta[label] = (n_feat, m, k)
        t = _interleaved(fns, repeat)
        print(f"  {name} ({tuple(x.shape[1:])}), CE-only step {t['ce'] * 1e3:.1f} ms")
        for label, (n_feat, m, k) in meta.items():
            r, fl = t[label] / t["ce"], t[f"floor {k}"] / t["ce"]
            print(f"    ID-ExpO {label:42s}: {t[label] * 1e3:8.1f} ms  ratio {r:5.1f}x   "
                  f"[F = {n_feat}, M = {m} soft steps, {k} forwards/image; floor {fl:5.1f}x]")
            summary.append((name, label, r, fl, m))
        if name == "digits":  # where does <= 3x hold? Grad-CAM 1st order with fewer soft steps (larger stride)
            gc = explainers[0][1]
            n_max = n_feat_default // 2
            sweep = {}
            for m in soft_steps_sweep:
                if m > n_max:
                    continue
                stride = math.ceil(n_max / m)
                sweep[m] = (stride, idexpo(gc, soft_step=stride), ce_on(1 + 2 * math.ceil(n_max / stride)))
            fns = {"ce": ce_on(1)}
            for m, (stride, f_id, f_fl) in sweep.items():
                fns[f"id{m}"], fns[f"fl{m}"] = f_id, f_fl
            t = _interleaved(fns, repeat)
            print(f"    soft-step sweep, Grad-CAM 1st order on {name} (S = 0.5 of {n_feat_default} cells; "
                  f"default stride {default_soft_step(n_feat_default)} -> M = {math.ceil(n_max / default_soft_step(n_feat_default))}):")
            sweep_met = []
            for m, (stride, _, _) in sweep.items():
                r = t[f"id{m}"] / t["ce"]
                if r <= 3:
                    sweep_met.append(m)
                print(f"      soft_step = {stride:2d} -> M = {m:2d}: ratio {r:5.1f}x  (floor {t[f'fl{m}'] / t['ce']:5.1f}x)"
                      f"{'  <= 3x' if r <= 3 else ''}")
        model.eval()
    gc1 = [(n, r, fl, m) for n, lab, r, fl, m in summary if lab.startswith("Grad-CAM 1st")]
    met = [n for n, r, _, _ in gc1 if r <= 3.0]
    print("  verdict (issue 7 target <= 3x for first-order Grad-CAM): "
          + "; ".join(f"{n}: {r:.1f}x, {'met' if r <= 3.0 else 'NOT met'} (floor {fl:.1f}x, M = {m})" for n, r, fl, m in gc1)
          + ".")
    print("    why: a step must forward and backpropagate B (1 + 2M) inputs, the clean batch plus M insertion and M "
          "deletion steps per image (spec 1.4: 2M extra forward passes per image); with the paper's S = 0.5 and the "
          "released stride rule (F/64, at least 1) these maps give "
          + ", ".join(f"M = {m} on {n} ({1 + 2 * m}x the inputs of a CE-only step)" for n, _, _, m in gc1)
          + ". The floor is a CE step through that many inputs, so the method cannot go much below it on hardware "
          "whose cost grows with the batch (a CPU); "
          + ("3x is below the floor on " + ", ".join(n for n, _, fl, _ in gc1 if fl > 3.0) + ". "
             if any(fl > 3.0 for _, _, fl, _ in gc1) else "")
          + "What the implementation adds on top of the floor (explainer pass, masks, chunking): "
          + ", ".join(f"{r / fl:.2f}x the floor on {n}" for n, r, fl, _ in gc1) + ".")
    if sweep_met is not None:
        print("    soft-step sweep: <= 3x at M = " + (", ".join(str(m) for m in sweep_met) if sweep_met else "none of them")
              + " (fewer soft steps = a coarser relaxation of the curve; the notebook keeps the paper's stride rule).")
    if not met:
        print("    on a GPU the B (1 + 2M) inputs run in parallel and the floor shrinks; rerun with --device cuda there.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller inputs and fewer repeats")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    ap.add_argument("--step-only", action="store_true", help="only section 3 (seconds per training step)")
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
    if not args.step_only:
        bench_curves(model, x, y, step=size * size // 64, repeat=repeat, device=device)
        bench_soft(model, x, y, repeat)
    bench_training_step(repeat=5 if args.quick else 15, device=device)


if __name__ == "__main__":
    main()
