"""The training loop: a few CPU steps of every preset family without NaN, determinism, resume reproducing the
next step exactly, reporting through the Monitor to a real bus, and the `sqd train` / `sqd presets` commands."""

from __future__ import annotations

import math
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import typer
from PIL import Image
from typer.testing import CliRunner

from sqd.artifacts import ArtifactStore
from sqd.bus import CHECKPOINTS, INGEST
from sqd.presets import list_presets, resolve_config
from sqd.settings import Settings
from sqd.trainer import cli as trainer_cli
from sqd.trainer.checkpoint import load_generator, read_checkpoint, to_bytes
from sqd.trainer.loop import build_trainer, train
from sqd.trainer.steps import GANTrainer
from sqd.wire import decode

TINY = {"model.width": 8, "model.z_dim": 16, "model.group_size": 8, "train.batch": 8, "train.threads": 1,
        "dataset.resolution": 16, "train.log_every": 2}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """SQD_HOME with a tiny CelebA folder and a tiny CIFAR-10, so every preset finds its data."""
    faces = tmp_path / "home" / "datasets" / "celeba" / "img_align_celeba"
    faces.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (218, 178, 3), dtype=np.uint8)).save(faces / f"{i:06d}.jpg")
    cifar = tmp_path / "home" / "datasets" / "cifar-10-batches-py"
    cifar.mkdir(parents=True)
    with (cifar / "data_batch_1").open("wb") as f:
        pickle.dump({b"data": rng.integers(0, 256, (16, 3072), dtype=np.uint8), b"labels": [0] * 16}, f)
    return tmp_path / "home"


def _settings(home: Path) -> Settings:
    return Settings(home=home)


def _family_representatives() -> list[str]:
    """One preset per (family, loss, regularizers, optimizer) combination: every code path the presets use."""
    seen: dict[tuple[Any, ...], str] = {}
    for p in list_presets():
        cfg = resolve_config(p.name)
        seen.setdefault((cfg.model.arch, cfg.loss.name, tuple(cfg.reg.names), cfg.optim.name, cfg.ema.enabled,
                         cfg.dataset.name), p.name)
    return list(seen.values())


@pytest.mark.parametrize("preset", _family_representatives())
def test_every_preset_family_trains_without_nan(preset: str, home: Path) -> None:
    cfg = resolve_config(preset, TINY)
    summary = train(cfg, preset=preset, steps=3, monitor=False, settings=_settings(home))
    assert summary.last_step == 2 and math.isfinite(summary.loss_d) and math.isfinite(summary.loss_g)


@pytest.mark.parametrize("regs", ["dragan", "zero_gp", "lp", "r1", "r2", "sn", "l2", "gp,sn"])
def test_other_regularizers_train(regs: str, home: Path) -> None:
    cfg = resolve_config("sqd-hinge-digits", {**TINY, "reg.names": regs})
    summary = train(cfg, steps=2, monitor=False, settings=_settings(home))
    assert math.isfinite(summary.loss_d)


def test_weight_clipping_bounds_the_critic(home: Path) -> None:
    cfg = resolve_config("sqd-wgan-digits", {**TINY, "loss.clip": 0.01})
    trainer = build_trainer(cfg, _settings(home))
    trainer.step(0)
    assert max(p.abs().max().item() for p in trainer.D.parameters()) <= 0.01


def _params(trainer: GANTrainer) -> list[torch.Tensor]:
    nets = [trainer.G, trainer.D] + ([trainer.ema.model] if trainer.ema is not None else [])
    return [p.detach().clone() for net in nets for p in net.state_dict().values()]


def test_same_seed_same_run(home: Path) -> None:
    cfg = resolve_config("sqd-nsgan-gp-digits", TINY)
    runs = []
    for _ in range(2):  # one after the other: z and the penalties' noise come from the (re-seeded) global RNG
        trainer = build_trainer(cfg, _settings(home))
        for step in range(2):
            trainer.step(step)
        runs.append(_params(trainer))
    assert all(torch.equal(x, y) for x, y in zip(*runs, strict=True))


@pytest.mark.parametrize("preset", ["sqd-nsgan-gp-digits", "r3gan-digits", "icr-wgan-acgd-digits", "granc-digits"])
def test_resume_reproduces_the_next_step(preset: str, home: Path) -> None:
    cfg = resolve_config(preset, {**TINY, "burnin.steps": 10})
    straight = build_trainer(cfg, _settings(home))
    for step in range(3):
        straight.step(step)
    state = straight.state_dict() | {"step": 2, "epoch": 0}
    saved = read_checkpoint(to_bytes(state))
    expected = straight.step(3)
    resumed = build_trainer(cfg, _settings(home))
    resumed.load_state_dict(saved)
    got = resumed.step(3)
    assert torch.equal(got.loss_d, expected.loss_d) and torch.equal(got.loss_g, expected.loss_g)
    assert all(torch.equal(x, y) for x, y in zip(_params(resumed), _params(straight), strict=True))


def test_non_finite_losses_end_the_run(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = resolve_config("sqd-nsgan-digits", TINY)
    monkeypatch.setattr(GANTrainer, "real", lambda self: torch.full((8, 3, 16, 16), math.nan))
    with pytest.raises(FloatingPointError, match="step 1: loss/D"):
        train(cfg, steps=4, monitor=False, settings=_settings(home))


def _events(settings: Settings, stream: str) -> list[Any]:
    import redis

    client = redis.Redis.from_url(settings.resolved_redis_url)
    try:
        return [decode(f) for _, f in client.xrange(f"{settings.bus.prefix}:{stream}")]
    finally:
        client.close()


def test_reports_through_the_monitor(settings: Settings) -> None:
    cfg = resolve_config("sqd-hinge-digits", {**TINY, "train.checkpoint_every": 2})
    summary = train(cfg, preset="sqd-hinge-digits", run_id="zoo-run-1", steps=4, settings=settings)
    assert summary.run_id == "zoo-run-1"
    ingest = _events(settings, INGEST)
    kinds = [e.type for e in ingest]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished" and ingest[-1].status == "finished"
    assert ingest[0].preset == "sqd-hinge-digits" and ingest[0].config["loss"]["name"] == "hinge"
    keys = {p.key for e in ingest if e.type == "metrics" for p in e.points()}
    assert {"loss/D", "loss/G", "angle/G", "angle/D"} <= keys
    ready = [e for e in _events(settings, CHECKPOINTS) if e.type == "checkpoint"]
    assert [e.step for e in ready] == [0, 2, 3] and ready[0].profile == "digits"
    data = ArtifactStore.from_settings(settings).get_bytes(ready[-1].uri)
    G = load_generator(data)
    assert G(torch.randn(2, ready[-1].generator["z_dim"])).shape == (2, 3, 16, 16)


def test_checkpoints_every_epoch_join_the_step_cadence(settings: Settings) -> None:
    # 20 samples, batch 8: epoch e ends at the step where (step + 1) · 8 passes 20·(e + 1): steps 2, 4 and 7 (the
    # last); every 4 steps adds 0 and 4; a step both cadences (or the end) want is checkpointed once
    cfg = resolve_config("sqd-hinge-digits", {**TINY, "dataset.size": 20, "train.checkpoint_every": 4,
                                              "train.checkpoint_every_epochs": 1})
    train(cfg, run_id="zoo-run-epochs", steps=8, settings=settings)
    ready = [e for e in _events(settings, CHECKPOINTS) if e.type == "checkpoint"]
    assert [(e.step, e.epoch) for e in ready] == [(0, 0), (2, 0), (4, 1), (7, 2)]


def test_the_demos_evaluate_at_every_epoch_end_only() -> None:
    for preset in ("demo-stable", "demo-turning"):
        train_cfg = resolve_config(preset).train
        assert (train_cfg.checkpoint_every, train_cfg.checkpoint_every_epochs) == (None, 1)


def test_a_failing_run_is_reported_failed(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = resolve_config("sqd-nsgan-digits", TINY)
    monkeypatch.setattr(GANTrainer, "real", lambda self: torch.full((8, 3, 16, 16), math.nan))
    with pytest.raises(FloatingPointError):
        train(cfg, run_id="zoo-run-2", steps=4, settings=settings)
    finished = [e for e in _events(settings, INGEST) if e.type == "run_finished"]
    assert finished[0].status == "failed" and "FloatingPointError" in (finished[0].traceback or "")


# ---- command line -----------------------------------------------------------------------------------------------
def _app() -> typer.Typer:
    app = typer.Typer()
    trainer_cli.register(app)
    return app


def test_sqd_presets_lists_one_per_line() -> None:
    out = CliRunner().invoke(_app(), ["presets"])
    assert out.exit_code == 0
    lines = out.output.strip().splitlines()
    assert len(lines) == len(list_presets())
    name, seed, dataset, *description = lines[0].split()
    assert (name, seed, dataset) == ("sqd-nsgan-celeba", "003", "celeba") and description


def test_sqd_presets_shows_a_resolved_config() -> None:
    out = CliRunner().invoke(_app(), ["presets", "r3gan-digits", "--set", "reg.gamma=0.5"])
    assert out.exit_code == 0 and '"gamma": 0.5' in out.output


def test_sqd_train_runs_a_preset(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SQD_HOME", str(home))
    sets = [a for k, v in TINY.items() for a in ("--set", f"{k}={v}")]
    out = CliRunner().invoke(_app(), ["train", "sqd-lsgan-digits", *sets, "--steps", "4", "--no-monitor"])
    assert out.exit_code == 0, out.output
    assert "steps 0-3 on cpu" in out.output and "step 4/4" in out.output


@pytest.mark.parametrize(("args", "message"), [
    (["train", "sqd-nsgan-digits", "--set", "los.name=hinge"], "did you mean 'loss.name'"),
    (["train", "sqd-nsgan-digits", "--set", "loss.name"], "expected KEY=VALUE"),
    (["train", "nope"], "unknown preset 'nope'"),
    (["train", "sqd-nsgan-celeba", "--no-monitor", "--steps", "1"], "img_align_celeba"),
    (["train"], "give a PRESET"),
])
def test_sqd_train_errors(args: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SQD_HOME", str(tmp_path))
    out = CliRunner().invoke(_app(), args)
    assert out.exit_code == 1 and message in out.output


def test_sqd_train_resumes_from_a_checkpoint_file(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SQD_HOME", str(home))
    cfg = resolve_config("sqd-nsgan-digits", TINY)
    trainer = build_trainer(cfg, _settings(home))
    for step in range(3):
        trainer.step(step)
    path = home / "step-2.pt"
    path.write_bytes(to_bytes(trainer.state_dict() | {"step": 2, "epoch": 0}))
    out = CliRunner().invoke(_app(), ["train", "--resume", str(path), "--steps", "5", "--no-monitor",
                                      "--set", "train.log_every=1"])
    assert out.exit_code == 0, out.output
    assert "steps 3-4 on cpu" in out.output and "step 4/5" in out.output
    bad = CliRunner().invoke(_app(), ["train", "--resume", str(path), "--set", "optim.lr_g=fast"])
    assert bad.exit_code == 1 and "optim.lr_g" in bad.output
