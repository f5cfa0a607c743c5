"""`SQDLogger`: a Lightning logger that reports a LightningModule GAN to SQD through the Monitor.

    from sqd.integrations.lightning import SQDLogger
    logger = SQDLogger("dcgan", generator="G", discriminator="D", tags=["lightning"],
                       generator_spec={"arch": "dcgan", "kwargs": {...}, "z_dim": 100}, checkpoint_every=500)
    lightning.Trainer(logger=logger, log_every_n_steps=1).fit(module, data)

* What Lightning logs (`self.log(...)` in the module, at `log_every_n_steps`) is stored at Lightning's own step
  (training batches done); common loss names (`d_loss`, `loss_G`, …) land on `loss/D` / `loss/G`, the rest keep
  their names (`rename=` maps more). Hyperparameters (`save_hyperparameters()`) become the run's config.
* Given the names of the module's generator and discriminator attributes, a Monitor watches those two nets: after
  every training batch it records `angle/G`, `angle/D`, gradient norms, and (with `generator_spec` and
  `checkpoint_every`) writes checkpoints the evaluation workers score (Q, D, FID) — the same as `Monitor.step` in a
  plain loop. Epoch ends give `angle_epoch/*`.
* Lightning calls `log_graph(module)` on every logger when `fit` starts; that is where the Monitor is built and a
  small callback is added to the trainer for the per-batch hook, so one `logger=` argument is all it takes.
* The run ends `finished` when fit succeeds, `failed` with the exception's traceback, `cancelled` on Ctrl-C.
  Only rank 0 reports (multi-GPU runs are one SQD run).

Failure modes: a missing generator/discriminator attribute raises AttributeError naming it and the module's
children, before training starts. The Monitor's own guarantees hold (the bus down → events spooled, not lost).
"""

from __future__ import annotations

import traceback
from argparse import Namespace
from collections.abc import Iterable, Mapping
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers.logger import Logger
from lightning.pytorch.utilities import rank_zero_only
from torch import nn

from sqd.protocol import new_id
from sqd.trainer.monitor import Monitor, RunCancelled

LOSS_NAMES = {
    **dict.fromkeys(("d_loss", "loss_d", "loss_D", "D_loss", "disc_loss", "discriminator_loss"), "loss/D"),
    **dict.fromkeys(("g_loss", "loss_g", "loss_G", "G_loss", "gen_loss", "generator_loss"), "loss/G"),
}


def _plain(value: Any) -> Any:
    """Hyperparameters as JSON: nested mappings kept, numbers and text as they are, anything else as its text."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value if value is None or isinstance(value, bool | int | float | str) else str(value)


class _BatchHook(Callback):
    """The per-batch and per-epoch half of SQDLogger (added to the trainer by the logger itself)."""

    def __init__(self, logger: SQDLogger):
        self.logger = logger

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.logger.after_batch(trainer)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.logger.after_epoch(trainer)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self.logger.failed_with(exception)


class SQDLogger(Logger):
    def __init__(self, name: str = "lightning", *, generator: str = "generator", discriminator: str = "discriminator",
                 config: Mapping[str, Any] | None = None, tags: Iterable[str] = (),
                 generator_spec: Mapping[str, Any] | None = None, checkpoint_every: int | None = None,
                 rename: Mapping[str, str] | None = None, run_id: str | None = None, **monitor_kwargs: Any):
        super().__init__()
        self._name, self.generator_attr, self.discriminator_attr = name, generator, discriminator
        self.config: dict[str, Any] = _plain(dict(config or {}))
        self.tags = list(tags)
        self.generator_spec, self.checkpoint_every = generator_spec, checkpoint_every
        self.rename = {**LOSS_NAMES, **(rename or {})}
        self.run_id = run_id or new_id()
        self.monitor_kwargs = monitor_kwargs
        self.monitor: Monitor | None = None
        self._pending: list[tuple[dict[str, float], int, int | None]] = []
        self._exception: BaseException | None = None

    # ---- Logger API ------------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self._name

    @property
    def version(self) -> str:
        return self.run_id

    @property
    def experiment(self) -> Monitor | None:
        return self.monitor

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        values = vars(params) if isinstance(params, Namespace) else dict(params)
        self.config.update(_plain(values))

    @rank_zero_only
    def log_graph(self, model: nn.Module, input_array: Any = None) -> None:
        if isinstance(model, LightningModule) and self.monitor is None:
            self.watch(model)

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        values = dict(metrics)
        epoch = values.pop("epoch", None)
        row = ({self.rename.get(k, k): float(v) for k, v in values.items()}, int(step or 0),
               None if epoch is None else int(epoch))
        if self.monitor is None:
            self._pending.append(row)  # before fit reached log_graph (a sanity check): sent once watching
        else:
            self.monitor.log(row[0], row[1], row[2])

    @rank_zero_only
    def finalize(self, status: str) -> None:
        if self.monitor is None:
            return
        exc = self._exception
        if status == "success" or (status == "finished" and exc is None):
            self.monitor.close("finished")
        elif isinstance(exc, KeyboardInterrupt | RunCancelled):
            self.monitor.close("cancelled", error=f"cancelled ({type(exc).__name__})")
        elif exc is not None:
            self.monitor.close("failed", error=f"{type(exc).__name__}: {exc}",
                               traceback="".join(traceback.format_exception(exc)))
        else:
            self.monitor.close("failed", error=f"Lightning ended the run with status {status!r}")

    # ---- the GAN side ----------------------------------------------------------------------------------------
    def _net(self, module: LightningModule, attr: str, role: str) -> nn.Module:
        net = getattr(module, attr, None)
        if not isinstance(net, nn.Module):
            children = ", ".join(name for name, _ in module.named_children()) or "none"
            raise AttributeError(f"SQDLogger: {type(module).__name__}.{attr} is not the {role} network "
                                 f"(pass {role}='<attribute name>'; the module's children are: {children})")
        return net

    def watch(self, module: LightningModule) -> Monitor:
        """Build and start the Monitor on the module's G and D, and hook the trainer's batches."""
        G = self._net(module, self.generator_attr, "generator")
        D = self._net(module, self.discriminator_attr, "discriminator")
        self.monitor = Monitor(G, D, name=self._name, config=self.config, run_id=self.run_id, tags=self.tags,
                               generator_spec=self.generator_spec, checkpoint_every=self.checkpoint_every,
                               **self.monitor_kwargs)
        self.monitor.start()
        for row in self._pending:
            self.monitor.log(*row)
        self._pending.clear()
        trainer = module._trainer
        if trainer is not None and not any(isinstance(cb, _BatchHook) and cb.logger is self
                                           for cb in trainer.callbacks):
            trainer.callbacks.append(_BatchHook(self))
        return self.monitor

    @rank_zero_only
    def after_batch(self, trainer: Trainer) -> None:
        if self.monitor is not None:
            # the step Lightning hands loggers for this batch: training batches done before it
            step = getattr(trainer.fit_loop.epoch_loop, "_batches_that_stepped", trainer.global_step)
            self.monitor.step(int(step), epoch=trainer.current_epoch)

    @rank_zero_only
    def after_epoch(self, trainer: Trainer) -> None:
        if self.monitor is not None:
            self.monitor.end_epoch(trainer.current_epoch)

    def failed_with(self, exception: BaseException) -> None:
        self._exception = exception
