"""Analyses of ID-ExpO runs: eta sweeps (Fig. 2), per-sample changes (Fig. 4), soft vs hard agreement."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import torch

from .._validation import check_positive, check_tensor
from .finetune import FinetuneResult, evaluate_idexpo, finetune_ce_only, finetune_idexpo, idexpo_scores, validation_score
from .soft import soft_insertion_deletion

__all__ = ["quadrant_shares", "soft_hard_agreement", "eta_sweep", "compare_finetuning", "evaluate_runs", "compare_methods", "beats_seed_spread", "format_comparison", "to_metric_rows"]


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
) -> pd.DataFrame:
    """The paper's Fig. 2 protocol: per accuracy weight eta, pick the (run, epoch) with the best validation
    score eta * Acc + Ins + (1 - Del) within each method, then report its test metrics.

    Args:
        runs: {label: FinetuneResult} fine-tuned with ``keep_checkpoints=True``; each run's method is
            ``"idexpo"`` or ``"ce_only"`` (from its config); candidates of a method are all its runs
            (e.g. a lambda1 grid) and all their evaluated epochs >= 1.
        split: evaluation split (test). explainer: explainer for the hard scores.
        etas: accuracy weights >= 0. acc_floor: minimum validation accuracy (None: none).
        S, step, baseline: hard-score settings. seed: generator seed of sampling explainers.

    Returns:
        DataFrame with columns method, eta, run, epoch, accuracy, ins, del, one_minus_del (test means).
    """
    if not runs:
        raise ValueError("`runs` is empty")
    cache: dict[tuple[str, int], dict[str, float]] = {}
    rows = []
    for method in ("ce_only", "idexpo"):
        members = {k: r for k, r in runs.items() if (r.config.get("regularize", True) == (method == "idexpo"))}
        if not members:
            continue
        for eta in etas:
            check_positive(eta, "etas", strict=False)
            best = None
            for label, r in members.items():
                h = r.history[(r.history["epoch"] >= 1) & r.history["val_acc"].notna()]
                for _, row in h.iterrows():
                    s_floor = validation_score(row["val_acc"], row["val_ins"], row["val_del"], eta=eta, acc_floor=acc_floor)
                    s = validation_score(row["val_acc"], row["val_ins"], row["val_del"], eta=eta)
                    key = (s_floor > -1e8, s)
                    if best is None or key > best[0]:
                        best = (key, label, int(row["epoch"]))
            _, label, epoch = best
            if (label, epoch) not in cache:
                ev = evaluate_idexpo(runs[label].model_at(epoch), split, explainer, S=S, step=step, baseline=baseline,
                                     generator=torch.Generator().manual_seed(seed))
                cache[(label, epoch)] = {"accuracy": ev["accuracy"], "ins": float(ev["ins"].mean()), "del": float(ev["del"].mean())}
            m = cache[(label, epoch)]
            rows.append({"method": method, "eta": float(eta), "run": label, "epoch": epoch, **m, "one_minus_del": 1.0 - m["del"]})
    return pd.DataFrame(rows)


def compare_finetuning(
    model: torch.nn.Module,
    data: Any,
    explainer: Any,
    *,
    seeds: Sequence[int] = (0,),
    lambda1: float = 0.01,
    extra_lambda1: Sequence[float] = (),
    **finetune_kwargs: Any,
) -> dict[str, FinetuneResult]:
    """CE-only and ID-ExpO fine-tuning of the same pretrained model, per seed (and a lambda1 grid).

    Args:
        model: the pretrained classifier (not modified). data, explainer: as in :func:`finetune_idexpo`.
        seeds: fine-tuning seeds (shuffling, sampling); both methods run with each.
        lambda1: the main regularizer weight. extra_lambda1: further weights run with ``seeds[0]`` only
            (candidates for the eta sweep).
        **finetune_kwargs: shared options of :func:`finetune_idexpo` (epochs, lr, S, tau, ...).

    Returns:
        {label: FinetuneResult} with labels ``"ce_only/seed<s>"`` and ``"idexpo/lambda1=<l>/seed<s>"``.
    """
    if len(seeds) == 0:
        raise ValueError("`seeds` must not be empty")
    runs: dict[str, FinetuneResult] = {}
    for seed in seeds:
        runs[f"ce_only/seed{seed}"] = finetune_ce_only(model, data, explainer, lambda1=lambda1, seed=seed, **finetune_kwargs)
        runs[f"idexpo/lambda1={lambda1:g}/seed{seed}"] = finetune_idexpo(model, data, explainer, lambda1=lambda1, seed=seed,
                                                                        **finetune_kwargs)
    for lam in extra_lambda1:
        if float(lam) != float(lambda1):
            runs[f"idexpo/lambda1={lam:g}/seed{seeds[0]}"] = finetune_idexpo(model, data, explainer, lambda1=lam,
                                                                           seed=seeds[0], **finetune_kwargs)
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
