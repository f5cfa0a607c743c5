"""A Monitor whose parameters move or change mid-run reports no angle for that step, never a wrong one, and goes
on measuring from fresh snapshots (real Valkey/Redis through the `bus` fixture)."""

from __future__ import annotations

import torch
from monitor_support import SPEC, events, points, tiny_gan, train
from torch import nn

from sqd.bus import Bus
from sqd.settings import Settings
from sqd.trainer import Monitor


def test_moved_and_swapped_parameters_start_fresh_snapshots(settings: Settings, bus: Bus) -> None:
    G, D = tiny_gan()
    mon = Monitor(G, D, name="moves", settings=settings, bus=bus, generator_spec=SPEC, checkpoint_every=None,
                  flush_every=4)
    with mon:
        train(mon, G, D, steps=3)
        G[0].weight.data = G[0].weight.data.clone()  # p.data swap at step 3: new storage
        train(mon, G, D, steps=3, start=3)
        G.load_state_dict(G.state_dict())  # into the same storage: not a move
        train(mon, G, D, steps=2, start=6)
        G[2].bias = nn.Parameter(G[2].bias.detach().clone())  # a new parameter object (registration hook)
        train(mon, G, D, steps=2, start=8)
        G.double()
        D.double()  # every parameter in new storage, another dtype: the loop below feeds float64
        opt_g = torch.optim.Adam(G.parameters(), 1e-3)
        for step in range(10, 13):
            loss = D(G(torch.randn(8, 4, dtype=torch.float64))).mean()
            opt_g.zero_grad()
            loss.backward()
            opt_g.step()
            mon.step(step, losses={"G": loss})
    pts = points(events(bus, "ingest"))
    assert sorted(pts["angle/G"]) == [0, 1, 2, 4, 5, 6, 7, 9, 11, 12]  # none at 3, 8, 10: just moved
    assert sorted(pts["angle/D"]) == [0, 1, 2, 4, 5, 6, 7, 9, 11, 12]
    assert all(0 < pts["angle/G"][s] < 0.5 for s in pts["angle/G"])
    assert sorted(pts["loss/G"]) == list(range(13))  # everything else goes on
