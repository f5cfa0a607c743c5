"""MTCNN: facenet-pytorch's `detect_face` (one crop per box in a Python loop) against our batched stages
(`sqd.worker.mtcnn.detect_batch`, what the worker runs), on the same faces and device: seconds, images/s, and the
largest difference in the detections.

    .venv/bin/python bench/mtcnn_batched.py [--images 200] [--device auto] [--threads 1] [--repeats 3]

The images are scikit-image's 100 LFW faces (25×25 grey, upsampled to 64×64 as the profile does), repeated.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import TypeVar

import numpy as np
import torch
from skimage import data

from sqd.worker.face_detect import FaceDetector, to_uint8_range
from sqd.worker.sampling import pick_device

T = TypeVar("T")


def lfw_faces(n: int, device: torch.device) -> torch.Tensor:
    faces = torch.from_numpy(data.lfw_subset()[:100]).float().unsqueeze(1).mul(2).sub(1)
    return to_uint8_range(faces.repeat(-(-n // 100), 1, 1, 1)[:n]).to(device)


def facenet_detect(detector: FaceDetector, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """facenet-pytorch's own `detect_face`: the most confident face's (probability, 5 landmarks) per image."""
    prob, marks = np.zeros(len(images)), np.zeros((len(images), 5, 2))
    for i, (b, p) in enumerate(zip(*detector.reference_detect(images), strict=True)):
        if b.size:
            best = int(np.argmax(b[:, 4]))
            prob[i], marks[i] = b[best, 4], p[best]
    return prob, marks


def _median_seconds(fn: Callable[[torch.Tensor], T], images: torch.Tensor, batch: int, repeats: int
                    ) -> tuple[list[T], float]:
    """`fn` over `images` in batches, once to warm up and `repeats` times timed: (last outputs, median seconds)."""
    seconds, out = [], []
    for _ in range(repeats + 1):
        if images.is_cuda:
            torch.cuda.synchronize(images.device)
        start = time.perf_counter()
        out = [fn(b) for b in images.split(batch)]
        if images.is_cuda:
            torch.cuda.synchronize(images.device)
        seconds.append(time.perf_counter() - start)
    return out, statistics.median(seconds[1:])


def compare(detector: FaceDetector, images: torch.Tensor, batch: int, repeats: int) -> dict[str, float]:
    """Median seconds of both ways over `images` in batches of `batch` (after one warm-up), and their largest
    differences in probability and landmarks (px)."""
    ours, ours_s = _median_seconds(detector.detect, images, batch, repeats)
    theirs, theirs_s = _median_seconds(lambda b: facenet_detect(detector, b), images, batch, repeats)
    prob, marks = np.concatenate([f.prob for f in ours]), np.concatenate([f.landmarks for f in ours])
    ref_prob, ref_marks = np.concatenate([t[0] for t in theirs]), np.concatenate([t[1] for t in theirs])
    found = ref_prob > 0
    return {"batched_s": ours_s, "facenet_s": theirs_s, "max_prob_diff": float(np.abs(prob - ref_prob).max()),
            "max_landmark_px": float(np.abs(marks[found] - ref_marks[found]).max()) if found.any() else 0.0,
            "faces": float(found.sum())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--batch", type=int, default=250)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    images = lfw_faces(args.images, device)
    r = compare(FaceDetector(device), images, args.batch, args.repeats)
    n = args.images
    print(f"MTCNN on {n} LFW faces (64×64), {device}, batch {args.batch}, torch threads {args.threads}, "
          f"load average {os.getloadavg()[0]:.1f} ({os.cpu_count()} cores); median of {args.repeats}")
    print(f"facenet-pytorch detect_face  {r['facenet_s']:8.3f} s  {n / r['facenet_s']:8.1f} img/s")
    print(f"batched (sqd.worker.mtcnn)   {r['batched_s']:8.3f} s  {n / r['batched_s']:8.1f} img/s")
    print(f"faces found {r['faces']:.0f}; largest differences: probability {r['max_prob_diff']:.1e}, "
          f"landmarks {r['max_landmark_px']:.1e} px")


if __name__ == "__main__":
    main()
