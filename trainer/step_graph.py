"""Whole-iteration CUDA graphs (train.cuda_graphs): the D step(s), the G step, both optimizers and the EMA update
captured once into one `torch.cuda.CUDAGraph`, then replayed every step — one launch instead of hundreds, for
the launch-bound small presets (a 16×16 DCGAN step is ~4 ms of launches on an H200).

When: only while the per-step hyper-parameters are final — after the burn-in (`burnin.steps`); the config
refuses a linear lr schedule — because lr, β₂, γ and the EMA decay are host floats baked into the capture.
Until then, steps run eager.
How: 3 eager warm-up iterations on a side stream (cuDNN autotuning, optimizer state, allocator pools), then the
capture, then a replay (capturing runs nothing). The real batches are drawn on the device inside the graph (the
data generator is registered with it; torch's default CUDA generator, used for z and the penalties' noise, is
handled by torch), so nothing is copied in per step. The losses are static tensors each replay overwrites: the
step returns copies.
Invalidation: `reset()` (load_state_dict brings new optimizer state tensors) drops the graph; the next steps warm
up and capture again. Parameters are updated in place, so the Monitor reads them (and their .grad) as usual.
Fallback: where a capture fails, or the batches come from the host (an image folder or CIFAR-10 through the
DataLoader), one warning says why and the run stays eager.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import torch

from sqd.trainer.batches import SampledBatches

if TYPE_CHECKING:
    from sqd.trainer.steps import GANTrainer, StepResult

WARMUP_STEPS = 3


class StepGraph:
    def __init__(self, trainer: GANTrainer):
        self.trainer = trainer
        self.graph: torch.cuda.CUDAGraph | None = None
        self.outputs: StepResult | None = None
        self.warm = 0
        self.off: str | None = self._why_not()
        if self.off:
            warnings.warn(f"train.cuda_graphs: {self.off}; training runs eager", stacklevel=3)

    def _why_not(self) -> str | None:
        batches = self.trainer.batches
        if not (isinstance(batches, SampledBatches) and batches.generator.device.type == "cuda"):
            return "the batches come from the host (DataLoader), a copy a graph cannot replay"
        if not hasattr(torch.cuda.CUDAGraph, "register_generator_state"):
            return f"torch {torch.__version__} cannot register the data generator with a graph"
        return None

    def reset(self) -> None:
        self.graph, self.outputs, self.warm = None, None, 0

    def step(self, step: int) -> StepResult:
        t = self.trainer
        if self.off or step < t.cfg.burnin.steps:
            return t.eager_step(step)
        if self.graph is None:
            if self.warm < WARMUP_STEPS:
                self.warm += 1
                return self._on_side_stream(step)
            try:
                self._capture(step)
            except Exception as exc:  # a capture that fails must not end the run
                self.reset()
                self.off = f"capture failed ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
                warnings.warn(f"train.cuda_graphs: {self.off}; training continues eager", stacklevel=3)
                torch.cuda.synchronize()
                return t.eager_step(step)
        assert self.graph is not None and self.outputs is not None
        self.graph.replay()
        out = self.outputs
        return type(out)(out.loss_d.clone(), out.loss_g.clone(), {k: v.clone() for k, v in out.metrics.items()})

    def _on_side_stream(self, step: int) -> StepResult:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            out = self.trainer.eager_step(step)
        torch.cuda.current_stream().wait_stream(side)
        return out

    def _capture(self, step: int) -> None:
        t = self.trainer
        for opt in (t.opt_g, t.opt_d):
            for group in opt.param_groups:
                group["capturable"] = True  # Adam refuses capture otherwise; its step counters are on the device
        assert isinstance(t.batches, SampledBatches)
        graph = torch.cuda.CUDAGraph()
        graph.register_generator_state(t.batches.generator)
        torch.cuda.synchronize()
        # thread_local: another thread's CUDA calls (the Monitor's, a loader's) must not invalidate the capture
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            outputs = t.eager_step(step)
        self.graph, self.outputs = graph, outputs
