"""The trainer's speed switches (train.precision / tf32 / channels_last / compile / cuda_graphs /
loader_workers): their validation, what each does on the CPU (bf16 autocast inside the nets while losses,
penalties and input gradients stay fp32; channels_last giving the same run; torch.compile and its fallback),
the device-resident and DataLoader batch streams (same batches as before for a seed, exact resume), and — on a
GPU only (`-m cuda`) — fused Adam, CUDA graphs and pinned loading."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from sqd.errors import ConfigError
from sqd.presets import resolve_config
from sqd.settings import Settings
from sqd.trainer.batches import LoaderBatches, SampledBatches
from sqd.trainer.checkpoint import read_checkpoint, to_bytes
from sqd.trainer.datasets import StackedDigits
from sqd.trainer.loop import build_trainer, train
from sqd.trainer.regularizers import input_gradient
from sqd.trainer.steps import GANTrainer

torch.set_num_threads(1)

TINY = {"model.width": 8, "model.z_dim": 16, "model.group_size": 8, "train.batch": 8, "train.threads": 1,
        "dataset.resolution": 16, "train.log_every": 2}
CUDA = "cuda" if torch.cuda.is_available() else None
needs_cuda = pytest.mark.skipif(CUDA is None, reason="needs a CUDA device (run on the GPU machine with -m cuda)")


def _params(trainer: GANTrainer) -> list[torch.Tensor]:
    nets = [trainer.G, trainer.D] + ([trainer.ema.model] if trainer.ema is not None else [])
    return [p.detach().clone() for net in nets for p in net.state_dict().values()]


# ---- configuration ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("preset", "overrides", "key", "text"), [
    ("sqd-nsgan-digits", {"train.precision": "fp16"}, "train.precision", "not one of auto, fp32, bf16"),
    ("sqd-nsgan-digits", {"train.channels_last": "sometimes"}, "train.channels_last", "valid boolean"),
    ("sqd-nsgan-digits", {"train.compile": "maybe"}, "train.compile", "valid boolean"),
    ("sqd-nsgan-digits", {"train.loader_workers": -1}, "train.loader_workers", "greater than or equal to 0"),
    ("sqd-nsgan-digits", {"train.cuda_graphs": True, "optim.schedule": "linear"}, "train.cuda_graphs",
     "schedule=constant"),
    ("icr-wgan-acgd-digits", {"train.precision": "bf16"}, "train.precision", "needs fp32"),
    ("icr-wgan-acgd-digits", {"train.compile": True}, "train.compile", "set train.compile=false"),
    ("icr-wgan-acgd-digits", {"train.cuda_graphs": True}, "train.cuda_graphs", "set train.cuda_graphs=false"),
    ("sqd-nsgan-digits", {"train.tf32": "yes please"}, "train.tf32", "valid boolean"),
])
def test_bad_speed_settings_name_the_key(preset: str, overrides: dict[str, Any], key: str, text: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_config(preset, overrides)
    assert info.value.errors[0]["loc"] == key.split(".") and info.value.errors[0]["msg"].startswith(f"{key}:")
    assert text in str(info.value)


def test_defaults_are_exact_on_the_cpu() -> None:
    trainer = build_trainer(resolve_config("r3gan-digits", {**TINY, "train.device": "cpu"}))
    plan = trainer.plan
    assert (plan.autocast, plan.channels_last, plan.compile, plan.cuda_graphs, plan.loader_workers) == \
           (None, False, False, False, 0)
    assert all(g["fused"] is None for g in trainer.opt_d.param_groups)
    assert plan.describe() == "fp32, NCHW"


def test_synthetic_dataset_gives_any_preset_its_full_shape() -> None:
    cfg = resolve_config("r3gan-celeba", {"dataset.name": "synthetic", "model.width": 8, "model.group_size": 8,
                                          "train.batch": 4, "train.threads": 1})
    trainer = build_trainer(cfg)
    x = trainer.real()
    assert x.shape == (4, 3, 64, 64) and -1 <= x.min() and x.max() <= 1
    assert math.isfinite(float(trainer.step(0).loss_d))


# ---- precision -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", ["r3gan-digits", "sqd-wgan-gp-digits", "granc-digits"])
def test_bf16_autocast_runs_the_nets_in_bf16_and_the_penalties_in_fp32(preset: str) -> None:
    cfg = resolve_config(preset, {**TINY, "train.precision": "bf16"})
    trainer = build_trainer(cfg)
    assert trainer.plan.autocast is torch.bfloat16
    inner: list[torch.dtype] = []
    convs = [m for m in trainer.D.modules() if isinstance(m, torch.nn.Conv2d)]
    hook = convs[len(convs) // 2].register_forward_hook(lambda m, i, o: inner.append(o.dtype))
    try:
        real = trainer.real().requires_grad_(True)
        logits = trainer.critic(real)
        grad = input_gradient(logits, real)
        result = trainer.step(0)
    finally:
        hook.remove()
    assert inner and set(inner) == {torch.bfloat16}  # inside D: bf16
    assert logits.dtype == torch.float32 and grad.dtype == torch.float32  # out of D and w.r.t. the images: fp32
    assert result.loss_d.dtype == result.loss_g.dtype == torch.float32
    assert all(v.dtype == torch.float32 for v in result.metrics.values())
    assert all(p.dtype == torch.float32 and p.grad is not None and p.grad.dtype == torch.float32
               for p in trainer.D.parameters())
    assert math.isfinite(float(result.loss_d)) and math.isfinite(float(result.loss_g))


def test_r3gan_activations_stay_bf16_under_autocast() -> None:
    trainer = build_trainer(resolve_config("r3gan-digits", {**TINY, "train.precision": "bf16"}))
    seen: list[torch.dtype] = []
    block = next(m for m in trainer.G.modules() if type(m).__name__ == "ResidualBlock")
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append(o.dtype)) for m in (block.act1, block.act2, block)]
    try:
        trainer.g(trainer.z())
    finally:
        for h in hooks:
            h.remove()
    assert seen == [torch.bfloat16] * 3


def test_channels_last_trains_the_same_on_the_cpu() -> None:
    runs = []
    for channels_last in (False, True):
        trainer = build_trainer(resolve_config("r3gan-digits", {**TINY, "train.channels_last": channels_last}))
        assert trainer.real().is_contiguous(memory_format=torch.channels_last) == channels_last
        losses = [trainer.step(s) for s in range(2)]
        runs.append(([float(r.loss_d) for r in losses], _params(trainer)))
    assert runs[0][0] == pytest.approx(runs[1][0], rel=1e-5)
    for a, b in zip(runs[0][1], runs[1][1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


# ---- torch.compile ---------------------------------------------------------------------------------------------
def test_compile_that_fails_falls_back_to_eager_with_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    class Broken(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("backend exploded")

    monkeypatch.setattr(torch, "compile", lambda net, **kw: Broken())
    eager = build_trainer(resolve_config("sqd-nsgan-digits", TINY))
    expected = [eager.step(s) for s in range(2)]
    with pytest.warns(UserWarning) as caught:
        trainer = build_trainer(resolve_config("sqd-nsgan-digits", {**TINY, "train.compile": True}))
    messages = [str(w.message) for w in caught]
    for net in ("G", "D"):
        assert f"train.compile: {net} stays eager: compiling it failed (RuntimeError: backend exploded)" in messages
    assert not isinstance(trainer.g, Broken) and not isinstance(trainer.d, Broken)
    got = [trainer.step(s) for s in range(2)]  # the probe restored RNG and buffers: the same run
    assert [float(r.loss_d) for r in got] == [float(r.loss_d) for r in expected]


def test_compile_keeps_d_eager_where_it_is_differentiated_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    compiled: list[torch.nn.Module] = []
    monkeypatch.setattr(torch, "compile", lambda net, **kw: compiled.append(net) or net)
    with pytest.warns(UserWarning, match="D stays eager: r1r2 differentiate"):
        build_trainer(resolve_config("r3gan-digits", {**TINY, "train.compile": True}))
    assert len(compiled) == 1  # G only


@pytest.mark.slow
def test_compiled_nets_train() -> None:
    trainer = build_trainer(resolve_config("sqd-nsgan-digits", {**TINY, "train.compile": True}))
    assert type(trainer.g).__name__ == "OptimizedModule" and type(trainer.d).__name__ == "OptimizedModule"
    for step in range(3):
        result = trainer.step(step)
    assert math.isfinite(float(result.loss_d)) and all(p.grad is not None for p in trainer.D.parameters())


# ---- batch streams ---------------------------------------------------------------------------------------------
def test_device_resident_digits_draw_the_same_batches_as_before() -> None:
    """On the CPU, the batch stream is the pre-GPU sampling exactly: StackedDigits.sample with a CPU generator
    seeded with train.seed."""
    cfg = resolve_config("sqd-nsgan-digits", {**TINY, "train.seed": 7})
    trainer = build_trainer(cfg)
    assert isinstance(trainer.batches, SampledBatches)
    old = torch.Generator().manual_seed(7)
    data = StackedDigits(16)
    for _ in range(3):
        assert torch.equal(trainer.real(), data.sample(8, old))


def _faces(root: Path, n: int = 12) -> None:
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (40, 32, 3), dtype=np.uint8)).save(root / f"{i:03d}.png")


def _folder_cfg(root: Path, workers: int, **extra: Any) -> Any:
    return resolve_config("sqd-nsgan-celeba", {**TINY, "dataset.name": "image_folder", "dataset.root": str(root),
                                               "train.loader_workers": workers, **extra})


def test_image_folder_loader_with_workers_gives_the_batches_of_the_plain_path(tmp_path: Path) -> None:
    _faces(tmp_path / "faces")
    settings = Settings(home=tmp_path / "home")
    plain = build_trainer(_folder_cfg(tmp_path / "faces", 0), settings)
    loaded = build_trainer(_folder_cfg(tmp_path / "faces", 2), settings)
    assert isinstance(plain.batches, SampledBatches) and isinstance(loaded.batches, LoaderBatches)
    for _ in range(4):
        assert torch.equal(plain.real(), loaded.real())
    # the loader draws ahead; its checkpoint state is the one after the batches consumed
    assert torch.equal(loaded.batches.rng_state(), plain.batches.rng_state())
    state = loaded.batches.rng_state()
    expected = [plain.real() for _ in range(3)]
    loaded.batches.set_rng_state(state)
    assert all(torch.equal(loaded.real(), e) for e in expected)


def test_resume_with_loader_workers_reproduces_the_next_step(tmp_path: Path) -> None:
    _faces(tmp_path / "faces")
    settings = Settings(home=tmp_path / "home")
    cfg = _folder_cfg(tmp_path / "faces", 2)
    straight = build_trainer(cfg, settings)
    for step in range(3):
        straight.step(step)
    saved = read_checkpoint(to_bytes(straight.state_dict() | {"step": 2, "epoch": 0}))
    expected = straight.step(3)
    resumed = build_trainer(cfg, settings)
    resumed.load_state_dict(saved)
    got = resumed.step(3)
    assert torch.equal(got.loss_d, expected.loss_d) and torch.equal(got.loss_g, expected.loss_g)


def test_a_data_state_from_another_device_type_warns_and_goes_on() -> None:
    trainer = build_trainer(resolve_config("sqd-nsgan-digits", TINY))
    state = trainer.state_dict() | {"step": 0, "epoch": 0}
    state["rng"]["data"] = torch.zeros(16, dtype=torch.uint8)  # a CUDA generator's state (seed + offset)
    with pytest.warns(UserWarning, match="does not fit this run's cpu generator"):
        trainer.load_state_dict(state)
    assert math.isfinite(float(trainer.step(1).loss_d))


def test_a_checkpoint_of_a_fused_gpu_optimizer_resumes_on_the_cpu() -> None:
    trainer = build_trainer(resolve_config("sqd-nsgan-digits", TINY))
    trainer.step(0)
    state = trainer.state_dict() | {"step": 0, "epoch": 0}
    for key in ("G", "D"):  # what a CUDA run saves: fused Adam, fp32 step counters
        for group in state["optim"][key]["param_groups"]:
            group["fused"] = True
    resumed = build_trainer(resolve_config("sqd-nsgan-digits", TINY))
    resumed.load_state_dict(read_checkpoint(to_bytes(state)))
    assert all(g["fused"] is None for g in resumed.opt_g.param_groups)
    assert math.isfinite(float(resumed.step(1).loss_d))


# ---- CUDA only -------------------------------------------------------------------------------------------------
@pytest.mark.cuda
@needs_cuda
def test_cuda_defaults_bf16_channels_last_fused_and_device_batches() -> None:
    trainer = build_trainer(resolve_config("r3gan-digits", {**TINY, "train.device": "cuda"}))
    plan = trainer.plan
    assert plan.autocast is torch.bfloat16 and plan.channels_last and plan.loader_workers == 4
    assert torch.backends.cudnn.benchmark and torch.backends.cuda.matmul.allow_tf32
    assert all(g["fused"] for g in trainer.opt_g.param_groups)
    batches = [trainer.real() for _ in range(2)]
    assert all(x.is_cuda and x.is_contiguous(memory_format=torch.channels_last) for x in batches)
    again = build_trainer(resolve_config("r3gan-digits", {**TINY, "train.device": "cuda"}))
    assert all(torch.equal(x, again.real()) for x in batches)  # drawn on the device, the same for a seed
    assert math.isfinite(float(trainer.step(0).loss_d))


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("preset", ["sqd-nsgan-digits", "r3gan-digits", "granc-digits"])
def test_cuda_graph_trains_like_eager(preset: str) -> None:
    overrides = {**TINY, "train.device": "cuda", "burnin.steps": 0}
    runs = []
    for graphs in (False, True):
        trainer = build_trainer(resolve_config(preset, {**overrides, "train.cuda_graphs": graphs}))
        runs.append(torch.stack([torch.stack([r.loss_d, r.loss_g]) for r in (trainer.step(s) for s in range(8))]))
        if graphs:
            assert trainer.graph is not None and trainer.graph.graph is not None and not trainer.graph.off
    torch.testing.assert_close(runs[0], runs[1], rtol=0.05, atol=0.05)


@pytest.mark.cuda
@needs_cuda
def test_cuda_graph_is_captured_again_after_a_resume() -> None:
    cfg = resolve_config("sqd-nsgan-digits", {**TINY, "train.device": "cuda", "train.cuda_graphs": True})
    trainer = build_trainer(cfg)
    for step in range(6):
        trainer.step(step)
    state = read_checkpoint(to_bytes(trainer.state_dict() | {"step": 5, "epoch": 0}), map_location="cuda")
    trainer.load_state_dict(state)
    assert trainer.graph is not None and trainer.graph.graph is None
    for step in range(6, 12):
        result = trainer.step(step)
    assert trainer.graph.graph is not None and math.isfinite(float(result.loss_d))


@pytest.mark.cuda
@needs_cuda
def test_cuda_image_folder_loads_pinned_and_graphs_fall_back(tmp_path: Path) -> None:
    _faces(tmp_path / "faces")
    settings = Settings(home=tmp_path / "home")
    with pytest.warns(UserWarning, match="batches come from the host"):
        trainer = build_trainer(_folder_cfg(tmp_path / "faces", 2, **{"train.device": "cuda",
                                                                       "train.cuda_graphs": True}), settings)
    assert isinstance(trainer.batches, LoaderBatches)
    assert trainer.real().is_cuda
    summary = train(trainer.cfg, steps=3, monitor=False, settings=settings)
    assert math.isfinite(summary.loss_d)
