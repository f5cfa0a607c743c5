"""Presets and the config schema: torch-free, every preset valid, overrides parsed, errors name the key."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sqd.errors import ConfigError
from sqd.presets import list_presets, parse_value, resolve_config, validate_config


def test_presets_import_without_torch() -> None:
    code = "import sys, sqd.presets; sqd.presets.list_presets(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("info", list_presets(), ids=lambda p: p.name)
def test_every_preset_resolves(info) -> None:
    cfg = resolve_config(info.name, {})
    assert cfg.dataset.name == info.dataset
    assert info.seed in {"000", "001", "002", "003"} and info.description and info.family
    assert validate_config(cfg.model_dump(mode="json")) == cfg  # what travels in events round-trips


def test_preset_families_cover_the_issue() -> None:
    names = {p.name for p in list_presets()}
    for loss in ("nsgan", "lsgan", "hinge", "wgan"):
        for suffix in ("", "-gp"):
            assert {f"sqd-{loss}{suffix}-celeba", f"sqd-{loss}{suffix}-digits"} <= names
    assert {"r3gan-digits", "r3gan-cifar10", "r3gan-celeba", "grand-cifar10", "granc-cifar10",
            "icr-wgan-acgd-cifar10", "icr-wgan-adam-cifar10"} <= names


def test_sqd_digits_twins_are_evaluated_at_every_epochs_end() -> None:
    """The cadence the turning-point alert was measured at (docs/alerts.md): an epoch's end, not a step count."""
    twins = [p.name for p in list_presets() if p.name.startswith(("sqd-", "demo-")) and p.dataset == "stacked_digits"]
    assert len(twins) == 10
    for name in twins:
        train = resolve_config(name).train
        assert (train.checkpoint_every, train.checkpoint_every_epochs) == (None, 1), name


def test_seed_settings() -> None:
    r3 = resolve_config("r3gan-digits")
    assert (r3.loss.name, r3.reg.names, r3.optim.betas[0], r3.model.z_dim) == ("rpgan", ["r1r2"], 0.0, 64)
    assert (r3.burnin.gamma, r3.reg.gamma, r3.burnin.beta2, r3.optim.betas[1]) == (1.0, 0.1, 0.9, 0.99)
    gran = resolve_config("granc-cifar10")
    assert (gran.loss.name, gran.reg.names, gran.optim.betas, gran.optim.n_dis) == ("softhinge", ["gran_c"],
                                                                                     (0.0, 0.9), 5)
    sqd = resolve_config("sqd-wgan-gp-celeba")
    assert (sqd.dataset.resolution, sqd.optim.lr_g, sqd.optim.betas, sqd.reg.lam) == (64, 2e-4, (0.5, 0.999), 10)
    acgd = resolve_config("icr-wgan-acgd-cifar10")
    assert (acgd.optim.name, acgd.loss.name, acgd.reg.names) == ("acgd", "wgan", [])


@pytest.mark.parametrize(("text", "value"), [
    ("2e-4", 2e-4), ("true", True), ("False", False), ("[0.5,0.9]", [0.5, 0.9]), ("none", None),
    ("[gp, r1]", ["gp", "r1"]), ("hinge", "hinge"), ("12", 12), ("[]", []),
])
def test_parse_value(text: str, value: object) -> None:
    assert parse_value(text) == value


def test_string_overrides_are_parsed_by_field_type() -> None:
    cfg = resolve_config("sqd-nsgan-digits", {"optim.lr_g": "1e-3", "optim.betas": "[0.0, 0.9]",
                                              "ema.enabled": "true", "reg.names": "gp,r1", "loss.name": "hinge",
                                              "dataset.root": "123", "train.steps": 7})
    assert (cfg.optim.lr_g, cfg.optim.betas, cfg.ema.enabled) == (1e-3, (0.0, 0.9), True)
    assert (cfg.reg.names, cfg.loss.name, cfg.dataset.root, cfg.train.steps) == (["gp", "r1"], "hinge", "123", 7)
    assert resolve_config("sqd-nsgan-gp-digits", {"reg.names": "none"}).reg.names == []


def _error(preset: str, overrides: dict) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        resolve_config(preset, overrides)
    return info.value


def test_bad_value_names_key_and_allowed_values() -> None:
    exc = _error("sqd-nsgan-digits", {"loss.name": "foo"})
    assert str(exc) == "loss.name: 'foo' is not one of nsgan, lsgan, hinge, wgan, softhinge, rpgan, ogan"
    assert exc.errors == [{"loc": ["loss", "name"], "msg": str(exc)}]


def test_unknown_key_suggests_the_close_one() -> None:
    exc = _error("sqd-nsgan-digits", {"los.name": "hinge"})
    assert str(exc).startswith("unknown key 'los.name'; did you mean 'loss.name'? keys: dataset.name, ")
    assert exc.errors[0]["loc"] == ["los", "name"]


def test_unknown_preset() -> None:
    exc = _error("sqd-nsgan-digit", {})
    assert str(exc).startswith("unknown preset 'sqd-nsgan-digit'; did you mean 'sqd-nsgan-digits'?")
    assert exc.errors[0]["loc"] == ["preset"]


@pytest.mark.parametrize(("overrides", "loc", "fragment"), [
    ({"optim.name": "acgd"}, ["loss", "name"], "zero-sum"),
    ({"model.d_norm": "batch", "reg.names": "gp"}, ["model", "d_norm"], "per-sample input gradients of gp"),
    ({"reg.names": "gran_c"}, ["reg", "names"], "gran_c is paired with loss.name=softhinge"),
    ({"reg.names": "gp,gp"}, ["reg", "names"], "listed twice"),
    ({"reg.names": "r1,r1r2"}, ["reg", "names"], "r1r2 already includes"),
    ({"optim.betas": "[1.5, 0.9]"}, ["optim", "betas"], "[0, 1)"),
    ({"train.steps": "abc"}, ["train", "steps"], "'abc'"),
    ({"dataset.resolution": "24"}, ["dataset", "resolution"], "is not one of 16, 32, 64, 128"),
    ({"loss.clip": "0.01"}, ["loss", "clip"], "wgan only"),
])
def test_cross_field_rules(overrides: dict, loc: list[str], fragment: str) -> None:
    exc = _error("sqd-nsgan-digits", overrides)
    assert exc.errors[0]["loc"] == loc
    assert fragment in exc.errors[0]["msg"]


def test_every_bad_override_is_reported_at_once() -> None:
    exc = _error("sqd-nsgan-digits", {"los.name": "x", "optim.lr": 1})
    assert [e["loc"] for e in exc.errors] == [["los", "name"], ["optim", "lr"]]
