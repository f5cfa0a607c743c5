"""Named training presets that reproduce the seeds' settings, and `resolve_config(preset, overrides)`.

Torch-free so the server can list and validate presets. A preset is a partial `TrainConfig` (nested dict);
overrides are dotted keys (`loss.name`, `optim.betas`) whose values may be strings from a command line or a
form ("2e-4", "true", "[0.5,0.9]", "gp,r1"). Every error names the key and what is allowed.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, ValidationError

from sqd.errors import ConfigError
from sqd.train_config import TrainConfig

__all__ = ["ConfigError", "PresetInfo", "TrainConfig", "apply_overrides", "config_keys", "get_preset",
           "list_presets", "parse_value", "resolve_config", "validate_config"]


@dataclass(frozen=True)
class PresetInfo:
    name: str
    seed: str  # which seed paper ("000" R3GAN, "001" GraN, "002" ICR, "003" SQD)
    dataset: str
    description: str
    family: str
    config: dict[str, Any] = field(default_factory=dict, repr=False)


# ---- building blocks -----------------------------------------------------------------------------------------
# Stacked digits are the cheap offline twins: 16×16 and narrow nets, so a 2-core CPU runs tens of steps/s.
DIGITS16: dict[str, Any] = {"dataset": {"name": "stacked_digits", "resolution": 16}, "eval": {"profile": "digits"}}
DIGITS32: dict[str, Any] = {"dataset": {"name": "stacked_digits", "resolution": 32}, "eval": {"profile": "digits"}}
CELEBA64: dict[str, Any] = {"dataset": {"name": "celeba", "resolution": 64}, "eval": {"profile": "faces"}}
CIFAR32: dict[str, Any] = {"dataset": {"name": "cifar10", "resolution": 32}, "eval": {"profile": "none"}}

# SQD (seed 003, §6b): DCGAN, Adam 2e-4 (0.5, 0.999), batch 64, z 100, n_dis 1, λ = 10.
SQD_CELEBA = {**CELEBA64, "model": {"arch": "dcgan", "width": 64, "z_dim": 100},
              "optim": {"lr_g": 2e-4, "lr_d": 2e-4, "betas": [0.5, 0.999]},
              "train": {"batch": 64, "steps": 100_000, "checkpoint_every": 2000}}
# The digits twin uses the lr that SPEC §7 observed to train smoothly on these machines. Evaluated at every epoch's
# end (156 steps), as seed 003 plots Q and D: the turning-point alert waits for an evaluation to call a jump
# critical, and at every 250 steps (1.6 epochs) it came 2 epochs late, at every epoch 1 (docs/alerts.md).
SQD_DIGITS = {**DIGITS16, "model": {"arch": "dcgan", "width": 32, "z_dim": 64},
              "optim": {"lr_g": 2e-3, "lr_d": 2e-3, "betas": [0.5, 0.999]},
              "train": {"batch": 64, "steps": 4000, "checkpoint_every": None, "checkpoint_every_epochs": 1}}

# R3GAN (seed 000, §5): RpGAN + R1 + R2, Adam β₁ = 0, cosine burn-in of γ 1 → 0.1, β₂ 0.9 → 0.99, EMA 0 → final.
R3GAN_MODEL = {"arch": "r3gan", "z_dim": 64, "g_norm": "none", "d_norm": "none", "blocks": 2, "group_size": 16}
R3GAN_TRAIN = {"loss": {"name": "rpgan"}, "reg": {"names": ["r1r2"], "gamma": 0.1},
               "optim": {"lr_g": 2e-4, "lr_d": 2e-4, "betas": [0.0, 0.99], "eps": 1e-8},
               "ema": {"enabled": True}}


def _r3gan(data: dict[str, Any], width: int, batch: int, steps: int, burnin: int, ema_images: float) -> dict:
    return {**data, **R3GAN_TRAIN, "model": {**R3GAN_MODEL, "width": width},
            "burnin": {"steps": burnin, "gamma": 1.0, "beta2": 0.9, "ema_half_life_images": 0.0},
            "ema": {"enabled": True, "half_life_images": ema_images},
            # NCHW on CUDA too: its grouped convs ran 1.27× faster than in channels_last (H200, docs/gpu.md)
            "train": {"batch": batch, "steps": steps, "checkpoint_every": max(steps // 20, 50), "channels_last": False}}


# On a CPU the 1-3-1 blocks with R1 + R2 double backprop cost ~5× a DCGAN step: one block per stage at 16×16.
R3GAN_DIGITS = {**_r3gan(DIGITS16, width=32, batch=64, steps=4000, burnin=1000, ema_images=20_000),
                "model": {**R3GAN_MODEL, "width": 32, "blocks": 1}}

# GraN (seed 001, §4): SNGAN-style ResNets, Adam setting E (2e-4, β 0/0.9, n_dis 5), batch 64, ε 0.1.
GRAN_OPTIM = {"lr_g": 2e-4, "lr_d": 2e-4, "betas": [0.0, 0.9], "n_dis": 5}


def _gran(data: dict[str, Any], critic: bool, width: int, steps: int) -> dict:
    return {**data, "model": {"arch": "resnet", "width": width, "z_dim": 128, "g_norm": "batch", "d_norm": "none"},
            "loss": {"name": "softhinge" if critic else "nsgan"},
            "reg": {"names": ["gran_c" if critic else "gran_d"], "gran_eps": 0.1, "gran_k": 1.0},
            "optim": GRAN_OPTIM, "train": {"batch": 64, "steps": steps, "checkpoint_every": max(steps // 20, 50)}}


# ICR (seed 002, §6): DCGAN, unregularized WGAN; ACGD (lr 1e-4 in the paper, β 0.99, tol 1e-10) vs Adam.
def _icr(data: dict[str, Any], optim: str, width: int, steps: int) -> dict:
    opt = ({"name": "acgd", "lr_g": 1e-4, "lr_d": 1e-4, "acgd_beta": 0.99, "acgd_tol": 1e-10} if optim == "acgd"
           else {"name": "adam", "lr_g": 1e-4, "lr_d": 1e-4, "betas": [0.5, 0.999]})
    return {**data, "model": {"arch": "dcgan", "width": width, "z_dim": 100, "g_norm": "batch"},
            "loss": {"name": "wgan"}, "optim": opt,
            "train": {"batch": 64, "steps": steps, "checkpoint_every": max(steps // 20, 50)}}


LOSS_TITLES = {"nsgan": "NSGAN", "lsgan": "LSGAN", "hinge": "Hinge", "wgan": "WGAN"}


def _sqd_grid() -> list[PresetInfo]:
    presets: list[PresetInfo] = []
    for loss in ("nsgan", "lsgan", "hinge", "wgan"):
        for gp in (False, True):
            suffix = f"{loss}-gp" if gp else loss
            reg = {"reg": {"names": ["gp"] if gp else [], "lam": 10.0}}
            what = f"{LOSS_TITLES[loss]}{' + GP (λ 10)' if gp else ', no regularizer'}"
            presets.append(PresetInfo(f"sqd-{suffix}-celeba", "003", "celeba",
                                      f"SQD grid: DCGAN 64×64 CelebA, {what}, Adam 2e-4 (0.5, 0.999)", "sqd",
                                      {**SQD_CELEBA, "loss": {"name": loss}, **reg}))
            presets.append(PresetInfo(f"sqd-{suffix}-digits", "003", "stacked_digits",
                                      f"SQD grid twin: small DCGAN 16×16 stacked digits, {what}, Adam 2e-3", "sqd",
                                      {**SQD_DIGITS, "loss": {"name": loss}, **reg}))
    return presets


def _gran_and_icr() -> list[PresetInfo]:
    presets: list[PresetInfo] = []
    for data, tag, gran_width, icr_width, steps in ((CIFAR32, "cifar10", 128, 64, 100_000),
                                                    (DIGITS16, "digits", 16, 16, 3000)):
        where = "32×32 CIFAR-10" if tag == "cifar10" else "16×16 stacked digits"
        dataset = data["dataset"]["name"]
        for critic, what in ((False, "GraN-D: gradient-normalized D with the NS loss"),
                             (True, "GraN-C: gradient-normalized critic with the soft-hinge loss")):
            presets.append(PresetInfo(f"gran{'c' if critic else 'd'}-{tag}", "001", dataset,
                                      f"{what}, SNGAN ResNet width {gran_width}, Adam setting E, {where}", "gran",
                                      _gran(data, critic, gran_width, steps)))
        for optim, what in (("acgd", "ICR: unregularized WGAN trained by ACGD (lr 1e-4, β 0.99)"),
                            ("adam", "ICR baseline: the same unregularized WGAN with Adam (fails without GP)")):
            presets.append(PresetInfo(f"icr-wgan-{optim}-{tag}", "002", dataset,
                                      f"{what}, DCGAN width {icr_width}, {where}", "icr",
                                      _icr(data, optim, icr_width, steps // 2)))
    return presets


def _others() -> list[PresetInfo]:
    return [
        PresetInfo("r3gan-digits", "000", "stacked_digits",
                   "R3GAN (RpGAN + R1 + R2, γ 1→0.1, EMA) scaled down for CPU: 16×16 stacked digits, width 32, "
                   "1 block per stage", "r3gan", R3GAN_DIGITS),
        PresetInfo("r3gan-digits-r1", "000", "stacked_digits",
                   "R3GAN ablation: RpGAN + R1 only (no R2; seed 000 Table 4: diverges), otherwise as r3gan-digits",
                   "r3gan", {**R3GAN_DIGITS, "reg": {"names": ["r1"], "gamma": 0.1}}),
        PresetInfo("r3gan-digits-nsgan", "000", "stacked_digits",
                   "R3GAN ablation: the classic NS loss + R1 + R2 (seed 000 Table 4: stable, drops modes)",
                   "r3gan", {**R3GAN_DIGITS, "loss": {"name": "nsgan"}}),
        PresetInfo("r3gan-digits32", "000", "stacked_digits",
                   "R3GAN at StackedMNIST's 32×32 with 2 blocks per stage, width 64 (slow on a CPU)",
                   "r3gan", _r3gan(DIGITS32, width=64, batch=64, steps=20_000, burnin=2000, ema_images=20_000)),
        PresetInfo("r3gan-cifar10", "000", "cifar10",
                   "R3GAN on CIFAR-10 32×32 (width 256, batch 512; paper: widths 256-768, 2 Mimg burn-in)",
                   "r3gan", _r3gan(CIFAR32, width=256, batch=512, steps=200_000, burnin=4000,
                                   ema_images=5_000_000)),
        PresetInfo("r3gan-celeba", "000", "celeba",
                   "R3GAN on CelebA 64×64 (width 256, batch 256)",
                   "r3gan", _r3gan(CELEBA64, width=256, batch=256, steps=200_000, burnin=8000,
                                   ema_images=5_000_000)),
        PresetInfo("demo-stable", "003", "stacked_digits",
                   "Demo: NSGAN on 16×16 stacked digits that trains smoothly (SPEC §7 observation)",
                   "demo", {**SQD_DIGITS, "loss": {"name": "nsgan"},
                            "train": {**SQD_DIGITS["train"], "steps": 6000}}),
        # demo-stable's twin whose lr warms up past what it tolerates (docs/monitor.md: found by search; healthy
        # until lr ≈ 1e-2, ~step 1000, then angles jump, quality swings and modes collapse from ~500 to ~20-150).
        PresetInfo("demo-turning", "003", "stacked_digits",
                   "Demo: NSGAN on 16×16 stacked digits whose lr warms up from 2e-3 to 4e-2 over 3000 steps: a "
                   "healthy start, then a turning point near epoch 8 (angle jump, quality swings, modes collapse)",
                   "demo", {**SQD_DIGITS, "loss": {"name": "nsgan"},
                            "optim": {"lr_g": 4e-2, "lr_d": 4e-2, "betas": [0.5, 0.999]},
                            "burnin": {"steps": 3000, "lr": 2e-3},
                            "train": {**SQD_DIGITS["train"], "steps": 6000}}),
    ]


FAMILY_ORDER = ("sqd", "r3gan", "gran", "icr", "demo")  # the seeds' order, demos last
PRESETS: dict[str, PresetInfo] = {p.name: p for p in sorted((*_sqd_grid(), *_others(), *_gran_and_icr()),
                                                             key=lambda p: FAMILY_ORDER.index(p.family))}


def list_presets() -> list[PresetInfo]:
    return list(PRESETS.values())


def get_preset(name: str) -> PresetInfo:
    try:
        return PRESETS[name]
    except KeyError:
        close = difflib.get_close_matches(name, PRESETS, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        msg = f"unknown preset '{name}'{hint} presets: {', '.join(PRESETS)}"
        raise ConfigError(msg, [{"loc": ["preset"], "msg": msg}]) from None


# ---- overrides -----------------------------------------------------------------------------------------------
def config_keys(model: type[BaseModel] = TrainConfig, prefix: str = "") -> dict[str, Any]:
    """Every dotted leaf key of the schema → its annotation."""
    keys: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys.update(config_keys(ann, f"{prefix}{name}."))
        else:
            keys[f"{prefix}{name}"] = ann
    return keys


def _is_text(annotation: Any) -> bool:
    """True for str-like fields (str, str | None, a Literal of strings): their values are kept verbatim."""
    if get_origin(annotation) is Literal:
        return all(isinstance(a, str) for a in get_args(annotation))
    args = get_args(annotation) or (annotation,)
    texts = [a is str or (get_origin(a) is Literal and _is_text(a)) for a in args]
    return any(texts) and not any(a in (int, float, bool) for a in args)


def parse_value(text: str) -> Any:
    """A command-line value: JSON where it parses ("2e-4", "[0.5,0.9]", "true"), words stay strings."""
    s = text.strip()
    lowered = s.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    try:
        return json.loads(s)
    except ValueError:
        pass
    if s.startswith("[") and s.endswith("]"):  # [gp, r1] without quotes
        inner = s[1:-1].strip()
        return [parse_value(part) for part in inner.split(",")] if inner else []
    return s


def _coerce(annotation: Any, value: Any) -> Any:
    if not isinstance(value, str):
        return value
    if _is_text(annotation):
        return None if value.strip().lower() in ("none", "null") and type(None) in get_args(annotation) else value
    return parse_value(value)


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    node = tree
    for part in parents:
        child = node.get(part)
        node[part] = child = dict(child) if isinstance(child, Mapping) else {}
        node = child
    node[leaf] = value


def _unknown_key(key: str, keys: dict[str, Any]) -> str:
    close = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"unknown key '{key}'{hint} keys: {', '.join(keys)}"


KEY_PREFIX = re.compile(r"^([a-z_]+\.[a-z_0-9]+):")


def _format_error(err: Mapping[str, Any]) -> dict[str, Any]:
    loc = [str(p) for p in err.get("loc", ())]
    key = ".".join(p for p in loc if not p.isdigit()) or "config"
    ctx = err.get("ctx") or {}
    if err.get("type") == "literal_error":
        allowed = str(ctx.get("expected", "")).replace("'", "").replace(" or ", ", ")
        msg = f"{key}: {err.get('input')!r} is not one of {allowed}"
    else:
        text = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        named = KEY_PREFIX.match(text)
        if not loc and named:  # a cross-field rule names its key first ("loss.name: ...")
            return {"loc": named.group(1).split("."), "msg": text}
        shown = f" (got {err['input']!r})" if "input" in err and not isinstance(err["input"], dict) else ""
        msg = f"{key}: {text}{shown}"
    return {"loc": loc, "msg": msg}


def _config_error(errors: list[dict[str, Any]]) -> ConfigError:
    return ConfigError("; ".join(e["msg"] for e in errors), errors)


def validate_config(data: Mapping[str, Any]) -> TrainConfig:
    """A full config dict (e.g. from a checkpoint or an event) → TrainConfig, or ConfigError."""
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise _config_error([_format_error(e) for e in exc.errors()]) from None


def apply_overrides(base: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """A (partial) config dict with dotted-key overrides applied, validated; ConfigError names every bad key."""
    keys = config_keys()
    tree = json.loads(json.dumps(base))  # a deep copy the overrides may change
    errors: list[dict[str, Any]] = []
    for key, value in (overrides or {}).items():
        if key not in keys:
            errors.append({"loc": key.split("."), "msg": _unknown_key(key, keys)})
            continue
        _set_dotted(tree, key, _coerce(keys[key], value))
    if errors:
        raise _config_error(errors)
    return validate_config(tree)


def resolve_config(preset: str, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """The preset's config with dotted-key overrides applied, validated; ConfigError names every bad key."""
    return apply_overrides(get_preset(preset).config, overrides)
