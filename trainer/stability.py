"""Weight angles (SPEC §1, signal S): the angle between two weight vectors of a network, accurate for tiny angles.

`weight_angle(a, b)` is the reference: θ = 2·atan2(‖â − b̂‖, ‖â + b̂‖) on float64 copies. arccos of a float32
cosine cannot resolve the 1e-5…1e-2 rad of one optimizer step; this form has no cancellation.

`AngleTracker` is the per-step version for one network (the Monitor tracks all its networks at once with
sqd.trainer.step_probe): snapshots and three float64 sums per angle (sqd.trainer.weight_sums on a device,
sqd.trainer.host_sums on the CPU), which agree with a 50-digit reference to 1e-5 relative at 1e-7 rad, also when
the radial change is 10⁵× the tangential one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from sqd.trainer.weight_sums import WeightSnapshots, angle_from_sums, angle_from_sums_tensor

if TYPE_CHECKING:
    from sqd.trainer.host_sums import HostSnapshots

TensorLike = torch.Tensor | nn.Module | Sequence[torch.Tensor]


def trainable_parameters(module: nn.Module) -> list[torch.Tensor]:
    """Trainable floating-point parameters only: no buffers, no BatchNorm running statistics (SPEC §1)."""
    return [p for p in module.parameters() if p.requires_grad and p.is_floating_point()]


def _flat64(x: TensorLike) -> torch.Tensor:
    if isinstance(x, nn.Module):
        x = trainable_parameters(x)
    if isinstance(x, torch.Tensor):
        return x.detach().reshape(-1).to(torch.float64)
    return torch.cat([t.detach().reshape(-1).to(torch.float64) for t in x])


def weight_angle(a: TensorLike, b: TensorLike) -> float:
    """Angle in radians between two weight vectors (tensors, lists of tensors or modules), in float64.

    Exactly 0 for equal vectors, π/2 for orthogonal ones, and accurate to ~1e-15 absolute for tiny angles.
    Raises ValueError when the sizes differ; returns NaN when either vector is zero or not finite.
    """
    fa = _flat64(a)
    fb = _flat64(b).to(fa.device)
    if fa.numel() != fb.numel():
        raise ValueError(f"weight_angle: vectors have {fa.numel()} and {fb.numel()} elements")
    na, nb = torch.linalg.vector_norm(fa), torch.linalg.vector_norm(fb)
    if na == 0 or nb == 0:
        return math.nan
    ua, ub = fa / na, fb / nb
    return float(2.0 * torch.atan2(torch.linalg.vector_norm(ua - ub), torch.linalg.vector_norm(ua + ub)))


class AngleTracker:
    """Angle between the parameters now and at the previous `update()` (or `snapshot()`), on their device."""

    def __init__(self, params: Iterable[torch.Tensor], host_math: bool | None = None):
        """`host_math`: finish each angle in Python floats (default: when the parameters live on the CPU);
        otherwise it stays a 0-d float64 device tensor (no host synchronisation)."""
        params = list(params)
        if not params:
            raise ValueError("AngleTracker: the network has no trainable floating-point parameters")
        self.host_math = params[0].device.type == "cpu" if host_math is None else host_math
        self.snapshots: HostSnapshots | WeightSnapshots
        if self.host_math and params[0].device.type == "cpu":
            from sqd.trainer.host_sums import HostSnapshots  # numba: the CPU path only

            self.snapshots = HostSnapshots([params])
        else:
            self.snapshots = WeightSnapshots([params])

    @property
    def has_snapshot(self) -> bool:
        return self.snapshots.has_snapshot

    @torch.no_grad()
    def snapshot(self) -> None:
        """Remember the parameters as they are now (the start of the next angle)."""
        self.snapshots.snapshot()

    @torch.no_grad()
    def update(self) -> torch.Tensor | float | None:
        """The angle since the last snapshot (None the first time); the parameters now become the next snapshot."""
        if isinstance(self.snapshots, WeightSnapshots):
            sums = self.snapshots.device_sums()
            if sums is None:
                return None
            return angle_from_sums(*sums[0].tolist()) if self.host_math else angle_from_sums_tensor(sums[0])
        angles, _ = self.snapshots.sums()
        return None if angles is None else angle_from_sums(*angles[0])
