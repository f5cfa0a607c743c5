"""System metrics (sqd.trainer.system_metrics): the sampler with NVML absent, failing and faked, and a real
Monitor run whose sender thread stores sys/… points (real Valkey/Redis through the `bus` fixture)."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest
from monitor_support import SPEC, events, points, tiny_gan, train

from sqd.bus import Bus
from sqd.settings import Settings, TrainerSettings
from sqd.trainer import Monitor
from sqd.trainer.system_metrics import GIB, SystemSampler


class FakeNVML:
    """The parts of pynvml the sampler uses, for two boards; the second cannot report power."""

    NVML_TEMPERATURE_GPU = 0

    class NVMLError(Exception):
        pass

    def __init__(self, fail_init: bool = False):
        self.fail_init, self.shut = fail_init, False
        self.opened: list[Any] = []

    def nvmlInit(self) -> None:
        if self.fail_init:
            raise self.NVMLError("Driver Not Loaded")

    def nvmlShutdown(self) -> None:
        self.shut = True

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        self.opened.append(i)
        return i

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> int:
        self.opened.append(uuid)
        return 1

    def nvmlDeviceGetUtilizationRates(self, h: int) -> Any:
        return SimpleNamespace(gpu=40 + h)

    def nvmlDeviceGetMemoryInfo(self, h: int) -> Any:
        return SimpleNamespace(used=(h + 1) * GIB, total=80 * GIB)

    def nvmlDeviceGetPowerUsage(self, h: int) -> int:
        if h == 1:
            raise self.NVMLError("Not Supported")
        return 250_000

    def nvmlDeviceGetTemperature(self, h: int, sensor: int) -> int:
        return 60 + h


def test_without_nvml_there_are_no_gpu_keys_and_no_error() -> None:
    steps = [0]
    for sampler in (SystemSampler(lambda: steps[0], 64, nvml=None, visible=""),
                    SystemSampler(lambda: steps[0], 64, nvml=FakeNVML(fail_init=True))):  # type: ignore[arg-type]
        first = sampler.sample()
        assert not any(k.startswith("sys/gpu") for k in first)
        assert first["sys/rss"] > 0 and "sys/cpu" not in first  # the first sample primes the rates
        t0 = time.process_time()
        while time.process_time() - t0 < 0.05:
            pass
        steps[0] += 10
        second = sampler.sample()
        assert second["sys/cpu"] > 0 and second["sys/step_time"] > 0
        assert second["sys/samples_per_s"] == pytest.approx(64 * 1000 / second["sys/step_time"], rel=1e-9)
        sampler.close()
        steps[0] = 0


def test_fake_nvml_gives_the_keys_of_each_visible_gpu() -> None:
    nvml = FakeNVML()
    sampler = SystemSampler(lambda: 0, None, nvml=nvml, visible=None)  # type: ignore[arg-type]
    got = sampler.sample()
    assert got["sys/gpu0/util"] == 40 and got["sys/gpu1/util"] == 41
    assert got["sys/gpu0/mem_used"] == 1.0 and got["sys/gpu1/mem_total"] == 80.0
    assert got["sys/gpu0/power"] == 250.0 and "sys/gpu1/power" not in got  # not supported: left out
    assert got["sys/gpu1/temp"] == 61.0
    assert "sys/samples_per_s" not in sampler.sample()  # no batch size: no samples/s
    sampler.close()
    assert nvml.shut


def test_cuda_visible_devices_is_respected() -> None:
    nvml = FakeNVML()
    sampler = SystemSampler(lambda: 0, None, nvml=nvml, visible="1,GPU-8f3c")  # type: ignore[arg-type]
    got = sampler.sample()
    assert nvml.opened == [1, "GPU-8f3c"] and "sys/gpu1/util" in got and "sys/gpu2/util" not in got
    assert got["sys/gpu0/util"] == 41  # cuda:0 is physical GPU 1
    none = SystemSampler(lambda: 0, None, nvml=FakeNVML(), visible="")  # type: ignore[arg-type]
    assert not any(k.startswith("sys/gpu") for k in none.sample())


def test_a_monitor_run_stores_system_metrics(settings: Settings, bus: Bus) -> None:
    settings = settings.model_copy(update={"trainer": TrainerSettings(system_metrics_s=0.2)})
    G, D = tiny_gan()
    mon = Monitor(G, D, name="sys", settings=settings, bus=bus, generator_spec=SPEC, checkpoint_every=None,
                  flush_every=4, batch_size=32)
    with mon:
        for start in range(0, 60, 5):
            train(mon, G, D, steps=5, start=start)
            time.sleep(0.05)
    pts = points(events(bus, "ingest"))
    assert {"sys/cpu", "sys/rss", "sys/step_time", "sys/samples_per_s"} <= pts.keys()
    assert all(0 <= s <= 59 for s in pts["sys/rss"])
    assert all(v > 0 for v in pts["sys/step_time"].values())
