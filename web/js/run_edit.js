// The run page's lifecycle controls: rename, tags, notes, end an external run, archive, delete / restore. One
// persistent component (the page redraws its header every few seconds; an edit in progress survives that).

import { api } from "./api.js";
import { h } from "./dom.js";
import { LIVE_STATUSES } from "./format.js";

export function runEditor(shell, onChange) {
  let run = null;
  const title = h("h1", {});
  const nameInput = h("input", { type: "text", class: "rename", "aria-label": "run name", maxLength: 200 });
  const renameButton = h("button", { type: "button", class: "ghost small", title: "rename",
    onclick: () => startRename() }, "Rename");
  const nameBox = h("span", { class: "name-box" }, title, renameButton);
  const tagList = h("span", { class: "tags" });
  const tagInput = h("input", { type: "text", class: "tag-input", placeholder: "add tag", "aria-label": "add a tag",
    maxLength: 100 });
  const notes = h("textarea", { class: "notes-edit", rows: 3, maxLength: 10000, "aria-label": "notes",
    placeholder: "Notes: what this run tries, what came of it" });
  const saveNotes = h("button", { type: "button", class: "small", onclick: () => save({ notes: notes.value }) },
    "Save notes");
  const notesBox = h("details", { class: "notes-box" }, h("summary", {}, "Notes"), notes, saveNotes);
  const finish = h("button", { type: "button", onclick: () => save({ status: "finished" }),
    title: "this run was fed by a script or a Monitor: say it ended" }, "Mark finished");
  const archive = h("button", { type: "button", onclick: () => save({ archived: !run.archived_at }) });
  const remove = h("button", { type: "button", class: "danger", onclick: () => toggleDeleted() });

  // Changes go one after another, each built from the run as the previous one left it (two quick edits must not
  // race: the older answer arriving last would undo the newer).
  let queue = Promise.resolve();
  function save(change) {
    queue = queue.then(async () => {
      try {
        run = await api.updateRun(run.id, typeof change === "function" ? change(run) : change);
        onChange(run);
      } catch (err) {
        if (err.status !== 401) shell.banner(`Could not change the run: ${err.message}`, "error");
      }
    });
    return queue;
  }

  async function toggleDeleted() {
    try {
      run = run.deleted_at ? await api.restoreRun(run.id) : await api.deleteRun(run.id);
      onChange(run);
      if (run.deleted_at) {
        shell.banner("Run deleted: it is in the trash (runs page, view “Deleted”) until gc erases it.", "info",
          h("button", { type: "button", onclick: () => toggleDeleted() }, "Undo"));
      }
    } catch (err) {
      if (err.status !== 401) shell.banner(`Could not change the run: ${err.message}`, "error");
    }
  }

  let renaming = false;
  function startRename() {
    renaming = true;
    nameInput.value = run.name;
    nameBox.replaceChildren(nameInput);
    nameInput.focus();
    nameInput.select();
  }

  function endRename(keep) {
    if (!renaming) return; // Enter, then the blur of the input leaving the page
    renaming = false;
    nameBox.replaceChildren(title, renameButton);
    if (keep && nameInput.value.trim() && nameInput.value.trim() !== run.name) save({ name: nameInput.value.trim() });
  }

  nameInput.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter") endRename(true);
    if (ev.key === "Escape") endRename(false);
  });
  nameInput.addEventListener("blur", () => endRename(true));
  tagInput.addEventListener("keydown", (ev) => {
    const tag = tagInput.value.trim();
    if (ev.key !== "Enter" || !tag) return;
    tagInput.value = "";
    save((now) => ({ tags: now.tags.includes(tag) ? now.tags : [...now.tags, tag] }));
  });

  return {
    title: nameBox,
    tags: h("span", { class: "tag-editor" }, tagList, tagInput),
    notes: notesBox,
    buttons: [finish, archive, remove],
    update(next) {
      run = next;
      title.textContent = run.name || run.id;
      tagList.replaceChildren(...run.tags.map((t) => h("span", { class: "tag" }, t, h("button", {
        type: "button", class: "tag-remove", "aria-label": `remove tag ${t}`,
        onclick: () => save((now) => ({ tags: now.tags.filter((x) => x !== t) })) }, "×"))));
      if (document.activeElement !== notes) notes.value = run.notes || "";
      notesBox.querySelector("summary").textContent = run.notes ? `Notes: ${run.notes.split("\n")[0]}` : "Notes";
      finish.hidden = !(run.kind === "external" && LIVE_STATUSES.has(run.status));
      archive.textContent = run.archived_at ? "Unarchive" : "Archive";
      remove.textContent = run.deleted_at ? "Restore" : "Delete";
      remove.className = run.deleted_at ? "" : "danger";
    },
  };
}
