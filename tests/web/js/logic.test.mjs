// Routes, epochs, colours, launch-form logic, chart zoom events, ceiling m, token capture.
import assert from "node:assert/strict";
import { test } from "node:test";

import { extractToken } from "../../../web/js/auth.js";
import { zoomFromRelayout } from "../../../web/js/charts.js";
import { assignColors, PALETTE, runColor } from "../../../web/js/colors.js";
import { epochMap } from "../../../web/js/epochs.js";
import { collectOverrides, groupPresets, placeErrors } from "../../../web/js/launch_form.js";
import { modeCount, otherKeys, systemCharts } from "../../../web/js/metrics.js";
import { parseRoute, routeHash } from "../../../web/js/router.js";

test("routes parse and print", () => {
  assert.deepEqual(parseRoute("#/run/abc%2F1"), { page: "run", id: "abc/1", params: {} });
  assert.deepEqual(parseRoute("#/compare?ids=a,b,,c").ids, ["a", "b", "c"]);
  assert.equal(parseRoute("").page, "runs");
  assert.equal(parseRoute("#/nowhere").page, "runs");
  assert.equal(parseRoute("#/run/").page, "runs");
  assert.deepEqual(parseRoute("#/runs?status=running,failed&q=gp").params, { status: "running,failed", q: "gp" });
  assert.equal(routeHash("compare", { params: { ids: "a,b", x: "" } }), "#/compare?ids=a,b");
  assert.equal(routeHash("run", { id: "a b" }), "#/run/a%20b");
  assert.equal(parseRoute(routeHash("runs", { params: { q: "x&y=z" } })).params.q, "x&y=z");
});

test("epochs: a step maps to its fractional epoch and back, the running epoch extrapolates", () => {
  // epochs 0..2 end at steps 99, 199, 299
  const m = epochMap([0, 1, 2], [99, 199, 299]);
  assert.equal(m.toEpoch(99), 1);
  assert.equal(m.toEpoch(299), 3);
  assert.ok(Math.abs(m.toEpoch(149) - 1.5) < 1e-9);
  assert.ok(Math.abs(m.toEpoch(349) - 3.5) < 1e-9);
  assert.ok(Math.abs(m.toStep(m.toEpoch(123)) - 123) < 1e-9);
  assert.equal(epochMap([], []), null);
});

test("epochs: uneven lengths and a run that reports from epoch 5", () => {
  const m = epochMap([5, 6], [560, 660]);
  assert.equal(m.toEpoch(560), 6);
  assert.equal(m.toEpoch(460), 5); // epoch 5 assumed as long as epoch 6
  const uneven = epochMap([0, 1], [9, 109]);
  assert.equal(uneven.toEpoch(-1), 0);
  assert.ok(Math.abs(uneven.toEpoch(59) - 1.5) < 1e-9);
});

test("colours: stable per run, distinct within a comparison", () => {
  assert.equal(runColor("run-a"), runColor("run-a"));
  const ids = Array.from({ length: PALETTE.length }, (_, i) => `run-${i}`);
  const colors = assignColors(ids);
  assert.equal(new Set(Object.values(colors)).size, PALETTE.length);
  assert.equal(assignColors(["x", "y"]).x, assignColors(["x"]).x);
});

test("presets group by seed with titles", () => {
  const groups = groupPresets([{ name: "b", seed: "003" }, { name: "a", seed: "000" }, { name: "c", seed: "003" },
    { name: "d", seed: null }]);
  assert.deepEqual(groups.map((g) => g.seed), ["000", "003", "other"]);
  assert.deepEqual(groups[1].presets.map((p) => p.name), ["b", "c"]);
  assert.match(groups[0].title, /R3GAN/);
});

test("overrides: blank rows ignored, bad keys and missing values caught before sending", () => {
  const { overrides, errors } = collectOverrides([{ key: "optim.lr_g", value: " 1e-3 " }, { key: "", value: "" },
    { key: "bad key", value: "1" }, { key: "train.steps", value: "" }, { key: "optim.lr_g", value: "2" }]);
  assert.deepEqual(overrides, { "optim.lr_g": "1e-3" });
  assert.deepEqual(errors.map((e) => e.index), [2, 3, 4]);
});

test("422 errors land on their rows; unplaceable ones stay visible", () => {
  const rows = [{ key: "optim.lr_g", value: "fast" }, { key: "optim.betas", value: "[2]" }, { key: "foo", value: "1" }];
  const placed = placeErrors([
    { loc: ["body", "overrides", "optim", "lr_g"], msg: "optim.lr_g: not a number" },
    { loc: ["body", "overrides", "optim", "betas", "1"], msg: "betas needs two" },
    { loc: ["body", "overrides", "foo"], msg: "unknown key 'foo'" },
    { loc: ["body", "overrides", "loss", "name"], msg: "loss.name: wgan needs gp" },
    { loc: ["body", "preset"], msg: "unknown preset" },
  ], rows);
  assert.deepEqual(Object.keys(placed.rows), ["0", "1", "2"]);
  assert.deepEqual(placed.fields.preset, ["unknown preset"]);
  assert.deepEqual(placed.general, ["loss.name: wgan needs gp"]);
  assert.deepEqual(placeErrors("bad gateway", rows).general, ["bad gateway"]);
});

test("zoom events from Plotly's relayout", () => {
  assert.deepEqual(zoomFromRelayout({ "xaxis.range[0]": 10, "xaxis.range[1]": 20 }), { range: [10, 20] });
  assert.deepEqual(zoomFromRelayout({ "xaxis.range": [1, 2] }), { range: [1, 2] });
  assert.deepEqual(zoomFromRelayout({ "xaxis.autorange": true }), { reset: true });
  assert.equal(zoomFromRelayout({ "yaxis.range[0]": 1 }), null);
  assert.equal(zoomFromRelayout({ autosize: true }), null);
});

test("ln m: from the evaluation, else the dataset or profile", () => {
  assert.equal(modeCount({ config: { dataset: { name: "celeba" } } }), 10177);
  assert.equal(modeCount({ config: { eval: { profile: "digits" } } }), 1000);
  assert.equal(modeCount({ config: {} }, [{ metrics: { modes_total: 500 } }]), 500);
  assert.equal(modeCount({ config: {} }), null);
});

test("other keys are the ones no fixed chart shows", () => {
  assert.deepEqual(otherKeys(["loss/G", "grad_norm/G", "eval/modes_covered", "angle/D", "sys/cpu"]),
    ["eval/modes_covered", "grad_norm/G"]);
});

test("system charts: one trace per GPU in index order, only quantities the run has", () => {
  const got = systemCharts(["sys/gpu10/util", "sys/gpu2/util", "sys/gpu2/temp", "sys/cpu", "loss/G"]);
  assert.deepEqual(got.map((c) => c.chart.id), ["sys-gpu-util", "sys-gpu-temp", "sys-cpu"]);
  assert.deepEqual(got[0].traces, [{ key: "sys/gpu2/util", label: "GPU 2" }, { key: "sys/gpu10/util", label: "GPU 10" }]);
  assert.deepEqual(systemCharts(["loss/G"]), []);
});

test("the token leaves the URL", () => {
  const r = extractToken("http://127.0.0.1:8765/?token=abc#/runs");
  assert.equal(r.token, "abc");
  assert.equal(r.cleanUrl, "http://127.0.0.1:8765/#/runs");
  assert.equal(extractToken("http://h/?x=1").token, null);
});

test("WebGL by default on a GPU, SVG for software WebGL, the user's choice wins", async () => {
  const { chooseWebGL, isSoftwareRenderer } = await import("../../../web/js/charts.js");
  const swiftshader = "ANGLE (Google, Vulkan 1.3.0 (SwiftShader Device (Subzero)), SwiftShader driver)";
  assert.ok(isSoftwareRenderer(swiftshader));
  assert.ok(!isSoftwareRenderer("ANGLE (NVIDIA, NVIDIA GeForce RTX 3080 Direct3D11)"));
  assert.equal(chooseWebGL(null, "NVIDIA GeForce RTX 3080"), true);
  assert.equal(chooseWebGL(null, swiftshader), false);
  assert.equal(chooseWebGL(null, null), false); // no WebGL at all
  assert.equal(chooseWebGL("webgl", swiftshader), true);
  assert.equal(chooseWebGL("svg", "NVIDIA"), false);
});
