"""WORKSHOP.md: every exercise is a parameter change that start_run accepts, and each notebook opens with
the learning objectives the guide teaches from."""

import json
import re
import shlex
from pathlib import Path

import pytest

from xcal_core.batch import yaml_load
from xcal_core.params import load_schema, resolve_params

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "WORKSHOP.md"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("0[0-5]_*.ipynb"))


def _exercises():
    """(exercise id, notebook id, {NAME: value}) for every `xcal_core.run` command in WORKSHOP.md."""
    text = GUIDE.read_text()
    out, current = [], None
    for line in text.splitlines():
        m = re.match(r"#+\s*Exercise\s+(\d\d)\.(\d+)", line)
        if m:
            current = f"{m.group(1)}.{m.group(2)}"
        elif line.startswith("#"):  # any other heading ends the exercise
            current = None
        if "xcal_core.run" in line and current:
            argv = shlex.split(line.strip().strip("`"))
            nb = argv[argv.index("--notebooks") + 1]
            params = {argv[i + 1]: yaml_load(argv[i + 2]) for i, a in enumerate(argv) if a == "-p"}
            out.append((current, nb, params))
    return out


def _command_lines():
    """(exercise id, command line) for every `xcal_core.run` line under an exercise heading."""
    out, current = [], None
    for line in GUIDE.read_text().splitlines():
        m = re.match(r"#+\s*Exercise\s+(\d\d)\.(\d+)", line)
        current = f"{m.group(1)}.{m.group(2)}" if m else (None if line.startswith("#") else current)
        if "xcal_core.run" in line and current:
            out.append((current, line.strip()))
    return out


def test_exercise_commands_have_the_documented_form():
    """`python -m xcal_core.run --notebooks NN -p NAME VALUE [-p NAME2 VALUE2]`, one per line, in backticks."""
    lines = _command_lines()
    assert lines, "WORKSHOP.md has no exercise commands"
    for ex_id, line in lines:
        assert line.startswith("`") and line.endswith("`"), f"exercise {ex_id}: command not in backticks: {line!r}"
        argv = shlex.split(line.strip("`"))
        assert argv[:4] == ["python", "-m", "xcal_core.run", "--notebooks"], f"exercise {ex_id}: {line!r}"
        assert re.fullmatch(r"\d\d", argv[4]) and argv[4] == ex_id[:2], (
            f"exercise {ex_id}: runs notebook {argv[4]!r}, not {ex_id[:2]}")
        rest = argv[5:]
        assert 3 <= len(rest) <= 6 and len(rest) % 3 == 0 and all(a == "-p" for a in rest[::3]), (
            f"exercise {ex_id}: expected one or two `-p NAME VALUE` after the notebook id: {line!r}")


def test_guide_exists_with_a_plan_paths_and_answers():
    text = GUIDE.read_text()
    for heading in ("3-hour plan", "Expected answers"):
        assert heading.lower() in text.lower(), f"WORKSHOP.md lacks a section on {heading!r}"
    for nb in NOTEBOOKS:
        assert nb.stem in text, f"WORKSHOP.md does not cover {nb.stem}"


def test_two_or_three_exercises_per_notebook_with_answers():
    ex = _exercises()
    text = GUIDE.read_text()
    answers = text[text.lower().index("expected answers"):]
    for nb in NOTEBOOKS:
        ids = sorted({e for e, n, _ in ex if n == nb.stem[:2]})
        assert 2 <= len(ids) <= 3, f"{nb.stem}: {len(ids)} exercises in WORKSHOP.md (want 2-3)"
        for e in ids:
            assert re.search(rf"\*\*{re.escape(e)}\*\*", answers), f"exercise {e} has no expected answer"


@pytest.mark.parametrize("exercise", _exercises() if GUIDE.exists() else [], ids=lambda e: e[0] if isinstance(e, tuple) else str(e))
def test_each_exercise_is_a_valid_parameter_change(exercise):
    ex_id, nb, params = exercise
    stem = next(p.stem for p in NOTEBOOKS if p.stem.startswith(nb + "_"))
    schema = load_schema(stem)
    assert params, f"exercise {ex_id}: no -p NAME VALUE"
    resolved, overrides = resolve_params(schema, {"PROFILE": "workshop", **params}, explicit=list(params))
    assert set(params) <= set(overrides), f"exercise {ex_id}: {params} does not change anything"
    # an explicit name always counts as an override: compare the values with the workshop profile's
    workshop, _ = resolve_params(schema, {"PROFILE": "workshop"}, explicit=["PROFILE"])
    same = {k: v for k, v in params.items() if resolved[k] == workshop[k]}
    assert not same, f"exercise {ex_id}: the workshop profile already runs {same}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebooks_open_with_learning_objectives(path):
    first = "".join(json.loads(path.read_text())["cells"][0]["source"])
    assert re.search(r"you will learn", first, re.I), f"{path.stem}: no learning objectives in its first cell"
    assert re.search(r"\n1\. ", first), f"{path.stem}: learning objectives are not a numbered list"


def _headings(path: Path) -> list[str]:
    cells = json.loads(path.read_text())["cells"]
    return [line.lstrip("#").strip() for c in cells if c["cell_type"] == "markdown"
            for line in "".join(c["source"]).splitlines() if line.startswith("#")]


def test_named_sections_are_headings_of_their_notebook():
    """Every *N. Title* the guide names under a notebook is (the start of) one of that notebook's
    headings, so a renamed section shows up here instead of in front of a class."""
    text = GUIDE.read_text()
    text = text[: text.lower().index("expected answers")]
    parts = re.split(r"\n#+\s*(\d\d) · ", text)
    named = 0
    for nb_id, chunk in zip(parts[1::2], parts[2::2]):
        chunk = re.sub(r"\s*\n\s*", " ", chunk.split("\n### Exercise")[0])
        path = next(p for p in NOTEBOOKS if p.stem.startswith(nb_id + "_"))
        heads = _headings(path)
        for title in re.findall(r"(?<!\*)\*([^*]+?)\*(?!\*)", chunk):
            if re.match(r"(\d+\s*[.·] |What this)", title):
                named += 1
                assert any(h.startswith(title) for h in heads), f"{path.stem} has no section {title!r}"
    assert named >= 2 * len(NOTEBOOKS), f"only {named} sections named for {len(NOTEBOOKS)} notebooks"
