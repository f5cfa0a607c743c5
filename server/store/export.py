"""Full-resolution export of a run's series as CSV or JSON, streamed chunk by chunk with a session of its own (the
response outlives the request's session). Each stored chunk is decoded and formatted as a whole (numpy to lists,
then `map`), never point by point in Python. Non-finite values are written "NaN" / "Infinity" / "-Infinity".
Where a series was downsampled (retention.py) the export holds the points it kept: one per bucket, its last.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from sqd.server.store.chunk_codec import Points, decode_points
from sqd.server.store.models import Chunk, Series

NONFINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def number_texts(values: np.ndarray, quote: str = "") -> list[str]:
    """repr of each float; non-finite ones as the contract strings (wrapped in `quote`)."""
    out = list(map(repr, values.tolist()))
    for i in np.flatnonzero(~np.isfinite(values)).tolist():
        out[i] = quote + NONFINITE[out[i]] + quote
    return out


def _epoch_texts(epoch: np.ndarray, none: str) -> list[str]:
    out = list(map(str, epoch.tolist()))
    for i in np.flatnonzero(epoch < 0).tolist():
        out[i] = none
    return out


def _chunks(session: Session, run_id: str, keys: list[str] | None) -> Iterator[tuple[str, Points]]:
    query = (select(Series.key, Chunk.data).join(Series, Series.id == Chunk.series_id)
             .where(Series.run_id == run_id))
    if keys is not None:
        query = query.where(Series.key.in_(keys))
    result = session.execute(query.order_by(Series.key, Chunk.first_step).execution_options(yield_per=16))
    for key, data in result:
        yield key, decode_points(data)


def csv_chunks(sessions: sessionmaker[Session], run_id: str, keys: list[str] | None) -> Iterator[str]:
    yield "key,step,value,epoch,wall_time\n"
    with sessions() as session:
        for key, p in _chunks(session, run_id, keys):
            quoted = json.dumps(key) if ("," in key or '"' in key) else key
            line = quoted.replace("{", "{{").replace("}", "}}") + ",{},{},{},{}\n"
            yield "".join(map(line.format, p.step.tolist(), number_texts(p.value), _epoch_texts(p.epoch, ""),
                              map(repr, p.wall_time.tolist())))


def json_chunks(sessions: sessionmaker[Session], run_id: str, keys: list[str] | None) -> Iterator[str]:
    """{"run_id": ..., "series": {key: {"step": [...], "value": [...], "epoch": [...], "wall_time": [...]}}}"""
    yield json.dumps({"run_id": run_id})[:-1] + ', "series": {'
    with sessions() as session:
        current: str | None = None
        cols: dict[str, list[str]] = {}

        def flush(first: bool) -> str:
            body = ", ".join(f'"{name}": [{", ".join(texts)}]' for name, texts in cols.items())
            return ("" if first else ", ") + f"{json.dumps(current)}: {{{body}}}"

        count = 0
        for key, p in _chunks(session, run_id, keys):
            if key != current:
                if current is not None:
                    yield flush(count == 0)
                    count += 1
                current, cols = key, {"step": [], "value": [], "epoch": [], "wall_time": []}
            cols["step"] += map(str, p.step.tolist())
            cols["value"] += number_texts(p.value, '"')
            cols["epoch"] += _epoch_texts(p.epoch, "null")
            cols["wall_time"] += map(repr, p.wall_time.tolist())
        if current is not None:
            yield flush(count == 0)
    yield "}}\n"
