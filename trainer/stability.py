"""Weight angles (SPEC §1, signal S): the angle between two weight vectors of a network, accurate for tiny angles.

`weight_angle(a, b)` is the reference: θ = 2·atan2(‖â − b̂‖, ‖â + b̂‖) on float64 copies. arccos of a float32
cosine cannot resolve the 1e-5…1e-2 rad of one optimizer step; this form has no cancellation.

`AngleTracker` is the per-step version used by the Monitor. Casting every parameter to float64 each step costs
several times the training step's own weight traffic on a CPU, so it evaluates the same formula from float32
snapshots: with a the previous and b the current weights, e = a − b is exact in float32 (neighbouring values
subtract without rounding, Sterbenz), ‖a‖ − ‖b‖ = (2⟨b, e⟩ + ‖e‖²) / (‖a‖ + ‖b‖) needs no difference of large
norms, and ‖â − b̂‖ = ‖e − (‖a‖ − ‖b‖)·b̂‖ / ‖a‖ is the norm of the tangential part of e, so an update that mostly
rescales the weights still gives an accurate angle. Reductions run in float32 inside blocks of `BLOCK` values and
in float64 across blocks; the result stays on the device (no host synchronisation) and agrees with a 50-digit
reference to 1e-5 relative at 1e-7 rad, also when the radial change is 10⁴× the tangential one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

BLOCK = 1024
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


def _block_sums(pairs: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """⟨x, y⟩ for each pair: float32 within blocks of BLOCK values, float64 across blocks (a float64 tensor)."""
    parts = [torch.linalg.vecdot(x.view(-1, BLOCK), y.view(-1, BLOCK)) for x, y in pairs]
    return torch.stack(parts).sum(dim=1, dtype=torch.float64)


@dataclass(frozen=True)
class _Math:
    """The scalar steps run on 0-d device tensors (no host sync on a GPU) or, on a CPU, on Python floats, which
    costs a few hundred nanoseconds instead of a tensor operation's microseconds."""

    sqrt: Callable[[Any], Any]
    atan2: Callable[[Any, Any], Any]
    nonneg: Callable[[Any], Any]


_ON_DEVICE = _Math(torch.sqrt, torch.atan2, lambda x: x.clamp_min(0))
_ON_HOST = _Math(math.sqrt, math.atan2, lambda x: max(x, 0.0))


def _angle_since(b: torch.Tensor, e: torch.Tensor, m: _Math) -> Any:
    """θ between a = b + e and b (a float64 0-d tensor, or a float with _ON_HOST); `e` becomes its tangential part."""
    sums = _block_sums([(b, b), (e, e), (b, e)])
    b_sq, e_sq, b_dot_e = sums.tolist() if m is _ON_HOST else sums.unbind()
    s = 2 * b_dot_e + e_sq  # ‖a‖² − ‖b‖², without subtracting two large norms
    a_sq = b_sq + s
    nb = m.sqrt(b_sq)
    coef = -s / ((m.sqrt(m.nonneg(a_sq)) + nb) * nb)  # −(‖a‖ − ‖b‖)/‖b‖
    if m is _ON_HOST:
        e.add_(b, alpha=coef)
    else:
        e.addcmul_(b, coef.to(e.dtype))
    t_sq = _block_sums([(e, e)])[0]  # ‖e − (‖a‖ − ‖b‖)·b̂‖² = ‖a‖²·‖â − b̂‖²
    d = (t_sq.item() if m is _ON_HOST else t_sq) / a_sq
    return 2 * m.atan2(m.sqrt(m.nonneg(d)), m.sqrt(m.nonneg(4 - d)))


class AngleTracker:
    """Angle between the parameters now and at the previous `update()`, computed on their device.

    Two flat buffers alternate as "previous" and "current" snapshot, so a step costs one copy of the parameters
    and three blocked reductions, with no allocation proportional to the model and no host synchronisation.
    """

    def __init__(self, params: Iterable[torch.Tensor], host_math: bool | None = None):
        """`host_math`: finish each angle in Python floats (default: when the parameters live on the CPU)."""
        self.params = [p for p in params]
        if not self.params:
            raise ValueError("AngleTracker: the network has no trainable floating-point parameters")
        n = sum(p.numel() for p in self.params)
        first = self.params[0]
        # float32 holds float16/bfloat16 exactly; float64 weights keep float64
        dtype = torch.float64 if all(p.dtype == torch.float64 for p in self.params) else torch.float32
        size = -(-n // BLOCK) * BLOCK
        self._buffers = [torch.zeros(size, dtype=dtype, device=first.device) for _ in range(2)]
        self._views = [self._split(buf) for buf in self._buffers]
        self._current = 0
        self.has_snapshot = False
        self._math = _ON_HOST if (first.device.type == "cpu" if host_math is None else host_math) else _ON_DEVICE

    def _split(self, buf: torch.Tensor) -> list[torch.Tensor]:
        views, offset = [], 0
        for p in self.params:
            views.append(buf[offset:offset + p.numel()].view_as(p))
            offset += p.numel()
        return views

    @torch.no_grad()
    def snapshot(self) -> None:
        """Remember the parameters as they are now (the start of the next angle)."""
        self._current ^= 1
        torch._foreach_copy_(self._views[self._current], self.params)
        self.has_snapshot = True

    @torch.no_grad()
    def update(self) -> torch.Tensor | float | None:
        """The angle since the last snapshot: a 0-d float64 tensor on a GPU (no sync), a float on the CPU, None the
        first time; the parameters as they are now become the next snapshot."""
        had = self.has_snapshot
        self.snapshot()
        if not had:
            return None
        b = self._buffers[self._current]
        e = self._buffers[self._current ^ 1].sub_(b)  # previous − current, in place: the old snapshot is spent
        return _angle_since(b, e, self._math)


@torch.no_grad()
def grad_norm(params: Sequence[torch.Tensor]) -> torch.Tensor | None:
    """L2 norm of all gradients present, as a 0-d tensor on their device (None when no parameter has one)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return None
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
