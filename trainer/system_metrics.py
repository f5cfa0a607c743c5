"""System metrics of a training process, sampled by the Monitor's sender thread (never by `Monitor.step`).

Keys (DESIGN.md `sys/…`) and units:

| key | unit | what |
|---|---|---|
| `sys/gpu<i>/util` | % | NVML GPU utilisation (share of the driver's last sample period a kernel ran) |
| `sys/gpu<i>/mem_used`, `sys/gpu<i>/mem_total` | GiB | device memory used (by every process) and in all |
| `sys/gpu<i>/power` | W | board power draw |
| `sys/gpu<i>/temp` | °C | GPU temperature |
| `sys/cpu` | % of one core | this process's CPU time since the previous sample / wall time (may exceed 100) |
| `sys/rss` | GiB | this process's resident memory |
| `sys/step_time` | ms | wall time per `Monitor.step` since the previous sample |
| `sys/samples_per_s` | samples/s | steps per second × the batch size (only when the Monitor knows it) |

`<i>` numbers the GPUs this process sees, as CUDA does (`cuda:<i>`): CUDA_VISIBLE_DEVICES is respected (indices
or GPU-/MIG- UUIDs; empty → no GPU). No NVML (the `nvidia-ml-py` package missing, no driver, no GPU) → no GPU keys,
without a word; a reading a board does not support (power on some boards) is left out. CPU time comes from
`os.times()`; RSS from psutil, else /proc/self/statm, else it is left out. The first sample only primes the rates
(CPU, step time) and reports the levels.
"""

from __future__ import annotations

import importlib
import logging
import os
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

log = logging.getLogger(__name__)

GIB = float(1 << 30)


def load_nvml() -> ModuleType | None:
    try:
        return importlib.import_module("pynvml")
    except ImportError:
        return None


def _rss_reader() -> Callable[[], float] | None:
    try:
        import psutil

        process = psutil.Process()
        return lambda: process.memory_info().rss / GIB
    except ImportError:
        pass
    if os.path.exists("/proc/self/statm"):
        page = os.sysconf("SC_PAGE_SIZE")

        def statm() -> float:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * page / GIB
        return statm
    return None


class SystemSampler:
    def __init__(self, progress: Callable[[], int], batch_size: int | None = None, nvml: ModuleType | None = None,
                 visible: str | None = None):
        """`progress()`: how many steps the Monitor has recorded so far; `nvml`: the pynvml module (default: import
        it if installed); `visible`: CUDA_VISIBLE_DEVICES (default: the environment's)."""
        self.progress, self.batch_size = progress, batch_size
        self._nvml_module, self._visible = nvml, visible
        self.nvml: ModuleType | None = None
        self.gpus: list[Any] | None = None  # opened at the first sample, in the sender thread (NVML takes a while)
        self.rss = _rss_reader()
        self._last: tuple[float, float, int] | None = None  # (wall, cpu seconds, steps)

    def _open_gpus(self) -> list[Any]:
        self.nvml = self._nvml_module if self._nvml_module is not None else load_nvml()
        visible = os.environ.get("CUDA_VISIBLE_DEVICES") if self._visible is None else self._visible
        if self.nvml is None:
            return []
        try:
            self.nvml.nvmlInit()
        except Exception:  # no driver, no GPU: no GPU keys
            self.nvml = None
            return []
        try:
            if visible is None:
                return [self.nvml.nvmlDeviceGetHandleByIndex(i) for i in range(self.nvml.nvmlDeviceGetCount())]
            handles = []
            for entry in (e.strip() for e in visible.split(",")):
                if not entry:
                    continue
                if entry.lstrip("-").isdigit():
                    if int(entry) < 0:
                        break  # CUDA stops at the first invalid index
                    handles.append(self.nvml.nvmlDeviceGetHandleByIndex(int(entry)))
                else:
                    handles.append(self.nvml.nvmlDeviceGetHandleByUUID(entry))
            return handles
        except Exception as exc:
            log.debug("NVML: cannot open the visible GPUs (%s); no GPU metrics", exc)
            return []

    def _gpu(self, i: int, handle: Any, out: dict[str, float]) -> None:
        nvml = self.nvml
        assert nvml is not None
        readings: dict[str, Callable[[], float]] = {
            "util": lambda: float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu),
            "mem_used": lambda: nvml.nvmlDeviceGetMemoryInfo(handle).used / GIB,
            "mem_total": lambda: nvml.nvmlDeviceGetMemoryInfo(handle).total / GIB,
            "power": lambda: nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0,
            "temp": lambda: float(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)),
        }
        for name, read in readings.items():
            try:
                out[f"sys/gpu{i}/{name}"] = read()
            except Exception:  # not supported on this board (or it went away): leave it out
                continue

    def sample(self) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.gpus is None:
            self.gpus = self._open_gpus()
        for i, handle in enumerate(self.gpus):
            self._gpu(i, handle, out)
        if self.rss is not None:
            out["sys/rss"] = self.rss()
        times = os.times()
        now, cpu, steps = time.monotonic(), times.user + times.system, self.progress()
        if self._last is not None:
            wall0, cpu0, steps0 = self._last
            elapsed = now - wall0
            if elapsed > 0:
                out["sys/cpu"] = 100.0 * (cpu - cpu0) / elapsed
            if steps > steps0:
                out["sys/step_time"] = 1000.0 * elapsed / (steps - steps0)
                if self.batch_size:
                    out["sys/samples_per_s"] = self.batch_size * (steps - steps0) / elapsed
        self._last = (now, cpu, steps)
        return out

    def close(self) -> None:
        if self.nvml is not None:
            try:
                self.nvml.nvmlShutdown()
            except Exception:
                pass
            self.nvml = None
