// The run page's System tab: the sys/… series a Monitor's sender thread samples every few seconds (per GPU:
// utilisation, memory, power, temperature; the process's CPU and RSS; step time and samples/s), one small chart
// per quantity with a trace per GPU. Loaded when the tab opens, re-read every 5 s while it is open and the run live.

import { api } from "./api.js";
import { createChart } from "./charts.js";
import { clear, emptyState, errorState, h, loadingState } from "./dom.js";
import { formatValue } from "./format.js";
import { SYS_PREFIX, systemCharts } from "./metrics.js";
import { emptySeries, fromApi, latest, toPlot } from "./series.js";

const COLORS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"];
const REFRESH_MS = 5000;

/** `keysOf()`: the run's metric keys as the page knows them (live keys included). */
export function systemPanel(runId, keysOf) {
  const grid = h("div", { class: "charts small system-charts" });
  const element = h("div", { class: "system-panel" }, loadingState("Loading system metrics…"));
  const charts = new Map();
  let timer = null;
  let revision = 0;

  function model(traces, series) {
    const shown = traces.map((t, i) => ({ name: t.label, color: COLORS[i % COLORS.length],
      plot: toPlot(series[t.key] || emptySeries()) }));
    const last = traces.length ? latest(series[traces[0].key] || emptySeries()) : null;
    return { traces: shown, alerts: [], ceiling: null, xTitle: "step", xRange: null, revision,
      caption: last ? `${traces[0].label} ${formatValue(last.value)}` : "", emptyText: "no samples yet" };
  }

  async function load() {
    const keys = keysOf().filter((k) => k.startsWith(SYS_PREFIX));
    const layout = systemCharts(keys);
    if (!layout.length) {
      clear(element, emptyState("No system metrics yet.", "The Monitor samples GPU, CPU, memory and step time "
        + "every few seconds (SQD_TRAINER__SYSTEM_METRICS_S)."));
      return;
    }
    try {
      const res = await api.metrics(runId, keys, 400);
      const series = Object.fromEntries(Object.entries(res.series).map(([k, s]) => [k, fromApi(s)]));
      if (grid.parentNode !== element) clear(element, grid);
      revision += 1;
      await Promise.all(layout.map(({ chart, traces }) => {
        if (!charts.has(chart.id)) charts.set(chart.id, createChart(grid, { id: chart.id, title: chart.title,
          height: 200 }));
        return charts.get(chart.id).render(model(traces, series));
      }));
      element.dataset.ready = "true";
    } catch (err) {
      clear(element, errorState("Could not load the system metrics.", err, load));
    }
  }

  return {
    element,
    load,
    /** Re-read while `live()` says the run is live and the tab is shown; stop() on leaving the page. */
    poll(live) {
      clearInterval(timer);
      timer = setInterval(() => { if (live() && !element.closest("[hidden]")) load(); }, REFRESH_MS);
    },
    stop() {
      clearInterval(timer);
      for (const c of charts.values()) c.destroy();
    },
  };
}
