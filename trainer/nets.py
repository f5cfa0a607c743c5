"""Architecture registry: build G and D by name, and the generator spec a checkpoint carries.

A generator spec is `{"arch": name, "kwargs": {...}, "z_dim": int}` (the checkpoint contract): a worker calls
`build_generator(spec)` and samples `G(torch.randn(n, spec["z_dim"]))` — images N×C×H×W in [−1, 1] (tanh for
dcgan/resnet; R3GAN's output is linear, as in the paper, so clamp before display).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from sqd.errors import ConfigError
from sqd.train_config import TrainConfig
from sqd.trainer.arch_dcgan import DCGANDiscriminator, DCGANGenerator
from sqd.trainer.arch_r3gan import R3GANDiscriminator, R3GANGenerator
from sqd.trainer.arch_resnet import ResNetDiscriminator, ResNetGenerator

GENERATORS: dict[str, Callable[..., nn.Module]] = {
    "dcgan": DCGANGenerator, "resnet": ResNetGenerator, "r3gan": R3GANGenerator,
}
DISCRIMINATORS: dict[str, Callable[..., nn.Module]] = {
    "dcgan": DCGANDiscriminator, "resnet": ResNetDiscriminator, "r3gan": R3GANDiscriminator,
}


def _arch_kwargs(cfg: TrainConfig, width: int, norm: str) -> dict[str, Any]:
    m, d = cfg.model, cfg.dataset
    kwargs: dict[str, Any] = {"resolution": d.resolution, "channels": d.channels, "width": width}
    if m.arch == "r3gan":
        kwargs.update(blocks=m.blocks, expansion=m.expansion, group_size=m.group_size)
    else:
        kwargs["norm"] = norm
    return kwargs


def generator_spec(cfg: TrainConfig) -> dict[str, Any]:
    kwargs = {"z_dim": cfg.model.z_dim, **_arch_kwargs(cfg, cfg.model.width, cfg.model.g_norm)}
    return {"arch": cfg.model.arch, "kwargs": kwargs, "z_dim": cfg.model.z_dim}


def discriminator_spec(cfg: TrainConfig) -> dict[str, Any]:
    width = cfg.model.d_width or cfg.model.width
    return {"arch": cfg.model.arch, "kwargs": _arch_kwargs(cfg, width, cfg.model.d_norm),
            "spectral_norm": "sn" in cfg.reg.names}


def _build(registry: dict[str, Callable[..., nn.Module]], role: str, spec: dict[str, Any]) -> nn.Module:
    arch = spec.get("arch")
    if arch not in registry:
        raise ConfigError(f"{role} spec: arch {arch!r} is not one of {', '.join(registry)}")
    try:
        return registry[arch](**spec.get("kwargs", {}))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{role} spec for arch {arch!r}: {exc}") from exc


def build_generator(spec: dict[str, Any]) -> nn.Module:
    return _build(GENERATORS, "generator", spec)


def build_discriminator(spec: dict[str, Any]) -> nn.Module:
    D = _build(DISCRIMINATORS, "discriminator", spec)
    return apply_spectral_norm(D) if spec.get("spectral_norm") else D


def apply_spectral_norm(net: nn.Module) -> nn.Module:
    """Spectral normalization (Miyato et al. 2018) of every conv and linear layer, one power iteration a step."""
    for name, child in list(net.named_children()):
        if isinstance(child, nn.Conv2d | nn.Linear | nn.ConvTranspose2d):
            setattr(net, name, spectral_norm(child))
        else:
            apply_spectral_norm(child)
    return net
