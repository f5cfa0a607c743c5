"""The dashboard in a real Chromium against a real server: runs arrive, curves grow over SSE, alerts show on the
chart and in the list, runs compare, the sample slider moves, zoom re-queries at full resolution, the launch form
launches and reports bad overrides, and a browser without a token is read-only. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import json
import math
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
from live_stack import TOKEN, DashboardServer, RunFeed, serve, trainer_agent, wait
from playwright.sync_api import expect

from sqd.protocol import EvaluationResult, MetricBatch, RunStarted

pytestmark = pytest.mark.browser


def new_id(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}"


def visit(page: Any, server: DashboardServer, route: str, signed_in: bool = True) -> None:
    query = f"?token={TOKEN}" if signed_in else ""
    page.goto(f"{server.url}/{query}#{route}")


def trace_points(page: Any, chart: str, name: str) -> int:
    return int(page.evaluate("""([chart, name]) => {
        const plot = document.querySelector(`.plot[data-chart="${chart}"]`);
        const trace = plot && plot.data ? plot.data.find((t) => t.name === name) : null;
        return trace ? trace.x.length : -1; }""", [chart, name]))


def stored(server: DashboardServer, run_id: str, key: str, n: int) -> bool:
    resp = server.http.get(f"/runs/{run_id}/keys")
    if resp.status_code == 404:
        return False  # its first events are not ingested yet
    keys = resp.raise_for_status().json()["data"]
    return any(k["key"] == key and k["points"] >= n for k in keys)


def seeded_run(server: DashboardServer, label: str, steps: int = 600, evals: int = 3, **feed: Any) -> RunFeed:
    """A run with `steps` steps of angles/losses and `evals` evaluations, stored before the page opens."""
    run = RunFeed(server, new_id(label), name=label, preset=feed.pop("preset", "sqd-nsgan-digits"), **feed)
    run.start()
    run.steps(0, steps)
    for i in range(1, evals + 1):
        s = i * steps // evals
        run.evaluate(s, 0.8 + 0.03 * i, 5.0 + 0.4 * i, 90 - 10 * i)
    wait(lambda: stored(server, run.run_id, "angle/G", steps) and stored(server, run.run_id, "eval/quality", evals),
         what=f"run {run.run_id} to be stored")
    return run


def test_runs_page_updates_live(page: Any, server: DashboardServer, artifact_dir: Path) -> None:
    run = seeded_run(server, "runs-live")
    visit(page, server, "/runs")
    row = page.locator(f'tr[data-run-id="{run.run_id}"]')
    row.wait_for()
    expect(row.locator(".col-status")).to_have_text("running")
    expect(row.locator(".col-q")).to_have_text("0.89")  # the summaries answer after the rows are drawn
    assert "Signed in" in page.locator("#auth").inner_text()
    assert "token=" not in page.url  # the token left the address bar for localStorage
    assert page.evaluate("localStorage.getItem('sqd.token')") == TOKEN

    # a run that starts while the page is open appears; status, Q and alerts follow without a reload
    late = RunFeed(server, new_id("runs-late"), name="runs-late")
    late.start()
    page.locator(f'tr[data-run-id="{late.run_id}"]').wait_for()
    run.evaluate(700, 0.95, 6.5, 40.0)
    run.alert(650, "angle/G jumped above its trend")
    run.finish(step=700)
    page.wait_for_function("""(id) => {
        const row = document.querySelector(`tr[data-run-id="${id}"]`);
        return row && row.dataset.status === 'finished' && row.querySelector('.col-q').textContent === '0.95'
            && row.querySelector('.col-alerts').textContent.includes('1'); }""", arg=run.run_id)

    # filter by text and status (kept in the URL)
    page.fill("input[type=search]", "runs-late")
    page.wait_for_function("document.querySelectorAll('tbody tr').length === 1")
    assert "q=runs-late" in page.url
    page.fill("input[type=search]", "")
    page.check("label.chip.status-finished input")
    page.wait_for_function("""(id) => [...document.querySelectorAll('tbody tr')].every(
        (r) => r.dataset.status === 'finished') && !!document.querySelector(`tr[data-run-id="${id}"]`)""",
                           arg=run.run_id)
    page.screenshot(path=str(artifact_dir / "runs-page.png"))


def test_run_page_curves_grow_and_alert_appears(page: Any, server: DashboardServer, artifact_dir: Path) -> None:
    run = seeded_run(server, "nsgan-digits", steps=400, evals=4, turning=700)
    visit(page, server, f"/run/{run.run_id}")
    page.wait_for_selector("#page[data-ready=true]")
    before = trace_points(page, "stability", "G per step")
    assert before > 0
    # the run goes on while we watch; past its turning point (700) Q oscillates and D falls
    later_evals = {600: (0.93, 6.8, 48.0), 800: (0.71, 5.9, 65.0), 1000: (0.86, 4.7, 88.0)}
    for first in range(400, 1000, 200):
        run.steps(first, first + 200)
        run.evaluate(first + 200, *later_evals[first + 200])
        page.wait_for_function("""([n]) => {
            const t = document.querySelector('.plot[data-chart="stability"]').data.find((t) => t.name === 'G per step');
            return t.x[t.x.length - 1] >= n; }""", arg=[first + 199])
    assert trace_points(page, "stability", "G per step") > before
    page.wait_for_function("""() => document.querySelector('.plot[data-chart="quality"]').data.find(
        (t) => t.name === 'Q').x.length === 7""")
    assert "1,000" in page.locator(".run-step").inner_text() or "999" in page.locator(".run-step").inner_text()

    # a NaN loss is shown as a marker, not dropped
    server.publish(MetricBatch.from_points(run.run_id, [("loss/D", 1000, math.nan, 10, 0.0)]))
    page.wait_for_function("""() => document.querySelector('.plot[data-chart="losses"]').data.some(
        (t) => t.name === 'NaN / ±inf' && t.hovertext.some((h) => h.includes('NaN at step 1000')))""")

    # a turning-point alert (the server's own detector may raise one for this run too): in the list with its
    # explanation, and as a line on every chart
    run.alert(700, "angle/G rose 11.5× above its trend at step 700; Q oscillates and D fell by 0.6 nats")
    item = page.locator(".alert-item", has_text="11.5× above its trend")
    item.wait_for()
    assert "Turning point" in item.inner_text() and "step 700" in item.inner_text()
    page.wait_for_function("""() => ['stability', 'quality', 'losses'].every((c) =>
        (document.querySelector(`.plot[data-chart="${c}"]`).layout.shapes || []).some(
            (s) => s.name === 'alert' && s.x0 === 700))""")

    # the D chart draws its ln m ceiling (stacked digits: m = 1000)
    ceiling = page.evaluate("""() => document.querySelector('.plot[data-chart="diversity"]').layout.shapes.find(
        (s) => s.name === 'ceiling').y0""")
    assert abs(ceiling - math.log(1000)) < 1e-9
    page.screenshot(path=str(artifact_dir / "run-page.png"), full_page=True)
    page.evaluate("window.scrollTo(0, 0)")
    page.mouse.move(0, 0)
    page.screenshot(path=str(artifact_dir / "dashboard.png"))  # the README's picture (docs/img/dashboard.png)


def test_zoom_requeries_full_resolution_and_epoch_axis(page: Any, server: DashboardServer) -> None:
    run = seeded_run(server, "long-run", steps=6000, evals=1, epoch_len=1000)
    visit(page, server, f"/run/{run.run_id}")
    page.wait_for_selector("#page[data-ready=true]")
    first = page.evaluate("""() => document.querySelector('.plot[data-chart="stability"]').data.find(
        (t) => t.name === 'G per step').x.length""")
    assert first < 6000  # downsampled to about the chart's width
    page.evaluate("""() => Plotly.relayout(document.querySelector('.plot[data-chart="stability"]'),
        {'xaxis.range[0]': 2000, 'xaxis.range[1]': 2300})""")
    page.wait_for_function("document.querySelector('.window-note').textContent.includes('full resolution')")
    xs = page.evaluate("""() => document.querySelector('.plot[data-chart="losses"]').data.find(
        (t) => t.name === 'G').x""")
    assert xs == list(range(2000, 2301))  # every step of the window, on every chart
    page.keyboard.press("0")  # reset zoom
    page.wait_for_function("document.querySelector('.window-note').textContent === ''")

    page.keyboard.press("e")  # epoch axis: step 5999 ends epoch 5, so the last point sits at 6.0
    page.wait_for_function("""() => { const plot = document.querySelector('.plot[data-chart="stability"]');
        const t = plot.data.find((t) => t.name === 'G per step');
        return plot.layout.xaxis.title.text === 'epoch' && Math.abs(t.x[t.x.length - 1] - 6) < 1e-6; }""")
    assert page.get_by_role("button", name="Epoch").get_attribute("aria-pressed") == "true"


def test_sample_slider_moves_over_checkpoints(page: Any, server: DashboardServer, artifact_dir: Path) -> None:
    run = seeded_run(server, "samples", steps=400, evals=4)
    visit(page, server, f"/run/{run.run_id}")
    page.get_by_role("tab", name="Samples").click()
    slider = page.locator(".sample-slider")
    slider.wait_for()
    image = page.locator("img.sample-grid")
    wait(lambda: image.get_attribute("data-step") == "400", what="the newest grid")
    page.wait_for_function("document.querySelector('img.sample-grid').naturalWidth > 0")
    slider.focus()
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")
    assert image.get_attribute("data-step") == "200"
    assert "step 200 · checkpoint 2 of 4" in page.locator(".sample-label").inner_text()
    page.wait_for_function("document.querySelector('img.sample-grid').complete")
    assert page.evaluate("document.querySelector('img.sample-grid').naturalWidth") == 64
    page.locator(".samples-panel").screenshot(path=str(artifact_dir / "samples.png"))
    # a new checkpoint arrives: the slider grows but stays where the user put it
    run.evaluate(500, 0.9, 6.0, 50.0)
    page.wait_for_function("document.querySelector('.sample-slider').max === '4'")
    assert image.get_attribute("data-step") == "200"
    # a checkpoint the worker skipped is backfilled: its row turns ok in place, its grid slots in before the shown one
    server.publish(EvaluationResult(run_id=run.run_id, checkpoint_step=150, epoch=0, status="skipped",
                                    error="superseded by checkpoint step 200"))
    page.get_by_role("tab", name="Evaluations").click()
    expect(page.locator("table.evaluations tbody tr")).to_have_count(6)
    expect(page.locator("table.evaluations tr.eval-skipped")).to_have_count(1)
    run.evaluate(150, 0.85, 5.9, 55.0)
    expect(page.locator("table.evaluations tr.eval-skipped")).to_have_count(0)
    expect(page.locator("table.evaluations tbody tr")).to_have_count(6)
    page.get_by_role("tab", name="Samples").click()
    page.wait_for_function("document.querySelector('.sample-slider').max === '5'")
    assert image.get_attribute("data-step") == "200"
    assert "step 200 · checkpoint 3 of 6" in page.locator(".sample-label").inner_text()
    page.locator('.plot[data-chart="quality"]').scroll_into_view_if_needed()  # charts out of view are not redrawn
    page.wait_for_function("""() => { const x = document.querySelector('.plot[data-chart="quality"]').data.find(
        (t) => t.name === 'Q').x; return x.includes(150) && x.every((v, i) => i === 0 || x[i - 1] < v); }""")


def test_compare_two_runs(page: Any, server: DashboardServer, artifact_dir: Path) -> None:
    a = seeded_run(server, "cmp-nsgan", preset="sqd-nsgan-digits", turning=300)
    b = seeded_run(server, "cmp-nsgan-gp", preset="sqd-nsgan-gp-digits")
    visit(page, server, "/runs")
    for run in (a, b):
        page.locator(f'tr[data-run-id="{run.run_id}"] td.sel input').check()
    page.keyboard.press("c")
    page.wait_for_selector("#page[data-ready=true]")
    assert f"ids={a.run_id},{b.run_id}" in page.url
    traces = page.evaluate("""() => document.querySelector('.plot[data-chart="cmp-angle/G"]').data
        .filter((t) => t.name).map((t) => [t.name, t.line.color, t.x.length])""")
    assert [t[0] for t in traces] == ["cmp-nsgan", "cmp-nsgan-gp"]
    assert traces[0][1] != traces[1][1] and all(t[2] > 0 for t in traces)
    chips = page.evaluate("""() => [...document.querySelectorAll('.run-chip')].map(
        (c) => c.style.getPropertyValue('--run-color'))""")
    assert chips == [traces[0][1], traces[1][1]]  # the legend colour is the run's chip colour
    # both keep their colours live: new points for b extend only b's trace
    b.steps(600, 800)
    page.wait_for_function("""(n) => document.querySelector('.plot[data-chart="cmp-angle/G"]').data
        .find((t) => t.name === 'cmp-nsgan-gp').x.slice(-1)[0] >= n""", arg=799)
    page.screenshot(path=str(artifact_dir / "compare.png"), full_page=True)

    # epoch axis: each run by its own epochs (100 steps each here): a's step 599 ends epoch 5, b's 799 epoch 7
    page.keyboard.press("e")
    page.wait_for_function("""() => { const plot = document.querySelector('.plot[data-chart="cmp-angle/G"]');
        const last = (n) => plot.data.find((t) => t.name === n).x.slice(-1)[0];
        return plot.layout.xaxis.title.text === 'epoch' && Math.abs(last('cmp-nsgan') - 6) < 1e-6
            && Math.abs(last('cmp-nsgan-gp') - 8) < 1e-6; }""")
    # a zoom in epochs becomes each run's own step window, re-queried at full resolution
    page.evaluate("""() => Plotly.relayout(document.querySelector('.plot[data-chart="cmp-angle/G"]'),
        {'xaxis.range[0]': 2, 'xaxis.range[1]': 4})""")
    page.wait_for_function("""() => document.querySelector('.plot[data-chart="cmp-angle/G"]').data
        .filter((t) => t.name).every((t) => t.x.length === 201)""")
    xs = page.evaluate("""() => document.querySelector('.plot[data-chart="cmp-angle/G"]').data
        .find((t) => t.name === 'cmp-nsgan').x""")
    assert abs(xs[0] - 2) < 1e-6 and abs(xs[-1] - 4) < 1e-6  # steps 199..399


def control_requests(server: DashboardServer) -> list[dict[str, Any]]:
    client = redis.Redis.from_url(server.settings.resolved_redis_url)
    try:
        entries = client.xrange(server.bus.key("control"))
    finally:
        client.close()
    from sqd.wire import decode

    return [json.loads(decode(fields).model_dump_json()) for _id, fields in entries]


def test_launch_from_the_form_and_watch_it_start(page: Any, server: DashboardServer, artifact_dir: Path) -> None:
    visit(page, server, "/launch")
    select = page.locator("select#preset")
    select.wait_for()
    groups = page.eval_on_selector_all("select#preset optgroup", "gs => gs.map((g) => g.label)")
    assert any("R3GAN" in g for g in groups) and any("SQD" in g for g in groups)
    select.select_option("sqd-hinge-digits")
    described = {p["name"]: p["description"] for p in server.http.get("/presets").json()}
    assert described["sqd-hinge-digits"] in page.locator("#preset-help").inner_text()
    page.fill("#run-name", "launched-from-ui")
    page.fill(".ov-key", "train.steps")
    page.fill(".ov-value", "40")
    page.click("button[type=submit]")
    page.wait_for_url("**/#/run/*")
    run_id = page.url.rsplit("/", 1)[1]
    page.wait_for_selector(".run-head .badge.status-queued")
    launch = [r for r in control_requests(server) if r["type"] == "launch" and r["run_id"] == run_id]
    assert launch and launch[0]["preset"] == "sqd-hinge-digits" and launch[0]["overrides"] == {"train.steps": "40"}

    # the agent starts it: the page follows the status and draws the first points
    feed = RunFeed(server, run_id, name="launched-from-ui", preset="sqd-hinge-digits")
    feed.start()
    page.wait_for_selector(".run-head .badge.status-running")
    feed.steps(0, 40)
    page.wait_for_function("""() => document.querySelector('.plot[data-chart="stability"]').data.find(
        (t) => t.name === 'G per step').x.length === 40""")
    page.screenshot(path=str(artifact_dir / "launched-run.png"))

    page.click("text=Cancel run")
    page.wait_for_selector(".run-head .badge.status-cancelling")
    assert any(r["type"] == "cancel" and r["run_id"] == run_id for r in control_requests(server))


def test_bad_override_shows_its_error(page: Any, server: DashboardServer, artifact_dir: Path) -> None:
    visit(page, server, "/launch")
    page.locator("select#preset").select_option("demo-stable")
    page.fill(".ov-key", "train.steps")
    page.fill(".ov-value", "30")
    page.click("text=+ Add override")
    page.locator(".ov-key").nth(1).fill("optim.lrg")
    page.locator(".ov-value").nth(1).fill("1e-3")
    page.click("button[type=submit]")
    rows = page.locator(".override-row")
    error = rows.nth(1).locator(".field-error")
    expect(error).to_contain_text("did you mean 'optim.lr_g'")  # the 422 lands on the row it names
    assert "invalid" in (rows.nth(1).get_attribute("class") or "")
    assert rows.nth(0).locator(".field-error").inner_text() == ""
    page.screenshot(path=str(artifact_dir / "launch-error.png"))

    page.locator(".ov-key").nth(1).fill("optim.lr_g")
    page.locator(".ov-value").nth(1).fill("fast")
    page.click("button[type=submit]")
    expect(error).to_contain_text("optim.lr_g")
    expect(error).to_contain_text("fast")
    assert page.url.endswith("#/launch")  # nothing launched
    assert not [r for r in control_requests(server) if r["type"] == "launch" and r["overrides"].get("optim.lr_g")]


def test_without_a_token_the_dashboard_is_read_only(page: Any, server: DashboardServer) -> None:
    run = seeded_run(server, "read-only", steps=100, evals=1)
    visit(page, server, f"/run/{run.run_id}", signed_in=False)
    page.wait_for_selector("#page[data-ready=true]")
    assert "Read-only" in page.locator("#auth").inner_text()  # reads are open on localhost
    page.click("text=Cancel run")
    banner = page.locator("#banner .banner")
    banner.wait_for()
    assert "sqd up" in banner.inner_text() and "token" in banner.inner_text()
    assert server.run_row(run.run_id)["status"] == "running"
    # signing in with the dialog makes writes work
    banner.get_by_role("button", name="Sign in").click()
    page.fill("#signin-token", TOKEN)
    page.click("#signin button[value=ok]")
    page.wait_for_function("document.querySelector('#auth').textContent.includes('Signed in')")
    page.click("text=Cancel run")
    wait(lambda: server.run_row(run.run_id)["status"] == "cancelled", what="the cancel")


def test_closed_reads_ask_to_sign_in(page: Any, tmp_path_factory: pytest.TempPathFactory,
                                     external_redis_url: str) -> None:
    with serve(tmp_path_factory.mktemp("closed-home"), external_redis_url, open_reads=False) as closed:
        visit(page, closed, "/runs", signed_in=False)
        error = page.locator(".state.error")
        error.wait_for()
        assert "needs a token for reads" in error.inner_text()
        visit(page, closed, "/runs")  # the URL `sqd up` prints
        page.wait_for_selector("text=No runs yet.")


@pytest.mark.slow
def test_launch_runs_on_a_real_trainer_agent(page: Any, server: DashboardServer, artifact_dir: Path) -> None:
    """The whole path: form → POST /runs → LaunchRequest → `sqd agent` → `sqd train` subprocess → Monitor →
    ingest → SSE → the run page's curves, status and log."""
    with trainer_agent(server, "web-test-agent"):
        visit(page, server, "/launch")
        page.locator("select#preset").select_option("demo-stable")
        page.fill(".ov-key", "train.steps")
        page.fill(".ov-value", "40")
        page.click("button[type=submit]")
        page.wait_for_url("**/#/run/*")
        # torch import, data, model; on a quiet machine the 40 steps then take about a second, so the page may
        # already show the end when it looks
        page.wait_for_selector(".run-head .badge.status-running, .run-head .badge.status-finished", timeout=120_000)
        page.wait_for_function("""() => { const t = document.querySelector('.plot[data-chart="losses"]').data
            .find((t) => t.name === 'G'); return t && t.x.length >= 10; }""", timeout=120_000)
        page.wait_for_selector(".run-head .badge.status-finished", timeout=120_000)
        page.get_by_role("tab", name="Logs").click()
        for _ in range(30):  # the agent may write the last lines just after the run ends
            if "step" in page.locator(".logs-panel").inner_text():
                break
            page.wait_for_timeout(1000)
            page.locator(".logs-panel button", has_text="Refresh").click()
        expect(page.locator("pre.log")).to_contain_text("step")
        page.screenshot(path=str(artifact_dir / "real-agent-run.png"), full_page=True)


def test_runs_page_shows_more_than_its_first_page(page: Any, server: DashboardServer) -> None:
    ids = [new_id(f"bulk-{i:03d}") for i in range(230)]
    server.publish(*(RunStarted(run_id=i, name=f"bulk {i}", host="test-host") for i in ids))
    visit(page, server, "/runs?q=bulk")
    page.wait_for_function("document.querySelectorAll('table.runs tbody tr').length === 200")
    assert "230 runs (newest 200 shown)" in page.locator(".page-head").inner_text()
    page.get_by_role("button", name="Show 200 more").click()
    page.wait_for_function("document.querySelectorAll('table.runs tbody tr').length === 230")
    assert page.get_by_role("button", name="Show 200 more").is_hidden()
    assert "(newest" not in page.locator(".page-head").inner_text()


def test_system_tab_shows_the_sys_series_of_a_run(page: Any, server: DashboardServer) -> None:
    run = seeded_run(server, "system-metrics", steps=200, evals=1)
    sys_points = [(f"sys/gpu{g}/util", s, 40.0 + g + s / 100, None, 0.0) for g in (0, 1) for s in range(0, 200, 20)]
    sys_points += [(key, s, value + s / 10, None, 0.0) for s in range(0, 200, 20)
                   for key, value in (("sys/cpu", 95.0), ("sys/rss", 1.5), ("sys/step_time", 12.0),
                                      ("sys/gpu0/mem_used", 20.0))]
    server.publish(MetricBatch.from_points(run.run_id, sys_points))
    wait(lambda: stored(server, run.run_id, "sys/step_time", 10), what="the sys/ points to be stored")
    visit(page, server, f"/run/{run.run_id}")
    page.wait_for_selector("#page[data-ready=true]")
    page.get_by_role("tab", name="System").click()
    page.wait_for_selector(".system-panel[data-ready=true]")
    util = page.evaluate("""() => document.querySelector('.plot[data-chart="sys-gpu-util"]').data
        .filter((t) => t.name.startsWith('GPU')).map((t) => [t.name, t.x.length])""")
    assert util == [["GPU 0", 10], ["GPU 1", 10]]  # one trace per GPU
    titles = page.locator(".system-panel .chart-title").all_inner_texts()
    assert titles == ["GPU utilisation (%)", "GPU memory used (GiB)", "Process CPU (% of one core)",
                      "Process memory, RSS (GiB)", "Step time (ms)"]  # only what the run has
    assert "sys/cpu" not in page.locator(".more-series summary").inner_text()  # not among "More series"
    assert page.locator('.more-series .plot[data-chart="other-sys/cpu"]').count() == 0
