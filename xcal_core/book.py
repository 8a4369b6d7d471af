"""The reference run as a static web site: ``python -m xcal_core.book [--runs DIR] [--out site/]``.

One HTML page per executed notebook of the run folder (nbconvert's HTML exporter; figures are the
notebook's own image outputs, embedded), plus an index with the reading order, each notebook's
measured time and claim counts, and the scoreboard of claims (table and figure), all read from the
run folders' tidy files. ``make book`` builds it from ``papermill_runs/reference`` into ``site/``
(git-ignored). Nothing is executed: the site shows exactly what the reference run computed.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .docs import first_objective
from .params import repo_root
from .report import scoreboard, verdict_counts
from .runs import format_claim_counts, load_runs, read_manifest

__all__ = ["BookPage", "build_book", "page_problems", "notebook_outputs_report"]

_TRACEBACK = re.compile(r"Traceback \(most recent call last\)")


@dataclass(frozen=True)
class BookPage:
    """One rendered notebook: its file in the site, title, run folder and how many images it embeds."""

    notebook: str
    title: str
    path: Path
    run_dir: Path
    n_images: int
    n_figures: int
    minutes: float | None
    claims: str
    warnings: tuple[str, ...] = ()


def _title(nb: dict, fallback: str) -> str:
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "markdown":
            src = "".join(cell.get("source", ""))
            for line in src.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return fallback


def page_problems(html_text: str) -> list[str]:
    """What a reader should never see on a page: a Python traceback."""
    return ["a Python traceback"] if _TRACEBACK.search(html_text) else []


def notebook_outputs_report(nb: dict) -> tuple[list[str], list[str]]:
    """``(errors, warnings)`` among an executed notebook's outputs: error outputs and tracebacks, and
    the first line of every warning printed to stderr (warnings should be silenced at their source)."""
    errors, warnings = [], []
    for i, cell in enumerate(nb.get("cells", [])):
        for o in cell.get("outputs", []):
            if o.get("output_type") == "error":
                errors.append(f"cell {i}: {o.get('ename')}: {o.get('evalue')}")
            elif o.get("output_type") == "stream" and o.get("name") == "stderr":
                text = "".join(o.get("text", ""))
                if "Traceback (most recent call last)" in text:
                    errors.append(f"cell {i}: a traceback printed to stderr")
                for line in text.splitlines():
                    m = re.search(r"(\w*Warning): (.*)", line)
                    if m:
                        warnings.append(f"cell {i}: {m.group(1)}: {m.group(2)[:120]}")
    return errors, warnings


def _render(executed: Path, out: Path) -> int:
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(executed), as_version=4)
    exporter = HTMLExporter(template_name="lab")
    body, _ = exporter.from_notebook_node(nb)
    out.write_text(body)
    return body.count("<img ")


def _figure_png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", facecolor="white")
    return base64.b64encode(buf.getvalue()).decode()


def build_book(runs: str | Path | None = None, out: str | Path | None = None) -> list[BookPage]:
    """Render every completed run folder under ``runs`` into a static site in ``out``.

    Args:
        runs: folder of run folders (default ``papermill_runs/reference``).
        out: output folder (default ``site/``); replaced when the build succeeds.

    Returns:
        The pages, in notebook order.

    Raises:
        FileNotFoundError: ``runs`` holds no completed run with an executed notebook.
        ValueError: a page would show a traceback (naming the notebook).
    """
    import matplotlib

    matplotlib.use("Agg")
    root = repo_root()
    runs = Path(runs) if runs is not None else root / "papermill_runs" / "reference"
    out = Path(out) if out is not None else root / "site"
    run_dirs = sorted(p.parent for p in runs.rglob("manifest.json")
                      if (read_manifest(p.parent) or {}).get("status") == "completed"
                      and (p.parent / "executed.ipynb").exists())
    if not run_dirs:
        raise FileNotFoundError(f"`runs`: no completed run with an executed notebook under {runs}; run `make run` first")
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    pages: list[BookPage] = []
    rows = []
    for d in run_dirs:
        m = read_manifest(d) or {}
        nb_id = m.get("notebook") or d.name.split("__")[0]
        nb = json.loads((d / "executed.ipynb").read_text())
        page = tmp / f"{nb_id}.html"
        errors, warns = notebook_outputs_report(nb)
        if not errors:
            n_img = _render(d / "executed.ipynb", page)
            errors = page_problems(page.read_text())
        if errors:
            shutil.rmtree(tmp)
            raise ValueError(f"notebook {nb_id}: its page would show {'; '.join(errors)}; fix the run first")
        title = _title(nb, nb_id)
        claims = format_claim_counts(m)
        pages.append(BookPage(nb_id, title, Path(out) / page.name, d, n_img, len(m.get("figures", [])),
                              m.get("minutes"), claims, tuple(warns)))
        rows.append((nb_id, title, first_objective(nb), m.get("minutes")))
    # the index: reading order and the scoreboard, from the tidy files only
    board = scoreboard(load_runs(run_dirs, table="claims"))
    counts = verdict_counts(board)
    per_nb = {r.notebook: format_claim_counts({v: int(getattr(r, v)) for v in ("holds", "fails", "inconclusive")})
              for r in counts.itertuples()}
    from .viz.report import plot_scoreboard

    fig, _ = plot_scoreboard(board)
    png = _figure_png(fig)
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>xcal: the reference run</title>",
             "<style>body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;"
             "line-height:1.45}table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
             "padding:.3em .6em;vertical-align:top}th{background:#f3f3f3}img{max-width:100%}</style></head><body>",
             "<h1>xcal: calibration meets explanations — the reference run</h1>",
             "<p>Each page is a notebook as the reference run executed it (workshop profile, real "
             "Fashion-MNIST images, 2 CPU cores). Read them in this order:</p>",
             "<table><tr><th>#</th><th>notebook</th><th>what you learn first</th><th>minutes</th><th>claims</th></tr>"]
    for nb_id, title, line, minutes in rows:
        claims = per_nb.get(nb_id, "no claims")
        mins = f"{minutes:.1f}" if isinstance(minutes, (int, float)) else "–"
        parts.append(f"<tr><td>{html.escape(nb_id[:2])}</td><td><a href='{html.escape(nb_id)}.html'>"
                     f"{html.escape(title)}</a></td><td>{html.escape(line)}</td><td>{mins}</td>"
                     f"<td>{html.escape(claims)}</td></tr>")
    parts.append("</table><h2>Scoreboard</h2>")
    parts.append(f"<img alt='scoreboard' src='data:image/png;base64,{png}'>")
    parts.append(counts.to_html(index=False, border=0))
    cols = ["notebook", "claim_id", "verdict", "statement", "observed", "reason"]
    parts.append(board[cols].to_html(index=False, border=0, escape=True))
    parts.append("</body></html>")
    (tmp / "index.html").write_text("\n".join(parts))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return pages


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m xcal_core.book", description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", default=None, help="run folders to render (default: papermill_runs/reference)")
    ap.add_argument("--out", default=None, help="output folder (default: site/)")
    a = ap.parse_args(argv)
    try:
        pages = build_book(a.runs, a.out)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for p in pages:
        print(f"{p.notebook}: {p.n_images} images ({p.n_figures} saved figures) -> {p.path}"
              + (f"; {len(p.warnings)} warning(s) printed, e.g. {p.warnings[0]}" if p.warnings else ""))
    print(f"open {Path(pages[0].path).parent / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
