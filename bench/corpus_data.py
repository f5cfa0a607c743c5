"""The recorded corpus (bench/data/corpus, written by bench/corpus_record.py): loading, families, labels, replay.

Shared by bench/turning_corpus.py (the detector's figures per family), bench/demo_stable_alerts.py (the demo
check) and the corpus test. Each run is labelled here by bench/corpus_labels.py, so the label always follows the
rule as committed, and replayed through `detect_turning_points` — the detector the server runs online, fed the whole
series at once (online = offline by construction).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from corpus_labels import Label, label_arrays

from sqd.server.turning import TurningPoint, detect_turning_points

CORPUS_DIR = Path(__file__).parent / "data" / "corpus"
SERIES_FAMILIES = ("angle/", "angle_epoch/", "loss/", "eval/")
REQUIRED_KEYS = ("angle/G", "angle/D", "angle_epoch/G", "angle_epoch/D", "loss/G", "loss/D", "eval/quality",
                 "eval/diversity", "eval/modes_covered")
FAMILY_ORDER = ("demo-stable", "demo-turning", "sqd-grid no-GP", "sqd-grid GP", "sqd-grid ramp no-GP",
                "sqd-grid ramp GP", "icr", "r3gan", "gran")


EPOCHLY_TAG = "e1"  # in a variant: evaluated at every epoch's end (bench/corpus_record.py's EPOCHLY)


def base_variant(variant: str) -> str:
    """The variant without its cadence tag: "ramp-e1" → "ramp", "e1" → ""."""
    return "-".join(t for t in variant.split("-") if t and t != EPOCHLY_TAG)


def family(preset: str, variant: str = "") -> str:
    """The report's family of a preset: the demos apart, the SQD grid split by GP (seed 003's question) and by
    variant ("ramp": demo-turning's lr warm-up on every twin, bench/corpus_record.py); the evaluation cadence is
    reported apart (`CorpusRun.cadence`), not as a family."""
    variant = base_variant(variant)
    if preset.startswith("demo-"):
        return preset
    if preset.startswith("sqd-"):
        return f"sqd-grid {variant + ' ' if variant else ''}{'GP' if '-gp-' in preset else 'no-GP'}"
    head = preset.split("-")[0]  # r3gan, icr, grand / granc
    return "gran" if head.startswith("gran") else head


@dataclass
class CorpusRun:
    name: str
    preset: str
    variant: str  # "", "ramp", and either with "-e1" / "e1" (bench/corpus_record.py)
    seed: int
    steps_per_epoch: float
    label: Label
    stored_label_step: int  # what the recorder wrote; the test checks it still agrees with the rule
    series: dict[str, tuple[np.ndarray, np.ndarray, list[int | None]]] = field(repr=False)
    alerts: list[dict[str, Any]] = field(repr=False)
    config: dict[str, Any] = field(repr=False)
    meta: dict[str, Any] = field(repr=False)

    @property
    def family(self) -> str:
        return family(self.preset, self.variant)

    @property
    def cadence(self) -> str:
        """How often the worker evaluated the run, from its resolved config: "every epoch" or "every N steps"."""
        train = self.config.get("train", {})
        n = train.get("checkpoint_every_epochs")
        if n:
            return "every epoch" if n == 1 else f"every {n} epochs"
        return f"every {train.get('checkpoint_every')} steps"

    def replay(self) -> list[TurningPoint]:
        return detect_turning_points(self.series)

    def epoch_of(self, step: int) -> float:
        return step / self.steps_per_epoch


def severity(tp: Any) -> str:
    # `TurningPoint.severity` arrives with issue 14's item 1; before it every turning point was an alert of its own
    return str(getattr(tp, "severity", "critical"))


def load(path: Path) -> CorpusRun:
    with np.load(path) as z:
        arrays = {name: z[name] for name in z.files}
    keys = sorted({name.split("|")[0] for name in arrays if "|" in name})
    missing = [k for k in REQUIRED_KEYS if k not in keys]
    if missing:
        raise ValueError(f"{path.name}: no {', '.join(missing)}")
    series = {k: (arrays[f"{k}|steps"], arrays[f"{k}|values"],
                  [None if e < 0 else int(e) for e in arrays[f"{k}|epochs"]]) for k in keys}
    meta = json.loads(str(arrays["run"]))
    return CorpusRun(path.stem, meta["preset"], meta.get("variant", ""), int(meta["seed"]),
                     float(arrays["steps_per_epoch"]),
                     label_arrays(arrays), int(arrays["label_step"]), series, json.loads(str(arrays["alerts"])),
                     json.loads(str(arrays["config"])), meta)


def load_corpus(directory: Path = CORPUS_DIR) -> Iterator[CorpusRun]:
    for path in sorted(directory.glob("*.npz")):
        yield load(path)
