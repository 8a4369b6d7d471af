"""Figures of the reproduction report: the claim scoreboard, metric summaries over seeds, and the key figures.

Each key figure draws exactly the metrics.csv rows that :func:`xcal_core.report.select_key_rows` chose for it
(:data:`xcal_core.report.KEY_FIGURES`); with several seeds it shows every seed (a dot per seed on a bar, a thin
line per seed), never an interval computed from a few seeds.
"""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .style import FONT, fit_figsize, fit_title, line_styles

__all__ = ["plot_scoreboard", "plot_verdict_grid", "plot_metric_summary", "plot_key_figure"]

_VERDICT_COLORS = {"holds": "#2a9d8f", "fails": "#e76f51", "inconclusive": "#8d99ae", "mixed": "#e9c46a"}
_VERDICT_HATCH = {"holds": "", "fails": "//", "inconclusive": "..", "mixed": "xx"}
_VERDICT_LETTER = {"holds": "H", "fails": "F", "inconclusive": "I", "mixed": "M"}

AGG_STRATEGIES = ("agg_mean", "agg_var", "agg_robust", "agg_faith", "agg_opt")
"""Notebook 04's aggregation strategies (its ablation variants, e.g. ``agg_robust_k3``, are not among them)."""

LABELS = {"uncalibrated": "uncalibrated", "temperature_scaling": "temperature scaling", "dirichlet": "Dirichlet",
          "recalx": "ReCalX", "pretrained": "pretrained", "ce_only": "CE-only", "idexpo": "ID-ExpO",
          "agg_mean": "AGG_mean", "agg_var": "AGG_var", "agg_robust": "AGG_robust", "agg_faith": "AGG_faith",
          "agg_opt": "AGG_opt", "sens_avg": "S_AVG", "infidelity": "INFD", "ins": "Ins", "del": "Del",
          "mc_dropout": "MC-Dropout", "dropconnect": "DropConnect", "flipout": "Flipout", "ensemble": "ensemble",
          "guided_backprop": "GBP", "integrated_gradients": "IG", "lime": "LIME", "gradcam": "Grad-CAM",
          "saliency": "Saliency", "input_x_gradient": "IxG", "deeplift": "DeepLift", "smoothgrad": "SmoothGrad",
          "vargrad": "VarGrad", "gradient_shap": "GradSHAP", "kernel_shap": "KernelSHAP",
          "feature_ablation": "FeatAbl"}
"""Display names of methods and metrics in the key figures and their captions."""


def display_name(name: Any) -> str:
    """The name shown for a method or metric in the key figures (:data:`LABELS`, else the name itself)."""
    return LABELS.get(str(name), str(name))


def _means(rows: pd.DataFrame, by: Sequence[str]) -> pd.Series:
    """Mean over replicates of the per-replicate values (each replicate weighs the same)."""
    return rows.groupby([*by, "replicate"])["value"].mean().groupby(level=list(range(len(by)))).mean()


def controls(rows: pd.DataFrame) -> dict[tuple[str, str], float]:
    """``{(dataset, model): fitted temperature}`` of the notebook-02 settings that are controls (the mean
    fitted temperature lies in :data:`xcal_core.metrics.CONTROL_BAND`: the model needs no calibration)."""
    from ..metrics.c2i import is_control

    t = rows[rows["role"] == "temperature"]
    if t.empty:
        return {}
    temp = _means(t, ["dataset", "model"])
    return {(str(d), str(m)): float(v) for (d, m), v in temp.items() if is_control(float(v))}



def plot_scoreboard(board: pd.DataFrame, ax: Any = None) -> tuple[Any, Any]:
    """Per notebook, how many claims hold, fail, are inconclusive or are mixed across runs.

    One stacked horizontal bar per notebook (and profile, when several are present); every segment is
    labelled with its count, so a verdict that occurs is always visible, and the colours carry a hatch
    as well (readable in greyscale).

    Args:
        board: output of :func:`xcal_core.report.scoreboard` (``verdict`` over runs per claim).
        ax: optional Axes.

    Returns:
        ``(fig, ax)``.
    """
    if board.empty:
        raise ValueError("`board` is empty: no claims were found in the given runs")
    if "verdict" not in board.columns:
        raise ValueError("`board` lacks the 'verdict' column; pass xcal_core.report.scoreboard(...)")
    key = board["notebook"].astype(str).str.slice(0, 2)
    if board["profile"].nunique() > 1:
        key = key + " [" + board["profile"].astype(str) + "]"
    counts = pd.crosstab(key, board["verdict"]).reindex(columns=list(_VERDICT_COLORS), fill_value=0)
    counts = counts.sort_index(ascending=False)
    if ax is None:
        fig, ax = plt.subplots(figsize=(9, min(6.0, 0.5 * len(counts) + 1.6)))
    else:
        fig = ax.figure
    y = np.arange(len(counts))
    left = np.zeros(len(counts))
    for v, color in _VERDICT_COLORS.items():
        n = counts[v].to_numpy()
        ax.barh(y, n, left=left, color=color, hatch=_VERDICT_HATCH[v], edgecolor="black", linewidth=0.5,
                label=f"{v} ({int(n.sum())})")
        for yi, (l, c) in enumerate(zip(left, n)):
            if c:
                ax.text(l + c / 2, yi, str(int(c)), ha="center", va="center", fontsize=11, fontweight="bold",
                        bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.8))
        left = left + n
    ax.set_yticks(y, counts.index.tolist(), fontsize=11)
    ax.set_xlim(0, left.max() * 1.05 + 0.5)
    runs = board["runs"].astype(int) if "runs" in board.columns else pd.Series([1] * len(board))
    if runs.max() > 1:  # several runs (seeds) per claim: say so, and that `mixed` means the verdict changed
        n_runs = f"{runs.min()}" if runs.min() == runs.max() else f"{runs.min()}-{runs.max()}"
        ax.set_xlabel(f"number of claims (verdict over {n_runs} runs each; mixed: it changed between runs)")
    else:
        ax.set_xlabel("number of claims (verdict of the one run read)")
    ax.set_title(f"{len(board)} claims of the papers on our data")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=4, fontsize=10, frameon=False)
    return fig, ax


def _short_claim_labels(ids: Sequence[str]) -> list[str]:
    """Claim ids without the prefix and suffix (whole ``_``-separated words) that all ids of a panel share,
    e.g. ``c2i_ts_ece_fashion_mnist`` -> ``ts_ece`` among the other ``c2i_..._fashion_mnist`` claims."""
    parts = [str(i).split("_") for i in ids]
    if len(parts) < 2:
        return [str(i) for i in ids]
    shortest = min(len(p) for p in parts)
    pre = 0
    while pre < shortest - 1 and len({p[pre] for p in parts}) == 1:
        pre += 1
    suf = 0
    while suf < shortest - 1 - pre and len({p[-1 - suf] for p in parts}) == 1:
        suf += 1
    return ["_".join(p[pre:len(p) - suf]) for p in parts]


def plot_verdict_grid(claims: pd.DataFrame, *, seed_col: str = "run_seed") -> tuple[Any, np.ndarray]:
    """Every claim's verdict in every seed: one tile per (claim, seed), one panel per notebook.

    The companion of :func:`plot_scoreboard` for a sweep over seeds: where the scoreboard counts the
    claims that are ``mixed``, this grid shows which seeds give which verdict. Tiles carry the verdict's
    colour, hatch and letter (H, F, I; M when several runs with the same seed disagree), so the figure
    reads in greyscale; a claim missing in a seed (its run failed or predates the claim) is a blank tile.
    Claim labels drop the words that all claims of a panel share (``c2i_``, ``_fashion_mnist``).

    Args:
        claims: the claims of the runs, one row per (run, claim), as ``load_runs(paths, table="claims")``
            returns them (columns ``notebook``, ``claim_id``, ``verdict`` and ``seed_col``; ``profile``
            when present).
        seed_col: the column holding each run's seed.

    Returns:
        ``(fig, axes)``: ``axes`` holds one panel per notebook (and profile), in notebook order.
    """
    need = {"notebook", "claim_id", "verdict", seed_col}
    if claims.empty:
        raise ValueError("`claims` is empty: no claims were found in the given runs")
    if not need <= set(claims.columns):
        raise ValueError(f"`claims` lacks the columns {sorted(need - set(claims.columns))}; pass "
                         "load_runs(paths, table='claims')")
    df = claims.copy()
    df["panel"] = df["notebook"].astype(str)
    if "profile" in df.columns and df["profile"].nunique() > 1:
        df["panel"] = df["panel"] + " [" + df["profile"].astype(str) + "]"
    df["seed"] = df[seed_col].astype(int)
    cell = df.groupby(["panel", "claim_id", "seed"], sort=False)["verdict"].agg(
        lambda v: v.iloc[0] if v.nunique() == 1 else "mixed")
    panels = sorted(df["panel"].unique())
    seeds = sorted(df["seed"].unique())
    ncols = min(3, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=fit_figsize(4.0 * ncols, 3.0 * nrows + 0.9), squeeze=False,
                             layout="constrained")
    for ax, panel in zip(axes.flat, panels):
        order = list(dict.fromkeys(df.loc[df["panel"] == panel, "claim_id"].astype(str)))
        for i, cid in enumerate(order):
            for j, seed in enumerate(seeds):
                v = cell.get((panel, cid, seed))
                face = _VERDICT_COLORS.get(v, "white")
                ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor=face, hatch=_VERDICT_HATCH.get(v, ""),
                                           edgecolor="black", linewidth=0.6))
                ax.text(j, i, _VERDICT_LETTER.get(v, "-"), ha="center", va="center", fontsize=FONT["small"],
                        fontweight="bold", bbox=dict(boxstyle="round,pad=0.1", fc="white", ec="none", alpha=0.8))
        ax.set_xlim(-0.5, len(seeds) - 0.5)
        ax.set_ylim(len(order) - 0.5, -0.5)
        ax.set_xticks(range(len(seeds)), [str(s) for s in seeds], fontsize=FONT["tick"])
        ax.set_yticks(range(len(order)), _short_claim_labels(order), fontsize=FONT["small"])
        ax.set_xlabel("seed", fontsize=FONT["small"])
        fit_title(ax, panel.replace("_", " "), fontsize=FONT["panel_title"], width=1.8)  # about the tiles' width
        ax.tick_params(length=0)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    handles = [plt.Rectangle((0, 0), 1, 1, facecolor=c, hatch=_VERDICT_HATCH[v], edgecolor="black", linewidth=0.6,
                             label=f"{_VERDICT_LETTER[v]}: {v}" + (" (runs of one seed disagree)" if v == "mixed" else ""))
               for v, c in _VERDICT_COLORS.items() if v != "mixed" or (cell == "mixed").any()]
    n_claims = df.groupby("panel")["claim_id"].nunique()
    if len(cell) < int(n_claims.sum()) * len(seeds):  # some claim lacks a seed
        handles.append(plt.Rectangle((0, 0), 1, 1, facecolor="white", edgecolor="black", linewidth=0.6,
                                     label="-: no run of this seed has the claim"))
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=FONT["legend"], frameon=False)
    fig.suptitle(f"Each claim's verdict in each of {len(seeds)} seed(s)", fontsize=FONT["title"])
    return fig, axes


def plot_metric_summary(summary: pd.DataFrame, metric: str, notebook: str | None = None, hue: str = "method",
                        ax: Any = None, dataset: str | None = None) -> tuple[Any, Any]:
    """Mean ± 95% CI of one metric: lines over ``level`` when levels exist, else bars per ``hue``.

    Lines get one colour, marker and line style each (:func:`xcal_core.viz.style.line_styles`); with more
    than 8 bars they are drawn horizontally so that their labels never overlap. A new figure is at most
    12 x 6 inches.

    Args:
        summary: output of :func:`xcal_core.report.metric_summary`.
        metric: metric name to draw.
        notebook: restrict to rows of this notebook (id or number prefix).
        dataset: restrict to one dataset; by default, when several are present, the one with the most
            rows (named in the title), so that different datasets' level grids are never mixed.
        hue: column that distinguishes series (default ``method``).
        ax: optional Axes.

    Returns:
        ``(fig, ax)``.
    """
    df = summary[summary["metric"] == metric]
    if notebook is not None and "notebook" in df.columns:
        df = df[df["notebook"].astype(str).str.startswith(notebook)]
    if df.empty:
        raise ValueError(f"no rows for metric {metric!r}" + (f" in notebook {notebook!r}" if notebook else "")
                         + f"; metrics present: {sorted(summary['metric'].unique())}")
    if "dataset" in df.columns and df["dataset"].nunique() > 1 or dataset is not None:
        dataset = dataset if dataset is not None else df["dataset"].value_counts().index[0]
        df = df[df["dataset"] == dataset]
        if df.empty:
            raise ValueError(f"no rows for metric {metric!r} on dataset {dataset!r}")
    if "model" in df.columns and df["model"].nunique() > 1 and df["level"].notna().any():
        df = df[df["model"] == df["model"].value_counts().index[0]]
    has_levels = bool(df["level"].notna().any())
    n_bars = 0 if has_levels else int(df[hue].nunique())
    horizontal = n_bars > 8
    if ax is None:
        size = fit_figsize(6.0, 0.22 * n_bars + 1.6, keep_aspect=False) if horizontal else (5.6, 3.6)
        fig, ax = plt.subplots(figsize=size, layout="constrained")
    else:
        fig = ax.figure
    arrow = "↑" if bool(df["higher_is_better"].iloc[0]) else "↓"
    if has_levels:
        groups = list(df.dropna(subset=["level"]).groupby(hue, sort=True))
        n_levels = int(df["level"].nunique())
        for (name, g), style in zip(groups, line_styles(len(groups), n_points=n_levels)):
            g = g.groupby("level", as_index=False).agg(mean=("mean", "mean"), ci95=("ci95", "max")).sort_values("level")
            ax.plot(g["level"], g["mean"], label=str(name), **style)
            ax.fill_between(g["level"], g["mean"] - g["ci95"], g["mean"] + g["ci95"], color=style["color"], alpha=0.15, lw=0)
        ax.set_xlabel("level")
        ax.legend(fontsize=FONT["legend"], frameon=False)
        ax.set_ylabel(f"{metric} {arrow}")
    else:
        g = df.groupby(hue, as_index=False).agg(mean=("mean", "mean"), ci95=("ci95", "max"))
        if horizontal:
            y = np.arange(len(g))
            ax.barh(y, g["mean"], xerr=g["ci95"], capsize=2, color="#457b9d")
            avail_pt = ax.get_position().height * fig.get_size_inches()[1] * 72
            ax.set_yticks(y, g[hue].astype(str).tolist(), fontsize=max(6.0, min(FONT["tick"], 0.8 * avail_pt / len(g))))
            ax.invert_yaxis()
            ax.set_xlabel(f"{metric} {arrow}")
        else:
            ax.bar(g[hue].astype(str), g["mean"], yerr=g["ci95"], capsize=3, color="#457b9d")
            ax.tick_params(axis="x", labelrotation=30)
            for t in ax.get_xticklabels():
                t.set_ha("right")
                t.set_rotation_mode("anchor")
            ax.set_ylabel(f"{metric} {arrow}")
    where = " · ".join(str(v) for v in (notebook, dataset, df["model"].iloc[0] if "model" in df.columns and df["model"].nunique() == 1 else None) if v)
    fit_title(ax, f"{where + ' · ' if where else ''}{metric} (mean ± 95% CI over runs)", fontsize=10)
    return fig, ax


_BAR_COLORS = ("#8d99ae", "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9")
_BAR_HATCH = ("", "//", "..", "xx", "\\\\", "oo", "--")


def _bars(ax: Any, rows: pd.DataFrame, group: str, hue: str, groups: list, hues: list,
          colors: dict | None = None, hatches: dict | None = None, values: bool = False) -> None:
    """One bar per (group, hue): the mean over replicates; with several replicates, one dot per replicate
    on its bar (the spread across seeds, no interval computed from a few seeds). ``colors`` / ``hatches``
    are keyed by hue or by group; ``values`` writes each mean at the foot of its bar."""
    width = 0.8 / max(len(hues), 1)
    rng = np.random.default_rng(0)  # fixed jitter of the dots (layout only)
    for j, h in enumerate(hues):
        drawn = False
        for i, g in enumerate(groups):
            sub = rows[(rows[group].astype(str) == str(g)) & (rows[hue].astype(str) == str(h))]
            per_rep = sub.groupby("replicate")["value"].mean()
            if per_rep.empty:
                continue
            x = i + (j - (len(hues) - 1) / 2) * width
            colors, hatches = colors or {}, hatches or {}
            color = colors.get(h, colors.get(g, _BAR_COLORS[j % len(_BAR_COLORS)]))
            hatch = hatches.get(h, hatches.get(g, _BAR_HATCH[j % len(_BAR_HATCH)]))
            ax.bar(x, per_rep.mean(), width * 0.9, color=color, hatch=hatch, edgecolor="black", linewidth=0.6,
                   label=None if drawn else _label(h))
            drawn = True
            if values:  # at the bar's foot, where no seed's dot sits
                ax.annotate(f"{per_rep.mean():.3g}", (x, 0.0), xytext=(0, 3), textcoords="offset points",
                            ha="center", va="bottom", fontsize=FONT["small"], zorder=4,
                            bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.85))
            if len(per_rep) > 1:
                jitter = rng.uniform(-0.25, 0.25, len(per_rep)) * width
                ax.scatter(x + jitter, per_rep.to_numpy(), s=24, color="black", edgecolors="white", linewidths=0.6,
                           zorder=3)
    ax.set_xticks(np.arange(len(groups)))
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)


def _label(name: Any) -> str:
    return display_name(name)


def _title(sel: Any, where: str) -> str:
    n = sel.n_replicates
    each = "one thin line per seed" if sel.spec.name == "01_ce_kl" else "bar = mean, dot = one seed"
    spread = f"{n} seeds: {each}" if n > 1 else "one seed"
    return f"{sel.spec.notebook} · {sel.spec.title}\n{where} · {sel.profile or 'run'} profile · {spread}"


def _where(rows: pd.DataFrame, cols: tuple[str, ...] = ("dataset", "model")) -> str:
    return " · ".join(" / ".join(map(str, dict.fromkeys(rows[c].astype(str)))) for c in cols)


def _figure(n_panels: int = 1, width: float = 6.4, height: float = 4.2) -> tuple[Any, Any]:
    return plt.subplots(1, n_panels, figsize=fit_figsize(width * n_panels if n_panels > 1 else width, height),
                        layout="constrained", squeeze=True)


def _draw_01(sel: Any) -> tuple[Any, Any]:
    from .recalx import plot_ce_with_floor

    r = sel.rows
    wide = r.pivot_table(index=["replicate", "method", "level"], columns="metric", values="value").reset_index()
    fig, ax = _figure(1, 6.8, 4.2)
    methods = ["uncalibrated", "recalx"]
    if {"ce_kl_floor", "ce_kl_floor_sd"} <= set(wide.columns):
        plot_ce_with_floor(wide, ax, metric="ce_kl", methods=methods, seed_col="replicate")
    else:  # no floor logged: the values only
        for (meth, rep), g in wide.groupby(["method", "replicate"], sort=True):
            style = line_styles(2)[methods.index(meth)]
            ax.plot(g["level"], g["ce_kl"], label=_label(meth) if rep == wide["replicate"].min() else None, **style)
        ax.set_xlabel("perturbation level")
        ax.set_ylabel("CE$_{KL}$ (no floor logged)")
        ax.legend(fontsize=FONT["legend"])
    fit_title(ax, _title(sel, _where(r)), fontsize=FONT["panel_title"])
    return fig, ax


def _draw_02(sel: Any) -> tuple[Any, Any]:
    r = sel.rows
    v = r[r["role"] == "value"].assign(setting=lambda d: d["dataset"].astype(str) + " / " + d["model"].astype(str))
    settings = list(dict.fromkeys(v["setting"]))
    present = list(dict.fromkeys(v["method"]))
    order = [m for m in ("uncalibrated", "temperature_scaling", "dirichlet") if m in present]
    methods = order + [m for m in present if m not in order]
    fig, ax = _figure(1, max(6.4, 2.2 * len(settings) + 2.5), 4.2)
    _bars(ax, v, "setting", "method", settings, methods, values=True)
    floor = r[r["role"] == "floor"]
    ctrl = controls(r)
    for i, s in enumerate(settings):
        d, m = s.split(" / ", 1)
        f = floor[(floor["dataset"].astype(str) == d) & (floor["model"].astype(str) == m)]
        if len(f):
            ax.hlines(f.groupby("replicate")["value"].mean().mean(), i - 0.45, i + 0.45, colors="black",
                      linestyles="--", linewidth=1.2, label="ECE floor (q95, calibrated model)" if i == 0 else None)
        if (d, m) in ctrl:
            ax.axvspan(i - 0.48, i + 0.48, color="#dddddd", zorder=0)
    labels = [s.replace(" / ", "\n") + (f"\nCONTROL (T = {ctrl[tuple(s.split(' / ', 1))]:.2f})"
                                        if tuple(s.split(" / ", 1)) in ctrl else "") for s in settings]
    ax.set_xticks(np.arange(len(settings)), labels, fontsize=FONT["tick"])
    ax.set_ylabel("ECE ↓ (test images)")
    ax.legend(fontsize=FONT["legend"], frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    marks = ("no fitted temperature logged" if not (r["role"] == "temperature").any()
             else f"{len(ctrl)} control{'s' if len(ctrl) > 1 else ''} shaded" if ctrl else "no control setting")
    n = len(settings)
    fit_title(ax, _title(sel, f"{n} setting{'s' if n > 1 else ''}; {marks}"), fontsize=FONT["panel_title"])
    return fig, ax


def _draw_03(sel: Any) -> tuple[Any, Any]:
    v = sel.rows[sel.rows["role"] == "value"]
    ues, explainers = list(dict.fromkeys(v["model"])), list(dict.fromkeys(v["method"]))
    fig, ax = _figure(1, 7.2, 4.2)
    _bars(ax, v, "model", "method", ues, explainers, colors=dict(zip(explainers, _BAR_COLORS[1:])))
    ax.set_xticks(np.arange(len(ues)), [_label(u) for u in ues], fontsize=FONT["tick"])
    ax.set_xlabel("uncertainty-estimation method")
    ax.set_ylabel("mean CV over features ↓")
    ax.legend(title="explainer", fontsize=FONT["legend"], title_fontsize=FONT["legend"], frameon=False,
              loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fit_title(ax, _title(sel, _where(v, ("dataset",))), fontsize=FONT["panel_title"])
    return fig, ax


_FITTED = {"sens_avg": "agg_robust", "infidelity": "agg_faith"}


def _draw_04(sel: Any) -> tuple[Any, Any]:
    r = sel.rows
    fig, axes = _figure(2, 5.4, 4.2)
    for ax, metric in zip(axes, ("sens_avg", "infidelity")):
        rows = r[r["metric"] == metric]
        rows = rows.assign(bar=np.where(rows["role"] == "best_single", "best single:\n" + rows["method"].map(_label),
                                        rows["method"].map(_label)))
        bars = list(dict.fromkeys(rows.loc[rows["role"] == "best_single", "bar"]))
        bars += [_label(a) for a in AGG_STRATEGIES if a in set(rows["method"])]
        fitted = _label(_FITTED[metric])
        colors = {b: "#bbbbbb" if b.startswith("best single") else "#2a9d8f" if b == fitted else "#8d99ae"
                  for b in bars}
        hatches = {b: "//" if b.startswith("best single") else "" for b in bars}
        _bars(ax, rows.assign(one="x"), "bar", "one", bars, ["x"], colors=colors, hatches=hatches, values=True)
        ax.set_xticks(np.arange(len(bars)), bars, fontsize=FONT["tick"], rotation=30, ha="right",
                      rotation_mode="anchor")
        ax.set_ylabel(f"{_label(metric)} ↓ (held-out)")
        ax.set_title(f"{_label(metric)}: {fitted} (green) is fitted to it",
                     fontsize=FONT["panel_title"])
    fig.suptitle(_title(sel, _where(r)), fontsize=FONT["panel_title"])
    return fig, axes


def _draw_05(sel: Any) -> tuple[Any, Any]:
    v = sel.rows[sel.rows["role"] == "value"]
    methods = ["pretrained", "ce_only", "idexpo"]
    fig, axes = _figure(2, 4.8, 4.2)
    for ax, metric in zip(axes, ("ins", "del")):
        rows = v[v["metric"] == metric].assign(bar=lambda d: d["method"].map(_label), one="x")
        bars = [_label(m) for m in methods]
        _bars(ax, rows, "bar", "one", bars, ["x"], colors=dict(zip(bars, ("#bbbbbb", "#8d99ae", "#2a9d8f"))),
              hatches=dict(zip(bars, ("//", "..", ""))), values=True)
        ax.set_xticks(np.arange(3), bars, fontsize=FONT["tick"])
        arrow = "↑" if metric == "ins" else "↓"
        ax.set_ylabel(f"test {_label(metric)} {arrow}")
        ax.set_title(f"{_label(metric)} ({'higher' if metric == 'ins' else 'lower'} is better)",
                     fontsize=FONT["panel_title"])
    fig.suptitle(_title(sel, _where(v)), fontsize=FONT["panel_title"])
    return fig, axes


_DRAW = {"01_ce_kl": _draw_01, "02_ece": _draw_02, "03_cv": _draw_03, "04_aggregation": _draw_04,
         "05_ins_del": _draw_05}


def plot_key_figure(selection: Any) -> tuple[Any, Any]:
    """Draw one key figure from its rows (:func:`xcal_core.report.select_key_rows`).

    Bars and lines are means over the replicates (run, seed) of the selection; with several, every
    replicate is drawn too (a dot per seed on its bar, a thin line per seed), never an interval computed
    from a few seeds.

    Returns:
        ``(fig, ax or axes)``.
    """
    if selection.missing or selection.rows.empty:
        raise ValueError(f"key figure {selection.spec.name!r} has no rows: {selection.missing or 'empty'}")
    return _DRAW[selection.spec.name](selection)


