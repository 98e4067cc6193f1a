"""The base image pinned at build time: by its repository digest, else (a base built locally) by its
image ID where the builder can build from one; what the build output says; and on the real engine."""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest

from modelpod.images.base import pin, resolve_base
from modelpod.images.engine import Engine
from modelpod.images.errors import EngineError
from modelpod.images.pipeline import QuietReporter
from modelpod.images.runner import Result
from tests.images.conftest import DEFAULT_BASE, docker

DIGEST = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32
IMAGE_ID = "sha256:" + "ef" * 32


@pytest.mark.parametrize(
    ("name", "repo_digests", "expected"),
    [
        ("python:3.11-slim", [f"python@{DIGEST}"], f"python:3.11-slim@{DIGEST}"),
        ("docker.io/library/python:3", [f"python@{DIGEST}"], f"docker.io/library/python:3@{DIGEST}"),
        ("python", [f"other/python@{OTHER}", f"python@{DIGEST}"], f"python@{DIGEST}"),
        ("127.0.0.1:5000/team/b:1", [f"127.0.0.1:5000/team/b@{DIGEST}"], f"127.0.0.1:5000/team/b:1@{DIGEST}"),
        ("localhost/base:1", [f"localhost/base@{DIGEST}"], f"localhost/base:1@{DIGEST}"),
    ],
)  # fmt: skip
def test_a_repository_digest_pins_the_base(name: str, repo_digests: list[str], expected: str) -> None:
    for id_in_from in (True, False):
        base = pin(name, repo_digests, IMAGE_ID, id_in_from=id_in_from)
        assert (base.ref, base.digest, base.image_id) == (expected, expected.rpartition("@")[2], IMAGE_ID)
        assert "pinned by digest" in base.how


def test_a_locally_built_base_falls_back_to_its_image_id_and_says_so() -> None:
    # a digest of another repository says nothing about this name
    legacy = pin("python:3.11-slim", [f"mirror.example/python@{OTHER}"], IMAGE_ID, id_in_from=True)
    assert (legacy.ref, legacy.digest, legacy.image_id) == (IMAGE_ID, None, IMAGE_ID)
    assert "no registry digest" in legacy.how
    assert IMAGE_ID in legacy.how
    buildkit = pin("python:3.11-slim", [], IMAGE_ID, id_in_from=False)
    assert (buildkit.ref, buildkit.digest, buildkit.image_id) == ("python:3.11-slim", None, IMAGE_ID)
    assert "cannot build FROM an image ID" in buildkit.how
    assert IMAGE_ID in buildkit.how


class ScriptedRunner:
    """Answers `image inspect` from `images` (name -> stdout), `pull` by adding `pullable` images."""

    def __init__(self, images: dict[str, str], pullable: dict[str, str] | None = None) -> None:
        self.images = dict(images)
        self.pullable = pullable or {}
        self.calls: list[list[str]] = []

    def run(self, argv: Sequence[str], *, timeout: float, env: Mapping[str, str] | None = None) -> Result:
        self.calls.append(list(argv))
        name = argv[-1]
        if name in self.images:
            return Result(tuple(argv), 0, self.images[name])
        return Result(tuple(argv), 1, "", f"Error: No such image: {name}")

    def stream(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        on_line: Callable[[str], None],
        env: Mapping[str, str] | None = None,
    ) -> Result:
        self.calls.append(list(argv))
        name = argv[-1]
        if name not in self.pullable:
            return Result(tuple(argv), 1, "", "pull access denied")
        on_line(f"pulled {name}")
        self.images[name] = self.pullable[name]
        return Result(tuple(argv), 0, "")


def engine_with(runner: ScriptedRunner, kind: str = "docker", buildkit: bool = True) -> Engine:
    return Engine(kind, f"/usr/bin/{kind}", buildkit=buildkit, runner=runner)  # type: ignore[arg-type]


def test_a_present_base_is_inspected_not_pulled() -> None:
    runner = ScriptedRunner({"python:3.11-slim": f'["python@{DIGEST}"]\t{IMAGE_ID}\n'})
    reporter = QuietReporter()
    base = resolve_base(engine_with(runner), "python:3.11-slim", pull=False, reporter=reporter)
    assert base.ref == f"python:3.11-slim@{DIGEST}"
    assert runner.calls == [
        [
            "/usr/bin/docker",
            "image",
            "inspect",
            "--format",
            "{{json .RepoDigests}}\t{{.Id}}",
            "python:3.11-slim",
        ]
    ]
    assert reporter.events == []


@pytest.mark.parametrize("pull", [False, True])
def test_an_absent_base_or_pull_fetches_it_first(pull: bool) -> None:
    present = {} if not pull else {"python:3.11-slim": f'["python@{OTHER}"]\t{IMAGE_ID}\n'}
    runner = ScriptedRunner(present, pullable={"python:3.11-slim": f'["python@{DIGEST}"]\t{IMAGE_ID}\n'})
    reporter = QuietReporter()
    base = resolve_base(engine_with(runner), "python:3.11-slim", pull=pull, reporter=reporter)
    assert base.ref == f"python:3.11-slim@{DIGEST}"  # the digest after the pull
    assert ["/usr/bin/docker", "pull", "python:3.11-slim"] in runner.calls
    assert reporter.events == ["pulling the base image python:3.11-slim"]
    assert reporter.lines == ["pulled python:3.11-slim"]


def test_a_base_that_cannot_be_found_or_pulled_is_a_clear_error() -> None:
    with pytest.raises(EngineError, match="cannot find or pull the base image nope:1"):
        resolve_base(engine_with(ScriptedRunner({})), "nope:1", pull=False, reporter=QuietReporter())


def test_a_base_pinned_in_the_spec_and_buildah_need_no_engine() -> None:
    runner = ScriptedRunner({})
    pinned = resolve_base(engine_with(runner), f"python@{DIGEST}", pull=True, reporter=QuietReporter())
    assert (pinned.ref, pinned.digest) == (f"python@{DIGEST}", DIGEST)
    buildah = resolve_base(
        engine_with(runner, "buildah"), "python:3.11-slim", pull=False, reporter=QuietReporter()
    )
    assert buildah.ref == "python:3.11-slim"
    assert "not pinned" in buildah.how
    assert runner.calls == []


# --- on the engine engine-up starts ------------------------------------------------------------------


@pytest.mark.slow
def test_the_real_engine_pins_a_local_base_by_id_and_a_pulled_one_by_digest(
    engine: Engine, registry: str, tmp_path: Path
) -> None:
    name = os.environ.get("ENGINE_UP_BASE_IMAGE", DEFAULT_BASE)  # built locally: no registry digest
    local = resolve_base(engine, name, pull=False, reporter=QuietReporter())
    image_id = docker("image", "inspect", "--format", "{{.Id}}", name).stdout.strip()
    assert local.image_id == image_id
    assert local.ref == (image_id if not engine.buildkit else name)
    remote_name = f"{registry}/modelpod-test/base:{secrets.token_hex(3)}"
    assert docker("tag", name, remote_name).returncode == 0
    assert docker("push", remote_name, timeout=600).returncode == 0
    assert docker("rmi", remote_name).returncode == 0
    pulled = resolve_base(engine, remote_name, pull=False, reporter=QuietReporter())  # pulls it: absent
    assert pulled.digest is not None
    assert pulled.ref == f"{remote_name}@{pulled.digest}"
    assert pulled.image_id == image_id
    # the engine builds FROM what was pinned, in both cases
    for base in (local, pulled):
        (tmp_path / "Dockerfile").write_text(f"FROM {base.ref}\nRUN true\n")
        built = subprocess.run(
            [engine.executable, "build", "--quiet", "--network", "host", str(tmp_path)],
            capture_output=True, text=True, timeout=300, check=False, env=engine.env(),
        )  # fmt: skip
        assert built.returncode == 0, built.stderr
    docker("rmi", remote_name, pulled.ref.replace(remote_name, remote_name.rpartition(":")[0]))
