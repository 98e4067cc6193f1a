"""The renderer as a pure function: complete expected output, the rules every object follows, bad input.

The golden files under tests/deploy/golden/ are the whole expected output. After an intended change,
regenerate them with `MODELPOD_REGENERATE_GOLDEN=1 pytest tests/deploy/test_render.py` and review the diff.
"""

from __future__ import annotations

import json
import os
import re
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from modelpod.cli.app import app
from modelpod.deploy.render import (
    RenderError,
    parse_image,
    render_manifests,
    render_training_job,
    to_yaml,
)
from modelpod.errors import ModelpodError, SpecError
from modelpod.specfile import Spec, load_spec
from modelpod.specfile.model import LABEL_KEY_PATTERN, LABEL_VALUE_PATTERN

GOLDEN = Path(__file__).parent / "golden"
DIGEST = "sha256:" + "0123456789abcdef" * 4
RECOMMENDED = ("name", "instance", "version", "component", "part-of", "managed-by")


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("MODELPOD_REGENERATE_GOLDEN") == "1":
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"{path} is missing; run with MODELPOD_REGENERATE_GOLDEN=1 to write it"
    assert text == path.read_text(encoding="utf-8")


def test_digits_base_profile_matches_the_golden_file(digits_dir: Path, render_image: str) -> None:
    spec = load_spec(digits_dir, None, require_model=False)
    check_golden("digits-base.yaml", to_yaml(render_manifests(spec, image=render_image)))


def test_all_features_and_training_job_match_the_golden_files(
    feature_specs: list[Spec], render_image: str
) -> None:
    check_golden("features-base.yaml", to_yaml(render_manifests(feature_specs[0], image=render_image)))
    job = render_training_job(feature_specs[0], image=render_image, run_id="20260101-1")
    check_golden("features-train-job.yaml", to_yaml([job]))


def test_kserve_target_matches_the_golden_file(digits_dir: Path, render_image: str) -> None:
    spec = load_spec(digits_dir, "prod", require_model=False)
    check_golden(
        "digits-prod-kserve.yaml", to_yaml(render_manifests(spec, image=render_image, target="kserve"))
    )


def test_every_object_has_recommended_labels_and_namespace(
    all_render_specs: list[Spec], render_image: str
) -> None:
    for spec in all_render_specs:
        for target in ("kubernetes", "kserve"):
            for obj in render_manifests(spec, image=render_image, target=target):  # type: ignore[arg-type]
                where = f"{spec.name}/{spec.profile}/{obj['kind']}"
                labels = obj["metadata"]["labels"]
                assert all(f"app.kubernetes.io/{key}" in labels for key in RECOMMENDED), where
                assert labels["app.kubernetes.io/managed-by"] == "modelpod", where
                assert obj["metadata"]["namespace"] == spec.kubernetes.namespace, where
                for key, value in labels.items():
                    assert re.fullmatch(LABEL_KEY_PATTERN, key), (where, key)
                    assert re.fullmatch(LABEL_VALUE_PATTERN, value), (where, value)


def test_objects_come_in_apply_order(feature_specs: list[Spec], render_image: str) -> None:
    kinds = [obj["kind"] for obj in render_manifests(feature_specs[0], image=render_image)]
    assert kinds == [
        "ServiceAccount", "NetworkPolicy", "Service", "Deployment", "PodDisruptionBudget", "ScaledObject",
        "Ingress", "ServiceMonitor", "PrometheusRule", "ConfigMap",
    ]  # fmt: skip
    kinds = [obj["kind"] for obj in render_manifests(feature_specs[1], image=render_image)]
    assert kinds[5:] == ["HorizontalPodAutoscaler", "Ingress", "PodMonitor", "PrometheusRule", "ConfigMap"]


def test_rendering_is_pure(feature_specs: list[Spec], render_image: str) -> None:
    first = render_manifests(feature_specs[0], image=render_image)
    first[3]["spec"]["template"]["spec"]["containers"][0]["args"].append("changed")
    assert render_manifests(feature_specs[0], image=render_image) != first
    assert to_yaml(render_manifests(feature_specs[0], image=render_image)) == to_yaml(
        render_manifests(feature_specs[0], image=render_image)
    )


def _by_kind(objects: list[dict]) -> dict[str, dict]:  # type: ignore[type-arg]
    return {obj["kind"]: obj for obj in objects}


def test_prod_profile_runs_three_replicas(example_specs: list[Spec], render_image: str) -> None:
    for spec in example_specs:
        if spec.profile != "prod":
            continue
        objects = _by_kind(render_manifests(spec, image=render_image))
        assert objects["HorizontalPodAutoscaler"]["spec"]["minReplicas"] == 3
        # the autoscaler owns the replica count: a fixed one would reset it on every apply
        assert "replicas" not in objects["Deployment"]["spec"]


def test_dev_profile_has_fixed_replicas_and_no_autoscaler(digits_dir: Path, render_image: str) -> None:
    objects = _by_kind(
        render_manifests(load_spec(digits_dir, "dev", require_model=False), image=render_image)
    )
    assert objects["Deployment"]["spec"]["replicas"] == 1
    assert "HorizontalPodAutoscaler" not in objects


def test_grace_period_covers_prestop_and_drain(write_spec: Callable[..., Path], render_image: str) -> None:
    path = write_spec("""
        name: m
        model: {path: model.onnx}
        server: {drain_timeout_s: 42.5, port: 9000}
        kubernetes:
          {prestop_sleep_s: 7, termination_margin_s: 3, startup_timeout_s: 1201, progress_deadline_s: 1500}
        """)
    deployment = _by_kind(render_manifests(load_spec(path), image=render_image))["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["terminationGracePeriodSeconds"] == 7 + 43 + 3
    assert container["lifecycle"]["preStop"]["exec"]["command"] == ["/bin/sleep", "7"]
    assert container["args"] == ["--host", "0.0.0.0", "--port", "9000"]
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 1201
    # three probes, three endpoints: model loaded, taking traffic, process alive
    assert startup["httpGet"]["path"] == f"/v2/models/{deployment['metadata']['name']}/ready"
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert deployment["spec"]["progressDeadlineSeconds"] == 1500


def test_gpu_pod_gets_limits_tolerations_selector_and_shm(
    feature_specs: list[Spec], render_image: str
) -> None:
    pod = _by_kind(render_manifests(feature_specs[0], image=render_image))["Deployment"]["spec"]["template"][
        "spec"
    ]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert pod["tolerations"][0] == {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}} in pod["volumes"]
    cpu_pod = _by_kind(render_manifests(feature_specs[2], image=render_image))["Deployment"]["spec"][
        "template"
    ]
    assert "tolerations" not in cpu_pod["spec"]
    assert "nvidia.com/gpu" not in cpu_pod["spec"]["containers"][0]["resources"]["limits"]


def test_bearer_token_comes_from_a_secret(feature_specs: list[Spec], render_image: str) -> None:
    for target in ("kubernetes", "kserve"):
        objects = render_manifests(feature_specs[0], image=render_image, target=target)  # type: ignore[arg-type]
        workload = _by_kind(objects)["InferenceService" if target == "kserve" else "Deployment"]
        pod = workload["spec"]["predictor"] if target == "kserve" else workload["spec"]["template"]["spec"]
        assert pod["containers"][0]["env"] == [
            {"name": "MODEL_TOKEN", "valueFrom": {"secretKeyRef": {"name": "features-auth", "key": "token"}}}
        ]
        assert workload["metadata"]["annotations"]["checkov.io/skip1"].startswith("CKV_K8S_35=")


def test_inflight_autoscaler_uses_the_servers_gauge(feature_specs: list[Spec], render_image: str) -> None:
    hpa = _by_kind(render_manifests(feature_specs[1], image=render_image))["HorizontalPodAutoscaler"]
    assert hpa["spec"]["metrics"] == [
        {
            "type": "Pods",
            "pods": {
                "metric": {"name": "modelpod_inflight_requests"},
                "target": {"type": "AverageValue", "averageValue": "2500m"},
            },
        }
    ]
    from modelpod.server.core.metrics import Metrics

    exported = Metrics("features", 4).registry.get_sample_value(
        "modelpod_inflight_requests", {"model": "features"}
    )
    assert exported == 0.0  # the metric the HPA asks for exists, under that name and label


def test_alert_and_dashboard_queries_name_metrics_the_server_exports(
    feature_specs: list[Spec], render_image: str
) -> None:
    from modelpod.server.core.metrics import Metrics

    metrics = Metrics("features", 4)
    metrics.observe_request("/predict", 200, 0.01)
    metrics.rejected.labels("features", "queue_full").inc()
    metrics.observe_batch(4, 0.01)
    exposed = {s.name for family in metrics.registry.collect() for s in family.samples}
    objects = _by_kind(render_manifests(feature_specs[0], image=render_image))
    queries = {a["alert"]: a["expr"] for a in objects["PrometheusRule"]["spec"]["groups"][0]["rules"]}
    dashboard = json.loads(objects["ConfigMap"]["data"]["features.json"])
    queries |= {f"{p['title']} {t['refId']}": t["expr"] for p in dashboard["panels"] for t in p["targets"]}
    assert len(queries) == 3 + 7
    for name, expr in queries.items():
        used = {word for word in _identifiers(expr) if word.startswith("modelpod_")}
        assert used, name
        assert used <= exposed, (name, used - exposed)


def _identifiers(expr: str) -> set[str]:
    return set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr))


def test_network_policy_admits_configured_peers_and_dns_only(
    feature_specs: list[Spec], render_image: str
) -> None:
    policy = _by_kind(render_manifests(feature_specs[0], image=render_image))["NetworkPolicy"]["spec"]
    role = {"matchLabels": {"role": "client"}}
    assert policy["ingress"][0]["from"] == [
        {"podSelector": role},
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gateway"}},
            "podSelector": role,
        },
        {"ipBlock": {"cidr": "172.18.0.0/16"}},
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}},
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}},
    ]
    assert policy["ingress"][0]["ports"] == [{"port": 8080, "protocol": "TCP"}]
    # DNS only, and only to the cluster's DNS pods
    assert policy["egress"] == [
        {
            "to": [
                {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                }
            ],
            "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
        }
    ]
    # a LoadBalancer's traffic comes from addresses no selector names: the port is open, nothing else
    open_policy = _by_kind(render_manifests(feature_specs[1], image=render_image))["NetworkPolicy"]["spec"]
    assert open_policy["ingress"] == [{"ports": [{"port": 8080, "protocol": "TCP"}]}]
    assert open_policy["egress"] == policy["egress"]


def test_network_policy_default_admits_the_namespace_and_sets_are_explicit(
    write_spec: Callable[..., Path], render_image: str
) -> None:
    def policy(text: str) -> dict[str, Any]:
        spec = load_spec(write_spec("name: demo\nmodel: {path: model.onnx}\n" + text))
        return _by_kind(render_manifests(spec, image=render_image))["NetworkPolicy"]["spec"]

    assert policy("")["ingress"] == [
        {"from": [{"podSelector": {}}], "ports": [{"port": 8080, "protocol": "TCP"}]}
    ]
    # nobody admitted: no ingress rule at all (a rule without `from` would admit every source)
    assert policy("kubernetes: {network_policy: {allow_from: []}}\n")["ingress"] == []
    nodelocal = policy("kubernetes: {network_policy: {dns: [{cidr: 169.254.20.10/32}]}}\n")
    assert nodelocal["egress"][0]["to"] == [{"ipBlock": {"cidr": "169.254.20.10/32"}}]
    assert policy("kubernetes: {network_policy: {dns: []}}\n")["egress"] == []


def test_training_job(feature_specs: list[Spec], render_image: str) -> None:
    job = render_training_job(feature_specs[0], image=render_image, run_id="abc")
    assert job["metadata"]["name"] == "features-train-abc"
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["containers"][0]["command"] == ["python", "train.py", "--epochs", "3"]
    assert {"name": "output", "mountPath": "/app/model"} in pod["containers"][0]["volumeMounts"]
    assert job["spec"]["backoffLimit"] == 1


def test_training_pods_are_not_selected_as_servers(feature_specs: list[Spec], render_image: str) -> None:
    # a training pod shares the release's name and instance labels; it must never receive predictions
    objects = _by_kind(render_manifests(feature_specs[0], image=render_image))
    job_pod_labels = render_training_job(feature_specs[0], image=render_image, run_id="abc")["spec"][
        "template"
    ]["metadata"]["labels"]
    server_pod_labels = objects["Deployment"]["spec"]["template"]["metadata"]["labels"]
    for selector in (
        objects["Service"]["spec"]["selector"],
        objects["Deployment"]["spec"]["selector"]["matchLabels"],
        objects["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
    ):
        assert selector.items() <= server_pod_labels.items()
        assert not selector.items() <= job_pod_labels.items()


# --- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("modelpod/m:1.0", "has no digest"),
        ("modelpod/m", "has no digest"),
        ("modelpod/m@sha256:abc", "is not an image reference"),
        ("Modelpod/M@" + DIGEST, "is not an image reference"),
        ("", "is not an image reference"),
    ],
)
def test_image_without_digest_is_refused(reference: str, message: str) -> None:
    with pytest.raises(RenderError, match=message) as info:
        parse_image(reference)
    assert "Hint:" in str(info.value)


def test_image_references_that_pin_a_digest_are_accepted() -> None:
    assert parse_image("m@" + DIGEST).version_label == "sha256-0123456789ab"
    ref = parse_image("host.local:5000/team/m:v2@" + DIGEST)
    assert (ref.repository, ref.tag, ref.version_label) == ("host.local:5000/team/m", "v2", "v2")
    assert parse_image("modelpod/m:dev", allow_tag=True).digest is None


def test_tag_only_image_is_refused_by_render_manifests(feature_specs: list[Spec]) -> None:
    with pytest.raises(ModelpodError, match="has no digest"):
        render_manifests(feature_specs[0], image="modelpod/m:latest")
    assert render_manifests(feature_specs[0], image="modelpod/m:latest", allow_tag=True)


@pytest.mark.parametrize(
    ("fragment", "field"),
    [
        ("scaling: {autoscaler: knative}", "scaling.autoscaler"),
        ("kubernetes: {gpu: {tolerations: [{key: nvidia.com/gpu, operator: Exists, value: x}]}}",
         "kubernetes.gpu.tolerations[0]"),
        ("kubernetes: {gpu: {tolerations: [{key: 'bad key!'}]}}", "kubernetes.gpu.tolerations[0].key"),
        ("kubernetes: {gpu: {tolerations: [{key: a, effect: Sometimes}]}}",
         "kubernetes.gpu.tolerations[0].effect"),
        ("kubernetes: {startup_timeout_s: 1000}", "kubernetes"),
        ("kubernetes: {monitoring: {monitor: datadog}}", "kubernetes.monitoring.monitor"),
        ("kubernetes: {ingress: {path: nope}}", "kubernetes.ingress.path"),
        ("train: {output_dir: /abs}", "train.output_dir"),
        (
            "kubernetes: {network_policy: {allow_from: [{cidr: 10.0.0.1/8}]}}",
            "kubernetes.network_policy.allow_from[0].cidr",
        ),
        (
            "kubernetes: {network_policy: {allow_from: [{cidr: 10.0.0.0/8, namespace: a}]}}",
            "kubernetes.network_policy.allow_from[0]",
        ),
        ("resources: {ephemeral_storage: 100Mi}", "resources.ephemeral_storage"),
        ("train: {resources: {ephemeral_storage: 1Gi}}\nkubernetes: {tmp_size: 2Gi}\n"
         "resources: {ephemeral_storage: 4Gi}", "train.resources.ephemeral_storage"),
    ],
)  # fmt: skip
def test_nonsense_spec_values_are_spec_errors(
    write_spec: Callable[..., Path], fragment: str, field: str
) -> None:
    path = write_spec("name: m\nmodel: {path: model.onnx}\n" + fragment + "\n")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert [issue.path for issue in info.value.issues] == [field]


def test_training_job_needs_a_command_and_a_valid_run_id(
    write_spec: Callable[..., Path], render_image: str
) -> None:
    spec = load_spec(write_spec("name: m\nmodel: {path: model.onnx}\n"))
    with pytest.raises(RenderError, match="no training command"):
        render_training_job(spec, image=render_image, run_id="1")
    spec = load_spec(write_spec("name: m\nmodel: {path: model.onnx}\ntrain: {command: [python, t.py]}\n"))
    with pytest.raises(RenderError, match="cannot name a Job"):
        render_training_job(spec, image=render_image, run_id="Run_1")
    with pytest.raises(RenderError, match="cannot name a Job"):
        render_training_job(spec, image=render_image, run_id="x" * 60)


def test_unknown_target_is_refused(feature_specs: list[Spec], render_image: str) -> None:
    with pytest.raises(RenderError, match="unknown target"):
        render_manifests(feature_specs[0], image=render_image, target="nomad")  # type: ignore[arg-type]


# --- CLI -------------------------------------------------------------------------------------------


def _cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_cli_render_to_stdout(digits_dir: Path, render_image: str) -> None:
    code, stdout, _ = _cli("render", str(digits_dir), "--profile", "prod", "--image", render_image)
    assert code == 0
    objects = list(yaml.safe_load_all(stdout))
    spec = load_spec(digits_dir, "prod", require_model=False)
    assert objects == render_manifests(spec, image=render_image)


@pytest.mark.parametrize("fmt", ["yaml", "kserve", "kustomize"])
def test_cli_render_to_a_directory(digits_dir: Path, tmp_path: Path, render_image: str, fmt: str) -> None:
    out = tmp_path / "out"
    code, _, stderr = _cli(
        "render", str(digits_dir), "--image", render_image, "--format", fmt, "-o", str(out)
    )
    assert code == 0, stderr
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.yaml"))
    if fmt == "kustomize":
        assert "base/kustomization.yaml" in files
        assert {"overlays/dev/kustomization.yaml", "overlays/prod/kustomization.yaml"} <= set(files)
    else:
        written = [yaml.safe_load((out / f).read_text()) for f in files]
        spec = load_spec(digits_dir, None, require_model=False)
        target = "kserve" if fmt == "kserve" else "kubernetes"
        assert written == render_manifests(spec, image=render_image, target=target)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--image", "modelpod/m:1.0"], "has no digest"),
        ([], "--image"),
        (["--image", "m@" + DIGEST, "--format", "helm"], "--format"),
        (["--image", "m@" + DIGEST, "--format", "kustomize"], "--output"),
    ],
)
def test_cli_usage_errors_exit_2(digits_dir: Path, args: list[str], message: str) -> None:
    code, _, stderr = _cli("render", str(digits_dir), *args)
    assert code == 2
    assert message in stderr
    assert "Traceback" not in stderr


def test_cli_allow_tag_renders_a_tagged_image(digits_dir: Path) -> None:
    code, stdout, _ = _cli("render", str(digits_dir), "--image", "modelpod/m:dev", "--allow-tag")
    assert code == 0
    assert "image: modelpod/m:dev\n" in stdout


def test_cli_spec_error_exits_2_without_traceback(tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "modelpod.yaml").write_text(
        textwrap.dedent("""
            name: m
            model: {path: model.onnx, format: onnx}
            scaling: {autoscaler: knative}
        """)
    )
    result = subprocess.run(
        [sys.executable, "-m", "modelpod", "render", str(tmp_path), "--image", "m@" + DIGEST],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "scaling.autoscaler" in result.stderr
    assert "Traceback" not in result.stderr
