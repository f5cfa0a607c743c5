"""ArcFace's IResNet backbone (Deng et al.'s "improved" ResNet, insightface's arcface_torch), built by our code so
the face embedder can run in PyTorch on the GPU with weights read from an ONNX file (`arcface_onnx`).

Layout (as arcface_torch names its modules, so an arcface_torch state dict loads into `bn_after_conv=True`):

    conv1 3×3 (3 → 64) · [bn1] · prelu
    layer1..4: blocks of  bn1 · conv1 3×3 · [bn2] · prelu · conv2 3×3 (stride 2 in a stage's first block) · [bn3]
               + identity, or downsample = conv 1×1 stride 2 · [bn] in a stage's first block; widths 64/128/256/512
    bn2 · flatten · fc (512·7·7 → 512) · features (BatchNorm1d)

The bracketed BatchNorms follow a convolution: an ONNX export in eval mode folds them into that convolution's
weight and bias. `bn_after_conv=False` is that folded network (convolutions with a bias, no bracketed BN) — what the
loader fills; `bn_after_conv=True` is the training structure, which tests and benches export to ONNX as insightface
did. The BatchNorms *before* a convolution (a block's bn1, the final bn2) and the 1-d `features` cannot be folded
(zero padding sees the un-normalised zeros), so they stay as they are in both forms. Input: (N, 3, 112, 112) RGB
scaled to [−1, 1] ((x − 127.5) / 127.5); output: (N, 512) raw (not normalised) embeddings.
"""

from __future__ import annotations

import torch
from torch import nn

WIDTHS = (64, 128, 256, 512)
IRESNET50 = (3, 4, 14, 3)  # blocks per stage of insightface's w600k_r50
INPUT_SIDE = 112
FC_SIDE = INPUT_SIDE // 16  # four stride-2 stages: 112 → 7
EMBEDDING = 512


def _conv(cin: int, cout: int, kernel: int, stride: int, bias: bool) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=bias)


def _conv_bn(cin: int, cout: int, kernel: int, stride: int, bn_after_conv: bool) -> list[nn.Module]:
    """A convolution and, in the training structure, the BatchNorm that follows it."""
    conv = _conv(cin, cout, kernel, stride, bias=not bn_after_conv)
    return [conv, nn.BatchNorm2d(cout, eps=1e-5)] if bn_after_conv else [conv]


class IBasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, bn_after_conv: bool):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, eps=1e-5)
        self.conv1 = _conv(cin, cout, 3, 1, bias=not bn_after_conv)
        self.bn2 = nn.BatchNorm2d(cout, eps=1e-5) if bn_after_conv else nn.Identity()
        self.prelu = nn.PReLU(cout)
        self.conv2 = _conv(cout, cout, 3, stride, bias=not bn_after_conv)
        self.bn3 = nn.BatchNorm2d(cout, eps=1e-5) if bn_after_conv else nn.Identity()
        self.downsample = (nn.Sequential(*_conv_bn(cin, cout, 1, stride, bn_after_conv))
                           if stride != 1 or cin != cout else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (x if self.downsample is None else self.downsample(x))


class IResNet(nn.Module):
    """`layers`: blocks per stage, e.g. IRESNET50; see the module docstring for the two forms."""

    def __init__(self, layers: tuple[int, ...] = IRESNET50, bn_after_conv: bool = False):
        super().__init__()
        if len(layers) != len(WIDTHS) or min(layers) < 1:
            raise ValueError(f"IResNet: layers must be {len(WIDTHS)} positive block counts, got {layers}")
        self.layers = tuple(layers)
        self.conv1 = _conv(3, WIDTHS[0], 3, 1, bias=not bn_after_conv)
        self.bn1 = nn.BatchNorm2d(WIDTHS[0], eps=1e-5) if bn_after_conv else nn.Identity()
        self.prelu = nn.PReLU(WIDTHS[0])
        cin = WIDTHS[0]
        for i, (width, blocks) in enumerate(zip(WIDTHS, layers, strict=True)):
            stage = [IBasicBlock(cin if b == 0 else width, width, 2 if b == 0 else 1, bn_after_conv)
                     for b in range(blocks)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*stage))
            cin = width
        self.bn2 = nn.BatchNorm2d(WIDTHS[-1], eps=1e-5)
        self.fc = nn.Linear(WIDTHS[-1] * FC_SIDE * FC_SIDE, EMBEDDING)
        self.features = nn.BatchNorm1d(EMBEDDING, eps=1e-5)

    def stages(self) -> list[nn.Sequential]:
        return [getattr(self, f"layer{i + 1}") for i in range(len(WIDTHS))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))
        for stage in self.stages():
            x = stage(x)
        return self.features(self.fc(torch.flatten(self.bn2(x), 1)))
