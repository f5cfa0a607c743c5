// Sweep page: small multiples (one cell per configuration: S, Q, D with seeds overlaid and alert markers), the
// results table (sortable; CSV / JSON export from the server), and parallel coordinates of the configuration
// values against a chosen final metric. Live over SSE (the stream filtered by the sweep's runs): points merge into
// each run's downsampled series, every touched cell redraws in the next animation frame, the table and the
// parallel coordinates follow at most once a second.

import { api } from "./api.js";
import { withAccessToken } from "./auth.js";
import { useWebGL } from "./charts.js";
import { clear, errorState, h, loadingState, statusBadge } from "./dom.js";
import { formatInt } from "./format.js";
import { unionRange, widen, yRange } from "./mini_chart.js";
import { routeHash } from "./router.js";
import { emptySeries, fromApi, mergeLive } from "./series.js";
import { followEvents } from "./sse.js";
import { createCellGrid, PANELS, seedColor } from "./sweep_cells.js";
import { createParcoords } from "./sweep_parcoords.js";
import { cellsOf, cellTitle, CELL_KEYS, METRICS, resultRow, SWEEP_KEYS } from "./sweep_model.js";
import { createResultsTable } from "./sweep_table.js";

// [key, alpha]: angle/D in a lighter tone of the same seed colour as angle/G
const PANEL_TRACES = { S: [["angle/G", 1], ["angle/D", 0.45]], Q: [["eval/quality", 1]], D: [["eval/diversity", 1]] };
const KEY_PANEL = Object.fromEntries(Object.entries(PANEL_TRACES).flatMap(([panel, traces]) =>
  traces.map(([key]) => [key, panel])));
const LIVE = new Set(["queued", "running", "cancelling"]);
const TABLE_EVERY_MS = 1000;
const PARCOORDS_EVERY_MS = 15_000;
const MAX_PENDING = 50_000;

export function mount(root, route, shell) {
  const sweepId = route.id;
  const st = { sweep: null, runs: new Map(), cells: [], cellOfRun: new Map(), stores: new Map(), alerts: new Map(),
    ready: false, pending: [], maxPoints: 256, xMax: 1, ranges: {}, rangesDirty: true,
    scale: route.params.y === "cell" ? "cell" : "shared",
    metric: METRICS.some((m) => m.id === route.params.metric) ? route.params.metric : "final_quality",
    sort: { col: route.params.sort || "config_index", dir: route.params.dir === "desc" ? -1 : 1 } };
  let grid = null;
  let tableTimer = null;

  const setRoute = () => window.history.replaceState(null, "", routeHash("sweep", { id: sweepId, params: {
    y: st.scale === "cell" ? "cell" : "", metric: st.metric === "final_quality" ? "" : st.metric,
    sort: st.sort.col === "config_index" ? "" : st.sort.col, dir: st.sort.dir < 0 ? "desc" : "" } }));

  // --- layout ----------------------------------------------------------------------------------------------
  const head = h("div", { class: "run-head sweep-head" }, loadingState("Loading the sweep…"));
  const scaleButtons = ["shared", "cell"].map((s) => h("button", { type: "button", "aria-pressed":
    String(st.scale === s), dataset: { scale: s }, onclick: () => setScale(s) },
  s === "shared" ? "Shared" : "Per cell"));
  const xNote = h("span", { class: "x-note" });
  const cellsBox = h("section", { class: "sweep-cells-box", "aria-label": "configurations" });
  const table = createResultsTable({ sort: st.sort, onSort: (sort) => { st.sort = sort; setRoute(); } });
  const parcoords = createParcoords();
  const metricSelect = h("select", { "aria-label": "metric of the parallel coordinates", onchange: () => {
    st.metric = metricSelect.value;
    setRoute();
    renderParcoords();
  } }, METRICS.map((m) => h("option", { value: m.id, selected: m.id === st.metric }, m.label)));
  const tableSection = h("section", { class: "sweep-section" }, h("h2", {}, "Results"), table.element);
  const redrawParcoords = h("button", { type: "button", class: "ghost small", onclick: () => renderParcoords(),
    title: "draw the parallel coordinates again with the newest values" }, "Refresh");
  const parcoordsSection = h("section", { class: "sweep-section" }, h("div", { class: "section-head" },
    h("h2", {}, "Parallel coordinates"), h("span", { class: "spacer" }), h("label", {}, "colour by ", metricSelect),
    redrawParcoords), parcoords.element);
  root.append(head,
    h("div", { class: "toolbar" }, h("span", { class: "muted" }, "y scale"),
      h("span", { class: "seg", role: "group", "aria-label": "y scale" }, scaleButtons),
      h("span", { class: "muted legend-note" }, "each seed in its own colour · S: angle/G, angle/D lighter, log "
        + "scale · ▼ alert · x: step 0 – ", xNote)),
    cellsBox,
    tableSection, parcoordsSection);

  // --- header ----------------------------------------------------------------------------------------------
  function renderHead() {
    const sw = st.sweep;
    const counts = {};
    for (const r of st.runs.values()) counts[r.status] = (counts[r.status] || 0) + 1;
    const live = [...st.runs.values()].some((r) => LIVE.has(r.status));
    const status = sw.cancelled_at ? (live ? "cancelling" : "cancelled") : !live ? "finished"
      : counts.running || counts.cancelling ? "running" : "queued";
    const cancel = h("button", { type: "button", class: "danger", disabled: !live || Boolean(sw.cancelled_at),
      title: shell.canWrite ? "queued runs never start, running ones are stopped" : "needs a token: sign in first",
      onclick: onCancel }, "Cancel sweep");
    const download = (format) => h("a", { class: "button ghost", download: `sweep-${sw.id}.${format}`,
      href: withAccessToken(`/api/v1/sweeps/${encodeURIComponent(sw.id)}/results?format=${format}`) },
    format.toUpperCase());
    clear(head,
      h("div", { class: "title-row" }, h("h1", {}, sw.name), h("span", { class: "sweep-status" }, statusBadge(status)),
        h("span", { class: "spacer" }), h("a", { class: "button ghost", href: routeHash("runs", { params:
          { sweep: sw.id } }) }, "Runs table"), download("csv"), download("json"), cancel),
      h("dl", { class: "facts inline" },
        h("dt", {}, "runs"), h("dd", { class: "sweep-counts" }, `${formatInt(st.runs.size)}: `
          + Object.entries(counts).map(([k, n]) => `${n} ${k}`).join(", ")),
        h("dt", {}, "configurations"), h("dd", {}, `${st.cells.length}`),
        h("dt", {}, "dimensions"), h("dd", {}, sw.dimensions.join(" × ") || "–"),
        h("dt", {}, "at once"), h("dd", {}, `${sw.max_concurrent}`),
        h("dt", {}, "id"), h("dd", {}, h("code", {}, sw.id))));
  }

  async function onCancel(ev) {
    ev.target.disabled = true;
    try {
      applySweep(await api.cancelSweep(sweepId));
      refreshAll();
    } catch (err) {
      ev.target.disabled = false;
      if (err.status !== 401) shell.banner(`Cancel failed: ${err.message}`, "error");
    }
  }

  // --- cells -----------------------------------------------------------------------------------------------
  function tracesOf(cell, panelId) {
    return cell.runs.flatMap((r, i) => PANEL_TRACES[panelId].map(([key, alpha]) => ({
      series: st.stores.get(r.id)?.get(key), color: seedColor(i), alpha })));
  }

  // Shared scales only grow while the page is open (a tighter one comes with a reload or a scale toggle), with
  // headroom when they do: live points rarely cross them, so most frames redraw only the panels that changed.
  function refreshRanges() {
    xNote.textContent = formatInt(st.xMax);
    if (!st.rangesDirty || st.scale !== "shared") return [];
    st.rangesDirty = false;
    const changed = [];
    for (const p of PANELS) {
      const need = unionRange(st.cells.map((c) => yRange(tracesOf(c, p.id).map((t) => t.series), p.log)));
      const now = st.ranges[p.id];
      if (!need || (now && need[0] >= now[0] && need[1] <= now[1])) continue;
      st.ranges[p.id] = widen(unionRange([now, need]), now ? 0.1 : 0, p.log);
      changed.push(p.id);
    }
    return changed;
  }

  function modelOf(index, panelId) {
    const cell = st.cells.find((c) => c.index === index);
    const panel = PANELS.find((p) => p.id === panelId);
    const traces = tracesOf(cell, panelId);
    const alerts = cell.runs.flatMap((r) => (st.alerts.get(r.id) || []).map((a) => a.step)).filter((s) => s != null);
    const queued = cell.runs.every((r) => r.status === "queued");
    const own = yRange(traces.map((t) => t.series), panel.log);
    return { title: panel.title, log: panel.log, xr: [0, st.xMax], traces, alerts: [...new Set(alerts)],
      yr: own && st.scale === "shared" ? st.ranges[panelId] : own, // no data of its own: the empty text
      empty: queued ? "queued" : panelId === "S" ? "no steps yet" : "no evaluation yet" };
  }

  function setScale(scale) {
    st.scale = scale;
    st.ranges = {};
    st.rangesDirty = true;
    scaleButtons.forEach((b) => b.setAttribute("aria-pressed", String(b.dataset.scale === scale)));
    setRoute();
    if (grid) grid.invalidate(null);
  }

  // --- table and parallel coordinates ----------------------------------------------------------------------
  const rows = () => [...st.runs.values()].map((r) => ({ ...resultRow(r, st.stores.get(r.id), st.alerts.get(r.id),
    Date.now() / 1000), title: cellTitle(r, st.sweep.dimensions) }));
  // The table and the parallel coordinates follow live data only while on screen; one that scrolls into view
  // catches up at once. Plotly's parcoords is WebGL: with a GPU it follows live data (at most one redraw every
  // PARCOORDS_EVERY_MS); with software WebGL (a VM, headless) one redraw takes seconds, so after the first it
  // waits for the Refresh button.
  const liveParcoords = useWebGL();
  const stale = { table: true, parcoords: true };
  const onScreen = new Set();
  let parcoordsAt = 0;
  const sections = new IntersectionObserver((entries) => {
    for (const e of entries) {
      if (e.isIntersecting) onScreen.add(e.target);
      else onScreen.delete(e.target);
    }
    refreshRuns();
  });
  sections.observe(tableSection);
  sections.observe(parcoordsSection);

  function renderParcoords() {
    if (!st.sweep) return;
    const t0 = performance.now();
    parcoords.render(rows(), st.sweep.dimensions, st.metric);
    parcoordsAt = performance.now();
    stale.parcoords = false;
    redrawParcoords.classList.remove("stale");
    if (grid) grid.stats.parcoordsMs += parcoordsAt - t0;
  }
  function refreshRuns() {
    clearTimeout(tableTimer);
    tableTimer = null;
    if (!st.sweep) return;
    renderHead();
    if (onScreen.has(tableSection) && stale.table) {
      const t0 = performance.now();
      table.render(rows());
      stale.table = false;
      if (grid) grid.stats.tableMs += performance.now() - t0;
    }
    if (onScreen.has(parcoordsSection) && stale.parcoords) {
      redrawParcoords.classList.toggle("stale", parcoordsAt > 0);
      if (!parcoordsAt || (liveParcoords && performance.now() - parcoordsAt >= PARCOORDS_EVERY_MS)) renderParcoords();
      else if (liveParcoords && !tableTimer) tableTimer = setTimeout(refreshRuns, PARCOORDS_EVERY_MS);
    }
  }
  function refreshAll() {
    stale.table = stale.parcoords = true;
    parcoordsAt = 0;
    refreshRuns();
  }
  function scheduleTable() {
    stale.table = stale.parcoords = true;
    if (!tableTimer) tableTimer = setTimeout(refreshRuns, TABLE_EVERY_MS);
  }

  // --- data ------------------------------------------------------------------------------------------------
  function applySweep(sw) {
    st.sweep = sw;
    for (const r of sw.runs) {
      const known = st.runs.get(r.id);
      if (known) Object.assign(known, r);
      else st.runs.set(r.id, r);
      st.xMax = Math.max(st.xMax, ((r.steps ?? r.config?.train?.steps) || 1) - 1, r.last_step ?? 0);
    }
    for (const cell of st.cells) if (grid) grid.updateRuns(cell.index);
  }

  function storeSeries(answer) {
    for (const [runId, keys] of Object.entries(answer.runs)) {
      const store = storeOf(runId);
      for (const [key, s] of Object.entries(keys)) {
        store.set(key, fromApi(s));
        if (s.step.length) st.xMax = Math.max(st.xMax, s.step[s.step.length - 1]);
      }
    }
  }

  function storeOf(runId) {
    if (!st.stores.has(runId)) st.stores.set(runId, new Map());
    return st.stores.get(runId);
  }

  function onBatch(batch) {
    if (!st.ready) {
      if (st.pending.length < MAX_PENDING) st.pending.push(...batch);
      return;
    }
    const t0 = performance.now();
    merge(batch);
    grid.stats.batchMs += performance.now() - t0;
    grid.stats.batches += 1;
  }

  function merge(batch) {
    const dirty = new Map(); // cell → panel ids to redraw (null: all)
    const touch = (cell, panel) => {
      if (panel === null || dirty.get(cell) === null) dirty.set(cell, null);
      else dirty.set(cell, new Set([...(dirty.get(cell) || []), panel]));
    };
    let table = false;
    for (const { type, data } of batch) {
      if (type === "reset") {
        load();
        return;
      }
      const id = data.run_id ?? data.id;
      const run = st.runs.get(id);
      if (!run) continue;
      const cell = st.cellOfRun.get(id);
      if (type === "run") {
        Object.assign(run, data);
        grid.updateRuns(cell);
        touch(cell, null);
        table = true;
      } else if (type === "points") {
        const store = storeOf(id);
        for (const [key, s] of Object.entries(data.series)) {
          if (!SWEEP_KEYS.includes(key)) continue;
          if (!store.has(key)) store.set(key, emptySeries());
          mergeLive(store.get(key), s.step, s.value, null, st.maxPoints);
          const last = s.step[s.step.length - 1];
          if (last > st.xMax) {
            st.xMax = last;
            for (const c of st.cells) touch(c.index, null);
          }
          if (KEY_PANEL[key]) touch(cell, KEY_PANEL[key]);
          if (key.startsWith("eval/")) table = true;
        }
        st.rangesDirty = true;
      } else if (type === "alert") {
        if (!st.alerts.has(id)) st.alerts.set(id, []);
        st.alerts.get(id).push(data);
        touch(cell, null);
        table = true;
      }
    }
    for (const [cell, panels] of dirty) grid.invalidate([cell], panels && [...panels]);
    if (table) scheduleTable();
  }

  async function load() {
    st.ready = false;
    const width = root.clientWidth || 1200;
    const perRow = Math.max(1, Math.floor(width / 316));
    // about one bucket per 2 px of a panel (each keeps its min and max, so no spike is lost): small answers, fast
    st.maxPoints = Math.max(64, Math.min(256, Math.round((width / perRow - 50) / 2)));
    try {
      // the cells' series first (what the first paint needs); the other result keys follow after it
      const [sw, series, alerts] = await Promise.all([api.sweep(sweepId),
        api.sweepMetrics(sweepId, CELL_KEYS, st.maxPoints), api.sweepAlerts(sweepId)]);
      performance.mark("sqd:sweep-data");
      st.runs.clear();
      st.stores.clear();
      st.alerts.clear();
      st.ranges = {};
      applySweep(sw);
      storeSeries(series);
      for (const a of [...alerts.data].reverse()) {
        if (!st.alerts.has(a.run_id)) st.alerts.set(a.run_id, []);
        st.alerts.get(a.run_id).push(a);
      }
      st.cells = cellsOf([...st.runs.values()]);
      st.cellOfRun = new Map(st.cells.flatMap((c) => c.runs.map((r) => [r.id, c.index])));
      if (grid) grid.destroy();
      grid = createCellGrid(st.cells, { modelOf, beforeFrame: refreshRanges,
        titleOf: (c) => cellTitle(c, sw.dimensions) });
      window.__sqdSweep = grid.stats; // the benchmark reads frames and cell draws here…
      window.__sqdSweepGrid = grid; // …and forces every cell to redraw through this
      clear(cellsBox, grid.element);
      st.rangesDirty = true;
      grid.invalidate(null);
      renderHead();
      document.title = `${sw.name} · sweep · SQD`;
      requestAnimationFrame(() => {
        performance.mark("sqd:sweep-painted");
        root.dataset.ready = "true";
        refreshAll();
        api.sweepMetrics(sweepId, SWEEP_KEYS.filter((k) => !CELL_KEYS.includes(k)), st.maxPoints).then((more) => {
          storeSeries(more);
          refreshAll();
        }).catch((err) => shell.banner(`Could not load FID and modes: ${err.message}`, "error"));
      });
      st.ready = true;
      const pending = st.pending.splice(0);
      if (pending.length) onBatch(pending);
    } catch (err) {
      clear(head, errorState(err.status === 404 ? "No such sweep." : "Could not load the sweep.", err, load));
    }
  }

  const events = followEvents({ sweep: sweepId, onBatch, onState: shell.setLive });
  load();

  return {
    unmount() {
      events.close();
      clearTimeout(tableTimer);
      sections.disconnect();
      if (grid) grid.destroy();
      document.title = "SQD · GAN training monitor";
    },
  };
}
