// The runs table's column and filter helpers (pure parts).
import assert from "node:assert/strict";
import { test } from "node:test";

import { cellText, configKeys, extraColumn, flattenConfig, loadPicked,
  savePicked } from "../../../web/js/runs_columns.js";
import { filterError } from "../../../web/js/runs_filter.js";

test("flattenConfig joins nested keys with dots and keeps lists whole", () => {
  assert.deepEqual(flattenConfig({ optim: { lr_g: 2e-4, betas: [0.5, 0.999] }, seed: 0, loss: { name: "hinge" } }),
    { "optim.lr_g": 2e-4, "optim.betas": [0.5, 0.999], seed: 0, "loss.name": "hinge" });
  assert.deepEqual(flattenConfig(null), {});
});

test("configKeys is the sorted union over runs", () => {
  assert.deepEqual(configKeys([{ config: { b: 1, a: { x: 1 } } }, { config: { c: 2, b: 3 } }, { config: {} }]),
    ["a.x", "b", "c"]);
});

test("extra columns: config values, last metric values and their server sort fields", () => {
  const run = { config: { optim: { lr: 1e-3 } } };
  const cfg = extraColumn("config.optim.lr");
  assert.equal(cfg.value(run), 1e-3);
  assert.equal(cfg.server, "config.optim.lr");
  assert.equal(extraColumn("config.missing").value(run), null);
  const fid = extraColumn("metric:eval/fid");
  assert.equal(fid.server, "eval/fid");
  assert.equal(fid.value(run, { latest: { "eval/fid": { step: 1, value: 42 } } }), 42);
  assert.equal(fid.value(run, null), null);
  assert.equal(extraColumn("metric:accuracy").server, "metric.accuracy");
  assert.deepEqual([cellText(null), cellText(0.000123456), cellText("hinge"), cellText("NaN"), cellText([1, 2])],
    ["–", "1.23e-4", "hinge", "NaN", "[1,2]"]);
});

test("picked columns survive in storage; junk there is ignored", () => {
  const store = new Map();
  const storage = { getItem: (k) => store.get(k) ?? null, setItem: (k, v) => store.set(k, v) };
  assert.deepEqual(loadPicked(storage), []);
  savePicked(["config.lr", "metric:eval/fid"], storage);
  assert.deepEqual(loadPicked(storage), ["config.lr", "metric:eval/fid"]);
  store.set("sqd.runs.columns", "{not json");
  assert.deepEqual(loadPicked(storage), []);
});

test("filterError finds the server's filter_syntax detail", () => {
  const detail = [{ loc: ["query", "filter"], msg: "m", type: "filter_syntax", token: "&", position: 9 }];
  assert.equal(filterError({ detail }).position, 9);
  assert.equal(filterError({ detail: "run 'x' not found" }), null);
  assert.equal(filterError(null), null);
});
