"""The run lifecycle and the filter language in the dashboard, in a real Chromium against a real server: rename,
tag, note and end a run on its page; archive, delete and restore from the runs table; a filter that narrows the
table; a malformed filter that shows the server's error at its token; the column picker (kept across reloads)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from live_stack import TOKEN, DashboardServer
from playwright.sync_api import expect

pytestmark = pytest.mark.browser


def label(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def make_run(server: DashboardServer, name: str, tag: str, config: dict[str, Any] | None = None,
             fid: float | None = None) -> str:
    r = server.http.post("/runs", json={"name": name, "config": config or {}, "tags": [tag]})
    r.raise_for_status()
    run_id = r.json()["id"]
    if fid is not None:
        server.http.post(f"/runs/{run_id}/metrics", json={"points": [{"key": "eval/fid", "step": 10, "value": fid}]}
                         ).raise_for_status()
    return str(run_id)


def visit_runs(page: Any, server: DashboardServer, expr: str = "") -> None:
    from urllib.parse import quote

    query = f"?filter={quote(expr)}" if expr else ""
    page.goto(f"{server.url}/?token={TOKEN}#/runs{query}")


def rows(page: Any) -> Any:
    return page.locator("table.runs tbody tr")


def test_rename_tag_note_and_finish_on_the_run_page(page: Any, server: DashboardServer) -> None:
    tag = label("ui")
    run_id = make_run(server, label("to-rename"), tag)
    page.goto(f"{server.url}/?token={TOKEN}#/run/{run_id}")
    page.get_by_role("button", name="Rename").click()
    page.get_by_label("run name").fill("renamed in the browser")
    page.get_by_label("run name").press("Enter")
    expect(page.locator(".run-head h1")).to_have_text("renamed in the browser")
    page.get_by_label("add a tag").fill("paper:fig3")
    page.get_by_label("add a tag").press("Enter")
    expect(page.locator(".tag-editor .tag")).to_have_count(2)
    expect(page.locator(".tag-editor")).to_contain_text("paper:fig3")
    page.get_by_label(f"remove tag {tag}").click()
    expect(page.locator(".tag-editor .tag")).to_have_count(1)
    page.locator(".notes-box summary").click()
    page.get_by_label("notes").fill("lr too high; see run 12")
    page.get_by_role("button", name="Save notes").click()
    expect(page.locator(".notes-box summary")).to_have_text("Notes: lr too high; see run 12")
    page.get_by_role("button", name="Mark finished").click()
    expect(page.locator(".title-row .badge").first).to_have_text("finished")
    row = server.run_row(run_id)
    assert (row["name"], row["tags"], row["notes"], row["status"]) == (
        "renamed in the browser", ["paper:fig3"], "lr too high; see run 12", "finished")


def test_archive_delete_and_restore_from_the_table(page: Any, server: DashboardServer) -> None:
    tag = label("bulk")
    first, second = make_run(server, "bulk one", tag), make_run(server, "bulk two", tag)
    visit_runs(page, server, f"tag = {tag}")
    expect(rows(page)).to_have_count(2)
    page.get_by_label("select bulk one").check()
    page.locator('.bulk-actions [data-action="archive"]').click()
    expect(rows(page)).to_have_count(1)
    assert server.run_row(first)["archived_at"] is not None
    page.get_by_label("which runs").select_option("archived")
    expect(page.locator(f'tr[data-run-id="{first}"]')).to_be_visible()
    page.get_by_label("which runs").select_option("active")
    page.get_by_label("select bulk two").check()
    page.locator('.bulk-actions [data-action="delete"]').click()
    expect(rows(page)).to_have_count(0)
    assert server.run_row(second)["deleted_at"] is not None
    page.get_by_label("which runs").select_option("deleted")
    page.get_by_label("select bulk two").check()
    page.locator('.bulk-actions [data-action="restore"]').click()
    expect(rows(page)).to_have_count(0)
    page.get_by_label("which runs").select_option("active")
    expect(page.locator(f'tr[data-run-id="{second}"]')).to_be_visible()
    assert server.run_row(second)["deleted_at"] is None


def test_filter_narrows_the_table_and_a_bad_one_shows_its_error(page: Any, server: DashboardServer) -> None:
    tag = label("filt")
    ids = {name: make_run(server, name, tag, {"lr": lr}, fid) for name, lr, fid in
           (("slow", 1e-4, 30.0), ("fast", 2e-3, 45.0), ("faster", 5e-3, 80.0))}
    visit_runs(page, server, f"tag = {tag}")
    expect(rows(page)).to_have_count(3)
    box = page.get_by_label("filter expression")
    box.fill(f"tag = {tag} and config.lr >= 1e-3 and eval/fid < 50")
    box.press("Enter")
    expect(rows(page)).to_have_count(1)
    expect(page.locator(f'tr[data-run-id="{ids["fast"]}"]')).to_be_visible()
    assert "filter=tag" in page.url  # the filter is in the address, so it can be shared
    box.fill(f"tag = {tag} && eval/fid < 50")
    box.press("Enter")
    error = page.locator("#filter-error")
    expect(error).to_be_visible()
    position = len(f"tag = {tag} ")
    expect(error).to_contain_text(f"expected 'and', 'or' or the end of the filter but found '&&' at position "
                                  f"{position}")
    expect(error.locator("mark")).to_have_text("&&")
    expect(box).to_have_attribute("aria-invalid", "true")
    expect(rows(page)).to_have_count(0)
    box.fill(f"tag = {tag}")
    box.press("Enter")
    expect(rows(page)).to_have_count(3)
    expect(error).to_be_hidden()


def test_column_picker_adds_config_and_metric_columns_and_remembers_them(page: Any, server: DashboardServer) -> None:
    tag = label("cols")
    run_id = make_run(server, "with columns", tag, {"optim": {"lr": 2e-4}, "loss": "hinge"}, fid=33.5)
    visit_runs(page, server, f"tag = {tag}")
    expect(rows(page)).to_have_count(1)
    page.locator(".column-picker summary").click()
    page.locator('.picker-item input[value="config.optim.lr"]').check()
    page.locator('.picker-item input[value="metric:eval/fid"]').check()
    row = page.locator(f'tr[data-run-id="{run_id}"]')
    expect(row.locator('td[data-col="config.optim.lr"]')).to_have_text("2.00e-4")
    expect(row.locator('td[data-col="metric:eval/fid"]')).to_have_text("33.5")
    expect(page.locator("table.runs thead")).to_contain_text("optim.lr")
    page.reload()
    expect(page.locator(f'tr[data-run-id="{run_id}"] td[data-col="metric:eval/fid"]')).to_have_text("33.5")
    assert page.evaluate("JSON.parse(localStorage.getItem('sqd.runs.columns'))") == [
        "config.optim.lr", "metric:eval/fid"]
