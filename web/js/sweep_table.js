// The sweep's results table: one row per run (configuration, seed, status, final and best Q / D / FID, modes,
// turning-point epoch, alerts, time), sorted by any column (click a header; again to reverse), a failed run's
// error under its status. Rows come from sweep_model.js; this module only renders.

import { h, statusBadge } from "./dom.js";
import { formatDuration, formatValue } from "./format.js";
import { routeHash } from "./router.js";
import { sortRows, TABLE_COLUMNS } from "./sweep_model.js";

function cell(row, col) {
  const v = row[col.id];
  if (col.id === "title") return h("a", { href: routeHash("run", { id: row.run_id }), title: row.name }, row.title);
  if (col.id === "status") {
    return [statusBadge(row.status), row.error ? h("div", { class: "error-text", title: row.error },
      row.error.length > 90 ? `${row.error.slice(0, 90)}…` : row.error) : null];
  }
  if (col.id === "duration_s") return formatDuration(v);
  if (v === null || v === undefined) return "–";
  return typeof v === "number" && col.id !== "seed" ? formatValue(v) : String(v);
}

/** {element, render(rows)}; the sort lives here (`sort`: {col, dir}; launch order by default), `onSort` tells the
 * page it changed. */
export function createResultsTable({ sort = { col: "config_index", dir: 1 }, onSort = () => {} } = {}) {
  const table = h("table", { class: "runs sweep-results" });
  const element = h("div", { class: "table-wrap" }, table);
  let last = [];

  function header() {
    return h("thead", {}, h("tr", {}, TABLE_COLUMNS.map((c) => {
      const active = sort.col === c.id;
      return h("th", { class: c.numeric ? "num" : "", title: c.title || null, dataset: { col: c.id },
        "aria-sort": active ? (sort.dir > 0 ? "ascending" : "descending") : "none" },
      h("button", { type: "button", class: "sort", onclick: () => {
        sort = { col: c.id, dir: active ? -sort.dir : c.numeric ? -1 : 1 };
        onSort(sort);
        render(last);
      } }, c.label, active ? (sort.dir > 0 ? " ▲" : " ▼") : ""));
    })));
  }

  function render(rows) {
    last = rows;
    const body = h("tbody", {}, sortRows(rows, sort.col, sort.dir).map((r) => h("tr", {
      dataset: { runId: r.run_id, status: r.status } }, TABLE_COLUMNS.map((c) => h("td", {
      class: c.numeric ? `num col-${c.id}` : `col-${c.id}` }, cell(r, c))))));
    table.replaceChildren(h("caption", { class: "sr" }, "Results per run"), header(), body);
  }

  return { element, render, get sort() { return sort; } };
}
