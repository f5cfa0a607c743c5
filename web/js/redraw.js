// Live redraws under a CPU budget. SSE batches arrive every frame while runs stream; redrawing a Plotly chart costs
// tens of milliseconds on a laptop (hundreds on a loaded machine), so redrawing every chart on every batch would
// leave no frame for scrolling or hovering. The scheduler redraws one chart at a time, skips charts scrolled out of
// view (they catch up when they come back), and after each redraw stays idle for `idleFactor` × its cost: charts
// take at most 1 / (1 + idleFactor) of the main thread, and a chart's latest data is what gets drawn, so bursts
// coalesce. Timing functions are injected so the logic is unit-tested under node with a fake clock.

/**
 * A scheduler. Each job is {visible(): bool, draw(): Promise}; `request(job)` marks it dirty. Options:
 * now() → ms, frame(cb) (requestAnimationFrame), later(cb, ms) (setTimeout), idleFactor.
 */
export function createScheduler({
  now = () => performance.now(),
  frame = (cb) => requestAnimationFrame(cb),
  later = (cb, ms) => setTimeout(cb, ms),
  idleFactor = 2,
} = {}) {
  const dirty = new Set();
  let busy = false;
  let waiting = false;
  let idleUntil = 0;

  function pump() {
    if (busy || waiting) return;
    const job = [...dirty].find((j) => j.visible());
    if (!job) return; // nothing on screen needs drawing; `poke()` when visibility changes
    const wait = idleUntil - now();
    waiting = true;
    const go = () => frame(() => {
      waiting = false;
      run(job);
    });
    if (wait > 0) later(go, wait);
    else go();
  }

  async function run(job) {
    if (!dirty.has(job)) return pump();
    dirty.delete(job);
    busy = true;
    const start = now();
    try {
      await job.draw();
      await new Promise((resolve) => frame(resolve)); // count the layout and paint that follow the draw
    } catch (err) {
      console.error("chart redraw failed", err); // one broken chart must not stop the others
    } finally {
      const cost = now() - start;
      busy = false;
      idleUntil = now() + idleFactor * cost;
      pump();
    }
  }

  return {
    request(job) {
      dirty.add(job);
      pump();
    },
    /** The job was drawn some other way (first paint, zoom): nothing pending for it. */
    forget(job) {
      dirty.delete(job);
    },
    /** Visibility changed: a chart scrolled into view may be waiting. */
    poke: pump,
    pending: () => dirty.size,
  };
}

export const scheduler = typeof window === "undefined" ? null : createScheduler();
