"""Face embedders for the identity assignment of the faces profile: pluggable, chosen by
`settings.worker.face_embedder`.

* `arcface` (default, seed 003): insightface's ArcFace ONNX model (w600k_r50) on crops aligned with MTCNN's five
  landmarks (`face_align`), run one of two ways (`worker.arcface_runtime`, see `arcface_runtime`):
  - `torch` (the default on a CUDA worker): the IResNet built by `iresnet` with the weights read from the ONNX
    file (`arcface_onnx`), on the worker's device, float32, channels_last, batched (`inference`); the crops never
    leave the device. Equal to onnxruntime's output to cosine ≥ 0.9999 (tests/worker/test_arcface_torch.py).
  - `onnxruntime` (the default on the CPU): insightface's model zoo on onnxruntime's CPU provider (its CUDA
    provider when onnxruntime-gpu is installed); it also runs ArcFace files of other structures (mxnet exports).
  Both name the model `arcface-<sha256 prefix of the file>`, so an index built with one serves the other.
* `dlib`: dlib's 128-d face ResNet from face_recognition_models, on dlib's own 150×150 chips placed by its
  5-point shape predictor inside MTCNN's box (the model was trained on that alignment, not ArcFace's).

All take the `Faces` a `FaceDetector` returned and give one float32 embedding per image, a tensor (N, d) on the
embedder's device (the CPU for onnxruntime and dlib).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import torch

from sqd.errors import ModelFileMissing
from sqd.settings import Settings
from sqd.worker.face_align import align_faces
from sqd.worker.face_detect import ARCFACE_SIZE, Faces
from sqd.worker.inference import as_input, conv_math, to_device
from sqd.worker.model_files import arcface_model_path, dlib_model_paths, file_sha256

log = logging.getLogger(__name__)


class FaceEmbedder(Protocol):
    name: str
    dim: int
    model_id: str  # "<name>-<sha256 prefix of the weights>": identity centroids are only valid for this model

    def embed(self, faces: Faces) -> torch.Tensor: ...


ArcFaceRuntime = Literal["torch", "onnxruntime"]


def arcface_runtime(choice: str, device: torch.device) -> ArcFaceRuntime:
    """`worker.arcface_runtime` resolved for a device: "auto" is torch on CUDA (onnxruntime's CUDA provider is a
    separate package, often absent), onnxruntime on the CPU (the reference runtime of the file)."""
    if choice == "auto":
        return "torch" if device.type == "cuda" else "onnxruntime"
    if choice not in ("torch", "onnxruntime"):
        raise ValueError(f"worker.arcface_runtime must be auto, torch or onnxruntime, got {choice!r}")
    return "torch" if choice == "torch" else "onnxruntime"


def onnx_providers() -> list[str]:
    """CUDA first on a GPU host (onnxruntime-gpu), else the CPU provider."""
    import onnxruntime as ort

    if not torch.cuda.is_available():
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        log.warning("this host has a GPU but onnxruntime has no CUDA provider: ArcFace runs on the CPU "
                    "(SQD_WORKER__ARCFACE_RUNTIME=torch runs it on the GPU without onnxruntime)")
        return ["CPUExecutionProvider"]
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


class OnnxArcFaceEmbedder:
    """ArcFace through insightface's model zoo on onnxruntime (see the module docstring)."""

    name = "arcface"

    def __init__(self, model_file: Path, batch_size: int = 256):
        from insightface.model_zoo import get_model
        from insightface.model_zoo.arcface_onnx import ArcFaceONNX

        try:
            model = get_model(str(model_file), providers=onnx_providers())
        except Exception as exc:  # onnx / onnxruntime raise many types for a file that is not a valid model
            raise ModelFileMissing(f"ArcFace model {model_file} cannot be loaded ({type(exc).__name__}: "
                                   f"{str(exc).splitlines()[0] if str(exc) else ''}); replace it with insightface's "
                                   "w600k_r50.onnx") from exc
        if not isinstance(model, ArcFaceONNX) or tuple(model.input_size) != (ARCFACE_SIZE, ARCFACE_SIZE):
            raise ModelFileMissing(f"ArcFace model {model_file} is not a face recognition network with a "
                                   f"(N, 3, {ARCFACE_SIZE}, {ARCFACE_SIZE}) input (insightface routed it to "
                                   f"{type(model).__name__}); use insightface's w600k_r50.onnx")
        self.model = model
        self.dim = int(model.output_shape[-1])
        self.model_id = f"arcface-{file_sha256(model_file)[:12]}"
        self.batch_size = batch_size

    def embed(self, faces: Faces) -> torch.Tensor:
        crops = align_faces(faces.images, faces.landmarks)  # RGB, [0, 255]; the model normalises itself
        out = [self.model.forward(c.cpu().numpy()) for c in crops.split(self.batch_size)]
        return torch.from_numpy(np.concatenate(out).astype(np.float32) if out else np.zeros((0, self.dim), np.float32))


class TorchArcFaceEmbedder:
    """ArcFace as a PyTorch IResNet holding the ONNX file's weights, on `device` (see the module docstring)."""

    name = "arcface"

    def __init__(self, model_file: Path, device: torch.device, batch_size: int = 500, tf32: bool = True):
        from sqd.worker.arcface_onnx import load_arcface_onnx

        self.device, self.batch_size, self.tf32 = device, batch_size, tf32
        self.net = to_device(load_arcface_onnx(model_file), device)
        self.dim = int(self.net.features.num_features)
        self.model_id = f"arcface-{file_sha256(model_file)[:12]}"

    def embed(self, faces: Faces) -> torch.Tensor:
        return self.embed_crops(align_faces(faces.images.to(self.device), faces.landmarks))

    def embed_crops(self, crops: torch.Tensor) -> torch.Tensor:
        """Aligned 112×112 RGB crops in [0, 255] (N, 3, 112, 112) → (N, 512) embeddings on the device."""
        out = []
        with torch.inference_mode(), conv_math(self.device, self.tf32):
            for batch in crops.to(self.device).split(self.batch_size):
                out.append(self.net(as_input(batch.sub(127.5).div(127.5))).float())
        return torch.cat(out) if out else torch.zeros(0, self.dim, device=self.device)


class DlibEmbedder:
    name = "dlib"
    dim = 128

    def __init__(self) -> None:
        import dlib

        predictor, resnet = dlib_model_paths()
        self._dlib = dlib
        self.shape_predictor = dlib.shape_predictor(str(predictor))
        self.model = dlib.face_recognition_model_v1(str(resnet))
        self.model_id = f"dlib-{file_sha256(resnet)[:12]}"

    def embed(self, faces: Faces) -> torch.Tensor:
        dlib = self._dlib
        images = faces.images.permute(0, 2, 3, 1).to("cpu", torch.uint8).numpy()
        batch_img, batch_faces = [], []
        for img, box in zip(images, faces.boxes, strict=True):
            x1, y1, x2, y2 = (int(round(v)) for v in box)
            shape = self.shape_predictor(img, dlib.rectangle(x1, y1, x2, y2))
            shapes = dlib.full_object_detections()
            shapes.append(shape)
            batch_img.append(np.ascontiguousarray(img))
            batch_faces.append(shapes)
        if not batch_img:
            return torch.zeros(0, self.dim)
        vectors = self.model.compute_face_descriptor(batch_img, batch_faces)
        return torch.from_numpy(np.array([np.asarray(v[0]) for v in vectors], dtype=np.float32))


def build_embedder(settings: Settings, device: torch.device | str = "cpu") -> FaceEmbedder:
    """The embedder `settings.worker` asks for, for a worker on `device`."""
    w, device = settings.worker, torch.device(device)
    if w.face_embedder == "dlib":
        return DlibEmbedder()
    path = arcface_model_path(settings)
    if arcface_runtime(w.arcface_runtime, device) == "torch":
        return TorchArcFaceEmbedder(path, device, w.batch_for(device.type), w.tf32)
    return OnnxArcFaceEmbedder(path, w.batch_for(device.type))
