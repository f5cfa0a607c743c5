"""GET /runs filters and sorts on 1,000 runs × 100 metric keys (the issue's scale), SQLite and PostgreSQL: the
store query (filter + sort + count + page of 50) per filter, p50 / p95 over repeats; then again once the finished
and failed runs are packed (their metric filters read the pack directory, server/store/packs.py) — the counts of
matching runs must not change.

    .venv/bin/python bench/run_filters.py [--runs 1000] [--keys 100] [--repeats 20] [--db sqlite,postgres]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

from server_common import database
from sqlalchemy import select

from sqd.protocol import MetricBatch
from sqd.server.schemas import RunFilter
from sqd.server.store import migrate, runs_store
from sqd.server.store.db import make_engine, session_factory
from sqd.server.store.models import Run
from sqd.server.store.packs import pack_run
from sqd.server.store.points_store import store_points

FILTERS = [
    ("(none)", "", None),
    ("config.lr >= 1e-3", "config.lr >= 1e-3", None),
    ("eval/fid < 50", "eval/fid < 50", None),
    ("documented example", "config.lr >= 1e-3 and eval/fid < 50 and tag = baseline and status in (running, finished)",
     None),
    ("sort by eval/fid", "", "eval/fid"),
    ("sort by -config.lr", "", "-config.lr"),
]


def populate(url: str, runs: int, keys: int) -> None:
    engine = make_engine(url)
    migrate.upgrade(engine)
    rng = random.Random(0)
    with session_factory(engine)() as session:
        for i in range(runs):
            config = {"lr": 10 ** rng.uniform(-5, -2), "loss": {"name": rng.choice(["hinge", "nsgan", "wgan"])},
                      "seed": i}
            run = runs_store.create_run(session, name=f"run-{i}", kind="external", config=config,
                                        status=rng.choice(["running", "finished", "failed"]),
                                        tags=["baseline"] if i % 10 == 0 else ["sweep"])
            names = ["eval/fid", *(f"k/{j}" for j in range(keys - 1))]
            store_points(session, [MetricBatch.from_points(run.id, [
                (name, step, rng.uniform(10, 100), None, 0.0) for name in names for step in (0, 1)])])
            if i % 100 == 99:
                session.commit()
        session.commit()
    engine.dispose()


def pack_finished(url: str) -> int:
    """Pack every finished or failed run, as the server's packer does an hour after they end; how many."""
    engine = make_engine(url)
    sessions = session_factory(engine)
    with sessions() as session:
        ids = list(session.scalars(select(Run.id).where(Run.status.in_(["finished", "failed"]))))
    for run_id in ids:
        with sessions() as session:
            pack_run(session, run_id)
            session.commit()
    engine.dispose()
    return len(ids)


def measure(url: str, repeats: int) -> list[tuple[str, float, float, int]]:
    engine = make_engine(url)
    out = []
    with session_factory(engine)() as session:
        for label, expr, sort in FILTERS:
            times, count = [], 0
            for _ in range(repeats):
                start = time.perf_counter()
                page = runs_store.list_runs(session, RunFilter(filter=expr or None, sort=sort, limit=50))
                times.append((time.perf_counter() - start) * 1000)
                count = page.count
            times.sort()
            out.append((label, statistics.median(times), times[int(0.95 * (len(times) - 1))], count))
    engine.dispose()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--keys", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--db", default="sqlite,postgres")
    args = parser.parse_args()
    for kind in args.db.split(","):
        with tempfile.TemporaryDirectory() as home, database(kind, Path(home)) as url:
            t0 = time.perf_counter()
            populate(url, args.runs, args.keys)
            print(f"{kind}: {args.runs} runs × {args.keys} keys stored in {time.perf_counter() - t0:.0f} s")
            live = measure(url, args.repeats)
            packed = pack_finished(url)
            print(f"  {'filter':<22} {'as ingested: p50, p95':>24}   {f'{packed} runs packed: p50, p95':>28}")
            for (label, p50, p95, count), (_, q50, q95, n) in zip(live, measure(url, args.repeats), strict=True):
                same = "" if n == count else f"  MISMATCH: {n} runs match once packed"
                print(f"  {label:<22} {p50:9.1f} ms {p95:9.1f} ms   {q50:13.1f} ms {q95:9.1f} ms   "
                      f"({count} runs match){same}")


if __name__ == "__main__":
    main()
