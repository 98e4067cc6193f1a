"""`modelpod train`: the spec's training command, run here as a subprocess or on a cluster as a Job.

Both ways stream the command's output line by line and stop at a timeout: locally the process is
terminated (then killed); on a cluster the wait ends and the Job is left to its own
activeDeadlineSeconds, which the renderer sets from the spec.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import IO, Any, cast

from modelpod.deploy.cluster import Cluster, ClusterError, Manifest, ObjectRef
from modelpod.deploy.operations import stream_log
from modelpod.deploy.rollout import FATAL_WAITING_REASONS, Waiting, container_problems, describe_pod
from modelpod.errors import ModelpodError
from modelpod.specfile.resolved import Spec

JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
_TAIL = 20


class TrainingError(ModelpodError):
    """The training command failed, or did not finish within its timeout."""


@dataclass(frozen=True)
class JobOutcome:
    job: str
    namespace: str
    state: str  # submitted, succeeded (failed raises TrainingError)


def train_local(
    spec: Spec,
    *,
    on_line: Callable[[str], None],
    timeout_s: float,
    extra_env: Mapping[str, str] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Run train.command in the spec's directory, streaming its output; raise unless it exits 0.

    A command starting with `python` runs on the Python that runs modelpod, so that the packages it
    trained and served with are there even when its virtual environment is not activated."""
    command = _command(spec)
    if command[0] in ("python", "python3"):
        command[0] = sys.executable
    output_dir = spec.root / spec.train.output_dir
    env = {**os.environ, **spec.train.env, "MODELPOD_OUTPUT_DIR": str(output_dir), **(extra_env or {})}
    try:
        process = subprocess.Popen(
            command,
            cwd=spec.root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
    except OSError as exc:
        raise TrainingError(
            f"cannot start the training command {command[0]!r}: {exc.strerror or exc}",
            hint="train.command runs in the spec's directory; is the program installed and on PATH?",
        ) from None
    tail: list[str] = []

    def forward(line: str) -> None:
        tail.append(line)
        on_line(line)

    with process:  # closes the pipe and reaps the process on every way out
        finished = _pump(cast(IO[str], process.stdout), on_line=forward, clock=clock, timeout_s=timeout_s)
        if not finished:
            _stop(process)
            raise TrainingError(
                f"training did not finish within {timeout_s:g}s and was stopped",
                hint="raise --timeout, or make the training shorter",
            )
        code = process.wait(timeout=30)
    if code != 0:
        last = "\n".join(f"  {line}" for line in tail[-_TAIL:])
        raise TrainingError(f"the training command {' '.join(command)} exited with code {code}:\n{last}")


def _pump(
    stream: IO[str], *, on_line: Callable[[str], Any], clock: Callable[[], float], timeout_s: float
) -> bool:
    """Forward lines until the stream ends (True) or the timeout passes (False); reads on a thread."""
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        try:
            for line in stream:
                lines.put(line.rstrip("\n"))
        except (ValueError, OSError):  # the pipe was closed under us after a timeout
            pass
        finally:
            lines.put(None)

    threading.Thread(target=read, name="train-output", daemon=True).start()
    deadline = clock() + timeout_s
    while (remaining := deadline - clock()) > 0:
        try:
            line = lines.get(timeout=min(remaining, 0.5))
        except queue.Empty:
            continue
        if line is None:
            return True
        on_line(line)
    return False


def _stop(process: subprocess.Popen[str]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def _command(spec: Spec) -> list[str]:
    if not spec.train.command:
        raise TrainingError(
            f"{spec.source} has no training command",
            hint='set train.command, e.g. train: {command: ["python", "train.py"]}',
        )
    return list(spec.train.command)


def train_on_cluster(
    cluster: Cluster,
    job: Manifest,
    *,
    follow: bool,
    on_line: Callable[[str], None],
    waiting: Waiting,
) -> JobOutcome:
    """Create the Job; with `follow`, stream its pod's log and wait for it to finish (bounded)."""
    ref = ObjectRef.of(job)
    namespace = ref.namespace or "default"
    try:
        cluster.create(job)
    except ClusterError as exc:
        if exc.status == 409:
            raise TrainingError(
                f"Job {ref.name} exists already in namespace {namespace}", hint="pass another --run-id"
            ) from None
        raise
    if not follow:
        return JobOutcome(ref.name, namespace, "submitted")
    deadline = waiting.clock() + waiting.timeout_s
    pod = waiting.poll(lambda: _started_pod(cluster, ref, namespace, waiting), deadline=deadline)
    if pod is None:
        raise TrainingError(
            f"Job {ref.name} has no running pod after {waiting.timeout_s:g}s",
            hint=f"kubectl describe job {ref.name} -n {namespace}; raise --timeout",
        )
    remaining = max(0.0, deadline - waiting.clock())
    pod_name = pod["metadata"]["name"]
    stream_log(
        cluster, pod_name, namespace=namespace, on_line=on_line, timeout_s=remaining, clock=waiting.clock
    )
    outcome = waiting.poll(lambda: _finished_job(cluster, ref, namespace), deadline=deadline)
    if outcome is None:
        raise TrainingError(
            f"Job {ref.name} did not finish within {waiting.timeout_s:g}s; it goes on running",
            hint=f"follow it later with kubectl logs -f job/{ref.name} -n {namespace}",
        )
    return outcome


def _started_pod(cluster: Cluster, ref: ObjectRef, namespace: str, waiting: Waiting) -> Manifest | None:
    """The Job's newest pod once it runs or has finished, else None; fails fast on an image that
    cannot start."""
    pods = cluster.list("v1", "Pod", namespace=namespace, labels={JOB_NAME_LABEL: ref.name})
    if not pods:
        return None
    pods.sort(key=lambda pod: pod["metadata"].get("creationTimestamp", ""))
    pod = pods[-1]
    if pod.get("status", {}).get("phase") in ("Running", "Succeeded", "Failed"):
        return pod
    fatal = [m for reason, m in container_problems(pod) if reason in FATAL_WAITING_REASONS]
    if fatal:
        report = describe_pod(cluster, pod, waiting=waiting)
        raise TrainingError(f"Job {ref.name} cannot start: {fatal[0]}\n{report.render()}")
    return None


def _finished_job(cluster: Cluster, ref: ObjectRef, namespace: str) -> JobOutcome | None:
    """The outcome once the Job has completed, else None; a failed Job raises TrainingError."""
    job = cluster.get(ref)
    if job is None:
        raise TrainingError(f"Job {ref.name} disappeared while it ran")
    for condition in job.get("status", {}).get("conditions", []):
        if condition.get("status") != "True":
            continue
        if condition.get("type") == "Complete":
            return JobOutcome(ref.name, namespace, "succeeded")
        if condition.get("type") == "Failed":
            raise TrainingError(
                f"Job {ref.name} failed: {condition.get('reason', '')}: {condition.get('message', '')}",
                hint=f"modelpod logs the pod, or kubectl describe job {ref.name} -n {namespace}",
            )
    return None
