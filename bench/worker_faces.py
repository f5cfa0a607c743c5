"""The faces profile at reduced n: images/s per stage (MTCNN, face embedding, FID features) and of the index builder.

Real models where they can be had here: facenet-pytorch's MTCNN and dlib's 128-d face ResNet (both ship their
weights). The FID Inception-v3 runs with random weights saved under the real file name (same architecture, same
cost; the real file cannot be downloaded here); so does ArcFace (`--embedder arcface`): arcface_torch's IResNet-50
with random weights exported to w600k_r50.onnx as insightface did, run on `--arcface-runtime` (the PyTorch IResNet
read from the file, or onnxruntime). The "generated" images are real faces (scikit-image's LFW subset
placed in CelebA-sized frames, cropped and resized as the trainer does, plus a little pixel noise) so that MTCNN and
the embedder work as on a good generator's output; the identity index is built from the same faces by
`sqd dataset index faces`' builder, which is timed too.

The GPU figures at full size (1,000 / 2,000 / 10,000) come from bench/gpu/section_eval.py.

usage: .venv/bin/python bench/worker_faces.py [--identities 100] [--quality 100] [--samples 200] [--fid 200]
                                              [--batch 50] [--threads 1] [--device auto]
                                              [--embedder dlib|arcface] [--arcface-runtime torch|onnxruntime]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sqd.settings import Settings, WorkerSettings
from sqd.worker import face_index
from sqd.worker.arcface_export import export_onnx, random_arcface
from sqd.worker.faces import FacesProfile
from sqd.worker.inception import FIDInception, save_weights_file
from sqd.worker.iresnet import IRESNET50
from sqd.worker.model_files import ARCFACE_FILE, INCEPTION_FILE
from sqd.worker.sampling import pick_device


def write_lfw_celeba(root: Path, identities: int) -> list[Path]:
    """A CelebA layout with `identities` LFW people, each twice (the face and its mirror image)."""
    from skimage import data

    folder = root / face_index.IMAGES_DIR
    folder.mkdir(parents=True)
    lines, paths = [], []
    for k, face in enumerate(data.lfw_subset()[:identities]):  # the first 100 images of the subset are faces
        grey = Image.fromarray((face * 255).astype(np.uint8)).resize((110, 110), Image.Resampling.BICUBIC)
        for copy, img in enumerate((grey, grey.transpose(Image.Transpose.FLIP_LEFT_RIGHT))):
            frame = Image.new("L", (178, 218), int(face.mean() * 255))
            frame.paste(img, (34, 54))
            path = folder / f"{2 * k + copy + 1:06d}.jpg"
            frame.convert("RGB").save(path, quality=95)
            lines.append(f"{path.name} {k + 1}")
            paths.append(path)
    (root / face_index.IDENTITY_FILE).write_text("\n".join(lines) + "\n")
    return paths


def fake_generator(paths: list[Path], resolution: int) -> torch.Tensor:
    """The indexed faces as the trainer would feed them, in [−1, 1], with N(0, 0.02²) pixel noise."""
    x = np.stack([face_index.load_square(p, face_index.CELEBA_CROP, resolution) for p in paths])
    images = torch.from_numpy(x).permute(0, 3, 1, 2).float().div(127.5).sub(1)
    return (images + 0.02 * torch.randn(images.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--identities", type=int, default=100, help="LFW people indexed (≤ 100), 2 images each")
    ap.add_argument("--quality", type=int, default=100, help="worker.quality_samples")
    ap.add_argument("--samples", type=int, default=200, help="worker.samples (embedded images)")
    ap.add_argument("--fid", type=int, default=200, help="worker.fid_samples")
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared 2-core box)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--embedder", choices=["dlib", "arcface"], default="dlib")
    ap.add_argument("--arcface-runtime", choices=["auto", "torch", "onnxruntime"], default="auto")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = pick_device(args.device)

    with tempfile.TemporaryDirectory() as tmp:
        root, models = Path(tmp) / "celeba", Path(tmp) / "models"
        models.mkdir()
        paths = write_lfw_celeba(root, args.identities)
        save_weights_file(FIDInception(), models / INCEPTION_FILE)
        if args.embedder == "arcface":
            export_onnx(random_arcface(IRESNET50), models / "arcface" / ARCFACE_FILE)
        settings = Settings(home=Path(tmp) / "home", worker=WorkerSettings(
            models_dir=models, face_embedder=args.embedder, arcface_runtime=args.arcface_runtime,
            batch_size=args.batch, gpu_batch_size=args.batch, samples=args.samples, quality_samples=args.quality,
            fid_samples=args.fid))

        start, cpu = time.perf_counter(), time.process_time()
        face_index.build_index(settings, root, device, save_every=10**9)
        index_s, index_cpu = time.perf_counter() - start, time.process_time() - cpu

        real = fake_generator(paths, 64).to(device)
        n = max(args.quality, args.samples, args.fid)
        pool = real.repeat((n + len(real) - 1) // len(real), 1, 1, 1)[:n]
        profile = FacesProfile(settings, device)
        timings: dict[str, float] = {}
        start, cpu = time.perf_counter(), time.process_time()
        metrics = profile.evaluate(lambda k: pool[:k], timings)
        total_s, total_cpu = time.perf_counter() - start, time.process_time() - cpu

    n_detect = max(args.quality, args.samples)
    load = os.getloadavg()[0]
    embedder = f"{args.embedder} ({type(profile.embedder).__name__})"
    print(f"faces profile, {device}, torch threads {args.threads}, load average {load:.1f} "
          f"({os.cpu_count()} cores); embedder {embedder}, FID Inception (random weights, real architecture)")
    print(f"index build      {len(paths):6d} images  {index_s:7.1f} s  {len(paths) / index_s:7.1f} img/s "
          f"(MTCNN + {args.embedder} + Inception per image; {index_cpu:.1f} CPU-s)")
    for stage, count in (("mtcnn", n_detect), ("embed", args.samples), ("fid_features", args.fid)):
        seconds = timings.get(stage, float("nan"))
        print(f"{stage:16s} {count:6d} images  {seconds:7.1f} s  {count / seconds:7.1f} img/s")
    for stage in ("assign", "fid"):
        print(f"{stage:16s}                {timings.get(stage, float('nan')):7.2f} s")
    print(f"evaluate total                 {total_s:7.1f} s  ({total_cpu:.1f} CPU-s: wall ≫ CPU means other "
          "jobs share the cores)")
    print("metrics: " + ", ".join(f"{k.removeprefix('eval/')} {v:.4g}" for k, v in sorted(metrics.items())))


if __name__ == "__main__":
    main()
