"""README's snippets run as written."""

import re
from pathlib import Path

import pytest
import torch

from xcal_core.data import Dataset

ROOT = Path(__file__).resolve().parents[1]


def _snippet(marker: str) -> str:
    text = (ROOT / "README.md").read_text()
    m = re.search(rf"<!-- {marker} -->\s*```python\n(.*?)```\s*<!-- /{marker} -->", text, re.S)
    assert m, f"README.md has no ```python block between <!-- {marker} --> markers"
    return m.group(1)


def test_own_model_snippet_runs_as_written(capsys):
    ns: dict = {}
    exec(compile(_snippet("own-model-snippet"), "README.md:own-model-snippet", "exec"), ns)
    out = capsys.readouterr().out
    assert re.search(r"T = \d+\.\d\d; test ECE 0\.\d{3} -> 0\.\d{3}", out)
    assert ns["attributions"].shape == (4, 1, 28, 28) and torch.isfinite(ns["attributions"]).all()
    assert ns["recalx"].temperatures_.shape == (10,)
    assert ns["ds"].info.name == "my_data" and ns["ds"].info.n_classes == 10


# ------------------------------------------------------------------------------------------
# Dataset.from_tensors: the validated constructor behind the snippet
# ------------------------------------------------------------------------------------------
def _img(n, c=1, s=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, s, s, generator=g), torch.arange(n) % 3


def test_from_tensors_images_tabular_and_masks():
    tr, ca, te = _img(12), _img(6, seed=1), _img(6, seed=2)
    masks = torch.zeros(12, 8, 8, dtype=torch.bool)
    ds = Dataset.from_tensors("mine", train=(*tr, masks), cal=ca, test=te, class_names=["a", "b", "c"])
    assert ds.info.kind == "image" and ds.info.input_shape == (1, 8, 8) and ds.info.class_names == ("a", "b", "c")
    assert ds.train.masks is masks or torch.equal(ds.train.masks, masks)
    assert ds.info.normalization[0][0] == pytest.approx(float(tr[0].mean()), rel=1e-5)
    assert Dataset.from_tensors("m", train=tr, cal=ca, test=te).info.class_names == ("0", "1", "2")
    import numpy as np

    g = np.random.default_rng(0)
    tab = Dataset.from_tensors("t", train=(g.normal(size=(10, 4)), np.arange(10) % 2), cal=(g.normal(size=(4, 4)), np.array([0, 1, 0, 1])), test=(g.normal(size=(4, 4)), np.array([1, 1, 0, 0])),
                               kind="tabular", feature_names=["a", "b", "c", "d"])
    assert tab.info.kind == "tabular" and tab.train.x.dtype == torch.float32 and tab.train.y.dtype == torch.int64
    reg = Dataset.from_tensors("r", train=(torch.randn(10, 3), torch.randn(10)), cal=(torch.randn(3, 3), torch.randn(3)),
                               test=(torch.randn(3, 3), torch.randn(3)), kind="tabular", task="regression")
    assert reg.info.task == "regression" and reg.info.n_classes == 1 and reg.train.y.dtype == torch.float32


@pytest.mark.parametrize("kwargs, err, match", [
    (dict(train=_img(0)), ValueError, "`train` is empty"),
    (dict(cal=(torch.rand(6, 1, 8, 8) * 2, torch.arange(6) % 3)), ValueError, r"`cal`: images must lie in \[0, 1\]"),
    (dict(test=(torch.full((6, 1, 8, 8), float("nan")), torch.arange(6) % 3)), ValueError, "`test`: x contains 384 NaN"),
    (dict(test=(torch.rand(6, 1, 8, 8), torch.arange(5))), ValueError, "`test`: y must be"),
    (dict(train=(torch.rand(12, 1, 9, 9), torch.arange(12) % 3)), ValueError, "must share one shape"),
    (dict(train=(torch.randint(0, 255, (12, 1, 8, 8), dtype=torch.uint8), torch.arange(12) % 3)), TypeError, "divide by 255"),
    (dict(train=(torch.rand(12, 8, 8), torch.arange(12) % 3)), ValueError, r"`train`: images must be \(N, C, H, W\)"),
    (dict(cal=(torch.rand(6, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1, 7]))), ValueError, "`cal`: label 7 is outside the 3 classes"),
    (dict(cal=(torch.rand(6, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1, -1]))), ValueError, "`cal`: labels must be >= 0"),
    (dict(cal=(torch.rand(6, 1, 8, 8), torch.rand(6))), TypeError, "`cal`: classification labels must be integers"),
    (dict(train=torch.rand(3)), TypeError, r"`train` must be a tuple \(x, y\)"),
    (dict(train=(*_img(12), torch.zeros(12, 8, 8))), TypeError, "`train`: masks must be a bool"),
    (dict(kind="text"), ValueError, "unknown `kind`"),
    (dict(name=""), ValueError, "`name` must be a non-empty string"),
])
def test_from_tensors_errors_name_the_argument(kwargs, err, match):
    args = dict(name="mine", train=_img(12), cal=_img(6, seed=1), test=_img(6, seed=2), class_names=["a", "b", "c"])
    args.update(kwargs)
    name = args.pop("name")
    with pytest.raises(err, match=match):
        Dataset.from_tensors(name, **args)


def test_readme_states_where_results_go_and_the_runner_guarantees():
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text[text.index("## Where results go"):]
    section = section[:section.index("\n## ", 5)]
    for promise in ("never lost by a later failed run", "interrupted batch resumes", "concurrent"):
        assert promise in section, f"README's 'Where results go' does not say: {promise}"


def prose_words(markdown: str) -> int:
    """Words a reader reads as prose: without code blocks, tables and generated sections."""
    s = re.sub(r"```.*?```", "", markdown, flags=re.S)
    s = re.sub(r"<!-- begin generated.*?<!-- end generated: [\w-]+ -->", "", s, flags=re.S)
    return len(" ".join(l for l in s.splitlines() if not l.lstrip().startswith("|")).split())


def test_prose_words_skips_code_tables_and_generated_sections():
    md = ("one two\n```python\nx = 1 2 3\n```\n| a | b |\n|---|---|\n"
          "<!-- begin generated: t -->\nmany many words\n<!-- end generated: t -->\nthree")
    assert prose_words(md) == 3


def test_readme_is_for_newcomers_first_and_short():
    text = (ROOT / "README.md").read_text()
    heads = [h for h in re.findall(r"^## (.+)$", text, re.M)]
    first = ["Read the results without installing anything", "Two commands", "Prerequisites"]
    assert heads[:3] == first, f"README must open with {first}, has {heads[:3]}"
    for later in ("Glossary", "The papers"):
        assert later in heads, f"README has no '## {later}' section"
    n = prose_words(text)
    assert n <= 1000, f"README has {n} words of prose; keep it under about 1000 (move detail to docs/)"
