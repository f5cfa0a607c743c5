"""One training iteration of any zoo config: n_dis D steps then one G step (Adam), or one simultaneous ACGD
step; EMA; the checkpoint dict and its restoration. Pure torch: no I/O, no logging, no host syncs.

How the device is used (bf16 autocast, channels_last, fused Adam, torch.compile, CUDA graphs) comes from the
`SpeedPlan` (speed.py): the nets are called through `Mixed` wrappers (`self.g`, `self.critic`) while `self.G` /
`self.D` stay the raw modules that the optimizers, the EMA, the checkpoints and the Monitor see.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from sqd.train_config import TrainConfig
from sqd.trainer.acgd import ACGD
from sqd.trainer.batches import Batches
from sqd.trainer.checkpoint import capture_rng, restore_rng
from sqd.trainer.compiled import compile_nets
from sqd.trainer.datasets import ImageSource
from sqd.trainer.gran import GradNormalized
from sqd.trainer.losses import get_loss
from sqd.trainer.nets import build_discriminator, build_generator, discriminator_spec, generator_spec
from sqd.trainer.regularizers import DBatch, PenaltyWeights, needs_input_grad, penalty
from sqd.trainer.schedules import EMA, hyper_at, set_adam
from sqd.trainer.speed import Mixed, SpeedPlan
from sqd.trainer.step_graph import StepGraph


@dataclass
class StepResult:
    """Device scalars of one iteration (no sync)."""

    loss_d: Tensor
    loss_g: Tensor
    metrics: dict[str, Tensor]


def _adam(params: Any, lr: float, betas: tuple[float, float], eps: float, weight_decay: float,
          plan: SpeedPlan) -> torch.optim.Adam:
    # fused on CUDA: one kernel for all parameters instead of a few per parameter (launch-bound small nets)
    return torch.optim.Adam(params, lr, betas=betas, eps=eps, weight_decay=weight_decay,
                            fused=True if plan.cuda else None)


def _runtime_flags(opt: torch.optim.Optimizer, plan: SpeedPlan) -> None:
    """After load_state_dict: this run's implementation flags on every group (a loaded state_dict brings the
    saving run's), and the step counters where the fused kernel reads them (on the device, fp32)."""
    for group in opt.param_groups:
        group.update(fused=True if plan.cuda else None, foreach=None, capturable=False)
    if plan.cuda:
        for state in opt.state.values():
            if "step" in state:
                state["step"] = state["step"].to(plan.device, torch.float32)


class GANTrainer:
    def __init__(self, cfg: TrainConfig, data: ImageSource, plan: SpeedPlan, batches: Batches):
        self.cfg, self.data, self.plan, self.batches = cfg, data, plan, batches
        self.device = device = plan.device
        self.g_spec, self.d_spec = generator_spec(cfg), discriminator_spec(cfg)
        layout = torch.channels_last if plan.channels_last else torch.preserve_format
        self.G = build_generator(self.g_spec).to(device, memory_format=layout)
        self.D = build_discriminator(self.d_spec).to(device, memory_format=layout)
        regs = cfg.reg.names
        gran = next((n for n in regs if n.startswith("gran_")), None)
        self.g: nn.Module = Mixed(self.G, plan)
        self.d: nn.Module = Mixed(self.D, plan)
        self.critic: nn.Module = GradNormalized(self.d, cfg.reg.gran_eps, cfg.reg.gran_k) if gran else self.d
        self.loss = get_loss(cfg.loss.name)
        self.real_grad, self.fake_grad = needs_input_grad(regs)
        self.ema = EMA(self.G) if cfg.ema.enabled else None
        o = cfg.optim
        self.acgd: ACGD | None = None
        if o.name == "acgd":
            self.acgd = ACGD(self.D.parameters(), self.G.parameters(), lr_max=o.lr_d, lr_min=o.lr_g,
                             beta=o.acgd_beta, eps=o.eps, tol=o.acgd_tol, atol=o.acgd_atol, max_iter=o.acgd_max_iter)
        wd = cfg.reg.weight_decay if "l2" in regs else 0.0
        self.opt_g = _adam(self.G.parameters(), o.lr_g, o.betas, o.eps, 0.0, plan)
        self.opt_d = _adam(self.D.parameters(), o.lr_d, o.betas, o.eps, wd, plan)
        self.hyper = hyper_at(cfg, 0)
        if plan.compile:
            compile_nets(self)
        self.graph = StepGraph(self) if plan.cuda_graphs else None

    # ---- sampling ------------------------------------------------------------------------------------------
    def real(self) -> Tensor:
        return self.batches.next()

    def z(self) -> Tensor:
        return torch.randn(self.cfg.train.batch, self.cfg.model.z_dim, device=self.device)

    # ---- updates -------------------------------------------------------------------------------------------
    def d_step(self) -> tuple[Tensor, Tensor | None]:
        with torch.no_grad():
            fake = self.g(self.z())
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
            fake_logits = self.critic(self.g(self.z()))
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
        f = self.loss.game(self.critic(self.real()), self.critic(self.g(self.z())))
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
        if self.graph is not None:
            return self.graph.step(step)
        return self.eager_step(step)

    def eager_step(self, step: int) -> StepResult:
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
                "optim": optim, "config": self.cfg.model_dump(mode="json"),
                "rng": capture_rng(self.batches.rng_state())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        if self.ema is not None:
            self.ema.model.load_state_dict(state["G_ema"] or state["G"])
        if self.acgd is not None:
            self.acgd.load_state_dict({k: v.to(self.device) if isinstance(v, Tensor) else v
                                       for k, v in state["optim"]["acgd"].items()})
        else:
            for opt, key in ((self.opt_g, "G"), (self.opt_d, "D")):
                opt.load_state_dict(state["optim"][key])
                _runtime_flags(opt, self.plan)
        if state.get("rng") is not None:
            self.batches.set_rng_state(restore_rng(state["rng"]))
        if self.graph is not None:
            self.graph.reset()  # the optimizers' state tensors are new: capture again

