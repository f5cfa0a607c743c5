"""`Monitor`: the SDK any PyTorch GAN loop uses to report to SQD (losses, weight angles, checkpoints).

    mon = Monitor(G, D, name="my run", config=cfg, generator_spec=spec, tags=["baseline"])
    with mon:                                   # RunStarted; an exception → RunFinished(failed) and re-raise
        for step in range(n):
            ...                                 # your D and G optimizer steps
            mon.step(step, epoch=epoch, losses={"D": d_loss, "G": g_loss}, lr={"G": lr_g, "D": lr_d})

The constructor starts nothing; `with mon:` (or the first `step`) connects lazily, starts one sender thread and
snapshots the weights. What a step measures is sqd.trainer.step_probe's job: on a GPU one CUDA graph replay writes
the angle sums, gradient norms and losses into a preallocated device buffer; every `flush_every` steps (or
`flush_interval_s`) one asynchronous copy moves them to the host and the sender thread publishes them — the
training thread never waits for the GPU or the bus (on a CPU the probe worker thread measures the step while
training goes on, sqd.trainer.probe_worker). The sender thread also samples the system metrics (`sys/…`,
sqd.trainer.system_metrics). See docs/monitor.md.
"""

from __future__ import annotations

import atexit
import io
import logging
import os
import signal
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from types import FrameType, TracebackType
from typing import Any, Literal

import redis
import torch
from pydantic import ValidationError
from torch import nn

from sqd.artifacts import ArtifactStore
from sqd.bus import INGEST, Bus
from sqd.protocol import TAGS_ADAPTER, RunFinished, RunStarted, new_id
from sqd.settings import Settings, get_settings
from sqd.trainer.metric_buffer import Value
from sqd.trainer.publisher import CheckpointJob, EventsJob, NonFiniteError, Publisher
from sqd.trainer.spool import Outbox
from sqd.trainer.step_probe import DeviceProbe, HostProbe, make_probe
from sqd.trainer.system_metrics import SystemSampler

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "sqd-checkpoint/1"


class RunCancelled(BaseException):
    """Raised in the training thread on SIGTERM, so the run ends as `cancelled` (like KeyboardInterrupt)."""


def connect_bus(settings: Settings) -> Bus:
    """A bus client with short timeouts: a bus that hangs must not hold the sender thread for long."""
    client = redis.Redis.from_url(settings.resolved_redis_url, socket_connect_timeout=2, socket_timeout=5)
    return Bus(client, settings.bus)


class Monitor:
    def __init__(self, G: nn.Module, D: nn.Module | None = None, name: str = "run",
                 config: Mapping[str, Any] | None = None, run_id: str | None = None, preset: str | None = None,
                 generator_spec: Mapping[str, Any] | None = None, profile: str = "digits",
                 checkpoint_every: int | None = 1000, checkpoint_state: Callable[[], dict[str, Any]] | None = None,
                 flush_every: int = 50, settings: Settings | None = None, bus: Bus | None = None,
                 artifacts: ArtifactStore | None = None, *, checkpoint_every_epochs: int | None = None,
                 flush_interval_s: float = 2.0, grad_norms: bool = True,
                 on_nonfinite: Literal["mark", "fail"] = "mark", close_timeout_s: float = 10.0,
                 tags: Iterable[str] = (), batch_size: int | None = None):
        """`batch_size`: samples per step, for `sys/samples_per_s` (left out without it)."""
        if flush_every < 1:
            raise ValueError(f"Monitor: flush_every must be >= 1 (got {flush_every})")
        if on_nonfinite not in ("mark", "fail"):
            raise ValueError(f"Monitor: on_nonfinite must be 'mark' or 'fail' (got {on_nonfinite!r})")
        try:
            self.tags = TAGS_ADAPTER.validate_python(list(tags))
        except ValidationError as exc:
            raise ValueError(f"Monitor: tags {list(tags)!r}: {exc.errors()[0]['msg']} (a tag is 1–100 characters, "
                             "no commas)") from exc
        self.nets = {"G": G} if D is None else {"G": G, "D": D}
        self.name, self.preset, self.profile = name, preset, profile
        self.config = dict(config or {})
        self.run_id = run_id or new_id()
        self.generator_spec = dict(generator_spec) if generator_spec is not None else None
        self.checkpoint_every, self.checkpoint_every_epochs = checkpoint_every, checkpoint_every_epochs
        self.checkpoint_state = checkpoint_state
        self.flush_every, self.flush_interval_s = flush_every, flush_interval_s
        self.grad_norms, self.on_nonfinite, self.close_timeout_s = grad_norms, on_nonfinite, close_timeout_s
        self._settings, self._bus, self._artifacts = settings, bus, artifacts
        self._publisher: Publisher | None = None
        self._closed = False
        self.last_step: int | None = None
        self.last_epoch: int | None = None
        self._last_checkpoint: int | None = None
        self._last_lr: dict[str, float] = {}
        self._old_sigterm: Any = None
        self.batch_size = batch_size
        self.steps_recorded = 0  # Monitor.step calls, for sys/step_time

    # ---- lifecycle -------------------------------------------------------------------------------------------
    @property
    def started(self) -> bool:
        return self._publisher is not None

    def start(self) -> Monitor:
        """Connect (lazily), start the sender thread, snapshot the weights, publish RunStarted. Idempotent."""
        if self._publisher is not None:
            return self
        if self._closed:
            raise RuntimeError(f"Monitor for run {self.run_id} is closed; create a new one")
        settings = self._settings or get_settings()
        bus = self._bus or connect_bus(settings)
        artifacts = self._artifacts or ArtifactStore.from_settings(settings)
        outbox = Outbox(bus, settings.home / "spool" / self.run_id, settings.trainer.spool_max_events)
        self._agent = settings.trainer.agent_id
        self._graphs = settings.trainer.cuda_graphs
        self._background = settings.trainer.monitor_thread
        self.probe: HostProbe | DeviceProbe = make_probe(self.nets, self.flush_every, self.grad_norms,
                                                         graphs=self._graphs, background=self._background)
        device = self.probe.device
        self._last_flush = time.monotonic()
        interval = settings.trainer.system_metrics_s
        sampler = SystemSampler(lambda: self.steps_recorded, self.batch_size) if interval > 0 else None
        self._publisher = Publisher(self.run_id, outbox, artifacts, self.profile, sampler, interval,
                                    lambda: self.last_step)
        self._publisher.start()
        self._publisher.submit(EventsJob(INGEST, [RunStarted(
            run_id=self.run_id, name=self.name, preset=self.preset, config=self.config, host=socket.gethostname(),
            pid=os.getpid(), device=str(device), agent=self._agent, tags=self.tags)]))
        self._install_sigterm()
        atexit.register(self._at_exit)
        return self

    def __enter__(self) -> Monitor:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is None:
            self.close("finished")
        elif isinstance(exc, KeyboardInterrupt | RunCancelled):
            self.close("cancelled", error=f"cancelled ({type(exc).__name__}{': ' + str(exc) if str(exc) else ''})")
        else:
            self.close("failed", error=f"{type(exc).__name__}: {exc}",
                       traceback="".join(traceback.format_exception(exc_type, exc, tb)))

    def close(self, status: Literal["finished", "failed", "cancelled"] = "finished", error: str | None = None,
              traceback: str | None = None) -> None:
        """Flush, write the final checkpoint (finished runs), publish RunFinished, deliver or spool everything."""
        if self._closed:
            return
        self._closed = True
        if self._publisher is None:
            return
        try:
            periodic = bool(self.checkpoint_every or self.checkpoint_every_epochs)
            if periodic and status == "finished" and self.last_step is not None \
                    and self._last_checkpoint != self.last_step:
                self.checkpoint(self.last_step, self.last_epoch)
            self.flush()
        finally:
            self._publisher.submit(EventsJob(INGEST, [RunFinished(
                run_id=self.run_id, status=status, error=error, traceback=traceback, step=self.last_step,
                epoch=self.last_epoch)]))
            self._publisher.stop(self.close_timeout_s)
            self._restore_sigterm()
            atexit.unregister(self._at_exit)

    def _at_exit(self) -> None:
        log.warning("Monitor for run %s was never closed; use `with mon:` or call mon.close()", self.run_id)
        if self._publisher is not None:
            self.flush()
            self._publisher.stop(self.close_timeout_s)

    def _install_sigterm(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return  # the program handles SIGTERM itself

        def _cancel(signum: int, _frame: FrameType | None) -> None:
            raise RunCancelled(f"received signal {signum}")

        self._old_sigterm = signal.signal(signal.SIGTERM, _cancel)

    def _restore_sigterm(self) -> None:
        if self._old_sigterm is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._old_sigterm)
            self._old_sigterm = None

    # ---- per step --------------------------------------------------------------------------------------------
    def _check_health(self) -> Publisher:
        publisher = self._publisher or self.start()._publisher
        assert publisher is not None
        if publisher.error is not None:
            raise RuntimeError(f"the Monitor's sender thread failed: {publisher.error!r}") from publisher.error
        if self.on_nonfinite == "fail" and publisher.first_nonfinite is not None:
            raise NonFiniteError(f"run {self.run_id}: {publisher.first_nonfinite}")
        return publisher

    def step(self, step: int, epoch: int | None = None, losses: Mapping[str, Value] | None = None,
             lr: Mapping[str, Value] | None = None, metrics: Mapping[str, Value] | None = None) -> None:
        """Record one generator iteration, called after its optimizer steps. Tensors are fine: nothing syncs."""
        publisher = self._publisher
        if publisher is None or publisher.error is not None or publisher.first_nonfinite is not None:
            self._check_health()
        values: dict[str, Value | None] = {f"loss/{k}": v for k, v in losses.items()} if losses else {}
        if lr:
            for k, v in lr.items():  # kept only when it changes: a constant lr is one point
                if isinstance(v, torch.Tensor) or self._last_lr.get(k) != v:
                    values[f"lr/{k}"] = v
                    self._last_lr[k] = v  # type: ignore[assignment]
        if metrics:
            values.update(metrics)
        probe = self.probe
        if probe.moved():
            probe = self._reprobe()
        probe.step(step, epoch, values)
        self.steps_recorded += 1
        self._recorded(step, epoch)
        if self.checkpoint_every and step % self.checkpoint_every == 0:
            self.checkpoint(step, epoch)

    def log(self, metrics: Mapping[str, Value], step: int, epoch: int | None = None) -> None:
        """Record any other values (tensors or numbers) at `step`, e.g. `{"eval/my_score": 0.7}`."""
        self._check_health()
        self.probe.wait()  # after the rows of the steps before
        self.probe.buffer.add(step, epoch, dict(metrics))
        self._recorded(step, epoch)

    def end_epoch(self, epoch: int) -> None:
        """Per-epoch angles (`angle_epoch/*`, since the previous call or the start) at the last step."""
        self._check_health()
        step = self.last_step if self.last_step is not None else 0
        probe = self.probe
        if probe.moved():
            probe = self._reprobe()
        probe.end_epoch(step, epoch)
        self._recorded(step, epoch)
        if self.checkpoint_every_epochs and (epoch + 1) % self.checkpoint_every_epochs == 0 \
                and self._last_checkpoint != step:  # not twice where the step cadence has just taken it
            self.checkpoint(step, epoch)

    def _recorded(self, step: int, epoch: int | None) -> None:
        self.last_step = step
        if epoch is not None:
            self.last_epoch = epoch
        if self.probe.full():
            self.flush()
        elif time.monotonic() - self._last_flush > self.flush_interval_s:
            self.flush(relist=False)  # slow steps flush by time: walk the modules only every flush_every rows

    def _reprobe(self) -> HostProbe | DeviceProbe:
        """The parameters moved (or changed): flush what was measured and start over from fresh snapshots; the
        next step and epoch report no angle rather than a wrong one."""
        log.info("Monitor: the parameters of run %s moved or changed; taking fresh weight snapshots", self.run_id)
        self.flush(relist=False)
        self.probe = make_probe(self.nets, self.flush_every, self.grad_norms, continues=False, graphs=self._graphs,
                                background=self._background)
        return self.probe

    def flush(self, relist: bool = True) -> None:
        """Hand the buffered rows to the sender thread (one asynchronous device → host copy)."""
        if self._publisher is None:
            return
        window = self.probe.take()
        if window.rows:
            self._publisher.submit(window)
        self._last_flush = time.monotonic()
        if relist and self.probe.moved(relist=True):  # other parameter objects (checked here: it walks the modules)
            self._reprobe()

    # ---- checkpoints -----------------------------------------------------------------------------------------
    def _checkpoint_dict(self, step: int, epoch: int | None) -> dict[str, Any] | None:
        if self.checkpoint_state is not None:
            state = dict(self.checkpoint_state())
        elif self.generator_spec is not None:
            D = self.nets.get("D")
            state = {"G": self.nets["G"].state_dict(), "G_ema": None,
                     "D": D.state_dict() if D is not None else None, "optim": None, "rng": None}
        else:
            return None  # nothing to rebuild G from: no checkpoints (documented)
        state.setdefault("format", CHECKPOINT_FORMAT)
        state.setdefault("generator", self.generator_spec)
        state.setdefault("config", self.config)
        state.update(step=step, epoch=epoch)
        if not state["generator"]:
            raise ValueError("Monitor: checkpoint_state() gave no 'generator' spec and no generator_spec was "
                             "passed; a worker could not rebuild G from this checkpoint")
        return state

    def checkpoint(self, step: int, epoch: int | None = None) -> None:
        """Serialize now (consistent weights), store and announce in the sender thread."""
        publisher = self._check_health()
        state = self._checkpoint_dict(step, epoch)
        self._last_checkpoint = step
        if state is None:
            return
        buf = io.BytesIO()
        torch.save(state, buf)
        publisher.submit(CheckpointJob(step, epoch, time.time(), buf.getvalue(), dict(state["generator"]),
                                       dict(state["config"])))
