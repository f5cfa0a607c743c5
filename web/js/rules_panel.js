// The run page's alert-rule tab (rules that apply to the run, a form to add one, delete) and the "best before
// collapse" line for the alerts card, with what each alert's actions did (webhook deliveries, stop, kept
// checkpoint).
//
// Wiring (run_page.js): `const rules = rulesPanel(runId, shell)`; put `rules.best` in the alerts card; add a
// tab {name: "rules", label: "Rules", content: rules.element} whose onShow calls `rules.load()`; call
// `rules.onAlert(alert)` for each SSE `alert` event and `rules.refreshBest()` once the page has loaded.

import { request } from "./api.js";
import { withAccessToken } from "./auth.js";
import { clear, emptyState, errorState, h, loadingState } from "./dom.js";
import { detailText, formatInt } from "./format.js";
import { actionText, describeRule, KIND_FIELDS, placeRuleErrors, RULE_KINDS, ruleBody } from "./rules_logic.js";

const enc = encodeURIComponent;

function field(name, label, input, extra = null) {
  const error = h("p", { class: "field-error", role: "alert", dataset: { errorFor: name } });
  return { name, input, error, element: h("div", { class: "field", dataset: { field: name } },
    h("label", { for: input.id }, label), input, extra, error) };
}

function ruleForm(onCreated, getRun) {
  const kind = h("select", { id: "rule-kind", name: "kind" },
    RULE_KINDS.map((k) => h("option", { value: k.kind }, k.label)));
  const help = h("p", { class: "muted" });
  const op = h("select", { id: "rule-op", name: "op" }, ["<", "<=", ">", ">="].map((o) => h("option", { value: o }, o)));
  const scope = h("select", { id: "rule-scope", name: "scope" }, h("option", { value: "run" }, "this run"),
    h("option", { value: "preset" }, "runs of this preset"), h("option", { value: "all" }, "all runs"));
  const severity = h("select", { id: "rule-severity", name: "severity" },
    ["warning", "critical", "info"].map((s) => h("option", { value: s }, s)));
  const text = (id, placeholder = "") => h("input", { id, name: id.slice(5), type: "text", placeholder,
    autocomplete: "off" });
  const stopRun = h("input", { id: "rule-stop", type: "checkbox", style: "width: auto" });
  const keepBest = h("input", { id: "rule-keep", type: "checkbox", style: "width: auto" });
  const fields = [
    field("expression", "Condition", text("rule-expression", "eval/quality < 0.5 for 3 evaluations")),
    field("key", "Key", text("rule-key", "loss/D (globs like loss/* work)")),
    field("op", "Comparison", op),
    field("value", "Value", text("rule-value", "0.5")),
    field("window", "Points in the fit", text("rule-window", "20")),
    field("minutes", "Minutes without a new step", text("rule-minutes", "10")),
    field("name", "Name (optional)", text("rule-name")),
    field("scope", "Applies to", scope),
    field("severity", "Severity", severity),
    field("webhookUrl", "Webhook URL (optional, JSON POST)", text("rule-webhookUrl", "https://…")),
  ];
  const byName = Object.fromEntries(fields.map((f) => [f.name, f]));
  const general = h("div", { class: "form-errors", role: "alert" });
  const submit = h("button", { type: "submit", class: "primary" }, "Create rule");
  const form = h("form", { class: "launch rule-form", novalidate: true },
    h("div", { class: "field" }, h("label", { for: "rule-kind" }, "Kind"), kind, help),
    fields.map((f) => f.element),
    h("fieldset", { class: "field" }, h("legend", {}, "Actions"),
      h("label", { style: "font-weight: normal" }, stopRun, " stop the run"),
      h("label", { style: "font-weight: normal" }, keepBest,
        " keep the last checkpoint before it as \"best before collapse\"")),
    general, submit);

  function showKind() {
    const used = new Set([...KIND_FIELDS[kind.value], "name", "scope", "severity", "webhookUrl"]);
    fields.forEach((f) => { f.element.hidden = !used.has(f.name); });
    help.textContent = RULE_KINDS.find((k) => k.kind === kind.value).help;
  }
  function showErrors(byField, messages) {
    fields.forEach((f) => { f.error.textContent = (byField[f.name] || []).join(" "); });
    clear(general, messages.map((m) => h("p", {}, m)));
  }
  kind.addEventListener("change", showKind);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const values = Object.fromEntries(fields.map((f) => [f.name, f.input.value]));
    const { body, errors } = ruleBody({ ...values, kind: kind.value, stopRun: stopRun.checked,
      keepBest: keepBest.checked }, getRun());
    if (Object.keys(errors).length) {
      showErrors(Object.fromEntries(Object.entries(errors).map(([k, v]) => [k, [v]])), []);
      return;
    }
    submit.disabled = true;
    try {
      await request("POST", "/rules", body);
      showErrors({}, []);
      fields.forEach((f) => { if (f.input.tagName === "INPUT") f.input.value = ""; });
      onCreated();
    } catch (err) {
      if (err.status === 422) {
        const placed = placeRuleErrors(err.detail);
        showErrors(placed.fields, placed.general);
      } else showErrors({}, [detailText(err.detail ?? err.message)]);
    } finally {
      submit.disabled = false;
    }
  });
  showKind();
  return { element: form, byName };
}

/** The rules tab and the best-before-collapse line of one run. */
export function rulesPanel(runId, shell) {
  let run = { id: runId, preset: null };
  const list = h("ul", { class: "rules-list" });
  const listBox = h("div", { class: "rules" }, loadingState("Loading rules…"));
  const form = ruleForm(() => load(), () => run);
  const element = h("div", { class: "rules-panel" }, h("h3", {}, "Rules that apply to this run"), listBox,
    h("h3", {}, "New rule"), form.element);
  const best = h("div", { class: "best-before-collapse", "aria-live": "polite" });

  async function remove(rule) {
    try {
      await request("DELETE", `/rules/${rule.id}`);
      await load();
    } catch (err) {
      clear(listBox, errorState("Could not delete the rule", err, load), list);
    }
  }

  function item(rule) {
    const label = rule.builtin ? (rule.enabled ? "Disable" : null) : "Delete";
    return h("li", { class: "rule-item", dataset: { ruleId: rule.id } },
      h("span", { class: `badge severity-${rule.severity}` }, rule.severity), " ",
      h("span", { class: "rule-text" }, describeRule(rule)), " ",
      label ? h("button", { type: "button", class: "ghost small", disabled: !shell.canWrite,
        title: shell.canWrite ? "" : "needs a token: sign in first", onclick: () => remove(rule) }, label) : null);
  }

  async function load() {
    try {
      const [runData, rules] = await Promise.all([request("GET", `/runs/${enc(runId)}`),
        request("GET", `/rules?run_id=${enc(runId)}`)]);
      run = runData;
      clear(list, rules.data.map(item));
      clear(listBox, rules.data.length ? list : emptyState("No rules apply to this run."));
    } catch (err) {
      clear(listBox, errorState("Could not load the rules", err, load));
    }
  }

  async function refreshBest() {
    let kept;
    try {
      kept = await request("GET", `/runs/${enc(runId)}/best-before-collapse`);
    } catch (err) {
      if (err.status !== 404) clear(best, h("p", { class: "error-text" }, detailText(err.detail)));
      return;
    }
    const href = withAccessToken(`/api/v1/runs/${enc(runId)}/best-before-collapse/checkpoint`);
    const where = `step ${formatInt(kept.checkpoint_step)}${kept.epoch != null ? ` (epoch ${kept.epoch})` : ""}`;
    clear(best, h("p", {}, h("strong", {}, "Best before collapse: "), `checkpoint of ${where} — `,
      h("a", { href, download: `best-before-collapse-${runId}-step${kept.checkpoint_step}.pt` }, "download")));
  }

  async function showActions(alert) {
    try {
      const actions = await request("GET", `/alerts/${alert.id}/actions`);
      const slot = document.querySelector(`[data-alert-id="${alert.id}"]`);
      if (slot && actions.length) {
        slot.append(h("ul", { class: "alert-actions muted" }, actions.map((a) => h("li", {}, actionText(a)))));
      }
    } catch {
      // the alert is shown anyway; its action lines are a detail
    }
  }

  return {
    element,
    best,
    load,
    refreshBest,
    onAlert(alert) {
      refreshBest();
      setTimeout(() => showActions(alert), 1500); // webhooks are delivered in the background
    },
  };
}
