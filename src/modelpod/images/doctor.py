"""`modelpod doctor`: what this machine has for building, running and deploying images.

Each check returns a `Finding` with a status (ok, warn, fail) and a fix-it hint. Nothing here reaches
the network: the cluster check reads the kubeconfig, the registry check reads the engine's credential
files. `Probe` is the adapter to the machine (environment, files, commands), replaceable in tests.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from modelpod.images.engine import Engine, connect
from modelpod.images.errors import EngineError
from modelpod.images.runner import CommandRunner, SubprocessRunner

Status = Literal["ok", "warn", "fail"]


@dataclass(frozen=True)
class Finding:
    check: str
    status: Status
    detail: str
    hint: str | None = None


@dataclass(frozen=True)
class Probe:
    environ: Mapping[str, str]
    runner: CommandRunner
    home: Path

    @classmethod
    def here(cls) -> Probe:
        return cls(dict(os.environ), SubprocessRunner(), Path.home())


def run_checks(
    *, engine: str | None = None, registry: str | None = None, probe: Probe | None = None
) -> list[Finding]:
    probe = probe or Probe.here()
    findings, connected = check_engine(engine, probe)
    if connected is not None:
        findings.append(check_buildkit(connected))
    findings.append(check_registry(registry, connected, probe))
    findings.append(check_cluster(probe))
    findings.append(check_gpu(probe))
    return findings


def check_engine(name: str | None, probe: Probe) -> tuple[list[Finding], Engine | None]:
    try:
        engine = connect(name, runner=probe.runner, environ=probe.environ, timeout_s=15)
    except EngineError as exc:
        found = "not found" not in exc.message and "unknown" not in exc.message
        status: Status = "fail"
        detail = exc.message.splitlines()[0] + (
            " " + " ".join(exc.message.splitlines()[1:]).strip() if found else ""
        )
        return [Finding("container engine", status, detail.strip(), exc.hint)], None
    return [
        Finding("container engine", "ok", f"{engine.kind} {engine.version} at {engine.executable}")
    ], engine


def check_buildkit(engine: Engine) -> Finding:
    if engine.kind != "docker":
        return Finding("BuildKit", "ok", f"{engine.kind} builds with its own builder (layers cached)")
    if engine.buildkit:
        return Finding("BuildKit", "ok", "available: pip's cache persists between builds (cache mounts)")
    return Finding(
        "BuildKit",
        "warn",
        "not available: the legacy builder works, without cache mounts (slower rebuilds of dependencies)",
        "install the docker buildx plugin (docker-buildx-plugin), or use a docker client that has it",
    )


def check_registry(registry: str | None, engine: Engine | None, probe: Probe) -> Finding:
    configs = _credential_files(engine, probe)
    auths: dict[str, Any] = {}
    helpers: list[str] = []
    for path in configs:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        auths.update(data.get("auths") or {})
        helpers += [str(data["credsStore"])] if data.get("credsStore") else []
        helpers += list((data.get("credHelpers") or {}).keys())
    login = f"{engine.kind if engine else 'docker'} login {registry or 'REGISTRY'}"
    if registry is None:
        known = ", ".join(sorted(auths)) or "none"
        return Finding(
            "registry credentials", "ok", f"logged in to: {known}", "pass --registry HOST to check one"
        )
    if any(_same_registry(registry, key) for key in auths) or registry in helpers:
        return Finding("registry credentials", "ok", f"credentials for {registry} found")
    if helpers:
        return Finding(
            "registry credentials", "warn", f"no entry for {registry}; a credential helper may have one",
            f"`{login}` if pushing fails",
        )  # fmt: skip
    return Finding(
        "registry credentials", "warn", f"no credentials for {registry} (fine for a registry without auth)",
        f"`{login}`",
    )  # fmt: skip


def _credential_files(engine: Engine | None, probe: Probe) -> list[Path]:
    docker_dir = Path(probe.environ.get("DOCKER_CONFIG") or probe.home / ".docker")
    files = [docker_dir / "config.json"]
    if engine is None or engine.kind != "docker":
        runtime = probe.environ.get("XDG_RUNTIME_DIR")
        files += [Path(runtime) / "containers" / "auth.json"] if runtime else []
        files.append(probe.home / ".config" / "containers" / "auth.json")
    return [f for f in files if f.is_file()]


def _same_registry(registry: str, key: str) -> bool:
    """Whether a credentials key (a host, or a URL such as https://HOST/v1/) names `registry`."""
    host = key.removeprefix("https://").removeprefix("http://").split("/", 1)[0]
    return host == registry


def check_cluster(probe: Probe) -> Finding:
    import yaml

    paths = [Path(p) for p in probe.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    paths = paths or [probe.home / ".kube" / "config"]
    existing = [p for p in paths if p.is_file()]
    if not existing:
        return Finding(
            "cluster context", "warn", f"no kubeconfig ({', '.join(map(str, paths))})",
            "point KUBECONFIG at a cluster's config (e.g. `kind create cluster`) to deploy",
        )  # fmt: skip
    for path in existing:
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            return Finding("cluster context", "fail", f"cannot read {path}: {exc}", "fix or regenerate it")
        current = data.get("current-context")
        if current:
            return Finding("cluster context", "ok", f"current context {current!r} in {path} (not contacted)")
    return Finding(
        "cluster context", "warn", "the kubeconfig sets no current context",
        "`kubectl config use-context NAME`, or pass --context to deploy commands",
    )  # fmt: skip


def check_gpu(probe: Probe) -> Finding:
    smi = shutil.which("nvidia-smi", path=probe.environ.get("PATH"))
    if smi is None:
        return Finding(
            "GPU", "ok", "no NVIDIA GPU here (nvidia-smi not found): CPU models only",
            "GPU models need NVIDIA drivers and the NVIDIA Container Toolkit",
        )  # fmt: skip
    try:
        result = probe.runner.run([smi, "--query-gpu=name,memory.total", "--format=csv,noheader"], timeout=15)
    except EngineError as exc:
        return Finding("GPU", "warn", f"nvidia-smi did not answer: {exc.message}", "check the NVIDIA driver")
    if not result.ok:
        return Finding("GPU", "warn", f"nvidia-smi failed: {result.tail(2)}", "check the NVIDIA driver")
    gpus = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    return Finding("GPU", "ok", f"{len(gpus)} GPU(s): {'; '.join(gpus)}")
