"""Record the labelled corpus (bench/data/corpus) through the whole stack: `sqd up` in its own data dir and port,
runs launched over REST, their signals logged by the Monitor over the bus, Q/D measured by the worker, and each
finished run exported over REST into one compact file `{preset}-seed{k}.npz`.

A file holds, per series key of the families below, `{key}|steps` (int32), `{key}|values` (float32) and
`{key}|epochs` (int32, −1 where the point had none); `alerts` (the alerts the server raised live, JSON), `config`
(the run's resolved config, JSON), `run` (id, preset, seed, timings, JSON) and `label_epoch` / `label_step` (the
rule of bench/corpus_labels.py, −1 for a stable run).

Resumable: a run whose file exists is skipped; a run already launched in this data dir (found by name) is waited for
instead of launched again. Runs are launched in PLAN order, at most `--concurrency` at once, and none once it could
not finish before `--deadline` (UTC, HH:MM); at the deadline the runs still going are cancelled and the stack stops.

    nohup .venv/bin/python bench/corpus_record.py --deadline 09:05 > /tmp/corpus.log 2>&1 &
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from corpus_labels import label_arrays

from sqd.client import Client
from sqd.errors import SQDError

ROOT = Path(__file__).resolve().parents[1]
CORPUS_DIR = Path(__file__).parent / "data" / "corpus"
FAMILIES = ("angle/", "angle_epoch/", "loss/", "eval/")
# every run at least as long as the demo (6000 steps) and evaluated as often as it was then (every 250 steps; the
# grid's presets evaluate at every epoch's end since 2026-12-07, which EPOCHLY below asks of any preset)
LENGTH = {"train.steps": 6000, "train.checkpoint_every": 250, "train.checkpoint_every_epochs": None}
GRID = [f"sqd-{loss}{gp}-digits" for loss in ("nsgan", "lsgan", "hinge", "wgan") for gp in ("", "-gp")]
# The stress variant of the grid: demo-turning's lr warm-up (2e-3 → 4e-2 over 3,000 steps, past what the NSGAN twin
# tolerates) on every twin, so the corpus holds collapses after a healthy start — what the alert is for — and seed
# 003's question gets asked under stress. `sqd-nsgan-digits` with it is demo-turning itself (same config): not
# recorded twice.
RAMP = {"optim.lr_g": 4e-2, "optim.lr_d": 4e-2, "burnin.steps": 3000, "burnin.lr": 2e-3}
RAMP_GRID = [p for p in GRID if p != "sqd-nsgan-digits"]
# The same runs evaluated at every epoch's end (156 steps) instead of every 250 steps (1.6 epochs): a collapse is
# measured by the next evaluation at most an epoch later, which the corroborated critical waits for. Files
# `{preset}[-ramp]-e1-seed{k}.npz`; the demos evaluate this way by default since 2026-12-07.
EPOCHLY = {"train.checkpoint_every": None, "train.checkpoint_every_epochs": 1}


@dataclass(frozen=True)
class Planned:
    preset: str
    seed: int
    overrides: dict[str, Any]
    variant: str = ""  # "ramp": RAMP on top of the preset

    @property
    def name(self) -> str:
        return f"{self.preset}{'-' + self.variant if self.variant else ''}-seed{self.seed}"


def plan() -> list[Planned]:
    """The recording order: the demo check first, then the families, a third grid seed, the lr-ramp grid, then the
    slow ones (GraN before the R3GAN ablations: a family not yet recorded at all before a further seed of one that
    is); then the fast families again, evaluated every epoch (EPOCHLY), turning runs first; then runs held out
    from the detector's later changes (three batches), and further seeds of the slow families."""
    one = {"train.threads": 1}  # two runs, the worker and the server share 2 cores
    as_then = {**one, "train.checkpoint_every_epochs": None, "train.checkpoint_every": 250}  # the demos until 12-07
    runs = [Planned("demo-stable", k, as_then) for k in range(10)]
    runs += [Planned("demo-turning", k, as_then) for k in range(3)]
    runs += [Planned(p, k, {**one, **LENGTH}) for k in range(2) for p in GRID]
    runs += [Planned(p, k, {**one, **LENGTH}) for p in ("icr-wgan-acgd-digits", "icr-wgan-adam-digits")
             for k in range(3)]
    runs += [Planned(p, 2, {**one, **LENGTH}) for p in GRID]
    runs += [Planned(p, k, {**one, **LENGTH, **RAMP}, "ramp") for k in range(3) for p in RAMP_GRID]
    runs += [Planned(p, k, {**one, **LENGTH}) for k in range(3)
             for p in ("grand-digits", "granc-digits", "r3gan-digits", "r3gan-digits-nsgan", "r3gan-digits-r1")]
    e1 = {**one, **EPOCHLY}
    runs += [Planned("demo-turning", k, e1, "e1") for k in range(3)]
    runs += [Planned(p, 0, {**LENGTH, **e1, **RAMP}, "ramp-e1") for p in RAMP_GRID]
    runs += [Planned("demo-stable", k, e1, "e1") for k in range(10)]
    runs += [Planned(p, 1, {**LENGTH, **e1, **RAMP}, "ramp-e1") for p in RAMP_GRID]
    runs += [Planned(p, 2, {**LENGTH, **e1, **RAMP}, "ramp-e1") for p in RAMP_GRID]
    runs += [Planned(p, k, {**LENGTH, **e1}, "e1") for k in range(2) for p in GRID]
    runs += [Planned(p, k, {**LENGTH, **e1}, "e1") for p in ("icr-wgan-acgd-digits", "icr-wgan-adam-digits")
             for k in range(3)]
    # Held out: recorded after the detector's last change, so its live alerts are the figures of the final rules.
    runs += [Planned("demo-turning", k, e1, "e1") for k in range(3, 6)]
    runs += [Planned("demo-stable", k, e1, "e1") for k in range(10, 20)]
    runs += [Planned(p, 3, {**LENGTH, **e1, **RAMP}, "ramp-e1") for p in RAMP_GRID]
    runs += [Planned(p, 2, {**LENGTH, **e1}, "e1") for p in GRID]
    # held out from the FID rule (a lone FID rise no longer corroborates), which the runs above led to
    runs += [Planned("demo-stable", k, e1, "e1") for k in range(20, 30)]
    runs += [Planned(p, 3, {**LENGTH, **e1}, "e1") for p in GRID if "-gp-" in p]
    runs += [Planned("demo-turning", k, e1, "e1") for k in range(6, 10)]
    # held out from the same detector, recorded a session later: turning runs of every family first
    runs += [Planned(p, 4, {**LENGTH, **e1, **RAMP}, "ramp-e1") for p in RAMP_GRID]
    runs += [Planned(p, 3, {**LENGTH, **e1}, "e1") for p in GRID if "-gp-" not in p]
    runs += [Planned(p, 3, {**LENGTH, **e1}, "e1") for p in ("icr-wgan-acgd-digits", "icr-wgan-adam-digits")]
    runs += [Planned("demo-turning", k, e1, "e1") for k in range(10, 14)]
    # the slow families at this cadence (15-25 min a run here): first R3GAN's NS-loss ablation, whose seed 0 lost
    # half its modes at 250 steps with no alert, and GraN-D; then R3GAN and its R1 ablation; then the NS
    # ablation's further seeds (the one that turned, again at this cadence); then GraN-C and more seeds
    slow = [("r3gan-digits-nsgan", 0), ("grand-digits", 0), ("r3gan-digits", 0), ("r3gan-digits-r1", 0),
            ("r3gan-digits-nsgan", 1), ("r3gan-digits-nsgan", 2), ("granc-digits", 0)]
    runs += [Planned(p, k, {**LENGTH, **e1}, "e1") for p, k in slow]
    # a third held-out batch (2026-12-07 night, the same detector): more turns of every fast family, then stable runs
    icr = ("icr-wgan-acgd-digits", "icr-wgan-adam-digits")
    runs += [Planned(p, k, {**LENGTH, **e1, **RAMP}, "ramp-e1") for k in (5, 6) for p in RAMP_GRID]
    runs += [Planned(p, k, {**LENGTH, **e1}, "e1") for k in (4, 5) for p in (*GRID, *icr) if "-gp-" not in p]
    runs += [Planned("demo-turning", k, e1, "e1") for k in range(14, 20)]
    runs += [Planned(p, 4, {**LENGTH, **e1}, "e1") for p in GRID if "-gp-" in p]
    runs += [Planned("demo-stable", k, e1, "e1") for k in range(30, 36)]
    # a fourth held-out batch (2026-12-08, the same detector): the GP twins' seed 5 (seed 003's table has 6 seeds
    # without GP, 5 with), more stable demos; then the slow families' further seeds
    runs += [Planned(p, 5, {**LENGTH, **e1}, "e1") for p in GRID if "-gp-" in p]
    runs += [Planned("demo-stable", k, e1, "e1") for k in range(36, 42)]
    slower = [(p, k) for k in (1, 2) for p in ("grand-digits", "r3gan-digits", "r3gan-digits-r1", "granc-digits")]
    runs += [Planned(p, k, {**LENGTH, **e1}, "e1") for p, k in slower]
    return [Planned(r.preset, r.seed, {**r.overrides, "train.seed": r.seed}, r.variant) for r in runs]


def log(message: str) -> None:
    print(f"{dt.datetime.now(dt.UTC):%H:%M:%S} {message}", flush=True)


class StackProcess:
    """`sqd up` as a child in its own process group, so stopping it stops its server, worker and agent."""

    def __init__(self, home: Path, port: int, concurrency: int) -> None:
        self.home, self.port = home, port
        self.token = os.environ.get("SQD_TOKEN") or secrets.token_urlsafe(24)
        env = {**os.environ, "SQD_TOKEN": self.token, "SQD_TRAINER__CPU_RUNS": str(concurrency)}
        home.mkdir(parents=True, exist_ok=True)
        self.out = (home / "stack.log").open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "sqd", "up", "--port", str(port), "--home", str(home)],
                                     cwd=ROOT, env=env, stdout=self.out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.client = Client(f"http://127.0.0.1:{port}", token=self.token, timeout=120.0)

    def wait_healthy(self, timeout_s: float = 300.0) -> None:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            if self.proc.poll() is not None:
                raise SystemExit(f"sqd up exited with {self.proc.returncode}; see {self.home / 'stack.log'}")
            try:
                self.client.health()
                return
            except SQDError:
                time.sleep(2.0)
        raise SystemExit(f"the stack was not healthy after {timeout_s:.0f} s; see {self.home / 'stack.log'}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the group this process started, nothing else
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.client.close()
        self.out.close()


def _floats(values: list[Any]) -> np.ndarray:
    # non-finite values travel as strings ("nan", "inf")
    return np.asarray([float(v) for v in values], dtype=np.float32)


def series_arrays(export: dict[str, Any]) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    for key, cols in export["series"].items():
        if not key.startswith(FAMILIES):
            continue
        order = np.argsort(np.asarray(cols["step"], dtype=np.int64), kind="stable")
        arrays[f"{key}|steps"] = np.asarray(cols["step"], dtype=np.int32)[order]
        arrays[f"{key}|values"] = _floats(cols["value"])[order]
        arrays[f"{key}|epochs"] = np.asarray([-1 if e is None else e for e in cols["epoch"]], dtype=np.int32)[order]
    return arrays


def evaluated(client: Client, run: dict[str, Any]) -> bool:
    """Whether the worker has reported the run's last checkpoint (a finished run's Monitor checkpoints its last
    step, whatever the cadence) and caught up on the ones it skipped (backfill; a skipped checkpoint whose backfill
    failed stays skipped, so an empty backfill queue will do)."""
    evaluations = client.evaluations(run["id"])
    steps = [e["checkpoint_step"] for e in evaluations]
    if not steps or max(steps) < int(run.get("last_step") or 0):
        return False
    return all(e["status"] != "skipped" for e in evaluations) or client.health()["workers"]["backfill_waiting"] == 0


def export_run(client: Client, run: dict[str, Any], planned: Planned, out: Path) -> Path:
    t0 = time.monotonic()
    arrays = series_arrays(json.loads(client.export(run["id"], format="json")))
    label = label_arrays(arrays)
    # steps of a full epoch, so bench/turning.py (which globs bench/data/**/*.npz) reads these files too
    _, per_epoch = np.unique(arrays["angle/G|epochs"], return_counts=True)
    steps_per_epoch = float(np.median(per_epoch[:-1])) if len(per_epoch) > 1 else float(per_epoch.sum())
    alerts = client.alerts(run["id"], limit=1000)
    evals = client.evaluations(run["id"])
    meta = {"id": run["id"], "preset": planned.preset, "variant": planned.variant, "seed": planned.seed,
            "overrides": planned.overrides,
            "status": run["status"], "last_step": run.get("last_step"), "last_epoch": run.get("last_epoch"),
            "created_at": run["created_at"], "started_at": run.get("started_at"), "finished_at": run.get("finished_at"),
            "train_s": (run["finished_at"] or 0) - (run["started_at"] or 0),
            "eval_s": sum(sum(e.get("timings_s", {}).values()) for e in evals) / max(len(evals), 1),
            "export_s": time.monotonic() - t0, "label_reason": label.reason}
    path = out / f"{planned.name}.npz"
    out.mkdir(parents=True, exist_ok=True)
    turning_step = np.int32(-1 if label.turning_step is None else label.turning_step)
    payload: dict[str, Any] = {
        **arrays, "alerts": json.dumps(alerts), "config": json.dumps(run.get("config", {})), "run": json.dumps(meta),
        "label_epoch": np.int32(-1 if label.turning_epoch is None else label.turning_epoch),
        "label_step": turning_step, "turning_step": turning_step, "steps_per_epoch": np.float32(steps_per_epoch)}
    tmp = path.with_name(f"{path.name}.tmp")  # not *.npz: readers glob those while a run is being written
    with tmp.open("wb") as fh:
        np.savez_compressed(fh, **payload)
    os.replace(tmp, path)
    crit = sum(a["severity"] == "critical" for a in alerts)
    log(f"exported {path.name}: train {meta['train_s']:.0f} s, label {label.reason}, {len(alerts)} alerts "
        f"({crit} critical), {path.stat().st_size / 1024:.0f} KiB")
    return path


def existing_runs(client: Client) -> dict[str, dict[str, Any]]:
    """This data dir's runs by name (the newest of a name wins), so a restarted recorder picks them up."""
    runs: dict[str, dict[str, Any]] = {}
    offset = 0
    while True:
        page = client.runs(limit=200, offset=offset)["data"]
        for r in page:
            if r["name"] not in runs or r["created_at"] > runs[r["name"]]["created_at"]:
                runs[r["name"]] = r
        if len(page) < 200:
            return runs
        offset += 200


def deadline_at(hhmm: str) -> float:
    h, m = (int(x) for x in hhmm.split(":"))
    now = dt.datetime.now(dt.UTC)
    when = now.replace(hour=h, minute=m, second=0, microsecond=0)
    if when < now:
        raise SystemExit(f"the deadline {hhmm} UTC has passed (it is {now:%H:%M})")
    return when.timestamp()


def record(home: Path, port: int, concurrency: int, deadline: float, out: Path, only: int | None) -> None:
    todo = [p for p in plan() if not (out / f"{p.name}.npz").exists()][:only]
    log(f"{len(todo)} runs to record, stack at :{port}, data dir {home}")
    stack = StackProcess(home, port, concurrency)
    try:
        stack.wait_healthy()
        recorder = Recorder(stack.client, concurrency, deadline, out)
        recorder.run(todo)
    finally:
        stack.stop()
        log("stack stopped")


class Recorder:
    def __init__(self, client: Client, concurrency: int, deadline: float, out: Path) -> None:
        self.client, self.concurrency, self.deadline, self.out = client, concurrency, deadline, out
        self.durations: dict[str, list[float]] = {}  # preset → wall s from launch to export, for the deadline

    def expected_s(self, p: Planned) -> float:
        """How long `p` will take: what its preset took here, else in the recorded files (an R3GAN run takes 6×
        a grid twin), else the median of everything recorded here, else the stacked-digit demo's ~10 min."""
        same = self.durations.get(p.preset) or self.recorded_s(p.preset)
        everything = [d for ds in self.durations.values() for d in ds]
        return float(np.median(same or everything)) if same or everything else 600.0

    def recorded_s(self, preset: str) -> list[float]:
        """Launch-to-finish seconds of the preset's runs in the corpus files (no variant: those are named apart)."""
        out = []
        for path in self.out.glob(f"{preset}-seed*.npz"):
            with np.load(path) as z:
                meta = json.loads(str(z["run"]))
            if meta.get("finished_at") and meta.get("created_at"):
                out.append(float(meta["finished_at"]) - float(meta["created_at"]))
        return out

    def run(self, todo: list[Planned]) -> None:
        known = existing_runs(self.client)
        queue: Iterator[Planned] = iter(todo)
        going: dict[str, tuple[Planned, float]] = {}  # run id → (plan, launch time)
        for p in todo:  # runs launched by an earlier recorder in this data dir
            r = known.get(p.name)
            if r is not None and r["status"] in ("queued", "running", "finished"):
                going[r["id"]] = (p, time.time())
        launched = {p.name for p, _ in going.values()}
        pending = [p for p in queue if p.name not in launched]
        while going or pending:
            self.collect(going)  # first: a run that finished (and was evaluated) by the deadline is kept
            if time.time() >= self.deadline:
                for run_id, (p, _) in going.items():
                    log(f"deadline: cancelling {p.name}")
                    self.client.cancel(run_id, reason="corpus recording deadline")
                return
            running = sum(1 for rid in going if self.client.run(rid)["status"] in ("queued", "running"))
            while pending and running < self.concurrency:
                p = pending[0]
                if time.time() + self.expected_s(p) > self.deadline:
                    log(f"no time left for {p.name} and the {len(pending) - 1} after it")
                    pending = []
                    break
                pending.pop(0)
                r = self.client.launch(p.preset, overrides=p.overrides, name=p.name)
                going[r["id"]] = (p, time.time())
                running += 1
                log(f"launched {p.name} ({r['id']})")
            time.sleep(15.0)

    def collect(self, going: dict[str, tuple[Planned, float]]) -> None:
        """Export the runs that finished and were evaluated; forget the ones that failed."""
        for run_id, (p, t0) in list(going.items()):
            run = self.client.run(run_id)
            if run["status"] in ("failed", "cancelled"):
                log(f"{p.name} {run['status']}: {run.get('error')}")
                del going[run_id]
            elif run["status"] == "finished":
                if evaluated(self.client, run):
                    export_run(self.client, run, p, self.out)
                    self.durations.setdefault(p.preset, []).append(time.time() - t0)
                    del going[run_id]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", type=Path, default=Path("/tmp/sqd-corpus"), help="the stack's data dir")
    ap.add_argument("--port", type=int, default=8917, help="the stack's port (never the bus's 6379)")
    ap.add_argument("--concurrency", type=int, default=2, help="runs trained at once (the agent's cpu_runs)")
    ap.add_argument("--deadline", required=True, help="UTC HH:MM: no run starts that cannot end by then")
    ap.add_argument("--only", type=int, default=None, help="record at most this many runs of the plan")
    ap.add_argument("--out", type=Path, default=CORPUS_DIR)
    args = ap.parse_args()
    if args.port == 6379:
        ap.error("--port 6379 is the shared bus's")
    # SIGTERM (nohup'd runs are stopped that way) unwinds like Ctrl-C, so the stack is stopped with us
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    record(args.home, args.port, args.concurrency, deadline_at(args.deadline), args.out, args.only)


if __name__ == "__main__":
    main()
