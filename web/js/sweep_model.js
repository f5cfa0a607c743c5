// Sweep page logic: configurations (cells), the results table (rows, sort, columns), parallel-coordinates
// dimensions. Pure (no DOM), unit-tested under node.
//
// Result values come from the series the page holds, with the server's definitions (server/sweeps/results.py):
// final = the value at the series' last step, best = the largest (Q, D, modes) or smallest (FID) non-NaN value —
// exact however the series is downsampled, since every bucket keeps its min and max.

import { toNumber } from "./format.js";

export const CELL_KEYS = ["angle/G", "angle/D", "eval/quality", "eval/diversity"];
export const RESULT_KEYS = { quality: ["eval/quality", "max"], diversity: ["eval/diversity", "max"],
  fid: ["eval/fid", "min"], modes: ["eval/modes_covered", "max"] };
export const SWEEP_KEYS = [...new Set([...CELL_KEYS, ...Object.values(RESULT_KEYS).map(([k]) => k)])];

/** The metrics the parallel coordinates can colour by (a result column each). */
export const METRICS = [
  { id: "final_quality", label: "final Q", better: "max" },
  { id: "best_quality", label: "best Q", better: "max" },
  { id: "final_diversity", label: "final D (nats)", better: "max" },
  { id: "best_diversity", label: "best D (nats)", better: "max" },
  { id: "final_fid", label: "final FID", better: "min" },
  { id: "best_fid", label: "best FID", better: "min" },
  { id: "final_modes", label: "modes covered", better: "max" },
  { id: "turning_epoch", label: "turning-point epoch", better: "max" },
];

/** Runs (GET /sweeps/{id} → runs) grouped by configuration, in launch order: [{index, label, params, runs}]. */
export function cellsOf(runs) {
  const cells = new Map();
  for (const r of runs) {
    if (!cells.has(r.config_index)) {
      cells.set(r.config_index, { index: r.config_index, label: r.label, params: r.params, runs: [] });
    }
    cells.get(r.config_index).runs.push(r);
  }
  for (const c of cells.values()) c.runs.sort((a, b) => a.seed - b.seed);
  return [...cells.values()].sort((a, b) => a.index - b.index);
}

/** A cell's title: its values along the sweep's dimensions ("hinge · gp"), else its label. */
export function cellTitle(cell, dimensions) {
  const dims = (dimensions || []).filter((d) => cell.params && d in cell.params);
  return dims.length ? dims.map((d) => valueText(cell.params[d])).join(" · ") : cell.label;
}

/** final / best of a client series (see series.js), or nulls when it has no finite value. */
export function seriesStats(s, better) {
  const out = { final: null, best: null, n: 0 };
  if (!s || !s.step.length) return out;
  const last = s.value[s.value.length - 1];
  out.final = Number.isFinite(last) ? last : null;
  const edge = better === "min" ? s.min : s.max;
  for (let i = 0; i < edge.length; i += 1) {
    const v = edge[i];
    if (Number.isFinite(v) && (out.best === null || (better === "min" ? v < out.best : v > out.best))) out.best = v;
    out.n += s.count[i];
  }
  return out;
}

/** The turning point: a critical alert of the turning-point rule. */
export const isTurning = (a) => a.severity === "critical" && /turning/i.test(a.rule || "");

/** One results row: configuration, seed, status, final and best Q / D / FID / modes, turning epoch, time (the
 * page adds `title`, the cell's heading). */
export function resultRow(run, store, alerts, nowS) {
  const row = { run_id: run.id, name: run.name, label: run.label, params: run.params || {}, seed: run.seed,
    config_index: run.config_index, status: run.status, error: run.error || null };
  for (const [column, [key, better]] of Object.entries(RESULT_KEYS)) {
    const s = seriesStats(store && store.get(key), better);
    row[`final_${column}`] = s.final;
    row[`best_${column}`] = s.best;
    if (column === "quality") row.evaluations = s.n;
  }
  const turning = (alerts || []).filter(isTurning).sort((a, b) => (a.step ?? 0) - (b.step ?? 0))[0];
  row.turning_epoch = turning ? turning.epoch ?? null : null;
  row.turning_step = turning ? turning.step ?? null : null;
  row.alerts = (alerts || []).length;
  row.last_step = run.last_step ?? null;
  row.duration_s = run.started_at == null ? null
    : Math.max(0, (run.finished_at ?? nowS) - run.started_at);
  return row;
}

/** The table's columns: id, label, numeric (sorts numbers, blanks last), title. */
export const TABLE_COLUMNS = [
  { id: "title", label: "Configuration", title: "its values along the sweep's dimensions" },
  { id: "seed", label: "Seed", numeric: true },
  { id: "status", label: "Status" },
  { id: "final_quality", label: "Q final", numeric: true, title: "eval/quality at the last evaluation" },
  { id: "best_quality", label: "Q best", numeric: true },
  { id: "final_diversity", label: "D final", numeric: true, title: "eval/diversity (nats)" },
  { id: "best_diversity", label: "D best", numeric: true },
  { id: "final_fid", label: "FID final", numeric: true },
  { id: "best_fid", label: "FID best", numeric: true, title: "the lowest FID of the run" },
  { id: "final_modes", label: "Modes", numeric: true, title: "modes covered at the last evaluation" },
  { id: "turning_epoch", label: "Turning ep.", numeric: true, title: "epoch of the turning-point alert" },
  { id: "alerts", label: "Alerts", numeric: true },
  { id: "duration_s", label: "Time", numeric: true },
];

const STATUS_ORDER = ["running", "cancelling", "queued", "finished", "failed", "cancelled"];

/** Rows sorted by a column (dir 1 ascending, −1 descending); missing values always last; ties by launch order. */
export function sortRows(rows, col, dir) {
  const key = (r) => (col === "status" ? STATUS_ORDER.indexOf(r.status) : r[col]);
  const blank = (v) => v === null || v === undefined || (typeof v === "number" && Number.isNaN(v));
  return [...rows].sort((a, b) => {
    const ka = key(a);
    const kb = key(b);
    if (blank(ka) || blank(kb)) return blank(ka) - blank(kb) || a.config_index - b.config_index || a.seed - b.seed;
    const c = typeof ka === "string" ? ka.localeCompare(kb, undefined, { numeric: true }) : ka - kb;
    return c * dir || a.config_index - b.config_index || a.seed - b.seed;
  });
}

/** A configuration value as text: lists joined with +, an empty list "none" (as the CSV export writes them). */
export function valueText(v) {
  if (Array.isArray(v)) return v.length ? v.map(valueText).join("+") : "none";
  if (v === null || v === undefined) return "–";
  return String(v);
}

/**
 * Plotly parcoords dimensions: one per sweep dimension (numbers stay numeric; anything else becomes categories
 * in first-seen order), the seed, and the chosen metric last. Returns {dimensions, color, rows} over the rows
 * that have the metric.
 */
export function parcoordsModel(rows, dimensions, metricId) {
  const metric = METRICS.find((m) => m.id === metricId) || METRICS[0];
  const kept = rows.filter((r) => r[metric.id] !== null && r[metric.id] !== undefined);
  const dims = dimensions.map((d) => {
    const raw = kept.map((r) => r.params[d]);
    if (raw.every((v) => typeof v === "number")) return { label: d, values: raw };
    const cats = [...new Set(rows.map((r) => valueText(r.params[d])))];
    return { label: d, values: raw.map((v) => cats.indexOf(valueText(v))), tickvals: cats.map((_, i) => i),
      ticktext: cats, range: [-0.25, Math.max(0.25, cats.length - 0.75)] };
  });
  const seeds = [...new Set(rows.map((r) => r.seed))].sort((a, b) => a - b);
  if (seeds.length > 1) {
    dims.push({ label: "seed", values: kept.map((r) => r.seed), tickvals: seeds, ticktext: seeds.map(String) });
  }
  const color = kept.map((r) => toNumber(r[metric.id]));
  dims.push({ label: metric.label, values: color });
  return { dimensions: dims, color, rows: kept, metric };
}
