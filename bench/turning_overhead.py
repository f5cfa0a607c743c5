"""What alerting costs: a run's points applied batch by batch through the server's IngestHandler, and after each
batch the alert checks the alerting thread would run for it (turning-point detector + one threshold rule). Ingest
itself only queues the run id for that thread.

    .venv/bin/python bench/turning_overhead.py [--db sqlite|postgres] [--batches 200] [--steps 50]

Each batch is what a Monitor flush sends: `--steps` generator steps × (angle/G, angle/D, loss/D, loss/G), an
angle_epoch pair at each epoch end, and an evaluation's quality/diversity every 250 steps.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from server_common import bench_settings, percentile

from sqd.protocol import MetricBatch
from sqd.server.alerts import engine, rules_store
from sqd.server.alerts.rules import RuleCreate
from sqd.server.context import ServerContext
from sqd.server.ingest.consumer import IngestHandler
from sqd.server.store import migrate, runs_store

warnings.filterwarnings("ignore", category=DeprecationWarning)
STEPS_PER_EPOCH = 156


def batches(run_id: str, n: int, steps: int, seed: int = 0) -> list[MetricBatch]:
    rng = np.random.default_rng(seed)
    out = []
    for b in range(n):
        rows: list[tuple[str, int, float, int | None, float]] = []
        for s in range(b * steps, (b + 1) * steps):
            e = s // STEPS_PER_EPOCH
            level = 0.01 * (1 + 3 * np.exp(-s / 2000))
            rows += [("angle/G", s, level * np.exp(0.3 * rng.standard_normal()), e, 0.0),
                     ("angle/D", s, level * np.exp(0.3 * rng.standard_normal()), e, 0.0),
                     ("loss/D", s, 0.7 + 0.1 * rng.standard_normal(), e, 0.0),
                     ("loss/G", s, 1.5 + 0.2 * rng.standard_normal(), e, 0.0)]
            if (s + 1) % STEPS_PER_EPOCH == 0:
                rows += [("angle_epoch/G", s, 0.2 * np.exp(0.1 * rng.standard_normal()), e, 0.0),
                         ("angle_epoch/D", s, 0.3 * np.exp(0.1 * rng.standard_normal()), e, 0.0)]
            if s % 250 == 0:
                rows += [("eval/quality", s, 0.8 + 0.01 * rng.standard_normal(), e, 0.0),
                         ("eval/diversity", s, 6.0 + 0.05 * rng.standard_normal(), e, 0.0)]
        out.append(MetricBatch.from_points(run_id, rows))
    return out


def measure(ctx: ServerContext, run_id: str, data: list[MetricBatch]) -> tuple[list[float], list[float]]:
    """Per batch: the ingest transaction (with the hook replaced by a no-op: the real one only queues the run id)
    and the alert checks of that batch (what the alerting thread spends, off the ingest path)."""
    handler = IngestHandler(ctx)
    ingest, checks = [], []
    real = engine.after_ingest
    engine.after_ingest = lambda _ctx, _ids: None  # type: ignore[assignment]
    try:
        for batch in data:
            t0 = time.perf_counter()
            handler.apply([batch])
            t1 = time.perf_counter()
            engine.deliver(ctx, engine.check_runs(ctx, [run_id]))
            checks.append(time.perf_counter() - t1)
            ingest.append(t1 - t0)
    finally:
        engine.after_ingest = real  # type: ignore[assignment]
    return ingest, checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    with bench_settings(args.db) as settings:
        ctx = ServerContext.open(settings)
        try:
            migrate.upgrade(ctx.engine)
            with ctx.sessions() as s:
                runs_store.create_run(s, name="bench", kind="external", status="running", run_id="bench")
                rules_store.create_rule(s, RuleCreate(expression="eval/quality < 0.5 for 3"))
                s.commit()
            ingest, checks = measure(ctx, "bench", batches("bench", args.batches, args.steps))
        finally:
            ctx.close()
    points = sum(len(b.step) for b in batches("x", 1, args.steps))
    print(f"{args.db}: {args.batches} batches of ~{points} points ({args.steps} steps), 2-core CPU container")
    for label, t in (("ingest transaction", ingest), ("alert checks (background)", checks)):
        print(f"  {label:<26} median {1000 * percentile(t, 50):6.1f} ms  p90 {1000 * percentile(t, 90):6.1f} ms "
              f"per batch")


if __name__ == "__main__":
    main()
