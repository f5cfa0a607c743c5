"""`sqd dataset index faces` on a tiny CelebA layout written from real faces (scikit-image's LFW subset), with the
real MTCNN, dlib's real face ResNet and the FID Inception architecture loaded from a weights file under its real
name (random weights: the real file cannot be downloaded here). Also the faces profile end to end on that index."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from PIL import Image
from typer.testing import CliRunner

from sqd.errors import ModelFileMissing
from sqd.images import load_square
from sqd.settings import Settings, WorkerSettings, get_settings
from sqd.worker import cli as worker_cli
from sqd.worker import face_index
from sqd.worker.face_embed import DlibEmbedder
from sqd.worker.inception import FIDInception, save_weights_file
from sqd.worker.model_files import INCEPTION_FILE, file_sha256

IDENTITIES = 5  # CelebA identity numbers 101…105, two images each: the LFW face and its mirror image
IMAGES = 2 * IDENTITIES  # = the smallest sample counts the settings allow
BATCH = 5


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """On the shared 2-core CI box, two OpenMP threads contending with other jobs run Inception 4× slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_celeba(root: Path, extra_listed: Sequence[str] = ()) -> list[int]:
    """img_align_celeba/*.jpg (178×218, like CelebA's aligned crops: the face upright in the middle) and
    identity_CelebA.txt; returns the identity number of each image in file order."""
    from skimage import data, transform

    faces = data.lfw_subset()[:IDENTITIES]  # 25×25 grey crops of different people
    (root / face_index.IMAGES_DIR).mkdir(parents=True)
    lines, labels = [], []
    for k in range(IMAGES):
        face = faces[k // 2][:, ::-1] if k % 2 else faces[k // 2]
        big = transform.resize(face, (110, 110), order=3)
        canvas = np.full((218, 178), float(face.mean()))
        canvas[54:164, 34:144] = big
        rgb = (np.repeat(canvas[..., None], 3, axis=2).clip(0, 1) * 255).astype(np.uint8)
        name = f"{k + 1:06d}.jpg"
        Image.fromarray(rgb).save(root / face_index.IMAGES_DIR / name, quality=95)
        lines.append(f"{name} {101 + k // 2}")
        labels.append(101 + k // 2)
    lines += [f"{name} 999" for name in extra_listed]
    (root / face_index.IDENTITY_FILE).write_text("\n".join(lines) + "\n")
    return labels


@pytest.fixture(scope="module")
def celeba(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("celeba")
    write_celeba(root)
    return root


@pytest.fixture(scope="module")
def models_with_inception(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models dir holding an Inception weights file with the real name, keys and shapes (random values)."""
    models = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    save_weights_file(FIDInception(), models / INCEPTION_FILE)
    return models


def index_settings(home: Path, models: Path, embedder: str = "dlib") -> Settings:
    return Settings(home=home, worker=WorkerSettings(models_dir=models, face_embedder=embedder, batch_size=BATCH,
                                                     samples=IMAGES, quality_samples=IMAGES, fid_samples=IMAGES))


@pytest.fixture(scope="module")
def built(celeba: Path, models_with_inception: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The index built through the command's own code (typer), as a user runs it."""
    home = tmp_path_factory.mktemp("home")
    env = {"SQD_HOME": str(home), "SQD_WORKER__MODELS_DIR": str(models_with_inception),
           "SQD_WORKER__BATCH_SIZE": str(BATCH)}
    app = typer.Typer()
    worker_cli.register(app)
    get_settings.cache_clear()
    try:
        done = CliRunner().invoke(app, ["dataset", "index", "faces", "--celeba", str(celeba), "--embedder", "dlib",
                                        "--device", "cpu", "--save-every", str(BATCH)], env=env)
    finally:
        get_settings.cache_clear()
    assert done.exit_code == 0, done.output
    out = Path(done.stdout.strip().splitlines()[-1].removeprefix("faces index written to "))
    assert out.parent == models_with_inception / "faces-index"
    yield out


def test_index_has_one_centroid_per_identity_and_a_manifest(built: Path, models_with_inception: Path,
                                                            tmp_path: Path) -> None:
    settings = index_settings(tmp_path, models_with_inception)
    embedder = DlibEmbedder()
    assert built == face_index.index_dir(settings, embedder.model_id, 64)
    idx = face_index.load_index(settings, embedder, 64)

    assert idx.identity_ids.tolist() == list(range(101, 101 + IDENTITIES))
    assert idx.counts.tolist() == [2] * IDENTITIES
    assert idx.centroids(False).shape == idx.centroids(True).shape == (IDENTITIES, 128)
    assert np.allclose(np.linalg.norm(idx.centroids(True), axis=1), 1.0)
    assert idx.fid_n == IMAGES and idx.fid_mu.shape == (2048,) and idx.fid_sigma.shape == (2048, 2048)
    assert np.allclose(idx.fid_sigma, idx.fid_sigma.T) and np.all(np.isfinite(idx.fid_sigma))
    assert not (built / face_index.PARTIAL).exists()

    m = json.loads((built / face_index.MANIFEST).read_text())
    assert m["format"] == "sqd-faces-index/1" and m["images"] == IMAGES and m["identities"] == IDENTITIES
    assert m["fid"]["covariance"] == "1/(N-1)" and m["fid"]["n"] == IMAGES
    assert m["embedder"] == {"name": "dlib", "model_id": embedder.model_id, "dim": 128}
    assert m["preprocessing"]["crop"] == 140 and m["preprocessing"]["resolution"] == 64
    assert m["no_face"] == 0  # MTCNN finds every one of these faces
    inception = models_with_inception / INCEPTION_FILE
    assert m["model_files_sha256"][INCEPTION_FILE] == file_sha256(inception)
    assert set(m["model_files_sha256"]) == {INCEPTION_FILE, "shape_predictor_5_face_landmarks.dat",
                                            "dlib_face_recognition_resnet_model_v1.dat"}


@pytest.mark.slow  # ~15 s alone, a minute on a loaded 2-core box: two 2048² eigen-solves for the FID on 1 thread
def test_each_real_face_is_nearest_to_its_own_identity(built: Path, models_with_inception: Path,
                                                       celeba: Path, tmp_path: Path) -> None:
    """The faces profile end to end on the built index: a "generator" that returns the indexed faces themselves
    gets every identity, high face probability, and a finite FID."""
    from sqd.worker.faces import FacesProfile

    settings = index_settings(tmp_path, models_with_inception)
    names = sorted(os.listdir(celeba / face_index.IMAGES_DIR))
    real = np.stack([load_square(celeba / face_index.IMAGES_DIR / n, 140, 64) for n in names])
    images = torch.from_numpy(real).permute(0, 3, 1, 2).float().div(127.5).sub(1)
    profile = FacesProfile(settings, "cpu")
    timings: dict[str, float] = {}
    metrics = profile.evaluate(lambda n: images[:n], timings)

    assert metrics["eval/modes_covered"] == IDENTITIES
    # ln m exactly: every identity got 2 of the 10 faces (test_faces checks each face goes to its own identity)
    assert metrics["eval/diversity_plugin"] == pytest.approx(np.log(IDENTITIES))
    assert metrics["eval/quality"] > 0.9 and metrics["eval/no_face_fraction"] == 0.0
    assert np.isfinite(metrics["eval/fid"]) and metrics["eval/fid"] >= 0
    assert {"mtcnn", "embed", "fid_features"} <= set(timings)


def test_interrupted_build_resumes_from_the_saved_sums(built: Path, celeba: Path, models_with_inception: Path,
                                                       tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / INCEPTION_FILE).symlink_to(models_with_inception / INCEPTION_FILE)
    settings = index_settings(tmp_path, models)

    def interrupt_after_one_batch(done: int, total: int) -> None:
        if done >= BATCH:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        face_index.build_index(settings, celeba, torch.device("cpu"), save_every=BATCH,
                               on_progress=interrupt_after_one_batch)
    out = face_index.index_dir(settings, DlibEmbedder().model_id, 64)
    assert (out / face_index.PARTIAL).is_file() and not (out / face_index.MANIFEST).exists()

    calls: list[tuple[int, int]] = []
    face_index.build_index(settings, celeba, torch.device("cpu"), save_every=BATCH,
                           on_progress=lambda done, total: calls.append((done, total)))
    assert calls == [(BATCH, IMAGES), (IMAGES, IMAGES)]  # started after the saved first batch
    calls.clear()
    assert face_index.build_index(settings, celeba, torch.device("cpu"), on_progress=calls.append) == out
    assert calls == []  # finished from these inputs: nothing to do

    resumed = face_index.load_index(settings, DlibEmbedder(), 64)
    whole = face_index.load_index(index_settings(tmp_path, models_with_inception), DlibEmbedder(), 64)
    assert resumed.counts.tolist() == whole.counts.tolist()
    assert np.allclose(resumed.sum_raw, whole.sum_raw, atol=1e-5)
    assert np.allclose(resumed.fid_mu, whole.fid_mu, rtol=1e-5, atol=1e-6)
    assert np.allclose(resumed.fid_sigma, whole.fid_sigma, rtol=1e-4, atol=1e-6)


def test_partial_sums_of_other_inputs_are_not_resumed(tmp_path: Path) -> None:
    sums = face_index.Sums.empty(3, 4, torch.device("cpu"))
    sums.add(np.array([0, 2]), torch.ones(2, 4), 1, torch.randn(2, 2048))
    sums.save(tmp_path / "partial.npz", key="a")
    again = face_index.Sums.resume(tmp_path / "partial.npz", "a", torch.device("cpu"))
    assert again is not None and again.done == 2 and again.no_face == 1 and again.counts.tolist() == [1, 0, 1]
    assert face_index.Sums.resume(tmp_path / "partial.npz", "b", torch.device("cpu")) is None


def test_missing_celeba_and_model_files_are_all_named(tmp_path: Path) -> None:
    settings = index_settings(tmp_path, tmp_path / "models", embedder="arcface")
    root = tmp_path / "celeba"
    with pytest.raises(ModelFileMissing) as err:
        face_index.build_index(settings, root, torch.device("cpu"))
    lines = str(err.value).splitlines()
    assert lines[0] == (
        f"CelebA not found: missing {root}/img_align_celeba and {root}/identity_CelebA.txt. Download CelebA's "
        "img_align_celeba.zip (\"Align&Cropped Images\") and identity_CelebA.txt (\"Anno\") from the CelebA site "
        f"(https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html) and unpack them into {root}, or pass --celeba DIR")
    assert lines[1].startswith(f"ArcFace model w600k_r50.onnx not found (looked in: {tmp_path}/models/arcface/")
    assert lines[2].startswith(f"FID Inception weights {INCEPTION_FILE} not found (looked in: "
                               f"{tmp_path}/models/{INCEPTION_FILE})")
    assert len(lines) == 3


def test_cli_reports_missing_files_and_exits_1(tmp_path: Path) -> None:
    """`sqd dataset index faces` on a fresh SQD_HOME, registered as `sqd` does it (the worker role's register)."""
    app = typer.Typer()
    worker_cli.register(app)
    get_settings.cache_clear()
    try:
        done = CliRunner().invoke(app, ["dataset", "index", "faces", "--embedder", "dlib"],
                                  env={"SQD_HOME": str(tmp_path)})
    finally:
        get_settings.cache_clear()
    assert done.exit_code == 1
    assert done.stderr.startswith(f"error: CelebA not found: missing {tmp_path}/datasets/celeba/img_align_celeba")
    assert f"FID Inception weights {INCEPTION_FILE} not found (looked in: {tmp_path}/models/" in done.stderr


def test_incomplete_or_malformed_celeba_is_refused(tmp_path: Path) -> None:
    write_celeba(tmp_path, extra_listed=["200001.jpg", "200002.jpg"])
    with pytest.raises(ModelFileMissing, match=r"CelebA is incomplete: 2 of the 12 images listed in .*"
                                               r"identity_CelebA.txt are not in .*img_align_celeba \(first: "
                                               r"200001.jpg\)"):
        face_index.read_celeba(tmp_path)
    (tmp_path / face_index.IDENTITY_FILE).write_text("000001.jpg 101\n000002.jpg\n")
    with pytest.raises(ValueError, match=r"identity_CelebA.txt:2: expected '<image>.jpg <identity number>', "
                                         r"got '000002.jpg'"):
        face_index.read_celeba(tmp_path)


def test_missing_index_says_how_to_build_it(tmp_path: Path) -> None:
    settings = index_settings(tmp_path, tmp_path / "models")
    embedder = DlibEmbedder()
    where = face_index.index_dir(settings, embedder.model_id, 32)
    with pytest.raises(ModelFileMissing) as err:
        face_index.load_index(settings, embedder, 32)
    assert str(err.value) == (
        f"faces index for embedder {embedder.model_id} at 32×32 not found (looked in: {where}): build it with "
        f"`sqd dataset index faces --embedder dlib --resolution 32` (needs CelebA in {tmp_path}/datasets/celeba "
        "or --celeba DIR, and the model files).")
