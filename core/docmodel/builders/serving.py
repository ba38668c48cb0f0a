"""Serving: a revision's server Deployment and environment, the DocModel's Service, and the
servers' PodDisruptionBudget."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from docmodel import labels
from docmodel.api import DocModel
from docmodel.artifacts import RevisionLayout
from docmodel.builders.children import (
    Owner,
    child_metadata,
    deployment_name,
    service_name,
    short_digest,
)
from docmodel.builders.pods import (
    SERVER_FILES_GIB,
    SERVER_PROGRAM,
    SERVER_WORKDIR,
    EnvVar,
    PodDefaults,
    StoreConfig,
    container_resources,
    ephemeral_storage,
    restricted_pod,
    secret_env,
    source_env,
)
from docmodel.builders.steps import Scheduling


def adapter_uri(dm: DocModel, store_uri: str, revision: str) -> str:
    return RevisionLayout(dm.metadata.namespace, dm.metadata.name, revision).uri(
        store_uri, "adapter"
    )


def server_env(
    dm: DocModel,
    revision: str,
    store: StoreConfig,
    *,
    overrides: Mapping[str, str] | None = None,
) -> list[EnvVar]:
    """The server's environment for `revision` (see docmodel_server.settings); `overrides`
    replaces or adds literal values (local mode's engine, host, port and workdir)."""
    spec = dm.spec
    env = [
        EnvVar("POD_IP", field_path="status.podIP"),
        EnvVar("POD_NAME", field_path="metadata.name"),
        EnvVar("DOCMODEL_SERVED_NAME", dm.metadata.name),
        EnvVar("DOCMODEL_ADAPTER_URI", adapter_uri(dm, store.uri, revision)),
        EnvVar("DOCMODEL_BASE_MODEL", spec.base_model.name),
        EnvVar("DOCMODEL_REVISION", revision),
        EnvVar("DOCMODEL_MAX_LORA_RANK", str(spec.training.lora.r)),
        EnvVar("DOCMODEL_MAX_MODEL_LEN", str(spec.serving.max_model_len)),
        EnvVar("DOCMODEL_GPU_MEMORY_UTILIZATION", str(spec.serving.gpu_memory_utilization)),
        EnvVar("DOCMODEL_PORT", str(spec.serving.port)),
        # A directory of the pod's own under the volume: pods that share a host path (a node
        # without emptyDir) never download into each other's directories.
        EnvVar("DOCMODEL_WORKDIR", f"{SERVER_WORKDIR}/$(POD_NAME)"),
    ]
    embedding_mirror = spec.evaluation.baseline.embedding_model.mirror
    if spec.base_model.mirror:
        env.append(EnvVar("DOCMODEL_BASE_MODEL_MIRROR", spec.base_model.mirror))
    if embedding_mirror:  # a retrieval revision's query embedding model
        env.append(EnvVar("DOCMODEL_EMBEDDING_MODEL_MIRROR", embedding_mirror))
    if (spec.base_model.mirror or embedding_mirror) and spec.source.endpoint:
        env.append(EnvVar("DOCMODEL_BASE_MODEL_MIRROR_ENDPOINT", spec.source.endpoint))
    env += store.env()
    env += source_env(dm)
    key = spec.serving.api_key_secret_ref
    if key is not None:
        env.append(secret_env("DOCMODEL_API_KEY", key.name, key.key))
    if overrides:
        env = [e for e in env if e.name not in overrides]
        env += [EnvVar(name, value) for name, value in overrides.items()]
    return env


def serving_digest(dm: DocModel) -> str:
    """Digest of what the live Deployment is built from besides the revision: a change here
    (replicas, resources, server settings) updates the Deployment without retraining."""
    wire = dm.spec.serving.model_dump(mode="json", by_alias=True)
    security = dm.spec.security.model_dump(mode="json", by_alias=True)
    return short_digest([wire, dm.spec.base_model.name, dm.spec.training.lora.r, security])


def _probe(kind: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "exec": {"command": [SERVER_PROGRAM, "probe", f"--{kind}"]},
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    }


def build_deployment(
    dm: DocModel,
    owner: Owner,
    revision: str,
    store: StoreConfig,
    server_image: str,
    defaults: PodDefaults | None = None,
) -> dict[str, Any]:
    """The server Deployment of `revision` (blue-green: one per revision)."""
    spec = dm.spec
    name = dm.metadata.name
    lbls = labels.child_labels(name, labels.SERVER, revision)
    container = {
        "name": "server",
        "image": spec.serving.image or server_image,
        "command": [SERVER_PROGRAM],
        "args": ["serve"],
        "env": [e.to_k8s() for e in server_env(dm, revision, store)],
        "ports": [{"name": "http", "containerPort": spec.serving.port, "protocol": "TCP"}],
        "resources": container_resources(
            spec.serving.resources, ephemeral_storage(spec.base_model.name, SERVER_FILES_GIB)
        ),
        # Loading an 8B model and its adapter takes minutes; the startup probe covers that,
        # bounded by the rollout's progress deadline.
        "startupProbe": _probe("ready", 10, max(1, spec.serving.progress_deadline_seconds // 10)),
        "readinessProbe": _probe("ready", 10, 3),
        "livenessProbe": _probe("live", 20, 3),
    }
    pod = restricted_pod({"containers": [container]}, SERVER_WORKDIR, spec.security)
    serving = spec.serving
    Scheduling(serving.resources, serving.node_selector, serving.tolerations).apply(
        pod, defaults or PodDefaults()
    )
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": child_metadata(
            owner,
            deployment_name(name, revision),
            lbls,
            {labels.SERVING_DIGEST: serving_digest(dm)},
        ),
        "spec": {
            "replicas": spec.serving.replicas,
            "progressDeadlineSeconds": spec.serving.progress_deadline_seconds,
            "selector": {"matchLabels": labels.server_pods(name, revision)},
            "strategy": (
                {"type": "Recreate"}
                if spec.serving.strategy == "Recreate"
                else {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
                }
            ),
            "template": {"metadata": {"labels": lbls}, "spec": pod},
        },
    }


def build_service(dm: DocModel, owner: Owner, revision: str) -> dict[str, Any]:
    """The DocModel's Service, selecting the pods of `revision` (moving it moves traffic)."""
    name = dm.metadata.name
    port = dm.spec.serving.port
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": child_metadata(
            owner, service_name(name), labels.child_labels(name, labels.SERVER)
        ),
        "spec": {
            "selector": labels.server_pods(name, revision),
            "ports": [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def build_disruption_budget(dm: DocModel, owner: Owner, revision: str) -> dict[str, Any] | None:
    """A PodDisruptionBudget for the revision's servers when there are several: a node drain
    takes one replica at a time. With one replica, none (it would block every drain)."""
    if dm.spec.serving.replicas < 2:
        return None
    name = dm.metadata.name
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": child_metadata(
            owner,
            deployment_name(name, revision),
            labels.child_labels(name, labels.SERVER, revision),
        ),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": labels.server_pods(name, revision)},
        },
    }


def service_endpoint(dm: DocModel) -> str:
    """The URL app teams use: the Service's cluster DNS name, OpenAI's `/v1` base."""
    return (
        f"http://{service_name(dm.metadata.name)}.{dm.metadata.namespace}.svc:"
        f"{dm.spec.serving.port}/v1"
    )
