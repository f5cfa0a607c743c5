// Sweep page and sweep form logic: cells, result rows (final/best exact under downsampling), sorting, parallel
// coordinates, panel scales, the pixel rasterizer, grid rows and 422 placement.
import assert from "node:assert/strict";
import { test } from "node:test";

import { scales, tickText, unionRange, widen, yRange } from "../../../web/js/mini_chart.js";
import { clearRaster, createRaster, line, parseColor, vspan } from "../../../web/js/raster.js";
import { parseRoute } from "../../../web/js/router.js";
import { coarsen, emptySeries, mergePoints } from "../../../web/js/series.js";
import { collectConfigs, collectGrid, countRuns, placeSweepErrors, splitValues,
  valueOf } from "../../../web/js/sweep_form_logic.js";
import { cellsOf, cellTitle, parcoordsModel, resultRow, seriesStats, sortRows,
  valueText } from "../../../web/js/sweep_model.js";

function series(steps, values) {
  const s = emptySeries();
  mergePoints(s, steps, values);
  return s;
}

const runs = [
  { id: "a1", config_index: 0, label: "hinge", params: { "loss.name": "hinge", "reg.names": [] }, seed: 1 },
  { id: "a0", config_index: 0, label: "hinge", params: { "loss.name": "hinge", "reg.names": [] }, seed: 0 },
  { id: "b0", config_index: 1, label: "wgan", params: { "loss.name": "wgan", "reg.names": ["gp"] }, seed: 0 },
];

test("routes reach the sweep pages", () => {
  assert.deepEqual(parseRoute("#/sweep/abc?y=cell"), { page: "sweep", id: "abc", params: { y: "cell" } });
  assert.equal(parseRoute("#/sweep/").page, "sweeps");
  assert.equal(parseRoute("#/sweeps").page, "sweeps");
});

test("cells group a configuration's seeds in launch order", () => {
  const cells = cellsOf(runs);
  assert.deepEqual(cells.map((c) => [c.index, c.runs.map((r) => r.id)]), [[0, ["a0", "a1"]], [1, ["b0"]]]);
  assert.equal(cellTitle(cells[1], ["loss.name", "reg.names"]), "wgan · gp");
  assert.equal(cellTitle(cells[0], ["loss.name", "reg.names"]), "hinge · none");
  assert.equal(cellTitle(cells[0], []), "hinge");
  assert.equal(valueText(["gp", "r1"]), "gp+r1");
});

test("final and best survive downsampling: every bucket keeps its min and max", () => {
  const s = series([0, 1, 2, 3, 4, 5, 6, 7], [0.5, 0.9, 0.6, NaN, 0.4, 0.45, 0.44, 0.47]);
  coarsen(s, 2);
  assert.equal(s.width, 4);
  assert.deepEqual(seriesStats(s, "max"), { final: 0.47, best: 0.9, n: 8 });
  assert.deepEqual(seriesStats(s, "min"), { final: 0.47, best: 0.4, n: 8 });
  assert.deepEqual(seriesStats(undefined, "max"), { final: null, best: null, n: 0 });
  const nan = series([0, 1], [0.3, NaN]);
  assert.equal(seriesStats(nan, "max").final, null); // the last value is NaN: no final value
});

test("a result row: metrics, the turning point (critical turning alert only), time", () => {
  const store = new Map([["eval/quality", series([100, 200], [0.7, 0.8])], ["eval/fid", series([100, 200], [50, 60])]]);
  const alerts = [{ rule: "q drop", severity: "warning", step: 50, epoch: 1 },
    { rule: "turning point", severity: "critical", step: 180, epoch: 3 },
    { rule: "turning_point", severity: "critical", step: 120, epoch: 2 }];
  const run = { ...runs[2], status: "failed", error: "boom", started_at: 100, finished_at: 160, last_step: 200 };
  const row = resultRow(run, store, alerts, 999);
  assert.equal(row.final_quality, 0.8);
  assert.equal(row.best_fid, 50);
  assert.equal(row.final_fid, 60);
  assert.equal(row.best_diversity, null);
  assert.deepEqual([row.turning_epoch, row.turning_step, row.alerts], [2, 120, 3]);
  assert.deepEqual([row.duration_s, row.evaluations, row.error], [60, 2, "boom"]);
  assert.equal(resultRow({ ...run, finished_at: null }, store, [], 130).duration_s, 30);
});

test("sorting: numbers, strings, status order; blanks always last; ties in launch order", () => {
  const rows = [
    { config_index: 0, seed: 0, label: "b", final_quality: 0.5, status: "finished" },
    { config_index: 0, seed: 1, label: "b", final_quality: null, status: "running" },
    { config_index: 1, seed: 0, label: "a10", final_quality: 0.9, status: "failed" },
    { config_index: 2, seed: 0, label: "a9", final_quality: 0.5, status: "queued" },
  ];
  const order = (col, dir) => sortRows(rows, col, dir).map((r) => `${r.config_index}/${r.seed}`);
  assert.deepEqual(order("final_quality", -1), ["1/0", "0/0", "2/0", "0/1"]);
  assert.deepEqual(order("final_quality", 1), ["0/0", "2/0", "1/0", "0/1"]);
  assert.deepEqual(order("label", 1), ["2/0", "1/0", "0/0", "0/1"]); // a9 before a10
  assert.deepEqual(order("status", 1), ["0/1", "2/0", "0/0", "1/0"]);
});

test("parallel coordinates: numbers stay numeric, names and lists become categories, the metric comes last", () => {
  const rows = [
    { params: { "loss.name": "hinge", "reg.names": [], "optim.lr_g": 0.001 }, seed: 0, final_quality: 0.8 },
    { params: { "loss.name": "wgan", "reg.names": ["gp"], "optim.lr_g": 0.002 }, seed: 1, final_quality: 0.6 },
    { params: { "loss.name": "wgan", "reg.names": [], "optim.lr_g": 0.002 }, seed: 0, final_quality: null },
  ];
  const m = parcoordsModel(rows, ["loss.name", "reg.names", "optim.lr_g"], "final_quality");
  assert.deepEqual(m.dimensions.map((d) => d.label), ["loss.name", "reg.names", "optim.lr_g", "seed", "final Q"]);
  assert.deepEqual(m.dimensions[0].values, [0, 1]);
  assert.deepEqual(m.dimensions[0].ticktext, ["hinge", "wgan"]);
  assert.deepEqual(m.dimensions[1].ticktext, ["none", "gp"]);
  assert.deepEqual(m.dimensions[2].values, [0.001, 0.002]);
  assert.deepEqual(m.color, [0.8, 0.6]);
  assert.equal(parcoordsModel(rows, [], "best_fid").metric.better, "min");
});

test("panel scales: shared ranges, log panels ignore values ≤ 0, pixels map inside the panel", () => {
  const a = series([0, 10], [1e-3, 1e-2]);
  const b = series([0, 10], [0, 5e-2]);
  const [lo, hi] = yRange([a, b], true);
  assert.ok(lo < 1e-3 && lo > 5e-4 && hi > 5e-2 && hi < 1e-1);
  assert.equal(yRange([series([], [])], false), null);
  const flat = yRange([series([0, 1], [2, 2])], false);
  assert.ok(flat[0] < 2 && flat[1] > 2);
  assert.deepEqual(unionRange([[0, 1], null, [-1, 0.5]]), [-1, 1]);
  const sc = scales([0, 100], [0, 1], false, 300, 62);
  assert.equal(sc.x(0), sc.left);
  assert.equal(sc.x(100), sc.right);
  assert.equal(sc.y(0), sc.bottom);
  assert.equal(sc.y(1), sc.top);
  assert.equal(tickText(0.00412), "4e-3");
  assert.equal(tickText(0.936), "0.936");
});

test("raster: lines are anti-aliased, blend over what is there, and never write outside the buffer", () => {
  const r = createRaster(20, 10);
  const blue = parseColor("#0000ff");
  line(r, 0.5, 2.5, 19.5, 2.5, blue); // a horizontal line through pixel centres: one row, full colour
  const at = (x, y) => r.pixels[y * 20 + x];
  assert.equal(at(5, 2), 0xffff0000); // ABGR: opaque blue
  assert.equal(at(5, 3), 0xffffffff);
  clearRaster(r);
  line(r, 0.5, 2.0, 19.5, 2.0, blue); // between two rows: half in each
  const b2 = (at(7, 1) >>> 16) & 255;
  const r2 = at(7, 1) & 255;
  assert.ok(b2 === 255 && r2 > 100 && r2 < 150, `half coverage, got ${at(7, 1).toString(16)}`);
  assert.equal(at(7, 1), at(7, 2));
  clearRaster(r);
  line(r, -100, -50, 300, 400, blue); // far outside: clipped, no exception, something drawn inside
  vspan(r, 3, -10, 100, blue, 0.5, [2, 1]);
  assert.ok([...r.pixels].some((p) => p !== 0xffffffff));
  assert.equal(r.pixels.length, 200);
  clearRaster(r);
  line(r, 5.5, 0.5, 6.5, 9.5, blue); // steep: every row gets ink
  for (let y = 0; y < 10; y += 1) assert.ok([...r.pixels.slice(y * 20, y * 20 + 20)].some((p) => p !== 0xffffffff));
});

test("sweep form: grid rows, explicit sets, run counts and 422 placement", () => {
  assert.deepEqual(splitValues("none, [gp, r1], gp"), ["none", "[gp, r1]", "gp"]);
  assert.deepEqual(valueOf("[gp, r1]"), ["gp", "r1"]);
  assert.deepEqual(valueOf("[]"), []);
  assert.equal(valueOf("2e-4"), "2e-4");
  const { grid, errors } = collectGrid([{ key: "loss.name", values: "nsgan, hinge" }, { key: "", values: "" },
    { key: "reg.names", values: "none,[gp,r1]" }, { key: "loss.name", values: "x" }, { key: "bad key", values: "1" },
    { key: "optim.lr_g", values: "1e-3,,2e-3" }, { key: "optim.lr_d", values: "" }]);
  assert.deepEqual(grid, { "loss.name": ["nsgan", "hinge"], "reg.names": ["none", ["gp", "r1"]] });
  assert.deepEqual(errors.map((e) => e.index), [3, 4, 5, 6]);
  assert.match(errors[0].msg, /swept twice/);
  const sets = collectConfigs("loss.name=wgan; reg.names=[gp]\n\noptim.lr_g=1e-3\nnonsense");
  assert.deepEqual(sets.configs, [{ "loss.name": "wgan", "reg.names": ["gp"] }, { "optim.lr_g": "1e-3" }, {}]);
  assert.deepEqual(sets.errors.map((e) => e.line), [4]);
  assert.deepEqual(countRuns({ presets: ["a", "b"], grid: { x: [1, 2, 3] }, configs: [], seeds: 3 }),
    { configurations: 6, runs: 18 });
  assert.equal(countRuns({ presets: ["a"], grid: {}, configs: [{}, {}], seeds: 1 }).runs, 2);
  const placed = placeSweepErrors([
    { loc: ["body", "grid", "loss.name", 1], msg: "grid loss.name: value 'x' is invalid" },
    { loc: ["body", "overrides", "train.batch"], msg: "bad batch" },
    { loc: ["body", "presets", 1], msg: "unknown preset 'nope'" },
    { loc: ["body", "confirm"], msg: "confirm it" },
    { loc: ["body", "grid"], msg: "sqd-x with a=b: cross-field" },
    { loc: ["body", "grid", "not.shown", 0], msg: "elsewhere" },
  ], [{ key: "reg.names" }, { key: "loss.name" }], [{ key: "train.batch" }]);
  assert.deepEqual(placed.grid, { 1: ["grid loss.name: value 'x' is invalid"] });
  assert.deepEqual(placed.overrides, { 0: ["bad batch"] });
  assert.deepEqual(placed.fields, { presets: ["unknown preset 'nope'"], confirm: ["confirm it"] });
  assert.deepEqual(placed.general, ["sqd-x with a=b: cross-field", "elsewhere"]);
});

test("shared scales widen with headroom, keep a floor of 0, and log scales widen in decades", () => {
  assert.deepEqual(widen([0, 1], 0), [0, 1]);
  assert.deepEqual(widen([0.2, 1.2], 0.1), [0.1, 1.3]);
  assert.deepEqual(widen([0.05, 1], 0.1), [0, 1.095]);
  const [lo, hi] = widen([1e-3, 1e-1], 0.1, true);
  assert.ok(Math.abs(Math.log10(lo) + 3.2) < 1e-9 && Math.abs(Math.log10(hi) + 0.8) < 1e-9);
  assert.equal(widen(null, 0.1), null);
});
