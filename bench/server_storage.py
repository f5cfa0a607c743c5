"""Bytes per stored point, from the database's own size accounting, for typical GAN series on SQLite and PostgreSQL.

Two databases per engine, filled through the server's point store (server/store/points_store.py):

* `long run`: one run as the Monitor reports it — loss/D, loss/G (float32 losses, noisy), angle/G, angle/D (float64
  angles, log-normal noise around a decaying trend) at every step with one wall_time per step (time.time() of a
  ~20 steps/s loop with jitter, to the millisecond as the Monitor sends it), per-epoch angles, and Q / D / FID
  every 1,000 steps — `--steps` steps; angles at float32 precision as the Monitor sends them; then the same
  with time.time() unrounded and float64 angles (a producer that sends them so: the lossless floor);
* `many runs`: `--runs` runs × 100 keys × 100 steps (40 float32 losses, 40 float64 angles, 20 slow schedules such
  as a learning rate), the case of the issue (1,000 × 100 × 100 = 10 M points).

SQLite: (page_count − freelist_count) × page_size after a WAL checkpoint, and the same per table with dbstat when
the build has it. PostgreSQL: pg_total_relation_size of chunks and series (indexes and TOAST included) after
VACUUM FULL (ingest rewrites open chunks and series rows; the dead versions are autovacuum's to reclaim). Also prints
each key family's compressed payload (chunk blobs only) per point, and what the wall_time column costs.

    .venv/bin/python bench/server_storage.py [--steps 200000] [--runs 1000] [--databases sqlite,postgres]
"""

from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict

import numpy as np
from server_common import bench_settings
from sqlalchemy import Engine, func, select, text

from sqd.protocol import MetricBatch
from sqd.server.store import migrate, runs_store
from sqd.server.store.db import make_engine, session_factory
from sqd.server.store.models import Chunk, Run, Series
from sqd.server.store.packs import pack_run
from sqd.server.store.points_store import store_points

BATCH = 200_000


def _batch(run: str, key: str, steps: np.ndarray, values: np.ndarray, epochs: np.ndarray,
           walls: np.ndarray) -> MetricBatch:
    return MetricBatch.model_construct(run_id=run, keys=[key], key_index=[0] * len(steps), step=steps.tolist(),
                                       value=values.tolist(), epoch=epochs.tolist(), wall_time=walls.tolist())


def wall_times(n: int, rng: np.random.Generator, start: float, ms: bool) -> np.ndarray:
    """time.time() of a ~20 steps/s loop with jitter; to the millisecond (`ms`) as the Monitor sends it."""
    walls = start + np.cumsum(0.05 + rng.exponential(0.002, n))
    return np.array([round(w, 3) for w in walls.tolist()]) if ms else walls  # as sqd.trainer.metric_buffer.wall_ms


def sent_angles(angles: np.ndarray, as_sent: bool) -> np.ndarray:
    """Angles as the Monitor sends them (float32 precision, sqd.trainer.publisher.as_float32), or exact float64."""
    return angles.astype(np.float32).astype(np.float64) if as_sent else angles


def long_run(steps: int, rng: np.random.Generator, ms: bool = True) -> list[MetricBatch]:
    s = np.arange(steps, dtype=np.int64)
    epochs = s // 1000
    walls = wall_times(steps, rng, 1.7e9, ms)
    series: dict[str, np.ndarray] = {
        "loss/D": (0.7 + 0.1 * np.exp(-s / 5e4) + rng.normal(0, 0.05, steps)).astype(np.float32),
        "loss/G": (1.5 + 0.3 * np.sin(s / 7e3) + rng.normal(0, 0.2, steps)).astype(np.float32),
        "angle/G": sent_angles(1e-2 / np.sqrt(1 + s / 5e4) * np.exp(rng.normal(0, 0.2, steps)), ms),
        "angle/D": sent_angles(2e-2 / np.sqrt(1 + s / 5e4) * np.exp(rng.normal(0, 0.2, steps)), ms),
    }
    out = [_batch("long", k, s[i:i + BATCH], v.astype(np.float64)[i:i + BATCH], epochs[i:i + BATCH],
                  walls[i:i + BATCH]) for k, v in series.items() for i in range(0, steps, BATCH)]
    ends = s[999::1000]
    for key, v in {"angle_epoch/G": sent_angles(0.2 / np.sqrt(1 + ends / 5e4), ms),
                   "angle_epoch/D": sent_angles(0.3 / np.sqrt(1 + ends / 5e4), ms),
                   "eval/quality": 0.9 - 0.3 * np.exp(-ends / 3e4) + rng.normal(0, 0.01, len(ends)),
                   "eval/diversity": 6 + rng.normal(0, 0.05, len(ends)),
                   "eval/fid": 40 * np.exp(-ends / 5e4) + 8 + rng.normal(0, 0.3, len(ends))}.items():
        out.append(_batch("long", key, ends, v, epochs[ends], walls[ends]))
    return out


def live(batches: list[MetricBatch], steps: int, every: int = 250) -> list[list[MetricBatch]]:
    """The same points as a live run sends them: one transaction per `every` steps, holding every key's points
    of those steps (the open chunk is then extended, sealed and compacted batch by batch)."""
    columns = [(b, *(np.asarray(getattr(b, f)) for f in ("step", "value", "epoch", "wall_time"))) for b in batches]
    out = []
    for lo in range(0, steps, every):
        group = []
        for b, step, value, epoch, wall in columns:
            a, z = np.searchsorted(step, lo), np.searchsorted(step, lo + every)
            if z > a:
                group.append(_batch(b.run_id, b.keys[0], step[a:z], value[a:z], epoch[a:z], wall[a:z]))
        out.append(group)
    return out


def many_runs(runs: int, rng: np.random.Generator) -> list[list[MetricBatch]]:
    """Run ids are 32 hex characters, as the server makes them (they are stored in every series row)."""
    s = np.arange(100, dtype=np.int64)
    out = []
    for r in range(runs):
        run_id = f"{r:032x}"
        walls = wall_times(100, rng, 1.7e9 + r * 1000, ms=True)
        batches = []
        for k in range(100):
            if k < 40:
                v = (0.7 + rng.normal(0, 0.05, 100)).astype(np.float32).astype(np.float64)
            elif k < 80:
                v = sent_angles(1e-2 * np.exp(rng.normal(0, 0.2, 100)), as_sent=True)
            else:
                v = np.full(100, 2e-4) * (0.5 ** (s // 50))
            batches.append(_batch(run_id, f"k{k:03d}", s, v, s // 10, walls))
        out.append(batches)
    return out


def fill(engine: Engine, groups: list[list[MetricBatch]]) -> int:
    sessions = session_factory(engine)
    with sessions() as session:
        for run in sorted({b.run_id for g in groups for b in g}):
            runs_store.create_run(session, name=run, kind="external", status="running", run_id=run)
        session.commit()
    points = 0
    for group in groups:
        with sessions() as session:
            points += len(store_points(session, group).new)
            session.commit()
    return points


def database_bytes(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            page = conn.exec_driver_sql("PRAGMA page_size").scalar_one()
            used = conn.exec_driver_sql("PRAGMA page_count").scalar_one() - conn.exec_driver_sql(
                "PRAGMA freelist_count").scalar_one()
            out = {"database": used * page}
            try:
                for name, size in conn.exec_driver_sql("SELECT name, sum(pgsize) FROM dbstat GROUP BY name"):
                    out[name] = int(size)
            except Exception:  # noqa: BLE001 - a SQLite built without dbstat: the total is enough
                pass
            return out
        # the open chunk and the series rows are rewritten by every batch: count what is stored, not the dead
        # row versions autovacuum has yet to reclaim (SQLite: free pages are not counted above)
        conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM FULL")
        tables = {t: conn.execute(text("SELECT pg_total_relation_size(:t)"), {"t": t}).scalar_one()
                  for t in ("chunks", "series", "packs")}
        schema = conn.execute(text("SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c JOIN pg_namespace n "
                                   "ON n.oid = c.relnamespace WHERE n.nspname = current_schema() AND c.relkind = 'r'"))
        return {"database": int(schema.scalar_one()), **tables}


def payload_by_family(engine: Engine) -> dict[str, tuple[int, int]]:
    """key family (loss, angle, eval, ...) → (blob bytes, points)."""
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    with session_factory(engine)() as session:
        rows = session.execute(select(Series.key, func.sum(func.length(Chunk.data) + func.length(Chunk.rollups)),
                                      func.sum(Chunk.n)).join(Chunk, Chunk.series_id == Series.id)
                               .group_by(Series.key))
        for key, size, n in rows:
            family = key.split("/")[0] if "/" in key else ("loss" if key < "k040" else "angle" if key < "k080"
                                                           else "schedule")
            out[family][0] += int(size)
            out[family][1] += int(n)
    return {k: (v[0], v[1]) for k, v in out.items()}


def pack_all(engine: Engine) -> None:
    """Pack every run, as the server's packer does once a run has been finished for an hour."""
    sessions = session_factory(engine)
    with sessions() as session:
        run_ids = list(session.scalars(select(Run.id)))
    for run_id in run_ids:
        with sessions() as session:
            pack_run(session, run_id)
            session.commit()


def _report(kind: str, label: str, points: int, sizes: dict[str, int], families: dict[str, tuple[int, int]],
            seconds: float) -> None:
    big = {name: size for name, size in sizes.items() if name != "database" and size / points >= 0.05}
    big["other"] = sum(size for name, size in sizes.items() if name != "database" and name not in big)
    parts = ", ".join(f"{name} {size / points:.2f}" for name, size in big.items())
    print(f"{kind:<9}{label:<24}{points:>12,}{sizes['database'] / 1e6:>10.1f} MB{sizes['database'] / points:>8.2f}"
          f"   ({parts}; {seconds:.1f} s)")
    if families:
        print(" " * 33 + "chunk payload bytes/point: " + ", ".join(
            f"{f} {b / n:.2f}" for f, (b, n) in sorted(families.items())))


def measure(kind: str, label: str, groups: list[list[MetricBatch]]) -> None:
    """Bytes per point as stored by ingest, then once the runs are finished and packed."""
    with bench_settings(kind) as settings:
        engine = make_engine(settings.resolved_database_url)
        migrate.upgrade(engine)
        started = time.perf_counter()
        points = fill(engine, groups)
        seconds = time.perf_counter() - started
        _report(kind, label, points, database_bytes(engine), payload_by_family(engine), seconds)
        started = time.perf_counter()
        pack_all(engine)
        seconds = time.perf_counter() - started
        _report(kind, "  finished, packed", points, database_bytes(engine), {}, seconds)
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--databases", default="sqlite,postgres")
    args = parser.parse_args()
    print(f"{'database':<9}{'data':<24}{'points':>12}{'size':>13}{'B/point':>8}   (per table B/point; seconds)")
    for kind in args.databases.split(","):
        measure(kind, f"long run, {args.steps:,} steps", [long_run(args.steps, np.random.default_rng(0))])
        measure(kind, "  same, sent live", live(long_run(args.steps, np.random.default_rng(0)), args.steps))
        measure(kind, "  same, exact (µs, f64)", [long_run(args.steps, np.random.default_rng(0), ms=False)])
        measure(kind, f"{args.runs:,} runs x 100 x 100", many_runs(args.runs, np.random.default_rng(1)))
    print(f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
