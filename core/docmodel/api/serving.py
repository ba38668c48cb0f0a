"""How the promoted revision is served (`spec.serving`) and who may call it."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from docmodel.api.base import ApiModel, SecretKeyRef
from docmodel.api.pod import (
    ImageRef,
    LabelKey,
    LabelSelector,
    LabelValue,
    ResourcesSpec,
    Toleration,
    node_selector_field,
)


class NetworkPeer(ApiModel):
    """Pods allowed to call the servers, as a NetworkPolicy peer: pods matching
    `podSelector` in the DocModel's namespace, every pod of the namespaces matching
    `namespaceSelector`, or, with both, the matching pods of the matching namespaces."""

    namespace_selector: LabelSelector | None = Field(
        default=None, description="Namespaces whose pods may connect."
    )
    pod_selector: LabelSelector | None = Field(default=None, description="Pods that may connect.")


class NetworkPolicySpec(ApiModel):
    """The NetworkPolicies the operator creates with the DocModel's pods."""

    enabled: bool = Field(
        default=True,
        description="Create them: the server pods accept connections only on the serving "
        "port and only from `allowFrom`; the ingest, train and evaluate pods accept none.",
    )
    allow_from: list[NetworkPeer] = Field(
        default_factory=list,
        max_length=16,
        description="Who may call the servers. Empty: every pod in the DocModel's namespace.",
    )


class ServingSpec(ApiModel):
    """How the promoted revision is served."""

    replicas: int = Field(default=1, ge=1, le=64, description="vLLM server replicas.")
    image: ImageRef | None = Field(default=None, description="Server image override.")
    resources: ResourcesSpec = Field(
        default_factory=ResourcesSpec, description="Compute resources of each server pod."
    )
    max_model_len: int = Field(
        default=8192, ge=256, le=131072, description="Context length the server accepts."
    )
    gpu_memory_utilization: float = Field(
        default=0.9, ge=0.1, le=0.99, description="Fraction of GPU memory vLLM may use."
    )
    port: int = Field(default=8000, ge=1024, le=65535, description="Container and Service port.")
    api_key_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="Secret key holding the API key clients must send as a Bearer token.",
    )
    progress_deadline_seconds: int = Field(
        default=900,
        ge=30,
        le=7200,
        description="How long a new revision may take to become Ready before the rollout "
        "is abandoned and traffic stays on the old revision.",
    )
    strategy: Literal["BlueGreen", "Recreate"] = Field(
        default="BlueGreen",
        description="`BlueGreen`: the new revision's servers start beside the old ones and "
        "traffic moves when they are Ready (needs room for both). `Recreate`: the old "
        "revision's servers are removed first, for clusters without room for two copies; "
        "the endpoint is down until the new ones are Ready (and, if they never are, until the "
        "old revision is back).",
    )
    node_selector: dict[LabelKey, LabelValue] = node_selector_field(
        "Node labels the server pods must match."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, max_length=32, description="Tolerations of the server pods."
    )
    network_policy: NetworkPolicySpec = Field(
        default_factory=NetworkPolicySpec,
        description="Who may reach the servers (and that nothing reaches the other pods).",
    )
