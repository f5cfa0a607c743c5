"""HTTP ingest from one script: `POST /runs/{id}/metrics` against a real server process (`sqd server --no-ingest`,
uvicorn, SQLite or PostgreSQL), in points/s — the column-wise body that `sqd.client.Client.log_metrics` sends
(`{"series": {key: {step, value, epoch, wall_time}}}`, 100,000 points a request, orjson) next to the point-list body
(`{"points": [{key, step, value}, ...]}`, stdlib json) in the same run.

    .venv/bin/python bench/server_http_ingest.py [--points 1000000] [--databases sqlite,postgres]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
from server_common import REDIS_URL, TOKEN, bench_settings

from sqd.client import Client
from sqd.embedded_redis import free_port

KEYS = ("loss/D", "loss/G", "angle/G", "angle/D")


def points(n: int) -> list[tuple[str, int, float, int]]:
    rng = np.random.default_rng(0)
    values = rng.normal(size=n).tolist()
    return [(KEYS[i % 4], i // 4, values[i], i // 4000) for i in range(n)]


def serve(url: str, home: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "SQD_DATABASE_URL": url, "SQD_TOKEN": TOKEN, "SQD_REDIS_URL": REDIS_URL,
           "SQD_HOME": str(home), "SQD_BUS__PREFIX": f"bench-http-{port}"}
    proc = subprocess.Popen([str(Path(sys.executable).parent / "sqd"), "server", "--no-ingest", "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(base + "/api/v1/health", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the server did not start")


def bench(kind: str, n: int) -> dict[str, float]:
    rows = points(n)
    out = {}
    with bench_settings(kind) as settings:
        proc, base = serve(settings.resolved_database_url, settings.home)
        try:
            with Client(base, TOKEN, timeout=300) as client:
                run = client.create_run("http bench")["id"]
                started = time.perf_counter()
                ack = client.log_metrics(run, rows)
                out["columns (log_metrics)"] = n / (time.perf_counter() - started)
                assert ack == {"received": n, "stored": n}, ack
                run = client.create_run("http bench, point list")["id"]
                started = time.perf_counter()
                for i in range(0, n, 100_000):
                    body = {"points": [{"key": k, "step": s, "value": v, "epoch": e} for k, s, v, e in
                                       rows[i:i + 100_000]]}
                    client.http.post(f"/api/v1/runs/{run}/metrics", json=body).raise_for_status()
                out["point list"] = n / (time.perf_counter() - started)
        finally:
            proc.terminate()
            proc.wait(30)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--databases", default="sqlite,postgres")
    args = parser.parse_args()
    print(f"{'database':<10}{'body':<24}{'points/s':>12}")
    for kind in args.databases.split(","):
        for body, rate in bench(kind, args.points).items():
            print(f"{kind:<10}{body:<24}{rate:>12,.0f}")
    print(f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; {args.points:,} points each)")


if __name__ == "__main__":
    main()
