"""A bench run: one load step, or a sweep that raises the load step by step until a limit breaks.

A sweep starts at the given concurrency (closed loop) or rate (open loop) and multiplies it by `factor`
each step, for at most `max_steps` steps; the first step whose p99 latency or error rate is over its limit
ends it. That step is kept, so the plot shows the limit being crossed; the knee is the step before it.
The server's /metrics is read before and after every step (server_metrics.py).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal

from modelpod.bench._deps import check_load_generator
from modelpod.bench.workload import Workload
from modelpod.errors import ModelpodError


@dataclass(frozen=True)
class BenchSettings:
    url: str
    mode: Literal["closed", "open"]
    start: float  # concurrency, or requests per second
    duration_s: float = 10.0
    warmup_s: float = 2.0
    sweep: bool = False
    factor: float = 2.0
    max_steps: int = 8
    max_p99_ms: float = 1000.0
    max_error_rate: float = 0.01
    timeout_s: float = 30.0
    max_connections: int = 1000
    seed: int = 0

    def levels(self) -> list[float]:
        """The loads to try, in order: the start, then each times the factor (whole callers, rising)."""
        if not self.sweep:
            return [self.start]
        levels = [self.start]
        while len(levels) < self.max_steps:
            level = levels[-1] * self.factor
            levels.append(float(max(math.ceil(level), levels[-1] + 1)) if self.mode == "closed" else level)
        return levels


StepStarted = Callable[[int, Any], None]  # (step index, Load)


def run_bench(
    settings: BenchSettings,
    workload: Workload,
    *,
    on_step: StepStarted | None = None,
    on_progress: Callable[[Any], None] | None = None,
) -> dict[str, Any]:
    """Run the steps and return the result (report.py describes its shape)."""
    _check(settings)
    check_load_generator()
    return _run(_bench(settings, workload, on_step, on_progress))


def _check(settings: BenchSettings) -> None:
    problems = [
        (settings.start > 0, "the starting load (--concurrency or --rate) must be above 0"),
        (settings.mode == "open" or float(settings.start).is_integer(), "--concurrency must be whole"),
        (settings.duration_s > 0, "--duration must be above 0"),
        (settings.warmup_s >= 0, "--warmup must be 0 or more"),
        (settings.factor > 1, "--factor must be above 1"),
        (settings.max_steps >= 1, "--steps must be 1 or more"),
        (settings.timeout_s > 0, "--timeout must be above 0"),
        (settings.max_connections >= 1, "--max-connections must be 1 or more"),
        (0 <= settings.max_error_rate <= 1, "--max-error-rate must be between 0 and 1"),
        (settings.max_p99_ms > 0, "--max-p99 must be above 0"),
    ]
    for ok, message in problems:
        if not ok:
            raise ModelpodError(message)


async def _bench(
    settings: BenchSettings,
    workload: Workload,
    on_step: StepStarted | None,
    on_progress: Callable[[Any], None] | None,
) -> dict[str, Any]:
    from modelpod.bench import report, server_metrics
    from modelpod.bench.loadgen import Load, run_step

    await _preflight(settings.url, workload, settings.timeout_s)
    limits = report.Limits(settings.max_p99_ms, settings.max_error_rate)
    first = await server_metrics.scrape(settings.url, settings.timeout_s)
    steps: list[dict[str, Any]] = []
    for index, level in enumerate(settings.levels()):
        load = Load(settings.mode, level)
        if on_step is not None:
            on_step(index, load)
        # the server's counters from the start of the measured window, after the warm-up
        before_task = asyncio.create_task(_scrape_later(settings.warmup_s, settings.url, settings.timeout_s))
        record = await run_step(
            settings.url, workload, load,
            duration=settings.duration_s, warmup=settings.warmup_s, timeout=settings.timeout_s,
            max_connections=settings.max_connections, seed=settings.seed + index, on_progress=on_progress,
        )  # fmt: skip
        before = await before_task
        after = await server_metrics.scrape(settings.url, settings.timeout_s)
        figures = server_metrics.step_figures(before, after, workload.path) if before and after else None
        steps.append(report.step_summary(record, figures, limits))
        if not steps[-1]["within_limits"]:
            break
    return {
        "version": report.VERSION,
        "url": settings.url,
        "endpoint": workload.path,
        "mode": settings.mode,
        "settings": {"duration_s": settings.duration_s, "warmup_s": settings.warmup_s,
                     "timeout_s": settings.timeout_s, "sweep": settings.sweep},
        "limits": {"max_p99_ms": limits.max_p99_ms, "max_error_rate": limits.max_error_rate},
        "server": server_metrics.startup_figures(first) if first else None,
        "steps": steps,
        "knee": report.knee(steps),
    }  # fmt: skip


async def _scrape_later(delay: float, url: str, timeout: float) -> Any:
    from modelpod.bench import server_metrics

    await asyncio.sleep(delay)
    return await server_metrics.scrape(url, timeout)


async def _preflight(url: str, workload: Workload, timeout: float) -> None:
    """One request before the load, so that a wrong URL or a body the server refuses is one clear error
    instead of a step full of failures."""
    import aiohttp

    endpoint = url.rstrip("/") + workload.path
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.post(
                endpoint, data=workload.bodies[0], headers={"content-type": "application/json"}
            ) as r,
        ):
            text = await r.text()
            status = r.status
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        raise ModelpodError(
            f"cannot reach {endpoint}: {exc}",
            hint="is the server running? start one with `modelpod serve`, `modelpod run`, or "
            "`kubectl port-forward svc/NAME 8080:80` for a cluster",
        ) from None
    if status != 200:
        raise ModelpodError(
            f"{endpoint} answered the first request with {status}: {text[:300]}",
            hint="check --url and --endpoint, and that the request bodies suit the model",
        )


def _run(coroutine: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    """On uvloop when it is installed: less of the client's CPU per request, on a machine it shares."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    result: dict[str, Any] = uvloop.run(coroutine)
    return result
