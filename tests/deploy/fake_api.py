"""A fake Kubernetes API server for the deploy tests.

It is a fake because no API server can run on the machines these tests run on. It keeps objects in a
dict, answers the REST calls modelpod makes (server-side apply with fieldManager/force/dryRun, create,
get, list with label and field selectors, delete, pod logs, events, API discovery for CRDs, and the
service proxy) through one respx route, and plays a small Deployment controller: applying a changed
pod template starts a rollout whose progress, on each GET of the Deployment, follows the behaviour
chosen for the image (become available, crash loop, fail to pull, exceed the progress deadline,
never become ready).

lightkube 1.x sends requests with httpx2, which respx does not patch, so `transport()` hands
lightkube an httpx2 MockTransport that converts each request to httpx, resolves it with the respx
router (which records the calls), and converts the answer back.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import httpx
import httpx2
import respx
from lightkube.config.kubeconfig import KubeConfig

from modelpod.deploy.cluster import LightkubeCluster
from modelpod.specfile.resolved import Example

BASE = "https://127.0.0.1:6443"
Obj = dict[str, Any]
Key = tuple[str, str, str | None, str]  # (group/version, plural, namespace, name)
Behaviour = Callable[["FakeApi", Obj, int], None]

CLUSTER_SCOPED_PLURALS = {"namespaces", "customresourcedefinitions", "clusterroles", "clusterrolebindings"}


def kubeconfig(server: str = BASE) -> KubeConfig:
    return KubeConfig.from_dict(
        {
            "clusters": [{"name": "fake", "cluster": {"server": server, "insecure-skip-tls-verify": True}}],
            "users": [{"name": "tester", "user": {"token": "not-a-secret"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "tester"}}],
            "current-context": "fake",
        }
    )


@dataclass
class Rollout:
    """The controller's view of one Deployment rollout."""

    replica_set: str
    image: str
    polls: int = 0


@dataclass
class FakeApi:
    namespaces: set[str] = field(default_factory=lambda: {"default", "models"})
    objects: dict[Key, Obj] = field(default_factory=dict)
    behaviours: dict[str, Behaviour] = field(default_factory=dict)  # image -> behaviour; default: ready
    predictors: dict[str, Callable[[Obj], tuple[int, Obj]]] = field(default_factory=dict)  # image -> model
    forbidden: set[tuple[str, str]] = field(default_factory=set)  # (HTTP method, plural)
    conflicts: set[tuple[str, str]] = field(default_factory=set)  # (plural, name) another manager owns
    crds: dict[str, list[Obj]] = field(default_factory=dict)  # "group/version" -> discovery resources
    logs: dict[str, list[str]] = field(default_factory=dict)  # pod name -> lines
    rollouts: dict[tuple[str, str], Rollout] = field(default_factory=dict)
    job_behaviour: Callable[[FakeApi, Obj], None] | None = None  # what happens when a Job is created
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)  # method, path, params
    _version: int = 0

    def __post_init__(self) -> None:
        self.router = respx.MockRouter(base_url=BASE, assert_all_called=False)
        self.route = self.router.route().mock(side_effect=self.handle)

    # -- wiring ---------------------------------------------------------------------------------------

    def transport(self) -> httpx2.MockTransport:
        def bridge(request: httpx2.Request) -> httpx2.Response:
            converted = httpx.Request(
                request.method, str(request.url), headers=list(request.headers.raw), content=request.content
            )
            answer = self.router.handler(converted)
            return httpx2.Response(
                answer.status_code, headers=list(answer.headers.raw), content=answer.content
            )

        return httpx2.MockTransport(bridge)

    def cluster(self) -> LightkubeCluster:
        return LightkubeCluster(kubeconfig(), transport=self.transport())

    # -- what tests look at ---------------------------------------------------------------------------

    def get(
        self, plural: str, name: str, namespace: str | None = "default", gv: str | None = None
    ) -> Obj | None:
        for (group_version, p, ns, n), obj in self.objects.items():
            if p == plural and n == name and ns == namespace and gv in (None, group_version):
                return obj
        return None

    def names(self, plural: str, namespace: str | None = "default") -> set[str]:
        return {n for (_, p, ns, n) in self.objects if p == plural and ns == namespace}

    def calls(self, method: str, path_part: str = "") -> list[tuple[str, str, dict[str, str]]]:
        return [c for c in self.requests if c[0] == method and path_part in c[1]]

    def put(self, obj: Obj, plural: str) -> Obj:
        """Store an object directly, as if someone else had created it."""
        meta = obj["metadata"]
        gv = obj["apiVersion"]
        stored = copy.deepcopy(obj)
        stored["metadata"].setdefault("uid", f"uid-{meta['name']}")
        stored["metadata"].setdefault("creationTimestamp", "2026-01-01T00:00:00Z")
        self.objects[(gv, plural, meta.get("namespace"), meta["name"])] = stored
        return stored

    def event(self, namespace: str, about: str, reason: str, message: str, kind: str = "Warning") -> None:
        self._version += 1
        name = f"{about}.{self._version}"
        self.put(
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": name, "namespace": namespace},
                "involvedObject": {"name": about, "namespace": namespace},
                "reason": reason,
                "message": message,
                "type": kind,
                "count": 1,
                "lastTimestamp": f"2026-01-01T00:00:{self._version % 60:02d}Z",
            },
            "events",
        )

    # -- HTTP -----------------------------------------------------------------------------------------

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        params = {k: v[-1] for k, v in parse_qs(request.url.query.decode()).items()}
        self.requests.append((request.method, path, params))
        parts = path.strip("/").split("/")
        if parts[0] == "api":
            gv, rest = parts[1], parts[2:]
        else:
            gv, rest = "/".join(parts[1:3]), parts[3:]
        if not rest:
            return self._discovery(gv)
        namespace = None
        if rest[0] == "namespaces" and len(rest) > 2:
            namespace, rest = rest[1], rest[2:]
        plural, name, sub = rest[0], (rest[1] if len(rest) > 1 else None), rest[2:]
        if (request.method, plural) in self.forbidden:
            return _status(
                403, "Forbidden", f'{plural} is forbidden: User "tester" cannot {request.method} {plural}'
            )
        if namespace is not None and namespace not in self.namespaces:
            return _status(404, "NotFound", f'namespaces "{namespace}" not found')
        if sub and sub[0] == "log":
            return self._log(name or "", params)
        if sub and sub[0] == "proxy":
            return self._proxy(namespace, name or "", request)
        key = (gv, plural, namespace, name or "")
        if request.method == "GET" and name is None:
            return self._list(gv, plural, namespace, params)
        if request.method == "GET":
            return self._get(key)
        if request.method == "PATCH":
            return self._apply(key, json.loads(request.content), params, request.headers["content-type"])
        if request.method == "POST":
            return self._create(gv, plural, namespace, json.loads(request.content))
        if request.method == "DELETE":
            return self._delete(key)
        return _status(405, "MethodNotAllowed", request.method)

    def _discovery(self, gv: str) -> httpx.Response:
        if gv not in self.crds:
            return _status(404, "NotFound", "the server could not find the requested resource")
        return httpx.Response(
            200, json={"kind": "APIResourceList", "groupVersion": gv, "resources": self.crds[gv]}
        )

    def _get(self, key: Key) -> httpx.Response:
        obj = self.objects.get(key)
        if obj is None:
            return _status(404, "NotFound", f'{key[1]} "{key[3]}" not found')
        if key[1] == "deployments":
            self._advance(obj)
        return httpx.Response(200, json=obj)

    def _list(self, gv: str, plural: str, namespace: str | None, params: dict[str, str]) -> httpx.Response:
        wanted = _selector(params.get("labelSelector", ""))
        fields = _selector(params.get("fieldSelector", ""))
        items = []
        for (g, p, ns, _), obj in sorted(self.objects.items(), key=lambda item: str(item[0])):
            if g != gv or p != plural or (namespace is not None and ns != namespace):
                continue
            labels = obj["metadata"].get("labels", {})
            if any(labels.get(k) != v for k, v in wanted.items()):
                continue
            if (
                "involvedObject.name" in fields
                and obj["involvedObject"]["name"] != fields["involvedObject.name"]
            ):
                continue
            items.append(obj)
        return httpx.Response(200, json={"kind": "List", "apiVersion": gv, "metadata": {}, "items": items})

    def _apply(self, key: Key, body: Obj, params: dict[str, str], content_type: str) -> httpx.Response:
        if content_type != "application/apply-patch+yaml" or params.get("fieldManager") != "modelpod":
            return _status(400, "BadRequest", f"expected a server-side apply by modelpod, got {content_type}")
        if (key[1], key[3]) in self.conflicts and params.get("force") != "true":
            return _status(
                409, "Conflict", 'Apply failed with 1 conflict: conflict with "kubectl": .spec.replicas'
            )
        existing = self.objects.get(key)
        obj = copy.deepcopy(body)
        meta = obj["metadata"]
        self._version += 1
        if existing is not None:
            old_meta = existing["metadata"]
            meta["uid"], meta["creationTimestamp"] = old_meta["uid"], old_meta["creationTimestamp"]
            meta["generation"] = old_meta.get("generation", 1) + (obj.get("spec") != existing.get("spec"))
            annotations = {**old_meta.get("annotations", {}), **meta.get("annotations", {})}
            if annotations:
                meta["annotations"] = annotations
            if "status" in existing:
                obj["status"] = copy.deepcopy(existing["status"])
        else:
            meta.update(
                uid=f"uid-{key[3]}-{self._version}", creationTimestamp="2026-01-01T00:00:00Z", generation=1
            )
        meta["resourceVersion"] = str(self._version)
        meta["managedFields"] = [
            {"manager": "modelpod", "operation": "Apply", "apiVersion": obj["apiVersion"]}
        ]
        if params.get("dryRun") == "All":
            return httpx.Response(200, json=obj)
        self.objects[key] = obj
        if key[1] == "deployments" and (existing is None or _template(existing) != _template(obj)):
            self._start_rollout(obj)
        return httpx.Response(200 if existing else 201, json=obj)

    def _create(self, gv: str, plural: str, namespace: str | None, body: Obj) -> httpx.Response:
        key = (gv, plural, namespace, body["metadata"]["name"])
        if key in self.objects:
            return _status(409, "AlreadyExists", f'{plural} "{key[3]}" already exists')
        self._version += 1
        body["metadata"].update(uid=f"uid-{key[3]}", resourceVersion=str(self._version))
        body["metadata"].setdefault("creationTimestamp", f"2026-01-01T00:00:{self._version % 60:02d}Z")
        self.objects[key] = body
        if plural == "jobs" and self.job_behaviour is not None:
            self.job_behaviour(self, body)
        return httpx.Response(201, json=body)

    def _delete(self, key: Key) -> httpx.Response:
        if self.objects.pop(key, None) is None:
            return _status(404, "NotFound", f'{key[1]} "{key[3]}" not found')
        return httpx.Response(200, json={"kind": "Status", "apiVersion": "v1", "status": "Success"})

    def _log(self, pod: str, params: dict[str, str]) -> httpx.Response:
        if pod not in self.logs:
            return _status(400, "BadRequest", f'container "server" in pod "{pod}" is waiting to start')
        lines = self.logs[pod][-int(params.get("tailLines", "100000")) :]
        return httpx.Response(200, text="".join(line + "\n" for line in lines))

    def _proxy(self, namespace: str | None, target: str, request: httpx.Request) -> httpx.Response:
        service_name = target.split(":")[0]
        service = self.get("services", service_name, namespace)
        if service is None:
            return _status(404, "NotFound", f'services "{service_name}" not found')
        selector = service["spec"].get("selector", {})
        ready = [
            pod
            for (_, p, ns, _), pod in self.objects.items()
            if p == "pods"
            and ns == namespace
            and all(pod["metadata"].get("labels", {}).get(k) == v for k, v in selector.items())
            and all(c.get("ready") for c in pod["status"].get("containerStatuses", [{}]))
        ]
        if not ready:
            return _status(503, "ServiceUnavailable", f'no endpoints available for service "{service_name}"')
        image = ready[-1]["spec"]["containers"][0]["image"]
        predictor = self.predictors.get(image, lambda body: (200, {"outputs": {}}))
        status, answer = predictor(json.loads(request.content))
        return httpx.Response(status, json=answer)

    # -- the Deployment controller --------------------------------------------------------------------

    def _start_rollout(self, deployment: Obj) -> None:
        meta = deployment["metadata"]
        annotations = meta.setdefault("annotations", {})
        revision = int(annotations.get("deployment.kubernetes.io/revision", "0")) + 1
        annotations["deployment.kubernetes.io/revision"] = str(revision)
        template_hash = hashlib.sha256(
            json.dumps(_template(deployment), sort_keys=True).encode()
        ).hexdigest()[:8]
        rs_name = f"{meta['name']}-{template_hash}"
        labels = {**deployment["spec"]["selector"]["matchLabels"], "pod-template-hash": template_hash}
        self.put(
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "metadata": {
                    "name": rs_name,
                    "namespace": meta["namespace"],
                    "labels": labels,
                    "annotations": {"deployment.kubernetes.io/revision": str(revision)},
                    "ownerReferences": [_owner("apps/v1", "Deployment", meta)],
                },
                "spec": {
                    "selector": {"matchLabels": labels},
                    "replicas": deployment["spec"].get("replicas", 1),
                },
            },
            "replicasets",
        )
        image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
        self.rollouts[(meta["namespace"], meta["name"])] = Rollout(rs_name, image)
        status = deployment.setdefault("status", {})
        status["updatedReplicas"] = 0
        status["conditions"] = [{"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"}]

    def _advance(self, deployment: Obj) -> None:
        meta = deployment["metadata"]
        rollout = self.rollouts.get((meta["namespace"], meta["name"]))
        if rollout is None:
            return
        rollout.polls += 1
        deployment.setdefault("status", {})["observedGeneration"] = meta.get("generation", 1)
        self.behaviours.get(rollout.image, ready_after(2))(self, deployment, rollout.polls)

    def pods_of(
        self, deployment: Obj, *, ready: bool, waiting: Obj | None = None, restarts: int = 0
    ) -> list[Obj]:
        """Create (or update) the pods of the Deployment's newest ReplicaSet with the given state."""
        meta = deployment["metadata"]
        rollout = self.rollouts[(meta["namespace"], meta["name"])]
        rs = self.get("replicasets", rollout.replica_set, meta["namespace"])
        assert rs is not None
        pods = []
        for i in range(int(deployment["spec"].get("replicas", 1))):
            name = f"{rollout.replica_set}-{i}"
            state = {"waiting": waiting} if waiting else {"running": {"startedAt": "2026-01-01T00:00:00Z"}}
            pods.append(
                self.put(
                    {
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "metadata": {
                            "name": name,
                            "namespace": meta["namespace"],
                            "labels": dict(rs["metadata"]["labels"]),
                            "ownerReferences": [_owner("apps/v1", "ReplicaSet", rs["metadata"])],
                        },
                        "spec": copy.deepcopy(deployment["spec"]["template"]["spec"]),
                        "status": {
                            "phase": "Running" if not waiting else "Pending",
                            "containerStatuses": [
                                {
                                    "name": "server",
                                    "image": deployment["spec"]["template"]["spec"]["containers"][0]["image"],
                                    "imageID": "",
                                    "ready": ready,
                                    "restartCount": restarts,
                                    "state": state,
                                }
                            ],
                        },
                    },
                    "pods",
                )
            )
        return pods

    def retire_old_pods(self, deployment: Obj) -> None:
        meta = deployment["metadata"]
        current = self.rollouts[(meta["namespace"], meta["name"])].replica_set
        for key, pod in list(self.objects.items()):
            owner = pod["metadata"].get("ownerReferences", [{}])[0].get("name", "")
            if key[1] == "pods" and owner.startswith(meta["name"] + "-") and owner != current:
                del self.objects[key]


# -- behaviours: what the controller does on the n-th GET after a rollout starts -----------------------


def ready_after(polls: int) -> Behaviour:
    def behave(api: FakeApi, deployment: Obj, n: int) -> None:
        desired = int(deployment["spec"].get("replicas", 1))
        status = deployment["status"]
        status["updatedReplicas"] = min(desired, n)
        status["replicas"] = desired + (n < polls)  # an old pod lingers until the end
        if n >= polls:
            api.pods_of(deployment, ready=True)
            api.retire_old_pods(deployment)
            status.update(availableReplicas=desired, readyReplicas=desired, replicas=desired)
            status["conditions"] = [
                {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
            ]

    return behave


def crash_loop(log: list[str]) -> Behaviour:
    def behave(api: FakeApi, deployment: Obj, n: int) -> None:
        waiting = {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container"}
        for pod in api.pods_of(deployment, ready=False, waiting=waiting, restarts=3):
            api.logs[pod["metadata"]["name"]] = log
            if n == 1:
                api.event(
                    pod["metadata"]["namespace"],
                    pod["metadata"]["name"],
                    "BackOff",
                    "Back-off restarting failed container server",
                )

    return behave


def image_pull_fails() -> Behaviour:
    def behave(api: FakeApi, deployment: Obj, n: int) -> None:
        waiting = {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}
        for pod in api.pods_of(deployment, ready=False, waiting=waiting):
            if n == 1:
                image = pod["spec"]["containers"][0]["image"]
                api.event(
                    pod["metadata"]["namespace"],
                    pod["metadata"]["name"],
                    "Failed",
                    f'Failed to pull image "{image}": not found',
                )

    return behave


def deadline_exceeded(after: int) -> Behaviour:
    def behave(api: FakeApi, deployment: Obj, n: int) -> None:
        api.pods_of(deployment, ready=False)
        if n >= after:
            deployment["status"]["conditions"] = [
                {
                    "type": "Progressing",
                    "status": "False",
                    "reason": "ProgressDeadlineExceeded",
                    "message": f'ReplicaSet "{deployment["metadata"]["name"]}" has timed out progressing.',
                }
            ]

    return behave


def never_ready() -> Behaviour:
    def behave(api: FakeApi, deployment: Obj, n: int) -> None:
        api.pods_of(deployment, ready=False)
        desired = int(deployment["spec"].get("replicas", 1))
        # maxUnavailable 0: the old pods stay (and stay available) beside the new, unready ones
        deployment["status"].update(updatedReplicas=desired, replicas=2 * desired)

    return behave


def _status(code: int, reason: str, message: str) -> httpx.Response:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    return httpx.Response(code, json=body)


def _owner(api_version: str, kind: str, meta: Obj) -> Obj:
    return {
        "apiVersion": api_version,
        "kind": kind,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
    }


def _selector(text: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in text.split(",") if part)


def _template(deployment: Obj) -> Any:
    return deployment.get("spec", {}).get("template")


# -- a small release in the renderer's shape, for the tests ------------------------------------------

RELEASE, NS = "digits", "models"
GOOD, BAD = "modelpod/digits@sha256:" + "a" * 64, "modelpod/digits@sha256:" + "b" * 64
LABELS = {
    "app.kubernetes.io/name": RELEASE,
    "app.kubernetes.io/instance": RELEASE,
    "app.kubernetes.io/managed-by": "modelpod",
}
SELECTOR = {"app.kubernetes.io/name": RELEASE, "app.kubernetes.io/instance": RELEASE}
EXAMPLE = Example(name="seven", inputs={"x": [3.5]}, expected={"y": [7.0]}, atol=1e-4, rtol=1e-3)


class FakeClock:
    """time.monotonic and time.sleep for the rollout wait: sleeping only moves the clock."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept += seconds
        self.now += seconds


def meta(name: str) -> dict[str, Any]:
    return {"name": name, "namespace": NS, "labels": dict(LABELS)}


def manifests(
    image: str = GOOD, *, config_maps: tuple[str, ...] = ("digits-config",)
) -> list[dict[str, Any]]:
    """A small release in the renderer's shape, deliberately listed out of dependency order."""
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(RELEASE),
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": SELECTOR},
            "template": {
                "metadata": {"labels": dict(LABELS)},
                "spec": {
                    "containers": [{"name": "server", "image": image, "ports": [{"containerPort": 8080}]}]
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(RELEASE),
        "spec": {"selector": SELECTOR, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    }
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(RELEASE)}
    configs = [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(n), "data": {"k": n}} for n in config_maps
    ]
    return [deployment, service, *configs, account]


def doubling(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return 200, {"outputs": {"y": [2 * body["inputs"]["x"][0]]}}
