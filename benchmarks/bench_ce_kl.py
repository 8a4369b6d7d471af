"""Cost of CE_KL, its floor and the per-level bandwidth at the evaluation sizes of notebook 01 (n = 2000 and 5000).

For each n (K = 10 classes, predictions of a planted over-confident model) the script times, side by side in one
run (best of ``--repeats``):

* ``ce_kl``: one estimate at a fixed bandwidth (the N x N leave-one-out Dirichlet kernel, processed in row chunks
  of ``--chunk-size``; memory O(chunk x N), never N x N);
* ``ce_kl_floor``: the estimate plus ``--draws`` label redraws for its floor, sharing one kernel pass;
* ``floor, one pass per draw``: the same numbers computed the naive way, one ``ce_kl`` call per draw (what
  ``calibration_floor`` did before it shared the pass), with the agreement checked (max abs diff);
* ``select_bandwidth_pooled``: the per-level bandwidth on the pooled predictions of three methods
  (3 n rows, a random subset of ``--max-rows``), the coarse-to-fine LOO-likelihood search.

Usage: ``python benchmarks/bench_ce_kl.py [--sizes 2000 5000] [--draws 10] [--repeats 3] [--threads N]
[--clock wall|cpu] [--device cpu]``

What the numbers say. Measured 2026-12-02 on the 2-core workshop CPU while other jobs kept it busy, so with
``--threads 1 --clock cpu`` (this process's CPU time, which the load barely inflates; best of 2,
``--max-rows 1000`` as notebook 01's workshop profile); the output of a run is the authority:

    n     ce_kl   ce_kl_floor  per draw  saved  max diff  bandwidth  h
    2000  0.051s  0.085s       0.363s    4.3x   0.0e+00   0.323s     0.0324
    5000  0.275s  0.394s       3.120s    7.9x   1.7e-16   0.246s     0.0324

So one CE_KL with a 10-draw floor costs about 1.7x a bare estimate (the draws share the kernel pass), and
the floor is 4-8x cheaper than redrawing and re-estimating. Notebook 01 evaluates, per cell and level, one
bandwidth search (about 0.3 s on 1000 pooled rows, whatever n) and three ``ce_kl_floor`` calls: at
n = 2000 and 11 levels that is about 6 s of one core per cell. Memory stays O(chunk x n) (n = 5000: a few
tens of MB per chunk of 512 rows), never n x n.
"""

from __future__ import annotations

import argparse
import time

import torch

from xcal_core.metrics import calibration_floor, ce_kl, ce_kl_floor, select_bandwidth_pooled


_CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}


def _best(fn, repeats: int, clock: str = "wall") -> tuple[float, object]:
    tick = _CLOCK[clock]
    best, out = float("inf"), None
    for _ in range(repeats):
        t = tick()
        out = fn()
        best = min(best, tick() - t)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 5000])
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--draws", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--chunk-size", type=int, default=512)
    ap.add_argument("--max-rows", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--clock", choices=list(_CLOCK), default="wall",
                    help="wall clock, or this process's CPU time (robust on a shared machine; use with --threads 1)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    print(f"K = {a.classes}, {a.draws} floor draws, chunk {a.chunk_size}, torch threads {torch.get_num_threads()}, "
          f"device {dev}, best of {a.repeats}, {a.clock} clock")
    print(f"{'n':>6} {'ce_kl':>8} {'ce_kl_floor':>12} {'per draw':>9} {'saved':>6} {'max diff':>9} {'bandwidth':>10} {'h':>8}")
    for n in a.sizes:
        g = torch.Generator().manual_seed(0)
        z = torch.randn(n, a.classes, generator=g, dtype=torch.float64) * 2.5
        p = torch.softmax(z, 1)
        y = torch.multinomial(p, 1, generator=g).squeeze(1)
        sets = [p, torch.softmax(z / 0.5, 1), torch.softmax(z / 2.0, 1)]
        q = sets[1].to(dev)
        y = y.to(dev)
        ids = torch.arange(n)
        t_h, h = _best(lambda: select_bandwidth_pooled(sets, [ids] * 3, max_rows=a.max_rows,
                                                       generator=torch.Generator().manual_seed(1)), a.repeats, a.clock)
        t_one, _ = _best(lambda: ce_kl(q, y, h, chunk_size=a.chunk_size), a.repeats, a.clock)
        t_floor, f = _best(lambda: ce_kl_floor(q, y, h, n_draws=a.draws, generator=torch.Generator().manual_seed(2),
                                               chunk_size=a.chunk_size), a.repeats, a.clock)

        def naive():
            draws = calibration_floor(q, lambda pr, lab: ce_kl(pr, lab, h, chunk_size=a.chunk_size), n_draws=a.draws,
                                      generator=torch.Generator().manual_seed(2))
            return ce_kl(q, y, h, chunk_size=a.chunk_size), draws

        t_naive, (v, draws) = _best(naive, a.repeats, a.clock)
        diff = max(abs(v - f.value), abs(float(draws.mean()) - f.floor_mean))
        if diff > 1e-8:
            raise SystemExit(f"ce_kl_floor disagrees with the one-pass-per-draw floor by {diff:.3g}")
        print(f"{n:>6} {t_one:>7.3f}s {t_floor:>11.3f}s {t_naive:>8.3f}s {t_naive / t_floor:>5.1f}x {diff:>9.1e} "
              f"{t_h:>9.3f}s {h:>8.4f}")


if __name__ == "__main__":
    main()
