"""Which accelerators an agent may hand out, and how its slots are shared (CUDA_VISIBLE_DEVICES per run)."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

CPU = "cpu"


def visible_gpus() -> list[str]:
    """GPU ids this process may use: CUDA_VISIBLE_DEVICES if set (it is the CUDA runtime's variable, not one of
    ours), else every GPU torch (or nvidia-smi) sees; [] on a machine without one."""
    declared = os.environ.get("CUDA_VISIBLE_DEVICES")
    if declared is not None:
        return [d.strip() for d in declared.split(",") if d.strip() and d.strip() != "-1"]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except ImportError:
        pass
    if shutil.which("nvidia-smi"):
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10, check=False)
        return [str(i) for i, line in enumerate(out.stdout.splitlines()) if line.startswith("GPU ")]
    return []


@dataclass
class Slots:
    """`per_device` runs on each device; with no GPU, one pseudo-device "cpu"."""

    devices: list[str]
    per_device: int

    @classmethod
    def detect(cls, runs_per_gpu: int, cpu_runs: int) -> Slots:
        gpus = visible_gpus()
        return cls(gpus, runs_per_gpu) if gpus else cls([CPU], cpu_runs)

    def pick(self, busy: list[str]) -> str | None:
        """The least-loaded device with a free slot, or None when all are full."""
        load = {d: busy.count(d) for d in self.devices}
        device = min(self.devices, key=lambda d: load[d])
        return device if load[device] < self.per_device else None

    def env(self, device: str, threads: int | None = None) -> dict[str, str]:
        if device == CPU:
            # hide GPUs and share the cores between the concurrent CPU runs
            n = threads or max(1, (os.cpu_count() or 1) // self.per_device)
            return {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": str(n), "MKL_NUM_THREADS": str(n)}
        return {"CUDA_VISIBLE_DEVICES": device}
