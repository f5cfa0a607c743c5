"""What the browser benchmarks share: timed page visits read through the Performance API, and percentiles."""

from __future__ import annotations

from typing import Any


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
