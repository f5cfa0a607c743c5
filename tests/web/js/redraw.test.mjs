// The live-redraw scheduler: one chart at a time, idle in proportion to the cost, invisible charts wait.
import assert from "node:assert/strict";
import { test } from "node:test";

import { createScheduler } from "../../../web/js/redraw.js";

function fakeClock() {
  let t = 0;
  const timers = [];
  return {
    now: () => t,
    frame: (cb) => timers.push({ at: t, cb }),
    later: (cb, ms) => timers.push({ at: t + ms, cb }),
    /** Run timers in time order until none is left (draws advance the clock by their cost). */
    async settle() {
      while (timers.length) {
        timers.sort((a, b) => a.at - b.at);
        const next = timers.shift();
        t = Math.max(t, next.at);
        await next.cb();
        await new Promise((r) => setImmediate(r));
      }
    },
    advance: (ms) => { t += ms; },
  };
}

function job(clock, log, name, cost, visible = () => true) {
  return { visible, draw: async () => { log.push([name, clock.now()]); clock.advance(cost); } };
}

test("requests coalesce and charts draw one at a time with idle time between", async () => {
  const clock = fakeClock();
  const s = createScheduler({ ...clock, idleFactor: 2 });
  const log = [];
  const a = job(clock, log, "a", 10);
  const b = job(clock, log, "b", 10);
  s.request(a);
  s.request(a);
  s.request(b);
  await clock.settle();
  assert.deepEqual(log, [["a", 0], ["b", 30]]); // a costs 10, then 20 idle before b
  assert.equal(s.pending(), 0);
});

test("an invisible chart waits until poked", async () => {
  const clock = fakeClock();
  const s = createScheduler({ ...clock });
  const log = [];
  let shown = false;
  s.request(job(clock, log, "hidden", 5, () => shown));
  await clock.settle();
  assert.deepEqual(log, []);
  assert.equal(s.pending(), 1);
  shown = true;
  s.poke();
  await clock.settle();
  assert.equal(log.length, 1);
});

test("forget drops a pending redraw; a failing draw does not stop the others", async () => {
  const clock = fakeClock();
  const s = createScheduler({ ...clock });
  const log = [];
  const a = job(clock, log, "a", 1);
  s.request(a);
  s.forget(a);
  await clock.settle();
  assert.deepEqual(log, []);
  const bad = { visible: () => true, draw: async () => { throw new Error("boom"); } };
  const b = job(clock, log, "b", 1);
  s.request(bad);
  s.request(b);
  const error = console.error;
  console.error = () => {};
  try {
    await clock.settle();
  } finally {
    console.error = error;
  }
  assert.deepEqual(log.map((x) => x[0]), ["b"]);
});
