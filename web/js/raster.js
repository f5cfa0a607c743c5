// A tiny software rasterizer for the sweep page's small multiples: anti-aliased lines (Xiaolin Wu's algorithm),
// vertical spans and dashes, alpha-blended straight into an RGBA pixel buffer that the page copies to its canvas
// with one putImageData.
//
// Why not the canvas' own lines: a sweep page redraws dozens of panels of hundreds of segments in one frame, and
// a browser without a GPU (a VM, remote desktop, these build machines) rasterizes Canvas 2D paths at about a
// microsecond per anti-aliased segment, three times the frame budget here; writing the pixels from JavaScript costs
// a few nanoseconds each. Pure (typed arrays only), unit-tested under node.

/** An opaque white w × h buffer. `pixels` views `bytes` (RGBA, row-major) as one little-endian uint32 per pixel. */
export function createRaster(w, h) {
  const bytes = new Uint8ClampedArray(w * h * 4);
  const r = { w, h, bytes, pixels: new Uint32Array(bytes.buffer) };
  clearRaster(r);
  return r;
}

export function clearRaster(r, rgb = 0xffffff) {
  const [red, green, blue] = [(rgb >> 16) & 255, (rgb >> 8) & 255, rgb & 255];
  r.pixels.fill((0xff << 24 | blue << 16 | green << 8 | red) >>> 0);
}

/** Rows [y0, y1) back to opaque white (a panel redrawn alone). */
export function clearRows(r, y0, y1) {
  r.pixels.fill(0xffffffff, Math.max(0, y0) * r.w, Math.min(r.h, y1) * r.w);
}

/** "#rrggbb" → [r, g, b]. */
export function parseColor(hex) {
  const n = parseInt(hex.slice(1), 16);
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
}

// One blended write; `px` is the pixel array, k ∈ (0, 1]. Kept tiny so the JIT inlines it into the loops below.
function blend(px, i, c, k) {
  const p = px[i];
  const pr = p & 255;
  const pg = (p >>> 8) & 255;
  const pb = (p >>> 16) & 255;
  px[i] = (0xff000000 | ((pb + (c[2] - pb) * k) & 255) << 16 | ((pg + (c[1] - pg) * k) & 255) << 8
    | ((pr + (c[0] - pr) * k) & 255)) >>> 0;
}

/** Blend colour c (rgb array) at coverage a ∈ [0, 1] into pixel (x, y); outside the buffer is ignored. */
export function plot(r, x, y, c, a) {
  if (x < 0 || y < 0 || x >= r.w || y >= r.h || a <= 0) return;
  blend(r.pixels, y * r.w + x, c, a > 1 ? 1 : a);
}

/** An anti-aliased line of about one pixel from (x0, y0) to (x1, y1) (Xiaolin Wu), pixel centres at n + 0.5:
 * one step along the major axis at a time, two pixels across it shared by coverage. */
export function line(r, x0, y0, x1, y1, c, alpha = 1) {
  const steep = Math.abs(y1 - y0) > Math.abs(x1 - x0);
  // walk a (the major axis) and spread over b; strides turn (a, b) into a pixel index
  let [a0, b0, a1, b1] = steep ? [y0, x0, y1, x1] : [x0, y0, x1, y1];
  if (a0 > a1) [a0, b0, a1, b1] = [a1, b1, a0, b0];
  const [aLimit, bLimit, aStride, bStride] = steep ? [r.h, r.w, r.w, 1] : [r.w, r.h, 1, r.w];
  const g = a1 === a0 ? 0 : (b1 - b0) / (a1 - a0);
  const last = Math.min(aLimit - 1, Math.round(a1 - 0.5));
  for (let a = Math.max(0, Math.round(a0 - 0.5)); a <= last; a += 1) {
    const b = b0 - 0.5 + g * (a + 0.5 - a0);
    const ib = Math.floor(b);
    const f = b - ib;
    if (ib >= 0 && ib < bLimit) blend(r.pixels, a * aStride + ib * bStride, c, (1 - f) * alpha);
    if (ib + 1 >= 0 && ib + 1 < bLimit && f > 0) blend(r.pixels, a * aStride + (ib + 1) * bStride, c, f * alpha);
  }
}

/** A vertical span at column x from y0 to y1 (either order), blended at `alpha`; `dash` = [on, off] pixels. */
export function vspan(r, x, y0, y1, c, alpha = 1, dash = null) {
  const xi = Math.floor(x);
  if (xi < 0 || xi >= r.w || alpha <= 0) return;
  const a = Math.max(0, Math.floor(Math.min(y0, y1)));
  const b = Math.min(r.h - 1, Math.ceil(Math.max(y0, y1)));
  const k = alpha > 1 ? 1 : alpha;
  const period = dash ? dash[0] + dash[1] : 0;
  for (let y = a, i = a * r.w + xi; y <= b; y += 1, i += r.w) {
    if (!dash || (y - a) % period < dash[0]) blend(r.pixels, i, c, k);
  }
}

/** A horizontal span at row y from x0 to x1. */
export function hspan(r, y, x0, x1, c, alpha = 1) {
  const yi = Math.floor(y);
  if (yi < 0 || yi >= r.h || alpha <= 0) return;
  const a = Math.max(0, Math.floor(Math.min(x0, x1)));
  const b = Math.min(r.w - 1, Math.ceil(Math.max(x0, x1)));
  const k = alpha > 1 ? 1 : alpha;
  for (let x = a, i = yi * r.w + a; x <= b; x += 1, i += 1) blend(r.pixels, i, c, k);
}

/** A filled axis-aligned rectangle. */
export function fillRect(r, x, y, w, h, c, alpha = 1) {
  for (let j = Math.floor(y); j < y + h; j += 1) hspan(r, j, x, x + w - 1, c, alpha);
}
