"""GPU bench section 'monitor' (see run.py): not written yet."""

from __future__ import annotations

from report import Context, Report


def run(ctx: Context, report: Report) -> None:
    report.note("section monitor: not written yet")
