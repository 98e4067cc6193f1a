"""`modelpod bench` and `modelpod plan` from the command line against a real `modelpod serve examples/digits`.

Steps are short (1 s, a few steps): these tests check what the commands report and write, never how
fast anything is.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from modelpod.bench import _deps
from modelpod.bench.plot import figure
from modelpod.errors import ModelpodError
from modelpod.specfile import load_spec
from tests.server_process import ServerProcess

PERCENTILES = {"p50", "p90", "p99", "p99_9", "mean", "max"}


def modelpod(
    *args: str, cwd: Path | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "modelpod", *args], capture_output=True, text=True, cwd=cwd,
                          input=stdin, timeout=180, check=False)  # fmt: skip


@pytest.fixture(scope="module")
def digits_server(digits_dir: Path) -> Iterator[ServerProcess]:
    with ServerProcess(digits_dir) as server:
        yield server


@pytest.fixture(scope="module")
def sweep(digits_server: ServerProcess, digits_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A three-step closed-loop sweep, its JSON and plot in a folder of their own."""
    folder = tmp_path_factory.mktemp("sweep")
    result = modelpod(
        "bench", str(digits_dir), "--url", digits_server.url, "--sweep", "--steps", "3", "--duration", "1",
        "--warmup", "0.3", "--max-p99", "60000", "--json", str(folder / "bench.json"),
        "--plot", str(folder / "bench.png"),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr + digits_server.log[-3000:]
    assert "knee: 4 " in result.stdout  # every step is within a limit of a minute
    return folder


def test_sweep_json_has_every_step_with_percentiles_and_the_server_view(sweep: Path) -> None:
    result = json.loads((sweep / "bench.json").read_text())
    assert result["mode"] == "closed"
    assert result["endpoint"] == "/predict"
    assert [step["load"] for step in result["steps"]] == [1, 2, 4]
    assert result["knee"] == 2
    assert result["server"]["startup_s"] > result["server"]["model_load_s"] > 0
    for step in result["steps"]:
        latency = step["latency_ms"]
        assert set(latency) == PERCENTILES
        assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["p99_9"] <= latency["max"]
        assert step["ok"] > 0
        assert step["errors"] == {}
        assert step["throughput_rps"] == pytest.approx(step["ok"] / step["seconds"], rel=0.01)
        server = step["server"]
        # the server counted the measured window's requests (and the tail the client saw end in it)
        assert server["codes"]["200"] >= step["ok"] * 0.9
        assert server["mean_batch_ms"] > 0
        assert server["mean_outside_model_ms"] >= 0
        assert server["mean_batch_size"] >= 1
        assert sum(server["batch_sizes"].values()) == server["batches"]
        assert server["cpu_cores"] > 0
        assert server["rss_bytes"] > 10 * 2**20


def test_plot_is_a_png_with_latency_and_throughput_curves(sweep: Path) -> None:
    data = (sweep / "bench.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk
    assert (width, height) == (800, 700)
    result = json.loads((sweep / "bench.json").read_text())
    latency, throughput = figure(result).axes
    latency_labels = {line.get_label() for line in latency.get_lines()}
    assert {"p50", "p90", "p99", "p99.9", "knee (4)"} <= latency_labels
    (answered,) = [line for line in throughput.get_lines() if line.get_label().startswith("answered")]
    assert list(answered.get_xdata()) == [1, 2, 4]
    assert list(answered.get_ydata()) == [step["throughput_rps"] for step in result["steps"]]


def test_open_loop_step_counts_at_the_offered_rate(digits_server: ServerProcess, digits_dir: Path) -> None:
    result = modelpod("bench", str(digits_dir), "--url", digits_server.url, "--rate", "50", "--duration", "2",
                      "--warmup", "0.2", "--json", "/dev/stdout")  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout[result.stdout.index("{\n") : result.stdout.rindex("}") + 1])
    (step,) = data["steps"]
    assert data["mode"] == "open"
    assert step["load"] == 50
    assert 40 <= step["requests"] <= 160  # Poisson arrivals at 50/s for 2 s: 100 expected
    assert step["errors"] == {}


def test_plan_from_the_sweep_writes_the_profile(sweep: Path, digits_dir: Path, tmp_path: Path) -> None:
    project = tmp_path / "digits"
    project.mkdir()
    for name in ("modelpod.yaml", "example.json"):
        shutil.copy(digits_dir / name, project / name)
    original = (project / "modelpod.yaml").read_text()
    bench = str(sweep / "bench.json")
    refused = modelpod("plan", str(project), "--bench", bench, "--rps", "100", "--p99", "60000",
                       "--write", "prod", stdin="")  # fmt: skip
    assert refused.returncode == 1
    assert "pass --yes" in refused.stderr
    assert "+    scaling:" in refused.stdout  # the diff was shown
    assert (project / "modelpod.yaml").read_text() == original
    written = modelpod("plan", str(project), "--bench", bench, "--rps", "100", "--p99", "60000",
                       "--write", "prod", "--yes")  # fmt: skip
    assert written.returncode == 0, written.stderr
    assert "scaling.replicas" in written.stdout
    text = (project / "modelpod.yaml").read_text()
    assert text.startswith(original.split("  prod:")[0])  # comments and everything before prod kept
    profile = yaml.safe_load(text)["profiles"]["prod"]
    result = json.loads((sweep / "bench.json").read_text())
    best = max(result["steps"], key=lambda s: s["throughput_rps"])
    assert profile["scaling"]["replicas"] == -(-100 // best["throughput_rps"]) + 1
    assert set(profile["resources"]) == {"cpu", "memory"}
    spec = load_spec(project, "prod", require_model=False)
    assert spec.scaling.replicas == profile["scaling"]["replicas"]
    assert spec.resources.memory == profile["resources"]["memory"]


def test_plan_refuses_an_slo_no_step_met(sweep: Path) -> None:
    result = modelpod("plan", "--bench", str(sweep / "bench.json"), "--rps", "10", "--p99", "0.001")
    assert result.returncode == 1
    assert "no step of the bench met p99 <= 0.001 ms" in result.stderr
    assert "Traceback" not in result.stderr


def test_bench_against_nothing_is_one_clear_error(digits_dir: Path) -> None:
    result = modelpod("bench", str(digits_dir), "--url", "http://127.0.0.1:9", "--duration", "1")
    assert result.returncode == 1
    assert "cannot reach http://127.0.0.1:9/predict" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_extra_names_it() -> None:
    with pytest.raises(ModelpodError) as caught:
        _deps.require("modelpod_no_such_package")
    assert "pip install 'modelpod[bench]'" in str(caught.value)
