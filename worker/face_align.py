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
    """Warp (N, C, H, W) images with forward maps M (N, 2, 3; input pixel → output pixel) into size×size crops, on
    the images' device: the inverse maps are composed with the pixel-centre ↔ [−1, 1] conversions of
    `align_corners=False` on the host in float64 (N×2×3 numbers), then `affine_grid` + `grid_sample` run there."""
    n, _, h, w = images.shape
    m = np.asarray(transforms, dtype=np.float64)
    inv = np.linalg.inv(m[:, :, :2])
    src_of_out = np.concatenate([inv, -np.einsum("nij,nj->ni", inv, m[:, :, 2])[:, :, None]], axis=2)
    # normalised output coordinate u_n ↦ pixel (size·(u_n + 1) − 1)/2 ↦ source pixel ↦ normalised (2p + 1)/W − 1
    to_px = np.array([[size / 2, 0, (size - 1) / 2], [0, size / 2, (size - 1) / 2], [0, 0, 1]])
    to_norm = np.array([[2 / w, 0, 1 / w - 1], [0, 2 / h, 1 / h - 1]])
    theta = np.einsum("ij,njk,kl->nil", to_norm, np.concatenate(
        [src_of_out, np.tile([[[0.0, 0.0, 1.0]]], (n, 1, 1))], axis=1), to_px)
    grid = F.affine_grid(torch.as_tensor(theta, dtype=torch.float32, device=images.device), [n, 1, size, size],
                         align_corners=False)
    return F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def align_faces(images: torch.Tensor, landmarks: np.ndarray, size: int = ARCFACE_SIZE) -> torch.Tensor:
    """ArcFace crops (N, C, size, size) of `images` (N, C, H, W), aligned on their five landmarks (N, 5, 2)."""
    template = ARCFACE_TEMPLATE * (size / ARCFACE_SIZE)
    return warp_affine(images, similarity_transforms(landmarks, template), size)
