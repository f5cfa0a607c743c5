"""Where a trainer's real batches come from: one float batch in [−1, 1] per `next()`, on the training device, in
the plan's memory layout (channels_last on CUDA).

- Sources small enough for the device (stacked digits, synthetic images) move there and are drawn by index with
  a generator on that device: no host work and no host→device copy per batch. On the CPU this is the pre-GPU
  path exactly (a CPU generator seeded with train.seed: the same batches for a seed as before); on CUDA the
  generator is a CUDA generator seeded with train.seed — the same batches for a seed on CUDA, not the CPU's.
- uint8 image sets (image folders, CIFAR-10) go through a DataLoader when the plan has workers: the index
  batches are drawn in this process from the data generator (the same draws as without workers), the workers
  gather those images out of the memory map into pinned uint8 tensors, the copy to the device is non_blocking
  (a quarter of the bytes of float), and the float conversion / resize run on the device. With 0 workers (the
  CPU default) they are sampled in this process.

Resume: `rng_state()` is the data generator's state after the last batch *consumed* (a loader draws ahead of
the training step); `set_rng_state` rewinds to it and restarts the loader, so a resumed run sees the batches an
uninterrupted one would. A state from another device type (a CUDA run resumed on the CPU) cannot be applied:
the batches then continue from this run's seed, with a warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from sqd.trainer.datasets import ImageSource, UInt8Images
from sqd.trainer.speed import SpeedPlan, to_layout


class Batches(Protocol):
    def next(self) -> Tensor: ...

    def rng_state(self) -> Tensor: ...

    def set_rng_state(self, state: Tensor) -> None: ...


def _set_state(generator: torch.Generator, state: Tensor) -> None:
    try:
        generator.set_state(state.cpu())
    except RuntimeError as exc:  # the state of a generator on another device type
        warnings.warn(f"checkpoint's data-generator state does not fit this run's {generator.device} generator "
                      f"({exc}); batches continue from train.seed", stacklevel=3)


class SampledBatches:
    """`source.sample` in this process, with a generator on the source's device."""

    def __init__(self, source: ImageSource, batch: int, generator: torch.Generator, plan: SpeedPlan):
        self.source, self.batch, self.generator, self.plan = source, batch, generator, plan

    def next(self) -> Tensor:
        x = self.source.sample(self.batch, self.generator).to(self.plan.device, non_blocking=True)
        return to_layout(x, self.plan)

    def rng_state(self) -> Tensor:
        return self.generator.get_state()

    def set_rng_state(self, state: Tensor) -> None:
        _set_state(self.generator, state)


class _Gather(Dataset[tuple[int, Tensor]]):
    """Worker side: (sequence number, index batch) → (sequence number, uint8 images). Pickles a memory-mapped
    array as its file name, so a spawned worker maps the file instead of receiving a copy of it."""

    def __init__(self, source: UInt8Images):
        self.source = source

    def __getitem__(self, key: tuple[int, Tensor]) -> tuple[int, Tensor]:
        return key[0], self.source.gather(key[1])

    def __len__(self) -> int:
        return len(self.source)

    def __getstate__(self) -> dict[str, Any]:
        data = self.source.data
        path = getattr(data, "filename", None)
        return {"source": self.source if path is None else UInt8Images(np.empty(0), self.source.resolution,
                                                                        self.source.channels), "path": path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.source = state["source"]
        if state["path"] is not None:
            self.source.data = np.load(Path(state["path"]), mmap_mode="r")


class _IndexBatches:
    """Main-process side (the DataLoader's sampler): endless index batches from the data generator, each with
    its sequence number and the generator state right after it."""

    def __init__(self, n_images: int, batch: int, generator: torch.Generator):
        self.n_images, self.batch, self.generator = n_images, batch, generator
        self.states: dict[int, Tensor] = {}
        self.seq = 0

    def __iter__(self) -> Iterator[tuple[int, Tensor]]:
        while True:
            idx = torch.randint(self.n_images, (self.batch,), generator=self.generator)
            self.seq += 1
            self.states[self.seq] = self.generator.get_state()
            yield self.seq, idx


def _as_is(item: Any) -> Any:  # a module-level function: picklable for spawned workers
    return item


class LoaderBatches:
    """uint8 images gathered by DataLoader workers into pinned memory, converted to float on the device."""

    def __init__(self, source: UInt8Images, batch: int, generator: torch.Generator, plan: SpeedPlan):
        self.source, self.batch, self.generator, self.plan = source, batch, generator, plan
        self.consumed = generator.get_state()
        self.iterator: Iterator[tuple[int, Tensor]] | None = None
        self.sampler: _IndexBatches | None = None

    def _start(self) -> Iterator[tuple[int, Tensor]]:
        self.sampler = _IndexBatches(len(self.source), self.batch, self.generator)
        # its own generator for the workers' seeds: starting a loader must not draw from the global RNG (z)
        loader = DataLoader(_Gather(self.source), batch_size=None, sampler=self.sampler,
                            num_workers=self.plan.loader_workers, collate_fn=_as_is, generator=torch.Generator(),
                            pin_memory=self.plan.cuda, prefetch_factor=2, persistent_workers=True)
        return iter(loader)

    def next(self) -> Tensor:
        if self.iterator is None:
            self.iterator = self._start()
        seq, images = next(self.iterator)
        assert self.sampler is not None
        self.consumed = self.sampler.states.pop(seq)
        x = images.to(self.plan.device, non_blocking=True)
        return to_layout(self.source.to_float(x), self.plan)

    def rng_state(self) -> Tensor:
        return self.consumed

    def set_rng_state(self, state: Tensor) -> None:
        self.iterator = self.sampler = None  # drops the workers and what they drew ahead
        _set_state(self.generator, state)
        self.consumed = self.generator.get_state()


def make_batches(source: ImageSource, batch: int, seed: int, plan: SpeedPlan) -> Batches:
    """The batch stream for `source` under `plan`, its generator seeded with `seed` (module docstring)."""
    if isinstance(source, UInt8Images):
        generator = torch.Generator().manual_seed(seed)
        if plan.loader_workers > 0:
            return LoaderBatches(source, batch, generator, plan)
        return SampledBatches(source, batch, generator, plan)
    to_device = getattr(source, "to", None)
    if to_device is not None:
        source = to_device(plan.device)
        generator = torch.Generator(device=plan.device).manual_seed(seed)
    else:
        generator = torch.Generator().manual_seed(seed)
    return SampledBatches(source, batch, generator, plan)
