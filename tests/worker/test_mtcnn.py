"""The batched MTCNN driver (`mtcnn.detect_batch`) against facenet-pytorch's own `detect_face` on real images: the
same faces, probabilities and landmarks (to float rounding in the crops), and the summed-area crops against
`interpolate(mode="area")`, the resampling facenet-pytorch does box by box."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import data
from torch.nn import functional as F

from sqd.worker.face_detect import FaceDetector, to_uint8_range
from sqd.worker.mtcnn import area_crops, crop_windows, pyramid, summed_area


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector("cpu")


def lfw(first: int, count: int) -> torch.Tensor:
    return to_uint8_range(torch.from_numpy(data.lfw_subset()[first:first + count]).float().unsqueeze(1).mul(2).sub(1))


def astronaut(full: bool) -> torch.Tensor:
    img = data.astronaut() if full else data.astronaut()[20:180, 150:310]
    return torch.from_numpy(img.copy()).permute(2, 0, 1).float().unsqueeze(0)


@pytest.mark.parametrize("images", ["lfw faces", "lfw non-faces", "astronaut face", "astronaut photo"])
def test_same_detections_as_facenet_pytorch(detector: FaceDetector, images: str) -> None:
    x = {"lfw faces": lambda: lfw(0, 24), "lfw non-faces": lambda: lfw(100, 24),
         "astronaut face": lambda: astronaut(False), "astronaut photo": lambda: astronaut(True)}[images]()
    faces = detector.detect(x)
    boxes, points = detector.reference_detect(x)
    for i, (b, p) in enumerate(zip(boxes, points, strict=True)):
        assert faces.found[i] == (b.size > 0), i
        if b.size:
            best = int(np.argmax(b[:, 4]))
            assert faces.prob[i] == pytest.approx(b[best, 4], abs=1e-5)
            np.testing.assert_allclose(faces.boxes[i], b[best, :4], atol=1e-3)
            np.testing.assert_allclose(faces.landmarks[i], p[best], atol=1e-3)
    if images == "lfw faces":
        assert faces.found.all()


def test_summed_area_crops_equal_area_interpolation() -> None:
    gen = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (3, 3, 40, 50), generator=gen).float()
    boxes = torch.tensor([[-5.0, -3.0, 20.0, 25.0], [10.2, 4.9, 48.7, 39.0], [30.0, 30.0, 33.0, 34.0],
                          [0.0, 0.0, 60.0, 45.0]])
    inds = torch.tensor([0, 2, 1, 2])
    windows, valid = crop_windows(boxes, 40, 50)
    assert valid.all()
    for size in (24, 48):  # downsampling and (for the small box) upsampling
        got = area_crops(summed_area(imgs), inds, windows, size)
        for k, (r0, r1, c0, c1) in enumerate(windows.tolist()):
            expected = F.interpolate(imgs[inds[k]:inds[k] + 1, :, r0:r1, c0:c1], size=(size, size), mode="area")
            torch.testing.assert_close(got[k:k + 1], expected, rtol=0, atol=1e-4)


def test_windows_clip_to_the_image_and_flag_empty_ones() -> None:
    boxes = torch.tensor([[-4.0, -4.0, 10.5, 12.9], [70.0, 5.0, 90.0, 20.0]])
    windows, valid = crop_windows(boxes, 64, 64)
    assert windows[0].tolist() == [0, 12, 0, 10] and valid.tolist() == [True, False]


def test_pyramid_matches_mtcnns_scales() -> None:
    scales = pyramid(64, 64, 20, 0.709)
    assert scales[0] == pytest.approx(0.6) and len(scales) == 4
    assert all(b == pytest.approx(a * 0.709) for a, b in zip(scales, scales[1:], strict=False))
