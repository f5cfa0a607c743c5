"""Flat weight snapshots of one or several networks and the three sums a weight angle needs (SPEC §1).

With a the previous and b the current weights of a network and e = a − b (formed element by element),

    S_bb = ⟨b, b⟩,  S_ee = ⟨e, e⟩,  S_be = ⟨b, e⟩,    θ = atan2(√(S_bb·S_ee − S_be²), S_bb + S_be)

(⟨a, b⟩ = S_bb + S_be and ‖a‖²‖b‖² − ⟨a, b⟩² = S_bb·S_ee − S_be², Lagrange's identity). No difference of two
large norms appears — S_ee is the size of the change itself — so the form resolves 1e-7 rad. The one cancellation
left, S_bb·S_ee − S_be², only bites when the change is almost purely radial (a rescaling of the weights); with
float64 sums it stays within 1e-7 relative of a 50-digit reference when the radial change is 10⁴× the tangential
one, and within 1e-5 at 10⁵× (tests/trainer/test_stability.py).

`WeightSnapshots` is the device side: two flat rows (previous / current, alternating, so a step copies the weights
once), each network's segment padded to a multiple of `block` with zeros (zeros add nothing to any sum);
`device_sums()` gives the sums in float64 on the device with no host synchronisation — what a GPU uses eagerly (the
CUDA graph of sqd.trainer.step_program computes the same sums with one fused kernel). The CPU forms them in one
compiled pass per parameter (sqd.trainer.host_sums).

Failure modes: a network without trainable floating-point parameters → ValueError naming it; zero or non-finite
weights → NaN angles (reported as non-finite points, never an exception).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

BLOCK = 1024


def angle_from_sums(bb: float, ee: float, be: float) -> float:
    """θ in radians from (S_bb, S_ee, S_be); NaN when either weight vector is zero or a sum is not finite."""
    ab = bb + be
    if not bb > 0 or not bb + 2 * be + ee > 0:
        return math.nan
    return math.atan2(math.sqrt(max(bb * ee - be * be, 0.0)), ab)


def angle_from_sums_tensor(sums: torch.Tensor) -> torch.Tensor:
    """The same on the device: `sums` (..., 3) float64 → angles (...), no host synchronisation."""
    bb, ee, be = sums.unbind(-1)
    theta = torch.atan2(torch.sqrt((bb * ee - be * be).clamp_min(0)), bb + be)
    return torch.where((bb > 0) & (bb + 2 * be + ee > 0), theta, torch.nan)


def fingerprint(params: Sequence[torch.Tensor]) -> tuple[int, ...]:
    """Where each parameter's storage is: `.to()`, `p.data = …`, a dtype change all give new storage."""
    return tuple(map(torch.Tensor.data_ptr, params))


def check_groups(groups: Sequence[Sequence[torch.Tensor]], names: Sequence[str] | None) -> list[list[torch.Tensor]]:
    """The parameter groups as lists; ValueError naming a network that has none."""
    names = list(names) if names is not None else [str(i) for i in range(len(groups))]
    for name, group in zip(names, groups, strict=True):
        if not group:
            raise ValueError(f"network {name!r} has no trainable floating-point parameters to take angles of")
    return [list(g) for g in groups]


def _padded(n: int, block: int) -> int:
    return -(-n // block) * block


class WeightSnapshots:
    def __init__(self, groups: Sequence[Sequence[torch.Tensor]], names: Sequence[str] | None = None,
                 block: int = BLOCK, dtype: torch.dtype | None = None):
        """`groups`: the trainable parameters of each network (one angle each); `dtype`: of the snapshots (default
        float32, which holds bf16/fp16 exactly, or float64 when every parameter is float64)."""
        self.groups = check_groups(groups, names)
        self.params = [p for g in self.groups for p in g]
        self.block = block
        self.device = self.params[0].device
        self.dtype = dtype or (torch.float64 if all(p.dtype == torch.float64 for p in self.params) else torch.float32)
        sizes = [_padded(sum(p.numel() for p in g), block) for g in self.groups]
        self.starts = [0]
        for size in sizes:
            self.starts.append(self.starts[-1] + size)
        self.rows = torch.zeros(2, self.starts[-1], dtype=self.dtype, device=self.device)
        self.views = [self._split(self.rows[i]) for i in range(2)]
        self.block_starts = [s // block for s in self.starts]
        self.latest = 0  # the row with the newest snapshot
        self.has_snapshot = False
        self.fingerprint = fingerprint(self.params)
        n_blocks = self.block_starts[-1]
        # per-network sums of block sums as one float64 product: (3, blocks) @ (blocks, networks)
        self.membership = torch.zeros(n_blocks, len(self.groups), dtype=torch.float64, device=self.device)
        for i in range(len(self.groups)):
            self.membership[self.block_starts[i]:self.block_starts[i + 1], i] = 1

    def _split(self, row: torch.Tensor) -> list[torch.Tensor]:
        views = []
        for start, group in zip(self.starts, self.groups, strict=False):
            offset = start
            for p in group:
                views.append(row[offset:offset + p.numel()].view_as(p))
                offset += p.numel()
        return views

    def moved(self) -> bool:
        return fingerprint(self.params) != self.fingerprint

    def snapshot(self) -> int:
        """Copy the weights into the other row, which becomes the newest; returns its index. Like every method
        here, call it under torch.no_grad() (the copy would otherwise be recorded for autograd)."""
        self.latest ^= 1
        torch._foreach_copy_(self.views[self.latest], self.params)
        self.has_snapshot = True
        return self.latest

    def device_sums(self) -> torch.Tensor | None:
        """(networks, 3) float64 device tensor of (S_bb, S_ee, S_be) since the previous snapshot (None the first
        time); snapshots now. Nothing is copied to the host."""
        had = self.has_snapshot
        cur = self.snapshot()
        if not had:
            return None
        b = self.rows[cur].double()
        pair = torch.stack([b, self.rows[cur ^ 1].double() - b]).view(2, -1, self.block)
        per_block = torch.cat([torch.linalg.vecdot(pair, pair), torch.linalg.vecdot(pair[0], pair[1])[None]])
        return (per_block @ self.membership).T
