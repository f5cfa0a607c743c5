"""Sweeps in a real Chromium against a real server: a sweep launched from the form runs on a real trainer agent
and its cells fill live; a sweep's cells, seed chips, failure, results table (sorting) and parallel coordinates
follow simulated runs over SSE; bad input stays on the form; the runs table shows and filters by sweep; cancel."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from live_stack import TOKEN, DashboardServer, RunFeed, trainer_agent
from playwright.sync_api import expect

from sqd.protocol import RunFinished

pytestmark = pytest.mark.browser

# colourful (non-grey) pixels in one panel of a cell's canvas: the seeds' curves, not the labels or the frame
INK = """([index, panel]) => {
  const c = document.querySelector(`.sweep-cell[data-cell="${index}"] canvas`);
  if (!c || !c.width) return -1;
  const h = c.height / 3;
  const { data } = c.getContext('2d').getImageData(0, panel * h, c.width, h);
  let n = 0;
  for (let i = 0; i < data.length; i += 4) {
    const [r, g, b] = [data[i], data[i + 1], data[i + 2]];
    if (Math.max(r, g, b) - Math.min(r, g, b) > 60) n += 1;
  }
  return n; }"""


def visit(page: Any, server: DashboardServer, route: str) -> None:
    page.goto(f"{server.url}/?token={TOKEN}#{route}")


def ink(page: Any, cell: int, panel: int) -> int:
    return int(page.evaluate(INK, [cell, panel]))


def create(server: DashboardServer, **body: Any) -> dict[str, Any]:
    resp = server.http.post("/sweeps", json=body)
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def table_order(page: Any) -> list[str]:
    return list(page.eval_on_selector_all(".sweep-results tbody tr", "rows => rows.map((r) => r.dataset.runId)"))


def test_sweep_from_the_form_runs_on_a_real_agent(page: Any, server: DashboardServer, artifact_dir: Path) -> None:
    """form → POST /sweeps → the capped queue → `sqd agent` → `sqd train` → Monitor → ingest → SSE → the cells."""
    with trainer_agent(server, "sweep-ui-agent"):
        visit(page, server, "/launch?mode=sweep")
        page.locator('.preset-checks input[value="sqd-nsgan-digits"]').check()
        page.locator('.preset-checks input[value="sqd-hinge-gp-digits"]').check()
        page.fill("#sweep-steps", "40")
        page.fill("#sweep-cap", "1")
        page.fill("#sweep-name", "from the form")
        expect(page.locator(".run-count")).to_have_text("2 configurations × 1 seed = 2 runs")
        page.click("button[type=submit]")
        page.wait_for_url("**/#/sweep/*")
        sweep_id = page.url.rsplit("/", 1)[1]
        sweep = server.http.get(f"/sweeps/{sweep_id}").json()
        assert (sweep["name"], sweep["max_concurrent"], sweep["dimensions"]) == ("from the form", 1,
                                                                                 ["loss.name", "reg.names"])
        expect(page.locator(".sweep-cell")).to_have_count(2)
        expect(page.locator('.sweep-cell[data-cell="0"] .cell-title')).to_have_text("nsgan · none")
        # the cap is 1: the second run waits (never sent to the agent) until the first has ended
        assert [r["released"] for r in sweep["runs"]] == [True, False]
        page.wait_for_function(f"({INK})([0, 0]) > 50", timeout=180_000)  # the first run's angles, live
        expect(page.locator(".sweep-cell .seed-chip.status-finished")).to_have_count(2, timeout=240_000)
        # the cell is redrawn on the next animation frame after the points' SSE batch: waited for, not assumed
        page.wait_for_function(f"({INK})([1, 0]) > 50", timeout=60_000)
        expect(page.locator(".sweep-status .badge")).to_have_text("finished")
        rows = server.http.get(f"/sweeps/{sweep_id}/results").json()["data"]
        assert [r["last_step"] for r in rows] == [39, 39]
        first, second = (server.http.get(f"/runs/{r['run_id']}").json() for r in rows)
        assert second["started_at"] >= first["finished_at"] - 1.0  # one at a time (clocks of one machine)
        page.screenshot(path=str(artifact_dir / "sweep-real-agent.png"), full_page=True)


def test_cells_fill_live_and_the_table_sorts(page: Any, server: DashboardServer, artifact_dir: Path) -> None:
    sweep = create(server, preset="sqd-nsgan-digits", grid={"loss.name": ["nsgan", "hinge", "wgan"]}, seeds=2,
                   steps=600, name="live cells")
    runs = sweep["runs"]
    visit(page, server, f"/sweep/{sweep['id']}")
    expect(page.locator(".sweep-cell")).to_have_count(3)
    page.wait_for_selector("#page[data-ready=true]")
    assert ink(page, 0, 0) == 0 and ink(page, 2, 1) == 0  # queued: nothing drawn yet
    expect(page.locator('.sweep-cell[data-cell="0"] .seed-chip').first).to_have_text("○ s0")

    feeds = [RunFeed(server, r["id"], name=r["name"], turning=300 if r["params"]["loss.name"] == "wgan" else None)
             for r in runs]
    for i, f in enumerate(feeds):
        f.start()
        f.steps(0, 200)
        f.evaluate(100, 0.5 + 0.05 * i, 5.0 + 0.1 * i, 80.0 - i)
    page.wait_for_function(f"[0, 1, 2].every((c) => ({INK})([c, 0]) > 50)")  # every cell's S panel
    page.wait_for_function(f"[0, 1, 2].every((c) => ({INK})([c, 1]) > 5 && ({INK})([c, 2]) > 5)")  # Q and D
    expect(page.locator(".sweep-cell .seed-chip.status-running")).to_have_count(6)
    before = ink(page, 2, 0)
    for i, f in enumerate(feeds):
        f.steps(200, 500)
        f.evaluate(400, 0.9 - 0.08 * i, 6.0 - 0.3 * i, 40.0 + 5 * i)
    feeds[4].alert(320, "angle/G jumped above its trend")
    page.wait_for_function(f"({INK})([2, 0]) > {before + 50}")  # the wgan cell grew (and has its alert marker)
    server.publish(RunFinished(run_id=runs[5]["id"], status="failed", error="ValueError: the critic diverged"))
    expect(page.locator('.sweep-cell[data-cell="2"] .cell-error')).to_contain_text("seed 1 failed: ValueError")
    expect(page.locator('.sweep-cell[data-cell="2"]')).to_have_attribute("data-status", "failed")

    # the table: live values, sorting by Q final both ways, the failure under its status
    expect(page.locator(f'.sweep-results tr[data-run-id="{runs[0]["id"]}"] .col-final_quality')).to_have_text("0.9")
    expect(page.locator(f'.sweep-results tr[data-run-id="{runs[4]["id"]}"] .col-turning_epoch')).to_have_text("3")
    expect(page.locator(f'.sweep-results tr[data-run-id="{runs[5]["id"]}"] .col-status')).to_contain_text(
        "the critic diverged")
    page.click('.sweep-results th[data-col="final_quality"] button')
    by_q = [r["id"] for r in runs]  # Q final falls with the feed index
    assert table_order(page) == by_q
    expect(page.locator('.sweep-results th[data-col="final_quality"]')).to_have_attribute("aria-sort", "descending")
    page.click('.sweep-results th[data-col="final_quality"] button')
    assert table_order(page) == by_q[::-1]
    page.click('.sweep-results th[data-col="best_fid"] button')
    assert table_order(page)[0] == runs[5]["id"]  # FID best is the largest first on a first click (descending)
    assert "sort=best_fid" in page.url

    # parallel coordinates: one axis per dimension (loss.name), the seed, the metric (with software WebGL, as
    # here, it is redrawn by Refresh rather than on every change)
    section = page.locator(".sweep-section", has_text="Parallel coordinates")
    section.scroll_into_view_if_needed()
    section.locator("button", has_text="Refresh").click()
    page.wait_for_function("""() => { const p = document.querySelector('.parcoords');
        return p && p.data && p.data[0] && p.data[0].dimensions.length === 3; }""", timeout=120_000)
    labels = page.evaluate("document.querySelector('.parcoords').data[0].dimensions.map((d) => d.label)")
    assert labels == ["loss.name", "seed", "final Q"]
    csv = page.locator("a.button", has_text="CSV").get_attribute("href")
    assert csv == f"/api/v1/sweeps/{sweep['id']}/results?format=csv&access_token={TOKEN}"
    page.screenshot(path=str(artifact_dir / "sweep-live.png"), full_page=True)

    # cancel the whole sweep from the page
    page.click("text=Cancel sweep")
    expect(page.locator(".sweep-status .badge")).to_have_text("cancelling")
    cancels = {e["run_id"] for e in control_requests(server) if e["type"] == "cancel"}
    assert {r["id"] for r in runs[:5]} <= cancels


def control_requests(server: DashboardServer) -> list[dict[str, Any]]:
    from sqd.bus import CONTROL
    from sqd.wire import decode

    return [decode(f).model_dump() for _, f in server.bus.client.xrange(server.bus.key(CONTROL))]


def test_bad_values_stay_on_the_form(page: Any, server: DashboardServer) -> None:
    before = server.http.get("/sweeps").json()["count"]
    visit(page, server, "/launch?mode=sweep")
    page.locator('.preset-checks input[value="sqd-lsgan-digits"]').check()
    page.locator(".grid-row .ov-key").fill("loss.name")
    page.locator(".grid-row .ov-value").fill("nsgan, minimax")
    page.click("text=+ Add a key to sweep")
    page.locator(".grid-row .ov-key").nth(1).fill("optim.lr_g")
    page.locator(".grid-row .ov-value").nth(1).fill("1e-3, [0.1, 0.2]")
    page.fill("#sweep-seeds", "3")
    expect(page.locator(".run-count")).to_have_text("4 configurations × 3 seeds = 12 runs")
    page.click("button[type=submit]")
    expect(page.locator(".grid-row").nth(0).locator(".field-error")).to_contain_text(
        "grid loss.name: value 'minimax' is invalid")
    expect(page.locator(".grid-row").nth(1).locator(".field-error")).to_contain_text("optim.lr_g")
    expect(page.locator(".grid-row.invalid")).to_have_count(2)
    assert "/launch" in page.url and server.http.get("/sweeps").json()["count"] == before

    # more than 200 runs: the form asks for an explicit confirmation, and so does the server without it
    page.locator(".grid-row .ov-value").nth(0).fill("nsgan, lsgan, hinge, wgan")
    page.locator(".grid-row .ov-value").nth(1).fill(", ".join(f"{i}e-4" for i in range(1, 18)))
    expect(page.locator(".run-count")).to_contain_text("= 204 runs — more than 200: confirm below")
    expect(page.locator("label.confirm")).to_be_visible()
    page.click("button[type=submit]")
    expect(page.locator(".field-error", has_text="204 runs")).to_be_visible()
    assert server.http.get("/sweeps").json()["count"] == before

    # a built-in sweep fills the form
    page.click("text=SQD grid (seed 003)")
    expect(page.locator(".run-count")).to_have_text("8 configurations × 3 seeds = 24 runs")
    assert page.locator('.preset-checks input[value="sqd-wgan-gp-digits"]').is_checked()


def test_runs_table_groups_and_filters_by_sweep(page: Any, server: DashboardServer) -> None:
    sweep = create(server, presets=["sqd-nsgan-digits", "sqd-nsgan-gp-digits"], name="table sweep")
    visit(page, server, f"/runs?sweep={sweep['id']}")
    rows = page.locator("table.runs tbody tr")
    expect(rows).to_have_count(2)
    expect(page.locator(".filters .chip strong")).to_have_text("table sweep")
    expect(rows.first.locator(".col-sweep a")).to_have_text("table sweep")
    rows.first.locator(".col-sweep a").click()
    page.wait_for_url(f"**/#/sweep/{sweep['id']}")
    expect(page.locator(".sweep-cell")).to_have_count(2)
    visit(page, server, "/sweeps")
    expect(page.locator(f'tr[data-sweep-id="{sweep["id"]}"]')).to_contain_text("table sweep")
