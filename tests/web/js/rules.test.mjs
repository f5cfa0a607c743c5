// Alert-rule form logic (web/js/rules_logic.js).
import assert from "node:assert/strict";
import { test } from "node:test";

import { actionText, describeRule, placeRuleErrors, ruleBody } from "../../../web/js/rules_logic.js";

const run = { id: "r1", preset: "demo-turning" };

test("a threshold rule from the condition text, scoped to the run", () => {
  const { body, errors } = ruleBody({ kind: "threshold", expression: " eval/quality < 0.5 for 3 ", scope: "run",
    severity: "critical", stopRun: true, keepBest: false, webhookUrl: "" }, run);
  assert.deepEqual(errors, {});
  assert.deepEqual(body, { kind: "threshold", severity: "critical", expression: "eval/quality < 0.5 for 3",
    run_id: "r1", actions: { stop_run: true, keep_best: false } });
});

test("numbers are checked, nan defaults to loss/*, preset scope needs a preset", () => {
  const trend = ruleBody({ kind: "trend", key: "loss/D", op: "<", value: "-0.5", window: "x", scope: "preset" },
    { id: "r2", preset: null });
  assert.deepEqual(trend.errors, { window: "'x' is not a number", scope: "this run has no preset" });
  const nan = ruleBody({ kind: "nan", key: "", scope: "preset", webhookUrl: " http://h/x " }, run);
  assert.deepEqual(nan.errors, {});
  assert.equal(nan.body.key, "loss/*");
  assert.equal(nan.body.preset, "demo-turning");
  assert.equal(nan.body.webhook_url, "http://h/x");
  assert.deepEqual(ruleBody({ kind: "stalled", minutes: "", scope: "all" }, run).errors, { minutes: "give a number" });
  assert.deepEqual(ruleBody({ kind: "turning_point", scope: "all" }, run).errors, {});
});

test("422 errors land on their fields", () => {
  const placed = placeRuleErrors([{ loc: ["body", "expression"], msg: "cannot read" },
    { loc: ["body", "preset"], msg: "not both" }, { loc: ["body", "webhook_url"], msg: "bad url" },
    { loc: ["body"], msg: "other" }]);
  assert.deepEqual(placed.fields, { expression: ["cannot read"], scope: ["not both"], webhookUrl: ["bad url"] });
  assert.deepEqual(placed.general, ["other"]);
  assert.deepEqual(placeRuleErrors("boom").general, ["boom"]);
});

test("rules and actions read as one line", () => {
  assert.equal(describeRule({ name: "turning point", enabled: false, actions: {} }), "turning point · all runs · disabled");
  assert.equal(describeRule({ name: "q", enabled: true, run_id: "r1", actions: { stop_run: true, keep_best: true },
    webhook_url: "http://h" }), "q · this run · stops the run, keeps the best checkpoint before it, webhook http://h");
  assert.equal(actionText({ kind: "webhook", target: "http://h", status: "delivered", attempts: 2 }),
    "webhook http://h — delivered (2 attempts)");
  assert.equal(actionText({ kind: "webhook", target: "http://h", status: "failed", attempts: 1, last_error: "HTTP 500" }),
    "webhook http://h — failed (1 attempt): HTTP 500");
  assert.equal(actionText({ kind: "keep_best", status: "done", detail: { checkpoint_step: 400 } }),
    "kept the checkpoint of step 400 as best before collapse");
  assert.equal(actionText({ kind: "stop_run", status: "done" }), "stopped the run");
});
