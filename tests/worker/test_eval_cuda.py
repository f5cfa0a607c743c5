"""The evaluation profiles on a CUDA device, end to end, against the same evaluation on the CPU (skipped without a
GPU; run on the device machine with `pytest -m cuda tests/worker`).

Faces: a tiny CelebA from real LFW faces is indexed on the GPU (MTCNN batched, ArcFace as the PyTorch IResNet read
from a random-weights w600k_r50.onnx, FID Inception with random weights under the real name), then the faces
profile scores those faces on the GPU and on the CPU; the identities must be the same and the numbers equal to
float32/TF32 rounding. Digits: the profile on CUDA against the CPU on the same stacked digits."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from test_digits_profile import real_digits
from test_face_index import IMAGES, write_celeba

from sqd.images import load_square
from sqd.settings import Settings, WorkerSettings
from sqd.worker import face_index
from sqd.worker.arcface_export import export_onnx, random_arcface
from sqd.worker.digits import DigitsProfile
from sqd.worker.face_embed import TorchArcFaceEmbedder
from sqd.worker.faces import FacesProfile
from sqd.worker.inception import FIDInception, save_weights_file
from sqd.worker.iresnet import IRESNET50
from sqd.worker.model_files import ARCFACE_FILE, INCEPTION_FILE

pytestmark = pytest.mark.cuda


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    models = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    save_weights_file(FIDInception(), models / INCEPTION_FILE)
    export_onnx(random_arcface(IRESNET50, seed=1), models / "arcface" / ARCFACE_FILE)
    return models


def faces_settings(home: Path, models: Path) -> Settings:
    # batches of 4 on both devices, so the 10 images take several MTCNN / ArcFace / Inception batches; ArcFace in
    # PyTorch on both (onnxruntime is compared with it in test_arcface_torch)
    return Settings(home=home, worker=WorkerSettings(
        models_dir=models, batch_size=4, gpu_batch_size=4, samples=IMAGES, quality_samples=IMAGES,
        fid_samples=IMAGES, arcface_runtime="torch"))


def test_faces_profile_on_cuda_equals_the_cpu(tmp_path: Path, models: Path) -> None:
    celeba = tmp_path / "celeba"
    celeba.mkdir()
    write_celeba(celeba)
    settings = faces_settings(tmp_path / "home", models)
    face_index.build_index(settings, celeba, torch.device("cuda"))
    names = sorted(os.listdir(celeba / face_index.IMAGES_DIR))
    real = np.stack([load_square(celeba / face_index.IMAGES_DIR / n, face_index.CELEBA_CROP, 64) for n in names])
    images = torch.from_numpy(real).permute(0, 3, 1, 2).float().div(127.5).sub(1)

    on_gpu = FacesProfile(settings, "cuda")
    assert isinstance(on_gpu.embedder, TorchArcFaceEmbedder) and on_gpu.embedder.device.type == "cuda"
    gpu_images = images.cuda()
    timings: dict[str, float] = {}
    got = on_gpu.evaluate(lambda n: gpu_images[:n], timings)
    expected = FacesProfile(settings, "cpu").evaluate(lambda n: images[:n], {})

    assert {"mtcnn", "embed", "assign", "fid_features", "fid"} <= set(timings)
    for key in ("eval/modes_covered", "eval/diversity_plugin", "eval/no_face_fraction"):
        assert got[key] == expected[key], key
    assert got["eval/quality"] == pytest.approx(expected["eval/quality"], abs=1e-4)
    assert got["eval/diversity"] == pytest.approx(expected["eval/diversity"], abs=1e-9)
    assert np.isfinite(got["eval/fid"]) and got["eval/fid"] == pytest.approx(expected["eval/fid"], rel=1e-2)


def test_digits_profile_on_cuda_equals_the_cpu(digits_settings: Settings) -> None:
    sample = real_digits()
    got = DigitsProfile(digits_settings, "cuda").evaluate(lambda n: sample(n).cuda(), {})
    expected = DigitsProfile(digits_settings, "cpu").evaluate(sample, {})
    assert got["eval/modes_covered"] == pytest.approx(expected["eval/modes_covered"], abs=2)
    assert got["eval/quality"] == pytest.approx(expected["eval/quality"], abs=1e-3)
    assert got["eval/fid"] == pytest.approx(expected["eval/fid"], rel=1e-2)
