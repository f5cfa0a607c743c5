// Client-side series: the downsampled buckets the API returns, extended in place by live points.
// Pure (no DOM), unit-tested under node.
//
// The server buckets a series by power-of-two widths aligned at step 0 (bucket = floor(step / width)); each bucket
// keeps its last step and value, the min and max of its non-NaN values, its point count and NaN count. Live points
// are merged into the same buckets, so a chart that started downsampled stays consistent as it grows; when a series
// has more than twice the buckets it was asked for, `coarsen` doubles the width (exact, since widths are powers of
// two and buckets are aligned), which keeps every redraw O(max_points) however long the run gets.

import { toNumber } from "./format.js";

const COLUMNS = ["step", "value", "min", "max", "count", "nan"];

/** An empty series of the given bucket width. */
export function emptySeries(width = 1) {
  return { step: [], value: [], min: [], max: [], count: [], nan: [], width };
}

/** The API's SeriesPublic ({step, value, min, max, count, nan, bucket_width}, NaN/inf as strings) → a series. */
export function fromApi(s) {
  if (!s) return emptySeries();
  const value = s.value.map(toNumber);
  return {
    step: s.step.slice(),
    value,
    min: s.min ? s.min.map(toNumber) : value.slice(),
    max: s.max ? s.max.map(toNumber) : value.slice(),
    count: s.count ? s.count.slice() : value.map(() => 1),
    nan: s.nan ? s.nan.slice() : value.map((v) => (Number.isNaN(v) ? 1 : 0)),
    width: s.bucket_width || 1,
  };
}

function lowerBound(arr, x) {
  let lo = 0;
  let hi = arr.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (arr[mid] < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

// min / max over non-NaN values (NaN when both are NaN), as the server's buckets keep them
const nanMin = (a, b) => (Number.isNaN(a) ? b : Number.isNaN(b) ? a : Math.min(a, b));
const nanMax = (a, b) => (Number.isNaN(a) ? b : Number.isNaN(b) ? a : Math.max(a, b));

function insertBucket(s, i, step, v) {
  s.step.splice(i, 0, step);
  s.value.splice(i, 0, v);
  s.min.splice(i, 0, v);
  s.max.splice(i, 0, v);
  s.count.splice(i, 0, 1);
  s.nan.splice(i, 0, Number.isNaN(v) ? 1 : 0);
}

function addToBucket(s, i, step, v) {
  if (step >= s.step[i]) {
    s.step[i] = step;
    s.value[i] = v;
  }
  s.min[i] = nanMin(s.min[i], v);
  s.max[i] = nanMax(s.max[i], v);
  s.nan[i] += Number.isNaN(v) ? 1 : 0;
  s.count[i] += 1;
}

/** Merge one live point. A point at a step already present in a full-resolution series replaces it (a
 * redelivery stores once, as on the server); in a downsampled series it joins its bucket. */
export function mergePoint(s, step, rawValue) {
  const v = toNumber(rawValue);
  const n = s.step.length;
  const w = s.width;
  if (n === 0 || step > s.step[n - 1]) {
    if (n > 0 && w > 1 && Math.floor(step / w) === Math.floor(s.step[n - 1] / w)) addToBucket(s, n - 1, step, v);
    else insertBucket(s, n, step, v);
    return;
  }
  if (w === 1) {
    const i = lowerBound(s.step, step);
    if (s.step[i] === step) {
      s.value[i] = s.min[i] = s.max[i] = v;
      s.nan[i] = Number.isNaN(v) ? 1 : 0;
    } else {
      insertBucket(s, i, step, v);
    }
    return;
  }
  // a late point in a downsampled series: find its bucket by the buckets' last steps
  const bucket = Math.floor(step / w);
  const i = lowerBound(s.step, bucket * w);
  if (i < n && Math.floor(s.step[i] / w) === bucket) addToBucket(s, i, step, v);
  else insertBucket(s, i, step, v);
}

/** Merge a live `points` payload for one key ({step: [...], value: [...]}). */
export function mergePoints(s, steps, values) {
  for (let i = 0; i < steps.length; i += 1) mergePoint(s, steps[i], values[i]);
}

/** Double the bucket width until at most `target` buckets remain. Returns the series (changed in place). */
export function coarsen(s, target) {
  while (s.step.length > target) {
    const w = s.width * 2;
    const out = emptySeries(w);
    for (let i = 0; i < s.step.length; i += 1) {
      const k = out.step.length - 1;
      if (k >= 0 && Math.floor(out.step[k] / w) === Math.floor(s.step[i] / w)) {
        out.step[k] = s.step[i];
        out.value[k] = s.value[i];
        out.min[k] = nanMin(out.min[k], s.min[i]);
        out.max[k] = nanMax(out.max[k], s.max[i]);
        out.count[k] += s.count[i];
        out.nan[k] += s.nan[i];
      } else {
        for (const f of COLUMNS) out[f].push(s[f][i]);
      }
    }
    Object.assign(s, out);
  }
  return s;
}

/** Keep a live series bounded: coarsen to `target` buckets once it holds more than twice that many. */
export function keepBounded(s, target) {
  if (s.step.length > 2 * target) coarsen(s, target);
  return s;
}

const finiteOrNull = (v) => (Number.isFinite(v) ? v : null);

/**
 * Arrays for a chart: x through `xOf` (identity, or step → epoch), y with non-finite values as gaps, the min/max
 * band when the series is downsampled, and the steps where a NaN or ±inf was seen (drawn as markers, so a
 * NaN is shown, never silently dropped).
 */
export function toPlot(s, xOf = (x) => x) {
  const x = s.step.map(xOf);
  const y = s.value.map(finiteOrNull);
  const band = s.width > 1 ? { lo: s.min.map(finiteOrNull), hi: s.max.map(finiteOrNull) } : null;
  const nonFinite = [];
  for (let i = 0; i < s.step.length; i += 1) {
    const v = s.value[i];
    if (Number.isNaN(v) || s.nan[i] > 0) nonFinite.push({ x: x[i], step: s.step[i], kind: "NaN" });
    if (v === Infinity || s.max[i] === Infinity) nonFinite.push({ x: x[i], step: s.step[i], kind: "+inf" });
    if (v === -Infinity || s.min[i] === -Infinity) nonFinite.push({ x: x[i], step: s.step[i], kind: "-inf" });
  }
  return { x, y, band, nonFinite };
}

/** The last finite value and its step, or null (for "latest Q" cells and chart titles). */
export function latest(s) {
  for (let i = s.step.length - 1; i >= 0; i -= 1) {
    if (Number.isFinite(s.value[i])) return { step: s.step[i], value: s.value[i] };
  }
  return null;
}

/**
 * Merge a live payload for one key into a chart's series. A zoomed chart (window [lo, hi] in steps) keeps only
 * the points inside its window, at full resolution; an unzoomed one stays within 2×target buckets.
 */
export function mergeLive(s, steps, values, win, target) {
  if (win) {
    for (let i = 0; i < steps.length; i += 1) {
      if (steps[i] >= win[0] && steps[i] <= win[1]) mergePoint(s, steps[i], values[i]);
    }
  } else {
    mergePoints(s, steps, values);
    keepBounded(s, target);
  }
  return s;
}
