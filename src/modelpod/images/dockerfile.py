"""The Dockerfile of an image: a pure function of `DockerfileInputs`, rendered from templates/Dockerfile.j2.

The final stage's instructions are also listed as `LAYER_GROUPS` (in order), so that `docker history`
can be summed per group (base, system, dependencies, runtime, weights, code, spec).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources

from modelpod import __version__, contract
from modelpod.images import llama_cpp

UID = 10001
APP_DIR = "/app"

# format -> environment the runtime needs in the image (read-only root: every cache under /tmp)
# formats whose frameworks are large enough that compiling their bytecode at every start costs seconds
PRECOMPILED_FORMATS = frozenset({"torch", "keras", "tensorflow", "transformers"})

# format -> package parts serving never imports: onnxruntime's offline model tools (converters,
# optimizers), and its library for the C API (35 MB), which its Python module does not load: that has
# the runtime built in (its only needs are the C and C++ libraries)
FORMAT_PRUNE: dict[str, tuple[str, ...]] = {
    "onnx": (
        "onnxruntime/quantization",
        "onnxruntime/tools",
        "onnxruntime/transformers",
        "onnxruntime/capi/libonnxruntime.so.*",
    ),
}

TMPFS = "/tmp"  # noqa: S108 - the container's tmpfs, the only writable path of a read-only image
FORMAT_ENV: dict[str, tuple[tuple[str, str], ...]] = {
    "keras": (("KERAS_BACKEND", "torch"), ("KERAS_HOME", f"{TMPFS}/.keras")),
    "transformers": (("HF_HOME", f"{TMPFS}/huggingface"), ("HF_HUB_OFFLINE", "1")),
    "tensorflow": (("TF_CPP_MIN_LOG_LEVEL", "2"),),
}


@dataclass(frozen=True)
class DockerfileInputs:
    name: str
    base: str
    port: int
    fmt: str
    spec_file: str  # the spec's file name inside /app
    profile: str | None = None
    buildkit: bool = True
    system_packages: tuple[str, ...] = ()
    wheel: str | None = None  # modelpod's wheel in dist/; None: install the released modelpod==version
    wheelhouse: bool = False
    ca_bundle: bool = False
    build_args: tuple[str, ...] = ()  # names declared as ARG in the dependency stage (pip reads PIP_*)
    bytecode: bool = False  # precompile .pyc files into the image
    weights: bool = True
    code: bool = True
    llama_cpp: bool = False  # the llamacpp engine: llama.cpp compiled in a stage of its own (llama_cpp.py)
    labels: tuple[tuple[str, str], ...] = field(default=())
    version: str = __version__

    @property
    def entrypoint(self) -> list[str]:
        argv = ["python", "-m", "modelpod.server", f"{APP_DIR}/{self.spec_file}"]
        return [*argv, "--profile", self.profile] if self.profile else argv


def render_dockerfile(inputs: DockerfileInputs) -> str:
    import jinja2

    template_text = resources.files("modelpod.images").joinpath("templates/Dockerfile.j2").read_text("utf-8")
    environment = jinja2.Environment(  # noqa: S701 - a Dockerfile, not HTML: nothing to escape
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    environment.filters["label"] = label_value
    environment.filters["tojson"] = json.dumps
    template = environment.from_string(template_text)
    return template.render(
        **{k: getattr(inputs, k) for k in inputs.__dataclass_fields__},
        entrypoint=inputs.entrypoint,
        env=FORMAT_ENV.get(inputs.fmt, ()),
        prune=FORMAT_PRUNE.get(inputs.fmt, ()),
        uid=UID,
        ready_path=contract.READY,
        compile="" if inputs.bytecode else "--no-compile ",
        llama_prefix=contract.IMAGE_LLAMA_CPP,
        llama_env=contract.LLAMA_SERVER_ENV,
        llama_build_packages=llama_cpp.BUILD_PACKAGES,
    )


def label_value(value: str) -> str:
    """A LABEL value inside double quotes: backslashes, quotes and `$` (LABEL expands variables) escaped."""
    flat = " ".join(value.split())
    return flat.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")


def layer_groups(inputs: DockerfileInputs) -> list[str]:
    """One group name per instruction of the final stage, in order (what `docker history` lists)."""
    groups = ["system"] if inputs.system_packages else []
    groups += ["system", "dependencies", "runtime"]  # RUN (clean-up, user), COPY venv, COPY modelpod
    groups += ["engine"] if inputs.llama_cpp else []  # COPY --from=llama-cpp
    groups += ["metadata", "metadata"]  # ENV, WORKDIR
    groups += ["weights"] if inputs.weights else []
    groups += ["code"] if inputs.code else []
    groups += ["spec"]
    groups += ["metadata"] * 5  # USER, EXPOSE, HEALTHCHECK, LABEL, ENTRYPOINT
    return groups
