"""Package-level contracts: no star-import shadowing, no import-time side effects, one-way layers."""

import ast
import importlib
import pkgutil
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGES = ["metrics", "viz", "explainers", "calibration", "models", "uq", "aggregation", "training", "perturbations", "data"]
ROOT = Path(__file__).resolve().parents[1] / "xcal_core"


@pytest.mark.parametrize("pkg", PACKAGES)
def test_no_public_name_is_exported_by_two_submodules(pkg):
    p = importlib.import_module(f"xcal_core.{pkg}")
    seen = defaultdict(list)
    for m in pkgutil.iter_modules(p.__path__):
        mod = importlib.import_module(f"xcal_core.{pkg}.{m.name}")
        for name in getattr(mod, "__all__", []):
            seen[name].append(m.name)
    clashes = {k: v for k, v in seen.items() if len(v) > 1}
    assert not clashes, f"star imports in xcal_core.{pkg} would shadow: {clashes}"


# lower layers must never import higher ones (CONTRIBUTING.md)
LAYER = {"_validation": 0, "runtime": 0, "params": 0, "data": 1, "models": 1, "perturbations": 2, "explainers": 2,
         "metrics": 3, "calibration": 3, "uq": 3, "aggregation": 4, "training": 4, "viz": 5, "runs": 5,
         "batch": 6, "report": 6, "run": 7, "schemas": 0}
ALLOWED = {("metrics", "explainers"), ("params", "runs")}  # metrics may use explainers; start_run opens a Run lazily


def _top(module_path: Path) -> str:
    rel = module_path.relative_to(ROOT)
    return rel.parts[0].removesuffix(".py")


def test_imports_go_one_way():
    bad = []
    for f in ROOT.rglob("*.py"):
        src = _top(f)
        if src not in LAYER:
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level > 0 and node.module:
                depth = len(f.relative_to(ROOT).parts) - 1
                if node.level == depth + 1:  # relative import reaching xcal_core/<target>
                    tgt = node.module.split(".")[0]
                elif node.level <= depth:
                    continue  # inside the same sub-package
                else:
                    continue
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("xcal_core."):
                tgt = node.module.split(".")[1]
            else:
                continue
            if tgt in LAYER and tgt != src and LAYER[tgt] > LAYER[src] and (src, tgt) not in ALLOWED:
                bad.append(f"{f.relative_to(ROOT)} imports {tgt}")
    assert not bad, "upward imports: " + "; ".join(sorted(set(bad)))
