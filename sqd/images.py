"""Image preprocessing shared by the roles that must see the same pixels: the trainer feeding a generator and the
worker building the reference index the generator's samples are compared with."""

from __future__ import annotations

from pathlib import Path

import numpy as np

CELEBA_CROP = 140  # the usual face crop of the 178×218 aligned CelebA images before resizing to 64


def centre_square(img: object, crop: int | None, resolution: int) -> np.ndarray:
    """Centre square of side min(crop, w, h) (crop None: the short side), LANCZOS-resized to
    (resolution, resolution, 3) uint8. `img` is an RGB PIL image."""
    from PIL import Image

    assert isinstance(img, Image.Image)
    w, h = img.size
    side = min(crop or min(w, h), w, h)
    left, top = (w - side) // 2, (h - side) // 2
    square = img.crop((left, top, left + side, top + side)).resize((resolution, resolution), Image.Resampling.LANCZOS)
    return np.asarray(square, dtype=np.uint8)


def load_square(path: Path, crop: int | None, resolution: int) -> np.ndarray:
    """`centre_square` of the image file at `path`, converted to RGB."""
    from PIL import Image

    with Image.open(path) as img:
        return centre_square(img.convert("RGB"), crop, resolution)
