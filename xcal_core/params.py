"""Notebook parameters: a schema per notebook, profile presets, validation, and ``start_run``.

Every notebook declares its parameters once, in ``xcal_core/schemas/nbNN_<name>.py``::

    SCHEMA = NotebookSchema(
        notebook_id="01_calibration_under_perturbations",
        paper="ReCalX, Decker et al., NeurIPS 2025",
        params=[Param("N_EPOCHS", int, 8, "training epochs", low=1, high=500), ...],
        profiles={"smoke": {"N_EPOCHS": 1}, "workshop": {}, "paper": {"N_EPOCHS": 60}},
    )

The common parameters ``PROFILE, SEED, DEVICE, DATA_DIR, RUN_DIR, ALLOW_DOWNLOAD`` are added to every
schema. The notebook's ``parameters`` cell lists every name with its schema default (the workshop
value); cell 4 calls ``run = start_run("<notebook_id>", globals())``.

Resolution rule: a value given explicitly (``papermill -p`` / ``-f``, ``python -m xcal_core.run -p``,
a sweep's ``parameters`` / ``grid``, keyword arguments of :func:`start_run`) always wins, even when it
equals the schema default. A value in the notebook's own parameters cell wins when it differs from
the schema default; otherwise the profile's preset applies, otherwise the default. Every explicit
name must be a parameter (any spelling: ``n_epochs`` is rejected with "did you mean 'N_EPOCHS'"), and
unknown UPPER_SNAKE names in the notebook's namespace are rejected with the closest valid names.

The run identity (:func:`params_hash`, the run folder's name) covers every resolved parameter except
the paths ``RUN_DIR`` and ``DATA_DIR``; ``DEVICE`` counts by its kind: ``"auto"`` (the default) adds
nothing, ``"cpu"`` and ``"cuda"`` (any index: ``"cuda:1"`` is ``"cuda"``) each give their own folder.
"""

from __future__ import annotations

import ast
import difflib
import fnmatch
import hashlib
import importlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

__all__ = [
    "Param",
    "NotebookSchema",
    "COMMON_PARAMS",
    "PROFILES",
    "DEFAULT_PROFILE",
    "load_schema",
    "resolve_params",
    "params_hash",
    "repo_root",
    "start_run",
    "ParamValues",
    "device_kind",
    "papermill_injected_names",
]

PROFILES = ("smoke", "workshop", "paper")
DEFAULT_PROFILE = "workshop"
_UPPER_SNAKE = re.compile(r"^[A-Z][A-Z0-9_]*$")
_TYPES = (int, float, str, bool, list)
_TYPE_NAMES = {int: "int", float: "float", str: "str", bool: "bool", list: "list"}
# the float spellings YAML 1.1 leaves as strings ("1e-3", "1E5", "+2.", ".5e-2"): accepted for float parameters
_FLOAT_STR = re.compile(r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$")


@dataclass(frozen=True)
class Param:
    """One notebook parameter.

    Args:
        name: UPPER_SNAKE name, as written in the notebook's parameters cell.
        type: one of ``int, float, str, bool, list``.
        default: the workshop value (also the value written in the parameters cell).
        help: one line shown in errors and docs.
        choices: allowed values (for lists: allowed items). A string choice holding ``*`` is a
            pattern (``"openml:*"`` allows every ``openml:<name>``).
        low, high: inclusive numeric bounds (for lists: per item).
        item_type: element type of a list parameter (``int, float, str, bool``).
        nullable: whether ``None`` is allowed.
        advanced: a paper-scale or expert knob (stand-ins, checkpoints, AMP, GPU batch sizes, model
            lists): it is not written in the notebook's parameters cell, so a workshop reader sees only
            the parameters that matter in class; profiles, ``-p`` and papermill can still set it, and
            ``start_run`` fills in its default (or the profile's preset) when it is absent.
    """

    name: str
    type: type
    default: Any
    help: str
    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    item_type: type | None = None
    nullable: bool = False
    advanced: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _UPPER_SNAKE.match(self.name):
            raise ValueError(f"parameter name {self.name!r} must be UPPER_SNAKE (e.g. 'N_EPOCHS')")
        if self.type not in _TYPES:
            raise ValueError(f"parameter `{self.name}`: type must be one of int, float, str, bool, list; got {self.type!r}")
        if self.type is list and self.item_type is not None and self.item_type not in (int, float, str, bool):
            raise ValueError(f"parameter `{self.name}`: item_type must be int, float, str or bool")
        if self.choices is not None:
            object.__setattr__(self, "choices", tuple(self.choices))
        if not self.help:
            raise ValueError(f"parameter `{self.name}` needs a help text")
        object.__setattr__(self, "default", self.validate(self.default))

    # -- validation -------------------------------------------------------------------------
    def _choices_text(self) -> str:
        c = list(self.choices or ())
        return str(c) if len(c) <= 40 else str(c[:40])[:-1] + f", ... ({len(c)} in all)]"

    def _in_choices(self, value: Any) -> bool:
        if value in self.choices:
            return True
        return isinstance(value, str) and any(isinstance(c, str) and "*" in c and fnmatch.fnmatchcase(value, c)
                                              for c in self.choices)

    def _allowed(self) -> str:
        parts = []
        if self.choices is not None:
            parts.append(f"one of {self._choices_text()}")
        if self.low is not None or self.high is not None:
            lo = "-inf" if self.low is None else self.low
            hi = "inf" if self.high is None else self.high
            parts.append(f"in [{lo}, {hi}]")
        if self.nullable:
            parts.append("or None")
        return " ".join(parts) if parts else "any value"

    def _check_scalar(self, value: Any, typ: type, where: str) -> Any:
        tname = _TYPE_NAMES[typ]
        if typ is bool:
            if not isinstance(value, bool):
                raise TypeError(f"parameter `{self.name}`{where} must be a bool (True/False), got {type(value).__name__} {value!r}")
        elif typ is int:
            if isinstance(value, bool) or not isinstance(value, int):
                if isinstance(value, float) and value.is_integer():
                    value = int(value)
                else:
                    raise TypeError(f"parameter `{self.name}`{where} must be an int, got {type(value).__name__} {value!r}")
        elif typ is float:
            if isinstance(value, str) and _FLOAT_STR.match(value):
                value = float(value)  # "1e-3": YAML 1.1 (PyYAML, papermill -f / -y) reads it as a string
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"parameter `{self.name}`{where} must be a float, got {type(value).__name__} {value!r}")
            value = float(value)
            if math.isnan(value):
                raise ValueError(f"parameter `{self.name}`{where} must not be NaN")
        elif typ is str:
            if not isinstance(value, str):
                raise TypeError(f"parameter `{self.name}`{where} must be a str, got {type(value).__name__} {value!r}")
        else:  # pragma: no cover - guarded in __post_init__
            raise TypeError(f"parameter `{self.name}`: unsupported type {tname}")
        if self.choices is not None and not self._in_choices(value):
            close = difflib.get_close_matches(str(value), [str(c) for c in self.choices], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"parameter `{self.name}`{where} = {value!r} is not allowed; allowed: {self._choices_text()}{hint}")
        if typ in (int, float):
            if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
                raise ValueError(f"parameter `{self.name}`{where} = {value!r} is out of range; allowed: {self._allowed()}")
        return value

    def validate(self, value: Any) -> Any:
        """Return ``value`` checked (and coerced int -> float, tuple -> list) or raise naming the parameter."""
        if value is None:
            if self.nullable:
                return None
            raise TypeError(f"parameter `{self.name}` must not be None ({self.help}); allowed: {self._allowed()}")
        if self.type is list:
            if not isinstance(value, (list, tuple)):
                raise TypeError(f"parameter `{self.name}` must be a list, got {type(value).__name__} {value!r}")
            if self.item_type is None:
                if self.choices is not None:
                    for i, v in enumerate(value):
                        if not self._in_choices(v):
                            close = difflib.get_close_matches(str(v), [str(c) for c in self.choices], n=1)
                            hint = f" (did you mean {close[0]!r}?)" if close else ""
                            raise ValueError(f"parameter `{self.name}`[{i}] = {v!r} is not allowed; "
                                             f"allowed: {self._choices_text()}{hint}")
                return list(value)
            return [self._check_scalar(v, self.item_type, f"[{i}]") for i, v in enumerate(value)]
        return self._check_scalar(value, self.type, "")

    def describe(self) -> str:
        t = _TYPE_NAMES[self.type] + (f"[{_TYPE_NAMES[self.item_type]}]" if self.item_type else "")
        return (f"{self.name} ({t}, default {self.default!r}; {self._allowed()}): {self.help}"
                + (" [advanced: not in the parameters cell]" if self.advanced else ""))


COMMON_PARAMS: tuple[Param, ...] = (
    Param("PROFILE", str, DEFAULT_PROFILE, "preset: smoke (CI, < 1 min), workshop (laptop CPU), paper (GPU scale)", choices=PROFILES),
    Param("SEED", int, 0, "master seed; all random streams derive from it", low=0, high=2**31 - 1),
    Param("DEVICE", str, "auto", "'auto' (CUDA if available), 'cpu', 'cuda' or 'cuda:N'"),
    Param("DATA_DIR", str, "", "where real datasets live ('' = <repo>/data or $XCAL_DATA_DIR)"),
    Param("RUN_DIR", str, "", "output directory ('' = papermill_runs/<profile>/<notebook>__<hash>)"),
    Param("ALLOW_DOWNLOAD", bool, False, "allow downloading real datasets / pretrained weights"),
)
_COMMON_NAMES = tuple(p.name for p in COMMON_PARAMS)


@dataclass
class NotebookSchema:
    """The parameters of one notebook and its profile presets (common parameters are added)."""

    notebook_id: str
    paper: str
    params: list[Param]
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)
    title: str = ""

    def __post_init__(self) -> None:
        if not re.match(r"^\d\d_[a-z0-9_]+$", self.notebook_id):
            raise ValueError(f"`notebook_id` {self.notebook_id!r} must look like '01_calibration_under_perturbations'")
        own = list(self.params)
        names = [p.name for p in own]
        clash = sorted(set(names) & set(_COMMON_NAMES))
        if clash:
            raise ValueError(f"schema {self.notebook_id}: {clash} are common parameters and must not be redeclared")
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"schema {self.notebook_id}: duplicate parameters {dup}")
        self.params = list(COMMON_PARAMS) + own
        self.by_name = {p.name: p for p in self.params}
        unknown_profiles = sorted(set(self.profiles) - set(PROFILES))
        if unknown_profiles:
            raise ValueError(f"schema {self.notebook_id}: unknown profiles {unknown_profiles}; allowed: {list(PROFILES)}")
        for prof, preset in self.profiles.items():
            for k, v in preset.items():
                if k not in self.by_name or k == "PROFILE":
                    raise ValueError(f"schema {self.notebook_id}: profile {prof!r} sets unknown parameter {k!r}")
                preset[k] = self.by_name[k].validate(v)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]

    @property
    def cell_names(self) -> list[str]:
        """The names written in the notebook's parameters cell (every parameter but the advanced ones)."""
        return [p.name for p in self.params if not p.advanced]

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}

    def preset(self, profile: str) -> dict[str, Any]:
        """Resolved values of a profile with no explicit overrides."""
        return resolve_params(self, {"PROFILE": profile})[0]

    def describe(self) -> str:
        return "\n".join(p.describe() for p in self.params)


def load_schema(notebook_id: str) -> NotebookSchema:
    """Import ``xcal_core.schemas.nb<notebook_id>`` and return its ``SCHEMA``."""
    if not isinstance(notebook_id, str) or not re.match(r"^\d\d_[a-z0-9_]+$", notebook_id):
        raise ValueError(f"`notebook_id` {notebook_id!r} must look like '01_calibration_under_perturbations'")
    try:
        mod = importlib.import_module(f"xcal_core.schemas.nb{notebook_id}")
    except ModuleNotFoundError as e:
        if e.name != f"xcal_core.schemas.nb{notebook_id}":
            raise
        here = Path(__file__).parent / "schemas"
        known = sorted(p.stem[2:] for p in here.glob("nb*.py"))
        raise ValueError(f"unknown `notebook_id` {notebook_id!r}; schemas exist for: {known}") from None
    schema = getattr(mod, "SCHEMA", None)
    if not isinstance(schema, NotebookSchema) or schema.notebook_id != notebook_id:
        raise ValueError(f"xcal_core/schemas/nb{notebook_id}.py must define SCHEMA = NotebookSchema(notebook_id={notebook_id!r}, ...)")
    return schema


def _candidate_params(values: Mapping[str, Any]) -> dict[str, Any]:
    """The notebook-parameter-like entries of a namespace (UPPER_SNAKE names, literal values)."""
    out = {}
    for k, v in values.items():
        if k.startswith("_") or k in ("In", "Out") or not _UPPER_SNAKE.match(k):
            continue
        if v is None or isinstance(v, (bool, int, float, str, list, tuple)):
            out[k] = v
    return out


def _closest(name: str, names: list[str]) -> str | None:
    """The parameter ``name`` most likely meant: same name in another case first, else the closest spelling."""
    upper = {n.upper(): n for n in names}
    if str(name).upper() in upper:
        return upper[str(name).upper()]
    close = difflib.get_close_matches(str(name), names, n=1) or difflib.get_close_matches(str(name).upper(), names, n=1)
    return close[0] if close else None


def resolve_params(schema: NotebookSchema, values: Mapping[str, Any],
                   explicit: Iterable[str] | None = None) -> tuple[dict[str, Any], list[str]]:
    """Validate ``values`` against ``schema`` and apply the profile.

    Args:
        schema: the notebook's schema.
        values: a namespace (e.g. the notebook's ``globals()``) or a plain dict of parameters.
            Of the names not listed in ``explicit``, only UPPER_SNAKE names with literal values are
            considered (the notebook's own lower-case variables are not parameters).
        explicit: names given explicitly (papermill ``-p``, the batch runner's ``-p``, a sweep entry,
            keyword arguments). Each must be a parameter, whatever its spelling, and its value wins
            over the profile preset even when it equals the schema default.

    Returns:
        ``(resolved, overrides)``: every parameter's final value, and the names that won over the
        profile preset (explicit ones, and namespace values that differ from the schema default).

    Raises:
        ValueError: unknown parameter name (with close matches), value out of range / not allowed.
        TypeError: value of the wrong type.
    """
    explicit = [] if explicit is None else list(explicit)
    given = _candidate_params(values)
    for k in explicit:
        if k not in values:
            raise ValueError(f"explicit parameter {k!r} has no value")
        given[k] = values[k]
    unknown = sorted((k for k in given if k not in schema.by_name), key=str)
    if unknown:
        hints = []
        for u in unknown:
            close = _closest(u, schema.names)
            hints.append(f"{u!r}" + (f" (did you mean {close!r}?)" if close else ""))
        raise ValueError(
            f"unknown parameter(s) for notebook {schema.notebook_id}: {', '.join(hints)}; "
            f"parameter names are UPPER_SNAKE; valid parameters: {schema.names}"
        )
    checked = {k: schema.by_name[k].validate(v) for k, v in given.items()}
    profile = checked.get("PROFILE", DEFAULT_PROFILE)
    preset = schema.profiles.get(profile, {})
    resolved, overrides = {}, []
    for p in schema.params:
        if p.name in checked and (p.name in explicit or checked[p.name] != p.default):
            resolved[p.name] = checked[p.name]
            if p.name != "PROFILE":
                overrides.append(p.name)
        elif p.name in preset:
            resolved[p.name] = preset[p.name]
        else:
            resolved[p.name] = p.default
    return resolved, overrides


def device_kind(device: Any) -> str:
    """The part of ``DEVICE`` that belongs to a run's identity: ``"auto"``, ``"cpu"``, ``"cuda"`` (any
    index: ``"cuda:3"`` computes what ``"cuda"`` computes), or the lower-cased string otherwise."""
    s = str(device if device is not None else "auto").strip().lower()
    return "cuda" if s.startswith("cuda") else s


def params_hash(resolved: Mapping[str, Any], n: int = 10) -> str:
    """Short stable hash of a run's identity: the resolved parameters without the paths RUN_DIR and
    DATA_DIR, with DEVICE by its kind (``"auto"`` adds nothing, so default runs keep their folders;
    ``"cpu"`` and ``"cuda"`` runs get their own)."""
    key = {k: v for k, v in sorted(resolved.items()) if k not in ("RUN_DIR", "DATA_DIR", "DEVICE")}
    kind = device_kind(resolved.get("DEVICE", "auto"))
    if kind != "auto":
        key["DEVICE"] = kind
    return hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:n]


def repo_root() -> Path:
    """The xcal checkout (``$XCAL_ROOT`` if set, else the directory above the package), else the cwd."""
    env = os.environ.get("XCAL_ROOT")
    if env:
        return Path(env).resolve()
    here = Path(__file__).resolve().parent.parent
    if (here / "pyproject.toml").exists() and (here / "notebooks").is_dir():
        return here
    return Path.cwd().resolve()


class ParamValues:
    """Read-only attribute access to resolved parameters: ``run.p.N_EPOCHS``."""

    def __init__(self, values: Mapping[str, Any]):
        object.__setattr__(self, "_values", dict(values))

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            close = difflib.get_close_matches(name, list(self._values), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise AttributeError(f"no parameter {name!r}{hint}; parameters: {list(self._values)}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("run parameters are read-only; change them in the parameters cell or with papermill -p")

    def __getitem__(self, name: str) -> Any:
        return self.__getattr__(name)

    def __iter__(self) -> Iterable[str]:
        return iter(self._values)

    def as_dict(self) -> dict[str, Any]:
        return dict(self._values)

    def __repr__(self) -> str:
        return "ParamValues(" + ", ".join(f"{k}={v!r}" for k, v in self._values.items()) + ")"


def start_run(notebook_id: str, namespace: Mapping[str, Any] | None = None, **params: Any):
    """Validate the notebook's parameters, apply the profile, seed, pick the device, open the run directory.

    Args:
        notebook_id: e.g. ``"01_calibration_under_perturbations"`` (its schema module must exist).
        namespace: usually ``globals()`` of the notebook; UPPER_SNAKE literals in it are the parameters.
        **params: parameters given directly (win over ``namespace``).

    Returns:
        A :class:`xcal_core.runs.Run` with ``p`` (resolved values), ``device``, ``rng`` (named random
        streams), ``dir`` and the writers. ``params.yaml`` and ``manifest.json`` (status ``running``)
        are written before this returns.
    """
    from .runs import Run  # runs sits above params in the layering; imported lazily

    schema = load_schema(notebook_id)
    namespace = dict(namespace or {})
    injected = papermill_injected_names(namespace)
    values = {k: v for k, v in namespace.items() if isinstance(k, str)}
    values.update(params)
    resolved, overrides = resolve_params(schema, values, explicit=sorted(set(injected) | set(params)))
    return Run.open(schema, resolved, overrides)


def papermill_injected_names(namespace: Mapping[str, Any]) -> list[str]:
    """Names assigned in the cell papermill injected (``# Parameters``, tagged ``injected-parameters``).

    IPython keeps every executed cell's source in ``In``; papermill's Python translator starts the
    injected cell with the line ``# Parameters``. These names were given explicitly (``-p``, ``-f``,
    ``-y``, or the batch runner), so they must all be parameters and they win over the profile preset.
    """
    cells = namespace.get("In")
    if not isinstance(cells, (list, tuple)):
        return []
    names: list[str] = []
    for src in cells:
        if not isinstance(src, str) or not src.lstrip().startswith("# Parameters"):
            continue
        try:
            tree = ast.parse(src)
        except SyntaxError:
            continue
        for node in tree.body:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
            names += [t.id for t in targets if isinstance(t, ast.Name) and t.id not in names]
    return names
