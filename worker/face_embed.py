"""Face embedders for the identity assignment of the faces profile: pluggable, chosen by
`settings.worker.face_embedder`.

* `arcface` (default, seed 003): an ArcFace ONNX model (insightface's w600k_r50 or any network with input
  (N, 3, 112, 112) RGB) loaded through insightface's model zoo on onnxruntime — CUDA provider on GPU hosts, CPU
  otherwise — on crops aligned with MTCNN's five landmarks (`face_align`).
* `dlib`: dlib's 128-d face ResNet from face_recognition_models, on dlib's own 150×150 chips placed by its
  5-point shape predictor inside MTCNN's box (the model was trained on that alignment, not ArcFace's).

Both take the `Faces` a `FaceDetector` returned and give one float32 embedding per image.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from sqd.errors import ModelFileMissing
from sqd.settings import Settings
from sqd.worker.face_align import align_faces
from sqd.worker.face_detect import ARCFACE_SIZE, Faces
from sqd.worker.model_files import arcface_model_path, dlib_model_paths, file_sha256

log = logging.getLogger(__name__)


class FaceEmbedder(Protocol):
    name: str
    dim: int
    model_id: str  # "<name>-<sha256 prefix of the weights>": identity centroids are only valid for this model

    def embed(self, faces: Faces) -> np.ndarray: ...


def onnx_providers() -> list[str]:
    """CUDA first on a GPU host (onnxruntime-gpu), else the CPU provider."""
    import onnxruntime as ort

    if not torch.cuda.is_available():
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        log.warning("this host has a GPU but onnxruntime has no CUDA provider: ArcFace runs on the CPU "
                    "(pip install onnxruntime-gpu in place of onnxruntime)")
        return ["CPUExecutionProvider"]
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


class ArcFaceEmbedder:
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

    def embed(self, faces: Faces) -> np.ndarray:
        crops = align_faces(faces.images, faces.landmarks)  # RGB, [0, 255]; the model normalises itself
        out = [self.model.forward(c.cpu().numpy()) for c in crops.split(self.batch_size)]
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, self.dim), np.float32)


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

    def embed(self, faces: Faces) -> np.ndarray:
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
            return np.zeros((0, self.dim), np.float32)
        vectors = self.model.compute_face_descriptor(batch_img, batch_faces)
        return np.array([np.asarray(v[0]) for v in vectors], dtype=np.float32)


def build_embedder(settings: Settings) -> FaceEmbedder:
    if settings.worker.face_embedder == "dlib":
        return DlibEmbedder()
    return ArcFaceEmbedder(arcface_model_path(settings), settings.worker.batch_size)
