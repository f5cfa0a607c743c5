// Small-multiples panels: a sweep page shows dozens of cells × 3 panels live, and a Plotly chart costs tens of
// milliseconds per redraw, so each cell is one <canvas> whose pixels are written by raster.js (anti-aliased lines
// at a few nanoseconds per pixel) and copied with one putImageData; only the labels use the canvas' text. Every
// cell can then redraw in the same animation frame. Scales are pure (unit-tested under node). Non-finite values
// break the line and get a mark at the panel's top edge (never silently dropped); a downsampled series also
// draws its min–max band, so a one-step spike stays visible.

import { clearRaster, clearRows, createRaster, fillRect, hspan, line, parseColor, vspan } from "./raster.js";

const GUTTER = { left: 38, right: 6, top: 13, bottom: 3 };
const BAND_ALPHA = 0.22;
const ALERT_COLOR = "#c62828";

/** [lo, hi] over the finite values (and band edges) of some series; log scales keep positive values only. */
export function yRange(seriesList, log = false) {
  let lo = Infinity;
  let hi = -Infinity;
  for (const s of seriesList) {
    if (!s) continue;
    for (const arr of s.width > 1 ? [s.min, s.max] : [s.value]) {
      for (let i = 0; i < arr.length; i += 1) {
        const v = arr[i];
        if (!Number.isFinite(v) || (log && v <= 0)) continue;
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      }
    }
  }
  if (lo === Infinity) return null;
  if (log) {
    const a = Math.log10(lo);
    const b = Math.log10(hi);
    const pad = Math.max(0.05, (b - a) * 0.06);
    return [10 ** (a - pad), 10 ** (b + pad)];
  }
  const pad = hi > lo ? (hi - lo) * 0.08 : Math.max(Math.abs(hi) * 0.1, 0.01);
  return [lo >= 0 ? Math.max(0, lo - pad) : lo - pad, hi + pad]; // a non-negative quantity keeps a floor of 0
}

/** Union of ranges (null ones ignored): the shared scale of several cells. */
export function unionRange(ranges) {
  const kept = ranges.filter(Boolean);
  if (!kept.length) return null;
  return [Math.min(...kept.map((r) => r[0])), Math.max(...kept.map((r) => r[1]))];
}

/** A range grown by `share` of its span at each end (in log10 on a log scale), keeping a floor of 0. */
export function widen(range, share, log = false) {
  if (!range || !share) return range;
  if (log) {
    const [a, b] = [Math.log10(range[0]), Math.log10(range[1])];
    const pad = Math.max(0.02, (b - a) * share);
    return [10 ** (a - pad), 10 ** (b + pad)];
  }
  const pad = Math.max((range[1] - range[0]) * share, 1e-12);
  return [range[0] >= 0 ? Math.max(0, range[0] - pad) : range[0] - pad, range[1] + pad];
}

/** Pixel mappings for a panel of w × h CSS pixels. */
export function scales(xr, yr, log, w, h) {
  const x0 = GUTTER.left;
  const x1 = w - GUTTER.right;
  const y0 = h - GUTTER.bottom;
  const y1 = GUTTER.top;
  const xs = (x1 - x0) / Math.max(1e-9, xr[1] - xr[0]);
  const f = log ? Math.log10 : (v) => v;
  const lo = f(yr[0]);
  const ys = (y0 - y1) / Math.max(1e-12, f(yr[1]) - lo);
  return {
    x: (step) => x0 + (step - xr[0]) * xs,
    y: (v) => y0 - (f(v) - lo) * ys,
    left: x0, right: x1, top: y1, bottom: y0,
  };
}

/** Short tick text: 4 significant digits, exponent form for small and large values. */
export function tickText(v) {
  if (!Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-2 || a >= 1e4)) return v.toExponential(0).replace("e+", "e");
  return String(Number(v.toPrecision(3)));
}

const GRID_RGB = [227, 231, 236];
const ALERT_RGB = parseColor(ALERT_COLOR);

/** Paint one panel's data into the cell's pixel buffer `r` (device pixels), at CSS offset `top`. */
function paintPanel(r, top, w, h, model, dpr) {
  const sc = scales(model.xr, model.yr, model.log, w, h);
  const X = (step) => sc.x(step) * dpr;
  const Y = (v) => (top + sc.y(v)) * dpr;
  const [l, rt, t, b] = [sc.left * dpr, sc.right * dpr, (top + sc.top) * dpr, (top + sc.bottom) * dpr];
  hspan(r, t, l, rt, GRID_RGB);
  hspan(r, b - 1, l, rt, GRID_RGB);
  vspan(r, l, t, b, GRID_RGB);
  vspan(r, rt - 1, t, b, GRID_RGB);
  const inside = (v) => Number.isFinite(v) && (!model.log || v > 0);
  const clampY = (y) => Math.max(t, Math.min(b - 1, y));
  for (const tr of model.traces) {
    const s = tr.series;
    if (!s || !s.step.length) continue;
    const c = parseColor(tr.color);
    const alpha = tr.alpha ?? 1;
    if (s.width > 1) { // min–max band: one vertical span per bucket, so a one-step spike stays visible
      for (let i = 0; i < s.step.length; i += 1) {
        if (inside(s.min[i]) && inside(s.max[i])) {
          vspan(r, X(s.step[i]), clampY(Y(s.min[i])), clampY(Y(s.max[i])), c, BAND_ALPHA * alpha);
        }
      }
    }
    let px = null;
    let py = null;
    for (let i = 0; i < s.step.length; i += 1) {
      const v = s.value[i];
      if (!inside(v)) {
        px = null;
        continue;
      }
      const x = X(s.step[i]);
      const y = clampY(Y(v));
      if (px !== null) {
        line(r, px, py, x, y, c, alpha);
        if (dpr >= 2) line(r, px, py + 1, x, y + 1, c, alpha); // about one CSS pixel thick
      }
      px = x;
      py = y;
    }
    if (s.step.length < 40) { // sparse series (one point per evaluation): dots show where they are
      for (let i = 0; i < s.step.length; i += 1) {
        if (!inside(s.value[i])) continue;
        fillRect(r, X(s.step[i]) - 1.5 * dpr, clampY(Y(s.value[i])) - 1.5 * dpr, 3 * dpr, 3 * dpr, c, alpha);
      }
    }
    for (let i = 0; i < s.step.length; i += 1) { // NaN / ±inf: a red mark at the top edge at its step
      if (Number.isFinite(s.value[i]) && !(s.nan[i] > 0)) continue;
      fillRect(r, X(s.step[i]) - dpr, t - 3 * dpr, 2 * dpr, 3 * dpr, ALERT_RGB);
    }
  }
  for (const step of model.alerts || []) {
    const x = Math.round(X(step));
    vspan(r, x, t, b, ALERT_RGB, 1, [3 * dpr, 2 * dpr]);
    for (let k = 0; k < 4 * dpr; k += 1) hspan(r, t - 4 * dpr + k, x - (4 * dpr - k), x + (4 * dpr - k), ALERT_RGB);
  }
  return sc;
}

/** Titles, tick labels and the empty-state text, drawn by the canvas over the pixels (CSS coordinates). */
function labelPanel(ctx, top, w, h, model) {
  ctx.font = "10px system-ui, sans-serif";
  ctx.textBaseline = "top";
  ctx.textAlign = "left";
  ctx.fillStyle = "#5f6b7a";
  ctx.fillText(model.title, 2, top + 1);
  if (!model.yr || !model.xr) {
    ctx.fillStyle = "#98a2ae";
    ctx.fillText(model.empty || "no data yet", GUTTER.left + 6, top + h / 2 - 5);
    return;
  }
  const sc = scales(model.xr, model.yr, model.log, w, h);
  ctx.fillStyle = "#7b8694";
  ctx.textAlign = "right";
  ctx.fillText(tickText(model.yr[1]), sc.left - 3, top + sc.top);
  ctx.textBaseline = "bottom";
  ctx.fillText(tickText(model.yr[0]), sc.left - 3, top + sc.bottom);
  ctx.textAlign = "left";
}

/**
 * Paint a cell: `models` (one per panel, stacked, each h CSS pixels tall) into `canvas`, w CSS pixels wide; a null
 * model leaves its panel as it is (only the changed panels are painted and copied). model: {title, log, xr, yr
 * (null: nothing to scale yet), traces: [{series, color, alpha}], alerts: [step], empty: text shown when there is
 * no data}. `state` keeps the pixel buffer between frames; returns false (drawing nothing) when a partial redraw
 * is asked of a cell that has no buffer of this size yet.
 */
export function drawCell(canvas, state, w, h, models) {
  const dpr = Math.min(2, globalThis.devicePixelRatio || 1);
  const W = Math.round(w * dpr);
  const H = Math.round(h * models.length * dpr);
  if (canvas.width !== W || canvas.height !== H) {
    canvas.width = W;
    canvas.height = H;
  }
  const full = models.every(Boolean);
  if (!state.raster || state.raster.w !== W || state.raster.h !== H) {
    if (!full) return false;
    state.raster = createRaster(W, H);
    state.image = new ImageData(state.raster.bytes, W, H);
  } else if (full) clearRaster(state.raster);
  const band = (i) => [Math.round(i * h * dpr), Math.round((i + 1) * h * dpr)];
  models.forEach((m, i) => {
    if (!m) return;
    if (!full) clearRows(state.raster, ...band(i));
    if (m.yr && m.xr) paintPanel(state.raster, i * h, w, h, m, dpr);
  });
  const ctx = canvas.getContext("2d");
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  if (full) ctx.putImageData(state.image, 0, 0);
  else {
    models.forEach((m, i) => {
      if (m) ctx.putImageData(state.image, 0, 0, 0, band(i)[0], W, band(i)[1] - band(i)[0]);
    });
  }
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  models.forEach((m, i) => { if (m) labelPanel(ctx, i * h, w, h, m); });
  return true;
}
