"""A sweep request → the runs it makes, every value validated before anything is stored or sent.

Configurations are presets × the cartesian product of `grid` × each explicit override set of `configs` (one empty
set when there is none); each configuration is trained `seeds` times, with `train.seed` = base, base + 1, … (base:
the sweep's own `overrides["train.seed"]`, else 0). Overrides apply in this order: the sweep's `overrides`, the
grid point, the explicit set, the seed. Launch order is configuration-major (every seed of the first
configuration, then the next), so the first runs to finish already cover some configurations completely.

A configuration's *params* are its values along the sweep's *dimensions*: the config keys whose resolved values
differ between configurations (so several presets that differ only in `loss.name` and `reg.names` give those two
dimensions, not one opaque "preset"), plus `preset` when presets alone tell configurations apart.

Failure modes: `plan` raises PlanError holding every problem as {loc, msg} (the 422 detail): an unknown preset
(named), an unknown key, a value the config schema refuses (loc names the grid key and the value's index, msg the
key and the value), a combination the schema's cross-field rules refuse (msg names the combination), `train.seed`
both set by `seeds` and swept, a key both in the grid and an explicit set, more than `max_runs` runs, and more
than `confirm_above` runs without `confirm`. Nothing is partially planned: the caller stores nothing on error.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqd.errors import ConfigError

SEED_KEY = "train.seed"
MAX_ERRORS = 50
NAME_MAX = 200


class PlanError(Exception):
    def __init__(self, errors: list[dict[str, Any]]):
        self.errors = errors
        super().__init__("; ".join(e["msg"] for e in errors))


@dataclass(frozen=True)
class SweepSpec:
    """What a sweep is made of (the request's fields, normalised: `presets` always a list)."""

    presets: list[str]
    grid: dict[str, list[Any]] = field(default_factory=dict)
    configs: list[dict[str, Any]] = field(default_factory=list)
    overrides: dict[str, Any] = field(default_factory=dict)
    seeds: int = 1
    steps: int | None = None

    @property
    def n_configurations(self) -> int:
        n = len(self.presets) * max(1, len(self.configs))
        for values in self.grid.values():
            n *= len(values)
        return n

    @property
    def n_runs(self) -> int:
        return self.n_configurations * self.seeds

    def as_json(self) -> dict[str, Any]:
        return {"presets": self.presets, "grid": self.grid, "configs": self.configs, "overrides": self.overrides,
                "seeds": self.seeds, "steps": self.steps}


@dataclass(frozen=True)
class PlannedRun:
    position: int
    config_index: int
    preset: str
    overrides: dict[str, Any]  # everything the agent passes to `sqd train --set`, the seed included
    params: dict[str, Any]
    label: str
    seed: int
    name: str
    config: dict[str, Any]  # the resolved config


@dataclass(frozen=True)
class Plan:
    runs: list[PlannedRun]
    dimensions: list[str]


@dataclass(frozen=True)
class _Configuration:
    preset: str
    point: tuple[tuple[str, Any, int], ...]  # (grid key, value, index of the value in its list)
    set_index: int | None
    overrides: dict[str, Any]  # sweep overrides + grid point + explicit set, without the seed


def _presets() -> Any:
    import importlib

    return importlib.import_module("sqd.presets")


def _configurations(spec: SweepSpec) -> Iterator[_Configuration]:
    keys = list(spec.grid)
    indexed = [[(k, v, i) for i, v in enumerate(spec.grid[k])] for k in keys]
    sets: list[tuple[int | None, dict[str, Any]]] = list(enumerate(spec.configs)) or [(None, {})]
    for preset in spec.presets:
        for point in itertools.product(*indexed):
            for set_index, extra in sets:
                overrides = {**spec.overrides, **{k: v for k, v, _ in point}, **extra}
                yield _Configuration(preset, tuple(point), set_index, overrides)


def _key_of(loc: Sequence[Any]) -> str:
    return ".".join(str(p) for p in loc if not str(p).isdigit())


def _shape_errors(spec: SweepSpec, confirm: bool, confirm_above: int, max_runs: int) -> list[dict[str, Any]]:
    """What is wrong before any value is looked at (cheap: a huge sweep is refused before it is expanded)."""
    errors: list[dict[str, Any]] = []
    if not spec.presets:
        errors.append({"loc": ["body", "preset"], "msg": "give a preset (or a list of presets) to sweep"})
    for i, name in enumerate(spec.presets):
        if name in spec.presets[:i]:
            errors.append({"loc": ["body", "presets", i], "msg": f"preset '{name}' is listed twice"})
    for key, values in spec.grid.items():
        if not values:
            errors.append({"loc": ["body", "grid", key], "msg": f"grid {key}: give at least one value"})
        if any(json.dumps(v, sort_keys=True) == json.dumps(w, sort_keys=True)
               for i, v in enumerate(values) for w in values[:i]):
            errors.append({"loc": ["body", "grid", key], "msg": f"grid {key}: a value is listed twice"})
    for j, extra in enumerate(spec.configs):
        for key in sorted(set(extra) & set(spec.grid)):
            errors.append({"loc": ["body", "configs", j, key],
                           "msg": f"configs[{j}] sets {key}, which the grid already sweeps"})
    seeded = [k for k in (*spec.grid, *(k for c in spec.configs for k in c)) if k == SEED_KEY]
    if seeded and spec.seeds > 1:
        errors.append({"loc": ["body", "seeds"], "msg": f"{SEED_KEY} is swept explicitly, so `seeds` must be 1 "
                                                        f"(got {spec.seeds})"})
    if spec.n_runs > max_runs:
        errors.append({"loc": ["body"], "msg": f"this sweep makes {spec.n_runs:,} runs; the most one sweep may "
                                               f"make is {max_runs:,} (SQD_SWEEPS__MAX_RUNS)"})
    elif spec.n_runs > confirm_above and not confirm:
        errors.append({"loc": ["body", "confirm"],
                       "msg": f"this sweep makes {spec.n_runs:,} runs (more than {confirm_above}): confirm it with "
                              '"confirm": true (CLI: --yes) to launch them'})
    return errors


def _blame(c: _Configuration, spec: SweepSpec, e: Mapping[str, Any], label: str,
           known: Mapping[str, Any]) -> dict[str, Any]:
    """Where a config error belongs: the grid value, the explicit set or the override that set its key (the grid
    key itself when the key does not exist); an error of a key nobody set (a cross-field rule) names the whole
    combination."""
    key, msg = _key_of(e.get("loc", [])), str(e.get("msg", ""))
    for k, v, i in c.point:
        if k == key and key not in known:
            return {"loc": ["body", "grid", key], "msg": f"grid {key}: {msg}"}
        if k == key:
            return {"loc": ["body", "grid", key, i], "msg": f"grid {key}: value {v!r} is invalid: {msg}"}
    if c.set_index is not None and key in spec.configs[c.set_index]:
        return {"loc": ["body", "configs", c.set_index, key], "msg": f"configs[{c.set_index}] {key}: {msg}"}
    if key in spec.overrides:
        return {"loc": ["body", "overrides", key], "msg": msg}
    if key == "preset":
        return {"loc": ["body", "preset" if len(spec.presets) == 1 else "presets"], "msg": msg}
    where = "grid" if c.point else "configs" if c.set_index is not None else "overrides"
    return {"loc": ["body", where], "msg": f"{c.preset} with {label or 'no overrides'}: {msg}"}


def _resolve_all(spec: SweepSpec, configurations: list[_Configuration]) -> tuple[list[dict[str, Any]],
                                                                                     list[dict[str, Any]]]:
    presets = _presets()
    known = {p.name for p in presets.list_presets()}
    errors: list[dict[str, Any]] = []
    for i, name in enumerate(spec.presets):
        if name not in known:
            loc = ["body", "preset"] if len(spec.presets) == 1 else ["body", "presets", i]
            errors.append({"loc": loc, "msg": f"unknown preset '{name}'; choose one of {', '.join(sorted(known))}"})
    if errors:
        return [], errors
    resolved: list[dict[str, Any]] = []
    known = presets.config_keys()
    for c in configurations:
        try:
            resolved.append(presets.resolve_config(c.preset, c.overrides).model_dump(mode="json"))
        except ConfigError as exc:
            label = _point_label(c, spec)
            errors += [_blame(c, spec, e, label, known) for e in (getattr(exc, "errors", None) or
                                                          [{"loc": [], "msg": str(exc)}])]
            resolved.append({})
    return resolved, errors


def _leaves(tree: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for k, v in tree.items():
        if isinstance(v, Mapping):
            yield from _leaves(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def dimensions(spec: SweepSpec, resolved: list[dict[str, Any]],
               configurations: list[_Configuration]) -> list[str]:
    """Keys whose resolved values differ between configurations: swept keys first, in the request's order."""
    flat = [dict(_leaves(r)) for r in resolved]
    varying = {k for k in set().union(*flat) if k != SEED_KEY
               and len({json.dumps(f.get(k), sort_keys=True) for f in flat}) > 1}
    swept = [k for k in (*spec.grid, *(k for c in spec.configs for k in c)) if k in varying]
    ordered = list(dict.fromkeys(swept)) + sorted(varying - set(swept))
    if len(spec.presets) > 1:
        seen: dict[str, str] = {}
        for c, f in zip(configurations, flat, strict=True):
            sig = json.dumps([f.get(k) for k in ordered])
            if seen.setdefault(sig, c.preset) != c.preset:  # two presets look the same along every dimension
                return ["preset", *ordered]
    return ordered


def format_value(v: Any) -> str:
    if isinstance(v, list):
        return "+".join(format_value(x) for x in v) if v else "none"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _point_label(c: _Configuration, spec: SweepSpec) -> str:
    own = {k: v for k, v, _ in c.point} | (spec.configs[c.set_index] if c.set_index is not None else {})
    return " · ".join(f"{k}={format_value(v)}" for k, v in own.items())


def _label(c: _Configuration, spec: SweepSpec) -> str:
    own = _point_label(c, spec)
    if len(spec.presets) == 1:
        return own or c.preset
    return f"{c.preset} · {own}" if own else c.preset


def plan(spec: SweepSpec, *, confirm: bool, confirm_above: int, max_runs: int) -> Plan:
    """Every run of the sweep, or PlanError with every problem found."""
    errors = _shape_errors(spec, confirm, confirm_above, max_runs)
    if errors and any(e["loc"] in (["body"], ["body", "preset"]) for e in errors):
        raise PlanError(errors)  # too big or no preset: expanding it would be pointless or costly
    configurations = list(_configurations(spec))
    resolved, value_errors = _resolve_all(spec, configurations)
    errors += list({json.dumps(e, sort_keys=True): e for e in value_errors}.values())
    if errors:
        shown = errors[:MAX_ERRORS]
        if len(errors) > MAX_ERRORS:
            shown.append({"loc": ["body"], "msg": f"… and {len(errors) - MAX_ERRORS} more problems"})
        raise PlanError(shown)
    dims = dimensions(spec, resolved, configurations)
    runs: list[PlannedRun] = []
    for index, (c, config) in enumerate(zip(configurations, resolved, strict=True)):
        flat = dict(_leaves(config))
        params = {k: (c.preset if k == "preset" else flat.get(k)) for k in dims}
        label = _label(c, spec)[:NAME_MAX]
        # the resolved config holds the seed parsed ("3" from a command line is 3): the swept one, or the base
        first = int(config["train"]["seed"])
        for s in range(spec.seeds):
            seed = first + s
            run_config = json.loads(json.dumps(config))
            run_config["train"]["seed"] = seed
            runs.append(PlannedRun(len(runs), index, c.preset, {**c.overrides, SEED_KEY: seed}, params, label, seed,
                                   f"{label} · seed {seed}"[:NAME_MAX], run_config))
    return Plan(runs, dims)
