"""Digits evaluation latency per checkpoint and images/s per stage (generate, classify, FID), on this machine.

    .venv/bin/python bench/worker_digits.py [--samples 2000] [--repeats 5] [--preset demo-stable] [--device cpu]

Evaluates one real checkpoint (the preset's generator, saved in the sqd-checkpoint/1 format) through the worker's
Evaluator: artifact fetch with sha256 check, rebuild of G, the 8×8 grid, then the digits profile. The first
evaluation (classifier load, FID reference) is reported apart; the figures are medians of the next ones.
Wall time and process CPU time are both printed: on a shared machine the wall time includes waiting for a core.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from typing import Any

import torch

from sqd.artifacts import ArtifactStore
from sqd.presets import resolve_config
from sqd.protocol import CheckpointReady
from sqd.settings import Settings
from sqd.trainer.checkpoint import load_generator, to_bytes
from sqd.trainer.nets import build_generator, generator_spec
from sqd.worker.digits import DigitsProfile
from sqd.worker.evaluate import Evaluator
from sqd.worker.sampling import GeneratorSampler, pick_device

STAGES = ("fetch", "load", "grid", "generate", "classify", "fid")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--preset", default="demo-stable")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    settings = Settings()  # the classifier and FID reference cache under $SQD_HOME/models, as a worker's
    settings = settings.model_copy(update={"worker": settings.worker.model_copy(update={"samples": args.samples})})
    with tempfile.TemporaryDirectory() as tmp:
        store = ArtifactStore(tmp)
        data, spec, event = store_checkpoint(store, args.preset, "digits")
        evaluator = Evaluator(settings, store, pick_device(args.device), "bench")
        start = time.perf_counter()
        first = evaluator.evaluate(event)
        if first.status != "ok":
            raise SystemExit(f"evaluation failed: {first.error}")
        print(f"first evaluation (loads or trains the classifier, FID reference): {time.perf_counter() - start:.2f} s")
        clf = evaluator.profile("digits").classifier  # type: ignore[attr-defined]
        print(f"digit classifier: held-out accuracy {clf.accuracy:.4f} (recipe {clf.recipe})")
        walls: list[float] = []
        cpus: list[float] = []
        stages: dict[str, list[float]] = {s: [] for s in STAGES}
        for _ in range(args.repeats):
            wall, cpu = time.perf_counter(), time.process_time()
            result = evaluator.evaluate(event)
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
            for s in STAGES:
                stages[s].append(result.timings_s.get(s, 0.0))

    n = args.samples
    print(f"\n{args.preset} generator ({spec['arch']}, {spec['kwargs']}), n = {n}, device {args.device}, "
          f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"evaluation latency per checkpoint: median {statistics.median(walls):.3f} s wall "
          f"(min {min(walls):.3f}), {statistics.median(cpus):.3f} s CPU")
    print(f"{'stage':<10}{'median s':>10}{'images/s':>12}")
    per_stage_images = {"grid": 64, "generate": n, "classify": n, "fid": n}
    for s in STAGES:
        t = statistics.median(stages[s])
        rate = f"{per_stage_images[s] / t:,.0f}" if s in per_stage_images and t > 0 else "-"
        print(f"{s:<10}{t:>10.4f}{rate:>12}")
    print(f"metrics (untrained G): { {k: round(v, 4) for k, v in result.metrics.items()} }")
    print_cpu_per_stage(evaluator, data, spec["z_dim"], n, args.repeats)


def store_checkpoint(store: ArtifactStore, preset: str, profile: str) -> tuple[bytes, dict[str, Any], CheckpointReady]:
    """The preset's generator (random weights, seed 0) as a real checkpoint in `store`, and its CheckpointReady."""
    spec = generator_spec(resolve_config(preset, {}))
    torch.manual_seed(0)
    data = to_bytes({"generator": spec, "G": build_generator(spec).state_dict(), "G_ema": None, "step": 1000,
                     "epoch": 0, "config": {}})
    ref = store.put_bytes("runs/bench/checkpoints/step-000001000.pt", data)
    event = CheckpointReady(run_id="bench", step=1000, uri=ref.uri, sha256=ref.sha256, size_bytes=ref.size_bytes,
                            profile=profile, generator=spec)
    return data, spec, event


def print_cpu_per_stage(evaluator: Evaluator, data: bytes, z_dim: int, n: int, repeats: int) -> None:
    """Process CPU seconds of each stage run on its own: what the stage costs when it has a core to itself."""
    profile = evaluator.profile("digits")
    assert isinstance(profile, DigitsProfile)
    G = load_generator(data, evaluator.device)
    cpu: dict[str, list[float]] = {"generate": [], "classify": [], "fid": []}
    for _ in range(repeats):
        sampler = GeneratorSampler(G, z_dim, 1, evaluator.device, evaluator.settings.worker.batch_size)
        c = time.process_time()
        images = sampler(n)
        cpu["generate"].append(time.process_time() - c)
        c = time.process_time()
        features = profile.classify(images)[2]
        cpu["classify"].append(time.process_time() - c)
        c = time.process_time()
        profile.fid(features, images.shape[-1])
        cpu["fid"].append(time.process_time() - c)
    print(f"\nCPU seconds per stage, median of {repeats} (all threads of this process):")
    for s, values in cpu.items():
        t = statistics.median(values)
        print(f"{s:<10}{t:>10.4f}{n / t:>12,.0f} images/CPU-s")


if __name__ == "__main__":
    main()
