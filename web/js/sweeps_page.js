// Sweeps page: every sweep, newest first, with its status and runs per status; follows run changes live (a
// changed run of a sweep reloads the list, at most once a second).

import { api } from "./api.js";
import { clear, emptyState, errorState, h, loadingState, statusBadge } from "./dom.js";
import { formatTime } from "./format.js";
import { routeHash } from "./router.js";
import { followEvents } from "./sse.js";

const ORDER = ["running", "cancelling", "queued", "finished", "failed", "cancelled"];

export function mount(root, route, shell) {
  const body = h("div", { class: "table-wrap" }, loadingState("Loading sweeps…"));
  root.append(h("div", { class: "page-head" }, h("h1", {}, "Sweeps"), h("span", { class: "spacer" }),
    h("a", { class: "button primary", href: routeHash("launch", { params: { mode: "sweep" } }) }, "New sweep")), body);
  let timer = null;

  function row(s) {
    const counts = ORDER.filter((k) => s.counts[k]).map((k) => h("span", { class: `badge status-${k}` },
      `${s.counts[k]} ${k}`));
    return h("tr", { dataset: { sweepId: s.id } },
      h("td", { class: "col-name" }, h("a", { href: routeHash("sweep", { id: s.id }) }, s.name),
        h("small", { class: "muted id" }, s.id.slice(0, 8))),
      h("td", {}, statusBadge(s.status)),
      h("td", { class: "num" }, String(s.n_runs)),
      h("td", { class: "counts" }, counts),
      h("td", {}, s.dimensions.join(" × ") || "–"),
      h("td", {}, formatTime(s.created_at)));
  }

  async function load() {
    try {
      const page = await api.sweeps();
      if (!page.data.length) {
        clear(body, emptyState("No sweeps yet.", "Launch one from the Launch page (Sweep), or with `sqd sweep "
          + "PRESET --grid key=a,b --seeds 3`."));
      } else {
        clear(body, h("table", { class: "runs sweeps" }, h("thead", {}, h("tr", {}, ["Sweep", "Status", "Runs",
          "Per status", "Dimensions", "Created"].map((t) => h("th", {}, t)))), h("tbody", {}, page.data.map(row))));
      }
      root.dataset.ready = "true";
    } catch (err) {
      clear(body, errorState("Could not load the sweeps.", err, load));
    }
  }

  const events = followEvents({ onState: shell.setLive, onBatch: (batch) => {
    if (batch.some((e) => e.type === "reset" || (e.type === "run" && e.data.sweep_id)) && !timer) {
      timer = setTimeout(() => { timer = null; load(); }, 1000);
    }
  } });
  load();
  return { unmount() { events.close(); clearTimeout(timer); } };
}
