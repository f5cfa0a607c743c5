// Boot: sign-in from the URL, the header (auth state, live indicator, shortcuts), and the page for each route.

import { api } from "./api.js";
import { captureToken, clearToken, getToken, setToken } from "./auth.js";
import { clear, h } from "./dom.js";
import { startRouter } from "./router.js";
import * as comparePage from "./compare_page.js";
import * as launchPage from "./launch_page.js";
import * as runPage from "./run_page.js";
import * as runsPage from "./runs_page.js";
import * as sweepPage from "./sweep_page.js";
import * as sweepsPage from "./sweeps_page.js";

const PAGES = { runs: runsPage, run: runPage, compare: comparePage, launch: launchPage, sweeps: sweepsPage,
  sweep: sweepPage };
const $ = (id) => document.getElementById(id);

let current = null;
let access = { reads_open: true, signed_in: false };

/** What pages use to talk to the frame around them. */
export const shell = {
  setLive(state) {
    const el = $("live");
    el.dataset.state = state;
    $("live-text").textContent = state;
  },
  banner(message, kind = "info", action = null) {
    const box = $("banner");
    if (!message) return clear(box);
    return clear(box, h("div", { class: `banner ${kind}` }, h("span", {}, message), action,
      h("button", { type: "button", class: "ghost", "aria-label": "dismiss", onclick: () => clear(box) }, "×")));
  },
  signInButton: (label = "Sign in") => h("button", { type: "button", onclick: () => openSignIn() }, label),
  get canWrite() {
    return Boolean(getToken());
  },
};

function openSignIn() {
  $("signin-token").value = "";
  $("signin").showModal();
}

async function refreshAccess() {
  try {
    access = await api.whoami();
  } catch (err) {
    access = { reads_open: err.status !== 401, signed_in: false };
  }
  renderAuth();
}

function renderAuth() {
  const token = getToken();
  const box = $("auth");
  if (token && access.signed_in) {
    clear(box, h("span", { class: "signed-in", title: "writes and launches are allowed" }, "Signed in"),
      h("button", { type: "button", class: "ghost", onclick: () => clearToken() }, "Sign out"));
  } else if (token) {
    clear(box, h("span", { class: "warn", title: "the server rejected the stored token" }, "Token rejected"),
      shell.signInButton());
  } else {
    const why = access.reads_open ? "reads are open here; launching and cancelling need a token"
      : "this server needs a token even for reads";
    clear(box, h("span", { class: "read-only", title: why }, "Read-only"), shell.signInButton());
  }
}

function mountRoute(route) {
  if (current) current.unmount();
  shell.setLive("off");
  shell.banner(null);
  document.querySelectorAll("[data-nav]").forEach((a) => {
    a.toggleAttribute("aria-current", a.dataset.nav === route.page || `${a.dataset.nav}` === `${route.page}s`);
  });
  const root = clear($("page"));
  delete root.dataset.ready; // each page sets it once its first data is drawn (tests and benchmarks wait on it)
  current = PAGES[route.page].mount(root, route, shell);
}

// Inputs that take typed text keep their keys; checkboxes, sliders and buttons do not.
const TEXT_INPUTS = new Set(["text", "search", "number", "password", "email", "url", "tel"]);

function typingIn(t) {
  if (!(t instanceof HTMLElement)) return false;
  if (t.isContentEditable || t.tagName === "TEXTAREA" || t.tagName === "SELECT") return true;
  return t.tagName === "INPUT" && TEXT_INPUTS.has(t.type);
}

function onKey(ev) {
  const t = ev.target;
  if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
  if (typingIn(t)) {
    if (ev.key === "Escape") t.blur();
    return;
  }
  const go = { r: "#/runs", l: "#/launch" }[ev.key];
  if (go) {
    window.location.hash = go;
  } else if (ev.key === "?") {
    $("help").showModal();
  } else if (ev.key === "/") {
    const search = document.querySelector("[data-shortcut=search]");
    if (search) {
      ev.preventDefault();
      search.focus();
    }
  } else {
    const target = document.querySelector(`[data-key="${CSS.escape(ev.key)}"]`);
    if (target && !target.disabled) {
      ev.preventDefault();
      target.click();
    }
  }
}

function boot() {
  captureToken();
  $("signin-form").addEventListener("submit", (ev) => {
    if (ev.submitter && ev.submitter.value === "ok" && $("signin-token").value.trim()) {
      setToken($("signin-token").value.trim());
    }
  });
  $("help-button").addEventListener("click", () => $("help").showModal());
  window.addEventListener("sqd:auth", refreshAccess);
  window.addEventListener("sqd:unauthorized", (ev) => {
    const write = ev.detail.method !== "GET";
    const msg = getToken()
      ? `The server rejected the token (${ev.detail.detail}). Sign in again with a valid token.`
      : write ? "Launching and cancelling need a token: open the URL that `sqd up` printed (…/?token=…) or sign in."
        : "This server needs a token for reads: open the URL that `sqd up` printed (…/?token=…) or sign in.";
    shell.banner(msg, "warn", shell.signInButton());
  });
  document.addEventListener("keydown", onKey);
  refreshAccess();
  if (!window.Plotly) {
    shell.banner("Plotly did not load from /static/plotly.min.js: charts are unavailable.", "error");
  }
  startRouter(mountRoute);
}

boot();
