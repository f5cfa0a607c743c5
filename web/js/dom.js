// Small DOM helpers: element building and the loading / empty / error states every panel shares.

import { detailText } from "./format.js";

/** h("a", {href, class: "x", onclick}, "text", child) → an element. `null`/`false` children are skipped. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k in el && typeof v !== "string") el[k] = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function clear(el, ...children) {
  el.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}

export function loadingState(text = "Loading…") {
  return h("div", { class: "state loading", role: "status" }, h("span", { class: "spinner", "aria-hidden": "true" }),
    text);
}

export function emptyState(title, hint = "") {
  return h("div", { class: "state empty" }, h("strong", {}, title), hint ? h("p", {}, hint) : null);
}

/** An error panel: what failed, the server's words, how to sign in on a 401, and a retry button. */
export function errorState(what, err, retry = null) {
  const status = err && err.status;
  const hint = status === 401
    ? "This server needs a token for reads: open the URL that `sqd up` printed (…/?token=…), or use Sign in."
    : status === 0 ? "Is the server running? The page retries when you press Retry." : "";
  return h("div", { class: "state error", role: "alert" },
    h("strong", {}, what),
    h("p", { class: "detail" }, err ? detailText(err.detail ?? err.message) : ""),
    hint ? h("p", {}, hint) : null,
    retry ? h("button", { type: "button", onclick: retry }, "Retry") : null);
}

/** Status badge for a run status. */
export function statusBadge(status) {
  return h("span", { class: `badge status-${status}`, title: `status: ${status}` }, status);
}

/** ARIA tabs: arrow keys move between tabs, each tab shows its panel; `onShow(name)` fires on change. */
export function tabs(items, onShow = () => {}) {
  const list = h("div", { class: "tabs", role: "tablist" });
  const panels = h("div", { class: "tab-panels" });
  const buttons = items.map((it, i) => h("button", {
    type: "button", role: "tab", id: `tab-${it.name}`, "aria-controls": `panel-${it.name}`,
    "aria-selected": i === 0 ? "true" : "false", tabIndex: i === 0 ? 0 : -1, dataset: { tab: it.name },
  }, it.label));
  const sections = items.map((it, i) => h("section", {
    role: "tabpanel", id: `panel-${it.name}`, "aria-labelledby": `tab-${it.name}`, hidden: i !== 0,
  }, it.content));
  const show = (i) => {
    buttons.forEach((b, j) => {
      b.setAttribute("aria-selected", String(i === j));
      b.tabIndex = i === j ? 0 : -1;
      sections[j].hidden = i !== j;
    });
    onShow(items[i].name);
  };
  buttons.forEach((b, i) => {
    b.addEventListener("click", () => show(i));
    b.addEventListener("keydown", (ev) => {
      const next = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: items.length - 1 }[ev.key];
      if (next === undefined) return;
      ev.preventDefault();
      const j = (next + items.length) % items.length;
      buttons[j].focus();
      show(j);
    });
  });
  list.append(...buttons);
  panels.append(...sections);
  return { element: h("div", { class: "tabbed" }, list, panels), show: (name) =>
    show(Math.max(0, items.findIndex((it) => it.name === name))) };
}
