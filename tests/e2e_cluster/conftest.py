"""The real-cluster suite: opt-in, against the cluster KUBECONFIG names (kind in a user's CI).

It needs two things from the person running it: KUBECONFIG naming a reachable cluster, and
MODELPOD_E2E_IMAGE, the digits example's image (`modelpod build examples/digits`) as the cluster can
pull it (loaded into kind with `kind load docker-image`, or pushed to a registry the cluster reaches).
Without them every test here is skipped with the reason: CI has no cluster by design, and this is the
one suite allowed to skip there. Each test works in a namespace of its own, deleted afterwards.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelpod.deploy.cluster import ClusterError, LightkubeCluster, ObjectRef

HOW_TO_RUN = "see docs/deploying.md, 'Testing against a real cluster'"


@pytest.fixture(scope="session")
def cluster() -> Iterator[LightkubeCluster]:
    config = os.environ.get("KUBECONFIG", "")
    if not config or not all(Path(p).is_file() for p in config.split(os.pathsep) if p):
        pytest.skip(
            f"KUBECONFIG does not name a kubeconfig file, so there is no cluster to test; {HOW_TO_RUN}"
        )
    try:
        adapter = LightkubeCluster(timeout=10)
        adapter.server_version()
    except ClusterError as exc:
        pytest.skip(f"the cluster KUBECONFIG names is not reachable ({exc.message}); {HOW_TO_RUN}")
    yield adapter
    adapter.close()


@pytest.fixture(scope="session")
def image(cluster: LightkubeCluster) -> str:
    value = os.environ.get("MODELPOD_E2E_IMAGE", "")
    if not value:
        pytest.skip(f"MODELPOD_E2E_IMAGE is not set (the digits image the cluster can pull); {HOW_TO_RUN}")
    return value


@pytest.fixture
def namespace(cluster: LightkubeCluster) -> Iterator[str]:
    name = f"modelpod-e2e-{secrets.token_hex(4)}"
    cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    yield name
    cluster.delete(ObjectRef("v1", "Namespace", name))
