"""The two device kernels of a monitored step, in Triton (one pass over the weights) and in plain torch ops.

* `block_sums(cur, prev, out, block)`: for each block of `block` snapshot values, (S_bb, S_ee, S_be) in float64
  (b = cur, e = prev − cur; float32/bf16/fp16 values, so every product is exact in float64) → out (blocks, 3).
* `finish_row(...)`: sums the block sums of each network (`block_net`: the network of each block), and writes them
  with the step's inputs (losses, gradient norms) into row `counter % capacity` of the metric buffer, at the given
  columns; counter += 1. One program: the row index lives on the device, so a CUDA graph can replay this step
  after step without the host.

The Triton versions read the weights once (8 bytes per parameter) and launch twice; the torch versions are the
reference the tests compare against, and what runs where Triton is missing or fails to compile (a one-time
warning, from sqd.trainer.step_program). Both are capturable into a CUDA graph (no host synchronisation, no
allocation outside the graph's pool).
"""

from __future__ import annotations

import torch

try:  # Triton ships with torch on Linux x86-64 with CUDA; elsewhere the torch ops serve
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None

CHUNK = 1024  # block sums read per iteration by finish_row


def torch_block_sums(cur: torch.Tensor, prev: torch.Tensor, out: torch.Tensor, block: int) -> None:
    b = cur.double()
    pair = torch.stack([b, prev.double() - b]).view(2, -1, block)
    squares = torch.linalg.vecdot(pair, pair)
    out.copy_(torch.stack([squares[0], squares[1], torch.linalg.vecdot(pair[0], pair[1])], dim=1))


def torch_finish_row(partials: torch.Tensor, block_net: torch.Tensor, n_nets: int, inputs: torch.Tensor,
                     columns: torch.Tensor, values: torch.Tensor, counter: torch.Tensor) -> None:
    sums = torch.zeros(n_nets, 3, dtype=torch.float64, device=partials.device).index_add_(0, block_net, partials)
    row = torch.cat([sums.flatten(), inputs.to(torch.float64)])
    flat = torch.remainder(counter, values.shape[0]) * values.shape[1] + columns
    values.view(-1).index_copy_(0, flat, row)
    counter.add_(1)


if triton is not None:
    @triton.jit
    # no annotations but tl.constexpr: Triton 3.6 refuses globals such as typing.Any in a kernel's signature
    def _block_sums_kernel(cur_ptr, prev_ptr, out_ptr, BLOCK: tl.constexpr):  # type: ignore[no-untyped-def]
        pid = tl.program_id(0)
        offsets = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        b = tl.load(cur_ptr + offsets).to(tl.float64)
        e = tl.load(prev_ptr + offsets).to(tl.float64) - b
        tl.store(out_ptr + pid * 3, tl.sum(b * b, axis=0))
        tl.store(out_ptr + pid * 3 + 1, tl.sum(e * e, axis=0))
        tl.store(out_ptr + pid * 3 + 2, tl.sum(b * e, axis=0))

    @triton.jit
    def _finish_row_kernel(part_ptr, net_ptr, in_ptr, col_ptr, val_ptr, cnt_ptr,  # type: ignore[no-untyped-def]
                           n_blocks, n_inputs, n_columns, capacity, NETS: tl.constexpr, CHUNK: tl.constexpr,
                           SLOTS: tl.constexpr):
        count = tl.load(cnt_ptr)
        base = val_ptr + (count % capacity) * n_columns
        for n in tl.static_range(NETS):
            bb = tl.zeros([CHUNK], dtype=tl.float64)
            ee = tl.zeros([CHUNK], dtype=tl.float64)
            be = tl.zeros([CHUNK], dtype=tl.float64)
            for off in range(0, n_blocks, CHUNK):
                idx = off + tl.arange(0, CHUNK)
                valid = idx < n_blocks
                mine = valid & (tl.load(net_ptr + idx, mask=valid, other=-1) == n)
                bb += tl.load(part_ptr + idx * 3, mask=mine, other=0.0)
                ee += tl.load(part_ptr + idx * 3 + 1, mask=mine, other=0.0)
                be += tl.load(part_ptr + idx * 3 + 2, mask=mine, other=0.0)
            tl.store(base + tl.load(col_ptr + 3 * n), tl.sum(bb, axis=0))
            tl.store(base + tl.load(col_ptr + 3 * n + 1), tl.sum(ee, axis=0))
            tl.store(base + tl.load(col_ptr + 3 * n + 2), tl.sum(be, axis=0))
        slot = tl.arange(0, SLOTS)
        used = slot < n_inputs
        value = tl.load(in_ptr + slot, mask=used, other=0.0).to(tl.float64)
        column = tl.load(col_ptr + 3 * NETS + slot, mask=used, other=0)
        tl.store(base + column, value, mask=used)
        tl.store(cnt_ptr, count + 1)


def triton_available(device: torch.device) -> bool:
    return triton is not None and device.type == "cuda"


def triton_block_sums(cur: torch.Tensor, prev: torch.Tensor, out: torch.Tensor, block: int) -> None:
    _block_sums_kernel[(out.shape[0],)](cur, prev, out, BLOCK=block, num_warps=8)


def triton_finish_row(partials: torch.Tensor, block_net: torch.Tensor, n_nets: int, inputs: torch.Tensor,
                      columns: torch.Tensor, values: torch.Tensor, counter: torch.Tensor) -> None:
    slots = max(16, triton.next_power_of_2(inputs.numel()))
    _finish_row_kernel[(1,)](partials, block_net, inputs, columns, values, counter, partials.shape[0],
                             inputs.numel(), values.shape[1], values.shape[0], NETS=n_nets, CHUNK=CHUNK, SLOTS=slots)
