"""KServe InferenceService: the alternative target, with the same container and pod settings."""

from __future__ import annotations

from typing import Any

from modelpod.deploy.render.image import ImageRef
from modelpod.deploy.render.labels import metadata
from modelpod.deploy.render.pod import pod_spec, scratch_volumes
from modelpod.deploy.render.workload import grace_period_s, server_annotations, server_container
from modelpod.specfile.resolved import Spec


def render_inference_service(spec: Spec, image: ImageRef) -> dict[str, Any]:
    """A custom-container predictor: KServe's PodSpec fields sit directly on `predictor`.

    KServe routes to the container's first port and scales between min and max replicas itself.
    """
    volumes, mounts = scratch_volumes(spec, spec.resources)
    predictor = pod_spec(
        spec,
        spec.resources,
        [{**server_container(spec, image, mounts), "name": "kserve-container"}],
        volumes,
        terminationGracePeriodSeconds=grace_period_s(spec),
    )
    predictor["minReplicas"] = spec.scaling.min_replicas
    predictor["maxReplicas"] = spec.scaling.max_replicas
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": metadata(spec, image, annotations=server_annotations(spec)),
        "spec": {"predictor": predictor},
    }
