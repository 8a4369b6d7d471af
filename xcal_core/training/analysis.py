"""Analyses of ID-ExpO runs: eta sweeps (Fig. 2), per-sample changes (Fig. 4), soft vs hard agreement,
threshold ties, and how far two sets of maps agree."""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy.stats import rankdata, spearmanr

from .._validation import check_int, check_positive, check_tensor
from ..metrics.insertion_deletion import _counts
from .finetune import (FinetuneResult, evaluate_idexpo, finetune_ce_only, finetune_idexpo, idexpo_scores,
                       initial_evaluation, validation_score)
from .soft import _check_S, soft_insertion_deletion

__all__ = ["quadrant_shares", "soft_hard_agreement", "threshold_ties", "map_agreement", "eta_sweep",
           "summarize_eta_sweep", "candidate_accuracies", "refresh_batchnorm_statistics", "compare_finetuning", "evaluate_runs", "compare_methods", "beats_seed_spread",
           "format_comparison", "to_metric_rows", "seed_gain_verdict", "ins_del_verdict", "accuracy_kept_verdict",
           "eta_tradeoff_verdict"]


def quadrant_shares(d_ins: Any, d_one_minus_del: Any) -> dict[str, float]:
    """Shares of samples per quadrant of (change in Ins, change in 1 - Del) (the paper's Fig. 4).

    Args:
        d_ins: (N,) Ins after minus Ins before fine-tuning.
        d_one_minus_del: (N,) (1 - Del) after minus (1 - Del) before.

    Returns:
        dict with ``both_better`` (both > 0), ``ins_only`` (Ins up, 1 - Del not), ``del_only`` (1 - Del up,
        Ins not) and ``neither``; shares in [0, 1] summing to 1.
    """
    a = check_tensor(d_ins, "d_ins", ndim=1)
    b = check_tensor(d_one_minus_del, "d_one_minus_del", ndim=1)
    if a.shape != b.shape:
        raise ValueError(f"`d_ins` and `d_one_minus_del` must have the same length, got {a.shape[0]} and {b.shape[0]}")
    up_a, up_b = a > 0, b > 0
    n = float(a.shape[0])
    return {
        "both_better": float((up_a & up_b).sum()) / n,
        "ins_only": float((up_a & ~up_b).sum()) / n,
        "del_only": float((~up_a & up_b).sum()) / n,
        "neither": float((~up_a & ~up_b).sum()) / n,
    }


def soft_hard_agreement(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    phi: torch.Tensor,
    *,
    taus: Sequence[float] = (0.5, 1.0, 4.0, 16.0, 64.0, 256.0),
    S: float = 0.5,
    step: int = 1,
    baseline: Any = 0.0,
    feature_mask: torch.Tensor | None = None,
) -> pd.DataFrame:
    """How closely the soft Ins / Del track the hard ones as the temperature grows.

    Args:
        model: classifier (eval mode). x: (N, ...) inputs. y: (N,) labels.
        phi: (N, F) explanations over F features (pixels, or segments with ``feature_mask``).
        taus: temperatures > 0. S, step, baseline: shared by the soft and the hard scores.
        feature_mask: optional (grid) ids 0..F-1 of the features.

    Returns:
        DataFrame with columns tau, metric (``ins`` / ``del``), soft (mean soft score), hard (mean hard
        score), mean_abs_diff and max_abs_diff over samples.
    """
    p = check_tensor(phi, "phi", ndim=2)
    for t in taus:
        check_positive(t, "taus")
    positions = p if feature_mask is None else p[:, torch.as_tensor(feature_mask).reshape(-1)]
    grid = tuple(x.shape[2:]) if x.ndim >= 3 else (x.shape[1],)
    hard_ins, hard_del = idexpo_scores(model, x, y, positions.reshape(x.shape[0], *grid), feature_mask=feature_mask,
                                       S=S, step=step, baseline=baseline)
    rows = []
    for tau in taus:
        with torch.no_grad():
            c = soft_insertion_deletion(model, x, p, y, S=S, step=step, tau=float(tau), baseline=baseline,
                                        feature_mask=feature_mask, batch_size=512)
        for name, soft, hard in (("ins", c.ins, hard_ins), ("del", c.dele, hard_del)):
            diff = (soft.cpu() - hard.cpu()).abs()
            rows.append({"tau": float(tau), "metric": name, "soft": float(soft.mean()), "hard": float(hard.mean()),
                         "mean_abs_diff": float(diff.mean()), "max_abs_diff": float(diff.max())})
    return pd.DataFrame(rows)


def threshold_ties(phi: Any, *, S: float = 0.5, step: int = 1) -> torch.Tensor:
    """Which maps have a tie at a curve cutoff: equal values on both sides of a top-k threshold.

    At such a cutoff the hard metric breaks the tie by position, while the soft mask sets every tied
    feature to sigmoid(0) = 1/2 at any temperature, so the soft score cannot converge to the hard one
    there (ReLU Grad-CAM maps, with their runs of exact zeros, have many).

    Args:
        phi: (N, F) explanations over F features.
        S: fraction of the features perturbed, in (0, 1). step: features per curve step, >= 1.

    Returns:
        bool (N,): True when some cutoff c = step, 2 step, ..., floor(S F) has phi_(c) == phi_(c + 1)
        (order statistics, descending).
    """
    S = _check_S(S)
    step = check_int(step, "step", low=1)
    p = check_tensor(phi, "phi", ndim=2, dtype=None).detach().float()
    if p.shape[1] < 2:
        raise ValueError(f"`phi` needs at least 2 features, got shape {tuple(p.shape)}")
    srt = torch.sort(p, dim=1, descending=True).values
    cuts = _counts(p.shape[1], step, S)[1:]
    cuts = cuts[cuts < p.shape[1]]
    return (srt[:, cuts - 1] == srt[:, cuts]).any(1)


def map_agreement(a: Any, b: Any, *, top_k: int = 8) -> dict[str, Any]:
    """How far two sets of maps of the same images agree.

    Args:
        a, b: (N, ...) maps (e.g. Grad-CAM cells), flattened per sample; b is the reference.
        top_k: size of the top sets compared, >= 1 (at most the number of features).

    Returns:
        dict with ``max_abs_diff``, ``rel_l2`` (||a - b|| / ||b|| over all maps), ``spearman`` ((N,) numpy
        per-sample Spearman correlations, average ranks for ties; NaN for a constant map),
        ``median_spearman``, ``min_spearman`` (over the defined ones) and ``top_k_overlap`` (mean share of
        b's top-k features, by value, that are also in a's top-k).
    """
    x = check_tensor(a, "a", dtype=None).detach().double()
    y = check_tensor(b, "b", dtype=None).detach().double()
    if x.shape != y.shape:
        raise ValueError(f"`a` and `b` must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    x, y = x.reshape(x.shape[0], -1).cpu(), y.reshape(y.shape[0], -1).cpu()
    top_k = check_int(top_k, "top_k", low=1, high=x.shape[1])
    rx = rankdata(x.numpy(), axis=1)
    ry = rankdata(y.numpy(), axis=1)
    rx, ry = rx - rx.mean(1, keepdims=True), ry - ry.mean(1, keepdims=True)
    den = np.sqrt((rx**2).sum(1) * (ry**2).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where(den > 0, (rx * ry).sum(1) / np.where(den > 0, den, 1.0), np.nan)
    ta = torch.topk(x, top_k, dim=1).indices
    tb = torch.topk(y, top_k, dim=1).indices
    overlap = (ta[:, :, None] == tb[:, None, :]).any(2).double().mean(1)
    finite = rho[np.isfinite(rho)]
    return {"max_abs_diff": float((x - y).abs().max()), "rel_l2": float((x - y).norm() / y.norm().clamp_min(1e-30)),
            "spearman": rho, "median_spearman": float(np.median(finite)) if finite.size else float("nan"),
            "min_spearman": float(finite.min()) if finite.size else float("nan"),
            "top_k_overlap": float(overlap.mean())}


def eta_sweep(
    runs: Mapping[str, FinetuneResult],
    split: Any,
    explainer: Any,
    *,
    etas: Sequence[float] = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0),
    acc_floor: float | None = None,
    S: float = 0.5,
    step: int | None = None,
    baseline: Any = 0.0,
    seed: int = 0,
    by_seed: bool = True,
) -> pd.DataFrame:
    """The paper's Fig. 2 protocol: per accuracy weight eta, pick the (run, epoch) with the best validation
    score eta * Acc + Ins + (1 - Del) within each method (and fine-tuning seed), then report its test metrics.

    Args:
        runs: {label: FinetuneResult} fine-tuned with ``keep_checkpoints=True``; each run's method is
            ``"idexpo"`` or ``"ce_only"`` (from its config); candidates of a method are all its runs
            (e.g. a lambda1 grid) and all their evaluated epochs >= 1.
        split: evaluation split (test). explainer: explainer for the hard scores.
        etas: accuracy weights >= 0. acc_floor: minimum validation accuracy (None: none).
        S, step, baseline: hard-score settings. seed: generator seed of sampling explainers.
        by_seed: select separately among the runs of each fine-tuning seed (``config["seed"]``), so the
            seeds give the spread of every eta's selection; False pools all seeds (one selection per eta).

    Returns:
        DataFrame with columns method, eta, seed (-1 when pooled), run, epoch, lambda1 (NaN for CE-only),
        accuracy, ins, del, one_minus_del and faithfulness (= ins + one_minus_del), test values.
    """
    if not runs:
        raise ValueError("`runs` is empty")
    for eta in etas:
        check_positive(eta, "etas", strict=False)
    cache: dict[tuple[str, int], dict[str, float]] = {}
    rows = []
    for method in ("ce_only", "idexpo"):
        members = {k: r for k, r in runs.items() if (r.config.get("regularize", True) == (method == "idexpo"))}
        if not members:
            continue
        groups: dict[int, dict[str, FinetuneResult]] = {}
        for k, r in members.items():
            groups.setdefault(int(r.config.get("seed", 0)) if by_seed else -1, {})[k] = r
        for group_seed, group in sorted(groups.items()):
            for eta in etas:
                best = None
                for label, r in group.items():
                    h = r.history[(r.history["epoch"] >= 1) & r.history["val_acc"].notna()]
                    for _, row in h.iterrows():
                        s_floor = validation_score(row["val_acc"], row["val_ins"], row["val_del"], eta=eta, acc_floor=acc_floor)
                        s = validation_score(row["val_acc"], row["val_ins"], row["val_del"], eta=eta)
                        key = (s_floor > -1e8, s)
                        if best is None or key > best[0]:
                            best = (key, label, int(row["epoch"]))
                if best is None:
                    raise ValueError(f"run(s) {sorted(group)} have no evaluated epoch >= 1")
                _, label, epoch = best
                if (label, epoch) not in cache:
                    ev = evaluate_idexpo(runs[label].model_at(epoch), split, explainer, S=S, step=step, baseline=baseline,
                                         generator=torch.Generator().manual_seed(seed))
                    cache[(label, epoch)] = {"accuracy": ev["accuracy"], "ins": float(ev["ins"].mean()),
                                             "del": float(ev["del"].mean())}
                m = cache[(label, epoch)]
                lam = runs[label].config.get("lambda1", float("nan")) if method == "idexpo" else float("nan")
                rows.append({"method": method, "eta": float(eta), "seed": group_seed, "run": label, "epoch": epoch,
                             "lambda1": lam, **m, "one_minus_del": 1.0 - m["del"],
                             "faithfulness": m["ins"] + 1.0 - m["del"]})
    return pd.DataFrame(rows)


def candidate_accuracies(runs: Mapping[str, FinetuneResult], split: Any, *, batch_size: int = 512) -> pd.DataFrame:
    """Validation accuracy (from the histories) next to the accuracy on ``split`` of every checkpoint candidate.

    The eta protocol selects checkpoints by their validation accuracy; whether that says anything about the
    test accuracy is an empirical question this table answers (cheap: one forward pass per checkpoint).

    Args:
        runs: {label: FinetuneResult} with ``keep_checkpoints=True``.
        split: Split or (x, y) the accuracy is measured on (e.g. the test split).
        batch_size: forward-pass chunk size.

    Returns:
        DataFrame with columns run, method, seed, epoch, val_acc, accuracy (one row per evaluated epoch >= 1).
    """
    if not runs:
        raise ValueError("`runs` is empty")
    x, y = (split.x, split.y) if hasattr(split, "x") else split
    rows = []
    for label, r in runs.items():
        h = r.history[(r.history["epoch"] >= 1) & r.history["val_acc"].notna()]
        for _, row in h.iterrows():
            epoch = int(row["epoch"])
            model = r.model_at(epoch)
            with torch.no_grad():
                pred = torch.cat([model(x[s : s + batch_size].to(next(model.parameters()).device)).argmax(1).cpu()
                                  for s in range(0, x.shape[0], batch_size)])
            rows.append({"run": label, "method": "idexpo" if r.config.get("regularize", True) else "ce_only",
                         "seed": int(r.config.get("seed", 0)), "epoch": epoch, "val_acc": float(row["val_acc"]),
                         "accuracy": float((pred == y.cpu()).float().mean())})
    return pd.DataFrame(rows)


def refresh_batchnorm_statistics(model: torch.nn.Module, x: Any, *, batch_size: int = 256) -> torch.nn.Module:
    """A copy of ``model`` whose BatchNorm running statistics are re-estimated on the inputs ``x``.

    A diagnostic: fine-tuning in train mode also feeds ID-ExpO's perturbed (partly blanked) inputs through
    BatchNorm, so its running statistics drift towards them. If re-estimating them on clean images restores
    the accuracy, a drop was due to those statistics, not to the learned weights.

    Args:
        model: classifier (not modified). x: (N, ...) clean inputs on any device.
        batch_size: inputs per forward pass; the running statistics become the plain average of the batches'
            statistics (BatchNorm's cumulative mode), i.e. the statistics of ``x`` when it fits one batch.

    Returns:
        The copy, in eval mode (unchanged copy when the model has no BatchNorm layer).
    """
    x = check_tensor(x, "x", dtype=None)
    batch_size = check_int(batch_size, "batch_size", low=1)
    m = copy.deepcopy(model)
    bns = [mod for mod in m.modules() if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return m.eval()
    device = next(m.parameters()).device
    saved = []
    for bn in bns:
        saved.append(bn.momentum)
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over every batch of x
    m.eval()
    for bn in bns:
        bn.train()
    with torch.no_grad():
        for s in range(0, x.shape[0], batch_size):
            m(x[s : s + batch_size].to(device))
    for bn, mom in zip(bns, saved):
        bn.momentum = mom
    return m.eval()


def _spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho, NaN when either sequence is constant (no ranking to correlate)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(spearmanr(x, y).statistic)


def summarize_eta_sweep(sweep: pd.DataFrame, *, a: str = "idexpo", b: str = "ce_only",
                        min_effect: float = 1e-3) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Per-eta comparison of two methods and the eta trade-off of method ``a`` (the paper's Fig. 2 claims).

    Args:
        sweep: from :func:`eta_sweep` with ``by_seed=True`` (columns method, eta, seed, accuracy,
            faithfulness, ...).
        a, b: the methods compared (ID-ExpO and CE-only).
        min_effect: smallest mean faithfulness gain that counts, >= 0.

    Returns:
        (per_eta, summary). per_eta has one row per eta: mean accuracy and faithfulness (Ins + 1 - Del) of
        both methods over seeds (``acc_a``, ``acc_b``, ``faith_a``, ``faith_b``), the mean gain
        ``faith_diff`` = faith_a - faith_b, the seed spread ``faith_spread`` (the larger of the two methods'
        max - min over seeds), the smallest seed-paired gain ``faith_paired_min``, ``acc_diff``, and
        ``a_better`` (gain > max(spread, min_effect) and every paired gain > 0). summary holds
        ``n_etas``, ``n_seeds``, ``a_better_at_every_eta``, ``n_a_better``, the Spearman correlations over
        the eta grid of eta with a's mean test accuracy (``spearman_acc``) and with its mean faithfulness
        (``spearman_faith``) (NaN when constant: the selection did not move), ``n_selections`` (distinct
        (run, epoch) choices of a over the grid within one seed, the most over seeds; 1 when nothing moves),
        and ``acc_range`` / ``faith_range`` of a's means over the grid.
    """
    need = {"method", "eta", "seed", "accuracy", "faithfulness", "run", "epoch"}
    if not need <= set(sweep.columns):
        raise ValueError(f"`sweep` needs columns {sorted(need)}, got {list(sweep.columns)}")
    check_positive(min_effect, "min_effect", strict=False)
    rows = []
    for eta, d in sweep.groupby("eta", sort=True):
        da, db = d[d["method"] == a], d[d["method"] == b]
        if da.empty or db.empty:
            raise ValueError(f"eta {eta:g}: the sweep lacks method {a!r} or {b!r}")
        fa, fb = da.groupby("seed")["faithfulness"].mean(), db.groupby("seed")["faithfulness"].mean()
        common = sorted(set(fa.index) & set(fb.index))
        paired = [float(fa[k] - fb[k]) for k in common]
        spread = max(float(fa.max() - fa.min()), float(fb.max() - fb.min()))
        diff = float(fa.mean() - fb.mean())
        rows.append({"eta": float(eta), "acc_a": float(da["accuracy"].mean()), "acc_b": float(db["accuracy"].mean()),
                     "faith_a": float(fa.mean()), "faith_b": float(fb.mean()), "faith_diff": diff,
                     "faith_spread": spread, "faith_paired_min": min(paired) if paired else float("nan"),
                     "acc_diff": float(da["accuracy"].mean() - db["accuracy"].mean()),
                     "a_better": bool(len(common) >= 2 and diff > max(spread, min_effect) and min(paired) > 0)})
    per_eta = pd.DataFrame(rows)
    sa = sweep[sweep["method"] == a]
    n_sel = max(g[["run", "epoch"]].drop_duplicates().shape[0] for _, g in sa.groupby("seed"))
    summary = {"n_etas": int(len(per_eta)), "n_seeds": int(sa["seed"].nunique()),
               "a_better_at_every_eta": bool(per_eta["a_better"].all()), "n_a_better": int(per_eta["a_better"].sum()),
               "spearman_acc": _spearman(per_eta["eta"], per_eta["acc_a"]),
               "spearman_faith": _spearman(per_eta["eta"], per_eta["faith_a"]),
               "n_selections": int(n_sel),
               "acc_range": float(per_eta["acc_a"].max() - per_eta["acc_a"].min()),
               "faith_range": float(per_eta["faith_a"].max() - per_eta["faith_a"].min())}
    return per_eta, summary


def compare_finetuning(
    model: torch.nn.Module,
    data: Any,
    explainer: Any,
    *,
    seeds: Sequence[int] = (0,),
    lambda1: float = 0.01,
    extra_lambda1: Sequence[float] = (),
    extra_all_seeds: bool = False,
    ce_only: bool = True,
    **finetune_kwargs: Any,
) -> dict[str, FinetuneResult]:
    """CE-only and ID-ExpO fine-tuning of the same pretrained model, per seed (and a lambda1 grid).

    Args:
        model: the pretrained classifier (not modified). data, explainer: as in :func:`finetune_idexpo`.
        seeds: fine-tuning seeds (shuffling, sampling); both methods run with each.
        lambda1: the main regularizer weight. extra_lambda1: further weights (candidates for the eta sweep),
            run with ``seeds[0]`` only, or with every seed when ``extra_all_seeds``.
        ce_only: also run the CE-only baseline with each seed (False: ID-ExpO runs only, e.g. a variant of
            the explainer compared with runs made before).
        **finetune_kwargs: shared options of :func:`finetune_idexpo` (epochs, lr, S, tau, ...).

    Returns:
        {label: FinetuneResult} with labels ``"ce_only/seed<s>"`` and ``"idexpo/lambda1=<l>/seed<s>"``.
    """
    if len(seeds) == 0:
        raise ValueError("`seeds` must not be empty")
    runs: dict[str, FinetuneResult] = {}
    # epoch 0 (the pretrained model on the validation split) is the same for every run: evaluate it once
    if finetune_kwargs.get("initial_eval") is None:
        finetune_kwargs = {**finetune_kwargs, "initial_eval": initial_evaluation(model, data, explainer, **finetune_kwargs)}
    for seed in seeds:
        if ce_only:
            runs[f"ce_only/seed{seed}"] = finetune_ce_only(model, data, explainer, lambda1=lambda1, seed=seed,
                                                           **finetune_kwargs)
        runs[f"idexpo/lambda1={lambda1:g}/seed{seed}"] = finetune_idexpo(model, data, explainer, lambda1=lambda1, seed=seed,
                                                                        **finetune_kwargs)
    for seed in (seeds if extra_all_seeds else seeds[:1]):
        for lam in extra_lambda1:
            if float(lam) != float(lambda1):
                runs[f"idexpo/lambda1={lam:g}/seed{seed}"] = finetune_idexpo(model, data, explainer, lambda1=lam,
                                                                           seed=seed, **finetune_kwargs)
    return runs


def evaluate_runs(
    runs: Mapping[str, FinetuneResult],
    pretrained: torch.nn.Module,
    split: Any,
    explainer: Any,
    *,
    S: float = 0.5,
    step: int | None = None,
    baseline: Any = 0.0,
    seed: int = 0,
) -> tuple[pd.DataFrame, dict[str, dict[str, Any]]]:
    """Test accuracy and hard Ins / Del of the pretrained model and of every fine-tuned run.

    Args:
        runs: {label: FinetuneResult} (e.g. from :func:`compare_finetuning`). pretrained: the start model.
        split: evaluation split. explainer: explainer of the hard scores. S, step, baseline: hard-score
            settings. seed: generator seed of sampling explainers (the same for every model).

    Returns:
        (table, evals): table with columns label, method (pretrained / ce_only / idexpo), lambda1, seed,
        accuracy, ins, del, one_minus_del, seconds_per_epoch, best_epoch; evals maps each label (and
        ``"pretrained"``) to the :func:`evaluate_idexpo` output (per-sample scores, attributions).
    """
    models: dict[str, tuple[torch.nn.Module, dict[str, Any]]] = {"pretrained": (pretrained, {})}
    for label, r in runs.items():
        models[label] = (r.model, r.config)
    rows, evals = [], {}
    for label, (m, cfg) in models.items():
        ev = evaluate_idexpo(m, split, explainer, S=S, step=step, baseline=baseline, generator=torch.Generator().manual_seed(seed))
        evals[label] = ev
        r = runs.get(label)
        method = "pretrained" if r is None else ("idexpo" if cfg.get("regularize", True) else "ce_only")
        sec = float("nan") if r is None else float(r.history.loc[r.history["epoch"] >= 1, "seconds"].mean())
        rows.append({"label": label, "method": method, "lambda1": cfg.get("lambda1", float("nan")) if method == "idexpo" else float("nan"),
                     "seed": cfg.get("seed", seed), "accuracy": ev["accuracy"], "ins": float(ev["ins"].mean()),
                     "del": float(ev["del"].mean()), "one_minus_del": 1.0 - float(ev["del"].mean()),
                     "seconds_per_epoch": sec, "best_epoch": -1 if r is None else r.best_epoch})
    return pd.DataFrame(rows), evals


def compare_methods(table: pd.DataFrame, metric: str, *, a: str = "idexpo", b: str = "ce_only",
                    lambda1: float | None = None) -> dict[str, Any]:
    """Mean of ``metric`` over seeds for methods a and b, their difference and the seed spread.

    Args:
        table: from :func:`evaluate_runs` (columns method, seed, lambda1 and the metric). metric: a column
            (``ins``, ``del``, ``accuracy``, ...).
        a, b: methods compared. lambda1: restrict method ``"idexpo"`` rows to this weight (None: all).

    Returns:
        dict with mean_a, mean_b, diff (mean_a - mean_b), spread (the larger of the two methods' ranges
        max - min over seeds; 0 with one seed), n_seeds (the smaller count), and the seed-paired
        differences a - b: paired (list, by seed, seeds present in both), paired_min and paired_max.
    """
    if metric not in table.columns:
        raise ValueError(f"unknown `metric` {metric!r}; columns are {list(table.columns)}")

    def rows(method):
        d = table[table["method"] == method]
        if method == "idexpo" and lambda1 is not None and "lambda1" in d.columns:
            d = d[(d["lambda1"] - lambda1).abs() < 1e-12]
        if d.empty:
            raise ValueError(f"no rows for method {method!r}" + (f" with lambda1={lambda1}" if lambda1 is not None else ""))
        return d

    da, db = rows(a), rows(b)
    va, vb = da[metric], db[metric]
    spread = max(float(va.max() - va.min()), float(vb.max() - vb.min()))
    paired: list[float] = []
    if "seed" in table.columns:
        sa, sb = da.groupby("seed")[metric].mean(), db.groupby("seed")[metric].mean()
        common = sorted(set(sa.index) & set(sb.index))
        paired = [float(sa[k] - sb[k]) for k in common]
    return {"mean_a": float(va.mean()), "mean_b": float(vb.mean()), "diff": float(va.mean() - vb.mean()),
            "spread": spread, "n_seeds": int(min(len(va), len(vb))), "paired": paired,
            "paired_min": min(paired) if paired else float("nan"), "paired_max": max(paired) if paired else float("nan")}


def beats_seed_spread(comparison: Mapping[str, Any], *, increase: bool = True, min_effect: float = 1e-3,
                      min_seeds: int = 2) -> bool:
    """Whether a method difference from :func:`compare_methods` is larger than the seed spread.

    The effect counts only when it can be told apart from seed noise: at least ``min_seeds`` seeds, the
    mean difference in the intended direction larger than both the seed spread and ``min_effect``, and
    every seed-paired difference in the intended direction.

    Args:
        comparison: output of :func:`compare_methods`.
        increase: ``True`` when method a should be higher (Ins, accuracy), ``False`` when lower (Del).
        min_effect: smallest mean difference that counts, >= 0.
        min_seeds: fewest seeds per method for a verdict (with fewer the spread is unknown), >= 1.

    Returns:
        bool.
    """
    check_positive(min_effect, "min_effect", strict=False)
    if isinstance(min_seeds, bool) or not isinstance(min_seeds, int) or min_seeds < 1:
        raise ValueError(f"`min_seeds` must be an int >= 1, got {min_seeds!r}")
    sign = 1.0 if increase else -1.0
    paired = [sign * d for d in comparison.get("paired", [])]
    return bool(comparison["n_seeds"] >= min_seeds and sign * comparison["diff"] > max(comparison["spread"], min_effect)
                and (not paired or min(paired) > 0))


def format_comparison(comparison: Mapping[str, Any], label: str, *, digits: int = 3) -> str:
    """One line for a claim's ``observed`` column: means, mean difference, seed spread, per-seed range.

    Args:
        comparison: output of :func:`compare_methods`. label: metric name shown (e.g. ``"Ins"``).
        digits: decimals.

    Returns:
        e.g. ``"Ins 0.260 -> 0.342 (diff +0.082, seed spread 0.006, per seed +0.078..+0.085)"`` (b -> a).
    """
    c, f = comparison, f".{int(digits)}f"
    per_seed = (f", per seed {c['paired_min']:+{f}}..{c['paired_max']:+{f}}" if c.get("paired") else "")
    return (f"{label} {c['mean_b']:{f}} -> {c['mean_a']:{f}} (diff {c['diff']:+{f}}, seed spread {c['spread']:{f}}"
            f"{per_seed})")


_DIRECTION = {"ins": True, "del": False, "accuracy": True, "seconds_per_epoch": False, "one_minus_del": True,
              "sensitivity_n": True, "mass_in_mask": True}


def to_metric_rows(table: pd.DataFrame, *, experiment: str, dataset: str, model: str,
                   metrics: Sequence[str] = ("ins", "del", "accuracy", "seconds_per_epoch")) -> pd.DataFrame:
    """Tidy rows for ``run.log_metrics`` from a per-model table (one row per model / seed).

    Args:
        table: columns method, seed and the metric columns (e.g. from :func:`evaluate_runs`).
        experiment: experiment name (e.g. ``"gradcam"``). dataset, model: names for the rows.
        metrics: metric columns to emit (NaN values, e.g. the pretrained model's seconds, are dropped).

    Returns:
        DataFrame with columns experiment, dataset, model, method, metric, level, seed, value, higher_is_better.
    """
    missing = [m for m in metrics if m not in table.columns]
    if missing or "method" not in table.columns:
        raise ValueError(f"`table` lacks columns {missing or ['method']}")
    long = table.melt(id_vars=["method", "seed"], value_vars=list(metrics), var_name="metric", value_name="value")
    long = long.dropna(subset=["value"])
    long["experiment"], long["dataset"], long["model"], long["level"] = experiment, dataset, model, float("nan")
    long["higher_is_better"] = long["metric"].map(lambda m: _DIRECTION.get(m, True))
    long["seed"] = long["seed"].astype(int)
    return long[["experiment", "dataset", "model", "method", "metric", "level", "seed", "value", "higher_is_better"]]


# ------------------------------------------------------------------------------------------------
# verdicts of the notebook's claims (expected / observed / verdict / reason for ``run.claim``)
# ------------------------------------------------------------------------------------------------
def seed_gain_verdict(comparison: Mapping[str, Any], label: str, *, increase: bool = True, context: str = "",
                      min_effect: float = 1e-3, digits: int = 3) -> dict[str, str]:
    """The keyword arguments of ``run.claim`` for "method a beats method b on one metric beyond the seed spread".

    Args:
        comparison: from :func:`compare_methods` (a = the method, b = the baseline).
        label: metric name in the texts (e.g. ``"sensitivity-n"``). increase: a should be higher.
        context: prefix of the observed text (e.g. ``"fashion_mnist, 3 seeds"``).
        min_effect: smallest mean difference that counts. digits: decimals.

    Returns:
        dict with ``expected``, ``observed``, ``verdict`` (holds / fails / inconclusive with one seed)
        and ``reason``.
    """
    c = comparison
    ok = beats_seed_spread(c, increase=increase, min_effect=min_effect)
    f = f".{int(digits)}f"
    word = "gain" if increase else "drop"
    expected = f">= 2 seeds; mean {label} {word} > max(seed spread, {min_effect:g}), in every seed"
    observed = (context + ": " if context else "") + format_comparison(c, label, digits=digits)
    if c["n_seeds"] < 2:
        return {"expected": expected, "observed": observed, "verdict": "inconclusive",
                "reason": "one fine-tuning seed: the seed spread is unknown"}
    if ok:
        return {"expected": expected, "observed": observed, "verdict": "holds", "reason": ""}
    sign = 1 if increase else -1
    why = ("points the other way" if sign * c["diff"] <= 0 else
           f"is within the seed spread {c['spread']:{f}}" if sign * c["diff"] <= max(c["spread"], min_effect) else
           "is not in the intended direction in every seed")
    return {"expected": expected, "observed": observed, "verdict": "fails",
            "reason": f"the mean {label} difference {c['diff']:+{f}} {why} (per seed {c['paired_min']:+{f}}.."
                      f"{c['paired_max']:+{f}})"}


def ins_del_verdict(ins: Mapping[str, Any], dele: Mapping[str, Any], *, context: str = "",
                    min_effect: float = 1e-3, note: str = "") -> dict[str, str]:
    """``run.claim`` keyword arguments for "ID-ExpO raises Ins and lowers Del vs CE-only beyond the seed spread".

    Both parts must clear :func:`beats_seed_spread`; the reason names each part that does not.

    Args:
        ins, dele: :func:`compare_methods` outputs for ``"ins"`` and ``"del"`` (a = ID-ExpO, b = CE-only).
        context: prefix of the observed text. min_effect: smallest mean difference that counts.
        note: a diagnosis appended to the reason of a ``fails`` verdict.

    Returns:
        dict with ``expected``, ``observed``, ``verdict`` and ``reason``.
    """
    a = seed_gain_verdict(ins, "Ins", increase=True, min_effect=min_effect)
    b = seed_gain_verdict(dele, "Del", increase=False, min_effect=min_effect)
    expected = (f">= 2 seeds; mean Ins gain and mean Del drop each > max(seed spread, {min_effect:g}), "
                "in every seed")
    observed = (context + ": " if context else "") + f"{a['observed']}; {b['observed']}"
    verdicts = {a["verdict"], b["verdict"]}
    if "inconclusive" in verdicts:
        return {"expected": expected, "observed": observed, "verdict": "inconclusive", "reason": a["reason"] or b["reason"]}
    if verdicts == {"holds"}:
        return {"expected": expected, "observed": observed, "verdict": "holds", "reason": ""}
    return {"expected": expected, "observed": observed, "verdict": "fails",
            "reason": "; ".join(v["reason"] for v in (a, b) if v["verdict"] == "fails") + (f"; {note}" if note else "")}


def accuracy_kept_verdict(acc: Mapping[str, Any], *, tolerance: float = 0.02, context: str = "",
                          note: str = "") -> dict[str, str]:
    """``run.claim`` keyword arguments for "ID-ExpO keeps accuracy within ``tolerance`` of CE-only".

    Args:
        acc: :func:`compare_methods` output for ``"accuracy"``. tolerance: largest |mean difference|.
        context: prefix of the observed text. note: a diagnosis appended to the reason when it fails.

    Returns:
        dict with ``expected``, ``observed``, ``verdict`` and ``reason``.
    """
    tolerance = check_positive(tolerance, "tolerance", strict=False)
    observed = (context + ": " if context else "") + format_comparison(acc, "accuracy")
    ok = abs(acc["diff"]) <= tolerance
    return {"expected": f"|mean Acc(ID-ExpO) - mean Acc(CE-only)| <= {tolerance:g} over the seeds",
            "observed": observed, "verdict": "holds" if ok else "fails",
            "reason": "" if ok else f"mean accuracy moved by {acc['diff']:+.3f} (seed spread {acc['spread']:.3f})"
                                    + (f"; {note}" if note else "")}


def eta_tradeoff_verdict(per_eta: pd.DataFrame, summary: Mapping[str, Any], *, min_rho: float = 0.5,
                         note: str = "") -> dict[str, str]:
    """``run.claim`` keyword arguments for the paper's Fig. 2 claim, from :func:`summarize_eta_sweep`.

    The claim holds when ID-ExpO's selection is more faithful than CE-only's beyond the seed spread at every
    eta, and over the grid Spearman(eta, accuracy) >= ``min_rho`` and Spearman(eta, Ins + 1 - Del) <=
    -``min_rho``. When the same checkpoints win at every eta the trade-off part cannot be tested: then the
    verdict is ``inconclusive`` if the per-eta part holds, ``fails`` if it does not.

    Args:
        per_eta, summary: outputs of :func:`summarize_eta_sweep`. min_rho: the Spearman threshold in (0, 1].
        note: a diagnosis appended to the reason of a ``fails`` / ``inconclusive`` verdict (e.g. how well
            the candidates' validation accuracy predicts their test accuracy).

    Returns:
        dict with ``expected``, ``observed``, ``verdict`` and ``reason``.
    """
    if not 0 < float(min_rho) <= 1:
        raise ValueError(f"`min_rho` must be in (0, 1], got {min_rho}")
    s = summary
    s_acc, s_faith = s["spearman_acc"], s["spearman_faith"]
    moved = s["n_selections"] > 1 and not (math.isnan(s_acc) or math.isnan(s_faith))
    tradeoff = moved and s_acc >= min_rho and s_faith <= -min_rho
    expected = (f"Ins + 1 - Del gain > max(seed spread, 0.001) in every seed at each of {s['n_etas']} etas; "
                f"Spearman(eta, Acc) >= {min_rho:g} and Spearman(eta, Ins + 1 - Del) <= -{min_rho:g} over the grid")
    observed = (f"{s['n_a_better']} of {s['n_etas']} etas beyond the spread (gain {per_eta['faith_diff'].min():+.3f}.."
                f"{per_eta['faith_diff'].max():+.3f}, spread up to {per_eta['faith_spread'].max():.3f}); Spearman "
                f"acc {s_acc:.2f}, faithfulness {s_faith:.2f}; ID-ExpO accuracy range {s['acc_range']:.3f}, "
                f"faithfulness range {s['faith_range']:.3f}; up to {s['n_selections']} distinct selections per seed")
    reasons = []
    if not s["a_better_at_every_eta"]:
        reasons.append(f"ID-ExpO beats CE-only beyond the seed spread at {s['n_a_better']} of {s['n_etas']} etas")
    if moved and not tradeoff:
        reasons.append(f"over the grid Spearman(eta, accuracy) = {s_acc:.2f} and Spearman(eta, Ins + 1 - Del) = "
                       f"{s_faith:.2f}: no monotone trade-off on the test images")
    tail = f"; {note}" if note else ""
    if not moved and s["a_better_at_every_eta"]:
        return {"expected": expected, "observed": observed, "verdict": "inconclusive",
                "reason": "the same checkpoint is selected at every eta in every seed (the candidates' validation "
                          "accuracies differ too little for eta to matter), so the trade-off part cannot be tested; "
                          "the per-eta part holds" + tail}
    if reasons:
        return {"expected": expected, "observed": observed, "verdict": "fails", "reason": "; ".join(reasons) + tail}
    return {"expected": expected, "observed": observed, "verdict": "holds", "reason": ""}
