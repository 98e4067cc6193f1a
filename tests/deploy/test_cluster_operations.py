"""status, logs, scale, delete and the --dry-run diff against a faked API server.

The API server is a fake (tests/deploy/fake_api.py) because none can run on these machines; the
adapter under test is the real lightkube one, over HTTP.
"""

from __future__ import annotations

import pytest

from modelpod.deploy.cluster import ObjectRef
from modelpod.deploy.deployer import DeployOptions, deploy
from modelpod.deploy.operations import (
    delete_release,
    diff_release,
    pods_of_release,
    release_status,
    scale,
    stream_log,
)
from modelpod.deploy.rollout import Waiting
from modelpod.errors import ModelpodError
from tests.deploy.fake_api import BAD, GOOD, NS, RELEASE, FakeApi, FakeClock, crash_loop, manifests


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()


@pytest.fixture
def options() -> DeployOptions:
    clock = FakeClock()
    return DeployOptions(waiting=Waiting(timeout_s=30, interval_s=1, clock=clock, sleep=clock.sleep))


def deployed(api: FakeApi, options: DeployOptions, **kwargs: object) -> FakeApi:
    objects = manifests(GOOD, **kwargs)  # type: ignore[arg-type]
    deploy(api.cluster(), objects, release=RELEASE, namespace=NS, image=GOOD, options=options)
    return api


def test_status_shows_revision_replicas_and_pods(api: FakeApi, options: DeployOptions) -> None:
    deployed(api, options)
    state = release_status(api.cluster(), release=RELEASE, namespace=NS)
    assert state.revision is not None
    assert (state.revision.number, state.revision.status, state.revision.image) == (1, "deployed", GOOD)
    [workload] = state.workloads
    assert (workload.name, workload.desired, workload.updated, workload.available) == ("digits", 2, 2, 2)
    assert "Available=True (MinimumReplicasAvailable)" in workload.conditions
    assert [(p.phase, p.ready, p.restarts) for p in state.pods] == [("Running", "1/1", 0)] * 2


def test_status_of_a_crash_looping_release_shows_the_problem(api: FakeApi, options: DeployOptions) -> None:
    api.behaviours[BAD] = crash_loop(["boom"])
    with pytest.raises(ModelpodError):
        deploy(api.cluster(), manifests(BAD), release=RELEASE, namespace=NS, image=BAD, options=options)
    state = release_status(api.cluster(), release=RELEASE, namespace=NS)
    assert state.revision is not None
    assert state.revision.status == "failed"
    assert all(p.restarts == 3 and "CrashLoopBackOff" in p.problems[0] for p in state.pods)


def test_status_of_an_unknown_release_is_a_clear_error(api: FakeApi) -> None:
    with pytest.raises(ModelpodError, match="no release 'digits' in namespace 'models'"):
        release_status(api.cluster(), release=RELEASE, namespace=NS)


def test_logs_of_the_release_pods(api: FakeApi, options: DeployOptions) -> None:
    deployed(api, options)
    pods = pods_of_release(api.cluster(), release=RELEASE, namespace=NS)
    assert len(pods) == 2
    api.logs[pods[0]] = [f"line {i}" for i in range(10)]
    assert api.cluster().pod_log(pods[0], namespace=NS, tail_lines=3) == ["line 7", "line 8", "line 9"]
    lines: list[str] = []
    assert stream_log(api.cluster(), pods[0], namespace=NS, on_line=lines.append, timeout_s=5)
    assert lines == [f"line {i}" for i in range(10)]
    assert api.calls("GET", f"/pods/{pods[0]}/log")[-1][2]["follow"] == "true"


def test_scale_applies_the_recorded_deployment_with_new_replicas(
    api: FakeApi, options: DeployOptions
) -> None:
    deployed(api, options)
    ref, warnings = scale(api.cluster(), release=RELEASE, namespace=NS, replicas=5)
    assert ref == ObjectRef("apps/v1", "Deployment", "digits", NS)
    deployment = api.get("deployments", RELEASE, NS)
    assert deployment is not None
    assert deployment["spec"]["replicas"] == 5
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == GOOD
    assert api.calls("PATCH", "/deployments/")[-1][2]["force"] == "true"
    assert warnings == ["the next deploy or rollback sets the replicas of the spec again"]
    with pytest.raises(ModelpodError, match="replicas must be 0 or more"):
        scale(api.cluster(), release=RELEASE, namespace=NS, replicas=-1)


def test_delete_removes_every_object_and_the_history_but_nothing_else(
    api: FakeApi, options: DeployOptions
) -> None:
    deployed(api, options, config_maps=("digits-a", "digits-b"))
    api.put(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "keep", "namespace": NS}}, "configmaps"
    )

    deleted = delete_release(api.cluster(), release=RELEASE, namespace=NS)

    assert [str(ref) for ref in deleted] == [
        "Deployment/digits",
        "Service/digits",
        "ConfigMap/digits-a",
        "ConfigMap/digits-b",
        "ServiceAccount/digits",
    ]
    assert api.names("configmaps", NS) == {"keep"}
    assert api.names("secrets", NS) == set()
    with pytest.raises(ModelpodError, match="no release 'digits'"):
        delete_release(api.cluster(), release=RELEASE, namespace=NS)


def test_dry_run_diff_shows_changes_without_applying(api: FakeApi, options: DeployOptions) -> None:
    deployed(api, options, config_maps=("digits-a", "digits-b"))
    changed = manifests(BAD, config_maps=("digits-a",))
    before = {key: dict(obj) for key, obj in api.objects.items()}

    diffs = {str(d.ref): d for d in diff_release(api.cluster(), changed, release=RELEASE, namespace=NS)}

    assert {name: d.action for name, d in diffs.items()} == {
        "ServiceAccount/digits": "unchanged",
        "ConfigMap/digits-a": "unchanged",
        "Service/digits": "unchanged",
        "Deployment/digits": "update",
        "ConfigMap/digits-b": "delete",
    }
    deployment_diff = diffs["Deployment/digits"].diff
    assert f"-      - image: {GOOD}" in deployment_diff
    assert f"+      - image: {BAD}" in deployment_diff
    assert deployment_diff.startswith("--- live/Deployment/digits\n+++ deploy/Deployment/digits\n")
    assert "managedFields" not in deployment_diff
    assert "resourceVersion" not in deployment_diff
    assert "-  name: digits-b" in diffs["ConfigMap/digits-b"].diff
    assert all(params.get("dryRun") == "All" for _, _, params in api.calls("PATCH")[-4:])
    assert api.objects.keys() == before.keys()
    live = api.get("deployments", RELEASE, NS)
    assert live is not None
    assert live["spec"]["template"]["spec"]["containers"][0]["image"] == GOOD


def test_dry_run_diff_before_the_first_deploy_creates_everything(api: FakeApi) -> None:
    diffs = diff_release(api.cluster(), manifests(GOOD), release=RELEASE, namespace=NS)
    assert [d.action for d in diffs] == ["create"] * 4
    assert "+++ deploy/Deployment/digits" in diffs[-1].diff
    assert api.objects == {}
