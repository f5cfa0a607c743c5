// Runs page: every run with its live status, progress, latest Q / D / FID, alerts, tags and notes; sort (on the
// server where it can), filter (status, preset, text, the filter language, the view — kept in the URL), extra
// columns for config values and last metrics (kept in localStorage), select several to compare, archive, delete
// or restore.

import { countAlert, severityCounts } from "./alert_marks.js";
import { api } from "./api.js";
import { clear, emptyState, errorState, h, loadingState, statusBadge } from "./dom.js";
import { formatDuration, formatProgress, formatTime, formatValue, LIVE_STATUSES, runDuration, STATUSES,
  toNumber } from "./format.js";
import { SUMMARY_KEYS } from "./metrics.js";
import { routeHash } from "./router.js";
import { bulkActions } from "./runs_actions.js";
import { cellText, columnPicker, configKeys, extraColumn, loadPicked, metricKeyOf } from "./runs_columns.js";
import { filterBox, filterError } from "./runs_filter.js";
import { followEvents } from "./sse.js";

const SHOW_STEP = 200; // runs shown at first and added by "Show more"
const API_PAGE = 1000; // the most GET /runs returns at once
const RELOAD_EVERY_S = 15;

// `server`: the GET /runs sort field (the server then picks which runs are shown, and in what order)
const COLUMNS = [
  { id: "name", label: "Run", sort: (r) => r.name.toLowerCase(), server: "name" },
  { id: "status", label: "Status", sort: (r) => STATUSES.indexOf(r.status), server: "status" },
  { id: "preset", label: "Preset", sort: (r) => r.preset || "", server: "preset" },
  { id: "sweep", label: "Sweep", sort: (r) => r.sweep_id || "\uffff", server: "sweep" }, // groups a sweep's runs
  { id: "step", label: "Step", sort: (r) => r.last_step ?? -1, numeric: true, server: "step" },
  { id: "q", label: "Q", sort: (r, s) => latestOf(s, "eval/quality"), numeric: true, server: "eval/quality" },
  { id: "d", label: "D", sort: (r, s) => latestOf(s, "eval/diversity"), numeric: true, server: "eval/diversity" },
  { id: "fid", label: "FID", sort: (r, s) => latestOf(s, "eval/fid"), numeric: true, server: "eval/fid" },
  { id: "alerts", label: "Alerts", sort: (r, s) => (s ? s.alerts : 0), numeric: true },
  { id: "notes", label: "Notes", sort: (r) => r.notes || "" },
  { id: "started", label: "Started", sort: (r) => r.started_at ?? r.created_at, numeric: true, server: "created" },
  { id: "duration", label: "Duration", sort: (r) => runDuration(r, Date.now() / 1000) ?? -1, numeric: true },
];
const VIEWS = { active: "Active runs", archived: "Archived", all: "Active and archived", deleted: "Deleted (trash)" };

function latestOf(summary, key) {
  const v = summary && summary.latest[key] ? toNumber(summary.latest[key].value) : NaN;
  return Number.isNaN(v) ? -Infinity : v;
}

function filterFromRoute(params) {
  return {
    status: (params.status || "").split(",").filter((s) => STATUSES.includes(s)),
    preset: params.preset || "",
    q: params.q || "",
    expr: params.filter || "",
    view: VIEWS[params.view] ? params.view : "active",
    sweep: params.sweep || "",
  };
}

export function mount(root, route, shell) {
  const filter = filterFromRoute(route.params);
  const state = { runs: new Map(), summaries: new Map(), rows: new Map(), selected: new Set(),
    sort: { col: route.params.sort || "started", dir: route.params.dir === "asc" ? 1 : -1 }, count: 0,
    picked: loadPicked() };
  const columns = () => [...COLUMNS, ...state.picked.map(extraColumn)];
  let events = null;
  let ticker = null;
  let reloadTimer = null;

  const setRoute = (patch) => {
    const params = { status: filter.status.join(","), preset: filter.preset, q: filter.q, filter: filter.expr,
      view: filter.view === "active" ? "" : filter.view, sweep: filter.sweep,
      sort: state.sort.col === "started" ? "" : state.sort.col, dir: state.sort.dir === 1 ? "asc" : "", ...patch };
    window.history.replaceState(null, "", routeHash("runs", { params }));
  };

  // --- filters ---------------------------------------------------------------------------------------------
  const search = h("input", { type: "search", placeholder: "Filter by name or id  ( / )", value: filter.q,
    "aria-label": "filter runs by name or id", dataset: { shortcut: "search" } });
  const presetSelect = h("select", { "aria-label": "filter by preset" }, h("option", { value: "" }, "all presets"));
  const statusBoxes = STATUSES.map((s) => h("label", { class: `chip status-${s}` },
    h("input", { type: "checkbox", value: s, checked: filter.status.includes(s), onchange: onStatusChange }), s));
  const compareButton = h("button", { type: "button", class: "primary", disabled: true, dataset: { key: "c" },
    onclick: () => { window.location.hash = routeHash("compare", { params: { ids: [...state.selected].join(",") } }); },
  }, "Compare selected");
  const countLabel = h("span", { class: "muted" });
  const table = h("table", { class: "runs" });
  const body = h("div", { class: "table-wrap" }, loadingState("Loading runs…"));
  let shown = SHOW_STEP;
  const more = h("button", { type: "button", class: "ghost", hidden: true,
    onclick: () => { shown += SHOW_STEP; load(); } }, `Show ${SHOW_STEP} more`);

  let searchTimer = null;
  search.addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => { filter.q = search.value.trim(); setRoute({}); load(); }, 250);
  });
  presetSelect.addEventListener("change", () => { filter.preset = presetSelect.value; setRoute({}); load(); });
  const viewSelect = h("select", { "aria-label": "which runs", onchange: () => {
    filter.view = viewSelect.value;
    unselectAll();
    setRoute({});
    actions.setView(filter.view);
    load();
  } }, Object.entries(VIEWS).map(([v, label]) => h("option", { value: v, selected: v === filter.view }, label)));
  const exprBox = filterBox(filter.expr, (expr) => { filter.expr = expr; setRoute({}); load(); });
  const picker = columnPicker(state.picked, () => { state.rows.clear(); renderTable(); load(); });
  picker.element.addEventListener("toggle", () => { if (picker.element.open) offerColumns(); });
  const unselectAll = () => [...state.selected].forEach((id) => toggle(id, false));
  const actions = bulkActions(shell, () => [...state.selected], () => { unselectAll(); load(); });
  actions.setView(filter.view);
  function onStatusChange() {
    filter.status = statusBoxes.map((l) => l.firstChild).filter((c) => c.checked).map((c) => c.value);
    setRoute({});
    load();
  }

  const sweepNames = new Map();
  const sweepChip = h("span", { class: "chip", hidden: !filter.sweep }, "sweep ", h("strong", {}, filter.sweep),
    h("button", { type: "button", class: "ghost small", "aria-label": "show runs of every sweep", onclick: () => {
      filter.sweep = "";
      sweepChip.hidden = true;
      setRoute({});
      load();
    } }, "×"));
  root.append(
    h("div", { class: "page-head" }, h("h1", {}, "Runs"), countLabel, h("span", { class: "spacer" }), compareButton,
      h("a", { class: "button", href: "#/launch" }, "Launch a run")),
    h("div", { class: "filters", role: "search" }, search, presetSelect, sweepChip, viewSelect,
      h("fieldset", { class: "chips" }, h("legend", { class: "sr" }, "status"), statusBoxes),
      h("span", { class: "spacer" }), picker.element),
    exprBox.element, actions.element, body, h("div", { class: "table-more" }, more));

  api.sweeps(1000).then((res) => {
    for (const sw of res.data) sweepNames.set(sw.id, sw.name);
    if (sweepNames.has(filter.sweep)) sweepChip.querySelector("strong").textContent = sweepNames.get(filter.sweep);
    for (const run of state.runs.values()) if (run.sweep_id) renderRow(run);
  }).catch(() => { /* the column shows sweep ids instead of names */ });
  api.presets().then((presets) => {
    for (const p of presets) presetSelect.append(h("option", { value: p.name }, p.name));
    presetSelect.value = filter.preset;
  }).catch(() => { /* the filter still works by typing; the table shows its own error */ });

  // --- table -----------------------------------------------------------------------------------------------
  function header() {
    const all = h("input", { type: "checkbox", "aria-label": "select all shown runs", onchange: (ev) => {
      for (const id of state.runs.keys()) toggle(id, ev.target.checked);
    } });
    return h("thead", {}, h("tr", {}, h("th", { class: "sel" }, all), columns().map((c) => {
      const active = state.sort.col === c.id;
      return h("th", { class: c.numeric ? "num" : "", "aria-sort": active ? (state.sort.dir > 0 ? "ascending"
        : "descending") : "none" }, h("button", { type: "button", class: "sort", onclick: () => {
        state.sort = { col: c.id, dir: active ? -state.sort.dir : c.numeric ? -1 : 1 };
        setRoute({});
        if (c.server) load();
        else renderTable();
      } }, c.label, active ? (state.sort.dir > 0 ? " ▲" : " ▼") : ""));
    })));
  }

  function toggle(id, on) {
    if (on) state.selected.add(id);
    else state.selected.delete(id);
    const row = state.rows.get(id);
    if (row) row.querySelector("input").checked = on;
    compareButton.disabled = state.selected.size < 1;
    compareButton.textContent = state.selected.size ? `Compare ${state.selected.size}` : "Compare selected";
    actions.setCount(state.selected.size);
  }

  function cells(run) {
    const s = state.summaries.get(run.id);
    const val = (key) => (s && s.latest[key] ? formatValue(s.latest[key].value) : "–");
    const counts = severityCounts(s);
    const last = s && s.last_alert ? s.last_alert.explanation : "";
    const alertCell = [
      counts.critical ? h("span", { class: "badge alert severity-critical", title: `${counts.critical} critical: ${last}` },
        `▼ ${counts.critical}`) : null,
      counts.warning ? h("span", { class: "badge severity-warning", title: `${counts.warning} warning(s)` },
        `▽ ${counts.warning}`) : null,
    ].filter(Boolean);
    const extra = Object.fromEntries(state.picked.map((id) => [id, cellText(extraColumn(id).value(run, s))]));
    return {
      ...extra,
      name: [h("a", { href: routeHash("run", { id: run.id }) }, run.name || run.id),
        h("small", { class: "muted id" }, run.id.slice(0, 8)),
        (run.tags || []).length ? h("span", { class: "tags" }, run.tags.map((t) => h("span", { class: "tag" }, t)))
          : null],
      notes: run.notes ? h("span", { class: "notes", title: run.notes }, run.notes.split("\n")[0]) : "",
      status: statusBadge(run.status),
      preset: run.preset || (run.kind === "external" ? "external" : "–"),
      sweep: run.sweep_id ? h("a", { href: routeHash("sweep", { id: run.sweep_id }) },
        sweepNames.get(run.sweep_id) || run.sweep_id.slice(0, 8)) : "–",
      step: formatProgress(run),
      q: val("eval/quality"),
      d: val("eval/diversity"),
      fid: val("eval/fid"),
      alerts: alertCell,
      started: formatTime(run.started_at ?? run.created_at),
      duration: formatDuration(runDuration(run, Date.now() / 1000)),
    };
  }

  function renderRow(run) {
    let row = state.rows.get(run.id);
    if (!row) {
      const box = h("input", { type: "checkbox", "aria-label": `select ${run.name || run.id}`,
        onchange: (ev) => toggle(run.id, ev.target.checked) });
      row = h("tr", { dataset: { runId: run.id } }, h("td", { class: "sel" }, box),
        columns().map((c) => h("td", { class: c.numeric ? "num" : "", dataset: { col: c.id } })));
      row.querySelectorAll("td[data-col]").forEach((td) => td.classList.add(`col-${td.dataset.col}`));
      state.rows.set(run.id, row);
    }
    const content = cells(run);
    columns().forEach((c, i) => clear(row.children[i + 1], content[c.id]));
    row.querySelector("input").checked = state.selected.has(run.id);
    row.dataset.status = run.status;
    return row;
  }

  function sortedRuns() {
    const col = columns().find((c) => c.id === state.sort.col) || COLUMNS.find((c) => c.id === "started");
    if (col.server) return [...state.runs.values()]; // the server's order
    const key = (r) => col.sort(r, state.summaries.get(r.id));
    return [...state.runs.values()].sort((a, b) => {
      const ka = key(a);
      const kb = key(b);
      return (ka < kb ? -1 : ka > kb ? 1 : 0) * state.sort.dir;
    });
  }

  function renderTable() {
    countLabel.textContent = `${state.count} run${state.count === 1 ? "" : "s"}`
      + (state.count > state.runs.size ? ` (newest ${state.runs.size} shown)` : "");
    more.hidden = state.count <= state.runs.size;
    if (!state.runs.size) {
      const filtered = filter.q || filter.preset || filter.sweep || filter.status.length || filter.expr
        || filter.view !== "active";
      clear(body, filtered ? emptyState("No runs match these filters.", "Clear the filters to see every run.")
        : emptyState("No runs yet.", "Launch one from the Launch page, run `sqd demo`, or feed one from your own "
          + "training loop with sqd.trainer.Monitor."));
      return;
    }
    const tbody = h("tbody", {}, sortedRuns().map(renderRow));
    clear(table, h("caption", { class: "sr" }, "Runs"), header(), tbody);
    if (table.parentNode !== body) clear(body, table);
  }

  async function offerColumns() {
    const ids = [...state.runs.keys()];
    let keys = [];
    try {
      keys = ids.length ? (await api.metricKeys(ids)).data : [];
    } catch { /* the config columns are still offered */ }
    picker.offer(configKeys([...state.runs.values()]), keys);
  }

  function serverSort() {
    const col = columns().find((c) => c.id === state.sort.col);
    return col && col.server ? `${state.sort.dir < 0 ? "-" : ""}${col.server}` : "";
  }

  async function loadSummaries(ids) {
    if (!ids.length) return;
    const keys = [...new Set([...SUMMARY_KEYS, ...state.picked.map(metricKeyOf).filter(Boolean)])];
    try {
      const res = await api.summaries(ids, keys);
      for (const s of res.data) state.summaries.set(s.run_id, s);
    } catch {
      return; // the table stays useful without the summary columns
    }
    for (const id of ids) if (state.runs.has(id)) renderRow(state.runs.get(id));
  }

  async function load() {
    try {
      const runs = [];
      let count = 0;
      for (let offset = 0; offset < shown; offset += API_PAGE) {
        const res = await api.runs({ status: filter.status, preset: filter.preset, q: filter.q, sweep: filter.sweep,
          offset, filter: filter.expr, view: filter.view, sort: serverSort(), limit: Math.min(API_PAGE, shown - offset) });
        runs.push(...res.data);
        count = res.count;
        if (runs.length >= count) break;
      }
      state.runs = new Map(runs.map((r) => [r.id, r]));
      state.count = count;
      for (const id of [...state.rows.keys()]) if (!state.runs.has(id)) state.rows.delete(id);
      exprBox.clearError();
      renderTable();
      if (picker.element.open) offerColumns();
      await loadSummaries([...state.runs.keys()]);
    } catch (err) {
      if (filterError(err)) {
        exprBox.showError(err);
        state.runs = new Map();
        countLabel.textContent = "";
        clear(body, emptyState("The filter does not parse.", "Fix it (the error is under the filter box)."));
        return;
      }
      clear(body, errorState("Could not load the runs.", err, load));
    }
  }

  // --- live updates ----------------------------------------------------------------------------------------
  // the filter language and the views are the server's to judge: a new run means a reload then
  const matches = (run) => Boolean(filter.expr) || filter.view !== "active" || (!filter.status.length
    || filter.status.includes(run.status))
    && (!filter.preset || run.preset === filter.preset) && (!filter.sweep || run.sweep_id === filter.sweep)
    && (!filter.q || `${run.name} ${run.id}`.toLowerCase().includes(filter.q.toLowerCase()));

  function onBatch(batch) {
    let resort = false;
    const touched = new Set();
    for (const { type, data } of batch) {
      if (type === "reset") {
        load();
        return;
      }
      const id = data.run_id ?? data.id;
      if (type === "run") {
        if (!state.runs.has(id) && matches(data)) {
          clearTimeout(reloadTimer); // a new run: reload the page of runs (it also brings the count)
          reloadTimer = setTimeout(load, 200);
        }
        if (state.runs.has(id)) {
          const gone = (data.deleted_at && filter.view !== "deleted") || (data.archived_at && filter.view === "active");
          if (gone) { state.runs.delete(id); state.count -= 1; }
          else state.runs.set(id, data);
          resort = true;
        }
      } else if (!state.runs.has(id)) {
        continue;
      } else if (type === "points") {
        const run = state.runs.get(id);
        const summary = state.summaries.get(id) || { run_id: id, latest: {}, alerts: 0, last_alert: null };
        for (const [key, s] of Object.entries(data.series)) {
          const last = s.step.length - 1;
          if (last < 0) continue;
          run.last_step = Math.max(run.last_step ?? 0, s.step[last]);
          if (SUMMARY_KEYS.includes(key) && (!summary.latest[key] || s.step[last] >= summary.latest[key].step)) {
            summary.latest[key] = { step: s.step[last], value: s.value[last] };
          }
        }
        state.summaries.set(id, summary);
      } else if (type === "alert") {
        state.summaries.set(id, countAlert(state.summaries.get(id) || { run_id: id, latest: {}, alerts: 0 }, data));
      }
      touched.add(id);
    }
    if (resort) renderTable();
    else for (const id of touched) if (state.runs.has(id)) renderRow(state.runs.get(id));
  }

  events = followEvents({ onBatch, onState: shell.setLive });
  let ticks = 0;
  ticker = setInterval(() => {
    const live = [...state.runs.values()].filter((run) => LIVE_STATUSES.has(run.status));
    for (const run of live) if (run.started_at) renderRow(run);
    // points carry no epoch: re-read the page of runs now and then while some stream
    ticks += 1;
    if (live.length && ticks % RELOAD_EVERY_S === 0) load();
  }, 1000);
  load();

  return {
    unmount() {
      events.close();
      clearInterval(ticker);
      clearTimeout(reloadTimer);
      clearTimeout(searchTimer);
    },
  };
}
