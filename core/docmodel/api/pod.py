"""The parts of a pod a spec sets: resources, node selectors, tolerations, label selectors,
the pods' user and filesystem (`spec.security`)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints

from docmodel.api.base import (
    IMAGE_PATTERN,
    LABEL_VALUE_PATTERN,
    QUALIFIED_NAME_PATTERN,
    QUANTITY_PATTERN,
    ApiModel,
)

LabelKey = Annotated[str, StringConstraints(pattern=QUALIFIED_NAME_PATTERN, max_length=317)]


LabelValue = Annotated[str, StringConstraints(pattern=LABEL_VALUE_PATTERN, max_length=63)]


ImageRef = Annotated[str, StringConstraints(pattern=IMAGE_PATTERN, max_length=512)]


MAX_NODE_SELECTOR = 64


def node_selector_field(description: str, optional: bool = False) -> Any:
    """A node selector: label keys and values as Kubernetes checks them, at most 64 pairs."""
    if optional:
        return Field(default=None, max_length=MAX_NODE_SELECTOR, description=description)
    return Field(default_factory=dict, max_length=MAX_NODE_SELECTOR, description=description)


class Toleration(ApiModel):
    """A Kubernetes toleration (see `kubectl explain pod.spec.tolerations`)."""

    key: LabelKey | None = Field(default=None, description="Taint key the toleration applies to.")
    operator: Literal["Exists", "Equal"] = Field(
        default="Equal", description="Relationship between key and value."
    )
    value: LabelValue | None = Field(default=None, description="Taint value matched with `Equal`.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to match; unset matches all effects."
    )
    toleration_seconds: int | None = Field(
        default=None, ge=0, description="How long a NoExecute taint is tolerated."
    )


class ResourcesSpec(ApiModel):
    """Compute resources of a workload's container."""

    gpu: int = Field(
        default=1, ge=0, le=16, description="NVIDIA GPUs requested (`nvidia.com/gpu`)."
    )
    cpu: str = Field(default="4", pattern=QUANTITY_PATTERN, description="CPU request and limit.")
    memory: str = Field(
        default="32Gi", pattern=QUANTITY_PATTERN, description="Memory request and limit."
    )
    ephemeral_storage: str | None = Field(
        default=None,
        pattern=QUANTITY_PATTERN,
        description="Local disk request and limit (`ephemeral-storage`: the work directory, "
        "where the base model is downloaded, /tmp and the logs). Unset: sized from the base "
        "model's name (its parameters in bf16, a quarter more, and room for the step's own "
        "files; 64Gi when the name gives no size; 10Gi for ingest).",
    )


class LabelSelector(ApiModel):
    """Labels an object must carry, all of them (`matchLabels`); empty selects every one."""

    match_labels: dict[LabelKey, LabelValue] = Field(
        default_factory=dict, max_length=MAX_NODE_SELECTOR, description="Labels to match."
    )


class PodSecuritySpec(ApiModel):
    """What the pods the operator creates run as. Every pod meets the restricted Pod Security
    Standard (non-root, the runtime's default seccomp profile, no privilege escalation, no
    capability); these fields only adapt it to images built for another user or that write
    outside their volumes."""

    run_as_user: int = Field(
        default=10001,
        ge=1,
        le=2147483647,
        description="User id of every container (the project's images run as 10001; never 0).",
    )
    run_as_group: int = Field(
        default=10001, ge=1, le=2147483647, description="Primary group id of every container."
    )
    fs_group: int = Field(
        default=10001, ge=1, le=2147483647, description="Group that owns the pods' volumes."
    )
    read_only_root_filesystem: bool = Field(
        default=True,
        description="Mount the image read-only; the steps and servers write only to their "
        "volumes (the work directory and /tmp). Set false for an image that writes elsewhere.",
    )
