"""End-to-end ingest: publish → bus → SQL commit, in points/s, on SQLite and PostgreSQL, next to MLflow's
log_batch into its own SQLite store (run in /tmp/mlflow-venv, created on first use; never a project dependency).

    .venv/bin/python bench/server_ingest.py [--points 1000000] [--mlflow-points 100000] [--no-mlflow]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from server_common import bench_settings

from sqd.bus import INGEST
from sqd.protocol import MetricBatch
from sqd.server.context import ServerContext
from sqd.server.ingest.consumer import run_consumer
from sqd.server.store import migrate

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


def sqd_ingest(kind: str, n_points: int) -> dict[str, float]:
    with bench_settings(kind) as settings:
        ctx = ServerContext.open(settings)
        migrate.upgrade(ctx.engine)
        batches = events("bench-run", n_points)
        stop = threading.Event()
        cpu: list[float] = []

        def consume() -> None:  # the consumer thread's own CPU time, to tell work from waiting on a busy machine
            start = time.thread_time()
            run_consumer(ctx, stop)
            cpu.append(time.thread_time() - start)

        consumer = threading.Thread(target=consume, daemon=True)
        consumer.start()
        while not ctx.ingest.running:
            time.sleep(0.01)
        started = time.perf_counter()
        for i in range(0, len(batches), 50):
            ctx.bus.publish(INGEST, batches[i:i + 50])
        published = time.perf_counter() - started
        committed = ctx.metrics.points
        while committed._value.get() < n_points:  # counted after each commit
            time.sleep(0.005)
        seconds = time.perf_counter() - started
        stop.set()
        consumer.join(10)
        ctx.close()
    return {"points": n_points, "seconds": seconds, "points_per_s": n_points / seconds, "publish_s": published,
            "consumer_cpu_s": cpu[0] if cpu else math.nan}


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
