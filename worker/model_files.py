"""Where the faces profile's model files are, and the error that says how to provide one that is missing.

Nothing can be downloaded on the build machines, so every file is looked up in a fixed list of places; when none
has it, `ModelFileMissing` names the file, every path tried and how to get it. MTCNN's and dlib's weights ship
with their pip packages (facenet-pytorch, face_recognition_models) and are always present.
"""

from __future__ import annotations

import hashlib
import importlib.util
from functools import lru_cache
from pathlib import Path

from sqd.errors import ModelFileMissing
from sqd.settings import Settings

ARCFACE_FILE = "w600k_r50.onnx"
INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"
ARCFACE_HOWTO = (
    "it is the recognition model of insightface's buffalo_l pack (w600k_r50.onnx, 166 MB; "
    "https://github.com/deepinsight/insightface/releases/download/v0.7/buffalo_l.zip). Copy it to the first path "
    "above, or set SQD_WORKER__ARCFACE_MODEL to its path, or use SQD_WORKER__FACE_EMBEDDER=dlib (weights ship "
    "with face_recognition_models)")
INCEPTION_HOWTO = (
    "it is the standard FID Inception-v3 (pytorch-fid's weights, 91 MB; "
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth). "
    "Copy it to the first path above or set SQD_WORKER__INCEPTION_WEIGHTS to its path")


def _first_existing(what: str, candidates: list[Path], howto: str) -> Path:
    for path in candidates:
        if path.is_file():
            return path
    looked = "; ".join(str(p) for p in candidates)
    raise ModelFileMissing(f"{what} not found (looked in: {looked}): {howto}")


def arcface_model_path(settings: Settings) -> Path:
    if settings.worker.arcface_model is not None:
        candidates = [settings.worker.arcface_model.expanduser()]
    else:
        root = settings.models_dir
        candidates = [root / "arcface" / ARCFACE_FILE, root / "buffalo_l" / ARCFACE_FILE,
                      root / "models" / "buffalo_l" / ARCFACE_FILE,
                      Path("~/.insightface/models/buffalo_l").expanduser() / ARCFACE_FILE]
    return _first_existing(f"ArcFace model {ARCFACE_FILE}", candidates, ARCFACE_HOWTO)


def inception_weights_path(settings: Settings) -> Path:
    configured = settings.worker.inception_weights
    candidates = [configured.expanduser()] if configured is not None else [settings.models_dir / INCEPTION_FILE]
    return _first_existing(f"FID Inception weights {INCEPTION_FILE}", candidates, INCEPTION_HOWTO)


def dlib_model_paths() -> tuple[Path, Path]:
    """(5-point shape predictor, 128-d ResNet) from the face_recognition_models package, found by path (its
    `__init__` needs pkg_resources, which we need not import)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileMissing("dlib face models not found: the face_recognition_models package is not installed "
                               "(pip install face_recognition_models==0.3.0 dlib-bin)")
    models = Path(next(iter(spec.submodule_search_locations))) / "models"
    files = (models / "shape_predictor_5_face_landmarks.dat", models / "dlib_face_recognition_resnet_model_v1.dat")
    for f in files:
        _first_existing(f"dlib model {f.name}", [f], "reinstall face_recognition_models==0.3.0")
    return files


@lru_cache(maxsize=32)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 of a model file, computed once per (path, size, mtime) in this process."""
    st = path.stat()
    return _sha256(str(path.resolve()), st.st_size, st.st_mtime_ns)
