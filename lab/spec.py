"""Experiment specs: the YAML that names a grid of methods x seeds x tasks, read and checked.

A spec (docs/experiments.md, configs/experiments/example.yaml) names a config family, tasks,
seeds, methods (a method = a variant of the family + overrides), overrides common to every run,
a step budget, the number of runs at a time and the metric. Every invalid field raises
`SpecError` naming the field and what was expected.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any, Optional

import yaml

from lab.plots import METRICS
from learner.config import ConfigError, parse_override

SPEC_KEYS = ("name", "family", "tasks", "seeds", "methods", "overrides", "budget", "jobs", "metric")
METHOD_KEYS = ("variant", "overrides")
BUDGET_KEYS = {"pretrain_steps": "pretrain.num_steps", "finetune_steps": "finetune.num_steps"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class SpecError(ConfigError):
    """An experiment spec field is invalid; the message names the field and what was expected."""


def _fail(field: str, value: Any, expected: str) -> None:
    raise SpecError(f"experiment spec field '{field}': got {value!r}, expected {expected}")


# ----------------------------------------------------------------------------------------
# The spec.


@dataclasses.dataclass(frozen=True)
class Method:
    name: str
    variant: str
    overrides: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class ExperimentSpec:
    name: str
    family: str
    tasks: tuple[str, ...]  # empty: the family's default task
    seeds: tuple[int, ...]
    methods: tuple[Method, ...]
    overrides: tuple[str, ...] = ()  # every run, before the budget and the method's
    budget: tuple[tuple[str, int], ...] = ()  # (budget key, steps)
    jobs: Optional[int] = None
    metric: str = "auto"


def parse_overrides(field: str, value: Any) -> tuple[str, ...]:
    """A list of `section.field=value` strings, or a mapping `section.field: value`."""
    if value is None:
        return ()
    if isinstance(value, dict):
        items = []
        for key, v in value.items():
            if not isinstance(key, str) or not key:
                _fail(f"{field}", key, "keys of the form section.field")
            items.append(f"{key}={json.dumps(v)}")
    elif isinstance(value, list):
        items = []
        for i, item in enumerate(value):
            if not isinstance(item, str) or "=" not in item:
                _fail(f"{field}[{i}]", item, "a string of the form section.field=value")
            items.append(item)
    else:
        _fail(field, value, "a list of section.field=value strings or a mapping of section.field: value")
    for i, item in enumerate(items):
        try:
            parse_override(item)
        except ConfigError as e:
            raise SpecError(f"experiment spec field '{field}': {e}") from None
        key = item.split("=", 1)[0].strip()
        if key in ("task", "seed", "variant", "logging.run_dir"):
            where = {"task": "the spec's 'tasks'", "seed": "the spec's 'seeds'", "variant": "a method's 'variant'", "logging.run_dir": "--out"}[key]
            _fail(f"{field}", item, f"no '{key}' override (the harness sets it; use {where})")
    return tuple(items)


def parse_spec(data: Any, default_name: str = "experiment") -> ExperimentSpec:
    """Validates a spec mapping (e.g. a loaded YAML file); unknown keys are rejected."""
    if not isinstance(data, dict):
        _fail("<top level>", data, "a mapping with keys " + ", ".join(SPEC_KEYS))
    for key in data:
        if key not in SPEC_KEYS:
            raise SpecError(f"experiment spec: unknown key '{key}'; expected one of {', '.join(SPEC_KEYS)}")

    name = data.get("name", default_name)
    if not isinstance(name, str) or not _NAME.match(name):
        _fail("name", name, "a name of letters, digits, '-', '_' or '.'")
    family = data.get("family", "pointmass")
    if not isinstance(family, str) or not family:
        _fail("family", family, "a config family (e.g. pointmass, antmaze) or a YAML path")

    tasks = data.get("tasks", [])
    if isinstance(tasks, str):
        tasks = [tasks]
    if not isinstance(tasks, list) or not all(isinstance(t, str) and _NAME.match(t) for t in tasks):
        _fail("tasks", data.get("tasks"), "a task name or a list of task names")
    if len(set(tasks)) != len(tasks):
        _fail("tasks", tasks, "a list without repeated tasks")

    if "seeds" not in data:
        raise SpecError("experiment spec field 'seeds': missing; expected a number of seeds (0..N-1) or a list of seeds")
    seeds = data["seeds"]
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        if seeds < 1:
            _fail("seeds", seeds, "a number of seeds >= 1 or a list of integers >= 0")
        seeds = list(range(seeds))
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)
        or len(set(seeds)) != len(seeds)
    ):
        _fail("seeds", data["seeds"], "a number of seeds >= 1 or a non-empty list of distinct integers >= 0")

    if "methods" not in data:
        raise SpecError("experiment spec field 'methods': missing; expected a list of variant names or a mapping name -> {variant, overrides}")
    raw_methods = data["methods"]
    methods = []
    if isinstance(raw_methods, list):
        for i, m in enumerate(raw_methods):
            if not isinstance(m, str) or not _NAME.match(m):
                _fail(f"methods[{i}]", m, "a variant name")
            methods.append(Method(m, m))
    elif isinstance(raw_methods, dict):
        for m, body in raw_methods.items():
            if not isinstance(m, str) or not _NAME.match(m):
                _fail("methods", m, "method names of letters, digits, '-', '_' or '.'")
            body = {} if body is None else body
            if not isinstance(body, dict):
                _fail(f"methods.{m}", body, "a mapping with keys variant, overrides (or nothing: the variant of the same name)")
            for key in body:
                if key not in METHOD_KEYS:
                    raise SpecError(f"experiment spec field 'methods.{m}': unknown key '{key}'; expected one of {', '.join(METHOD_KEYS)}")
            variant = body.get("variant", m)
            if not isinstance(variant, str) or not variant:
                _fail(f"methods.{m}.variant", variant, "a variant name of the family")
            methods.append(Method(m, variant, parse_overrides(f"methods.{m}.overrides", body.get("overrides"))))
    else:
        _fail("methods", raw_methods, "a list of variant names or a mapping name -> {variant, overrides}")
    if not methods:
        _fail("methods", raw_methods, "at least one method")
    names = [m.name for m in methods]
    if len(set(names)) != len(names):
        _fail("methods", names, "distinct method names")

    budget = data.get("budget") or {}
    if not isinstance(budget, dict):
        _fail("budget", budget, "a mapping with keys " + ", ".join(BUDGET_KEYS))
    for key, value in budget.items():
        if key not in BUDGET_KEYS:
            raise SpecError(f"experiment spec field 'budget': unknown key '{key}'; expected one of {', '.join(BUDGET_KEYS)}")
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            _fail(f"budget.{key}", value, "an integer >= 1 (environment steps for finetune_steps, gradient steps for pretrain_steps)")

    jobs = data.get("jobs")
    if jobs is not None and (not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1):
        _fail("jobs", jobs, "an integer >= 1")
    metric = data.get("metric", "auto")
    if metric not in METRICS:
        _fail("metric", metric, "one of " + ", ".join(METRICS))

    return ExperimentSpec(
        name=name,
        family=family,
        tasks=tuple(tasks),
        seeds=tuple(seeds),
        methods=tuple(methods),
        overrides=parse_overrides("overrides", data.get("overrides")),
        budget=tuple(budget.items()),
        jobs=jobs,
        metric=metric,
    )


def load_spec(path: str | Path) -> ExperimentSpec:
    """Reads and validates a spec file; a relative family YAML path is taken relative to the
    spec file when it exists there."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"experiment spec {str(p)!r} not found")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise SpecError(f"experiment spec {str(p)!r} is not valid YAML: {e}") from None
    spec = parse_spec(data, default_name=p.stem)
    if Path(spec.family).suffix in (".yaml", ".yml") and not Path(spec.family).is_absolute():
        beside = p.parent / spec.family
        if beside.is_file():
            spec = dataclasses.replace(spec, family=str(beside.resolve()))
    return spec
