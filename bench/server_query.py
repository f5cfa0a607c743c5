"""Query latency of a 1,000,000-point series downsampled to 1,000 buckets, on SQLite and PostgreSQL: through the
HTTP API (in-process, JSON included), the store function alone, and decoding every point then bucketing in numpy
for comparison (what a query would cost without the per-chunk rollups); then the same series exported as CSV,
streamed through the HTTP API and by the store alone, in points/s.

    .venv/bin/python bench/server_query.py [--points 1000000] [--max-points 1000] [--repeat 30]
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np
from server_common import bench_settings, percentile
from sqlalchemy import select

from sqd.protocol import MetricBatch
from sqd.server.context import ServerContext
from sqd.server.store import migrate, runs_store
from sqd.server.store.chunk_codec import bucketize
from sqd.server.store.chunk_read import window_points
from sqd.server.store.export import csv_chunks
from sqd.server.store.models import Series, run_ref
from sqd.server.store.points_store import store_points
from sqd.server.store.series_query import query_series

warnings.filterwarnings("ignore", category=DeprecationWarning)

def load(ctx: ServerContext, n: int) -> None:
    with ctx.sessions() as s:
        runs_store.create_run(s, name="bench", kind="external", status="running", run_id="q")
        s.commit()
    steps = np.arange(n)
    values = np.sin(steps / 500.0) + np.random.default_rng(0).normal(0, 0.1, n)
    for lo in range(0, n, 100_000):
        batch = MetricBatch(run_id="q", keys=["loss/D"], key_index=[0] * min(100_000, n - lo),
                            step=steps[lo:lo + 100_000].tolist(), value=values[lo:lo + 100_000].tolist(),
                            epoch=[None] * min(100_000, n - lo), wall_time=[0.0] * min(100_000, n - lo))
        with ctx.sessions() as s:
            store_points(s, [batch])
            s.commit()


def timed(fn, repeat: int) -> list[float]:  # type: ignore[no-untyped-def]
    fn()  # warm the page cache once
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(1000 * (time.perf_counter() - t))
    return out


def export_rate(stream, n: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """Points per second while consuming the whole CSV stream: per wall-clock second, and per CPU-second of this
    thread (steadier on a shared machine; meaningful when this thread does the work)."""
    started, cpu = time.perf_counter(), time.thread_time()
    lines = sum(chunk.count(b"\n") for chunk in stream)
    assert lines == n + 1, lines
    return n / (time.perf_counter() - started), n / (time.thread_time() - cpu)


def bench(kind: str, n: int, max_points: int, repeat: int) -> dict[str, list[float]]:
    from fastapi.testclient import TestClient

    from sqd.server.app import create_app

    with bench_settings(kind) as settings:
        settings = settings.model_copy(update={"server": settings.server.model_copy(
            update={"ingest_in_process": False})})
        ctx = ServerContext.open(settings)
        migrate.upgrade(ctx.engine)
        load(ctx, n)
        with ctx.sessions() as s:
            sid = s.execute(select(Series.id).where(Series.run_ref == run_ref("q"))).scalar_one()
            cpu = time.thread_time()
            store_ms = timed(lambda: query_series(s, "q", ["loss/D"], max_points), repeat)
            cpu_ms = [1000 * (time.thread_time() - cpu) / (repeat + 1)]
            level = max(0, (n // max_points - 1).bit_length())
            naive_ms = timed(lambda: bucketize((p := window_points(s, sid)).step, p.value, level), max(3, repeat // 5))
        export_store = export_rate(csv_chunks(ctx.sessions, "q", None), n)
        with TestClient(create_app(settings)) as client:
            url = f"/api/v1/runs/q/metrics?keys=loss/D&max_points={max_points}"
            assert len(client.get(url).json()["series"]["loss/D"]["step"]) <= max_points
            http_ms = timed(lambda: client.get(url).raise_for_status(), repeat)
            with client.stream("GET", "/api/v1/runs/q/export?format=csv") as resp:
                export_http = export_rate(resp.iter_bytes(), n)
        ctx.close()
    print(f"{kind:<10}{'CSV export':<16}{export_http[0]:>12,.0f} points/s over HTTP, {export_store[0]:,.0f} by the "
          f"store ({export_store[1]:,.0f} per CPU-second)")
    return {"HTTP API": http_ms, "store query": store_ms, "store query CPU": cpu_ms, "decode all + numpy": naive_ms}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--max-points", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--databases", default="sqlite,postgres")
    args = parser.parse_args()
    print(f"{args.points:,}-point series → {args.max_points} buckets (ms)")
    print(f"{'database':<10}{'path':<16}{'p50':>9}{'p95':>9}")
    for kind in args.databases.split(","):
        for path, ms in bench(kind, args.points, args.max_points, args.repeat).items():
            print(f"{kind:<10}{path:<16}{percentile(ms, 50):>9.1f}{percentile(ms, 95):>9.1f}")
    print(f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
