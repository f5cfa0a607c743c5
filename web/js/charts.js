// Plotly charts: one card per chart, redrawn with Plotly.react (bounded arrays, so a redraw costs the same at step
// 100 and at step 10⁶). Per-step series use WebGL (scattergl); downsampled series show their min–max band so a
// one-step spike stays visible; NaN/±inf are markers on a hidden 0–1 axis; alerts are vertical lines with a
// hoverable marker; the diversity chart can draw its ln m ceiling. Zooming calls back with the step window so
// the page can re-query it at full resolution.

import { alertShapes, alertTraces } from "./alert_marks.js";
import { h } from "./dom.js";
import { scheduler } from "./redraw.js";

const Plotly = () => window.Plotly;

const NON_FINITE_Y = { "+inf": 0.97, NaN: 0.9, "-inf": 0.03 };
const NON_FINITE_SYMBOL = { "+inf": "triangle-up", NaN: "x", "-inf": "triangle-down" };

const CONFIG = {
  responsive: true,
  displaylogo: false,
  displayModeBar: "hover",
  modeBarButtonsToRemove: ["select2d", "lasso2d", "autoScale2d", "toggleSpikelines"],
};

function withAlpha(hex, alpha) {
  const n = parseInt(hex.slice(1), 16);
  return `rgba(${(n >> 16) & 255},${(n >> 8) & 255},${n & 255},${alpha})`;
}

/** Software WebGL (SwiftShader, llvmpipe: no GPU, a VM, remote desktop) draws slower than SVG. */
export function isSoftwareRenderer(name) {
  return /swiftshader|llvmpipe|softpipe|software/i.test(name || "");
}

function glRendererName() {
  try {
    const gl = document.createElement("canvas").getContext("webgl");
    if (!gl) return null;
    const info = gl.getExtension("WEBGL_debug_renderer_info");
    const name = info ? gl.getParameter(info.UNMASKED_RENDERER_WEBGL) : "";
    const lose = gl.getExtension("WEBGL_lose_context");
    if (lose) lose.loseContext(); // the probe must not hold one of the page's few contexts
    return name;
  } catch {
    return null;
  }
}

/**
 * WebGL for the long per-step series, unless the user chose otherwise (localStorage "sqd.renderer" = "svg" or
 * "webgl") or, by default, when WebGL is missing or software-rendered.
 */
export function chooseWebGL(choice, rendererName) {
  if (choice === "svg") return false;
  if (choice === "webgl") return rendererName !== null;
  return rendererName !== null && !isSoftwareRenderer(rendererName);
}

let webgl = null;

export function useWebGL() {
  if (webgl === null) {
    let choice = null;
    try {
      choice = globalThis.localStorage.getItem("sqd.renderer");
    } catch {
      choice = null; // storage disabled: the default
    }
    webgl = chooseWebGL(choice, choice === "svg" ? null : glRendererName());
  }
  return webgl;
}

function seriesTraces(spec, t) {
  const type = spec.gl && useWebGL() ? "scattergl" : "scatter";
  const p = t.plot;
  const out = [];
  if (p.band) {
    const edge = { type, x: p.x, mode: "lines", line: { width: 0, color: t.color }, hoverinfo: "skip",
      showlegend: false, legendgroup: t.name };
    out.push({ ...edge, y: p.band.lo });
    out.push({ ...edge, y: p.band.hi, fill: "tonexty", fillcolor: withAlpha(t.color, 0.18) });
  }
  out.push({
    type, x: p.x, y: p.y, name: t.name, legendgroup: t.name, connectgaps: false,
    mode: t.markers && p.x.length < 400 ? "lines+markers" : "lines",
    line: { color: t.color, width: 1.5, dash: t.dash || "solid" }, marker: { size: 5, color: t.color },
    hovertemplate: `${spec.xTitle || "step"} %{x}<br>%{y:.4g}<extra>${t.name}</extra>`,
  });
  return out;
}

function nonFiniteTrace(traces) {
  const x = [];
  const y = [];
  const text = [];
  const symbol = [];
  const color = [];
  for (const t of traces) {
    for (const m of t.plot.nonFinite) {
      x.push(m.x);
      y.push(NON_FINITE_Y[m.kind]);
      symbol.push(NON_FINITE_SYMBOL[m.kind]);
      color.push(t.color);
      text.push(`${t.name}: ${m.kind} at step ${m.step}`);
    }
  }
  if (!x.length) return [];
  return [{ type: "scatter", x, y, yaxis: "y2", mode: "markers", name: "NaN / ±inf", hovertext: text,
    hoverinfo: "text", marker: { symbol, color, size: 9, line: { width: 1.5, color } }, showlegend: false }];
}

function decorations(model) {
  const shapes = alertShapes(model.alerts || []);
  const annotations = [];
  if (model.ceiling) {
    shapes.push({ type: "line", xref: "paper", yref: "y", x0: 0, x1: 1, y0: model.ceiling.y, y1: model.ceiling.y,
      name: "ceiling", line: { color: "#555", width: 1, dash: "dash" } });
    annotations.push({ xref: "paper", yref: "y", x: 1, y: model.ceiling.y, xanchor: "right", yanchor: "bottom",
      text: model.ceiling.label, showarrow: false, font: { size: 10, color: "#555" } });
  }
  if (model.traces.every((t) => t.plot.x.length === 0)) {
    annotations.push({ xref: "paper", yref: "paper", x: 0.5, y: 0.5, showarrow: false,
      text: model.emptyText || "no data yet", font: { size: 12, color: "#888" } });
  }
  return { shapes, annotations };
}

function layoutFor(spec, model) {
  const { shapes, annotations } = decorations(model);
  const xaxis = { title: { text: model.xTitle || "step", standoff: 4 }, zeroline: false };
  if (model.xRange) Object.assign(xaxis, { range: model.xRange, autorange: false });
  else xaxis.autorange = true;
  const yaxis = { type: spec.log ? "log" : "linear", autorange: true, zeroline: false, exponentformat: "power" };
  if (model.ceiling) yaxis.rangemode = "tozero";
  return {
    height: spec.height || 240,
    margin: { l: 48, r: 10, t: model.traces.length > 1 ? 22 : 6, b: 34 },
    font: { family: "system-ui, sans-serif", size: 11 },
    paper_bgcolor: "#fff",
    plot_bgcolor: "#fff",
    xaxis,
    yaxis,
    yaxis2: { overlaying: "y", range: [0, 1], visible: false, fixedrange: true },
    legend: { orientation: "h", x: 0, xanchor: "left", y: 1, yanchor: "bottom", font: { size: 10 } },
    showlegend: model.traces.length > 1,
    hovermode: "closest",
    uirevision: model.revision,
    shapes,
    annotations,
  };
}

/** A zoom / reset of the x axis from Plotly's relayout event, or null for anything else. */
export function zoomFromRelayout(ev) {
  if (!ev) return null;
  if (ev["xaxis.autorange"]) return { reset: true };
  if ("xaxis.range[0]" in ev && "xaxis.range[1]" in ev) return { range: [ev["xaxis.range[0]"], ev["xaxis.range[1]"]] };
  if (Array.isArray(ev["xaxis.range"])) return { range: ev["xaxis.range"].slice(0, 2) };
  return null;
}

/**
 * A chart card in `container`. spec: {id, title, log, gl, height}. Returns {render(model), update(modelFn),
 * onZoom(cb), width(), element, plot}: `render` draws now (first paint, zoom); `update` asks the redraw scheduler
 * to draw `modelFn()` when the budget allows (live data). model: {traces: [{name, color, dash, markers,
 * plot: toPlot(...)}], alerts: [{x, severity, text}] (alert_marks.js), ceiling: {y, label} | null, xTitle, xRange, revision, emptyText}.
 */
export function createChart(container, spec) {
  const caption = h("span", { class: "chart-latest" });
  const plot = h("div", { class: "plot", dataset: { chart: spec.id } });
  const card = h("figure", { class: "chart", dataset: { chart: spec.id } },
    h("figcaption", {}, h("span", { class: "chart-title" }, spec.title), caption), plot);
  container.append(card);
  let zoomCb = null;
  let rendering = 0;
  let bound = false;
  let visible = true;
  let latestModel = null;
  const job = { visible: () => visible, draw: () => draw(latestModel()) };
  const observer = typeof IntersectionObserver === "undefined" ? null : new IntersectionObserver((entries) => {
    visible = entries[entries.length - 1].isIntersecting;
    if (visible) scheduler.poke();
  });
  if (observer) observer.observe(card);

  function render(model) {
    scheduler.forget(job);
    return draw(model);
  }

  async function draw(model) {
    const data = model.traces.flatMap((t) => seriesTraces({ ...spec, xTitle: model.xTitle }, t))
      .concat(nonFiniteTrace(model.traces), alertTraces(model.alerts || []));
    rendering += 1;
    try {
      await Plotly().react(plot, data, layoutFor(spec, model), CONFIG);
    } finally {
      rendering -= 1;
    }
    caption.textContent = model.caption || "";
    if (!bound) {
      bound = true;
      plot.on("plotly_relayout", (ev) => {
        const zoom = zoomFromRelayout(ev);
        if (zoom && !rendering && zoomCb) zoomCb(zoom);
      });
    }
  }

  return {
    element: card,
    plot,
    render,
    update(modelFn) {
      latestModel = modelFn;
      scheduler.request(job);
    },
    onZoom(cb) {
      zoomCb = cb;
    },
    width: () => plot.clientWidth || card.clientWidth || 600,
    destroy() {
      scheduler.forget(job);
      if (observer) observer.disconnect();
      if (window.Plotly) Plotly().purge(plot);
      card.remove();
    },
  };
}
