"""Accuracy of the turning-point detector (sqd.server.alerts.turning) and the search that chose its defaults.

    .venv/bin/python bench/turning.py                # defaults on the held-out suite + recorded runs
    .venv/bin/python bench/turning.py search         # coordinate search on a training suite, then the same report
    .venv/bin/python bench/turning.py record [--runs 2] [--steps 3000]   # real stacked-digit runs → bench/data/

Figures: recall (collapsing runs whose turning point raised a *critical* alert from half an epoch before it to 10
epochs after; "any": an alert of either severity), criticals and warnings per stable run (every alert in a stable
run), early alarms (a critical alert in a collapsing run before its turning point), detection delay of the critical
alert in epochs (detected step − turning step) / steps per epoch: median and p90.
Goal (issue #14): 0 critical false alarms on stable runs, recall ≥ 0.95, median delay ≤ 1 epoch.

The search tunes on one synthetic suite (seed 1) and reports on another (seed 2) so the figures are not the
training score. Per-key marks depend only on their own family's parameters, so they are computed once per family
setting and the combiner (cheap) is re-run for every combination.
"""

from __future__ import annotations

import argparse
import itertools
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from turning_data import LabelledRun, recorded_runs, synthetic_suite

from sqd.server.alerts.signals import GROUPS, GroupParams, Mark, derived_keys, family_of
from sqd.server.alerts.turning import TurningDetector, TurningParams, TurningPoint

EARLY_TOLERANCE_EPOCHS = 0.5
LATE_LIMIT_EPOCHS = 10.0


@dataclass
class Figures:
    recall: float  # collapsing runs whose turning point raised a critical alert in time
    recall_any: float  # ... an alert of either severity
    criticals_per_stable_run: float
    warnings_per_stable_run: float
    early_alarms_per_collapsing_run: float  # critical alerts before the turning point
    median_delay: float  # of the critical alert, in epochs
    p90_delay: float
    n_stable: int
    n_collapsing: int
    misses: list[str]
    false_alarms: list[str]

    def score(self) -> float:
        """What the search maximises: recall of criticals, with any critical false alarm (stable run, or before
        the turning point) costing ten times a hit; then fewer warnings on stable runs and shorter delays."""
        fa = self.criticals_per_stable_run + self.early_alarms_per_collapsing_run
        return (self.recall - 10 * fa - 0.1 * self.warnings_per_stable_run - 0.02 * self.median_delay
                - 0.005 * self.p90_delay)

    def line(self, label: str) -> str:
        parts = [f"{label:<26}"]
        if self.n_collapsing:
            parts.append(f"recall critical {self.recall:.3f} any {self.recall_any:.3f} of {self.n_collapsing}  "
                         f"early/run {self.early_alarms_per_collapsing_run:.3f}  delay median "
                         f"{self.median_delay:.2f} p90 {self.p90_delay:.2f} epochs")
        if self.n_stable:
            parts.append(f"per stable run: criticals {self.criticals_per_stable_run:.3f} warnings "
                         f"{self.warnings_per_stable_run:.3f} of {self.n_stable}")
        return "  ".join(parts)


def judge(runs: list[LabelledRun], found: list[list[TurningPoint]]) -> Figures:
    delays: list[float] = []
    misses, false_alarms = [], []
    criticals = warnings = early = hits = hits_any = 0
    for run, tps in zip(runs, found, strict=True):
        crit = [tp for tp in tps if tp.severity == "critical"]
        if run.turning_step is None:
            criticals += len(crit)
            warnings += len(tps) - len(crit)
            false_alarms += [f"{run.name}@{tp.detected_step / run.steps_per_epoch:.1f}" for tp in crit]
            continue
        lo = run.turning_step - EARLY_TOLERANCE_EPOCHS * run.steps_per_epoch
        hi = run.turning_step + LATE_LIMIT_EPOCHS * run.steps_per_epoch
        early += sum(tp.detected_step < lo for tp in crit)
        hits_any += any(lo <= tp.detected_step <= hi for tp in tps)
        hit = next((tp for tp in crit if lo <= tp.detected_step <= hi), None)
        if hit is None:
            misses.append(run.name)
        else:
            hits += 1
            delays.append(max(0.0, (hit.detected_step - run.turning_step) / run.steps_per_epoch))
    n_stable = sum(r.turning_step is None for r in runs)
    n_collapse = len(runs) - n_stable
    d = np.asarray(delays) if delays else np.asarray([np.nan])
    return Figures(hits / max(n_collapse, 1), hits_any / max(n_collapse, 1), criticals / max(n_stable, 1),
                   warnings / max(n_stable, 1), early / max(n_collapse, 1), float(np.median(d)),
                   float(np.percentile(d, 90)), n_stable, n_collapse, misses, false_alarms)


def detect_all(runs: list[LabelledRun], params: TurningParams) -> list[list[TurningPoint]]:
    return [TurningDetector(params).update(run.series) for run in runs]


# ---- search ------------------------------------------------------------------------------------------------
# per family: tracker settings tried (coef is searched separately, it does not change the marks)
TRACKER_GRID: dict[str, dict[str, list[Any]]] = {
    "angle_step": {"kappa": [1.0, 2.0, 3.0], "min_history": [8, 16, 32], "z_cap": [6.0]},
    "angle_drop": {"kappa": [1.0, 2.0, 3.0], "min_history": [8, 16, 32], "z_cap": [6.0]},
    "angle_epoch": {"kappa": [1.0, 2.0, 3.0], "min_history": [3, 4, 8], "z_cap": [6.0]},
    "quality": {"kappa": [1.0, 2.0], "min_history": [2, 3], "window": [3, 5, 8]},
    "diversity": {"kappa": [1.0, 2.0], "min_history": [2, 3], "window": [3, 5, 8]},
    "fid": {"kappa": [1.0, 2.0], "min_history": [2, 3], "window": [3, 5, 8]},
    "modes": {"kappa": [1.0, 2.0], "min_history": [2, 3], "window": [3, 5, 8]},
    "loss": {"kappa": [2.0], "min_history": [12], "z_cap": [6.0]},
}
BASE = -1  # a family that is not searched keeps the base parameters' setting
COEF_GRID = [0.0, 1 / 48, 1 / 32, 1 / 16, 1 / 12, 1 / 8, 1 / 4]
REARM_GRID = [0.25, 0.5, 0.75]
SEVERITY_GRID: dict[str, list[Any]] = {  # what makes a detection critical (the combiner only: no new marks)
    "corroborate_min": [0.1, 0.15, 0.25, 0.5],
    "corroborate_epochs": [1.0, 2.0, 3.0, 4.0, 6.0],
    "sustain_epochs": [1, 2, 3, 4],
}


def _settings(group: str) -> list[dict[str, Any]]:
    grid = TRACKER_GRID[group]
    return [dict(zip(grid, combo, strict=True)) for combo in itertools.product(*grid.values())]


class MarkCache:
    """Marks of every run for every (family, tracker setting), and the combiner over a chosen combination."""

    def __init__(self, runs: list[LabelledRun], base: TurningParams, searched: tuple[str, ...]) -> None:
        self.runs, self.base = runs, base
        self.marks: dict[tuple[str, int], list[list[Mark]]] = {}
        self.detectors: list[TurningDetector] = []
        self.horizons: list[int | None] = []
        for run in runs:  # the epoch maps and horizons (where the full series' decisions stop), once
            det = TurningDetector(base)
            det.feed(run.series)
            self.detectors.append(det)
            self.horizons.append(det._horizon())
        for group in GROUPS:
            settings = enumerate(_settings(group)) if group in searched else [(BASE, {})]
            for i, setting in settings:
                params = base.with_group(group, **setting, coef=1.0)  # coef 0 would not track the family
                self.marks[group, i] = [self._group_marks(run, group, params) for run in runs]

    @staticmethod
    def _group_marks(run: LabelledRun, group: str, params: TurningParams) -> list[Mark]:
        """The marks of one family (a derived one from its source keys, signals.DERIVED)."""
        det = TurningDetector(params)
        det.feed({k: v for k, v in run.series.items()
                  if any((family_of(t) or ("",))[0] == group for t in (k, *derived_keys(k)))})
        return [m for m in det.marks if (family_of(m.key) or ("",))[0] == group]

    def evaluate(self, params: TurningParams, choice: dict[str, int]) -> Figures:
        found = []
        for r, det in enumerate(self.detectors):
            replay = TurningDetector(params)
            replay.epochs = det.epochs
            replay.marks = [m for g in GROUPS if params.groups[g].coef > 0 for m in self.marks[g, choice[g]][r]]
            found.append(replay.decide(self.horizons[r]))
        return judge(self.runs, found)


def search(runs: list[LabelledRun], base: TurningParams, rounds: int = 2,
           groups: tuple[str, ...] = GROUPS) -> TurningParams:
    t0 = time.monotonic()
    cache = MarkCache(runs, base, groups)
    print(f"marks for {len(runs)} runs × all tracker settings: {time.monotonic() - t0:.0f} s")
    def current(g: str) -> int:  # start from the base parameters' own setting where the grid has it
        if g not in groups:
            return BASE
        settings = _settings(g)
        mine = {k: getattr(base.groups[g], k) for k in settings[0]}
        return settings.index(mine) if mine in settings else 0

    choice = {g: current(g) for g in GROUPS}
    params = base

    def apply(p: TurningParams, ch: dict[str, int]) -> TurningParams:
        for g in GROUPS:
            if ch[g] != BASE:
                p = p.with_group(g, **_settings(g)[ch[g]])
        return p

    params = apply(params, choice)
    best = cache.evaluate(params, choice)
    print(best.line("start"))
    for rnd in range(rounds):
        improved = False
        for group in groups:
            candidates: list[tuple[TurningParams, dict[str, int]]] = []
            for i in range(len(_settings(group))):
                for coef in COEF_GRID:
                    ch = {**choice, group: i}
                    candidates.append((apply(params, ch).with_group(group, coef=coef), ch))
            for cand, ch in candidates:
                fig = cache.evaluate(cand, ch)
                if fig.score() > best.score() + 1e-9:
                    best, params, choice, improved = fig, cand, ch, True
            print(best.line(f"round {rnd + 1} {group}"))
        for name, values in [("rearm_level", REARM_GRID), *SEVERITY_GRID.items()]:
            for value in values:
                cand = replace(params, **{name: value})
                fig = cache.evaluate(cand, choice)
                if fig.score() > best.score() + 1e-9:
                    best, params, improved = fig, cand, True
            print(best.line(f"round {rnd + 1} {name}"))
        if not improved:
            break
    print(f"search: {time.monotonic() - t0:.0f} s")
    return params


def describe(params: TurningParams) -> str:
    lines = [f"blocks_per_epoch={params.blocks_per_epoch} block_steps={params.block_steps} "
             f"expiry_gaps={params.expiry_gaps} rearm_level={params.rearm_level} contrib_min={params.contrib_min}",
             f"corroborate_min={params.corroborate_min} corroborate_epochs={params.corroborate_epochs} "
             f"sustain_epochs={params.sustain_epochs}"]
    for group, g in params.groups.items():
        coef = f"1/{1 / g.coef:.0f}" if g.coef else "0"
        lines.append(f"  {group:<12} {_group_line(g, coef)}")
    return "\n".join(lines)


def _group_line(g: GroupParams, coef: str) -> str:
    return (f"coef={coef:<5} kappa={g.kappa} z_cap={g.z_cap} window={g.window} min_history={g.min_history} "
            f"guard={g.guard} calm_blocks={g.calm_blocks} floor_abs={g.floor_abs} floor_rel={g.floor_rel}")


def report(params: TurningParams, n_stable: int, n_collapse: int) -> None:
    t0 = time.monotonic()
    test = synthetic_suite(n_stable, n_collapse, seed=2)
    fig = judge(test, detect_all(test, params))
    print(fig.line("synthetic (held out)"))
    for kind in ("stable", "noisy", "warmup", "lrdrop", "spike", "collapse", "collapse_noisy", "collapse_spike",
                 "collapse_diversity"):
        subset = [r for r in test if r.name.rsplit("-", 1)[0] == kind]
        print(judge(subset, detect_all(subset, params)).line(f"  {kind}"))
    if fig.misses:
        print("  missed:", ", ".join(fig.misses[:12]))
    if fig.false_alarms:
        print("  false alarms:", ", ".join(fig.false_alarms[:12]))
    real = list(recorded_runs())
    if real:
        found = detect_all(real, params)
        print(judge(real, found).line("recorded stacked digits"))
        for run, tps in zip(real, found, strict=True):
            truth = ("stable" if run.turning_step is None
                     else f"turning at epoch {run.turning_step / run.steps_per_epoch:.1f}")
            print(f"  {run.name:<28} {truth:<26} alarms: "
                  + ("; ".join(f"[{tp.severity}] {tp.explanation}" for tp in tps) or "none"))
    else:
        print("recorded stacked digits: none in bench/data (run `bench/turning.py record`)")
    print(f"report: {time.monotonic() - t0:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", nargs="?", default="report", choices=["report", "search", "record"])
    parser.add_argument("--families", default=",".join(GROUPS),
                        help="search: the families whose tracker settings are searched ('' = severity knobs only)")
    parser.add_argument("--train-stable", type=int, default=80)
    parser.add_argument("--train-collapse", type=int, default=60)
    parser.add_argument("--stable", type=int, default=200)
    parser.add_argument("--collapse", type=int, default=100)
    parser.add_argument("--runs", type=int, default=2, help="record: seeds per preset")
    parser.add_argument("--steps", type=int, default=3000, help="record: steps per run")
    parser.add_argument("--presets", default="demo-stable,demo-turning,sqd-wgan-gp-digits", help="record: presets")
    args = parser.parse_args()
    params = TurningParams()
    if args.command == "record":
        from turning_record import record_all

        record_all(args.runs, args.steps, tuple(args.presets.split(",")))
        return
    if args.command == "search":
        train = synthetic_suite(args.train_stable, args.train_collapse, seed=1)  # recorded runs stay held out
        params = search(train, params, groups=tuple(g for g in args.families.split(",") if g))
    print("parameters:\n" + describe(params))
    report(params, args.stable, args.collapse)


if __name__ == "__main__":
    main()
