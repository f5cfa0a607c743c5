// Launch form logic: presets grouped by seed, overrides from the form's rows, 422 errors placed on their fields.
// Pure (no DOM), unit-tested under node.

import { locName } from "./format.js";

export const SEED_TITLES = {
  "000": "Seed 000 · R3GAN",
  "001": "Seed 001 · GraN-GAN",
  "002": "Seed 002 · ICR / ACGD",
  "003": "Seed 003 · SQD loss × regularizer grid",
};

/** Presets grouped by seed (sorted), each group titled; presets keep the API's order inside a group. */
export function groupPresets(presets) {
  const groups = new Map();
  for (const p of presets) {
    const seed = p.seed == null ? "other" : String(p.seed).padStart(3, "0");
    if (!groups.has(seed)) groups.set(seed, []);
    groups.get(seed).push(p);
  }
  return [...groups.keys()].sort().map((seed) => ({
    seed,
    title: SEED_TITLES[seed] || (seed === "other" ? "Other" : `Seed ${seed}`),
    presets: groups.get(seed),
  }));
}

/** What is wrong with a setting's name typed in a form ("" → name it; not dotted), or null. */
export function keyError(key, example = "optim.lr_g") {
  if (!key) return `name the setting, e.g. ${example}`;
  if (!/^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$/.test(key)) return `'${key}' is not a dotted key like ${example}`;
  return null;
}

/** Rows [{key, value}] → {overrides, errors}. Values stay strings: the server parses them with the config schema
 * ("2e-4", "[0.5, 0.9]", "true"), as `sqd train --set` does. Blank rows are ignored. */
export function collectOverrides(rows) {
  const overrides = {};
  const errors = [];
  rows.forEach((row, index) => {
    const key = (row.key || "").trim();
    const value = (row.value || "").trim();
    if (!key && !value) return;
    const bad = keyError(key);
    if (bad) errors.push({ index, field: "key", msg: bad });
    else if (key in overrides) errors.push({ index, field: "key", msg: `'${key}' is set twice` });
    else if (!value) errors.push({ index, field: "value", msg: `give a value for ${key}` });
    else overrides[key] = value;
  });
  return { overrides, errors };
}

/**
 * A 422 detail list → where each message goes: {rows: {index: [msg]}, fields: {name|preset|steps: [msg]},
 * general: [msg]}. An override error names its key in `loc` (["body", "overrides", "optim", "lr_g"]); one that
 * names no row shown in the form (a rule across fields) goes to `general`, so no message is lost.
 */
export function placeErrors(detail, rows) {
  const out = { rows: {}, fields: {}, general: [] };
  const list = Array.isArray(detail) ? detail : [{ loc: [], msg: String(detail) }];
  const rowOf = new Map(rows.map((r, i) => [(r.key || "").trim(), i]));
  for (const e of list) {
    const where = locName(e.loc);
    const add = (bucket, k) => { (bucket[k] = bucket[k] || []).push(e.msg); };
    if (where.startsWith("overrides.")) {
      const key = where.slice("overrides.".length);
      // a nested loc (overrides.optim.betas.0) belongs to the row of its longest matching prefix
      const parts = key.split(".");
      let hit = null;
      for (let n = parts.length; n > 0 && hit === null; n -= 1) {
        const k = parts.slice(0, n).join(".");
        if (rowOf.has(k)) hit = rowOf.get(k);
      }
      if (hit !== null) add(out.rows, hit);
      else out.general.push(e.msg);
    } else if (["preset", "name", "steps"].includes(where)) add(out.fields, where);
    else out.general.push(where ? `${where}: ${e.msg}` : e.msg);
  }
  return out;
}
