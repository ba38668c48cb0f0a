"""The DocModel API: typed models of the custom resource's spec and status.

These models are the single source of truth for the `DocModel` CustomResourceDefinition:
`python -m docmodel.crd` renders `crds/docmodel.dev_docmodels.yaml` from them (field
descriptions, defaults, enums, bounds and cross-field rules), and a test fails when the
committed CRD and the models drift apart.

Cross-field rules live in `RULES` (`rules.py`): each is written once as a CEL expression
(enforced by the API server through `x-kubernetes-validations`) and once as a Python predicate
(enforced here, so local mode rejects exactly what `kubectl apply` rejects).

One module per part of the resource: `base` (identity, defaults, value patterns, `ApiModel`),
`inputs` (source, base model, dataset), `pod`, `training`, `evaluation`, `serving`, `spec`,
`rules`, `status` and `resource` (the object and its parsing). Import from `docmodel.api`:
every public name is here.
"""

from docmodel.api.base import (
    API_VERSION,
    BUCKET_PATTERN,
    CRON_PATTERN,
    DEFAULT_BASE_MODEL,
    DEFAULT_EMBEDDING_MODEL,
    DEFAULT_INCLUDE,
    DEFAULT_TARGET_MODULES,
    DNS_LABEL_PATTERN,
    DNS_SUBDOMAIN_PATTERN,
    DURATION_PATTERN,
    GROUP,
    HTTP_URL_PATTERN,
    IMAGE_PATTERN,
    KIND,
    LABEL_VALUE_PATTERN,
    MIN_POLL_SECONDS,
    PLURAL,
    QUALIFIED_NAME_PATTERN,
    QUANTITY_PATTERN,
    S3_URI_PATTERN,
    SHORT_NAMES,
    SINGULAR,
    VERSION,
    ApiModel,
    SecretKeyRef,
    SecretRef,
    duration_seconds,
)
from docmodel.api.evaluation import BaselineSpec, EmbeddingModelSpec, EvaluationSpec
from docmodel.api.inputs import BaseModelSpec, ChunkingSpec, DatasetSpec, SourceSpec, TeacherSpec
from docmodel.api.pod import (
    MAX_NODE_SELECTOR,
    ImageRef,
    LabelKey,
    LabelSelector,
    LabelValue,
    PodSecuritySpec,
    ResourcesSpec,
    Toleration,
    node_selector_field,
)
from docmodel.api.resource import (
    DocModel,
    ObjectMeta,
    SpecError,
    docmodel_manifest,
    parse_docmodel,
    parse_spec,
    spec_to_wire,
)
from docmodel.api.rules import CHAT_TEMPLATE_TOKENS, PYTHON_ONLY, QUESTION_TOKENS, RULES, Rule
from docmodel.api.serving import NetworkPeer, NetworkPolicySpec, ServingSpec
from docmodel.api.spec import DocModelSpec, RetrainingSpec
from docmodel.api.status import (
    CandidateStatus,
    Condition,
    ConditionType,
    DocModelStatus,
    HistoryEntry,
    LastFailure,
    Metrics,
    Phase,
    ServingStatus,
    Verdict,
)
from docmodel.api.training import CandidateKind, CandidateSpec, LoraSpec, TrainingSpec

__all__ = [
    "API_VERSION",
    "BUCKET_PATTERN",
    "CHAT_TEMPLATE_TOKENS",
    "CRON_PATTERN",
    "DEFAULT_BASE_MODEL",
    "DEFAULT_EMBEDDING_MODEL",
    "DEFAULT_INCLUDE",
    "DEFAULT_TARGET_MODULES",
    "DNS_LABEL_PATTERN",
    "DNS_SUBDOMAIN_PATTERN",
    "DURATION_PATTERN",
    "GROUP",
    "HTTP_URL_PATTERN",
    "IMAGE_PATTERN",
    "KIND",
    "LABEL_VALUE_PATTERN",
    "MAX_NODE_SELECTOR",
    "MIN_POLL_SECONDS",
    "PLURAL",
    "PYTHON_ONLY",
    "QUALIFIED_NAME_PATTERN",
    "QUANTITY_PATTERN",
    "QUESTION_TOKENS",
    "RULES",
    "S3_URI_PATTERN",
    "SHORT_NAMES",
    "SINGULAR",
    "VERSION",
    "ApiModel",
    "BaseModelSpec",
    "BaselineSpec",
    "CandidateKind",
    "CandidateSpec",
    "CandidateStatus",
    "ChunkingSpec",
    "Condition",
    "ConditionType",
    "DatasetSpec",
    "DocModel",
    "DocModelSpec",
    "DocModelStatus",
    "EmbeddingModelSpec",
    "EvaluationSpec",
    "HistoryEntry",
    "ImageRef",
    "LabelKey",
    "LabelSelector",
    "LabelValue",
    "LastFailure",
    "LoraSpec",
    "Metrics",
    "NetworkPeer",
    "NetworkPolicySpec",
    "ObjectMeta",
    "Phase",
    "PodSecuritySpec",
    "ResourcesSpec",
    "RetrainingSpec",
    "Rule",
    "SecretKeyRef",
    "SecretRef",
    "ServingSpec",
    "ServingStatus",
    "SourceSpec",
    "SpecError",
    "TeacherSpec",
    "Toleration",
    "TrainingSpec",
    "Verdict",
    "docmodel_manifest",
    "duration_seconds",
    "node_selector_field",
    "parse_docmodel",
    "parse_spec",
    "spec_to_wire",
]
