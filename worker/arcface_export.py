"""Writing an arcface_torch IResNet to ONNX the way insightface's `recognition/arcface_torch/torch2onnx.py` wrote
`w600k_r50.onnx`: eval mode, opset 11, the TorchScript exporter (which folds every BatchNorm that follows a
convolution into it and gives the folded tensors numeric names), input named `data` with its batch dimension made
free (`dim_param = "None"`), initializers not listed as graph inputs.

The real file cannot be downloaded on the build machines, so tests and benches make a stand-in with the same
graph and random weights (`random_arcface`) and run it through the same loader (`arcface_onnx`) and onnxruntime.
It also converts one's own arcface_torch checkpoint: `IResNet(layers, bn_after_conv=True)` has arcface_torch's
module names, so its `load_state_dict` takes that state dict (`fc`, `features` and all). Needs the `onnx` package.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from sqd.worker.iresnet import INPUT_SIDE, IRESNET50, IResNet

OPSET = 11  # torch2onnx.py's default, the opset of w600k_r50.onnx


def random_arcface(layers: tuple[int, ...] = IRESNET50, seed: int = 0) -> IResNet:
    """The training structure with torch's default weight initialisation (activations stay in range through the
    residual stages) and random BatchNorm statistics and PReLU slopes, so that no two tensors are equal (the
    exporter would merge equal initializers, which a trained file never has) and folding is exercised."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = IResNet(layers, bn_after_conv=True)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d | nn.BatchNorm1d):
                assert module.running_mean is not None and module.running_var is not None
                # small shifts: larger ones add up over 24 blocks into one direction every embedding shares
                module.weight.uniform_(0.5, 1.5, generator=gen)
                module.bias.normal_(0.0, 0.01, generator=gen)
                module.running_mean.normal_(0.0, 0.01, generator=gen)
                module.running_var.uniform_(0.5, 1.5, generator=gen)
            elif isinstance(module, nn.PReLU):
                module.weight.uniform_(0.1, 0.4, generator=gen)
    return net.eval()


def export_onnx(net: IResNet, path: Path, fold_batchnorm: bool = True) -> Path:
    """Write `net` (either structure) to `path` as torch2onnx.py did; `fold_batchnorm=False` exports without
    constant folding: Conv → BatchNormalization pairs and PReLU slopes behind Unsqueeze nodes, which the loader
    also reads."""
    import onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated in newer torch, but is what made the file
        warnings.simplefilter("ignore")
        torch.onnx.export(net.eval(), (torch.zeros(1, 3, INPUT_SIDE, INPUT_SIDE),), str(path), input_names=["data"],
                          keep_initializers_as_inputs=False, opset_version=OPSET, dynamo=False,
                          do_constant_folding=fold_batchnorm)
    model = onnx.load(str(path))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "None"
    onnx.save(model, str(path))
    return path
