"""Typed events ⇄ Redis stream fields. The only module that knows the on-the-wire layout.

A message has three fields: `t` (event type, readable in `XRANGE` without decoding), `v` (schema version) and `d`
(the event as msgpack: compact, and unlike JSON it keeps NaN and ±inf).

A MetricBatch's five point columns travel as raw little-endian arrays under `columns` (`{name: [dtype, bytes]}`,
integer columns in the narrowest of int8…int64 that holds them, epoch "none" as -2^63): decoding a million points
is then a few np.frombuffer calls instead of a million Python floats validated one by one. A batch whose numbers
do not fit 64 bits travels as plain msgpack lists, which the decoder also reads (and the consumer then rejects
with the reason).
"""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np
from pydantic import ValidationError

from sqd.errors import BusError, DecodeError
from sqd.protocol import (
    COLUMN_NAMES,
    EVENT_ADAPTER,
    SCHEMA_VERSION,
    AnyEvent,
    Event,
    MetricBatch,
    MetricColumns,
    PackedMetrics,
    column_problem,
)

Fields = dict[bytes | str, bytes | str]
# Larger messages stall every consumer of the stream (and Redis itself); producers split batches instead.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
_INTS = ("<i1", "<i2", "<i4", "<i8")
_COLUMN_DTYPES = {"key_index": _INTS, "step": _INTS, "value": ("<f8",), "epoch": _INTS, "wall_time": ("<f8",)}
# a one-point stand-in for the columns, so the header (run, keys, ids) is validated by the model itself
_PLACEHOLDER = {"key_index": [0], "step": [0], "value": [0.0], "epoch": [None], "wall_time": [0.0]}


def _packed(a: np.ndarray) -> list[Any]:
    """[dtype, bytes] of a column; integers in the narrowest little-endian type that holds them all."""
    if a.dtype.kind == "f":
        return ["<f8", a.astype("<f8", copy=False).tobytes()]
    lo, hi = (int(a.min()), int(a.max())) if len(a) else (0, 0)
    code = next(c for c in _INTS if np.iinfo(c).min <= lo and hi <= np.iinfo(c).max)
    return [code, a.astype(code, copy=False).tobytes()]


def _metrics_body(batch: MetricBatch) -> dict[str, Any] | None:
    try:
        cols = batch.columns()
    except (OverflowError, ValueError, TypeError):  # beyond 64 bits: sent as lists, refused with a reason later
        return None
    body = batch.model_dump(mode="python", exclude=set(COLUMN_NAMES))
    body["columns"] = {name: _packed(getattr(cols, name)) for name in COLUMN_NAMES}
    return body


def encode(event: Event) -> dict[str, bytes]:
    if not isinstance(event, Event):
        raise BusError(f"encode: expected an Event, got {type(event).__name__}")
    kind = event.type
    data = _metrics_body(event) if isinstance(event, MetricBatch) else None
    try:
        body = msgpack.packb(data or event.model_dump(mode="python"), use_bin_type=True)
    except (OverflowError, ValueError, TypeError) as exc:  # an int beyond 64 bits, nesting past 512, odd types
        raise BusError(f"encode: {kind} event for run {event.run_id} cannot be packed: {exc}") from exc
    if len(body) > MAX_MESSAGE_BYTES:
        raise BusError(f"encode: {kind} event for run {event.run_id} is {len(body):,} bytes, over the "
                       f"{MAX_MESSAGE_BYTES:,}-byte limit; split it into smaller batches")
    return {"t": kind.encode(), "v": str(SCHEMA_VERSION).encode(), "d": body}


def _field(fields: Fields, name: str) -> bytes | None:
    raw = fields.get(name.encode(), fields.get(name))
    return raw.encode() if isinstance(raw, str) else raw


def describe_validation_error(err: ValidationError) -> str:
    """One line per wrong field: `points.3.step: Input should be a valid integer (got 'x')`."""
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<event>"
        got = repr(e.get("input"))
        parts.append(f"{loc}: {e['msg']} (got {got[:60]})")
    return "; ".join(parts)


def decode(fields: Fields) -> AnyEvent:
    """Decode stream fields into an event or raise DecodeError saying exactly what is wrong."""
    event = decode_packed(fields)
    return event.batch() if isinstance(event, PackedMetrics) else event


def decode_packed(fields: Fields) -> AnyEvent | PackedMetrics:
    """decode, except that a MetricBatch sent with packed columns stays packed (the ingest consumer's path)."""
    version = _field(fields, "v")
    if version is None or _field(fields, "d") is None:
        names = sorted(k.decode() if isinstance(k, bytes) else k for k in fields)
        raise DecodeError(f"decode: message lacks field 'v' or 'd' (has {names})")
    if version != str(SCHEMA_VERSION).encode():
        raise DecodeError(f"decode: schema_version {version!r} is not supported (this build reads {SCHEMA_VERSION})")
    body = _field(fields, "d") or b""
    if len(body) > MAX_MESSAGE_BYTES:
        raise DecodeError(f"decode: field 'd' is {len(body):,} bytes, over the {MAX_MESSAGE_BYTES:,}-byte limit")
    try:
        data: Any = msgpack.unpackb(body, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types for corrupt bytes
        raise DecodeError(f"decode: field 'd' is not valid msgpack ({str(exc) or type(exc).__name__})") from exc
    if not isinstance(data, dict):
        raise DecodeError(f"decode: field 'd' must hold a map, got {type(data).__name__}")
    kind = data.get("type", "<missing type>")
    columns = data.pop("columns", None) if kind == "metrics" else None
    try:
        event = EVENT_ADAPTER.validate_python(data if columns is None else {**data, **_PLACEHOLDER})
    except ValidationError as exc:
        raise DecodeError(f"decode: invalid '{kind}' event: {describe_validation_error(exc)}") from exc
    if columns is None:
        return event
    assert isinstance(event, MetricBatch)
    try:
        cols = _read_columns(columns)
    except ValueError as exc:
        raise DecodeError(f"decode: invalid 'metrics' event: {exc}") from exc
    n = len(cols)
    problem = column_problem(len(event.keys), {name: len(getattr(cols, name)) for name in COLUMN_NAMES},
                             (int(cols.key_index.min()), int(cols.key_index.max())) if n else None,
                             int(cols.step.min()) if n else None)
    if problem is None and not n:
        problem = "key_index: List should have at least 1 item"
    if problem is not None:
        raise DecodeError(f"decode: invalid 'metrics' event: {problem}")
    return PackedMetrics(event.run_id, event.keys, event.event_id, event.ts, cols)


def _read_columns(columns: Any) -> MetricColumns:
    """The arrays of a `columns` map; ValueError naming the column that is not [dtype, bytes]."""
    if not isinstance(columns, dict) or sorted(columns) != sorted(COLUMN_NAMES):
        got = sorted(columns) if isinstance(columns, dict) else type(columns).__name__
        raise ValueError(f"columns must map each of {list(COLUMN_NAMES)} to [dtype, bytes] (got {got})")
    arrays = {}
    for name, allowed in _COLUMN_DTYPES.items():
        spec = columns[name]
        if not (isinstance(spec, list) and len(spec) == 2 and spec[0] in allowed and isinstance(spec[1], bytes)):
            raise ValueError(f"columns.{name} must be [dtype, bytes] with dtype one of {list(allowed)} "
                             f"(got {repr(spec)[:60]})")
        dtype = np.dtype(spec[0])
        if len(spec[1]) % dtype.itemsize:
            raise ValueError(f"columns.{name}: {len(spec[1])} bytes is not a whole number of {spec[0]} values")
        arrays[name] = np.frombuffer(spec[1], dtype).astype(np.float64 if dtype.kind == "f" else np.int64,
                                                            copy=False)
    return MetricColumns(**arrays)
