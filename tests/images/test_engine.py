"""Engine adapter: argv per engine as lists, engine discovery and its errors, build-output parsing, doctor."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from modelpod.images.doctor import Probe, check_buildkit, check_cluster, check_gpu, check_registry, run_checks
from modelpod.images.engine import (
    BuildRequest,
    Engine,
    RunRequest,
    build_argv,
    connect,
    find_engine,
    proxy_build_args,
    push_argv,
    run_argv,
)
from modelpod.images.errors import EngineNotFoundError, EngineUnreachableError
from modelpod.images.layers import HistoryEntry, cache_report, group_sizes, parse_history
from modelpod.images.pipeline import image_ref, repository_of
from modelpod.images.runner import Result
from tests.images.conftest import HOW_TO_GET_AN_ENGINE, docker_path
from tests.tools import require

CTX = Path("/ctx")


def request(**changes: object) -> BuildRequest:
    values: dict[str, object] = {"context": CTX, "tag": "digits:1", **changes}
    return BuildRequest(**values)  # type: ignore[arg-type]


def test_docker_with_buildkit_streams_plain_progress() -> None:
    argv = build_argv(
        Engine("docker", "/usr/bin/docker", buildkit=True),
        request(
            network="host", build_args={"HTTPS_PROXY": None, "PIP_INDEX_URL": "https://pypi.internal/simple"}
        ),
    )
    assert argv == [
        "/usr/bin/docker", "build", "--progress=plain", "--file", "/ctx/Dockerfile", "--tag", "digits:1",
        "--network", "host", "--build-arg", "HTTPS_PROXY", "--build-arg", "PIP_INDEX_URL=https://pypi.internal/simple",
        "/ctx",
    ]  # fmt: skip


def test_legacy_docker_has_no_progress_flag_and_buildkit_is_switched_off() -> None:
    engine = Engine("docker", "/usr/local/bin/docker", buildkit=False)
    argv = build_argv(engine, request(platform="linux/amd64", labels={"a": "b"}, no_cache=True, pull=True))
    assert argv == [
        "/usr/local/bin/docker", "build", "--file", "/ctx/Dockerfile", "--tag", "digits:1",
        "--platform", "linux/amd64", "--label", "a=b", "--pull", "--no-cache", "/ctx",
    ]  # fmt: skip
    assert engine.env({"PATH": "/bin"}) == {"PATH": "/bin", "DOCKER_BUILDKIT": "0"}
    assert Engine("docker", "docker", buildkit=True).env({})["DOCKER_BUILDKIT"] == "1"


@pytest.mark.parametrize("kind", ["podman", "buildah"])
def test_podman_and_buildah_keep_layers_and_the_docker_format(kind: str) -> None:
    argv = build_argv(Engine(kind, f"/usr/bin/{kind}"), request(network="host"))  # type: ignore[arg-type]
    assert argv == [
        f"/usr/bin/{kind}", "build", "--layers", "--format", "docker", "--file", "/ctx/Dockerfile",
        "--tag", "digits:1", "--network", "host", "/ctx",
    ]  # fmt: skip
    assert "DOCKER_BUILDKIT" not in Engine(kind, kind).env({})  # type: ignore[arg-type]


def test_proxy_settings_pass_by_name_only_when_set() -> None:
    environ = {"HTTPS_PROXY": "http://user:secret@proxy:3128", "no_proxy": "localhost", "HTTP_PROXY": ""}
    assert proxy_build_args(environ) == {"HTTPS_PROXY": None, "no_proxy": None}


def test_run_is_hardened_and_publishes_only_off_the_host_network() -> None:
    engine = Engine("docker", "docker")
    argv = run_argv(engine, RunRequest(image="digits:1", name="c1", port=8123, env={"A": "1"}))
    assert argv == [
        "docker", "run", "--name", "c1", "--detach", "--network", "host",
        "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
        "--user", "10001:10001", "--env", "A=1", "--env", "MODELPOD_PORT=8123", "digits:1",
    ]  # fmt: skip
    bridged = run_argv(engine, RunRequest(image="digits:1", name="c1", port=8123, network="bridge"))
    assert bridged[7:9] == ["--publish", "127.0.0.1:8123:8123"]


def test_push_argv_asks_podman_for_a_digest_file() -> None:
    assert push_argv(Engine("docker", "docker"), "r/x:1") == ["docker", "push", "r/x:1"]
    assert push_argv(Engine("podman", "podman"), "r/x:1", digest_file=Path("/d")) == [
        "podman", "push", "--digestfile", "/d", "r/x:1",
    ]  # fmt: skip


def test_image_references() -> None:
    assert repository_of("registry.example:5000/team/digits:1") == "registry.example:5000/team/digits"
    assert repository_of("digits@sha256:" + "0" * 64) == "digits"
    assert repository_of("localhost:5000/digits") == "localhost:5000/digits"


def test_default_tag(digits_dir: Path) -> None:
    from modelpod.specfile import load_spec

    spec = load_spec(digits_dir)
    assert image_ref(spec) == "digits:latest"
    assert image_ref(spec, "registry.example:5000/digits") == "registry.example:5000/digits:latest"
    assert image_ref(spec, "registry.example:5000/digits:2") == "registry.example:5000/digits:2"


def test_find_engine_by_name_path_and_environment(tmp_path: Path) -> None:
    fake = tmp_path / "podman"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    assert find_engine(None, {"PATH": str(tmp_path)}) == ("podman", str(fake))
    assert find_engine(None, {"PATH": "", "MODELPOD_ENGINE": str(fake)}) == ("podman", str(fake))
    assert find_engine("podman", {"PATH": str(tmp_path)}) == ("podman", str(fake))
    with pytest.raises(EngineNotFoundError, match="none of docker, podman or buildah"):
        find_engine(None, {"PATH": str(tmp_path / "empty")})
    with pytest.raises(EngineNotFoundError, match="'docker' is not installed"):
        find_engine("docker", {"PATH": str(tmp_path)})
    with pytest.raises(EngineNotFoundError, match="unknown container engine 'nerdctl'"):
        find_engine("nerdctl", {"PATH": str(tmp_path)})


class ScriptedRunner:
    """Answers commands from a table (argv tail -> Result); for engine detection without an engine."""

    def __init__(self, answers: Mapping[str, Result]) -> None:
        self.answers = answers
        self.calls: list[list[str]] = []

    def run(self, argv: Sequence[str], *, timeout: float, env: Mapping[str, str] | None = None) -> Result:
        self.calls.append(list(argv))
        return self.answers.get(" ".join(argv[1:]), Result(tuple(argv), 1, "", "unknown command"))

    def stream(self, argv: Sequence[str], **_: object) -> Result:  # pragma: no cover - not used here
        raise NotImplementedError


def test_buildkit_detection_follows_the_client(tmp_path: Path) -> None:
    docker = tmp_path / "docker"
    docker.write_text("#!/bin/sh\n")
    docker.chmod(0o755)
    server = Result((), 0, "20.10.24\n")
    old = ScriptedRunner(
        {
            "version --format {{.Server.Version}}": server,
            "version --format {{.Client.Version}}": Result((), 0, "20.10.24"),
        }
    )
    new = ScriptedRunner(
        {
            "version --format {{.Server.Version}}": server,
            "version --format {{.Client.Version}}": Result((), 0, "28.2.2"),
        }
    )
    buildx = ScriptedRunner(
        {"version --format {{.Server.Version}}": server, "buildx version": Result((), 0, "v0.12")}
    )
    assert connect(str(docker), runner=old, environ={}).buildkit is True
    assert connect(str(docker), runner=new, environ={}).buildkit is False
    assert connect(str(docker), runner=buildx, environ={}).buildkit is True
    assert connect(str(docker), runner=buildx, environ={"DOCKER_BUILDKIT": "0"}).buildkit is False


def test_an_unreachable_daemon_is_a_clear_error() -> None:
    require(Path(docker_path()).is_file(), "the docker client", HOW_TO_GET_AN_ENGINE)
    environ = {**os.environ, "DOCKER_HOST": "unix:///nonexistent"}
    with pytest.raises(EngineUnreachableError) as caught:
        connect(docker_path(), environ=environ)
    assert "does not answer" in str(caught.value)
    assert "DOCKER_HOST=unix:///nonexistent" in str(caught.value)


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--engine", "docker"], {"DOCKER_HOST": "unix:///nonexistent"}, "does not answer"),
        (["--engine", "podman-not-installed"], {}, "is not installed"),
    ],
)
def test_build_without_a_reachable_engine_exits_1_without_traceback(
    digits_dir: Path, tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    require(Path(docker_path()).is_file(), "the docker client", HOW_TO_GET_AN_ENGINE)
    digits_dir = Path(
        shutil.copytree(digits_dir, tmp_path / "digits", ignore=shutil.ignore_patterns(".modelpod"))
    )
    path = f"{Path(docker_path()).parent}{os.pathsep}{os.environ['PATH']}"
    result = subprocess.run(
        [sys.executable, "-m", "modelpod", "build", str(digits_dir), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PATH": path, **env},
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert message in result.stderr
    assert "Hint:" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not (digits_dir / ".modelpod").exists()  # nothing rendered before the engine answered


BUILDKIT_OUTPUT = """\
#4 [deps 1/4] FROM registry.example/library/python:3.11-slim
#6 [deps 2/4] WORKDIR /build
#6 CACHED
#8 [deps 3/4] COPY requirements.lock ./
#8 CACHED
#9 [deps 4/4] RUN --mount=type=cache,target=/root/.cache/pip     python -m venv --without-pip /opt/venv
#9 CACHED
#10 [runtime 3/8] COPY --from=deps /opt/venv /opt/venv
#10 CACHED
#14 [runtime 7/8] COPY code/ /app/
#14 sha256:2a92b4ea5e95b8467a765df8f546df01a68c3d697d2f33b2454e1e25f94c05f2
#14 DONE 0.1s
"""

LEGACY_OUTPUT = """\
Step 1/19 : FROM python:3.11-slim AS deps
 ---> f8830266428b
Step 4/19 : COPY requirements.lock ./
 ---> Using cache
 ---> d0d43f699e35
Step 17/19 : COPY code/ /app/
 ---> 7407ade2e78d
"""


def test_cache_report_reads_buildkit_and_legacy_output() -> None:
    steps = cache_report(BUILDKIT_OUTPUT.splitlines())
    assert [(s.stage, s.instruction.split(" ")[0], s.cached) for s in steps] == [
        ("deps", "WORKDIR", True),
        ("deps", "COPY", True),
        ("deps", "RUN", True),
        ("runtime", "COPY", True),
        ("runtime", "COPY", False),
    ]
    legacy = cache_report(LEGACY_OUTPUT.splitlines())
    assert [(s.instruction, s.cached) for s in legacy] == [
        ("COPY requirements.lock ./", True),
        ("COPY code/ /app/", False),
    ]


def test_layer_groups_sum_history_after_the_base() -> None:
    history = parse_history(
        "0\tENTRYPOINT\n5\tCOPY spec\n7\tCOPY code\n100\tCOPY venv\n3\tRUN useradd\n999\t\n"
    )
    assert history[0] == HistoryEntry(999, "")
    sizes = group_sizes(history, 1, ["system", "dependencies", "code", "spec", "metadata"])
    assert sizes == {"base": 999, "system": 3, "dependencies": 100, "code": 7, "spec": 5, "metadata": 0}
    assert group_sizes(history, 1, ["x"] * 9) == {"base": 999, "modelpod layers": 115}


def probe(tmp_path: Path, environ: dict[str, str] | None = None) -> Probe:
    return Probe({"PATH": str(tmp_path / "bin"), **(environ or {})}, ScriptedRunner({}), tmp_path / "home")


def test_doctor_reads_credentials_and_kubeconfig_without_the_network(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".docker").mkdir(parents=True)
    (home / ".docker" / "config.json").write_text(
        json.dumps({"auths": {"registry.example:5000": {"auth": "eA=="}}})
    )
    (home / ".kube").mkdir()
    (home / ".kube" / "config").write_text("apiVersion: v1\nkind: Config\ncurrent-context: kind-dev\n")
    here = probe(tmp_path)
    assert check_registry("registry.example:5000", None, here).status == "ok"
    missing = check_registry("other.example", None, here)
    assert (missing.status, missing.hint) == ("warn", "`docker login other.example`")
    cluster = check_cluster(here)
    assert cluster.status == "ok"
    assert "kind-dev" in cluster.detail
    no_kubeconfig = check_cluster(probe(tmp_path, {"KUBECONFIG": str(tmp_path / "none")}))
    assert no_kubeconfig.status == "warn"
    assert no_kubeconfig.hint


def test_doctor_gpu_and_buildkit_findings(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    assert check_gpu(probe(tmp_path)).detail.startswith("no NVIDIA GPU here")
    smi = tmp_path / "bin" / "nvidia-smi"
    smi.write_text("#!/bin/sh\n")
    smi.chmod(0o755)
    answers = {
        "--query-gpu=name,memory.total --format=csv,noheader": Result((), 0, "NVIDIA H100, 81559 MiB\n")
    }
    gpu = check_gpu(Probe({"PATH": str(tmp_path / "bin")}, ScriptedRunner(answers), tmp_path))
    assert (gpu.status, gpu.detail) == ("ok", "1 GPU(s): NVIDIA H100, 81559 MiB")
    legacy = check_buildkit(Engine("docker", "docker", buildkit=False))
    assert legacy.status == "warn"
    assert "buildx" in (legacy.hint or "")


def test_doctor_against_the_real_engine(tmp_path: Path) -> None:
    require(Path(docker_path()).is_file(), "the docker client", HOW_TO_GET_AN_ENGINE)
    registry = os.environ.get("ENGINE_UP_REGISTRY")
    findings = {f.check: f for f in run_checks(engine=docker_path(), registry=registry)}
    require(findings["container engine"].status == "ok", "a reachable docker engine", HOW_TO_GET_AN_ENGINE)
    assert findings["BuildKit"].status == "ok"
    assert findings["registry credentials"].status in ("ok", "warn")  # a local registry needs no login
    broken = run_checks(
        engine=docker_path(),
        probe=Probe({**os.environ, "DOCKER_HOST": "unix:///nonexistent"}, Probe.here().runner, tmp_path),
    )
    assert broken[0].status == "fail"
    assert broken[0].hint
    assert "DOCKER_HOST" in broken[0].hint
    result = subprocess.run(
        [sys.executable, "-m", "modelpod", "doctor", "--engine", docker_path()],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "DOCKER_HOST": "unix:///nonexistent", "COLUMNS": "200"},
        check=False,
    )
    assert result.returncode == 1
    assert "container engine" in result.stdout
    assert "fail" in result.stdout
    assert "Traceback" not in result.stderr


def test_run_with_nothing_built_says_so_and_how_to_build(engine: Engine, tmp_path: Path) -> None:
    """The spec's default image was never built: no `docker run` that would try a registry of that
    name (and print its DNS errors), but one line naming the image and `modelpod build`."""
    project = tmp_path / "never-built"
    project.mkdir()
    (project / "model.onnx").write_bytes(b"")
    name = f"modelpod-never-built-{secrets.token_hex(4)}"
    (project / "modelpod.yaml").write_text(f"name: {name}\nmodel: {{path: model.onnx}}\n")
    result = subprocess.run(
        [sys.executable, "-m", "modelpod", "run", str(project), "--engine", engine.executable],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert f"there is no image {name}:latest to run" in result.stderr
    assert f"build one with `modelpod build {project}`" in result.stderr
    assert "Traceback" not in result.stderr
    assert "pull" not in result.stderr.lower()
