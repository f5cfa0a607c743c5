"""Built-in sweeps: ready-made requests the launch page and `sqd sweep --builtin` offer.

"SQD grid (seed 003)": seed 003 compares NSGAN, LSGAN, Hinge and WGAN, each without and with a gradient penalty
(λ 10), on CelebA. Its offline twins on 16×16 stacked digits (`sqd-<loss>[-gp]-digits`, sqd/presets.py) differ
only in `loss.name` and `reg.names`, so the sweep's dimensions come out as exactly those two.
"""

from __future__ import annotations

from sqd.server.sweeps.schemas import BuiltinSweep

SQD_LOSSES = ("nsgan", "lsgan", "hinge", "wgan")
SQD_TWINS = [f"sqd-{loss}{gp}-digits" for loss in SQD_LOSSES for gp in ("", "-gp")]

BUILTIN = [
    BuiltinSweep(
        id="sqd-grid", title="SQD grid (seed 003)",
        description="seed 003's loss × regularizer comparison on its stacked-digits twins: NSGAN, LSGAN, Hinge and "
                    "WGAN, each without and with GP (λ 10), 3 seeds each (24 runs)",
        request={"name": "SQD grid (seed 003)", "presets": SQD_TWINS, "seeds": 3}),
]


def builtin(sweep: str) -> BuiltinSweep | None:
    return next((b for b in BUILTIN if sweep in (b.id, b.title)), None)
