"""The CPU side of the weight angles (SPEC §1): per parameter, one compiled pass that forms the three sums of an
angle against the previous snapshot, takes the new snapshot and sums the gradient's squares.

With a the previous and b the current weights and e = a − b, a pass reads b and a, writes b over a, and adds
S_bb, S_ee, S_be (sqd.trainer.weight_sums has the angle they give) and ‖grad‖². Torch needs four passes and a
dozen launches for the same (snapshot copy, subtraction, block Gram product, `_foreach_norm`), which made the
Monitor's CPU cost ~2 % of a digits step; numba (`nogil`, so a probe worker thread runs beside training) fuses them.

Every product and sum is float64: the difference of two float32 values is exact in float64, so S_ee is the size
of the change itself and the form resolves 1e-7 rad also when the change is mostly radial, without a refinement
pass. The loops may reassociate their sums (vectorised), never assume finite values: a NaN or ±inf weight gives
NaN sums, hence a NaN angle. Elements are read in memory order (a sum of squares does not depend on the order), so
channels_last weights need no copy; non-dense tensors are read through a copy, bf16/fp16 ones through a float32
copy.

numba is imported here only: a GPU run measures on its device (sqd.trainer.step_program) and needs none of this.
Failure modes: a network without trainable floating-point parameters → ValueError naming it; numba missing →
ImportError saying what to install.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

try:
    import numba
    from numba import types
    from numba.core import cgutils
    from numba.extending import intrinsic
except ImportError as exc:  # an install of sqd without its trainer extra, beside a torch of its own
    raise ImportError(f"the Monitor on a CPU needs numba ({exc}): pip install 'sqd[trainer]' (or pip install "
                      f"numba)") from exc

from sqd.trainer.weight_sums import check_groups, fingerprint

_REASSOCIATE = {"reassoc", "contract"}  # vectorised sums; NaN and ±inf keep their IEEE meaning
_NUMPY_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}


@intrinsic
def _pointer(typingctx: Any, address: Any) -> Any:
    """An integer address as a void pointer (for numba.carray)."""
    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.inttoptr(args[0], cgutils.voidptr_t)

    return types.voidptr(address), codegen


def _compiled(fn: Callable[..., Any]) -> Any:
    """`fn` compiled by numba, cached on disk (next to this file, else in the user's cache directory); where neither
    can be written (a read-only install without a home) numba refuses to cache, and each process compiles (~1 s)."""
    options: dict[str, Any] = {"nogil": True, "fastmath": _REASSOCIATE, "error_model": "numpy"}
    try:
        return numba.njit(cache=True, **options)(fn)
    except RuntimeError:  # "cannot cache function …: no locator available"
        return numba.njit(**options)(fn)


@_compiled
def _passes(like: np.ndarray, weights: np.ndarray, snapshots: np.ndarray, grads: np.ndarray, sizes: np.ndarray,
            nets: np.ndarray, n_nets: int) -> np.ndarray:
    """Per network (S_bb, S_ee, S_be, ‖grad‖², gradients present); each snapshot becomes its weights. Tensor j
    belongs to network `nets[j]` and is `sizes[j]` values of `like`'s dtype at address `weights[j]`, its snapshot at
    `snapshots[j]`, its gradient at `grads[j]` (0: none), each one dense block that the caller keeps alive.
    Addresses, not arrays: one compiled version per dtype whatever the number of tensors (a tuple of arrays is
    compiled per length: 6 s for 150 tensors, 99 s for 600), and a gradient, a new tensor each step, costs ~2.5 µs
    to make an array of — more than its sum. Totals per network, not per tensor: each Python operation after a
    training step runs on cold caches (~10× its usual time), so the caller is left as little as possible to do."""
    out = np.zeros((n_nets, 5))
    for j in range(sizes.size):
        n = sizes[j]
        w = numba.carray(_pointer(weights[j]), n, like.dtype)
        s = numba.carray(_pointer(snapshots[j]), n, like.dtype)
        # one loop over all three (~13 % faster than a second loop for the gradient); no gradient: the weights
        # stand in, read from the same cache lines, and the sum is dropped
        g = numba.carray(_pointer(grads[j] if grads[j] else weights[j]), n, like.dtype)
        bb = ee = be = gg = 0.0
        for i in range(n):
            b = np.float64(w[i])
            e = np.float64(s[i]) - b
            s[i] = w[i]
            x = np.float64(g[i])
            bb += b * b
            ee += e * e
            be += b * e
            gg += x * x
        row = out[nets[j]]
        row[0] += bb
        row[1] += ee
        row[2] += be
        if grads[j]:
            row[3] += gg
            row[4] += 1.0
    return out


def _memory_order(t: torch.Tensor) -> torch.Tensor | None:
    """A 1-D view of `t`'s elements in the order they lie in memory, or None when they are not one dense block."""
    if t.is_contiguous():
        return t.view(-1)
    permuted = t.permute(sorted(range(t.dim()), key=t.stride, reverse=True))
    return permuted.view(-1) if permuted.is_contiguous() else None


def _flat(t: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """`t`'s elements as one dense float32/float64 block, and whether it is a view of `t` (not a copy)."""
    t = t.detach()
    flat = _memory_order(t)
    view = flat is not None
    if flat is None:
        flat = t.reshape(-1).contiguous()  # reshape may give a strided 1-D view
    if flat.dtype not in (torch.float32, torch.float64):
        flat, view = flat.float(), False
    return flat, view


def _dense_address(g: torch.Tensor, dtype: torch.dtype, keep: list[torch.Tensor]) -> int:
    """Where a gradient that is not one contiguous block of `dtype` lies as one: a memory-order view
    (channels_last), else a copy kept alive in `keep` until the pass ran."""
    flat, view = _flat(g)
    if flat.dtype != dtype:
        flat, view = flat.to(dtype), False
    if not view:
        keep.append(flat)
    return flat.data_ptr()


_data_ptr, _is_contiguous = torch.Tensor.data_ptr, torch.Tensor.is_contiguous


def _grad_addresses(grads: Sequence[torch.Tensor | None], dtype: torch.dtype, keep: list[torch.Tensor],
                    native: bool) -> np.ndarray:
    """Where each gradient's values lie as one dense block of `dtype` (0: no gradient). `native`: the parameters
    are of `dtype`, so their gradients are too (torch refuses a gradient of another dtype); then the usual case —
    every gradient there and contiguous — is checked by `map` at C speed, ~25 % less than a Python loop over the
    tensors on the cold caches after a training step (this runs per tensor and step)."""
    if native:
        try:
            addresses = np.fromiter(map(_data_ptr, grads), np.int64, len(grads))
        except TypeError:  # a parameter without a gradient
            pass
        else:
            if all(map(_is_contiguous, grads)):
                return addresses
    return np.array([0 if g is None else g.data_ptr() if g.dtype == dtype and g.is_contiguous()
                     else _dense_address(g, dtype, keep) for g in grads], np.int64)


def _addresses(tensors: Sequence[torch.Tensor]) -> np.ndarray:
    return np.array([t.data_ptr() for t in tensors], np.int64)


@dataclass
class _DtypeGroup:
    """The tensors whose flat blocks have one dtype (a float32 model: all of them), passed in one call."""
    indices: list[int] | None  # into the parameters; None: all of them, in order
    nets: np.ndarray  # each tensor's network
    like: np.ndarray  # empty, of their numpy dtype
    dtype: torch.dtype
    sizes: np.ndarray
    snapshots: list[torch.Tensor]
    snapshot_addresses: np.ndarray
    weights: list[torch.Tensor] | None  # views (valid while the storage is: `fingerprint`); None: copies, each pass
    weight_addresses: np.ndarray | None
    no_grads: np.ndarray  # zeros: the addresses of a pass without gradients
    native: bool  # the parameters themselves are of `dtype` (so are their gradients)

    def pick(self, items: Sequence[Any]) -> Sequence[Any]:
        return items if self.indices is None else [items[i] for i in self.indices]


class HostSnapshots:
    """Snapshots of the parameters of one or several networks (one angle each), on the CPU."""

    def __init__(self, groups: Sequence[Sequence[torch.Tensor]], names: Sequence[str] | None = None):
        self.groups = check_groups(groups, names)
        self.params = [p for g in self.groups for p in g]
        net_of = [k for k, g in enumerate(self.groups) for _ in g]
        flats = [_flat(p) for p in self.params]
        self.dtype_groups = []
        for dtype in dict.fromkeys(f.dtype for f, _ in flats):
            indices = [i for i, (f, _) in enumerate(flats) if f.dtype == dtype]
            snapshots = [torch.empty_like(flats[i][0]) for i in indices]
            weights = [flats[i][0] for i in indices] if all(flats[i][1] for i in indices) else None
            self.dtype_groups.append(_DtypeGroup(
                None if len(indices) == len(flats) else indices, np.array([net_of[i] for i in indices], np.int64),
                np.empty(0, _NUMPY_DTYPES[dtype]), dtype,
                np.array([self.params[i].numel() for i in indices], np.int64), snapshots, _addresses(snapshots),
                weights, None if weights is None else _addresses(weights), np.zeros(len(indices), np.int64),
                all(self.params[i].dtype == dtype for i in indices)))
        self.fingerprint = fingerprint(self.params)
        self.has_snapshot = False

    def _weights(self, group: _DtypeGroup) -> list[torch.Tensor]:
        return group.weights if group.weights is not None else [_flat(p)[0] for p in group.pick(self.params)]

    def _weight_addresses(self, group: _DtypeGroup, keep: list[torch.Tensor]) -> np.ndarray:
        if group.weight_addresses is not None:
            return group.weight_addresses
        copies = self._weights(group)
        keep += copies
        return _addresses(copies)

    def snapshot(self) -> None:
        """Remember the weights as they are now (the start of the next angle)."""
        for group in self.dtype_groups:
            torch._foreach_copy_(group.snapshots, self._weights(group))
        self.has_snapshot = True

    def passes(self, grads: Sequence[torch.Tensor | None] | None = None) -> tuple[bool, np.ndarray]:
        """Whether there was a snapshot before, and per network (S_bb, S_ee, S_be, ‖grad‖², gradients present) as
        one (networks, 5) float64 array — left undecoded, for the caller to read where its caches are warm (the
        CPU probe: at the flush). Snapshots now."""
        had, self.has_snapshot = self.has_snapshot, True
        keep: list[torch.Tensor] = []  # copies read by address: alive until the pass ran
        total: np.ndarray | None = None
        for group in self.dtype_groups:
            grad_addresses = group.no_grads if grads is None else \
                _grad_addresses(group.pick(grads), group.dtype, keep, group.native)
            part = _passes(group.like, self._weight_addresses(group, keep), group.snapshot_addresses, grad_addresses,
                           group.sizes, group.nets, len(self.groups))
            total = part if total is None else total + part
        return had, total  # type: ignore[return-value]  # check_groups: at least one tensor

    def sums(self, grads: Sequence[torch.Tensor | None] | None = None
             ) -> tuple[list[tuple[float, float, float]] | None, list[float | None]]:
        """Per network (S_bb, S_ee, S_be) since the previous snapshot (None the first time) and, given the gradient
        of each parameter (None where it has none), the squared gradient norm (None where no parameter has one).
        Snapshots now."""
        had, total = self.passes(grads)
        rows = total.tolist()
        return ([(bb, ee, be) for bb, ee, be, _, _ in rows] if had else None), [gg if present else None
                                                                                for _, _, _, gg, present in rows]
