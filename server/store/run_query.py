"""What a run filter's fields mean in SQL, and sorting by them; the same SQL runs on SQLite and PostgreSQL.

Fields (FIELDS below, plus two open families):
* `status`, `kind` (a fixed set of values), `preset`, `name`, `id`, `sweep` (the sweep's id): text; `=`, `!=`,
  `~` (contains, any case), `in`, `not in`.
* `tag`: `tag = x` has the tag, `tag != x` has not, `tag in (a, b)` has any, `tag not in (…)` has none, `tag ~ x`
  has a tag containing x.
* `step` (last step), `created` (seconds since the epoch): numbers.
* `config.<path>`: a value of the run's config, nested keys joined by dots (`config.optim.lr_g`). A number
  compares with JSON numbers, `true`/`false` with JSON booleans, anything else with JSON strings; a run whose
  config lacks the key, or holds another type there, does not match.
* a metric: any key with a `/` (`eval/fid`, `loss/D`) or `metric.<key>` for keys without one. It compares the
  series' last value (`series.last_value`, kept by ingest) with a number; a run without that series, or whose
  last value is NaN, does not match.

Adding a field is one line in FIELDS. Errors are FilterError with the
token and its position, like syntax errors, so the API answers both the same way (422).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Float,
    and_,
    case,
    exists,
    func,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.sql.elements import ColumnElement

from sqd.server.store.filter_syntax import BoolOp, Comparison, FilterError, Node, Token
from sqd.server.store.models import Pack, Run, RunRef, Series

STATUSES = ("queued", "running", "cancelling", "finished", "failed", "cancelled")
KINDS = ("launched", "external")
NUMBER_OPS = ("=", "!=", "<", "<=", ">", ">=", "in", "not in")
TEXT_OPS = ("=", "!=", "~", "in", "not in")
SQLExpr = ColumnElement[Any]


def _fail(what: str, token: Token, hint: str = "") -> FilterError:
    """`what` at position N[; hint] — the same shape as the parser's messages."""
    return FilterError(f"{what} at position {token.position}{'; ' + hint if hint else ''}", token.text,
                       token.position)


def _check_op(name: str, c: Comparison, allowed: Sequence[str]) -> None:
    if c.op not in allowed:
        raise FilterError(f"{name} takes {', '.join(allowed)}; '{c.op}' at position {c.op_position} does not "
                          "apply to it", c.op, c.op_position)


def _numbers(name: str, c: Comparison) -> list[float]:
    for v in c.values:
        if v.kind != "number":
            raise _fail(f"{v.shown()} is not a number", v, f"{name} compares with numbers")
    return [v.number for v in c.values]


def _compare(expr: SQLExpr, op: str, values: Sequence[Any]) -> SQLExpr:
    if op == "in":
        return expr.in_(values)
    if op == "not in":
        return expr.not_in(values)
    value = values[0]
    if op == "~":
        return expr.ilike(f"%{value}%")
    return {"=": expr == value, "!=": expr != value, "<": expr < value, "<=": expr <= value, ">": expr > value,
            ">=": expr >= value}[op]


@dataclass(frozen=True)
class TextField:
    column: Any
    choices: tuple[str, ...] = ()

    def where(self, name: str, c: Comparison, dialect: str) -> SQLExpr:
        _check_op(name, c, TEXT_OPS)
        for v in c.values:
            if self.choices and c.op != "~" and v.text not in self.choices:
                raise _fail(f"unknown {name} {v.shown()}", v, f"one of {', '.join(self.choices)}")
        expr = _compare(self.column, c.op, [v.text for v in c.values])
        # a missing value (no preset) is "not equal" to anything
        return or_(self.column.is_(None), expr) if c.op in ("!=", "not in") else expr

    def order(self, dialect: str) -> list[SQLExpr]:
        return [self.column]


@dataclass(frozen=True)
class NumberField:
    column: Any

    def where(self, name: str, c: Comparison, dialect: str) -> SQLExpr:
        _check_op(name, c, NUMBER_OPS)
        return _compare(self.column, c.op, _numbers(name, c))

    def order(self, dialect: str) -> list[SQLExpr]:
        return [self.column]


class TagField:
    def where(self, name: str, c: Comparison, dialect: str) -> SQLExpr:
        _check_op(name, c, TEXT_OPS)
        tags = _json_array(dialect)
        value = tags.c.value
        if c.op == "~":
            return exists(select(1).select_from(tags).where(value.ilike(f"%{c.values[0].text}%")))
        has = exists(select(1).select_from(tags).where(value.in_([v.text for v in c.values])))
        return not_(has) if c.op in ("!=", "not in") else has


def _json_array(dialect: str) -> Any:
    """The run's tags as a one-column table `value` (correlated to the outer runs row)."""
    if dialect == "postgresql":
        return func.json_array_elements_text(Run.tags).table_valued("value")
    return func.json_each(Run.tags).table_valued("value")


def sqlite_json_path(path: tuple[str, ...], index: str = "") -> str:
    return "$" + "".join('."' + part.replace('"', '""') + '"' for part in path) + index


@dataclass(frozen=True)
class ConfigField:
    path: tuple[str, ...]

    def _type_is(self, dialect: str, *types: str) -> SQLExpr:
        if dialect == "postgresql":
            pg = {"integer": "number", "real": "number", "text": "string", "true": "boolean", "false": "boolean"}
            return func.json_typeof(func.json_extract_path(Run.config, *self.path)).in_({pg[t] for t in types})
        return func.json_type(Run.config, self._sqlite_path()).in_(types)

    def _sqlite_path(self) -> str:
        return sqlite_json_path(self.path)

    def number(self, dialect: str) -> SQLExpr:
        raw = (func.json_extract_path_text(Run.config, *self.path).cast(Float) if dialect == "postgresql"
               else func.json_extract(Run.config, self._sqlite_path()))
        return case((self._type_is(dialect, "integer", "real"), raw))

    def text(self, dialect: str) -> SQLExpr:
        raw = (func.json_extract_path_text(Run.config, *self.path) if dialect == "postgresql"
               else func.json_extract(Run.config, self._sqlite_path()))
        return case((self._type_is(dialect, "text"), raw))

    def where(self, name: str, c: Comparison, dialect: str) -> SQLExpr:
        kinds = {v.kind for v in c.values}
        words = {v.text.lower() for v in c.values}
        if kinds == {"number"}:
            _check_op(name, c, NUMBER_OPS)
            return _compare(self.number(dialect), c.op, [v.number for v in c.values])
        if kinds == {"word"} and words <= {"true", "false"} and c.op in ("=", "!="):
            is_true = self._type_is(dialect, "true") if dialect != "postgresql" else and_(
                self._type_is(dialect, "true"), func.json_extract_path_text(Run.config, *self.path) == "true")
            is_bool = self._type_is(dialect, "true", "false")
            wanted = is_true if words == {"true"} else and_(is_bool, not_(is_true))
            return wanted if c.op == "=" else not_(wanted)
        _check_op(name, c, TEXT_OPS)
        if "number" in kinds:
            mixed = next(v for v in c.values if v.kind == "number")
            raise _fail(f"number {mixed.shown()} among text values", mixed, f"quote it to compare {name} as text")
        expr = self.text(dialect)
        return _compare(expr, c.op, [v.text for v in c.values])

    def order(self, dialect: str) -> list[SQLExpr]:
        return [self.number(dialect), self.text(dialect)]


@dataclass(frozen=True)
class MetricField:
    key: str

    def _packed_last_value(self, dialect: str) -> SQLExpr:
        """The key's last value in the run's pack directory (packs.PackedSeries: element 4; ±inf by name)."""
        value: SQLExpr
        if dialect == "postgresql":
            value = func.jsonb_extract_path_text(Pack.directory, self.key, "4").cast(Float)
        else:
            raw = func.json_extract(Pack.directory, sqlite_json_path((self.key,), "[4]"))
            value = case((raw == "Infinity", math.inf), (raw == "-Infinity", -math.inf), else_=raw)
        return select(value).where(Pack.run_id == Run.id).scalar_subquery()

    def last_value(self, dialect: str) -> SQLExpr:
        """The value at the key's last step: from its `series` row, or from the run's pack where it is packed."""
        in_series = (select(Series.last_value).join(RunRef, RunRef.ref == Series.run_ref)
                     .where(RunRef.run_id == Run.id, Series.key == self.key)
                     .scalar_subquery())
        return func.coalesce(in_series, self._packed_last_value(dialect))

    def where(self, name: str, c: Comparison, dialect: str) -> SQLExpr:
        _check_op(name, c, NUMBER_OPS)
        return _compare(self.last_value(dialect), c.op, _numbers(name, c))

    def order(self, dialect: str) -> list[SQLExpr]:
        return [self.last_value(dialect)]


Field = TextField | NumberField | TagField | ConfigField | MetricField

FIELDS: dict[str, Field] = {
    "status": TextField(Run.status, STATUSES),
    "kind": TextField(Run.kind, KINDS),
    "preset": TextField(Run.preset),
    "name": TextField(Run.name),
    "id": TextField(Run.id),
    "tag": TagField(),
    "sweep": TextField(Run.sweep_id),
    "step": NumberField(Run.last_step),
    "created": NumberField(Run.created_at),
}
FIELD_HELP = f"{', '.join(FIELDS)}, config.<key>, metric.<key> or a metric key with a '/' such as eval/fid"


def resolve_field(token: Token) -> Field:
    name = token.text
    if name.lower() in FIELDS:
        return FIELDS[name.lower()]
    for prefix, make in (("config.", lambda rest: ConfigField(tuple(rest.split(".")))),
                         ("metric.", MetricField)):
        if name.startswith(prefix):
            rest = name[len(prefix):]
            if not rest or (prefix == "config." and "" in rest.split(".")):
                raise _fail(f"{name!r} names no key", token, f"write {prefix}<key>")
            return make(rest)  # type: ignore[no-any-return]
    if "/" in name:
        return MetricField(name)
    raise _fail(f"unknown field {name!r}", token, f"use {FIELD_HELP}")


def compile_filter(node: Node | None, dialect: str) -> SQLExpr:
    """The WHERE clause for runs (SQLite or PostgreSQL); raises FilterError for an unknown field or value."""
    if node is None:
        return true()
    if isinstance(node, BoolOp):
        parts = [compile_filter(p, dialect) for p in node.parts]
        return and_(*parts) if node.op == "and" else or_(*parts)
    return resolve_field(node.field).where(node.field.text, node, dialect)


def parse_sort(spec: str, dialect: str) -> list[Any]:
    """ORDER BY for `spec` = comma-separated fields, each optionally prefixed by '-' (descending). Missing values
    sort last either way. Raises FilterError (position within `spec`)."""
    out: list[Any] = []
    position = 0
    for part in spec.split(","):
        text = part.strip()
        start = position + len(part) - len(part.lstrip())
        position += len(part) + 1
        if not text:
            continue
        descending = text.startswith("-")
        name = text.lstrip("-+")
        token = Token("word", name, start + len(text) - len(name))
        try:
            field = resolve_field(token)
            if isinstance(field, TagField):
                raise _fail("'tag' cannot sort runs", token, "sort by a field with one value per run")
        except FilterError as exc:
            raise FilterError(str(exc), exc.token, exc.position, param="sort") from None
        direction: Callable[[SQLExpr], Any] = (lambda e: e.desc()) if descending else (lambda e: e.asc())
        out += [direction(expr).nulls_last() for expr in field.order(dialect)]
    return out

