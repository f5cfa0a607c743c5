"""The convolution and activation with hand-written derivatives (trainer/conv.py, R3GAN's biased LeakyReLU):
the same values and first, second and third derivatives as PyTorch's own formulas, in float64, for every
geometry the zoo uses (1×1, grouped 3×3, depthwise 4×4, stride 2 with padding) in NCHW and channels_last.
They run on CUDA only by default; these tests switch them on for the CPU (`FAST_DERIVATIVES = "always"`)."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from sqd.trainer import conv
from sqd.trainer.arch_r3gan import LEAK, BiasedLeakyReLU, R3GANDiscriminator

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(conv, "FAST_DERIVATIVES", "always")


def test_the_cpu_uses_pytorchs_own_derivatives_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(conv, "FAST_DERIVATIVES", "cuda")
    x = torch.randn(1, 2, 4, 4, requires_grad=True)
    assert not conv.fast_derivatives(x)
    assert type(conv.conv2d(x, torch.randn(2, 2, 1, 1)).grad_fn).__name__ == "ConvolutionBackward0"

GEOMETRIES = [  # (channels in, out, groups, kernel, stride, padding)
    (8, 16, 1, 1, 1, 0), (16, 16, 4, 3, 1, 1), (8, 8, 8, 4, 1, 0), (8, 4, 1, 4, 2, 1), (8, 8, 2, 3, 2, 1),
]


def _derivatives(f, x: torch.Tensor, w: torch.Tensor) -> list[torch.Tensor]:  # type: ignore[no-untyped-def]
    """y, ∇ₓ of a penalty-like scalar, its gradient w.r.t. (w, x) with create_graph, and a third derivative."""
    y = f(x, w)
    (gx,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)
    pen = gx.square().sum() + y.sum()
    gw, gxx = torch.autograd.grad(pen, [w, x], create_graph=True)
    (third,) = torch.autograd.grad(gw.square().sum(), w)
    return [y, gx, gw, gxx, third]


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(("cin", "cout", "groups", "k", "stride", "pad"), GEOMETRIES)
def test_conv_derivatives_match_pytorch(cin: int, cout: int, groups: int, k: int, stride: int, pad: int,
                                        channels_last: bool) -> None:
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(3, cin, 8, 8, dtype=torch.float64).to(memory_format=fmt).requires_grad_()
    w = torch.randn(cout, cin // groups, k, k, dtype=torch.float64).to(memory_format=fmt).requires_grad_()
    ours = _derivatives(lambda x, w: conv.conv2d(x, w, None, stride, pad, groups), x, w)
    theirs = _derivatives(lambda x, w: F.conv2d(x, w, None, stride, pad, 1, groups), x, w)
    for a, b in zip(ours, theirs, strict=True):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9 * b.abs().max().item())


def test_conv_passes_gradgradcheck() -> None:
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)
    fn = lambda x, w, b: conv.conv2d(x, w, b, 2, 1, 2)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w, b)) and torch.autograd.gradgradcheck(fn, (x, w, b))


def test_conv2d_module_keeps_the_nn_conv2d_contract() -> None:
    torch.manual_seed(0)
    ours = conv.Conv2d(4, 6, 3, 1, 1, groups=2)
    theirs = torch.nn.Conv2d(4, 6, 3, 1, 1, groups=2)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 4, 7, 7)
    torch.testing.assert_close(ours(x), theirs(x))
    assert set(ours.state_dict()) == {"weight", "bias"}
    with pytest.raises(ValueError, match="dilation 1"):
        conv.Conv2d(4, 4, 3, dilation=2)


def test_biased_leaky_relu_derivatives_match_pytorch() -> None:
    torch.manual_seed(0)
    act = BiasedLeakyReLU(4).double()
    with torch.no_grad():
        act.bias.normal_()
    x = torch.randn(3, 4, 5, 5, dtype=torch.float64, requires_grad=True)
    results = []
    for f in (act, lambda x: F.leaky_relu(x + act.bias.view(1, -1, 1, 1), LEAK)):
        y = f(x)
        (gx,) = torch.autograd.grad(y.pow(3).sum(), x, create_graph=True)
        results.append([y, gx, *torch.autograd.grad(gx.pow(3).sum(), [act.bias, x])])
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b)
    assert torch.autograd.gradgradcheck(act, (x,))


def test_builtin_switch_gives_the_same_r1_gradient() -> None:
    """FAST_DERIVATIVES="never" (PyTorch's formulas, what the GPU bench compares with) trains the same D."""
    torch.manual_seed(0)
    D = R3GANDiscriminator(16, 3, width=8, blocks=1, group_size=4).double()
    with torch.no_grad():
        for p in D.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(3, 3, 16, 16, dtype=torch.float64, requires_grad=True)
    grads = []
    for mode in ("always", "never"):
        conv.FAST_DERIVATIVES = mode  # type: ignore[assignment]
        (g,) = torch.autograd.grad(D(x).sum(), x, create_graph=True)
        grads.append(torch.autograd.grad(g.square().sum(), list(D.parameters())))
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
