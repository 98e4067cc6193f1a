"""The Pod Security Standard "restricted", requirement by requirement, on every rendered pod template.

The requirements are those of https://kubernetes.io/docs/concepts/security/pod-security-standards/
(the baseline policy, which "restricted" includes, and the restricted additions), for policy version
latest. Each is a named check below; each check is also shown to fail on a pod that breaks it, so no
check passes by looking at the wrong field. The pods: the Deployment's template, the training Job's
template and the KServe predictor, for every example, profile and the all-features spec.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from modelpod.deploy.render import render_manifests, render_training_job
from modelpod.specfile import Spec

Pod = dict[str, Any]  # a PodSpec (the InferenceService predictor carries two more fields, ignored here)

SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}  # fmt: skip
RESTRICTED_VOLUME_TYPES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected",
    "secret",
}  # fmt: skip
SELINUX_TYPES = {"container_t", "container_init_t", "container_kvm_t", "container_engine_t"}


def containers(pod: Pod) -> Iterator[dict[str, Any]]:
    for field in ("initContainers", "containers", "ephemeralContainers"):
        yield from pod.get(field, [])


def contexts(pod: Pod) -> Iterator[dict[str, Any]]:
    """The pod's security context and every container's."""
    yield pod.get("securityContext", {})
    for c in containers(pod):
        yield c.get("securityContext", {})


def container_setting(pod: Pod, container: dict[str, Any], key: str) -> Any:
    """A container's effective setting: its own, else the pod's."""
    own = container.get("securityContext", {})
    return own[key] if key in own else pod.get("securityContext", {}).get(key)


# --- baseline ----------------------------------------------------------------------------------------


def host_process(pod: Pod) -> bool:
    return all(not ctx.get("windowsOptions", {}).get("hostProcess", False) for ctx in contexts(pod))


def host_namespaces(pod: Pod) -> bool:
    return not any(pod.get(field, False) for field in ("hostNetwork", "hostPID", "hostIPC"))


def privileged_containers(pod: Pod) -> bool:
    return all(not c.get("securityContext", {}).get("privileged", False) for c in containers(pod))


def host_path_volumes(pod: Pod) -> bool:
    return all("hostPath" not in volume for volume in pod.get("volumes", []))


def host_ports(pod: Pod) -> bool:
    return all(port.get("hostPort", 0) == 0 for c in containers(pod) for port in c.get("ports", []))


def apparmor(pod: Pod, annotations: dict[str, str]) -> bool:
    profiles_ok = all(
        ctx.get("appArmorProfile", {}).get("type", "RuntimeDefault") in ("RuntimeDefault", "Localhost")
        for ctx in contexts(pod)
    )
    legacy = [
        v for k, v in annotations.items() if k.startswith("container.apparmor.security.beta.kubernetes.io/")
    ]
    return profiles_ok and all(v == "runtime/default" or v.startswith("localhost/") for v in legacy)


def selinux(pod: Pod) -> bool:
    for ctx in contexts(pod):
        options = ctx.get("seLinuxOptions", {})
        if options.get("type", "container_t") not in SELINUX_TYPES or "user" in options or "role" in options:
            return False
    return True


def proc_mount(pod: Pod) -> bool:
    return all(c.get("securityContext", {}).get("procMount", "Default") == "Default" for c in containers(pod))


def seccomp_not_unconfined(pod: Pod) -> bool:
    return all(ctx.get("seccompProfile", {}).get("type") != "Unconfined" for ctx in contexts(pod))


def sysctls(pod: Pod) -> bool:
    return all(s["name"] in SAFE_SYSCTLS for s in pod.get("securityContext", {}).get("sysctls", []))


def baseline_capabilities(pod: Pod) -> bool:
    allowed = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
               "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}  # fmt: skip
    return all(
        set(c.get("securityContext", {}).get("capabilities", {}).get("add", [])) <= allowed
        for c in containers(pod)
    )


# --- restricted --------------------------------------------------------------------------------------


def volume_types(pod: Pod) -> bool:
    return all(set(volume) - {"name"} <= RESTRICTED_VOLUME_TYPES for volume in pod.get("volumes", []))


def privilege_escalation(pod: Pod) -> bool:
    return all(c.get("securityContext", {}).get("allowPrivilegeEscalation") is False for c in containers(pod))


def running_as_non_root(pod: Pod) -> bool:
    return all(container_setting(pod, c, "runAsNonRoot") is True for c in containers(pod))


def running_as_non_root_user(pod: Pod) -> bool:
    return all(ctx.get("runAsUser") != 0 for ctx in contexts(pod))


def seccomp_set(pod: Pod) -> bool:
    def kind(c: dict[str, Any]) -> Any:
        return (container_setting(pod, c, "seccompProfile") or {}).get("type")

    return all(kind(c) in ("RuntimeDefault", "Localhost") for c in containers(pod))


def capabilities_drop_all(pod: Pod) -> bool:
    for c in containers(pod):
        caps = c.get("securityContext", {}).get("capabilities", {})
        if "ALL" not in caps.get("drop", []) or set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            return False
    return True


# --- modelpod's own defaults on top of the standard -------------------------------------------------


def read_only_root_filesystem(pod: Pod) -> bool:
    return all(c.get("securityContext", {}).get("readOnlyRootFilesystem") is True for c in containers(pod))


def no_service_account_token(pod: Pod) -> bool:
    return pod.get("automountServiceAccountToken") is False


def _set_in_container(key: str, value: Any) -> Callable[[Pod], None]:
    def mutate(pod: Pod) -> None:
        pod["containers"][0].setdefault("securityContext", {})[key] = value

    return mutate


def _set_in_pod(key: str, value: Any) -> Callable[[Pod], None]:
    return lambda pod: pod.__setitem__(key, value)


def _set_in_pod_context(key: str, value: Any) -> Callable[[Pod], None]:
    return lambda pod: pod["securityContext"].__setitem__(key, value)


def _drop_from_both(key: str) -> Callable[[Pod], None]:
    def mutate(pod: Pod) -> None:
        pod["securityContext"].pop(key, None)
        pod["containers"][0]["securityContext"].pop(key, None)

    return mutate


# name -> (check, a change that breaks the requirement); the check reads (pod, annotations)
def _add_volume(volume: dict[str, Any]) -> Callable[[Pod], None]:
    return lambda pod: pod["volumes"].append(volume)


def _add_host_port(pod: Pod) -> None:
    pod["containers"][0]["ports"].append({"containerPort": 1, "hostPort": 1})


# name -> (check, a change that breaks the requirement); the check reads (pod, annotations)
REQUIREMENTS: dict[str, tuple[Callable[..., bool], Callable[[Pod], None]]] = {
    "baseline: HostProcess": (host_process, _set_in_pod_context("windowsOptions", {"hostProcess": True})),
    "baseline: host namespaces": (host_namespaces, _set_in_pod("hostPID", True)),
    "baseline: privileged containers": (privileged_containers, _set_in_container("privileged", True)),
    "baseline: capabilities": (
        baseline_capabilities, _set_in_container("capabilities", {"add": ["SYS_ADMIN"]})
    ),
    "baseline: hostPath volumes": (host_path_volumes, _add_volume({"name": "h", "hostPath": {"path": "/"}})),
    "baseline: host ports": (host_ports, _add_host_port),
    "baseline: AppArmor": (apparmor, _set_in_container("appArmorProfile", {"type": "Unconfined"})),
    "baseline: SELinux": (selinux, _set_in_pod_context("seLinuxOptions", {"type": "spc_t"})),
    "baseline: /proc mount type": (proc_mount, _set_in_container("procMount", "Unmasked")),
    "baseline: seccomp": (
        seccomp_not_unconfined, _set_in_container("seccompProfile", {"type": "Unconfined"})
    ),
    "baseline: sysctls": (
        sysctls, _set_in_pod_context("sysctls", [{"name": "kernel.msgmax", "value": "1"}])
    ),
    "restricted: volume types": (volume_types, _add_volume({"name": "g", "gitRepo": {}})),
    "restricted: privilege escalation": (
        privilege_escalation, _set_in_container("allowPrivilegeEscalation", True)
    ),
    "restricted: running as non-root": (running_as_non_root, _drop_from_both("runAsNonRoot")),
    "restricted: running as non-root user": (running_as_non_root_user, _set_in_container("runAsUser", 0)),
    "restricted: seccomp": (seccomp_set, _drop_from_both("seccompProfile")),
    "restricted: capabilities": (
        capabilities_drop_all, _set_in_container("capabilities", {"drop": ["NET_RAW"]})
    ),
    "modelpod: read-only root filesystem": (
        read_only_root_filesystem, _set_in_container("readOnlyRootFilesystem", False)
    ),
    "modelpod: no service-account token": (
        no_service_account_token, _set_in_pod("automountServiceAccountToken", True)
    ),
}  # fmt: skip


def _check(name: str, pod: Pod, annotations: dict[str, str]) -> bool:
    check = REQUIREMENTS[name][0]
    return check(pod, annotations) if check is apparmor else check(pod)


def pod_templates(spec: Spec, image: str) -> Iterator[tuple[str, Pod, dict[str, str]]]:
    where = f"{spec.name}/{spec.profile or 'base'}"
    for obj in render_manifests(spec, image=image):
        if obj["kind"] == "Deployment":
            template = obj["spec"]["template"]
            yield f"{where}/Deployment", template["spec"], template["metadata"].get("annotations", {})
    for obj in render_manifests(spec, image=image, target="kserve"):
        if obj["kind"] == "InferenceService":
            yield (
                f"{where}/InferenceService",
                obj["spec"]["predictor"],
                obj["metadata"].get("annotations", {}),
            )
    if spec.train.command:
        template = render_training_job(spec, image=image, run_id="pss")["spec"]["template"]
        yield f"{where}/Job", template["spec"], template["metadata"].get("annotations", {})


@pytest.fixture(scope="module")
def every_pod(all_render_specs: list[Spec], render_image: str) -> list[tuple[str, Pod, dict[str, str]]]:
    pods = [p for spec in all_render_specs for p in pod_templates(spec, render_image)]
    assert {where.rsplit("/", 1)[1] for where, _, _ in pods} == {"Deployment", "InferenceService", "Job"}
    return pods


@pytest.mark.parametrize("requirement", list(REQUIREMENTS))
def test_every_pod_template_meets(requirement: str, every_pod: list[tuple[str, Pod, dict[str, str]]]) -> None:
    failing = [where for where, pod, annotations in every_pod if not _check(requirement, pod, annotations)]
    assert not failing, f"{requirement} not met by {failing}"


@pytest.mark.parametrize("requirement", list(REQUIREMENTS))
def test_the_check_fails_on_a_pod_that_breaks(
    requirement: str, every_pod: list[tuple[str, Pod, dict[str, str]]]
) -> None:
    _, pod, annotations = every_pod[0]
    broken = copy.deepcopy(pod)
    REQUIREMENTS[requirement][1](broken)
    assert not _check(requirement, broken, annotations)
