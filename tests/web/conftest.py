"""Browser-test fixtures: one real SQD server per module (uvicorn thread, SQLite, the pre-started Redis under a
private prefix), one headless Chromium per session, a fresh browser context (empty localStorage) per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from live_stack import CHROMIUM, CHROMIUM_ARGS, DashboardServer, serve
from playwright.sync_api import expect

# Generous: the shared 2-core machine can stall any process for seconds (load average above 10 is common);
# a live update normally reaches the page in well under a second.
LIVE_TIMEOUT_MS = 45_000
expect.set_options(timeout=LIVE_TIMEOUT_MS)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, external_redis_url: str) -> Iterator[DashboardServer]:
    with serve(tmp_path_factory.mktemp("sqd-home"), external_redis_url) as srv:
        yield srv


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: install Debian's `chromium` package")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, request: pytest.FixtureRequest, artifact_dir: Path) -> Iterator[object]:  # type: ignore[no-untyped-def]
    """A page in a fresh context; JavaScript errors fail the test, and a screenshot is kept when it fails."""
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.set_default_timeout(LIVE_TIMEOUT_MS)
    yield pg
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    if failed:
        pg.screenshot(path=str(artifact_dir / f"FAILED-{request.node.name}.png"), full_page=True)
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
