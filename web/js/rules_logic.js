// Alert-rule form logic: the form's values → a POST /rules body, a rule → one readable line, 422 errors → the
// field they belong to, an alert action → its status line. Pure (no DOM), unit-tested under node.

import { locName } from "./format.js";

export const RULE_KINDS = [
  { kind: "threshold", label: "Threshold", help: "a key crosses a value for N points in a row, e.g. "
    + "eval/quality < 0.5 for 3" },
  { kind: "trend", label: "Trend", help: "the fitted change of a key over its last N points crosses a value" },
  { kind: "nan", label: "NaN / inf", help: "a key (default loss/*) becomes NaN or infinite" },
  { kind: "stalled", label: "Stalled", help: "a running run reports no new step for N minutes" },
  { kind: "turning_point", label: "Turning point", help: "the built-in detector fires (add actions or a webhook)" },
];

/** Which inputs each kind uses (the panel shows only these). */
export const KIND_FIELDS = {
  threshold: ["expression"],
  trend: ["key", "op", "value", "window"],
  nan: ["key"],
  stalled: ["minutes"],
  turning_point: [],
};

const number = (text) => (String(text ?? "").trim() === "" ? null : Number(text));

/**
 * form: {kind, name, expression, key, op, value, window, minutes, scope: "run"|"preset"|"all", severity, stopRun,
 * keepBest, webhookUrl}; run: {id, preset} → {body, errors: {field: msg}}. Numbers are checked here so a typo
 * is caught before the request; everything else is the server's to judge (its 422 names the field).
 */
export function ruleBody(form, run) {
  const errors = {};
  const body = { kind: form.kind, severity: form.severity || "warning",
    actions: { stop_run: Boolean(form.stopRun), keep_best: Boolean(form.keepBest) } };
  const name = (form.name || "").trim();
  if (name) body.name = name;
  for (const field of KIND_FIELDS[form.kind] || []) {
    const raw = String(form[field] ?? "").trim();
    if (["value", "window", "minutes"].includes(field)) {
      const x = number(raw);
      if (x === null || !Number.isFinite(x)) errors[field] = raw ? `'${raw}' is not a number` : "give a number";
      else body[field] = x;
    } else if (field === "key" && form.kind === "nan" && !raw) {
      body.key = "loss/*";
    } else if (!raw) errors[field] = field === "expression" ? "write a condition, e.g. eval/quality < 0.5 for 3"
      : `give the ${field}`;
    else body[field] = raw;
  }
  if (form.scope === "run") body.run_id = run.id;
  else if (form.scope === "preset") {
    if (run.preset) body.preset = run.preset;
    else errors.scope = "this run has no preset";
  }
  const hook = (form.webhookUrl || "").trim();
  if (hook) body.webhook_url = hook;
  return { body, errors };
}

/** One line for the rules list: condition · scope · actions. */
export function describeRule(rule) {
  const parts = [rule.name];
  parts.push(rule.run_id ? "this run" : rule.preset ? `preset ${rule.preset}` : "all runs");
  const actions = [];
  if (rule.actions && rule.actions.stop_run) actions.push("stops the run");
  if (rule.actions && rule.actions.keep_best) actions.push("keeps the best checkpoint before it");
  if (rule.webhook_url) actions.push(`webhook ${rule.webhook_url}`);
  if (actions.length) parts.push(actions.join(", "));
  if (!rule.enabled) parts.push("disabled");
  return parts.join(" · ");
}

const FORM_FIELDS = new Set(["name", "expression", "key", "op", "value", "window", "minutes", "count", "severity",
  "webhook_url", "run_id", "preset"]);

/** A 422 detail → {fields: {field: [msg]}, general: [msg]} (run_id / preset errors go to the scope field). */
export function placeRuleErrors(detail) {
  const out = { fields: {}, general: [] };
  const list = Array.isArray(detail) ? detail : [{ loc: [], msg: String(detail) }];
  for (const e of list) {
    let where = locName(e.loc).split(".")[0];
    if (where === "run_id" || where === "preset") where = "scope";
    if (where === "webhook_url") where = "webhookUrl";
    if (FORM_FIELDS.has(where) || where === "scope" || where === "webhookUrl") {
      (out.fields[where] = out.fields[where] || []).push(e.msg);
    } else out.general.push(where ? `${where}: ${e.msg}` : e.msg);
  }
  return out;
}

/** An alert action (GET /alerts/{id}/actions) → a short status line. */
export function actionText(a) {
  if (a.kind === "webhook") {
    const tries = `${a.attempts} attempt${a.attempts === 1 ? "" : "s"}`;
    const why = a.status === "failed" && a.last_error ? `: ${a.last_error}` : "";
    return `webhook ${a.target} — ${a.status} (${tries})${why}`;
  }
  if (a.kind === "keep_best") {
    return a.status === "done" ? `kept the checkpoint of step ${a.detail.checkpoint_step} as best before collapse`
      : `no checkpoint kept: ${a.last_error || a.status}`;
  }
  if (a.kind === "stop_run") return a.status === "done" ? "stopped the run" : `stop: ${a.last_error || a.status}`;
  return `${a.kind}: ${a.status}`;
}
