"""The training loop: a config in, a trained GAN out, everything reported through the `Monitor`.

    summary = train(resolve_config("sqd-nsgan-digits"), preset="sqd-nsgan-digits", steps=500)

Seeding, device choice and resume live here; the update rule is `GANTrainer.step` (torch only); reporting
(metrics, checkpoints every `train.checkpoint_every` steps, RunStarted / RunFinished) is the Monitor's job, so
any PyTorch loop gets the same reporting by writing the same four lines. `monitor=False` trains without a bus.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from sqd.settings import Settings, get_settings
from sqd.train_config import TrainConfig
from sqd.trainer.batches import make_batches
from sqd.trainer.checkpoint import read_checkpoint
from sqd.trainer.datasets import build_dataset
from sqd.trainer.speed import apply_backends, plan_speed
from sqd.trainer.steps import GANTrainer


class Reporter(Protocol):
    """What the loop needs from a Monitor (and what `NullReporter` provides without one)."""

    def step(self, step: int, epoch: int | None = None, losses: Any = None, lr: Any = None,
             metrics: Any = None) -> None: ...

    def end_epoch(self, epoch: int) -> None: ...


class NullReporter:
    def step(self, step: int, epoch: int | None = None, losses: Any = None, lr: Any = None,
             metrics: Any = None) -> None:
        pass

    def end_epoch(self, epoch: int) -> None:
        pass


MonitorFactory = Callable[[GANTrainer], Any]  # returns a context manager that is a Reporter


@dataclass
class TrainSummary:
    run_id: str | None
    first_step: int
    last_step: int
    loss_d: float
    loss_g: float
    seconds: float
    device: str

    @property
    def steps_per_s(self) -> float:
        return (self.last_step - self.first_step + 1) / self.seconds if self.seconds > 0 else math.inf


LogCallback = Callable[[int, dict[str, float]], None]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"train.device={name!r} but CUDA is not available here; use auto or cpu")
    return device


def default_threads() -> int:
    """Half the cores, 1 to 4: small convolutions gain little from more threads, and on a shared 2-core machine
    (server, worker, a second run) two spinning OpenMP threads per run made training 5× slower than one."""
    return max(1, min(4, (os.cpu_count() or 2) // 2))


def monitor_factory(settings: Settings, name: str, preset: str | None, run_id: str | None) -> MonitorFactory:
    def make(trainer: GANTrainer) -> Any:
        from sqd.trainer.monitor import Monitor

        cfg = trainer.cfg
        return Monitor(trainer.G, trainer.D, name=name, config=cfg.model_dump(mode="json"), run_id=run_id,
                       preset=preset, generator_spec=trainer.g_spec, profile=cfg.eval.profile,
                       checkpoint_every=cfg.train.checkpoint_every,
                       checkpoint_every_epochs=cfg.train.checkpoint_every_epochs, checkpoint_state=trainer.state_dict,
                       flush_every=cfg.train.log_every, settings=settings, batch_size=cfg.train.batch)
    return make


def build_trainer(cfg: TrainConfig, settings: Settings | None = None) -> GANTrainer:
    """Seeded nets, optimizers and data (same seed → same weights and the same batches on a device type), set up
    for the device by `cfg.train`'s speed switches (speed.py; sets torch's process-wide backend flags).

    Any preset at its full shape without its data (e.g. a GPU bench): `--set dataset.name=synthetic`."""
    settings = settings or get_settings()
    device = resolve_device(cfg.train.device)
    if cfg.train.threads or device.type == "cpu":
        torch.set_num_threads(cfg.train.threads or default_threads())
    plan = plan_speed(cfg, device)
    apply_backends(plan)
    torch.manual_seed(cfg.train.seed)
    data = build_dataset(cfg.dataset, settings.home)
    return GANTrainer(cfg, data, plan, make_batches(data, cfg.train.batch, cfg.train.seed, plan))


def _host(values: dict[str, torch.Tensor]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items()}  # one sync per log tick, never per step


def train(cfg: TrainConfig, *, preset: str | None = None, name: str | None = None, run_id: str | None = None,
          steps: int | None = None, resume: bytes | str | Path | dict[str, Any] | None = None,
          monitor: bool | MonitorFactory = True, settings: Settings | None = None,
          on_log: LogCallback | None = None) -> TrainSummary:
    """Train `steps` generator iterations (default cfg.train.steps), continuing after `resume`'s step."""
    settings = settings or get_settings()
    trainer = build_trainer(cfg, settings)
    first = 0
    if resume is not None:
        state = resume if isinstance(resume, dict) else read_checkpoint(resume, map_location=trainer.device)
        trainer.load_state_dict(state)
        first = int(state["step"]) + 1
    last = (steps or cfg.train.steps) - 1
    if monitor is True:
        monitor = monitor_factory(settings, name or preset or "run", preset, run_id)
    context: AbstractContextManager[Any] = monitor(trainer) if monitor else nullcontext(NullReporter())
    images_per_epoch = len(trainer.data)
    start = time.perf_counter()
    host = {"loss/D": math.nan, "loss/G": math.nan}
    with context as reporter:
        epoch = first * cfg.train.batch // images_per_epoch
        for step in range(first, last + 1):
            result = trainer.step(step)
            losses = {"D": result.loss_d, "G": result.loss_g}
            reporter.step(step, epoch=epoch, losses=losses, lr=trainer.lr, metrics=result.metrics)
            next_epoch = (step + 1) * cfg.train.batch // images_per_epoch
            if next_epoch != epoch:
                reporter.end_epoch(epoch)
                epoch = next_epoch
            if (step + 1) % cfg.train.log_every == 0 or step == last:
                host = _host({"loss/D": result.loss_d, "loss/G": result.loss_g, **result.metrics})
                bad = [k for k, v in host.items() if not math.isfinite(v)]
                if bad:  # a GAN whose losses went non-finite never recovers: end the run as failed
                    raise FloatingPointError(f"step {step}: {', '.join(bad)} is not finite ({host})")
                if on_log is not None:
                    on_log(step, host)
    return TrainSummary(getattr(reporter, "run_id", run_id), first, last, host["loss/D"], host["loss/G"],
                        time.perf_counter() - start, str(trainer.device))
