"""GPU slots and the pieces of the agent that need no bus: device choice, child environment, failure summaries."""

from __future__ import annotations

import os

import pytest

from sqd.protocol import LaunchRequest
from sqd.trainer.agent import train_command
from sqd.trainer.gpus import CPU, Slots, visible_gpus
from sqd.trainer.run_process import describe_exit, failure_summary


def test_least_loaded_gpu_first_and_none_when_full() -> None:
    slots = Slots(["0", "1"], per_device=2)
    assert slots.pick([]) == "0"
    assert slots.pick(["0"]) == "1"
    assert slots.pick(["0", "1", "1"]) == "0"
    assert slots.pick(["0", "1", "0", "1"]) is None
    assert slots.env("1") == {"CUDA_VISIBLE_DEVICES": "1"}


def test_cpu_slots_hide_gpus_and_share_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    slots = Slots([CPU], per_device=2)
    assert slots.env(CPU, threads=3) == {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": "3"}
    assert slots.env(CPU) == {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "4", "MKL_NUM_THREADS": "4"}


@pytest.mark.parametrize(("declared", "expected"), [("2,3", ["2", "3"]), ("", []), ("-1", []), (" 0 ", ["0"])])
def test_visible_gpus_follow_cuda_visible_devices(declared: str, expected: list[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", declared)
    assert visible_gpus() == expected
    assert Slots.detect(runs_per_gpu=3, cpu_runs=2) == (Slots(expected, 3) if expected else Slots([CPU], 2))


def test_train_command_passes_overrides_steps_and_name() -> None:
    request = LaunchRequest(run_id="r1", preset="demo-stable", steps=50, name="my run",
                            overrides={"loss.name": "hinge", "optim.betas": [0.5, 0.9], "optim.lr_g": 1e-3})
    argv = train_command(request)
    assert argv[1:] == ["-m", "sqd", "train", "demo-stable", "--run-id", "r1", "--set", "loss.name=hinge",
                        "--set", "optim.betas=[0.5, 0.9]", "--set", "optim.lr_g=0.001", "--steps", "50",
                        "--name", "my run"]


def test_failure_summary_takes_the_last_traceback() -> None:
    log = ("step 10\nTraceback (most recent call last):\n  File \"a.py\", line 1\nKeyError: 'old'\nretrying\n"
           "Traceback (most recent call last):\n  File \"b.py\", line 2, in f\nValueError: bad lr\n")
    error, trace = failure_summary(log, 1)
    assert error == "ValueError: bad lr (exited with code 1)"
    assert trace.startswith("Traceback") and "b.py" in trace and "a.py" not in trace
    assert failure_summary("", None)[0] == "training process ended without an exit status"
    assert describe_exit(137) == "killed by signal 9 (SIGKILL)" and describe_exit(200) == "exited with code 200"
