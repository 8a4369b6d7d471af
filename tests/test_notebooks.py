"""Every notebook in notebooks/: the contract holds, and it executes end to end with PROFILE="smoke"."""

import ast
import json
import re
from pathlib import Path

import nbformat
import pytest

from xcal_core.params import load_schema
from xcal_core.batch import RunSpec, execute_run
from xcal_core.runs import load_runs

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
COMMON = ["PROFILE", "SEED", "DEVICE", "DATA_DIR", "RUN_DIR", "ALLOW_DOWNLOAD"]


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ holds no numbered notebook"


def _parameters_cell(nb):
    tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, "exactly one cell must be tagged `parameters`"
    return tagged[0]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_contract(path):
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.lstrip().startswith("#")
    assert nb.cells[2] is _parameters_cell(nb), "cell 3 must be the parameters cell"
    assert f'start_run("{path.stem}", globals())' in nb.cells[3].source
    for c in nb.cells:
        if c.cell_type == "code":
            assert not c.get("outputs") and c.get("execution_count") is None, "commit notebooks without outputs"
            assert "!pip" not in c.source and "%pip" not in c.source
            tree = ast.parse(c.source)
            assert not any(isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)) for n in ast.walk(tree)), \
                "no def/class in notebooks: put helpers in xcal_core"
            # notebooks are tutorials: short cells, readable lines (a long loop belongs in xcal_core)
            lines = c.source.splitlines()
            assert len(lines) <= 25, f"a code cell of {len(lines)} lines (max 25): split it or move it into xcal_core"
            long = [line for line in lines if len(line) > 100]
            assert not long, f"code lines over 100 characters: {long}"
    assert "run.finish()" in nb.cells[-1].source or any("run.finish()" in c.source for c in nb.cells[-3:])
    # the parameters cell lists exactly the schema, with the schema defaults and a help comment each
    schema = load_schema(path.stem)
    src = _parameters_cell(nb).source
    tree = ast.parse(src)
    names, values = [], {}
    for node in tree.body:
        assert isinstance(node, ast.AnnAssign), f"parameters must be annotated assignments: {ast.unparse(node)}"
        names.append(node.target.id)
        values[node.target.id] = ast.literal_eval(node.value)
    assert names[:6] == COMMON
    assert names == schema.cell_names, f"parameters cell {names} != schema {schema.cell_names} (advanced ones excluded)"
    assert len(names) <= 22, f"{len(names)} parameters in the cell: move paper-only knobs to advanced=True"
    for name in names:
        assert values[name] == schema.by_name[name].default, f"{name}: cell has {values[name]!r}, schema default {schema.by_name[name].default!r}"
    for line in src.strip().splitlines():
        assert "#" in line and line.split("#", 1)[1].strip(), f"parameter line without a help comment: {line!r}"


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_smoke_execution(path, tmp_path):
    run_dir = tmp_path / path.stem
    spec = RunSpec(path, path.stem, {"PROFILE": "smoke", "DEVICE": "cpu"}, run_dir, "smoke")
    res = execute_run(spec, resume=False, timeout=600)
    assert res.status == "completed", f"{path.name} failed: {res.error}"
    m = json.loads((run_dir / "manifest.json").read_text())
    assert m["status"] == "completed" and m["profile"] == "smoke"
    for f in ("executed.ipynb", "params.yaml", "metrics.csv", "claims.csv"):
        assert (run_dir / f).exists(), f"{f} missing"
    assert list((run_dir / "figures").glob("*.png")), "no figure written"
    metrics = load_runs(run_dir)
    claims = load_runs(run_dir, table="claims")
    assert len(metrics) > 0 and len(claims) > 0


@pytest.mark.notebook
@pytest.mark.slow
def test_same_seed_same_metrics(tmp_path, monkeypatch):
    """Two CPU runs of the quickstart with the same profile and seed write identical metrics.csv
    (the second one trains from scratch too: each run gets its own empty model cache)."""
    path = ROOT / "notebooks" / "00_quickstart.ipynb"
    outs = []
    for i in range(2):
        monkeypatch.setenv("XCAL_CACHE_DIR", str(tmp_path / f"cache{i}"))
        spec = RunSpec(path, path.stem, {"PROFILE": "smoke", "DEVICE": "cpu"}, tmp_path / f"run{i}", "smoke")
        res = execute_run(spec, resume=False, timeout=600)
        assert res.status == "completed", res.error
        outs.append((tmp_path / f"run{i}" / "metrics.csv").read_text())
        m = json.loads((tmp_path / f"run{i}" / "manifest.json").read_text())
        for key in ("git_sha", "git_dirty", "seed", "device", "params_hash", "env"):
            assert key in m, f"manifest lacks {key}"
    assert outs[0] == outs[1]


def test_notebooks_cite_only_files_inside_the_project():
    """A notebook cites the papers and this repository's files, never a file a reader does not have
    (e.g. the implementation specs outside the repository)."""
    root = Path(__file__).resolve().parents[1]
    run_outputs = {"metrics.csv", "claims.csv", "params.yaml", "manifest.json", "executed.ipynb"}
    for path in sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        text = "\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"])
        assert not re.search(r"\.\./|shared/|specs/", text), f"{path.name} points outside the repository"
        for ref in re.findall(r"[A-Za-z0-9_./-]+\.(?:md|py|yaml|csv|ipynb)\b", text):
            if ref in run_outputs or ref.startswith(("papermill_runs/", "/")) or "/" not in ref and not ref.endswith(".md"):
                continue
            assert (root / ref).exists(), f"{path.name} cites {ref!r}, which is not in the repository"
