"""ArcFace as a PyTorch IResNet built from an ONNX file's weights, against onnxruntime on the same file.

The real w600k_r50.onnx cannot be downloaded here, so the file under test is made the way insightface made it:
arcface_torch's IResNet-50 (training structure, random weights and BatchNorm statistics) exported by the
TorchScript exporter in eval mode at opset 11 — the BatchNorms after convolutions folded, numeric initializer names,
a free batch dimension (`arcface_export`). The loader must find the weights by the graph's structure and give
onnxruntime's embeddings (cosine ≥ 0.9999 each; here they agree to float rounding)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from skimage import data

from sqd.errors import ModelFileMissing
from sqd.settings import Settings, WorkerSettings
from sqd.worker.arcface_export import export_onnx, random_arcface
from sqd.worker.arcface_onnx import load_arcface_onnx
from sqd.worker.face_align import align_faces
from sqd.worker.face_detect import FaceDetector, to_uint8_range
from sqd.worker.face_embed import TorchArcFaceEmbedder, arcface_runtime, build_embedder
from sqd.worker.iresnet import IRESNET50, IResNet
from sqd.worker.model_files import ARCFACE_FILE

MIN_COSINE = 0.9999


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def onnxruntime_embed(path: Path, x: torch.Tensor) -> np.ndarray:
    """The reference: onnxruntime's CPU provider on the file itself (normalised input, one batch)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models dir holding a random-weights IResNet-50 under the real name (the export takes ~10-30 s)."""
    models = tmp_path_factory.mktemp("models")
    export_onnx(random_arcface(IRESNET50, seed=1), models / "arcface" / ARCFACE_FILE)
    return models


@pytest.fixture(scope="module")
def r50(models_dir: Path) -> Path:
    return models_dir / "arcface" / ARCFACE_FILE


@pytest.fixture(scope="module")
def inputs() -> torch.Tensor:
    """8 normalised 112×112 RGB inputs: 4 LFW faces (upsampled grey) and 4 of uniform noise."""
    faces = torch.from_numpy(data.lfw_subset()[:4]).float().unsqueeze(1).expand(-1, 3, -1, -1)
    faces = torch.nn.functional.interpolate(faces, size=(112, 112), mode="bilinear").mul(2).sub(1)
    noise = torch.rand(4, 3, 112, 112, generator=torch.Generator().manual_seed(0)).mul(2).sub(1)
    return torch.cat([faces, noise])


def test_the_export_has_the_real_files_graph(r50: Path) -> None:
    """What the loader has to cope with: folded convolutions under numeric names, PReLU slopes (C, 1, 1), the
    unfoldable BatchNorms under module names, a free batch dimension."""
    graph = onnx.load(str(r50)).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("Conv") == 1 + sum(IRESNET50) * 2 + 4 and ops.count("PRelu") == 1 + sum(IRESNET50)
    assert ops.count("BatchNormalization") == sum(IRESNET50) + 2 and "Identity" not in ops
    names = {t.name: tuple(t.dims) for t in graph.initializer}
    assert names["fc.weight"] == (512, 512 * 7 * 7) and names["layer3.13.bn1.running_var"] == (256,)
    conv_weights = [n.input[1] for n in graph.node if n.op_type == "Conv"]
    assert all(name.removeprefix("onnx::Conv_").isdigit() for name in conv_weights)
    assert names[next(n.input[1] for n in graph.node if n.op_type == "PRelu")] == (64, 1, 1)
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "None"


def test_iresnet50_from_onnx_equals_onnxruntime(r50: Path, inputs: torch.Tensor) -> None:
    net = load_arcface_onnx(r50)
    assert isinstance(net, IResNet) and net.layers == IRESNET50 and not net.training
    with torch.no_grad():
        got = net(inputs).numpy()
    expected = onnxruntime_embed(r50, inputs)
    assert got.shape == expected.shape == (8, 512)
    assert cosines(got, expected).min() >= MIN_COSINE
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4 * np.abs(expected).max())
    # the check has teeth: different inputs give clearly different embeddings, and their differences agree too
    unit = expected / np.linalg.norm(expected, axis=1, keepdims=True)
    assert (unit @ unit.T)[~np.eye(8, dtype=bool)].max() < 0.95
    assert cosines(got - got.mean(0), expected - expected.mean(0)).min() >= MIN_COSINE


@pytest.mark.parametrize("form", ["unfolded", "merged"])
def test_unfolded_exports_and_merged_initializers_load(tmp_path: Path, inputs: torch.Tensor, form: str) -> None:
    """An export without constant folding (Conv → BatchNormalization, slopes behind Unsqueeze) is folded by the
    loader; an untrained net's equal tensors, which the exporter merges behind Identity nodes, are followed."""
    if form == "unfolded":
        path = export_onnx(random_arcface((1, 2, 1, 1), seed=2), tmp_path / "a.onnx", fold_batchnorm=False)
    else:
        torch.manual_seed(3)
        path = export_onnx(IResNet((1, 1, 2, 1), bn_after_conv=True), tmp_path / "a.onnx")
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert ({"Unsqueeze"} if form == "unfolded" else {"Identity"}) <= ops
    net = load_arcface_onnx(path)
    with torch.no_grad():
        got = net(inputs).numpy()
    assert cosines(got, onnxruntime_embed(path, inputs)).min() >= MIN_COSINE


def test_not_onnx_is_refused_naming_the_file_and_the_fix(tmp_path: Path) -> None:
    bad = tmp_path / ARCFACE_FILE
    bad.write_bytes(b"\x00not an onnx model" * 10)
    with pytest.raises(ModelFileMissing) as err:
        load_arcface_onnx(bad)
    msg = str(err.value)
    assert msg.startswith(f"ArcFace model {bad} cannot be read as ONNX (")
    assert "buffalo_l" in msg and "SQD_WORKER__ARCFACE_MODEL" in msg


def test_another_network_is_refused_with_the_onnxruntime_way_out(tmp_path: Path) -> None:
    nn = torch.nn
    other = nn.Sequential(nn.Conv2d(3, 8, 4, stride=4), nn.Flatten(), nn.Linear(8 * 28 * 28, 512))
    path = tmp_path / "other.onnx"
    torch.onnx.export(other.eval(), (torch.zeros(1, 3, 112, 112),), str(path), dynamo=False, input_names=["data"])
    with pytest.raises(ModelFileMissing) as err:
        load_arcface_onnx(path)
    msg = str(err.value)
    assert msg.startswith(f"ArcFace model {path} does not have the IResNet structure: stem: Conv node")
    assert "SQD_WORKER__ARCFACE_RUNTIME=onnxruntime" in msg and "w600k_r50.onnx" in msg


def _replace_initializer(path: Path, name: str, value: np.ndarray) -> None:
    model = onnx.load(str(path))
    for t in model.graph.initializer:
        if t.name == name:
            t.CopyFrom(numpy_helper.from_array(value.astype(np.float32), name))
    onnx.save(model, str(path))


def test_wrong_shapes_name_the_initializer(tmp_path: Path) -> None:
    path = export_onnx(random_arcface((1, 1, 1, 1)), tmp_path / "small.onnx")
    _replace_initializer(path, "fc.weight", np.zeros((512, 100)))
    with pytest.raises(ModelFileMissing, match=r"head \(fc\): initializer 'fc.weight' has shape \(512, 100\), "
                                               r"expected \(512, 25088\)"):
        load_arcface_onnx(path)
    path = export_onnx(random_arcface((1, 1, 1, 1)), tmp_path / "small.onnx")
    stem = next(n for n in onnx.load(str(path)).graph.node if n.op_type == "Conv").input[1]
    _replace_initializer(path, stem, np.zeros((64, 1, 3, 3)))
    with pytest.raises(ModelFileMissing, match=rf"stem: initializer '{stem}' \(Conv weight\) has shape "
                                               r"\(64, 1, 3, 3\), expected \(64, 3, 3, 3\)"):
        load_arcface_onnx(path)


def test_runtime_choice_torch_on_cuda_onnxruntime_on_cpu() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert arcface_runtime("auto", cpu) == "onnxruntime"
    assert arcface_runtime("auto", cuda) == "torch"
    assert arcface_runtime("torch", cpu) == "torch" and arcface_runtime("onnxruntime", cuda) == "onnxruntime"
    with pytest.raises(ValueError, match="worker.arcface_runtime must be auto, torch or onnxruntime, got 'tf'"):
        arcface_runtime("tf", cpu)


def arcface_settings(home: Path, models: Path, runtime: str) -> Settings:
    return Settings(home=home, worker=WorkerSettings(models_dir=models, arcface_runtime=runtime))  # type: ignore[arg-type]


def test_both_runtimes_embed_detected_faces_alike(tmp_path: Path, models_dir: Path) -> None:
    """The profile's embedder on the CPU: onnxruntime by default, the torch IResNet when forced; one model id (an
    index built with either serves both) and the same embeddings of MTCNN-aligned real faces."""
    pytest.importorskip("insightface")
    from sqd.worker.face_embed import OnnxArcFaceEmbedder

    faces = FaceDetector("cpu").detect(to_uint8_range(
        torch.from_numpy(data.lfw_subset()[:6]).float().unsqueeze(1).mul(2).sub(1)))
    by_onnx = build_embedder(arcface_settings(tmp_path, models_dir, "auto"), "cpu")
    by_torch = build_embedder(arcface_settings(tmp_path, models_dir, "torch"), "cpu")
    assert isinstance(by_onnx, OnnxArcFaceEmbedder) and isinstance(by_torch, TorchArcFaceEmbedder)
    assert by_onnx.model_id == by_torch.model_id and by_torch.dim == 512
    expected, got = by_onnx.embed(faces), by_torch.embed(faces)
    assert got.device.type == "cpu" and got.dtype == torch.float32
    assert cosines(got.numpy(), expected.numpy()).min() >= MIN_COSINE


def test_torch_runtime_missing_file_names_every_place(tmp_path: Path) -> None:
    settings = arcface_settings(tmp_path, tmp_path / "models", "torch")
    with pytest.raises(ModelFileMissing) as err:
        build_embedder(settings, "cpu")
    msg = str(err.value)
    assert str(tmp_path / "models" / "arcface" / ARCFACE_FILE) in msg and "SQD_WORKER__ARCFACE_MODEL" in msg


@pytest.mark.cuda
@pytest.mark.parametrize("tf32", [True, False])
def test_torch_arcface_on_cuda_equals_onnxruntime_on_cpu(r50: Path, inputs: torch.Tensor, tf32: bool) -> None:
    """What a CUDA worker computes (float32, channels_last, cuDNN autotuned; TF32 convolutions by default) against
    the file on onnxruntime's CPU provider, on real faces aligned by MTCNN and on noise."""
    settings = Settings(worker=WorkerSettings(arcface_model=r50, tf32=tf32))
    embedder = build_embedder(settings, "cuda")
    assert isinstance(embedder, TorchArcFaceEmbedder) and embedder.device.type == "cuda"
    faces = FaceDetector("cuda").detect(to_uint8_range(
        torch.from_numpy(data.lfw_subset()[:6]).float().unsqueeze(1).mul(2).sub(1).cuda()))
    got = embedder.embed(faces)
    assert got.device.type == "cuda"
    crops = align_faces(faces.images.cpu(), faces.landmarks).sub(127.5).div(127.5)
    expected = onnxruntime_embed(r50, torch.cat([crops, inputs]))
    noise = embedder.embed_crops(inputs.add(1).mul(127.5))
    assert cosines(torch.cat([got, noise]).cpu().numpy(), expected).min() >= MIN_COSINE
