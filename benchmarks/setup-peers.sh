#!/usr/bin/env bash
# Make the peer servers' virtual environments under .bench/ for benchmarks/serving.py.
#   bash benchmarks/setup-peers.sh [bentoml] [kserve]
# torch is pinned to the CPU build (constraints.txt) so that no peer pulls a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
declare -A PACKAGES=(
  [bentoml]="bentoml==1.4.39"
  [kserve]="kserve==0.21.0"
)
for peer in "${@:-bentoml kserve}"; do
  for name in $peer; do
    venv=".bench/$name"
    echo "setting up $name in $venv" >&2
    "$PYTHON" -m venv "$venv"
    "$venv/bin/pip" install --quiet -c constraints.txt torch==2.13.0
    "$venv/bin/pip" install --quiet -c constraints.txt "${PACKAGES[$name]}" onnxruntime sentence-transformers
  done
done
