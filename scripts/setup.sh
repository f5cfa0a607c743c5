#!/usr/bin/env bash
# Sets up .venv with everything SQD needs (idempotent: a second run takes seconds).
#   bash scripts/setup.sh         runtime: server, worker, trainer
#   bash scripts/setup.sh --dev   plus the test tools and Debian's Chromium for the browser tests
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
"$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
  || { echo "error: SQD needs Python >= 3.11 (found $("$PY" --version)); set PYTHON=/path/to/python3.11" >&2; exit 1; }

extra=all
[ "${1:-}" = "--dev" ] && extra=dev

[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch==2.14.1 / torchvision==0.29.1 are pinned in pyproject.toml: the CUDA 13 build that also runs on the CPU.
# For another CUDA build, install torch first from its index, e.g.
#   .venv/bin/pip install torch==2.14.1 torchvision==0.29.1 --index-url https://download.pytorch.org/whl/cu126
.venv/bin/python -m pip install -q -e ".[$extra]"
# facenet-pytorch 2.6.0 pins torch<2.3 and numpy<2, which we do not want; it only needs torch + torchvision.
.venv/bin/python -m pip install -q --no-deps facenet-pytorch==2.6.0

if [ "$extra" = dev ] && [ ! -x /usr/bin/chromium ]; then
  echo "installing Debian's chromium for the browser tests..."
  # wait for the dpkg lock rather than fail: another setup or the system's own upgrades may hold it for a while
  apt=(apt-get -o DPkg::Lock::Timeout=600)
  [ "$(id -u)" = 0 ] || apt=(sudo "${apt[@]}")
  "${apt[@]}" update -qq && "${apt[@]}" install -y -qq chromium >/dev/null
fi
echo "sqd is set up in .venv ($(.venv/bin/python -c 'import sqd; print(sqd.__version__)'))"
