// Downsampling merge: live points joining the server's power-of-two buckets, coarsening, NaN/inf kept.
import assert from "node:assert/strict";
import { test } from "node:test";

import { coarsen, emptySeries, fromApi, keepBounded, latest, mergeLive, mergePoint, mergePoints, toPlot }
  from "../../../web/js/series.js";

const api = (over) => ({ step: [], value: [], min: [], max: [], count: [], nan: [], bucket_width: 1, ...over });

test("fromApi decodes the non-finite strings", () => {
  const s = fromApi(api({ step: [1, 2, 3], value: ["NaN", "Infinity", 2], min: ["NaN", 1, 2], max: ["NaN",
    "Infinity", 2], count: [1, 1, 1], nan: [1, 0, 0] }));
  assert.ok(Number.isNaN(s.value[0]));
  assert.equal(s.value[1], Infinity);
  assert.equal(s.max[1], Infinity);
  assert.equal(s.width, 1);
});

test("full resolution: append, insert a late point, replace a redelivered one", () => {
  const s = emptySeries();
  mergePoints(s, [1, 2, 4], [10, 20, 40]);
  mergePoint(s, 3, 30);
  mergePoint(s, 2, 21);
  assert.deepEqual(s.step, [1, 2, 3, 4]);
  assert.deepEqual(s.value, [10, 21, 30, 40]);
  assert.deepEqual(s.count, [1, 1, 1, 1]);
});

test("downsampled: a live point joins the last bucket when it falls in it, else opens a new one", () => {
  // width 4 buckets [0..3] and [4..7]; server reports their last steps 3 and 5
  const s = fromApi(api({ step: [3, 5], value: [1, 2], min: [0, 2], max: [1, 2], count: [4, 2], nan: [0, 0],
    bucket_width: 4 }));
  mergePoint(s, 6, 9); // bucket 1
  mergePoint(s, 7, -1); // bucket 1
  mergePoint(s, 8, 5); // bucket 2
  assert.deepEqual(s.step, [3, 7, 8]);
  assert.deepEqual(s.value, [1, -1, 5]);
  assert.deepEqual(s.min, [0, -1, 5]);
  assert.deepEqual(s.max, [1, 9, 5]);
  assert.deepEqual(s.count, [4, 4, 1]);
});

test("downsampled: a late point updates its bucket's min/max without moving its last value", () => {
  const s = fromApi(api({ step: [3, 7], value: [1, 2], min: [1, 2], max: [1, 2], count: [1, 1], nan: [0, 0],
    bucket_width: 4 }));
  mergePoint(s, 5, 100);
  assert.deepEqual(s.value, [1, 2]);
  assert.deepEqual(s.max, [1, 100]);
  mergePoint(s, 9, 3);
  mergePoint(s, 1, -50); // bucket 0, earlier than its last step
  assert.deepEqual(s.min, [-50, 2, 3]);
  assert.equal(s.step[0], 3);
});

test("NaN stays visible: counted in its bucket, min/max skip it", () => {
  const s = emptySeries(4);
  mergePoints(s, [0, 1, 2], [1, NaN, 3]);
  assert.deepEqual(s.nan, [1]);
  assert.equal(s.min[0], 1);
  assert.equal(s.max[0], 3);
  const plot = toPlot(s);
  assert.equal(plot.nonFinite.length, 1);
  assert.equal(plot.nonFinite[0].kind, "NaN");
});

test("toPlot: non-finite values become gaps plus markers, the band appears only when downsampled", () => {
  const s = emptySeries();
  mergePoints(s, [0, 1, 2, 3], [1, "NaN", "Infinity", "-Infinity"]);
  const p = toPlot(s, (x) => x * 10);
  assert.deepEqual(p.x, [0, 10, 20, 30]);
  assert.deepEqual(p.y, [1, null, null, null]);
  assert.equal(p.band, null);
  assert.deepEqual(p.nonFinite.map((m) => m.kind), ["NaN", "+inf", "-inf"]);
  assert.deepEqual(p.nonFinite.map((m) => m.step), [1, 2, 3]);
  s.width = 2;
  assert.ok(toPlot(s).band);
});

test("coarsen doubles the width and merges aligned buckets exactly", () => {
  const s = emptySeries();
  mergePoints(s, [0, 1, 2, 3, 4, 5, 6, 7], [5, 1, 7, 2, 0, 9, 3, 4]);
  coarsen(s, 2);
  assert.equal(s.width, 4);
  assert.deepEqual(s.step, [3, 7]);
  assert.deepEqual(s.value, [2, 4]);
  assert.deepEqual(s.min, [1, 0]);
  assert.deepEqual(s.max, [7, 9]);
  assert.deepEqual(s.count, [4, 4]);
});

test("coarsening keeps a one-step spike in max", () => {
  const s = emptySeries();
  const steps = Array.from({ length: 10000 }, (_, i) => i);
  mergePoints(s, steps, steps.map((i) => (i === 4321 ? 1e6 : 1)));
  coarsen(s, 100);
  assert.ok(s.step.length <= 100);
  assert.equal(Math.max(...s.max), 1e6);
  assert.equal(s.count.reduce((a, b) => a + b, 0), 10000);
});

test("keepBounded coarsens only past twice the target", () => {
  const s = emptySeries();
  mergePoints(s, [0, 1, 2, 3, 4], [1, 2, 3, 4, 5]);
  keepBounded(s, 3);
  assert.equal(s.width, 1);
  mergePoint(s, 6, 7);
  mergePoint(s, 7, 8);
  keepBounded(s, 3);
  assert.ok(s.step.length <= 3);
});

test("mergeLive: a zoomed window keeps only its points at full resolution", () => {
  const s = emptySeries();
  mergeLive(s, [5, 10, 15, 20], [1, 2, 3, 4], [8, 16], 2);
  assert.deepEqual(s.step, [10, 15]);
  const unzoomed = emptySeries();
  mergeLive(unzoomed, [0, 1, 2, 3, 4, 5, 6, 7], [1, 1, 1, 1, 1, 1, 1, 1], null, 2);
  assert.ok(unzoomed.step.length <= 4);
});

test("latest skips trailing NaN", () => {
  const s = emptySeries();
  mergePoints(s, [1, 2, 3], [0.5, 0.7, NaN]);
  assert.deepEqual(latest(s), { step: 2, value: 0.7 });
  assert.equal(latest(emptySeries()), null);
});
