"""The operator's one typed configuration, read once at start from `DOCMODEL_OPERATOR_*`.

| Variable | Default | Meaning |
|---|---|---|
| `DOCMODEL_OPERATOR_STORE_URI` | required | The artifact store, `s3://bucket/prefix` (a directory only for tests). |
| `DOCMODEL_OPERATOR_STORE_ENDPOINT` | unset (AWS) | S3 endpoint of the artifact store, for the operator and every pod. |
| `DOCMODEL_OPERATOR_STORE_SECRET` | `docmodel-store` | Secret with `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` for the store, which must exist in each DocModel's namespace (pods can only reference their own namespace's Secrets; the operator never copies Secrets). Empty: pods use ambient credentials. |
| `DOCMODEL_OPERATOR_TRAINER_IMAGE` | `ghcr.io/docmodel/trainer:0.1.0` | Default trainer image (`spec.training.image` overrides). |
| `DOCMODEL_OPERATOR_SERVER_IMAGE` | `ghcr.io/docmodel/server:0.1.0` | Default server image (`spec.serving.image` overrides). |
| `DOCMODEL_OPERATOR_NAMESPACES` | empty: every namespace | Comma-separated namespaces to watch. |
| `DOCMODEL_OPERATOR_PEERING` | `docmodel` | Kopf peering object name; empty runs standalone. |
| `DOCMODEL_OPERATOR_PRIORITY` | random | Peering priority: the live replica with the highest acts, the others wait. |
| `DOCMODEL_OPERATOR_POD_NODE_SELECTOR` | `{}` | JSON node selector for pods whose spec names none (ingest always). |
| `DOCMODEL_OPERATOR_POD_TOLERATIONS` | `[]` | JSON tolerations to go with it. |
| `DOCMODEL_OPERATOR_CLEANUP_DELAY_SECONDS` | `120` | How long the old revision's server lives after traffic moved. |
| `DOCMODEL_OPERATOR_PENDING_WARNING_SECONDS` | `300` | A pod Pending this long gets a condition with the scheduler's message. |
| `DOCMODEL_OPERATOR_REFUSAL_RETRY_SECONDS` | `30` | A child the cluster refused (admission, quota, webhook) is tried again this long after; the refusal is on the DocModel at once. |
| `DOCMODEL_OPERATOR_RESYNC_SECONDS` | `30` | Period of the sweep over every DocModel (timers, source polls). |
| `DOCMODEL_OPERATOR_WORKERS` | `4` | Reconciles that run at once (controller-runtime's `MaxConcurrentReconciles`); one DocModel is only ever reconciled by one. |
| `DOCMODEL_OPERATOR_RELIST_SECONDS` | `600` | Period of a fresh LIST of the children and Secrets into the operator's cache (what a watch missed). |
| `DOCMODEL_OPERATOR_WATCH_TIMEOUT_SECONDS` | `300` | Server-side timeout of each watch request. |
| `DOCMODEL_OPERATOR_LIVENESS_PORT` | `8080` | `/healthz` for the liveness probe (0: off). |
| `DOCMODEL_OPERATOR_METRICS_PORT` | `9090` | Prometheus `/metrics` (0: off). |

The operator's own credentials for the store are `DOCMODEL_STORE_AWS_ACCESS_KEY_ID` and
`DOCMODEL_STORE_AWS_SECRET_ACCESS_KEY` (else the usual `AWS_*`), as every process reads them.
"""

from __future__ import annotations

import random
from typing import Annotated, Any, ClassVar

from pydantic import Field, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from docmodel.builders import PodDefaults
from docmodel.plan import Policy
from docmodel.settings import EnvSettings, SettingsError

__all__ = ["OperatorSettings", "SettingsError"]


class OperatorSettings(EnvSettings):
    # An empty value is a value here: DOCMODEL_OPERATOR_PEERING="" runs standalone.
    model_config = SettingsConfigDict(env_prefix="DOCMODEL_OPERATOR_", env_ignore_empty=False)
    what: ClassVar[str] = "operator configuration"

    store_uri: str = Field(min_length=1)
    store_endpoint: str | None = None
    store_secret: str = "docmodel-store"
    trainer_image: str = Field(default="ghcr.io/docmodel/trainer:0.1.0", min_length=1)
    server_image: str = Field(default="ghcr.io/docmodel/server:0.1.0", min_length=1)
    namespaces: Annotated[list[str], NoDecode] = Field(default_factory=list)
    peering: str = "docmodel"
    priority: int = Field(default_factory=lambda: random.randint(1, 1_000_000))
    pod_node_selector: dict[str, str] = Field(default_factory=dict)
    pod_tolerations: list[dict[str, Any]] = Field(default_factory=list)
    cleanup_delay_seconds: float = Field(default=120.0, ge=0)
    pending_warning_seconds: float = Field(default=300.0, ge=0)
    refusal_retry_seconds: float = Field(default=30.0, ge=1)
    resync_seconds: float = Field(default=30.0, gt=0)
    relist_seconds: float = Field(default=600.0, gt=0)
    workers: int = Field(default=4, ge=1, le=64)
    watch_timeout_seconds: int = Field(default=300, ge=10)
    liveness_port: int = Field(default=8080, ge=0, le=65535)
    metrics_port: int = Field(default=9090, ge=0, le=65535)

    @field_validator("namespaces", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [n.strip() for n in value.split(",") if n.strip()]
        return value

    @property
    def pod_defaults(self) -> PodDefaults:
        return PodDefaults(self.pod_node_selector, tuple(self.pod_tolerations))

    @property
    def policy(self) -> Policy:
        return Policy(
            cleanup_delay_seconds=self.cleanup_delay_seconds,
            pending_warning_seconds=self.pending_warning_seconds,
            refusal_retry_seconds=self.refusal_retry_seconds,
        )
