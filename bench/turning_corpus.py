"""The turning-point detector on the recorded corpus (bench/data/corpus): figures per family and overall, and seed
003's question on the SQD-grid twins (which pass a turning point, with and without GP, over seeds), as trained and
under demo-turning's lr ramp (the "ramp" variant of bench/corpus_record.py).

    .venv/bin/python bench/turning_corpus.py            # the two tables (docs/alerts.md, "Recorded corpus")
    .venv/bin/python bench/turning_corpus.py --runs     # plus every run: its label and what the detector raised

Each run is labelled by bench/corpus_labels.py (from the worker's Q/D, never from the detector) and replayed through
`detect_turning_points`. A labelled turning point is found when a detection lands from half an epoch before the
labelled step to 10 epochs after it (the window of bench/turning.py); recall counts criticals only, then any
severity. Every alert of a stable run is a false alarm; alarms of a turning run before the window are "early".
Delay: detection epoch − labelled epoch, of the first critical in the window. The family table is given per
evaluation cadence (every 250 steps, the runs of 2026-12-05/06; every epoch, the `-e1-` runs of 2026-12-07), with
how many runs' live alerts (raised by the server while they trained) equal the replay.

With `--runs`, each labelled turn also gets a *shape*, a description added after the detector's figures were known
(so it is not a second label rule, and nothing is tuned on it): "sustained" when modes covered stay ≥ 30 % below
the pre-fall peak at the fall and the 3 evaluations after it, else "transient" (a dip the run recovers from); and
the peak itself (of the 1,000 modes), which tells a collapse after a healthy plateau from noise in a run that never
covered many modes.
"""

from __future__ import annotations

import argparse
import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
from corpus_data import EPOCHLY_TAG, FAMILY_ORDER, CorpusRun, base_variant, load_corpus, severity
from corpus_labels import MODES_DROP
from turning import EARLY_TOLERANCE_EPOCHS, LATE_LIMIT_EPOCHS

from sqd.server.alerts.turning import DEFAULT_GROUPS
from sqd.server.turning import TurningPoint


@dataclass
class Judged:
    run: CorpusRun
    tps: list[TurningPoint]
    hit_critical: TurningPoint | None = None
    hit_any: TurningPoint | None = None
    early: list[TurningPoint] = field(default_factory=list)

    @property
    def turning(self) -> bool:
        return self.run.label.turning_step is not None

    def count(self, sev: str) -> int:
        return sum(severity(tp) == sev for tp in self.tps)

    def delay(self) -> float | None:
        if self.hit_critical is None or self.run.label.turning_epoch is None:
            return None
        return detected_epoch(self.run, self.hit_critical) - self.run.label.turning_epoch


SUSTAIN_EVALS = 3  # evaluations after the fall that must stay down for a "sustained" turn
PLATEAU_MODES = 400  # a healthy plateau of the 1,000 modes: the collapses the alert is for


def turn_shape(run: CorpusRun) -> tuple[str, float] | None:
    """("sustained" | "transient", peak modes before the fall) of a labelled turn; None for a stable run."""
    if run.label.turning_step is None:
        return None
    steps, modes, _ = run.series["eval/modes_covered"]
    fall = int(np.searchsorted(steps, run.label.turning_step)) + 1
    peak = float(np.max(modes[:fall]))
    after = modes[fall:fall + 1 + SUSTAIN_EVALS]
    return ("sustained" if np.all(after <= (1 - MODES_DROP) * peak) else "transient"), peak


def detected_epoch(run: CorpusRun, tp: TurningPoint) -> float:
    return tp.detected_epoch if tp.detected_epoch is not None else run.epoch_of(tp.detected_step)


def judge(run: CorpusRun) -> Judged:
    j = Judged(run, run.replay())
    turn = run.label.turning_step
    if turn is None:
        return j
    lo = turn - EARLY_TOLERANCE_EPOCHS * run.steps_per_epoch
    hi = turn + LATE_LIMIT_EPOCHS * run.steps_per_epoch
    inside = [tp for tp in j.tps if lo <= tp.detected_step <= hi]
    j.hit_any = inside[0] if inside else None
    j.hit_critical = next((tp for tp in inside if severity(tp) == "critical"), None)
    j.early = [tp for tp in j.tps if tp.detected_step < lo]
    return j


# The detector's last change (2026-12-07 13:46 UTC: a rise of FID corroborates only beside a drop of quality,
# diversity or modes; before it, 12:44: a warning no longer holds back a critical, and 06:15: a sustained rise must
# climb above its window): the runs created after it were recorded with the final rules live and influenced nothing
# in them, so they are its held-out figures.
DETECTOR_FROZEN_AT = dt.datetime(2026, 12, 7, 13, 46, tzinfo=dt.UTC).timestamp()


def held_out(j: Judged) -> bool:
    return float(j.run.meta.get("created_at", 0.0)) > DETECTOR_FROZEN_AT


DETECTOR_RULES = ("turning point", "instability")  # the rules of the live alerts the detector raised


def live_matches_replay(j: Judged) -> bool:
    """Whether the alerts the server raised while the run trained are the replay's (severity and turning step):
    online = offline through the whole stack, for runs recorded with today's detector."""
    live = sorted((a["severity"], int(a["step"])) for a in j.run.alerts if a["rule"] in DETECTOR_RULES)
    return live == sorted((tp.severity, tp.step) for tp in j.tps)


def row(name: str, runs: list[Judged]) -> str:
    turning = [j for j in runs if j.turning]
    stable = [j for j in runs if not j.turning]
    delays = [d for j in turning if (d := j.delay()) is not None]

    def ratio(n: int, d: int) -> str:
        return f"{n / d:.2f}" if d else "—"

    return (f"| {name} | {len(runs)} | {len(turning)} "
            f"| {ratio(sum(j.hit_critical is not None for j in turning), len(turning))} "
            f"| {ratio(sum(j.hit_any is not None for j in turning), len(turning))} "
            f"| {ratio(sum(j.count('critical') for j in stable), len(stable))} "
            f"| {ratio(sum(j.count('warning') for j in stable), len(stable))} "
            f"| {ratio(sum(sum(severity(tp) == 'critical' for tp in j.early) for j in turning), len(turning))} "
            f"| {f'{np.median(delays):.1f}' if delays else '—'} |")


def family_table(judged: list[Judged], held_row: bool = True) -> list[str]:
    by_family: dict[str, list[Judged]] = defaultdict(list)
    for j in judged:
        by_family[j.run.family].append(j)
    lines = ["| family | runs | turning | recall (critical) | recall (any) | critical FA / stable run "
             "| warning FA / stable run | early criticals / turning run | median delay (epochs) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    order = sorted(by_family, key=lambda f: FAMILY_ORDER.index(f) if f in FAMILY_ORDER else len(FAMILY_ORDER))
    lines += [row(f, by_family[f]) for f in order]
    lines.append(row("**all**", judged))
    if held_row and (later := [j for j in judged if held_out(j)]):
        lines.append(row("held out (recorded after the detector's last change)", later))
    return lines


def first(j: Judged, sev: str | None = None) -> str:
    tps = [tp for tp in j.tps if sev is None or severity(tp) == sev]
    return ", ".join(f"{detected_epoch(j.run, tp):.0f}" for tp in tps) or "—"


def twin(run: CorpusRun, variant: str) -> str | None:
    """The SQD-grid twin a run is in `variant`'s table (None: not in it). demo-turning is the NSGAN twin with the
    lr ramp (the same config: bench/corpus_record.py's RAMP), so it fills that row of the ramp table."""
    if base_variant(variant) == "ramp" and run.preset == "demo-turning":
        # demo-turning of the same cadence: variant "" for "ramp", "e1" for "ramp-e1"
        return "sqd-nsgan-digits" if run.variant == variant.replace("ramp", "").strip("-") else None
    return run.preset if run.preset.startswith("sqd-") and run.variant == variant else None


def grid_table(judged: list[Judged], variant: str = "") -> list[str]:
    """Seed 003's claim: per SQD-grid twin and seed, the labelled turning epoch and the detector's criticals."""
    grid = [j for j in judged if twin(j.run, variant) is not None]
    if not grid:
        return []
    presets = sorted({twin(j.run, variant) for j in grid}, key=lambda p: ("-gp-" in str(p), str(p)))
    # the seeds of the twins: demo-turning's further seeds (the demo check's) would widen the table by a row's worth
    seeds = sorted({j.run.seed for j in grid if j.run.preset != "demo-turning"} or {j.run.seed for j in grid})
    lines = ["| twin | GP | " + " | ".join(f"seed {s}: label / critical at epoch" for s in seeds)
             + " | turned (label) | turned (critical) |",
             "|---|---|" + "---|" * len(seeds) + "---:|---:|"]
    for preset in presets:
        runs = {j.run.seed: j for j in grid if twin(j.run, variant) == preset and j.run.seed in seeds}
        cells = []
        for s in seeds:
            j = runs.get(s)
            cells.append("not recorded" if j is None else
                         f"{j.run.label.turning_epoch if j.turning else 'stable'} / {first(j, 'critical')}")
        n_label = sum(j.turning for j in runs.values())
        n_crit = sum(j.count("critical") > 0 for j in runs.values())
        gp = "yes" if "-gp-" in str(preset) else "no"
        lines.append(f"| {preset}{' + ramp' if base_variant(variant) else ''} | {gp} | "
                     + " | ".join(cells)
                     + f" | {n_label} of {len(runs)} | {n_crit} of {len(runs)} |")
    return lines


def run_lines(judged: list[Judged]) -> list[str]:
    lines = []
    for j in judged:
        live = sum(a["severity"] == "critical" for a in j.run.alerts)
        shape = turn_shape(j.run)
        shaped = f", {shape[0]}, peak {shape[1]:.0f} modes" if shape else ""
        lines.append(f"{j.run.name:<28} label {'stable' if not j.turning else f'epoch {j.run.label.turning_epoch}'}"
                     f" ({j.run.label.reason}{shaped}); replay critical at epoch {first(j, 'critical')}, warning at "
                     f"{first(j, 'warning')}; live: {len(j.run.alerts)} alerts, {live} critical")
    return lines


def shape_lines(judged: list[Judged]) -> list[str]:
    """Recall per shape of the labelled turns (post hoc: see the module docstring)."""
    lines = []
    for name in ("sustained", "transient"):
        runs = [j for j in judged if (shape := turn_shape(j.run)) is not None and shape[0] == name]
        crit = sum(j.hit_critical is not None for j in runs)
        anyx = sum(j.hit_any is not None for j in runs)
        lines.append(f"{name} turns: {len(runs)} ({', '.join(j.run.name for j in runs) or 'none'}); found "
                     f"critical {crit}, any {anyx}")
    for cadence in sorted({j.run.cadence for j in judged}):
        runs = [j for j in judged if j.run.cadence == cadence
                and (shape := turn_shape(j.run)) is not None and shape[1] >= PLATEAU_MODES]
        missed = [j.run.name for j in runs if j.hit_critical is None]
        delays = [d for j in runs if (d := j.delay()) is not None]
        lines.append(f"collapses from a plateau of >= {PLATEAU_MODES} modes, evaluated {cadence}: {len(runs)}; "
                     f"critical {len(runs) - len(missed)} (missed: {', '.join(missed) or 'none'}), median delay "
                     f"{f'{np.median(delays):.1f}' if delays else '—'} epochs")
    return lines


# The epoch angles are first scored once they have `min_history` epochs of baseline besides the `guard` newest
# (epoch 4 with the defaults; the per-step angles after 4 epochs of blocks): a fall seen at an evaluation before
# that comes inside the detector's warm-up, which it does not score by design (docs/alerts.md, "Known gaps").
DETECTOR_WARMUP_EPOCHS = DEFAULT_GROUPS["angle_epoch"].min_history + DEFAULT_GROUPS["angle_epoch"].guard


def miss_reason(j: Judged) -> str:
    """Why a labelled turn has no critical in its window, in the terms of docs/alerts.md (post hoc, as the shapes):
    where the fall came and what the detector raised instead."""
    label = j.run.label.turning_epoch
    assert label is not None
    shape = turn_shape(j.run)
    peak = shape[1] if shape else 0.0
    where = ("in the warm-up" if label + 1 < DETECTOR_WARMUP_EPOCHS
             else "from a plateau" if peak >= PLATEAU_MODES else "of a run that never covered many modes")
    later = [e for tp in j.tps if severity(tp) == "critical" and (e := detected_epoch(j.run, tp)) > label]
    early = [tp for tp in j.early if severity(tp) == "critical"]
    raised = (f"first critical {later[0] - label:.0f} epochs after" if later else
              "a critical before the window" if early else
              "warnings only" if j.tps else "no alert")
    return f"{j.run.name} (label epoch {label}, peak {peak:.0f} modes, {where}: {raised})"


def miss_lines(judged: list[Judged]) -> list[str]:
    lines = []
    for cadence in sorted({j.run.cadence for j in judged}):
        missed = [j for j in judged if j.run.cadence == cadence and j.turning and j.hit_critical is None]
        lines.append(f"missed turns, evaluated {cadence}: {len(missed)}"
                     + "".join(f"\n  {miss_reason(j)}" for j in missed))
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", action="store_true", help="also list every run")
    args = ap.parse_args()
    judged = [judge(run) for run in load_corpus()]
    if not judged:
        raise SystemExit("no recorded runs under bench/data/corpus: record them with bench/corpus_record.py")
    cadences = sorted({j.run.cadence for j in judged}, key=lambda c: -sum(j.run.cadence == c for j in judged))
    for i, cadence in enumerate(cadences):
        if len(cadences) > 1:
            print(("\n" if i else "") + f"evaluated {cadence}:")
        runs = [j for j in judged if j.run.cadence == cadence]
        print("\n".join(family_table(runs)))
        differ = [j.run.name for j in runs if not live_matches_replay(j)]
        # runs recorded under an earlier detector differ wherever it changed since; a few are named
        print(f"live alerts = replay in {len(runs) - len(differ)} of {len(runs)} runs"
              + (f" (differ: {', '.join(differ)})" if 0 < len(differ) <= 5 else ""))
    if held := [j for j in judged if held_out(j)]:
        plateau = [j for j in held if (shape := turn_shape(j.run)) is not None and shape[1] >= PLATEAU_MODES]
        print(f"\nheld out from the detector's last change, per family (live alerts = replay in "
              f"{sum(map(live_matches_replay, held))} of {len(held)} runs; collapses from a plateau of >= "
              f"{PLATEAU_MODES} modes: critical on {sum(j.hit_critical is not None for j in plateau)} of "
              f"{len(plateau)}):")
        print("\n".join(family_table(held, held_row=False)))
    for variant in ("", "ramp", EPOCHLY_TAG, f"ramp-{EPOCHLY_TAG}"):
        table = grid_table(judged, variant)
        if table:
            print("\nevaluated every epoch:" if EPOCHLY_TAG in variant else "")
            print("\n".join(table))
    if args.runs:
        print()
        print("\n".join(run_lines(judged)))
        print()
        print("\n".join(shape_lines(judged)))
        print("\n".join(miss_lines(judged)))


if __name__ == "__main__":
    main()
