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
turning point, and again only after the run was stable — except that a warning does not hold back a critical: while
a warning keeps it disarmed, evidence that would be critical as a fresh detection is raised as one (an instability,
then the collapse).

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
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

import numpy as np

from sqd.server.alerts.signals import (
    DEGRADATION_GROUPS,
    DERIVED_GROUPS,
    GROUPS,
    SUPPORTING_GROUPS,
    GroupParams,
    Mark,
    SignalTracker,
    derived_keys,
    family_of,
    median_of,
    source_key,
)

SeriesInput = Mapping[str, Sequence[Any]]  # key → (steps, values) or (steps, values, epochs)

DEFAULT_GROUPS: dict[str, GroupParams] = {  # chosen by `bench/turning.py search` (docs/alerts.md)
    # per-step angles, in blocks of 1/blocks_per_epoch epoch
    "angle_step": GroupParams(window=32, min_history=16, guard=2, kappa=2.0, z_cap=6.0, coef=1 / 8,
                              floor_abs=0.05, floor_rel=0.0, calm_blocks=8),
    "angle_epoch": GroupParams(window=10, min_history=3, guard=1, kappa=3.0, z_cap=6.0, coef=1 / 8,
                               floor_abs=0.05, floor_rel=0.0, calm_blocks=3),
    # evaluations: a short window, so the level is the recent plateau and not the warm-up's rise
    "quality": GroupParams(window=3, min_history=2, guard=0, kappa=1.0, z_cap=6.0, coef=1 / 16,
                           floor_abs=0.02, floor_rel=0.0, calm_blocks=3),
    "diversity": GroupParams(window=3, min_history=2, guard=0, kappa=2.0, z_cap=6.0, coef=1 / 4,
                             floor_abs=0.02, floor_rel=0.05, calm_blocks=3),
    # losses alone mislead (lr drops and regime changes move them): the search gives them no weight, so they
    # are not even tracked; set a coef to use them
    # FID and modes covered (log): one evaluation a third lower (modes) or higher (FID) than the last ones
    "fid": GroupParams(window=3, min_history=2, guard=0, kappa=2.0, z_cap=6.0, coef=1 / 4,
                       floor_abs=0.35, floor_rel=0.0, calm_blocks=3),
    "modes": GroupParams(window=3, min_history=2, guard=0, kappa=2.0, z_cap=6.0, coef=1 / 4,
                         floor_abs=0.2, floor_rel=0.0, calm_blocks=3),
    "loss": GroupParams(window=32, min_history=12, guard=2, kappa=2.0, z_cap=6.0, coef=0.0,
                        floor_abs=0.01, floor_rel=0.05, calm_blocks=8),
    # per-step angles falling (derived from angle/*, signals.DERIVED): angle_step's scoring mirrored (not
    # searched) but for the floor: 0.2 in log, as for modes, so that only a fall by a factor (~2× within a block
    # or two: a freeze) counts, not the steady decay of angles settling after warm-up. coef only decides when a
    # drop counts (coef·S ≥ contrib_min), never the combined score.
    "angle_drop": GroupParams(window=32, min_history=16, guard=2, kappa=2.0, z_cap=6.0, coef=1 / 8,
                              floor_abs=0.2, floor_rel=0.0, calm_blocks=8),
}


_PARAM_FLOORS: dict[str, tuple[type, float, bool]] = {  # field → (type, lowest value, lowest value allowed)
    "window": (int, 1, True), "min_history": (int, 1, True), "guard": (int, 0, True), "kappa": (float, 0, True),
    "z_cap": (float, 0, False), "coef": (float, 0, True), "floor_abs": (float, 0, True),
    "floor_rel": (float, 0, True), "calm_blocks": (int, 1, True),
    "blocks_per_epoch": (int, 1, True), "block_steps": (int, 1, True), "expiry_gaps": (float, 0, False),
    "rearm_level": (float, 0, True), "contrib_min": (float, 0, True), "corroborate_min": (float, 0, True),
    "corroborate_epochs": (float, 0, True), "sustain_epochs": (int, 1, True),
}


def _checked(where: str, name: str, value: Any) -> int | float:
    kind, low, inclusive = _PARAM_FLOORS[name]
    ok_type = isinstance(value, int) if kind is int else isinstance(value, int | float)
    if isinstance(value, bool) or not ok_type or not math.isfinite(value) or value < low \
            or (value == low and not inclusive):
        what = "an integer" if kind is int else "a number"
        bound = f"≥ {low:g}" if inclusive else f"> {low:g}"
        raise ValueError(f"turning params: {where}{name}: must be {what} {bound}, got {value!r}")
    return value


@dataclass(frozen=True)
class TurningParams:
    """Every knob of the detector. `groups` maps a key family to its `GroupParams`."""

    groups: Mapping[str, GroupParams] = field(default_factory=lambda: dict(DEFAULT_GROUPS))
    blocks_per_epoch: int = 4  # per-step keys are averaged over this fraction of an epoch
    block_steps: int = 25  # ... or over this many steps while the epoch length is unknown
    expiry_gaps: float = 3.0  # a silent key's last mark stands for this many of its usual gaps
    rearm_level: float = 0.5  # C must fall below this (and the fired keys be calm) to re-arm
    contrib_min: float = 0.15  # a key is named in `signals` when coef·S reaches this share of the threshold
    # severity: a detection is critical when an angle jump (an angle key whose coef·S reaches contrib_min)
    # comes with a degradation (a key of quality,
    # diversity, FID or modes whose coef·S reaches corroborate_min) or with an angle that stays up for
    # sustain_epochs epochs in a row, within corroborate_epochs of the turning step; else a warning.
    # Chosen by `bench/turning.py search --families quality --train-stable 200 --train-collapse 100` (docs/alerts.md)
    corroborate_min: float = 0.25
    corroborate_epochs: float = 4.0
    sustain_epochs: int = 4

    def with_group(self, group: str, **changes: Any) -> TurningParams:
        return replace(self, groups={**self.groups, group: replace(self.groups[group], **changes)})

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "groups": {g: asdict(p) for g, p in self.groups.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TurningParams:
        """Defaults overridden by `data` (a group may give only some of its fields); an unknown key or a bad
        value is a ValueError naming it."""
        if not isinstance(data, Mapping):
            raise ValueError(f"turning params: must be an object, got {data!r}")
        known = {f.name for f in fields(cls)}
        top: dict[str, Any] = {}
        for name, value in data.items():
            if name not in known:
                raise ValueError(f"turning params: unknown key {name!r} (known: {', '.join(sorted(known))})")
            if name != "groups":
                top[name] = _checked("", name, value)
        groups = dict(DEFAULT_GROUPS)
        given = data.get("groups", {})
        if not isinstance(given, Mapping):
            raise ValueError(f"turning params: groups: must be an object, got {given!r}")
        group_fields = {f.name for f in fields(GroupParams)}
        for group, changes in given.items():
            if group not in DEFAULT_GROUPS:
                raise ValueError(f"turning params: groups: unknown family {group!r} (known: {', '.join(GROUPS)})")
            if not isinstance(changes, Mapping):
                raise ValueError(f"turning params: groups.{group}: must be an object, got {changes!r}")
            for name in changes:
                if name not in group_fields:
                    raise ValueError(f"turning params: groups.{group}: unknown key {name!r}")
            groups[group] = replace(DEFAULT_GROUPS[group],
                                    **{n: _checked(f"groups.{group}.", n, v) for n, v in changes.items()})
        return cls(groups=groups, **top)


Severity = Literal["warning", "critical"]
INSTABILITY = "instability"  # the title of a warning: an angle jump (or a drop) that is not a turning point


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
    # defaults: detections saved by a detector without severities were all turning points
    severity: Severity = "critical"
    corroborated_by: list[str] = field(default_factory=list)  # keys; "sustained:<key>" for an angle that stayed up
    missing: str = ""  # what a warning lacked to be critical

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Corroboration:
    """What was seen within the corroboration window of a detection."""

    jumps: list[str]
    degradations: list[str]
    sustained: list[str]
    alone: list[str] = field(default_factory=list)  # supporting degradations seen without another one

    @property
    def critical(self) -> bool:
        return bool(self.jumps) and bool(self.degradations or self.sustained)

    def keys(self, signals: Sequence[str]) -> list[str]:
        """What completed the evidence of a detection that fired on `signals`: the angle jump when it fired on
        none, the degradations, the angles that stayed up."""
        jumped = any(k.startswith("angle") for k in signals)
        return [*([] if jumped else self.jumps), *self.degradations,
                *(f"sustained:{k}" for k in self.sustained)]

    def missing(self, params: TurningParams) -> str:
        if self.critical:
            return ""
        within = f"within {params.corroborate_epochs:g} epochs"
        items = [] if self.jumps else [f"no angle jump or drop {within}"]
        if not (self.degradations or self.sustained):
            seen = f"no drop of quality, diversity, modes or rise of FID {within}"
            if self.alone:
                seen = (f"no drop of quality, diversity or modes {within} ({', '.join(self.alone)} rose, which "
                        f"counts only beside one)")
            items.append(f"{seen}, and the epoch angle did not stay up for {params.sustain_epochs} epochs")
        return "; ".join(items)


@dataclass
class Combiner:
    """The cross-key decision; its state is what the marks folded so far leave behind."""

    current: dict[str, Mark] = field(default_factory=dict)
    armed: bool = True
    pending: list[str] = field(default_factory=list)  # fired keys not yet calm
    strong_at: dict[str, int] = field(default_factory=dict)  # key → last step its coef·S ≥ corroborate_min
    sustained_at: dict[str, int] = field(default_factory=dict)  # angle key → last step it had stayed up
    # a warning that corroboration may still make critical: the detection, its window [lo, hi] and what it saw
    watch: dict[str, Any] | None = None
    # disarmed by a warning: a later detection that is critical is still raised (a collapse after an instability)
    after_warning: bool = False

    def apply(self, mark: Mark, params: TurningParams, epochs: EpochMap) -> list[TurningPoint]:
        self.current[mark.key] = mark
        parts, total = self._contributions(mark.step, params)
        self._note(mark, parts.get(mark.key, 0.0), params)
        found = [tp for tp in [self._upgrade(mark.step, parts, total, params, epochs)] if tp is not None]
        if not self.armed:
            # a fired key stays pending until it sends a calm mark or goes silent past its expiry
            self.pending = [k for k in self.pending if self._live(k, mark.step)]
            if not self.pending and total < params.rearm_level:
                self.armed, self.after_warning = True, False
            elif self.after_warning and self.watch is None and total >= 1.0:
                found += self._escalate(mark.step, parts, total, params, epochs)
            return found
        if total < 1.0:
            return found
        signals = _fired(parts, params)
        self.armed, self.pending = False, list(signals)
        tp, self.watch = self._turning_point(mark.step, signals, parts, total, params, epochs)
        self.after_warning = tp.severity == "warning"
        return [*found, tp]

    def _escalate(self, step: int, parts: dict[str, float], total: float, params: TurningParams,
                  epochs: EpochMap) -> list[TurningPoint]:
        """While a warning keeps the detector disarmed, evidence that is critical on its own is a new turning
        point (an instability, then the collapse); anything less stays part of the warning. Only what came within
        the last `corroborate_epochs` counts: the warning's own evidence arriving late never upgrades it outside
        its window."""
        signals = _fired(parts, params)
        tp, _ = self._turning_point(step, signals, parts, total, params, epochs, recent=True)
        if tp.severity != "critical":
            return []
        self.after_warning, self.pending = False, sorted({*self.pending, *signals})
        return [tp]

    def _note(self, mark: Mark, contribution: float, params: TurningParams) -> None:
        group = _group(mark.key)
        # an angle jump (or drop) is one strong enough to be named in a detection's signals; a degradation must
        # reach corroborate_min
        if contribution >= (params.contrib_min if group.startswith("angle") else params.corroborate_min):
            self.strong_at[mark.key] = mark.step
        if group.startswith("angle") and group not in DERIVED_GROUPS:  # a rise stays up; a freeze is no rise
            per_epoch = 1 if group == "angle_epoch" else params.blocks_per_epoch
            if mark.streak >= params.sustain_epochs * per_epoch:
                self.sustained_at[mark.key] = mark.step

    def _seen(self, lo: int, onset: int, hi: int) -> Corroboration:
        """An angle jump anywhere in [lo, hi]; a degradation or a sustained rise only from the turning step on
        (one that came before the jump did not come with it: on stable runs that is noise meeting a spike)."""
        strong = {k: at for k, at in self.strong_at.items() if lo <= at <= hi}
        degradations = sorted(k for k, at in strong.items() if _group(k) in DEGRADATION_GROUPS and at >= onset)
        alone = all(_group(k) in SUPPORTING_GROUPS for k in degradations)
        return Corroboration(jumps=sorted(k for k in strong if k.startswith("angle")),
                             degradations=[] if alone else degradations,
                             sustained=sorted(k for k, at in self.sustained_at.items() if onset <= at <= hi),
                             alone=degradations if alone else [])

    def _upgrade(self, step: int, parts: dict[str, float], total: float, params: TurningParams,
                 epochs: EpochMap) -> TurningPoint | None:
        """The watched warning, made critical by what arrived within its window (same turning step)."""
        if self.watch is None:
            return None
        if step > self.watch["hi"]:
            self.watch = None  # the window closed: it stays a warning
            return None
        seen = self._seen(self.watch["lo"], self.watch["tp"]["step"], self.watch["hi"])
        if not seen.critical:
            return None
        warning = TurningPoint(**self.watch["tp"])
        saw = self.watch["saw"]
        self.watch, self.after_warning = None, False
        extra = [k for k in seen.degradations + seen.jumps if k not in warning.signals and k in self.current]
        marks = [self.current[k] for k in extra]
        corroborated_by = seen.keys(warning.signals)
        return replace(warning, detected_step=step, detected_epoch=epochs.at(step),
                       signals=[*warning.signals, *extra],
                       scores={**warning.scores, **{m.key: round(m.peak_z, 3) for m in marks}},
                       evidence={**warning.evidence, **_evidence(marks, parts)}, combined=total,
                       severity="critical", corroborated_by=corroborated_by, missing="",
                       explanation=explain(warning.step, warning.epoch, step, epochs.at(step),
                                           f"{saw}; then {describe(marks)}" if marks else saw, corroborated_by, ""))

    def _live(self, key: str, step: int) -> bool:
        mark = self.current.get(key)
        return mark is not None and mark.expires >= step and not mark.calm

    def _contributions(self, step: int, params: TurningParams) -> tuple[dict[str, float], float]:
        """coef·S of every live key with S > 0, and C: only the strongest key of each family counts towards C
        (angle/G and angle/D of one jump are one piece of evidence, not two), and derived families not at all
        (they only corroborate)."""
        parts: dict[str, float] = {}
        best: dict[str, float] = {}
        for key, mark in self.current.items():
            if mark.cusum > 0 and mark.expires >= step:
                group = _group(key)
                c = params.groups[group].coef * mark.cusum
                if c > 0:
                    parts[key] = c
                    if c > best.get(group, 0.0) and group not in DERIVED_GROUPS:
                        best[group] = c
        return parts, sum(best.values())

    def _turning_point(self, step: int, signals: list[str], parts: dict[str, float], total: float,
                       params: TurningParams, epochs: EpochMap, *, recent: bool = False,
                       ) -> tuple[TurningPoint, dict[str, Any] | None]:
        """The detection at `step` and, for a warning whose window is still open, what `watch` keeps of it. Its
        evidence is what came within `corroborate_epochs` of the turning step (and up to `step`), or with
        `recent`, of `step` itself."""
        marks = [self.current[k] for k in signals]
        angles = [m for m in marks if m.key.startswith("angle")]
        # the (lower) median onset: one weak key lifted early by noise does not move the turning step
        onsets = sorted(m.onset for m in (angles or marks))
        onset = onsets[(len(onsets) - 1) // 2]
        # the window: corroboration_epochs either side of the onset, and everything up to this detection
        width = params.corroborate_epochs * epochs.steps_per_epoch(step, params.block_steps * params.blocks_per_epoch)
        lo, hi = int(onset - width), int(onset + width)
        since = int(step - width)
        seen = self._seen(since, since, step) if recent else self._seen(lo, onset, max(hi, step))
        saw = describe(marks)
        missing = seen.missing(params)
        corroborated_by = seen.keys(signals)
        tp = TurningPoint(step=onset, epoch=epochs.at(onset), detected_step=step, detected_epoch=epochs.at(step),
                          signals=signals, scores={m.key: round(m.peak_z, 3) for m in marks},
                          evidence=_evidence(marks, parts), combined=total,
                          explanation=explain(onset, epochs.at(onset), step, epochs.at(step), saw, corroborated_by,
                                              missing),
                          severity="critical" if seen.critical else "warning", corroborated_by=corroborated_by,
                          missing=missing)
        return tp, None if seen.critical or hi <= step else {"tp": tp.to_dict(), "lo": lo, "hi": hi, "saw": saw}

    def to_state(self) -> dict[str, Any]:
        return {"current": [m.to_list() for m in self.current.values()], "armed": self.armed,
                "pending": self.pending, "strong_at": self.strong_at, "sustained_at": self.sustained_at,
                "watch": self.watch, "after_warning": self.after_warning}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Combiner:
        current = {m.key: m for m in (Mark.from_list(row) for row in state["current"])}
        # states saved before severities existed have no strong_at / sustained_at / watch
        return cls(current, bool(state["armed"]), list(state["pending"]), dict(state.get("strong_at", {})),
                   dict(state.get("sustained_at", {})), state.get("watch"), bool(state.get("after_warning", False)))


def _fired(parts: Mapping[str, float], params: TurningParams) -> list[str]:
    """The keys a detection names: every contribution of at least `contrib_min`, strongest first."""
    return sorted((k for k, c in parts.items() if c >= params.contrib_min), key=lambda k: -parts[k])


def _evidence(marks: Sequence[Mark], parts: Mapping[str, float]) -> dict[str, dict[str, float]]:
    return {m.key: {"value": m.value, "baseline": m.baseline, "z": m.peak_z, "cusum": m.cusum,
                    "contribution": parts.get(m.key, 0.0)} for m in marks}


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

    def steps_per_epoch(self, step: int, unknown: float) -> float:
        """The mean epoch length over the epochs seen up to `step` (only those: online the later ones are not
        known yet), or `unknown` before two epochs were seen."""
        i = int(np.searchsorted(self.steps, step, side="right")) - 1
        if i < 1:
            return unknown
        return (self.steps[i] - self.steps[0]) / (self.epochs[i] - self.epochs[0])


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def describe(marks: Sequence[Mark]) -> str:
    """What the keys of a detection did, for a person."""
    parts = []
    for m in marks:
        if _group(m.key) in DERIVED_GROUPS:  # the one derived family: per-step angles falling
            ratio = m.baseline / m.value if m.value > 0 else math.inf
            parts.append(f"{source_key(m.key)} fell to {_fmt(m.value)} rad, 1/{ratio:.1f} of its recent level "
                         f"(z {m.peak_z:.1f})")
        elif m.key.startswith("angle"):
            ratio = m.value / m.baseline if m.baseline > 0 else math.inf
            parts.append(f"{m.key} jumped to {_fmt(m.value)} rad, {ratio:.1f}× its recent level (z {m.peak_z:.1f})")
        elif m.key.startswith("loss/"):
            parts.append(f"{m.key} moved to {_fmt(m.value)} from {_fmt(m.baseline)} (z {m.peak_z:.1f})")
        elif family_of(m.key) == family_of("eval/fid"):
            parts.append(f"{m.key} rose to {_fmt(m.value)} from {_fmt(m.baseline)} (z {m.peak_z:.1f})")
        else:
            parts.append(f"{m.key} fell to {_fmt(m.value)} from {_fmt(m.baseline)} (z {m.peak_z:.1f})")
    return "; ".join(parts)


def explain(onset: int, epoch: int | None, step: int, detected_epoch: int | None, saw: str,
            corroborated_by: Sequence[str], missing: str) -> str:
    """One line a person reads in the alerts panel and the webhook: a critical one says what corroborated it, a
    warning what was missing."""
    where = f"epoch {epoch} (step {onset})" if epoch is not None else f"step {onset}"
    seen = f"epoch {detected_epoch}" if detected_epoch is not None else f"step {step}"
    if missing:
        return f"Not a turning point: {missing}. Instability at {where}: {saw}; detected at {seen}."
    return f"Turning point at {where}: {saw}; corroborated by {', '.join(corroborated_by)}; detected at {seen}."


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
        """Stored keys of a family the detector scores (a family with coef 0 is not even tracked; the names of
        derived families are the detector's own: a stored key with such a name is not read)."""
        family = family_of(key)
        return family is not None and family[0] not in DERIVED_GROUPS and self._tracks(key)

    def _tracks(self, key: str) -> bool:
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
            for tracked in (key, *(k for k in derived_keys(key) if self._tracks(k))):
                tracker = self.trackers.get(tracked)
                if tracker is None:
                    tracker = self.trackers[tracked] = SignalTracker(
                        tracked, self.params.block_steps, self.params.blocks_per_epoch, self.params.expiry_gaps)
                self.marks.extend(tracker.feed(steps, values, epochs, self.params.groups[tracker.group]))

    def decide(self, horizon: int | None = None) -> list[TurningPoint]:
        """Fold the marks up to the horizon (the step every active key has reported past) in step order, after
        the marks of keys that were silent a long time and now report steps already folded. Deciding only up to
        the horizon makes every decision, severity included, what the whole series gives: an evaluation that
        arrives late is still merged in step order (an alert waits for the evaluations of its steps). `horizon`
        overrides the trackers' (a replay of marks computed elsewhere: bench/turning.py)."""
        cut = self.folded_to
        # a late mark is taken as news at the folded step (its own step is history that is already decided)
        late = [replace(m, step=cut) for m in self.marks if cut is not None and m.step <= cut]
        fresh = sorted((m for m in self.marks if cut is None or m.step > cut), key=lambda m: (m.step, m.key))
        horizon = self._horizon() if horizon is None else horizon
        ready = 0 if horizon is None else int(np.searchsorted([m.step for m in fresh], horizon, side="right"))
        new: list[TurningPoint] = []
        for mark in [*late, *fresh[:ready]]:
            new += self.folded.apply(mark, self.params, self.epochs)
            self.folded_to = mark.step if self.folded_to is None else max(self.folded_to, mark.step)
        self.marks = fresh[ready:]
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
