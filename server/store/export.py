"""Full-resolution export of a run's series as CSV or JSON, streamed in chunks with a session of its own (the
response outlives the request's session). Non-finite values are written "NaN" / "Infinity" / "-Infinity"."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from sqd.server.store.models import PointRow, Series

CHUNK = 10_000


def _number(v: float | None) -> str:
    if v is None:
        return "NaN"
    if math.isinf(v):
        return "Infinity" if v > 0 else "-Infinity"
    return repr(v)


def _rows(session: Session, run_id: str, keys: list[str] | None) -> Iterator[tuple[str, int, float | None,
                                                                                    int | None, float]]:
    query = (select(Series.key, PointRow.step, PointRow.value, PointRow.epoch, PointRow.wall_time)
             .join(Series, Series.id == PointRow.series_id).where(Series.run_id == run_id))
    if keys is not None:
        query = query.where(Series.key.in_(keys))
    result = session.execute(query.order_by(Series.key, PointRow.step).execution_options(yield_per=CHUNK))
    for row in result:
        yield row.key, row.step, row.value, row.epoch, row.wall_time


def csv_chunks(sessions: sessionmaker[Session], run_id: str, keys: list[str] | None) -> Iterator[str]:
    yield "key,step,value,epoch,wall_time\n"
    with sessions() as session:
        buf: list[str] = []
        for key, step, value, epoch, wall in _rows(session, run_id, keys):
            quoted = json.dumps(key) if ("," in key or '"' in key) else key
            buf.append(f"{quoted},{step},{_number(value)},{'' if epoch is None else epoch},{wall!r}\n")
            if len(buf) >= CHUNK:
                yield "".join(buf)
                buf.clear()
        yield "".join(buf)


def json_chunks(sessions: sessionmaker[Session], run_id: str, keys: list[str] | None) -> Iterator[str]:
    """{"run_id": ..., "series": {key: {"step": [...], "value": [...], "epoch": [...], "wall_time": [...]}}}"""
    yield json.dumps({"run_id": run_id})[:-1] + ', "series": {'
    with sessions() as session:
        current: str | None = None
        cols: dict[str, list[object]] = {}

        def flush(first: bool) -> str:
            body = ", ".join(f'"{name}": [{", ".join(map(str, values))}]' for name, values in cols.items())
            return ("" if first else ", ") + f"{json.dumps(current)}: {{{body}}}"

        count = 0
        for key, step, value, epoch, wall in _rows(session, run_id, keys):
            if key != current:
                if current is not None:
                    yield flush(count == 0)
                    count += 1
                current, cols = key, {"step": [], "value": [], "epoch": [], "wall_time": []}
            cols["step"].append(step)
            cols["value"].append(json.dumps(_number(value)) if value is None or math.isinf(value) else repr(value))
            cols["epoch"].append("null" if epoch is None else epoch)
            cols["wall_time"].append(repr(wall))
        if current is not None:
            yield flush(count == 0)
    yield "}}\n"
