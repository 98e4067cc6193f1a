"""deploy, the rollout wait, automatic rollback, prune, history and rollback against a faked API server.

The API server is a fake (tests/deploy/fake_api.py) because no Kubernetes API server can run on these
machines; the code under test is the real lightkube-based adapter talking HTTP to it. Waits use an
injected clock whose sleep only advances time, so timeouts are exercised without real waiting.
"""

from __future__ import annotations

import base64
import gzip
import json
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from modelpod.deploy.cluster import ClusterError, LightkubeCluster
from modelpod.deploy.deployer import DeployOptions, RolloutFailed, deploy, rollback
from modelpod.deploy.release import History, encode
from modelpod.deploy.rollout import Waiting
from modelpod.errors import ModelpodError
from tests.deploy.fake_api import (
    BAD,
    EXAMPLE,
    GOOD,
    LABELS,
    NS,
    RELEASE,
    SELECTOR,
    FakeApi,
    FakeClock,
    crash_loop,
    deadline_exceeded,
    doubling,
    image_pull_fails,
    kubeconfig,
    manifests,
    meta,
    never_ready,
)


@pytest.fixture
def api() -> FakeApi:
    fake = FakeApi()
    fake.predictors[GOOD] = doubling
    return fake


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def options(clock: FakeClock) -> DeployOptions:
    waiting = Waiting(timeout_s=60, interval_s=1, log_lines=5, clock=clock, sleep=clock.sleep)
    return DeployOptions(waiting=waiting, smoke_timeout_s=10)


def run_deploy(api: FakeApi, options: DeployOptions, image: str = GOOD, **kwargs: Any) -> Any:
    objects = kwargs.pop("objects", None) or manifests(image)
    return deploy(
        api.cluster(),
        objects,
        release=RELEASE,
        namespace=NS,
        image=image,
        examples=[EXAMPLE],
        options=options,
    )


def statuses(api: FakeApi) -> list[tuple[int, str]]:
    return [(r.number, r.status) for r in History(api.cluster(), RELEASE, NS).revisions()]


def deployed_image(api: FakeApi) -> str:
    deployment = api.get("deployments", RELEASE, NS)
    assert deployment is not None
    return str(deployment["spec"]["template"]["spec"]["containers"][0]["image"])


# -- a successful deploy ------------------------------------------------------------------------------


def test_first_deploy_applies_in_dependency_order_records_history_and_smoke_tests(
    api: FakeApi, options: DeployOptions
) -> None:
    result = run_deploy(api, options)

    applies = [
        (path.split("/")[-2], params) for _, path, params in api.calls("PATCH") if "/secrets/" not in path
    ]
    assert [plural for plural, _ in applies] == ["serviceaccounts", "configmaps", "services", "deployments"]
    assert all(p["fieldManager"] == "modelpod" and "force" not in p and "dryRun" not in p for _, p in applies)
    assert result.revision.number == 1
    assert result.revision.status == "deployed"
    assert [str(ref) for ref in result.applied] == [
        "ServiceAccount/digits",
        "ConfigMap/digits-config",
        "Service/digits",
        "Deployment/digits",
    ]
    assert result.pruned == ()
    assert result.smoke_tested == ("seven",)
    proxy = api.calls("POST", "/proxy/")
    assert [path for _, path, _ in proxy] == ["/api/v1/namespaces/models/services/digits:http/proxy/predict"]
    assert statuses(api) == [(1, "deployed")]


def test_release_record_is_a_labelled_secret_holding_compressed_manifests(
    api: FakeApi, options: DeployOptions
) -> None:
    run_deploy(api, options)

    record = api.get("secrets", "modelpod.release.v1.digits.v1", NS)
    assert record is not None
    assert record["type"] == "modelpod.dev/release.v1"
    assert record["metadata"]["labels"] == {
        "modelpod.dev/release": "digits",
        "modelpod.dev/revision": "1",
        "modelpod.dev/status": "deployed",
        "app.kubernetes.io/managed-by": "modelpod",
    }
    payload = json.loads(gzip.decompress(base64.b64decode(record["data"]["release"])))
    assert payload["image"] == GOOD
    assert payload["status"] == "deployed"
    assert [m["kind"] for m in payload["manifests"]] == [
        "ServiceAccount",
        "ConfigMap",
        "Service",
        "Deployment",
    ]


def test_rollout_progress_is_reported_until_available(api: FakeApi, options: DeployOptions) -> None:
    seen = []

    class Recorder:
        def step(self, message: str) -> None:
            pass

        def progress(self, progress: Any) -> None:
            seen.append((progress.updated, progress.available, progress.desired))

    deploy(
        api.cluster(),
        manifests(),
        release=RELEASE,
        namespace=NS,
        image=GOOD,
        options=options,
        report=Recorder(),
    )
    assert seen[0] == (1, 0, 2)
    assert seen[-1] == (2, 2, 2)


def test_force_conflicts_is_off_unless_asked(api: FakeApi, options: DeployOptions) -> None:
    api.conflicts.add(("deployments", RELEASE))
    with pytest.raises(RolloutFailed, match=r"conflict.*\n.*Nothing to roll back to") as caught:
        run_deploy(api, options)
    assert "--force-conflicts" in str(caught.value)

    forced = DeployOptions(waiting=options.waiting, force_conflicts=True, smoke_timeout_s=10)
    before = len(api.calls("PATCH", "/deployments/"))
    run_deploy(api, forced)
    retried = api.calls("PATCH", "/deployments/")[before:]
    assert [params.get("force") for _, _, params in retried] == ["true"]


# -- prune --------------------------------------------------------------------------------------------


def test_prune_deletes_exactly_the_objects_no_longer_rendered(api: FakeApi, options: DeployOptions) -> None:
    run_deploy(api, options, objects=manifests(config_maps=("digits-config", "digits-extra")))
    foreign = {"apiVersion": "v1", "kind": "ConfigMap", "data": {}}
    api.put({**foreign, "metadata": {"name": "unlabelled", "namespace": NS}}, "configmaps")
    other_release = {**LABELS, "app.kubernetes.io/instance": "other"}
    api.put(
        {**foreign, "metadata": {"name": "other-config", "namespace": NS, "labels": other_release}},
        "configmaps",
    )
    by_hand = {k: v for k, v in LABELS.items() if k != "app.kubernetes.io/managed-by"}
    api.put({**foreign, "metadata": {"name": "by-hand", "namespace": NS, "labels": by_hand}}, "configmaps")

    result = run_deploy(api, options, objects=manifests(config_maps=("digits-config",)))

    assert [str(ref) for ref in result.pruned] == ["ConfigMap/digits-extra"]
    assert api.names("configmaps", NS) == {"digits-config", "unlabelled", "other-config", "by-hand"}
    assert [path for _, path, _ in api.calls("DELETE")] == [
        "/api/v1/namespaces/models/configmaps/digits-extra"
    ]
    assert statuses(api) == [(1, "superseded"), (2, "deployed")]


# -- failures and automatic rollback ------------------------------------------------------------------


def test_crash_loop_rolls_back_and_explains_with_events_and_logs(
    api: FakeApi, options: DeployOptions
) -> None:
    run_deploy(api, options)
    api.behaviours[BAD] = crash_loop(["loading model", "ModelLoadError: model/digits.onnx is not ONNX"])

    with pytest.raises(RolloutFailed) as caught:
        run_deploy(api, options, image=BAD)

    failure = caught.value
    assert (failure.reason, failure.revision, failure.rolled_back_to) == ("CrashLoopBackOff", 2, 1)
    text = str(failure)
    assert "container server CrashLoopBackOff" in text
    assert "event: Warning BackOff: Back-off restarting failed container server" in text
    assert "ModelLoadError: model/digits.onnx is not ONNX" in text
    assert "Rolled back: revision 3 restores revision 1" in text
    assert deployed_image(api) == GOOD
    assert statuses(api) == [(1, "superseded"), (2, "failed"), (3, "deployed")]
    assert (
        History(api.cluster(), RELEASE, NS).get(3).description
        == "automatic rollback to 1 after revision 2 failed"
    )


def test_image_pull_failure_rolls_back(api: FakeApi, options: DeployOptions) -> None:
    run_deploy(api, options)
    api.behaviours[BAD] = image_pull_fails()

    with pytest.raises(RolloutFailed, match="ImagePullBackOff") as caught:
        run_deploy(api, options, image=BAD)

    assert f'Failed to pull image "{BAD}"' in str(caught.value)
    assert "(no log: no log for pod" in str(caught.value)
    assert caught.value.rolled_back_to == 1
    assert deployed_image(api) == GOOD


def test_progress_deadline_exceeded_rolls_back(api: FakeApi, options: DeployOptions) -> None:
    run_deploy(api, options)
    api.behaviours[BAD] = deadline_exceeded(after=3)

    with pytest.raises(
        RolloutFailed, match=r"ProgressDeadlineExceeded: ReplicaSet .* has timed out"
    ) as caught:
        run_deploy(api, options, image=BAD)

    assert caught.value.rolled_back_to == 1
    assert deployed_image(api) == GOOD


def test_pods_that_cannot_be_created_fail_with_the_replica_sets_events(
    api: FakeApi, options: DeployOptions
) -> None:
    run_deploy(api, options)

    def forbidden_pods(fake: FakeApi, deployment: dict[str, Any], n: int) -> None:
        message = 'pods "digits-x" is forbidden: violates PodSecurity "restricted:latest"'
        deployment["status"]["conditions"] = [
            {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": message}
        ]
        replica_set = fake.rollouts[(NS, RELEASE)].replica_set
        fake.event(NS, replica_set, "FailedCreate", f"Error creating: {message}")

    api.behaviours[BAD] = forbidden_pods
    with pytest.raises(RolloutFailed, match=r"FailedCreate: pods .* violates PodSecurity") as caught:
        run_deploy(api, options, image=BAD)
    assert "event: Warning FailedCreate: Error creating: pods" in str(caught.value)
    assert caught.value.rolled_back_to == 1


def test_rollout_that_never_completes_times_out_and_rolls_back(
    api: FakeApi, options: DeployOptions, clock: FakeClock
) -> None:
    run_deploy(api, options)
    api.behaviours[BAD] = never_ready()
    short = DeployOptions(
        waiting=Waiting(timeout_s=7, interval_s=2, clock=clock, sleep=clock.sleep), smoke_timeout_s=10
    )
    slept_before = clock.slept

    with pytest.raises(
        RolloutFailed, match=r"Timeout: not complete after 7s \(2 old replicas pending termination"
    ):
        run_deploy(api, short, image=BAD)

    # 7 s of waiting for the broken revision, then about 2 s for the rollback's own rollout
    assert 7 <= clock.slept - slept_before <= 7 + 4
    assert deployed_image(api) == GOOD
    assert statuses(api)[-1] == (3, "deployed")


def test_failed_smoke_test_rolls_back(api: FakeApi, options: DeployOptions) -> None:
    run_deploy(api, options)
    api.predictors[BAD] = lambda body: (200, {"outputs": {"y": [0.5]}})

    with pytest.raises(RolloutFailed, match="smoke test through Service/digits port http") as caught:
        run_deploy(api, options, image=BAD)

    assert caught.value.reason == "SmokeTestFailed"
    assert "example 'seven': output 'y' differs by up to 6.5" in str(caught.value)
    assert caught.value.rolled_back_to == 1
    assert deployed_image(api) == GOOD


def test_smoke_test_reports_the_servers_error(api: FakeApi, options: DeployOptions) -> None:
    run_deploy(api, options)
    api.predictors[BAD] = lambda body: (422, {"error": "input 'x': expected float32 [8, 8, 1]"})

    with pytest.raises(RolloutFailed, match=r"HTTP 422: .*expected float32 \[8, 8, 1\]"):
        run_deploy(api, options, image=BAD)


def test_smoke_test_retries_an_unreachable_service_then_explains(
    api: FakeApi, options: DeployOptions, clock: FakeClock
) -> None:
    run_deploy(api, options)
    api.predictors[BAD] = lambda body: (503, {"message": "error trying to reach service: i/o timeout"})
    calls_before = len(api.calls("POST", "/proxy/"))

    with pytest.raises(RolloutFailed, match=r"HTTP 503: .*i/o timeout") as caught:
        run_deploy(api, options, image=BAD)

    assert "NetworkPolicy" in str(caught.value)
    assert "--no-smoke-test" in str(caught.value)
    # retried every second for the 10 s smoke-test budget, then rolled back
    assert len(api.calls("POST", "/proxy/")) - calls_before >= 10
    assert caught.value.rolled_back_to == 1


def test_first_deploy_that_fails_has_nothing_to_roll_back_to(api: FakeApi, options: DeployOptions) -> None:
    api.behaviours[BAD] = crash_loop(["boom"])

    with pytest.raises(RolloutFailed) as caught:
        run_deploy(api, options, image=BAD)

    assert caught.value.rolled_back_to is None
    assert "Nothing to roll back to: no earlier revision of 'digits' was deployed" in str(caught.value)
    assert "modelpod delete" in str(caught.value)
    assert statuses(api) == [(1, "failed")]
    assert api.get("deployments", RELEASE, NS) is not None  # left for inspection


def test_no_rollback_option_leaves_the_failed_revision(api: FakeApi, options: DeployOptions) -> None:
    run_deploy(api, options)
    api.behaviours[BAD] = crash_loop(["boom"])
    keep = DeployOptions(waiting=options.waiting, rollback_on_failure=False)

    with pytest.raises(RolloutFailed, match=r"modelpod rollback --to 1"):
        run_deploy(api, keep, image=BAD)
    assert deployed_image(api) == BAD


# -- history and rollback -----------------------------------------------------------------------------


def test_rollback_to_n_restores_every_object_and_prunes_the_rest(
    api: FakeApi, options: DeployOptions
) -> None:
    run_deploy(api, options, objects=manifests(GOOD, config_maps=("digits-a",)))
    api.predictors[BAD] = doubling
    run_deploy(api, options, image=BAD, objects=manifests(BAD, config_maps=("digits-b", "digits-c")))
    assert api.names("configmaps", NS) == {"digits-b", "digits-c"}

    result = rollback(api.cluster(), release=RELEASE, namespace=NS, to=1, options=options)

    assert result.revision.number == 3
    assert result.revision.description == "rollback to 1"
    assert api.names("configmaps", NS) == {"digits-a"}
    assert {str(ref) for ref in result.pruned} == {"ConfigMap/digits-b", "ConfigMap/digits-c"}
    assert deployed_image(api) == GOOD
    assert api.get("serviceaccounts", RELEASE, NS) is not None
    assert statuses(api) == [(1, "superseded"), (2, "superseded"), (3, "deployed")]


def test_rollback_without_to_goes_to_the_last_good_revision(api: FakeApi, options: DeployOptions) -> None:
    run_deploy(api, options)
    api.predictors[BAD] = doubling
    run_deploy(api, options, image=BAD)

    rollback(api.cluster(), release=RELEASE, namespace=NS, options=options)
    assert deployed_image(api) == GOOD

    # revision 3 now equals revision 1, so the last good *different* one is revision 2
    rollback(api.cluster(), release=RELEASE, namespace=NS, options=options)
    assert deployed_image(api) == BAD


def test_rollback_errors_name_the_problem(api: FakeApi, options: DeployOptions) -> None:
    with pytest.raises(ModelpodError, match="no earlier good revision"):
        rollback(api.cluster(), release=RELEASE, namespace=NS, options=options)
    run_deploy(api, options)
    with pytest.raises(ModelpodError, match="has no revision 7 in namespace 'models'"):
        rollback(api.cluster(), release=RELEASE, namespace=NS, to=7, options=options)


def test_a_deploy_at_work_blocks_another_but_a_dead_one_does_not(
    api: FakeApi, options: DeployOptions
) -> None:
    pending = History(api.cluster(), RELEASE, NS).start(manifests(), image=GOOD, description="deploy")
    with pytest.raises(ModelpodError, match="revision 1 of 'digits' has been in progress since") as caught:
        run_deploy(api, options)
    assert "another deploy or rollback is at work" in str(caught.value)

    # the same record left by a deploy that died an hour ago
    died = replace(pending, created=(datetime.now(timezone.utc) - timedelta(hours=1)).isoformat())
    api.put(encode(died), "secrets")
    run_deploy(api, options)
    assert statuses(api) == [(1, "failed"), (2, "deployed")]


def test_history_keeps_at_most_history_max_records(api: FakeApi, clock: FakeClock) -> None:
    waiting = Waiting(timeout_s=60, interval_s=1, clock=clock, sleep=clock.sleep)
    small = DeployOptions(waiting=waiting, history_max=2)
    for n in range(4):
        image = f"modelpod/digits@sha256:{n:064d}"
        api.predictors[image] = doubling
        run_deploy(api, small, image=image)
    revisions = History(api.cluster(), RELEASE, NS).revisions()
    assert [(r.number, r.status) for r in revisions] == [(3, "superseded"), (4, "deployed")]
    assert revisions[-1].image.endswith("3" * 1)


# -- API errors ---------------------------------------------------------------------------------------


def test_forbidden_is_a_clear_error_before_anything_changes(api: FakeApi, options: DeployOptions) -> None:
    api.forbidden.add(("PATCH", "serviceaccounts"))
    with pytest.raises(ClusterError) as caught:
        run_deploy(api, options)
    assert caught.value.status == 403
    assert "cannot apply ServiceAccount/digits" in str(caught.value)
    assert "kubectl auth can-i" in str(caught.value)
    assert statuses(api) == [(1, "failed")]


def test_an_api_error_after_the_first_change_rolls_back(api: FakeApi, options: DeployOptions) -> None:
    run_deploy(api, options)
    api.forbidden.add(("PATCH", "deployments"))  # the Service changes, then the Deployment is refused

    with pytest.raises(RolloutFailed, match="while applying: cannot apply Deployment/digits") as caught:
        run_deploy(api, options, image=BAD)

    assert caught.value.reason == "ApiError"
    # the rollback re-applies revision 1 up to its Deployment, which the API refuses again
    assert "The automatic rollback to revision 1 failed too: revision 3" in str(caught.value)
    assert str(caught.value).count("cannot apply Deployment/digits") == 2
    assert caught.value.rolled_back_to is None
    assert statuses(api)[1:] == [(2, "failed"), (3, "failed")]


def test_missing_namespace_is_a_clear_error(api: FakeApi, options: DeployOptions) -> None:
    api.namespaces.discard(NS)
    with pytest.raises(ClusterError, match="namespace 'models' does not exist") as caught:
        run_deploy(api, options)
    assert "kubectl create namespace models" in str(caught.value)


def test_connection_refused_is_a_clear_error(options: DeployOptions) -> None:
    # a real TCP connection to a closed local port: nothing listens on port 1
    cluster = LightkubeCluster(kubeconfig("https://127.0.0.1:1"), timeout=5)
    with pytest.raises(
        ClusterError, match=r"cannot reach the Kubernetes API server at https://127.0.0.1:1"
    ) as c:
        deploy(cluster, manifests(), release=RELEASE, namespace=NS, image=GOOD, options=options)
    assert "is the cluster running" in str(c.value)


def test_a_crd_kind_is_found_by_api_discovery(api: FakeApi, options: DeployOptions) -> None:
    monitor = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": meta(RELEASE),
        "spec": {"selector": {"matchLabels": SELECTOR}, "endpoints": [{"port": "http"}]},
    }
    with pytest.raises(ClusterError, match="the cluster does not serve ServiceMonitor") as caught:
        run_deploy(api, options, objects=[*manifests(), monitor])
    assert "install the CRD" in str(caught.value)

    api.crds["monitoring.coreos.com/v1"] = [
        {"name": "servicemonitors", "kind": "ServiceMonitor", "namespaced": True, "verbs": ["get", "patch"]},
        {"name": "servicemonitors/status", "kind": "ServiceMonitor", "namespaced": True, "verbs": ["get"]},
    ]
    run_deploy(api, options, objects=[*manifests(), monitor])
    assert api.get("servicemonitors", RELEASE, NS, gv="monitoring.coreos.com/v1") is not None
