// Live events over Server-Sent Events, coalesced per animation frame: however many messages arrive between two
// frames, the page gets them as one batch and redraws once. EventSource reconnects by itself and resumes with
// Last-Event-ID; a `reset` (the resume point is gone) is passed on so the page reloads over REST.

import { withAccessToken } from "./auth.js";

const TYPES = ["points", "evaluation", "alert", "run", "reset"];

/**
 * Follow /api/v1/events (for `runIds`, a `sweep`'s runs, or every run when neither). `onBatch([{type, data}])`
 * runs at most once per frame; `onState("live" | "connecting" | "down")` reports the connection. Returns {close()}.
 */
export function followEvents({ runIds = null, sweep = null, onBatch, onState = () => {} }) {
  const path = sweep ? `/api/v1/events?sweep=${encodeURIComponent(sweep)}`
    : runIds && runIds.length ? `/api/v1/events?run_id=${runIds.map(encodeURIComponent).join(",")}`
      : "/api/v1/events";
  const source = new EventSource(withAccessToken(path));
  let queue = [];
  let scheduled = false;

  const flush = () => {
    scheduled = false;
    const batch = queue;
    queue = [];
    if (batch.length) onBatch(batch);
  };
  const schedule = () => {
    if (scheduled) return;
    scheduled = true;
    // a hidden tab gets no animation frames: drain on a timer so the queue stays small
    if (document.hidden) setTimeout(flush, 500);
    else requestAnimationFrame(flush);
  };
  for (const type of TYPES) {
    source.addEventListener(type, (ev) => {
      let data;
      try {
        data = JSON.parse(ev.data);
      } catch {
        return; // a malformed message must not stop the stream; the server never sends one
      }
      queue.push({ type, data });
      schedule();
    });
  }
  onState("connecting");
  source.onopen = () => onState("live");
  source.onerror = () => onState(source.readyState === EventSource.CLOSED ? "down" : "connecting");
  return {
    close() {
      source.close();
      queue = [];
    },
  };
}
