"""ArcFace in PyTorch with its weights read from an ONNX file: `load_arcface_onnx(path) -> IResNet`.

insightface's `w600k_r50.onnx` (buffalo_l) is arcface_torch's IResNet-50 exported by `torch.onnx.export` in eval
mode at opset 11: the BatchNorm after each convolution was folded into that convolution's weight and bias, so those
initializers have numeric names (`685`, `686`, …), and so do the PReLU slopes ((C, 1, 1), the exporter's unsqueeze
constant-folded); the BatchNorms it could not fold (each block's `bn1`, the final `bn2`, `features`) and `fc` keep
their module names. Names are therefore not a usable map. We read the weights by the graph's *structure*: from the
image input we follow the dataflow — stem Conv → PRelu; per residual block BatchNormalization → Conv → PRelu → Conv
→ Add, whose other operand is the block input or a 1×1 Conv of it (the downsample); then BatchNormalization →
Flatten → Gemm → BatchNormalization, the graph output. Stage widths and block counts are read from the graph (so
IResNet-18/34/50/100 exports all load); an un-folded export (Conv → BatchNormalization) is folded here in float64;
Identity and Constant nodes that merely carry weights are followed.

Every node of the graph must be accounted for and every tensor must have the shape the IResNet needs; otherwise
`ModelFileMissing` names the file, the node and initializer at fault, what was expected, and the ways out (the real
file, or `SQD_WORKER__ARCFACE_RUNTIME=onnxruntime` for networks of another structure). A file that is not ONNX at
all is refused the same way. Input (N, 3, 112, 112) RGB in [−1, 1]; output (N, 512), as on onnxruntime.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sqd.errors import ModelFileMissing
from sqd.worker.iresnet import EMBEDDING, FC_SIDE, INPUT_SIDE, WIDTHS, IBasicBlock, IResNet
from sqd.worker.model_files import ARCFACE_HOWTO

TORCH_PATH_HELP = ("the torch path reads arcface_torch IResNet exports such as insightface's w600k_r50.onnx; "
                   "replace the file with that one, or run this network on onnxruntime "
                   "(SQD_WORKER__ARCFACE_RUNTIME=onnxruntime)")


@dataclass
class Conv:
    weight: np.ndarray  # BatchNorm folded in
    bias: np.ndarray
    stride: int
    out: str  # the value it produces


@dataclass
class BatchNorm:
    scale: np.ndarray
    shift: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    eps: float
    out: str


@dataclass
class Block:
    bn1: BatchNorm
    conv1: Conv
    prelu: np.ndarray
    conv2: Conv
    downsample: Conv | None
    out: str


@dataclass
class _Graph:
    """The ONNX graph with producer/consumer maps and the set of nodes the reader has accounted for."""

    path: Path
    nodes: list[Any]
    initializers: dict[str, Any]
    consumers: dict[str, list[Any]] = field(default_factory=lambda: defaultdict(list))
    producer: dict[str, Any] = field(default_factory=dict)
    used: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        for node in self.nodes:
            for name in node.input:
                self.consumers[name].append(node)
            for name in node.output:
                self.producer[name] = node

    def refuse(self, detail: str) -> ModelFileMissing:
        return ModelFileMissing(f"ArcFace model {self.path} does not have the IResNet structure: {detail}; "
                                f"{TORCH_PATH_HELP}")

    def take(self, node: Any) -> Any:
        self.used.add(id(node))
        return node

    def next_node(self, value: str, op: str, where: str) -> Any:
        """The one `op` node that reads `value`."""
        found = [n for n in self.consumers[value] if n.op_type == op]
        if len(found) != 1:
            readers = ", ".join(f"{n.name or '?'} ({n.op_type})" for n in self.consumers[value]) or "nothing"
            raise self.refuse(f"{where}: expected one {op} node reading '{value}', found {readers}")
        return self.take(found[0])

    def only_reader(self, value: str) -> Any | None:
        readers = self.consumers[value]
        return readers[0] if len(readers) == 1 else None

    def constant(self, name: str, where: str) -> np.ndarray:
        """A weight: an initializer, or a Constant / Identity / Unsqueeze node chain ending in one."""
        from onnx import numpy_helper

        if name in self.initializers:
            return numpy_helper.to_array(self.initializers[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            self.take(node)
            return numpy_helper.to_array(attributes(node)["value"])
        if node is not None and node.op_type == "Identity":
            self.take(node)
            return self.constant(node.input[0], where)
        if node is not None and node.op_type == "Unsqueeze":
            self.take(node)
            axes = attributes(node).get("axes")
            if axes is None:  # opset 13+: axes is the second input
                axes = self.constant(node.input[1], where).astype(int).tolist()
            out = self.constant(node.input[0], where)
            for axis in sorted(int(a) for a in axes):
                out = np.expand_dims(out, axis)
            return out
        raise self.refuse(f"{where}: weight '{name}' is not a constant of the file (an initializer)")

    def shaped(self, name: str, shape: tuple[int, ...], where: str) -> np.ndarray:
        array = self.constant(name, where)
        if array.shape != shape:
            raise self.refuse(f"{where}: initializer '{name}' has shape {array.shape}, expected {shape}")
        return array


def attributes(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _batch_norm(g: _Graph, node: Any, channels: int, where: str) -> BatchNorm:
    names = list(node.input)
    if len(names) != 5:
        raise g.refuse(f"{where}: BatchNormalization node {node.name} has {len(names)} inputs, expected 5")
    scale, shift, mean, var = (g.shaped(n, (channels,), where) for n in names[1:])
    return BatchNorm(scale, shift, mean, var, float(attributes(node).get("epsilon", 1e-5)), node.output[0])


def _conv(g: _Graph, node: Any, cin: int, kernel: int, where: str, cout: int | None = None) -> Conv:
    """A Conv node (3×3 pad 1 or 1×1 pad 0, no groups or dilation), with a following BatchNormalization folded in."""
    attrs = attributes(node)
    stride = list(attrs.get("strides", [1, 1]))
    expected = {"kernel_shape": [kernel, kernel], "pads": [kernel // 2] * 4, "dilations": [1, 1], "group": 1}
    got = {"kernel_shape": list(attrs.get("kernel_shape", [])), "pads": list(attrs.get("pads", [0, 0, 0, 0])),
           "dilations": list(attrs.get("dilations", [1, 1])), "group": int(attrs.get("group", 1))}
    if got != expected or stride not in ([1, 1], [2, 2]):
        raise g.refuse(f"{where}: Conv node {node.name} has {got} and strides {stride}, expected {expected} "
                       "and strides 1 or 2")
    weight = g.constant(node.input[1], where)
    out = weight.shape[0] if cout is None else cout
    if weight.shape != (out, cin, kernel, kernel):
        raise g.refuse(f"{where}: initializer '{node.input[1]}' (Conv weight) has shape {weight.shape}, expected "
                       f"({out}, {cin}, {kernel}, {kernel})")
    bias = g.shaped(node.input[2], (out,), where) if len(node.input) > 2 and node.input[2] else np.zeros(out)
    conv = Conv(weight, bias, stride[0], node.output[0])
    follower = g.only_reader(conv.out)
    if follower is not None and follower.op_type == "BatchNormalization":  # an un-folded export: fold it here
        bn = _batch_norm(g, g.take(follower), out, where)
        factor = bn.scale.astype(np.float64) / np.sqrt(bn.var.astype(np.float64) + bn.eps)
        conv = Conv(weight.astype(np.float64) * factor[:, None, None, None],
                    (bias.astype(np.float64) - bn.mean) * factor + bn.shift, conv.stride, bn.out)
    return conv


def _prelu(g: _Graph, value: str, channels: int, where: str) -> tuple[np.ndarray, str]:
    node = g.next_node(value, "PRelu", where)
    slope = g.constant(node.input[1], where)
    if slope.size != channels or slope.shape not in ((channels,), (channels, 1, 1), (1, channels, 1, 1)):
        raise g.refuse(f"{where}: initializer '{node.input[1]}' (PRelu slope) has shape {slope.shape}, expected "
                       f"({channels}, 1, 1)")
    return slope.reshape(channels), node.output[0]


def _block(g: _Graph, x: str, cin: int, where: str) -> Block:
    bn1 = _batch_norm(g, g.next_node(x, "BatchNormalization", where), cin, where)
    conv1 = _conv(g, g.next_node(bn1.out, "Conv", where), cin, 3, where)
    cout = conv1.weight.shape[0]
    slope, activated = _prelu(g, conv1.out, cout, where)
    conv2 = _conv(g, g.next_node(activated, "Conv", where), cout, 3, where, cout)
    add = g.next_node(conv2.out, "Add", where)
    other = [name for name in add.input if name != conv2.out]
    if len(other) != 1:
        raise g.refuse(f"{where}: Add node {add.name} does not add the block's input to its branch")
    downsample = None
    if other[0] != x:
        shortcut = g.producer.get(other[0])
        source = shortcut
        while source is not None and source.op_type == "BatchNormalization":  # an un-folded downsample
            source = g.producer.get(source.input[0])
        if source is None or source.op_type != "Conv" or source.input[0] != x:
            raise g.refuse(f"{where}: the shortcut of Add node {add.name} is neither the block input '{x}' nor a "
                           "1×1 Conv of it")
        downsample = _conv(g, g.take(source), cin, 1, where + " downsample", cout)
        if downsample.out != other[0] or downsample.stride != conv2.stride:
            raise g.refuse(f"{where}: the downsample Conv {source.name} does not match the block's stride")
    elif cin != cout or conv2.stride != 1:
        raise g.refuse(f"{where}: a block that changes width or stride needs a downsample Conv")
    return Block(bn1, conv1, slope, conv2, downsample, add.output[0])


def _group_stages(g: _Graph, blocks: list[Block]) -> tuple[int, ...]:
    """Blocks per stage: a stage starts with a stride-2 block; four stages of widths 64, 128, 256, 512."""
    layers: list[int] = []
    for i, block in enumerate(blocks):
        if block.conv2.stride == 2:
            layers.append(0)
        if not layers:
            raise g.refuse(f"block {i + 1}: the first block must have stride 2")
        width = WIDTHS[min(len(layers), len(WIDTHS)) - 1]
        if block.conv1.weight.shape[0] != width:
            raise g.refuse(f"block {i + 1} (stage {len(layers)}): width {block.conv1.weight.shape[0]}, expected "
                           f"{width}")
        layers[-1] += 1
    if len(layers) != len(WIDTHS):
        raise g.refuse(f"{len(layers)} stages of residual blocks, expected {len(WIDTHS)}")
    return tuple(layers)


def _read_graph(g: _Graph, input_name: str) -> tuple[tuple[int, ...], dict[str, Any]]:
    stem = _conv(g, g.next_node(input_name, "Conv", "stem"), 3, 3, "stem", WIDTHS[0])
    if stem.stride != 1:
        raise g.refuse("stem: the first Conv must have stride 1")
    stem_slope, x = _prelu(g, stem.out, WIDTHS[0], "stem")
    blocks: list[Block] = []
    cin = WIDTHS[0]
    while True:
        bn = g.next_node(x, "BatchNormalization", f"block {len(blocks) + 1}")
        reader = g.only_reader(bn.output[0])
        if reader is not None and reader.op_type == "Flatten":
            break
        g.used.discard(id(bn))  # the block reader takes it again
        block = _block(g, x, cin, f"block {len(blocks) + 1}")
        blocks.append(block)
        cin, x = block.conv1.weight.shape[0], block.out
    layers = _group_stages(g, blocks)
    bn2 = _batch_norm(g, bn, WIDTHS[-1], "head")
    flatten = g.next_node(bn2.out, "Flatten", "head")
    if int(attributes(flatten).get("axis", 1)) != 1:
        raise g.refuse(f"head: Flatten node {flatten.name} must flatten from axis 1")
    gemm = g.next_node(flatten.output[0], "Gemm", "head")
    a = attributes(gemm)
    if (a.get("transA", 0), a.get("transB", 0), a.get("alpha", 1.0), a.get("beta", 1.0)) != (0, 1, 1.0, 1.0):
        raise g.refuse(f"head: Gemm node {gemm.name} must be x·Wᵀ + b (transB=1, alpha=beta=1), got {a}")
    fc_weight = g.shaped(gemm.input[1], (EMBEDDING, WIDTHS[-1] * FC_SIDE * FC_SIDE), "head (fc)")
    fc_bias = g.shaped(gemm.input[2], (EMBEDDING,), "head (fc)")
    features = _batch_norm(g, g.next_node(gemm.output[0], "BatchNormalization", "head"), EMBEDDING, "head")
    return layers, {"stem": stem, "stem_slope": stem_slope, "blocks": blocks, "bn2": bn2, "fc": (fc_weight, fc_bias),
                    "features": features}


def _set(param: torch.Tensor, value: np.ndarray) -> None:
    param.copy_(torch.from_numpy(np.array(value, dtype=np.float32)).reshape(param.shape))


def _load_conv(module: nn.Module, conv: Conv) -> None:
    assert isinstance(module, nn.Conv2d) and module.bias is not None
    _set(module.weight, conv.weight)
    _set(module.bias, conv.bias)


def _load_bn(module: nn.Module, bn: BatchNorm) -> None:
    assert isinstance(module, nn.BatchNorm2d | nn.BatchNorm1d)
    assert module.running_mean is not None and module.running_var is not None
    assert module.num_batches_tracked is not None
    for param, value in ((module.weight, bn.scale), (module.bias, bn.shift), (module.running_mean, bn.mean),
                         (module.running_var, bn.var)):
        _set(param, value)
    module.num_batches_tracked.zero_()
    module.eps = bn.eps


def _fill(net: IResNet, w: dict[str, Any]) -> None:
    with torch.no_grad():
        _load_conv(net.conv1, w["stem"])
        _set(net.prelu.weight, w["stem_slope"])
        modules = [m for stage in net.stages() for m in stage]
        for module, block in zip(modules, w["blocks"], strict=True):
            assert isinstance(module, IBasicBlock)
            _load_bn(module.bn1, block.bn1)
            _load_conv(module.conv1, block.conv1)
            _set(module.prelu.weight, block.prelu)
            _load_conv(module.conv2, block.conv2)
            if block.downsample is not None:
                assert module.downsample is not None
                _load_conv(module.downsample[0], block.downsample)
        _load_bn(net.bn2, w["bn2"])
        _set(net.fc.weight, w["fc"][0])
        _set(net.fc.bias, w["fc"][1])
        _load_bn(net.features, w["features"])


def load_arcface_onnx(path: Path) -> IResNet:
    """The folded IResNet (`bn_after_conv=False`, eval mode, CPU, float32) holding the ONNX file's weights."""
    import onnx

    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf raises several types for a file that is not ONNX
        raise ModelFileMissing(f"ArcFace model {path} cannot be read as ONNX ({type(exc).__name__}: "
                               f"{str(exc).splitlines()[0] if str(exc) else 'not a model'}); {ARCFACE_HOWTO}") from exc
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    g = _Graph(path, list(graph.node), initializers)
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise g.refuse(f"{len(inputs)} image inputs and {len(graph.output)} outputs, expected one of each")
    dims = [d.dim_value or None for d in inputs[0].type.tensor_type.shape.dim]
    if dims[1:] != [3, INPUT_SIDE, INPUT_SIDE]:
        raise g.refuse(f"input '{inputs[0].name}' has shape {dims}, expected (N, 3, {INPUT_SIDE}, {INPUT_SIDE})")
    layers, weights = _read_graph(g, inputs[0].name)
    if weights["features"].out != graph.output[0].name:
        raise g.refuse(f"the embedding BatchNormalization does not produce the graph output '{graph.output[0].name}'")
    unused = [f"{n.name or '?'} ({n.op_type})" for n in g.nodes if id(n) not in g.used]
    if unused:
        raise g.refuse(f"{len(unused)} nodes are not part of an IResNet: {', '.join(unused[:5])}"
                       f"{' …' if len(unused) > 5 else ''}")
    with torch.device("meta"):  # no random initialisation of 43 M weights that are overwritten next
        net = IResNet(layers, bn_after_conv=False)
    net = net.to_empty(device="cpu")
    _fill(net, weights)
    return net.eval().requires_grad_(False)
