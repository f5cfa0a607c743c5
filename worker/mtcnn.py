"""MTCNN's three stages over a whole batch on its device: facenet-pytorch's P/R/O-nets and box arithmetic, with the
per-box work done for all boxes at once.

facenet-pytorch's `detect_face` crops every candidate box in a Python loop — one slice and one
`interpolate(mode="area")` per box, ~9 boxes per face image after the first stage and ~4 after the second — and
moves the boxes to the host between stages; on a GPU that loop, not the networks, is the cost (1,000 images took
0.9 s on an H200, the networks a small part of it). Here each stage crops all its boxes in one pass: the area
resampling of a box (the mean over each output cell's input window, windows split as `adaptive_avg_pool2d` splits
them, which is what `interpolate(mode="area")` computes) is read from a summed-area table of the batch in four
gathers per output pixel; the table is float64 and the pixels are integers in [0, 255], so the sums are exact. The
box arithmetic is facenet-pytorch's own functions, called as they are (`generateBoundingBox`, `bbreg`, `rerec`,
`fixed_batch_process`, torchvision's `batched_nms`), so the detections are those of `detect_face` up to float
rounding in the crops (tests/worker/test_mtcnn.py compares them on real faces).

Host steps left, both small: the pyramid's sizes (Python floats), and the last stage's NMS with the 'Min' overlap,
which facenet-pytorch only has as a numpy loop over the boxes that passed the O-net (~1 per face image).
Boxes whose window lies wholly outside the image are dropped (facenet-pytorch skips them in its crop loop, which
then misaligns its boxes and crops; they do not occur for boxes regressed from P-net's windows in practice).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torchvision.ops.boxes import batched_nms

CROP_CHUNK = 2048  # boxes cropped per gather pass: bounds the index tensors (2048·3·48² int64 ≈ 113 MB)
NORM_MEAN, NORM_SCALE = 127.5, 0.0078125  # MTCNN's input normalisation, as facenet-pytorch applies it


@dataclass
class Detections:
    """Every face found: boxes (K, 5: x1, y1, x2, y2, probability), landmarks (K, 5, 2) and the image each is in."""

    boxes: torch.Tensor
    points: torch.Tensor
    image_inds: torch.Tensor


def pyramid(h: int, w: int, min_face: float, factor: float) -> list[float]:
    """The scales at which P-net (12-px windows) looks for faces of at least `min_face` px."""
    m = 12.0 / min_face
    side, scales, scale = min(h, w) * m, [], m
    while side >= 12:
        scales.append(scale)
        scale, side = scale * factor, side * factor
    return scales


def summed_area(imgs: torch.Tensor) -> torch.Tensor:
    """(N, C, H+1, W+1) float64 table: entry [i, j] is the sum of the pixels above row i and left of column j."""
    table = torch.nn.functional.pad(imgs.double(), (1, 0, 1, 0))
    return table.cumsum_(2).cumsum_(3)


def _corner(flat: torch.Tensor, plane: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, w1: int) -> torch.Tensor:
    """Table entries at every (row, col) pair of each box: (K, C, size, size)."""
    return flat[(plane + rows[:, None, :, None]) * w1 + cols[:, None, None, :]]


def area_crops(table: torch.Tensor, image_inds: torch.Tensor, windows: torch.Tensor, size: int) -> torch.Tensor:
    """Each window (K, 4: row0, row1, col0, col1, half-open) of image `image_inds[k]` resampled to size×size by area
    averaging (the windows of `adaptive_avg_pool2d`), from the batch's `summed_area` table: (K, C, size, size)."""
    n, c, h1, w1 = table.shape
    flat = table.reshape(-1)
    cells = torch.arange(size, device=table.device)
    out = []
    for part, inds in zip(windows.split(CROP_CHUNK), image_inds.split(CROP_CHUNK), strict=True):
        r0, r1, c0, c1 = (part[:, i:i + 1].long() for i in range(4))
        rows_in, cols_in = r1 - r0, c1 - c0
        rs, re = r0 + cells * rows_in // size, r0 + ((cells + 1) * rows_in + size - 1) // size  # (K, size)
        cs, ce = c0 + cells * cols_in // size, c0 + ((cells + 1) * cols_in + size - 1) // size
        plane = (inds.long()[:, None] * c + torch.arange(c, device=table.device))[:, :, None, None] * h1
        total = (_corner(flat, plane, re, ce, w1) - _corner(flat, plane, rs, ce, w1)
                 - _corner(flat, plane, re, cs, w1) + _corner(flat, plane, rs, cs, w1))
        count = (re - rs)[:, None, :, None] * (ce - cs)[:, None, None, :]
        out.append((total / count).float())
    return torch.cat(out) if out else torch.zeros(0, c, size, size, device=table.device)


def crop_windows(boxes: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """facenet-pytorch's `pad` on the device: the integer pixel window of each box clipped to the image (row0, row1,
    col0, col1, half-open), and which windows are non-empty."""
    b = boxes[:, :4].trunc().int()
    x, y = b[:, 0].clamp(min=1), b[:, 1].clamp(min=1)
    ex, ey = b[:, 2].clamp(max=w), b[:, 3].clamp(max=h)
    windows = torch.stack([y - 1, ey, x - 1, ex], dim=1)
    return windows, (ey > y - 1) & (ex > x - 1)


def _stage_input(table: torch.Tensor, boxes: torch.Tensor, inds: torch.Tensor, size: int
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    h, w = table.shape[2] - 1, table.shape[3] - 1
    windows, valid = crop_windows(boxes, h, w)
    boxes, inds, windows = boxes[valid], inds[valid], windows[valid]
    return (area_crops(table, inds, windows, size) - NORM_MEAN) * NORM_SCALE, boxes, inds


def detect_batch(imgs: torch.Tensor, pnet: nn.Module, rnet: nn.Module, onet: nn.Module,
                 thresholds: tuple[float, float, float], min_face: float, factor: float) -> Detections:
    """MTCNN on `imgs` (N, 3, H, W), float RGB with integer values in [0, 255], on the nets' device."""
    from facenet_pytorch.models.utils.detect_face import (
        batched_nms_numpy,
        bbreg,
        fixed_batch_process,
        generateBoundingBox,
        imresample,
        rerec,
    )

    device = imgs.device
    h, w = imgs.shape[2:]
    empty = Detections(torch.zeros(0, 5, device=device), torch.zeros(0, 5, 2, device=device),
                       torch.zeros(0, dtype=torch.long, device=device))
    # Stage 1: P-net over the pyramid; NMS per scale and image, then per image across scales.
    found, found_inds = [], []
    for scale in pyramid(h, w, min_face, factor):
        scaled = imresample(imgs, (int(h * scale + 1), int(w * scale + 1)))
        reg, probs = pnet((scaled - NORM_MEAN) * NORM_SCALE)
        boxes, inds = generateBoundingBox(reg, probs[:, 1], scale, thresholds[0])
        pick = batched_nms(boxes[:, :4], boxes[:, 4], inds, 0.5)
        found.append(boxes[pick])
        found_inds.append(inds[pick])
    boxes, inds = torch.cat(found), torch.cat(found_inds)
    pick = batched_nms(boxes[:, :4], boxes[:, 4], inds, 0.7)
    boxes, inds = boxes[pick], inds[pick]
    size = (boxes[:, 2:4] - boxes[:, 0:2]).repeat(1, 2)
    boxes = rerec(torch.cat([boxes[:, :4] + boxes[:, 5:9] * size, boxes[:, 4:5]], dim=1))
    if len(boxes) == 0:
        return empty
    table = summed_area(imgs)

    # Stage 2: R-net on 24×24 crops.
    crops, boxes, inds = _stage_input(table, boxes, inds, 24)
    if len(boxes) == 0:
        return empty
    reg, probs = fixed_batch_process(crops, rnet)
    keep = probs[:, 1] > thresholds[1]
    boxes = torch.cat([boxes[keep, :4], probs[keep, 1:2]], dim=1)
    inds, reg = inds[keep], reg[keep]
    pick = batched_nms(boxes[:, :4], boxes[:, 4], inds, 0.7)
    boxes = rerec(bbreg(boxes[pick], reg[pick]))
    inds = inds[pick]
    if len(boxes) == 0:
        return empty

    # Stage 3: O-net on 48×48 crops: probabilities, box regression and the five landmarks.
    crops, boxes, inds = _stage_input(table, boxes, inds, 48)
    if len(boxes) == 0:
        return empty
    reg, marks, probs = fixed_batch_process(crops, onet)
    keep = probs[:, 1] > thresholds[2]
    boxes = torch.cat([boxes[keep, :4], probs[keep, 1:2]], dim=1)
    inds, reg, marks = inds[keep], reg[keep], marks[keep]
    width = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
    height = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
    points = torch.stack([width * marks[:, :5] + boxes[:, 0:1] - 1, height * marks[:, 5:] + boxes[:, 1:2] - 1], 2)
    boxes = bbreg(boxes, reg)
    pick = batched_nms_numpy(boxes[:, :4], boxes[:, 4], inds, 0.7, "Min")
    return Detections(boxes[pick], points[pick], inds[pick])
