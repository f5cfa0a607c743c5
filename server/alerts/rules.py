"""Alert rules: what a user can ask for, its validation, and the evaluation of the point rules.

Kinds:
* `turning_point` — the built-in detector (sqd.server.alerts.turning); a user rule of this kind adds actions or a
  webhook for some runs (one alert per turning point, named after the most specific matching rule).
* `threshold` — `key op value` true for `count` points in a row, e.g. `eval/quality < 0.5 for 3`.
* `trend` — the least-squares change of `key` over its last `window` points, `op value`, e.g. loss/D falling by
  more than 0.5 over 20 points: op "<", value −0.5, window 20.
* `nan` — a NaN or ±inf value of `key` (default `loss/*`).
* `stalled` — a running run with no new step for `minutes` (checked by a timer, server/alerts/engine.py).
A rule applies to one run (`run_id`), one preset's runs (`preset`) or every run. `key` may be a glob (`loss/*`).
A rule fires once, and again only after its condition was false in between (so a long bad stretch is one alert);
a point that lands behind a rule's cursor (a backfilled evaluation) replays the key (`replay_rule`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase
from typing import Any, Literal

import numpy as np
from pydantic import Field, HttpUrl

from sqd.errors import ConfigError
from sqd.server.alerts.turning import TurningParams
from sqd.server.schemas import Schema

RuleKind = Literal["turning_point", "threshold", "trend", "nan", "stalled"]
Op = Literal["<", "<=", ">", ">="]
Severity = Literal["info", "warning", "critical"]
POINT_KINDS = frozenset({"threshold", "trend", "nan"})
OPS = {"<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal}
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
EXPRESSION = re.compile(rf"^\s*(?P<key>[^\s<>=]+)\s*(?P<op><=|>=|<|>)\s*(?P<value>{_NUMBER})"
                        r"(?:\s+for\s+(?P<count>\d+)(?:\s+\w+)?)?\s*$")


class RuleActions(Schema):
    stop_run: bool = Field(False, description="cancel the run when the rule fires")
    keep_best: bool = Field(False, description='mark the last checkpoint before the alert step "best before '
                                               'collapse"')


class RuleCreate(Schema):
    name: str = Field("", max_length=200, description="defaults to a description of the condition")
    kind: RuleKind = "threshold"
    expression: str | None = Field(None, max_length=300,
                                   description='threshold shorthand: "eval/quality < 0.5 for 3 evaluations"')
    run_id: str | None = Field(None, min_length=1, max_length=64)
    preset: str | None = Field(None, min_length=1, max_length=100)
    key: str | None = Field(None, min_length=1, max_length=200)
    op: Op | None = None
    value: float | None = Field(None, allow_inf_nan=False)
    count: int = Field(1, ge=1, le=10_000, description="points in a row the condition must hold")
    window: int | None = Field(None, ge=2, le=10_000, description="trend: points in the fit")
    minutes: float | None = Field(None, gt=0, le=10_080, description="stalled: minutes without a new step")
    severity: Severity = "warning"
    actions: RuleActions = RuleActions()
    params: dict[str, Any] | None = Field(None, description='turning_point: detector thresholds over the defaults, '
                                          'e.g. {"corroborate_epochs": 3, "groups": {"angle_step": {"coef": 0.1}}}')
    webhook_url: HttpUrl | None = None
    enabled: bool = True


class RulePublic(Schema):
    id: int
    name: str
    kind: RuleKind
    builtin: bool
    enabled: bool
    run_id: str | None = None
    preset: str | None = None
    key: str | None = None
    op: Op | None = None
    value: float | None = None
    count: int
    window: int | None = None
    minutes: float | None = None
    severity: Severity
    actions: RuleActions
    params: dict[str, Any] | None = None
    webhook_url: str | None = None
    created_at: float


class RulesPublic(Schema):
    data: list[RulePublic]
    count: int


def _error(field: str, msg: str) -> ConfigError:
    return ConfigError(f"rule: {field}: {msg}", [{"loc": ["body", field], "msg": msg}])


def normalize(body: RuleCreate) -> dict[str, Any]:
    """The stored fields of a new rule, or ConfigError (→ 422) naming the field that is wrong."""
    fields = body.model_dump(exclude={"expression"}, mode="json")
    if body.expression is not None:
        m = EXPRESSION.match(body.expression)
        if m is None:
            raise _error("expression", f"cannot read {body.expression!r}; write it as 'KEY OP NUMBER [for N "
                                       "points]', e.g. 'eval/quality < 0.5 for 3 evaluations'")
        if body.kind != "threshold":
            raise _error("expression", "an expression describes a threshold rule; kind must be 'threshold'")
        fields.update(key=m["key"], op=m["op"], value=float(m["value"]), count=int(m["count"] or body.count))
    if body.run_id is not None and body.preset is not None:
        raise _error("preset", "give run_id or preset, not both")
    kind = fields["kind"]
    if kind in ("threshold", "trend"):
        for name in ("key", "op", "value"):
            if fields[name] is None:
                raise _error(name, f"a {kind} rule needs key, op and value")
    if kind == "trend" and fields["window"] is None:
        raise _error("window", "a trend rule needs window (the number of points in the fit, ≥ 2)")
    if kind == "nan":
        fields["key"] = fields["key"] or "loss/*"
    if kind == "stalled" and fields["minutes"] is None:
        raise _error("minutes", "a stalled rule needs minutes (time without a new step)")
    if kind in ("turning_point", "stalled"):
        fields["key"] = None
    if fields["params"] is not None:
        if kind != "turning_point":
            raise _error("params", "only a turning_point rule takes params (the detector's thresholds)")
        try:
            TurningParams.from_dict(fields["params"])
        except ValueError as exc:
            raise _error("params", str(exc)) from None
    fields["name"] = fields["name"] or describe(fields)
    return fields


def describe(rule: dict[str, Any]) -> str:
    kind = rule["kind"]
    if kind == "threshold":
        times = f" for {rule['count']} points" if rule["count"] > 1 else ""
        return f"{rule['key']} {rule['op']} {rule['value']:g}{times}"
    if kind == "trend":
        return f"{rule['key']} change over {rule['window']} points {rule['op']} {rule['value']:g}"
    if kind == "nan":
        return f"NaN or inf in {rule['key']}"
    if kind == "stalled":
        return f"no new step for {rule['minutes']:g} min"
    return "turning point"


def key_matches(pattern: str, key: str) -> bool:
    return fnmatchcase(key, pattern)


# ---- evaluation of point rules -------------------------------------------------------------------------------
@dataclass(frozen=True)
class RuleSpec:
    kind: str
    op: str | None
    value: float | None
    count: int
    window: int | None


@dataclass(frozen=True)
class Hit:
    key: str
    step: int
    epoch: int | None
    value: float
    explanation: str
    since: int  # the stretch of points the condition held in around the hit: its first step …
    until: int  # … and its last step among the points evaluated (the stretch may go on in later ones)


def _condition(spec: RuleSpec, values: np.ndarray, fits: np.ndarray) -> np.ndarray:
    if spec.kind == "nan":
        return ~np.isfinite(values)
    assert spec.op is not None and spec.value is not None
    x = fits if spec.kind == "trend" else values
    with np.errstate(invalid="ignore"):
        return OPS[spec.op](x, spec.value) & np.isfinite(x)


def _trend_changes(spec: RuleSpec, history: list[float], values: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """Least-squares change over the last `window` finite values, at every new point (NaN until full)."""
    assert spec.window is not None
    w = spec.window
    seq = [*history, *[float(v) for v in values]]
    out = np.full(len(values), np.nan)
    t = np.arange(w) - (w - 1) / 2
    for i in range(len(values)):
        end = len(history) + i + 1
        win = np.asarray(seq[max(0, end - w):end])
        if len(win) == w and np.all(np.isfinite(win)):
            out[i] = float(np.dot(t, win - win.mean()) / np.dot(t, t)) * (w - 1)
    return out, seq[-(w - 1):] if w > 1 else []


def evaluate(spec: RuleSpec, state: dict[str, Any], key: str, steps: np.ndarray, values: np.ndarray,
             epochs: list[int | None]) -> list[Hit]:
    """New points of one key (step order, after the state's cursor) → the times the rule fires; updates state
    (cursor, run length and its first step, armed, trend history, and the count of points fed where the state
    keeps one) in place."""
    fits = np.full(len(values), np.nan)
    if spec.kind == "trend":
        fits, state["history"] = _trend_changes(spec, state.get("history", []), values)
    cond = _condition(spec, values, fits)
    hits: list[Hit] = []
    run, armed, since = int(state.get("run", 0)), bool(state.get("armed", True)), state.get("since")
    open_hit = False  # the last hit's stretch is still going on
    for i in range(len(values)):
        if cond[i]:
            since = int(steps[i]) if run == 0 else since
            run += 1
            if armed and run >= spec.count:
                armed, open_hit = False, True
                shown = fits[i] if spec.kind == "trend" else values[i]
                hits.append(Hit(key, int(steps[i]), epochs[i], float(shown), _explain(spec, key, run, shown),
                                since=int(steps[i]) if since is None else since, until=int(steps[i])))
        else:
            if open_hit:
                hits[-1], open_hit = replace(hits[-1], until=int(steps[i - 1])), False
            run, armed, since = 0, True, None
    if open_hit:
        hits[-1] = replace(hits[-1], until=int(steps[-1]))
    if len(steps):
        state["cursor"] = int(steps[-1])
    if "fed" in state:
        state["fed"] = int(state["fed"]) + len(values)
    state["run"], state["armed"], state["since"] = run, armed, since
    return hits


def replay_rule(spec: RuleSpec, key: str, fired: list[int], steps: np.ndarray, values: np.ndarray,
                epochs: list[int | None]) -> tuple[dict[str, Any], list[Hit]]:
    """The rule over a key's whole stored series, points that came late in their place: the state it would have
    had they come in order, and the hits whose stretch holds none of the steps it `fired` at before (a late point
    that only lengthens a stretch, or moves where it reached `count`, raises nothing new)."""
    state: dict[str, Any] = {"fed": 0, "fired": list(fired)}
    hits = evaluate(spec, state, key, steps, values, epochs)
    return state, [h for h in hits if not any(h.since <= f <= h.until for f in fired)]


def _explain(spec: RuleSpec, key: str, run: int, shown: float) -> str:
    if spec.kind == "nan":
        return f"{key} is {shown} (not finite)"
    shown_s = f"{shown:.4g}" if math.isfinite(shown) else str(shown)
    if spec.kind == "trend":
        return f"{key} changed by {shown_s} over its last {spec.window} points ({spec.op} {spec.value:g})"
    times = f" for {run} points in a row" if spec.count > 1 else ""
    return f"{key} = {shown_s} {spec.op} {spec.value:g}{times}"


class AlertActionPublic(Schema):
    id: int
    alert_id: int
    run_id: str
    kind: str
    status: str
    target: str | None = None
    attempts: int
    last_error: str | None = None
    detail: dict[str, Any] = Field({}, description="keep_best: the checkpoint kept (webhook payloads omitted)")
    updated_at: float


class BestBeforeCollapse(Schema):
    checkpoint_step: int
    epoch: int | None = None
    uri: str
    sha256: str
    alert_id: int
