// Sweep form logic: grid rows → the request's grid, explicit override sets from text, the run count, and the
// server's 422 placed on the row or field it names. Pure (no DOM), unit-tested under node.

import { keyError } from "./launch_form.js";

/** "none, [gp, r1], gp" → ["none", "[gp, r1]", "gp"]: commas inside brackets belong to the value. */
export function splitValues(text) {
  const out = [];
  let depth = 0;
  let current = "";
  for (const ch of text) {
    if (ch === "[") depth += 1;
    if (ch === "]") depth -= 1;
    if (ch === "," && depth === 0) {
      out.push(current.trim());
      current = "";
    } else current += ch;
  }
  out.push(current.trim());
  return out;
}

/** A value as sent: text (the server parses it with the config schema), but "[a, b]" as a list of its items, since
 * a list field would otherwise read the commas as separate values. */
export function valueOf(text) {
  if (text.startsWith("[") && text.endsWith("]")) {
    const inner = text.slice(1, -1).trim();
    return inner ? splitValues(inner) : [];
  }
  return text;
}

/** Rows [{key, values}] → {grid, errors: [{index, msg}]}; blank rows are ignored. */
export function collectGrid(rows) {
  const grid = {};
  const errors = [];
  rows.forEach((row, index) => {
    const key = (row.key || "").trim();
    const text = (row.values || "").trim();
    if (!key && !text) return;
    const bad = keyError(key, "loss.name");
    if (bad) errors.push({ index, msg: bad });
    else if (key in grid) errors.push({ index, msg: `'${key}' is swept twice: list all its values in one row` });
    else if (!text) errors.push({ index, msg: `give the values of ${key}, separated by commas` });
    else {
      const values = splitValues(text);
      if (values.some((v) => !v)) errors.push({ index, msg: `${key}: an empty value (two commas in a row?)` });
      else grid[key] = values.map(valueOf);
    }
  });
  return { grid, errors };
}

/** Text with one override set per line ("loss.name=wgan; reg.names=gp") → {configs, errors: [{line, msg}]}. */
export function collectConfigs(text) {
  const configs = [];
  const errors = [];
  (text || "").split("\n").forEach((line, i) => {
    if (!line.trim()) return;
    const set = {};
    for (const part of line.split(";").map((p) => p.trim()).filter(Boolean)) {
      const at = part.indexOf("=");
      const key = at > 0 ? part.slice(0, at).trim() : "";
      const value = at > 0 ? part.slice(at + 1).trim() : "";
      if (keyError(key) || !value) errors.push({ line: i + 1, msg: `line ${i + 1}: '${part}' is not key=value` });
      else set[key] = valueOf(value);
    }
    configs.push(set);
  });
  return { configs, errors };
}

/** Configurations and runs a request makes (as the server counts them). */
export function countRuns({ presets = [], grid = {}, configs = [], seeds = 1 }) {
  let configurations = presets.length * Math.max(1, configs.length);
  for (const values of Object.values(grid)) configurations *= values.length;
  return { configurations, runs: configurations * Math.max(1, seeds || 1) };
}

/**
 * A 422 detail → where each message goes: {grid: {row: [msg]}, overrides: {row: [msg]}, fields: {presets, seeds,
 * steps, name, confirm, max_concurrent, configs: [msg]}, general: [msg]}. Grid errors name their key in `loc`
 * (["body", "grid", "loss.name", 2]); one naming no row shown goes to `general`, so nothing is lost.
 */
export function placeSweepErrors(detail, gridRows, overrideRows) {
  const out = { grid: {}, overrides: {}, fields: {}, general: [] };
  const list = Array.isArray(detail) ? detail : [{ loc: [], msg: String(detail) }];
  const rowOf = (rows) => new Map(rows.map((r, i) => [(r.key || "").trim(), i]));
  const gridRow = rowOf(gridRows);
  const overrideRow = rowOf(overrideRows);
  const add = (bucket, k, msg) => { (bucket[k] = bucket[k] || []).push(msg); };
  for (const e of list) {
    const loc = (e.loc || []).map(String);
    const [, section, key] = loc[0] === "body" ? loc : ["body", ...loc];
    if (section === "grid" && gridRow.has(key)) add(out.grid, gridRow.get(key), e.msg);
    else if (section === "overrides" && overrideRow.has(key)) add(out.overrides, overrideRow.get(key), e.msg);
    else if (section === "preset" || section === "presets") add(out.fields, "presets", e.msg);
    else if (["seeds", "steps", "name", "confirm", "max_concurrent", "configs"].includes(section)) {
      add(out.fields, section, e.msg);
    } else out.general.push(e.msg);
  }
  return out;
}
