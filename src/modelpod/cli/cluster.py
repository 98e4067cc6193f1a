"""Commands deploy, status, logs, history, rollback, scale, delete, train: a release on a cluster.

Importing this module registers them on the app. Each command loads the spec, connects to the cluster
of the current kubeconfig context (`connect`, which tests replace), calls one library function from
`modelpod.deploy` and prints. lightkube is imported only inside `connect`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from modelpod.cli.base import ProfileOption, SpecPath, app, err, out

if TYPE_CHECKING:
    from modelpod.deploy.cluster import Cluster
    from modelpod.deploy.rollout import Progress
    from modelpod.specfile.resolved import Spec

NamespaceOption = Annotated[
    str | None, typer.Option("--namespace", "-n", help="Namespace; default: the spec's kubernetes.namespace.")
]
ContextOption = Annotated[str | None, typer.Option("--context", help="kubeconfig context; default: current.")]
TimeoutOption = Annotated[
    float, typer.Option("--timeout", min=1, help="Seconds to wait for the rollout before rolling back.")
]
IntervalOption = Annotated[float, typer.Option("--poll-interval", min=0.1, help="Seconds between checks.")]
HistoryMaxOption = Annotated[int, typer.Option(min=1, help="Revisions to keep in the history.")]
AllowTagOption = Annotated[bool, typer.Option("--allow-tag", help="Accept an image without a digest.")]


def connect(context: str | None) -> Cluster:
    """The cluster adapter the commands use (tests replace this function with a faked API server)."""
    from modelpod.deploy.cluster import load_cluster

    return load_cluster(context)


def _release(spec_path: Path, profile: str | None, namespace: str | None) -> tuple[Spec, str]:
    """The spec (with --namespace in place of kubernetes.namespace, so everything renders there)."""
    from modelpod.specfile import load_spec

    spec = load_spec(spec_path, profile, require_model=False)
    if namespace:
        kubernetes = spec.kubernetes.model_copy(update={"namespace": namespace})
        spec = spec.model_copy(update={"kubernetes": kubernetes})
    return spec, spec.kubernetes.namespace


class _RichReporter:
    """Steps as lines on stderr; the rollout as a live progress bar of available replicas."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self._bar = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            TextColumn("{task.fields[detail]}", markup=False),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        )
        self._tasks: dict[str, Any] = {}

    def step(self, message: str) -> None:
        self._bar.console.print(message, markup=False, highlight=False)

    def progress(self, progress: Progress) -> None:
        if progress.deployment not in self._tasks:
            self._bar.start()
            self._tasks[progress.deployment] = self._bar.add_task(
                f"rollout {progress.deployment}", total=max(progress.desired, 1), detail=""
            )
        self._bar.update(
            self._tasks[progress.deployment],
            total=max(progress.desired, 1),
            completed=progress.available if progress.updated >= progress.desired else progress.updated,
            detail=progress.message,
        )

    def close(self) -> None:
        self._bar.stop()


def _options(**kwargs: Any) -> Any:
    from modelpod.deploy.deployer import DeployOptions
    from modelpod.deploy.rollout import Waiting

    waiting = Waiting(timeout_s=kwargs.pop("timeout"), interval_s=kwargs.pop("poll_interval"))
    return DeployOptions(waiting=waiting, **kwargs)


@app.command()
def deploy(
    spec: SpecPath = Path(),
    profile: ProfileOption = None,
    image: Annotated[str, typer.Option("--image", help="Image by digest, REPOSITORY@sha256:...")] = "",
    namespace: NamespaceOption = None,
    context: ContextOption = None,
    target: Annotated[
        str, typer.Option(help="kubernetes, or kserve for an InferenceService.")
    ] = "kubernetes",
    allow_tag: AllowTagOption = False,
    timeout: TimeoutOption = 300.0,
    poll_interval: IntervalOption = 2.0,
    smoke: Annotated[
        bool,
        typer.Option("--smoke-test/--no-smoke-test", help="Send the spec's examples through the Service."),
    ] = True,
    smoke_timeout: Annotated[float, typer.Option(min=1, help="Seconds the smoke test may take.")] = 60.0,
    rollback_on_failure: Annotated[
        bool, typer.Option("--rollback/--no-rollback", help="Roll back to the last good revision on failure.")
    ] = True,
    force_conflicts: Annotated[
        bool, typer.Option("--force-conflicts", help="Take over fields another field manager owns.")
    ] = False,
    history_max: HistoryMaxOption = 10,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the diff against the cluster only.")
    ] = False,
) -> None:
    """Apply to the cluster, follow the rollout, smoke-test, and roll back on failure."""
    from modelpod.deploy import deployer
    from modelpod.deploy.render import render_manifests

    if not image:
        raise typer.BadParameter("required: the image to run, REPOSITORY@sha256:...", param_hint="--image")
    resolved, ns = _release(spec, profile, namespace)
    manifests = render_manifests(resolved, image=image, target=target, allow_tag=allow_tag)  # type: ignore[arg-type]
    cluster = connect(context)
    if dry_run:
        _print_diff(cluster, manifests, release=resolved.name, namespace=ns, force=force_conflicts)
        return
    options = _options(
        timeout=timeout,
        poll_interval=poll_interval,
        force_conflicts=force_conflicts,
        smoke_test=smoke,
        smoke_timeout_s=smoke_timeout,
        rollback_on_failure=rollback_on_failure,
        history_max=history_max,
    )
    reporter = _RichReporter()
    try:
        result = deployer.deploy(
            cluster,
            manifests,
            release=resolved.name,
            namespace=ns,
            image=image,
            examples=resolved.examples,
            options=options,
            report=reporter,
        )
    finally:
        reporter.close()
    tested = f"; smoke test passed: {escape(', '.join(result.smoke_tested))}" if result.smoke_tested else ""
    out.print(
        f"[green]deployed[/] {resolved.name} revision {result.revision.number} in namespace {ns}: "
        f"{len(result.applied)} object(s) applied, {len(result.pruned)} pruned{tested}"
    )


def _print_diff(cluster: Cluster, manifests: list[dict[str, Any]], **kwargs: Any) -> None:
    from modelpod.deploy.operations import diff_release

    diffs = diff_release(cluster, manifests, **kwargs)
    for item in diffs:
        colour = {"create": "green", "update": "yellow", "delete": "red"}.get(item.action, "dim")
        err.print(f"[{colour}]{item.action}[/] {escape(str(item.ref))}")
        if item.action != "unchanged":
            sys.stdout.write(item.diff)
    changed = sum(item.action != "unchanged" for item in diffs)
    err.print(f"dry run: {changed} of {len(diffs)} object(s) would change; nothing was applied")


@app.command()
def status(
    spec: SpecPath = Path(),
    profile: ProfileOption = None,
    namespace: NamespaceOption = None,
    context: ContextOption = None,
) -> None:
    """The deployed revision, its Deployments' replicas and its pods."""
    from rich.table import Table

    from modelpod.deploy.operations import release_status

    resolved, ns = _release(spec, profile, namespace)
    state = release_status(connect(context), release=resolved.name, namespace=ns)
    if state.revision:
        r = state.revision
        out.print(
            f"{state.release} in {state.namespace}: revision {r.number} ({r.status}), image {r.image}",
            markup=False,
        )
    for workload in state.workloads:
        out.print(
            f"Deployment/{workload.name}: {workload.available}/{workload.desired} available, "
            f"{workload.updated} updated; " + ", ".join(workload.conditions),
            markup=False,
        )
    table = Table("POD", "PHASE", "READY", "RESTARTS", "PROBLEMS")
    for pod in state.pods:
        row = (pod.name, pod.phase, pod.ready, str(pod.restarts), "; ".join(pod.problems))
        table.add_row(*map(escape, row))
    out.print(table)


@app.command()
def history(
    spec: SpecPath = Path(),
    profile: ProfileOption = None,
    namespace: NamespaceOption = None,
    context: ContextOption = None,
) -> None:
    """The release's revisions, oldest first."""
    from rich.table import Table

    from modelpod.deploy.release import History

    resolved, ns = _release(spec, profile, namespace)
    revisions = History(connect(context), resolved.name, ns).revisions()
    if not revisions:
        err.print(f"no release {resolved.name!r} in namespace {ns!r}", markup=False)
        raise typer.Exit(1)
    table = Table("REVISION", "STATUS", "CREATED", "IMAGE", "DESCRIPTION")
    for r in revisions:
        table.add_row(*map(escape, (str(r.number), r.status, r.created, r.image, r.description)))
    out.print(table)


@app.command()
def rollback(
    spec: SpecPath = Path(),
    profile: ProfileOption = None,
    to: Annotated[
        int | None, typer.Option("--to", help="Revision to restore; default: the last good one.")
    ] = None,
    namespace: NamespaceOption = None,
    context: ContextOption = None,
    timeout: TimeoutOption = 300.0,
    poll_interval: IntervalOption = 2.0,
    history_max: HistoryMaxOption = 10,
) -> None:
    """Restore every object of an earlier revision (as a new revision), and wait for its rollout."""
    from modelpod.deploy import deployer

    resolved, ns = _release(spec, profile, namespace)
    options = _options(timeout=timeout, poll_interval=poll_interval, history_max=history_max)
    reporter = _RichReporter()
    try:
        result = deployer.rollback(
            connect(context), release=resolved.name, namespace=ns, to=to, options=options, report=reporter
        )
    finally:
        reporter.close()
    done = result.revision
    out.print(f"[green]rolled back[/] {resolved.name}: revision {done.number} ({escape(done.description)})")


@app.command()
def logs(
    spec: SpecPath = Path(),
    profile: ProfileOption = None,
    namespace: NamespaceOption = None,
    context: ContextOption = None,
    tail: Annotated[int, typer.Option(min=1, help="Lines from the end of each pod's log.")] = 50,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Stream one pod's log.")] = False,
    pod: Annotated[str | None, typer.Option(help="Only this pod; default: every pod of the release.")] = None,
    timeout: Annotated[
        float, typer.Option(min=1, help="With --follow, stop after this many seconds.")
    ] = 3600.0,
) -> None:
    """The last log lines of the release's pods, or one pod's log as it is written."""
    from modelpod.deploy.operations import pods_of_release, stream_log

    resolved, ns = _release(spec, profile, namespace)
    cluster = connect(context)
    pods = [pod] if pod else pods_of_release(cluster, release=resolved.name, namespace=ns)
    if not pods:
        err.print(f"{resolved.name} has no pods in namespace {ns}", markup=False)
        raise typer.Exit(1)
    if follow:
        ended = stream_log(cluster, pods[0], namespace=ns, on_line=_print_line, timeout_s=timeout)
        if not ended:
            err.print(f"[yellow]stopped following after {timeout:g}s[/]")
        return
    from modelpod.deploy.cluster import ClusterError

    for name in pods:
        err.print(f"[bold]==> {name}[/]")
        try:
            lines = cluster.pod_log(name, namespace=ns, tail_lines=tail)
        except ClusterError as exc:  # one pod not started yet should not hide the others' logs
            err.print(f"[yellow](no log: {escape(exc.message)})[/]")
            continue
        for line in lines:
            _print_line(line)


def _print_line(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


@app.command()
def scale(
    replicas: Annotated[int, typer.Argument(min=0, help="Replicas to run.")],
    spec: SpecPath = Path(),
    profile: ProfileOption = None,
    namespace: NamespaceOption = None,
    context: ContextOption = None,
) -> None:
    """Set the number of replicas of the release's Deployment (until the next deploy or rollback)."""
    from modelpod.deploy.operations import scale as scale_release

    resolved, ns = _release(spec, profile, namespace)
    ref, warnings = scale_release(connect(context), release=resolved.name, namespace=ns, replicas=replicas)
    out.print(f"scaled {escape(str(ref))} to {replicas} replica(s)")
    for warning in warnings:
        err.print(f"[yellow]note:[/] {escape(warning)}")


@app.command()
def delete(
    spec: SpecPath = Path(),
    profile: ProfileOption = None,
    namespace: NamespaceOption = None,
    context: ContextOption = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    keep_history: Annotated[bool, typer.Option(help="Keep the release's history records.")] = False,
) -> None:
    """Delete every object of the release (and, unless --keep-history, its history)."""
    from modelpod.deploy.operations import delete_release

    resolved, ns = _release(spec, profile, namespace)
    if not yes and not typer.confirm(f"Delete release {resolved.name} from namespace {ns}?"):
        raise typer.Exit(1)
    deleted = delete_release(connect(context), release=resolved.name, namespace=ns, keep_history=keep_history)
    names = escape(", ".join(map(str, deleted)))
    out.print(f"deleted {len(deleted)} object(s) of {resolved.name}: {names}")


@app.command()
def train(
    spec: SpecPath = Path(),
    profile: ProfileOption = None,
    on_cluster: Annotated[bool, typer.Option("--cluster", help="Run as a Kubernetes Job.")] = False,
    image: Annotated[str, typer.Option(help="With --cluster: the image by digest.")] = "",
    allow_tag: AllowTagOption = False,
    run_id: Annotated[str | None, typer.Option(help="Names the Job; default: the time.")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="With --cluster: stream the log.")] = False,
    namespace: NamespaceOption = None,
    context: ContextOption = None,
    timeout: Annotated[float, typer.Option(min=1, help="Seconds to wait for training to finish.")] = 6
    * 3600.0,
    poll_interval: IntervalOption = 2.0,
) -> None:
    """Run the spec's training command here, or with --cluster as a batch/v1 Job."""
    from modelpod.deploy import training

    resolved, _ = _release(spec, profile, namespace)
    if not on_cluster:
        training.train_local(resolved, on_line=_print_line, timeout_s=timeout)
        out.print("[green]training finished[/]")
        return
    from modelpod.deploy.render import render_training_job
    from modelpod.deploy.rollout import Waiting

    if not image:
        raise typer.BadParameter("required with --cluster: REPOSITORY@sha256:...", param_hint="--image")
    job = render_training_job(
        resolved, image=image, run_id=run_id or time.strftime("%Y%m%d-%H%M%S").lower(), allow_tag=allow_tag
    )
    outcome = training.train_on_cluster(
        connect(context),
        job,
        follow=follow,
        on_line=_print_line,
        waiting=Waiting(timeout_s=timeout, interval_s=poll_interval),
    )
    out.print(f"Job {outcome.job} in namespace {outcome.namespace}: {escape(outcome.state)}")
