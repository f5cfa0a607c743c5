"""One training iteration of any zoo config: n_dis D steps then one G step (Adam), or one simultaneous ACGD
step; EMA; the checkpoint dict and its restoration. Pure torch: no I/O, no logging, no host syncs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from sqd.train_config import TrainConfig
from sqd.trainer.acgd import ACGD
from sqd.trainer.checkpoint import capture_rng, restore_rng
from sqd.trainer.datasets import ImageSource
from sqd.trainer.gran import GradNormalized
from sqd.trainer.losses import get_loss
from sqd.trainer.nets import build_discriminator, build_generator, discriminator_spec, generator_spec
from sqd.trainer.regularizers import DBatch, PenaltyWeights, needs_input_grad, penalty
from sqd.trainer.schedules import EMA, hyper_at, set_adam


@dataclass
class StepResult:
    """Device scalars of one iteration (no sync)."""

    loss_d: Tensor
    loss_g: Tensor
    metrics: dict[str, Tensor]


class GANTrainer:
    def __init__(self, cfg: TrainConfig, data: ImageSource, device: torch.device, data_rng: torch.Generator):
        self.cfg, self.data, self.device, self.data_rng = cfg, data, device, data_rng
        self.g_spec, self.d_spec = generator_spec(cfg), discriminator_spec(cfg)
        self.G = build_generator(self.g_spec).to(device)
        self.D = build_discriminator(self.d_spec).to(device)
        regs = cfg.reg.names
        gran = next((n for n in regs if n.startswith("gran_")), None)
        self.critic: nn.Module = GradNormalized(self.D, cfg.reg.gran_eps, cfg.reg.gran_k) if gran else self.D
        self.loss = get_loss(cfg.loss.name)
        self.real_grad, self.fake_grad = needs_input_grad(regs)
        self.ema = EMA(self.G) if cfg.ema.enabled else None
        o = cfg.optim
        self.acgd: ACGD | None = None
        if o.name == "acgd":
            self.acgd = ACGD(self.D.parameters(), self.G.parameters(), lr_max=o.lr_d, lr_min=o.lr_g,
                             beta=o.acgd_beta, eps=o.eps, tol=o.acgd_tol, atol=o.acgd_atol, max_iter=o.acgd_max_iter)
        wd = cfg.reg.weight_decay if "l2" in regs else 0.0
        self.opt_g = torch.optim.Adam(self.G.parameters(), o.lr_g, betas=o.betas, eps=o.eps)
        self.opt_d = torch.optim.Adam(self.D.parameters(), o.lr_d, betas=o.betas, eps=o.eps, weight_decay=wd)
        self.hyper = hyper_at(cfg, 0)

    # ---- sampling ------------------------------------------------------------------------------------------
    def real(self) -> Tensor:
        return self.data.sample(self.cfg.train.batch, self.data_rng).to(self.device, non_blocking=True)

    def z(self) -> Tensor:
        return torch.randn(self.cfg.train.batch, self.cfg.model.z_dim, device=self.device)

    # ---- updates -------------------------------------------------------------------------------------------
    def d_step(self) -> tuple[Tensor, Tensor | None]:
        with torch.no_grad():
            fake = self.G(self.z())
        real = self.real().requires_grad_(self.real_grad)
        fake = fake.requires_grad_(self.fake_grad)
        real_logits, fake_logits = self.critic(real), self.critic(fake)
        loss = self.loss.d(real_logits, fake_logits)
        weights = PenaltyWeights(self.cfg.reg.lam, self.hyper.gamma, self.cfg.reg.dragan_c)
        pen = penalty(self.cfg.reg.names, DBatch(self.critic, real, fake, real_logits, fake_logits), weights)
        total = loss if pen is None else loss + pen
        self.opt_d.zero_grad(set_to_none=True)
        total.backward()
        self.opt_d.step()
        if self.cfg.loss.clip is not None:
            with torch.no_grad():
                for p in self.D.parameters():
                    p.clamp_(-self.cfg.loss.clip, self.cfg.loss.clip)
        return loss.detach(), None if pen is None else pen.detach()

    def g_step(self) -> Tensor:
        self.D.requires_grad_(False)  # G's backward need not fill D's .grad
        try:
            fake_logits = self.critic(self.G(self.z()))
            real_logits = self.critic(self.real()) if self.loss.needs_real_for_g else fake_logits
            loss = self.loss.g(real_logits, fake_logits)
            self.opt_g.zero_grad(set_to_none=True)
            loss.backward()
            self.opt_g.step()
        finally:
            self.D.requires_grad_(True)
        return loss.detach()

    def acgd_step(self, acgd: ACGD) -> tuple[Tensor, Tensor]:
        assert self.loss.game is not None  # the config allows only zero-sum losses with ACGD
        f = self.loss.game(self.critic(self.real()), self.critic(self.G(self.z())))
        acgd.step(f)
        f = f.detach()
        return -f, f  # D maximizes f: its loss is −f; G minimizes f

    def _apply_hyper(self, step: int) -> None:
        self.hyper = h = hyper_at(self.cfg, step)
        if self.acgd is not None:
            self.acgd.set_lr(h.lr_d, h.lr_g)
        else:
            set_adam(self.opt_g, h.lr_g, h.beta2)
            set_adam(self.opt_d, h.lr_d, h.beta2)

    def step(self, step: int) -> StepResult:
        """Generator iteration `step` (0-based): the D step(s), the G step, the EMA update."""
        self._apply_hyper(step)
        metrics: dict[str, Tensor] = {}
        if self.acgd is not None:
            loss_d, loss_g = self.acgd_step(self.acgd)
        else:
            for _ in range(self.cfg.optim.n_dis):
                loss_d, pen = self.d_step()
            if pen is not None:
                metrics["loss/D_penalty"] = pen
            loss_g = self.g_step()
        if self.ema is not None:
            self.ema.update(self.G, self.cfg.train.batch, self.hyper.ema_half_life_images)
        return StepResult(loss_d, loss_g, metrics)

    @property
    def lr(self) -> dict[str, float]:
        return {"G": self.hyper.lr_g, "D": self.hyper.lr_d}

    @property
    def sampler(self) -> nn.Module:
        """The generator to sample from: the EMA weights when enabled."""
        return self.ema.model if self.ema is not None else self.G

    # ---- checkpoints ---------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The checkpoint contract's dict, minus step/epoch (the Monitor stamps those)."""
        optim: dict[str, Any] = ({"acgd": self.acgd.state_dict()} if self.acgd is not None
                                 else {"G": self.opt_g.state_dict(), "D": self.opt_d.state_dict()})
        return {"generator": self.g_spec, "discriminator": self.d_spec, "G": self.G.state_dict(),
                "G_ema": self.ema.model.state_dict() if self.ema is not None else None, "D": self.D.state_dict(),
                "optim": optim, "config": self.cfg.model_dump(mode="json"), "rng": capture_rng(self.data_rng)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        if self.ema is not None:
            self.ema.model.load_state_dict(state["G_ema"] or state["G"])
        if self.acgd is not None:
            self.acgd.load_state_dict({k: v.to(self.device) if isinstance(v, Tensor) else v
                                       for k, v in state["optim"]["acgd"].items()})
        else:
            self.opt_g.load_state_dict(state["optim"]["G"])
            self.opt_d.load_state_dict(state["optim"]["D"])
        if state.get("rng") is not None:
            restore_rng(state["rng"], self.data_rng)

