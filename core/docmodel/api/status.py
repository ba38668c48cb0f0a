"""What the operator reports (`status`): phase, conditions, candidate, serving, history."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from docmodel.api.base import ApiModel

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
