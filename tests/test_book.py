"""`make book`: the committed reference run renders into a static site with every figure and no traceback."""

import json
import re
from html import escape as html_escape
from pathlib import Path

import pytest

from xcal_core.book import build_book, notebook_outputs_report, page_problems

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "papermill_runs" / "reference"


@pytest.mark.slow
def test_book_from_the_reference_run(tmp_path):
    pages = build_book(REFERENCE, tmp_path / "site")
    manifests = sorted(REFERENCE.glob("*/manifest.json"))
    assert [p.notebook for p in pages] == [json.loads(m.read_text())["notebook"] for m in manifests]
    index = (tmp_path / "site" / "index.html").read_text()
    for p in pages:
        html = p.path.read_text()
        assert p.n_images >= p.n_figures >= 1, f"{p.notebook}: {p.n_images} images for {p.n_figures} figures"
        assert html.count("data:image/png;base64") >= p.n_figures  # figures embedded, the page stands alone
        assert not page_problems(html), p.notebook
        assert f"href='{p.notebook}.html'" in index
    assert "data:image/png;base64" in index and "Scoreboard" in index
    # each row says what the notebook teaches first: its first learning objective, as README's table
    from xcal_core.docs import reading_order

    for nb_id, line in reading_order(ROOT / "notebooks").items():
        assert html_escape(line) in index, f"{nb_id}: index lacks {line!r}"
    assert "You will learn to: 1." not in index


def test_book_refuses_pages_with_tracebacks(tmp_path):
    nb = {"cells": [{"cell_type": "code", "outputs": [
        {"output_type": "error", "ename": "ValueError", "evalue": "boom", "traceback": []},
        {"output_type": "stream", "name": "stderr", "text": "x.py:3: UserWarning: loud\n  warnings.warn(\n"}]}]}
    errors, warnings = notebook_outputs_report(nb)
    assert errors == ["cell 0: ValueError: boom"] and warnings == ["cell 0: UserWarning: loud"]
    assert page_problems("<pre>Traceback (most recent call last):\n</pre>") == ["a Python traceback"]
    run = tmp_path / "runs" / "00_x__abc"
    run.mkdir(parents=True)
    (run / "manifest.json").write_text(json.dumps({"notebook": "00_x", "status": "completed", "figures": []}))
    (run / "executed.ipynb").write_text(json.dumps({**nb, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    with pytest.raises(ValueError, match="00_x: its page would show cell 0: ValueError: boom"):
        build_book(tmp_path / "runs", tmp_path / "site")
    assert not (tmp_path / "site").exists()  # a failed build leaves no half-written site
    with pytest.raises(FileNotFoundError, match="no completed run"):
        build_book(tmp_path / "nothing", tmp_path / "site")
