"""The sweep page, measured in headless Chromium (Debian's /usr/bin/chromium) through the Performance API against a
real server (uvicorn, SQLite, the pre-started Redis):

1. first paint of a sweep of 48 runs (16 configurations × 3 seeds) whose runs hold 6 keys × 6,000 steps each
   (angle/G, angle/D, loss/D, loss/G, eval/quality, eval/diversity): from navigation start to the
   `sqd:sweep-painted` mark the page sets once every cell has drawn (cold = first visit, Plotly not cached; warm =
   median of the next visits), with the time its three REST answers took;
2. live updates while all 48 runs stream from another process (each `--steps-per-s` steps/s of 4 keys, an
   evaluation every 2 s):
   the page's frames/s (requestAnimationFrame), the frames in which cells were redrawn per second, the cells
   redrawn per such frame (16 = all of them), and the cost of a redraw frame — over `--seconds`, with every cell
   on screen (a 1440 × 1400 viewport).

    .venv/bin/python bench/sweep_page.py [--runs 48] [--steps 6000] [--seconds 20] [--visits 5]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "web"))
from browser_probe import browser_cpu_s, percentile, timed_visits  # noqa: E402
from live_stack import CHROMIUM, CHROMIUM_ARGS, TOKEN, DashboardServer, serve  # noqa: E402

from sqd.protocol import MetricBatch, RunStarted  # noqa: E402

KEYS = ("angle/G", "angle/D", "loss/D", "loss/G", "eval/quality", "eval/diversity")
GRID = {"loss.name": ["nsgan", "lsgan", "hinge", "wgan"], "reg.names": ["none", "gp"], "optim.lr_g": [1e-3, 2e-3]}
VIEWPORT = {"width": 1440, "height": 1400}

# Every cell redrawn in every frame, as if all of them got new points each frame: the page's own capacity.
FORCED_PROBE = """(seconds) => new Promise((resolve) => {
  const grid = window.__sqdSweepGrid; const s0 = { ...grid.stats }; const deltas = []; const draws = [];
  let last = performance.now(); const end = last + seconds * 1000; let seen = s0.frames;
  const tick = (now) => {
    deltas.push(now - last); last = now;
    if (grid.stats.frames !== seen) { draws.push(grid.stats.lastFrameMs); seen = grid.stats.frames; }
    if (now < end) { grid.invalidate(null); requestAnimationFrame(tick); }
    else resolve({ deltas, draws, frames: grid.stats.frames - s0.frames, cells: grid.stats.cellDraws - s0.cellDraws });
  };
  grid.invalidate(null); requestAnimationFrame(tick);
})"""

FRAME_PROBE = """(seconds) => new Promise((resolve) => {
  const deltas = []; const s0 = { ...window.__sqdSweep }; const draws = [];
  let last = performance.now(); const end = last + seconds * 1000; let seen = s0.frames;
  const tick = (now) => {
    deltas.push(now - last); last = now;
    const s = window.__sqdSweep;
    if (s.frames !== seen) { draws.push(s.lastFrameMs); seen = s.frames; }
    if (now < end) requestAnimationFrame(tick);
    else { const s1 = window.__sqdSweep; const d = (k) => s1[k] - s0[k];
      resolve({ deltas, draws, frames: d('frames'), cells: d('cellDraws'), drawMs: d('drawMs'), batchMs: d('batchMs'),
        batches: d('batches'), tableMs: d('tableMs'), parcoordsMs: d('parcoordsMs') }); }
  };
  requestAnimationFrame(tick);
})"""


def create_sweep(server: DashboardServer, runs: int, steps: int) -> dict:
    seeds = max(1, runs // 16)
    resp = server.http.post("/sweeps", json={"name": "bench sweep", "preset": "sqd-nsgan-digits", "grid": GRID,
                                             "seeds": seeds, "steps": steps, "max_concurrent": 10_000})
    resp.raise_for_status()
    return dict(resp.json())


def preload(server: DashboardServer, run_ids: list[str], steps: int) -> float:
    """Every run gets the 6 keys × `steps` points straight through the server's point store."""
    from sqd.server.context import ServerContext
    from sqd.server.store.points_store import store_points

    ctx = ServerContext.open(server.settings)
    rng = np.random.default_rng(0)
    s = np.arange(steps)
    t0 = time.perf_counter()
    for i, run_id in enumerate(run_ids):
        turn = 3000 + 400 * (i % 5) if i % 4 == 3 else None
        angle = 2e-2 / np.sqrt(1 + s / 50) * np.exp(rng.normal(0, 0.15, steps))
        if turn is not None:
            angle[turn:] *= 10
        series = {"angle/G": angle, "angle/D": angle * 1.4, "loss/D": 1.2 + 0.2 * np.sin(s / 90),
                  "loss/G": 0.8 + 0.3 * np.cos(s / 110), "eval/quality": 0.9 - 0.4 * np.exp(-s / 900),
                  "eval/diversity": 6.5 - 2.5 * np.exp(-s / 1200)}
        batches = [MetricBatch(run_id=run_id, keys=[k], key_index=[0] * steps, step=s.tolist(), value=v.tolist(),
                               epoch=(s // 100).tolist(), wall_time=[0.0] * steps) for k, v in series.items()]
        with ctx.sessions() as session:
            store_points(session, batches)
            session.commit()
    ctx.close()
    return time.perf_counter() - t0


def stream(redis_url: str, prefix: str, run_ids: list[str], first: int, steps_per_s: int, seconds: float,
           sent: Any) -> None:
    """In a process of its own, as trainers are: every 50 ms each run gets steps_per_s / 20 new steps of 4 keys
    (angles decaying, losses oscillating), and an evaluation every 2 s."""
    from sqd.bus import INGEST, Bus
    from sqd.protocol import EvaluationResult
    from sqd.settings import BusSettings, Settings

    bus = Bus.connect(Settings(redis_url=redis_url, bus=BusSettings(prefix=prefix)))
    per_tick, step, tick = max(1, steps_per_s // 20), first, 0
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        t0 = time.monotonic()
        events: list[Any] = []
        for i, run_id in enumerate(run_ids):
            rows = [(k, s, (2e-3 if k.startswith("angle") else 1.0) * (1 + 0.2 * np.sin(s / 17 + i)), s // 100, 0.0)
                    for s in range(step, step + per_tick) for k in ("angle/G", "angle/D", "loss/D", "loss/G")]
            events.append(MetricBatch.from_points(run_id, rows))
            if tick % 40 == 39:
                events.append(EvaluationResult(run_id=run_id, checkpoint_step=step + per_tick - 1, status="ok",
                                               metrics={"quality": 0.85 + 0.01 * (i % 7), "diversity": 6.2}))
        bus.publish(INGEST, events)
        step += per_tick
        tick += 1
        with sent.get_lock():
            sent.value += len(run_ids) * per_tick * 4
        time.sleep(max(0.0, 0.05 - (time.monotonic() - t0)))
    bus.close()


def first_paint(browser, server: DashboardServer, sweep_id: str, visits: int) -> list[dict[str, float]]:  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    # the first visit signs in and fetches Plotly.js; later ones find it in the cache
    urls = [f"{server.url}/{'' if i else f'?token={TOKEN}'}#/sweep/{sweep_id}" for i in range(visits)]
    out = timed_visits(page, urls, "sqd:sweep-painted", """() => {
          const t = (name) => performance.getEntriesByName(name)[0].startTime;
          const res = performance.getEntriesByType('resource');
          const one = (part) => { const r = res.find((x) => x.name.includes(part)); return r ? r.duration : NaN; };
          return { paint: t('sqd:sweep-painted'), data: t('sqd:sweep-data'), metrics_ms: one('/metrics?'),
                   sweep_ms: one(`/sweeps/${location.hash.split('/')[2]}`), plotly_ms: one('plotly.min.js'),
                   dcl: performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd,
                   cells: document.querySelectorAll('.sweep-cell').length }; }""")
    context.close()
    return out


def live_frames(browser, server: DashboardServer, sweep_id: str, seconds: float,  # type: ignore[no-untyped-def]
                forced: bool = False) -> dict[str, float]:
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.goto(f"{server.url}/?token={TOKEN}#/sweep/{sweep_id}")
    page.wait_for_selector("#page[data-ready=true]", timeout=60_000)
    page.wait_for_timeout(1500)
    cpu0 = browser_cpu_s()
    r = page.evaluate(FORCED_PROBE if forced else FRAME_PROBE, seconds)
    r["cpu_ms"] = (browser_cpu_s() - cpu0) * 1000 / seconds
    r.setdefault("drawMs", 0.0)
    for k in ("batchMs", "batches", "tableMs", "parcoordsMs"):
        r.setdefault(k, 0.0)
    visible = page.evaluate("""() => [...document.querySelectorAll('.sweep-cell')].filter((c) => {
      const b = c.getBoundingClientRect(); return b.top >= 0 && b.bottom <= innerHeight; }).length""")
    context.close()
    d = sorted(r["deltas"][1:])
    draws = sorted(r["draws"]) or [float("nan")]
    return {"fps": len(d) / seconds, "p50": percentile(d, 0.5), "p95": percentile(d, 0.95),
            "draw_fps": r["frames"] / seconds, "cells_per_draw": r["cells"] / max(1, r["frames"]),
            "draw_p50": percentile(draws, 0.5), "draw_p95": percentile(draws, 0.95), "visible": visible,
            "cpu_per_frame": r["cpu_ms"] * seconds / max(1, len(d)), "cpu_per_s": r["cpu_ms"],
            **{k: r[k] / seconds for k in ("drawMs", "batchMs", "batches", "tableMs", "parcoordsMs")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=48)
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--visits", type=int, default=5)
    parser.add_argument("--steps-per-s", type=int, default=100, help="live steps per second per run")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="sqd-sweep-bench-") as tmp, \
            serve(Path(tmp), args.redis_url) as server, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        sweep = create_sweep(server, args.runs, args.steps)
        run_ids = [r["id"] for r in sweep["runs"]]
        server.publish(*[RunStarted(run_id=r, name=n["name"]) for r, n in zip(run_ids, sweep["runs"], strict=True)])
        load_s = preload(server, run_ids, args.steps)
        print(f"sweep of {len(run_ids)} runs ({len(run_ids) // 3} configurations × 3 seeds), {len(KEYS)} keys × "
              f"{args.steps:,} steps each, stored in {load_s:.0f} s")
        visits = first_paint(browser, server, sweep["id"], args.visits)
        cold, warm = visits[0], visits[1:] or visits
        med = lambda key: statistics.median(v[key] for v in warm)  # noqa: E731
        print("\nfirst paint (navigation start → every cell drawn; data = the three REST answers in)")
        print(f"  cold (Plotly.js not cached): {cold['paint']:.0f} ms (DOM ready {cold['dcl']:.0f} ms, data at "
              f"{cold['data']:.0f} ms, Plotly.js fetch {cold['plotly_ms']:.0f} ms)")
        print(f"  warm, median of {len(warm)}: {med('paint'):.0f} ms (DOM ready {med('dcl'):.0f} ms, data at "
              f"{med('data'):.0f} ms; GET /sweeps/id/metrics {med('metrics_ms'):.0f} ms, GET /sweeps/id "
              f"{med('sweep_ms'):.0f} ms); cells drawn: {visits[-1]['cells']}")

        idle = live_frames(browser, server, sweep["id"], min(5.0, args.seconds))
        print(f"\nidle (nothing streaming): {idle['fps']:.1f} frames/s (frame time p50 {idle['p50']:.1f} ms) — what "
              "this machine's Chromium gives a still page right now")
        forced = live_frames(browser, server, sweep["id"], min(10.0, args.seconds), forced=True)
        print(f"forced (every cell redrawn in every frame, no server involved): {forced['fps']:.1f} frames/s, "
              f"{forced['draw_fps']:.1f} of them with all {forced['cells_per_draw']:.0f} cells redrawn; a redraw "
              f"frame's script time p50 {forced['draw_p50']:.1f} ms, p95 {forced['draw_p95']:.1f} ms; Chromium CPU "
              f"{forced['cpu_per_frame']:.1f} ms per frame (all its processes: {1000 / forced['cpu_per_frame']:.0f} "
              "frames/s per free core)")
        ctx = multiprocessing.get_context("spawn")
        sent = ctx.Value("q", 0)
        streamer = ctx.Process(target=stream, args=(args.redis_url, server.settings.bus.prefix, run_ids, args.steps,
                                                    args.steps_per_s, args.seconds + 40, sent), daemon=True)
        streamer.start()
        time.sleep(3)
        t0, sent0 = time.monotonic(), sent.value
        f = live_frames(browser, server, sweep["id"], args.seconds)
        rate = (sent.value - sent0) / (time.monotonic() - t0)
        streamer.terminate()
        print(f"\nlive: {len(run_ids)} runs × {args.steps_per_s} steps/s × 4 keys streaming ({rate:,.0f} points/s "
              f"published), {args.seconds:.0f} s, {f['visible']} of {len(run_ids) // 3} cells fully on screen")
        print(f"  page: {f['fps']:.1f} frames/s (frame time p50 {f['p50']:.1f} ms, p95 {f['p95']:.1f} ms)")
        print(f"  cell redraws: {f['draw_fps']:.1f} frames/s with a redraw, {f['cells_per_draw']:.1f} cells each; "
              f"a redraw frame's script time p50 {f['draw_p50']:.1f} ms, p95 {f['draw_p95']:.1f} ms")
        print(f"  Chromium CPU: {f['cpu_per_s']:.0f} ms per second ({f['cpu_per_frame']:.1f} ms per frame)")
        print(f"  main-thread script per second: cells {f['drawMs']:.0f} ms, live merges {f['batchMs']:.0f} ms "
              f"({f['batches']:.1f} SSE batches/s), table {f['tableMs']:.0f} ms, parallel coordinates "
              f"{f['parcoordsMs']:.0f} ms")
        browser.close()
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
