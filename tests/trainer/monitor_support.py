"""Helpers for the Monitor and agent tests: a tiny GAN loop and reading events back from the bus."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from sqd.bus import Bus
from sqd.trainer.monitor import Monitor
from sqd.wire import decode

SPEC = {"arch": "tiny-mlp", "kwargs": {}, "z_dim": 4}

# Tiny nets gain nothing from intra-op threads, and on a loaded 2-core machine they lose 10× to contention.
torch.set_num_threads(1)


def tiny_gan(seed: int = 0) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(seed)
    G = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 4))
    D = nn.Sequential(nn.Linear(4, 16), nn.LeakyReLU(0.2), nn.Linear(16, 1))
    return G, D


def train(mon: Monitor, G: nn.Module, D: nn.Module, steps: int, steps_per_epoch: int = 10,
          nan_at: int | None = None, start: int = 0) -> None:
    """A plain NSGAN loop with the Monitor's four lines in it."""
    opt_g = torch.optim.Adam(G.parameters(), 1e-3, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), 1e-3, betas=(0.5, 0.999))
    for step in range(start, start + steps):
        epoch = step // steps_per_epoch
        z, x = torch.randn(32, 4), torch.randn(32, 4) + 2
        d_loss = F.softplus(-D(x)).mean() + F.softplus(D(G(z).detach())).mean()
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
        g_loss = F.softplus(-D(G(z))).mean()
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
        if step == nan_at:
            d_loss = torch.tensor(math.nan)
        mon.step(step, epoch=epoch, losses={"D": d_loss, "G": g_loss}, lr={"G": 1e-3, "D": 1e-3})
        if (step + 1) % steps_per_epoch == 0:
            mon.end_epoch(epoch)


def events(bus: Bus, stream: str) -> list[Any]:
    return [decode(f) for _, f in bus.client.xrange(bus.key(stream))]


def points(evts: list[Any]) -> dict[str, dict[int, float]]:
    """{key: {step: value}} over every MetricBatch; a point delivered twice must carry the same value."""
    out: dict[str, dict[int, float]] = {}
    for e in evts:
        if e.type == "metrics":
            for p in e.points():
                out.setdefault(p.key, {})[p.step] = p.value
    return out


def of_type(evts: list[Any], kind: str) -> list[Any]:
    return [e for e in evts if e.type == kind]
