// Small-multiples panels drawn on a <canvas>: a sweep page shows dozens of cells × 3 panels live, and a Plotly
// chart costs tens of milliseconds per redraw where a canvas line costs microseconds per point, so every cell can
// redraw in the same animation frame. Scales and projections are pure (unit-tested under node); `drawPanel`
// only paints. Non-finite values break the line and get a mark at the panel's top edge (never silently dropped);
// a downsampled series also draws its min–max band, so a one-step spike stays visible.

const GUTTER = { left: 38, right: 6, top: 13, bottom: 3 };
const BAND_ALPHA = 0.16;
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
  return [lo - pad, hi + pad];
}

/** Union of ranges (null ones ignored): the shared scale of several cells. */
export function unionRange(ranges) {
  const kept = ranges.filter(Boolean);
  if (!kept.length) return null;
  return [Math.min(...kept.map((r) => r[0])), Math.max(...kept.map((r) => r[1]))];
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

function linePath(ctx, s, sc, values, log) {
  let open = false;
  for (let i = 0; i < s.step.length; i += 1) {
    const v = values[i];
    if (!Number.isFinite(v) || (log && v <= 0)) {
      open = false;
      continue;
    }
    const px = sc.x(s.step[i]);
    const py = sc.y(v);
    if (open) ctx.lineTo(px, py);
    else ctx.moveTo(px, py);
    open = true;
  }
}

function band(ctx, s, sc, log, color) {
  ctx.beginPath();
  let start = -1;
  const flush = (end) => {
    if (start < 0) return;
    for (let j = end; j >= start; j -= 1) ctx.lineTo(sc.x(s.step[j]), sc.y(s.min[j]));
    ctx.closePath();
    start = -1;
  };
  for (let i = 0; i < s.step.length; i += 1) {
    const ok = Number.isFinite(s.min[i]) && Number.isFinite(s.max[i]) && (!log || s.min[i] > 0);
    if (!ok) {
      flush(i - 1);
      continue;
    }
    if (start < 0) {
      start = i;
      ctx.moveTo(sc.x(s.step[i]), sc.y(s.max[i]));
    } else ctx.lineTo(sc.x(s.step[i]), sc.y(s.max[i]));
  }
  flush(s.step.length - 1);
  ctx.globalAlpha = BAND_ALPHA;
  ctx.fillStyle = color;
  ctx.fill();
  ctx.globalAlpha = 1;
}

/** Size the canvas for its CSS box and the device pixel ratio; returns the 2-D context scaled to CSS pixels. */
export function prepare(canvas, w, h) {
  const dpr = Math.min(2, globalThis.devicePixelRatio || 1);
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  return ctx;
}

/**
 * Paint one panel. model: {title, log, xr, yr (null: nothing to scale yet), traces: [{series, color, dash,
 * width}], alerts: [step], empty: text shown when there is no data}.
 */
export function drawPanel(ctx, w, h, model) {
  ctx.clearRect(0, 0, w, h);
  ctx.font = "10px system-ui, sans-serif";
  ctx.textBaseline = "top";
  ctx.fillStyle = "#5f6b7a";
  ctx.fillText(model.title, 2, 1);
  if (!model.yr || !model.xr) {
    ctx.fillStyle = "#98a2ae";
    ctx.fillText(model.empty || "no data yet", GUTTER.left + 6, h / 2 - 5);
    return;
  }
  const sc = scales(model.xr, model.yr, model.log, w, h);
  ctx.strokeStyle = "#e3e7ec";
  ctx.lineWidth = 1;
  ctx.strokeRect(sc.left + 0.5, sc.top + 0.5, sc.right - sc.left - 1, sc.bottom - sc.top - 1);
  ctx.fillStyle = "#7b8694";
  ctx.textAlign = "right";
  ctx.fillText(tickText(model.yr[1]), sc.left - 3, sc.top);
  ctx.textBaseline = "bottom";
  ctx.fillText(tickText(model.yr[0]), sc.left - 3, sc.bottom);
  ctx.textAlign = "left";
  ctx.save();
  ctx.beginPath();
  ctx.rect(sc.left, sc.top, sc.right - sc.left, sc.bottom - sc.top);
  ctx.clip();
  for (const t of model.traces) {
    if (t.series && t.series.width > 1) band(ctx, t.series, sc, model.log, t.color);
  }
  for (const t of model.traces) {
    if (!t.series || !t.series.step.length) continue;
    ctx.beginPath();
    linePath(ctx, t.series, sc, t.series.value, model.log);
    ctx.setLineDash(t.dash || []);
    ctx.strokeStyle = t.color;
    ctx.lineWidth = t.width || 1.2;
    ctx.stroke();
    if (t.series.step.length < 40) { // sparse series (one point per evaluation): dots show where they are
      ctx.fillStyle = t.color;
      for (let i = 0; i < t.series.step.length; i += 1) {
        const v = t.series.value[i];
        if (Number.isFinite(v)) ctx.fillRect(sc.x(t.series.step[i]) - 1.5, sc.y(v) - 1.5, 3, 3);
      }
    }
  }
  ctx.setLineDash([]);
  ctx.restore();
  ctx.strokeStyle = "#c62828";
  ctx.fillStyle = "#c62828";
  for (const t of model.traces) { // NaN / ±inf: a mark at the top edge at its step
    const s = t.series;
    if (!s) continue;
    for (let i = 0; i < s.step.length; i += 1) {
      if (Number.isFinite(s.value[i]) && !(s.nan[i] > 0)) continue;
      const px = sc.x(s.step[i]);
      ctx.fillRect(px - 1, sc.top - 3, 2, 3);
    }
  }
  ctx.strokeStyle = ALERT_COLOR;
  ctx.setLineDash([3, 2]);
  for (const step of model.alerts || []) {
    const px = Math.round(sc.x(step)) + 0.5;
    ctx.beginPath();
    ctx.moveTo(px, sc.top);
    ctx.lineTo(px, sc.bottom);
    ctx.stroke();
    ctx.beginPath(); // a small triangle at the top, like the run page's alert marker
    ctx.moveTo(px - 3.5, sc.top - 4);
    ctx.lineTo(px + 3.5, sc.top - 4);
    ctx.lineTo(px, sc.top + 1);
    ctx.closePath();
    ctx.fillStyle = ALERT_COLOR;
    ctx.fill();
  }
  ctx.setLineDash([]);
}
