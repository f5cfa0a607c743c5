"""MTCNN face detection (facenet-pytorch; its P/R/O-net weights ship with the package), batched on the device.

For each image we keep the most confident face: its probability is the image's quality score Q(x) of seed 003
(0 when MTCNN finds no face), and its five landmarks (eyes, nose, mouth corners) align the crop that the face
embedder sees. An image without a face gets the documented fallback: its whole frame is taken as the face —
landmarks are the ArcFace template scaled to the image, so the aligned crop is the image resized — because
generated CelebA-style images are already face-centred crops (the no-face fraction is reported beside D).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from sqd.worker.mtcnn import detect_batch

# ArcFace's canonical five points in a 112×112 crop (insightface.utils.face_align.arcface_dst).
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                             [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float64)
ARCFACE_SIZE = 112
MIN_DETECT_SIDE = 64  # smaller images are upsampled first: MTCNN's finest pyramid level sees 12-px windows


@dataclass
class Faces:
    """Per image: `prob` (0 = no face), `boxes` (x1, y1, x2, y2) and `landmarks` (5×2, x/y pixels), all in the
    coordinates of `images`, the uint8-range RGB tensor (N, 3, H, W) MTCNN ran on; `found` marks real detections
    (the others hold the whole-frame fallback)."""

    images: torch.Tensor
    prob: np.ndarray
    boxes: np.ndarray
    landmarks: np.ndarray
    found: np.ndarray

    def __len__(self) -> int:
        return len(self.prob)

    def head(self, k: int) -> Faces:
        return Faces(self.images[:k], self.prob[:k], self.boxes[:k], self.landmarks[:k], self.found[:k])


def to_uint8_range(images: torch.Tensor) -> torch.Tensor:
    """[−1, 1] float images → float RGB in [0, 255] rounded to integers, as a saved image would be; grey → RGB;
    sides below MIN_DETECT_SIDE are upsampled (bilinear) so MTCNN can see the face at all."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"faces: images must be (N, 1|3, H, W), got shape {tuple(images.shape)}")
    x = images.float()
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    side = min(x.shape[-2:])
    if side < MIN_DETECT_SIDE:
        scale = MIN_DETECT_SIDE / side
        x = F.interpolate(x, size=(round(x.shape[-2] * scale), round(x.shape[-1] * scale)), mode="bilinear",
                          align_corners=False)
    return x.clamp(-1, 1).add(1).mul(127.5).round()


def fallback_landmarks(height: int, width: int) -> np.ndarray:
    """The ArcFace template stretched over the whole frame: aligning with it resizes the image to the crop
    (pixel centres map as in a bilinear resize: u ↦ (u + ½)·scale − ½)."""
    scale = np.array([width / ARCFACE_SIZE, height / ARCFACE_SIZE])
    return (ARCFACE_TEMPLATE + 0.5) * scale - 0.5


class FaceDetector:
    """facenet-pytorch's MTCNN with its default thresholds (0.6, 0.7, 0.7), minimum face 20 px, factor 0.709, run
    over whole batches on the device by `mtcnn.detect_batch`."""

    def __init__(self, device: torch.device | str = "cpu"):
        from facenet_pytorch import MTCNN

        self.device = torch.device(device)
        self.mtcnn = MTCNN(device=self.device)
        self.mtcnn.eval()

    def detect(self, images: torch.Tensor) -> Faces:
        """`images`: (N, 3, H, W) in [0, 255] (see `to_uint8_range`), on any device."""
        m = self.mtcnn
        x = images.to(self.device)
        n, _, h, w = x.shape
        with torch.inference_mode():
            found = detect_batch(x, m.pnet, m.rnet, m.onet, tuple(m.thresholds), m.min_face_size, m.factor)
        boxes, points = found.boxes.cpu().double().numpy(), found.points.cpu().double().numpy()
        inds = found.image_inds.cpu().numpy()
        # the most confident face of each image: sorted by image, then by falling probability (a stable sort, so
        # ties keep the detection order, as argmax would)
        order = np.lexsort((-boxes[:, 4], inds))
        images_with_face, first = np.unique(inds[order], return_index=True)
        best = order[first]
        prob = np.zeros(n)
        box = np.tile(np.array([0.0, 0.0, w - 1.0, h - 1.0]), (n, 1))
        landmarks = np.tile(fallback_landmarks(h, w), (n, 1, 1))
        has_face = np.zeros(n, dtype=bool)
        prob[images_with_face], box[images_with_face] = boxes[best, 4], boxes[best, :4]
        landmarks[images_with_face], has_face[images_with_face] = points[best], True
        return Faces(x, prob, box, landmarks, has_face)

    def reference_detect(self, images: torch.Tensor) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """facenet-pytorch's own `detect_face` on the same nets and images — one crop per box in a Python loop —
        the reference `detect` is tested and benchmarked against: per image, boxes (K, 5) and landmarks (K, 5, 2)."""
        from facenet_pytorch.models.utils.detect_face import detect_face

        m, x = self.mtcnn, images.to(self.device)
        with torch.no_grad():
            boxes, points = detect_face(x.permute(0, 2, 3, 1), m.min_face_size, m.pnet, m.rnet, m.onet, m.thresholds,
                                        m.factor, self.device)
        return [np.asarray(b, np.float64) for b in boxes], [np.asarray(p, np.float64) for p in points]
