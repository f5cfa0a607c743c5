"""Dashboard figures, measured in headless Chromium (Debian's /usr/bin/chromium) through the Performance API
against a real server (uvicorn, SQLite, the pre-started Redis):

1. first paint of a run whose per-step series hold 1,000,000 points each (angle/G, angle/D, loss/D, loss/G, plus
   1,000 per-epoch angles and 1,000 evaluations): from navigation start to the `sqd:run-painted` mark the run page
   sets once every chart has drawn (cold = first visit, Plotly not cached; warm = median of the next visits);
2. frame times while N runs stream live (each 100 steps/s, 4 keys, an evaluation every 5 s), on the compare page
   showing all of them (7 charts × N traces), on the run page of one of them, and on the runs page: requestAnimation-
   Frame deltas (p50 / p95 / max) and long tasks (> 50 ms) over the window.

    .venv/bin/python bench/dashboard_perf.py [--points 1000000] [--runs 10] [--seconds 20] [--visits 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "web"))
from browser_probe import percentile, timed_visits  # noqa: E402
from live_stack import CHROMIUM, CHROMIUM_ARGS, TOKEN, DashboardServer, RunFeed, serve, wait  # noqa: E402

from sqd.protocol import MetricBatch  # noqa: E402

STEP_KEYS = ("angle/G", "angle/D", "loss/D", "loss/G")
EVAL_KEYS = ("eval/quality", "eval/diversity", "eval/fid")
CHUNK = 200_000
RENDERERS = ("webgl", "svg")

FRAME_PROBE = """(seconds) => new Promise((resolve) => {
  const deltas = []; const longTasks = [];
  const obs = new PerformanceObserver((list) => list.getEntries().forEach((e) => longTasks.push(e.duration)));
  try { obs.observe({ type: "longtask", buffered: false }); } catch (e) { /* not supported: none reported */ }
  let last = performance.now(); const end = last + seconds * 1000;
  const tick = (now) => {
    deltas.push(now - last); last = now;
    if (now < end) requestAnimationFrame(tick); else { obs.disconnect(); resolve({ deltas, longTasks }); }
  };
  requestAnimationFrame(tick);
})"""


def preload(server: DashboardServer, run_id: str, n: int) -> float:
    """Store a finished-looking run with n points per step key straight through the server's point store."""
    from sqd.server.context import ServerContext
    from sqd.server.store import migrate, runs_store
    from sqd.server.store.points_store import store_points

    ctx = ServerContext.open(server.settings)
    migrate.upgrade(ctx.engine)
    t0 = time.perf_counter()
    with ctx.sessions() as s:
        runs_store.create_run(s, name="one-million", kind="external", status="running", run_id=run_id,
                              config={"dataset": {"name": "stacked_digits"}})
        s.commit()
    rng = np.random.default_rng(0)
    epoch_len = max(1, n // 1000)
    for lo in range(0, n, CHUNK):
        steps = np.arange(lo, min(n, lo + CHUNK))
        epochs = (steps // epoch_len).tolist()
        batches = []
        for i, key in enumerate(STEP_KEYS):
            values = 1e-2 / np.sqrt(1 + steps / 5e4) * np.exp(rng.normal(0, 0.2, len(steps))) if key.startswith(
                "angle") else 1 + 0.3 * np.sin(steps / (900 + 100 * i)) + rng.normal(0, 0.05, len(steps))
            batches.append(MetricBatch(run_id=run_id, keys=[key], key_index=[0] * len(steps), step=steps.tolist(),
                                       value=values.tolist(), epoch=epochs, wall_time=[0.0] * len(steps)))
        ends = steps[(steps + 1) % epoch_len == 0]
        sparse = [(f"angle_epoch/{p}", int(s), 0.2 / np.sqrt(1 + s / 5e4), int(s) // epoch_len, 0.0)
                  for s in ends for p in ("G", "D")]
        sparse += [(k, int(s), v, int(s) // epoch_len, 0.0) for s in ends
                   for k, v in zip(EVAL_KEYS, (0.9, 6.0 + s / n, 40 - 20 * s / n), strict=True)]
        if sparse:
            batches.append(MetricBatch.from_points(run_id, sparse))
        with ctx.sessions() as s:
            store_points(s, batches)
            s.commit()
    ctx.close()
    return time.perf_counter() - t0


def new_page(browser, renderer: str):  # type: ignore[no-untyped-def]
    """A page in a fresh context (cold cache) drawing with WebGL or SVG (the dashboard's "sqd.renderer")."""
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    context.add_init_script(f"localStorage.setItem('sqd.renderer', '{renderer}')")
    return context, context.new_page()


def first_paint(browser, server: DashboardServer, run_id: str, visits: int,  # type: ignore[no-untyped-def]
                renderer: str) -> list[dict[str, float]]:
    context, page = new_page(browser, renderer)
    # the first visit signs in and fetches Plotly.js; later ones find it in the cache
    urls = [f"{server.url}/{'' if i else f'?token={TOKEN}'}#/run/{run_id}" for i in range(visits)]
    out = timed_visits(page, urls, "sqd:run-painted", """() => {
          const paint = performance.getEntriesByName('sqd:run-painted')[0].startTime;
          const metrics = performance.getEntriesByType('resource').filter((r) => r.name.includes('/metrics?'));
          const plotly = performance.getEntriesByType('resource').find((r) => r.name.includes('plotly.min.js'));
          const data = performance.getEntriesByName('sqd:run-data')[0].startTime;
          return { paint, data, metrics_ms: metrics.length ? metrics[0].duration : NaN,
                   plotly_ms: plotly ? plotly.duration : NaN,
                   points: [...document.querySelectorAll('.plot')].reduce((n, p) =>
                     n + (p.data || []).reduce((m, t) => m + (t.x ? t.x.length : 0), 0), 0) }; }""")
    context.close()
    return out


def last_step(server: DashboardServer, run_id: str) -> int | None:
    resp = server.http.get(f"/runs/{run_id}")
    return resp.json()["last_step"] if resp.status_code == 200 else None


class Streamer(threading.Thread):
    """N simulated runs, each publishing 10 steps every 100 ms and an evaluation every 5 s."""

    def __init__(self, feeds: list[RunFeed], until: float):
        super().__init__(daemon=True)
        self.feeds, self.until, self.step = feeds, until, 1000

    def run(self) -> None:
        tick = 0
        while time.monotonic() < self.until:
            t0 = time.monotonic()
            for f in self.feeds:
                f.steps(self.step, self.step + 10)
                if tick % 50 == 49:
                    f.evaluate(self.step + 9, 0.9, 6.0, 40.0)
            self.step += 10
            tick += 1
            time.sleep(max(0.0, 0.1 - (time.monotonic() - t0)))


def frames(browser, url: str, seconds: float, ready: str, renderer: str) -> dict[str, float]:  # type: ignore[no-untyped-def]
    context, page = new_page(browser, renderer)
    page.goto(url)
    page.wait_for_selector(ready, timeout=60_000)
    page.wait_for_timeout(1000)
    result = page.evaluate(FRAME_PROBE, seconds)
    context.close()
    d = sorted(result["deltas"][1:])
    return {"frames": len(d), "p50": percentile(d, 0.5), "p95": percentile(d, 0.95), "max": d[-1],
            "fps": len(d) / seconds, "long": len(result["longTasks"]), "long_ms": sum(result["longTasks"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--visits", type=int, default=5)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="sqd-dash-bench-") as tmp, \
            serve(Path(tmp), args.redis_url) as server, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        big = "million"
        load_s = preload(server, big, args.points)
        print(f"stored {len(STEP_KEYS)} × {args.points:,} points (+ per-epoch and eval series) in {load_s:.0f} s")
        for renderer in RENDERERS:
            visits = first_paint(browser, server, big, args.visits, renderer)
            cold, warm = visits[0], visits[1:] or visits
            print(f"\nfirst paint, {renderer}: a run with {args.points:,} points per key "
                  "(navigation start → every chart drawn; data = REST answered)")
            print(f"  cold (Plotly.js not cached): {cold['paint']:.0f} ms (data at {cold['data']:.0f} ms, "
                  f"Plotly.js fetch {cold['plotly_ms']:.0f} ms)")
            print(f"  warm, median of {len(warm)}: {statistics.median(v['paint'] for v in warm):.0f} ms "
                  f"(data at {statistics.median(v['data'] for v in warm):.0f} ms)")
            print(f"  metrics request: {statistics.median(v['metrics_ms'] for v in visits):.0f} ms; "
                  f"points drawn: {visits[-1]['points']:,}")

        feeds = [RunFeed(server, f"live-{i}-{uuid.uuid4().hex[:6]}", name=f"live-{i}") for i in range(args.runs)]
        for f in feeds:
            f.start()
            f.steps(0, 1000)
        wait(lambda: all(last_step(server, f.run_id) == 999 for f in feeds), 60, "the live runs")
        streamer = Streamer(feeds, time.monotonic() + 5 * (args.seconds + 15))
        streamer.start()
        ids = ",".join(f.run_id for f in feeds)
        pages = [("compare page, all runs", f"{server.url}/#/compare?ids={ids}", "#page[data-ready=true]"),
                 ("run page, one run", f"{server.url}/#/run/{feeds[0].run_id}", "#page[data-ready=true]"),
                 ("runs page", f"{server.url}/#/runs", "tbody tr")]
        print(f"\nframe time while {args.runs} runs stream live ({args.runs} × 100 steps/s × 4 keys), "
              f"{args.seconds:.0f} s each")
        print("  page                     | renderer | frames/s | p50 ms | p95 ms | max ms | long tasks (total ms)")
        for label, url, ready in pages:
            for renderer in RENDERERS if "runs page" not in label else RENDERERS[:1]:
                f = frames(browser, url, args.seconds, ready, renderer)
                print(f"  {label:<24} | {renderer:<8} | {f['fps']:8.1f} | {f['p50']:6.1f} | {f['p95']:6.1f} | "
                      f"{f['max']:6.0f} | {f['long']} ({f['long_ms']:.0f})")
        streamer.until = 0
        browser.close()


if __name__ == "__main__":
    main()
