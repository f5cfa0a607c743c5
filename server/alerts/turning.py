"""Turning-point detection (SPEC.md §1, seed 003): the moment a run turns unstable — a jump of the angle curves far
above their recent trend, with quality oscillating and diversity dropping.

    tps = detect_turning_points({"angle_epoch/G": (steps, values, epochs), "eval/diversity": (steps, values)})
    tps[0].step, tps[0].epoch, tps[0].signals, tps[0].scores, tps[0].explanation

How it decides. Each key has a `SignalTracker` (server/alerts/signals.py) that turns its series into marks: a
one-sided CUSUM of robust z-scores against the key's own trailing baseline (angles: a rise, quality and diversity: a
drop, losses: a change either way). The combiner walks the marks of all keys in step order and computes

    C(t) = Σ over families  coef_family · max over the family's keys of S_key(t)

where S_key(t) is the key's CUSUM at its latest mark at or before t (a mark of a key that went silent expires after
`expiry_gaps` of its usual spacing). It fires when C ≥ 1 while armed, reports the keys that contributed, then stays
disarmed until every key that fired has been calm for its `calm_blocks` and C < `rearm_level`: one alert per
turning point, and again only after the run was stable.

Online = offline by construction: `detect_turning_points` is `TurningDetector().update(series)`; the server feeds
the same detector batch by batch and keeps its state between batches (`to_state` / `from_state`). Marks are held
unfolded until every active key has reported past them, so a late evaluation is still merged in step order. The one
difference online: a decision is never taken back, so if an evaluation arrives after the detector already fired
on later angle data, the reported detection step is the later one (the turning step is the same).

Defaults were chosen by the search in bench/turning.py (synthetic labelled runs + recorded stacked-digit runs);
docs/alerts.md has the figures. This module is pure numpy: no FastAPI, no SQLAlchemy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from sqd.server.alerts.signals import GROUPS, GroupParams, Mark, SignalTracker, family_of, median_of

SeriesInput = Mapping[str, Sequence[Any]]  # key → (steps, values) or (steps, values, epochs)

DEFAULT_GROUPS: dict[str, GroupParams] = {  # chosen by `bench/turning.py search` (docs/alerts.md)
    # per-step angles, in blocks of 1/blocks_per_epoch epoch
    "angle_step": GroupParams(window=32, min_history=16, guard=2, kappa=2.0, z_cap=6.0, coef=1 / 8,
                              floor_abs=0.05, floor_rel=0.0, calm_blocks=8),
    "angle_epoch": GroupParams(window=10, min_history=3, guard=1, kappa=3.0, z_cap=6.0, coef=1 / 8,
                               floor_abs=0.05, floor_rel=0.0, calm_blocks=3),
    # evaluations: a short window, so the level is the recent plateau and not the warm-up's rise
    "quality": GroupParams(window=3, min_history=2, guard=0, kappa=1.0, z_cap=6.0, coef=1 / 8,
                           floor_abs=0.02, floor_rel=0.0, calm_blocks=3),
    "diversity": GroupParams(window=3, min_history=2, guard=0, kappa=2.0, z_cap=6.0, coef=1 / 4,
                             floor_abs=0.02, floor_rel=0.02, calm_blocks=3),
    # losses alone mislead (lr drops and regime changes move them): the search gives them no weight, so they
    # are not even tracked; set a coef to use them
    "loss": GroupParams(window=32, min_history=12, guard=2, kappa=2.0, z_cap=6.0, coef=0.0,
                        floor_abs=0.01, floor_rel=0.05, calm_blocks=8),
}


@dataclass(frozen=True)
class TurningParams:
    """Every knob of the detector. `groups` maps a key family to its `GroupParams`."""

    groups: Mapping[str, GroupParams] = field(default_factory=lambda: dict(DEFAULT_GROUPS))
    blocks_per_epoch: int = 4  # per-step keys are averaged over this fraction of an epoch
    block_steps: int = 25  # ... or over this many steps while the epoch length is unknown
    expiry_gaps: float = 3.0  # a silent key's last mark stands for this many of its usual gaps
    rearm_level: float = 0.5  # C must fall below this (and the fired keys be calm) to re-arm
    contrib_min: float = 0.15  # a key is named in `signals` when coef·S reaches this share of the threshold

    def with_group(self, group: str, **changes: Any) -> TurningParams:
        return replace(self, groups={**self.groups, group: replace(self.groups[group], **changes)})

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "groups": {g: asdict(p) for g, p in self.groups.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TurningParams:
        groups = {**DEFAULT_GROUPS, **{g: GroupParams(**p) for g, p in data.get("groups", {}).items()}}
        return cls(**{**{k: v for k, v in data.items() if k != "groups"}, "groups": groups})


@dataclass(frozen=True)
class TurningPoint:
    step: int  # where the jump started: the median onset of the angle keys that fired (else of all keys)
    epoch: int | None
    detected_step: int  # the step of the data that completed the evidence
    detected_epoch: int | None
    signals: list[str]  # keys that fired, strongest first
    scores: dict[str, float]  # key → peak robust z-score of its excursion
    evidence: dict[str, dict[str, float]]  # key → value, baseline, z, cusum, contribution
    combined: float  # C at the firing mark
    explanation: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Combiner:
    """The cross-key decision; its state is what the marks folded so far leave behind."""

    current: dict[str, Mark] = field(default_factory=dict)
    armed: bool = True
    pending: list[str] = field(default_factory=list)  # fired keys not yet calm

    def apply(self, mark: Mark, params: TurningParams, epochs: EpochMap) -> TurningPoint | None:
        self.current[mark.key] = mark
        parts, total = self._contributions(mark.step, params)
        if not self.armed:
            # a fired key stays pending until it sends a calm mark or goes silent past its expiry
            self.pending = [k for k in self.pending if self._live(k, mark.step)]
            if not self.pending and total < params.rearm_level:
                self.armed = True
            return None
        if total < 1.0:
            return None
        signals = sorted((k for k, c in parts.items() if c >= params.contrib_min), key=lambda k: -parts[k])
        self.armed, self.pending = False, list(signals)
        return self._turning_point(mark.step, signals, parts, total, epochs)

    def _live(self, key: str, step: int) -> bool:
        mark = self.current.get(key)
        return mark is not None and mark.expires >= step and not mark.calm

    def _contributions(self, step: int, params: TurningParams) -> tuple[dict[str, float], float]:
        """coef·S of every live key with S > 0, and C: only the strongest key of each family counts towards C
        (angle/G and angle/D of one jump are one piece of evidence, not two)."""
        parts: dict[str, float] = {}
        best: dict[str, float] = {}
        for key, mark in self.current.items():
            if mark.cusum > 0 and mark.expires >= step:
                group = _group(key)
                c = params.groups[group].coef * mark.cusum
                if c > 0:
                    parts[key] = c
                    if c > best.get(group, 0.0):
                        best[group] = c
        return parts, sum(best.values())

    def _turning_point(self, step: int, signals: list[str], parts: dict[str, float], total: float,
                       epochs: EpochMap) -> TurningPoint:
        marks = [self.current[k] for k in signals]
        angles = [m for m in marks if m.key.startswith("angle")]
        # the (lower) median onset: one weak key lifted early by noise does not move the turning step
        onsets = sorted(m.onset for m in (angles or marks))
        onset = onsets[(len(onsets) - 1) // 2]
        evidence = {m.key: {"value": m.value, "baseline": m.baseline, "z": m.peak_z, "cusum": m.cusum,
                            "contribution": parts[m.key]} for m in marks}
        scores = {m.key: round(m.peak_z, 3) for m in marks}
        return TurningPoint(step=onset, epoch=epochs.at(onset), detected_step=step, detected_epoch=epochs.at(step),
                            signals=signals, scores=scores, evidence=evidence, combined=total,
                            explanation=explain(onset, epochs.at(onset), step, epochs.at(step), marks))

    def to_state(self) -> dict[str, Any]:
        return {"current": [m.to_list() for m in self.current.values()], "armed": self.armed,
                "pending": self.pending}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Combiner:
        current = {m.key: m for m in (Mark.from_list(row) for row in state["current"])}
        return cls(current, bool(state["armed"]), list(state["pending"]))


def _group(key: str) -> str:
    family = family_of(key)
    assert family is not None
    return family[0]


@dataclass
class EpochMap:
    """Step → epoch from the (step, epoch) pairs seen: the epoch of the last known step at or before."""

    steps: list[int] = field(default_factory=list)
    epochs: list[int] = field(default_factory=list)

    def add(self, steps: np.ndarray, epochs: np.ndarray) -> None:
        for s, e in zip(steps.tolist(), epochs.tolist(), strict=True):
            if e < 0 or (self.epochs and e <= self.epochs[-1]) or (self.steps and s <= self.steps[-1]):
                continue
            self.steps.append(int(s))
            self.epochs.append(int(e))

    def at(self, step: int) -> int | None:
        i = int(np.searchsorted(self.steps, step, side="right")) - 1
        return self.epochs[i] if i >= 0 else None


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def explain(onset: int, epoch: int | None, step: int, detected_epoch: int | None, marks: Sequence[Mark]) -> str:
    """One line a person reads in the alerts panel and the webhook."""
    where = f"epoch {epoch} (step {onset})" if epoch is not None else f"step {onset}"
    parts = []
    for m in marks:
        if m.key.startswith("angle"):
            ratio = m.value / m.baseline if m.baseline > 0 else math.inf
            parts.append(f"{m.key} jumped to {_fmt(m.value)} rad, {ratio:.1f}× its recent level (z {m.peak_z:.1f})")
        elif m.key.startswith("loss/"):
            parts.append(f"{m.key} moved to {_fmt(m.value)} from {_fmt(m.baseline)} (z {m.peak_z:.1f})")
        else:
            parts.append(f"{m.key} fell to {_fmt(m.value)} from {_fmt(m.baseline)} (z {m.peak_z:.1f})")
    if not any(m.key.startswith("angle") for m in marks):
        parts.append("no angle jump")
    seen = f"epoch {detected_epoch}" if detected_epoch is not None else f"step {step}"
    return f"Turning point at {where}: {'; '.join(parts)}; detected at {seen}."


def _arrays(data: Sequence[Any], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    if len(data) not in (2, 3):
        raise ValueError(f"turning detector: series {key!r} must be (steps, values) or (steps, values, epochs), "
                         f"got a sequence of {len(data)}")
    steps = np.asarray(data[0], dtype=np.int64)
    values = np.asarray(data[1], dtype=np.float64)
    if steps.shape != values.shape or steps.ndim != 1:
        raise ValueError(f"turning detector: series {key!r} has {steps.shape} steps but {values.shape} values")
    epochs = None
    if len(data) == 3 and data[2] is not None:
        epochs = np.asarray([-1 if e is None else e for e in data[2]], dtype=np.int64)
        if epochs.shape != steps.shape:
            raise ValueError(f"turning detector: series {key!r} has {steps.shape} steps but {epochs.shape} epochs")
    order = np.argsort(steps, kind="stable")
    return steps[order], values[order], None if epochs is None else epochs[order]


class TurningDetector:
    """The online detector: `update` with the new points of any keys, get the turning points found by them."""

    def __init__(self, params: TurningParams | None = None) -> None:
        self.params = params or TurningParams()
        self.trackers: dict[str, SignalTracker] = {}
        self.marks: list[Mark] = []  # not yet folded into `folded`
        self.folded = Combiner()
        self.folded_to: int | None = None  # marks at or before this step are folded
        self.epochs = EpochMap()
        self.found: list[TurningPoint] = []

    def update(self, series: SeriesInput) -> list[TurningPoint]:
        """Feed new points (per key in step order; older steps than already seen are ignored) → new turning
        points, each reported once."""
        self.feed(series)
        return self.decide()

    def uses(self, key: str) -> bool:
        """Keys of a family the detector scores (a family with coef 0 is not even tracked)."""
        family = family_of(key)
        return family is not None and self.params.groups[family[0]].coef > 0

    def feed(self, series: SeriesInput) -> None:
        """The per-key half of `update`: new points → marks, no decision yet."""
        for key in sorted(series):
            if not self.uses(key):
                continue
            steps, values, epochs = _arrays(series[key], key)
            if epochs is not None:
                self.epochs.add(steps, epochs)
            tracker = self.trackers.get(key)
            if tracker is None:
                tracker = self.trackers[key] = SignalTracker(key, self.params.block_steps,
                                                             self.params.blocks_per_epoch, self.params.expiry_gaps)
            self.marks.extend(tracker.feed(steps, values, epochs, self.params.groups[tracker.group]))

    def decide(self) -> list[TurningPoint]:
        """Run the combiner from the folded state over the unfolded marks: marks older than the folded step
        (a key that was silent a long time) first, then the rest in step order."""
        cut = self.folded_to
        # a late mark is taken as news at the folded step (its own step is history that is already decided)
        late = [replace(m, step=cut) for m in self.marks if cut is not None and m.step <= cut]
        fresh = sorted((m for m in self.marks if cut is None or m.step > cut), key=lambda m: (m.step, m.key))
        ordered = [*late, *fresh]
        combiner = Combiner.from_state(self.folded.to_state())
        new: list[TurningPoint] = []
        keep_from = 0
        for i, mark in enumerate(ordered):
            tp = combiner.apply(mark, self.params, self.epochs)
            if tp is not None:
                new.append(tp)
                keep_from = i + 1  # a decision is final: everything up to it is folded
        horizon = self._horizon()
        while keep_from < len(ordered) and horizon is not None and ordered[keep_from].step <= horizon:
            keep_from += 1
        for mark in ordered[:keep_from]:
            # replays the pass above on the same prefix; the turning points it finds again are already in `new`
            self.folded.apply(mark, self.params, self.epochs)
            self.folded_to = mark.step if self.folded_to is None else max(self.folded_to, mark.step)
        self.marks = ordered[keep_from:]
        self.found.extend(new)
        return new

    def _horizon(self) -> int | None:
        """The step every active key has reported past; a key silent for 10 of its gaps no longer holds it back."""
        lasts = {k: t.last_block_step for k, t in self.trackers.items() if t.last_block_step is not None}
        if not lasts:
            return None
        newest = max(lasts.values())
        active = []
        for key, last in lasts.items():
            gaps = self.trackers[key].gaps
            gap = median_of(gaps) if gaps else 0.0
            if gap == 0 or last >= newest - 10 * gap:
                active.append(last)
        return min(active)

    # ---- state -----------------------------------------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        return {"trackers": {k: t.to_state() for k, t in self.trackers.items()},
                "marks": [m.to_list() for m in self.marks], "folded": self.folded.to_state(),
                "folded_to": self.folded_to, "epochs": [self.epochs.steps, self.epochs.epochs],
                "found": [tp.to_dict() for tp in self.found]}

    @classmethod
    def from_state(cls, state: Mapping[str, Any], params: TurningParams | None = None) -> TurningDetector:
        det = cls(params)
        det.trackers = {k: SignalTracker.from_state(s) for k, s in state["trackers"].items()}
        det.marks = [Mark.from_list(row) for row in state["marks"]]
        det.folded = Combiner.from_state(state["folded"])
        det.folded_to = state["folded_to"]
        det.epochs = EpochMap(list(state["epochs"][0]), list(state["epochs"][1]))
        det.found = [TurningPoint(**tp) for tp in state["found"]]
        return det


def detect_turning_points(series: SeriesInput, params: TurningParams | None = None) -> list[TurningPoint]:
    """All turning points of one run: the online detector fed the whole series at once."""
    return TurningDetector(params).update(series)


__all__ = ["GROUPS", "GroupParams", "TurningDetector", "TurningParams", "TurningPoint", "detect_turning_points"]
