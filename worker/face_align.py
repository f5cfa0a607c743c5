"""Five-point face alignment, batched on the device: the similarity transform that maps a face's landmarks onto
ArcFace's template (least squares, Umeyama 1991 — what insightface's `norm_crop` estimates with scikit-image), and
a bilinear warp of every image into its 112×112 crop with one `grid_sample` call (no OpenCV, no per-image loop).
Pixels are addressed at their centres, as `cv2.warpAffine` does; outside the image is black (border value 0).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from sqd.worker.face_detect import ARCFACE_SIZE, ARCFACE_TEMPLATE


def similarity_transforms(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transforms (rotation, uniform scale, translation) taking each src[i] (K×2) to dst
    (K×2): an (N, 2, 3) array M with dst ≈ M[:, :, :2] @ p + M[:, :, 2]."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.ndim != 3 or src.shape[1:] != dst.shape or dst.shape[1] != 2:
        raise ValueError(f"similarity_transforms: src must be (N, K, 2) and dst (K, 2), got {src.shape} and "
                         f"{dst.shape}")
    k = src.shape[1]
    mu_s, mu_d = src.mean(1, keepdims=True), dst.mean(0)
    sc, dc = src - mu_s, dst - mu_d
    cov = np.einsum("ki,nkj->nij", dc, sc) / k  # Σ_xy of Umeyama: dst × srcᵀ
    u, s, vt = np.linalg.svd(cov)
    d = np.ones((len(src), 2))
    d[:, 1] = np.sign(np.linalg.det(u) * np.linalg.det(vt))  # a reflection is never a valid face pose
    rot = np.einsum("nij,nj,njk->nik", u, d, vt)
    var_s = (sc ** 2).sum((1, 2)) / k
    scale = np.where(var_s > 0, (s * d).sum(1) / np.where(var_s > 0, var_s, 1.0), 1.0)
    lin = rot * scale[:, None, None]
    trans = mu_d - np.einsum("nij,nj->ni", lin, mu_s[:, 0])
    return np.concatenate([lin, trans[:, :, None]], axis=2)


def warp_affine(images: torch.Tensor, transforms: np.ndarray, size: int) -> torch.Tensor:
    """Warp (N, C, H, W) images with forward maps M (N, 2, 3; input pixel → output pixel) into size×size crops."""
    n, _, h, w = images.shape
    m = torch.as_tensor(transforms, dtype=torch.float64)
    lin, trans = m[:, :, :2], m[:, :, 2]
    inv = torch.linalg.inv(lin)
    coords = torch.arange(size, dtype=torch.float64)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    out_px = torch.stack([xx, yy], dim=-1).reshape(1, -1, 2)  # (1, size², 2) output pixel centres
    src_px = torch.einsum("nij,npj->npi", inv, out_px - trans[:, None, :])  # where each output pixel comes from
    norm = torch.tensor([w, h], dtype=torch.float64)
    grid = ((2 * src_px + 1) / norm - 1).reshape(n, size, size, 2)  # align_corners=False convention
    return F.grid_sample(images.float(), grid.to(images.device, torch.float32), mode="bilinear",
                         padding_mode="zeros", align_corners=False)


def align_faces(images: torch.Tensor, landmarks: np.ndarray, size: int = ARCFACE_SIZE) -> torch.Tensor:
    """ArcFace crops (N, C, size, size) of `images` (N, C, H, W), aligned on their five landmarks (N, 5, 2)."""
    template = ARCFACE_TEMPLATE * (size / ARCFACE_SIZE)
    return warp_affine(images, similarity_transforms(landmarks, template), size)
