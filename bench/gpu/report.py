"""The GPU bench's report: rows of (section, figure, value, goal), printed as one Markdown table and written, after
every section, to OUT/gpu_report.md and OUT/gpu_report.json, so a run cut short still returns what it measured."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class Row:
    section: str
    figure: str
    value: str
    goal: str = ""
    met: bool | None = None  # None: no goal, or not comparable


@dataclass
class Context:
    """What a section gets: the device, how long it may take, whether to run reduced sizes (a CPU dry run)."""

    device: str
    quick: bool
    out: Path
    budget_s: float
    options: dict[str, str] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def time_left(self) -> float:
        return self.budget_s - (time.monotonic() - self.started)


@dataclass
class Report:
    header: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    out: Path | None = None  # written after every row and note: a run killed at its time limit keeps them

    def add(self, section: str, figure: str, value: str, goal: str = "", met: bool | None = None) -> None:
        row = Row(section, figure, value, goal, met)
        self.rows.append(row)
        verdict = {True: ", met", False: ", NOT met", None: ""}[met]
        print(f"  [{section}] {figure}: {value}" + (f" (goal {goal}{verdict})" if goal else ""), flush=True)
        self._save()

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"  note: {text}", flush=True)
        self._save()

    def _save(self) -> None:
        if self.out is not None:
            self.write(self.out)

    def markdown(self) -> str:
        lines = [self.header, "", "| section | figure | result | goal | met |", "|---|---|---|---|---|"]
        for r in self.rows:
            met = "" if r.met is None else ("yes" if r.met else "**no**")
            lines.append(f"| {r.section} | {r.figure} | {r.value} | {r.goal} | {met} |")
        if self.notes:
            lines += ["", *(f"- {n}" for n in self.notes)]
        return "\n".join(lines) + "\n"

    def write(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "gpu_report.md").write_text(self.markdown())
        (out / "gpu_report.json").write_text(json.dumps(
            {"header": self.header, "rows": [asdict(r) for r in self.rows], "notes": self.notes}, indent=1))
