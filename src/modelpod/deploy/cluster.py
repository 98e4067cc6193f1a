"""The cluster adapter: the few Kubernetes API calls deploy needs, on plain manifest dicts.

`Cluster` is the interface the deploy logic is written against; `LightkubeCluster` implements it with
lightkube (typed resources for built-in kinds, generic resources found by API discovery for CRDs such
as ServiceMonitor or InferenceService) and, for the calls lightkube has no method for (the service
proxy, a crashed container's previous log), raw requests on an HTTP client built from the same
kubeconfig. Every API failure becomes a `ClusterError` that says what was refused and what to do.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from modelpod.errors import ModelpodError

if TYPE_CHECKING:
    import httpx2

Manifest = dict[str, Any]
Manifests = list[Manifest]  # (a method named `list` shadows the builtin in class bodies)
Lines = list[str]
FIELD_MANAGER = "modelpod"


class DeployError(ModelpodError):
    """A deploy, rollback or other release operation on a cluster failed."""


class ClusterError(DeployError):
    """The Kubernetes API refused a call or could not be reached."""

    def __init__(self, message: str, *, hint: str | None = None, status: int | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status


@dataclass(frozen=True, order=True)
class ObjectRef:
    """Which object: enough to GET, apply or DELETE it."""

    api_version: str
    kind: str
    name: str
    namespace: str | None = None

    @classmethod
    def of(cls, manifest: Mapping[str, Any]) -> ObjectRef:
        meta = manifest.get("metadata") or {}
        return cls(manifest["apiVersion"], manifest["kind"], meta["name"], meta.get("namespace"))

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}"


@dataclass(frozen=True)
class ProxyResponse:
    status: int
    body: bytes

    def json(self) -> Any:
        import json

        return json.loads(self.body)


class Cluster(Protocol):
    """What deploy needs from a Kubernetes API server. Objects go in and come out as plain dicts."""

    def apply(self, manifest: Manifest, *, force: bool = False, dry_run: bool = False) -> Manifest:
        """Server-side apply with field manager "modelpod"; returns the object as the server has it."""

    def create(self, manifest: Manifest) -> Manifest:
        """Create; a ClusterError with status 409 when it exists already."""

    def check_served(self, api_version: str, kind: str) -> None:
        """Raise a ClusterError unless the cluster serves this kind (a CRD may be missing)."""

    def get(self, ref: ObjectRef) -> Manifest | None:
        """The object, or None when it does not exist."""

    def list(
        self, api_version: str, kind: str, *, namespace: str | None, labels: Mapping[str, str] | None = None
    ) -> Manifests: ...

    def delete(self, ref: ObjectRef) -> bool:
        """Delete (in the background); False when it was already gone."""

    def events(self, *, namespace: str, object_name: str) -> Manifests:
        """Events about the named object, oldest first."""

    def pod_log(
        self,
        name: str,
        *,
        namespace: str,
        tail_lines: int,
        container: str | None = None,
        previous: bool = False,
    ) -> Lines: ...

    def follow_log(self, name: str, *, namespace: str, container: str | None = None) -> Iterator[str]:
        """The pod's log lines as they are written, until the container ends or the caller stops."""

    def proxy(
        self,
        method: str,
        *,
        namespace: str,
        service: str,
        port: str,
        path: str,
        json_body: Any = None,
        timeout: float,
    ) -> ProxyResponse:
        """A request to a Service through the API server's service proxy."""


class LightkubeCluster:
    """`Cluster` on lightkube. `transport` replaces the HTTP transport (tests pass a faked API server)."""

    def __init__(
        self,
        config: Any = None,
        *,
        context: str | None = None,
        timeout: float = 30.0,
        transport: httpx2.BaseTransport | None = None,
    ) -> None:
        import httpx2
        import lightkube
        from lightkube.config import client_adapter
        from lightkube.config.kubeconfig import KubeConfig

        with _translated("read the kubeconfig"):  # also its certificate files and credentials
            if config is None:
                config = KubeConfig.from_env()
            single = config.get(context) if isinstance(config, KubeConfig) else config
            if single is None:
                raise ClusterError("the kubeconfig has no current context", hint="pass --context NAME")
            self.server: str = single.cluster.server
            self._client = lightkube.Client(
                single, timeout=httpx2.Timeout(timeout), field_manager=FIELD_MANAGER, transport=transport
            )
            params = client_adapter.ConnectionParams(timeout=httpx2.Timeout(timeout), transport=transport)
            self._http = client_adapter.Client(single, params)
        self._resources: dict[tuple[str, str], Any] = {}

    def close(self) -> None:
        self._client.close()
        self._http.close()

    def server_version(self) -> str:
        """The API server's version (GET /version): a cheap check that the cluster answers."""
        response = self._raw("GET", "/version")
        if response.status_code != 200:
            message = _status_message(response)
            raise ClusterError(
                f"the API server at {self.server} answered: {message}", status=response.status_code
            )
        return str(response.json().get("gitVersion", "unknown"))

    # -- objects ------------------------------------------------------------------------------------

    def apply(self, manifest: Manifest, *, force: bool = False, dry_run: bool = False) -> Manifest:
        from lightkube.types import PatchType

        ref = ObjectRef.of(manifest)
        with _translated(f"apply {ref}", ref.namespace, server=self.server):
            result = self._client.patch(
                self._resource(ref.api_version, ref.kind),
                ref.name,
                manifest,
                namespace=ref.namespace,
                patch_type=PatchType.APPLY,
                field_manager=FIELD_MANAGER,
                force=force,
                dry_run=dry_run,
            )
        return _plain(result)

    def create(self, manifest: Manifest) -> Manifest:
        ref = ObjectRef.of(manifest)
        resource = self._resource(ref.api_version, ref.kind)
        with _translated(f"create {ref}", ref.namespace, server=self.server):
            obj = resource.from_dict(manifest)
            return _plain(self._client.create(obj, namespace=ref.namespace))

    def check_served(self, api_version: str, kind: str) -> None:
        self._resource(api_version, kind)

    def get(self, ref: ObjectRef) -> Manifest | None:
        resource = self._resource(ref.api_version, ref.kind)
        try:
            with _translated(f"read {ref}", ref.namespace, server=self.server, missing_ok=True):
                return _plain(self._client.get(resource, ref.name, namespace=ref.namespace))
        except _Missing:
            return None

    def list(
        self, api_version: str, kind: str, *, namespace: str | None, labels: Mapping[str, str] | None = None
    ) -> Manifests:
        resource = self._resource(api_version, kind)
        with _translated(f"list {kind}", namespace, server=self.server):
            items = self._client.list(resource, namespace=namespace, labels=dict(labels or {}))
            return [_plain(item) for item in items]

    def delete(self, ref: ObjectRef) -> bool:
        from lightkube.types import CascadeType

        resource = self._resource(ref.api_version, ref.kind)
        try:
            with _translated(f"delete {ref}", ref.namespace, server=self.server, missing_ok=True):
                self._client.delete(
                    resource, ref.name, namespace=ref.namespace, cascade=CascadeType.BACKGROUND
                )
        except _Missing:
            return False
        return True

    def events(self, *, namespace: str, object_name: str) -> Manifests:
        from lightkube.resources.core_v1 import Event

        with _translated("list events", namespace, server=self.server):
            items = self._client.list(Event, namespace=namespace, fields={"involvedObject.name": object_name})
            events = [_plain(item) for item in items]
        return sorted(events, key=_event_time)

    # -- pods and services --------------------------------------------------------------------------

    def pod_log(
        self,
        name: str,
        *,
        namespace: str,
        tail_lines: int,
        container: str | None = None,
        previous: bool = False,
    ) -> Lines:
        params: dict[str, str] = {"tailLines": str(tail_lines), "previous": str(previous).lower()}
        if container:
            params["container"] = container
        response = self._raw("GET", f"/api/v1/namespaces/{namespace}/pods/{name}/log", params=params)
        if response.status_code >= 400:
            raise ClusterError(
                f"no log for pod {name}: {_status_message(response)}", status=response.status_code
            )
        return response.text.splitlines()

    def follow_log(self, name: str, *, namespace: str, container: str | None = None) -> Iterator[str]:
        with _translated(f"read the log of pod {name}", namespace, server=self.server):
            yield from (
                line.rstrip("\n")
                for line in self._client.log(name, namespace=namespace, container=container, follow=True)
            )

    def proxy(
        self,
        method: str,
        *,
        namespace: str,
        service: str,
        port: str,
        path: str,
        json_body: Any = None,
        timeout: float,
    ) -> ProxyResponse:
        url = f"/api/v1/namespaces/{namespace}/services/{service}:{port}/proxy/{path.lstrip('/')}"
        response = self._raw(method, url, json_body=json_body, timeout=timeout)
        return ProxyResponse(response.status_code, response.content)

    # -- internals ----------------------------------------------------------------------------------

    def _raw(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
        timeout: float | None = None,
    ) -> httpx2.Response:
        import httpx2

        kwargs: dict[str, Any] = {"params": dict(params or {})}
        if json_body is not None:
            kwargs["json"] = json_body
        if timeout is not None:
            kwargs["timeout"] = httpx2.Timeout(timeout)
        with _translated(f"{method} {path}", server=self.server):
            return self._http.request(method, path, **kwargs)

    def _resource(self, api_version: str, kind: str) -> Any:
        """The lightkube resource class of a kind; CRDs are looked up by API discovery once each."""
        from lightkube.core.exceptions import LoadResourceError
        from lightkube.core.resource_registry import resource_registry

        key = (api_version, kind)
        if key not in self._resources:
            try:
                self._resources[key] = resource_registry.load(api_version, kind)
            except LoadResourceError:
                self._resources[key] = self._discover(api_version, kind)
        return self._resources[key]

    def _discover(self, api_version: str, kind: str) -> Any:
        from lightkube.generic_resource import create_global_resource, create_namespaced_resource

        group, _, version = api_version.rpartition("/")
        response = self._raw("GET", f"/apis/{api_version}" if group else f"/api/{api_version}")
        found = [
            item
            for item in (response.json().get("resources", []) if response.status_code == 200 else [])
            if item.get("kind") == kind and "/" not in item.get("name", "")
        ]
        if not found:
            raise ClusterError(
                f"the cluster does not serve {kind} ({api_version})",
                hint="install the CRD (or operator) that serves it, or turn that option off in modelpod.yaml",
            )
        create = create_namespaced_resource if found[0].get("namespaced") else create_global_resource
        return create(group, version, kind, found[0]["name"])


class _Missing(Exception):
    """A 404 on the object itself (not on its namespace), where the caller accepts it."""


@contextlib.contextmanager
def _translated(
    action: str, namespace: str | None = None, *, server: str | None = None, missing_ok: bool = False
) -> Iterator[None]:
    """Turn lightkube and transport errors into a ClusterError naming the action and a fix."""
    import httpx2
    import lightkube
    from lightkube.core.exceptions import ConfigError

    try:
        yield
    except lightkube.ApiError as exc:
        code = exc.status.code or 0
        message = exc.status.message or str(exc)
        if code == 404 and namespace and f'namespaces "{namespace}" not found' in message:
            raise ClusterError(
                f"cannot {action}: namespace {namespace!r} does not exist",
                hint=f"create it (kubectl create namespace {namespace}) or set kubernetes.namespace",
                status=code,
            ) from None
        if code == 404 and missing_ok:
            raise _Missing from None
        raise ClusterError(f"cannot {action}: {message}", hint=_HINTS.get(code), status=code) from None
    except ConfigError as exc:
        raise ClusterError(
            f"no usable Kubernetes configuration: {exc}",
            hint="set KUBECONFIG to a kubeconfig file, or select a context with `kubectl config use-context`",
        ) from None
    except httpx2.TransportError as exc:
        raise ClusterError(
            f"cannot reach the Kubernetes API server at {server or '?'}: {exc or type(exc).__name__}",
            hint="is the cluster running, and does KUBECONFIG name its current address?",
        ) from None
    except OSError as exc:  # a certificate or token file the kubeconfig names, unreadable or invalid
        raise ClusterError(
            f"cannot {action}: {exc}",
            hint="check the certificate and credential files the kubeconfig names",
        ) from None


_HINTS = {
    401: "the kubeconfig's credentials were rejected; log in again or refresh the token",
    403: "your user lacks RBAC permission for this; check with `kubectl auth can-i` and ask an admin",
    409: "another field manager owns these fields; deploy with --force-conflicts to take them over",
    422: "the object is invalid for this cluster's API version; check `modelpod render` output",
}


def _status_message(response: httpx2.Response) -> str:
    try:
        return str(response.json().get("message", response.text))
    except ValueError:
        return response.text.strip() or f"HTTP {response.status_code}"


def _plain(obj: Any) -> Manifest:
    result: Manifest = obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)
    return result


def _event_time(event: Mapping[str, Any]) -> str:
    return str(event.get("lastTimestamp") or event.get("eventTime") or event.get("firstTimestamp") or "")


def load_cluster(context: str | None = None, *, timeout: float = 30.0) -> LightkubeCluster:
    """The cluster of the current kubeconfig context (KUBECONFIG, ~/.kube/config, or in-cluster)."""
    return LightkubeCluster(context=context, timeout=timeout)
