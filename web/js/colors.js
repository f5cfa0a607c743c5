// Stable colours per run: the same run keeps its colour on every page and every reload. Pure, unit-tested.

// Okabe–Ito (colour-blind safe) plus two darker tones, readable on a white background
export const PALETTE = [
  "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#882255", "#117733", "#332288", "#999933",
];

/** FNV-1a 32-bit hash of a string. */
export function hashString(s) {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i += 1) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

/** The run's own colour (its hash picks a palette entry). */
export function runColor(runId) {
  return PALETTE[hashString(String(runId)) % PALETTE.length];
}

/** Colours for runs shown together: each keeps its own colour unless an earlier run took it, then the next free
 * one, so up to PALETTE.length runs are always distinguishable and a run's colour rarely changes. */
export function assignColors(runIds) {
  const taken = new Set();
  const out = {};
  for (const id of runIds) {
    let i = hashString(String(id)) % PALETTE.length;
    for (let tries = 0; tries < PALETTE.length && taken.has(i); tries += 1) i = (i + 1) % PALETTE.length;
    taken.add(i);
    out[id] = PALETTE[i];
  }
  return out;
}
