"""Alerts in a real Chromium: a rule made in the run page's form, the server's own turning-point detector firing on
a run that jumps, the alert in the list with its explanation and as a line on every chart, and the "best before
collapse" checkpoint linked from the alerts card."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path
from typing import Any

import pytest
from live_stack import TOKEN, DashboardServer, RunFeed, wait
from playwright.sync_api import expect

from sqd.protocol import CheckpointReady, MetricBatch

pytestmark = [pytest.mark.browser, pytest.mark.slow]
TURNING = 1500  # step of the jump: epoch 15 of 100-step epochs, well past the detector's warm-up


def _stored(server: DashboardServer, run_id: str, n: int) -> bool:
    resp = server.http.get(f"/runs/{run_id}/keys")
    return resp.status_code == 200 and any(k["key"] == "angle/G" and k["points"] >= n for k in resp.json()["data"])


def _checkpoint(server: DashboardServer, run_id: str, step: int) -> None:
    data = f"checkpoint {run_id} {step}".encode()
    key = f"runs/{run_id}/checkpoints/step-{step:09d}.pt"
    server.artifacts.put_bytes(key, data)
    server.publish(CheckpointReady(run_id=run_id, step=step, epoch=step // 100, uri=key,
                                   sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data), profile="none",
                                   generator={"arch": "dcgan", "kwargs": {}, "z_dim": 64}))


def test_rule_form_detector_alert_markers_and_best_checkpoint(page: Any, server: DashboardServer,
                                                              artifact_dir: Path) -> None:
    run = RunFeed(server, f"collapse-{uuid.uuid4().hex[:8]}", name="collapse", preset="demo-turning",
                  turning=TURNING)
    run.start()
    run.steps(0, 1000)
    for step in (500, 1000):
        _checkpoint(server, run.run_id, step)
    wait(lambda: _stored(server, run.run_id, 1000), 30, "the first 1000 steps to be stored")

    page.goto(f"{server.url}/?token={TOKEN}#/run/{run.run_id}")
    page.wait_for_selector("#page[data-ready=true]")
    page.click("#tab-rules")
    rules = page.locator(".rules-panel")
    expect(rules.locator(".rule-item")).to_have_count(1)  # the built-in turning-point rule
    expect(rules.locator(".rule-item").first).to_contain_text("turning point · all runs")

    # a bad condition is reported on its field, then a good one is created
    page.select_option("#rule-kind", "threshold")
    page.fill("#rule-expression", "loss/D is large")
    page.click(".rule-form button[type=submit]")
    expect(page.locator('[data-error-for="expression"]')).to_contain_text("cannot read 'loss/D is large'")
    page.fill("#rule-expression", "loss/D > 5")
    page.click(".rule-form button[type=submit]")
    expect(rules.locator(".rule-item")).to_have_count(2)
    expect(rules.locator(".rule-item").nth(1)).to_contain_text("loss/D > 5 · this run")

    # turning-point actions for this run: keep the last checkpoint before the collapse
    page.select_option("#rule-kind", "turning_point")
    expect(page.locator('[data-field="expression"]')).to_be_hidden()
    page.fill("#rule-name", "collapse: keep the best")
    page.check("#rule-keep")
    page.click(".rule-form button[type=submit]")
    expect(rules.locator(".rule-item")).to_have_count(3)

    # the run goes on and turns: the server's detector raises the alert live
    _checkpoint(server, run.run_id, 1400)
    for first in range(1000, 2000, 250):
        run.steps(first, first + 250)
    item = page.locator(".alert-item", has_text="collapse: keep the best")
    item.wait_for(timeout=60_000)
    text = item.inner_text()
    assert "Turning point at epoch" in text and "jumped to" in text, text
    alerts = server.http.get("/alerts", params={"run_id": run.run_id}).json()["data"]
    (alert,) = [a for a in alerts if a["severity"] == "critical"]
    step = alert["step"]
    assert abs(step - TURNING) <= 100
    page.wait_for_function("""(step) => ['stability', 'quality', 'losses'].every((c) =>
        (document.querySelector(`.plot[data-chart="${c}"]`).layout.shapes || []).some(
            (s) => s.name === 'alert' && s.x0 === step && s.line.dash === 'dash'))""", arg=step)
    for warning in (a for a in alerts if a["severity"] == "warning"):  # the jump before it was corroborated
        page.wait_for_function("""(step) => (document.querySelector('.plot[data-chart="stability"]').layout.shapes
            || []).some((s) => s.name === 'alert' && s.x0 === step && s.line.dash === 'dot')""", arg=warning["step"])

    best = page.locator(".best-before-collapse")
    expect(best).to_contain_text("Best before collapse: checkpoint of step 1,400 (epoch 14)")
    href = best.locator("a").get_attribute("href")
    resp = page.request.get(f"{server.url}{href}")
    assert resp.status == 200 and resp.body() == f"checkpoint {run.run_id} 1400".encode()

    # the user rule fires too, and the run's alert badges count criticals and warnings apart on the runs page
    server.publish(MetricBatch.from_points(run.run_id, [("loss/D", 2000, 9.0, 20, 0.0)]))
    page.locator(".alert-item", has_text="loss/D > 5").wait_for()
    expect(page.locator(".alert-item", has_text="loss/D > 5")).to_contain_text("loss/D = 9 > 5")
    page.screenshot(path=str(artifact_dir / "turning-alert.png"), full_page=True)
    page.goto(f"{server.url}/#/runs")
    alerts = server.http.get("/alerts", params={"run_id": run.run_id}).json()["data"]
    cell = page.locator(f'tr[data-run-id="{run.run_id}"] .col-alerts')
    for severity, glyph in (("critical", "▼"), ("warning", "▽")):
        n = sum(a["severity"] == severity for a in alerts)
        if n:
            expect(cell.locator(f".badge.severity-{severity}")).to_have_text(f"{glyph} {n}")

    # the compare page draws the run's alerts too, each in its severity's style
    page.goto(f"{server.url}/#/compare?ids={run.run_id}")
    page.wait_for_function("""(n) => ((document.querySelector('.plot[data-chart="cmp-angle/D"]') || {}).layout
        || {shapes: []}).shapes.filter((s) => s.name === 'alert').length === n""",
                           arg=sum(a["step"] is not None for a in alerts))
