"""End-to-end ingest: publish → bus → SQL commit, in points/s, on SQLite and PostgreSQL, next to MLflow's
log_batch into its own SQLite store (run in /tmp/mlflow-venv, created on first use; never a project dependency).

As in a deployment, the publisher is its own process (a trainer's Monitor) and the server's ingest consumer runs
in this one; the clock runs from the publisher's first XADD to the commit of the last point. The consumer is
warmed up first with a few batches of another run (a running server has its statements compiled and its
connections open).

    .venv/bin/python bench/server_ingest.py [--points 1000000] [--mlflow-points 100000] [--no-mlflow]
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from server_common import bench_settings

from sqd.bus import INGEST, Bus
from sqd.protocol import MetricBatch
from sqd.server.context import ServerContext
from sqd.server.ingest.consumer import run_consumer
from sqd.server.store import migrate
from sqd.settings import Settings

KEYS = ("loss/D", "loss/G", "angle/G", "angle/D")
POINTS_PER_EVENT = 1000  # what a Monitor flush of 250 steps × 4 keys sends
MLFLOW_VENV = Path("/tmp/mlflow-venv")

MLFLOW_SCRIPT = r"""
import json, math, sys, time
import mlflow
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
n, store = int(sys.argv[1]), sys.argv[2]
client = MlflowClient(tracking_uri=f"sqlite:///{store}")
run = client.create_run(client.create_experiment("bench"))
keys = ("loss/D", "loss/G", "angle/G", "angle/D")
metrics = [Metric(keys[i % 4], math.sin(i), int(time.time() * 1000), i // 4) for i in range(n)]
started = time.perf_counter()
for i in range(0, n, 1000):  # log_batch takes at most 1000 metrics
    client.log_batch(run.info.run_id, metrics=metrics[i:i + 1000])
print(json.dumps({"points": n, "seconds": time.perf_counter() - started}))
"""


def events(run_id: str, n_points: int) -> list[MetricBatch]:
    out = []
    steps_per_event = POINTS_PER_EVENT // len(KEYS)
    for first in range(0, n_points // len(KEYS), steps_per_event):
        rows = [(k, s, math.sin(s), s // 1000, 0.0) for s in range(first, first + steps_per_event) for k in KEYS]
        out.append(MetricBatch.from_points(run_id, rows))
    return out


def publisher(settings: Settings, n_points: int, ready: Any, go: Any, seconds: Any) -> None:
    """The trainer side, in its own process: build the batches, wait for `go`, publish them 50 at a time."""
    bus = Bus.connect(settings)
    batches = events("bench-run", n_points)
    ready.set()
    go.wait()
    started = time.perf_counter()
    for i in range(0, len(batches), 50):
        bus.publish(INGEST, batches[i:i + 50])
    seconds.put(time.perf_counter() - started)


def _wait_for_points(ctx: ServerContext, n: int) -> None:
    while ctx.metrics.points._value.get() < n:  # counted after each commit
        time.sleep(0.002)


def sqd_ingest(kind: str, n_points: int) -> dict[str, float]:
    spawn = mp.get_context("spawn")
    with bench_settings(kind) as settings:
        ctx = ServerContext.open(settings)
        migrate.upgrade(ctx.engine)
        stop = threading.Event()
        consumer = threading.Thread(target=run_consumer, args=(ctx, stop), daemon=True)
        consumer.start()
        # the consumer thread's own CPU time, to tell work from waiting on a busy machine
        assert consumer.ident is not None
        consumer_clock = time.pthread_getcpuclockid(consumer.ident)
        while not ctx.ingest.running:
            time.sleep(0.01)
        warm_up = events("bench-warm-up", 20 * POINTS_PER_EVENT)
        ctx.bus.publish(INGEST, warm_up)
        _wait_for_points(ctx, len(warm_up) * POINTS_PER_EVENT)
        base = ctx.metrics.points._value.get()
        ready, go, seconds = spawn.Event(), spawn.Event(), spawn.Queue()
        child = spawn.Process(target=publisher, args=(settings, n_points, ready, go, seconds))
        child.start()
        ready.wait()
        cpu = time.clock_gettime(consumer_clock)
        started = time.perf_counter()
        go.set()
        _wait_for_points(ctx, base + n_points)
        elapsed = time.perf_counter() - started
        cpu = time.clock_gettime(consumer_clock) - cpu
        published = seconds.get(timeout=60)
        child.join(10)
        stop.set()
        consumer.join(10)
        ctx.close()
    return {"points": n_points, "seconds": elapsed, "points_per_s": n_points / elapsed, "publish_s": published,
            "consumer_cpu_s": cpu}


def mlflow_log_batch(n_points: int) -> dict[str, float]:
    if not (MLFLOW_VENV / "bin" / "python").exists():
        print(f"creating {MLFLOW_VENV} with mlflow (first use only)...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(MLFLOW_VENV)], check=True)
        subprocess.run([str(MLFLOW_VENV / "bin" / "pip"), "install", "-q", "mlflow"], check=True)
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run([str(MLFLOW_VENV / "bin" / "python"), "-c", MLFLOW_SCRIPT, str(n_points),
                              f"{tmp}/mlflow.db"], check=True, capture_output=True, text=True, cwd=tmp)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["points_per_s"] = result["points"] / result["seconds"]
    return dict(result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--mlflow-points", type=int, default=100_000)
    parser.add_argument("--no-mlflow", action="store_true")
    parser.add_argument("--databases", default="sqlite,postgres", help="comma-separated: sqlite, postgres")
    args = parser.parse_args()
    rows = {kind: sqd_ingest(kind, args.points) for kind in args.databases.split(",")}
    if not args.no_mlflow:
        rows["mlflow-sqlite"] = mlflow_log_batch(args.mlflow_points)
    print(f"{'store':<16}{'points':>10}{'seconds':>10}{'points/s':>12}{'vs MLflow':>11}{'consumer CPU s':>16}"
          f"{'publish s':>11}")
    base = rows.get("mlflow-sqlite", {}).get("points_per_s")
    for name, r in rows.items():
        ratio = f"{r['points_per_s'] / base:.1f}x" if base else "-"
        cpu = f"{r['consumer_cpu_s']:.2f}" if "consumer_cpu_s" in r else "-"
        publish = f"{r['publish_s']:.2f}" if "publish_s" in r else "-"
        print(f"{name:<16}{r['points']:>10}{r['seconds']:>10.2f}{r['points_per_s']:>12,.0f}{ratio:>11}{cpu:>16}"
              f"{publish:>11}")
    print(f"(machine load average while running: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
