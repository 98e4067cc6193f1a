"""The training Job: the spec's train.command in the image, with its resources and an output volume."""

from __future__ import annotations

import re
from typing import Any

from modelpod.deploy.render.image import ImageRef, RenderError
from modelpod.deploy.render.labels import TRAINING, metadata, recommended_labels
from modelpod.deploy.render.pod import (
    APP_DIR,
    container_security_context,
    pod_spec,
    resource_requirements,
    scratch_volumes,
)
from modelpod.specfile.resolved import Spec

RUN_ID_LABEL = "modelpod.dev/run-id"
OUTPUT_VOLUME = "output"


def job_name(spec: Spec, run_id: str) -> str:
    return f"{spec.name}-train-{run_id}"


def _check(spec: Spec, run_id: str) -> None:
    if not spec.train.command:
        raise RenderError(
            "the spec has no training command",
            hint='set train.command in modelpod.yaml, e.g. ["python", "train.py"]',
        )
    # a Job name is a DNS-1123 label of at most 63 characters, and run_id is also a label value
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", run_id) or len(job_name(spec, run_id)) > 63:
        raise RenderError(
            f"run id {run_id!r} cannot name a Job",
            hint="use lowercase letters, digits and dashes, "
            f"at most {63 - len(job_name(spec, ''))} characters",
        )


def render_training_job(spec: Spec, image: ImageRef, run_id: str) -> dict[str, Any]:
    _check(spec, run_id)
    train = spec.train
    resources = train.resources or spec.resources
    volumes, mounts = scratch_volumes(spec, resources)
    output_path = f"{APP_DIR}/{train.output_dir.rstrip('/')}"
    if train.output_claim:
        volumes.append({"name": OUTPUT_VOLUME, "persistentVolumeClaim": {"claimName": train.output_claim}})
    else:
        volumes.append({"name": OUTPUT_VOLUME, "emptyDir": {"sizeLimit": train.output_size}})
    mounts.append({"name": OUTPUT_VOLUME, "mountPath": output_path})
    env = {"MODELPOD_OUTPUT_DIR": output_path, "HOME": "/tmp", **train.env}  # noqa: S108 - the pod's emptyDir
    container = {
        "name": "train",
        "image": str(image),
        "imagePullPolicy": spec.kubernetes.image_pull_policy,
        "command": list(train.command),
        "workingDir": APP_DIR,
        "env": [{"name": k, "value": v} for k, v in env.items()],
        # an emptyDir output is written to the node's disk, so it counts against ephemeral storage
        "resources": resource_requirements(
            spec, resources, extra_storage=None if train.output_claim else train.output_size
        ),
        "securityContext": container_security_context(),
        "volumeMounts": mounts,
    }
    labels = {**recommended_labels(spec, image, TRAINING), RUN_ID_LABEL: run_id}
    template = {
        "metadata": {"labels": labels},
        "spec": pod_spec(spec, resources, [container], volumes, restartPolicy="Never"),
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata(spec, image, name=job_name(spec, run_id), component=TRAINING,
                             labels={RUN_ID_LABEL: run_id}),
        "spec": {
            "backoffLimit": train.backoff_limit,
            "activeDeadlineSeconds": train.active_deadline_s,
            "ttlSecondsAfterFinished": train.ttl_after_finished_s,
            "template": template,
        },
    }  # fmt: skip
