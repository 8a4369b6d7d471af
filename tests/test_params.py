import json

import pytest
import yaml

from xcal_core.params import NotebookSchema, Param, load_schema, params_hash, resolve_params, start_run


@pytest.fixture
def schema():
    return load_schema("00_quickstart")


def test_param_type_and_range_errors_name_the_parameter():
    p = Param("N_EPOCHS", int, 5, "epochs", low=1, high=10)
    assert p.validate(3) == 3
    assert p.validate(4.0) == 4
    with pytest.raises(TypeError, match=r"`N_EPOCHS` must be an int, got str"):
        p.validate("3")
    with pytest.raises(TypeError, match=r"`N_EPOCHS` must be an int"):
        p.validate(True)
    with pytest.raises(ValueError, match=r"`N_EPOCHS` = 0 is out of range; allowed: in \[1, 10\]"):
        p.validate(0)
    f = Param("LR", float, 0.1, "lr", low=0.0)
    assert f.validate(1) == 1.0 and isinstance(f.validate(1), float)
    with pytest.raises(ValueError, match="`LR` must not be NaN"):
        f.validate(float("nan"))
    c = Param("DATASET", str, "shapes", "data", choices=["shapes", "digits"])
    with pytest.raises(ValueError, match=r"`DATASET` = 'shape' is not allowed; allowed: \['shapes', 'digits'\].*did you mean 'shapes'"):
        c.validate("shape")
    lst = Param("LEVELS", list, [0.1], "levels", item_type=float, low=0, high=1)
    assert lst.validate((0, 0.5)) == [0.0, 0.5]
    with pytest.raises(ValueError, match=r"`LEVELS`\[1\] = 1.5 is out of range"):
        lst.validate([0.2, 1.5])
    with pytest.raises(TypeError, match="`LEVELS` must be a list"):
        lst.validate(0.3)
    b = Param("FLAG", bool, False, "flag")
    with pytest.raises(TypeError, match=r"`FLAG` must be a bool"):
        b.validate(1)


def test_bad_schema_definitions():
    with pytest.raises(ValueError, match="UPPER_SNAKE"):
        Param("nEpochs", int, 1, "x")
    with pytest.raises(ValueError, match="out of range"):
        Param("N", int, 0, "x", low=1)
    with pytest.raises(ValueError, match="common parameters"):
        NotebookSchema("99_x", "p", [Param("SEED", int, 0, "x")])
    with pytest.raises(ValueError, match="unknown profiles"):
        NotebookSchema("99_x", "p", [Param("N", int, 1, "x")], profiles={"fast": {}})
    with pytest.raises(ValueError, match="sets unknown parameter 'M'"):
        NotebookSchema("99_x", "p", [Param("N", int, 1, "x")], profiles={"smoke": {"M": 1}})
    with pytest.raises(ValueError, match="out of range"):
        NotebookSchema("99_x", "p", [Param("N", int, 1, "x", low=1)], profiles={"smoke": {"N": 0}})


def test_unknown_notebook_id_lists_known():
    with pytest.raises(ValueError, match=r"unknown `notebook_id` '99_nothing'.*00_quickstart"):
        load_schema("99_nothing")


def test_profile_presets_and_explicit_overrides(schema):
    smoke, over = resolve_params(schema, {"PROFILE": "smoke"})
    assert smoke["N_EPOCHS"] == schema.profiles["smoke"]["N_EPOCHS"] != schema.by_name["N_EPOCHS"].default
    assert smoke["N_TRAIN"] == 256 and over == []
    work, _ = resolve_params(schema, {})
    assert work["N_EPOCHS"] == schema.by_name["N_EPOCHS"].default
    # a value that differs from the default wins over the preset
    r, over = resolve_params(schema, {"PROFILE": "smoke", "N_EPOCHS": 3})
    assert r["N_EPOCHS"] == 3 and over == ["N_EPOCHS"] and r["N_TRAIN"] == 256
    # the notebook's globals: defaults everywhere, lower-case names and modules ignored
    ns = {**schema.defaults(), "PROFILE": "smoke", "np": object(), "x": 3, "In": [], "_": 1}
    r, over = resolve_params(schema, ns)
    assert r == smoke


def test_misspelled_papermill_parameter_is_rejected(schema):
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) for notebook 00_quickstart: 'N_EPOCH' \(did you mean 'N_EPOCHS'\?\)"):
        resolve_params(schema, {"N_EPOCH": 2})
    with pytest.raises(ValueError, match=r"`PROFILE` = 'fast' is not allowed"):
        resolve_params(schema, {"PROFILE": "fast"})
    with pytest.raises(TypeError, match=r"`SEED` must be an int"):
        resolve_params(schema, {"SEED": "1"})


def test_params_hash_ignores_paths_and_counts_the_device_kind(schema):
    """The run identity: paths do not count; DEVICE counts by kind ('auto' adds nothing, so default runs keep
    their folders; 'cpu' and 'cuda' runs get their own, and 'cuda:7' is 'cuda')."""
    a, _ = resolve_params(schema, {"RUN_DIR": "/tmp/a", "DATA_DIR": "/data"})
    b, _ = resolve_params(schema, {"RUN_DIR": "/tmp/b", "DEVICE": "auto"})
    c, _ = resolve_params(schema, {"SEED": 1})
    assert params_hash(a) == params_hash(b) != params_hash(c)
    cpu, _ = resolve_params(schema, {"DEVICE": "cpu"})
    cuda, _ = resolve_params(schema, {"DEVICE": "cuda"})
    cuda7, _ = resolve_params(schema, {"DEVICE": "cuda:7"})
    assert len({params_hash(a), params_hash(cpu), params_hash(cuda)}) == 3
    assert params_hash(cuda) == params_hash(cuda7)


def test_start_run_writes_params_and_manifest(tmp_path, schema):
    run = start_run("00_quickstart", {"PROFILE": "smoke", "RUN_DIR": str(tmp_path / "r"), "DEVICE": "cpu"})
    assert run.p.N_EPOCHS == schema.profiles["smoke"]["N_EPOCHS"] and run.device.type == "cpu" and run.profile == "smoke"
    assert yaml.safe_load((run.dir / "params.yaml").read_text())["N_EPOCHS"] == run.p.N_EPOCHS
    m = json.loads((run.dir / "manifest.json").read_text())
    assert m["status"] == "running" and m["notebook"] == "00_quickstart" and m["seed"] == 0
    assert m["env"]["torch"]
    with pytest.raises(AttributeError, match="did you mean 'N_EPOCHS'"):
        run.p.N_EPOCH
    with pytest.raises(AttributeError, match="read-only"):
        run.p.N_EPOCHS = 3


# ---------------------------------------------------------------------------------------------
# explicit parameters: never dropped, always winning, in any float spelling (issue 21, items 7-9, 12)
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def toy():
    return NotebookSchema("99_toy", "p", [
        Param("N_EPOCHS", int, 8, "epochs", low=1),
        Param("LR", float, 2e-3, "learning rate", low=0.0),
        Param("METHODS", list, ["a"], "methods", item_type=str, choices=["a", "b", "openml:*"]),
        Param("NAMES", list, ["a"], "names without an item type", choices=["a", "b"]),
    ], profiles={"smoke": {"N_EPOCHS": 2}})


def test_parameter_names_in_another_case_are_errors_not_dropped(toy):
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) for notebook 99_toy: 'n_epochs' \(did you mean 'N_EPOCHS'\?\)"):
        resolve_params(toy, {"n_epochs": 3}, explicit=["n_epochs"])
    with pytest.raises(ValueError, match=r"'epochs' \(did you mean 'N_EPOCHS'\?\)"):
        resolve_params(toy, {"epochs": 3}, explicit=["epochs"])
    # a notebook's own lower-case variables are not parameters (papermill's injected names are: see below)
    r, _ = resolve_params(toy, {"np": object(), "x": 3, "run": None, "n_epochs": 10})
    assert r["N_EPOCHS"] == 8


def test_an_explicit_value_equal_to_the_default_beats_the_profile_preset(toy):
    r, over = resolve_params(toy, {"PROFILE": "smoke", "N_EPOCHS": 8}, explicit=["N_EPOCHS"])
    assert r["N_EPOCHS"] == 8 and over == ["N_EPOCHS"]
    # the parameters cell's own value keeps the documented rule: equal to the default -> the preset applies
    r, over = resolve_params(toy, {"PROFILE": "smoke", "N_EPOCHS": 8})
    assert r["N_EPOCHS"] == 2 and over == []


def test_float_parameters_accept_the_usual_spellings(toy):
    lr = toy.by_name["LR"]
    assert lr.validate("1e-3") == 0.001 and lr.validate("2.5E+2") == 250.0 and lr.validate(".5") == 0.5
    with pytest.raises(TypeError, match="`LR` must be a float, got str 'fast'"):
        lr.validate("fast")
    from xcal_core.batch import yaml_load

    assert yaml_load("1e-3") == 0.001 and yaml_load("[1e-3, 2, .5]") == [0.001, 2, 0.5] and yaml_load("cuda") == "cuda"
    assert yaml_load("{LR: 1E-4}") == {"LR": 0.0001}


def test_list_choices_are_checked_with_or_without_an_item_type(toy):
    with pytest.raises(ValueError, match=r"`METHODS`\[1\] = 'c' is not allowed"):
        toy.by_name["METHODS"].validate(["a", "c"])
    assert toy.by_name["METHODS"].validate(["openml:iris"]) == ["openml:iris"]  # a pattern choice
    with pytest.raises(ValueError, match=r"`NAMES`\[0\] = 'bb' is not allowed.*did you mean 'b'"):
        toy.by_name["NAMES"].validate(["bb"])


def test_papermill_injected_names_are_explicit_and_must_be_parameters(tmp_path, schema):
    """papermill -p / -f write a '# Parameters' cell; IPython keeps its source in In. Its names win over the
    preset even when equal to the default, and a name that is not a parameter is an error, not ignored."""
    name = next(k for k, v in schema.profiles["smoke"].items() if v != schema.by_name[k].default and schema.by_name[k].type is int)
    default = schema.by_name[name].default
    ns = {**schema.defaults(), "PROFILE": "smoke", "RUN_DIR": str(tmp_path / "r"), "DEVICE": "cpu",
          "In": ["", f"# Parameters\nPROFILE = \"smoke\"\n{name} = {default}\n"]}
    run = start_run("00_quickstart", ns)
    assert run.p[name] == default and name in run.overrides
    ns["In"].append(f"# Parameters\n{name.lower()} = 4\n")
    ns[name.lower()] = 4
    with pytest.raises(ValueError, match=rf"'{name.lower()}' \(did you mean '{name}'\?\)"):
        start_run("00_quickstart", ns)


def test_name_lists_have_choices_checked_before_any_work(tmp_path):
    """A wrong model or explainer name in a list parameter fails in start_run, not after training."""
    with pytest.raises(ValueError, match=r"`MODELS`\[0\] = 'smal_cnn' is not allowed.*did you mean 'small_cnn'"):
        start_run("02_calibrate_to_interpret", {"MODELS": ["smal_cnn"], "RUN_DIR": str(tmp_path / "a")})
    with pytest.raises(ValueError, match=r"`METHODS`\[0\] = 'salency' is not allowed"):
        start_run("00_quickstart", {"METHODS": ["salency"], "RUN_DIR": str(tmp_path / "b")})
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    free_form = {"CHECKPOINTS", "RUN_PATHS", "KEY_FIGURES", "MORE_MODELS"}  # paths, pairs and patterns
    for nb in ("00_quickstart", "01_calibration_under_perturbations", "02_calibrate_to_interpret",
               "03_uncertainty_of_explanations", "04_optimized_aggregation", "05_idexpo_training"):
        for p in load_schema(nb).params:
            if p.type is list and p.item_type is str and p.name not in free_form:
                assert p.choices, f"{nb}: list parameter {p.name} has no choices"


def test_schema_choices_match_the_registries():
    from xcal_core.data import DATASETS
    from xcal_core.data.standin import STANDINS
    from xcal_core.explainers import available_methods
    from xcal_core.models import available_models
    from xcal_core.schemas import _choices

    assert sorted(_choices.EXPLAINERS) == sorted(available_methods())
    assert sorted(_choices.MODELS) == sorted(available_models())
    named = {n for n in DATASETS if n not in ("openml", "standin")} | {f"standin:{n}" for n in STANDINS} | {"openml:*"}
    assert set(_choices.DATASETS) == named


def test_parameters_cells_parse_cleanly_in_papermill():
    """Issue 21 item 10: papermill reads every line of each parameters cell ('=' in a help comment made it
    print 'Unable to parse line' and later 'Passed unknown parameter: RUN_DIR' on every run)."""
    import ast
    import logging
    from pathlib import Path

    import nbformat
    from papermill.translators import PythonTranslator

    class _Capture(logging.Handler):
        def __init__(self):
            super().__init__()
            self.messages = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    cap = _Capture()
    logger = logging.getLogger("papermill")
    logger.addHandler(cap)
    try:
        for path in sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb")):
            nb = nbformat.read(path, as_version=4)
            (cell,) = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
            cap.messages.clear()
            parsed = [p.name for p in PythonTranslator.inspect(cell)]
            assert not cap.messages, f"{path.name}: {cap.messages}"
            assert parsed == [n.target.id for n in ast.parse(cell.source).body], path.name
    finally:
        logger.removeHandler(cap)
