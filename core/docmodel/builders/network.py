"""The NetworkPolicies of a DocModel's pods: the servers take the serving port from the
allowed peers only; the steps take nothing."""

from __future__ import annotations

from typing import Any

from docmodel import labels
from docmodel.api import DocModel, NetworkPeer
from docmodel.builders.children import STEP_SUFFIX, STEPS, Owner, child_metadata, child_name

STEP_COMPONENTS = tuple(STEP_SUFFIX[step] for step in STEPS)


def server_policy_name(name: str) -> str:
    return child_name(name, None, "server")


def steps_policy_name(name: str) -> str:
    return child_name(name, None, "steps")


def _peer(peer: NetworkPeer) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if peer.namespace_selector is not None:
        out["namespaceSelector"] = {"matchLabels": dict(peer.namespace_selector.match_labels)}
    if peer.pod_selector is not None:
        out["podSelector"] = {"matchLabels": dict(peer.pod_selector.match_labels)}
    return out


def _network_policy(
    owner: Owner, name: str, lbls: dict[str, str], pods: dict[str, Any], ingress: list[Any]
) -> dict[str, Any]:
    """An ingress-only NetworkPolicy over `pods` (a label selector), allowing `ingress`."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": child_metadata(owner, name, lbls),
        "spec": {"podSelector": pods, "policyTypes": ["Ingress"], "ingress": ingress},
    }


def build_server_policy(dm: DocModel, owner: Owner) -> dict[str, Any]:
    """Ingress to every server pod of the DocModel (any revision) on the serving port only,
    from `serving.networkPolicy.allowFrom` (default: the pods of the DocModel's namespace).
    Egress stays open: the servers read the store, the base model's mirror or hub."""
    name = dm.metadata.name
    peers = [_peer(p) for p in dm.spec.serving.network_policy.allow_from] or [{"podSelector": {}}]
    pods = {"matchLabels": {**labels.own_pods(name), labels.COMPONENT: labels.SERVER}}
    port = {"protocol": "TCP", "port": dm.spec.serving.port}
    return _network_policy(
        owner,
        server_policy_name(name),
        labels.child_labels(name, labels.SERVER),
        pods,
        [{"from": peers, "ports": [port]}],
    )


def build_steps_policy(dm: DocModel, owner: Owner) -> dict[str, Any]:
    """No ingress at all to the DocModel's ingest, train and evaluate pods (they listen on
    nothing, and hold the source's and the store's credentials). Egress stays open: they read
    S3, the teacher and the base model from wherever the spec points."""
    name = dm.metadata.name
    component = {
        "key": labels.COMPONENT,
        "operator": "In",
        "values": list(STEP_COMPONENTS),
    }
    pods = {"matchLabels": labels.own_pods(name), "matchExpressions": [component]}
    return _network_policy(
        owner, steps_policy_name(name), labels.child_labels(name, "steps"), pods, []
    )
