// Compare page: several runs overlaid per metric (NSGAN vs NSGAN-GP…), each run in its own stable colour, live
// over SSE, zoom re-queries every run's window at full resolution. On the epoch axis every run is placed by its
// own epochs, so runs with different batch sizes or dataset sizes line up by epoch; a zoom window is then in
// epochs and becomes each run's own step window.

import { alertMarks } from "./alert_marks.js";
import { api } from "./api.js";
import { createChart } from "./charts.js";
import { assignColors } from "./colors.js";
import { clear, emptyState, errorState, h, statusBadge } from "./dom.js";
import { formatInt } from "./format.js";
import { epochMap } from "./epochs.js";
import { COMPARE_CHARTS, modeCount } from "./metrics.js";
import { routeHash } from "./router.js";
import { emptySeries, fromApi, mergeLive, toPlot } from "./series.js";
import { followEvents } from "./sse.js";

const KEYS = COMPARE_CHARTS.map((c) => c.key);
const EPOCH_KEY_PREFIX = "angle_epoch/";
const identity = (x) => x;

export function mount(root, route, shell) {
  const ids = [...new Set(route.ids || [])];
  const colors = assignColors(ids);
  const st = { runs: new Map(), store: new Map(ids.map((id) => [id, new Map()])), window: null, revision: 0,
    seq: 0, maxPoints: 800, errors: new Map(), axis: "step", epochs: new Map(), alerts: new Map() };
  const charts = [];
  let events = null;
  let epochTimer = null;

  const go = (next) => { window.location.hash = routeHash("compare", { params: { ids: next.join(",") } }); };
  const picker = h("select", { "aria-label": "add a run to the comparison" },
    h("option", { value: "" }, "Add a run…"));
  picker.addEventListener("change", () => { if (picker.value) go([...ids, picker.value]); });
  const chips = h("ul", { class: "run-chips", "aria-label": "compared runs" });
  const resetZoom = h("button", { type: "button", class: "ghost", disabled: true, dataset: { key: "0" },
    onclick: () => zoom({ reset: true }) }, "Reset zoom");
  const axisStep = h("button", { type: "button", "aria-pressed": "true", onclick: () => setAxis("step") }, "Step");
  const axisEpoch = h("button", { type: "button", "aria-pressed": "false", disabled: true, dataset: { key: "e" },
    onclick: () => setAxis(st.axis === "epoch" ? "step" : "epoch") }, "Epoch");
  const grid = h("div", { class: "charts" });
  root.append(h("div", { class: "page-head" }, h("h1", {}, "Compare"), h("span", { class: "spacer" }), resetZoom),
    h("div", { class: "toolbar" }, chips, picker,
      h("span", { class: "seg", role: "group", "aria-label": "x axis" }, axisStep, axisEpoch)), grid);

  api.runs({ limit: 200 }).then((res) => {
    for (const r of res.data) {
      if (!ids.includes(r.id)) picker.append(h("option", { value: r.id }, `${r.name || r.id} (${r.status})`));
    }
  }).catch(() => { picker.disabled = true; });

  if (!ids.length) {
    grid.append(emptyState("Pick runs to compare.", "Select runs on the Runs page and press Compare, or add them "
      + "here one by one."));
    return { unmount() {} };
  }

  function renderChips() {
    clear(chips, ids.map((id) => {
      const run = st.runs.get(id);
      const err = st.errors.get(id);
      return h("li", { class: "run-chip", style: `--run-color:${colors[id]}`, dataset: { runId: id } },
        h("span", { class: "swatch", "aria-hidden": "true" }),
        h("a", { href: routeHash("run", { id }) }, run ? run.name || id : id),
        run ? statusBadge(run.status) : err ? h("span", { class: "badge status-failed" }, err) : null,
        h("button", { type: "button", class: "ghost small", "aria-label": `remove ${run ? run.name : id}`,
          onclick: () => go(ids.filter((x) => x !== id)) }, "×"));
    }));
  }

  const onEpochs = () => st.axis === "epoch";
  const xOf = (id) => (onEpochs() ? st.epochs.get(id).toEpoch : identity);

  /** The run's own step window for the shared zoom window (which is in epochs on the epoch axis). */
  function stepWindow(id) {
    if (!st.window || !onEpochs()) return st.window;
    const map = st.epochs.get(id);
    if (!map) return null; // a run that could not be loaded: nothing of it is drawn
    return [Math.max(0, Math.floor(map.toStep(st.window[0]))), Math.ceil(map.toStep(st.window[1]))];
  }

  function model(spec) {
    const traces = ids.filter((id) => st.runs.has(id)).map((id) => ({
      name: st.runs.get(id).name || id, color: colors[id], markers: spec.markers,
      plot: toPlot(st.store.get(id).get(spec.key) || emptySeries(), xOf(id)),
    }));
    const m = spec.ceiling && st.runs.size ? modeCount(st.runs.get(ids.find((id) => st.runs.has(id)))) : null;
    const alerts = ids.filter((id) => st.runs.has(id)).flatMap((id) => alertMarks(st.alerts.get(id) || [], xOf(id),
      { label: st.runs.get(id).name || id, formatStep: formatInt }));
    return {
      traces, alerts, xTitle: st.axis, xRange: st.window, revision: st.revision,
      ceiling: m ? { y: Math.log(m), label: `ln m = ${Math.log(m).toFixed(2)}` } : null,
    };
  }

  const drawAll = () => Promise.all(charts.map((c) => c.chart.render(model(c.spec))));

  async function queryAll() {
    const seq = ++st.seq;
    const answers = await Promise.allSettled(ids.map((id) => {
      const [lo, hi] = stepWindow(id) || [null, null];
      return api.metrics(id, KEYS, st.maxPoints, lo, hi);
    }));
    if (seq !== st.seq) return;
    answers.forEach((a, i) => {
      if (a.status !== "fulfilled") return;
      const store = new Map(Object.entries(a.value.series).map(([k, s]) => [k, fromApi(s)]));
      st.store.set(ids[i], store);
    });
  }

  async function zoom(z) {
    st.window = z.reset ? null
      : onEpochs() ? [Math.max(0, z.range[0]), z.range[1]]
        : [Math.max(0, Math.floor(z.range[0])), Math.ceil(z.range[1])];
    st.revision += 1;
    resetZoom.disabled = !st.window;
    await queryAll();
    await drawAll();
  }

  /** Every loaded run's step ↔ epoch map; the epoch axis is offered only when each run has one. */
  async function loadEpochs() {
    const loaded = ids.filter((id) => st.runs.has(id));
    const answers = await Promise.allSettled(loaded.map((id) => api.epochs(id)));
    answers.forEach((a, i) => {
      const map = a.status === "fulfilled" ? epochMap(a.value.epoch, a.value.last_step) : null;
      if (map) st.epochs.set(loaded[i], map);
      else st.epochs.delete(loaded[i]);
    });
    const all = loaded.length > 0 && loaded.every((id) => st.epochs.has(id));
    axisEpoch.disabled = !all;
    axisEpoch.title = all ? "x axis in epochs, each run by its own (e)" : "some of these runs report no epochs yet";
    if (!all && onEpochs()) await setAxis("step");
  }

  async function setAxis(axis) {
    const next = axis === "epoch" && !axisEpoch.disabled ? "epoch" : "step";
    axisStep.setAttribute("aria-pressed", String(next === "step"));
    axisEpoch.setAttribute("aria-pressed", String(next === "epoch"));
    if (next === st.axis) return;
    st.axis = next;
    if (st.window) await zoom({ reset: true }); // a window in steps means nothing in epochs, and back
    else {
      st.revision += 1;
      await drawAll();
    }
  }

  function onBatch(batch) {
    const dirty = new Set();
    for (const { type, data } of batch) {
      const id = data.run_id ?? data.id;
      if (type === "reset") {
        queryAll().then(drawAll);
        return;
      }
      if (type === "run" && st.runs.has(id)) {
        st.runs.set(id, data);
        renderChips();
      } else if (type === "alert" && st.runs.has(id)) {
        st.alerts.set(id, [...(st.alerts.get(id) || []), data]);
        for (const c of charts) dirty.add(c.spec.key);
      } else if (type === "points" && st.store.has(id)) {
        const store = st.store.get(id);
        for (const [key, s] of Object.entries(data.series)) {
          if (key.startsWith(EPOCH_KEY_PREFIX)) {
            clearTimeout(epochTimer); // an epoch ended: its boundary is known now
            epochTimer = setTimeout(() => loadEpochs().then(() => onEpochs() && drawAll()), 1000);
          }
          if (!KEYS.includes(key)) continue;
          if (!store.has(key)) store.set(key, emptySeries());
          mergeLive(store.get(key), s.step, s.value, stepWindow(id), st.maxPoints);
          dirty.add(key);
        }
      }
    }
    for (const c of charts) if (dirty.has(c.spec.key)) c.chart.update(() => model(c.spec));
  }

  async function loadAlerts() {
    const answers = await Promise.allSettled([...st.runs.keys()].map((id) => api.alerts(id)));
    [...st.runs.keys()].forEach((id, i) => {
      if (answers[i].status === "fulfilled") st.alerts.set(id, answers[i].value.data);
    });
  }

  async function load() {
    const runs = await Promise.allSettled(ids.map((id) => api.run(id)));
    runs.forEach((r, i) => {
      if (r.status === "fulfilled") st.runs.set(ids[i], r.value);
      else st.errors.set(ids[i], r.reason.status === 404 ? "not found" : "error");
    });
    renderChips();
    if (!st.runs.size) {
      clear(grid, errorState("None of these runs could be loaded.", runs[0].reason, load));
      return;
    }
    for (const spec of COMPARE_CHARTS) {
      if (charts.some((c) => c.spec === spec)) continue;
      const chart = createChart(grid, { ...spec, id: `cmp-${spec.key}` });
      chart.onZoom(zoom);
      charts.push({ spec, chart });
    }
    st.maxPoints = Math.max(200, Math.min(4000, Math.round(charts[0].chart.width())));
    try {
      await Promise.all([queryAll(), loadEpochs(), loadAlerts()]);
    } catch (err) {
      shell.banner(`Could not load the series: ${err.message}`, "error");
    }
    await drawAll();
    root.dataset.ready = "true";
    requestAnimationFrame(() => performance.mark("sqd:compare-painted"));
  }

  renderChips();
  events = followEvents({ runIds: ids, onBatch, onState: shell.setLive });
  load();
  document.title = `Compare ${formatInt(ids.length)} runs · SQD`;

  return {
    unmount() {
      events.close();
      clearTimeout(epochTimer);
      for (const c of charts) c.chart.destroy();
      document.title = "SQD · GAN training monitor";
    },
  };
}
