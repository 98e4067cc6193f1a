"""End to end on a real cluster: deploy the digits example, predict through its Service, roll out a
broken image and see the automatic rollback. Opt-in (see conftest.py); marked `cluster`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from modelpod.deploy.cluster import LightkubeCluster, ObjectRef
from modelpod.deploy.deployer import DeployOptions, RolloutFailed, deploy
from modelpod.deploy.release import History
from modelpod.deploy.render import parse_image, render_manifests
from modelpod.deploy.rollout import Waiting
from modelpod.specfile import Spec, load_spec
from modelpod.specfile.example_answers import compare_outputs
from modelpod.specfile.model import Peer

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(1200)]
OPTIONS = DeployOptions(waiting=Waiting(timeout_s=300, interval_s=2), smoke_timeout_s=60)


def release(spec: Spec, image: str, namespace: str) -> list[dict[str, Any]]:
    """The spec rendered into the test's namespace. On a cluster that enforces NetworkPolicy, the smoke
    test through the API server's proxy needs the control plane admitted: give its address ranges in
    MODELPOD_E2E_CONTROL_PLANE_CIDRS (comma-separated)."""
    cidrs = tuple(c for c in os.environ.get("MODELPOD_E2E_CONTROL_PLANE_CIDRS", "").split(",") if c)
    policy = spec.kubernetes.network_policy
    sources = (*policy.allow_from, *(Peer(cidr=cidr) for cidr in cidrs))
    policy = policy.model_copy(update={"allow_from": sources})
    kubernetes = spec.kubernetes.model_copy(update={"namespace": namespace, "network_policy": policy})
    spec = spec.model_copy(update={"kubernetes": kubernetes})
    return render_manifests(spec, image=image, allow_tag="@sha256:" not in image)


def predict(cluster: LightkubeCluster, spec: Spec, namespace: str) -> list[str]:
    """POST the spec's first example through the API server's service proxy; the mismatches."""
    example = spec.examples[0]
    response = cluster.proxy(
        "POST",
        namespace=namespace,
        service=spec.name,
        port="http",
        path="predict",
        json_body={"inputs": example.inputs},
        timeout=30,
    )
    assert response.status == 200, response.body[:500]
    return compare_outputs(example, response.json()["outputs"])


def deployed_image(cluster: LightkubeCluster, spec: Spec, namespace: str) -> str:
    live = cluster.get(ObjectRef("apps/v1", "Deployment", spec.name, namespace))
    assert live is not None
    return str(live["spec"]["template"]["spec"]["containers"][0]["image"])


def test_deploy_digits_and_predict_through_the_service(
    cluster: LightkubeCluster, image: str, namespace: str, digits_dir: Path
) -> None:
    spec = load_spec(digits_dir, require_model=False)
    result = deploy(
        cluster,
        release(spec, image, namespace),
        release=spec.name,
        namespace=namespace,
        image=image,
        examples=spec.examples,
        options=OPTIONS,
    )
    assert result.revision.status == "deployed"
    assert result.smoke_tested == tuple(example.name for example in spec.examples)
    assert predict(cluster, spec, namespace) == []


def test_a_broken_image_is_rolled_back(
    cluster: LightkubeCluster, image: str, namespace: str, digits_dir: Path
) -> None:
    spec = load_spec(digits_dir, require_model=False)
    good = release(spec, image, namespace)
    deploy(
        cluster,
        good,
        release=spec.name,
        namespace=namespace,
        image=image,
        examples=spec.examples,
        options=OPTIONS,
    )
    repository = parse_image(image, allow_tag=True).repository
    broken_image = f"{repository}@sha256:{'0' * 64}"  # a digest no registry holds

    with pytest.raises(RolloutFailed) as caught:
        deploy(
            cluster,
            release(spec, broken_image, namespace),
            release=spec.name,
            namespace=namespace,
            image=broken_image,
            examples=spec.examples,
            options=OPTIONS,
        )

    assert caught.value.reason in ("ErrImagePull", "ImagePullBackOff")
    assert caught.value.rolled_back_to == 1
    assert deployed_image(cluster, spec, namespace) == image
    history = History(cluster, spec.name, namespace).revisions()
    assert [(r.number, r.status) for r in history] == [(1, "superseded"), (2, "failed"), (3, "deployed")]
    assert predict(cluster, spec, namespace) == []
