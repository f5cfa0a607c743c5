"""Per-key evidence for the turning-point detector (server/alerts/turning.py): one `SignalTracker` per metric key.

A tracker turns one series into *marks*. Points are averaged into blocks (per-step keys: a quarter of an epoch by
default; per-epoch keys and evaluations: one point per block), transformed (log for angles, whose noise is
multiplicative), and each block is compared with a robust baseline of the blocks before it (median and MAD of a
trailing window that leaves out the newest `guard` blocks, so a ramp is still compared with the level before it).
The robust z-score, capped so that one outlier cannot decide alone, feeds a one-sided CUSUM: S ← max(0, S + min(z,
z_cap) − κ). A sustained shift grows S quickly; noise and isolated spikes keep it near zero. Every block with S > 0,
and every block after it until `calm_blocks` blocks in a row were back at S = 0, becomes a mark; the last of those
is a calm mark, which is what re-arms the detector after it fired.

A tracker sees only its own key, in step order, so its marks depend on nothing but that key's points: this is
what makes the online detector (fed in batches) agree with the offline one (fed everything at once).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from functools import lru_cache
from typing import Any

import numpy as np

ANGLE_FLOOR = 1e-12  # log of an angle (or a count, an FID) of exactly 0
ONSET_Z = 3.0  # a block this far from its baseline marks where an excursion really started


@dataclass(frozen=True)
class GroupParams:
    """How one family of keys is scored. Window, history and guard are in blocks of that family."""

    window: int  # blocks in the baseline
    min_history: int  # blocks of baseline needed before the first score (warm-up is never scored)
    guard: int  # newest blocks kept out of the baseline
    kappa: float  # CUSUM allowance per block, in z units
    z_cap: float  # largest z one block can add
    coef: float  # weight of S in the combined score (the detector fires at Σ coef·S ≥ 1)
    floor_abs: float  # smallest spread, in transformed units
    floor_rel: float  # smallest spread relative to |baseline|
    calm_blocks: int  # blocks in a row at S = 0 that make the key calm again


# Key families: (prefix or exact key, group, transform, direction). Direction +1 = a rise is bad, −1 = a drop is
# bad, 0 = a change either way counts.
FAMILIES: tuple[tuple[str, str, str, int], ...] = (
    ("angle_epoch/", "angle_epoch", "log", 1),
    ("angle/", "angle_step", "log", 1),
    ("eval/quality", "quality", "raw", -1),
    ("eval/diversity", "diversity", "raw", -1),
    # FID and mode counts move by factors (FID 100 → 200, modes 450 → 50), so they are scored in log
    ("eval/fid", "fid", "log", 1),
    ("eval/modes_covered", "modes", "log", -1),
    ("loss/", "loss", "raw", 0),
    ("angle_drop/", "angle_drop", "log", -1),  # derived from angle/ (DERIVED below)
)
PER_POINT_GROUPS = frozenset({"angle_epoch", "quality", "diversity", "fid", "modes"})  # one point = one block
DEGRADATION_GROUPS = frozenset({"quality", "diversity", "fid", "modes"})  # what corroborates an angle jump
# ...but FID only beside another of them: a small sample's FID is a noisy lone witness (on 1,000 digits samples it
# moves 2x between evaluations of healthy runs, and a stable run's one-evaluation 107 -> 322 -> 98 made a critical)
SUPPORTING_GROUPS = frozenset({"fid"})
# Families the detector derives from another family's series instead of reading a stored key: `angle_drop/X`
# scores the points of `angle/X` for a *fall* far below their recent level. When a GAN collapses the weights
# often freeze instead of thrashing (D saturates and G's gradient vanishes: the per-step angles drop 10-300×
# within an epoch in the recorded lr-ramp runs, docs/alerts.md), which is instability evidence as much as a jump.
# A derived family only corroborates: it adds nothing to the combined score, so it never fires on its own.
DERIVED: tuple[tuple[str, str], ...] = (("angle/", "angle_drop/"),)  # (source prefix, derived prefix)
DERIVED_GROUPS = frozenset(group for prefix, group, _, _ in FAMILIES if prefix in {d for _, d in DERIVED})
GROUPS: tuple[str, ...] = tuple(dict.fromkeys(f[1] for f in FAMILIES))


@lru_cache(maxsize=4096)
def family_of(key: str) -> tuple[str, str, int] | None:
    """(group, transform, direction) of a key the detector uses, or None for keys it ignores."""
    for prefix, group, transform, direction in FAMILIES:
        if key == prefix or (prefix.endswith("/") and key.startswith(prefix)):
            return group, transform, direction
    return None


def derived_keys(key: str) -> list[str]:
    """The keys the detector derives from a stored key (`angle/D` → `angle_drop/D`)."""
    return [derived + key[len(source):] for source, derived in DERIVED if key.startswith(source)]


def source_key(key: str) -> str:
    """The stored key a derived key is computed from (`angle_drop/D` → `angle/D`); other keys are their own."""
    for source, derived in DERIVED:
        if key.startswith(derived):
            return source + key[len(derived):]
    return key


def median_of(xs: Sequence[float]) -> float:
    """Median of a short list (np.median costs ~20 µs of overhead, this ~1 µs for the windows used here)."""
    s = sorted(xs)
    n = len(s)
    return float(s[n // 2]) if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


@dataclass(frozen=True)
class Mark:
    """What one key says at one block: its CUSUM `cusum` (0 when calm), the block's z-score, the block value and
    baseline (back in the key's units), where the current excursion started, until which step the mark stands
    if the key goes silent, and how many blocks in a row ended above the baseline by at least κ (`streak`: a
    sustained rise, as opposed to a spike)."""

    step: int
    key: str
    cusum: float
    z: float
    peak_z: float
    value: float
    baseline: float
    onset: int
    expires: float
    calm: bool = False
    streak: int = 0

    def to_list(self) -> list[Any]:
        return [self.step, self.key, self.cusum, self.z, self.peak_z, self.value, self.baseline, self.onset,
                self.expires if math.isfinite(self.expires) else None, self.calm, self.streak]

    @classmethod
    def from_list(cls, row: Sequence[Any]) -> Mark:
        # a state saved before `streak` existed has 10 fields: its marks read as streak 0
        step, key, cusum, z, peak_z, value, baseline, onset, expires, calm, *rest = row
        return cls(int(step), str(key), float(cusum), float(z), float(peak_z), float(value), float(baseline),
                   int(onset), math.inf if expires is None else float(expires), bool(calm),
                   int(rest[0]) if rest else 0)


@dataclass
class SignalTracker:
    """Blocks, baseline and CUSUM of one key. All fields are plain numbers and lists (JSON state)."""

    key: str
    block_steps: int  # block length before the epoch length is known (or when points carry no epoch)
    blocks_per_epoch: int
    expiry_gaps: float  # a mark stands for this many typical block gaps after its step
    # partial block: [first_step, last_step, sum, n, block_id]
    partial: list[Any] | None = None
    epoch: int | None = None
    epoch_start: int | None = None
    epoch_len: int | None = None
    last_step: int | None = None
    window: list[float] = field(default_factory=list)
    gaps: list[int] = field(default_factory=list)
    last_block_step: int | None = None
    cusum: float = 0.0
    onset: int = 0
    onset_sure: bool = False
    peak_z: float = 0.0
    peak_value: float = 0.0
    peak_baseline: float = 0.0
    calm_run: int = 0
    streak: int = 0
    rise_from: float | None = None  # the highest block of the baseline window the current streak rose from
    ignored: int = 0  # points out of step order or not finite
    # points given to `feed`, ignored ones included; None: a state saved before it was counted. More points stored
    # than fed once the tracker has read to the series' end means some landed behind its cursor (a backfill).
    fed: int | None = 0

    def __post_init__(self) -> None:
        family = family_of(self.key)
        if family is None:
            raise ValueError(f"turning detector: key {self.key!r} is not one it uses (angles, eval/quality, "
                             f"eval/diversity, eval/fid, eval/modes_covered, loss/*)")
        self.group, self.transform, self.direction = family

    # ---- feeding ---------------------------------------------------------------------------------------------
    def feed(self, steps: np.ndarray, values: np.ndarray, epochs: np.ndarray | None,
             params: GroupParams) -> list[Mark]:
        """Points of this key sorted by step (steps at or before the last one seen are ignored and counted;
        NaN/inf are skipped: the NaN-loss rule handles them) → new marks."""
        if self.fed is not None:
            self.fed += len(steps)
        fresh = steps > (self.last_step if self.last_step is not None else np.iinfo(np.int64).min)
        fresh[1:] &= np.diff(steps) > 0
        self.ignored += int(len(steps) - fresh.sum())
        steps, values = steps[fresh], values[fresh]
        epochs = None if epochs is None else epochs[fresh]
        if len(steps) == 0:
            return []
        self.last_step = int(steps[-1])
        finite = np.isfinite(values)
        self.ignored += int(len(values) - finite.sum())
        steps, values = steps[finite], values[finite]
        epochs = None if epochs is None else epochs[finite]
        if len(steps) == 0:
            return []
        y = np.log(np.maximum(values, ANGLE_FLOOR)) if self.transform == "log" else values
        ids = self._block_ids(steps, epochs)
        starts = np.flatnonzero(np.r_[True, np.any(ids[1:] != ids[:-1], axis=1)])
        ends = np.r_[starts[1:], len(y)]
        marks: list[Mark] = []
        for i, end in zip(starts, ends, strict=True):
            block_id = ids[i].tolist()
            last = int(steps[end - 1])
            # the block sum is added strictly left to right, continuing the partial block's sum: the same bits
            # however the batches were cut (np.add.reduceat and a sum of partial sums round differently)
            values_in = y[i:end].tolist()
            if self.partial is not None and self.partial[4] == block_id:
                self.partial = [self.partial[0], last, sum(values_in, self.partial[2]),
                                self.partial[3] + len(values_in), block_id]
            else:
                if self.partial is not None:
                    marks.extend(self._close_block(params))
                self.partial = [int(steps[i]), last, sum(values_in, 0.0), len(values_in), block_id]
            if self.group in PER_POINT_GROUPS:
                marks.extend(self._close_block(params))
        return marks

    def _block_ids(self, steps: np.ndarray, epochs: np.ndarray | None) -> np.ndarray:
        """(epoch, sub-block) per point: per-step keys get `blocks_per_epoch` blocks per epoch once an epoch
        length was seen (before that, or without epochs, blocks of `block_steps` steps); others one per point."""
        if self.group in PER_POINT_GROUPS:
            return np.stack([steps, np.zeros_like(steps)], axis=1)
        if epochs is None:
            epochs = np.full_like(steps, -1)
        ids = np.empty((len(steps), 2), dtype=np.int64)
        bounds = np.flatnonzero(np.r_[True, epochs[1:] != epochs[:-1], True])
        for a, b in zip(bounds[:-1], bounds[1:], strict=False):
            epoch = int(epochs[a])
            if epoch != (self.epoch if self.epoch is not None else -1) or self.epoch_start is None:
                if self.epoch is not None and self.epoch_start is not None and epoch == self.epoch + 1:
                    self.epoch_len = int(steps[a]) - self.epoch_start
                self.epoch, self.epoch_start = epoch, int(steps[a])
            length = max(1, self.epoch_len // self.blocks_per_epoch) if self.epoch_len else self.block_steps
            ids[a:b, 0] = epoch
            ids[a:b, 1] = (steps[a:b] - self.epoch_start) // length
        return ids

    # ---- one block -------------------------------------------------------------------------------------------
    def _close_block(self, params: GroupParams) -> list[Mark]:
        assert self.partial is not None
        first, last, total, n, _ = self.partial
        self.partial = None
        y = total / n
        marks: list[Mark] = []
        history = self.window[: len(self.window) - params.guard] if params.guard else self.window
        if self.last_block_step is not None:
            self.gaps = [*self.gaps[-4:], last - self.last_block_step]
        self.last_block_step = last
        if len(history) >= params.min_history:
            marks.extend(self._score(first, last, y, history, params))
        self.window = [*self.window, y][-(params.window + params.guard):]
        return marks

    def _score(self, first: int, last: int, y: float, history: list[float], params: GroupParams) -> list[Mark]:
        median = median_of(history)
        mad = median_of([abs(h - median) for h in history])
        spread = max(1.4826 * mad, params.floor_abs, params.floor_rel * abs(median))
        z = (y - median) / spread
        z = abs(z) if self.direction == 0 else self.direction * z
        before = self.cusum
        self.cusum = max(0.0, before + min(z, params.z_cap) - params.kappa)
        if self.cusum > 0 and before == 0:
            self.onset, self.peak_z, self.onset_sure = first, -math.inf, False
        if self.cusum > 0 and not self.onset_sure and z >= ONSET_Z:
            # noise often lifts S a little before the real change: the onset is the first clearly shifted block
            self.onset, self.onset_sure = first, True
        if self.cusum > 0 and z > self.peak_z:
            self.peak_z, self.peak_value, self.peak_baseline = z, self._units(y), self._units(median)
        gap = median_of(self.gaps) if self.gaps else math.inf
        expires = last + self.expiry_gaps * gap
        marks: list[Mark] = []
        self.calm_run = self.calm_run + 1 if self.cusum == 0 else 0
        self._count_rise(y, z, history, params)
        # while recovering (S back at 0 but not yet calm) the key keeps sending marks, so that a key that is
        # still reporting is never mistaken for one that went silent
        if self.cusum > 0 or before > 0 or 0 < self.calm_run < params.calm_blocks:
            marks.append(Mark(last, self.key, self.cusum, z, max(self.peak_z, z), self.peak_value,
                              self.peak_baseline, self.onset, expires, streak=self.streak))
        if self.calm_run == params.calm_blocks:
            marks.append(Mark(last, self.key, 0.0, z, 0.0, self._units(y), self._units(median), last, expires,
                              calm=True))
        return marks

    def _count_rise(self, y: float, z: float, history: list[float], params: GroupParams) -> None:
        """`streak`: blocks in a row at least κ spreads above the baseline *and* above every block of the window
        the rise started from. A return to the level held before a freeze (weights stalled for a few epochs, then
        moving again as before) is thus no rise, however long the frozen blocks keep the median down."""
        if z < params.kappa:
            self.streak, self.rise_from = 0, None
            return
        if self.rise_from is None:
            self.rise_from = max(history)
        if y > self.rise_from:
            self.streak += 1
        else:
            self.streak, self.rise_from = 0, None

    def _units(self, y: float) -> float:
        return math.exp(y) if self.transform == "log" else y

    # ---- state -----------------------------------------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        # a shallow copy is enough (lists are replaced, never mutated in place) and 10× cheaper than asdict
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> SignalTracker:
        return cls(**{"fed": None, **state})
