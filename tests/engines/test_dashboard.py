"""The rendered dashboard's generation panels against a real Prometheus scraping `modelpod serve` on each
engine: the built-in one (examples/smollm2), llama.cpp and vLLM (tests/engines/conftest.py). Every engine
reports under modelpod's metric names, so the same panels show each one's time to first token, inter-token
latency, tokens, sequences and KV cache."""

from __future__ import annotations

import concurrent.futures
import functools
import math
from pathlib import Path

import httpx
import pytest

from modelpod.deploy.render.monitoring import dashboard, generation_panels
from modelpod.specfile import load_spec
from tests.conftest import prepare_example
from tests.engines.conftest import START_TIMEOUT_S, engine_project, need_engine
from tests.prometheus_process import query, running_prometheus, wait_for
from tests.server_process import ServerProcess

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
SCRAPED_WITHIN_S = 60


@pytest.mark.parametrize("engine", ["builtin", "llamacpp", "vllm"])
def test_the_generation_panels_show_every_engine(engine: str, tmp_path: Path) -> None:
    if engine == "builtin":
        project = prepare_example("smollm2")
    else:
        need_engine(engine)
        project = engine_project(engine, tmp_path)
    spec = load_spec(project)
    titles = {title for title, _ in generation_panels("")}
    panels = [p for p in dashboard(spec)["panels"] if p["title"] in titles]
    assert len(panels) == len(titles), "a language model's dashboard has the generation panels"
    with ServerProcess(project, start_timeout=START_TIMEOUT_S) as server:
        target = {
            server.url.removeprefix("http://"): {"namespace": spec.kubernetes.namespace, "pod": f"{engine}-0"}
        }
        (tmp_path / "prometheus").mkdir()
        with running_prometheus(tmp_path / "prometheus", target) as prometheus:

            def generate(i: int) -> int:
                body = {"prompt": f"Story {i}:", "max_tokens": 16, "stream": True, "ignore_eos": True}
                with httpx.stream("POST", f"{server.url}/v1/completions", json=body, timeout=120) as answer:
                    assert answer.status_code == 200
                    return sum(1 for line in answer.iter_lines() if line.startswith("data: {"))

            # requests over a few scrapes, so that every rate has two samples with tokens between them
            with concurrent.futures.ThreadPoolExecutor(4) as pool:
                assert all(chunks >= 16 for chunks in pool.map(generate, range(12)))

            def has_data(expr: str) -> bool:
                return any(math.isfinite(float(sample["value"][1])) for sample in query(prometheus, expr))

            exprs = [(panel["title"], t["expr"]) for panel in panels for t in panel["targets"]]
            for title, expr in exprs:
                wait_for(functools.partial(has_data, expr), SCRAPED_WITHIN_S,
                         functools.partial(explain, prometheus, title, expr))  # fmt: skip
            generated = query(prometheus, panels[2]["targets"][1]["expr"])  # generated tokens per second
            assert float(generated[0]["value"][1]) > 0


def explain(prometheus: str, title: str, expr: str) -> str:
    return f"{title}: {expr} -> {query(prometheus, expr)}"
