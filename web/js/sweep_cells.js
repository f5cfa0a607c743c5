// The sweep page's small multiples: one cell per configuration with its S, Q and D panels (seeds overlaid, each
// seed in its own colour), seed chips with each run's status, alert markers, and a failed run's error.
//
// Redraws are batched per animation frame: `invalidate(cells, panels)` only marks panels dirty and asks for one
// frame, in which every dirty cell on screen is painted — only its changed panels (live angles touch S; Q and D
// change with evaluations) — and off-screen cells wait until they scroll in. Scales that several cells share are
// passed in by the page through `modelOf`; `beforeFrame` refreshes them once per frame.

import { h } from "./dom.js";
import { drawCell } from "./mini_chart.js";
import { routeHash } from "./router.js";

export const PANELS = [
  { id: "S", title: "S · angle G, D (light)", log: true },
  { id: "Q", title: "Q · quality" },
  { id: "D", title: "D · diversity" },
];
export const PANEL_HEIGHT = 62;
export const SEED_COLORS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#882255", "#117733"];
const STATUS_MARK = { queued: "○", running: "●", cancelling: "◌", finished: "✓", failed: "✗", cancelled: "–" };

/**
 * cells: [{index, label, runs}]; modelOf(cellIndex, panelId) → a panel model (mini_chart.js); titleOf(cell) → its
 * heading; beforeFrame() runs once at the start of each frame that draws (the page refreshes shared scales there)
 * and returns the ids of the panels every cell must draw again (their shared scale changed). Returns {element,
 * invalidate(indexes | null = all, panel ids | null = all), updateRuns(cellIndex), stats, destroy()}.
 */
export function createCellGrid(cells, { modelOf, titleOf = (c) => c.label, beforeFrame = () => {} }) {
  const element = h("div", { class: "sweep-cells", role: "list" });
  const views = new Map();
  const visible = new Set();
  const dirty = new Map(); // cell index → the panel ids to redraw, or null for all of them
  // counters the benchmark reads (window.__sqdSweep): redraw frames, cells drawn, script time per part
  const stats = { frames: 0, cellDraws: 0, lastFrameMs: 0, drawMs: 0, batches: 0, batchMs: 0, tableMs: 0,
    parcoordsMs: 0 };
  let width = 0;
  let frame = 0;

  for (const cell of cells) {
    // one canvas for the three panels: fewer layers for the compositor to raster and upload each frame
    const canvases = [h("canvas", { class: "mini", height: PANEL_HEIGHT * PANELS.length, role: "img",
      "aria-label": `S, Q and D of ${cell.label}` })];
    const seeds = h("span", { class: "cell-seeds" });
    const error = h("p", { class: "cell-error", hidden: true });
    const article = h("article", { class: "sweep-cell", role: "listitem", dataset: { cell: String(cell.index) } },
      h("header", {}, h("span", { class: "cell-title", title: cell.label }, titleOf(cell)), seeds), ...canvases, error);
    element.append(article);
    views.set(cell.index, { cell, article, canvases, seeds, error, pixels: {} });
  }

  const observer = typeof IntersectionObserver === "undefined" ? null : new IntersectionObserver((entries) => {
    for (const e of entries) {
      const index = Number(e.target.dataset.cell);
      if (e.isIntersecting) {
        visible.add(index);
        if (dirty.has(index)) schedule();
      } else visible.delete(index);
    }
  }, { rootMargin: "200px" });
  const resize = typeof ResizeObserver === "undefined" ? null : new ResizeObserver(() => {
    width = 0; // measured again in the next frame
    invalidate(null);
  });
  for (const v of views.values()) {
    if (observer) observer.observe(v.article);
    else visible.add(v.cell.index);
    updateRuns(v.cell.index);
  }
  if (resize) resize.observe(element);

  function schedule() {
    if (!frame) frame = requestAnimationFrame(draw);
  }

  function mark(index, panels) {
    const now = dirty.get(index);
    if (panels === null || now === null) dirty.set(index, null);
    else dirty.set(index, new Set([...(now || []), ...panels]));
  }

  function draw() {
    frame = 0;
    if (![...dirty.keys()].some((i) => visible.has(i))) return;
    const start = performance.now();
    const rescaled = beforeFrame();
    if (rescaled.length) for (const i of views.keys()) mark(i, rescaled);
    if (!width) width = Math.max(120, views.values().next().value.canvases[0].clientWidth);
    for (const index of [...dirty.keys()].filter((i) => visible.has(i))) {
      const panels = dirty.get(index);
      dirty.delete(index);
      const v = views.get(index);
      const models = PANELS.map((p) => (panels === null || panels.has(p.id) ? modelOf(index, p.id) : null));
      if (!drawCell(v.canvases[0], v.pixels, width, PANEL_HEIGHT, models)) {
        drawCell(v.canvases[0], v.pixels, width, PANEL_HEIGHT, PANELS.map((p) => modelOf(index, p.id)));
      }
      stats.cellDraws += 1;
    }
    stats.frames += 1;
    stats.lastFrameMs = performance.now() - start;
    stats.drawMs += stats.lastFrameMs;
  }

  function invalidate(indexes, panels = null) {
    for (const i of indexes ?? views.keys()) mark(i, panels);
    schedule();
  }

  /** Seed chips (colour, status, link) and the first failure's error, from the cell's runs as they are now. */
  function updateRuns(index) {
    const v = views.get(index);
    if (!v) return;
    v.seeds.replaceChildren(...v.cell.runs.map((r, i) => h("a", {
      class: `seed-chip status-${r.status}`, href: routeHash("run", { id: r.id }), style: `--seed:${seedColor(i)}`,
      title: `seed ${r.seed}: ${r.status}${r.error ? ` — ${r.error}` : ""}`, dataset: { runId: r.id },
    }, `${STATUS_MARK[r.status] || "?"} s${r.seed}`)));
    const failed = v.cell.runs.filter((r) => r.status === "failed");
    v.error.hidden = !failed.length;
    v.error.textContent = failed.map((r) => `seed ${r.seed} failed: ${r.error || "no error message"}`).join("\n");
    v.article.dataset.status = failed.length ? "failed" : v.cell.runs.some((r) => r.status === "running")
      ? "running" : v.cell.runs.every((r) => r.status === "finished") ? "finished" : "other";
  }

  return {
    element,
    invalidate,
    updateRuns,
    stats,
    destroy() {
      if (frame) cancelAnimationFrame(frame);
      if (observer) observer.disconnect();
      if (resize) resize.disconnect();
    },
  };
}

export function seedColor(i) {
  return SEED_COLORS[i % SEED_COLORS.length];
}
