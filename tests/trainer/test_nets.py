"""Architectures (sizes follow the resolution), spectral norm, R3GAN fix-up init, checkpoint round trips."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sqd.errors import ArtifactError, ConfigError
from sqd.presets import resolve_config
from sqd.trainer.arch_r3gan import ACT_GAIN, R3GANGenerator, ResidualBlock
from sqd.trainer.checkpoint import load_generator, read_checkpoint, to_bytes
from sqd.trainer.nets import build_discriminator, build_generator, discriminator_spec, generator_spec

ARCHS = {"dcgan": "sqd-nsgan-digits", "resnet": "grand-digits", "r3gan": "r3gan-digits"}
SMALL = {"model.width": 16, "model.group_size": 8}


@pytest.mark.parametrize("resolution", [16, 32, 64, 128])
@pytest.mark.parametrize("arch", list(ARCHS))
def test_sizes_follow_resolution(arch: str, resolution: int) -> None:
    if resolution == 128 and arch != "dcgan":
        pytest.skip("128×128 ResNets are slow on CPU; the size logic is the same as at 64")
    cfg = resolve_config(ARCHS[arch], {**SMALL, "dataset.resolution": resolution, "dataset.name": "image_folder"})
    G, D = build_generator(generator_spec(cfg)), build_discriminator(discriminator_spec(cfg))
    x = G(torch.randn(2, cfg.model.z_dim))
    assert x.shape == (2, 3, resolution, resolution)
    assert D(x).shape == (2,)


def test_spectral_norm_wraps_every_layer_of_D() -> None:
    D = build_discriminator(discriminator_spec(resolve_config("sqd-nsgan-digits", {"reg.names": "sn"})))
    layers = [m for m in D.modules() if isinstance(m, nn.Conv2d)]
    assert layers and all(hasattr(m, "parametrizations") for m in layers)
    D(torch.randn(4, 3, 16, 16)).sum().backward()


def test_unknown_arch_in_spec() -> None:
    with pytest.raises(ConfigError, match="arch 'vit' is not one of dcgan, resnet, r3gan"):
        build_generator({"arch": "vit", "kwargs": {}, "z_dim": 8})
    with pytest.raises(ConfigError, match="unexpected keyword"):
        build_generator({"arch": "dcgan", "kwargs": {"z_dim": 8, "resolution": 16, "depth": 3}, "z_dim": 8})


def test_r3gan_blocks_are_identity_at_init() -> None:
    block = ResidualBlock(32, 2, 16, total_blocks=8)
    x = torch.randn(4, 32, 8, 8)
    assert torch.equal(block(x), x)


def _variance_profile(fixup: bool) -> list[float]:
    """Activation variance after each layer of G's body, relative to its input, with every branch's last conv
    given the same random init as the others (the zero init alone would make every block the identity)."""
    torch.manual_seed(0)
    G = R3GANGenerator(z_dim=64, resolution=16, width=32, blocks=5, group_size=16)
    blocks = [m for m in G.modules() if isinstance(m, ResidualBlock)]
    gain = ACT_GAIN * (len(blocks) ** -0.25 if fixup else 1.0)
    for block in blocks:
        for conv in (block.expand, block.grouped, block.project):
            nn.init.normal_(conv.weight, 0.0, gain / conv.weight[0].numel() ** 0.5)
    h = G.basis.unsqueeze(0) * G.to_scale(torch.randn(16, 64)).view(16, 32, 1, 1)
    var0, out = h.var().item(), []
    for layer in G.body:
        h = layer(h)
        out.append(h.var().item() / var0)
    return out


def test_r3gan_fixup_keeps_activation_variance_bounded() -> None:
    scaled, unscaled = _variance_profile(True), _variance_profile(False)
    assert 0.25 < min(scaled) and max(scaled) < 4
    assert max(unscaled) > 1000  # without the L^(-1/4) scaling the variance explodes with depth (15 blocks)


def _checkpoint(preset: str = "sqd-nsgan-digits", ema: bool = True) -> tuple[bytes, nn.Module, nn.Module]:
    cfg = resolve_config(preset)
    spec = generator_spec(cfg)
    G, G_ema = build_generator(spec), build_generator(spec)
    for p in G_ema.parameters():
        p.data.add_(1.0)
    data = to_bytes({"generator": spec, "G": G.state_dict(), "G_ema": G_ema.state_dict() if ema else None,
                     "D": None, "optim": None, "step": 3, "epoch": 0, "config": cfg.model_dump(mode="json"),
                     "rng": None})
    return data, G, G_ema


@pytest.mark.parametrize("ema", [True, False])
def test_load_generator_prefers_ema(ema: bool) -> None:
    data, G, G_ema = _checkpoint(ema=ema)
    loaded = load_generator(data, "cpu")
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    z = torch.randn(4, 64)
    G.eval(), G_ema.eval()
    assert torch.allclose(loaded(z), (G_ema if ema else G)(z))


def test_corrupt_and_foreign_checkpoints_are_named() -> None:
    data, _, _ = _checkpoint()
    with pytest.raises(ArtifactError, match="not a readable torch checkpoint"):
        read_checkpoint(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match=r"format is None, expected 'sqd-checkpoint/1'"):
        buf = __import__("io").BytesIO()
        torch.save({"G": {}}, buf)
        read_checkpoint(buf.getvalue())
    state = read_checkpoint(data)
    state["generator"] = {**state["generator"], "kwargs": {**state["generator"]["kwargs"], "width": 8}}
    with pytest.raises(ArtifactError, match="weights do not fit generator spec"):
        load_generator(state)
    with pytest.raises(ArtifactError, match="file not found"):
        read_checkpoint("/nonexistent/step-000000001.pt")
