"""A training process for the fault suite: a tiny GAN loop instrumented with the Monitor (10 lines), slow enough
that faults can be injected while it runs. Usage: python tiny_trainer.py RUN_ID STEPS SLEEP_S"""

import sys
import time

import torch
from torch import nn

from sqd.trainer import Monitor

run_id, steps, sleep_s = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
torch.manual_seed(0)
G = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
D = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1))
opt_g, opt_d = torch.optim.Adam(G.parameters(), 1e-3), torch.optim.Adam(D.parameters(), 1e-3)
with Monitor(G, D, name="tiny", run_id=run_id, profile="none", flush_every=20) as mon:
    for step in range(steps):
        real, fake = torch.randn(16, 2) + 2, G(torch.randn(16, 4))
        d_loss = nn.functional.softplus(-D(real)).mean() + nn.functional.softplus(D(fake.detach())).mean()
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
        g_loss = nn.functional.softplus(-D(fake)).mean()
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
        mon.step(step, epoch=step // 100, losses={"D": d_loss, "G": g_loss})
        time.sleep(sleep_s)
