"""Load test: simulated trainers publishing angles and losses, dashboard clients on SSE and scripts querying REST,
against a real server process (embedded Valkey + SQLite, as `sqd up` runs them) on this machine.

Defaults are the issue's: 50 trainers × 100 steps/s × 4 keys, 10 SSE clients, 5 REST scripts, 10 minutes.
Prints sustained ingest points/s, stream lag p95, SSE latency p50/p95, REST p50/p95, and the server's memory at the
start and end of the second half (growth = leak). Every loop is bounded by --seconds; only loopback is used.

Usage: .venv/bin/python bench/load.py [--seconds 600] [--trainers 50] [--steps-per-s 100]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from sqd.bus import INGEST, Bus
from sqd.embedded_redis import EmbeddedRedis, free_port
from sqd.protocol import MetricBatch, RunStarted
from sqd.settings import Settings

KEYS = ("loss/D", "loss/G", "angle/G", "angle/D")
LATENCY_KEY = "load/sent_at"  # its value is the publish time, so a receiver can tell the end-to-end latency


def p(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def trainers(redis_url: str, run_ids: list[str], steps_per_s: int, seconds: float, sent: Any) -> None:
    """All simulated trainers, in a process of their own (the clients' threads would otherwise share its GIL):
    every 100 ms each publishes the steps it made since the last tick. `sent` counts the points published."""
    bus = Bus.connect(Settings(redis_url=redis_url))
    tick_s, step = 0.1, 0
    per_tick = max(1, int(steps_per_s * tick_s))
    next_tick = time.monotonic()
    until = next_tick + seconds
    while time.monotonic() < until:
        now = time.time()
        events = []
        for run_id in run_ids:
            rows = [(k, s, 0.001 * s, s // 1000, now) for s in range(step, step + per_tick) for k in KEYS]
            rows.append((LATENCY_KEY, step, now, step // 1000, now))
            events.append(MetricBatch.from_points(run_id, rows))
        bus.publish(INGEST, events)
        with sent.get_lock():
            sent.value += sum(len(e) for e in events)
        step += per_tick
        next_tick += tick_s
        time.sleep(max(0.0, next_tick - time.monotonic()))
    bus.close()


def sse_client(url: str, headers: dict[str, str], until: float, latencies: list[float]) -> None:
    with httpx.Client(timeout=httpx.Timeout(10, read=30)) as client:
        while time.time() < until:
            try:
                with client.stream("GET", url, headers=headers) as resp:
                    for line in resp.iter_lines():
                        if time.time() >= until:
                            return
                        if line.startswith("data:") and LATENCY_KEY in line:
                            series = json.loads(line[5:]).get("series", {})
                            sent = series.get(LATENCY_KEY, {}).get("value", [])
                            if sent:
                                latencies.append(time.time() - float(sent[-1]))
            except httpx.HTTPError:
                time.sleep(0.5)


def rest_script(base: str, headers: dict[str, str], run_ids: list[str], until: float, latencies: list[float],
                errors: list[str]) -> None:
    with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
        i = 0
        while time.time() < until:
            run_id = run_ids[i % len(run_ids)]
            t0 = time.perf_counter()
            r = client.get(f"/api/v1/runs/{run_id}/metrics", params={"keys": "loss/D,angle/G", "max_points": 1000})
            latencies.append(time.perf_counter() - t0)
            if r.status_code >= 500:
                errors.append(f"{r.status_code} {r.text[:100]}")
            i += 1
            time.sleep(0.2)


def stream_lag(bus: Bus) -> int:
    for group in bus.client.xinfo_groups(bus.key(INGEST)):
        if group["name"] in (b"server", "server"):
            return int(group.get("lag") or 0) + int(group.get("pending") or 0)
    return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--trainers", type=int, default=50)
    ap.add_argument("--steps-per-s", type=int, default=100)
    ap.add_argument("--sse-clients", type=int, default=10)
    ap.add_argument("--rest-clients", type=int, default=5)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        home, port, token = Path(tmp), free_port(), "load-test-token"
        valkey = EmbeddedRedis(home / "valkey")
        redis_url = valkey.start()
        env = {**os.environ, "SQD_HOME": str(home), "SQD_REDIS_URL": redis_url, "SQD_TOKEN": token}
        server = subprocess.Popen([sys.executable, "-m", "sqd", "server", "--port", str(port)], env=env,
                                  stdout=subprocess.DEVNULL, stderr=open(home / "server.log", "w"))  # noqa: SIM115
        base, headers = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {token}"}
        try:
            deadline = time.time() + 60
            while time.time() < deadline:
                try:
                    if httpx.get(f"{base}/api/v1/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.3)
            bus = Bus.connect(Settings(redis_url=redis_url))
            run_ids = [f"load-{i:02d}" for i in range(args.trainers)]
            bus.publish(INGEST, [RunStarted(run_id=r, name=r) for r in run_ids])

            start = time.time()
            until = start + args.seconds
            sent = mp.get_context("spawn").Value("q", 0)
            publisher = mp.get_context("spawn").Process(
                target=trainers, args=(redis_url, run_ids, args.steps_per_s, args.seconds, sent), daemon=True)
            sse_lat: list[float] = []
            rest_lat: list[float] = []
            errors: list[str] = []
            threads: list[threading.Thread] = []
            for i in range(args.sse_clients):
                url = f"{base}/api/v1/events?run_id={run_ids[i % len(run_ids)]}"
                threads.append(threading.Thread(target=sse_client, args=(url, headers, until, sse_lat), daemon=True))
            for _ in range(args.rest_clients):
                threads.append(threading.Thread(target=rest_script, args=(base, headers, run_ids, until, rest_lat,
                                                                          errors), daemon=True))
            publisher.start()
            for t in threads:
                t.start()
            lags: list[tuple[float, int]] = []
            rss: list[tuple[float, float]] = []
            while time.time() < until:
                lags.append((time.time() - start, stream_lag(bus)))
                rss.append((time.time() - start, rss_mb(server.pid)))
                time.sleep(1.0)
            publisher.join(30)
            for t in threads:
                t.join(35)
            drain_deadline = time.time() + 60
            while stream_lag(bus) > 0 and time.time() < drain_deadline:
                time.sleep(0.5)

            half = args.seconds / 2
            lag_first = [lag for t, lag in lags if t < half] or [0]
            lag_second = [lag for t, lag in lags if t >= half] or [0]
            rss_second = [m for t, m in rss if t >= half]
            print(f"load: {args.trainers} trainers × {args.steps_per_s} steps/s × {len(KEYS)} keys (+ a timestamp), "
                  f"{args.sse_clients} SSE clients, {args.rest_clients} REST scripts, {args.seconds:.0f} s")
            asked = args.trainers * (args.steps_per_s * len(KEYS) + 10)  # + one timestamp point per 100 ms tick
            print(f"ingest points/s (published over {args.seconds:.0f} s, all committed when lag = 0): "
                  f"{sent.value / args.seconds:,.0f} of {asked:,} asked")
            print(f"stream lag (messages) p95: {p([lag for _, lag in lags], 0.95):.0f}; mean first half "
                  f"{statistics.mean(lag_first):.1f}, second half {statistics.mean(lag_second):.1f}; "
                  f"after drain {stream_lag(bus)}")
            print(f"SSE latency p50 / p95: {p(sse_lat, 0.5) * 1000:.0f} / {p(sse_lat, 0.95) * 1000:.0f} ms "
                  f"({len(sse_lat)} samples)")
            print(f"REST metrics query p50 / p95: {p(rest_lat, 0.5) * 1000:.0f} / {p(rest_lat, 0.95) * 1000:.0f} ms "
                  f"({len(rest_lat)} queries, {len(errors)} 5xx)")
            if rss_second:
                print(f"server RSS second half: {rss_second[0]:.0f} MB → {rss_second[-1]:.0f} MB "
                      f"(growth {rss_second[-1] - rss_second[0]:+.0f} MB)")
        finally:
            server.terminate()
            server.wait(30)
            valkey.stop()


if __name__ == "__main__":
    main()
