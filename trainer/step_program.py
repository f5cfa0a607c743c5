"""The device work of one monitored step on static tensors, and the runner that replays it as a CUDA graph.

`StepProgram.run(parity)` copies the weights into snapshot row `parity`, takes the block sums against the other
row and writes one metric-buffer row (the angle sums of every network, then the step's inputs: losses, metrics,
gradient norms). Every tensor it touches is allocated once, and the row index lives on the device
(`MetricBuffer.counter`), so the same launches are valid step after step.

The step's own tensors — losses, metrics, gradients — are new every step, so a graph cannot read them where they
are: `load` copies them into the program's static slots just before (two launches: a `torch.stack` of the values,
a `_foreach_copy_` of the gradients), and the program takes the gradient norms from those copies (`grad_copies`,
one per parameter). The copies cost device memory the size of the parameters, so above GRAD_COPY_BYTES the probe
leaves them out and gives `load` the norms, launched on the host side (`grad_norms`): a tensor per parameter for
Python to handle, the host time the copies save.

`GraphRunner` captures one CUDA graph per parity (the rows alternate) the first time it is needed and replays it
from then on: one host call for the whole step. Whatever breaks a capture (an op that syncs, an old driver, an
out-of-memory) makes the runner run the program eagerly from then on, after ONE logged warning — training never
fails because of the Monitor. The owner drops the graphs (`reset()`) whenever what they captured changes:
parameters moved, a new input key, a wider metric table.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch

from sqd.trainer import step_kernels
from sqd.trainer.metric_buffer import MetricBuffer
from sqd.trainer.weight_sums import WeightSnapshots

log = logging.getLogger(__name__)

Replay = Callable[[], None]
Capture = Callable[[Callable[[], None], Sequence[torch.Tensor], Any], tuple[Replay, Any]]


GRAD_COPY_BYTES = 256 << 20  # parameters up to this size get static gradient copies (the same again in memory)


def grad_norms(grads: list[torch.Tensor], narrow: bool) -> list[torch.Tensor]:
    """The L2 norm of each gradient; `narrow` (bf16/fp16 parameters): computed and returned in float32."""
    if narrow:
        return list(torch._foreach_norm(grads, 2, dtype=torch.float32))
    return list(torch._foreach_norm(grads))


class StepProgram:
    def __init__(self, snapshots: WeightSnapshots, buffer: MetricBuffer, angle_columns: Sequence[int],
                 input_columns: Sequence[int], input_dtype: torch.dtype,
                 grad_copies: Sequence[torch.Tensor] | None = None, narrow: bool = False):
        """`input_columns`: the step's values, then (with `grad_copies`, one per parameter, whose norms the program
        takes) a gradient norm per parameter; `narrow`: bf16/fp16 parameters."""
        device = snapshots.device
        self.snapshots, self.buffer = snapshots, buffer
        self.n_nets = len(snapshots.groups)
        n_blocks = snapshots.block_starts[-1]
        self.partials = torch.zeros(n_blocks, 3, dtype=torch.float64, device=device)
        self.inputs = torch.zeros(len(input_columns), dtype=input_dtype, device=device)
        self.grad_copies = list(grad_copies) if grad_copies is not None else None
        self.narrow = narrow
        n_values = len(input_columns) - (len(self.grad_copies) if self.grad_copies is not None else 0)
        self.value_part = self.inputs[:n_values]
        self.norm_part = self.inputs[n_values:]
        self.columns = torch.tensor([*angle_columns, *input_columns], dtype=torch.int64, device=device)
        starts = torch.tensor(snapshots.block_starts, dtype=torch.int64, device=device)
        self.block_net = torch.repeat_interleave(torch.arange(self.n_nets, device=device), torch.diff(starts))
        self.generation = buffer.generation  # the metric table this program writes into

    def load(self, values: list[torch.Tensor], grads: Sequence[torch.Tensor | None] | None) -> None:
        """The step's tensors into the static slots: `values` (losses, metrics, and without gradient copies the
        gradient norms) in one launch, and with copies each parameter's gradient in one more (None: its copy is
        zeroed, a norm of 0 as the host path gives)."""
        if values:
            torch.stack(values, out=self.value_part)
        if self.grad_copies is None or grads is None:
            return
        if any(g is None for g in grads):
            torch._foreach_zero_([c for c, g in zip(self.grad_copies, grads, strict=True) if g is None])
            pairs = [(c, g) for c, g in zip(self.grad_copies, grads, strict=True) if g is not None]
            if pairs:
                torch._foreach_copy_([c for c, _ in pairs], [g for _, g in pairs])
        else:
            torch._foreach_copy_(self.grad_copies, list(grads))  # type: ignore[arg-type]

    @torch.no_grad()
    def run(self, parity: int, triton: bool) -> None:
        if self.grad_copies is not None:
            torch.stack(grad_norms(self.grad_copies, self.narrow), out=self.norm_part)
        snaps = self.snapshots
        torch._foreach_copy_(snaps.views[parity], snaps.params)
        cur, prev = snaps.rows[parity], snaps.rows[parity ^ 1]
        if triton:
            step_kernels.triton_block_sums(cur, prev, self.partials, snaps.block)
            step_kernels.triton_finish_row(self.partials, self.block_net, self.n_nets, self.inputs, self.columns,
                                           self.buffer.values, self.buffer.counter)
        else:
            step_kernels.torch_block_sums(cur, prev, self.partials, snaps.block)
            step_kernels.torch_finish_row(self.partials, self.block_net, self.n_nets, self.inputs, self.columns,
                                          self.buffer.values, self.buffer.counter)


def capture_cuda_graph(fn: Callable[[], None], restore: Sequence[torch.Tensor], pool: Any) -> tuple[Replay, Any]:
    """Warm `fn` up on a side stream (Triton compiles, cuBLAS initialises), put back what the warm-up changed
    (`restore`: the row counter), then capture it. The step itself still has to be replayed."""
    saved = [t.clone() for t in restore]
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            fn()
            for t, s in zip(restore, saved, strict=True):
                t.copy_(s)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    # thread_local: the sender thread may wait on a CUDA event while this thread captures
    with torch.cuda.graph(graph, pool=pool, capture_error_mode="thread_local"):
        fn()
    return graph.replay, graph.pool()


class GraphRunner:
    def __init__(self, capture: Capture | None, triton: bool):
        """`capture=None` runs eagerly; `triton`: use the Triton kernels (else the torch ops)."""
        self.capture, self.triton = capture, triton
        self.graphs: dict[int, Replay] = {}
        self.captures = 0
        self.failed: str | None = None
        self._pool: Any = None

    @property
    def graphed(self) -> bool:
        return self.capture is not None and self.failed is None

    def reset(self) -> None:
        self.graphs.clear()
        self._pool = None

    def run(self, program: StepProgram, parity: int) -> None:
        replay = self.graphs.get(parity)
        if replay is None:
            with torch.autocast(program.snapshots.device.type, enabled=False):
                if not self.graphed:
                    self._run_eager(program, parity)
                    return
                replay = self._capture(program, parity)
                if replay is None:
                    program.run(parity, False)
                    return
            self.graphs[parity] = replay
            self.captures += 1
        replay()

    def _run_eager(self, program: StepProgram, parity: int) -> None:
        """The program without a graph; Triton kernels that fail (to compile, to launch) give way to the torch ops
        after ONE warning."""
        if self.triton:
            try:
                program.run(parity, True)
                return
            except Exception as exc:
                self.triton = False
                log.warning("Monitor: the Triton kernels failed (%s: %s); running the per-step work with torch ops",
                            type(exc).__name__, exc)
        program.run(parity, False)

    def _capture(self, program: StepProgram, parity: int) -> Replay | None:
        """A graph of the program (Triton kernels, else torch ops); None, after ONE warning, when neither can be
        captured — never fail training over the Monitor: eager torch ops from then on."""
        assert self.capture is not None
        failures = []
        for triton in ([True, False] if self.triton else [False]):
            try:
                replay, self._pool = self.capture(partial(program.run, parity, triton), [program.buffer.counter],
                                                  self._pool)
            except Exception as exc:
                failures.append(f"{'Triton kernels' if triton else 'torch ops'}: {type(exc).__name__}: {exc}")
                self._pool = None
                continue
            self.triton = triton
            if failures:
                log.warning("Monitor: the Triton kernels failed (%s); capturing the per-step work with torch ops",
                            failures[0])
            return replay
        self.failed = "; ".join(failures)
        self.triton = False
        log.warning("Monitor: CUDA graph capture failed (%s); running the per-step work eagerly from now on "
                    "(slower, same values)", self.failed)
        self.reset()
        return None
