"""What every pod shares: the restricted security context, resources and disk sized from the
base model, the environment (the DocModel's manifest, the store, the source's Secrets)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from docmodel.api import API_VERSION, KIND, DocModel, PodSecuritySpec, ResourcesSpec, spec_to_wire

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


def restricted_pod(pod: dict[str, Any], workdir: str, security: PodSecuritySpec) -> dict[str, Any]:
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


def secret_env(name: str, secret_name: str, key: str) -> EnvVar:
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
                out.append(secret_env(f"DOCMODEL_STORE_{key}", self.secret_name, key))
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


def source_env(dm: DocModel) -> list[EnvVar]:
    spec = dm.spec
    out = []
    if spec.source.secret_ref is not None:
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            out.append(secret_env(key, spec.source.secret_ref.name, key))
    if spec.base_model.token_secret_ref is not None:
        ref = spec.base_model.token_secret_ref
        out.append(secret_env("HF_TOKEN", ref.name, ref.key))
    return out


@dataclass(frozen=True)
class PodDefaults:
    """The operator's defaults for pods whose spec names no node: ingest always, the other
    steps and the servers when their own nodeSelector and tolerations are empty."""

    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()


def container_resources(res: ResourcesSpec, storage: str) -> dict[str, Any]:
    """Requests equal to limits; `storage` is the disk where the spec gives none."""
    amounts: dict[str, Any] = {
        "cpu": res.cpu,
        "memory": res.memory,
        EPHEMERAL_STORAGE: res.ephemeral_storage or storage,
    }
    if res.gpu:
        amounts[GPU_RESOURCE] = str(res.gpu)
    return {"requests": dict(amounts), "limits": dict(amounts)}
