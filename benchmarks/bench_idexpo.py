"""ID-ExpO and insertion/deletion timings, measured side by side in one run (ratios, no assertions).

1. Hard insertion/deletion curves: ``perturbation_curve`` (all samples x steps in chunked batches) vs a
   naive loop (one forward per sample and step), and vs Quantus' PixelFlipping (deletion only).
2. Soft insertion/deletion: the batched forward of all 2M soft steps vs one forward per soft step.
3. Seconds per training step: ID-ExpO (per-sample Grad-CAM first / second order, the old coupled Grad-CAM,
   LIME, KernelSHAP) over CE-only on the notebook's Fashion-MNIST models and batch, against the floor of a
   CE step through the B (1 + 2M) inputs the method must forward (issue 7 target: <= 3x for first-order
   Grad-CAM with batched soft steps).

Usage: ``python benchmarks/bench_idexpo.py [--quick] [--step-only] [--soft-steps M] [--device cpu|cuda] [--threads N]``
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
    soft_step_for,
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


def _notebook_cases(device, batch: int = 32, lime_cell: int = 7, lime_samples: int = 32, kshap_samples: int = 64):
    """The workshop profile of notebook 05: Fashion-MNIST (1 x 28 x 28, 10 classes) with the ``small_cnn`` and
    ``resnet20`` recipes' architectures in train mode (BatchNorm on), its batch size and explainer settings.

    Grad-CAM comes per sample (BatchNorm statistics frozen during the explanation pass, the default) and, for
    comparison, coupled (``batchnorm="batch"``: one batched backward with batch statistics, the old code)."""
    torch.manual_seed(0)
    cases = []
    shape, k = (1, 28, 28), 10
    for name in ("small_cnn", "resnet20"):
        model = build_model(name, input_shape=shape, n_classes=k).to(device)
        x, y = torch.rand(batch, *shape, device=device), torch.randint(0, k, (batch,), device=device)
        explainers = [("Grad-CAM 1st order, per sample", DifferentiableGradCAM(second_order=False, upsample=False), 0),
                      ("Grad-CAM 2nd order, per sample", DifferentiableGradCAM(second_order=True, upsample=False), 0),
                      ("Grad-CAM 1st order, coupled (old)", DifferentiableGradCAM(second_order=False, upsample=False,
                                                                               batchnorm="batch"), 0)]
        if name == "small_cnn":  # the notebook runs LIME on the main model
            seg = grid_segments(shape[1:], lime_cell)
            d = int(seg.max()) + 1
            explainers.append((f"LIME ({d} cells, {lime_samples} coalitions)",
                               DifferentiableLIME(feature_mask=seg, n_samples=lime_samples), lime_samples))
        cases.append((f"fashion_mnist/{name}", model, x, y, explainers))
    model = build_model("mlp", input_shape=(30,), n_classes=2).to(device)  # breast_cancer, KernelSHAP
    x, y = torch.rand(batch, 30, device=device), torch.randint(0, 2, (batch,), device=device)
    cases.append(("breast_cancer/mlp", model, x, y,
                  [(f"KernelSHAP (30 features, {kshap_samples} coalitions)", DifferentiableKernelSHAP(n_samples=kshap_samples),
                    kshap_samples)]))
    return cases


def _has_batchnorm(model) -> bool:
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


def bench_training_step(repeat: int, device, soft_steps_sweep=(1, 2, 4, 8), n_soft_steps: int | None = 8):
    """Seconds per training step, ID-ExpO over CE-only, with the step ``finetune_idexpo`` runs.

    ``n_soft_steps``: soft steps M per curve as the notebook's ``N_SOFT_STEPS`` (None: the released rule)."""
    rule = f"M = {n_soft_steps} soft steps per curve" if n_soft_steps else "the released soft-step rule (F / 64)"
    print(f"[training step] the notebook's workshop models and batch (32), {rule}; ID-ExpO = finetune_idexpo's step "
          "(per-sample explanation pass with frozen BatchNorm statistics; a separate clean train-mode pass for the "
          "CE when the model has BatchNorm, since the explanation pass's logits are not train-mode logits; all soft "
          "insertion and deletion steps of all images as one flat batch in chunks of 4B; no host syncs)")
    print("  'floor' = a CE step through B (1 + 2M) inputs (B = 32 clean images, then the 2M soft steps per image in "
          "chunks of 4B, plus the coalitions of a surrogate): the passes the method cannot avoid, without explainer "
          "and masks; 'floor+1' adds the one extra clean pass of B inputs that per-sample maps cost on a "
          "BatchNorm model in train mode")
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
                                    soft_step=soft_step, n_soft_steps=None if soft_step else n_soft_steps, normalize=True, baseline=0.0, deletion_form="direct",
                                    terms="both", forward_batch_size=4 * x.shape[0])[0]
                opt.zero_grad()
                loss.backward()
                opt.step()
            return step

        fns, meta = {"ce": ce_on(1)}, {}
        bn = _has_batchnorm(model)
        for label, ex, n_coal in explainers:
            n_feat = ex(model, x[:2], y[:2], generator=torch.Generator().manual_seed(0)).phi.shape[1]
            n_feat_default = n_feat if n_feat_default is None else n_feat_default
            m = math.ceil((n_feat // 2) / soft_step_for(n_feat, 0.5, n_soft_steps))
            k = 1 + 2 * m + n_coal
            fns[label] = idexpo(ex)
            fns[f"floor {k}"] = ce_on(k)
            fns[f"floor {k + 1}"] = ce_on(k + 1)
            meta[label] = (n_feat, m, k)
        t = _interleaved(fns, repeat)
        print(f"  {name} ({tuple(x.shape[1:])}, BatchNorm: {bn}), CE-only step {t['ce'] * 1e3:.1f} ms")
        for label, (n_feat, m, k) in meta.items():
            r, fl, fl1 = t[label] / t["ce"], t[f"floor {k}"] / t["ce"], t[f"floor {k + 1}"] / t["ce"]
            print(f"    ID-ExpO {label:42s}: {t[label] * 1e3:8.1f} ms  ratio {r:5.1f}x   "
                  f"[F = {n_feat}, M = {m} soft steps, B(1+2M{' + coalitions' if m and k > 1 + 2 * m else ''}) = "
                  f"{k} B inputs; floor {fl:5.1f}x, floor+1 {fl1:5.1f}x; step / floor = {r / fl:4.2f}]")
            summary.append((name, label, r, fl, m))
        if name == "fashion_mnist/small_cnn":  # where does <= 3x hold? Grad-CAM 1st order, fewer soft steps
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
    gc1 = [(n, r, fl, m) for n, lab, r, fl, m in summary if lab.startswith("Grad-CAM 1st order, per sample")]
    met = [n for n, r, _, _ in gc1 if r <= 3.0]
    print("  verdict (issue 7 target <= 3x for first-order per-sample Grad-CAM): "
          + "; ".join(f"{n}: {r:.1f}x, {'met' if r <= 3.0 else 'NOT met'} (floor {fl:.1f}x, M = {m})" for n, r, fl, m in gc1)
          + ".")
    print("    per-sample maps on a BatchNorm model in train mode add one clean pass of B inputs (the CE needs "
          "train-mode logits, the explanation pass uses the running statistics): compare the ratio with "
          "'floor+1'; the old coupled Grad-CAM shares one pass and is given for the cost comparison only.")
    print("    why: a step must forward and backpropagate B (1 + 2M) inputs, the clean batch plus M insertion and M "
          "deletion steps per image (spec 1.4: 2M extra forward passes per image); with the paper's S = 0.5 and "
          + (f"M = {n_soft_steps} soft steps per curve (notebook 05's N_SOFT_STEPS) " if n_soft_steps else
             "the released stride rule (F/64, at least 1) ")
          + "these maps give "
          + ", ".join(f"M = {m} on {n} ({1 + 2 * m}x the inputs of a CE-only step)" for n, _, _, m in gc1)
          + ". The floor is a CE step through that many inputs, so the method cannot go much below it on hardware "
          "whose cost grows with the batch (a CPU); "
          + ("3x is below the floor on " + ", ".join(n for n, _, fl, _ in gc1 if fl > 3.0) + ". "
             if any(fl > 3.0 for _, _, fl, _ in gc1) else "")
          + "What the implementation adds on top of the floor (explainer pass, masks, chunking): "
          + ", ".join(f"{r / fl:.2f}x the floor on {n}" for n, r, fl, _ in gc1) + ".")
    if sweep_met is not None:
        print("    soft-step sweep: <= 3x at M = " + (", ".join(str(m) for m in sweep_met) if sweep_met else "none of them")
              + " (fewer soft steps = a coarser relaxation of the curve; the notebook's workshop profile uses M = 8, "
                "the paper profile the released stride rule).")
    if not met:
        print("    on a GPU the B (1 + 2M) inputs run in parallel and the floor shrinks; rerun with --device cuda there.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller inputs and fewer repeats")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    ap.add_argument("--step-only", action="store_true", help="only section 3 (seconds per training step)")
    ap.add_argument("--soft-steps", type=int, default=8,
                    help="soft steps M per curve in section 3 (notebook 05's N_SOFT_STEPS; 0: the released rule)")
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
    bench_training_step(repeat=5 if args.quick else 15, device=device, n_soft_steps=args.soft_steps or None)


if __name__ == "__main__":
    main()
