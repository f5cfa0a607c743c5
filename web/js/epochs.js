// Step ↔ epoch for the chart's x axis. Pure (no DOM), unit-tested under node.
//
// The server reports, per epoch, the last step that belongs to it (GET /runs/{id}/epochs). Epoch e spans the
// steps after the previous epoch's last step up to its own, so a step maps to a fractional epoch: e + the share
// of epoch e's steps done. The epoch running now (past the last reported boundary) is extrapolated with the last
// epoch's length, which is what a live chart needs before the epoch ends.

/** Knots (step, epoch-coordinate), strictly increasing in both, from {epoch: [...], last_step: [...]}. */
export function epochKnots(epochs, lastSteps) {
  const pairs = epochs.map((e, i) => [lastSteps[i], e + 1]).sort((a, b) => a[0] - b[0]);
  const knots = [];
  if (pairs.length) {
    // where the first reported epoch began: step 0 for epoch 0, else guessed from the next epoch's length
    const [s0, x0] = pairs[0];
    const len = x0 === 1 ? s0 + 1 : pairs.length > 1 ? pairs[1][0] - s0 : s0 + 1;
    knots.push([s0 - len, x0 - 1]);
  }
  for (const [s, x] of pairs) {
    const last = knots[knots.length - 1];
    if (s > last[0] && x > last[1]) knots.push([s, x]);
  }
  return knots.length >= 2 ? knots : [];
}

function interpolate(knots, v, from, to) {
  // binary search the segment of `from`-coordinates holding v; extrapolate with the end segments' slopes
  let lo = 0;
  let hi = knots.length - 1;
  if (v <= knots[0][from]) hi = 1;
  else if (v >= knots[hi][from]) lo = hi - 1;
  else {
    while (hi - lo > 1) {
      const mid = (lo + hi) >> 1;
      if (knots[mid][from] <= v) lo = mid;
      else hi = mid;
    }
  }
  const a = knots[lo];
  const b = knots[lo + 1] || knots[lo];
  const span = b[from] - a[from];
  return span === 0 ? a[to] : a[to] + ((v - a[from]) * (b[to] - a[to])) / span;
}

/** {toEpoch(step), toStep(epoch)} for the knots, or null when there is no epoch information. */
export function epochMap(epochs, lastSteps) {
  const knots = epochKnots(epochs || [], lastSteps || []);
  if (!knots.length) return null;
  return {
    toEpoch: (step) => interpolate(knots, step, 0, 1),
    toStep: (epoch) => interpolate(knots, epoch, 1, 0),
    epochs: knots.length - 1,
  };
}
