"""The runs `sqd demo` launches once the stack is healthy: one that stays stable, one that passes a turning point.

They go through the server's REST API (`POST /api/v1/runs` with the stack's token), exactly as a user's launch
would; if that route is not there (an older server), the LaunchRequest goes straight onto the bus.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import httpx

from sqd.bus import CONTROL, Bus
from sqd.protocol import LaunchRequest, new_id
from sqd.stack import Stack, console

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoRun:
    preset: str
    name: str


DEMO_RUNS = (
    DemoRun("demo-stable", "demo: stable NSGAN — angles settle, ~500 modes, no turning point"),
    DemoRun("demo-turning", "demo: lr warming up too far — healthy start, then near epoch 8 the angles jump, "
                            "quality swings and modes collapse"),
)


def run_url(stack: Stack, run_id: str) -> str:
    return f"{stack.base_url}/?token={stack.token}#/run/{run_id}"


def _post(stack: Stack, run: DemoRun) -> str | None:
    """The run id from the REST API, or None when the server has no launch route."""
    response = httpx.post(f"{stack.base_url}/api/v1/runs", json={"preset": run.preset, "name": run.name},
                          headers={"Authorization": f"Bearer {stack.token}"}, timeout=30.0)
    if response.status_code in (404, 405):
        return None
    response.raise_for_status()
    return str(response.json()["id"])


def _publish(stack: Stack, run: DemoRun) -> str:
    url = stack.redis.url if stack.redis is not None else stack.settings.resolved_redis_url
    bus = Bus.connect(stack.settings, url=url)
    try:
        request = LaunchRequest(run_id=new_id(), preset=run.preset, name=run.name)
        bus.publish(CONTROL, [request])
        return request.run_id
    finally:
        bus.close()


def launch_demo_runs(stack: Stack) -> list[str]:
    """Launch every demo run and print where to watch it; returns the run ids."""
    ids = []
    for run in DEMO_RUNS:
        try:
            run_id = _post(stack, run)
        except httpx.HTTPStatusError as exc:
            console.print(f"[red]could not launch {run.preset}: {exc.response.status_code} {exc.response.text}")
            continue
        if run_id is None:
            log.warning("the server has no POST /api/v1/runs; sending %s straight to the agents", run.preset)
            run_id = _publish(stack, run)
        ids.append(run_id)
        console.print(f"  launched [bold]{run.name}[/bold]\n    {run_url(stack, run_id)}")
    return ids
