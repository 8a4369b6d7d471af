"""Numbers in README come from the run folders: ``python -m xcal_core.docs [--check]``.

README.md holds generated sections between markers::

    <!-- begin generated: reference-table -->
    ...
    <!-- end generated: reference-table -->

:func:`generated_sections` computes each from the committed runs (the reference run's manifests and
claims, the seeds summary, the make-run record); :func:`update_readme` rewrites them in place and
``--check`` fails when README disagrees with the runs (a test runs it), so no number is typed by hand.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Callable

import pandas as pd

from .params import repo_root
from .report import scoreboard
from .runs import VERDICTS, load_runs, read_manifest

__all__ = ["generated_sections", "update_readme", "reading_order", "MAKE_RUN_RECORD"]

MAKE_RUN_RECORD = "make_run.json"
"""File in the reference folder where ``python -m xcal_core.run --reference`` records the whole batch:
commit, wall minutes, whether the model cache started cold, the machine."""

_MARK = re.compile(r"(<!-- begin generated: (?P<name>[a-z0-9-]+) -->\n)(?P<body>.*?)(<!-- end generated: (?P=name) -->)", re.S)


def _notebook_rows(reference: Path) -> pd.DataFrame:
    man = load_runs(reference, table="manifest")
    if man.empty:
        raise FileNotFoundError(f"no completed run under {reference}")
    claims = load_runs(reference, table="claims")
    board = scoreboard(claims) if not claims.empty else pd.DataFrame(columns=["notebook", "verdict"])
    rows = []
    for r in man.sort_values("notebook").itertuples():
        b = board[board["notebook"] == r.notebook]
        counts = {v: int((b["verdict"] == v).sum()) for v in VERDICTS}
        rows.append({"notebook": r.notebook, "minutes": float(r.minutes) if pd.notna(r.minutes) else float("nan"),
                     **counts, "claims": len(b)})
    return pd.DataFrame(rows)


def reading_order(notebook_dir: Path) -> dict[str, str]:
    """``{notebook id: one line on what it teaches}``: the first learning objective of each notebook,
    else the first sentence of its story."""
    return {p.stem: first_objective(json.loads(p.read_text()))
            for p in sorted(Path(notebook_dir).glob("[0-9][0-9]_*.ipynb"))}


def first_objective(nb: dict) -> str:
    """One line on what a notebook (its JSON) teaches: its first learning objective, else the first
    sentence of its opening cell after the title."""
    cells = nb.get("cells") or []
    text = "".join(cells[0]["source"]) if cells else ""
    m = re.search(r"\n1\. (.+?)(?:\n\d\. |\n\n|$)", text, re.S)
    if m:
        line = " ".join(m.group(1).split())
    else:
        body = " ".join(l.strip() for l in text.splitlines()[1:] if l.strip())
        line = re.split(r"(?<=[.!?])\s", body, maxsplit=1)[0] if body else ""
    return line.rstrip(";.,").replace("|", "/")


def _reference_table(root: Path) -> str:
    ref = root / "papermill_runs" / "reference"
    rows = _notebook_rows(ref)
    teach = reading_order(root / "notebooks")
    lines = ["| notebook | what you learn first | minutes | holds | fails | inconclusive |", "|---|---|---|---|---|---|"]
    for r in rows.itertuples():
        lines.append(f"| `{r.notebook}` | {teach.get(r.notebook, '')} | {r.minutes:.1f} | {r.holds} | {r.fails} | "
                     f"{r.inconclusive} |")
    tot = rows[list(VERDICTS)].sum()
    lines.append(f"| **all** | | {rows['minutes'].sum():.1f} | {int(tot['holds'])} | {int(tot['fails'])} | "
                 f"{int(tot['inconclusive'])} |")
    return "\n".join(lines) + "\n"


def _make_run_line(root: Path) -> str:
    """The `make run` that last refreshed the reference run, then the measured times: the latest batch
    from an empty model cache (cold) and from cached models (warm), each with its commit and minutes,
    and how long installing the environment took."""
    rec_path = root / "papermill_runs" / "reference" / MAKE_RUN_RECORD
    if not rec_path.exists():
        return "(no record of the `make run` that produced the reference run)\n"
    rec = json.loads(rec_path.read_text())
    records = rec.get("records")
    if not isinstance(records, dict):  # a record from before make_run.json kept cold and warm batches
        records = {"cold" if rec.get("cold_cache") else "warm": rec}

    def cache(r: dict) -> str:
        shipped = " and the shipped workshop checkpoints" if r.get("shipped_checkpoints") else ""
        return ("an empty model cache" if r.get("cold_cache") else "a warm model cache (models already trained)") + shipped

    def sha(r: dict) -> str:
        return str(r.get("git_sha") or "?")[:7]

    text = (f"Produced by `make run` at commit `{sha(rec)}` on {rec.get('machine', 'this machine')} "
            f"({rec.get('n_runs', '?')} runs, {rec.get('n_failed', 0)} failed")
    if rec.get("n_skipped"):
        text += f"; {rec['n_skipped']} reused from an earlier `make run` with the same parameters"
    text += ")."
    for kind in ("cold", "warm"):
        r = records.get(kind)
        if isinstance(r, dict):
            text += (f" From {cache(r)}, notebooks 00-06 took {r.get('minutes', float('nan')):.1f} minutes "
                     f"(commit `{sha(r)}`, {r.get('n_failed', 0)} failed).")
    install = next((r.get("install_minutes") for r in (rec, records.get("cold"), records.get("warm"))
                    if isinstance(r, dict) and r.get("install_minutes") is not None), None)
    if install is not None:
        text += f" Installing the environment (`make venv`, part of the first `make run`) took {install:.1f} minutes."
    return text + "\n"


def _seeds_table(root: Path) -> str:
    f = root / "papermill_runs" / "seeds_summary" / "scoreboard.csv"
    if not f.exists():
        return "(no seeds summary yet: run the seeds sweep)\n"
    b = pd.read_csv(f, keep_default_na=False)
    if "verdict" not in b.columns:
        return "(the seeds summary predates the three verdicts: rerun the seeds sweep)\n"
    lines = ["| notebook | claims | holds in every seed | fails in every seed | inconclusive in every seed | "
             "changes between seeds |", "|---|---|---|---|---|---|"]
    for nb, g in b.groupby("notebook", sort=True):
        c = g["verdict"].value_counts()
        lines.append(f"| `{nb}` | {len(g)} | {int(c.get('holds', 0))} | {int(c.get('fails', 0))} | "
                     f"{int(c.get('inconclusive', 0))} | {int(c.get('mixed', 0))} |")
    seeds = int(pd.to_numeric(b.get("seeds"), errors="coerce").max()) if "seeds" in b.columns and len(b) else 0
    stale = _stale_seeds_note(root, b)
    return stale + f"Over {seeds} seeds:\n\n" + "\n".join(lines) + "\n"


def _seeds_changing(root: Path) -> str:
    """Every claim whose verdict changes between seeds, with its count of each verdict and the reference
    run's verdict: a claim that flips is shown as flipping, never as one seed's verdict."""
    f = root / "papermill_runs" / "seeds_summary" / "scoreboard.csv"
    if not f.exists():
        return "(no seeds summary yet)\n"
    b = pd.read_csv(f, keep_default_na=False)
    if not {"verdict", *VERDICTS} <= set(b.columns):
        return "(the seeds summary predates the three verdicts: rerun the seeds sweep)\n"
    mixed = b[b["verdict"] == "mixed"].sort_values(["notebook", "claim_id"])
    if mixed.empty:
        return "No claim changes its verdict between seeds.\n"
    ref = root / "papermill_runs" / "reference"
    claims = load_runs(ref, table="claims") if ref.exists() else pd.DataFrame()
    at_ref = ({(r.notebook, r.claim_id): r.verdict for r in claims.itertuples()}
              if {"notebook", "claim_id", "verdict"} <= set(claims.columns) else {})
    lines = ["| notebook | claim | holds | fails | inconclusive | reference run |", "|---|---|---|---|---|---|"]
    for r in mixed.itertuples():
        lines.append(f"| `{r.notebook[:2]}` | {r.claim_id} | {int(r.holds)} | {int(r.fails)} | "
                     f"{int(r.inconclusive)} | {at_ref.get((r.notebook, r.claim_id), '-')} |")
    return "\n".join(lines) + "\n"


def _stale_seeds_note(root: Path, board: pd.DataFrame) -> str:
    """A warning when the seeds summary and the reference run test different claims: the summary then
    comes from older notebooks, and its table must not be read as the current notebooks' seeds."""
    ref = root / "papermill_runs" / "reference"
    claims = load_runs(ref, table="claims") if ref.exists() else pd.DataFrame()
    if claims.empty or "claim_id" not in claims.columns:
        return ""
    want = set(zip(claims["notebook"], claims["claim_id"]))
    want = {k for k in want if k[0] in set(board["notebook"])} or want
    have = set(zip(board["notebook"], board["claim_id"])) if "claim_id" in board.columns else set()
    missing = want - have
    if not missing:
        return ""
    return (f"**Out of date:** this seeds summary comes from older notebooks: {len(missing)} of the reference "
            f"run's {len(want)} claims of notebooks 01-05 are not in it. Rerun `make seeds` before reading it.\n\n")


_GENERATORS: dict[str, Callable[[Path], str]] = {
    "reference-table": _reference_table,
    "make-run": _make_run_line,
    "seeds-table": _seeds_table,
    "seeds-changing": _seeds_changing,
}


def generated_sections(root: Path | None = None) -> dict[str, str]:
    """The text of every generated README section, computed from the run folders."""
    root = Path(root) if root is not None else repo_root()
    return {name: fn(root) for name, fn in _GENERATORS.items()}


def update_readme(path: Path | None = None, root: Path | None = None, check: bool = False) -> list[str]:
    """Rewrite README's generated sections (or, with ``check``, only report the stale ones).

    Returns:
        Names of the sections whose text changed (or would change).

    Raises:
        ValueError: README names a section no generator knows.
    """
    root = Path(root) if root is not None else repo_root()
    path = Path(path) if path is not None else root / "README.md"
    text = path.read_text()
    sections = generated_sections(root)
    changed: list[str] = []

    def sub(m: re.Match) -> str:
        name = m.group("name")
        if name not in sections:
            raise ValueError(f"README section {name!r} has no generator; known: {list(sections)}")
        if m.group("body") != sections[name]:
            changed.append(name)
        return m.group(1) + sections[name] + m.group(4)

    new = _MARK.sub(sub, text)
    if not check and new != text:
        path.write_text(new)
    return changed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m xcal_core.docs", description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="only check; exit 1 when README is stale")
    a = ap.parse_args(argv)
    changed = update_readme(check=a.check)
    if a.check and changed:
        print(f"README.md is stale in: {changed}; run `python -m xcal_core.docs`", file=sys.stderr)
        return 1
    print(("updated: " + ", ".join(changed)) if changed else "README.md is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
