"""Sample grids: 8×8 images of a checkpoint, from a fixed per-run z, as a PNG in the artifact store."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

GRID_SIDE = 8  # 8×8 = 64 images
PAD = 2  # pixels of dark gutter between tiles


def grid_key(run_id: str, step: int) -> str:
    return f"runs/{run_id}/samples/step-{step:09d}.png"


def grid_png(images: torch.Tensor, side: int = GRID_SIDE, pad: int = PAD) -> bytes:
    """Tile up to side² images (N, C, H, W) in [−1, 1] (C = 1 grey or 3 RGB) into one PNG."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"grid_png: images must be (N, 1|3, H, W), got shape {tuple(images.shape)}")
    x = images[: side * side].detach().float().cpu().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8).numpy()
    n, c, h, w = x.shape
    rows = -(-n // side)
    canvas = np.zeros((c, pad + rows * (h + pad), pad + side * (w + pad)), dtype=np.uint8)
    for i in range(n):
        top, left = pad + (i // side) * (h + pad), pad + (i % side) * (w + pad)
        canvas[:, top:top + h, left:left + w] = x[i]
    img = Image.fromarray(canvas[0] if c == 1 else np.ascontiguousarray(canvas.transpose(1, 2, 0)))
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()
