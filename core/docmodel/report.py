"""The evaluation report schema (`report.json`), shared by the trainer, the operator and the gate.

Systems are named `candidate` (base + adapter, no retrieval), `baseline` (base + top-k retrieved
passages) and, when a revision is serving, `serving` (base + the serving adapter).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field

MetricName = Literal["exact_match", "token_f1", "rouge_l"]
SystemName = Literal["candidate", "baseline", "serving"]
METRICS: tuple[MetricName, ...] = ("exact_match", "token_f1", "rouge_l")


class Scores(BaseModel):
    """Scores on the 0-1 scale."""

    exact_match: float = Field(ge=0.0, le=1.0)
    token_f1: float = Field(ge=0.0, le=1.0)
    rouge_l: float = Field(ge=0.0, le=1.0)

    def get(self, metric: MetricName) -> float:
        return float(getattr(self, metric))


class QuestionResult(BaseModel):
    """One held-out question and every system's answer to it."""

    id: str
    question: str
    reference: str
    source: str = Field(description="Source document key the question was drawn from.")
    answers: dict[SystemName, str]
    scores: dict[SystemName, Scores]
    retrieved: list[str] = Field(
        default_factory=list, description="Source keys of the passages the baseline was given."
    )


class Difference(BaseModel):
    """Paired bootstrap estimate of (candidate - other) on one metric."""

    mean: float
    ci_low: float
    ci_high: float
    confidence: float = 0.95
    resamples: int


class DecodingSettings(BaseModel):
    max_new_tokens: int
    temperature: float = 0.0
    engine: str = Field(description="vllm or transformers")
    batch_size: int | None = None


class EvalReport(BaseModel):
    """What `evaluate` writes and the gate reads."""

    schema_version: Literal[1] = 1
    revision: str
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    base_model: str
    adapter_uri: str
    serving_adapter_uri: str | None = None
    retriever: str
    top_k: int
    decoding: DecodingSettings
    questions: list[QuestionResult]
    aggregate: dict[SystemName, Scores]
    differences: dict[str, dict[MetricName, Difference]] = Field(
        default_factory=dict,
        description="Keyed by comparison, e.g. `candidate-baseline`, `candidate-serving`.",
    )
    timings: dict[str, float] = Field(default_factory=dict, description="Seconds per phase.")
