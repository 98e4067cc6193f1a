"""Every rendered object, for every example, profile and target, against the Kubernetes API schemas.

What is validated, and how:
- core kinds (ServiceAccount, Service, Deployment, HPA, PDB, NetworkPolicy, Ingress, ConfigMap, Job):
  kubernetes-validate --strict (unknown fields rejected) for Kubernetes 1.29 through 1.34, in-process.
- KServe InferenceService: its predictor is a PodSpec plus a few component fields; the PodSpec part is
  validated strictly as a core Pod, the component fields by the small schema below.
- KEDA ScaledObject: its `advanced.horizontalPodAutoscalerConfig.behavior` is validated strictly as a
  core HPA's behavior; the rest by the schema below (written from the KEDA and Prometheus Operator docs:
  keda.sh/docs/latest/reference/scaledobject-spec, prometheus-operator.dev/docs/api-reference/api).
- ServiceMonitor, PodMonitor, PrometheusRule: the schemas below; the alert expressions are checked by
  `promtool check rules` (the real Prometheus parser) when promtool is installed.
Not validated: fields of those CRDs that modelpod does not render, and anything an admission webhook adds.
"""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from modelpod.deploy.render import render_manifests, render_training_job
from modelpod.specfile import Spec
from tests.tools import need_tool

VERSIONS = ("1.29", "1.30", "1.31", "1.32", "1.33", "1.34")
CORE_KINDS = {
    "ServiceAccount", "Service", "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget",
    "NetworkPolicy", "Ingress", "ConfigMap", "Job",
}  # fmt: skip

_STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "required": ["matchLabels"],
    "properties": {"matchLabels": _STR_MAP},
}
_DURATION = {
    "type": "string",
    "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$",
}
_META = {
    "type": "object",
    "required": ["name", "namespace", "labels"],
    "properties": {"name": {"type": "string"}, "namespace": {"type": "string"}, "labels": _STR_MAP},
}


def _crd(spec_schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": _META,
                       "spec": spec_schema},
    }  # fmt: skip


def _obj(required: list[str], **properties: Any) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "required": required, "properties": properties}


_ENDPOINT = _obj(["port"], port={"type": "string"}, path={"type": "string"}, interval=_DURATION)
_NAMESPACES = _obj(["matchNames"], matchNames={"type": "array", "items": {"type": "string"}})
CRD_SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): _crd(
        _obj(["selector", "endpoints"], selector=_SELECTOR, namespaceSelector=_NAMESPACES,
             endpoints={"type": "array", "minItems": 1, "items": _ENDPOINT})
    ),
    ("monitoring.coreos.com/v1", "PodMonitor"): _crd(
        _obj(["selector", "podMetricsEndpoints"], selector=_SELECTOR, namespaceSelector=_NAMESPACES,
             podMetricsEndpoints={"type": "array", "minItems": 1, "items": _ENDPOINT})
    ),
    ("monitoring.coreos.com/v1", "PrometheusRule"): _crd(
        _obj(["groups"], groups={"type": "array", "minItems": 1, "items": _obj(
            ["name", "rules"], name={"type": "string", "minLength": 1},
            rules={"type": "array", "minItems": 1, "items": _obj(
                ["alert", "expr"], alert={"type": "string", "pattern": "^[a-zA-Z_][a-zA-Z0-9_]*$"},
                expr={"type": "string", "minLength": 1}, labels=_STR_MAP, annotations=_STR_MAP,
                **{"for": _DURATION},
            )},
        )})
    ),
    ("keda.sh/v1alpha1", "ScaledObject"): _crd(
        _obj(["scaleTargetRef", "triggers"],
             scaleTargetRef=_obj(["name"], name={"type": "string"}, apiVersion={"type": "string"},
                                 kind={"type": "string"}),
             minReplicaCount={"type": "integer", "minimum": 0},
             maxReplicaCount={"type": "integer", "minimum": 1},
             advanced=_obj([], horizontalPodAutoscalerConfig=_obj([], behavior={"type": "object"})),
             # KEDA parses trigger metadata as strings only
             triggers={"type": "array", "minItems": 1, "items": _obj(
                 ["type", "metadata"], type={"enum": ["prometheus"]},
                 metadata=_obj(["serverAddress", "query", "threshold"], serverAddress={"type": "string"},
                               query={"type": "string"}, threshold={"type": "string"}),
             )})
    ),
    ("serving.kserve.io/v1beta1", "InferenceService"): _crd(
        _obj(["predictor"], predictor={
            "type": "object",
            "required": ["containers"],
            "properties": {"minReplicas": {"type": "integer", "minimum": 0},
                           "maxReplicas": {"type": "integer", "minimum": 1}},
        })
    ),
}  # fmt: skip
# the fields KServe adds to a PodSpec in a predictor (ComponentExtensionSpec)
KSERVE_COMPONENT_FIELDS = ("minReplicas", "maxReplicas")


def _validate_core(obj: dict[str, Any], where: str) -> None:
    for version in VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{where} invalid for Kubernetes {version}: {path}: {exc.message}")


def _validate_custom(obj: dict[str, Any], where: str) -> None:
    schema = CRD_SCHEMAS[(obj["apiVersion"], obj["kind"])]
    try:
        jsonschema.validate(obj, schema)
    except jsonschema.ValidationError as exc:
        pytest.fail(f"{where}: {'.'.join(str(p) for p in exc.absolute_path)}: {exc.message}")
    if obj["kind"] == "InferenceService":
        pod_spec = {k: v for k, v in obj["spec"]["predictor"].items() if k not in KSERVE_COMPONENT_FIELDS}
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": copy.deepcopy(obj["metadata"]),
            "spec": pod_spec,
        }
        _validate_core(pod, f"{where} predictor as a Pod")
    if obj["kind"] == "ScaledObject":
        spec = obj["spec"]
        hpa = {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": copy.deepcopy(obj["metadata"]),
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", **spec["scaleTargetRef"]},
                "minReplicas": spec["minReplicaCount"],
                "maxReplicas": spec["maxReplicaCount"],
                "behavior": spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"],
            },
        }
        _validate_core(hpa, f"{where} behavior as an HPA")


def validate_object(obj: dict[str, Any], where: str) -> None:
    if obj["kind"] in CORE_KINDS:
        _validate_core(obj, where)
    else:
        _validate_custom(obj, where)


def test_installed_kubernetes_validate_knows_every_version() -> None:
    known = {".".join(v.split(".")[:2]) for v in kubernetes_validate.utils.all_versions()}
    assert set(VERSIONS) <= known


def test_every_object_of_every_example_and_profile_validates(
    all_render_specs: list[Spec], render_image: str
) -> None:
    kinds: set[str] = set()
    seen: set[str] = set()  # profiles share most objects; each distinct object is validated once
    for spec in all_render_specs:
        for target in ("kubernetes", "kserve"):
            for obj in render_manifests(spec, image=render_image, target=target):  # type: ignore[arg-type]
                kinds.add(obj["kind"])
                canonical = json.dumps(obj, sort_keys=True)
                if canonical not in seen:
                    seen.add(canonical)
                    validate_object(obj, f"{spec.name}/{spec.profile or 'base'}/{target}/{obj['kind']}")
    # every kind modelpod renders was seen, so no object escaped validation
    assert kinds == (CORE_KINDS - {"Job"}) | {k for _, k in CRD_SCHEMAS}


def test_training_jobs_validate(feature_specs: list[Spec], render_image: str) -> None:
    for spec in feature_specs:
        job = render_training_job(spec, image=render_image, run_id="r1")
        validate_object(job, f"{spec.name}/{spec.profile}/Job")


def test_the_validation_catches_mistakes(feature_specs: list[Spec], render_image: str) -> None:
    """The checks above can fail: a misspelt field and a wrong type are both reported."""
    objects = {o["kind"]: o for o in render_manifests(feature_specs[0], image=render_image)}
    deployment = copy.deepcopy(objects["Deployment"])
    deployment["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFileSystem"] = True
    with pytest.raises(pytest.fail.Exception, match="readOnlyRootFileSystem"):
        validate_object(deployment, "typo")
    scaled = copy.deepcopy(objects["ScaledObject"])
    scaled["spec"]["triggers"][0]["metadata"]["threshold"] = 2.5
    with pytest.raises(pytest.fail.Exception, match="threshold"):
        validate_object(scaled, "number")


def test_alert_rules_parse_with_promtool(
    feature_specs: list[Spec], render_image: str, tmp_path: Path
) -> None:
    promtool = need_tool("promtool", "run ../shared/ci/engine-up, or install Prometheus")
    rule = {o["kind"]: o for o in render_manifests(feature_specs[0], image=render_image)}["PrometheusRule"]
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rule["spec"]))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True,
                            timeout=60, check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 3 rules found" in result.stdout
