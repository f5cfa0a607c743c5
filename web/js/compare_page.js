// Compare page: several runs overlaid per metric (NSGAN vs NSGAN-GP…), each run in its own stable colour, live
// over SSE, zoom re-queries every run's window at full resolution.

import { api } from "./api.js";
import { createChart } from "./charts.js";
import { assignColors } from "./colors.js";
import { clear, emptyState, errorState, h, statusBadge } from "./dom.js";
import { formatInt } from "./format.js";
import { COMPARE_CHARTS, modeCount } from "./metrics.js";
import { routeHash } from "./router.js";
import { emptySeries, fromApi, mergeLive, toPlot } from "./series.js";
import { followEvents } from "./sse.js";

const KEYS = COMPARE_CHARTS.map((c) => c.key);

export function mount(root, route, shell) {
  const ids = [...new Set(route.ids || [])];
  const colors = assignColors(ids);
  const st = { runs: new Map(), store: new Map(ids.map((id) => [id, new Map()])), window: null, revision: 0,
    seq: 0, maxPoints: 800, errors: new Map() };
  const charts = [];
  let events = null;

  const go = (next) => { window.location.hash = routeHash("compare", { params: { ids: next.join(",") } }); };
  const picker = h("select", { "aria-label": "add a run to the comparison" },
    h("option", { value: "" }, "Add a run…"));
  picker.addEventListener("change", () => { if (picker.value) go([...ids, picker.value]); });
  const chips = h("ul", { class: "run-chips", "aria-label": "compared runs" });
  const resetZoom = h("button", { type: "button", class: "ghost", disabled: true, dataset: { key: "0" },
    onclick: () => zoom({ reset: true }) }, "Reset zoom");
  const grid = h("div", { class: "charts" });
  root.append(h("div", { class: "page-head" }, h("h1", {}, "Compare"), h("span", { class: "spacer" }), resetZoom),
    h("div", { class: "toolbar" }, chips, picker), grid);

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

  function model(spec) {
    const traces = ids.filter((id) => st.runs.has(id)).map((id) => ({
      name: st.runs.get(id).name || id, color: colors[id], markers: spec.markers,
      plot: toPlot(st.store.get(id).get(spec.key) || emptySeries()),
    }));
    const m = spec.ceiling && st.runs.size ? modeCount(st.runs.get(ids.find((id) => st.runs.has(id)))) : null;
    return {
      traces, alerts: [], xTitle: "step", xRange: st.window, revision: st.revision,
      ceiling: m ? { y: Math.log(m), label: `ln m = ${Math.log(m).toFixed(2)}` } : null,
    };
  }

  const drawAll = () => Promise.all(charts.map((c) => c.chart.render(model(c.spec))));

  async function queryAll() {
    const seq = ++st.seq;
    const [lo, hi] = st.window || [null, null];
    const answers = await Promise.allSettled(ids.map((id) => api.metrics(id, KEYS, st.maxPoints, lo, hi)));
    if (seq !== st.seq) return;
    answers.forEach((a, i) => {
      if (a.status !== "fulfilled") return;
      const store = new Map(Object.entries(a.value.series).map(([k, s]) => [k, fromApi(s)]));
      st.store.set(ids[i], store);
    });
  }

  async function zoom(z) {
    st.window = z.reset ? null : [Math.max(0, Math.floor(z.range[0])), Math.ceil(z.range[1])];
    st.revision += 1;
    resetZoom.disabled = !st.window;
    await queryAll();
    await drawAll();
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
      } else if (type === "points" && st.store.has(id)) {
        const store = st.store.get(id);
        for (const [key, s] of Object.entries(data.series)) {
          if (!KEYS.includes(key)) continue;
          if (!store.has(key)) store.set(key, emptySeries());
          mergeLive(store.get(key), s.step, s.value, st.window, st.maxPoints);
          dirty.add(key);
        }
      }
    }
    for (const c of charts) if (dirty.has(c.spec.key)) c.chart.update(() => model(c.spec));
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
      await queryAll();
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
      for (const c of charts) c.chart.destroy();
      document.title = "SQD · GAN training monitor";
    },
  };
}
