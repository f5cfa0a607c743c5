"""Bus throughput: metric points/s through publish → XREADGROUP → decode → ack, for batch sizes 1, 100, 1000,
against the pre-started Redis (127.0.0.1:6379) and the embedded Valkey that `sqd up` uses.

The publisher runs in its own process (as a trainer would); the clock runs from the first publish to the last ack.
Usage: .venv/bin/python bench/bus_throughput.py [--seconds-per-case 3]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import tempfile
import threading
import time
import uuid
from pathlib import Path

from sqd.bus import Bus, drop_prefix
from sqd.embedded_redis import EmbeddedRedis
from sqd.protocol import MetricBatch
from sqd.settings import BusSettings, Settings

EVENTS_PER_PUBLISH = 50  # one pipelined round trip carries this many messages


def make_batch(run_id: str, size: int, start: int) -> MetricBatch:
    keys = ("loss/D", "loss/G", "angle/G", "angle/D")
    return MetricBatch.from_points(run_id, ((keys[i % 4], start + i // 4, 0.001 * i, 0, 1.7e9) for i in range(size)))


def publisher(url: str, prefix: str, batch_size: int, total_points: int) -> None:
    bus = Bus.connect(Settings(redis_url=url), prefix=prefix)
    n_messages = total_points // batch_size
    template = make_batch("bench", batch_size, 0)
    sent = 0
    while sent < n_messages:
        k = min(EVENTS_PER_PUBLISH, n_messages - sent)
        bus.publish("ingest", [template.model_copy(update={"event_id": uuid.uuid4().hex}) for _ in range(k)])
        sent += k


def run_case(url: str, batch_size: int, total_points: int) -> float:
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    bus = Bus.connect(Settings(redis_url=url, bus=BusSettings(prefix=prefix, batch=500, block_ms=50)))
    consumer = bus.consumer("ingest", "bench", "c")
    consumer.ensure_group()
    expected = total_points // batch_size
    got = 0
    stop = threading.Event()

    def handler(ds: list) -> None:
        nonlocal got
        got += len(ds)
        if got >= expected:
            stop.set()

    proc = mp.get_context("spawn").Process(target=publisher, args=(url, prefix, batch_size, total_points))
    t0 = time.perf_counter()
    proc.start()
    consumer.run(handler, stop)
    elapsed = time.perf_counter() - t0
    proc.join()
    drop_prefix(url, prefix)
    bus.close()
    return expected * batch_size / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--points", type=int, default=2_000_000, help="points per case at batch 1000")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        embedded = EmbeddedRedis(Path(tmp) / "v")
        targets = {"redis 7 (127.0.0.1:6379, TCP)": "redis://127.0.0.1:6379/0", "embedded valkey (unix socket)":
                   embedded.start()}
        print(f"{'server':34} {'batch':>6} {'points/s':>12}")
        for name, url in targets.items():
            for batch_size, total in ((1, 30_000), (100, args.points // 4), (1000, args.points)):
                rate = run_case(url, batch_size, total)
                print(f"{name:34} {batch_size:>6} {rate:>12,.0f}")
        embedded.stop()


if __name__ == "__main__":
    main()
