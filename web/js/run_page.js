// Run page: live S / Q / D / FID / loss charts (SSE points merged into the downsampled series), a step/epoch
// axis, zoom that re-queries the window at full resolution, alerts on the charts and in a list, evaluations,
// the sample-grid timeline, config, system metrics, logs, cancel.

import { alertMarks } from "./alert_marks.js";
import { api } from "./api.js";
import { createChart } from "./charts.js";
import { clear, errorState, h, loadingState, statusBadge, tabs } from "./dom.js";
import { epochMap } from "./epochs.js";
import { formatDuration, formatInt, formatProgress, formatTime, formatValue, LIVE_STATUSES,
  runDuration } from "./format.js";
import { modeCount, otherKeys, RUN_CHART_KEYS, RUN_CHARTS } from "./metrics.js";
import { alertsPanel, configPanel, evaluationsPanel, logsPanel, samplesPanel } from "./run_panels.js";
import { runEditor } from "./run_edit.js";
import { rulesPanel } from "./rules_panel.js";
import { systemPanel } from "./system_panel.js";
import { emptySeries, fromApi, latest, mergeLive, toPlot } from "./series.js";
import { followEvents } from "./sse.js";

const EPOCH_KEY_PREFIX = "angle_epoch/";
const RUN_REFRESH_MS = 5000;
const MAX_PENDING = 10_000; // live messages kept while the first REST load is under way

export function mount(root, route, shell) {
  const runId = route.id;
  const st = {
    run: null, keys: [], store: new Map(), window: null, axis: "step", epochs: null, revision: 0, seq: 0,
    maxPoints: 800, evaluations: [], ready: false, pending: [],
  };
  const charts = [];
  const otherCharts = new Map();
  let events = null;
  let ticker = null;
  let epochTimer = null;

  // --- layout ----------------------------------------------------------------------------------------------
  const head = h("div", { class: "run-head" }, loadingState("Loading the run…"));
  const failure = h("div", { class: "run-failure" });
  const axisStep = h("button", { type: "button", "aria-pressed": "true", onclick: () => setAxis("step") }, "Step");
  const axisEpoch = h("button", { type: "button", "aria-pressed": "false", dataset: { key: "e" },
    onclick: () => setAxis(st.axis === "epoch" ? "step" : "epoch") }, "Epoch");
  const resetZoom = h("button", { type: "button", class: "ghost", disabled: true, dataset: { key: "0" },
    onclick: () => zoom({ reset: true }) }, "Reset zoom");
  const windowNote = h("span", { class: "muted window-note" });
  const grid = h("div", { class: "charts" });
  const alerts = alertsPanel((a) => zoomToStep(a.step));
  const alertsCard = h("section", { class: "chart alerts-card", "aria-labelledby": "alerts-title" },
    h("h2", { id: "alerts-title" }, "Alerts"), alerts.element);
  const rules = rulesPanel(runId, shell);
  alertsCard.append(rules.best);
  const othersGrid = h("div", { class: "charts small" });
  const others = h("details", { class: "more-series" }, h("summary", {}, "More series"), othersGrid);
  const evaluations = evaluationsPanel();
  const samples = samplesPanel(runId);
  const config = configPanel();
  const logs = logsPanel(runId);
  const system = systemPanel(runId, () => st.keys);
  const lower = tabs([
    { name: "evaluations", label: "Evaluations", content: evaluations.element },
    { name: "samples", label: "Samples", content: samples.element },
    { name: "config", label: "Config", content: config.element },
    { name: "system", label: "System", content: system.element },
    { name: "logs", label: "Logs", content: logs.element },
    { name: "rules", label: "Rules", content: rules.element },
  ], (name) => {
    if (name === "system") system.load();
    if (name === "logs") logs.load();
    if (name === "rules") rules.load();
  });

  root.append(head, failure,
    h("div", { class: "toolbar" }, h("span", { class: "seg", role: "group", "aria-label": "x axis" }, axisStep,
      axisEpoch), resetZoom, windowNote),
    grid, others, lower.element);
  for (const spec of RUN_CHARTS) {
    const chart = createChart(grid, spec);
    chart.onZoom(zoom);
    charts.push({ spec, chart, keys: spec.traces.map((t) => t.key) });
  }
  grid.append(alertsCard);
  others.addEventListener("toggle", () => { if (others.open) renderOthers(true); });

  // --- header ----------------------------------------------------------------------------------------------
  const editor = runEditor(shell, (run) => { st.run = run; renderHead(); });

  function renderHead() {
    const run = st.run;
    const live = LIVE_STATUSES.has(run.status);
    const cancel = h("button", { type: "button", class: "danger", disabled: !live || run.status === "cancelling",
      title: shell.canWrite ? "" : "needs a token: sign in first", onclick: onCancel }, "Cancel run");
    editor.update(run);
    clear(head,
      h("div", { class: "title-row" }, editor.title, statusBadge(run.status),
        run.archived_at ? h("span", { class: "badge" }, "archived") : null,
        run.deleted_at ? h("span", { class: "badge status-failed" }, "deleted") : null,
        h("span", { class: "spacer" }), h("a", { class: "button ghost", href: `#/compare?ids=${run.id}` }, "Compare…"),
        cancel, editor.buttons),
      h("div", { class: "edit-row" }, editor.tags, editor.notes),
      h("dl", { class: "facts inline" },
        h("dt", {}, "preset"), h("dd", {}, run.preset || run.kind),
        h("dt", {}, "step"), h("dd", { class: "run-step" }, formatProgress(run)),
        h("dt", {}, "started"), h("dd", {}, formatTime(run.started_at ?? run.created_at)),
        h("dt", {}, "duration"),
        h("dd", { class: "run-duration" }, formatDuration(runDuration(run, Date.now() / 1000))),
        h("dt", {}, "id"), h("dd", {}, h("code", {}, run.id))));
    clear(failure, run.error ? h("div", { class: "state error", role: "alert" }, h("strong", {}, `Run ${run.status}: `),
      run.error, run.traceback ? h("details", {}, h("summary", {}, "traceback"), h("pre", {}, run.traceback)) : null)
      : null);
  }

  async function onCancel(ev) {
    ev.target.disabled = true;
    try {
      st.run = await api.cancel(runId);
      renderHead();
    } catch (err) {
      ev.target.disabled = false;
      if (err.status !== 401) shell.banner(`Cancel failed: ${err.message}`, "error");
    }
  }

  // --- charts ----------------------------------------------------------------------------------------------
  const xOf = () => (st.axis === "epoch" && st.epochs ? st.epochs.toEpoch : (x) => x);

  function chartModel(spec, traces) {
    const x = xOf();
    const m = modeCount(st.run, st.evaluations);
    const marks = alertMarks(alerts.alerts, x, { formatStep: formatInt });
    const first = traces.find((t) => latest(t.series));
    const last = first ? latest(first.series) : null;
    return {
      traces: traces.map((t) => ({ ...t, plot: toPlot(t.series, x) })),
      alerts: marks,
      ceiling: spec.ceiling && m ? { y: Math.log(m), label: `ln m = ${Math.log(m).toFixed(2)} (m = ${formatInt(m)})` }
        : null,
      xTitle: st.axis === "epoch" && st.epochs ? "epoch" : "step",
      xRange: st.window ? st.window.map(x) : null,
      revision: st.revision,
      caption: last ? `${first.name} ${formatValue(last.value)} @ ${formatInt(last.step)}` : "",
      emptyText: !st.ready ? "loading…" : spec.traces && spec.traces[0].key.startsWith("eval/")
        ? "no evaluations yet (a worker scores each checkpoint)" : "no data yet",
    };
  }

  function chartTraces(entry) {
    return entry.spec.traces.filter((t) => st.store.has(t.key) || t.key === entry.keys[0])
      .map((t) => ({ name: t.label, color: t.color, dash: t.dash, markers: t.markers,
        series: st.store.get(t.key) || emptySeries() }));
  }

  const otherTraces = (key) => [{ name: key, color: "#444", markers: true,
    series: st.store.get(key) || emptySeries() }];
  const drawChart = (entry) => entry.chart.render(chartModel(entry.spec, chartTraces(entry)));
  const drawOther = (key) => {
    const entry = otherCharts.get(key);
    return entry.chart.render(chartModel(entry.spec, otherTraces(key)));
  };

  function renderOthers(fetchFirst = false) {
    const keys = otherKeys(st.keys);
    for (const key of keys) {
      if (otherCharts.has(key)) continue;
      const spec = { id: `other-${key}`, title: key, height: 200 };
      const chart = createChart(othersGrid, spec);
      chart.onZoom(zoom);
      otherCharts.set(key, { spec, chart });
    }
    others.querySelector("summary").textContent = `More series (${keys.length})`;
    others.hidden = keys.length === 0;
    if (!others.open) return Promise.resolve();
    const missing = keys.filter((k) => !st.store.has(k));
    const load = fetchFirst && missing.length ? query(missing, false) : Promise.resolve();
    return load.then(() => Promise.all(keys.map(drawOther)));
  }

  function drawAll() {
    return Promise.all([...charts.map(drawChart), renderOthers()]);
  }

  /** Live data changed these keys: their charts redraw when the redraw budget allows. */
  function updateKeys(keys) {
    const set = new Set(keys);
    for (const entry of charts) {
      if (entry.keys.some((k) => set.has(k))) entry.chart.update(() => chartModel(entry.spec, chartTraces(entry)));
    }
    if (!others.open) return;
    for (const k of set) {
      const entry = otherCharts.get(k);
      if (entry) entry.chart.update(() => chartModel(entry.spec, otherTraces(k)));
    }
  }

  /** (Re)load the series over REST for the current window at the charts' pixel width. */
  async function query(keys, replace = true) {
    if (!keys.length) return;
    const seq = ++st.seq;
    const [lo, hi] = st.window || [null, null];
    const res = await api.metrics(runId, keys, st.maxPoints, lo, hi);
    if (seq !== st.seq && replace) return; // a newer zoom answered first
    if (replace) for (const k of keys) st.store.delete(k);
    for (const [key, s] of Object.entries(res.series)) st.store.set(key, fromApi(s));
  }

  const shownKeys = () => st.keys.filter((k) => RUN_CHART_KEYS.includes(k))
    .concat(others.open ? otherKeys(st.keys) : []);

  async function zoom(z) {
    if (z.reset) {
      st.window = null;
    } else {
      const toStep = st.axis === "epoch" && st.epochs ? st.epochs.toStep : (x) => x;
      const lo = Math.max(0, Math.floor(toStep(Number(z.range[0]))));
      const hi = Math.max(lo + 1, Math.ceil(toStep(Number(z.range[1]))));
      st.window = [lo, hi];
    }
    st.revision += 1;
    resetZoom.disabled = !st.window;
    windowNote.textContent = st.window ? "loading the window…" : "";
    try {
      await query(shownKeys());
      await drawAll();
      const width = Math.max(1, ...[...st.store.values()].map((s) => s.width));
      windowNote.textContent = !st.window ? "" : `steps ${formatInt(st.window[0])}–${formatInt(st.window[1])} · ${
        width === 1 ? "full resolution" : `${formatInt(width)} steps per point`}`;
    } catch (err) {
      shell.banner(`Could not load that window: ${err.message}`, "error");
    }
  }

  function zoomToStep(step) {
    const last = st.run.last_step || step;
    const half = Math.max(50, Math.round(last / 20));
    const x = xOf();
    zoom({ range: [x(Math.max(0, step - half)), x(step + half)] });
    grid.scrollIntoView({ behavior: "smooth", block: "start" });
  }

  async function loadEpochs() {
    try {
      const res = await api.epochs(runId);
      st.epochs = epochMap(res.epoch, res.last_step);
    } catch {
      st.epochs = null;
    }
    axisEpoch.disabled = !st.epochs;
    axisEpoch.title = st.epochs ? "x axis in epochs (e)" : "this run reports no epochs";
  }

  async function setAxis(axis) {
    if (axis === "epoch" && !st.epochs) await loadEpochs();
    st.axis = axis === "epoch" && st.epochs ? "epoch" : "step";
    axisStep.setAttribute("aria-pressed", String(st.axis === "step"));
    axisEpoch.setAttribute("aria-pressed", String(st.axis === "epoch"));
    st.revision += 1;
    await drawAll();
  }

  // --- live ------------------------------------------------------------------------------------------------
  let newKey = false;

  function applyPoints(data) {
    const changed = [];
    for (const [key, s] of Object.entries(data.series)) {
      if (!st.keys.includes(key)) {
        st.keys.push(key);
        newKey = true;
      }
      if (!st.store.has(key)) st.store.set(key, emptySeries());
      mergeLive(st.store.get(key), s.step, s.value, st.window, st.maxPoints);
      changed.push(key);
      if (s.step.length) st.run.last_step = Math.max(st.run.last_step ?? 0, s.step[s.step.length - 1]);
      if (key.startsWith(EPOCH_KEY_PREFIX)) {
        clearTimeout(epochTimer); // an epoch ended: its boundary is known now
        epochTimer = setTimeout(() => loadEpochs().then(() => st.axis === "epoch" && drawAll()), 1000);
      }
    }
    return changed;
  }

  function onBatch(batch) {
    if (!st.ready) {
      // merged once the REST load has answered; if it failed, the retry re-reads everything over REST
      if (st.pending.length < MAX_PENDING) st.pending.push(...batch);
      return;
    }
    const changed = new Set();
    let all = false;
    for (const { type, data } of batch) {
      if (type === "reset") {
        reload();
        return;
      }
      if (type === "points") applyPoints(data).forEach((k) => changed.add(k));
      else if (type === "run") {
        if (!LIVE_STATUSES.has(data.status)) setTimeout(logs.load, 3000); // the agent's last lines
        st.run = data;
        renderHead();
        config.set(data);
      } else if (type === "alert") {
        alerts.add(data);
        rules.onAlert(data);
        all = true;
      } else if (type === "evaluation") {
        st.evaluations.push(data);
        evaluations.add(data);
        samples.add(data);
      }
    }
    if (changed.size) {
      head.querySelector(".run-step").textContent = formatProgress(st.run);
      refreshRunSoon();
    }
    if (all) drawAll();
    else if (changed.size) updateKeys(changed);
    if (newKey) {
      newKey = false;
      renderOthers(true);
    }
  }

  // points carry no epoch: re-read the run row now and then while it streams, for its epoch and status
  let runFetchedAt = 0;
  let runTimer = null;
  function refreshRunSoon() {
    if (runTimer) return; // one is due: it reads the newest row
    runTimer = setTimeout(() => {
      runTimer = null;
      runFetchedAt = Date.now();
      api.run(runId).then((run) => {
        st.run = { ...run, last_step: Math.max(run.last_step ?? 0, st.run.last_step ?? 0) };
        renderHead();
      }).catch(() => { /* the next batch tries again */ });
    }, Math.max(0, runFetchedAt + RUN_REFRESH_MS - Date.now()));
  }

  // --- loading ---------------------------------------------------------------------------------------------
  async function loadPanels() {
    const [alertList, evals, sampleList] = await Promise.allSettled([api.alerts(runId), api.evaluations(runId),
      api.samples(runId)]);
    if (alertList.status === "fulfilled") alerts.set(alertList.value.data);
    rules.refreshBest();
    if (evals.status === "fulfilled") {
      st.evaluations = evals.value.data;
      evaluations.set(evals.value.data);
    } else evaluations.fail(evals.reason, loadPanels);
    if (sampleList.status === "fulfilled") samples.set(sampleList.value.data);
    else samples.fail(sampleList.reason, loadPanels);
  }

  async function load() {
    try {
      const [run, keys] = await Promise.all([api.run(runId), api.keys(runId)]);
      st.run = run;
      st.keys = keys.data.map((k) => k.key);
      renderHead();
      config.set(run);
      st.maxPoints = Math.max(200, Math.min(4000, Math.round(charts[0].chart.width())));
      await Promise.all([query(shownKeys()), loadPanels()]);
      performance.mark("sqd:run-data"); // the benchmark splits first paint into loading and drawing
      st.ready = true;
      const pending = st.pending.splice(0);
      if (pending.length) onBatch(pending);
      await drawAll();
      requestAnimationFrame(() => performance.mark("sqd:run-painted"));
      root.dataset.ready = "true";
      axisEpoch.disabled = !st.keys.some((k) => k.startsWith(EPOCH_KEY_PREFIX)) && !st.run.last_epoch;
      logs.poll(() => LIVE_STATUSES.has(st.run.status));
      system.poll(() => LIVE_STATUSES.has(st.run.status));
    } catch (err) {
      const what = err.status === 404 ? `Run ${runId} not found.` : "Could not load the run.";
      clear(head, errorState(what, err, reload), h("p", {}, h("a", { href: "#/runs" }, "← all runs")));
    }
  }

  function reload() {
    st.ready = false;
    st.pending.length = 0;
    st.store.clear();
    load();
  }

  events = followEvents({ runIds: [runId], onBatch, onState: shell.setLive });
  ticker = setInterval(() => {
    if (st.run && LIVE_STATUSES.has(st.run.status) && st.run.started_at) {
      const dd = head.querySelector(".run-duration");
      if (dd) dd.textContent = formatDuration(runDuration(st.run, Date.now() / 1000));
    }
  }, 1000);
  load();

  return {
    unmount() {
      events.close();
      clearInterval(ticker);
      clearTimeout(epochTimer);
      clearTimeout(runTimer);
      logs.stop();
      system.stop();
      for (const c of charts) c.chart.destroy();
      for (const c of otherCharts.values()) c.chart.destroy();
    },
  };
}
