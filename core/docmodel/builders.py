"""Pure builders: child names, each step's command and environment, the Jobs, the server
Deployment, the Service, the NetworkPolicies and the servers' disruption budget.

The operator creates these objects; local mode runs the same commands as local processes
(`StepCommand.argv`) with the same environment (bar paths and Secret values, which a local
process takes from its own environment). Nothing here does I/O, so tests compare the objects
with expected ones.

Names are deterministic per DocModel, revision and step, so a replayed event or a restarted
operator finds the child it made before instead of making a second one:

    <name>-<revision>-ingest | -train | -eval-<settings>   Jobs
    <name>-<revision>                                       the revision's server Deployment
    <name>                                                  the Service app teams call
    <name>-server | <name>-steps                            NetworkPolicies
    <name>-<revision>                                       its PodDisruptionBudget (replicas > 1)

A DocModel's name has at most 40 characters and a revision 10, so every name fits the 63
characters of a label value.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from docmodel import labels
from docmodel.api import (
    API_VERSION,
    KIND,
    DocModel,
    NetworkPeer,
    PodSecuritySpec,
    ResourcesSpec,
    Toleration,
    spec_to_wire,
)
from docmodel.artifacts import RevisionLayout, canonical_json, evaluation_digest
from docmodel.failures import EXIT_CODES

Step = Literal["ingest", "train", "evaluate"]
STEPS: tuple[Step, ...] = ("ingest", "train", "evaluate")
STEP_SUFFIX: dict[Step, str] = {"ingest": "ingest", "train": "train", "evaluate": "eval"}

MAX_NAME = 63

TRAINER_PROGRAM = "docmodel-trainer"
SERVER_PROGRAM = "docmodel-server"
JOB_WORKDIR = "/var/lib/docmodel/work"
SERVER_WORKDIR = "/var/lib/docmodel"
# Every pod the operator creates meets the "restricted" Pod Security Standard: non-root as the
# images' user (spec.security), the runtime's default seccomp profile, no privilege escalation,
# no capability, a read-only root filesystem. The steps write only to their emptyDir volumes
# (the work directory, where the images also keep their model and Hugging Face caches, and
# /tmp). spec.security may change the user and groups and make the root filesystem writable,
# never more.


def pod_security_context(security: PodSecuritySpec) -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": security.run_as_user,
        "runAsGroup": security.run_as_group,
        "fsGroup": security.fs_group,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context(security: PodSecuritySpec) -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": security.read_only_root_filesystem,
        "capabilities": {"drop": ["ALL"]},
    }


def _restricted(pod: dict[str, Any], workdir: str, security: PodSecuritySpec) -> dict[str, Any]:
    """`pod` with the restricted security contexts and its writable volumes (`workdir`, /tmp)."""
    for container in pod["containers"]:
        container["securityContext"] = container_security_context(security)
        container["volumeMounts"] = [
            {"name": "work", "mountPath": workdir},
            {"name": "tmp", "mountPath": "/tmp"},
        ]
    pod["securityContext"] = pod_security_context(security)
    pod["volumes"] = [{"name": "work", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}]
    return pod


# Ingest parses documents and calls the teacher: no GPU, modest memory and disk.
INGEST_RESOURCES = ResourcesSpec(gpu=0, cpu="2", memory="8Gi", ephemeral_storage="10Gi")
GPU_RESOURCE = "nvidia.com/gpu"
EPHEMERAL_STORAGE = "ephemeral-storage"

# Local disk of a pod whose spec gives none, from the base model's size in its name
# ("Llama-3.1-8B", "Mixtral-8x7B", "SmolLM2-135M"): the weights in bf16 (2 bytes a parameter),
# a quarter more (tokenizer, configs, a partial download beside the finished file), and room
# for the pod's own files (datasets, checkpoints, index, logs).
_GIB = 1024**3
_SIZE = re.compile(r"(?:^|[-_./])(?:(\d+)x)?(\d+(?:\.\d+)?)([BbMm])(?=$|[-_.])")
STEP_FILES_GIB = 10
SERVER_FILES_GIB = 4
UNKNOWN_MODEL_STORAGE = "64Gi"


def model_parameters(name: str) -> float | None:
    """Parameters of a model from its name (the last `<n>B` / `<n>M`, `<k>x<n>B` for experts),
    or None when the name gives none (a local path, an unusual name)."""
    found = _SIZE.findall(name.rsplit("/", 1)[-1])
    if not found:
        return None
    experts, amount, unit = found[-1]
    scale = 1e9 if unit in "Bb" else 1e6
    return float(amount) * scale * (int(experts) if experts else 1)


def ephemeral_storage(base_model: str, files_gib: int) -> str:
    """The `ephemeral-storage` request and limit for a pod that downloads `base_model`."""
    parameters = model_parameters(base_model)
    if parameters is None:
        return UNKNOWN_MODEL_STORAGE
    weights_gib = parameters * 2 / _GIB
    return f"{math.ceil(weights_gib * 1.25 + files_gib)}Gi"


class NameTooLong(ValueError):
    """A child name would exceed 63 characters (the DocModel's name is over 40)."""


def child_name(name: str, revision: str | None = None, suffix: str | None = None) -> str:
    """`<name>[-<revision>][-<suffix>]`, refused past 63 characters."""
    out = "-".join(part for part in (name, revision, suffix) if part)
    if len(out) > MAX_NAME:
        raise NameTooLong(f"child name {out!r} has {len(out)} characters, more than {MAX_NAME}")
    return out


def _short_digest(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()[:5]


def job_name(dm: DocModel, step: Step, revision: str, serving_revision: str | None = None) -> str:
    """The Job of one step of one revision.

    An evaluation is named after what it scores under (the evaluation settings and the serving
    revision it is compared with), so a changed setting or a new serving revision gets a Job
    of its own instead of finding the finished one.
    """
    suffix = STEP_SUFFIX[step]
    if step == "evaluate":
        compared = serving_revision if serving_revision != revision else None
        suffix += "-" + _short_digest([evaluation_digest(dm.spec), compared])
    return child_name(dm.metadata.name, revision, suffix)


def deployment_name(name: str, revision: str) -> str:
    return child_name(name, revision)


def service_name(name: str) -> str:
    return child_name(name)


# --------------------------------------------------------------------------------------------
# Labels and ownership
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Owner:
    """The DocModel object that owns the children (its uid comes from the API server)."""

    name: str
    namespace: str
    uid: str

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


def _metadata(
    owner: Owner, name: str, lbls: dict[str, str], annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": owner.namespace,
        "labels": lbls,
        "ownerReferences": [owner.reference()],
    }
    if annotations:
        meta["annotations"] = annotations
    return meta


# --------------------------------------------------------------------------------------------
# Environment
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EnvVar:
    """One variable: a literal value, a Secret key, or a field of the pod."""

    name: str
    value: str | None = None
    secret_name: str | None = None
    secret_key: str | None = None
    field_path: str | None = None

    def to_k8s(self) -> dict[str, Any]:
        if self.secret_name is not None:
            ref = {"name": self.secret_name, "key": self.secret_key}
            return {"name": self.name, "valueFrom": {"secretKeyRef": ref}}
        if self.field_path is not None:
            return {"name": self.name, "valueFrom": {"fieldRef": {"fieldPath": self.field_path}}}
        return {"name": self.name, "value": self.value or ""}

    @property
    def literal(self) -> bool:
        return self.secret_name is None and self.field_path is None


def _secret(name: str, secret_name: str, key: str) -> EnvVar:
    return EnvVar(name, secret_name=secret_name, secret_key=key)


@dataclass(frozen=True)
class StoreConfig:
    """The artifact store as the executor knows it: URI, endpoint and credentials Secret.

    The Secret (keys AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY) must live in the DocModel's
    namespace; unset uses the source's or the pod's ambient credentials.
    """

    uri: str
    endpoint: str | None = None
    secret_name: str | None = None

    def env(self) -> list[EnvVar]:
        out = []
        if self.endpoint:
            out.append(EnvVar("DOCMODEL_STORE_ENDPOINT", self.endpoint))
        if self.secret_name:
            for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
                out.append(_secret(f"DOCMODEL_STORE_{key}", self.secret_name, key))
        return out


def manifest_json(dm: DocModel) -> str:
    """The DocModel a step works on, as `DOCMODEL_MANIFEST` carries it (no status)."""
    return json.dumps(
        {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {"name": dm.metadata.name, "namespace": dm.metadata.namespace},
            "spec": spec_to_wire(dm.spec),
        },
        sort_keys=True,
        separators=(",", ":"),
    )


def _source_env(dm: DocModel) -> list[EnvVar]:
    spec = dm.spec
    out = []
    if spec.source.secret_ref is not None:
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            out.append(_secret(key, spec.source.secret_ref.name, key))
    if spec.base_model.token_secret_ref is not None:
        ref = spec.base_model.token_secret_ref
        out.append(_secret("HF_TOKEN", ref.name, ref.key))
    return out


# --------------------------------------------------------------------------------------------
# Step commands (Jobs and local processes)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepCommand:
    """What one step runs: `docmodel-trainer <args>` with `env`."""

    step: Step
    args: list[str]
    env: list[EnvVar] = field(default_factory=list)

    def literal_env(self) -> dict[str, str]:
        """The variables with literal values (Secret keys and pod fields left out)."""
        return {e.name: e.value or "" for e in self.env if e.literal}


def step_command(
    dm: DocModel,
    step: Step,
    revision: str,
    store: StoreConfig,
    *,
    workdir: str | None = None,
    serving_revision: str | None = None,
    source_dir: str | None = None,
) -> StepCommand:
    """The trainer command of `step` for `revision` (evaluation also scores `serving_revision`).

    The workdir defaults to a directory of the DocModel, revision and step under the Job's
    volume, so that pods sharing a host path (a node without emptyDir) never resume from each
    other's checkpoints. `source_dir` reads the documents from a directory instead of the
    DocModel's bucket (local mode's `--docs`).
    """
    if workdir is None:
        meta = dm.metadata
        workdir = f"{JOB_WORKDIR}/{meta.namespace}/{meta.name}/{revision}/{step}"
    args = [step, "--store", store.uri, "--revision", revision, "--workdir", workdir]
    if step == "ingest" and source_dir is not None:
        args += ["--source-dir", source_dir]
    if step == "evaluate" and serving_revision and serving_revision != revision:
        args += ["--serving-revision", serving_revision]
    env = [EnvVar("DOCMODEL_MANIFEST", manifest_json(dm)), *store.env(), *_source_env(dm)]
    teacher = dm.spec.dataset.teacher
    if step == "ingest" and teacher is not None and teacher.secret_ref is not None:
        env.append(
            _secret("DOCMODEL_TEACHER_API_KEY", teacher.secret_ref.name, teacher.secret_ref.key)
        )
    return StepCommand(step, args, env)


@dataclass(frozen=True)
class PodDefaults:
    """The operator's defaults for pods whose spec names no node: ingest always, the other
    steps and the servers when their own nodeSelector and tolerations are empty."""

    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True)
class Scheduling:
    resources: ResourcesSpec
    node_selector: dict[str, str]
    tolerations: list[Toleration]
    priority_class_name: str | None = None

    def apply(self, pod: dict[str, Any], defaults: PodDefaults) -> None:
        if self.node_selector or self.tolerations:
            selector: Mapping[str, str] = self.node_selector
            tolerations: list[Any] = [
                t.model_dump(by_alias=True, exclude_none=True) for t in self.tolerations
            ]
        else:
            selector, tolerations = defaults.node_selector, [dict(t) for t in defaults.tolerations]
        if selector:
            pod["nodeSelector"] = dict(selector)
        if tolerations:
            pod["tolerations"] = tolerations
        if self.priority_class_name:
            pod["priorityClassName"] = self.priority_class_name


def step_scheduling(dm: DocModel, step: Step) -> Scheduling:
    """Where a step's pod runs: ingest needs no GPU; evaluation takes training's settings
    where its own are unset."""
    training, evaluation = dm.spec.training, dm.spec.evaluation
    if step == "ingest":
        return Scheduling(INGEST_RESOURCES, {}, [])
    if step == "train":
        return Scheduling(
            training.resources,
            training.node_selector,
            training.tolerations,
            training.priority_class_name,
        )
    return Scheduling(
        evaluation.resources or training.resources,
        training.node_selector if evaluation.node_selector is None else evaluation.node_selector,
        training.tolerations if evaluation.tolerations is None else evaluation.tolerations,
        training.priority_class_name,
    )


def _resources(res: ResourcesSpec, storage: str) -> dict[str, Any]:
    """Requests equal to limits; `storage` is the disk where the spec gives none."""
    amounts: dict[str, Any] = {
        "cpu": res.cpu,
        "memory": res.memory,
        EPHEMERAL_STORAGE: res.ephemeral_storage or storage,
    }
    if res.gpu:
        amounts[GPU_RESOURCE] = str(res.gpu)
    return {"requests": dict(amounts), "limits": dict(amounts)}


def pod_failure_policy(container: str) -> dict[str, Any]:
    """Fail the Job on the first pod whose exit code says retrying cannot help; a pod evicted
    by a disruption (node drain, preemption) does not count against `backoffLimit`."""
    at_once = sorted(code for code, m in EXIT_CODES.items() if m.fails_job_at_once)
    return {
        "rules": [
            {
                "action": "FailJob",
                "onExitCodes": {"containerName": container, "operator": "In", "values": at_once},
            },
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
        ]
    }


def build_job(
    dm: DocModel,
    owner: Owner,
    step: Step,
    revision: str,
    store: StoreConfig,
    trainer_image: str,
    *,
    serving_revision: str | None = None,
    defaults: PodDefaults | None = None,
) -> dict[str, Any]:
    """The Job that runs `step` for `revision`."""
    spec = dm.spec
    command = step_command(dm, step, revision, store, serving_revision=serving_revision)
    name = job_name(dm, step, revision, serving_revision)
    lbls = {**labels.child_labels(dm.metadata.name, STEP_SUFFIX[step], revision), labels.STEP: step}
    training = spec.training
    scheduling = step_scheduling(dm, step)
    container = {
        "name": step,
        "image": training.image or trainer_image,
        "command": [TRAINER_PROGRAM],
        "args": command.args,
        "env": [e.to_k8s() for e in command.env],
        "resources": _resources(
            scheduling.resources, ephemeral_storage(spec.base_model.name, STEP_FILES_GIB)
        ),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    pod = _restricted(
        {"restartPolicy": "Never", "containers": [container]}, JOB_WORKDIR, spec.security
    )
    scheduling.apply(pod, defaults or PodDefaults())
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _metadata(owner, name, lbls),
        "spec": {
            "backoffLimit": training.backoff_limit,
            "activeDeadlineSeconds": training.active_deadline_seconds,
            "podFailurePolicy": pod_failure_policy(step),
            "template": {"metadata": {"labels": lbls}, "spec": pod},
        },
    }


# --------------------------------------------------------------------------------------------
# Serving: the revision's Deployment and the DocModel's Service
# --------------------------------------------------------------------------------------------


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
    env += _source_env(dm)
    key = spec.serving.api_key_secret_ref
    if key is not None:
        env.append(_secret("DOCMODEL_API_KEY", key.name, key.key))
    if overrides:
        env = [e for e in env if e.name not in overrides]
        env += [EnvVar(name, value) for name, value in overrides.items()]
    return env


def serving_digest(dm: DocModel) -> str:
    """Digest of what the live Deployment is built from besides the revision: a change here
    (replicas, resources, server settings) updates the Deployment without retraining."""
    wire = dm.spec.serving.model_dump(mode="json", by_alias=True)
    security = dm.spec.security.model_dump(mode="json", by_alias=True)
    return _short_digest([wire, dm.spec.base_model.name, dm.spec.training.lora.r, security])


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
        "resources": _resources(
            spec.serving.resources, ephemeral_storage(spec.base_model.name, SERVER_FILES_GIB)
        ),
        # Loading an 8B model and its adapter takes minutes; the startup probe covers that,
        # bounded by the rollout's progress deadline.
        "startupProbe": _probe("ready", 10, max(1, spec.serving.progress_deadline_seconds // 10)),
        "readinessProbe": _probe("ready", 10, 3),
        "livenessProbe": _probe("live", 20, 3),
    }
    pod = _restricted({"containers": [container]}, SERVER_WORKDIR, spec.security)
    serving = spec.serving
    Scheduling(serving.resources, serving.node_selector, serving.tolerations).apply(
        pod, defaults or PodDefaults()
    )
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(
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
        "metadata": _metadata(owner, service_name(name), labels.child_labels(name, labels.SERVER)),
        "spec": {
            "selector": labels.server_pods(name, revision),
            "ports": [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


# --------------------------------------------------------------------------------------------
# Network policies and the servers' disruption budget
# --------------------------------------------------------------------------------------------

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
        "metadata": _metadata(owner, name, lbls),
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


def build_disruption_budget(dm: DocModel, owner: Owner, revision: str) -> dict[str, Any] | None:
    """A PodDisruptionBudget for the revision's servers when there are several: a node drain
    takes one replica at a time. With one replica, none (it would block every drain)."""
    if dm.spec.serving.replicas < 2:
        return None
    name = dm.metadata.name
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(
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
