"""sqd.integrations.lightning.SQDLogger in a real Lightning `fit` of a tiny GAN on the CPU (manual optimization,
two optimizers, as Lightning's GAN examples do), reporting to a real bus."""

from __future__ import annotations

import pytest
import torch
from monitor_support import SPEC, events, of_type, points
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from sqd.bus import Bus
from sqd.settings import Settings

L = pytest.importorskip("lightning")
from sqd.integrations.lightning import SQDLogger  # noqa: E402


class TinyGAN(L.LightningModule):
    def __init__(self, lr: float = 1e-3, fail_at: int | None = None):
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        torch.manual_seed(0)
        self.G = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 4))
        self.D = nn.Sequential(nn.Linear(4, 16), nn.LeakyReLU(0.2), nn.Linear(16, 1))

    def training_step(self, batch, batch_idx):
        if self.hparams.fail_at is not None and self.global_step // 2 == self.hparams.fail_at:
            raise RuntimeError("D exploded")
        opt_g, opt_d = self.optimizers()
        (real,) = batch
        z = torch.randn(real.shape[0], 4)
        d_loss = F.softplus(-self.D(real)).mean() + F.softplus(self.D(self.G(z).detach())).mean()
        opt_d.zero_grad()
        self.manual_backward(d_loss)
        opt_d.step()
        g_loss = F.softplus(-self.D(self.G(z))).mean()
        opt_g.zero_grad()
        self.manual_backward(g_loss)
        opt_g.step()
        self.log_dict({"d_loss": d_loss, "g_loss": g_loss, "real_score": self.D(real).mean()})

    def configure_optimizers(self):
        return [torch.optim.Adam(self.G.parameters(), self.hparams.lr, betas=(0.5, 0.999)),
                torch.optim.Adam(self.D.parameters(), self.hparams.lr, betas=(0.5, 0.999))]


def fit(module: TinyGAN, logger: SQDLogger, epochs: int = 2) -> None:
    data = DataLoader(TensorDataset(torch.randn(640, 4) + 2), batch_size=32)  # 20 batches per epoch
    trainer = L.Trainer(max_epochs=epochs, logger=logger, log_every_n_steps=5, accelerator="cpu", devices=1,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, data)


def test_fit_reports_losses_angles_and_checkpoints(settings: Settings, bus: Bus) -> None:
    logger = SQDLogger("tiny lightning", generator="G", discriminator="D", tags=["lightning"], generator_spec=SPEC,
                       checkpoint_every=10, settings=settings, bus=bus)
    fit(TinyGAN(), logger)
    ingest = events(bus, "ingest")
    started = ingest[0]
    assert (started.type, started.run_id, started.name, started.tags) == ("run_started", logger.run_id,
                                                                          "tiny lightning", ["lightning"])
    assert started.config == {"lr": 1e-3, "fail_at": None}  # save_hyperparameters()
    pts = points(ingest)
    assert sorted(pts["angle/G"]) == list(range(40)) and sorted(pts["angle/D"]) == list(range(40))
    assert all(0 < v < 1 for v in pts["angle/G"].values())
    assert sorted(pts["loss/D"]) == sorted(pts["loss/G"]) == sorted(pts["real_score"]) == list(range(4, 40, 5))
    assert sorted(pts["angle_epoch/G"]) == [19, 39]  # one per epoch, at its last step
    assert [c.step for c in of_type(events(bus, "checkpoints"), "checkpoint")] == [0, 10, 20, 30, 39]
    finished = ingest[-1]
    assert (finished.type, finished.status, finished.step) == ("run_finished", "finished", 39)


def test_an_exception_in_fit_fails_the_run_with_its_traceback(settings: Settings, bus: Bus) -> None:
    logger = SQDLogger("boom", generator="G", discriminator="D", checkpoint_every=None, settings=settings, bus=bus)
    with pytest.raises(RuntimeError, match="D exploded"):
        fit(TinyGAN(fail_at=7), logger)
    finished = events(bus, "ingest")[-1]
    assert (finished.type, finished.status, finished.error) == ("run_finished", "failed", "RuntimeError: D exploded")
    assert "training_step" in finished.traceback and sorted(points(events(bus, "ingest"))["angle/G"]) == list(range(7))


def test_a_wrong_attribute_name_is_said_before_training(settings: Settings, bus: Bus) -> None:
    logger = SQDLogger("x", generator="generator", discriminator="D", settings=settings, bus=bus)
    with pytest.raises(AttributeError, match=r"TinyGAN.generator is not the generator network \(pass "
                                             r"generator='<attribute name>'; the module's children are: G, D\)"):
        fit(TinyGAN(), logger)
