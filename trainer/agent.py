"""The trainer agent (`sqd agent`): turns launch / cancel requests on `control` into training processes.

* Agents form the consumer group `agents` on `control`, so each request reaches one of them. A launch is claimed
  with one atomic script (`SET <prefix>:claim:<run> <agent> NX` + the run's record into the agent's table
  `<prefix>:agent:<agent>:runs`), so a request delivered twice — reclaimed from a dead consumer, or published
  twice — is launched once, and the message is acked only once the run is queued durably.
* Queued runs start when a slot is free: `runs_per_gpu` per visible GPU (CUDA_VISIBLE_DEVICES per run), or
  `cpu_runs` on the CPU. The child is `python -m sqd train <preset> --run-id <id> --set k=v … [--steps N]
  [--name NAME]`; its stdout/stderr go to a local log, copied to the artifact `runs/<id>/train.log` every 5 s.
* A cancel may reach any agent: whoever receives it sets `<prefix>:cancel:<run>`, and every agent checks that key
  for its own runs each tick (about once a second), so the owner acts: a queued run is dropped, a running one gets
  SIGTERM (its Monitor reports `cancelled`), SIGKILL after `cancel_grace_s`; the agent publishes
  RunFinished(cancelled). A launch that arrives after its cancel is never started.
* A run that exits non-zero is reported as RunFinished(failed) with the traceback tail of its log (exit 0: the
  child's Monitor already reported the end).
* Restart: the table lives in Redis; a restarted agent with the same id re-attaches to runs whose process group is
  still alive, reports those that ended meanwhile (from the exit status the shell wrapper recorded, else as failed:
  "agent restarted; process gone") and resumes its queue.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import redis

from sqd.artifacts import ArtifactStore
from sqd.bus import CONTROL, INGEST, Bus, Delivery, TransientError
from sqd.errors import ArtifactError, BusError
from sqd.protocol import CancelRequest, LaunchRequest, RunFinished
from sqd.settings import Settings
from sqd.trainer.gpus import Slots
from sqd.trainer.run_process import RunProcess, failure_summary, tail
from sqd.trainer.spool import resend_leftovers

log = logging.getLogger(__name__)

GROUP = "agents"
CLAIM_TTL_S = 7 * 24 * 3600
CANCEL_TTL_S = 24 * 3600
LOG_UPLOAD_EVERY_S = 5.0
SPOOL_RESEND_EVERY_S = 30.0

# Claim a run and queue it in one step: either both happen or neither (returns the owner's id when taken).
_CLAIM = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then
  redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
  return ARGV[1]
end
return redis.call('GET', KEYS[1])
"""


def train_command(request: LaunchRequest) -> list[str]:
    """`python -m sqd train` for a launch request; string overrides go as they are, others as JSON."""
    argv = [sys.executable, "-m", "sqd", "train", request.preset, "--run-id", request.run_id]
    for key, value in request.overrides.items():
        argv += ["--set", f"{key}={value if isinstance(value, str) else json.dumps(value)}"]
    if request.steps is not None:
        argv += ["--steps", str(request.steps)]
    if request.name:
        argv += ["--name", request.name]
    return argv


@dataclass
class RunRecord:
    run_id: str
    request: dict[str, object]  # the LaunchRequest as JSON
    state: Literal["queued", "running", "cancelling"] = "queued"
    device: str | None = None
    pgid: int | None = None
    started_at: float | None = None
    cancel_reason: str | None = None
    kill_at: float | None = None

    def dumps(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def loads(cls, raw: bytes | str) -> RunRecord:
        return cls(**json.loads(raw))


class Agent:
    def __init__(self, settings: Settings, agent_id: str | None = None, bus: Bus | None = None,
                 command: Callable[[LaunchRequest], list[str]] = train_command, slots: Slots | None = None,
                 keep_runs_on_exit: bool = False):
        self.settings = settings
        self.agent_id = agent_id or settings.trainer.agent_id or socket.gethostname()
        self.bus = bus or Bus.connect(settings)
        self.command, self.keep_runs_on_exit = command, keep_runs_on_exit
        self.slots = slots or Slots.detect(settings.trainer.runs_per_gpu, settings.trainer.cpu_runs)
        self.artifacts = ArtifactStore.from_settings(settings)
        self.workdir = settings.home / "agent" / self.agent_id
        self.table_key = f"{self.bus.settings.prefix}:agent:{self.agent_id}:runs"
        self.records: dict[str, RunRecord] = {}
        self.procs: dict[str, RunProcess] = {}
        self._claim = self.bus.client.register_script(_CLAIM)
        self._last_upload = self._last_resend = 0.0

    # ---- keys and paths --------------------------------------------------------------------------------------
    def claim_key(self, run_id: str) -> str:
        return f"{self.bus.settings.prefix}:claim:{run_id}"

    def cancel_key(self, run_id: str) -> str:
        return f"{self.bus.settings.prefix}:cancel:{run_id}"

    def log_path(self, run_id: str) -> Path:
        return self.workdir / "logs" / f"{run_id}.log"

    def exit_file(self, run_id: str) -> Path:
        return self.workdir / "logs" / f"{run_id}.exit"

    # ---- main loop -------------------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        log.info("agent %s: devices %s, %d run(s) each", self.agent_id, self.slots.devices, self.slots.per_device)
        self.recover()
        try:
            self.bus.consumer(CONTROL, GROUP, name=self.agent_id).run(self.handle, stop, idle=self.tick)
        finally:
            self.shutdown()

    def handle(self, deliveries: list[Delivery]) -> None:
        for d in deliveries:
            if isinstance(d.event, LaunchRequest):
                self.on_launch(d.event)
            elif isinstance(d.event, CancelRequest):
                self.on_cancel(d.event)
            else:
                log.warning("agent %s: ignoring a %s event on %s", self.agent_id, type(d.event).__name__, CONTROL)
        self.tick()

    def on_launch(self, request: LaunchRequest) -> None:
        record = RunRecord(request.run_id, request.model_dump(mode="json"))
        owner = self._claim(keys=[self.claim_key(request.run_id), self.table_key],
                            args=[self.agent_id, CLAIM_TTL_S, request.run_id, record.dumps()])
        owner = owner.decode() if isinstance(owner, bytes) else owner
        if owner != self.agent_id:
            log.info("agent %s: run %s is already claimed by %s", self.agent_id, request.run_id, owner)
            return
        if request.run_id not in self.records:  # a redelivery of our own claim keeps the record we have
            self.records[request.run_id] = record
            log.info("agent %s: queued run %s (%s)", self.agent_id, request.run_id, request.preset)

    def on_cancel(self, request: CancelRequest) -> None:
        self.bus.client.set(self.cancel_key(request.run_id), request.reason or "cancelled", ex=CANCEL_TTL_S)

    def tick(self) -> None:
        """Housekeeping, about once a second: cancels, exits, starts, log copies, leftover spools."""
        try:
            self._apply_cancels()
            self._reap()
            self._start_queued()
            self._upload_logs()
            self._resend_spools()
        except (BusError, redis.RedisError) as exc:
            raise TransientError(f"agent {self.agent_id}: {exc}") from exc

    # ---- steps of a tick -------------------------------------------------------------------------------------
    def _save(self, record: RunRecord) -> None:
        self.bus.client.hset(self.table_key, record.run_id, record.dumps())

    def _apply_cancels(self) -> None:
        ids = list(self.records)
        if not ids:
            return
        for run_id, reason in zip(ids, self.bus.client.mget([self.cancel_key(i) for i in ids]), strict=True):
            record = self.records[run_id]
            if reason is None or record.state == "cancelling":
                continue
            record.cancel_reason = reason.decode() if isinstance(reason, bytes) else str(reason)
            if record.state == "queued":
                self._finish(record, RunFinished(run_id=run_id, status="cancelled", error=record.cancel_reason))
            else:
                self._stop(record)

    def _stop(self, record: RunRecord) -> None:
        record.state, record.kill_at = "cancelling", time.time() + self.settings.trainer.cancel_grace_s
        self._save(record)
        self.procs[record.run_id].terminate()
        log.info("agent %s: SIGTERM to run %s (%s)", self.agent_id, record.run_id, record.cancel_reason)

    def _reap(self) -> None:
        for run_id, proc in list(self.procs.items()):
            record = self.records[run_id]
            if proc.alive():
                if record.state == "cancelling" and record.kill_at is not None and time.time() > record.kill_at:
                    log.warning("agent %s: run %s ignored SIGTERM for %.0fs; SIGKILL", self.agent_id, run_id,
                                self.settings.trainer.cancel_grace_s)
                    proc.kill()
                    record.kill_at = None  # once
                continue
            self._finish(record, self._outcome(record, proc))

    def _outcome(self, record: RunRecord, proc: RunProcess) -> RunFinished | None:
        code = proc.exit_code()
        if code == 0:
            return None  # the child's Monitor reported the end with its last step (it may have beaten a cancel)
        if record.state == "cancelling":
            return RunFinished(run_id=record.run_id, status="cancelled", error=record.cancel_reason)
        error, trace = failure_summary(tail(self.log_path(record.run_id)), code)
        if code is None and proc.popen is None:
            error = f"agent restarted; process gone. {error}"
        return RunFinished(run_id=record.run_id, status="failed", error=error, traceback=trace)

    def _finish(self, record: RunRecord, event: RunFinished | None) -> None:
        """Report the end (if the child could not), copy the final log, drop the run from the table."""
        if event is not None:
            self.bus.publish(INGEST, [event])
            log.info("agent %s: run %s %s%s", self.agent_id, record.run_id, event.status,
                     f": {event.error}" if event.error else "")
        if record.state != "queued":
            self._upload_log(record.run_id)
        self.bus.client.hdel(self.table_key, record.run_id)
        self.records.pop(record.run_id, None)
        self.procs.pop(record.run_id, None)

    def _start_queued(self) -> None:
        queued = sorted((r for r in self.records.values() if r.state == "queued"),
                        key=lambda r: float(r.request.get("ts", 0.0)))  # type: ignore[arg-type]
        for record in queued:
            device = self.slots.pick([r.device for r in self.records.values() if r.device is not None])
            if device is None:
                return
            self._spawn(record, device)

    def _spawn(self, record: RunRecord, device: str) -> None:
        request = LaunchRequest.model_validate(record.request)
        env = {**os.environ, **self.child_env(), **self.slots.env(device)}
        try:
            proc = RunProcess.spawn(self.command(request), env, self.log_path(record.run_id),
                                    self.exit_file(record.run_id))
        except OSError as exc:
            self._finish(record, RunFinished(run_id=record.run_id, status="failed",
                                             error=f"agent {self.agent_id} could not start the run: {exc}"))
            return
        record.state, record.device, record.pgid, record.started_at = "running", device, proc.pgid, time.time()
        self.procs[record.run_id] = proc
        self._save(record)
        log.info("agent %s: started run %s on %s (pid %d)", self.agent_id, record.run_id, device, proc.pgid)

    def child_env(self) -> dict[str, str]:
        """What the training process needs to reach the same bus, artifact store and data dir as this agent."""
        s = self.settings
        return {"SQD_HOME": str(s.home), "SQD_REDIS_URL": s.resolved_redis_url, "SQD_BUS__PREFIX": s.bus.prefix,
                "SQD_ARTIFACTS_URL": s.resolved_artifacts_url, **s.artifacts.env(),
                "SQD_TRAINER__AGENT_ID": self.agent_id, "PYTHONUNBUFFERED": "1"}

    def _upload_log(self, run_id: str) -> None:
        path = self.log_path(run_id)
        if not path.exists():
            return
        try:
            self.artifacts.put_bytes(f"runs/{run_id}/train.log", path.read_bytes())
        except (ArtifactError, OSError) as exc:
            log.warning("agent %s: cannot copy the log of run %s: %s", self.agent_id, run_id, exc)

    def _upload_logs(self) -> None:
        if time.monotonic() - self._last_upload < LOG_UPLOAD_EVERY_S:
            return
        self._last_upload = time.monotonic()
        for run_id in self.procs:
            self._upload_log(run_id)

    def _resend_spools(self) -> None:
        if time.monotonic() - self._last_resend < SPOOL_RESEND_EVERY_S:
            return
        self._last_resend = time.monotonic()
        if sent := resend_leftovers(self.bus, self.settings.home / "spool"):
            log.info("agent %s: resent %d events that finished runs had spooled during a bus outage",
                     self.agent_id, sent)

    # ---- restart and stop ------------------------------------------------------------------------------------
    def recover(self) -> None:
        """Load the table after a restart: re-attach to live runs, report the ones that ended meanwhile."""
        for raw in self.bus.client.hvals(self.table_key):
            record = RunRecord.loads(raw)
            self.records[record.run_id] = record
            if record.state != "queued" and record.pgid is not None:
                self.procs[record.run_id] = RunProcess(record.pgid, self.exit_file(record.run_id))
                log.info("agent %s: re-attached to run %s (pid %d)", self.agent_id, record.run_id, record.pgid)
        self.tick()

    def shutdown(self) -> None:
        """On a clean stop: stop our runs (unless keep_runs_on_exit); queued runs wait in the table."""
        if self.keep_runs_on_exit or not self.procs:
            return
        for run_id in list(self.procs):
            record = self.records[run_id]
            if record.state == "running":
                record.cancel_reason = f"agent {self.agent_id} stopped"
                self._stop(record)
        deadline = time.time() + self.settings.trainer.cancel_grace_s
        while self.procs and time.time() < deadline + 5:
            try:
                self._reap()
            except (BusError, redis.RedisError) as exc:
                log.warning("agent %s: cannot report stopped runs: %s", self.agent_id, exc)
                return
            time.sleep(0.2)


def run_agent(settings: Settings, agent_id: str | None, keep_runs_on_exit: bool) -> None:
    """`sqd agent`: run until SIGTERM / Ctrl-C."""
    from sqd.bus import stop_on_signals

    stop = threading.Event()
    stop_on_signals(stop)
    Agent(settings, agent_id, keep_runs_on_exit=keep_runs_on_exit).run(stop)
