"""The whole spec (`DocModelSpec`), with when a new revision is trained (`spec.retraining`)."""

from __future__ import annotations

from croniter import croniter
from pydantic import Field, field_validator

from docmodel.api.base import CRON_PATTERN, DURATION_PATTERN, ApiModel
from docmodel.api.evaluation import EvaluationSpec
from docmodel.api.inputs import BaseModelSpec, DatasetSpec, SourceSpec
from docmodel.api.pod import PodSecuritySpec
from docmodel.api.serving import ServingSpec
from docmodel.api.training import TrainingSpec


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
