// The run page's panels below the charts: alerts, evaluations, the sample-grid timeline, config and logs.
// Each is an object with an element and the methods the page calls as data arrives.

import { api } from "./api.js";
import { withAccessToken } from "./auth.js";
import { clear, emptyState, errorState, h, loadingState } from "./dom.js";
import { formatInt, formatTime, formatValue } from "./format.js";

/** "turning_point" → "Turning point" */
const ruleTitle = (rule) => {
  const words = String(rule || "alert").replace(/_/g, " ");
  return words.charAt(0).toUpperCase() + words.slice(1);
};

/** Alerts (turning points and rule hits) with their explanations; `onShow(alert)` zooms the charts to it. */
export function alertsPanel(onShow) {
  const list = h("ol", { class: "alerts", "aria-live": "polite" });
  const element = h("div", { class: "alerts-panel" }, emptyState("No alerts.", "Turning points and rule hits appear "
    + "here and on the charts as they are raised."));
  const alerts = [];

  function item(a) {
    const where = [a.step != null ? `step ${formatInt(a.step)}` : null, a.epoch != null ? `epoch ${a.epoch}` : null]
      .filter(Boolean).join(" · ");
    const scores = Object.entries(a.scores || {}).map(([k, v]) => `${k} ${formatValue(v)}`).join(", ");
    return h("li", { class: `alert-item severity-${a.severity}`, dataset: { alertId: a.id } },
      h("div", { class: "alert-head" },
        h("span", { class: `badge severity-${a.severity}` }, a.severity),
        h("strong", {}, ruleTitle(a.rule)),
        h("span", { class: "muted" }, where),
        h("span", { class: "spacer" }),
        a.step != null ? h("button", { type: "button", class: "ghost small", onclick: () => onShow(a) }, "Show")
          : null),
      h("p", { class: "explanation" }, a.explanation || "(no explanation given)"),
      (a.signals || []).length ? h("p", { class: "signals" }, "signals: ",
        a.signals.map((s) => h("code", {}, s)), scores ? h("span", { class: "muted" }, ` — ${scores}`) : null) : null,
      h("small", { class: "muted" }, formatTime(a.created_at)));
  }

  function render() {
    if (!alerts.length) return;
    clear(list, alerts.map(item));
    if (list.parentNode !== element) clear(element, list);
  }

  return {
    element,
    alerts,
    set(data) {
      alerts.splice(0, alerts.length, ...data);
      render();
    },
    add(alert) {
      if (alerts.some((a) => a.id === alert.id)) return;
      alerts.unshift(alert);
      render();
    },
  };
}

/** One row per checkpoint evaluation: ok, failed (with its error) or skipped under backpressure. */
export function evaluationsPanel() {
  const element = h("div", { class: "table-wrap" }, loadingState("Loading evaluations…"));
  const rows = new Map();
  const metric = (e, name) => {
    const m = e.metrics || {};
    const v = m[name] ?? m[`eval/${name}`];
    return v === undefined ? "–" : formatValue(v);
  };

  function render() {
    if (!rows.size) {
      clear(element, emptyState("No evaluations yet.", "An evaluation worker scores each checkpoint (Q, D, FID)."));
      return;
    }
    const sorted = [...rows.values()].sort((a, b) => b.checkpoint_step - a.checkpoint_step);
    clear(element, h("table", { class: "evaluations" },
      h("thead", {}, h("tr", {}, ["step", "epoch", "status", "Q", "D", "D plug-in", "FID", "modes", "samples",
        "worker", "seconds"].map((c) => h("th", {}, c)))),
      h("tbody", {}, sorted.map((e) => h("tr", { class: `eval-${e.status}` },
        h("td", { class: "num" }, formatInt(e.checkpoint_step)),
        h("td", { class: "num" }, e.epoch ?? "–"),
        h("td", { title: e.error || "" }, e.status, e.error ? h("div", { class: "error-text" }, e.error) : null),
        h("td", { class: "num" }, metric(e, "quality")),
        h("td", { class: "num" }, metric(e, "diversity")),
        h("td", { class: "num" }, metric(e, "diversity_plugin")),
        h("td", { class: "num" }, metric(e, "fid")),
        h("td", { class: "num" }, metric(e, "modes_covered")),
        h("td", { class: "num" }, e.n_samples ? formatInt(e.n_samples) : "–"),
        h("td", {}, e.worker || "–"),
        h("td", { class: "num" }, formatValue(Object.values(e.timings_s || {}).reduce((a, b) => a + b, 0)))))),
    ));
  }

  return {
    element,
    set(data) {
      rows.clear();
      for (const e of data) rows.set(e.checkpoint_step, e);
      render();
    },
    add(e) {
      rows.set(e.checkpoint_step, e);
      render();
    },
    fail(err, retry) {
      clear(element, errorState("Could not load the evaluations.", err, retry));
    },
  };
}

/** The sample grids over checkpoints: a slider (arrow keys step through), the grid of that checkpoint, same z. */
export function samplesPanel(runId) {
  const samples = [];
  const slider = h("input", { type: "range", min: 0, max: 0, step: 1, value: 0, class: "sample-slider",
    "aria-label": "checkpoint" });
  const label = h("output", { class: "sample-label" });
  const img = h("img", { class: "sample-grid", alt: "sample grid" });
  const follow = h("input", { type: "checkbox", checked: true });
  const prev = h("button", { type: "button", class: "ghost", "aria-label": "previous checkpoint" }, "◀");
  const next = h("button", { type: "button", class: "ghost", "aria-label": "next checkpoint" }, "▶");
  const view = h("div", { class: "samples-view" },
    h("div", { class: "sample-controls" }, prev, slider, next, label,
      h("label", { class: "muted" }, follow, " follow the newest")),
    h("p", { class: "muted small" }, "Every grid is drawn from the same fixed latent vectors z, so changes between "
      + "checkpoints are the generator's, not the noise's."),
    img);
  const element = h("div", { class: "samples-panel" }, loadingState("Loading samples…"));

  function show(i) {
    if (!samples.length) return;
    const k = Math.max(0, Math.min(samples.length - 1, i));
    slider.value = String(k);
    const s = samples[k];
    label.value = `step ${formatInt(s.step)} · checkpoint ${k + 1} of ${samples.length}`;
    img.src = withAccessToken(s.url);
    img.alt = `sample grid at step ${s.step}`;
    img.dataset.step = String(s.step);
  }

  function render() {
    if (!samples.length) {
      clear(element, emptyState("No sample grids yet.", "Each evaluated checkpoint adds one."));
      return;
    }
    slider.max = String(samples.length - 1);
    if (view.parentNode !== element) clear(element, view);
  }

  slider.addEventListener("input", () => {
    follow.checked = Number(slider.value) === samples.length - 1;
    show(Number(slider.value));
  });
  prev.addEventListener("click", () => { follow.checked = false; show(Number(slider.value) - 1); });
  next.addEventListener("click", () => show(Number(slider.value) + 1));

  return {
    element,
    set(data) {
      samples.splice(0, samples.length, ...data.slice().sort((a, b) => a.step - b.step));
      render();
      show(samples.length - 1);
    },
    /** A new evaluation with a grid: add its checkpoint, and move there when following the newest; else stay on
     * the grid shown (a backfilled checkpoint lands before it). */
    add(evaluation) {
      if (!evaluation.grid_uri || samples.some((s) => s.step === evaluation.checkpoint_step)) return;
      const shown = Number(img.dataset.step);
      samples.push({ step: evaluation.checkpoint_step, status: evaluation.status,
        url: `/api/v1/runs/${encodeURIComponent(runId)}/samples/${evaluation.checkpoint_step}.png` });
      samples.sort((a, b) => a.step - b.step);
      render();
      show(follow.checked ? samples.length - 1 : samples.findIndex((s) => s.step === shown));
    },
    fail(err, retry) {
      clear(element, errorState("Could not load the sample grids.", err, retry));
    },
  };
}

/** Config and where the run runs. */
export function configPanel() {
  const element = h("div", { class: "config-panel" });
  return {
    element,
    set(run) {
      const facts = [["id", run.id], ["kind", run.kind], ["preset", run.preset], ["host", run.host],
        ["device", run.device], ["agent", run.agent], ["pid", run.pid], ["planned steps", run.steps]]
        .filter(([, v]) => v !== null && v !== undefined && v !== "");
      clear(element, h("dl", { class: "facts" }, facts.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, String(v))])),
        h("pre", { class: "config" }, JSON.stringify(run.config || {}, null, 2)));
    },
  };
}

/** The last lines of the training log, refreshed every few seconds while the run is live and the tab open. */
export function logsPanel(runId) {
  const pre = h("pre", { class: "log", tabIndex: 0, "aria-label": "training log" });
  const refresh = h("button", { type: "button", class: "ghost small" }, "Refresh");
  const note = h("span", { class: "muted" });
  const body = h("div", {}, loadingState("Loading the log…"));
  const element = h("div", { class: "logs-panel" }, h("div", { class: "panel-bar" }, refresh, note), body);
  let timer = null;

  async function load() {
    try {
      const res = await api.logs(runId, 500);
      const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      pre.textContent = res.lines.join("\n");
      note.textContent = `${res.lines.length} lines${res.truncated ? " (older lines not shown)" : ""}`;
      if (pre.parentNode !== body) clear(body, pre);
      if (atBottom) pre.scrollTop = pre.scrollHeight;
    } catch (err) {
      if (err.status === 404) clear(body, emptyState("No training log yet.", detailOf(err)));
      else clear(body, errorState("Could not load the log.", err, load));
    }
  }
  refresh.addEventListener("click", load);

  return {
    element,
    load,
    /** Poll while `live()` says the run is live; stop() on leaving the page. */
    poll(live) {
      clearInterval(timer);
      timer = setInterval(() => { if (live() && !element.closest("[hidden]")) load(); }, 5000);
    },
    stop: () => clearInterval(timer),
  };
}

const detailOf = (err) => (typeof err.detail === "string" ? err.detail : "");
