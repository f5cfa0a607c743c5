"""Full-resolution export of a run's series as CSV or JSON, streamed chunk by chunk with a session of its own (the
response outlives the request's session). Each stored chunk is decoded and formatted as a whole (numbers to text by
orjson, rows joined with `map`), never point by point in Python. Non-finite values are written "NaN" / "Infinity" /
"-Infinity". Where a series was downsampled (retention.py) the export holds the points it kept: one per bucket,
its last.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import orjson
from sqlalchemy.orm import Session, sessionmaker

from sqd.server.store.chunk_codec import Points
from sqd.server.store.chunk_read import iter_window
from sqd.server.store.series_catalog import series_of

NONFINITE = {"nan": b"NaN", "inf": b"Infinity", "-inf": b"-Infinity"}


def _texts(values: np.ndarray) -> list[bytes]:
    """Each number as text (orjson's shortest round-trip form: several times faster than repr)."""
    return orjson.dumps(values.tolist())[1:-1].split(b",") if len(values) else []


def value_texts(values: np.ndarray, quote: bytes = b"") -> list[bytes]:
    """Floats as text; non-finite ones as the contract strings (wrapped in `quote`)."""
    out = _texts(values)
    for i in np.flatnonzero(~np.isfinite(values)).tolist():
        out[i] = quote + NONFINITE[str(values[i])] + quote
    return out


def epoch_texts(epoch: np.ndarray, none: bytes) -> list[bytes]:
    none_at = np.flatnonzero(epoch < 0)
    if len(none_at) == len(epoch):
        return [none] * len(epoch)
    out = _texts(epoch)
    for i in none_at.tolist():
        out[i] = none
    return out


def _chunks(session: Session, run_id: str, keys: list[str] | None) -> Iterator[tuple[str, Points]]:
    for e in series_of(session, run_id, keys):
        for p in iter_window(session, e):
            yield e.key, p


def csv_chunks(sessions: sessionmaker[Session], run_id: str, keys: list[str] | None) -> Iterator[bytes]:
    yield b"key,step,value,epoch,wall_time\n"
    with sessions() as session:
        for key, p in _chunks(session, run_id, keys):
            quoted = (json.dumps(key) if ("," in key or '"' in key) else key).encode()
            rows = zip([quoted] * len(p), _texts(p.step), value_texts(p.value), epoch_texts(p.epoch, b""),
                       _texts(p.wall_time), strict=True)
            yield b"\n".join(map(b",".join, rows)) + b"\n"


def json_chunks(sessions: sessionmaker[Session], run_id: str, keys: list[str] | None) -> Iterator[bytes]:
    """{"run_id": ..., "series": {key: {"step": [...], "value": [...], "epoch": [...], "wall_time": [...]}}}"""
    yield json.dumps({"run_id": run_id}).encode()[:-1] + b', "series": {'
    with sessions() as session:
        current: str | None = None
        cols: dict[str, list[bytes]] = {}

        def flush(first: bool) -> bytes:
            body = b", ".join(b'"%s": [%s]' % (name.encode(), b",".join(texts)) for name, texts in cols.items())
            return (b"" if first else b", ") + json.dumps(current).encode() + b": {" + body + b"}"

        count = 0
        for key, p in _chunks(session, run_id, keys):
            if key != current:
                if current is not None:
                    yield flush(count == 0)
                    count += 1
                current, cols = key, {"step": [], "value": [], "epoch": [], "wall_time": []}
            cols["step"] += _texts(p.step)
            cols["value"] += value_texts(p.value, b'"')
            cols["epoch"] += epoch_texts(p.epoch, b"null")
            cols["wall_time"] += _texts(p.wall_time)
        if current is not None:
            yield flush(count == 0)
    yield b"}}\n"
