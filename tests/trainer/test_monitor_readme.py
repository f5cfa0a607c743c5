"""The Monitor example of docs/monitor.md, executed as written against the real bus."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from monitor_support import events, of_type, points

from sqd.bus import Bus
from sqd.settings import Settings, get_settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "monitor.md"


def example() -> str:
    match = re.search(r"<!-- monitor-example -->\n```python\n(.*?)```", DOC.read_text(), re.S)
    assert match, f"{DOC} lost its <!-- monitor-example --> block"
    return match.group(1)


def test_the_documented_example_runs_and_reports(settings: Settings, bus: Bus,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    code = example()
    added = [line for line in code.splitlines() if re.search(r"# \(\d\)", line)]
    assert len(added) <= 10  # the promise: at most 10 added lines
    for name, value in {"SQD_HOME": str(settings.home), "SQD_REDIS_URL": settings.resolved_redis_url,
                        "SQD_BUS__PREFIX": settings.bus.prefix}.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        exec(compile(code, str(DOC), "exec"), {})
    finally:
        get_settings.cache_clear()
    ingest = events(bus, "ingest")
    assert ingest[0].type == "run_started" and ingest[0].name == "gaussian blob"
    assert of_type(ingest, "run_finished")[0].status == "finished"
    pts = points(ingest)
    assert sorted(pts["angle/G"]) == list(range(200)) and sorted(pts["loss/D"]) == list(range(200))
    assert sorted(pts["angle_epoch/D"]) == [49, 99, 149, 199]
