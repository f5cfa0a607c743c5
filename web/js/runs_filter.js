// The runs page's filter box: the server's filter language (`config.lr >= 1e-3 and eval/fid < 50`), applied on
// Enter, with the server's 422 shown inline under the box, the bad token marked.

import { h } from "./dom.js";
import { detailText } from "./format.js";

const EXAMPLE = "config.lr >= 1e-3 and eval/fid < 50 and tag = baseline";

/** The filter error in an API error's detail ({loc: ["query", "filter"], msg, token, position}), or null. Pure. */
export function filterError(err) {
  const detail = err && Array.isArray(err.detail) ? err.detail : [];
  return detail.find((d) => d && d.type === "filter_syntax") || null;
}

export function filterBox(value, onApply) {
  const input = h("input", { type: "text", class: "filter-expr", value, placeholder: `Filter: ${EXAMPLE}`,
    spellcheck: false, "aria-label": "filter expression", "aria-describedby": "filter-error" });
  const error = h("div", { id: "filter-error", class: "filter-error", role: "alert", hidden: true });
  const apply = h("button", { type: "button", onclick: () => onApply(input.value.trim()) }, "Apply");
  input.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter") onApply(input.value.trim());
  });
  return {
    element: h("div", { class: "filter-box" }, h("div", { class: "filter-row" }, input, apply), error),
    /** Show the server's words, with the filter and a mark at the bad token's position. */
    showError(err) {
      const bad = filterError(err);
      const text = input.value;
      input.setAttribute("aria-invalid", "true");
      error.hidden = false;
      if (!bad) {
        error.replaceChildren(h("span", {}, detailText(err.detail ?? err.message)));
        return;
      }
      const at = Math.min(Math.max(bad.position, 0), text.length);
      const end = Math.min(text.length, at + Math.max(bad.token.length, 1));
      error.replaceChildren(h("span", { class: "filter-msg" }, bad.msg),
        h("code", { class: "filter-echo" }, text.slice(0, at), h("mark", {}, text.slice(at, end) || " "),
          text.slice(end)));
    },
    clearError() {
      input.removeAttribute("aria-invalid");
      error.hidden = true;
      error.replaceChildren();
    },
  };
}
