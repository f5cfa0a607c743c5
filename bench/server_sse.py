"""SSE delivery latency: publish a point on the bus → ingest commits it → live stream → the browser-facing
/api/v1/events stream hands it to a client. Each point's value is its publish time, so latency = arrival - value.

    .venv/bin/python bench/server_sse.py [--events 200] [--interval-ms 50]
"""

from __future__ import annotations

import argparse
import threading
import time

from server_common import TOKEN, bench_settings, percentile

from sqd.bus import INGEST
from sqd.client import Client
from sqd.protocol import MetricBatch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--interval-ms", type=float, default=50)
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    args = parser.parse_args()

    import uvicorn

    from sqd.bus import Bus
    from sqd.server.app import create_app

    with bench_settings(args.database) as settings:
        settings = settings.model_copy(update={"bus": settings.bus.model_copy(update={"block_ms": 1000})})
        port = 8790
        server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port,
                                               log_level="warning", timeout_graceful_shutdown=1))
        server_thread = threading.Thread(target=server.run, daemon=True)
        server_thread.start()
        url = f"http://127.0.0.1:{port}"
        with Client(url, token=TOKEN) as client:
            while True:
                try:
                    client.health()
                    break
                except Exception:  # noqa: BLE001 - starting up
                    time.sleep(0.1)
        latencies: list[float] = []
        ready = threading.Event()

        def listen() -> None:
            with Client(url, token=TOKEN) as c:
                stream = c.events(["sse"], timeout=30)
                ready.set()
                for event in stream:
                    if event.event == "points":
                        now = time.time()
                        latencies.extend(now - v for v in event.data["series"]["lat"]["value"])
                        if len(latencies) >= args.events:
                            return

        listener = threading.Thread(target=listen, daemon=True)
        listener.start()
        ready.wait(10)
        time.sleep(1.0)
        bus = Bus.connect(settings)
        for step in range(args.events):
            bus.publish(INGEST, [MetricBatch.from_points("sse", [("lat", step, time.time(), 0, time.time())])])
            time.sleep(args.interval_ms / 1000)
        listener.join(30)
        server.should_exit = True
        server_thread.join(10)
        bus.close()
    ms = [1000 * x for x in latencies]
    print(f"SSE delivery latency over {len(ms)} points ({args.database}, one point every {args.interval_ms:.0f} ms)")
    print(f"p50 {percentile(ms, 50):.1f} ms   p95 {percentile(ms, 95):.1f} ms   max {max(ms):.1f} ms")


if __name__ == "__main__":
    main()
