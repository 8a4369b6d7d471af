"""environment.yml must install exactly the pinned set of requirements.txt (+ the --no-deps pins)."""

import re
from importlib.metadata import version
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pins(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, ver = line.partition("==")
            assert ver, f"{path.name}: {line!r} is not pinned with =="
            out[name.lower()] = ver
    return out


def test_environment_yml_agrees_with_requirements():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    assert "python=3.11" in deps
    pip = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    assert "-e ." in pip
    env_pins = _pins_from_list([p for p in pip if p != "-e ."])
    assert env_pins == _pins(ROOT / "requirements.txt")
    text = (ROOT / "environment.yml").read_text()
    for name, ver in _pins(ROOT / "requirements-nodeps.txt").items():
        assert re.search(rf"pip install --no-deps {name}=={re.escape(ver)}", text), f"environment.yml must tell how to install {name}=={ver}"


def _pins_from_list(items):
    out = {}
    for s in items:
        name, _, ver = s.partition("==")
        assert ver, f"environment.yml: {s!r} is not pinned"
        out[name.lower()] = ver
    return out


def test_required_pins_and_installed_versions():
    pins = {**_pins(ROOT / "requirements.txt"), **_pins(ROOT / "requirements-nodeps.txt")}
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.2" and pins["numpy"] == "2.3.5"
    for name in ("captum", "quantus", "cvxpy", "papermill", "jupyterlab", "ipykernel", "matplotlib", "seaborn",
                 "scikit-learn", "scikit-image", "pandas", "pyyaml", "tqdm", "pytest"):
        assert name in pins, f"{name} must be pinned"
    # the environment running the tests is the pinned one
    for name in ("torch", "numpy", "captum", "quantus", "cvxpy", "pandas"):
        assert version(name).split("+")[0] == pins[name], f"installed {name} {version(name)} != pinned {pins[name]}"
