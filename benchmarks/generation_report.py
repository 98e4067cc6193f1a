"""The summary and the markdown tables of benchmarks/generation.py: pure functions of its rounds.

Each figure is the median over rounds of that round's figure. A ratio is computed within each round
first (a server's run over the raw limit measured around the same round, at the batch size equal to
the concurrency; modelpod's run over another server's in the same round), then its median is taken.
"""

from __future__ import annotations

import statistics
from typing import Any


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _raw_of_round(record: dict[str, Any], concurrency: int) -> float | None:
    measured = [
        record[key]["tokens_per_s"][str(concurrency)]
        for key in ("raw_before", "raw_after")
        if key in record and str(concurrency) in record[key]["tokens_per_s"]
    ]
    return sum(measured) / len(measured) if measured else None


def _run(record: dict[str, Any], name: str, index: int) -> dict[str, Any] | None:
    server = record["servers"].get(name)
    if not server or "runs" not in server or index >= len(server["runs"]):
        return None
    return dict(server["runs"][index])


def summarise(rounds: list[dict[str, Any]], concurrencies: list[int]) -> dict[str, Any]:
    names = sorted(
        {name for r in rounds for name, server in r["servers"].items() if "runs" in server},
        key=lambda n: (n != "modelpod", n),
    )
    skipped = {name: s["skipped"] for r in rounds for name, s in r["servers"].items() if "skipped" in s}
    prefill = [r[k]["prefill_ms"] for r in rounds for k in ("raw_before", "raw_after") if k in r]
    summary: dict[str, Any] = {
        "raw_prefill_ms": _median(prefill),
        "skipped": skipped,
        "by_concurrency": [],
    }
    for index, concurrency in enumerate(concurrencies):
        raw_by_round = [_raw_of_round(r, concurrency) for r in rounds]
        entry: dict[str, Any] = {
            "concurrency": concurrency,
            "raw_tokens_per_s": _median([x for x in raw_by_round if x is not None]),
            "raw_by_round": raw_by_round,
            "servers": {},
        }
        for name in names:
            pairs = [
                (r, run, raw)
                for r, raw in zip(rounds, raw_by_round, strict=True)
                if (run := _run(r, name, index))
            ]
            runs = [run for _, run, _ in pairs]
            to_raw = [run["output_tokens_per_s"] / raw for _, run, raw in pairs if raw]
            row: dict[str, Any] = {
                "tokens_per_s": _median([run["output_tokens_per_s"] for run in runs]),
                "tokens_per_s_by_round": [run["output_tokens_per_s"] for run in runs],
                "ttft_p50_ms": _median([run["ttft_ms"]["p50"] for run in runs if run["ttft_ms"]["p50"]]),
                "ttft_p99_ms": _median([run["ttft_ms"]["p99"] for run in runs if run["ttft_ms"]["p99"]]),
                "itl_p50_ms": _median([run["itl_ms"]["p50"] for run in runs if run["itl_ms"]["p50"]]),
                "itl_p99_ms": _median([run["itl_ms"]["p99"] for run in runs if run["itl_ms"]["p99"]]),
                "requests": _median([run["requests"] for run in runs]),
                "errors": sum(run["errors"] for run in runs),
                "tokens_per_chunk": _median(
                    [run["tokens_per_chunk"] for run in runs if run["tokens_per_chunk"]]
                ),
                "rss_mb": _median([run["rss_mb"] for run in runs]),
                "client_cpu_us_per_token": _median(
                    [run["client_cpu_us_per_token"] for run in runs if run["client_cpu_us_per_token"]]
                ),
                "ratio_to_raw": _median(to_raw),
                "ratio_to_raw_by_round": [round(x, 3) for x in to_raw],
                "rounds": len(runs),
            }
            if name == "modelpod":
                over_best = []
                for r, run, _ in pairs:
                    peers = [
                        p["output_tokens_per_s"] for n in names if n != name and (p := _run(r, n, index))
                    ]
                    if peers and max(peers) > 0:
                        over_best.append(run["output_tokens_per_s"] / max(peers))
                row["modelpod_over_best_peer"] = _median(over_best)
                row["modelpod_over_best_peer_by_round"] = [round(x, 3) for x in over_best]
            else:
                over = [
                    modelpod["output_tokens_per_s"] / run["output_tokens_per_s"]
                    for r, run, _ in pairs
                    if (modelpod := _run(r, "modelpod", index)) and run["output_tokens_per_s"] > 0
                ]
                row["modelpod_over_it"] = _median(over)
            entry["servers"][name] = row
        entry["behind_modelpod"] = _behind_modelpod(rounds, names, index)
        summary["by_concurrency"].append(entry)
    return summary


def _behind_modelpod(rounds: list[dict[str, Any]], names: list[str], index: int) -> dict[str, Any]:
    """For each external engine measured alone (`vllm`) and behind modelpod (`modelpod-vllm`): modelpod's
    output tokens/s over the engine's, and what it adds to the TTFT p50, within each round; and the
    GGUF example's own choice (`modelpod-llamacpp`, what `auto` picks for it) over the best engine alone."""
    found: dict[str, Any] = {}
    engines = [n for n in names if f"modelpod-{n}" in names]
    for engine in engines:
        ratios, added = [], []
        for record in rounds:
            alone, behind = _run(record, engine, index), _run(record, f"modelpod-{engine}", index)
            if alone and behind and alone["output_tokens_per_s"] > 0:
                ratios.append(behind["output_tokens_per_s"] / alone["output_tokens_per_s"])
                if alone["ttft_ms"]["p50"] and behind["ttft_ms"]["p50"]:
                    added.append(behind["ttft_ms"]["p50"] - alone["ttft_ms"]["p50"])
        found[engine] = {
            "tokens_per_s_ratio": _median(ratios),
            "tokens_per_s_ratio_by_round": [round(x, 3) for x in ratios],
            "ttft_p50_added_ms": _median(added),
            "ttft_p50_added_ms_by_round": [round(x, 1) for x in added],
        }
    over_best = []
    for record in rounds:
        auto = _run(record, "modelpod-llamacpp", index)
        alone = [run["output_tokens_per_s"] for e in engines if (run := _run(record, e, index))]
        if auto and alone and max(alone) > 0:
            over_best.append(auto["output_tokens_per_s"] / max(alone))
    if over_best:
        found["gguf_auto_over_best_engine_alone"] = _median(over_best)
    return found


def _fmt(value: float | None, pattern: str = "{:.1f}") -> str:
    return "-" if value is None else pattern.format(value)


def render_markdown(report: dict[str, Any]) -> str:
    summary = report.get("summary") or {"by_concurrency": [], "skipped": {}, "raw_prefill_ms": None}
    settings, machine = report["settings"], report["machine"]
    rounds = report["rounds"]
    modes = {n: s["mode"] for r in rounds for n, s in r["servers"].items() if "mode" in s}
    lines = [
        f"### Text generation: SmolLM2-135M-Instruct ({len(rounds)} rounds, {machine['date']})",
        "",
        f"Streaming chat completions of 16 prompts, greedy, max_tokens {settings['max_tokens']} with EOS "
        f"banned; closed loop, {settings['warmup']} s of warm-up and {settings['duration']} s measured per "
        "concurrency. Figures are medians over rounds; ratios are taken within each round first.",
        "",
        "Servers: " + "; ".join(f"{n}: {m}" for n, m in modes.items()) + ".",
        "",
    ]
    probes = {n: s["probe"] for r in rounds for n, s in r["servers"].items() if "probe" in s}
    if probes:
        lines += [
            f"Asked for {settings['max_tokens']} tokens on a question answered in a few (EOS ignored?): "
            + ", ".join(f"{n} {p['tokens']}" for n, p in probes.items())
            + "; tokens counted from the usage the server reports: "
            + ", ".join(
                f"{n} {'yes' if p['usage_reported'] else 'no (content chunks)'}" for n, p in probes.items()
            )
            + ".",
            "",
        ]
    for name, why in summary["skipped"].items():
        lines += [f"Left out: {name}: {why.splitlines()[0]}", ""]
    raw_info = report.get("raw_info") or {}
    for entry in summary["by_concurrency"]:
        concurrency = entry["concurrency"]
        lines += [f"#### Concurrency {concurrency}", ""]
        if entry["raw_tokens_per_s"] is not None:
            text = (
                f"Raw limit (transformers `generate`, static batch of {concurrency}): "
                f"**{entry['raw_tokens_per_s']:.1f} output tokens/s**"
            )
            if concurrency == 1 and summary["raw_prefill_ms"] is not None:
                tokens = (raw_info.get("prompt_tokens") or ["?"])[0]
                text += f"; prefill of one prompt ({tokens} tokens): {summary['raw_prefill_ms']:.1f} ms"
            lines += [text + ".", ""]
        lines += [
            "| server | output tokens/s | TTFT p50 ms | TTFT p99 ms | ITL p50 ms | ITL p99 ms | requests "
            "| errors | tokens/chunk | RSS MB | vs raw limit | modelpod over it |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, row in entry["servers"].items():
            versus = _fmt(row.get("modelpod_over_it"), "{:.2f}") if name != "modelpod" else "1.00"
            lines.append(
                f"| {name} | {_fmt(row['tokens_per_s'])} | {_fmt(row['ttft_p50_ms'])} "
                f"| {_fmt(row['ttft_p99_ms'])} | {_fmt(row['itl_p50_ms'])} | {_fmt(row['itl_p99_ms'])} "
                f"| {_fmt(row['requests'], '{:.0f}')} | {row['errors']} "
                f"| {_fmt(row['tokens_per_chunk'], '{:.2f}')} "
                f"| {_fmt(row['rss_mb'], '{:.0f}')} | {_fmt(row['ratio_to_raw'], '{:.1%}')} | {versus} |"
            )
        behind = entry.get("behind_modelpod") or {}
        for engine, figures in behind.items():
            if engine == "gguf_auto_over_best_engine_alone":
                auto = f"The GGUF example (auto: llamacpp) over the best engine alone: **{figures:.2f}**"
                lines += ["", auto]
                continue
            lines += [
                "",
                f"{engine} behind modelpod over {engine} alone: "
                f"**{_fmt(figures['tokens_per_s_ratio'], '{:.3f}')}** of its output tokens/s (by round: "
                + ", ".join(f"{x:.3f}" for x in figures["tokens_per_s_ratio_by_round"])
                + f"), TTFT p50 **{_fmt(figures['ttft_p50_added_ms'], '{:+.1f}')} ms** (by round: "
                + ", ".join(f"{x:+.1f}" for x in figures["ttft_p50_added_ms_by_round"])
                + ")",
            ]
        modelpod = entry["servers"].get("modelpod")
        if modelpod and modelpod.get("modelpod_over_best_peer") is not None:
            lines += [
                "",
                f"modelpod over the best peer: **{modelpod['modelpod_over_best_peer']:.2f}** (by round: "
                + ", ".join(f"{x:.2f}" for x in modelpod["modelpod_over_best_peer_by_round"])
                + ")",
            ]
        lines.append("")
    cpu = {
        name: row["client_cpu_us_per_token"]
        for entry in summary["by_concurrency"]
        for name, row in entry["servers"].items()
        if entry["concurrency"] == max(e["concurrency"] for e in summary["by_concurrency"])
    }
    if cpu:
        lines += [
            "The load generator's own CPU time per output token at the highest concurrency (µs): "
            + ", ".join(f"{n} {_fmt(v)}" for n, v in cpu.items())
            + ".",
            "",
        ]
    versions = machine["versions"]
    lines += [
        f"Machine: {machine['cpu']}, {machine['cores_available']} cores available, "
        f"{machine['memory_gb']} GiB, load average {machine['loadavg_at_start']} at the start; "
        "versions: "
        + "; ".join(
            f"{env}: " + ", ".join(f"{p} {v}" for p, v in pkgs.items() if p != "llama_cpp_system_info")
            for env, pkgs in versions.items()
        )
        + ".",
    ]
    return "\n".join(lines)
