"""GPU bench section 'zoo' (see run.py): not written yet."""

from __future__ import annotations

from report import Context, Report


def run(ctx: Context, report: Report) -> None:
    report.note("section zoo: not written yet")
