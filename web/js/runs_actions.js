// What can be done to the selected runs from the runs table, by view: archive or delete (active runs), unarchive
// (archived), restore or erase for good (the trash). Each asks the server run by run, then the table reloads.

import { api } from "./api.js";
import { h } from "./dom.js";

const BY_VIEW = {
  active: ["archive", "delete"],
  all: ["archive", "unarchive", "delete"],
  archived: ["unarchive", "delete"],
  deleted: ["restore", "erase"],
};

const ACTIONS = {
  archive: { label: "Archive", run: (id) => api.updateRun(id, { archived: true }) },
  unarchive: { label: "Unarchive", run: (id) => api.updateRun(id, { archived: false }) },
  delete: { label: "Delete", run: (id) => api.deleteRun(id), danger: true },
  restore: { label: "Restore", run: (id) => api.restoreRun(id) },
  erase: { label: "Delete for good", run: (id) => api.deleteRun(id, true), danger: true,
    confirm: (n) => `Erase ${n} run${n === 1 ? "" : "s"} and all their data (points, evaluations, checkpoints, `
      + "samples)? This cannot be undone." },
};

/** A toolbar of buttons acting on `selected()`; `done()` after each batch (the page reloads). */
export function bulkActions(shell, selected, done) {
  const count = h("span", { class: "muted" });
  const buttons = Object.fromEntries(Object.entries(ACTIONS).map(([name, a]) => [name, h("button", {
    type: "button", class: a.danger ? "danger" : "", disabled: true, dataset: { action: name },
    onclick: () => run(name) }, a.label)]));
  const element = h("div", { class: "bulk-actions", role: "toolbar", "aria-label": "selected runs" }, count,
    Object.values(buttons));

  async function run(name) {
    const ids = selected();
    const action = ACTIONS[name];
    if (!ids.length || (action.confirm && !window.confirm(action.confirm(ids.length)))) return;
    Object.values(buttons).forEach((b) => { b.disabled = true; });
    const failed = [];
    for (const id of ids) {
      try {
        await action.run(id);
      } catch (err) {
        if (err.status === 401) break; // the app asks to sign in
        failed.push(`${id.slice(0, 8)}: ${err.message}`);
      }
    }
    if (failed.length) shell.banner(`${action.label} failed for ${failed.join("; ")}`, "error");
    done();
  }

  return {
    element,
    setView(view) {
      for (const [name, b] of Object.entries(buttons)) b.hidden = !BY_VIEW[view].includes(name);
    },
    setCount(n) {
      count.textContent = n ? `${n} selected:` : "";
      for (const b of Object.values(buttons)) {
        b.disabled = n === 0;
        b.title = shell.canWrite ? "" : "needs a token: sign in first";
      }
    },
  };
}
