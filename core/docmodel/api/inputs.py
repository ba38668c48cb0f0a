"""What a revision is built from: the documents (`spec.source`), the base model
(`spec.baseModel`) and how questions are made from the documents (`spec.dataset`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from docmodel.api.base import (
    BUCKET_PATTERN,
    DEFAULT_BASE_MODEL,
    DEFAULT_INCLUDE,
    HTTP_URL_PATTERN,
    S3_URI_PATTERN,
    ApiModel,
    SecretKeyRef,
    SecretRef,
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
