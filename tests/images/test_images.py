"""Real images on a real engine: the digits (ONNX) and minilm (transformers) examples, each built once
per session (BuildKit), run hardened, asked for their examples, stopped with SIGTERM, pushed to the
local registry and pulled back by digest; a rebuild after a user-code change; the legacy builder.

Measured figures (image sizes, build times, rebuilt layers) are printed; run with `-s` to see them.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from modelpod.images.engine import Engine, connect
from modelpod.images.errors import EngineError
from modelpod.images.pipeline import BuildResult, QuietReporter, push_image
from modelpod.images.smoke import free_port
from modelpod.inference import predict_examples
from modelpod.specfile import load_spec
from modelpod.specfile.load import spec_digest
from tests.images.conftest import copy_example, docker, docker_path
from tests.tools import require

# building an image from a cold cache downloads and installs its dependencies: minutes, not seconds
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

Built = tuple[Path, BuildResult, QuietReporter]
MAX_DIGITS_BYTES = 250 * 1000 * 1000  # "at most 250 MB", as docker counts (it was 297 MB)

# run inside an image with its own python: every compiled module of the environment imports, and every
# other shared library loads (debug symbols are stripped from them at build time)
_LOAD_EVERY_LIBRARY = """
import ctypes, importlib, json, pathlib, sysconfig
root = pathlib.Path(sysconfig.get_path("purelib"))
loaded, failed = 0, []
for path in sorted(root.rglob("*.so*")):
    parts = path.relative_to(root).parts
    try:
        if ".cpython-" in path.name or path.name.endswith(".abi3.so"):
            importlib.import_module(".".join((*parts[:-1], path.name.split(".")[0])))
        else:
            ctypes.CDLL(str(path))
        loaded += 1
    except Exception as exc:
        failed.append(f"{path}: {exc}")
print(json.dumps({"loaded": loaded, "failed": failed}))
"""
_FIND_INSTALLERS = (
    "import importlib.util as u; print([m for m in ('pip', 'setuptools', 'wheel') if u.find_spec(m)])"
)
# run as root with a shell: what the serving image must not hold
_FORBIDDEN = (
    "find / -xdev -type f -perm /6000; "
    "find / -xdev \\( -path '*-packages/pip' -o -path '*-packages/setuptools' -o -path '*-packages/wheel' "
    "-o -path '*/bin/pip*' -o -path '*/ensurepip/_bundled' \\) -print"
)


def inspect(ref: str) -> dict[str, object]:
    result = docker("image", "inspect", ref)
    assert result.returncode == 0, result.stderr
    data: dict[str, object] = json.loads(result.stdout)[0]
    return data


def layers(ref: str) -> list[str]:
    return list(inspect(ref)["RootFS"]["Layers"])  # type: ignore[index]


def test_digits_image_is_small_non_root_labelled_and_smoke_tested(digits_image: Built) -> None:
    directory, result, _ = digits_image
    config: dict[str, object] = inspect(result.image)["Config"]  # type: ignore[assignment]
    print(
        f"\ndigits image: {result.size / 1e6:.1f} MB, built in {result.seconds:.1f}s; groups {result.groups}"
    )
    assert result.size <= MAX_DIGITS_BYTES
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["python", "-m", "modelpod.server", "/app/modelpod.yaml"]
    assert config["ExposedPorts"] == {"8080/tcp": {}}
    assert config["Healthcheck"]["Test"][0] == "CMD"  # type: ignore[index]
    labels: dict[str, str] = config["Labels"]  # type: ignore[assignment]
    assert labels["modelpod.specfile.spec_digest"] == spec_digest(load_spec(directory))
    assert labels["org.opencontainers.image.title"] == "digits"
    assert "org.opencontainers.image.created" in labels
    assert result.smoke is not None
    assert result.smoke.examples == ("seven",)
    assert result.smoke.exit_code == 0
    # every layer group is accounted for, and together they are the image
    assert {"base", "dependencies", "runtime", "weights", "code", "spec"} <= set(result.groups)
    assert sum(result.groups.values()) == result.size
    assert result.groups["weights"] == (directory / "model" / "digits.onnx").stat().st_size


def test_the_base_image_is_pinned_and_recorded(digits_image: Built, engine: Engine) -> None:
    directory, _, reporter = digits_image
    base_name = load_spec(directory).image.base
    record = json.loads((directory / ".modelpod" / "image.json").read_text())["base"]
    assert record["id"] == inspect(base_name)["Id"]
    dockerfile = (directory / ".modelpod" / "build" / "Dockerfile").read_text()
    froms = [line.split() for line in dockerfile.splitlines() if line.startswith("FROM ")]
    stages = {words[-1] for words in froms if len(words) == 4}  # FROM x AS name
    bases = [words[1] for words in froms if words[1] not in stages]
    assert bases == [record["ref"], record["ref"]]  # the build stage and the runtime stage
    if record["digest"]:  # a base pulled from a registry
        assert record["ref"] == f"{base_name}@{record['digest']}"
    else:  # engine-up's base is built locally: the legacy builder takes its ID, BuildKit its tag
        assert record["ref"] == (base_name if engine.buildkit else record["id"])
    assert any(event.startswith(f"base image {base_name}: ") for event in reporter.events)


def test_digits_image_has_no_installer_no_setid_file_and_every_library_loads(digits_image: Built) -> None:
    _, result, _ = digits_image
    forbidden = docker(
        "run", "--rm", "--network", "none", "--user", "0", "--entrypoint", "sh", result.image,
        "-c", _FORBIDDEN,
    )  # fmt: skip
    assert forbidden.returncode == 0, forbidden.stderr
    assert forbidden.stdout == "", forbidden.stdout  # no set-ID program, no pip, setuptools or wheel
    for python in ("python", "/usr/bin/python3"):  # the venv's, and the base's own
        found = docker(
            "run", "--rm", "--network", "none", "--entrypoint", python, result.image, "-c", _FIND_INSTALLERS,
        )  # fmt: skip
        assert (found.returncode, found.stdout.strip()) == (0, "[]"), found.stderr
    libraries = docker(
        "run", "--rm", "--network", "none", "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL",
        "--user", "10001", "--entrypoint", "python", result.image, "-c", _LOAD_EVERY_LIBRARY,
    )  # fmt: skip
    assert libraries.returncode == 0, libraries.stderr
    report = json.loads(libraries.stdout.strip().splitlines()[-1])
    print(f"\ndigits image: {report['loaded']} compiled modules and libraries load")
    assert report["failed"] == []
    assert report["loaded"] >= 20  # numpy, onnxruntime, uvloop, httptools, yaml, orjson, pydantic-core...


def test_sbom_describes_the_image_python_environment(digits_image: Built) -> None:
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    directory, result, _ = digits_image
    assert result.sbom == directory / ".modelpod" / "sbom.cdx.json"
    text = result.sbom.read_text()
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
    components = {c["name"].lower(): c["version"] for c in json.loads(text)["components"]}
    lock = (result.context.directory / "requirements.lock").read_text().splitlines()
    pinned = dict(line.lower().split("==") for line in lock if "==" in line)
    assert components["onnxruntime"] == pinned["onnxruntime"]
    # what was locked is exactly what is installed, plus modelpod itself
    assert {k.replace("_", "-") for k in components} == {k.replace("_", "-") for k in pinned} | {"modelpod"}


def run_hardened(image: str, port: int) -> str:
    name = f"modelpod-test-{secrets.token_hex(4)}"
    result = docker(
        "run", "--detach", "--name", name, "--network", "host", "--read-only", "--tmpfs", "/tmp",
        "--cap-drop", "ALL", "--security-opt", "no-new-privileges", "--user", "10001",
        "--env", f"MODELPOD_PORT={port}", image,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return name


def wait_ready(url: str, name: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/v2/health/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{name} not ready in {timeout}s:\n{docker('logs', '--tail', '40', name).stderr}")


def test_smollm2_image_keeps_its_weights_apart_and_answers_its_chat_example(smollm2_image: Built) -> None:
    directory, result, _ = smollm2_image
    print(
        f"\nsmollm2 image: {result.size / 1e6:.1f} MB, built in {result.seconds:.1f}s; groups {result.groups}"
    )
    weights = sum(f.stat().st_size for f in (directory / "model").iterdir())
    assert result.groups["weights"] == weights  # the weights are a layer of their own
    assert result.smoke is not None
    assert result.smoke.examples == ("capital",)  # the smoke test sent the chat example and found Paris
    assert result.smoke.exit_code == 0


@pytest.mark.parametrize("example", ["digits", "minilm", "smollm2"])
def test_hardened_container_predicts_and_exits_0_on_sigterm(
    example: str, request: pytest.FixtureRequest
) -> None:
    directory, result, _ = request.getfixturevalue(f"{example}_image")
    port = free_port()
    name = run_hardened(result.image, port)
    try:
        wait_ready(f"http://127.0.0.1:{port}", name, timeout=180)
        reports = list(predict_examples(load_spec(directory), url=f"http://127.0.0.1:{port}", timeout=60))
        assert reports
        assert all(not r.problems for r in reports), [r.problems for r in reports]
        assert docker("kill", "--signal", "TERM", name).returncode == 0
        waited = docker("wait", name, timeout=60)
        logs = docker("logs", "--tail", "20", name)
        assert waited.stdout.strip() == "0", logs.stdout + logs.stderr
        assert "drained" in logs.stdout + logs.stderr
    finally:
        docker("rm", "--force", name)


def test_hardened_container_stopped_while_its_model_loads_exits_0_at_once(minilm_image: Built) -> None:
    """A pod deleted during start-up. The server is PID 1, which drops signals it has no handler for: the
    stop used to wait for the model to finish loading (or, in the first second, was lost altogether)."""
    _, result, _ = minilm_image
    name = run_hardened(result.image, free_port())
    try:
        deadline = time.monotonic() + 120
        while '"msg":"serving minilm on' not in (logs := docker("logs", name).stderr):
            assert time.monotonic() < deadline, logs  # uvicorn is up; minilm takes seconds more to load
            time.sleep(0.1)
        sent = time.monotonic()
        assert docker("kill", "--signal", "TERM", name).returncode == 0
        waited = docker("wait", name, timeout=60)
        took = time.monotonic() - sent
        logs = docker("logs", name).stderr
    finally:
        docker("rm", "--force", name)
    assert waited.stdout.strip() == "0", logs
    assert '"msg":"signal 15 while starting: stopping now"' in logs
    assert '"msg":"signal 15: exiting now"' in logs
    assert '"msg":"model minilm ready' not in logs
    assert took < 10, logs  # a bound on the wait, not a benchmark


@pytest.mark.parametrize("example", ["digits", "minilm"])
def test_push_to_the_registry_and_pull_back_by_digest(
    example: str, request: pytest.FixtureRequest, engine: Engine, registry: str
) -> None:
    _, result, _ = request.getfixturevalue(f"{example}_image")
    target = f"{registry}/modelpod-test/{example}:{secrets.token_hex(3)}"
    started = time.monotonic()
    pushed = push_image(engine, result.image, target, QuietReporter())
    print(f"\npushed {pushed} in {time.monotonic() - started:.1f}s")
    assert pushed.startswith(f"{registry}/modelpod-test/{example}@sha256:")
    assert docker("rmi", target).returncode == 0
    assert docker("pull", pushed, timeout=600).returncode == 0
    assert inspect(pushed)["Id"] == result.image_id


def test_rebuild_after_a_user_code_change_reuses_dependency_and_weight_layers(
    digits_image: Built, build_example: Callable[..., Built]
) -> None:
    directory, first, _ = digits_image
    with (directory / "train.py").open("a") as script:
        script.write(f"# edited by the rebuild test {secrets.token_hex(4)}\n")
    _, second, _ = build_example(directory, "modelpod-test/digits:rebuilt")
    rebuilt = [step.instruction for step in second.rebuilt]
    print(f"\nrebuild in {second.seconds:.1f}s; rebuilt steps: {rebuilt}")
    cached = {
        step.instruction.split(" ")[0] + " " + step.instruction.split(" ")[1]: step.cached
        for step in second.steps
    }
    assert cached["COPY requirements.lock"] is True
    assert cached["RUN --mount=type=cache,target=/root/.cache/pip"] is True  # the locked dependencies
    assert cached["COPY --from=deps"] is True
    assert cached["RUN --mount=type=bind,source=dist,target=/tmp/dist"] is True  # the modelpod runtime
    assert cached["COPY --from=modelpod"] is True
    assert cached["COPY weights/"] is True
    assert cached["COPY code/"] is False
    before, after = layers(first.image), layers(second.image)
    # base, user, dependencies, runtime, weights: identical; the code layer is new
    assert after[:-2] == before[:-2]
    assert after[-2] != before[-2]
    assert second.smoke is not None


def test_legacy_builder_builds_and_smoke_tests_digits(
    engine: Engine, digits_dir: Path, tmp_path: Path, session_wheel: Path
) -> None:
    # `engine`: skips (fails in CI) without a reachable engine, like every other image test
    from modelpod.images.context import ContextOptions
    from modelpod.images.pipeline import BuildOptions, build_image

    legacy_client = "/usr/local/bin/docker"  # a newer client without buildx: the legacy builder
    require(Path(legacy_client).is_file(), "a docker client without buildx", "engine-up machines have one")
    try:
        legacy = connect(legacy_client)
    except EngineError as exc:
        pytest.fail(f"the engine does not answer the legacy client: {exc}")
    assert legacy.buildkit is False
    directory = copy_example(digits_dir, tmp_path / "digits")
    reporter = QuietReporter()
    options = BuildOptions(
        tag="modelpod-test/digits:legacy",
        context=ContextOptions(modelpod_wheel=session_wheel),
        network="host",
    )
    result = build_image(legacy, load_spec(directory), options, reporter)
    print(f"\nlegacy builder: {result.size / 1e6:.1f} MB in {result.seconds:.1f}s")
    assert "--mount" not in result.context.dockerfile.read_text()
    assert any(line.startswith("Step ") for line in reporter.lines)
    assert result.steps
    assert result.smoke is not None
    assert result.smoke.exit_code == 0
    assert result.size <= MAX_DIGITS_BYTES


def _ctrl_c_as_in_a_terminal() -> None:
    """SIGINT at its default in the child, as in a terminal. A test run started in the background of a
    non-interactive shell (`make test &`) ignores SIGINT, the child would inherit that, and Python in it
    would then never raise KeyboardInterrupt (seen: `modelpod run` went on serving after the signal)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["ctrl_c", "sigterm"])
def test_modelpod_run_prints_the_url_and_stops_cleanly_on_ctrl_c_or_sigterm(
    digits_image: Built, stop_signal: signal.Signals
) -> None:
    directory, result, _ = digits_image
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "modelpod", "run", str(directory), "--image", result.image,
         "--engine", docker_path(), "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"},
        preexec_fn=_ctrl_c_as_in_a_terminal,
    )  # fmt: skip
    lines: list[str] = []
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 180
        for line in process.stdout:
            lines.append(line)
            if line.startswith("ready"):
                break
            assert time.monotonic() < deadline, "".join(lines)
        assert lines[-1].strip() == f"ready: http://127.0.0.1:{port}", "".join(lines)
        reports = list(predict_examples(load_spec(directory), url=f"http://127.0.0.1:{port}", timeout=30))
        assert not reports[0].problems
        process.send_signal(stop_signal)
        rest, _ = process.communicate(timeout=90)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()  # else a failure here surfaces again as a ResourceWarning in a later test
    assert process.returncode == 0, "".join(lines) + rest
    assert "exited with code 0" in rest
    left = docker(
        "ps", "--all", "--quiet", "--filter", f"ancestor={result.image}", "--filter", "name=modelpod-"
    )
    assert left.stdout.strip() == ""


@pytest.mark.parametrize("fault", ["wrong answer", "model fails to load"])
def test_a_failing_smoke_test_explains_itself_and_blocks_the_push(
    fault: str, digits_image: Built, tmp_path: Path, session_wheel: Path, engine: Engine, registry: str
) -> None:
    from modelpod.images.context import ContextOptions
    from modelpod.images.errors import SmokeTestError
    from modelpod.images.pipeline import BuildOptions, build_image
    from modelpod.images.smoke import SmokeOptions

    directory = copy_example(digits_image[0], tmp_path / "digits")
    if fault == "wrong answer":
        example = json.loads((directory / "example.json").read_text())
        example["expected"]["probabilities"] = list(reversed(example["expected"]["probabilities"]))
        (directory / "example.json").write_text(json.dumps(example))
    else:
        (directory / "model" / "digits.onnx").write_bytes(b"not an onnx graph")
    name = f"modelpod-test/digits-{secrets.token_hex(3)}"
    options = BuildOptions(
        tag=f"{name}:bad",
        context=ContextOptions(modelpod_wheel=session_wheel),
        network="host",
        smoke_options=SmokeOptions(ready_timeout_s=60),
        push_to=f"{registry}/{name}:bad",
    )
    with pytest.raises(SmokeTestError) as caught:
        build_image(engine, load_spec(directory), options, QuietReporter())
    message = str(caught.value)
    print(f"\n{message}")
    expected = "got a wrong answer" if fault == "wrong answer" else "exited with code 1 before it was ready"
    assert expected in message
    assert caught.value.log_lines  # the container's own words
    assert "container log (last lines)" in message
    # the push never happened
    tags = httpx.get(f"http://{registry}/v2/{name}/tags/list", timeout=10)
    assert tags.status_code == 404
    assert docker("ps", "--all", "--quiet", "--filter", f"ancestor={name}:bad").stdout.strip() == ""
