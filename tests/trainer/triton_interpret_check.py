"""Run by test_step_program.py in a subprocess with TRITON_INTERPRET=1: the Triton kernels of a monitored step on
CPU tensors (Triton's interpreter) against the torch ops they replace. Prints OK or raises."""

from __future__ import annotations

import os

assert os.environ.get("TRITON_INTERPRET") == "1", "run with TRITON_INTERPRET=1"

import torch  # noqa: E402

from sqd.trainer import step_kernels  # noqa: E402


def main() -> None:
    torch.manual_seed(0)
    block, starts = 256, [0, 3, 8]  # two networks: 3 and 5 blocks
    n = starts[-1] * block
    cur = torch.randn(n)
    prev = cur + 1e-3 * torch.randn(n)
    prev[block * 3 - 17:block * 3] = 0  # padding of the first network
    cur[block * 3 - 17:block * 3] = 0
    got, want = torch.zeros(starts[-1], 3, dtype=torch.float64), torch.zeros(starts[-1], 3, dtype=torch.float64)
    step_kernels.triton_block_sums(cur, prev, got, block)
    step_kernels.torch_block_sums(cur, prev, want, block)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)

    inputs = torch.tensor([0.5, -2.0, 3.25, 7.0])
    columns = torch.tensor([9, 0, 1, 2, 3, 4, 12, 5, 6, 7], dtype=torch.int64)
    starts_t = torch.tensor(starts, dtype=torch.int64)
    block_net = torch.repeat_interleave(torch.arange(2), torch.diff(starts_t))
    tables = []
    for finish in ("triton", "torch"):
        values = torch.full((4, 16), -1.0, dtype=torch.float64)
        counter = torch.tensor([5], dtype=torch.int64)  # row 5 % 4 = 1
        if finish == "triton":
            step_kernels.triton_finish_row(want, block_net, 2, inputs, columns, values, counter)
        else:
            step_kernels.torch_finish_row(want, block_net, 2, inputs, columns, values, counter)
        assert int(counter) == 6, (finish, counter)
        tables.append(values)
    torch.testing.assert_close(tables[0], tables[1], rtol=1e-12, atol=1e-12)
    sums = want[:3].sum(0)
    assert abs(float(tables[0][1, 9]) - float(sums[0])) < 1e-9 * float(sums[0])
    assert float(tables[0][1, 7]) == 7.0 and float(tables[0][0, 7]) == -1.0
    print("OK")


if __name__ == "__main__":
    main()
