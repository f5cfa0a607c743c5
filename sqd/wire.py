"""Typed events ⇄ Redis stream fields. The only module that knows the on-the-wire layout.

A message has three fields: `t` (event type, readable in `XRANGE` without decoding), `v` (schema version) and `d`
(the event as msgpack: compact, and unlike JSON it keeps NaN and ±inf).
"""

from __future__ import annotations

from typing import Any

import msgpack
from pydantic import ValidationError

from sqd.errors import BusError, DecodeError
from sqd.protocol import EVENT_ADAPTER, SCHEMA_VERSION, AnyEvent, Event

Fields = dict[bytes | str, bytes | str]
# Larger messages stall every consumer of the stream (and Redis itself); producers split batches instead.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024


def encode(event: Event) -> dict[str, bytes]:
    if not isinstance(event, Event):
        raise BusError(f"encode: expected an Event, got {type(event).__name__}")
    kind = event.type
    try:
        body = msgpack.packb(event.model_dump(mode="python"), use_bin_type=True)
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
    try:
        return EVENT_ADAPTER.validate_python(data)
    except ValidationError as exc:
        kind = data.get("type", "<missing type>")
        raise DecodeError(f"decode: invalid '{kind}' event: {describe_validation_error(exc)}") from exc
