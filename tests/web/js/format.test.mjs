// Formatting of values, durations, progress and API error details.
import assert from "node:assert/strict";
import { test } from "node:test";

import { detailText, formatDuration, formatInt, formatProgress, formatTime, formatValue, locName, runDuration,
  toNumber } from "../../../web/js/format.js";

test("toNumber reads the API's non-finite strings", () => {
  assert.ok(Number.isNaN(toNumber("NaN")));
  assert.equal(toNumber("Infinity"), Infinity);
  assert.equal(toNumber("-Infinity"), -Infinity);
  assert.equal(toNumber(2.5), 2.5);
  assert.ok(Number.isNaN(toNumber(null)));
});

test("formatValue", () => {
  assert.equal(formatValue(0.912345), "0.9123");
  assert.equal(formatValue(7.0), "7");
  assert.equal(formatValue(123.456), "123.5");
  assert.equal(formatValue(1.5e-5), "1.50e-5");
  assert.equal(formatValue(2.5e7), "2.50e7");
  assert.equal(formatValue("NaN"), "NaN");
  assert.equal(formatValue("Infinity"), "+inf");
  assert.equal(formatValue(-Infinity), "−inf");
  assert.equal(formatValue(0), "0");
});

test("formatInt and formatDuration", () => {
  assert.equal(formatInt(1234567), "1,234,567");
  assert.equal(formatInt(null), "–");
  assert.equal(formatDuration(42.7), "42 s");
  assert.equal(formatDuration(185), "3 min 05 s");
  assert.equal(formatDuration(2 * 3600 + 7 * 60), "2 h 07 min");
  assert.equal(formatDuration(3 * 86400 + 4 * 3600), "3 d 4 h");
  assert.equal(formatDuration(null), "–");
});

test("runDuration: running runs count to now, unstarted ones have none", () => {
  assert.equal(runDuration({ started_at: 100, finished_at: 160 }, 1000), 60);
  assert.equal(runDuration({ started_at: 100, finished_at: null }, 130), 30);
  assert.equal(runDuration({ started_at: null }, 130), null);
});

test("formatProgress", () => {
  assert.equal(formatProgress({ last_step: 12000, steps: 20000, last_epoch: 7 }), "12,000 of 20,000 · ep 7");
  assert.equal(formatProgress({ last_step: null }), "–");
});

test("formatTime shows the time of day today, the date otherwise", () => {
  const now = new Date(2025, 0, 31, 15, 0, 0);
  assert.equal(formatTime(new Date(2025, 0, 31, 14, 5, 9).getTime() / 1000, now), "14:05:09");
  assert.equal(formatTime(new Date(2025, 0, 2, 9, 3).getTime() / 1000, now), "2025-01-02 09:03");
});

test("422 details read as one line naming each field", () => {
  assert.equal(locName(["body", "overrides", "optim", "lr_g"]), "overrides.optim.lr_g");
  assert.equal(detailText([{ loc: ["body", "preset"], msg: "unknown preset 'x'" }, { loc: [], msg: "bad" }]),
    "preset: unknown preset 'x'; bad");
  assert.equal(detailText("run 'x' not found"), "run 'x' not found");
});
