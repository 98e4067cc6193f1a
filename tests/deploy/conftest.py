"""Fixtures of the deploy tests."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from modelpod.specfile import Spec, load_spec, profile_names

# --- rendering (test_render*.py) -------------------------------------------------------------------

# An image pinned by digest, with no registry host: rendering never contacts it.
RENDER_IMAGE = "modelpod/test-model:1.0@sha256:" + "0123456789abcdef" * 4

# Every optional object switched on: GPU, Ingress, ServiceMonitor, alerts, dashboard, a KEDA autoscaler,
# a bearer token from a Secret.
FEATURES_SPEC = """
name: features
model: {path: model.onnx}
server: {auth_token_env: MODEL_TOKEN}
resources: {cpu: "2", memory: 4Gi, gpu: 2}
scaling: {autoscaler: keda, min_replicas: 2, max_replicas: 6, target_concurrency: 2.5}
kubernetes:
  namespace: models
  service_type: ClusterIP
  gpu:
    node_selector: {nvidia.com/gpu.present: "true"}
    tolerations:
      - {key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}
      - {key: dedicated, operator: Equal, value: ml, effect: NoExecute}
  network_policy:
    allow_from:
      - {pods: {role: client}}
      - {namespace: gateway, pods: {role: client}}
      - {cidr: 172.18.0.0/16}
  ingress: {enabled: true, host: models.example.com, class_name: nginx, tls_secret: models-tls}
  monitoring: {monitor: servicemonitor, alerts: true, dashboard: true, labels: {release: prometheus}}
train:
  command: [python, train.py, --epochs, "3"]
  env: {SEED: "7"}
profiles:
  podmon:
    scaling: {autoscaler: inflight}
    kubernetes: {monitoring: {monitor: podmonitor}, service_type: LoadBalancer}
  cpu:
    scaling: {autoscaler: cpu}
    resources: {gpu: 0}
"""


@pytest.fixture(scope="session")
def render_image() -> str:
    return RENDER_IMAGE


def _example_specs(directory: Path) -> list[Spec]:
    names = [None, *sorted({"dev", "staging", "prod", *profile_names(directory)})]
    return [load_spec(directory, name, require_model=False) for name in names]


@pytest.fixture(scope="session")
def example_specs(digits_dir: Path, minilm_dir: Path, sklearn_dir: Path) -> list[Spec]:
    """Every example under every profile: its own, the built-in ones, and none."""
    return [spec for d in (digits_dir, minilm_dir, sklearn_dir) for spec in _example_specs(d)]


@pytest.fixture(scope="session")
def features_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("features")
    (directory / "model.onnx").write_bytes(b"")
    (directory / "modelpod.yaml").write_text(textwrap.dedent(FEATURES_SPEC).lstrip(), encoding="utf-8")
    return directory


@pytest.fixture(scope="session")
def feature_specs(features_dir: Path) -> list[Spec]:
    """The all-features spec under its profiles: KEDA + ServiceMonitor, inflight HPA + PodMonitor, CPU HPA."""
    return [load_spec(features_dir, name) for name in (None, "podmon", "cpu", "prod")]


@pytest.fixture(scope="session")
def all_render_specs(example_specs: list[Spec], feature_specs: list[Spec]) -> list[Spec]:
    return [*example_specs, *feature_specs]
