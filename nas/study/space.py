"""Search spaces: a YAML file -> a validated SearchSpec -> Optuna suggestions (define-by-run, with conditions)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nas.model.config import KNOB_FIELDS, ArchConfig, ConfigError, PrecisionConfig
from nas.profiles import REPO_ROOT, profile_names
from nas.study.objectives import COMPUTE_KEYS, DEFAULT_COMPUTE

SPACES_DIR = REPO_ROOT / "search_spaces"
KNOBS = tuple(k for k in KNOB_FIELDS if k != "precision") + tuple(
    f"precision.{f.name}" for f in dataclasses.fields(PrecisionConfig))
TYPES = ("int", "float", "categorical")
PARAM_KEYS = {
    "int": {"type", "low", "high", "step", "log", "when"},
    "float": {"type", "low", "high", "step", "log", "when"},
    "categorical": {"type", "choices", "when", "implies"},
}
TOP_KEYS = {"name", "description", "params", "fixed", "baseline", "objectives", "defaults"}
# groups a space's Hydra defaults list may choose: `override /task@_global_.task`
DEFAULT_GROUPS = ("proxy", "task", "target")
MAX_GRID = 1000  # values one parameter may contribute to a grid
BROKEN = "_unreadable"  # a registered space file that could not be read: its one-line problem (and its name)


class SpaceError(ValueError):
    """A search-space file or override is invalid (the message names file, key and value)."""


@dataclass(frozen=True)
class Param:
    """One searched knob: its type, range or choices, scale and the condition under which it exists."""

    name: str
    type: str
    low: float | int | None = None
    high: float | int | None = None
    step: float | int | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()
    when: tuple[tuple[str, tuple[Any, ...]], ...] = ()  # (parent, allowed values): all must hold
    implies: tuple[tuple[Any, tuple[tuple[str, Any], ...]], ...] = ()  # choice -> knobs it sets

    def implied(self, value: Any) -> dict[str, Any]:
        """The knobs a chosen value sets (e.g. sharing=ffn_block_diag -> sharing_scope=ffn)."""
        return next((dict(knobs) for choice, knobs in self.implies if choice == value), {})

    def active(self, values: Mapping[str, Any]) -> bool:
        """Whether the conditions hold for the values sampled so far."""
        return all(parent in values and values[parent] in allowed for parent, allowed in self.when)

    def bounds(self) -> tuple[float | int, float | int]:
        """Low and high of a numeric parameter (parse sets both for every non-categorical one)."""
        assert self.low is not None and self.high is not None, f"{self.name}: a categorical parameter has no bounds"
        return self.low, self.high

    def suggest(self, trial: Any) -> Any:
        """Sample this parameter on an Optuna trial."""
        if self.type == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        low, high = self.bounds()
        if self.type == "int":
            return trial.suggest_int(self.name, int(low), int(high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, float(low), float(high), step=self.step, log=self.log)

    def grid_values(self) -> list[Any]:
        """Every value a grid search visits."""
        if self.type == "categorical":
            return list(self.choices)
        low, high = self.bounds()
        if self.type == "int":
            return list(range(int(low), int(high) + 1, int(self.step or 1)))
        assert self.step is not None, f"{self.name}: a float grid needs a step"  # parse's grid check requires it
        n = int(round((high - low) / self.step))
        return [low + i * self.step for i in range(n + 1)]

    def extremes(self) -> list[Any]:
        """The values that bound what this parameter can take (all choices, or low and high)."""
        return list(self.choices) if self.type == "categorical" else [self.low, self.high]

    def contains(self, value: Any) -> bool:
        """Whether `value` is a legal sample of this parameter."""
        if self.type == "categorical":
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.type == "int" and not isinstance(value, int):
            return False
        low, high = self.bounds()
        if not low <= value <= high:
            return False
        if self.step:
            k = (value - low) / self.step
            return math.isclose(k, round(k), abs_tol=1e-9)
        return True


@dataclass(frozen=True)
class SearchSpec:
    """A validated search space: parameters (file order), fixed knobs and the dense baseline's parameters."""

    name: str
    source: str  # the file it came from (for messages)
    params: tuple[Param, ...]
    fixed: Mapping[str, Any]
    baseline: Mapping[str, Any]
    description: str = ""
    objectives: tuple[str, ...] = DEFAULT_COMPUTE  # the compute objectives its knobs move, primary first

    def suggest(self, trial: Any) -> dict[str, Any]:
        """Define-by-run sampling: each parameter whose conditions hold, in file order."""
        values: dict[str, Any] = {}
        for p in self.params:
            if p.active(values):
                values[p.name] = p.suggest(trial)
        return values

    def knobs(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Fixed knobs plus sampled parameters as a nested ArchConfig knob dict (`precision.x` -> precision[x])."""
        implied = {k: v for p in self.params if p.name in params for k, v in p.implied(params[p.name]).items()}
        return nest({**self.fixed, **implied, **params})

    def grid(self) -> dict[str, list[Any]]:
        """The grid of every parameter (for optuna.samplers.GridSampler)."""
        return {p.name: p.grid_values() for p in self.params}

    def to_dict(self) -> dict[str, Any]:
        """Plain dict as stored with a study."""
        params = {}
        for p in self.params:
            d = {k: v for k, v in dataclasses.asdict(p).items()
                 if k != "name" and not (v is None or v is False or v == ())}  # a bound of 0 is kept
            if "choices" in d:
                d["choices"] = list(p.choices)
            if "when" in d:
                d["when"] = {parent: list(allowed) for parent, allowed in p.when}
            if "implies" in d:
                d["implies"] = {choice: dict(knobs) for choice, knobs in p.implies}
            params[p.name] = d
        return {"name": self.name, "description": self.description, "objectives": list(self.objectives),
                "params": params, "fixed": dict(self.fixed), "baseline": dict(self.baseline)}

    def digest(self) -> str:
        """sha256 of the canonical parameters, fixed knobs and baseline (identifies the space across runs)."""
        d = self.to_dict()
        # canonical as first defined (a 0 bound left out), so studies stored before keep their digest
        d["params"] = {name: {k: v for k, v in param.items() if v not in (None, (), False)}
                       for name, param in d["params"].items()}
        payload = json.dumps({k: d[k] for k in ("params", "fixed", "baseline")}, sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()


def nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """{'precision.ffn': x, 'window': w} -> {'precision': {'ffn': x}, 'window': w}."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        head, _, tail = key.partition(".")
        if tail:
            out.setdefault(head, {})[tail] = value
        else:
            out[key] = value
    return out


def path_of(name: str) -> Path:
    """search_spaces/<name>.yaml."""
    return SPACES_DIR / f"{name}.yaml"


def load(path: str | Path, base: ArchConfig) -> SearchSpec:
    """Read and validate a search-space YAML file against the proxy's dense architecture `base`."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise SpaceError(f"{path}: cannot read the search space ({err.strerror})") from err
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise SpaceError(yaml_problem(path, err)) from err
    return parse(data, str(path), base)


def yaml_problem(path: str | Path, err: yaml.YAMLError | UnicodeDecodeError) -> str:
    """One line: the file, the line and column where its YAML breaks, and what is wrong there."""
    if isinstance(err, UnicodeDecodeError):
        return f"{path}: not valid YAML: byte {err.start} is not UTF-8 text ({err.reason})"
    mark, context_mark = getattr(err, "problem_mark", None), getattr(err, "context_mark", None)
    problem = getattr(err, "problem", None) or " ".join(str(err).split())
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    context = getattr(err, "context", None)
    if context and context_mark is not None:
        context = f"{context} at line {context_mark.line + 1}, column {context_mark.column + 1}"
    return f"{path}: not valid YAML{where}: {problem}" + (f" ({context})" if context else "")


def parse(data: Any, source: str, base: ArchConfig) -> SearchSpec:
    """Validate a search-space mapping; every error names `source`, the key and the value."""
    def fail(key: str, value: Any, valid: str) -> SpaceError:
        return SpaceError(f"{source}: {key}={value!r} is invalid: {valid}")

    if isinstance(data, Mapping) and BROKEN in data:
        raise SpaceError(data[BROKEN])
    if not isinstance(data, Mapping):
        raise fail("<top>", type(data).__name__, "expected a mapping with keys name, params, baseline")
    unknown = sorted(set(data) - TOP_KEYS)
    if unknown:
        raise fail(unknown[0], data[unknown[0]], f"unknown key; valid are {', '.join(sorted(TOP_KEYS))}")
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise fail("name", name, "expected a non-empty string")
    raw_params = data.get("params")
    if not isinstance(raw_params, Mapping) or not raw_params:
        raise fail("params", raw_params, "expected a non-empty mapping of knob -> {type, ...}")
    params: list[Param] = []
    for key, raw in raw_params.items():
        params.append(_param(str(key), raw, [p.name for p in params], base, fail))
    fixed = data.get("fixed") or {}
    if not isinstance(fixed, Mapping):
        raise fail("fixed", fixed, "expected a mapping of knob -> value")
    for key, value in fixed.items():
        if key not in KNOBS:
            raise fail(f"fixed.{key}", value, f"not a knob; valid are {', '.join(KNOBS)}")
        if key in raw_params:
            raise fail(f"fixed.{key}", value, "is also searched in params; keep one")
    spec_params = tuple(params)
    _check_values(spec_params, dict(fixed), base, fail)
    baseline = data.get("baseline")
    if not isinstance(baseline, Mapping):
        raise fail("baseline", baseline, "expected a mapping of the dense baseline's parameter values")
    _check_baseline(spec_params, dict(baseline), dict(fixed), base, fail)
    desc = data.get("description") or ""
    _check_defaults(data.get("defaults"), fail)
    objectives = _objectives(data.get("objectives", list(DEFAULT_COMPUTE)), fail)
    return SearchSpec(name, source, spec_params, dict(fixed), dict(baseline), str(desc), objectives)


def _objectives(raw: Any, fail: Any) -> tuple[str, ...]:
    """The space's compute objectives: a non-empty list of distinct nas.cost ratio names."""
    keys = raw if isinstance(raw, list) else [raw]
    for key in keys:
        if key not in COMPUTE_KEYS:
            raise fail("objectives", key, f"not a compute objective; valid are {', '.join(COMPUTE_KEYS)}")
    if not keys or len(set(keys)) != len(keys):
        raise fail("objectives", raw, f"expected a non-empty list of distinct names from {', '.join(COMPUTE_KEYS)}")
    return tuple(keys)


def default_choice(name: str, group: str) -> str | None:
    """The `task` or `target` a shipped space's defaults list chooses (None when it chooses none)."""
    data = yaml.safe_load(path_of(name).read_text()) or {}
    key = f"override /{group}@_global_.{group}"
    return next((e[key] for e in data.get("defaults") or [] if isinstance(e, Mapping) and key in e), None)


def _check_defaults(raw: Any, fail: Any) -> None:
    """A space's Hydra defaults list may only choose its task and target (Hydra applies it; parse checks it)."""
    if raw is None:
        return
    valid = ", ".join(f"override /{g}@_global_.{g}: NAME" for g in DEFAULT_GROUPS)
    if not isinstance(raw, list):
        raise fail("defaults", raw, f"expected a list of entries like {valid}")
    for entry in raw:
        key, value = next(iter(entry.items())) if isinstance(entry, Mapping) and len(entry) == 1 else (None, entry)
        group = next((g for g in DEFAULT_GROUPS if key == f"override /{g}@_global_.{g}"), None)
        if group is None:
            raise fail("defaults", entry, f"a space's defaults may only be {valid}")
        if value not in profile_names(group):
            raise fail(f"defaults.{key}", value, f"expected one of {', '.join(profile_names(group))} "
                       f"(conf/{group}/*.yaml)")


def _param(key: str, raw: Any, earlier: list[str], base: ArchConfig, fail: Any) -> Param:
    where = f"params.{key}"
    if key not in KNOBS:
        raise fail(where, raw, f"not a knob; valid are {', '.join(KNOBS)}")
    if not isinstance(raw, Mapping):
        raise fail(where, raw, "expected a mapping with type and range or choices")
    kind = raw.get("type")
    if kind not in TYPES:
        raise fail(f"{where}.type", kind, f"expected one of {', '.join(TYPES)}")
    extra = sorted(set(raw) - PARAM_KEYS[kind])
    if extra:
        raise fail(f"{where}.{extra[0]}", raw[extra[0]], f"not allowed for type {kind}; valid keys are "
                   f"{', '.join(sorted(PARAM_KEYS[kind]))}")
    fields: dict[str, Any] = {"name": key, "type": kind}
    if kind == "categorical":
        choices = raw.get("choices")
        if not isinstance(choices, list) or not choices or len(set(map(repr, choices))) != len(choices):
            raise fail(f"{where}.choices", choices, "expected a non-empty list of distinct values")
        if not all(c is None or isinstance(c, (str, int, float, bool)) for c in choices):
            raise fail(f"{where}.choices", choices, "choices must be strings, numbers, booleans or null")
        fields["choices"] = tuple(choices)
    else:
        num = int if kind == "int" else (int, float)
        for bound in ("low", "high"):
            v = raw.get(bound)
            if isinstance(v, bool) or not isinstance(v, num):
                raise fail(f"{where}.{bound}", v, f"expected {'an integer' if kind == 'int' else 'a number'}")
            fields[bound] = v
        if fields["low"] >= fields["high"]:
            raise fail(f"{where}.high", fields["high"], f"must be above low={fields['low']}")
        log = raw.get("log", False)
        if not isinstance(log, bool):
            raise fail(f"{where}.log", log, "expected true or false")
        step = raw.get("step")
        if step is not None:
            if isinstance(step, bool) or not isinstance(step, num) or step <= 0:
                raise fail(f"{where}.step", step, "expected a positive number of the parameter's type")
            if log and step != 1:
                raise fail(f"{where}.step", step, "log scale takes no step (Optuna samples log ranges continuously)")
        if log and fields["low"] <= 0:
            raise fail(f"{where}.low", fields["low"], "log scale needs low > 0")
        fields.update(log=log, step=step)
    when = raw.get("when") or {}
    if not isinstance(when, Mapping):
        raise fail(f"{where}.when", when, "expected a mapping parent -> value or list of values")
    for parent, allowed in when.items():
        if parent not in earlier:
            raise fail(f"{where}.when.{parent}", allowed, f"must name a parameter listed before {key}")
    fields["when"] = tuple((p, tuple(a) if isinstance(a, list) else (a,)) for p, a in when.items())
    implies = raw.get("implies") or {}
    if not isinstance(implies, Mapping) or not all(isinstance(v, Mapping) for v in implies.values()):
        raise fail(f"{where}.implies", implies, "expected a mapping choice -> {knob: value}")
    for choice, knobs in implies.items():
        if choice not in fields.get("choices", ()):
            raise fail(f"{where}.implies.{choice}", dict(knobs), "not one of the parameter's choices")
        bad = sorted(k for k in knobs if k not in KNOBS or k == key)
        if bad:
            raise fail(f"{where}.implies.{choice}.{bad[0]}", knobs[bad[0]], "not another knob of ArchConfig")
    fields["implies"] = tuple((c, tuple(k.items())) for c, k in implies.items())
    p = Param(**fields)
    if p.step is not None and p.type != "categorical":
        low, high = p.bounds()
        span = (high - low) / p.step
        if not math.isclose(span, round(span), abs_tol=1e-9):
            raise fail(f"{where}.step", p.step, f"must divide high-low={high - low}")
    return p


def _arch_with(base: ArchConfig, knobs: Mapping[str, Any]) -> ArchConfig:
    data = base.to_dict()
    for key, value in nest(knobs).items():
        if key == "precision":
            data["precision"] = {**data["precision"], **value}
        else:
            data[key] = value
    return ArchConfig.from_dict(data)


def _check_values(params: tuple[Param, ...], fixed: dict, base: ArchConfig, fail: Any) -> None:
    """Every bound/choice of every parameter, with its conditions met, must give a valid proxy ArchConfig."""
    for p in params:
        for value in p.extremes():
            sampled = _assignment(params, p, value)
            implied = {k: v for q in params if q.name in sampled for k, v in q.implied(sampled[q.name]).items()}
            try:
                _arch_with(base, {**fixed, **implied, **sampled})
            except ConfigError as err:  # the knob's own bound (nas/model/config.py), at the proxy's sizes
                raise fail(f"params.{p.name}", value, f"{err.valid} at the proxy's sizes"
                           if err.key == p.name else str(err)) from err
            except ValueError as err:
                raise fail(f"params.{p.name}", value, str(err)) from err


def _assignment(params: tuple[Param, ...], p: Param, value: Any) -> dict[str, Any]:
    """A complete sample with p=value: p's ancestors at values that activate it, every other active parameter at
    its first extreme (file order, so conditions see their parents)."""
    by_name = {q.name: q for q in params}
    forced: dict[str, Any] = {}
    stack = [p]
    while stack:
        for parent, allowed in stack.pop().when:
            forced.setdefault(parent, allowed[0])
            stack.append(by_name[parent])
    values: dict[str, Any] = {}
    for q in params:
        if q.name == p.name:
            values[q.name] = value
        elif q.name in forced:
            values[q.name] = forced[q.name]
        elif q.active(values):
            values[q.name] = q.extremes()[0]
    return values


def _check_baseline(params: tuple[Param, ...], baseline: dict, fixed: dict, base: ArchConfig, fail: Any) -> None:
    """The baseline must be a legal, complete assignment of the active parameters."""
    values: dict[str, Any] = {}
    for p in params:
        if not p.active(values):
            if p.name in baseline:
                raise fail(f"baseline.{p.name}", baseline[p.name], "its conditions do not hold in the baseline")
            continue
        if p.name not in baseline:
            raise fail(f"baseline.{p.name}", None, "missing: the baseline must set every active parameter")
        if not p.contains(baseline[p.name]):
            raise fail(f"baseline.{p.name}", baseline[p.name], "outside the parameter's range or choices")
        values[p.name] = baseline[p.name]
    extra = sorted(set(baseline) - {p.name for p in params})
    if extra:
        raise fail(f"baseline.{extra[0]}", baseline[extra[0]], "not a parameter of this space")
    implied = {k: v for p in params if p.name in values for k, v in p.implied(values[p.name]).items()}
    try:
        _arch_with(base, {**fixed, **implied, **values})
    except ValueError as err:
        raise fail("baseline", values, str(err)) from err
