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


def test_params_hash_ignores_paths_and_device(schema):
    a, _ = resolve_params(schema, {"RUN_DIR": "/tmp/a", "DEVICE": "cpu"})
    b, _ = resolve_params(schema, {"RUN_DIR": "/tmp/b"})
    c, _ = resolve_params(schema, {"SEED": 1})
    assert params_hash(a) == params_hash(b) != params_hash(c)


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
