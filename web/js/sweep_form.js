// Launch page, sweep mode (#/launch?mode=sweep): presets (one or several), grid rows (a key and its values, swept
// as a cartesian product), overrides for every run, optional explicit override sets, seeds, steps, the cap of
// runs at once, and the built-in sweeps ("SQD grid (seed 003)") that fill the form. The run count follows every
// edit; above 200 runs the form asks for an explicit confirmation. The server's 422 lands on the row it names;
// on 201 the browser goes to the new sweep's page.

import { api } from "./api.js";
import { getToken } from "./auth.js";
import { clear, errorState, h, loadingState } from "./dom.js";
import { detailText } from "./format.js";
import { collectOverrides, groupPresets } from "./launch_form.js";
import { routeHash } from "./router.js";
import { collectConfigs, collectGrid, countRuns, placeSweepErrors } from "./sweep_form_logic.js";

const CONFIRM_ABOVE = 200;

function keyValueRow(rows, box, { key = "", value = "", keyHint, valueHint, cls }) {
  const keyInput = h("input", { class: "ov-key", placeholder: keyHint, value: key, "aria-label": "setting" });
  const valueInput = h("input", { class: "ov-value", placeholder: valueHint, value, "aria-label": "values" });
  const error = h("p", { class: "field-error", role: "alert" });
  const row = { keyInput, valueInput, error, element: null };
  row.element = h("div", { class: cls }, keyInput, h("span", { "aria-hidden": "true" }, "="), valueInput,
    h("button", { type: "button", class: "ghost small", "aria-label": "remove this row", onclick: () => {
      rows.splice(rows.indexOf(row), 1);
      row.element.remove();
      box.dispatchEvent(new Event("input", { bubbles: true }));
    } }, "×"), error);
  rows.push(row);
  box.append(row.element);
  return row;
}

export function mount(root, route, shell, modeTabs) {
  const presetBox = h("div", { class: "preset-checks", role: "group", "aria-label": "presets to sweep" });
  const presetError = h("p", { class: "field-error", role: "alert" });
  const gridBox = h("div", { class: "grid-rows" });
  const overrideBox = h("div", { class: "override-rows" });
  const gridRows = [];
  const overrideRows = [];
  const configsText = h("textarea", { id: "sweep-configs", rows: 2, placeholder:
    "optional, one set per line: loss.name=wgan; reg.names=gp" });
  const configsError = h("p", { class: "field-error", role: "alert" });
  const field = (id, attrs) => h("input", { id, name: id, ...attrs });
  const name = field("sweep-name", { maxLength: 120, placeholder: "defaults to the presets and keys swept" });
  const seeds = field("sweep-seeds", { type: "number", min: 1, max: 1000, step: 1, value: 1 });
  const steps = field("sweep-steps", { type: "number", min: 1, step: 1, placeholder: "the presets' train.steps" });
  const cap = field("sweep-cap", { type: "number", min: 1, step: 1, placeholder: "server default (8)" });
  const fieldErrors = Object.fromEntries(["name", "seeds", "steps", "max_concurrent", "confirm"].map((k) =>
    [k, h("p", { class: "field-error", role: "alert" })]));
  const count = h("p", { class: "run-count", role: "status" });
  const confirm = h("input", { type: "checkbox", id: "sweep-confirm" });
  const confirmBox = h("label", { class: "confirm", hidden: true }, confirm, " launch them all");
  const general = h("div", { class: "form-errors", role: "alert" });
  const submit = h("button", { type: "submit", class: "primary" }, "Launch sweep");
  const builtinBox = h("div", { class: "builtin-box" });

  const addGrid = (key, value) => keyValueRow(gridRows, gridBox, { key, value, keyHint: "loss.name",
    valueHint: "nsgan, lsgan, hinge, wgan", cls: "grid-row" });
  const addOverride = (key, value) => keyValueRow(overrideRows, overrideBox, { key, value, keyHint: "train.batch",
    valueHint: "32", cls: "override-row" });

  const form = h("form", { class: "launch sweep-form", novalidate: true },
    builtinBox,
    h("fieldset", { class: "field" }, h("legend", {}, "Presets"), presetBox, presetError),
    h("fieldset", { class: "field" }, h("legend", {}, "Grid"),
      h("p", { class: "help" }, "Each row sweeps one dotted key over its values (comma-separated; ",
        h("code", {}, "[gp, r1]"), " is one list value); rows multiply into a cartesian product."),
      gridBox, h("button", { type: "button", class: "ghost", onclick: () => addGrid().keyInput.focus() },
        "+ Add a key to sweep")),
    h("fieldset", { class: "field" }, h("legend", {}, "Overrides for every run"), overrideBox,
      h("button", { type: "button", class: "ghost", onclick: () => addOverride().keyInput.focus() }, "+ Add override")),
    h("div", { class: "field" }, h("label", { for: "sweep-configs" }, "Explicit override sets"), configsText,
      configsError),
    h("div", { class: "field three" },
      h("div", {}, h("label", { for: "sweep-seeds" }, "Seeds"), seeds, fieldErrors.seeds),
      h("div", {}, h("label", { for: "sweep-steps" }, "Steps"), steps, fieldErrors.steps),
      h("div", {}, h("label", { for: "sweep-cap" }, "Runs at once"), cap, fieldErrors.max_concurrent)),
    h("div", { class: "field" }, h("label", { for: "sweep-name" }, "Name"), name, fieldErrors.name),
    count, confirmBox, fieldErrors.confirm, general,
    h("div", { class: "actions" }, submit, h("a", { href: "#/sweeps", class: "button ghost" }, "Cancel")));
  const body = h("div", { class: "launch-layout" }, loadingState("Loading presets…"));
  root.append(h("div", { class: "page-head" }, h("h1", {}, "Launch a sweep"), modeTabs), body);
  addGrid();
  addOverride();

  const checked = () => [...presetBox.querySelectorAll("input:checked")].map((c) => c.value);

  function request() {
    const grid = collectGrid(gridRows.map((r) => ({ key: r.keyInput.value, values: r.valueInput.value })));
    const overrides = collectOverrides(overrideRows.map((r) => ({ key: r.keyInput.value, value: r.valueInput.value })));
    const configs = collectConfigs(configsText.value);
    const body = { presets: checked(), grid: grid.grid, overrides: overrides.overrides, configs: configs.configs,
      seeds: Number(seeds.value) || 1, name: name.value.trim() };
    if (steps.value) body.steps = Number(steps.value);
    if (cap.value) body.max_concurrent = Number(cap.value);
    return { body, grid, overrides, configs };
  }

  function updateCount() {
    const { body } = request();
    const n = countRuns(body);
    count.textContent = body.presets.length ? `${n.configurations} configuration${n.configurations === 1 ? "" : "s"}`
      + ` × ${body.seeds} seed${body.seeds === 1 ? "" : "s"} = ${n.runs} run${n.runs === 1 ? "" : "s"}`
      + (n.runs > CONFIRM_ABOVE ? ` — more than ${CONFIRM_ABOVE}: confirm below` : "") : "pick at least one preset";
    count.classList.toggle("big", n.runs > CONFIRM_ABOVE);
    confirmBox.hidden = n.runs <= CONFIRM_ABOVE;
    count.dataset.runs = String(n.runs);
  }
  form.addEventListener("input", updateCount);
  form.addEventListener("change", updateCount);

  function clearErrors() {
    for (const el of [presetError, configsError, general, ...Object.values(fieldErrors),
      ...gridRows.map((r) => r.error), ...overrideRows.map((r) => r.error)]) el.textContent = "";
    for (const r of [...gridRows, ...overrideRows]) r.element.classList.remove("invalid");
  }

  function showErrors(placed) {
    const boxes = { ...fieldErrors, presets: presetError, configs: configsError };
    for (const [f, msgs] of Object.entries(placed.fields)) boxes[f].textContent = msgs.join(" ");
    for (const [rows, where] of [[gridRows, placed.grid], [overrideRows, placed.overrides]]) {
      for (const [i, msgs] of Object.entries(where)) {
        rows[i].error.textContent = msgs.join(" ");
        rows[i].element.classList.add("invalid");
      }
    }
    clear(general, placed.general.map((m) => h("p", {}, m)));
    form.querySelector(".invalid input, .field-error:not(:empty)")?.scrollIntoView({ block: "center" });
  }

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearErrors();
    const { body, grid, overrides, configs } = request();
    if (grid.errors.length || overrides.errors.length || configs.errors.length) {
      showErrors({ fields: configs.errors.length ? { configs: configs.errors.map((e) => e.msg) } : {}, general: [],
        grid: Object.fromEntries(grid.errors.map((e) => [e.index, [e.msg]])),
        overrides: Object.fromEntries(overrides.errors.map((e) => [e.index, [e.msg]])) });
      return;
    }
    if (!getToken()) {
      shell.banner("Launching needs a token: open the URL that `sqd up` printed (…/?token=…) or sign in.", "warn",
        shell.signInButton());
      return;
    }
    body.confirm = confirm.checked;
    submit.disabled = true;
    submit.textContent = "Launching…";
    try {
      const sweep = await api.createSweep(body);
      window.location.hash = routeHash("sweep", { id: sweep.id });
    } catch (err) {
      const rowsOf = (rows) => rows.map((r) => ({ key: r.keyInput.value }));
      if (err.status === 422) showErrors(placeSweepErrors(err.detail, rowsOf(gridRows), rowsOf(overrideRows)));
      else if (err.status !== 401) clear(general, h("p", {}, `Launch failed: ${detailText(err.detail)}`));
    } finally {
      submit.disabled = false;
      submit.textContent = "Launch sweep";
    }
  });

  /** Fill the form from a POST /sweeps body (a built-in sweep). */
  function fill(req) {
    const presets = new Set(req.presets || (req.preset ? [req.preset] : []));
    for (const c of presetBox.querySelectorAll("input")) c.checked = presets.has(c.value);
    for (const r of [...gridRows]) r.element.remove();
    gridRows.length = 0;
    for (const [key, values] of Object.entries(req.grid || {})) addGrid(key, values.join(", "));
    if (!gridRows.length) addGrid();
    seeds.value = String(req.seeds || 1);
    name.value = req.name || "";
    updateCount();
  }

  async function load() {
    try {
      const [presets, builtins] = await Promise.all([api.presets(), api.builtinSweeps()]);
      const wanted = new Set((route.params.presets || "").split(",").filter(Boolean));
      clear(presetBox, groupPresets(presets).map((g) => [h("h4", {}, g.title), g.presets.map((p) => h("label",
        { title: p.description }, h("input", { type: "checkbox", value: p.name, checked: wanted.has(p.name) }),
        p.name))]).flat(2));
      clear(builtinBox, h("span", { class: "muted" }, "Built in:"), builtins.map((b) => h("button", {
        type: "button", class: "ghost", title: b.description, dataset: { builtin: b.id },
        onclick: () => fill(b.request) }, b.title)));
      clear(body, form);
      if (route.params.builtin) {
        const b = builtins.find((x) => x.id === route.params.builtin);
        if (b) fill(b.request);
      }
      updateCount();
      if (!getToken()) {
        shell.banner("You are not signed in: the form works, but launching needs a token.", "warn",
          shell.signInButton());
      }
    } catch (err) {
      clear(body, errorState("Could not load the presets.", err, load));
    }
  }
  load();
  return { unmount() {} };
}
