"""Traffic: the Service, the NetworkPolicy that admits only who should connect, and an optional Ingress."""

from __future__ import annotations

from typing import Any

from modelpod.deploy.render.image import ImageRef
from modelpod.deploy.render.labels import metadata, release_labels, selector_labels
from modelpod.deploy.render.workload import PORT_NAME
from modelpod.specfile.model import Peer
from modelpod.specfile.resolved import Spec

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"  # set on every namespace since Kubernetes 1.22


def render_service(spec: Spec, image: ImageRef) -> dict[str, Any]:
    port = {
        "name": PORT_NAME,
        "port": spec.kubernetes.service_port,
        "targetPort": PORT_NAME,
        "protocol": "TCP",
    }
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(spec, image),
        "spec": {"type": spec.kubernetes.service_type, "selector": selector_labels(spec), "ports": [port]},
    }


def _namespace_peer(namespace: str, pod_labels: dict[str, str] | None = None) -> dict[str, Any]:
    peer: dict[str, Any] = {"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: namespace}}}
    if pod_labels:
        peer["podSelector"] = {"matchLabels": dict(pod_labels)}
    return peer


def _peer(peer: Peer) -> dict[str, Any]:
    if peer.cidr is not None:
        return {"ipBlock": {"cidr": peer.cidr}}
    if peer.namespace is None:  # the release's own namespace: a pod selector alone
        return {"podSelector": {"matchLabels": dict(peer.pods)} if peer.pods else {}}
    return _namespace_peer(peer.namespace, peer.pods)


def _ingress_peers(spec: Spec) -> list[dict[str, Any]]:
    """Who may connect to the serving port: the configured peers, Prometheus, the ingress controller."""
    peers = [_peer(peer) for peer in spec.kubernetes.network_policy.allow_from]
    monitoring = spec.kubernetes.monitoring
    if monitoring.monitor != "none" and monitoring.prometheus_namespace:
        peers.append(_namespace_peer(monitoring.prometheus_namespace))
    if spec.kubernetes.ingress.enabled:
        peers.append(_namespace_peer(spec.kubernetes.ingress.controller_namespace))
    return peers


def render_network_policy(spec: Spec, image: ImageRef) -> dict[str, Any]:
    policy = spec.kubernetes.network_policy
    port = {"port": spec.server.port, "protocol": "TCP"}
    if spec.kubernetes.service_type == "ClusterIP":
        peers = _ingress_peers(spec)
        # a rule without `from` admits every source, so no peers must mean no rule at all
        ingress = [{"from": peers, "ports": [port]}] if peers else []
    else:
        # NodePort and LoadBalancer traffic arrives from node and client addresses no selector can name
        ingress = [{"ports": [port]}]
    dns_ports = [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]
    # name resolution only, and only at the cluster's DNS: a model server calls nothing else
    egress = [{"to": [_peer(peer) for peer in policy.dns], "ports": dns_ports}] if policy.dns else []
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(spec, image),
        "spec": {
            # every pod of the release, the training Job's too: they get no traffic but DNS either way
            "podSelector": {"matchLabels": release_labels(spec)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": ingress,
            "egress": egress,
        },
    }


def render_ingress(spec: Spec, image: ImageRef) -> dict[str, Any]:
    ingress = spec.kubernetes.ingress
    path = {
        "path": ingress.path,
        "pathType": "Prefix",
        "backend": {"service": {"name": spec.name, "port": {"name": PORT_NAME}}},
    }
    rule: dict[str, Any] = {"http": {"paths": [path]}}
    if ingress.host:
        rule = {"host": ingress.host, **rule}
    body: dict[str, Any] = {}
    if ingress.class_name:
        body["ingressClassName"] = ingress.class_name
    if ingress.tls_secret:
        tls: dict[str, Any] = {"secretName": ingress.tls_secret}
        if ingress.host:
            tls = {"hosts": [ingress.host], **tls}
        body["tls"] = [tls]
    body["rules"] = [rule]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": metadata(spec, image, annotations=dict(ingress.annotations)),
        "spec": body,
    }
