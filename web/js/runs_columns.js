// The runs table's extra columns: config values and last metric values the user picks, remembered in
// localStorage. Column ids are "config.<dotted path>" or "metric:<key>"; `server` is the GET /runs sort field.

import { h } from "./dom.js";
import { formatValue } from "./format.js";

const STORE_KEY = "sqd.runs.columns";
const MAX_CONFIG_KEYS = 300;

/** {"optim": {"lr": 1e-3}, "seed": 0} → {"optim.lr": 1e-3, "seed": 0} (lists stay whole). Pure. */
export function flattenConfig(config, prefix = "") {
  const out = {};
  for (const [k, v] of Object.entries(config || {})) {
    const key = prefix ? `${prefix}.${k}` : k;
    if (v && typeof v === "object" && !Array.isArray(v)) Object.assign(out, flattenConfig(v, key));
    else out[key] = v;
  }
  return out;
}

/** The config keys of these runs, sorted. Pure. */
export function configKeys(runs) {
  const keys = new Set();
  for (const run of runs) for (const k of Object.keys(flattenConfig(run.config))) keys.add(k);
  return [...keys].sort().slice(0, MAX_CONFIG_KEYS);
}

export function loadPicked(storage = window.localStorage) {
  try {
    const picked = JSON.parse(storage.getItem(STORE_KEY) || "[]");
    return Array.isArray(picked) ? picked.filter((c) => typeof c === "string") : [];
  } catch {
    return [];
  }
}

export function savePicked(picked, storage = window.localStorage) {
  storage.setItem(STORE_KEY, JSON.stringify(picked));
}

export const metricKeyOf = (id) => (id.startsWith("metric:") ? id.slice("metric:".length) : null);

/** A table column for a picked id: label, cell text, local sort key and the server's sort field. Pure. */
export function extraColumn(id) {
  const metric = metricKeyOf(id);
  if (metric !== null) {
    return { id, label: metric, numeric: true, server: metric.includes("/") ? metric : `metric.${metric}`,
      value: (run, summary) => (summary && summary.latest[metric] ? summary.latest[metric].value : null) };
  }
  const path = id.slice("config.".length);
  return { id, label: path, numeric: false, server: id,
    value: (run) => { const v = flattenConfig(run.config)[path]; return v === undefined ? null : v; } };
}

export function cellText(value) {
  if (value === null || value === undefined) return "–";
  if (typeof value === "number" || value === "NaN" || value === "Infinity" || value === "-Infinity") {
    return formatValue(value);
  }
  return typeof value === "object" ? JSON.stringify(value) : String(value);
}

/** "Columns" menu: a checkbox per config key and per metric key; `onChange(picked)` on every toggle. */
export function columnPicker(picked, onChange) {
  const list = h("div", { class: "picker-list" });
  const menu = h("details", { class: "column-picker" }, h("summary", { class: "button" }, "Columns"),
    h("div", { class: "picker-panel", role: "group", "aria-label": "extra columns" }, list));
  const box = (id, label) => h("label", { class: "picker-item" }, h("input", {
    type: "checkbox", value: id, checked: picked.includes(id), onchange: (ev) => {
      const next = ev.target.checked ? [...picked, id] : picked.filter((c) => c !== id);
      picked.splice(0, picked.length, ...next);
      savePicked(picked);
      onChange(picked);
    } }), label);
  return {
    element: menu,
    /** Offer these keys (plus any picked ones the current runs lack, so they can be unpicked). */
    offer(config, metrics) {
      const cfg = [...new Set([...config.map((k) => `config.${k}`), ...picked.filter((c) => c.startsWith("config."))])];
      const met = [...new Set([...metrics.map((k) => `metric:${k}`), ...picked.filter((c) => metricKeyOf(c))])];
      const none = (text) => [h("span", { class: "muted" }, text)];
      list.replaceChildren(
        h("strong", {}, "Config"),
        ...(cfg.length ? cfg.sort().map((id) => box(id, id.slice(7))) : none("no config values")),
        h("strong", {}, "Last metric values"),
        ...(met.length ? met.sort().map((id) => box(id, metricKeyOf(id))) : none("no metrics yet")));
    },
  };
}
