"""When does the demo's collapsing run turn? The `demo-turning` preset over 5 seeds (and `demo-stable` for contrast).

Each run trains with the zoo's loop and bench/turning_record.py's in-process recorder (the Monitor's angle
trackers + a bench-only digits judge every checkpoint), then the turning point is found three ways:

* angle jump: the first epoch (after the first 3) whose `angle_epoch/G` or `angle_epoch/D` exceeds twice the
  median of the 3 epochs before it — the simple heuristic the issue asks for;
* detector: `sqd.server.alerts.turning.detect_turning_points` on the same series (what the dashboard alerts on);
* hindsight: bench/turning_record.py's label (diversity falls below 75 % of its best and stays there).

usage: .venv/bin/python bench/demo_turning.py [--seeds 5] [--steps N] [--preset demo-turning] [--stable]
Recorded runs are kept in bench/data/<preset>-<config hash>/ and reused while the preset stays the same.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import time
from pathlib import Path

import numpy as np
from turning_data import DATA_DIR
from turning_record import record

JUMP = 2.0
HISTORY = 3


def series(data: np.lib.npyio.NpzFile) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    keys = {name.split("|")[0] for name in data.files if "|" in name}
    return {k: (data[f"{k}|steps"], data[f"{k}|values"], data[f"{k}|epochs"]) for k in keys}


def angle_jump_epoch(s: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> int | None:
    found = []
    for key in ("angle_epoch/G", "angle_epoch/D"):
        _, values, epochs = s[key]
        for i in range(HISTORY + 1, len(values)):
            if values[i] > JUMP * float(np.median(values[i - HISTORY:i])):
                found.append(int(epochs[i]))
                break
    return min(found) if found else None


def detector_epoch(s: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> tuple[int | None, str]:
    try:
        from sqd.server.alerts.turning import detect_turning_points
    except ImportError:
        return None, "(detector not installed)"
    points = detect_turning_points({k: v for k, v in s.items() if not k.startswith("loss/")})
    if not points:
        return None, ""
    return points[0].epoch, ",".join(points[0].signals)


def run_dir(root: Path, preset: str, steps: int | None) -> Path:
    """One folder per resolved config (and step count), so a changed preset is never judged on old runs."""
    from sqd.presets import resolve_config

    config = json.dumps(resolve_config(preset, {}).model_dump(mode="json"), sort_keys=True)
    return root / f"{preset}-{hashlib.sha256(f'{config}|{steps}'.encode()).hexdigest()[:10]}"


def fmt(x: int | None) -> str:
    return "-" if x is None else str(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=None, help="generator steps (default: the preset's)")
    parser.add_argument("--preset", default="demo-turning")
    parser.add_argument("--out", type=Path, default=DATA_DIR)
    args = parser.parse_args()
    print(f"{args.preset}: turning epoch per seed (angle jump ×{JUMP} over the median of {HISTORY} epochs / "
          f"detector / hindsight on diversity)")
    print(f"{'seed':>4} {'jump':>5} {'detector':>8} {'hindsight':>9}  {'minutes':>7}  signals")
    jumps: list[int] = []
    out = run_dir(args.out, args.preset, args.steps)
    for seed in range(args.seeds):
        path = out / f"{args.preset}-seed{seed}.npz"
        t0 = time.monotonic()
        if not path.exists():
            record(args.preset, seed, args.steps, out)
        minutes = (time.monotonic() - t0) / 60
        with np.load(path) as data:
            s = series(data)
            spe = float(data["steps_per_epoch"])
            hindsight = int(data["turning_step"])
        jump = angle_jump_epoch(s)
        det, signals = detector_epoch(s)
        label = None if hindsight < 0 else int(hindsight // spe)
        if jump is not None:
            jumps.append(jump)
        print(f"{seed:>4} {fmt(jump):>5} {fmt(det):>8} {fmt(label):>9}  {minutes:>7.1f}  {signals}")
    if jumps:
        print(f"angle-jump epoch: median {statistics.median(jumps):g}, range {min(jumps)}-{max(jumps)}, "
              f"{len(jumps)}/{args.seeds} seeds turned")
    else:
        print(f"angle-jump epoch: no seed turned (0/{args.seeds})")


if __name__ == "__main__":
    main()
