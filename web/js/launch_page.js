// Launch page: a preset (grouped by seed, with its description), overrides as key = value rows, the server's
// 422 placed next to the field it names; on 202 the browser goes to the new run's page and watches it start.

import { api } from "./api.js";
import { getToken } from "./auth.js";
import { clear, errorState, h, loadingState } from "./dom.js";
import { detailText } from "./format.js";
import { collectOverrides, groupPresets, placeErrors } from "./launch_form.js";
import { routeHash } from "./router.js";
import * as sweepForm from "./sweep_form.js";

// "unknown key 'x'; did you mean 'y'? keys: a, b, …": the long list of valid keys folds away
function messageWithKeys(msg) {
  const at = msg.indexOf(" keys: ");
  if (at < 0) return h("span", {}, `${msg} `);
  return h("span", {}, msg.slice(0, at), " ", h("details", { class: "valid-keys" },
    h("summary", {}, "valid keys"), h("code", {}, msg.slice(at + 7))));
}

/** "One run | Sweep": the launch page's two modes (#/launch, #/launch?mode=sweep). */
function modeTabs(sweep) {
  const tab = (label, mode, on) => h("a", { class: `button${on ? " primary" : " ghost"}`, "aria-current": on ? "page"
    : null, href: routeHash("launch", { params: { mode } }) }, label);
  return h("span", { class: "mode-tabs seg", role: "group", "aria-label": "launch one run or a sweep" },
    tab("One run", "", !sweep), tab("Sweep", "sweep", sweep));
}

export function mount(root, route, shell) {
  if (route.params.mode === "sweep") return sweepForm.mount(root, route, shell, modeTabs(true));
  const presets = new Map();
  const select = h("select", { id: "preset", name: "preset", required: true, "aria-describedby": "preset-help" });
  const description = h("p", { id: "preset-help", class: "help" });
  const presetError = h("p", { class: "field-error", id: "preset-error", role: "alert" });
  const name = h("input", { id: "run-name", name: "name", maxLength: 200, placeholder: "defaults to the preset" });
  const nameError = h("p", { class: "field-error", role: "alert" });
  const steps = h("input", { id: "run-steps", name: "steps", type: "number", min: 1, step: 1,
    placeholder: "the preset's train.steps" });
  const stepsError = h("p", { class: "field-error", role: "alert" });
  const rowsBox = h("div", { class: "override-rows" });
  const general = h("div", { class: "form-errors", role: "alert" });
  const submit = h("button", { type: "submit", class: "primary" }, "Launch");
  const rows = [];

  function addRow(key = "", value = "") {
    const keyInput = h("input", { class: "ov-key", placeholder: "optim.lr_g", value: key, "aria-label": "setting" });
    const valueInput = h("input", { class: "ov-value", placeholder: "1e-3", value, "aria-label": "value" });
    const error = h("p", { class: "field-error", role: "alert" });
    const row = { keyInput, valueInput, error, element: null };
    row.element = h("div", { class: "override-row" }, keyInput, h("span", { "aria-hidden": "true" }, "="), valueInput,
      h("button", { type: "button", class: "ghost small", "aria-label": "remove this override", onclick: () => {
        rows.splice(rows.indexOf(row), 1);
        row.element.remove();
      } }, "×"), error);
    rows.push(row);
    rowsBox.append(row.element);
    return row;
  }

  const form = h("form", { class: "launch", novalidate: true },
    h("div", { class: "field" }, h("label", { for: "preset" }, "Preset"), select, description, presetError),
    h("div", { class: "field two" },
      h("div", {}, h("label", { for: "run-name" }, "Name"), name, nameError),
      h("div", {}, h("label", { for: "run-steps" }, "Steps"), steps, stepsError)),
    h("fieldset", { class: "field" }, h("legend", {}, "Overrides"),
      h("p", { class: "help" }, "Dotted keys of the training config, as with ",
        h("code", {}, "sqd train PRESET --set key=value"), ". Values are parsed by the server: ",
        ["2e-4", "[0.5, 0.9]", "true", "hinge"].flatMap((v, i) => [i ? ", " : "", h("code", {}, v)]), "."),
      rowsBox,
      h("button", { type: "button", class: "ghost", onclick: () => addRow().keyInput.focus() }, "+ Add override")),
    general,
    h("div", { class: "actions" }, submit, h("a", { href: "#/runs", class: "button ghost" }, "Cancel")));
  const catalogue = h("aside", { class: "catalogue", "aria-label": "presets by seed" });
  const body = h("div", { class: "launch-layout" }, loadingState("Loading presets…"));
  root.append(h("div", { class: "page-head" }, h("h1", {}, "Launch a run"), modeTabs(false)), body);
  addRow();

  function showDescription() {
    const p = presets.get(select.value);
    description.textContent = p ? `${p.description}${p.dataset ? ` · dataset: ${p.dataset}` : ""}` : "";
    for (const b of catalogue.querySelectorAll("button[data-preset]")) {
      b.toggleAttribute("aria-current", b.dataset.preset === select.value);
    }
  }
  select.addEventListener("change", showDescription);

  function renderCatalogue(groups) {
    clear(catalogue, h("h2", {}, "Presets"), groups.map((g) => h("section", {},
      h("h3", {}, g.title),
      h("ul", {}, g.presets.map((p) => h("li", {}, h("button", { type: "button", class: "preset-pick",
        dataset: { preset: p.name }, onclick: () => {
          select.value = p.name;
          showDescription();
          select.focus();
        } }, h("strong", {}, p.name), h("span", {}, p.description))))))));
  }

  function clearErrors() {
    for (const el of [presetError, nameError, stepsError, general, ...rows.map((r) => r.error)]) el.textContent = "";
    for (const r of rows) r.element.classList.remove("invalid");
  }

  function showErrors(placed) {
    const fieldBox = { preset: presetError, name: nameError, steps: stepsError };
    for (const [field, msgs] of Object.entries(placed.fields)) fieldBox[field].textContent = msgs.join(" ");
    for (const [index, msgs] of Object.entries(placed.rows)) {
      clear(rows[index].error, msgs.map(messageWithKeys));
      rows[index].element.classList.add("invalid");
    }
    clear(general, placed.general.map((m) => h("p", {}, m)));
    const first = form.querySelector(".invalid input, .field-error:not(:empty)");
    if (first) (first.tagName === "INPUT" ? first : first.parentNode.querySelector("input, select"))?.focus();
  }

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearErrors();
    const values = rows.map((r) => ({ key: r.keyInput.value, value: r.valueInput.value }));
    const local = collectOverrides(values);
    if (local.errors.length) {
      showErrors({ fields: {}, general: [], rows: Object.fromEntries(local.errors.map((e) => [e.index, [e.msg]])) });
      return;
    }
    if (!getToken()) {
      shell.banner("Launching needs a token: open the URL that `sqd up` printed (…/?token=…) or sign in.", "warn",
        shell.signInButton());
      return;
    }
    const request = { preset: select.value, overrides: local.overrides, name: name.value.trim() };
    if (steps.value) request.steps = Number(steps.value);
    submit.disabled = true;
    submit.textContent = "Launching…";
    try {
      const run = await api.launch(request);
      window.location.hash = routeHash("run", { id: run.id });
    } catch (err) {
      if (err.status === 422) showErrors(placeErrors(err.detail, values));
      else if (err.status !== 401) clear(general, h("p", {}, `Launch failed: ${detailText(err.detail)}`));
    } finally {
      submit.disabled = false;
      submit.textContent = "Launch";
    }
  });

  async function load() {
    try {
      const list = await api.presets();
      for (const p of list) presets.set(p.name, p);
      const groups = groupPresets(list);
      clear(select, groups.map((g) => h("optgroup", { label: g.title },
        g.presets.map((p) => h("option", { value: p.name, title: p.description }, p.name)))));
      renderCatalogue(groups);
      select.value = route.params.preset && presets.has(route.params.preset) ? route.params.preset
        : (list.find((p) => p.family === "demo") || list[0] || {}).name || "";
      showDescription();
      clear(body, form, catalogue);
      catalogue.querySelector("[aria-current]")?.scrollIntoView({ block: "nearest" });
      if (!getToken()) {
        shell.banner("You are not signed in: the form works, but launching needs a token.", "warn",
          shell.signInButton());
      }
      select.focus();
    } catch (err) {
      clear(body, errorState("Could not load the presets.", err, load));
    }
  }
  load();
  return { unmount() {} };
}
