"""The evaluation report schema (`report.json`), shared by the trainer, the operator and the gate.

Systems are named `candidate` (base + adapter), `baseline` (base + top-k retrieved passages),
`base` (the base model closed-book: a diagnostic of how guessable the questions are, never
gating) and, when a revision is serving, `serving` (base + the serving adapter). The candidate
and the serving revision each answer in their own kind (`kinds`): closed-book (the bare
question) or with retrieval (the baseline's prompt: same retriever, same top-k).

Every system gets the same scores (`Scores`): exact match, token F1 and ROUGE-L, any of which
the spec may choose to gate on (`spec.evaluation.metric`, recorded as `gate_metric`), and gold
recall, reported with its intervals but never gating: the share of the reference's words the
answer holds. Extra words never lower it, so it is read beside the answers' length: a token-F1
win that comes from answer style (shorter answers raise precision) shows as a gold-recall
difference at or below zero, and a gold-recall win from longer answers as a longer mean answer.
Answer length in normalised words (`answer_words`, `mean_answer_words`) is descriptive, beside
the token counts in `costs`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from docmodel.api import CandidateKind

# The metrics the gate may decide on: the values of `spec.evaluation.metric`.
GateMetric = Literal["exact_match", "token_f1", "rouge_l"]
# Every metric a report scores: the gate's, and gold recall (reported, never gating).
MetricName = Literal["exact_match", "token_f1", "rouge_l", "gold_recall"]
SystemName = Literal["candidate", "baseline", "serving", "base"]
GATE_METRICS: tuple[GateMetric, ...] = ("exact_match", "token_f1", "rouge_l")
METRICS: tuple[MetricName, ...] = (*GATE_METRICS, "gold_recall")


class Scores(BaseModel):
    """Scores on the 0-1 scale."""

    exact_match: float = Field(ge=0.0, le=1.0)
    token_f1: float = Field(ge=0.0, le=1.0)
    rouge_l: float = Field(ge=0.0, le=1.0)
    gold_recall: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Share of the reference's normalised tokens found in the answer (clipped "
        "counts, as token F1's overlap); never gating. None only in scores built without it "
        "(reports of report protocol 2).",
    )

    def get(self, metric: MetricName) -> float:
        value = getattr(self, metric)
        if value is None:
            raise ValueError(f"these scores have no {metric}")
        return float(value)


class QuestionResult(BaseModel):
    """One held-out question and every system's answer to it."""

    id: str
    question: str
    reference: str
    source: str = Field(description="Source document key the question was drawn from.")
    chunk_id: str | None = Field(default=None, description="The passage the answer came from.")
    answers: dict[SystemName, str]
    scores: dict[SystemName, Scores]
    retrieved: list[str] = Field(
        default_factory=list, description="Source keys of the passages the baseline was given."
    )
    retrieved_chunks: list[str] = Field(
        default_factory=list, description="Ids of the passages the baseline was given."
    )
    prompt_tokens: dict[SystemName, int] = Field(default_factory=dict)
    answer_tokens: dict[SystemName, int] = Field(default_factory=dict)
    answer_words: dict[SystemName, int] = Field(
        default_factory=dict,
        description="Length of each system's answer in words, after the metrics' normalisation.",
    )
    document_trained: bool = Field(
        default=True,
        description="False when the question's document was kept out of a retrieval "
        "candidate's training (only retrieved).",
    )


class Difference(BaseModel):
    """Paired bootstrap estimate of (candidate - other) on one metric."""

    mean: float
    ci_low: float
    ci_high: float
    confidence: float = 0.95
    resamples: int


class SystemCost(BaseModel):
    """What answering cost one system, under the same batch settings for every system."""

    questions: int
    mean_prompt_tokens: float
    mean_answer_tokens: float
    latency_p50_s: float = Field(description="Per question: the time of the batch it was in.")
    latency_p99_s: float
    prompts_trimmed: int = Field(
        default=0, description="Prompts whose passages were cut to fit the context."
    )


class Diagnostics(BaseModel):
    """Figures that explain a verdict; none of them gates."""

    retrieval_recall_at_k: float | None = Field(
        default=None,
        description="Share of questions (with a known passage) whose passage the baseline's "
        "retriever put in its top k.",
    )
    retrieval_document_recall_at_k: float | None = Field(
        default=None,
        description="Share of questions whose document was among the top k passages' documents.",
    )
    questions_with_passage: int = 0
    recall_by_retriever: dict[str, dict[str, float | None]] = Field(
        default_factory=dict,
        description="Recall@1/3/5 of the gold passage per retriever (BM25, Dense, Hybrid: those "
        "the passage index supports), on the questions with a known passage.",
    )
    context_tokens: int | None = Field(
        default=None, description="The model's context length the prompts were fitted to."
    )


class DecodingSettings(BaseModel):
    max_new_tokens: int
    temperature: float = 0.0
    engine: str = Field(description="vllm or transformers")
    batch_size: int | None = None
    adapter_weights: str = Field(
        default="unmerged",
        description="How adapters were applied when their answers were timed, as the servers "
        "apply them: `merged` into the base weights (transformers, like the local server) or "
        "`vllm-lora` (vLLM's batched LoRA kernels, like `vllm serve --enable-lora`).",
    )


class EvalReport(BaseModel):
    """What `evaluate` writes and the gate reads."""

    schema_version: Literal[2] = 2
    revision: str
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    base_model: str
    adapter_uri: str
    serving_adapter_uri: str | None = None
    retriever: str
    top_k: int
    kinds: dict[SystemName, CandidateKind] = Field(
        default_factory=dict,
        description="How each system was prompted: ClosedBook (the bare question) or Retrieval "
        "(the retrieved passages, then the question).",
    )
    decoding: DecodingSettings
    questions: list[QuestionResult]
    gate_metric: GateMetric | None = Field(
        default=None,
        description="The metric the verdict evaluate recorded (report.html, its log) was decided "
        "on: spec.evaluation.metric when it ran. The operator recomputes the verdict from the "
        "per-question scores under the spec's current metric. None in reports before it.",
    )
    aggregate: dict[SystemName, Scores]
    mean_answer_words: dict[SystemName, float] = Field(
        default_factory=dict,
        description="Mean answer length in normalised words per system (descriptive: a "
        "token-F1 difference can come from answer style).",
    )
    differences: dict[str, dict[MetricName, Difference]] = Field(
        default_factory=dict,
        description="Keyed by comparison, e.g. `candidate-baseline`, `candidate-serving`.",
    )
    timings: dict[str, float] = Field(default_factory=dict, description="Seconds per phase.")
    bootstrap_seed: int = Field(default=0, description="Seed of the paired bootstrap.")
    confidence: float = Field(default=0.95, description="Confidence of the intervals.")
    costs: dict[SystemName, SystemCost] = Field(default_factory=dict)
    diagnostics: Diagnostics = Field(default_factory=Diagnostics)
    leakage: dict[str, Any] = Field(
        default_factory=dict,
        description="The dataset's leakage checks (from its manifest): thresholds, what was "
        "dropped, the largest similarity and n-gram overlap of a kept eval item.",
    )
