// Parallel coordinates of a sweep (Plotly's parcoords): one axis per configuration dimension (categories for
// names and lists), the seed, and the chosen final metric last, each run a line coloured by that metric. Drawn
// with Plotly.react, so a live refresh keeps the brushed ranges (uirevision).

import { h } from "./dom.js";
import { parcoordsModel } from "./sweep_model.js";

/** {element, render(rows, dimensions, metricId)}; draws nothing (and says why) until a run has the metric. */
export function createParcoords() {
  const plot = h("div", { class: "parcoords", dataset: { chart: "parcoords" } });
  const note = h("p", { class: "muted parcoords-note" });
  const element = h("div", {}, note, plot);
  let signature = "";

  function render(rows, dimensions, metricId) {
    const Plotly = window.Plotly;
    if (!Plotly) {
      note.textContent = "Plotly did not load: parallel coordinates are unavailable.";
      return;
    }
    const m = parcoordsModel(rows, dimensions, metricId);
    const sig = JSON.stringify([m.dimensions.map((d) => [d.label, d.values]), metricId]);
    if (sig === signature) return; // nothing changed: keep the user's brushing and save a redraw
    signature = sig;
    note.textContent = m.rows.length ? `${m.rows.length} of ${rows.length} runs have ${m.metric.label}`
      : `no run has ${m.metric.label} yet`;
    const trace = {
      type: "parcoords",
      dimensions: m.dimensions,
      line: { color: m.color, colorscale: "Viridis", reversescale: m.metric.better === "min", showscale: true,
        colorbar: { title: { text: m.metric.label, side: "right" }, thickness: 12 } },
      labelfont: { size: 11 }, tickfont: { size: 10 },
    };
    plot.hidden = !m.rows.length;
    if (!m.rows.length) {
      Plotly.purge(plot); // an empty parcoords draws empty cartesian axes: show the note alone
      return;
    }
    Plotly.react(plot, [trace], {
      height: 300, margin: { l: 70, r: 80, t: 40, b: 20 }, font: { family: "system-ui, sans-serif", size: 11 },
      paper_bgcolor: "#fff", uirevision: metricId,
    }, { displaylogo: false, responsive: true, displayModeBar: false });
  }

  return { element, render };
}
