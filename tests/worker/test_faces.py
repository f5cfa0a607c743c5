"""The faces pipeline's parts on real faces that packages ship (scikit-image's lfw_subset and astronaut): the real
facenet-pytorch MTCNN, alignment checked against scikit-image, the real dlib embedder assigning identities, and
the ArcFace path through insightface + onnxruntime with a small ArcFace-shaped network exported to ONNX here."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage import data
from skimage import transform as sktf
from torch.nn import functional as F

from sqd.errors import ModelFileMissing
from sqd.settings import Settings
from sqd.worker.face_align import align_faces, similarity_transforms, warp_affine
from sqd.worker.face_detect import ARCFACE_TEMPLATE, FaceDetector, Faces, fallback_landmarks, to_uint8_range
from sqd.worker.face_embed import DlibEmbedder, OnnxArcFaceEmbedder, build_embedder
from sqd.worker.faces import IdentityAssigner
from sqd.worker.model_files import ARCFACE_FILE

N_FACES = 10  # lfw_subset: 100 faces then 100 non-faces, 25×25 grey; CPU time grows with it


def lfw(first: int, count: int) -> torch.Tensor:
    """lfw_subset images as (count, 1, 25, 25) in [−1, 1]."""
    return torch.from_numpy(data.lfw_subset()[first:first + count]).float().unsqueeze(1).mul(2).sub(1)


def astronaut_face(side: int = 160) -> torch.Tensor:
    """The astronaut photo's face region (Eileen Collins), (1, 3, side, side) in [−1, 1]."""
    img = torch.from_numpy(data.astronaut()[20:180, 150:310].copy()).permute(2, 0, 1).float()
    img = img.div(127.5).sub(1).unsqueeze(0)
    return img if side == 160 else F.interpolate(img, size=(side, side), mode="bilinear", antialias=True)


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector("cpu")


@pytest.fixture(scope="module")
def lfw_faces(detector: FaceDetector) -> Faces:
    return detector.detect(to_uint8_range(lfw(0, N_FACES)))


def test_alignment_matches_scikit_image() -> None:
    landmarks = np.array([[205.0, 101.7], [246.8, 103.7], [224.7, 129.0], [201.7, 139.2], [245.3, 141.9]])
    m = similarity_transforms(landmarks[None], ARCFACE_TEMPLATE)[0]
    ref = sktf.SimilarityTransform.from_estimate(landmarks, ARCFACE_TEMPLATE)
    np.testing.assert_allclose(m, ref.params[:2], atol=1e-9)
    img = data.astronaut().astype(np.float64)
    expected = sktf.warp(img, ref.inverse, output_shape=(112, 112), order=1, mode="constant", cval=0,
                         preserve_range=True)
    got = warp_affine(torch.from_numpy(img).permute(2, 0, 1)[None], m[None], 112)[0].permute(1, 2, 0).numpy()
    assert np.abs(got - expected).max() < 0.01  # float32 bilinear vs float64: same pixels to 1/100 of a level


def test_alignment_of_the_template_itself_is_the_identity() -> None:
    x = torch.rand(2, 3, 112, 112)
    crops = align_faces(x, np.stack([ARCFACE_TEMPLATE] * 2))
    torch.testing.assert_close(crops, x, atol=1e-4, rtol=0)


def test_fallback_landmarks_resize_the_whole_frame() -> None:
    x = torch.rand(1, 3, 64, 64)
    crop = align_faces(x, fallback_landmarks(64, 64)[None])
    expected = torch.nn.functional.interpolate(x, size=(112, 112), mode="bilinear", align_corners=False)
    # inside the frame (the outermost output pixels sample a fraction of a pixel beyond it, which is black)
    torch.testing.assert_close(crop[..., 1:-1, 1:-1], expected[..., 1:-1, 1:-1], atol=1e-4, rtol=0)


def test_similarity_transforms_reject_bad_shapes() -> None:
    with pytest.raises(ValueError, match=r"src must be \(N, K, 2\)"):
        similarity_transforms(np.zeros((5, 2)), ARCFACE_TEMPLATE)


def test_to_uint8_range_checks_shape_and_upsamples_small_images() -> None:
    with pytest.raises(ValueError, match=r"faces: images must be \(N, 1\|3, H, W\)"):
        to_uint8_range(torch.zeros(2, 4, 8, 8))
    x = to_uint8_range(lfw(0, 2))
    assert x.shape == (2, 3, 64, 64) and x.min() >= 0 and x.max() <= 255 and torch.equal(x, x.round())


def test_mtcnn_scores_real_faces_high_and_non_faces_zero(detector: FaceDetector, lfw_faces: Faces) -> None:
    assert lfw_faces.found.all() and lfw_faces.prob.min() > 0.9
    inside = ((lfw_faces.landmarks >= lfw_faces.boxes[:, None, :2] - 2)
              & (lfw_faces.landmarks <= lfw_faces.boxes[:, None, 2:] + 2))
    assert inside.all()  # the five points lie in the face's box
    others = detector.detect(to_uint8_range(lfw(100, N_FACES)))  # lfw_subset's non-face crops
    assert others.found.mean() <= 0.1
    for i in np.flatnonzero(~others.found):
        assert others.prob[i] == 0.0
        np.testing.assert_allclose(others.landmarks[i], fallback_landmarks(64, 64))
        np.testing.assert_allclose(others.boxes[i], [0, 0, 63, 63])


def test_mtcnn_on_the_astronaut(detector: FaceDetector) -> None:
    faces = detector.detect(to_uint8_range(astronaut_face()))
    assert faces.found[0] and faces.prob[0] > 0.99
    left_eye, right_eye, nose = faces.landmarks[0][:3]
    assert left_eye[0] < nose[0] < right_eye[0] and nose[1] > left_eye[1]


@pytest.fixture(scope="module")
def dlib_embedder() -> DlibEmbedder:
    return DlibEmbedder()


@pytest.fixture(scope="module")
def dlib_views(detector: FaceDetector, dlib_embedder: DlibEmbedder) -> tuple[np.ndarray, np.ndarray]:
    """Identities = the lfw faces plus the astronaut: embeddings of each as is, and mirrored and darker."""
    identities = torch.cat([to_uint8_range(lfw(0, N_FACES)), to_uint8_range(astronaut_face(64))])
    return (dlib_embedder.embed(detector.detect(identities)),
            dlib_embedder.embed(detector.detect(identities.flip(-1).mul(0.85).round())))


@pytest.mark.parametrize("normalize", [False, True])
def test_dlib_embeddings_assign_each_face_to_its_identity(dlib_views: tuple[np.ndarray, np.ndarray],
                                                          dlib_embedder: DlibEmbedder, normalize: bool) -> None:
    centroids, queries = dlib_views
    assigner = IdentityAssigner(centroids, normalize, torch.device("cpu"))
    got = assigner.assign(queries).numpy()
    assert (got == np.arange(len(centroids))).mean() >= 0.9
    assert dlib_embedder.model_id.startswith("dlib-") and centroids.shape == (N_FACES + 1, 128)


def test_identity_assigner_is_nearest_centroid_and_checks_dimensions() -> None:
    rng = np.random.default_rng(0)
    centroids, queries = rng.normal(size=(50, 16)), rng.normal(size=(30, 16))
    expected = ((queries[:, None] - centroids[None]) ** 2).sum(-1).argmin(1)
    assigner = IdentityAssigner(centroids, False, torch.device("cpu"))
    np.testing.assert_array_equal(assigner.assign(queries).numpy(), expected)
    with pytest.raises(ValueError, match=r"embeddings must be \(N, 16\).*another embedder"):
        assigner.assign(np.zeros((2, 128)))
    with pytest.raises(ValueError, match="non-empty"):
        IdentityAssigner(np.zeros((0, 16)), False, torch.device("cpu"))


class TinyArcFace(torch.nn.Module):
    """ArcFace-shaped: (N, 3, 112, 112) normalised RGB → (N, 512)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 4, stride=4)
        self.fc = torch.nn.Linear(8 * 4 * 4, 512)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.nn.functional.adaptive_avg_pool2d(torch.relu(self.conv(x)), 4).flatten(1))


def export_onnx(net: torch.nn.Module, path: Path, side: int = 112) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated, but needs no onnxscript
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(net.eval(), (torch.zeros(1, 3, side, side),), str(path), input_names=["data"],
                          output_names=["embedding"], dynamic_axes={"data": {0: "n"}, "embedding": {0: "n"}},
                          dynamo=False)
    return path


def test_arcface_onnx_embeds_the_aligned_crops(tmp_path: Path, lfw_faces: Faces) -> None:
    torch.manual_seed(0)
    net = TinyArcFace()
    settings = Settings(home=tmp_path)  # default lookup: <models_dir>/arcface/w600k_r50.onnx
    export_onnx(net, settings.models_dir / "arcface" / ARCFACE_FILE)
    embedder = build_embedder(settings)
    assert isinstance(embedder, OnnxArcFaceEmbedder) and embedder.dim == 512
    assert embedder.model_id.startswith("arcface-")
    got = embedder.embed(lfw_faces)
    with torch.no_grad():
        expected = net(align_faces(lfw_faces.images, lfw_faces.landmarks).sub(127.5).div(127.5)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_arcface_file_missing_names_every_place_and_the_way_out(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    with pytest.raises(ModelFileMissing) as err:
        build_embedder(settings)
    msg = str(err.value)
    assert str(settings.models_dir / "arcface" / ARCFACE_FILE) in msg and "buffalo_l" in msg
    assert "SQD_WORKER__ARCFACE_MODEL" in msg and "SQD_WORKER__FACE_EMBEDDER=dlib" in msg


def test_arcface_file_that_is_not_a_model(tmp_path: Path) -> None:
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x00not an onnx model" * 10)
    with pytest.raises(ModelFileMissing, match=r"broken.onnx cannot be loaded"):
        OnnxArcFaceEmbedder(bad)
    wrong = export_onnx(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten()), tmp_path / "w.onnx", 64)
    with pytest.raises(ModelFileMissing, match=r"not a face recognition network with a \(N, 3, 112, 112\) input"):
        OnnxArcFaceEmbedder(wrong)
