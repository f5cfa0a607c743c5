"""What the browser benchmarks share: timed page visits read through the Performance API, percentiles, and the
CPU time the browser's processes used (Linux /proc), which a loaded machine distorts less than frame rates."""

from __future__ import annotations

import os
from typing import Any

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def timed_visits(page: Any, urls: list[str], mark: str, probe: str) -> list[dict[str, Any]]:
    """Visit each URL from a blank page, wait for the performance mark the page sets when it has drawn, and
    return what `probe` (a JS function source) reads then, one dict per visit."""
    out = []
    for url in urls:
        page.goto("about:blank")
        page.goto(url)
        page.wait_for_function(f"performance.getEntriesByName('{mark}').length > 0", timeout=120_000)
        out.append(dict(page.evaluate(probe)))
    return out


def percentile(sorted_values: list[float], q: float) -> float:
    """The q-quantile (0 ≤ q ≤ 1) of an already sorted list, nearest rank below."""
    return sorted_values[min(len(sorted_values) - 1, int(q * (len(sorted_values) - 1)))]


def _stat(pid: str) -> tuple[str, int, float]:
    with open(f"/proc/{pid}/stat") as f:
        raw = f.read()
    name = raw[raw.index("(") + 1:raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2:].split()
    return name, int(fields[1]), (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # ppid, user + system


def browser_cpu_s() -> float:
    """CPU seconds used so far by the Chromium processes this process started (any depth below it)."""
    procs: dict[int, tuple[str, int, float]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                procs[int(entry)] = _stat(entry)
            except (OSError, ValueError, IndexError):
                continue  # ended meanwhile
    children: dict[int, list[int]] = {}
    for pid, (_, ppid, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0.0, [os.getpid()]
    while todo:
        for child in children.get(todo.pop(), []):
            todo.append(child)
            if "chrom" in procs[child][0].lower() or "headless" in procs[child][0].lower():
                total += procs[child][2]
    return total
